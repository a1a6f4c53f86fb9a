"""The ring buffer: per-thread buffers of raw records, oldest overwritten.

As the kernel's per-CPU ring buffers, with threads for CPUs: a writer only
ever touches its own thread's buffer, found through a ``threading.local``;
each buffer (a ``Ring`` of the hot path, in C or Python) holds at most
``buffer_size_kb`` worth of records and overwrites the oldest when full.
Every record reads as a tuple ``(seq, timestamp_ns, ...)``: ``seq`` counts
the thread's writes, so losses are known exactly at read time.
"""

from __future__ import annotations

import threading

from ..hotpath import RECORD_BYTES, Ring, Switch

DEFAULT_SIZE_KB = 1408      # the kernel's default per-CPU size


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
    __slots__ = ("tid", "ident", "name", "thread")

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen)
        self.tid = threading.get_native_id()
        self.ident = threading.get_ident()
        # Not threading.current_thread(): for a thread threading did not start
        # it would make a _DummyThread, and change what the program sees.
        self.thread: threading.Thread | None = threading._active.get(self.ident)
        self.name = self.thread._name if self.thread is not None else "python"

    def alive(self) -> bool:
        t = self.thread
        if t is not None and threading._active.get(self.ident) is not t:
            self.thread = t = None
        return t is not None

    def task_name(self) -> str:
        """The thread's name now (or its last name, once it has ended)."""
        if self.alive():
            self.name = self.thread._name
        return self.name


class RingBuffer:
    """All threads' buffers, and the knobs the tracefs files turn."""

    def __init__(self, size_kb: int = DEFAULT_SIZE_KB) -> None:
        self.size_kb = size_kb
        self.local = threading.local()
        # tracing_on: whether records are written (ring_buffer_record_on/off);
        # the hot path reads it without a call.
        self.recording = Switch(True)
        self.buffers: list[ThreadBuffer] = []
        self._lock = threading.Lock()

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

    def after_fork_in_child(self) -> None:
        """In a forked child only the forking thread exists: its buffer, now
        this process's thread's, is the one left (the hot path may hold it)."""
        self._lock._at_fork_reinit()    # a thread of the parent may have held it
        tb = getattr(self.local, "tb", None)
        self.buffers = [tb] if tb is not None else []
        if tb is not None:
            tb.tid = threading.get_native_id()

    def reset(self) -> None:
        """Empty every buffer (a write to ``trace``)."""
        with self._lock:
            for tb in self.buffers:
                tb.clear()
            # Threads that have ended and left nothing are forgotten.
            self.buffers = [tb for tb in self.buffers if tb.alive()]

    # -- reading
    def stats(self) -> tuple[int, int]:
        """(entries in buffer, entries written) over all threads."""
        with self._lock:
            buffers = list(self.buffers)
        return sum(len(tb) for tb in buffers), sum(tb.written() for tb in buffers)

    def snapshot(self) -> list[tuple[ThreadBuffer, list]]:
        """Every thread's records as they are now, not consumed."""
        with self._lock:
            buffers = list(self.buffers)
        return [(tb, tb.snapshot()) for tb in buffers]

    def consume(self) -> list[tuple[ThreadBuffer, list]]:
        """Take every record written so far (trace_pipe)."""
        with self._lock:
            buffers = list(self.buffers)
        return [(tb, taken) for tb in buffers if (taken := tb.consume())]
