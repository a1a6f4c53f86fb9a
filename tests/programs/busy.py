"""Busy threads, for the tests of a complete trace at scale.

    busy.py THREADS CALLS [wait]

THREADS threads named b0, b1, ... (0: the main thread alone) each call
take(i) CALLS times.  With ``wait``, the program prints ``ready`` and waits
for a line on stdin before the burst, prints ``done`` after it, and waits for
another line before it ends (for attaching to it).
"""

import sys
import threading


def take(i):
    return i


def work(n):
    for i in range(n):
        take(i)


def burst(threads, calls):
    if threads == 0:
        work(calls)
        return
    ts = [threading.Thread(target=work, args=(calls,), name=f"b{k}") for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    threads, calls = int(sys.argv[1]), int(sys.argv[2])
    wait = sys.argv[3:] == ["wait"]
    if wait:
        print("ready", flush=True)
        sys.stdin.readline()
    burst(threads, calls)
    if wait:
        print("done", flush=True)
        sys.stdin.readline()
