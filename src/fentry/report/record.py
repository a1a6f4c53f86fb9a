"""Receiving raw streams: ``fentry record``, and the recording that ``fentry
run``, ``attach`` and ``pipe`` read as it is written.

Each stream (a traced process's pipe or socket) is read by a thread of its
own, as fast as it comes, into a ``DatWriter``: whole messages, one frame
each time.  So the traced process never waits on how fast its trace is
formatted; a reader that formats (``Live``) follows the file on its own
thread, and the backlog waits on disk, not in memory.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import BinaryIO

from .datfile import DatReader, DatWriter
from .decode import Streams
from .text import TextReport

_LEN = struct.Struct("<I")
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
RECEIVER_SWITCH_INTERVAL = 0.0005    # seconds


def whole_messages(buf: bytearray) -> int:
    """How many bytes at the start of ``buf`` are whole messages."""
    pos, end = 0, len(buf)
    while end - pos >= 4:
        length = _LEN.unpack_from(buf, pos)[0]
        if end - pos - 4 < length:
            break
        pos += 4 + length
    return pos


def widen_pipe(fd: int) -> None:
    """A larger pipe: the agent's writes wait less on our reads."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


class Recorder:
    """Copies streams into ``writer``, each from a thread of its own."""

    def __init__(self, writer: DatWriter) -> None:
        self.writer = writer
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.active = 0
        self.streams = 0

    def start(self, fd: int, on_end: Callable[[], None] | None = None) -> None:
        """Copy ``fd`` to its end (then close it and call ``on_end``)."""
        with self.lock:         # counted at once: wait_idle must see it
            self.active += 1
            self.streams += 1
            number = self.streams
        threading.Thread(target=self._copy, args=(number, fd, on_end), daemon=True).start()

    def _copy(self, number: int, fd: int, on_end: Callable[[], None] | None) -> None:
        buf = bytearray()
        try:
            while True:
                data = os.read(fd, 1 << 20)
                if not data:
                    break
                buf += data
                cut = whole_messages(buf)
                if cut:
                    self.writer.frame(number, bytes(buf[:cut]))
                    del buf[:cut]
        except OSError:
            pass
        finally:
            # A message cut short (the process was killed mid-write) is dropped:
            # its stream has no END, and the report says it was cut.
            os.close(fd)
            if on_end is not None:
                on_end()
            with self.lock:
                self.active -= 1
                self.idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every stream has ended (True), or ``timeout`` passes."""
        with self.lock:
            return self.idle.wait_for(lambda: self.active == 0, timeout)


class Recording:
    """``fentry record``: the streams into a fentry.dat file, as they come."""

    def __init__(self, path: str, argv: list[str]) -> None:
        sys.setswitchinterval(RECEIVER_SWITCH_INTERVAL)     # see Live
        self.path = path
        self.f = open(path, "wb")
        self.writer = DatWriter(self.f, argv)
        self.recorder = Recorder(self.writer)

    def finish(self, timeout: float | None = None) -> None:
        self.writer.close()
        try:
            self.f.close()
        except OSError as e:
            self.writer.error = self.writer.error or e

    @property
    def error(self) -> OSError | None:
        return self.writer.error


class Live:
    """A recording into a spool file that is formatted as text while it is
    written: what ``fentry run``, ``attach`` and ``pipe`` print."""

    def __init__(self, out: BinaryIO, argv: list[str], close_out: bool = False) -> None:
        self.close_out = close_out      # out is ours to close at the end
        # The receiving threads must get the GIL soon after they ask for it,
        # however busy formatting keeps it: a traced program's writers wait
        # when its reader falls behind.  (This is the fentry process's own.)
        sys.setswitchinterval(RECEIVER_SWITCH_INTERVAL)
        fd, path = tempfile.mkstemp(prefix="fentry-", suffix=".dat")
        self.writer = DatWriter(os.fdopen(fd, "wb"), argv)
        self.reader = DatReader(path, follow=self.writer)
        os.unlink(path)         # open twice, named nowhere: nothing to clean up
        self.recorder = Recorder(self.writer)
        self.report = TextReport(out)
        self.streams = Streams(self.report)
        self.thread = threading.Thread(target=self._format, daemon=True)
        self.thread.start()

    def _format(self) -> None:
        for number, payload in self.reader.frames():
            if self.report.error is not None:
                return          # the text cannot be written: formatting it is waste
            self.streams.frame(number, payload)
        self.streams.finish()

    def finish(self, timeout: float | None = None) -> None:
        """No more streams: format what is left, and stop."""
        self.writer.close()
        self.thread.join(timeout)
        self.reader.close()
        try:
            self.writer.f.close()
        except OSError:
            pass

    @property
    def error(self) -> OSError | None:
        return self.report.error or self.writer.error
