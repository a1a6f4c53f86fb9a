"""function_graph's selection, tried on a program: SCENARIO [CALLS].

threads  4 threads, each CALLS (default 100000) calls of noise() and one
         call of handle() every 100: handle's subtree is helper(), leaf()
         under it, and leaf()
deep     deep() recursing 500 calls deep
gen      a generator of 3 values, consumed
naps     nap() of 0 and 30 ms, 3 each; prints its own counts of the calls
         that lasted 10 ms or more, timed inside nap() and around the call:
         ``slow nap=INSIDE AROUND`` (a traced call's duration is between the
         two; they differ only on a machine busy enough to pause the program)
"""

import sys
import threading
import time


def leaf(x):
    return x


def helper(x):
    return leaf(x) + 1


def handle(i):
    return helper(i) + leaf(i)


def noise(i):
    return leaf(i)


def worker(calls):
    for i in range(calls):
        noise(i)
        if i % 100 == 0:
            handle(i)


def threads(calls):
    ts = [threading.Thread(target=worker, args=(calls,), name=f"worker{k}") for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def deep(n):
    return 0 if n == 0 else deep(n - 1) + 1


def produce(n):
    for i in range(n):
        yield leaf(i)


def nap(ms):
    start = time.perf_counter_ns()
    time.sleep(ms / 1000)
    return time.perf_counter_ns() - start


def naps():
    inside = around = 0
    for ms in (0, 30, 0, 30, 0, 30):
        start = time.perf_counter_ns()
        inside += nap(ms) >= 10_000_000
        around += time.perf_counter_ns() - start >= 10_000_000
    print(f"slow nap={inside} {around}")


def main(scenario, calls):
    if scenario == "threads":
        threads(calls)
    elif scenario == "deep":
        deep(499)
    elif scenario == "gen":
        print(sum(produce(3)))
    elif scenario == "naps":
        naps()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
