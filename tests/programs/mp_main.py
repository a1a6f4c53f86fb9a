"""Workers started by spawn and by forkserver run this script's functions as
module ``__mp_main__`` (multiprocessing re-runs the script under that name).
Prints ``METHOD PID`` for each worker, the pid being the one that called ``leaf``.

    mp_main.py [METHOD...]      (default: spawn forkserver)
"""

import multiprocessing
import os
import sys


def leaf(x):
    return x * 2


def task(x):
    leaf(x)
    return os.getpid()


if __name__ == "__main__":
    for method in sys.argv[1:] or ("spawn", "forkserver"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            print(method, pool.apply(task, (3,)), flush=True)
