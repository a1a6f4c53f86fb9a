"""The text report: the kernel's trace text, made from raw streams, exactly
as the tracers' readers make it in the traced process (``tracers/text.py``)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, BinaryIO

from ..raw import ENTER_KINDS
from ..tracers.text import PENDING_HOLD_NS, FunctionReader, GraphReader, first_name, last_name, lost_line
from .decode import FileSink, ProcessStream, ThreadInfo

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..raw import Record
    from .decode import Batch

# Records of one thread formatted at a time.  A function_graph line is two
# spaces a level wide: 10,000 levels deep, a drain's lines would take
# hundreds of MB at once.  (A batch is cut at one timestamp for all threads,
# so the lines come out in the order they would all at once.)
SLICE_RECORDS = 1024


def _stamp(rec: Record) -> int:
    ts: int = rec[1]
    return ts



def make_reader(stream: ProcessStream) -> FunctionReader | GraphReader:
    """The reader of a stream's tracer, options and clock, as it is now."""
    if stream.tracer == "function_graph":
        return GraphReader(stream.options, hold_ns=PENDING_HOLD_NS)
    return FunctionReader(stream.options, stream.clock)


class TextReport(FileSink):
    """Writes each stream's text to ``out`` (a binary file), drain by drain.

    ``error`` is the first failed write (the text stops there; the streams
    are still read to their end).  ``faults`` counts values that could not
    be printed."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(out)
        self.readers: dict[int, FunctionReader | GraphReader] = {}

    def _write(self, parts: list[str]) -> None:
        if parts:
            self.write("".join(parts).encode("utf-8", "backslashreplace"))

    def start(self, stream: ProcessStream) -> None:
        reader = self.readers[stream.number] = make_reader(stream)
        if stream.hello.get("header"):
            self._write([f"# tracer: {stream.tracer}\n#\n", reader.header()])

    def tracer(self, stream: ProcessStream) -> None:
        self._write(self._flush(stream))
        self.readers[stream.number] = make_reader(stream)

    def batch(self, stream: ProcessStream, items: Batch) -> None:
        reader = self.readers.get(stream.number)
        if reader is None:          # no HELLO: a stream read from its middle
            reader = self.readers[stream.number] = make_reader(stream)
        parts = [lost_line(thread, lost) for thread, lost, _ in items if lost]
        for thread, lost, _ in items:
            if lost:
                reader.lost(thread)
        per_thread: dict[ThreadInfo, list[Record]] = {}
        for thread, _, records in items:
            if records and isinstance(records, list):     # (this sink takes lists)
                per_thread.setdefault(thread, []).extend(records)
        threads = list(per_thread.items())
        if all(len(records) <= SLICE_RECORDS for _, records in threads):
            parts.extend(reader.lines(threads))
            self._write(parts)
            return
        self._write(parts)
        # A renamed thread's pieces: each starts with the name the last one ended with.
        names = {thread: first_name(thread, records) for thread, records in threads
                 if thread.renamed}
        try:
            for piece in _slices(threads):
                if self.error is not None:
                    return
                for thread, records in piece:
                    if thread in names:
                        thread.read_name = names[thread]
                        names[thread] = last_name(names[thread], records)
                self._write(reader.lines(piece))
        finally:
            for thread in names:
                thread.read_name = thread.name

    def end(self, stream: ProcessStream) -> None:
        self._write(self._flush(stream))

    def _flush(self, stream: ProcessStream) -> list[str]:
        reader = self.readers.pop(stream.number, None)
        return reader.flush() if reader is not None else []

    def finish(self, streams: dict[int, ProcessStream]) -> None:
        """The recording is over: what streams that were cut still hold."""
        for stream in streams.values():
            if stream.ended is None:
                self._write(self._flush(stream))
        self.flush_out()

    @staticmethod
    def faults(streams: dict[int, ProcessStream]) -> int:
        return sum(getattr(ref, "faults", 0) for s in streams.values() for ref in s.refs.values()
                   if not isinstance(ref, str))


def _slices(threads: list[tuple[ThreadInfo, list[Record]]]
            ) -> Iterator[list[tuple[ThreadInfo, list[Record]]]]:
    """``threads``' records in pieces of about SLICE_RECORDS a thread, each
    cut at one timestamp.  A thread cut right after an entry keeps the record
    after it (a leaf's exit), so that a leaf is told from a call with the
    same lines.  Every thread is in every piece (if only with no records),
    so a pending entry waits for its next record."""
    starts = [0] * len(threads)
    while True:
        ahead = [records[start + SLICE_RECORDS][1] for (_, records), start in zip(threads, starts)
                 if len(records) - start > SLICE_RECORDS]
        if not ahead:
            yield [(tb, records[start:]) for (tb, records), start in zip(threads, starts)]
            return
        cut = min(ahead)
        ends = [bisect_left(records, cut, start, len(records), key=_stamp)
                for (_, records), start in zip(threads, starts)]
        if ends == starts:      # as many records as that at one timestamp
            ends = [bisect_right(records, cut, start, len(records), key=_stamp)
                    for (_, records), start in zip(threads, starts)]
        piece = []
        for k, (tb, records) in enumerate(threads):
            # (With timestamps in order, the cut never takes more than this;
            # where a clock stepped back, it still bounds the piece.)
            end = min(ends[k], starts[k] + SLICE_RECORDS)
            if starts[k] < end < len(records) and records[end - 1][2] in ENTER_KINDS:
                end += 1
            piece.append((tb, records[starts[k]:end]))
            starts[k] = end
        yield piece
