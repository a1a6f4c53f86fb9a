"""lifetime: tables keyed by ``id(obj)`` that forget ``obj`` when it dies.

fentry keeps no code object (nor any other object it describes) alive: a
program that makes code as it runs (``exec`` in a loop) would grow without
bound.  So each table keyed by ``id(obj)`` drops its entry when ``obj`` dies,
before its address can name another object, which would otherwise find the
dead one's entry (a new function running the old one's handlers).

The drop is a weak reference's callback, and the callback is ``dict.pop``
itself, never a Python function.  An object dies wherever its last
reference goes: in any thread, inside fentry's hot path or under its lock,
and in the gc, which may run at the recursion limit, where a Python callback
cannot get a frame (CPython prints "Exception ignored ... RecursionError"
and the entry stays, stale).  C code needs no frame, takes no lock and
cannot fail there.
"""

from __future__ import annotations

import weakref
from functools import partial

TYPE_CHECKING = False       # (typing's, without importing typing at run time: raw.py's rule)
if TYPE_CHECKING:
    from typing import Any


def pop_at_death[R: weakref.ref](obj: object, table: Any, key: object,  # type: ignore[type-arg]
                                 ref_type: type[R] = weakref.ref) -> R:  # type: ignore[assignment]
    """A weak reference to ``obj`` (of ``ref_type``, a ``weakref.ref``
    subclass) whose callback pops ``key`` from ``table`` when ``obj`` dies:
    ``table.pop(key, ref)``, all in C (``table`` is a dict or the C hot
    path's CodeTable: their ``pop`` is C).  The entry is forgotten only while
    this reference lives: keep it as long as the entry (as its value, or
    beside it)."""
    return ref_type(obj, partial(table.pop, key))
