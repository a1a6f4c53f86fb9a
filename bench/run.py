"""fentry benchmarks: one table of ratios, each row measured side by side.

    python bench/run.py [--quick] [--rows 7,8,9,10] [--json FILE]

Every row compares fentry with a baseline timed in the same rounds of the
same process (see timing.py), and prints both sides in nanoseconds per call
(or per event), their ratio, the design's goal for that ratio and whether
this run met it.  Nothing is asserted: times only inform, and a goal missed
does not change the exit status.  What *is* checked is fentry's behaviour
along the way (how many calls it recorded, that it let go of everything):
anything wrong, or a row that crashed, is listed under the table and makes
the exit status 1.

Rows:
  1  untraced code while another function is traced, vs no fentry at all
  2  an empty FtraceOps callback, vs the least a bare sys.monitoring hook can do
  3  the function tracer, vs a bare hook appending (ts, tid, code) to a list
  4  the function tracer recording everything, vs viztracer and cProfile
  5  tracing g with and without a second ops on an unrelated f
  6  formatting 1M recorded events (read trace), vs viztracer saving 1M entries
  7  an entry probe event with no fetchargs, vs an empty FtraceOps on the same function
  8  an entry probe event with two fetchargs (an argument, an attribute), vs none
  9  a line probe event mid-function, vs an entry probe event on the same function
 10  a probe event its filter rejects, vs the same event unfiltered
 10b a probe event with an armed trigger that never fires, vs the same event with none
 16  the function profiler (function_profile_enabled) on every call of a workload, vs cProfile
 17  function_graph with set_graph_function on one small function, vs function_graph on all
 19  fentry run -t function_graph of a program that sleeps between calls, with -K
     sched:sched_switch (the kernel's switches merged in), vs the same run without -K
     (root and tracefs; otherwise the row says why it is skipped)
 20  a hist trigger on a probe event, vs recording every event and aggregating afterwards
 21  Python's tracepoints (python:*, gc:*, audit:*) defined but disabled, vs no fentry at all
     (rows 11-15 are bench/stream.py's)
 6b  fentry report --format perfetto / chrome of a function_graph recording of 1M
     calls, vs viztracer saving the same 1M calls (bench/stream.py's row 15 compares
     the same exports with viztracer's whole run)

viztracer is optional (the ``bench`` extra); without it its rows say so.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import results
import workloads as w
from timing import Timings, Variant, interleave

import fentry
from fentry import (
    FtraceOps,
    ftrace,
    register_ftrace_function,
    unregister_ftrace_function,
)

try:
    import viztracer
    from viztracer import VizTracer
except ImportError:
    viztracer = VizTracer = None

VIZ_MISSING = "viztracer not installed: row skipped"
MON = sys.monitoring
PY_START = MON.events.PY_START
_getframe = sys._getframe

# 200000 kB at hotpath.RECORD_BYTES (40) a record, on both hot paths: 5.1M
# records per thread, more than any row records between two clears, so the
# buffer never wraps.
BUFFER_KB = "200000"
VIZ_ENTRIES = 2_000_000     # viztracer's circular buffer: > 1M calls + their C calls


# ---------------------------------------------------------------- results

@dataclass
class Row:
    row: str
    what: str
    ns: float | None            # ns per call (or per event) of the measured side
    base_name: str
    base: float | None          # the same for the baseline
    ratio: float | None         # median over rounds of ns / base (see Timings.ratio)
    spread: float | None        # half the interquartile range of that ratio
    goal: float | None          # the ratio should be <= goal (< goal if strict)
    note: str = ""
    strict: bool = False


ROWS: list[Row] = []
ISSUES: list[str] = []


def compare(row: str, what: str, times: Timings, name: str, other: str, calls: int,
            base: str | None = None, *, base_name: str, goal: float | None, note: str = "",
            strict: bool = False) -> None:
    """Add a row comparing variants ``name`` and ``other`` (each minus ``base``, if given).

    A variant that was not measured (viztracer not installed) leaves its
    side of the row, and the ratio, empty.
    """
    have = times.rounds
    ns = times.ns(name, calls, base) if name in have else None
    other_ns = times.ns(other, calls, base) if other in have else None
    ratio = spread = None
    if ns is not None and other_ns is not None:
        ratio, spread = times.ratio(name, other, base)
    ROWS.append(Row(row, what, ns, base_name, other_ns, ratio, spread, goal, note, strict))


def check(ok: bool, what: str) -> None:
    """Note a misbehaviour of fentry (or of the harness) without stopping."""
    if not ok:
        ISSUES.append(what)


def empty(ip, parent_ip, ops, regs):
    """The empty four-argument callback both sides of row 2 call."""


# ---------------------------------------------------------------- helpers

def tracefs():
    return fentry.tracefs()


def buffer_stats() -> tuple[int, int]:
    """(entries in buffer, entries written) of the tracefs buffer.

    The header of ``trace`` says the same, but reading ``trace`` formats
    every record; the buffer is asked directly instead.
    """
    return tracefs().instance.buffer.stats()


def reset_fentry() -> None:
    """Leave fentry as a fresh process has it; report whatever it still holds."""
    t = tracefs()
    t.write("current_tracer", "nop")
    t.write("tracing_on", "1")
    t.write("set_ftrace_filter", "")
    t.write("set_ftrace_notrace", "")
    t.write("set_graph_function", "")
    t.write("trace", "")
    check(t.read("function_profile_enabled") == "0\n", "the function profiler still on after the row")
    t.write("function_profile_enabled", "0")
    check(t.read("events/enable").strip() != "1", "probe events still enabled after the row")
    check(not t.read("kprobe_events"), "probe events still defined after the row")
    t.write("events/enable", "0")
    t.write("kprobe_events", "")
    live = list(ftrace._core.ops)
    check(not live, f"fentry still has {len(live)} registered ops after reset")
    for ops in live:
        unregister_ftrace_function(ops)
    check(not ftrace.traced_codes(), "code objects still traced after every ops was unregistered")
    check(ftrace._core.monitor.tool_id is None, "fentry still holds its tool id with no ops registered")


def count_calls(func: Callable[[], object]) -> int:
    """Python calls of functions in workloads.py that ``func()`` makes, by sys.setprofile."""
    n = 0
    filename = w.__file__

    def prof(frame, event, arg):
        nonlocal n
        if event == "call" and frame.f_code.co_filename == filename:
            n += 1

    sys.setprofile(prof)
    try:
        func()
    finally:
        sys.setprofile(None)
    return n


class BareHook:
    """A bare ``sys.monitoring`` PY_START callback on one code object.

    The least any Python-level tracer built on sys.monitoring can cost: its
    own tool id, one local event, one callback.  ``install``/``remove`` run
    around each measurement, so the id is held only while it is measured.
    """
    # Tried in this order: fentry wants 5 first, viztracer and cProfile use 2.
    ORDER = (4, 3, 1, 0, 5, 2)

    def __init__(self, code: CodeType, callback: Callable) -> None:
        self.code = code
        self.callback = callback
        self.tool: int | None = None

    def install(self) -> None:
        self.tool = next(i for i in self.ORDER if MON.get_tool(i) is None)
        MON.use_tool_id(self.tool, "fentry-bench")
        MON.register_callback(self.tool, PY_START, self.callback)
        MON.set_local_events(self.tool, self.code, PY_START)

    def remove(self) -> None:
        if self.tool is None:
            return
        MON.set_local_events(self.tool, self.code, 0)
        MON.register_callback(self.tool, PY_START, None)
        MON.free_tool_id(self.tool)
        self.tool = None


_viz: VizTracer | None = None


def viz() -> VizTracer:
    """One VizTracer for the whole run: its buffer is allocated once."""
    global _viz
    if _viz is None:
        _viz = VizTracer(tracer_entries=VIZ_ENTRIES, verbose=0)
    return _viz


# ---------------------------------------------------------------- rows

def viz_leaf_calls(n: int, out: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """viztracer recording ``n`` calls of leaf (a setup), and dropping them and
    ``out`` (a teardown): the rows that time its save of them."""
    def viz_on():
        tracer = viz()
        tracer.start()
        w.call_leaf(n)
        tracer.stop()

    def viz_off():
        viz().clear()
        if os.path.exists(out):
            os.unlink(out)
    return viz_on, viz_off


def row1_untraced(rounds: int, repeat: int) -> None:
    """Untraced code, while fentry traces one unrelated function (called once).

    The same workload (``repeat`` times recursion plus method calls, none
    of it traced) with no fentry at all, and with an empty ops registered on
    ``workloads:unrelated``.
    Both sides are warmed up first, so fentry's one discovery callback per
    code object (which then returns DISABLE) is behind it: this is the
    steady state of code that is not traced.  Ratio of run times.
    """
    ops = FtraceOps(empty)
    ops.set_filter("workloads:unrelated")
    unrelated = w.unrelated.__code__

    def on():
        register_ftrace_function(ops)
        w.unrelated()
        w.mixed()
        traced = ftrace.traced_codes()
        check(traced == [unrelated],
              f"row 1: traced codes are {[c.co_qualname for c in traced]}, not [unrelated]")

    def off():
        unregister_ftrace_function(ops)

    def run():
        for _ in range(repeat):
            w.mixed()

    calls = count_calls(run)
    times = interleave([Variant("none", run, setup=w.mixed),
                        Variant("fentry", run, setup=on, teardown=off)], rounds)
    compare("1", "untraced code, 1 other fn traced (run time)", times, "fentry", "none", calls,
            base_name="no fentry", goal=1.01, note=f"{calls} calls/run")


def row2_empty_callback(rounds: int, n: int) -> None:
    """Added cost per traced call of an empty FtraceOps callback.

    ``leaf`` is called ``n`` times.  fentry: an ops with the empty callback,
    filter ``workloads:leaf``.  Baseline: a PY_START callback of our own on
    leaf's code that calls the same empty callback with what the least
    Python-level API of this shape must pass, the caller's frame:
    ``handler(code, sys._getframe(2), None, None)`` (frame 1 is leaf, 2 its
    caller).  Both as time added to the untraced loop, per call.
    """
    seen = []
    ops = FtraceOps(lambda ip, parent_ip, o, regs: seen.append((ip, parent_ip, o, regs)))
    ops.set_filter("workloads:leaf")
    register_ftrace_function(ops)
    try:
        w.call_leaf(1000)
    finally:
        unregister_ftrace_function(ops)
    check(len(seen) == 1000, f"row 2: ops callback ran {len(seen)} times for 1000 calls")
    if seen:
        ip, parent, o, regs = seen[-1]
        check(ip.code is w.leaf.__code__ and ip.offset == 0, f"row 2: ip is {ip!r}, not leaf+0x0")
        check(parent is not None and parent.code is w.call_leaf.__code__,
              f"row 2: parent_ip is {parent!r}, not in call_leaf")
        check(o is ops and regs is None, "row 2: ops/regs arguments wrong")

    ops = FtraceOps(empty)
    ops.set_filter("workloads:leaf")
    handler = empty

    def bare(code, offset):
        handler(code, _getframe(2), None, None)

    hook = BareHook(w.leaf.__code__, bare)

    def fentry_on():
        register_ftrace_function(ops)
        w.call_leaf(100)

    def bare_on():
        hook.install()
        w.call_leaf(100)

    run = lambda: w.call_leaf(n)                              # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("fentry", run, setup=fentry_on,
                                teardown=lambda: unregister_ftrace_function(ops)),
                        Variant("bare", run, setup=bare_on, teardown=hook.remove)], rounds)
    compare("2", "empty ops callback, added per call", times, "fentry", "bare", n, "untraced",
            base_name="bare PY_START", goal=1.3)


def row3_function_tracer(rounds: int, n: int) -> None:
    """Added cost per traced call of the ``function`` tracer.

    ``leaf`` called ``n`` times with the function tracer on (filter
    ``workloads:leaf``, buffer large enough not to wrap, cleared before each
    measurement), vs a bare PY_START callback of our own that appends
    ``(perf_counter_ns(), threading.get_ident(), code)`` to a list (cleared
    likewise).  Steady state: tracers are on and warm before the measured
    loop.  Both as time added to the untraced loop, per call.
    """
    t = tracefs()
    records: list = []
    append, now, ident = records.append, time.perf_counter_ns, threading.get_ident

    def record(code, offset):
        append((now(), ident(), code))

    hook = BareHook(w.leaf.__code__, record)

    def fentry_on():
        t.write("buffer_size_kb", BUFFER_KB)
        t.write("set_ftrace_filter", "workloads:leaf")
        t.write("current_tracer", "function")
        w.call_leaf(100)
        t.write("trace", "")

    def fentry_off():
        in_buf, written = buffer_stats()
        check(in_buf == written == n,
              f"row 3: function tracer has {in_buf}/{written} entries for {n} calls")
        t.write("current_tracer", "nop")

    def bare_on():
        hook.install()
        w.call_leaf(100)
        records.clear()

    def bare_off():
        hook.remove()
        check(len(records) == n, f"row 3: harness: bare recorder has {len(records)} of {n}")
        records.clear()

    run = lambda: w.call_leaf(n)                              # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("fentry", run, setup=fentry_on, teardown=fentry_off),
                        Variant("bare", run, setup=bare_on, teardown=bare_off)], rounds)
    compare("3", "function tracer, added per call", times, "fentry", "bare", n, "untraced",
            base_name="bare list append", goal=1.3, note="buffer does not wrap")


def row4_whole_program(rounds: int, label: str, workload: Callable[[], object]) -> None:
    """The ``function`` tracer recording every call of a workload, vs viztracer and cProfile.

    Each tool is timed from its start to its stop, the workload in between,
    nothing saved: fentry ``tracing_on`` 1 .. 0 with the function tracer on
    ``workloads:*`` (so the first call of each code object, its discovery,
    is inside the measurement, as viztracer's and cProfile's start-up is);
    viztracer ``start()`` .. ``stop()`` with default settings and a buffer
    that does not wrap; cProfile ``enable()`` .. ``disable()``.  Added time
    per Python call over the untraced workload, and the three pairwise ratios.
    """
    t = tracefs()
    calls = count_calls(workload)
    prof: list[cProfile.Profile] = []

    def fentry_on():
        t.write("tracing_on", "0")
        t.write("buffer_size_kb", BUFFER_KB)
        t.write("set_ftrace_filter", "workloads:*")
        t.write("current_tracer", "function")
        t.write("trace", "")

    def fentry_run():
        t.write("tracing_on", "1")
        workload()
        t.write("tracing_on", "0")

    def fentry_off():
        in_buf, written = buffer_stats()
        check(in_buf == written == calls,
              f"row 4 {label}: function tracer has {in_buf}/{written} entries for {calls} calls")
        t.write("current_tracer", "nop")
        t.write("tracing_on", "1")

    def viz_run():
        tracer = viz()
        tracer.start()
        workload()
        tracer.stop()

    def prof_run():
        p = prof[0]
        p.enable()
        workload()
        p.disable()

    variants = [Variant("untraced", workload),
                Variant("fentry", fentry_run, setup=fentry_on, teardown=fentry_off),
                Variant("cProfile", prof_run, setup=lambda: prof.append(cProfile.Profile()),
                        teardown=prof.clear)]
    if VizTracer is not None:
        variants.append(Variant("viztracer", viz_run, teardown=lambda: viz().clear()))
    times = interleave(variants, rounds)
    note = f"{calls} calls/run" if VizTracer is not None else VIZ_MISSING
    name = f"4{label}"
    what = workload_name(label)
    compare(name, f"{what}: fentry vs viztracer", times, "fentry", "viztracer", calls, "untraced",
            base_name="viztracer", goal=1.0, note=note)
    compare(name, f"{what}: fentry vs cProfile", times, "fentry", "cProfile", calls, "untraced",
            base_name="cProfile", goal=None, note=f"{calls} calls/run")
    compare(name, f"{what}: viztracer vs cProfile", times, "viztracer", "cProfile", calls,
            "untraced", base_name="cProfile", goal=None, note=note)


def row16_profiler(rounds: int, label: str, workload: Callable[[], object]) -> None:
    """The function profiler on every call of a workload, vs cProfile.

    As row 4: each timed from its start to its stop, the workload in between
    -- fentry ``function_profile_enabled`` 1 .. 0 on ``workloads:*`` (the
    first call of each code object, its discovery, inside), cProfile
    ``enable()`` .. ``disable()`` (which also counts the C functions called).
    Added time per Python call over the untraced workload.  Both count and
    time every call; fentry's hits are checked against the real calls."""
    t = tracefs()
    calls = count_calls(workload)
    prof: list[cProfile.Profile] = []

    def fentry_on():
        t.write("set_ftrace_filter", "workloads:*")

    def fentry_run():
        t.write("function_profile_enabled", "1")
        workload()
        t.write("function_profile_enabled", "0")

    def fentry_off():
        hits = sum(n[0] for n in t.profiler.merged().values())
        check(hits == calls, f"row 16 {label}: the profiler counted {hits} hits for {calls} calls")

    def prof_run():
        p = prof[0]
        p.enable()
        workload()
        p.disable()

    times = interleave([Variant("untraced", workload),
                        Variant("fentry", fentry_run, setup=fentry_on, teardown=fentry_off),
                        Variant("cProfile", prof_run, setup=lambda: prof.append(cProfile.Profile()),
                                teardown=prof.clear)], rounds)
    compare(f"16{label}", f"{workload_name(label)}: profiler vs cProfile", times, "fentry", "cProfile",
            calls, "untraced", base_name="cProfile", goal=0.6, note=f"{calls} calls/run")


def row17_graph_function(rounds: int) -> None:
    """function_graph with ``set_graph_function`` on one small function
    (``Vec.dot``, one call in ten of the workload) vs function_graph recording
    every call, the same workload, timed as row 4 (``tracing_on`` 1 .. 0).
    Added time per Python call over the untraced workload: outside the
    selected subtrees a call costs the selection's check, not a record."""
    t = tracefs()
    workload = lambda: w.methods(METHOD_TICKS)  # noqa: E731
    calls = count_calls(workload)
    dots = METHOD_TICKS * 50                    # Vec.dot: once per particle per tick (energy)

    def start(selected: bool) -> Callable[[], None]:
        def on():
            t.write("tracing_on", "0")
            t.write("buffer_size_kb", BUFFER_KB)
            t.write("set_ftrace_filter", "workloads:*")
            t.write("set_graph_function", "Vec.dot" if selected else "")
            t.write("current_tracer", "function_graph")
            t.write("trace", "")
        return on

    def run():
        t.write("tracing_on", "1")
        workload()
        t.write("tracing_on", "0")

    def stop(selected: bool) -> Callable[[], None]:
        def off():
            in_buf, written = buffer_stats()
            want = 2 * (dots if selected else calls)
            check(in_buf == written == want,
                  f"row 17: function_graph {'on Vec.dot ' if selected else ''}has "
                  f"{in_buf}/{written} records, not {want}")
            t.write("current_tracer", "nop")
            t.write("set_graph_function", "")
            t.write("tracing_on", "1")
        return off

    times = interleave([Variant("untraced", workload),
                        Variant("selected", run, setup=start(True), teardown=stop(True)),
                        Variant("full", run, setup=start(False), teardown=stop(False))], rounds)
    compare("17", f"{workload_name('b')}: function_graph, set_graph_function Vec.dot vs all",
            times, "selected", "full", calls, "untraced", base_name="function_graph, all",
            goal=1.0, strict=True, note=f"{calls} calls/run, {dots} selected")


def workload_name(label: str) -> str:
    return {"a": f"fib({FIB_N}) recursive", "b": f"methods({METHOD_TICKS})"}[label]


def row5_second_ops(rounds: int, n: int, tracer: bool) -> None:
    """Tracing g, with and without a second ops registered on an unrelated f.

    ``g`` is called ``n`` times, traced by an empty-callback ops (5a) or by
    the function tracer (5b).  The second ops (empty callback, filter
    ``workloads:f``) is registered and ``f`` called once, so f's code really
    is traced; g must still dispatch straight to its own ops.  Ratio of the
    time tracing adds to each call of g.
    """
    t = tracefs()
    g_ops = FtraceOps(empty)
    g_ops.set_filter("workloads:g")
    f_ops = FtraceOps(empty)
    f_ops.set_filter("workloads:f")

    def g_on():
        if tracer:
            t.write("buffer_size_kb", BUFFER_KB)
            t.write("set_ftrace_filter", "workloads:g")
            t.write("current_tracer", "function")
        else:
            register_ftrace_function(g_ops)
        w.call_g(100)
        t.write("trace", "")

    def g_off():
        if tracer:
            in_buf, written = buffer_stats()
            check(in_buf == written == n,
                  f"row 5b: function tracer has {in_buf}/{written} entries for {n} calls of g")
            t.write("current_tracer", "nop")
        else:
            unregister_ftrace_function(g_ops)

    def both_on():
        g_on()
        register_ftrace_function(f_ops)
        w.f()
        names = sorted(c.co_qualname for c in ftrace.traced_codes())
        check(names == ["f", "g"], f"row 5: with ops on f and g, traced codes are {names}")
        w.call_g(100)
        t.write("trace", "")

    def both_off():
        unregister_ftrace_function(f_ops)
        g_off()

    run = lambda: w.call_g(n)                                 # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("g", run, setup=g_on, teardown=g_off),
                        Variant("g+f", run, setup=both_on, teardown=both_off)], rounds)
    label, what = ("5b", "function tracer on g") if tracer else ("5a", "empty ops on g")
    compare(label, f"{what}, + 2nd ops on f, added per call", times, "g+f", "g", n, "untraced",
            base_name="without 2nd ops", goal=1.05)


def row6_formatting(rounds: int, n: int) -> None:
    """Formatting ``n`` recorded events to text, vs viztracer saving ``n`` entries.

    fentry: the function tracer records ``n`` calls of leaf (untimed), then
    ``tracefs().read("trace")`` is timed: every record becomes a line of the
    kernel's text format.  viztracer: ``n`` calls recorded (untimed), then
    ``save()`` of its JSON to a temporary file is timed.  Per event.
    """
    t = tracefs()
    out = os.path.join(tempfile.gettempdir(), f"fentry-bench-{os.getpid()}.json")
    text_lines = []

    def fentry_on():
        t.write("buffer_size_kb", BUFFER_KB)
        t.write("set_ftrace_filter", "workloads:leaf")
        t.write("current_tracer", "function")
        t.write("trace", "")
        w.call_leaf(n)
        t.write("tracing_on", "0")

    def fentry_run():
        text_lines.append(t.read("trace").count("\n"))

    def fentry_off():
        in_buf, written = buffer_stats()
        check(in_buf == written == n, f"row 6: function tracer has {in_buf}/{written} entries for {n} calls")
        lines = text_lines.pop()
        header = len(tracefs_header())
        check(lines == n + header, f"row 6: trace has {lines} lines for {n} events + {header} header lines")
        t.write("current_tracer", "nop")
        t.write("tracing_on", "1")

    viz_on, viz_off = viz_leaf_calls(n, out)

    variants = [Variant("fentry", fentry_run, setup=fentry_on, teardown=fentry_off)]
    if VizTracer is not None:
        variants.append(Variant("viztracer", lambda: viz().save(out), setup=viz_on, teardown=viz_off))
    times = interleave(variants, rounds)
    compare("6", f"format {n // 1000}k events (read trace) vs save", times, "fentry", "viztracer",
            n, base_name="viztracer save", goal=0.5,
            note=f"per event, {rounds} round(s)" if VizTracer is not None else VIZ_MISSING)


def tracefs_header() -> list[str]:
    """The comment lines ``trace`` starts with when the function tracer has recorded one thread."""
    from fentry.tracers import text as output
    return (output.buffer_header("function", 0, 0, 1) + output.FUNCTION_COLUMNS).splitlines()


# ---------------------------------------------------------------- exports (row 6b)

def row6b_exports(rounds: int, n: int) -> None:
    """``fentry report --format perfetto`` and ``--format chrome`` of a
    function_graph recording of ``n`` calls, vs viztracer saving ``n`` calls.

    fentry: ``fentry record -t function_graph`` of a program calling leaf
    ``n`` times (once, untimed: 2n records, entry and exit), then, each round,
    the command ``fentry report --format F -o FILE`` timed as a user runs it:
    a process of its own (start-up, decoding, nesting, encoding, writing).
    viztracer: ``n`` calls recorded (untimed), then ``save()`` of its JSON,
    as in row 6.  Both write ``n`` slices; per call.
    """
    tmp = tempfile.mkdtemp(prefix="fentry-bench-")
    dat = os.path.join(tmp, "calls.dat")
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path.insert(0, {bench_dir!r}); import workloads; workloads.call_leaf({n})"
    got = subprocess.run([sys.executable, "-m", "fentry", "record", "-t", "function_graph", "-l",
                          "workloads:leaf", "--buffer-size-kb", BUFFER_KB, "-o", dat, "-c", code],
                         capture_output=True, text=True)
    check(got.returncode == 0, f"row 6b: fentry record failed: {got.stderr.strip()}")
    if got.returncode != 0:
        return
    outputs = {fmt: os.path.join(tmp, f"calls.{fmt}") for fmt in ("perfetto", "chrome")}

    def report(fmt):
        got = subprocess.run([sys.executable, "-m", "fentry", "report", "-i", dat, "--format", fmt,
                              "-o", outputs[fmt]], capture_output=True, text=True)
        check(got.returncode == 0 and not got.stderr, f"row 6b: report --format {fmt}: {got.stderr}")

    def chrome_check():
        with open(outputs["chrome"]) as f:
            slices = sum(line.count('"ph":"X"') for line in f)
        check(slices == n, f"row 6b: chrome export has {slices} slices for {n} calls")

    out = os.path.join(tmp, "viztracer.json")

    viz_on, viz_off = viz_leaf_calls(n, out)

    variants = [Variant("perfetto", lambda: report("perfetto")),
                Variant("chrome", lambda: report("chrome"), teardown=chrome_check)]
    if VizTracer is not None:
        variants.append(Variant("viztracer", lambda: viz().save(out), setup=viz_on, teardown=viz_off))
    try:
        times = interleave(variants, rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = f"per call, {rounds} round(s)" if VizTracer is not None else VIZ_MISSING
    for fmt in ("perfetto", "chrome"):
        compare("6b", f"report --format {fmt}, {n // 1000}k calls vs save", times, fmt, "viztracer",
                n, base_name="viztracer save", goal=0.5, note=note)


def row19_kernel_events(rounds: int, n: int) -> None:
    """``fentry run -t function_graph -K sched:sched_switch`` of a program
    calling leaf ``n`` times, sleeping 1 ms every 100 calls (a switch out
    and in each time), vs the same command without ``-K``; whole commands,
    as a user runs them, per call.  Checks that every call, and with -K
    the switches, are in the trace."""
    tmp = tempfile.mkdtemp(prefix="fentry-bench-")
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys, time; sys.path.insert(0, {bench_dir!r}); import workloads\n"
            f"for _ in range({n // 100}):\n    workloads.call_leaf(100)\n    time.sleep(0.001)")
    out = os.path.join(tmp, "trace.txt")

    def run(kernel: bool) -> None:
        k = ["-K", "sched:sched_switch"] if kernel else []
        got = subprocess.run([sys.executable, "-m", "fentry", "run", "-t", "function_graph", "-l",
                              "workloads:leaf", *k, "-o", out, "-c", code], capture_output=True, text=True)
        check(got.returncode == 0, f"row 19: fentry run {' '.join(k)} failed: {got.stderr.strip()}")

    def count(kernel: bool) -> None:
        with open(out) as f:
            text = f.read()
        # (a call the kernel switched out in has the switch inside: `leaf() {`, not `leaf();`)
        calls = text.count("leaf();") + text.count("leaf() {")
        check(calls == n, f"row 19: {calls} calls of leaf for {n} ({'with' if kernel else 'without'} -K)")
        if kernel:
            check("/* sched_switch: " in text, "row 19: no sched_switch in the trace with -K")

    if os.geteuid() != 0:
        ROWS.append(Row("19", "function_graph with -K sched:sched_switch vs without", None,
                        "no -K", None, None, None, 1.2, note="not root: -K needs tracefs; row skipped"))
        return
    try:
        times = interleave([Variant("kernel", lambda: run(True), teardown=lambda: count(True)),
                            Variant("plain", lambda: run(False), teardown=lambda: count(False))], rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    compare("19", f"function_graph -K sched:sched_switch, {n // 1000}k calls, 1 ms sleep "
            "every 100", times, "kernel", "plain", n, base_name="same run, no -K", goal=1.2,
            note=f"whole `fentry run` commands, per call, {rounds} rounds")


# ---------------------------------------------------------------- probe events (rows 7-10)

PROBE_GROUP = "bench"
BOX = w.Box(7)              # the object argument of workloads.probed; row 8 fetches its .attr
TWO_ARGS = "x=x attr=obj.attr"      # named: unnamed fetchargs would be arg1, arg2


def probe_line() -> int:
    """The line of ``workloads.probed`` marked PROBE_LINE (mid-function)."""
    lines, first = inspect.getsourcelines(w.probed)
    return first + next(i for i, text in enumerate(lines) if "PROBE_LINE" in text)


def probe_profile() -> dict[str, tuple[int, int]]:
    """``kprobe_profile``: event -> (hits, misses)."""
    out = {}
    for line in tracefs().read("kprobe_profile").splitlines():
        name, hits, misses = line.split()
        out[name] = (int(hits), int(misses))
    return out


class Probe:
    """One probe event on ``workloads.probed``, live only around its own measurement.

    ``on`` defines it (``p:bench/NAME WHERE``), sets its filter if it has one,
    enables it, warms it up and clears the buffer.  ``off`` checks what it
    recorded, then disables and removes it and clears the buffer.  Recorded:
    one hit per call in ``kprobe_profile``, no miss, and one buffer entry per
    call, or none at all when the filter rejects every event (``written``
    keeps the entries written in each filtered round).
    """

    def __init__(self, row: str, name: str, where: str, n: int, filter: str = "") -> None:
        self.row, self.name, self.where, self.n, self.filter = row, name, where, n, filter
        self.hits = 0
        self.written: list[int] = []

    def file(self, name: str) -> str:
        return f"events/{PROBE_GROUP}/{self.name}/{name}"

    def define(self) -> None:
        t = tracefs()
        t.write("kprobe_events", f"p:{PROBE_GROUP}/{self.name} {self.where}")
        if self.filter:
            t.write(self.file("filter"), self.filter)
        t.write(self.file("enable"), "1")

    def remove(self) -> None:
        t = tracefs()
        t.write(self.file("enable"), "0")
        t.write("kprobe_events", "")
        t.write("trace", "")

    def on(self) -> None:
        t = tracefs()
        t.write("buffer_size_kb", BUFFER_KB)
        self.define()
        w.call_probed(100, BOX)
        t.write("trace", "")
        self.hits = probe_profile()[self.name][0]

    def off(self) -> None:
        try:
            n, where = self.n, f"row {self.row}: {self.name}"
            hits, misses = probe_profile()[self.name]
            check(hits - self.hits == n and misses == 0,
                  f"{where}: kprobe_profile has {hits - self.hits} hits, {misses} misses for {n} calls")
            in_buf, written = buffer_stats()
            if self.filter:
                self.written.append(written)
                check(in_buf == written == 0,
                      f"{where}: filtered out, yet {in_buf}/{written} entries in the buffer")
            else:
                check(in_buf == written == n, f"{where}: {in_buf}/{written} entries for {n} calls")
        finally:
            self.remove()


def probe_trace(probe: Probe, calls: int) -> list[str]:
    """The event lines ``probe`` records for ``calls`` calls of probed (checks, untimed)."""
    t = tracefs()
    t.write("trace", "")
    probe.define()
    try:
        w.call_probed(calls, BOX)
        return [line.split(": ", 1)[1] for line in t.read("trace").splitlines()
                if not line.startswith("#")]
    finally:
        probe.remove()


def probed_ops() -> tuple[Callable[[], None], Callable[[], None]]:
    """setup/teardown of an empty FtraceOps on ``workloads:probed``."""
    ops = FtraceOps(empty)
    ops.set_filter("workloads:probed")

    def on():
        register_ftrace_function(ops)
        w.call_probed(100, BOX)

    return on, lambda: unregister_ftrace_function(ops)


def row7_probe_vs_ops(rounds: int, n: int) -> None:
    """Added cost per call of an entry probe event with no fetchargs, vs an empty FtraceOps.

    ``probed(i, BOX)`` called ``n`` times.  fentry: ``p:bench/e0
    workloads:probed`` enabled (it rides an ftrace ops, and records one
    event per call).  Baseline: an FtraceOps with the empty callback and
    filter ``workloads:probed`` (the bare ops the probe is built on).  Both
    as time added to the untraced loop, per call.
    """
    e0 = Probe("7", "e0", "workloads:probed", n)
    lines = probe_trace(e0, 2)
    check(lines == ["e0: (probed+0x0)"] * 2, f"row 7: e0 recorded {lines}")
    ops_on, ops_off = probed_ops()
    run = lambda: w.call_probed(n, BOX)                       # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("probe", run, setup=e0.on, teardown=e0.off),
                        Variant("ops", run, setup=ops_on, teardown=ops_off)], rounds)
    compare("7", "entry probe, no fetchargs, added per call", times, "probe", "ops", n, "untraced",
            base_name="empty FtraceOps", goal=1.1)


def row8_fetchargs(rounds: int, n: int) -> None:
    """An entry probe event with two fetchargs, vs the same probe with none.

    ``p:bench/e2 workloads:probed x=x attr=obj.attr``: an argument (a new
    int each call) and an attribute of the object argument (from its
    ``__dict__``), vs ``p:bench/e0 workloads:probed``.  Added per call.
    """
    e0 = Probe("8", "e0", "workloads:probed", n)
    e2 = Probe("8", "e2", f"workloads:probed {TWO_ARGS}", n)
    lines = probe_trace(e2, 2)
    check(lines == [f"e2: (probed+0x0) x={i} attr={BOX.attr}" for i in range(2)],
          f"row 8: e2 recorded {lines}")
    run = lambda: w.call_probed(n, BOX)                       # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("e2", run, setup=e2.on, teardown=e2.off),
                        Variant("e0", run, setup=e0.on, teardown=e0.off)], rounds)
    compare("8", "entry probe, 2 fetchargs (arg, attr), added", times, "e2", "e0", n, "untraced",
            base_name="no fetchargs", goal=1.5)


def row9_line_probe(rounds: int, n: int) -> None:
    """A line probe mid-function, vs an entry probe on the same function.

    ``p:bench/ln /abs/path/workloads.py:LINE`` (the line of ``probed`` marked
    PROBE_LINE: a local INSTRUCTION event, every other offset disabled at its
    first pass) vs ``p:bench/e0 workloads:probed``; neither has fetchargs.
    Added per call; informative, no goal.
    """
    line = probe_line()
    path = os.path.abspath(w.__file__)
    offset = min(start for start, _, ln in w.probed.__code__.co_lines() if ln == line)
    ln = Probe("9", "ln", f"{path}:{line}", n)
    e0 = Probe("9", "e0", "workloads:probed", n)
    lines = probe_trace(ln, 2)
    check(lines == [f"ln: (probed+{offset:#x})"] * 2, f"row 9: ln recorded {lines}")
    run = lambda: w.call_probed(n, BOX)                       # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("line", run, setup=ln.on, teardown=ln.off),
                        Variant("entry", run, setup=e0.on, teardown=e0.off)], rounds)
    compare("9", "line probe mid-function, added per call", times, "line", "entry", n, "untraced",
            base_name="entry probe", goal=None, note=f"line {line}, probed+{offset:#x}")


def row10_filtered_out(rounds: int, n: int) -> None:
    """A probe event whose filter rejects every event, vs the same event unfiltered.

    ``p:bench/e2 workloads:probed x=x attr=obj.attr``, with filter ``x < 0``
    (``x`` is never negative) and without.  The filtered-out event still
    fetches its arguments and counts its hits, but must write nothing to the
    buffer: it should cost less than the recorded one.  Added per call; the
    note gives the entries the filtered runs wrote (0 expected).
    """
    kept = Probe("10", "e2", f"workloads:probed {TWO_ARGS}", n)
    dropped = Probe("10", "e2", f"workloads:probed {TWO_ARGS}", n, filter="x < 0")
    run = lambda: w.call_probed(n, BOX)                       # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("filtered", run, setup=dropped.on, teardown=dropped.off),
                        Variant("unfiltered", run, setup=kept.on, teardown=kept.off)], rounds)
    written = max(dropped.written) if dropped.written else "-"
    compare("10", "probe filtered out (x < 0), added per call", times, "filtered", "unfiltered", n,
            "untraced", base_name="unfiltered", goal=1.0, strict=True,
            note=f"filtered: {written} entries written")


class TriggeredProbe(Probe):
    """A Probe with a trigger on its event (written after its enable,
    removed before it goes)."""

    def __init__(self, row: str, name: str, where: str, n: int, trigger: str) -> None:
        super().__init__(row, name, where, n)
        self.trigger = trigger

    def define(self) -> None:
        super().define()
        tracefs().write(self.file("trigger"), self.trigger)

    def remove(self) -> None:
        tracefs().write(self.file("trigger"), "!" + self.trigger.split(":")[0].split()[0])
        super().remove()


def row10b_idle_trigger(rounds: int, n: int) -> None:
    """A probe event with a trigger that never fires, vs the same event with none.

    ``p:bench/e2 workloads:probed x=x attr=obj.attr`` with the trigger
    ``traceoff if x < 0`` (``x`` is never negative) and without.  The
    triggered event records every call as the other does, but each hit
    also calls the triggers in Python with the values the hot path fetched
    (soft mode); an event with no trigger is not slowed at all.  Added per
    call; informative, no goal.
    """
    armed = TriggeredProbe("10b", "e2", f"workloads:probed {TWO_ARGS}", n, "traceoff if x < 0")
    plain = Probe("10b", "e2", f"workloads:probed {TWO_ARGS}", n)
    lines = probe_trace(armed, 2)
    check(lines == [f"e2: (probed+0x0) x={i} attr={BOX.attr}" for i in range(2)],
          f"row 10b: e2 with a trigger recorded {lines}")
    run = lambda: w.call_probed(n, BOX)                       # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("trigger", run, setup=armed.on, teardown=armed.off),
                        Variant("none", run, setup=plain.on, teardown=plain.off)], rounds)
    compare("10b", "probe with an idle trigger (traceoff if x < 0)", times, "trigger", "none", n,
            "untraced", base_name="no trigger", goal=None)


SEND = "p:bench/send workloads:send kind=kind nbytes=nbytes"
SEND_HIST = "hist:keys=kind:vals=nbytes"
HIST_ROW = re.compile(r"^\{ kind: +(\d+) \} hitcount: +(\d+) +nbytes: +(\d+)$", re.M)


def send_totals(n: int) -> dict[int, tuple[int, int]]:
    """kind -> (hits, sum of nbytes) that ``call_send(n)`` makes."""
    out: dict[int, tuple[int, int]] = {}
    for i in range(n):
        hits, total = out.get(i & 7, (0, 0))
        out[i & 7] = (hits + 1, total + (i & 1023))
    return out


def row20_hist_vs_aggregate(rounds: int, n: int) -> None:
    """A hist trigger, vs recording every event and aggregating afterwards.

    ``send(i & 7, i & 1023)`` called ``n`` times, probed by ``p:bench/send
    workloads:send kind=kind nbytes=nbytes``.  hist: the trigger ``hist:
    keys=kind:vals=nbytes`` on the event, which is not enabled: it feeds the
    hist only and writes nothing to the buffer (the read of the ``hist``
    file is outside the timed region, as a user reads it once).  Baseline:
    the event enabled, every hit recorded into the ring buffer, then the
    same table made from the buffer's records, as cheaply as can be (its raw
    records, no text).  Both per call, time added over the untraced loop;
    informative, no goal.
    """
    t = tracefs()
    want = send_totals(n)
    tables: list[dict[int, tuple[int, int]]] = []

    def define(enable: bool, trigger: bool) -> None:
        t.write("buffer_size_kb", BUFFER_KB)
        t.write("kprobe_events", SEND)
        if trigger:
            t.write("events/bench/send/trigger", SEND_HIST)
        if enable:
            t.write("events/bench/send/enable", "1")
        w.call_send(100)
        if trigger:         # (the warm-up's hits out of the hist: off and on again)
            t.write("events/bench/send/trigger", "!" + SEND_HIST)
            t.write("events/bench/send/trigger", SEND_HIST)
        t.write("trace", "")

    def remove() -> None:
        t.write("events/bench/send/trigger", "!" + SEND_HIST)
        t.write("events/bench/send/enable", "0")
        t.write("kprobe_events", "")
        t.write("trace", "")

    def hist_off() -> None:
        try:
            text = t.read("events/bench/send/hist")
            got = {int(k): (int(h), int(v)) for k, h, v in HIST_ROW.findall(text)}
            check(got == want and buffer_stats() == (0, 0),
                  f"row 20: the hist is {got} (want {want}), buffer {buffer_stats()}")
        finally:
            remove()

    event = []

    def record_on() -> None:
        define(True, False)
        event[:] = [t.probes.find("bench", "send")]

    def aggregate() -> None:
        w.call_send(n)
        table: dict[int, list[int]] = {}
        ev = event[0]
        for _, records in t.instance.buffer.snapshot():
            for rec in records:
                if rec[2] is ev:
                    kind, nbytes = rec[4]
                    row = table.get(kind)
                    if row is None:
                        table[kind] = [1, nbytes]
                    else:
                        row[0] += 1
                        row[1] += nbytes
        tables.append({k: (v[0], v[1]) for k, v in table.items()})

    def record_off() -> None:
        try:
            got = tables.pop() if tables else None
            check(got == want, f"row 20: the records' table is {got} (want {want})")
        finally:
            remove()

    run = lambda: w.call_send(n)                              # noqa: E731
    times = interleave([Variant("untraced", run),
                        Variant("hist", run, setup=lambda: define(False, True), teardown=hist_off),
                        Variant("record", aggregate, setup=record_on, teardown=record_off)], rounds)
    compare("20", "hist trigger (keys=kind:vals=nbytes), added per call", times, "hist", "record", n,
            "untraced", base_name="record + aggregate", goal=None, note="8 keys")


def row21_tracepoints_off(rounds: int, n: int) -> None:
    """Python's tracepoints defined but disabled, vs no fentry at all.

    ``workloads.exceptions_and_c_calls(n)`` (exceptions raised and caught,
    C functions called, containers allocated, an audited open every 1000)
    in a child process (bench/tracepoints_program.py), one of each per
    round, interleaved: ``fentry`` imports fentry, makes its tracefs,
    enables every python:*, gc:* and audit:* event, sees them fire, and
    disables them; ``none`` never imports fentry.  An audit hook cannot be
    removed: fentry's stays, as one test.  Each child times the workload
    alone, in its own thread's CPU time (the machine is shared: a child
    descheduled mid-run would otherwise count the wait).  Run time ratio.
    """
    program = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tracepoints_program.py")
    times: dict[str, list[int]] = {"fentry": [], "none": []}
    order = list(times)
    for r in range(rounds):
        for kind in order[r % 2:] + order[:r % 2]:
            got = subprocess.run([sys.executable, program, kind, str(n)], capture_output=True,
                                 text=True, timeout=600)
            out = dict(line.split(" ", 1) for line in got.stdout.splitlines() if " " in line)
            check(got.returncode == 0 and out.get("ok") == "yes"
                  and out.get("fentry") == str(kind == "fentry"),
                  f"row 21: the {kind} child: {got.returncode} {out.get('ok')} {got.stderr[-300:]}")
            if "section_ns" in out:
                times[kind].append(int(out["section_ns"]))
    if min(len(v) for v in times.values()) == rounds:
        compare("21", "python:*, gc:*, audit:* disabled (run time)", Timings(times), "fentry", "none",
                n, base_name="no fentry", goal=1.01, note=f"{n} iterations/run, CPU time")


# ---------------------------------------------------------------- main

FIB_N = 20
METHOD_TICKS = 100


def met(r: Row) -> bool | None:
    """Whether the row met its goal (None: it has none, or was not measured)."""
    if r.goal is None or r.ratio is None:
        return None
    return r.ratio < r.goal if r.strict else r.ratio <= r.goal


def goal_text(r: Row) -> str | None:
    return None if r.goal is None else f"{'<' if r.strict else '<='} {r.goal:g}"


def print_table() -> None:
    head = ("row", "measure", "ns", "baseline", "base ns", "ratio", "+-", "goal", "met")
    lines = []
    for r in ROWS:
        ok = met(r)
        lines.append((r.row, r.what,
                      "-" if r.ns is None else f"{r.ns:.1f}",
                      r.base_name,
                      "-" if r.base is None else f"{r.base:.1f}",
                      "-" if r.ratio is None else f"{r.ratio:.3f}x",
                      "" if r.spread is None else f"{r.spread:.3f}",
                      "-" if r.goal is None else f"{goal_text(r)}x",
                      "-" if r.goal is None else "skipped" if ok is None else "yes" if ok else "NO",
                      r.note))
    cols = len(head)
    widths = [max(len(x) for x in col) for col in zip(head, *[line[:cols] for line in lines])]
    right = {2, 4, 5, 6}
    fmt = "  ".join(f"{{:{'>' if i in right else '<'}{wd}}}" for i, wd in enumerate(widths))
    print(fmt.format(*head))
    print(fmt.format(*("-" * wd for wd in widths)))
    for line in lines:
        print((fmt.format(*line[:cols]) + f"  {line[cols]}").rstrip())
    print("(ns: per call, or per event for row 6, per call exported for row 6b, per iteration for row 21;"
          " rows 2-5, 7-10, 16-18:"
          " time added over the untraced run."
          " ratio: median of per-round ratios, +- half their interquartile range)")


def write_json(path: str) -> None:
    results.write(path, "run", [
        results.row(r.row, r.what, {"ns": r.ns, "baseline": r.base_name, "base ns": r.base},
                    r.ratio, goal_text(r), met(r), spread=r.spread, note=r.note)
        for r in ROWS], ISSUES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls (a smoke run)")
    parser.add_argument("--rows", metavar="LIST",
                        help="run only these rows, comma-separated (e.g. 7,8,9,10 or 4a,4b)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the table to FILE as JSON (bench/results.py)")
    args = parser.parse_args(argv)
    q = args.quick
    rounds, n = (3, 20_000) if q else (21, 100_000)
    big = 100_000 if q else 1_000_000

    held_before = {i for i in range(6) if MON.get_tool(i) is not None}
    print(f"fentry bench: Python {platform.python_version()} ({sys.executable})")
    impl = getattr(sys.modules.get("fentry.hotpath"), "IMPLEMENTATION", "?")
    print(f"  fentry from {os.path.dirname(fentry.__file__)} (hot path: {impl})")
    print(f"  viztracer {viztracer.__version__ if viztracer else '(not installed: its rows are skipped)'}"
          f"; {os.cpu_count()} CPUs; medians of interleaved rounds; ns per call unless noted")
    print(flush=True)

    start = time.monotonic()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("1", lambda: row1_untraced(2 * rounds, 1 if q else 8)),
        ("2", lambda: row2_empty_callback(rounds, n)),
        ("3", lambda: row3_function_tracer(rounds, n)),
        ("4a", lambda: row4_whole_program(rounds, "a", lambda: w.fib(FIB_N))),
        ("4b", lambda: row4_whole_program(rounds, "b", lambda: w.methods(METHOD_TICKS))),
        ("5a", lambda: row5_second_ops(rounds, n, tracer=False)),
        ("5b", lambda: row5_second_ops(rounds, n, tracer=True)),
        ("6", lambda: row6_formatting(1 if q else 2, big)),
        ("6b", lambda: row6b_exports(1 if q else 3, big)),
        ("7", lambda: row7_probe_vs_ops(rounds, n)),
        ("8", lambda: row8_fetchargs(rounds, n)),
        ("9", lambda: row9_line_probe(rounds, n)),
        ("10", lambda: row10_filtered_out(rounds, n)),
        ("10b", lambda: row10b_idle_trigger(rounds, n)),
        ("16a", lambda: row16_profiler(rounds, "a", lambda: w.fib(FIB_N))),
        ("16b", lambda: row16_profiler(rounds, "b", lambda: w.methods(METHOD_TICKS))),
        ("17", lambda: row17_graph_function(rounds)),
        ("19", lambda: row19_kernel_events(3 if q else 7, n)),
        ("20", lambda: row20_hist_vs_aggregate(rounds, n)),
        ("21", lambda: row21_tracepoints_off(rounds, n)),
    ]
    if args.rows:
        wanted = set(args.rows.replace(" ", "").split(","))
        unknown = wanted - {name for name, _ in steps} - {name.rstrip("ab") for name, _ in steps}
        if unknown:
            parser.error(f"no such row: {', '.join(sorted(unknown))}")
        steps = [(name, step) for name, step in steps if name in wanted or name.rstrip("ab") in wanted]
    for name, step in steps:
        t0 = time.monotonic()
        try:
            step()
        except Exception:
            ISSUES.append(f"row {name} crashed:\n" + traceback.format_exc().rstrip())
        finally:
            try:
                reset_fentry()
            except Exception:
                ISSUES.append(f"reset after row {name} crashed:\n" + traceback.format_exc().rstrip())
            gc.collect()
        print(f"  row {name}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)

    print_table()
    print()
    held_after = {i for i in range(6) if MON.get_tool(i) is not None} - held_before
    check(not held_after, "sys.monitoring tool ids still held at exit: "
          + ", ".join(f"{i} ({MON.get_tool(i)})" for i in sorted(held_after)))
    if ISSUES:
        print(f"{len(ISSUES)} problem(s) seen:")
        for issue in ISSUES:
            print("  - " + issue.replace("\n", "\n    "))
    else:
        print("checks: every recorded count as expected; no tool id, ops or traced code left behind")
    if args.json:
        write_json(args.json)
    print(f"total {time.monotonic() - start:.0f} s")
    return 1 if ISSUES else 0


if __name__ == "__main__":
    sys.exit(main())
