"""Threads calling one small function, for the dynamic_events tests.

    dynevents.py CALLS THREADS

Thread ``workerT`` calls ``work(i, T, scale=3)`` for i in range(CALLS), which
returns ``3 * i + T``; at the end it prints the sum of every result.
"""

import sys
import threading


def work(a, b, scale=1):
    return a * scale + b


def run(tid, n, out):
    total = 0
    for i in range(n):
        total += work(i, tid, scale=3)
    out[tid] = total


def main():
    n, threads = int(sys.argv[1]), int(sys.argv[2])
    out = {}
    ts = [threading.Thread(target=run, args=(t, n, out), name=f"worker{t}") for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("total", sum(out.values()))


if __name__ == "__main__":
    main()
