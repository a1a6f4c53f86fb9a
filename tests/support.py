"""Shared by the in-process tests: a clean fentry before and after each test."""

from __future__ import annotations

import sys

import fentry
from fentry import ftrace


def fentry_tools() -> list[int]:
    return [i for i in range(6) if sys.monitoring.get_tool(i) == "fentry"]


def reset() -> None:
    reset_tracefs()
    for ops in list(ftrace._core.ops):
        fentry.unregister_ftrace_function(ops)


def reset_tracefs() -> None:
    """Every tracefs file back to its default."""
    fentry.tracefs().reset()
