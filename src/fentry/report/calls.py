"""Calls out of records: what every exporter (perfetto, chrome, speedscope,
folded) shares.

``CallSink`` is a ``Sink`` that turns each thread's records, drain by drain,
into *ops*, in the thread's time order, and hands them to its subclass
(``thread_ops``).  Only each thread's stack of open calls is kept: nothing
grows with the trace.

function_graph records nest as ``GraphReader`` nests them for the text
trace: ENTRY, RESUME and THROW open a call (a generator or coroutine
resumed is a call of its own, from resume to yield), RETURN, YIELD and
UNWIND close it.  An exit whose entry was never seen (traced from inside
the call, or its entry overwritten) is dropped; an exit of a call that is
lower in the stack closes the calls above it too (their exits were lost:
``CUT``); calls still open when a thread's records end (the stream ends,
is cut, or the tracer changes) are closed at the thread's last timestamp
(``OPEN``).  So every BEGIN has its END, properly nested.

The ops (tuples; ``code`` is a ``raw.CodeInfo``)::

    (BEGIN, ts, code, depth, how)                  how: ENTRY, RESUME, THROW
    (END, ts, code, depth, start, how, exc, begun) how: RETURN, YIELD, UNWIND,
                                                   CUT or OPEN; exc: the
                                                   exception's name (UNWIND);
                                                   begun: the BEGIN's how
    (CALL, ts, code, caller)                       the function tracer: an entry,
                                                   no duration (caller may be None)
    (EVENT, ts, event, site, values, depth)        a probe event (``event_fields``)
    (LOST, ts, count)                              count records were overwritten
                                                   before this point
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

from ..events.tracepoint_format import TracepointFormat, value_text
from ..raw import (
    ENTRY,
    FUNC_RECORD,
    GRAPH,
    GRAPH_RECORD,
    RESUME,
    RETURN,
    THRESH_RETURN,
    THROW,
    UNWIND,
    YIELD,
    FaultValue,
)
from .decode import FileSink, ProcessStream, ThreadInfo

if TYPE_CHECKING:
    from ..raw import Record
    from .decode import Batch, Records

# An op (see above): a tuple shaped by its first item.
type Op = tuple[Any, ...]

BEGIN, END, CALL, EVENT, LOST = range(5)
# How a call ends, besides RETURN, YIELD and UNWIND (raw.py's kinds 2, 3, 4).
CUT, OPEN = 6, 7
_ENTERS = frozenset((ENTRY, RESUME, THROW))

# Words for the ways in and out of a call, as the exports mark them.
BEGIN_WORDS = {ENTRY: "call", RESUME: "resume", THROW: "throw"}
END_WORDS = {RETURN: "return", YIELD: "yield", UNWIND: "raise", CUT: "exit not seen",
             OPEN: "unfinished"}


class ThreadCalls:
    """One thread's state: its open calls, and what is known of its time."""
    __slots__ = ("thread", "stream", "stack", "first", "last", "lost", "lost_total", "data")

    def __init__(self, thread: ThreadInfo, stream: ProcessStream) -> None:
        self.thread = thread
        self.stream = stream
        self.stack: list[tuple[Any, int, int]] = []     # (code, start, how) of the open calls
        self.first: int | None = None       # first and last timestamp seen
        self.last: int | None = None
        self.lost = 0                       # lost records not yet reported (no timestamp yet)
        self.lost_total = 0
        self.data: Any = None               # the exporter's own state for this thread


def walk(st: ThreadCalls, records: Records) -> list[Op]:
    """The ops of one thread's records, in order (see the module's doc):
    a list of record tuples, or ``RawRecords`` (decoded here, runs of
    fixed-size records straight from their bytes)."""
    ops: list[Op] = []
    if isinstance(records, list):
        if records:
            _walk_records(st, records, ops)
            _placed(st, ops, records[0][1], records[-1][1])
        return ops
    get = records.refs.get
    first: int | None = None
    last = 0
    for rtype, _, part in records.chunks():
        if rtype is None:
            _walk_records(st, part, ops)
            ts0, last = part[0][1], part[-1][1]
        elif rtype == GRAPH:
            _walk_graph_run(st, GRAPH_RECORD.iter_unpack(part), get, ops)
            ts0 = GRAPH_RECORD.unpack_from(part, 0)[2]
            last = GRAPH_RECORD.unpack_from(part, len(part) - GRAPH_RECORD.size)[2]
        else:
            calls = [(CALL, ts, get(c), get(p)) for _, _, ts, c, p in FUNC_RECORD.iter_unpack(part)]
            ops += calls
            ts0, last = calls[0][1], calls[-1][1]
        if first is None:
            first = ts0
    if first is not None:
        _placed(st, ops, first, last)
    return ops


def _placed(st: ThreadCalls, ops: list[Op], first: int, last: int) -> None:
    """The thread's first and last timestamps; losses not yet placed, before these ops."""
    if st.first is None:
        st.first = first
    st.last = last
    if st.lost:
        ops.insert(0, (LOST, first, st.lost))
        st.lost = 0


def _walk_records(st: ThreadCalls, records: list[Record], ops: list[Op]) -> None:
    app = ops.append
    stack = st.stack
    push, pop = stack.append, stack.pop
    enters = _ENTERS
    for rec in records:
        kind = rec[2]
        if kind.__class__ is int:       # function_graph
            code = rec[3]
            if kind == THRESH_RETURN:
                continue                # tracing_thresh's lone exit: its call has no start here
            if kind in enters:
                app((BEGIN, rec[1], code, len(stack), kind))
                push((code, rec[1], kind))
            elif stack and stack[-1][0] is code:
                top = pop()
                app((END, rec[1], code, len(stack), top[1], kind,
                     _name(rec[4]) if kind == UNWIND else None, top[2]))
            else:
                _unmatched(stack, app, rec[1], kind, code, rec[4] if kind == UNWIND else None)
        elif len(rec) == 4:             # function tracer
            app((CALL, rec[1], kind, rec[3]))
        else:                           # a probe event
            app((EVENT, rec[1], kind, rec[3], rec[4], len(stack)))


def _walk_graph_run(st: ThreadCalls, unpacked: Iterable[tuple[Any, ...]],
                    get: Callable[[int], object], ops: list[Op]) -> None:
    """function_graph records straight from their bytes (none an UNWIND):
    ``_walk_records``' loop without a tuple per record."""
    app = ops.append
    stack = st.stack
    push, pop = stack.append, stack.pop
    enters = _ENTERS
    for _, kind, ts, code in unpacked:
        code = get(code)
        if kind in enters:
            app((BEGIN, ts, code, len(stack), kind))
            push((code, ts, kind))
        elif stack and stack[-1][0] is code:
            top = pop()
            app((END, ts, code, len(stack), top[1], kind, None, top[2]))
        else:
            _unmatched(stack, app, ts, kind, code, None)


def _unmatched(stack: list[tuple[Any, int, int]], app: Callable[[Op], None], ts: int,
               kind: int, code: object, exc: object) -> None:
    """An exit that is not of the innermost open call: of one lower down
    (the calls above it lost their exits), or of none (dropped)."""
    for i in range(len(stack) - 1, -1, -1):
        if stack[i][0] is code:
            break
    else:
        return
    while len(stack) > i + 1:
        c, start, how = stack.pop()
        app((END, ts, c, len(stack), start, CUT, None, how))
    c, start, how = stack.pop()
    app((END, ts, c, len(stack), start, kind, _name(exc) if kind == UNWIND else None, how))


def close_all(st: ThreadCalls) -> list[Op]:
    """END ops (OPEN) for the calls still open, innermost first, at the
    thread's last timestamp; a LOST op for losses not yet placed."""
    ops: list[Op] = []
    stack = st.stack
    if st.lost and st.last is not None:
        ops.append((LOST, st.last, st.lost))
        st.lost = 0
    while stack:
        code, start, how = stack.pop()
        ops.append((END, st.last, code, len(stack), start, OPEN, None, how))
    return ops


def _name(exc_type: object) -> str:
    return exc_type if type(exc_type) is str else getattr(exc_type, "__name__", "?")


class CallSink(FileSink):
    """The exporters' base: ``thread_ops(st, ops)`` for each thread's ops.

    Subclasses may also override ``process(stream)`` (a stream begins),
    ``new_thread(st)`` (a thread is first seen; set ``st.data``) and
    ``close()`` (the recording is over: write what is left).  ``error`` is
    the first failed write; ``render_faults`` counts values that could not
    be rendered."""

    raw_records = True      # decoded in walk(), runs of records straight from their bytes

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(out)
        self.threads: dict[ThreadInfo, ThreadCalls] = {}
        self.render_faults = 0
        self.notes: list[str] = []      # what a user should know of the export

    # ---- Sink
    def start(self, stream: ProcessStream) -> None:
        self.process(stream)

    def tracer(self, stream: ProcessStream) -> None:
        self._close_stream(stream)      # a new tracer: no exit will come for what is open

    def batch(self, stream: ProcessStream, items: Batch) -> None:
        threads = self.threads
        for thread, lost, records in items:
            st = threads.get(thread)
            if st is None:
                st = threads[thread] = ThreadCalls(thread, stream)
                self.new_thread(st)
            if lost:
                st.lost += lost
                st.lost_total += lost
            if records:
                self.thread_ops(st, walk(st, records))

    def end(self, stream: ProcessStream) -> None:
        self._close_stream(stream)

    def finish(self, streams: dict[int, ProcessStream]) -> None:
        """The recording is over: close what streams that were cut left open."""
        for st in list(self.threads.values()):
            ops = close_all(st)
            if ops:
                self.thread_ops(st, ops)
        self.close()

    def faults(self, streams: dict[int, ProcessStream]) -> int:
        """Values that could not be rendered (each shows as ``(fault)``)."""
        return self.render_faults + sum(
            getattr(ref, "faults", 0) for s in streams.values() for ref in s.refs.values()
            if not isinstance(ref, str))

    def _close_stream(self, stream: ProcessStream) -> None:
        for st in list(self.threads.values()):
            if st.stream is stream:
                ops = close_all(st)
                if ops:
                    self.thread_ops(st, ops)

    # ---- for the subclasses
    def process(self, stream: ProcessStream) -> None:
        pass

    def new_thread(self, st: ThreadCalls) -> None:
        pass

    def thread_ops(self, st: ThreadCalls, ops: list[Op]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def event_fields(self, event: Any, site: tuple[Any, ...], values: tuple[object, ...]
                     ) -> list[tuple[str, object, str]]:
        """A probe event's fields: ``(name, value, text)``, text as the trace
        line prints it.  ``value`` is the value itself when it is a plain
        number or bool (for typed annotations), else the text.  A value that
        cannot be rendered is ``(fault)``, counted in ``render_faults``; an event
        whose definition this reader could not parse has one field, ``line``."""
        defn = getattr(event, "defn", None)
        if isinstance(event, TracepointFormat):         # python:raise, audit:open, ...
            return [(event.field_name(i), value if value.__class__ is int else value_text(value),
                     value_text(value)) for i, value in enumerate(values)]
        if defn is None:
            return [("line", *(2 * (_safe_line(event, site, values),)))]
        code = site[2] if defn.is_return else site[0]
        try:
            names = event.field_names(code)
        except Exception:
            names = tuple(f"arg{i + 1}" for i in range(len(values)))
        out: list[tuple[str, object, str]] = []
        types = event.types
        for name, value in zip(names, values):
            t = types.get(name)
            text = self.render(value, t)
            if value.__class__ in (int, float, bool) and (t is None or t[0] in "us") \
                    and (value.__class__ is not int or -(1 << 63) <= value < 1 << 63):
                out.append((name, value, text))
            else:
                out.append((name, text, text))
        return out

    def render(self, value: object, type_: str | None) -> str:
        from ..events.fetch import FAULT, render
        if type(value) is FaultValue:
            if value.why:
                self.render_faults += 1
            return FAULT
        try:
            text = render(value, type_)
            if type(text) is not str:
                raise TypeError(text)
            return text
        except Exception:
            self.render_faults += 1
            return FAULT

    @staticmethod
    def site_text(event: Any, site: tuple[Any, ...]) -> str:
        """Where a probe event fired: ``SYM+0xOFF``, or ``CALLER+0xOFF <- SYM``."""
        defn = getattr(event, "defn", None)
        if isinstance(event, TracepointFormat):
            return f"{event.group}:{event.name}"        # (its fields say where)
        try:
            if defn is not None and defn.is_return:
                caller, offset, code, raised = site
                where = f"{caller.co_qualname}+{offset:#x}" if caller else "<top>"
                text = f"{where} <- {code.co_qualname}"
                return text + (f" raised {raised}" if raised else "")
            code, offset = site[0], site[1]
            return f"{code.co_qualname}+{offset:#x}"
        except Exception:
            return "?"


def _safe_line(event: Any, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
    try:
        return str(event.line(site, values))
    except Exception:
        return f"{getattr(event, 'name', '?')}: (fault)"


def process_name(stream: ProcessStream) -> str:
    """A process's name for the viewers: its script or module, else python."""
    argv = stream.hello.get("argv") or []
    args = argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-m", "-c") and i + 1 < len(args):
            return args[i + 1] if a == "-m" else "python -c"
        if a in ("-X", "-W") and i + 1 < len(args):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return str(a).rsplit("/", 1)[-1]
    return (argv[0].rsplit("/", 1)[-1] if argv else "") or "python"


def thread_label(st: ThreadCalls) -> str:
    """``name-tid``, as the text trace's task column names a thread."""
    t = st.thread
    return f"{t.name}-{t.tid}"
