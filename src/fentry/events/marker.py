"""trace_marker: text written into the trace, by the program or from outside.

The kernel's ``trace_marker`` file (trace.c, ``tracing_mark_write``) writes
each write as one ``ftrace:print`` event of the writer's task, printed as
``tracing_mark_write: TEXT``; a function_graph trace shows it as a comment,
``/* tracing_mark_write: TEXT */``, where it happened.  Here the writer is
either the ``trace_marker`` file (``fentry -p PID write trace_marker TEXT``:
the event is the agent thread's) or the program itself, through
``fentry.trace_marker(TEXT)``: the event is the calling thread's, and its
site is the call.

A marker is one record of the ``MARKER`` event in the thread's ring buffer,
its one value the text, cut to ``MAX_STRING`` (4096) bytes of UTF-8, as
the kernel cuts a write to ``TRACE_MARKER_MAX_SIZE``.
"""

from __future__ import annotations

import sys
from typing import Any

from .fetch import MAX_STRING, safe_repr

# What the kernel's print event prints before the text (its ip: the symbol
# of tracing_mark_write).
MARKER_NAME = "tracing_mark_write"


class Marker:
    """The marker event: what a record's event id names (one for all)."""
    __slots__ = ()
    name = MARKER_NAME
    faults = 0      # (a text is always printable)

    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        """``tracing_mark_write: TEXT``, as the kernel prints the print event."""
        return f"{MARKER_NAME}: {values[0] if values else ''}"

    @staticmethod
    def raw_description() -> list[str]:
        """The raw stream's description of it (``tracers/stream.describe``)."""
        return ["marker"]

    def __repr__(self) -> str:
        return "<trace_marker>"


MARKER = Marker()

# trace_marker_raw (trace.c, ``tracing_mark_raw_write``): a write is an int
# id (native order) and data, 4 bytes at least and, as this machine's 6.18
# kernel takes, 4064 at most; the data is kept padded with zeros to whole
# words, as the kernel's entry is, and printed as trace_raw_data prints it.
RAW_MARKER_MIN, RAW_MARKER_MAX = 4, 4064


class RawMarker:
    """The raw marker event (the kernel's ``raw_data`` entry): its values
    are the id and the data's bytes, as the hex text they print as."""
    __slots__ = ()
    name = "raw_data"
    faults = 0

    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        """``# ID buf: XX XX ...``, as the kernel's ``trace_raw_data``."""
        return f"# {values[0]} buf:{values[1]}"

    @staticmethod
    def raw_description() -> list[str]:
        """The raw stream's description of it (``tracers/stream.describe``)."""
        return ["raw_marker"]

    def __repr__(self) -> str:
        return "<trace_marker_raw>"


RAW_MARKER = RawMarker()


def raw_marker_values(data: bytes) -> tuple[str, str] | None:
    """What a raw marker holds, ``(id, buf)`` as printed (``%x``, `` %02x``
    a byte); None if ``data`` is no raw marker (too short, too long)."""
    if not RAW_MARKER_MIN <= len(data) <= RAW_MARKER_MAX:
        return None
    ident = int.from_bytes(data[:4], sys.byteorder, signed=True) & 0xFFFFFFFF
    buf = data[4:] + bytes(-(len(data) - 4) % 4)
    return f"{ident:x}", "".join(f" {b:02x}" for b in buf)


def marker_text(text: object) -> str:
    """What a marker holds: TEXT less one trailing newline (the kernel's
    line ends with exactly one).  Never runs the program's code: a ``str``
    subclass is taken as its characters, ``bytes`` decoded, anything else
    its safe representation."""
    if type(text) is not str:
        if isinstance(text, str):
            text = str.__str__(text)
        elif isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "backslashreplace")
        else:
            text = safe_repr(text)
    text = text[:-1] if text.endswith("\n") else text
    if len(text) > MAX_STRING // 4:     # (cut as the raw stream cuts it: bytes of UTF-8)
        text = text.encode("utf-8", "surrogatepass")[:MAX_STRING].decode("utf-8", "ignore")
    return text
