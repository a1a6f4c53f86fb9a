"""The ring buffer: per-thread buffers of raw records, oldest overwritten.

As the kernel's per-CPU ring buffers, with threads for CPUs: a writer only
ever touches its own thread's buffer, found through a ``threading.local``;
each buffer holds at most ``buffer_size_kb`` worth of records and drops the
oldest when full.  Every record is a tuple ``(seq, timestamp_ns, ...)``:
``seq`` counts the thread's writes, so losses are known exactly at read time
without any bookkeeping on the write path.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from typing import Iterator

# What one record costs, for turning buffer_size_kb into a record count: a
# 4-6 field tuple and its integers.
RECORD_BYTES = 128
DEFAULT_SIZE_KB = 1408      # the kernel's default per-CPU size


class ThreadBuffer:
    """One thread's records.  Writers call ``append`` and ``next(seq)``."""
    __slots__ = ("records", "append", "seq", "tid", "name", "thread", "consumed", "mark")

    def __init__(self, maxlen: int) -> None:
        t = threading.current_thread()
        self.records: deque = deque(maxlen=maxlen)
        self.append = self.records.append
        self.seq = itertools.count()
        self.tid = threading.get_native_id()
        self.thread: threading.Thread | None = t
        self.name = t.name
        self.consumed = 0       # records taken by consuming reads since the reset
        self.mark = 0           # entries written, as known at the last consuming read

    def written(self) -> int:
        """Records written since the last reset (the kernel's entries-written)."""
        records = self.records
        return records[-1][0] + 1 if records else self.mark

    def lost(self) -> int:
        """Records overwritten before anyone read them."""
        return self.written() - self.consumed - len(self.records)

    def task_name(self) -> str:
        """The thread's name now (or its last name, once it has ended)."""
        t = self.thread
        if t is not None:
            self.name = t.name
            if not t.is_alive():
                self.thread = None
        return self.name


class RingBuffer:
    """All threads' buffers, and the knobs the tracefs files turn."""

    def __init__(self, size_kb: int = DEFAULT_SIZE_KB) -> None:
        self.size_kb = size_kb
        self.local = threading.local()
        self.buffers: list[ThreadBuffer] = []
        self._lock = threading.Lock()
        self.readable = threading.Condition(self._lock)

    @property
    def maxlen(self) -> int:
        return max(1, self.size_kb * 1024 // RECORD_BYTES)

    def attach(self) -> ThreadBuffer:
        """The calling thread's buffer, made on its first event (slow path)."""
        tb = ThreadBuffer(self.maxlen)
        with self._lock:
            self.buffers.append(tb)
        self.local.tb = tb
        return tb

    def resize(self, size_kb: int) -> None:
        """Records dropped by shrinking count as lost, as overwritten ones do."""
        with self._lock:
            self.size_kb = size_kb
            for tb in self.buffers:
                tb.records = deque(tb.records, maxlen=self.maxlen)
                tb.append = tb.records.append

    def reset(self) -> None:
        """Empty every buffer (a write to ``trace``)."""
        with self._lock:
            for tb in self.buffers:
                tb.records.clear()
                tb.seq = itertools.count()
                tb.consumed = 0
                tb.mark = 0
            # Threads that have ended and left nothing are forgotten.
            self.buffers = [tb for tb in self.buffers if tb.thread is not None and tb.thread.is_alive()]

    # -- reading
    def stats(self) -> tuple[int, int]:
        """(entries in buffer, entries written) over all threads."""
        with self._lock:
            buffers = list(self.buffers)
        in_buf = sum(len(tb.records) for tb in buffers)
        written = sum(tb.written() for tb in buffers)
        return in_buf, written

    def snapshot(self) -> list[tuple[ThreadBuffer, list]]:
        """Every thread's records as they are now, not consumed."""
        with self._lock:
            buffers = list(self.buffers)
        return [(tb, list(tb.records)) for tb in buffers]

    def consume(self) -> list[tuple[ThreadBuffer, list]]:
        """Take every record written so far (trace_pipe)."""
        with self._lock:
            buffers = list(self.buffers)
        out = []
        for tb in buffers:
            records = tb.records
            pop = records.popleft
            taken = []
            try:
                for _ in range(len(records)):
                    taken.append(pop())
            except IndexError:      # a writer overwrote what we were about to take
                pass
            if taken:
                tb.consumed += len(taken)
                tb.mark = taken[-1][0] + 1
                out.append((tb, taken))
        return out

    def notify(self) -> None:
        with self.readable:
            self.readable.notify_all()


def merge_by_time(per_thread: list[tuple[ThreadBuffer, list]]) -> Iterator[tuple[ThreadBuffer, tuple]]:
    """Records of all threads in timestamp order, each with its thread's buffer."""
    if len(per_thread) == 1:
        tb, records = per_thread[0]
        for rec in records:
            yield tb, rec
        return
    streams = [_tagged(tb, records) for tb, records in per_thread]
    for _, tb, rec in heapq.merge(*streams, key=_first):
        yield tb, rec


def _tagged(tb: ThreadBuffer, records: list):
    for rec in records:
        yield rec[1], tb, rec


def _first(item):
    return item[0]
