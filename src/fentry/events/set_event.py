"""``set_event`` and ``available_events``, as the kernel's (trace_events.c:
``ftrace_event_write``, ``ftrace_set_clr_event``, ``t_show``).

A write is words separated by blanks, each ``[!]GRP:EVENT``: ``GRP`` or
``EVENT`` may be ``*`` or empty (any), and a word without ``:`` names a
group or an event (``sched``, ``sched_switch``).  ``!`` disables.  A plain
write (``>``) first disables every event of the instance, as the kernel's
open with O_TRUNC does; so an empty one disables all.  A word that selects
no event is the kernel's bare ``-EINVAL`` (no ``error_log`` entry, as the
kernel writes none), caret under the word.  Where the kernel applies the
words before a bad one, fentry applies none (nothing half-applied).

Reading it lists the enabled events, ``GRP:EVENT`` a line, in id order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol

from ..errors import TraceError


class Event(Protocol):
    """What set_event needs of an event (a probe event, a tracepoint)."""
    @property
    def group(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def id(self) -> int: ...


def _selects(word: str, event: Event) -> bool:
    """The kernel's __ftrace_set_clr_event match of one word."""
    match, colon, rest = word.partition(":")
    if not colon:           # a group's or an event's name
        return match in (event.group, event.name)
    sub, event_name = match, rest
    return (sub in ("", "*") or sub == event.group) and \
        (event_name in ("", "*") or event_name == event.name)


def parse_set_event(text: str, events: Sequence[Event]) -> list[tuple[bool, list[Event]]]:
    """Each word's ``(enable, events it selects)``; TraceError (EINVAL, caret
    under the word) for a word that selects none."""
    out = []
    for m in re.finditer(r"\S+", text):
        word = m[0]
        on = not word.startswith("!")
        body = word if on else word[1:]
        selected = [e for e in events if _selects(body, e)] if body else []
        if not selected:
            raise TraceError("SET_EVENT_NO_MATCH", text.rstrip("\n"), m.start())
        out.append((on, selected))
    return out


def set_event_text(events: Sequence[Event], enabled: Callable[[Event], bool]) -> str:
    """Reading ``set_event``: the enabled events, in id order."""
    return "".join(f"{e.group}:{e.name}\n" for e in sorted(events, key=lambda e: e.id)
                   if enabled(e))


def available_events_text(events: Sequence[Event]) -> str:
    """``available_events``: every event, ``GRP:EVENT`` a line, in id order."""
    return "".join(f"{e.group}:{e.name}\n" for e in sorted(events, key=lambda e: e.id))
