"""The kernel's events (``-K``) in the Perfetto export, as Perfetto's own
ftrace events: ``FtraceEventBundle`` packets, one per CPU, as
``traced_probes`` writes them, with ``sched_switch``, ``sched_wakeup``,
``sys_enter`` and ``sys_exit`` in their typed messages and any other event
as a ``GenericFtraceEvent`` (its fields by name).  Their ``pid`` is the
task's, so the viewer puts scheduling and syscalls on the same thread
tracks as fentry's slices (``ThreadDescriptor``'s tid).

Ftrace timestamps are CLOCK_BOOTTIME to Perfetto: the events' (CLOCK_MONOTONIC)
go there by the offset the recording noted, and a ``ClockSnapshot`` gives
both clocks, so that Perfetto puts them back on the trace's clock."""

from __future__ import annotations

from typing import Any

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    BUILTIN_CLOCK_BOOTTIME,
    BUILTIN_CLOCK_MONOTONIC,
    ClockSnapshot,
    FtraceEvent,
    FtraceEventBundle,
    GenericFtraceEvent,
    SchedSwitchFtraceEvent,
    SchedWakeupFtraceEvent,
    SysEnterFtraceEvent,
    SysExitFtraceEvent,
    TracePacket,
)

from ..report.decode import ProcessStream
from .merge import traced_events
from .stream import END_OF_TIME, LOST_EVENTS, KernelStream


def ftrace_packets(kernel: KernelStream, streams: dict[int, ProcessStream], sequence: int
                   ) -> list[TracePacket]:
    """The packets of the traced processes' kernel events (none if there are none)."""
    offset = max(0, int(kernel.hello.get("boot_minus_mono_ns", 0)))
    per_cpu: dict[int, list[FtraceEvent]] = {}
    lost: set[int] = set()
    for rec, _ in traced_events(kernel, streams, END_OF_TIME):
        cpu = rec[3][0]
        if rec[2] is LOST_EVENTS:
            lost.add(cpu)
            continue
        per_cpu.setdefault(cpu, []).append(_event(rec, offset))
    if not per_cpu:
        return []
    packets = [TracePacket(
        timestamp=0, timestamp_clock_id=BUILTIN_CLOCK_MONOTONIC, trusted_packet_sequence_id=sequence,
        clock_snapshot=ClockSnapshot(
            clocks=[ClockSnapshot.Clock(clock_id=BUILTIN_CLOCK_MONOTONIC, timestamp=0),
                    ClockSnapshot.Clock(clock_id=BUILTIN_CLOCK_BOOTTIME, timestamp=offset)],
            primary_trace_clock=BUILTIN_CLOCK_MONOTONIC))]
    for cpu, events in sorted(per_cpu.items()):
        packets.append(TracePacket(trusted_packet_sequence_id=sequence, ftrace_events=FtraceEventBundle(
            cpu=cpu, event=events, lost_events=cpu in lost)))
    return packets


def _event(rec: tuple[Any, ...], offset: int) -> FtraceEvent:
    values = rec[2].values(rec)
    name = rec[2].name
    event = FtraceEvent(timestamp=rec[1] + offset, pid=rec[3][2], common_flags=rec[3][3])
    if name == "sched_switch":
        event.sched_switch.CopyFrom(SchedSwitchFtraceEvent(
            prev_comm=values["prev_comm"], prev_pid=values["prev_pid"], prev_prio=values["prev_prio"],
            prev_state=values["prev_state"], next_comm=values["next_comm"],
            next_pid=values["next_pid"], next_prio=values["next_prio"]))
    elif name == "sched_wakeup" and "target_cpu" in values:
        event.sched_wakeup.CopyFrom(SchedWakeupFtraceEvent(
            comm=values["comm"], pid=values["pid"], prio=values["prio"],
            target_cpu=values["target_cpu"]))
    elif rec[2].system == "raw_syscalls" and name == "sys_enter":
        event.sys_enter.CopyFrom(SysEnterFtraceEvent(id=values["id"], args=list(values["args"])))
    elif rec[2].system == "raw_syscalls" and name == "sys_exit":
        event.sys_exit.CopyFrom(SysExitFtraceEvent(id=values["id"], ret=values["ret"]))
    else:
        event.generic.CopyFrom(GenericFtraceEvent(event_name=name, field=[
            _field(k, v) for k, v in values.items() if not k.startswith("common_")]))
    return event


def _field(name: str, value: Any) -> GenericFtraceEvent.Field:
    if isinstance(value, int):
        return GenericFtraceEvent.Field(name=name, int_value=value)
    return GenericFtraceEvent.Field(name=name, str_value=str(value))
