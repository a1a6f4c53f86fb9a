"""Decoding raw streams (``tracers/stream.py``) into the records the text
readers and the exporters take: per traced process, what its ids mean, its
threads and its tracer, and its records drain by drain."""

from __future__ import annotations

import gc
import json
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from ..events.event_format import EventFormat
from ..events.marker import MARKER, RAW_MARKER
from ..events.stack import STACK
from ..events.synth_format import SynthFormat
from ..events.tracepoint_format import TracepointFormat
from ..raw import CodeInfo, decode_records, record_chunks
from ..tracers import stream as msg
from ..tracers.rename import TASK_RENAME

if TYPE_CHECKING:
    from ..raw import Record
    from .datfile import DatReader

# A thread's records in one drain: decoded, or left for the sink (raw_records).
type Records = list[Record] | RawRecords
# One drain: (thread, lost, records) items.
type Batch = list[tuple[ThreadInfo, int, Records]]

_MSG = struct.Struct("<IB")
_RECORDS = struct.Struct("<IqI")
_LOST = struct.Struct("<Iq")
_MARK = struct.Struct("<q")


class ThreadInfo:
    """A thread of a traced process, as its stream describes it: ``name``
    as the last THREAD message said, the name its records end with unless a
    rename record among them says otherwise (``tracers/text.named_runs``);
    ``read_name`` the same, unless a reader that formats a drain in pieces
    sets it to a piece's first name."""
    __slots__ = ("key", "tid", "name", "read_name", "process")

    def __init__(self, key: int, tid: int, name: str, process: ProcessStream) -> None:
        self.key = key
        self.tid = tid
        self.name = self.read_name = name
        self.process = process

    def task_name(self) -> str:
        return self.name

    @property
    def renamed(self) -> bool:
        """Whether rename records may be among its records (its process has sent one)."""
        return self.process.renames


class ProcessStream:
    """One traced process's stream, decoded as it comes.

    ``batch`` collects the drain in progress: ``(thread, lost, records)``
    items, in the order they came."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.hello: dict[str, Any] = {}
        self.refs: dict[int, object] = {}
        self.threads: dict[int, ThreadInfo] = {}
        self.tracer = "nop"
        self.options: dict[str, bool] = {}
        self.clock = "local"        # trace_clock: how the timestamps print
        self.ended: str | None = None       # END's reason; None: cut (the process was killed)
        self.unselected: list[str] | None = None    # END's filter words that selected nothing
        self.profile: dict[str, Any] | None = None     # PROFILE, as sent
        self.stack: dict[str, Any] | None = None       # STACK, as sent
        self.hists: list[dict[str, str]] | None = None  # HIST's hist files, as sent
        self.batch: Batch = []
        self.lost = 0
        self.renames = False        # a rename record's id was described
        self.drained = 0            # the last BATCH's time: every record older has come

    @property
    def pid(self) -> int:
        return int(self.hello.get("pid", 0))

    def _thread(self, key: int) -> ThreadInfo:
        thread = self.threads.get(key)
        if thread is None:      # not described (a stream read from its middle)
            thread = self.threads[key] = _unknown_thread(key, self)
        return thread

    def feed(self, payload: bytes, sink: Sink) -> None:
        """Decode one frame's messages, telling ``sink`` (see ``Sink``)."""
        view = memoryview(payload)
        pos, end = 0, len(view)
        while pos < end:
            length, kind = _MSG.unpack_from(view, pos)
            body = view[pos + _MSG.size:pos + 4 + length]
            pos += 4 + length
            self._message(kind, body, sink)

    def _message(self, kind: int, body: memoryview, sink: Sink) -> None:
        if kind == msg.RECORDS:
            key, first, count = _RECORDS.unpack_from(body)
            records: Records
            if getattr(sink, "raw_records", False):
                records = RawRecords(body[_RECORDS.size:], self.refs, first)
            else:
                records = decode_records(body[_RECORDS.size:], self.refs, first)
            self.batch.append((self._thread(key), 0, records))
        elif kind == msg.LOST:
            key, count = _LOST.unpack_from(body)
            self.lost += count
            self.batch.append((self._thread(key), count, []))
        elif kind == msg.BATCH:
            if len(body) >= _MARK.size:
                self.drained = max(self.drained, _MARK.unpack_from(body)[0])
            batch, self.batch = self.batch, []
            sink.batch(self, batch)
        elif kind == msg.REFS:
            for ref in json.loads(bytes(body)):
                self.refs[ref[0]] = obj = _ref(ref[1:])
                if obj is TASK_RENAME:
                    self.renames = True
        elif kind == msg.THREAD:
            t = json.loads(bytes(body))
            thread = self.threads.get(t["key"])
            if thread is None:
                self.threads[t["key"]] = ThreadInfo(t["key"], t["tid"], t["name"], self)
            else:
                # Renamed: its records from here on (or from its rename record, among them).
                thread.name = thread.read_name = t["name"]
                thread.tid = t["tid"]
        elif kind == msg.HELLO:
            self.hello = json.loads(bytes(body))
            self.tracer, self.options = self.hello["tracer"], self.hello["options"]
            self.clock = self.hello.get("trace_clock", "local")
            sink.start(self)
        elif kind == msg.TRACER:
            t = json.loads(bytes(body))
            self.tracer, self.options = t["tracer"], t["options"]
            self.clock = t.get("trace_clock", self.clock)
            sink.tracer(self)
        elif kind == msg.PROFILE:
            self.profile = json.loads(bytes(body))
        elif kind == msg.STACK:
            self.stack = json.loads(bytes(body))
        elif kind == msg.HIST:
            self.hists = json.loads(bytes(body))["hists"]
        elif kind == msg.END:
            end = json.loads(bytes(body))
            self.ended = end.get("why", "end")
            self.unselected = list(end.get("unselected", ()))
            sink.end(self)
        # An unknown kind is skipped: a newer agent may say more than this reader knows.


def _unknown_thread(key: int, process: ProcessStream) -> ThreadInfo:
    return ThreadInfo(key, 0, f"thread-{key}", process)


def _ref(desc: list[Any]) -> object:
    kind = desc[0]
    if kind == "code":
        module, qualname, filename, firstlineno, params = desc[1:6]
        size = desc[6] if len(desc) > 6 else 0      # (not told by an older agent)
        return CodeInfo(module, qualname, filename, firstlineno, tuple(params), size)
    if kind == "marker":
        return MARKER
    if kind == "raw_marker":
        return RAW_MARKER
    if kind == "stack":
        return STACK
    if kind == "rename":
        return TASK_RENAME
    if kind == "tracepoint":
        return TracepointFormat(desc[1], desc[2], tuple(desc[3]))
    if kind == "synthetic":
        return SynthFormat.from_description(desc)
    if kind == "event":
        try:
            return EventFormat.from_definition(desc[3])
        except Exception:       # a definition this reader cannot parse: its lines say so
            return _UnknownEvent(desc[2])
    return desc[1]


class _UnknownEvent:
    def __init__(self, name: str) -> None:
        self.name = name
        self.faults = 0

    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        self.faults += 1
        return f"{self.name}: (fault)"


class RawRecords:
    """A thread's records as they came, not decoded yet: what a sink that
    decodes them itself (``Sink.raw_records``) is given in place of the list."""
    __slots__ = ("data", "refs", "first")

    def __init__(self, data: memoryview, refs: dict[int, object], first: int) -> None:
        self.data = data
        self.refs = refs
        self.first = first

    def __bool__(self) -> bool:
        return len(self.data) > 0

    def decode(self) -> list[Record]:
        return decode_records(self.data, self.refs, self.first)

    def chunks(self) -> Iterator[tuple[int | None, int, Any]]:
        """``raw.record_chunks``: runs of fixed-size records left packed."""
        return record_chunks(self.data, self.refs, self.first)


class Sink:
    """What a stream's reader is told (the text report, the exporters).

    ``raw_records``: the sink is given each thread's records as
    ``RawRecords``, to decode as it likes, instead of a list of tuples."""

    raw_records = False

    def start(self, stream: ProcessStream) -> None:
        """HELLO: a process's stream begins."""

    def tracer(self, stream: ProcessStream) -> None:
        """Its tracer or trace options changed."""

    def batch(self, stream: ProcessStream, items: Batch) -> None:
        """One drain: ``(thread, lost, records)`` in order."""

    def end(self, stream: ProcessStream) -> None:
        """END: the stream is complete."""

    def finish(self, streams: dict[int, ProcessStream]) -> None:
        """The recording is over (``read_recording``): every stream, as decoded."""


class FileSink(Sink):
    """A sink writing to ``out`` (a binary file).  ``error`` is the first
    failed write: nothing is written after it (the streams are still read)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        try:
            self.out.write(data)
        except OSError as e:
            self.error = e
        except ValueError:      # closed under us
            self.error = OSError("the output was closed")

    def flush_out(self) -> None:
        try:
            self.out.flush()
        except OSError as e:
            self.error = self.error or e
        except ValueError:
            pass


class Streams:
    """Every stream of a recording, fed frame by frame to one sink."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.streams: dict[int, ProcessStream] = {}
        self.kernel: Any = None         # stream 0, the kernel's events (-K): kernel/stream.py

    def frame(self, number: int, payload: bytes) -> None:
        if number == 0:
            self._kernel_frame(payload)
            return
        stream = self.streams.get(number)
        if stream is None:
            stream = self.streams[number] = ProcessStream(number)
        stream.feed(payload, self.sink)

    def _kernel_frame(self, payload: bytes) -> None:
        from ..kernel.merge import KernelMerge
        from ..kernel.stream import KernelStream
        if self.kernel is None:
            self.kernel = KernelStream()
            # (a sink that decodes records itself, an exporter, is not given them)
            if not getattr(self.sink, "raw_records", False):
                self.sink = KernelMerge(self.sink, self.kernel, self.streams)
        self.kernel.feed(payload)
        if isinstance(self.sink, KernelMerge):
            self.sink.release()

    def finish(self) -> None:
        """The recording is over: the sink's ``finish`` (first, to an
        exporter that takes them, the kernel's events: ``kernel_events``)."""
        if self.kernel is not None and hasattr(self.sink, "kernel_events"):
            self.sink.kernel_events(self.kernel, self.streams)
        self.sink.finish(self.streams)


def read_recording(reader: DatReader, sink: Sink) -> Streams:
    """Every frame of ``reader`` (a DatReader) decoded into ``sink``, then
    its ``finish``; the streams, as decoded.  A sink whose output failed
    (``error``: a full disk, a closed pipe, as ``fentry report | head``)
    stops the reading: a recording, unlike a live stream, has no program
    waiting to be drained."""
    streams = Streams(sink)
    # Millions of small objects come and go, none in a cycle: the cyclic
    # collector would only walk them, over and over.
    gc.disable()
    try:
        for number, payload in reader.frames():
            streams.frame(number, payload)
            if getattr(sink, "error", None) is not None:
                return streams
        streams.finish()
    finally:
        gc.enable()
    return streams
