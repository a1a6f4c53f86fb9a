"""A trace instance: the ring buffer, the current tracer, its filters and options.

What the tracefs files read and write.  Tracers are built on FtraceOps; the
instance's set_ftrace_filter / set_ftrace_notrace hashes are shared by
whichever tracer is current.
"""

from __future__ import annotations

import _thread
import re
import time
from collections.abc import Callable

from .. import ftrace
from ..errors import TraceError
from ..events.marker import MARKER, RAW_MARKER, marker_text, raw_marker_values
from ..ftrace import FilterHash, FtraceOps
from ..hotpath import GRAPH_STACK
from . import text as output
from .commands import FuncCommands
from .function import FunctionOps
from .function_graph import GraphOps
from .pid_fork import OPTION_BITS, ForkOps
from .ring_buffer import DEFAULT_SIZE_KB, TRACE_CLOCKS, RingBuffer, Taken
from .text import FunctionReader, GraphReader

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from ..raw import Record

# name -> (ops class, reader class); nop has neither.
TRACERS: dict[str, tuple[type[FunctionOps | GraphOps] | None, type[FunctionReader | GraphReader] | None]] = {
    "function_graph": (GraphOps, GraphReader),
    "function": (FunctionOps, FunctionReader),
    "nop": (None, None),
}

# The kernel's trace_pid_list takes pids below 2**30 (the 6.18 kernel: EPERM above).
PID_LIMIT = 1 << 30

# trace_options: name -> default
OPTIONS = {
    "print-parent": True,
    "funcgraph-tail": False,
    "funcgraph-duration": True,
    "funcgraph-proc": True,
    "funcgraph-abstime": False,
    "funcgraph-overhead": True,
    # Recorded, not only printed: the tracer's handlers change with them.
    "funcgraph-retval": False,
    "funcgraph-args": False,
    "funcgraph-c": False,   # fentry's own: calls of C functions as graph leaves
    "markers": True,        # trace_marker takes writes (off: the kernel's EINVAL)
    # The top level's trace_marker (and fentry.trace_marker) writes here too.
    "copy_trace_marker": False,
    # fentry's own: the text of a stream that asks for it (fentry run,
    # fentry record's report, attach) starts with the tracer's header, once.
    # trace_pipe, like the kernel's, never has one.
    "stream-header": True,
    # The function profiler's Time: with the time of the calls made (on), or self time (off).
    "graph-time": True,
    # The function profiler's Time of a generator or coroutine call: with the
    # time it spent suspended (on), or its activations only (off); read when
    # the profile starts.
    "sleep-time": True,
    # Off: a full buffer drops new events (counted as lost) instead of its oldest.
    "overwrite": True,
    # Off: the function tracer's lines are the function alone, and trace has no column heads.
    "context-info": True,
    # On: writing free_buffer turns tracing off too.
    "disable_on_free": False,
    # On: the function tracer's functions as func+0x0/0xSIZE (bytes of bytecode).
    "sym-offset": False,
    # Threads started by a thread of set_ftrace_pid / set_event_pid join the
    # list, and any listed thread leaves it when it ends (the kernel's fork
    # and exit hooks).
    "function-fork": False,
    "event-fork": False,
    # A stack record after each probe event (the kernel's: after each event).
    "stacktrace": False,
    # A stack record after each function tracer entry.
    "func_stack_trace": False,
    # fentry's own: a fentry command reading the stream (run, record, attach
    # --to-kernel) writes its events into the kernel's trace_marker (kernel/to_kernel.py).
    "to-kernel": False,
}
# What reading an empty snapshot says (trace.c, print_snapshot_help and
# show_snapshot_main_help), word for word.
SNAPSHOT_HELP = ("#\n# * Snapshot is {} *\n#\n"
                 "# Snapshot commands:\n"
                 "# echo 0 > snapshot : Clears and frees snapshot buffer\n"
                 "# echo 1 > snapshot : Allocates snapshot buffer, if not already allocated.\n"
                 "#                      Takes a snapshot of the main buffer.\n"
                 "# echo 2 > snapshot : Clears snapshot buffer (but does not allocate or free)\n"
                 "#                      (Doesn't have to be '2' works with any number that\n"
                 "#                       is not a '0' or '1')\n")

# The top level's: its own markers are copied to itself.
TOP_OPTIONS = {**OPTIONS, "copy_trace_marker": True}


class TraceInstance:
    """One tracing instance (the kernel's ``trace_array``)."""

    def __init__(self, top: bool = False) -> None:
        self.buffer = RingBuffer(DEFAULT_SIZE_KB)
        self.tracer = "nop"
        self.ops: FtraceOps | None = None
        self.filter = FilterHash()
        self.notrace = FilterHash()
        self.graph_filter = FilterHash()        # set_graph_function
        self.graph_notrace = FilterHash()       # set_graph_notrace
        self.options = dict(TOP_OPTIONS if top else OPTIONS)
        self.lock = _thread.RLock()
        self._pipe_reader: FunctionReader | GraphReader | None = None
        self._fork: ForkOps | None = None       # while function-fork or event-fork is on
        # The snapshot buffer: every thread's records at the last swap; None: freed.
        self.spare: list[tuple[Taken, list[Record]]] | None = None
        # Called with the names of the options a write changed (the probe
        # events' stacktrace needs their slow path).
        self.option_hooks: list[Callable[[set[str]], None]] = []
        self.commands = FuncCommands(self)

    @property
    def tracing_on(self) -> bool:
        """``tracing_on``: kept in the ring buffer, where the hot path reads it."""
        return self.buffer.recording.on

    @tracing_on.setter
    def tracing_on(self, on: bool) -> None:
        self.buffer.recording.on = on

    # -- the tracer
    def set_tracer(self, name: str) -> None:
        name = name.strip()
        if name not in TRACERS:
            raise TraceError("BAD_TRACER", name, 0, detail=f"available: {' '.join(TRACERS)}")
        with self.lock:
            if name == self.tracer:
                return
            if TRACERS[name][0] is not None and self.tracing_on:
                ftrace.check_tool_id()      # ToolIdBusy, before anything changes
            old = self.tracer
            self._stop_ops()
            self.buffer.reset()     # as the kernel: switching tracers empties the buffer
            self._pipe_reader = None
            try:
                self._start(name)
            except TraceError:
                # The id went in the moment between (the old tracer's, let
                # go): the old tracer back, or none -- never a name that
                # does not run.
                try:
                    self._start(old)
                except TraceError:
                    self._start("nop")
                raise

    def _start(self, tracer: str) -> None:
        self.tracer = tracer
        self._pipe_reader = None
        ops_class = TRACERS[tracer][0]
        if ops_class is None or not self.tracing_on:
            return
        ops = ops_class(self.buffer, self.options)
        ops.filter, ops.notrace = self.filter, self.notrace
        if isinstance(ops, GraphOps):
            ops.graph, ops.graph_notrace = self.graph_filter, self.graph_notrace
        ftrace.register_ftrace_function(ops)
        self.ops = ops

    def _stop_ops(self) -> None:
        if self.ops is not None:
            ftrace.unregister_ftrace_function(self.ops)
            self.ops = None

    def set_tracing_on(self, on: bool) -> None:
        """Off switches the events off (not filtered); on switches them back."""
        if not on:
            # The switch first, without the lock: a traceoff command stops
            # the probe events of every thread at once, the tracer's just after.
            self.tracing_on = False
        with self.lock:
            if not on:
                self._stop_ops()
                return
            if self.tracing_on:
                return
            if TRACERS[self.tracer][0] is not None:
                ftrace.check_tool_id()      # ToolIdBusy: still off
            self.tracing_on = True
            try:
                self._start(self.tracer)
            except TraceError:              # (the id went in the moment between)
                self.tracing_on = False
                raise

    # -- filters
    def set_filter(self, text: str, append: bool, notrace: bool = False) -> None:
        """A write to set_ftrace_filter (or set_ftrace_notrace): its words
        to the hash, its commands (FUNC:COMMAND) to the commands.  ``>``
        empties the hash, never the commands (as the kernel's O_TRUNC)."""
        with self.lock:
            if notrace:
                ftrace.set_hash(self.notrace, text, reset=not append)
                return
            globs, commands = ftrace.parse_filter_words(text)
            ftrace.check_selects(globs, text)
            if commands:
                self.commands.write(commands, text)     # checks all, then applies
            ftrace.set_hash(self.filter, text, reset=not append, globs=globs)

    def filter_text(self) -> str:
        """set_ftrace_filter read back: the functions (the kernel's line
        when none is selected), then the commands (``t_probe_show``)."""
        hash_text = "#### all functions enabled ####\n" if self.filter.empty else self.filter.text()
        return hash_text + self.commands.text()

    # -- pid filters
    def set_pids(self, name: str, text: str, append: bool) -> None:
        """Write a pid list (``PID_FILES``): native thread ids, separated by
        white space; ``append`` adds to the list, else it is replaced (an
        empty write clears it).  Every word is checked before any is applied."""
        pids: set[int] = set()
        for m in re.finditer(r"\S+", text):
            if not m.group().isdigit():
                raise TraceError("BAD_PID", text.rstrip("\n"), m.start())
            if int(m.group()) >= PID_LIMIT:
                raise TraceError("PID_RANGE", text.rstrip("\n"), m.start())
            pids.add(int(m.group()))
        new = frozenset(pids)
        self.buffer.update_pids(name, lambda old: old | new if append else new)

    def pids_text(self, name: str) -> str:
        """A pid list read back: one id a line, in order; set_ftrace_pid and
        set_ftrace_notrace_pid say ``no pid`` when empty (the kernel's
        fpid_show), the event ones nothing."""
        pids = self.buffer.pids[name]
        if not pids and name.startswith("set_ftrace"):
            return "no pid\n"
        return "".join(f"{pid}\n" for pid in sorted(pids))

    def set_graph_filter(self, text: str, append: bool, notrace: bool = False) -> None:
        """``set_graph_function`` (``set_graph_notrace`` with ``notrace``):
        the grammar of set_ftrace_filter; a running function_graph tracer
        takes it at once."""
        with self.lock:
            ftrace.set_hash(self.graph_notrace if notrace else self.graph_filter, text,
                            reset=not append)
            if isinstance(self.ops, GraphOps):
                self.ops.reselect()

    # -- trace_marker
    def mark(self, text: str, site: tuple[object, int]) -> bool:
        """One marker (``events.marker``) in the calling thread's buffer;
        False if the instance takes none now (``markers`` off, or tracing off).
        ``text`` is already a marker's text (``marker_text``)."""
        if not (self.options["markers"] and self.tracing_on):
            return False
        self.buffer.current().record((MARKER, site, (text,)))
        return True

    def write_marker(self, text: str, targets: list[TraceInstance]) -> None:
        """A write to this instance's ``trace_marker`` file, into ``targets``:
        the writer's event (here the writing thread's: the agent's, for a
        write from outside).  An instance's own file writes to itself; the
        top level's to the instances whose ``copy_trace_marker`` is on, as
        the kernel's (``Tracefs.marker_copies``)."""
        if not self.options["markers"]:
            raise TraceError("MARKERS_OFF", text.rstrip("\n"), 0)
        text = marker_text(text)
        for inst in targets:
            if not inst.mark(text, (None, 0)):
                raise TraceError("TRACING_OFF", text, 0)

    def write_raw_marker(self, data: str, targets: list[TraceInstance]) -> None:
        """A write to ``trace_marker_raw``: binary, an int id and data (the
        bytes written, as ``Tracefs.write`` passes them: UTF-8 with
        surrogateescape), into ``targets`` as ``write_marker``."""
        raw = data.encode("utf-8", "surrogateescape")
        shown = raw[:16].hex(" ")
        if not self.options["markers"]:
            raise TraceError("MARKERS_OFF", shown, 0)
        values = raw_marker_values(raw)
        if values is None:
            raise TraceError("RAW_MARKER_SIZE", shown, 0, detail=f"{len(raw)} bytes")
        for inst in targets:
            if not (inst.options["markers"] and inst.tracing_on):
                raise TraceError("TRACING_OFF", shown, 0)
            inst.buffer.current().record((RAW_MARKER, (None, 0), values))

    # -- options
    def set_options(self, text: str) -> None:
        """Write trace_options: each word sets an option, ``no``-prefixed clears it.
        Every word is checked before any is applied."""
        changes = {}
        for m in re.finditer(r"\S+", text):
            word = m.group()
            key = word[2:] if word.startswith("no") and word[2:] in self.options else word
            if key not in self.options:
                raise TraceError("BAD_OPTION", text, m.start())
            changes[key] = key == word
        with self.lock:
            bits = sum(bit for name, bit in OPTION_BITS.items() if changes.get(name, self.options[name]))
            if bits and self._fork is None:
                ftrace.check_tool_id()      # ToolIdBusy, before anything changes
            changed = {k for k, v in changes.items() if self.options[k] != v}
            self.options.update(changes)
            self._pipe_reader = None
            if self.buffer.overwrite != self.options["overwrite"]:
                self.buffer.set_overwrite(self.options["overwrite"])
            self._follow(bits)
            if ("func_stack_trace" in changed or "funcgraph-c" in changed) and self.ops is not None:
                # The tracer's handlers, with or without the stack (the C calls), anew.
                self._stop_ops()
                self._start(self.tracer)
            if isinstance(self.ops, GraphOps):      # the tracer goes on, with the handlers asked for
                retval, args = self.options["funcgraph-retval"], self.options["funcgraph-args"]
                if (retval, args) != (self.ops.retval, self.ops.args):
                    self.ops.retval, self.ops.args = retval, args
                    ftrace.refresh_handlers(self.ops)
        if changed:
            for hook in list(self.option_hooks):
                hook(changed)

    def _follow(self, bits: int) -> None:
        """The pid lists follow threads starting and ending (``bits``: which
        lists, by function-fork and event-fork), or not (0)."""
        if bits and self._fork is None:
            self._fork = ForkOps(self.buffer)
            self._fork.bits = bits
            ftrace.register_ftrace_function(self._fork)
        elif self._fork is not None:
            self._fork.bits = bits
            if not bits:
                ftrace.unregister_ftrace_function(self._fork)
                self._fork = None

    def options_text(self) -> str:
        return "".join(f"{'' if v else 'no'}{k}\n" for k, v in self.options.items())

    # -- trace_clock, free_buffer
    def clock_text(self) -> str:
        """``trace_clock``: the clocks, the current one in brackets."""
        return " ".join(f"[{c}]" if c == self.buffer.clock else c for c in TRACE_CLOCKS) + "\n"

    def set_clock(self, text: str) -> None:
        """A write to ``trace_clock``: one clock's name (the buffer is emptied)."""
        name = text.strip()
        if name not in TRACE_CLOCKS:
            raise TraceError("BAD_CLOCK", text.rstrip("\n"), 0, detail=f"available: {' '.join(TRACE_CLOCKS)}")
        with self.lock:
            self.buffer.set_clock(name)
            self._pipe_reader = None

    def free_buffer(self) -> None:
        """``free_buffer`` written (the kernel acts at its close): the buffer
        shrinks to its least, and with ``disable_on_free`` tracing goes off."""
        with self.lock:
            if self.options["disable_on_free"]:
                self.set_tracing_on(False)
            self.buffer.resize(1)

    # -- reading
    def reader(self) -> FunctionReader | GraphReader:
        if TRACERS[self.tracer][1] is GraphReader:
            return GraphReader(self.options)
        return FunctionReader(self.options, self.buffer.clock)

    def read_trace(self) -> str:
        """The ``trace`` file: a snapshot, with the kernel's header."""
        with self.lock:         # the records and the reader of one tracer
            per_thread = self.buffer.snapshot()
            tracer, reader = self.tracer, self.reader()
        in_buf = sum(len(r) for _, r in per_thread)
        written = sum(tb.written() for tb, _ in per_thread)
        if self.options["context-info"]:
            parts = [output.buffer_header(tracer, in_buf, written, len(per_thread)),
                     reader.header()]
        else:       # the kernel's trace_default_header prints nothing more
            parts = [f"# tracer: {tracer}\n#\n", reader.header()]
        for tb, _ in per_thread:
            lost = tb.lost()
            if lost:
                parts.append("# " + output.lost_line(tb, lost))
                reader.lost(tb)
            untimed = tb.graph_untimed
            if untimed:     # (tracing_thresh: calls deeper than the thread's stack of them)
                parts.append(f"# TID:{tb.tid} [{untimed} CALLS DEEPER THAN {GRAPH_STACK} NOT TIMED]\n")
        parts.extend(reader.lines(per_thread))
        parts.extend(reader.flush())
        return "".join(parts)

    # -- snapshot (the kernel's spare buffer)
    def take_snapshot(self) -> None:
        """``echo 1 > snapshot``: every thread's records move to the spare
        buffer, the main one goes on empty.  Copy-and-clear, not a swap of
        the rings: the hot path holds each thread's ring (its thread-local),
        and one ``consume`` per ring, a single call under the GIL, takes each
        record whole, into the snapshot or left for after it.  Unlike the
        kernel's swap, the spare's old records are dropped, not handed to
        the main buffer."""
        with self.lock:
            spare = []
            for tb in self.buffer.readable():
                tb.take_name()
                records = tb.consume()
                if records:
                    spare.append((Taken(tb), records))
            self.spare = spare

    def write_snapshot(self, text: str) -> None:
        """The ``snapshot`` file: 0 frees, 1 takes a snapshot, any other number clears."""
        t = text.strip()
        if not t.isdigit():     # the kernel's kstrtoul: -EINVAL
            raise TraceError("BAD_NUMBER", text.rstrip("\n"), 0)
        with self.lock:
            val = int(t)
            if val == 0:
                self.spare = None
            elif val == 1:
                self.take_snapshot()
            elif self.spare is not None:
                self.spare = []

    def read_snapshot(self) -> str:
        """The ``snapshot`` file: the spare buffer as ``trace`` reads, or,
        empty, the kernel's help (``print_snapshot_help``)."""
        with self.lock:
            spare, tracer, reader = self.spare, self.tracer, self.reader()
        if not spare:
            state = "allocated" if spare is not None else "freed"
            return f"# tracer: {tracer}\n#\n" + SNAPSHOT_HELP.format(state)
        in_buf = sum(len(r) for _, r in spare)
        parts = [output.buffer_header(tracer, in_buf, in_buf, len(spare)), reader.header()]
        parts.extend(reader.lines(spare))
        parts.extend(reader.flush())
        return "".join(parts)

    def clear(self) -> None:
        with self.lock:
            self.buffer.reset()
            self._pipe_reader = None

    def read_pipe(self, final: bool = False) -> str:
        """Consume what has been written since the last pipe read (``trace_pipe``)."""
        with self.lock:
            if self._pipe_reader is None:
                self._pipe_reader = self.reader()
            reader = self._pipe_reader
            per_thread = self.buffer.consume()
            parts = []
            for tb in self.buffer.buffers:
                lost = tb.lost() - tb.lost_told
                if lost > 0:
                    parts.append(output.lost_line(tb, lost))
                    reader.lost(tb)
                    tb.lost_told += lost
            parts.extend(reader.lines(per_thread))
            if final:
                parts.extend(reader.flush())
            return "".join(parts)

    def wait_pipe(self, timeout: float | None = None, poll: float = 0.02) -> str:
        """Block until something can be read from trace_pipe (or the timeout passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            text = self.read_pipe()
            if text:
                return text
            if deadline is not None and time.monotonic() >= deadline:
                return ""
            time.sleep(poll)
