"""events.tracing_map: the table a hist trigger aggregates into, as the
kernel's ``kernel/trace/tracing_map.c``.

A map holds at most ``1 << map_bits`` entries, each a key (a tuple) and
its sums (a list of numbers, the hitcount first).  Every event either
updates an entry (``hits``) or, when the key is new and the map is full,
is dropped (``drops``): ``hits + drops`` is every event the map was given,
as the kernel's ``__tracing_map_insert`` counts them.

Updates come from the traced threads, each under the map's lock: a
``+=`` on a shared list is not atomic across threads, and counts must be
exact.  The lock is held for a dict lookup and a few additions.
"""

from __future__ import annotations

import _thread
import weakref
from collections.abc import Callable, Sequence

__all__ = ["TracingMap", "BITS_DEFAULT", "BITS_MIN", "BITS_MAX", "after_fork_in_child"]

# The kernel's TRACING_MAP_BITS_{DEFAULT,MIN,MAX}.
BITS_DEFAULT = 11
BITS_MIN = 7
BITS_MAX = 17


class TracingMap:
    """Keys to sums, bounded; ``insert`` adds one event's values."""

    def __init__(self, map_bits: int, n_vals: int) -> None:
        self.map_bits = map_bits
        self.max_elts = 1 << map_bits
        self.n_vals = n_vals
        self.entries: dict[tuple[object, ...], list[int]] = {}
        self.private: dict[tuple[object, ...], object] = {}      # per entry, set when it is made (its comm)
        self.vars: dict[tuple[object, ...], dict[str, object]] = {}  # per entry, its hist variables set
        self.hits = 0
        self.drops = 0
        self.lock = _thread.allocate_lock()
        _maps.add(self)

    def insert(self, key: tuple[object, ...], vals: Sequence[int],
               on_new: Callable[[], object] | None = None) -> bool:
        """Add ``vals`` to ``key``'s sums (a new entry if there is room);
        ``on_new``: what to keep with a new entry (the kernel's elt_init).
        False: dropped, the map is full."""
        with self.lock:
            sums = self.entries.get(key)
            if sums is None:
                key = _bounded(key)
                sums = self.entries.get(key)
            if sums is None:
                if len(self.entries) >= self.max_elts:
                    self.drops += 1
                    return False
                sums = self.entries[key] = [0] * self.n_vals
                if on_new is not None:
                    self.private[key] = on_new()
            self.hits += 1
            for i, v in enumerate(vals):
                sums[i] += v
            return True

    def clear(self) -> None:
        """Every entry and count gone (``:clear``)."""
        with self.lock:
            self.entries.clear()
            self.private.clear()
            self.vars.clear()
            self.hits = self.drops = 0

    def read(self) -> tuple[list[tuple[tuple[object, ...], list[int]]], int, int]:
        """A copy of the entries, hits and drops, consistent with each other."""
        with self.lock:
            return ([(k, list(v)) for k, v in self.entries.items()], self.hits, self.drops)


# The longest string key, as the kernel's (MAX_FILTER_STR_VAL, with its NUL).
MAX_STR_KEY = 255


def _bounded(key: tuple[object, ...]) -> tuple[object, ...]:
    """``key`` with its strings cut to ``MAX_STR_KEY``, as the kernel copies
    a string key into its fixed-size slot: keys alike in that much are one
    entry, and the map keeps no program's string whole (a 10 MB argument).
    (Only a key not found as it is comes here.)"""
    if not any(type(k) in (str, bytes) and len(k) > MAX_STR_KEY for k in key):     # type: ignore[arg-type]
        return key
    return tuple(k[:MAX_STR_KEY] if type(k) in (str, bytes) else k for k in key)   # type: ignore[index]


# Every map there is, for after_fork_in_child.
_maps: weakref.WeakSet[TracingMap] = weakref.WeakSet()


def after_fork_in_child() -> None:
    """In a forked child: every map's counts are the parent's (its events,
    counted there), so each starts empty; and its lock may have been held
    by a thread of the parent, which is not here to release it."""
    for m in list(_maps):
        m.lock = _thread.allocate_lock()
        m.entries.clear()
        m.private.clear()
        m.hits = m.drops = 0
