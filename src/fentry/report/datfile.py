"""``fentry.dat``: raw streams as ``fentry record`` keeps them.

As trace-cmd's ``trace.dat``, the file holds what the traced processes
shipped, as they shipped it (``tracers/stream.py``: records, and once each
what decodes them), so that ``fentry report`` can format it later::

    b"fentry.dat\\n"                    magic
    JSON line                          {"version", "created", "argv"}
    frames, to the end of the file:
        u32 stream, u32 length          little-endian
        length bytes                    whole messages of that stream

A stream is one traced process (one agent); frames of several streams
(``--follow``) interleave in the order they arrived.  Frames are written
whole, one ``write`` each, so a recording that was killed, or that filled
its disk, reads up to its last whole frame; ``DatReader.cut`` then says how
many bytes of a frame were missing.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

MAGIC = b"fentry.dat\n"
VERSION = 1
_FRAME = struct.Struct("<II")


class DatFormatError(Exception):
    """Not a fentry.dat file, or one of a version this fentry cannot read."""


class DatWriter:
    """Appends frames to a file, from any thread; a reader may follow it as
    it grows (``wait_for``)."""

    def __init__(self, f: BinaryIO, argv: list[str] | None = None) -> None:
        self.f = f
        self.lock = threading.Lock()
        self.grew = threading.Condition(self.lock)
        self.closed = False
        self.error: OSError | None = None      # the first failed write: nothing after it
        header = {"version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "argv": argv or []}
        self._write(MAGIC + json.dumps(header).encode() + b"\n")
        self.size = len(MAGIC) if self.error else self.f.tell()

    def _write(self, data: bytes) -> bool:
        if self.error is not None:
            return False
        try:
            self.f.write(data)
            self.f.flush()
            return True
        except OSError as e:
            self.error = e
            return False

    def frame(self, stream: int, payload: bytes) -> None:
        with self.lock:
            if self._write(_FRAME.pack(stream, len(payload)) + payload):
                self.size += _FRAME.size + len(payload)
                self.grew.notify_all()

    def close(self) -> None:
        """No more frames (a follower reads to the end, then stops)."""
        with self.lock:
            self.closed = True
            self.grew.notify_all()

    def wait_for(self, size: int, timeout: float | None = None) -> tuple[int, bool]:
        """Wait until the file is longer than ``size`` or closed: (its size, closed)."""
        with self.lock:
            self.grew.wait_for(lambda: self.size > size or self.closed, timeout)
            return self.size, self.closed


class DatReader:
    """The frames of a fentry.dat file, in order: ``(stream, payload)``.

    With ``follow`` (the DatWriter writing it), reading waits for frames
    still to come until the writer is closed."""

    def __init__(self, path: str, follow: DatWriter | None = None) -> None:
        self.f = open(path, "rb")
        self.follow = follow
        self.cut = 0            # bytes of a last, unfinished frame (a killed recording)
        magic = self.f.read(len(MAGIC))
        if magic != MAGIC:
            self.f.close()
            raise DatFormatError(f"{path} is not a fentry.dat file (fentry record writes them)")
        line = self.f.readline()
        try:
            self.header = json.loads(line)
        except ValueError:
            self.f.close()
            raise DatFormatError(f"{path}: its header is damaged") from None
        if self.header.get("version") != VERSION:
            self.f.close()
            raise DatFormatError(f"{path} is a fentry.dat of version {self.header.get('version')}; "
                                 f"this fentry reads version {VERSION}")

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """(stream, payload) of each whole frame, in order (waiting, when
        following, for the frames still to come)."""
        f = self.f
        if self.follow is None and not f.seekable():
            yield from self._piped_frames()
            return
        pos = f.tell()
        size = os.fstat(f.fileno()).st_size
        closed = self.follow is None
        while True:
            if size - pos < _FRAME.size or size - pos < _FRAME.size + _length(f, pos, size):
                if closed or self.follow is None:
                    self.cut = size - pos
                    return
                size, closed = self.follow.wait_for(size)
                continue
            f.seek(pos)
            stream, length = _FRAME.unpack(f.read(_FRAME.size))
            payload = f.read(length)
            pos += _FRAME.size + length
            yield stream, payload

    def _piped_frames(self) -> Iterator[tuple[int, bytes]]:
        """The frames of a pipe (``-i <(zcat t.dat.gz)``, a FIFO), read in turn."""
        f = self.f
        while True:
            head = f.read(_FRAME.size)
            if len(head) < _FRAME.size:
                self.cut = len(head)
                return
            stream, length = _FRAME.unpack(head)
            payload = f.read(length)
            if len(payload) < length:
                self.cut = len(head) + len(payload)
                return
            yield stream, payload

    def close(self) -> None:
        self.f.close()


def _length(f: BinaryIO, pos: int, size: int) -> int:
    """The length of the frame at ``pos`` (0 if its head is not all there)."""
    if size - pos < _FRAME.size:
        return 0
    f.seek(pos)
    return int(_FRAME.unpack(f.read(_FRAME.size))[1])
