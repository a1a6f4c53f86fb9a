"""The kernel's events merged into the traced processes' records, by
timestamp, thread by thread, before a text sink formats them.

``KernelMerge`` sits between a recording's streams and the sink
(``report/decode.py``'s ``Streams`` puts it there when stream 0 begins).
A process's drain is held until the kernel's stream has been read past its
last timestamp (``KernelStream.mark``); then each kernel event up to it joins
the records of the thread it is about, in time order, so the function
tracer prints it as a line of its own and function_graph as a comment in
the frame that was running.  An event is a traced process's if its task is
one of the threads the process's stream described, or the kernel says the
task is in that process (its tgid, ``KTASKS``), but for fentry's own threads
there (``AGENT_COMM``); a task no stream described (a thread before its
first traced call, one that runs no Python) prints under its kernel name.
Any other task's events are dropped.  A process's END waits for the
kernel's: its last events come after its last drain."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..report.decode import ProcessStream, Sink, ThreadInfo
from .stream import AGENT_COMM, END_OF_TIME, KernelStream, task_of

if TYPE_CHECKING:
    from ..report.decode import Batch

_START, _TRACER, _BATCH, _END = range(4)


class KernelMerge(Sink):
    """A sink that hands ``sink`` the processes' drains with the kernel's
    events in them (see above)."""

    def __init__(self, sink: Sink, kernel: KernelStream, streams: dict[int, ProcessStream]) -> None:
        self.sink = sink
        self.kernel = kernel
        self.streams = streams
        self.queue: deque[tuple[int, ProcessStream, Any, int]] = deque()
        self.held: dict[int, list[tuple[Any, ...]]] = {}        # stream number -> its events taken
        self.others: dict[int, ThreadInfo] = {}     # tasks no process described, by tid

    @property
    def error(self) -> OSError | None:
        return getattr(self.sink, "error", None)

    def start(self, stream: ProcessStream) -> None:
        self._queue(_START, stream, None, 0)

    def tracer(self, stream: ProcessStream) -> None:
        self._queue(_TRACER, stream, None, 0)

    def batch(self, stream: ProcessStream, items: Batch) -> None:
        # (this sink's records are lists: a sink taking RawRecords is not merged into)
        # (up to the drain's time: an idle process's drains take the kernel's events too)
        last = max((records[-1][1] for _, _, records in items
                    if records and isinstance(records, list)), default=0)
        last = max(last, stream.drained)
        self._queue(_BATCH, stream, items, last)

    def end(self, stream: ProcessStream) -> None:
        self._queue(_END, stream, None, END_OF_TIME)

    def finish(self, streams: dict[int, ProcessStream]) -> None:
        self.kernel.mark = END_OF_TIME         # a cut kernel stream: what there is, now
        self.release()
        self.sink.finish(streams)

    def _queue(self, what: int, stream: ProcessStream, items: Any, ts: int) -> None:
        self.queue.append((what, stream, items, ts))
        self.release()

    def release(self) -> None:
        """Hand on what the kernel's stream has been read past."""
        while self.queue and self.queue[0][3] <= self.kernel.mark:
            what, stream, items, ts = self.queue.popleft()
            if what == _START:
                self.sink.start(stream)
            elif what == _TRACER:
                self.sink.tracer(stream)
            elif what == _BATCH:
                self.sink.batch(stream, self._merged(stream, items, ts))
            else:
                rest = self._merged(stream, [], END_OF_TIME)
                if rest:
                    self.sink.batch(stream, rest)
                self.sink.end(stream)

    def _merged(self, stream: ProcessStream, items: Batch, until: int) -> Batch:
        """``items`` with the kernel's events up to ``until`` of this
        process's threads among their records."""
        for rec, owner in traced_events(self.kernel, self.streams, until):
            self.held.setdefault(owner.number, []).append(rec)
        held = self.held.pop(stream.number, [])
        mine = [rec for rec in held if rec[1] <= until]
        later = [rec for rec in held if rec[1] > until]
        if later:
            self.held[stream.number] = later
        if not mine:
            return items
        threads = {t.tid: t for t in stream.threads.values()}
        per_thread: dict[ThreadInfo, list[tuple[Any, ...]]] = {}
        for rec in mine:
            tid = rec[6]
            thread = threads[tid] if tid in threads else self._other(tid, rec, stream)
            per_thread.setdefault(thread, []).append(rec)
        out: Batch = []
        done: set[ThreadInfo] = set()
        for thread, lost, records in items:
            if thread in done:
                out.append((thread, lost, []))      # (merged into its first item)
            elif thread in per_thread:
                theirs = [r for t, _, rs in items if t is thread and isinstance(rs, list)
                          for r in rs]
                out.append((thread, lost, sorted(theirs + per_thread.pop(thread), key=_ts)))
                done.add(thread)
            else:
                out.append((thread, lost, records))
        for thread, records in per_thread.items():
            out.append((thread, 0, records))
        return out

    def _other(self, tid: int, rec: tuple[Any, ...], stream: ProcessStream) -> ThreadInfo:
        thread = self.others.get(tid)
        if thread is None:
            comm = self.kernel.tasks.get(tid, ("<...>", 0))[0]
            thread = self.others[tid] = ThreadInfo(-tid, tid, comm, stream)
        return thread


def _ts(rec: tuple[Any, ...]) -> int:
    ts: int = rec[1]
    return ts


def traced_events(kernel: KernelStream, streams: dict[int, ProcessStream], until: int
                  ) -> list[tuple[tuple[Any, ...], ProcessStream]]:
    """The kernel's events up to ``until`` not handed out yet, of the
    traced processes' threads: ``(record + (tid,), its process)``, in time
    order.  A thread is a process's if its stream described it, or the
    kernel says it is in the process (its tgid), but for fentry's own
    (``AGENT_COMM``); events of any other task are dropped."""
    threads = {t.tid: s for s in streams.values() for t in s.threads.values()}
    pids = {s.pid: s for s in streams.values()}
    tasks = kernel.tasks

    def traced(tid: int) -> bool:
        comm, tgid = tasks.get(tid, ("", 0))
        if comm == AGENT_COMM:
            return False
        return tid in threads or tgid in pids

    out = []
    for rec in kernel.take(until):
        tid = task_of(rec, traced)
        if tid == 0:        # events lost: said in the first process's main thread
            tid = min(streams.values(), key=lambda s: s.number).pid if streams else None
        if tid is None:
            continue
        owner = threads[tid] if tid in threads else pids.get(tasks.get(tid, ("", 0))[1])
        if owner is not None:
            out.append((rec[:6] + (tid,), owner))
    return out
