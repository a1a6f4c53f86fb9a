"""The raw stream: a trace instance's records, out of the process as they are.

What the agent writes to its reader (``fentry run``'s pipe, a ``pipe``
connection, the collector of ``--follow``) and what ``fentry record`` keeps
in its file: as ``trace-cmd record`` splices raw ring-buffer pages and copies
once the formats, kallsyms and saved_cmdlines that decode them.  Nothing is
formatted here; ``fentry/report`` turns it into text and other formats.

A stream is a sequence of messages, each ``u32 length, u8 type, payload``
(``length`` counts the type byte and the payload; little-endian)::

    HELLO    JSON  who is talking: format, pid, ppid, argv, python, clock (the
                   timestamps' clock_gettime clock, or "counter"), trace_clock (its
                   trace_clock name), wall_minus_clock_ns, tracer, options
    REFS     JSON  [[id, "code", module, qualname, file, firstline, [params], size],
                    [id, "event", group, name, definition],
                    [id, "name", text], ...]: what record ids point at, once each
    THREAD   JSON  {"key", "tid", "name"}: a thread's buffer, first seen or renamed
                   (its records say where: a rename record, ``tracers/rename.py``)
    RECORDS  bin   u32 key, i64 first seq, u32 count, then the records (raw.py)
    LOST     bin   u32 key, i64 count: that many of the thread's records were
                   overwritten before they could be read (here, in order)
    BATCH    [i64] the end of one drain: a reader may merge what came by time.
                   Its ns, in the records' clock (none for "counter"): every
                   record older was sent by now.  A drain with no record sends
                   one too, at most every IDLE_MARK_NS (what ``-K`` merges
                   the kernel's events of an idle process up to)
    TRACER   JSON  {"tracer", "options", "trace_clock"}: the tracer, its options or
                   the clock changed
    PROFILE  JSON  {"graph_time", "threads": [{"tid", "functions": [[name, hit, time,
                   time_sq, self, self_sq], ...]}]}: the function profile (ns), at the
                   end of ``fentry run --profile``
    STACK    JSON  {"thread", "locations", "max", "enabled"}: the stack tracer's
                   deepest stack (``stack_trace``), at the end of ``fentry run --stack``
    END      JSON  {"why"}: the stream is complete (a stream without it was cut)

Every description (REFS, THREAD) comes before the first record that needs it.
The readers of an instance share its page queue, and so its ids: each is
told every description it has not been told (``Descriptions``).
"""

from __future__ import annotations

import _thread
import json
import os
import struct
import sys
import time
from types import CodeType

from ..raw import MSG_LOST, MSG_RECORDS
from ..symbols import SYMBOLS
from .profile import rows as profile_rows
from .rename import rewatch
from .ring_buffer import TRACE_CLOCKS

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..hotpath import Encoder
    from .profile import FunctionProfiler
    from .stack import StackTracer
    from .trace import TraceInstance

HELLO, REFS, THREAD, BATCH, TRACER, END, PROFILE, STACK, HIST = 1, 2, 3, 6, 7, 8, 9, 10, 11
RECORDS, LOST = MSG_RECORDS, MSG_LOST       # the messages a ring's page holds (raw.page)
FORMAT_VERSION = 1
# HELLO's clock: the clock_gettime ids of TRACE_CLOCKS by their C names.
CLOCK_NAMES = {time.CLOCK_MONOTONIC: "CLOCK_MONOTONIC", TRACE_CLOCKS["uptime"]: "CLOCK_MONOTONIC_COARSE",
               TRACE_CLOCKS["mono_raw"]: "CLOCK_MONOTONIC_RAW", TRACE_CLOCKS["boot"]: "CLOCK_BOOTTIME",
               TRACE_CLOCKS["tai"]: "CLOCK_TAI"}

_MSG = struct.Struct("<IB")
_MARK = struct.Struct("<q")
# BATCH's time stands this far behind the drain's flush: a pure-Python
# callback that read its clock may be switched out (by the GIL) before its
# record is in its ring.
MARK_SLACK_NS = 10_000_000
IDLE_MARK_NS = 100_000_000


def message(kind: int, payload: bytes = b"") -> bytes:
    return _MSG.pack(len(payload) + 1, kind) + payload


def json_message(kind: int, obj: object) -> bytes:
    return message(kind, json.dumps(obj, separators=(",", ":")).encode())


def describe(obj: object) -> list[object]:
    """What a record id points at, as a reader needs it."""
    if type(obj) is CodeType:
        sym = SYMBOLS.lookup(obj)
        n = obj.co_argcount + obj.co_kwonlyargcount + bool(obj.co_flags & 0x04) \
            + bool(obj.co_flags & 0x08)
        return ["code", sym.module if sym is not None else None, obj.co_qualname,
                obj.co_filename, obj.co_firstlineno, list(obj.co_varnames[:n]), len(obj.co_code)]
    described = getattr(obj, "raw_description", None)
    if described is not None:           # a probe event
        return list(described())
    if isinstance(obj, type):           # an exception type (function_graph's unwind)
        return ["name", obj.__name__]
    return ["name", str(obj)]


class Descriptions:
    """What the ids of one page queue name, described, for every reader of it.

    The Encoder hands out each new object once (``take_refs``) and holds it
    weakly after that: its description is kept here, for readers that come
    later, while the object lives.  When it has died (``take_forgotten``),
    no page made after can hold its id, but one made before may still wait
    in the queue: its description goes at the second drain after, by when
    the queue has been taken since (by a reader that was told it).
    """

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.lock = _thread.RLock()
        self.known: dict[int, list[object]] = {}    # id -> [id, *description], in id order
        self.dying: list[int] = []                  # died before the last drain: go at the next

    def since(self, told: int) -> list[list[object]]:
        """Every description of an id above ``told``, in id order; at a
        drain, after the queue was taken."""
        with self.lock:
            known = self.known
            for i in self.dying:
                known.pop(i, None)
            self.dying = self.encoder.take_forgotten()
            for i, obj in self.encoder.take_refs():
                known[i] = [i, *describe(obj)]
            new = []
            for i in reversed(known):
                if i <= told:
                    break
                new.append(known[i])
            new.reverse()
            return new


class RawStream:
    """One reader's stream of an instance's records.

    ``drain()`` takes every record written since the last drain (a consuming
    read, as ``trace_pipe_raw``) and returns the messages that carry them,
    with whatever this reader has not been told yet.  While a RawStream is
    open, threads move their records into the instance's page queue
    themselves when their buffer is half full (``RingBuffer.start_raw``);
    ``wake`` is readable when a page waits.  ``close()`` when done."""

    def __init__(self, instance: TraceInstance, make_encoder: Callable[[], Encoder]) -> None:
        self.instance = instance
        self.buffer = instance.buffer
        self.queue, self.wake, self.descriptions = self.buffer.start_raw(make_encoder, Descriptions)
        self.told = 0                           # the last id described to this reader
        self.names: dict[int, str] = {}         # thread key -> the name last told
        self.tracer: tuple[str, dict[str, bool], str] | None = None
        self.closed = False
        self.flushed_at = 0         # the records' clock at the last flush (0: "counter")
        self.marked_at = 0          # ... at the last BATCH

    def hello(self, header: bool) -> bytes:
        """The stream's first message; ``header``: the reader starts its text
        with the tracer's header (``fentry run``, ``attach``; not a bare pipe,
        which is trace_pipe), unless trace_options says ``nostream-header``."""
        inst = self.instance
        self.tracer = (inst.tracer, dict(inst.options), inst.buffer.clock)
        header = header and inst.options.get("stream-header", True)
        clock = inst.buffer.clock
        clock_id = TRACE_CLOCKS[clock]
        if clock_id == -2:
            clock_name, wall = "counter", 0
        else:
            clock_id = time.CLOCK_MONOTONIC if clock_id == -1 else clock_id
            clock_name = CLOCK_NAMES.get(clock_id, str(clock_id))
            wall = time.time_ns() - time.clock_gettime_ns(clock_id)
        return json_message(HELLO, {
            "format": FORMAT_VERSION, "header": header, "pid": os.getpid(), "ppid": os.getppid(),
            "argv": list(sys.orig_argv), "python": sys.version.split()[0],
            "clock": clock_name, "trace_clock": clock, "wall_minus_clock_ns": wall,
            "tracer": inst.tracer, "options": inst.options})

    def end(self, why: str) -> bytes:
        """The stream's last message: why it ends, and the set_ftrace_filter
        and set_graph_function words that selected no function that ran
        (``fentry run`` says so)."""
        try:
            # After a traceoff command a word's functions may well have run
            # untraced: nothing to say of them.
            inst = self.instance
            unselected = ([] if inst.commands.traced_off
                          else inst.filter.unselected() + inst.graph_filter.unselected())
        except Exception:       # (END goes out whatever happens)
            unselected = []
        return json_message(END, {"why": why, "unselected": unselected})

    def profile(self, profiler: FunctionProfiler) -> bytes:
        """The function profile as it is now, per thread: numbers and names, not text."""
        threads = [{"tid": tid, "functions": [[name, *n] for name, n in profile_rows(functions)]}
                   for tid, functions in sorted(profiler.per_thread().items())]
        return json_message(PROFILE, {"graph_time": self.instance.options.get("graph-time", True),
                                      "threads": threads})

    def stack(self, tracer: StackTracer) -> bytes:
        """The stack tracer's deepest stack as it is now: its thread and
        frames' locations, not the table."""
        thread, locations = tracer.rows()
        return json_message(STACK, {"thread": thread, "locations": locations,
                                    "max": tracer.stack.max, "enabled": tracer.enabled})

    def hists(self, events: list[Any]) -> bytes:
        """The ``hist`` file of every event (probe events and tracepoints)
        of this instance that has hist triggers, as reading it now shows it
        (fentry run --hist)."""
        from ..events.hist import hist_text, hist_triggers
        hists = [{"event": f"{e.group}/{e.name}", "text": hist_text(f)}
                 for e in events
                 for f in [e.files.get(id(self.instance))] if f is not None and hist_triggers(f)]
        return json_message(HIST, {"hists": hists})

    def flush(self) -> None:
        """Every thread's records into the page queue.  Every page goes
        through it, the writers' and these alike, so each thread's pages stay
        in the order they were made; ``drain`` takes them."""
        clock_id = TRACE_CLOCKS[self.buffer.clock]
        if clock_id == -2:
            self.flushed_at = 0
        else:
            self.flushed_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC if clock_id == -1 else clock_id)
        for tb in self.buffer.readable():
            tb.flush()

    def drain(self) -> list[bytes]:
        """Everything in the page queue, as messages ([] if nothing): pieces
        to be written one after the other, as they are (a page is not copied
        on its way).  Drains must be one at a time (what one takes must be
        out before the next takes): the caller's lock; ``flush`` needs none."""
        inst = self.instance
        out: list[bytes] = []
        tracer = (inst.tracer, dict(inst.options), inst.buffer.clock)
        if tracer != self.tracer:
            self.tracer = tracer
            out.append(json_message(TRACER, {"tracer": tracer[0], "options": tracer[1],
                                             "trace_clock": tracer[2]}))
        rewatch()       # (threading imported by the program since: its renames from now)
        # Names before pages: a rename's record goes into the queue before
        # its new name can be read, so pages taken after a new name hold it.
        names = {tb.key: tb.task_name() for tb in self.buffer.readable()}
        pages = self.queue.take()
        if pages:
            # (Read again: a thread that came since may have a page there.)
            for tb in self.buffer.readable():
                name = names.get(tb.key)
                if name is None:
                    name = tb.task_name()
                if self.names.get(tb.key) != name:
                    self.names[tb.key] = name
                    out.append(json_message(THREAD, {"key": tb.key, "tid": tb.tid, "name": name}))
            refs = self.descriptions.since(self.told)
            if refs:
                self.told = refs[-1][0]         # type: ignore[assignment]  # (an id: int)
                out.append(json_message(REFS, refs))
            out.extend(pages)
            out.append(self._batch())
        elif self.flushed_at - self.marked_at >= IDLE_MARK_NS:
            out.append(self._batch())
        self.buffer.release_ended()
        return out

    def _batch(self) -> bytes:
        self.marked_at = self.flushed_at
        if not self.flushed_at:
            return message(BATCH)
        return message(BATCH, _MARK.pack(self.flushed_at - MARK_SLACK_NS))

    def close(self) -> None:
        """The reader is done: with the last one, buffers keep their records again."""
        if not self.closed:
            self.closed = True
            self.buffer.stop_raw()
