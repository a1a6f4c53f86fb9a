"""Stack records: the kernel's ``kernel_stack`` event, for Python frames.

The kernel records a stack as one ``ftrace:kernel_stack`` event (trace.c,
``__ftrace_trace_stack``) and prints it as ``<stack trace>`` followed by one
`` => func`` line per frame, innermost first (trace_output.c,
``trace_stack_print``).  Here a stack is one record of the ``STACK`` event:
its site the traced frame, its values ``(code, line, code, line, ...)`` from
the innermost frame out, at most ``MAX_STACK_ENTRIES`` frames (the kernel's
``FTRACE_KSTACK_ENTRIES``).  As an event's record it goes through the raw
stream with the codes as ids, as any probe event's does.

Written by the ``stacktrace`` option (after each probe event), the
``func_stack_trace`` option (after each function tracer entry) and the
``FUNC:stacktrace`` command of set_ftrace_filter; all slow paths, in Python.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

from ..symbols import FENTRY_DIR

# The kernel's FTRACE_KSTACK_ENTRIES (4K / FTRACE_KSTACK_NESTING).
MAX_STACK_ENTRIES = 1024
STACK_NAME = "kernel_stack"


class Stack:
    """The stack event: what a stack record's event id names (one for all)."""
    __slots__ = ()
    name = STACK_NAME
    faults = 0

    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        """``<stack trace>`` and `` => FUNC (FILE:LINE)`` per frame, as trace_stack_print."""
        lines = ["<stack trace>"]
        for i in range(0, len(values) - 1, 2):
            code, line = values[i], values[i + 1]
            filename = getattr(code, "co_filename", "?")
            lines.append(f" => {getattr(code, 'co_qualname', '?')} "
                         f"({filename.rsplit('/', 1)[-1]}:{line})")
        return "\n".join(lines)

    @staticmethod
    def raw_description() -> list[str]:
        """The raw stream's description of it (``tracers/stream.describe``)."""
        return ["stack"]

    def __repr__(self) -> str:
        return "<kernel_stack>"


STACK = Stack()


def stack_values(frame: FrameType | None) -> tuple[object, ...]:
    """``(code, line, ...)`` of ``frame`` and its callers, innermost first,
    fentry's own frames left out (its agent's and runner's), at most
    ``MAX_STACK_ENTRIES`` of them."""
    values: list[object] = []
    room = 2 * MAX_STACK_ENTRIES
    while frame is not None and len(values) < room:
        code = frame.f_code
        if not code.co_filename.startswith(FENTRY_DIR):
            values += (code, frame.f_lineno)
        frame = frame.f_back
    return tuple(values)


def record_stack(tb: Any, frame: FrameType) -> None:
    """One stack record of ``frame`` into ring ``tb`` (a ThreadBuffer)."""
    tb.record((STACK, (frame.f_code, 0), stack_values(frame)))
