"""The kernel's side of ``-K`` while the program runs: a thread of the
``fentry`` command that splices the instance's raw pages out of
``per_cpu/cpuN/trace_pipe_raw``, as trace-cmd record does, into the
recording as stream 0 (``kernel/stream.py`` has its messages).  Nothing is
decoded here but the tasks an event names (its task, a switch's two), so
that each task's name and process (``/proc/TID/status``) are read while
the task is there to ask: the report keeps the traced processes' events."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from typing import TYPE_CHECKING

from .format import EventFormat
from .instance import Instance
from .pages import page_events
from .stream import KEND, KERNEL_STREAM, KHELLO, KMARK, KPAGE, KTASKS, message

if TYPE_CHECKING:
    from ..report.datfile import DatWriter

INTERVAL = 0.02         # seconds between drains: the text trails the program by about this
# A page is read after its events' commit: an event reserved just before a
# drain began may be committed after its CPU was read.  The mark stays this
# far behind the drain's start.
MARK_SLACK_NS = 2_000_000
_PID = struct.Struct("<i")


class KernelReader:
    """Drains ``instance`` into ``writer`` from its own thread, from
    ``start`` to ``stop``."""

    def __init__(self, instance: Instance, writer: DatWriter) -> None:
        self.instance = instance
        self.writer = writer
        self.cpus = _cpus(instance)
        self.fds: dict[int, int] = {}
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.tasks: dict[int, tuple[str, int]] = {}
        # sched_switch names two tasks: where their pids are in its payload
        self.switch: tuple[int, int, int] | None = None
        text = instance.formats.get(("sched", "sched_switch"))
        if text is not None:
            fmt = EventFormat("sched", text)
            self.switch = (fmt.id, fmt.by_name["prev_pid"].offset, fmt.by_name["next_pid"].offset)
        self.recent: list[int] = []         # tasks first seen by the last drain
        self.last_began = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fentry-kernel", daemon=True)

    def hello(self) -> None:
        """What decodes the pages, once, first: the events' formats, the page layout."""
        with open(os.path.join(self.instance.tracefs, "events", "header_page")) as f:
            header_page = f.read()
        # (the Perfetto export says the kernel's events in CLOCK_BOOTTIME, ftrace's there)
        # (never below 0: it is the time suspended, and the two reads are apart by a few ns)
        boot = max(0, time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                   - time.clock_gettime_ns(time.CLOCK_MONOTONIC))
        body = {"fentry_pid": os.getpid(), "instance": self.instance.name,
                "boot_minus_mono_ns": boot,
                "trace_clock": "mono", "header_page": header_page, "page_size": self.page_size,
                "cpus": self.cpus,
                "formats": [[s, e, text] for (s, e), text in self.instance.formats.items()]}
        self.writer.frame(KERNEL_STREAM, message(KHELLO, json.dumps(body).encode()))

    def start(self) -> None:
        for cpu in self.cpus:
            self.fds[cpu] = os.open(self.instance.file("per_cpu", f"cpu{cpu}", "trace_pipe_raw"),
                                    os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(INTERVAL):
            self.drain()

    def drain(self) -> None:
        """Every page there is now, then the mark: no event older than it is still to come."""
        began = time.monotonic_ns()
        out: list[bytes] = []
        new: dict[int, tuple[str, int]] = {}
        for cpu, fd in self.fds.items():
            while True:
                try:
                    page = os.read(fd, self.page_size)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if not page:
                    break
                out.append(message(KPAGE, struct.pack("<I", cpu) + page))
                for _, payload in page_events(page)[1]:
                    tids = [_PID.unpack_from(payload, 4)[0]]
                    if self.switch is not None and payload[0] | payload[1] << 8 == self.switch[0]:
                        tids += [_PID.unpack_from(payload, self.switch[1])[0],
                                 _PID.unpack_from(payload, self.switch[2])[0]]
                    for tid in tids:
                        if tid not in self.tasks and tid not in new:
                            new[tid] = _task(tid)
        # A task first seen last time is asked again: a thread names itself
        # just after it starts (fentry's own, control/threads.py, as soon as
        # it holds the GIL), and its first events carry its creator's name.
        for tid in self.recent:
            task = _task(tid)
            if task[1] and task != self.tasks[tid]:
                new[tid] = task
        self.recent = [tid for tid in new if tid not in self.tasks]
        if new:
            self.tasks.update(new)
            out.insert(0, message(KTASKS, json.dumps(new).encode()))
        # The mark is the last drain's start: its tasks' names have been asked twice.
        out.append(message(KMARK, struct.pack("<q", self.last_began - MARK_SLACK_NS)))
        self.last_began = began
        self.writer.frame(KERNEL_STREAM, b"".join(out))

    def stop(self, why: str = "end") -> None:
        """Events off, the last pages read, the stream ended, the files closed
        (so that the instance can be removed)."""
        if not self.done.is_set():
            self.done.set()
            if self.thread.is_alive():
                self.thread.join()
        try:
            self.instance.enable(False)
        except OSError:
            pass
        if self.fds:
            self.drain()
            self.writer.frame(KERNEL_STREAM, message(KEND, json.dumps({"why": why}).encode()))
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _cpus(instance: Instance) -> list[int]:
    names = os.listdir(instance.file("per_cpu"))
    return sorted(int(n[3:]) for n in names if n.startswith("cpu") and n[3:].isdigit())


def _task(tid: int) -> tuple[str, int]:
    """A task's name and process (tgid); ``<...>`` and 0 for one that is gone
    (the kernel's name for a task it has no comm of)."""
    if tid == 0:
        return "<idle>", 0
    name, tgid = "<...>", 0
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Tgid:"):
                    tgid = int(line[5:])
                    break
    except (OSError, ValueError):
        pass
    return name, tgid
