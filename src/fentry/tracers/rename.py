"""Thread renames: the kernel's ``task:task_rename``, for threading's names.

A thread's name is not in its records (the task column is made when the
trace is read), so a thread renamed while traced would show its new name on
lines written before.  As the kernel records ``task_rename`` where ``comm``
changes, fentry catches the rename where it happens, ``threading.Thread.name``'s
setter (``setName`` sets it too), and writes one ``TASK_RENAME`` record,
``(tid, oldcomm, newcomm)``, into the renamed thread's ring in every
instance that has one.  The readers take a thread's name from it: records
before it have its old name, records after it its new one.  With a raw
reader the ring is flushed at once, so the record is in the page queue
before the new name can be read (``RawStream.drain`` reads names, then
takes pages).

The setter is wrapped only while fentry has ring buffers (``watch``, when a
ring buffer makes its first thread's ring, or once the program has imported
threading: fentry never imports it, ``pythreads``) and put back on detach
(``unwatch``): the property behaves as threading's own, which it calls.
Renames are rare: the hot path does not change.
"""

from __future__ import annotations

import _thread
import weakref

from .. import pythreads
from ..hotpath import quiet_thread

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from typing import Any

    from .ring_buffer import RingBuffer

RENAME_NAME = "task_rename"


class TaskRename:
    """The rename event: what a rename record's event id names (one for all)."""
    __slots__ = ()
    name = RENAME_NAME
    faults = 0

    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        """The kernel's ``task_rename`` print fmt."""
        tid, old, new = values
        return f"{RENAME_NAME}: pid={tid} oldcomm={old} newcomm={new} oom_score_adj=0"

    @staticmethod
    def raw_description() -> list[str]:
        """The raw stream's description of it (``tracers/stream.describe``)."""
        return ["rename"]

    def __repr__(self) -> str:
        return "<task_rename>"


TASK_RENAME = TaskRename()

# The ring buffers whose threads' renames are recorded (weakly: plain
# references, no WeakSet, whose Python code a thread's first event would
# run), and threading's property while it is wrapped, and its class.
_buffers: list[weakref.ref[RingBuffer]] = []
_original: property | None = None
_wrapped: type | None = None
_lock = _thread.allocate_lock()


def watching() -> bool:
    """Whether renames are caught now (else a name is read as it is)."""
    return _original is not None


def watch(buffer: RingBuffer | None = None) -> None:
    """Record the renames of ``buffer``'s threads (wrapping the setter, if
    it is not yet, and if the program has imported threading: fentry does
    not import it, ``pythreads``; until it has, there is no rename)."""
    global _original, _wrapped
    with _lock:
        if buffer is not None and not any(ref() is buffer for ref in _buffers):
            _buffers[:] = [ref for ref in _buffers if ref() is not None]
            _buffers.append(weakref.ref(buffer))
        if _original is not None or not _buffers:
            return
        threading = pythreads.module()
        if threading is None:
            return
        cls = threading.Thread
        original = cls.__dict__.get("name")
        if not isinstance(original, property) or original.fset is None:
            return          # (not threading's: left alone, names read as they are)
        fset = original.fset

        def set_name(thread: Any, name: object) -> None:
            old = getattr(thread, "_name", None)
            fset(thread, name)          # threading's, exceptions and all
            new = getattr(thread, "_name", None)
            if old != new and type(new) is str and type(old) is str:
                _renamed(thread, old, new)

        set_name.__doc__ = fset.__doc__
        # As threading's, its setter wrapped.
        cls.name = property(original.fget, set_name, original.fdel, original.__doc__)
        _original, _wrapped = original, cls


def rewatch() -> None:
    """Renames caught from now on, if the program has imported threading
    since ``watch`` (called as fentry drains, and as threads start)."""
    if _original is None and _buffers and pythreads.module() is not None:
        watch()


def unwatch() -> None:
    """Detach: threading's property back, no ring buffer watched."""
    global _original, _wrapped
    with _lock:
        _buffers.clear()
        original, cls, _original, _wrapped = _original, _wrapped, None, None
        if original is not None and cls is not None:
            mine = cls.__dict__.get("name")
            if isinstance(mine, property) and mine.fget is original.fget:
                cls.name = original     # type: ignore[attr-defined]


def _renamed(thread: Any, old: str, new: str) -> None:
    quiet = quiet_thread(True)      # (what fentry runs here is not the program's)
    try:
        for buffer in [ref() for ref in _buffers]:
            if buffer is None:
                continue
            try:
                buffer.renamed(thread, old, new)
            except Exception:       # (tracing never changes the traced program)
                pass
    finally:
        if not quiet:
            quiet_thread(False)
