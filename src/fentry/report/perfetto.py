"""``fentry report --format perfetto``: Perfetto's native protobuf trace.

Written with Perfetto's own protos, as the ``perfetto`` package publishes
them (``perfetto.protos.perfetto.trace.perfetto_trace_pb2``), encoded by
``protobuf``: a ``Trace`` is a sequence of ``TracePacket``s, and a file of
serialized ``Trace`` messages, one after the other, is one ``Trace`` (a
repeated field's messages concatenate), which is how the packets go to disk
as they are made (as Perfetto's ``StreamingTraceProtoBuilder`` writes them).

The trace, as Perfetto's "synthetic TrackEvent" reference describes it:

- a ``ClockSnapshot`` first: the timestamps are CLOCK_MONOTONIC
  (``primary_trace_clock``), with CLOCK_REALTIME beside it for wall time;
- a process track per traced process (``TrackDescriptor`` with its pid and
  name), and under it a thread track per thread (its tid and name);
- each thread's events on a packet sequence of its own, whose defaults
  name its track and clock, with slice names interned (``event_names``,
  and the function's file and line as ``source_locations``);
- a function_graph call is a slice (``TYPE_SLICE_BEGIN``/``TYPE_SLICE_END``);
  how it began or ended, when not by a call and a return, is an annotation
  (``entry``: resume/throw, ``exit``: yield/exit not seen/unfinished,
  ``raised``: the exception);
- a function tracer entry (no duration) is an instant with its ``caller``;
  a probe event is an instant named by the event, its fetched fields as
  debug annotations (numbers typed, the rest as the trace line prints them),
  and ``site``;
- lost records are an instant ``lost N events`` (annotation ``lost``);
- the kernel's events (``-K``) are Perfetto's own ftrace events
  (``kernel/perfetto.py``), on the same threads.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from typing import Any, BinaryIO

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    BUILTIN_CLOCK_MONOTONIC,
    BUILTIN_CLOCK_REALTIME,
    ClockSnapshot,
    DebugAnnotation,
    EventName,
    InternedData,
    ProcessDescriptor,
    SourceLocation,
    ThreadDescriptor,
    Trace,
    TracePacket,
    TracePacketDefaults,
    TrackDescriptor,
    TrackEvent,
    TrackEventDefaults,
)

from ..raw import ENTRY, RETURN, UNWIND
from ..tracers.rename import TASK_RENAME
from .calls import (
    BEGIN,
    BEGIN_WORDS,
    CALL,
    END,
    END_WORDS,
    EVENT,
    LOST,
    CallSink,
    Op,
    ThreadCalls,
    process_name,
)
from .decode import ProcessStream

CLEARED = TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
NEEDS = TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
SLICE_BEGIN, SLICE_END, INSTANT = (TrackEvent.TYPE_SLICE_BEGIN, TrackEvent.TYPE_SLICE_END,
                                   TrackEvent.TYPE_INSTANT)
METADATA_SEQUENCE = 1
POOL = 128          # packets serialized at once (_Pool)


def process_uuid(stream: ProcessStream) -> int:
    return stream.number << 33


def thread_uuid(st: ThreadCalls) -> int:
    return process_uuid(st.stream) | (st.thread.key << 1) | 1


def annotation(name: str, value: object) -> DebugAnnotation:
    t = value.__class__
    if t is bool:
        return DebugAnnotation(name=name, bool_value=value)
    if t is int:
        return DebugAnnotation(name=name, int_value=value)
    if t is float:
        return DebugAnnotation(name=name, double_value=value)
    return DebugAnnotation(name=name, string_value=str(value))


class _Sequence:
    """A thread's packet sequence: its id, interned names, and the packets
    reused for the common events (only the timestamp and name change)."""
    __slots__ = ("id", "iids", "last", "begin", "begin_event", "begin_bytes", "end", "end_bytes",
                 "named", "tid", "pool")

    def __init__(self, seq_id: int, tid: int, name: str) -> None:
        self.id = seq_id
        self.iids: dict[object, int] = {}
        self.last = 0       # the name_iid the reused begin packet holds
        self.tid = tid
        self.named = name
        begin = Trace()
        self.begin = begin.packet.add(trusted_packet_sequence_id=seq_id, sequence_flags=NEEDS)
        self.begin_event = self.begin.track_event
        self.begin_event.type = SLICE_BEGIN
        self.begin_bytes = begin.SerializeToString
        end = Trace()
        self.end = end.packet.add(trusted_packet_sequence_id=seq_id, sequence_flags=NEEDS,
                                  track_event=TrackEvent(type=SLICE_END))
        self.end_bytes = end.SerializeToString
        self.pool = _Pool(seq_id)

    def packet(self, ts: int, **fields: Any) -> TracePacket:
        return TracePacket(timestamp=ts, trusted_packet_sequence_id=self.id, sequence_flags=NEEDS,
                           **fields)

    def singles(self, shapes: list[int], stamps: list[int], app: Callable[[bytes], None]) -> None:
        """Ordinary begins and ends (see ``_Pool``), a packet at a time."""
        begin, begin_event, begin_bytes = self.begin, self.begin_event, self.begin_bytes
        end, end_bytes = self.end, self.end_bytes
        for iid, ts in zip(shapes, stamps):
            if iid:
                begin.timestamp = ts
                if iid != self.last:        # the packet keeps what it was last given
                    begin_event.name_iid = begin_event.source_location_iid = self.last = iid
                app(begin_bytes())
            else:
                end.timestamp = ts
                app(end_bytes())


class _Pool:
    """POOL packets of one sequence in one ``Trace``, serialized with one
    call: a run of ordinary begins (a call) and ends (a return), whose packets
    differ only by their timestamp, kind and name.  A run is given as its
    *shape*, one int per packet (a begin's name iid; 0 for an end), and its
    timestamps; only the packets whose shape changed since the last run are
    set anew.  (Serializing costs protobuf about half as much per packet in
    a Trace of many as in a Trace of one.)"""
    __slots__ = ("packets", "events", "shape", "serialize")

    def __init__(self, seq_id: int) -> None:
        trace = Trace()
        self.packets = [trace.packet.add(trusted_packet_sequence_id=seq_id, sequence_flags=NEEDS,
                                         track_event=TrackEvent(type=SLICE_END))
                        for _ in range(POOL)]
        self.events = [p.track_event for p in self.packets]
        self.shape = [0] * POOL
        self.serialize = trace.SerializeToString

    def run(self, shape: list[int], stamps: list[int]) -> bytes:
        if shape != self.shape:
            events = self.events
            for j, (want, have) in enumerate(zip(shape, self.shape)):
                if want != have:
                    event = events[j]
                    if want:
                        if not have:
                            event.type = SLICE_BEGIN
                        event.name_iid = event.source_location_iid = want
                    else:
                        event.type = SLICE_END
                        event.ClearField("name_iid")
                        event.ClearField("source_location_iid")
            self.shape = shape[:]
        any(map(setattr, self.packets, repeat("timestamp"), stamps))     # (setattr is None)
        return self.serialize()


class PerfettoReport(CallSink):
    """Writes a Perfetto trace to ``out`` (binary), drain by drain."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(out)
        self.sequences = METADATA_SEQUENCE
        self.clock_told = False
        self.described: set[int] = set()       # streams whose process track is told

    def _packets(self, *packets: TracePacket) -> None:
        self.write(Trace(packet=packets).SerializeToString())

    def process(self, stream: ProcessStream) -> None:
        self.described.add(stream.number)
        packets = []
        if not self.clock_told:
            # The trace's clock is the recording's: CLOCK_MONOTONIC, and
            # CLOCK_REALTIME was that plus wall_minus_clock_ns.
            self.clock_told = True
            wall = stream.hello.get("wall_minus_clock_ns", 0)
            clocks = [ClockSnapshot.Clock(clock_id=BUILTIN_CLOCK_MONOTONIC, timestamp=0)]
            if wall > 0:
                clocks.append(ClockSnapshot.Clock(clock_id=BUILTIN_CLOCK_REALTIME, timestamp=wall))
            packets.append(TracePacket(
                timestamp=0, timestamp_clock_id=BUILTIN_CLOCK_MONOTONIC,
                trusted_packet_sequence_id=METADATA_SEQUENCE,
                clock_snapshot=ClockSnapshot(clocks=clocks,
                                             primary_trace_clock=BUILTIN_CLOCK_MONOTONIC)))
        name = process_name(stream)
        packets.append(TracePacket(
            trusted_packet_sequence_id=METADATA_SEQUENCE,
            track_descriptor=TrackDescriptor(
                uuid=process_uuid(stream),
                process=ProcessDescriptor(pid=stream.pid, process_name=name,
                                          cmdline=[str(a) for a in stream.hello.get("argv", [])]))))
        self._packets(*packets)

    def new_thread(self, st: ThreadCalls) -> None:
        if st.stream.number not in self.described:      # no HELLO: read from its middle
            self.process(st.stream)
        self.sequences += 1
        t = st.thread
        tid = t.tid or t.key
        seq = st.data = _Sequence(self.sequences, tid, t.name)
        uuid = thread_uuid(st)
        self._packets(TracePacket(
            trusted_packet_sequence_id=seq.id, sequence_flags=CLEARED,
            first_packet_on_sequence=True,
            track_descriptor=_thread_track(uuid, process_uuid(st.stream), st.stream.pid, tid,
                                           t.name),
            trace_packet_defaults=TracePacketDefaults(
                timestamp_clock_id=BUILTIN_CLOCK_MONOTONIC,
                track_event_defaults=TrackEventDefaults(track_uuid=uuid))))

    def _intern(self, seq: _Sequence, key: object, name: str, interned: InternedData,
                code: Any = None) -> int:
        iid = len(seq.iids) + 1
        seq.iids[key] = iid
        interned.event_names.append(EventName(iid=iid, name=name))
        if code is not None:
            interned.source_locations.append(SourceLocation(
                iid=iid, file_name=code.co_filename, function_name=code.name,
                line_number=code.co_firstlineno))
        return iid

    def thread_ops(self, st: ThreadCalls, ops: list[Op]) -> None:
        seq: _Sequence = st.data
        iids = seq.iids
        pool_run = seq.pool.run
        out: list[bytes] = []
        app = out.append
        # Ordinary begins and ends wait in shape/stamps (see _Pool) until
        # POOL of them make a run, or something else comes.
        shape: list[int] = []
        stamps: list[int] = []
        iid = None
        for op in ops:
            kind = op[0]
            if kind == BEGIN:
                iid = iids.get(op[2])
                if iid is not None and op[4] == ENTRY:
                    shape.append(iid)
                    stamps.append(op[1])
                    if len(stamps) == POOL:
                        app(pool_run(shape, stamps))
                        shape, stamps = [], []
                    continue
            elif kind == END and op[5] == RETURN:
                shape.append(0)
                stamps.append(op[1])
                if len(stamps) == POOL:
                    app(pool_run(shape, stamps))
                    shape, stamps = [], []
                continue
            if stamps:
                seq.singles(shape, stamps, app)
                shape, stamps = [], []
            app(self._rename_packets(st, op) if kind == EVENT and op[2] is TASK_RENAME
                else self._op_packet(seq, op, iid))
        if stamps:
            seq.singles(shape, stamps, app)
        if out:
            self.write(b"".join(out))

    def _rename_packets(self, st: ThreadCalls, op: Op) -> bytes:
        """A rename record: the thread's track with its new name, from here
        on (Perfetto names a thread by its last), and the kernel's
        ``task_rename`` where it happened."""
        seq: _Sequence = st.data
        seq.named = op[4][2]
        track = TracePacket(timestamp=op[1], trusted_packet_sequence_id=seq.id,
                            track_descriptor=_thread_track(
                                thread_uuid(st), process_uuid(st.stream), st.stream.pid,
                                seq.tid, seq.named))
        return Trace(packet=[track, seq.packet(op[1], track_event=TrackEvent(
            type=INSTANT, name="task_rename", categories=["task"],
            debug_annotations=[annotation("oldcomm", op[4][1]),
                               annotation("newcomm", op[4][2])]))]).SerializeToString()

    def _op_packet(self, seq: _Sequence, op: Op, iid: int | None) -> bytes:
        """A Trace of the one packet of an op that is not part of a run
        (``iid``: a BEGIN's name iid, if interned already)."""
        kind = op[0]
        iids = seq.iids
        if kind == BEGIN:
            interned = InternedData()
            if iid is None:
                iid = self._intern(seq, op[2], op[2].co_qualname, interned, op[2])
            event = TrackEvent(type=SLICE_BEGIN, name_iid=iid, source_location_iid=iid)
            if op[4] != ENTRY:
                event.debug_annotations.append(annotation("entry", BEGIN_WORDS[op[4]]))
            packet = seq.packet(op[1], track_event=event)
            if interned.event_names:
                packet.interned_data.CopyFrom(interned)
            return Trace(packet=[packet]).SerializeToString()
        if kind == END:
            event = TrackEvent(type=SLICE_END)
            if op[5] == UNWIND:
                event.debug_annotations.append(annotation("raised", op[6]))
            else:
                event.debug_annotations.append(annotation("exit", END_WORDS[op[5]]))
            return Trace(packet=[seq.packet(op[1], track_event=event)]).SerializeToString()
        if kind == CALL:
            code, caller = op[2], op[3]
            interned = InternedData()
            iid = iids.get(code)
            if iid is None:
                iid = self._intern(seq, code, code.co_qualname, interned, code)
            event = TrackEvent(type=INSTANT, name_iid=iid, source_location_iid=iid,
                               debug_annotations=[annotation(
                                   "caller", caller.co_qualname if caller is not None
                                   else "<top>")])
            packet = seq.packet(op[1], track_event=event)
            if interned.event_names:
                packet.interned_data.CopyFrom(interned)
            return Trace(packet=[packet]).SerializeToString()
        if kind == EVENT:
            event_format, site, values = op[2], op[3], op[4]
            name = getattr(event_format, "name", "?")
            key = ("event", name)
            interned = InternedData()
            iid = iids.get(key)
            if iid is None:
                iid = self._intern(seq, key, name, interned)
            annotations = [annotation("site", self.site_text(event_format, site))]
            annotations += [annotation(field, value) for field, value, _
                            in self.event_fields(event_format, site, values)]
            packet = seq.packet(op[1], track_event=TrackEvent(
                type=INSTANT, name_iid=iid, categories=["probe"],
                debug_annotations=annotations))
            if interned.event_names:
                packet.interned_data.CopyFrom(interned)
            return Trace(packet=[packet]).SerializeToString()
        if kind == LOST:
            return Trace(packet=[seq.packet(op[1], track_event=TrackEvent(
                type=INSTANT, name=f"lost {op[2]} events", categories=["fentry"],
                debug_annotations=[annotation("lost", op[2])]))]).SerializeToString()
        return b""

    def kernel_events(self, kernel: Any, streams: dict[int, ProcessStream]) -> None:
        """The kernel's events (``-K``), as Perfetto's ftrace events (kernel/perfetto.py)."""
        from ..kernel.perfetto import ftrace_packets
        packets = ftrace_packets(kernel, streams, METADATA_SEQUENCE)
        if packets:
            self._packets(*packets)

    def close(self) -> None:
        # A thread renamed after its track was described: its last name.
        for st in self.threads.values():
            seq, t = st.data, st.thread
            if t.name != seq.named:
                self._packets(TracePacket(
                    trusted_packet_sequence_id=seq.id,
                    track_descriptor=_thread_track(thread_uuid(st), process_uuid(st.stream),
                                                   st.stream.pid, seq.tid, t.name)))
        self.flush_out()


def _thread_track(uuid: int, parent: int, pid: int, tid: int, name: str) -> TrackDescriptor:
    return TrackDescriptor(uuid=uuid, parent_uuid=parent,
                           thread=ThreadDescriptor(pid=pid, tid=tid, thread_name=name))
