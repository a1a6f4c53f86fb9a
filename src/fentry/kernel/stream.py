"""Stream 0 of a recording: the kernel's events (``-K``), as
``kernel/reader.py`` writes them and a report reads them.

Messages are framed as a traced process's (``tracers/stream.py``: u32
length, u8 kind, body), with kinds of their own::

    KHELLO  JSON {fentry_pid, instance, trace_clock, boot_minus_mono_ns,
                  header_page, page_size, cpus,
                  formats: [[system, event, format file text], ...]}
    KPAGE   u32 cpu, a page of per_cpu/cpuN/trace_pipe_raw as read
    KTASKS  JSON {tid: [comm, tgid]}: tasks first seen in the pages after it
            (tgid 0: gone before it could be asked)
    KMARK   i64 ns: every event older than this has been sent
    KEND    JSON {why}: the stream is complete

A process stream's reader (``report/decode.py``) skips kinds it does not
know, so a recording with stream 0 still reads, without it, in a fentry
that has no ``-K``; a recording without it reads as before.

Decoded, a kernel event is a record as the text readers take an event's,
``(None, ts, event, site, payload, values)``: seq None (it is not one of
the thread's records), ``event`` the ``KernelEvent`` of its format
(``line``, as a probe event's), ``site`` ``(cpu, tasks, tid, flags,
preempt_count)``, where ``tasks`` is the stream's ``{tid: (comm, tgid)}``,
as known when printed.  Its fields are decoded when they are needed
(``KernelEvent.text``, ``values``; a switch's at once, for its tasks): a
drain's pages may hold a hundred thousand events, most of them other
processes', dropped unread."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from .format import EventFormat
from .pages import page_events

KERNEL_STREAM = 0
KHELLO, KPAGE, KTASKS, KMARK, KEND = 64, 65, 66, 67, 68
_MSG = struct.Struct("<IB")
_COMMON = struct.Struct("<HBBi")
_CPU = struct.Struct("<I")
_MARK = struct.Struct("<q")
END_OF_TIME = 1 << 63
# The kernel's name (comm) of fentry's own threads in a traced process
# (control/threads.py names them so): their events are fentry's, not the program's.
AGENT_COMM = "fentry-agent"

# The kernel's trace_flag_type bits (kernel/trace/trace.h)
FLAG_IRQS_OFF, FLAG_NEED_RESCHED_LAZY, FLAG_NEED_RESCHED = 0x01, 0x02, 0x04
FLAG_HARDIRQ, FLAG_SOFTIRQ, FLAG_PREEMPT_RESCHED, FLAG_NMI, FLAG_BH_OFF = 0x08, 0x10, 0x20, 0x40, 0x80
_RESCHED = {FLAG_NEED_RESCHED | FLAG_NEED_RESCHED_LAZY | FLAG_PREEMPT_RESCHED: "B",
            FLAG_NEED_RESCHED | FLAG_PREEMPT_RESCHED: "N",
            FLAG_NEED_RESCHED_LAZY | FLAG_PREEMPT_RESCHED: "L",
            FLAG_NEED_RESCHED | FLAG_NEED_RESCHED_LAZY: "b",
            FLAG_NEED_RESCHED: "n", FLAG_PREEMPT_RESCHED: "p", FLAG_NEED_RESCHED_LAZY: "l"}


def message(kind: int, body: bytes) -> bytes:
    return _MSG.pack(1 + len(body), kind) + body


def lat_flags(flags: int, preempt: int) -> str:
    """The kernel's five flag columns (trace_print_lat_fmt): irqs-off,
    need-resched, hardirq/softirq, preempt-depth, migrate-disable."""
    bh_off = flags & FLAG_BH_OFF
    irqs = ("D" if bh_off else "d") if flags & FLAG_IRQS_OFF else ("b" if bh_off else ".")
    resched = _RESCHED.get(flags & (FLAG_NEED_RESCHED | FLAG_NEED_RESCHED_LAZY
                                    | FLAG_PREEMPT_RESCHED), ".")
    nmi, hard, soft = flags & FLAG_NMI, flags & FLAG_HARDIRQ, flags & FLAG_SOFTIRQ
    irq = ("Z" if hard else "z") if nmi else ("H" if hard and soft else "h" if hard
                                               else "s" if soft else ".")
    depth = f"{preempt & 0xf:x}" if preempt & 0xf else "."
    migrate = f"{preempt >> 4 & 0xf:x}" if preempt & 0xf0 else "."
    return irqs + resched + irq + depth + migrate


class KernelEvent:
    """An event's format, as a record's ``event``: ``line(site, text)`` is
    its part of a line (the text, made when it was decoded); ``kernel_line``
    its whole line as the kernel's ``trace`` prints it."""
    __slots__ = ("format", "name", "system")

    def __init__(self, fmt: EventFormat) -> None:
        self.format = fmt
        self.name = fmt.name
        self.system = fmt.system

    def line(self, site: tuple[Any, ...], payload: bytes) -> str:
        return self.format.text(payload)

    def values(self, rec: tuple[Any, ...]) -> dict[str, Any]:
        """The record's fields, by name."""
        values: dict[str, Any] | None = rec[5]
        return values if values is not None else self.format.values(rec[4])

    def kernel_line(self, rec: tuple[Any, ...], stamp: str | None = None) -> str:
        """``comm-tid [cpu] flags ts: text``: print_trace_fmt's default
        layout; the text alone if ``stamp`` is empty (``nocontext-info``)."""
        text = self.format.text(rec[4])
        if stamp == "":
            return f"{text}\n"
        cpu, tasks, tid, flags, preempt = rec[3]
        # its name when printed, as the kernel's (saved_cmdlines): its last
        comm = tasks.get(tid, ("<...>", 0))[0] if tid else "<idle>"
        usecs = (rec[1] + 500) // 1000         # the kernel's ns2usecs rounds
        return (f"{comm[:16]:>16}-{tid:<7d} [{cpu:03d}] {lat_flags(flags, preempt)} "
                f"{usecs // 1_000_000:5d}.{usecs % 1_000_000:06d}: {text}\n")


class LostEvents:
    """A page's lost events, as a record's ``event``: the kernel's
    ``CPU:N [LOST M EVENTS]`` line (``[LOST EVENTS]``: how many not known)."""
    name = "lost"

    def line(self, site: tuple[Any, ...], text: str) -> str:
        return text

    def kernel_line(self, rec: tuple[Any, ...], stamp: str | None = None) -> str:
        return f"{rec[4]}\n"


LOST_EVENTS = LostEvents()


class KernelStream:
    """Stream 0, decoded as it comes: events by timestamp, ``mark`` (how far
    they are known to be complete), ``ended``."""

    def __init__(self) -> None:
        self.hello: dict[str, Any] = {}
        self.events: dict[int, KernelEvent] = {}
        self.tasks: dict[int, tuple[str, int]] = {}      # tid -> (comm, tgid)
        self.pending: list[tuple[Any, ...]] = []      # decoded, not yet handed out
        self.lost = 0           # events the kernel lost (overwritten before they were read)
        self.mark = 0
        self.ended: str | None = None
        self.data_offset = 16
        self.own_pid = 0

    def feed(self, payload: bytes) -> None:
        view = memoryview(payload)
        pos = 0
        while pos < len(view):
            length, kind = _MSG.unpack_from(view, pos)
            body = bytes(view[pos + _MSG.size:pos + 4 + length])
            pos += 4 + length
            if kind == KPAGE:
                self._page(_CPU.unpack_from(body)[0], body[_CPU.size:])
            elif kind == KMARK:
                self.mark = max(self.mark, _MARK.unpack_from(body)[0])
            elif kind == KTASKS:
                self.tasks.update({int(k): (v[0], v[1]) for k, v in json.loads(body).items()})
            elif kind == KHELLO:
                self._hello(json.loads(body))
            elif kind == KEND:
                self.ended = json.loads(body).get("why", "end")
                self.mark = END_OF_TIME

    def _hello(self, hello: dict[str, Any]) -> None:
        self.hello = hello
        self.own_pid = int(hello.get("fentry_pid", 0))
        for system, _, text in hello.get("formats", ()):
            try:
                fmt = EventFormat(system, text)
            except (ValueError, AttributeError):
                continue
            self.events[fmt.id] = KernelEvent(fmt)
        for line in hello.get("header_page", "").splitlines():
            if "char data;" in line and "offset:" in line:
                self.data_offset = int(line.split("offset:")[1].split(";")[0])

    def _page(self, cpu: int, page: bytes) -> None:
        lost, events = page_events(page, self.data_offset)
        if lost and events:
            self.lost += max(lost, 0)
            text = f"CPU:{cpu} [LOST {lost} EVENTS]" if lost > 0 else f"CPU:{cpu} [LOST EVENTS]"
            self.pending.append((None, events[0][0], LOST_EVENTS, (cpu, self.tasks, 0, 0, 0), text, {}))
        tasks = self.tasks
        for ts, payload in events:
            etype, flags, preempt, tid = _COMMON.unpack_from(payload)
            event = self.events.get(etype)
            if event is None or tid == self.own_pid:
                continue        # (not an event asked for; fentry's own, before the program's start)
            values = None
            if event.name == "sched_switch":
                values = event.format.values(payload)
                if self.own_pid in (values["prev_pid"], values["next_pid"]):
                    continue
                # The kernel's own names of the two (/proc's may say more: a
                # kworker's has its workqueue's)
                for who in ("prev", "next"):
                    if values[f"{who}_pid"] == 0:
                        continue        # (the idle task is <idle> to the kernel's trace)
                    comm, tgid = tasks.get(values[f"{who}_pid"], ("", 0))
                    if comm != AGENT_COMM:      # (fentry's thread: its first switches bear its creator's name)
                        tasks[values[f"{who}_pid"]] = (values[f"{who}_comm"], tgid)
            self.pending.append((None, ts, event, (cpu, tasks, tid, flags, preempt), payload, values))

    def take(self, until: int) -> list[tuple[Any, ...]]:
        """The events up to ``until`` (ns) not handed out yet, in time order."""
        if not self.pending:
            return []
        self.pending.sort(key=_ts)
        k = 0
        n = len(self.pending)
        while k < n and self.pending[k][1] <= until:
            k += 1
        out, self.pending = self.pending[:k], self.pending[k:]
        return out


def _ts(rec: tuple[Any, ...]) -> int:
    ts: int = rec[1]
    return ts


def task_of(rec: tuple[Any, ...], traced: Callable[[int], bool]) -> int | None:
    """The traced thread an event is about: its task, or for a switch, the
    one switched out, else the one switched in (a switch to a traced thread
    is recorded by the task that leaves the CPU); None if neither is."""
    if rec[2] is LOST_EVENTS:
        return 0
    if rec[2].name == "sched_switch":
        for key in ("prev_pid", "next_pid"):
            tid = rec[5].get(key)
            if tid is not None and traced(tid):
                return int(tid)
        return None
    tid = rec[3][2]
    return int(tid) if traced(tid) else None
