"""Text: the kernel's trace formats, made when a trace is read.

The readers turn records -- from the in-process rings, or decoded from the
raw stream by a reader outside the process (``fentry/report``) -- into the
kernel's lines: ``FunctionReader`` for the function tracer (and probe events
alone), ``GraphReader`` for function_graph.  Formatting happens here, when
the trace is read, never when it is recorded.  A record's code is a code
object or the reader's ``raw.CodeInfo``; its thread is a ring buffer's
``ThreadBuffer`` or the reader's thread: both have ``tid``, ``read_name``
(the name its records end with, as far as it knows) and ``renamed`` (whether
rename records may be among them: ``named_runs``).
"""

from __future__ import annotations

from ..events.fetch import parameters, render
from ..raw import ENTER_KINDS, THRESH_RETURN, UNWIND, YIELD
from .rename import TASK_RENAME

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol

    from ..raw import Record

    class Task(Protocol):
        """A thread, as the readers name it (a ThreadBuffer, or a reader's ThreadInfo)."""
        @property
        def tid(self) -> int: ...
        @property
        def read_name(self) -> str: ...
        @property
        def renamed(self) -> int: ...


def task(name: str, tid: int) -> str:
    """``<task>-<tid>``, right-aligned as the kernel's comm-pid column."""
    return f"{name[:16]:>16}-{tid:<7d}"


def named_runs(tb: Task, records: list[Record]) -> list[tuple[str, list[Record]]]:
    """A thread's records in runs of one name, ``(name, records)``, its
    rename records (``tracers/rename.py``) left out: the records before a
    rename have its old name, those after it its new one, and with no rename
    among them the thread's ``read_name`` (read before they were taken, so
    a rename that came after them has its record after them)."""
    if not tb.renamed:
        return [(tb.read_name, records)]
    cuts = [i for i, r in enumerate(records) if r[2] is TASK_RENAME]
    if not cuts:
        return [(tb.read_name, records)]
    runs = [(records[cuts[0]][4][1], records[:cuts[0]])]
    for k, i in enumerate(cuts):
        end = cuts[k + 1] if k + 1 < len(cuts) else len(records)
        runs.append((records[i][4][2], records[i + 1:end]))
    return [(name, run) for name, run in runs if run]


def first_name(tb: Task, records: list[Record]) -> str:
    """The name of the first of a thread's records (see ``named_runs``)."""
    if tb.renamed:
        for r in records:
            if r[2] is TASK_RENAME:
                name: str = r[4][1]
                return name
    return tb.read_name


def last_name(name: str, records: list[Record]) -> str:
    """The name after a thread's records, ``name`` before them."""
    for r in reversed(records):
        if r[2] is TASK_RENAME:
            last: str = r[4][2]
            return last
    return name


def event_line(prefix: str, rec: Record, stamp: Callable[[int], str] | None = None) -> str:
    """A probe event's record, ``(seq, ts, event, site, values)``: the event
    formats its own part (its print fmt), after the usual prefix and the
    timestamp (``stamp(ts)``; None: in nanoseconds).  A kernel event
    (``-K``; seq None) is the kernel's whole line, its task and CPU its own."""
    ts = rec[1]
    if rec[0] is None:
        return rec[2].kernel_line(rec, None if stamp is None else stamp(ts))  # type: ignore[no-any-return]
    if stamp is not None:
        return f"{prefix}{stamp(ts)}{rec[2].line(rec[3], rec[4])}\n"
    return f"{prefix} {ts // 1_000_000_000:5d}.{ts // 1000 % 1_000_000:06d}: {rec[2].line(rec[3], rec[4])}\n"


# trace_clock's clocks that are not in nanoseconds (the kernel's in_ns 0):
# their timestamps print as a plain count.
COUNT_CLOCKS = ("counter",)


def stamper(clock: str, context: bool = True) -> Callable[[int], str]:
    """The timestamp column, as the kernel's trace_print_time: seconds and
    microseconds, or a plain count for a clock that is not in nanoseconds;
    nothing at all with ``context-info`` off."""
    if not context:
        return lambda ts: ""
    if clock in COUNT_CLOCKS:
        return lambda ts: f" {ts:12d}: "
    return lambda ts: f" {ts // 1_000_000_000:5d}.{ts // 1000 % 1_000_000:06d}: "


def is_event(rec: Record) -> bool:
    """function_graph records hold a kind number third; events hold the event."""
    return rec[2].__class__ is not int


def merge_lines(stamps: list[list[int]], texts: list[list[str]]) -> list[str]:
    """Lines of several threads, in timestamp order (each thread's already is)."""
    if len(texts) == 1:
        return texts[0]
    all_stamps = [t for s in stamps for t in s]
    all_texts = [t for s in texts for t in s]
    # Timsort merges the per-thread runs in C: cheaper than heapq.merge here.
    order = sorted(range(len(all_stamps)), key=all_stamps.__getitem__)
    return [all_texts[i] for i in order]


def lost_line(tb: Task, lost: int) -> str:
    return f"TID:{tb.tid} [LOST {lost} EVENTS]\n"


def buffer_header(tracer: str, in_buffer: int, written: int, threads: int) -> str:
    return (f"# tracer: {tracer}\n"
            "#\n"
            f"# entries-in-buffer/entries-written: {in_buffer}/{written}   #P:{threads}\n"
            "#\n")


FUNCTION_COLUMNS = (
    "#                                _-----=> irqs-off/BH-disabled\n"
    "#                               / _----=> need-resched\n"
    "#                              | / _---=> hardirq/softirq\n"
    "#                              || / _--=> preempt-depth\n"
    "#                              ||| / _-=> migrate-disable\n"
    "#                              |||| /     delay\n"
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n"
    "#              | |         |   |||||     |         |\n"
    "# (TASK is the thread name, PID its native thread id; Python threads have\n"
    "#  no CPU or irq state, so CPU# is always 000 and the flags always .....)\n"
)


class FunctionReader:
    """Formats function records: ``task-tid [000] ..... ts: func <-parent``.

    This is where the trace's cost is paid, so it is written for speed: one
    format string per thread, one comprehension per thread's records.
    """

    def __init__(self, options: dict[str, bool], clock: str = "local") -> None:
        self.parent = options.get("print-parent", True)
        # context-info off: no task, CPU, flags or timestamp, as the kernel's.
        self.context = options.get("context-info", True)
        # sym-offset: the function as the kernel's %pS, func+0x0/0xSIZE (its
        # entry, and its bytecode's size); the parent by its name alone, as
        # the call's offset in it is not recorded.
        self.sym_offset = options.get("sym-offset", False)
        self.syms: dict[Any, str] = {}
        self.stamp = stamper(clock, self.context)
        # The fast path of lines(): the defaults' layout, formatted in place.
        self.plain = self.context and clock not in COUNT_CLOCKS and not self.sym_offset

    def header(self) -> str:
        return FUNCTION_COLUMNS if self.context else ""

    def lost(self, tb: Task) -> None:
        """Records of ``tb`` were overwritten: nothing here depends on them."""

    def lines(self, per_thread: Sequence[tuple[Task, list[Record]]]) -> list[str]:
        texts: list[list[str]] = []
        stamps: list[list[int]] = []
        stamp = self.stamp
        # (A thread renamed among its records: a run a name, each its own prefix.)
        runs = [(tb.tid, name, records) for tb, all_records in per_thread
                for name, records in named_runs(tb, all_records)]
        for tid, name, records in runs:
            prefix = task(name, tid) + " [000] ....." if self.context else ""
            if not self.plain:      # (not the common case: a call more per line)
                line = self._line
                texts.append([line(prefix, r) if len(r) == 4 else event_line(prefix, r, stamp)
                              for r in records])
            elif self.parent:
                fmt = prefix + " %5d.%06d: %s <-%s\n"
                texts.append([fmt % (r[1] // 1_000_000_000, r[1] // 1000 % 1_000_000, r[2].co_qualname,
                                     "<top>" if r[3] is None else r[3].co_qualname)
                              if len(r) == 4 else event_line(prefix, r)
                              for r in records])
            else:
                fmt = prefix + " %5d.%06d: %s\n"
                texts.append([fmt % (r[1] // 1_000_000_000, r[1] // 1000 % 1_000_000, r[2].co_qualname)
                              if len(r) == 4 else event_line(prefix, r)
                              for r in records])
            stamps.append([rec[1] for rec in records])
        return merge_lines(stamps, texts)

    def _line(self, prefix: str, r: Record) -> str:
        """A function record's line, the options' way."""
        parent = ""
        if self.parent:
            parent = " <-" + ("<top>" if r[3] is None else r[3].co_qualname)
        func = self._sym(r[2]) if self.sym_offset else r[2].co_qualname
        return f"{prefix}{self.stamp(r[1])}{func}{parent}\n"

    def _sym(self, code: Any) -> str:
        """``func+0x0/0xSIZE``: a code object's size is its bytecode's, in
        bytes as dis's offsets (a reader's CodeInfo has it as co_size)."""
        sym = self.syms.get(code)
        if sym is None:
            size = code.co_size if hasattr(code, "co_size") else len(code.co_code)
            sym = self.syms[code] = f"{code.co_qualname}+0x0/0x{size:x}"
        return sym

    def flush(self) -> list[str]:
        return []


# The header's columns, each shown or not by its option, as the kernel's
# print_graph_headers_flags: the time (funcgraph-abstime), the thread
# (funcgraph-proc; fentry's column is the function tracer's TASK-PID, wider
# than the kernel's 14-character comm-pid, so its head is too), the duration
# (funcgraph-duration), the calls.
_HEADER = (("     TIME       ", " " * 11 + "TASK/TID" + " " * 7, "  DURATION   ",
            "               FUNCTION CALLS"),
           ("      |         ", " " * 12 + "|    |" + " " * 8, "   |   |      ",
            "               |   |   |   |"))

_MARKS = ((1_000_000_000, "$"), (100_000_000, "@"), (10_000_000, "*"),
          (1_000_000, "#"), (100_000, "!"), (10_000, "+"))
NO_DURATION = " " * 14       # the duration column of a line that has none (FLAGS_FILL_FULL)


def duration(ns: int, overhead: bool = True) -> str:
    """The kernel's duration column: mark (``funcgraph-overhead``; a blank
    without it), usecs with up to 7 digits, `` us ``, padding."""
    mark = " "
    if overhead:
        for limit, m in _MARKS:
            if ns > limit:
                mark = m
                break
    return f"{mark} {usecs(ns)}"


def usecs(ns: int) -> str:
    """The kernel's trace_print_graph_duration: usecs with up to 7 digits, `` us ``, padding."""
    whole = str(ns // 1000)
    text = whole
    if len(whole) < 7:
        text += "." + f"{ns % 1000:03d}"[:7 - len(whole)]
    return f"{text} us " + " " * max(0, 8 - len(text))


# How long (in the records' time) an entry that ended a thread's last read
# waits, in a recording's text, for the thread's next record, which tells a
# leaf (``f();``) from a call (``f() {``), before it is printed as a call.
PENDING_HOLD_NS = 1_000_000_000


class _ThreadState:
    __slots__ = ("stack", "pending", "task", "lost", "next_seq")

    def __init__(self, tb: Task) -> None:
        self.stack: list[tuple[Any, int]] = []          # (code, entry timestamp)
        self.pending: Record | None = None    # a trailing entry: leaf or not, not known yet
        self.task = task(tb.read_name, tb.tid)    # (set anew for every read: _thread_lines)
        self.lost = False       # records of this thread were overwritten: entries may be missing
        self.next_seq: int | None = None      # the seq of the record after the last one read


class GraphReader:
    """Turns graph records into the kernel's function_graph text.

    Keeps per-thread nesting across reads, so trace_pipe can feed it batch by
    batch; an entry whose next record is not there yet waits one read, or
    with ``hold_ns``, until the thread's next read or until the other
    threads' records are ``hold_ns`` past it (a recording's text: its
    drains may catch a thread off the CPU just after an entry).
    A record that carries values (``funcgraph-args``, ``funcgraph-retval``
    on when it was recorded) shows them.
    """

    def __init__(self, options: dict[str, bool], hold_ns: int = 0) -> None:
        self.hold_ns = hold_ns
        self.tail = options.get("funcgraph-tail", False)
        self.show_duration = options.get("funcgraph-duration", True)
        self.show_task = options.get("funcgraph-proc", True)
        self.abstime = options.get("funcgraph-abstime", False)
        self.overhead = options.get("funcgraph-overhead", True)
        self.threads: dict[int, _ThreadState] = {}
        self.latest = 0         # the newest record's timestamp read

    def header(self) -> str:
        """The column heads, of the columns the options show."""
        heads = []
        for abstime, task, dur, func in _HEADER:
            heads.append("#" + (abstime if self.abstime else "") + (task if self.show_task else "")
                         + (dur if self.show_duration else "") + func + "\n")
        return "".join(heads)

    def lost(self, tb: Task) -> None:
        """Records of ``tb`` were overwritten: from now on an exit whose
        entry is not known may be one whose entry was lost, and says which
        function it closes, as the kernel's does.  Where the loss is (the
        gap in the records' seq numbers), the calls open before it are
        forgotten: they may have ended in it, and others begun, and with no
        depth in the records (the kernel's has one) an exit cannot be told
        to be theirs; their exits are named, with no duration, and nesting
        starts again from the left."""
        self._state(tb).lost = True

    def _state(self, tb: Task) -> _ThreadState:
        st = self.threads.get(id(tb))
        if st is None:
            st = self.threads[id(tb)] = _ThreadState(tb)
        return st

    def _line(self, st: _ThreadState, ts: int, dur: str, depth: int, text: str) -> str:
        # The kernel's columns (print_graph_prologue, print_graph_duration):
        # each option drops its column whole, separator and all, so the
        # calls' indentation is the same whichever are shown.
        task = st.task + "| " if self.show_task else ""
        if self.abstime:        # print_graph_abs_time
            task = f"{ts // 1_000_000_000:5d}.{ts // 1000 % 1_000_000:06d} |  " + task
        if self.show_duration:
            return f"{task}{dur}|  {'  ' * depth}{text}\n"
        return f"{task}{'  ' * depth}{text}\n"

    def _thread_lines(self, st: _ThreadState, tb: Task, records: list[Record]
                      ) -> list[tuple[int, str]]:
        """(timestamp, line) for one thread's records, in order."""
        out: list[tuple[int, str]] = []
        stack = st.stack
        if st.pending is not None:
            records = [st.pending] + records
            st.pending = None
        st.task = task(first_name(tb, records), tb.tid)
        n = len(records)
        i = 0
        while i < n:
            rec = records[i]
            kind, code, ts = rec[2], rec[3], rec[1]
            if rec[0] is None:      # a kernel event (-K): a comment in the frame running, as a probe's
                out.append((ts, self._line(st, ts, NO_DURATION, len(stack),
                                           f"/* {kind.line(rec[3], rec[4])} */")))
                i += 1
                continue
            if rec[0] != st.next_seq and st.next_seq is not None:       # records lost here
                stack.clear()
                st.lost = True
            st.next_seq = rec[0] + 1
            if kind is TASK_RENAME:       # the thread's name from here on (no line)
                st.task = task(rec[4][2], tb.tid)
            elif is_event(rec):     # a probe event: a comment where it happened
                out.append((ts, self._line(st, ts, NO_DURATION, len(stack),
                                           f"/* {kind.line(rec[3], rec[4])} */")))
            elif kind == THRESH_RETURN:
                # tracing_thresh: a long call's exit alone, as the kernel
                # prints a return with no entry (print_graph_return).
                out.append((ts, self._line(st, ts, duration(rec[4], self.overhead), rec[5],
                                           f"}} /* {code.co_qualname} */")))
            elif kind in ENTER_KINDS:
                nxt = records[i + 1] if i + 1 < n else None
                if nxt is None:
                    st.pending = rec
                    st.next_seq = rec[0]        # (read again, first, with the next records)
                    break
                if nxt[3] is code and nxt[2] not in ENTER_KINDS and nxt[0] == st.next_seq:
                    out.append((ts, self._leaf(st, rec, nxt)))
                    st.next_seq += 1
                    i += 2
                    continue
                out.append((ts, self._line(st, ts, NO_DURATION, len(stack), f"{_call(rec)} {{")))
                stack.append((code, ts))
            else:
                line = self._exit(st, rec)
                if line is not None:
                    out.append((ts, line))
            i += 1
        return out

    def _leaf(self, st: _ThreadState, rec: Record, exit_rec: Record) -> str:
        text = f"{_call(rec)};"
        if exit_rec[2] == UNWIND:
            text += f" /* raised {_name(exit_rec[4])} */"
        elif exit_rec[2] == YIELD:
            text += " /* yield */"
        elif len(exit_rec) > 4:         # print_graph_retval, at a leaf
            text += f" /* ret={render(exit_rec[4][0], None)} */"
        return self._line(st, rec[1], duration(exit_rec[1] - rec[1], self.overhead), len(st.stack), text)

    def _exit(self, st: _ThreadState, rec: Record) -> str | None:
        """The exit's line; None for the exit of a call whose entry was never
        seen, nothing lost (traced from inside it), as the kernel's return
        hook exists only for entries it saw."""
        code, ts = rec[3], rec[1]
        stack = st.stack
        if not stack or stack[-1][0] is not code:
            if not any(c is code for c, _ in stack):
                if not st.lost:
                    return None
                # Its entry was lost (print_graph_return's func_match): named, with no duration.
                return self._line(st, ts, NO_DURATION, len(stack), self._closing(rec, True))
            # Frames above this one whose exits we never saw (lost events) are closed with it.
            while stack[-1][0] is not code:
                stack.pop()
        _, start = stack.pop()
        return self._line(st, ts, duration(ts - start, self.overhead), len(stack),
                          self._closing(rec, self.tail))

    def _closing(self, rec: Record, named: bool) -> str:
        """An exit's ``}`` and its comment: the function's name if ``named``,
        what left it, and its value (print_graph_retval names it always)."""
        kind, code = rec[2], rec[3]
        if kind == UNWIND:
            return f"}} /* {code.co_qualname} raised {_name(rec[4])} */"
        if kind == YIELD:
            return f"}} /* {code.co_qualname} yield */" if named else "} /* yield */"
        if len(rec) > 4:
            return f"}} /* {code.co_qualname} ret={render(rec[4][0], None)} */"
        return f"}} /* {code.co_qualname} */" if named else "}"

    def lines(self, per_thread: Sequence[tuple[Task, list[Record]]]) -> list[str]:
        for _, records in per_thread:
            if records:
                self.latest = max(self.latest, records[-1][1])
        streams = [self._thread_lines(self._state(tb), tb, records) for tb, records in per_thread]
        seen = {id(tb) for tb, _ in per_thread}
        # A pending entry of a thread that wrote nothing since: not a leaf
        # after all (once the others' records are hold_ns past it).
        for key, st in self.threads.items():
            if (key not in seen and st.pending is not None
                    and self.latest - st.pending[1] >= self.hold_ns):
                streams.append(self._open(st))
        return _merge(streams)

    def _open(self, st: _ThreadState) -> list[tuple[int, str]]:
        rec, st.pending = st.pending, None
        if rec is None:
            return []
        line = self._line(st, rec[1], NO_DURATION, len(st.stack), f"{_call(rec)} {{")
        st.stack.append((rec[3], rec[1]))
        st.next_seq = rec[0] + 1
        return [(rec[1], line)]

    def flush(self) -> list[str]:
        return _merge([self._open(st) for st in self.threads.values() if st.pending is not None])


def _merge(streams: list[list[tuple[int, str]]]) -> list[str]:
    return merge_lines([[ts for ts, _ in s] for s in streams],
                              [[line for _, line in s] for s in streams])


def _call(rec: Record) -> str:
    """An entry's ``func()``, or with its arguments ``func(a=1, b='x')``
    (funcgraph-args: print_function_args' ``name=value``, by the code's
    parameter names)."""
    code = rec[3]
    if len(rec) < 5:
        return f"{code.co_qualname}()"
    values = rec[4]
    names = parameters(code)
    args = [f"{name}={render(v, None)}" for name, v in zip(names, values)]
    if len(names) > len(values):
        args.append("...")
    return f"{code.co_qualname}({', '.join(args)})"


def _name(exc_type: object) -> str:
    """An exception type's name: the type in process, its name in a reader."""
    return exc_type if type(exc_type) is str else getattr(exc_type, "__name__", "?")
