"""The ring buffer: per-thread buffers of raw records, oldest overwritten.

As the kernel's per-CPU ring buffers, with threads for CPUs: a writer only
ever touches its own thread's buffer, found through a ``threading.local``;
each buffer (a ``Ring`` of the hot path, in C or Python) holds at most
``buffer_size_kb`` worth of records and overwrites the oldest when full.
Every record reads as a tuple ``(seq, timestamp_ns, ...)``: ``seq`` counts
the thread's writes, so losses are known exactly at read time.
"""

from __future__ import annotations

import _thread
import os
import time

from .. import pythreads
from ..fds import high_fd
from ..hotpath import RECORD_BYTES, PageQueue, Ring, Switch
from .rename import TASK_RENAME, watch, watching

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..hotpath import Encoder
    from ..raw import Record
    from .stream import Descriptions

DEFAULT_SIZE_KB = 1408      # the kernel's default per-CPU size

# trace_clock: name -> Ring.set_clock's clock, in the kernel's order (its
# perf and x86-tsc are left out: see the README).  local and global are one
# clock here, CLOCK_MONOTONIC (time.perf_counter_ns), read from the TSC in C
# where it is the kernel's clocksource: the rings' default, and as cheap as
# a clock gets.  mono and the others are clock_gettime readings as they are;
# uptime is the kernel's jiffies clock, CLOCK_MONOTONIC_COARSE (tick
# resolution); counter counts the instance's records, 1, 2, ..., across
# its threads.
TRACE_CLOCKS = {
    "local": -1,
    "global": -1,
    "counter": -2,
    "uptime": 6,        # CLOCK_MONOTONIC_COARSE, in Linux's time.h (time does not name it)
    "mono": time.CLOCK_MONOTONIC,
    "mono_raw": time.CLOCK_MONOTONIC_RAW,
    "boot": time.CLOCK_BOOTTIME,
    "tai": time.CLOCK_TAI,
}

# A Ring's ``skip`` bits: what the pid filters leave out of its thread.
SKIP_FUNCTION = 1           # set_ftrace_pid / set_ftrace_notrace_pid: function, function_graph
SKIP_EVENT = 2              # set_event_pid / set_event_notrace_pid: probe events
# The pid list files: name -> (the bit, whether listed threads are the ones traced).
PID_FILES = {
    "set_ftrace_pid": (SKIP_FUNCTION, True),
    "set_ftrace_notrace_pid": (SKIP_FUNCTION, False),
    "set_event_pid": (SKIP_EVENT, True),
    "set_event_notrace_pid": (SKIP_EVENT, False),
}


def available_kb() -> int | None:
    """MemAvailable, in KB (None where /proc/meminfo does not say)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class ThreadBuffer(Ring):
    """One thread's ring, and who the thread is (for the task column).

    Reading it runs no Python code of ``threading`` (its properties and
    methods would be traced like any other code): names and liveness come
    from plain attributes and ``threading._active``.
    """
    __slots__ = ("tid", "ident", "name", "thread", "ended", "starting", "read_name", "renamed")

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen)
        self.tid = _thread.get_native_id()
        self.ident = _thread.get_ident()
        self.ended = False
        # Not threading.current_thread(): for a thread threading did not start
        # it would make a _DummyThread, and change what the program sees.
        self.thread: Any = None     # (threading's Thread)
        self.name = pythreads.default_name(self.tid)
        self.renamed = 0            # renames recorded (tracers/rename.py)
        # A new thread's first calls come before threading registers it: it
        # is one of the threads starting now, known once it has set its ident.
        self.starting = list(pythreads.limbo())
        self._find_thread()
        # The name when its records were last taken, before them (``RingBuffer.snapshot``).
        self.read_name = self.name

    def _find_thread(self) -> None:
        """The Thread of this buffer's thread, once threading knows it."""
        t = pythreads.active().get(self.ident)
        if t is None or getattr(t, "_native_id", self.tid) != self.tid:
            # Started and maybe ended since: its object still knows its ident.
            t = next((s for s in self.starting if getattr(s, "_ident", None) == self.ident
                      and getattr(s, "_native_id", self.tid) == self.tid), None)
        if t is not None:
            self.thread = t
            self.name = t._name
            self.starting = []

    def alive(self) -> bool:
        if self.ended:
            return False
        t = self.thread
        if t is None:
            self._find_thread()
            t = self.thread
            if t is None:
                return True         # not registered yet (or never: a bare _thread)
        if pythreads.active().get(self.ident) is not t:
            self.ended = True
            return False
        return True

    def task_name(self) -> str:
        """The thread's name as of its last record (its last name, once it
        has ended): while renames are caught (``tracers/rename.py``), the name it had
        when found, then each rename's; else as it is now."""
        if self.thread is None:
            self._find_thread()
        elif not watching():
            self.name = self.thread._name
        return self.name

    def rename(self, thread: Any, old: str, new: str) -> None:
        """The thread was renamed (by itself or another thread): a rename
        record, in the page queue at once if a raw reader reads (before the
        new name can be read), then the new name."""
        if self.thread is None:
            self.thread, self.starting = thread, []
        self.record((TASK_RENAME, (None, 0), (self.tid, old, new)))
        self.flush()
        self.renamed += 1
        self.name = new

    def take_name(self) -> None:
        """Before its records are taken: the name they end with, unless a
        rename record among them says otherwise (``text.named_runs``)."""
        self.read_name = self.task_name()


class Taken:
    """A thread as it was when its records were taken (the snapshot buffer
    keeps its records for later reads, and their names with them)."""
    __slots__ = ("tid", "read_name", "renamed")

    def __init__(self, tb: ThreadBuffer) -> None:
        self.tid = tb.tid
        self.read_name = tb.read_name
        self.renamed = tb.renamed

    def task_name(self) -> str:
        return self.read_name


class RingBuffer:
    """All threads' buffers, and the knobs the tracefs files turn."""

    def __init__(self, size_kb: int = DEFAULT_SIZE_KB) -> None:
        self.size_kb = size_kb
        self.local = _thread._local()
        # tracing_on: whether records are written (ring_buffer_record_on/off);
        # the hot path reads it without a call.
        self.recording = Switch(True)
        self.buffers: list[ThreadBuffer] = []
        self._lock = _thread.allocate_lock()
        self.keys = 0               # thread keys handed out (a buffer's key in raw streams)
        self.queue: PageQueue | None = None     # while raw readers read
        self.descriptions: Descriptions | None = None   # of the queue's ids, to its readers
        self.raw_readers = 0
        self.wake = (-1, -1)        # the queue's pipe: a byte when a page waits
        self.overwrite = True       # options/overwrite: full buffers overwrite their oldest
        self.clock = "local"        # trace_clock
        # The pid filters (PID_FILES: name -> native thread ids), per instance
        # as the kernel's; each ring holds its thread's verdict (``skip``).
        self.pids: dict[str, frozenset[int]] = {name: frozenset() for name in PID_FILES}

    @property
    def maxlen(self) -> int:
        return max(1, self.size_kb * 1024 // RECORD_BYTES)

    def attach(self) -> ThreadBuffer:
        """The calling thread's buffer, made on its first event (slow path)."""
        watch(self)          # (before its name is read)
        tb = ThreadBuffer(self.maxlen)
        tb.overwrite = self.overwrite
        if self.clock != "local":
            tb.set_clock(TRACE_CLOCKS[self.clock], self.recording)
        with self._lock:
            tb.skip = self.skip_of(tb.tid)
            self.keys += 1
            tb.set_queue(self.queue, self.keys, self.maxlen // 2)
            self.buffers.append(tb)
            if self.queue is not None:
                self.queue.cap = self._queue_cap()
        self.local.tb = tb
        return tb

    def current(self) -> ThreadBuffer:
        """The calling thread's buffer, made on its first use (not for the
        hot path, whose handlers hold ``local`` and ``attach`` themselves)."""
        tb: ThreadBuffer | None = getattr(self.local, "tb", None)
        return tb if tb is not None else self.attach()

    def renamed(self, thread: Any, old: str, new: str) -> None:
        """``thread`` was renamed: its buffer, if it has one, records it."""
        ident = getattr(thread, "_ident", None)
        for tb in list(self.buffers):
            if tb.thread is thread or (tb.thread is None and tb.ident == ident and not tb.ended
                                       and getattr(thread, "_native_id", tb.tid) == tb.tid):
                tb.rename(thread, old, new)
                return

    # -- pid filters
    def skip_of(self, tid: int) -> int:
        """The ``skip`` bits of thread ``tid`` under the pid lists: left out
        if a list of traced threads is set and it is not in it, or if it is
        in the list of threads not traced (the kernel's, for each of
        set_ftrace_pid and set_event_pid)."""
        skip = 0
        for name, (bit, traced) in PID_FILES.items():
            pids = self.pids[name]
            if pids and (tid not in pids) == traced:
                skip |= bit
        return skip

    def update_pids(self, name: str, change: Callable[[frozenset[int]], frozenset[int]]) -> None:
        """Set one pid list (a ``PID_FILES`` name) to ``change(the list
        now)``, atomically (a write, and threads starting and ending, may
        change it at once); every thread's ring gets its new verdict."""
        with self._lock:
            pids = change(self.pids[name])
            if pids == self.pids[name]:
                return
            self.pids[name] = pids
            for tb in self.buffers:
                tb.skip = self.skip_of(tb.tid)

    # -- raw readers (tracers/stream.py)
    def start_raw(self, make_encoder: Callable[[], Encoder],
                  make_descriptions: Callable[[Encoder], Descriptions]
                  ) -> tuple[PageQueue, int, Descriptions]:
        """A raw reader comes: from now on a thread whose buffer is half full
        moves its records into the queue itself (the reader's thread cannot
        drain while busy threads hold the GIL).  Returns the queue, shared by
        every raw reader of these buffers, a descriptor that is readable
        when a page waits, and what describes the queue's ids to its readers
        (``make_descriptions(encoder)``, shared as the queue is)."""
        with self._lock:
            if self.queue is None:
                read_end, write_end = os.pipe()
                self.wake = (high_fd(read_end), high_fd(write_end))
                for fd in self.wake:
                    os.set_blocking(fd, False)
                self.queue = PageQueue(make_encoder(), 0, self.wake[1])
                self.queue.cap = self._queue_cap()
                self.descriptions = make_descriptions(self.queue.encoder)
                for tb in self.buffers:
                    tb.set_queue(self.queue, tb.key, self.maxlen // 2)
            self.raw_readers += 1
            assert self.descriptions is not None
            return self.queue, self.wake[0], self.descriptions

    def stop_raw(self) -> None:
        """A raw reader is gone (it drained what it wanted); with the last
        one, buffers keep their records again until read or overwritten."""
        with self._lock:
            self.raw_readers -= 1
            if self.raw_readers > 0 or self.queue is None:
                return
            for tb in self.buffers:
                tb.set_queue(None, tb.key, 0)
            self.queue = self.descriptions = None
            for fd in self.wake:
                os.close(fd)
            self.wake = (-1, -1)

    def _queue_cap(self) -> int:
        """Bytes that may wait in the queue: half of each thread's buffer (so
        a thread holds at most 1.5 buffer_size_kb, ring and pages)."""
        return max(1, len(self.buffers)) * self.size_kb * 1024 // 2

    def resize(self, size_kb: int) -> None:
        """Records dropped by shrinking count as lost, as overwritten ones do.

        A size one thread's buffer could not get is refused (MemoryError), as
        the kernel refuses a per-CPU size larger than the memory available."""
        available = available_kb()
        if available is not None and size_kb > available:
            raise MemoryError(f"{size_kb} KB per thread is more than the {available} KB "
                              "of memory available")
        with self._lock:
            self.size_kb = size_kb
            for tb in self.buffers:
                tb.resize(self.maxlen)
                tb.set_queue(self.queue, tb.key, self.maxlen // 2)
            if self.queue is not None:
                self.queue.cap = self._queue_cap()

    def set_overwrite(self, on: bool) -> None:
        """options/overwrite: off, a full buffer drops new records (counted
        as lost) instead of overwriting its oldest.  With a raw reader, it
        applies when the page queue is full too (its pages are not the
        ring's to overwrite)."""
        with self._lock:
            self.overwrite = on
            for tb in self.buffers:
                tb.overwrite = on

    def set_clock(self, name: str) -> None:
        """trace_clock: a clock of TRACE_CLOCKS for every buffer, which is
        emptied (as the kernel's tracing_set_clock: timestamps of two clocks
        do not compare)."""
        with self._lock:
            self.clock = name
            for tb in self.buffers:
                tb.set_clock(TRACE_CLOCKS[name], self.recording)
        self.reset()

    def after_fork_in_child(self) -> None:
        """In a forked child only the forking thread exists: its buffer, now
        this process's thread's, is the one left (the hot path may hold it)."""
        self._lock._at_fork_reinit()    # type: ignore[attr-defined]  # a thread of the parent may have held it
        tb = getattr(self.local, "tb", None)
        self.buffers = [tb] if tb is not None else []
        if tb is not None:
            tb.tid = _thread.get_native_id()
            tb.skip = self.skip_of(tb.tid)
            tb.after_fork()
            tb.set_queue(None, tb.key, 0)
        # The parent's raw readers are the parent's.
        self.queue = self.descriptions = None
        self.raw_readers = 0
        for fd in self.wake:
            if fd >= 0:
                os.close(fd)
        self.wake = (-1, -1)

    def reset(self) -> None:
        """Empty every buffer (a write to ``trace``)."""
        with self._lock:
            for tb in self.buffers:
                tb.clear()
                tb.lost_told = 0
            # Threads that have ended and left nothing are forgotten.
            self.buffers = [tb for tb in self.buffers if tb.alive()]

    # -- reading
    def stats(self) -> tuple[int, int]:
        """(entries in buffer, entries written) over all threads."""
        with self._lock:
            buffers = list(self.buffers)
        return sum(len(tb) for tb in buffers), sum(tb.written() for tb in buffers)

    def snapshot(self) -> list[tuple[ThreadBuffer, list[Record]]]:
        """Every thread's records as they are now, not consumed."""
        with self._lock:
            buffers = list(self.buffers)
        for tb in buffers:
            tb.take_name()
        return [(tb, tb.snapshot()) for tb in buffers]

    def readable(self) -> list[ThreadBuffer]:
        """Every thread's buffer, for a consuming reader.  Without the lock
        (a copy of a list is atomic): a drain may run in a signal handler
        that interrupted code holding it."""
        return list(self.buffers)

    def release_ended(self) -> None:
        """Forget the buffers of threads that have ended, once read empty and
        their losses told: their memory goes back.  (Skipped, till the next
        drain, when the lock is busy: see ``readable``.)"""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self.buffers = [tb for tb in self.buffers
                            if len(tb) or tb.lost() != tb.lost_told or tb.alive()]
            if self.queue is not None:
                self.queue.cap = self._queue_cap()
        finally:
            self._lock.release()

    def consume(self) -> list[tuple[ThreadBuffer, list[Record]]]:
        """Take every record written so far (trace_pipe)."""
        with self._lock:
            buffers = list(self.buffers)
        for tb in buffers:
            tb.take_name()
        return [(tb, taken) for tb in buffers if (taken := tb.consume())]
