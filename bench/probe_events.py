"""Probe-event costs (issue 4, section 5), side by side in one run.

    python bench/probe_events.py

Prints the time each variant adds per call of one small function over the
untraced run (medians of interleaved rounds), and the ratios:
  7  entry probe, no fetchargs      vs  an empty FtraceOps    (goal <= 1.1x)
  8  entry probe, two fetchargs     vs  no fetchargs          (goal <= 1.5x)
  9  line probe mid-function        vs  entry probe           (informative)
 10  event filtered out             vs  the same, unfiltered  (goal < 1x)
Nothing is asserted; times only inform.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
import fentry  # noqa: E402

N = 100_000
ROUNDS = 7


class Obj:
    def __init__(self):
        self.attr = 1


def leaf(x, obj):
    y = x + 1
    return y


LINE = leaf.__code__.co_firstlineno + 2      # `return y`, mid-function


def work(n, obj):
    for i in range(n):
        leaf(i, obj)


def run() -> float:
    t = time.perf_counter()
    work(N, Obj())
    return time.perf_counter() - t


def main() -> None:
    fs = fentry.tracefs()
    fs.write("buffer_size_kb", "200000")
    fs.write("kprobe_events", f"p:b/e0 __main__:leaf\n"
                              f"p:b/e2 __main__:leaf x obj.attr\n"
                              f"p:b/ln {os.path.abspath(__file__)}:{LINE}\n"
                              f"p:b/ef __main__:leaf x obj.attr")
    fs.write("events/b/ef/filter", "arg1 < 0")

    def event(name):
        def variant():
            fs.write(f"events/b/{name}/enable", "1")
            r = run()
            fs.write(f"events/b/{name}/enable", "0")
            fs.write("trace", "")
            return r
        return variant

    def empty_ops():
        ops = fentry.FtraceOps(lambda ip, parent_ip, ops, regs: None)
        ops.set_filter("__main__:leaf")
        fentry.register_ftrace_function(ops)
        r = run()
        fentry.unregister_ftrace_function(ops)
        return r

    variants = {"untraced": run, "empty ops": empty_ops, "entry probe": event("e0"),
                "2 fetchargs": event("e2"), "line probe": event("ln"), "filtered out": event("ef")}
    times = {k: [] for k in variants}
    for _ in range(ROUNDS):
        for k, f in variants.items():
            times[k].append(f())
    base = statistics.median(times["untraced"])
    added = {k: (statistics.median(v) - base) / N * 1e9 for k, v in times.items()}
    profile = fs.read("kprobe_profile")
    fs.write("kprobe_events", "")
    print(f"Python {sys.version.split()[0]}, hot path: {fentry.hotpath.IMPLEMENTATION}")
    for k, v in added.items():
        print(f"  {k:<14} {v:8.0f} ns added per call")
    rows = [("7", "entry probe vs empty ops", added["entry probe"] / added["empty ops"], "<= 1.1x"),
            ("8", "2 fetchargs vs none", added["2 fetchargs"] / added["entry probe"], "<= 1.5x"),
            ("9", "line probe vs entry probe", added["line probe"] / added["entry probe"], "-"),
            ("10", "filtered out vs unfiltered", added["filtered out"] / added["2 fetchargs"], "< 1x")]
    for row, what, ratio, goal in rows:
        print(f"  {row:<3} {what:<28} {ratio:6.2f}x  goal {goal}")
    print("kprobe_profile:\n" + profile, end="")


if __name__ == "__main__":
    main()
