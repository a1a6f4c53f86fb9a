"""The ``function_graph`` tracer: entries and exits, nested, with durations.

Python's counterpart of the kernel's return trampolines is the set of exit
events: PY_RETURN, PY_YIELD (a generator or coroutine leaves, and PY_RESUME
re-enters it), and PY_UNWIND (a frame left by an exception; global-only in
CPython, so it costs a callback per unwound frame while this tracer runs).
PY_THROW (``gen.throw()``, ``close()``, cancellation) re-enters like a resume.
"""

from __future__ import annotations

from types import CodeType
from collections.abc import Callable

from .. import arch, hotpath
from ..ftrace import FtraceOps
from . import output
from .ring_buffer import RingBuffer, ThreadBuffer

E = arch.EVENTS
ENTRY, RESUME, RETURN, YIELD, UNWIND, THROW = range(6)
_ENTERS = (ENTRY, RESUME, THROW)


class GraphOps(FtraceOps):
    """Records ``(seq, ts, kind, code[, exception type])`` on entry and exit."""

    local_events = E.PY_START | E.PY_RESUME | E.PY_RETURN | E.PY_YIELD
    global_events = E.PY_UNWIND | E.PY_THROW
    outermost = True

    def __init__(self, buffer: RingBuffer) -> None:
        super().__init__(self.graph_entry)
        self.buffer = buffer

    def graph_entry(self, ip, parent_ip, ops, regs) -> None:
        """The four-argument form, for callers of ``func`` itself."""
        tb = getattr(self.buffer.local, "tb", None) or self.buffer.attach()
        tb.record((ENTRY, ip.code))

    def handlers(self, code: CodeType, module: str, depth: int) -> dict[int, Callable]:
        local, attach = self.buffer.local, self.buffer.attach
        return {E.PY_START: hotpath.graph_event(local, attach, ENTRY),
                E.PY_RESUME: hotpath.graph_event(local, attach, RESUME),
                E.PY_RETURN: hotpath.graph_event(local, attach, RETURN),
                E.PY_YIELD: hotpath.graph_event(local, attach, YIELD),
                E.PY_UNWIND: hotpath.graph_exc_event(local, attach, UNWIND),
                E.PY_THROW: hotpath.graph_event(local, attach, THROW)}


# The header's columns, each shown or not by its option: the thread
# (funcgraph-proc), the duration (funcgraph-duration), the calls.
_HEADER = (("       TASK/TID        ", " DURATION                 ", " FUNCTION CALLS"),
           ("          |  |         ", "  |   |                   ", "  |   |   |   |"))

_MARKS = ((1_000_000_000, "$"), (100_000_000, "@"), (10_000_000, "*"),
          (1_000_000, "#"), (100_000, "!"), (10_000, "+"))
NO_DURATION = " " * 14


def duration(ns: int) -> str:
    """The kernel's duration column: mark, usecs with up to 7 digits, `` us ``, padding."""
    mark = " "
    for limit, m in _MARKS:
        if ns > limit:
            mark = m
            break
    usecs = str(ns // 1000)
    text = usecs
    if len(usecs) < 7:
        text += "." + f"{ns % 1000:03d}"[:7 - len(usecs)]
    return f"{mark} {text} us " + " " * max(0, 8 - len(text))


class _ThreadState:
    __slots__ = ("stack", "pending", "task")

    def __init__(self, tb: ThreadBuffer) -> None:
        self.stack: list[tuple[CodeType, int]] = []
        self.pending: tuple | None = None    # a trailing entry: leaf or not, not known yet
        self.task = output.task(tb)


class GraphReader:
    """Turns graph records into the kernel's function_graph text.

    Keeps per-thread nesting across reads, so trace_pipe can feed it batch by
    batch; an entry whose next record is not there yet waits one read.
    """

    def __init__(self, options: dict[str, bool]) -> None:
        self.tail = options.get("funcgraph-tail", False)
        self.show_duration = options.get("funcgraph-duration", True)
        self.show_task = options.get("funcgraph-proc", True)
        self.threads: dict[int, _ThreadState] = {}

    def header(self) -> str:
        """The column heads, of the columns the options show."""
        heads = []
        for task, dur, func in _HEADER:
            heads.append("#" + (task if self.show_task else "")
                         + (dur if self.show_duration else "") + func + "\n")
        return "".join(heads)

    def _state(self, tb: ThreadBuffer) -> _ThreadState:
        st = self.threads.get(id(tb))
        if st is None:
            st = self.threads[id(tb)] = _ThreadState(tb)
        return st

    def _line(self, st: _ThreadState, dur: str, depth: int, text: str) -> str:
        task = st.task + "| " if self.show_task else " "
        if self.show_duration:
            return f"{task}{dur}|  {'  ' * depth}{text}\n"
        return f"{task} {'  ' * depth}{text}\n"

    def _thread_lines(self, st: _ThreadState, records: list) -> list[tuple[int, str]]:
        """(timestamp, line) for one thread's records, in order."""
        out = []
        stack = st.stack
        if st.pending is not None:
            records = [st.pending] + records
            st.pending = None
        n = len(records)
        i = 0
        while i < n:
            rec = records[i]
            kind, code, ts = rec[2], rec[3], rec[1]
            if output.is_event(rec):     # a probe event: a comment where it happened
                out.append((ts, self._line(st, NO_DURATION, len(stack),
                                           f"/* {kind.line(rec[3], rec[4])} */")))
            elif kind in _ENTERS:
                nxt = records[i + 1] if i + 1 < n else None
                if nxt is None:
                    st.pending = rec
                    break
                if nxt[3] is code and nxt[2] not in _ENTERS:
                    out.append((ts, self._leaf(st, len(stack), code, nxt, nxt[1] - ts)))
                    i += 2
                    continue
                out.append((ts, self._line(st, NO_DURATION, len(stack), f"{code.co_qualname}() {{")))
                stack.append((code, ts))
            else:
                out.append((ts, self._exit(st, rec)))
            i += 1
        return out

    def _leaf(self, st, depth, code, exit_rec, ns) -> str:
        text = f"{code.co_qualname}();"
        if exit_rec[2] == UNWIND:
            text += f" /* raised {exit_rec[4].__name__} */"
        elif exit_rec[2] == YIELD:
            text += " /* yield */"
        return self._line(st, duration(ns), depth, text)

    def _exit(self, st: _ThreadState, rec: tuple) -> str:
        kind, code, ts = rec[2], rec[3], rec[1]
        stack = st.stack
        # Frames above this one whose exits we never saw (tracing switched on
        # mid-call, lost events) are closed with it.
        while stack and stack[-1][0] is not code and any(c is code for c, _ in stack):
            stack.pop()
        if stack and stack[-1][0] is code:
            _, start = stack.pop()
            dur = duration(ts - start)
        else:
            dur = NO_DURATION
        text = "}"
        if kind == UNWIND:
            text += f" /* {code.co_qualname} raised {rec[4].__name__} */"
        elif kind == YIELD:
            text += f" /* {code.co_qualname} yield */" if self.tail else " /* yield */"
        elif self.tail:
            text += f" /* {code.co_qualname} */"
        return self._line(st, dur, len(stack), text)

    def lines(self, per_thread: list[tuple[ThreadBuffer, list]]) -> list[str]:
        streams = [self._thread_lines(self._state(tb), records) for tb, records in per_thread]
        seen = {id(tb) for tb, _ in per_thread}
        # A pending entry of a thread that wrote nothing since: not a leaf after all.
        for key, st in self.threads.items():
            if key not in seen and st.pending is not None:
                streams.append(self._open(st))
        return _merge(streams)

    def _open(self, st: _ThreadState) -> list[tuple[int, str]]:
        rec, st.pending = st.pending, None
        line = self._line(st, NO_DURATION, len(st.stack), f"{rec[3].co_qualname}() {{")
        st.stack.append((rec[3], rec[1]))
        return [(rec[1], line)]

    def flush(self) -> list[str]:
        return _merge([self._open(st) for st in self.threads.values() if st.pending is not None])


def _merge(streams: list[list[tuple[int, str]]]) -> list[str]:
    return output.merge_lines([[ts for ts, _ in s] for s in streams],
                              [[line for _, line in s] for s in streams])
