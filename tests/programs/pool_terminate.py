"""A multiprocessing pool ended by terminate(): every worker gets SIGTERM,
some while they start or end.  Then one more process, joined.

    pool_terminate.py START_METHOD
"""

import multiprocessing as mp
import sys


def square(x):
    s = 0
    for i in range(2000):
        s += i
    return x * x


if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    pool = ctx.Pool(4)
    print(sum(pool.map(square, range(200))))
    pool.terminate()
    pool.join()
    p = ctx.Process(target=square, args=(3,))
    p.start()
    p.join()
    print("exit", p.exitcode)
