"""fentry's events into the kernel's trace (``--to-kernel``, trace option
``to-kernel``): each event, one ``trace_marker`` write, so that the kernel's
``trace``, ``trace-cmd record`` or a Perfetto capture of the machine shows
Python's calls beside every other process's kernel events.

The writes are made here, in the ``fentry`` command, never in the traced
program: it gets no descriptor, no thread and no syscall more than it has
under ``fentry run`` without the option.  A thread of the command follows the
raw recording that ``fentry run``, ``record`` and ``attach`` spool anyway
(``report/record.py``), decodes it on its own, and writes one line per event,
in the order of fentry's own trace.  The kernel stamps a marker when it is
written, a drain after the event, so each line starts with fentry's own
timestamp of the event.  The layout (one line each; README "fentry's events
in the kernel's trace")::

    fentry: TS PID/TID function SYM <-CALLER
    fentry: TS PID/TID funcgraph_entry depth=D SYM[ ARG=VALUE...][ resume|throw]
    fentry: TS PID/TID funcgraph_exit depth=D SYM[ ret=VALUE| raised=EXC| yield][ duration=NS]
    fentry: TS PID/TID event EVENT-LINE

TS is the event's time in fentry's ``trace_clock`` (the default, ``local``,
is CLOCK_MONOTONIC: the kernel's ``mono``), seconds and nanoseconds; SYM is
``MOD:QUALNAME``; EVENT-LINE is the probe event's or tracepoint's line as
fentry's trace prints it (``NAME: (SYM+0xOFF) FIELD=VALUE...``).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import TYPE_CHECKING, Any

from ..errors import TraceError
from ..events.fetch import parameters, render
from ..raw import ENTER_KINDS, RESUME, THRESH_RETURN, THROW, UNWIND, YIELD
from ..report.datfile import DatReader, DatWriter
from ..report.decode import ProcessStream, Sink, Streams, ThreadInfo
from ..tracers.rename import TASK_RENAME
from ..tracers.text import COUNT_CLOCKS, is_event, merge_lines
from .mount import SUBSYSTEM, find_tracefs

if TYPE_CHECKING:
    from ..raw import Record
    from ..report.decode import Batch

OPTION = "to-kernel"        # the trace option; --to-kernel sets it
PREFIX = "fentry: "
# The kernel cuts a trace_marker write at TRACE_MARKER_MAX_SIZE (4096)
# bytes: a longer line is cut here, on a character, the same way.
MAX_LINE = 4096


def open_marker(instance: str | None = None) -> tuple[int, str]:
    """The kernel's ``trace_marker`` (of ``instances/INSTANCE``, if given),
    opened for writing: (descriptor, path).  Raises TraceError, before
    anything is written, where it cannot be: tracefs (``find_tracefs``), a
    missing instance (NO_KERNEL_INSTANCE), or the open's errno
    (NO_KERNEL_MARKER)."""
    root = find_tracefs()
    where = os.path.join(root, "instances", instance) if instance else root
    if instance and (os.sep in instance or not os.path.isdir(where)):
        raise TraceError("NO_KERNEL_INSTANCE", instance, 0, subsystem=SUBSYSTEM,
                         detail=f"no {where} (mkdir it first)")
    path = os.path.join(where, "trace_marker")
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC), path
    except OSError as e:
        raise TraceError("NO_KERNEL_MARKER", path, 0, subsystem=SUBSYSTEM,
                         detail=e.strerror or str(e)) from None


def stamp(ts: int, clock: str) -> str:
    """fentry's timestamp of an event: seconds.nanoseconds, or a plain count
    for a clock that is not in nanoseconds (``counter``)."""
    if clock in COUNT_CLOCKS:
        return str(ts)
    return f"{ts // 1_000_000_000}.{ts % 1_000_000_000:09d}"


def _sym(code: Any) -> str:
    if code is None:
        return "<top>"
    name: str = getattr(code, "name", None) or code.co_qualname
    return name


class KernelLines(Sink):
    """Each event of the streams, as one marker line, written to ``fd``
    while the stream's ``to-kernel`` option is on; ``written`` and
    ``failed`` count the writes, ``error`` is the first failed one's errno."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.failed = 0
        self.error: int | None = None
        self.depth: dict[ThreadInfo, int] = {}      # function_graph nesting, per thread

    def batch(self, stream: ProcessStream, items: Batch) -> None:
        if not stream.options.get(OPTION, False):
            # Off: nesting starts again when it is turned on (as from the start of tracing).
            for thread in stream.threads.values():
                self.depth.pop(thread, None)
            return
        per_thread: dict[ThreadInfo, list[Record]] = {}
        for thread, lost, records in items:
            if lost:
                self.depth[thread] = 0      # its calls open before the loss are forgotten
            if records and isinstance(records, list):
                per_thread.setdefault(thread, []).extend(records)
        texts, stamps = [], []
        for thread, records in per_thread.items():
            head = f"{PREFIX}%s {stream.pid}/{thread.tid} "
            lines, times = [], []
            for rec in records:
                text = self._text(thread, rec)
                if text is not None:
                    lines.append(head % stamp(rec[1], stream.clock) + text)
                    times.append(rec[1])
            texts.append(lines)
            stamps.append(times)
        for line in merge_lines(stamps, texts):      # fentry's own trace's order
            self._write(line)

    def _text(self, thread: ThreadInfo, rec: Record) -> str | None:
        """A record's part of its line; None for what fentry's trace shows no line of."""
        if len(rec) == 4 and not isinstance(rec[2], int):          # the function tracer
            return f"function {_sym(rec[2])} <-{_sym(rec[3])}"
        if is_event(rec):
            if rec[2] is TASK_RENAME:
                return None
            line: str = rec[2].line(rec[3], rec[4])
            return "event " + line.replace("\n", " ")      # (a stack record's lines: one marker)
        kind, code = rec[2], rec[3]
        depth = self.depth.get(thread, 0)
        if kind in ENTER_KINDS:
            self.depth[thread] = depth + 1
            text = f"funcgraph_entry depth={depth} {_sym(code)}"
            if len(rec) > 4:        # funcgraph-args
                text += "".join(f" {name}={render(v, None)}" for name, v in zip(parameters(code), rec[4]))
            if kind == RESUME:
                text += " resume"
            elif kind == THROW:
                text += " throw"
            return text
        if kind == THRESH_RETURN:       # tracing_thresh: the exit alone, its depth and duration told
            return f"funcgraph_exit depth={rec[5]} {_sym(code)} duration={rec[4]}"
        if depth == 0:
            return None     # an exit of a call entered before tracing (fentry's trace has no line)
        self.depth[thread] = depth - 1
        text = f"funcgraph_exit depth={depth - 1} {_sym(code)}"
        if kind == UNWIND:
            text += f" raised={getattr(rec[4], '__name__', rec[4])}"
        elif kind == YIELD:
            text += " yield"
        elif len(rec) > 4:          # funcgraph-retval
            text += f" ret={render(rec[4][0], None)}"
        return text

    def _write(self, line: str) -> None:
        data = line.encode("utf-8", "backslashreplace")[:MAX_LINE]
        try:
            os.write(self.fd, data)
            self.written += 1
        except OSError as e:
            # tracing_on 0 (EBADF), the markers option off (EINVAL): the kernel
            # drops the write; the count says so at the end.
            self.failed += 1
            if self.error is None:
                self.error = e.errno


class ToKernel:
    """Follows the raw recording ``writer`` writes, from a thread of its
    own, and writes its events into the kernel's ``trace_marker`` (``fd``,
    closed at the end).  ``finish`` waits for the rest, once ``writer`` is closed."""

    def __init__(self, writer: DatWriter, fd: int) -> None:
        st = os.fstat(writer.f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TraceError("NO_KERNEL_MARKER", "--to-kernel", 0, subsystem=SUBSYSTEM,
                             detail="the recording is not a regular file, which it must be to be "
                                    "followed (record -o FILE)")
        # The spool may be named nowhere (fentry run's): opened again through its descriptor.
        self.reader = DatReader(f"/proc/self/fd/{writer.f.fileno()}", follow=writer)
        self.lines = KernelLines(fd)
        self.thread = threading.Thread(target=self._follow, name="fentry-to-kernel", daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        streams = Streams(self.lines)
        for number, payload in self.reader.frames():
            streams.frame(number, payload)

    def finish(self, timeout: float | None = None) -> str | None:
        """Wait for the writes to end; what a user must be told of them, if anything."""
        self.thread.join(timeout)
        self.reader.close()
        os.close(self.lines.fd)
        lines = self.lines
        if lines.failed:
            why = os.strerror(lines.error or errno.EINVAL)
            return (f"{lines.failed} of {lines.written + lines.failed} events could not be "
                    f"written to the kernel's trace_marker ({why}: is tracing_on 0, or the "
                    "markers option off?)")
        return None
