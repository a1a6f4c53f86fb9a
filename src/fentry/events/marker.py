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
