"""The program bench/stream.py traces, with plain python, fentry and viztracer.

    stream_program.py methods TICKS       the method-heavy workload, timed
    stream_program.py leaf CALLS          CALLS calls of a leaf, timed
    stream_program.py threads N CALLS     N threads making CALLS calls each

Prints ``section_ns`` (its own timed section), ``calls`` and ``peak_rss_kb``
(VmHWM) as ``key value`` lines.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as w


def peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    kind = sys.argv[1]
    start = time.perf_counter_ns()
    if kind == "methods":
        w.methods(int(sys.argv[2]))
        calls = 0
    elif kind == "leaf":
        calls = int(sys.argv[2])
        w.call_leaf(calls)
    else:
        n, calls = int(sys.argv[2]), int(sys.argv[3])
        threads = [threading.Thread(target=w.call_leaf, args=(calls,)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls *= n
    section = time.perf_counter_ns() - start
    print("section_ns", section)
    print("calls", calls)
    print("peak_rss_kb", peak_rss_kb())


if __name__ == "__main__":
    main()
