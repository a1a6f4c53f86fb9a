"""The text report: the kernel's trace text, made from raw streams, exactly
as the tracers' readers make it in the traced process (``tracers/text.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from ..tracers.text import FunctionReader, GraphReader, lost_line
from .decode import FileSink, ProcessStream, ThreadInfo

if TYPE_CHECKING:
    from ..raw import Record
    from .decode import Batch


def make_reader(tracer: str, options: dict[str, bool]) -> FunctionReader | GraphReader:
    return (GraphReader if tracer == "function_graph" else FunctionReader)(options)


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
        reader = self.readers[stream.number] = make_reader(stream.tracer, stream.options)
        if stream.hello.get("header"):
            self._write([f"# tracer: {stream.tracer}\n#\n", reader.header()])

    def tracer(self, stream: ProcessStream) -> None:
        self._write(self._flush(stream))
        self.readers[stream.number] = make_reader(stream.tracer, stream.options)

    def batch(self, stream: ProcessStream, items: Batch) -> None:
        reader = self.readers.get(stream.number)
        if reader is None:          # no HELLO: a stream read from its middle
            reader = self.readers[stream.number] = make_reader(stream.tracer, stream.options)
        parts = [lost_line(thread, lost) for thread, lost, _ in items if lost]
        per_thread: dict[ThreadInfo, list[Record]] = {}
        for thread, _, records in items:
            if records and isinstance(records, list):     # (this sink takes lists)
                per_thread.setdefault(thread, []).extend(records)
        parts.extend(reader.lines(list(per_thread.items())))
        self._write(parts)

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
