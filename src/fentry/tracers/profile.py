"""The function profiler: ``function_profile_enabled`` and ``trace_stat/function<N>``.

The kernel's profiler (``function_profile_call``, ``profile_graph_entry`` and
``profile_graph_return`` in kernel/trace/ftrace.c) is an ftrace ops of its
own, beside whatever tracer is current, on the functions set_ftrace_filter
and set_ftrace_notrace select.  It counts in place, per CPU; here per thread
(``hotpath.ProfileStat``, one entry per function the thread ran), and writes
nothing to the ring buffer.  Enabling it starts a new profile, as the
kernel's does; disabling it keeps the numbers for reading.

What a call is, as function_graph sees it: a Hit is a PY_START (a call; for
a generator or coroutine, its first run).  Its Time is that of its
activations: from PY_START, PY_RESUME or PY_THROW to PY_RETURN, PY_YIELD or
PY_UNWIND (an exception leaving the frame ends it too).

``sleep-time`` (on, the default, as the kernel's): a call of a generator or
coroutine function is one, from its first PY_START to its last PY_RETURN or
PY_UNWIND, and its Time includes the time it spent suspended (``yield``,
``await``), as the kernel's includes the time a task was scheduled out.
With ``graph-time`` off too, that sleep stays in its self time, as the
kernel's: it is time in no profiled call it made.  ``nosleep-time``: only its
activations count, from PY_START, PY_RESUME or PY_THROW to PY_YIELD,
PY_RETURN or PY_UNWIND; the time between is not on any thread's stack.  A
caller's self time is less only the activation it ran, never the sleep.  The
option is read when the profile starts.  A thread follows at most
``PROFILE_CALLS`` (64) generator calls under way: one closed while suspended
fires no event (3.13) and stays until it is the oldest and dropped; a call
dropped (or begun before the profile) counts its activations as with
nosleep-time.  Only generator and coroutine codes get these handlers:
ordinary functions cost the same either way.  Each activation counts on its own, as in
the kernel: a recursive function's Time counts the inner calls inside the
outer ones too (with ``graph-time``, the default).  With ``graph-time`` off,
Time is self time: an activation's time less that of the profiled
activations it made.  An exit whose start the profiler did not see (a frame
under way when it was enabled) counts nothing.
"""

from __future__ import annotations

import _thread
import inspect
from collections.abc import Iterable
from types import CodeType

from .. import arch, ftrace, hotpath
from ..ftrace import FtraceOps, Handlers
from ..symbols import SYMBOLS
from .text import usecs

E = arch.EVENTS
START, RESUME, EXIT = 0, 1, 2       # hotpath.profile_event's kinds
GEN_START, GEN_YIELD, GEN_EXIT = 3, 4, 5    # (a generator's or coroutine's, with sleep-time)
# Generators, coroutines and async generators: the codes sleep-time applies to.
SUSPENDS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | \
    inspect.CO_ITERABLE_COROUTINE

# One function's numbers: [hits, time, time_sq, self, self_sq] (ns, ns²).
type Numbers = list[int]


class ThreadProfile(hotpath.ProfileStat):
    """One thread's profile, and which thread (its native id, the N of trace_stat/function<N>)."""
    __slots__ = ("tid",)

    def __init__(self) -> None:
        super().__init__()
        self.tid = _thread.get_native_id()


class ProfileOps(FtraceOps):
    """The profiler's ops: counts and times each call of a traced function,
    into a profile of its own (``threads``: each thread's, made at its first call)."""

    local_events = E.PY_START | E.PY_RESUME | E.PY_RETURN | E.PY_YIELD
    global_events = E.PY_UNWIND | E.PY_THROW

    def __init__(self, sleep_time: bool = True) -> None:
        super().__init__(self.function_profile_call)
        self.sleep_time = sleep_time
        self.local = _thread._local()
        self.threads: list[ThreadProfile] = []
        self._lock = _thread.allocate_lock()

    def attach(self) -> ThreadProfile:
        """The calling thread's profile, made at its first profiled call (slow path)."""
        st = ThreadProfile()
        with self._lock:
            self.threads.append(st)
        self.local.ps = st
        return st

    def function_profile_call(self, ip: hotpath.Ip, parent_ip: hotpath.Ip | None, ops: FtraceOps,
                              regs: object) -> None:
        """The four-argument form, for callers of ``func`` itself: a hit, of no time."""
        hotpath.profile_event(self.local, self.attach, START, 2)(ip.code, 0)
        hotpath.profile_event(self.local, self.attach, EXIT, 3)(ip.code, 0, None)

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        local, attach = self.local, self.attach
        if self.sleep_time and code.co_flags & SUSPENDS:
            return {E.PY_START: hotpath.profile_event(local, attach, GEN_START, 2, depth),
                    E.PY_RESUME: hotpath.profile_event(local, attach, RESUME, 2),
                    E.PY_THROW: hotpath.profile_event(local, attach, RESUME, 3),
                    E.PY_RETURN: hotpath.profile_event(local, attach, GEN_EXIT, 3, depth),
                    E.PY_YIELD: hotpath.profile_event(local, attach, GEN_YIELD, 3, depth),
                    E.PY_UNWIND: hotpath.profile_event(local, attach, GEN_EXIT, 3, depth)}
        return {E.PY_START: hotpath.profile_event(local, attach, START, 2),
                E.PY_RESUME: hotpath.profile_event(local, attach, RESUME, 2),
                E.PY_THROW: hotpath.profile_event(local, attach, RESUME, 3),
                E.PY_RETURN: hotpath.profile_event(local, attach, EXIT, 3),
                E.PY_YIELD: hotpath.profile_event(local, attach, EXIT, 3),
                E.PY_UNWIND: hotpath.profile_event(local, attach, EXIT, 3)}


class FunctionProfiler:
    """The process's profiler (the kernel's is global too: no instance has one)."""

    def __init__(self, filter_: ftrace.FilterHash, notrace: ftrace.FilterHash,
                 options: dict[str, bool] | None = None) -> None:
        self.filter, self.notrace = filter_, notrace
        self.options = options if options is not None else {}      # (sleep-time, read at enable)
        self.enabled = False
        # The ops of the last profile: running while enabled, read after.
        self.last: ProfileOps | None = None

    def set_enabled(self, on: bool) -> None:
        """On: a new profile starts (every thread's numbers from zero); off: it stops, kept."""
        if on == self.enabled:
            return
        if on:
            ftrace.check_tool_id()      # ToolIdBusy, before anything changes
            # A new ops, with new tables: a handler of the old one that is
            # running now in another thread counts into the old profile.
            ops = ProfileOps(self.options.get("sleep-time", True))
            ops.filter, ops.notrace = self.filter, self.notrace
            ftrace.register_ftrace_function(ops)
            self.last, self.enabled = ops, True
        elif self.last is not None:
            self.enabled = False
            ftrace.unregister_ftrace_function(self.last)

    def per_thread(self) -> dict[int, dict[CodeType, Numbers]]:
        """tid -> code -> numbers (two profiles of one tid, a reused one, are summed)."""
        out: dict[int, dict[CodeType, Numbers]] = {}
        if self.last is None:
            return out
        with self.last._lock:
            threads = list(self.last.threads)
        for st in threads:
            functions = out.setdefault(st.tid, {})
            for code, *numbers in st.stats():
                _add(functions, code, numbers)
        return out

    def merged(self) -> dict[CodeType, Numbers]:
        """code -> numbers, over every thread."""
        out: dict[CodeType, Numbers] = {}
        for functions in self.per_thread().values():
            for code, numbers in functions.items():
                _add(out, code, numbers)
        return out


def _add(into: dict[CodeType, Numbers], code: CodeType, numbers: Iterable[int]) -> None:
    have = into.get(code)
    if have is None:
        into[code] = [int(x) for x in numbers]      # (C's are from doubles: ints already)
    else:
        for i, x in enumerate(numbers):
            have[i] += int(x)


def rows(functions: dict[CodeType, Numbers]) -> list[tuple[str, Numbers]]:
    """(name, numbers) per function, its name as set_ftrace_filter takes it."""
    return [(SYMBOLS.name_of(code), n) for code, n in functions.items()]


# -- trace_stat/function<N>: the kernel's function_stat_headers and function_stat_show

def stat_text(named: Iterable[tuple[str, Numbers]], graph_time: bool) -> str:
    """The stat file: a line per function, most time first.  ``graph_time``
    off: Time (and Avg, s^2) are self time.  The Function column is the
    kernel's 30 characters, wider when a name is longer (the kernel cuts it)."""
    lines = []
    for name, (hits, time, time_sq, own, own_sq) in named:
        if not hits:
            continue        # (only returns seen: the kernel shows no record with counter 0)
        t, sq = (time, time_sq) if graph_time else (own, own_sq)
        lines.append((t, name, hits, sq))
    lines.sort(key=lambda line: (-line[0], line[1]))
    width = max([30] + [len(line[1]) for line in lines])
    header = (f"  {'Function':<{width}}         Hit    Time            Avg             s^2\n"
              f"  {'--------':<{width}}         ---    ----            ---             ---\n")
    return header + "".join(_line(name, width, hits, t, sq) for t, name, hits, sq in lines)


def _line(name: str, width: int, hits: int, time: int, time_sq: int) -> str:
    # s^2: the sample variance (n Σx² - (Σx)²) / (n (n-1)), shown in us² with
    # the duration's "us" (the kernel divides ns² by 1000, and the duration
    # printer by 1000 again).
    var = max(0, hits * time_sq - time * time) // (hits * (hits - 1) * 1000) if hits > 1 else 0
    return f"  {name:<{width}}  {hits:10d}    {usecs(time)}    {usecs(time // hits)}    {usecs(var)}\n"
