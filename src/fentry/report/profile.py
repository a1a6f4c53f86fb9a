"""``fentry run --profile``'s and ``--stack``'s reports: a process's
function profile (its PROFILE message), every thread's together, in
trace_stat's layout; its deepest stack (its STACK message), in
stack_trace's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..tracers.profile import Numbers, stat_text
from ..tracers.stack import stack_text
from .calls import process_name

if TYPE_CHECKING:
    from .decode import ProcessStream


def profile_text(stream: ProcessStream) -> str:
    """The profile's text: a title line, then trace_stat/function<N>'s columns."""
    profile = stream.profile or {}
    merged: dict[str, Numbers] = {}
    threads = profile.get("threads", [])
    for thread in threads:
        for name, *numbers in thread["functions"]:
            have = merged.setdefault(name, [0] * len(numbers))
            for i, x in enumerate(numbers):
                have[i] += x
    graph_time = profile.get("graph_time", True)
    what = "time with the calls made (graph-time)" if graph_time else "self time (nograph-time)"
    who = "1 thread" if len(threads) == 1 else f"{len(threads)} threads together"
    title = f"# function profile of {process_name(stream)} (pid {stream.pid}), {who}; Time: {what}\n"
    return title + stat_text(merged.items(), graph_time)


def stack_report(stream: ProcessStream) -> str:
    """The deepest stack's text: a title line, then stack_trace's table."""
    stack = stream.stack or {}
    title = f"# stack trace of {process_name(stream)} (pid {stream.pid}): the deepest Python stack\n"
    return title + stack_text(stack.get("thread", ""), stack.get("locations", []),
                              stack.get("enabled", False), stack.get("max", 0))
