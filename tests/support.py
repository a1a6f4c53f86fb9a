"""Shared by the in-process tests: a clean fentry before and after each test."""

from __future__ import annotations

import sys

import fentry
from fentry import ftrace
from fentry.tracers.ring_buffer import DEFAULT_SIZE_KB
from fentry.tracers.trace import OPTIONS


def fentry_tools() -> list[int]:
    return [i for i in range(6) if sys.monitoring.get_tool(i) == "fentry"]


def reset() -> None:
    reset_tracefs()
    for ops in list(ftrace._core.ops):
        fentry.unregister_ftrace_function(ops)


def reset_tracefs() -> None:
    """Every tracefs file back to its default."""
    fs = fentry.tracefs()
    fs.write("events/enable", "0")
    fs.write("kprobe_events", "")
    fs.write("error_log", "")
    fs.write("current_tracer", "nop")
    fs.write("tracing_on", "1")
    fs.write("set_ftrace_filter", "")
    fs.write("set_ftrace_notrace", "")
    fs.write("buffer_size_kb", str(DEFAULT_SIZE_KB))
    fs.write("trace_options", " ".join(k if v else "no" + k for k, v in OPTIONS.items()))
    fs.write("trace", "")
