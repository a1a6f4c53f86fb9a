"""Row 21's child: Python's tracepoints defined but disabled, vs no fentry at all.

    tracepoints_program.py none N       the workload alone, in a process that never imports fentry
    tracepoints_program.py fentry N     fentry imported, tracefs() made, every python:*, gc:*
                                        and audit:* event enabled (and seen firing), then disabled

Each times ``workloads.exceptions_and_c_calls(N)`` after a warm-up and prints
``section_ns`` and ``ok`` (what fentry left armed after the disable: none
expected) as ``key value`` lines.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as w


def arm_and_disarm() -> str:
    """Every tracepoint on, fired, off; what is still armed ('' if nothing)."""
    import gc

    import fentry
    from fentry import hotpath
    fs = fentry.tracefs()
    groups = ("python", "gc", "audit")
    for group in groups:
        fs.write(f"events/{group}/enable", "1")
    w.exceptions_and_c_calls(2000)
    gc.collect()
    trace = fs.read("trace")
    for group in groups:
        fs.write(f"events/{group}/enable", "0")
    fs.write("trace", "")
    left = []
    for event in (" raise: ", " call_c: ", " gc_start: ", " open: "):
        if event not in trace:
            left.append(f"no{event.strip()} event while enabled")
    if any(sys.monitoring.get_tool(i) is not None for i in range(6)):
        left.append("a sys.monitoring tool id is held")
    if any(getattr(cb, "__module__", "").startswith("fentry") for cb in gc.callbacks):
        left.append("a gc callback is left")
    if hotpath.audit_hook_armed():
        left.append("the audit hook is armed")
    return "; ".join(left)


def main() -> None:
    kind, n = sys.argv[1], int(sys.argv[2])
    left = arm_and_disarm() if kind == "fentry" else ""
    w.exceptions_and_c_calls(n // 10)           # warm-up
    t0 = time.perf_counter_ns()
    w.exceptions_and_c_calls(n)
    t1 = time.perf_counter_ns()
    print(f"section_ns {t1 - t0}")
    print(f"fentry {'fentry' in sys.modules}")
    print(f"ok {left or 'yes'}")


if __name__ == "__main__":
    main()
