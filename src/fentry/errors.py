"""errors: one table of messages, one way to raise a positioned error.

As the kernel's ``trace_probe.h`` ERRORS table: every message lives here
once, and a parser raises ``TraceError(CODE, command, pos)``; the caret line
comes for free from the position.
"""

from __future__ import annotations

import time

ERRORS: dict[str, str] = {
    # set_ftrace_filter / set_ftrace_notrace
    "BAD_FILTER_CMD": "Unknown filter command (expected GLOB:mod:MODGLOB)",
    "BAD_GLOB": "Invalid glob pattern",
    "EMPTY_GLOB": "Empty glob pattern",
    # tracefs files
    "NO_SUCH_FILE": "No such file",
    "NOT_WRITABLE": "File is not writable",
    "NOT_READABLE": "File is not readable",
    "BAD_TRACER": "No such tracer",
    "BAD_NUMBER": "Invalid number",
    "BAD_BOOL": "Value must be 0 or 1",
    "BAD_OPTION": "Unknown trace option",
    "BAD_SIZE": "Buffer size must be a positive number of KB",
    # -- kprobe_events: the kernel's trace_probe.h ERRORS, then fentry's own
    # -- (end of kprobe_events)
    # -- event filters: the kernel's trace_events_filter.c messages
    # -- (end of event filters)
}


class TraceError(ValueError):
    """A rejected command: what was wrong, and where in the command."""

    def __init__(self, code: str, command: str = "", pos: int = 0,
                 subsystem: str = "ftrace", detail: str = "") -> None:
        self.code = code
        self.message = ERRORS[code] + (f": {detail}" if detail else "")
        self.command = command
        self.pos = max(0, min(pos, len(command)))
        self.subsystem = subsystem
        self.timestamp = time.monotonic()
        super().__init__(self.render())

    def caret(self) -> str:
        return " " * self.pos + "^"

    def render(self) -> str:
        """The error_log entry, as the kernel writes it."""
        lines = [f"[{self.timestamp:12.6f}] {self.subsystem}: error: {self.message}"]
        if self.command:
            lines.append(f"  Command: {self.command}")
            lines.append("           " + self.caret())
        return "\n".join(lines)
