"""``fentry report --format speedscope``: speedscope's file format.

One evented profile per thread (``"type": "evented"``, nanoseconds), named
as the text trace names the thread (``MainThread-1234``; with several
processes, the process first), and one shared table of frames (a
function's qualified name, file and first line).  A function_graph call
opens its frame (``O``) when it begins and closes it (``C``) when it ends
(a generator or coroutine: from each resume to its yield); calls still open
when the trace ends close at the thread's last timestamp.  The function
tracer records no durations: each call is a frame opened and closed at the
same instant, so speedscope counts it but gives it no width.  Probe events
have no place in the format and are left out; a thread that lost records
says how many in its profile's name.

The file is ``speedscope``'s ``file-format-schema.json``.  Each thread's
events are kept in a temporary file, in pieces as they come, until the
recording is read: then the profiles are written one after the other.
"""

from __future__ import annotations

import json
import tempfile
from typing import IO, Any, BinaryIO

from .calls import BEGIN, CALL, END, EVENT, CallSink, Op, ThreadCalls, process_name
from .decode import ProcessStream

SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class _Frames(dict[Any, int]):
    """code -> its index in the shared frames (made when first asked for)."""

    def __init__(self) -> None:
        super().__init__()
        self.index: dict[tuple[str, str, int], int] = {}
        self.frames: list[str] = []

    def __missing__(self, code: Any) -> int:
        key = (code.co_qualname, code.co_filename, code.co_firstlineno)
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.frames)
            frame = {"name": code.co_qualname}
            if code.co_filename:
                frame["file"] = code.co_filename
            if code.co_firstlineno:
                frame["line"] = code.co_firstlineno
            self.frames.append(_dumps(frame))
        self[code] = i
        return i


class SpeedscopeReport(CallSink):
    """Writes a speedscope file to ``out`` (binary) when the recording is read."""

    def __init__(self, out: BinaryIO, name: str = "fentry") -> None:
        super().__init__(out)
        self.name = name
        self.frames = _Frames()
        self.spool = tempfile.TemporaryFile()
        self.spooled = 0
        self.streams: dict[int, str] = {}
        self.events_left_out = 0

    def process(self, stream: ProcessStream) -> None:
        self.streams[stream.number] = f"{process_name(stream)} [{stream.pid}]"

    def new_thread(self, st: ThreadCalls) -> None:
        st.data = []        # (offset, length) of its pieces in the spool

    def thread_ops(self, st: ThreadCalls, ops: list[Op]) -> None:
        frames = self.frames
        parts: list[str] = []
        app = parts.append
        for op in ops:
            kind = op[0]
            if kind == BEGIN:
                app(f'{{"type":"O","frame":{frames[op[2]]},"at":{op[1]}}}')
            elif kind == END:
                app(f'{{"type":"C","frame":{frames[op[2]]},"at":{op[1]}}}')
            elif kind == CALL:
                f = frames[op[2]]
                app(f'{{"type":"O","frame":{f},"at":{op[1]}}},{{"type":"C","frame":{f},"at":{op[1]}}}')
            elif kind == EVENT:
                self.events_left_out += 1
        if not parts:
            return
        data = ("," if st.data else "").encode() + ",".join(parts).encode()
        try:
            self.spool.write(data)
        except OSError as e:
            self.error = self.error or e
            return
        st.data.append((self.spooled, len(data)))
        self.spooled += len(data)

    def _profile_name(self, st: ThreadCalls) -> str:
        t = st.thread
        name = f"{t.name}-{t.tid or t.key}"
        if len(self.streams) > 1:
            name = f"{self.streams.get(st.stream.number, st.stream.pid)} {name}"
        if st.lost_total:
            name += f" ({st.lost_total} events lost)"
        return name

    def close(self) -> None:
        if self.events_left_out:
            self.notes.append(f"{self.events_left_out} probe events left out: speedscope's "
                              "format has no place for them (perfetto and chrome have)")
        threads = sorted((st for st in self.threads.values() if st.first is not None),
                         key=lambda st: (st.stream.number, st.first))
        self.write(('{"$schema":%s,"exporter":"fentry","name":%s,"activeProfileIndex":0,'
                    '"profiles":[' % (_dumps(SCHEMA), _dumps(self.name))).encode())
        spool = self.spool
        for i, st in enumerate(threads):
            self.write(('%s{"type":"evented","name":%s,"unit":"nanoseconds","startValue":%d,'
                        '"endValue":%d,"events":[' % ("," if i else "", _dumps(self._profile_name(st)),
                                                      st.first or 0, st.last or 0)).encode())
            for offset, length in st.data:
                spool.seek(offset)
                self._copy(spool, length)
            self.write(b"]}")
        self.write(b'],"shared":{"frames":[')
        self.write(",".join(self.frames.frames).encode())
        self.write(b"]}}\n")
        spool.close()
        self.flush_out()

    def _copy(self, src: IO[bytes], length: int) -> None:
        while length > 0 and self.error is None:
            data = src.read(min(length, 1 << 20))
            if not data:
                break
            self.write(data)
            length -= len(data)

