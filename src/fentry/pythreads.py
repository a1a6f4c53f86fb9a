"""The program's ``threading``, read where it is, never imported by fentry.

fentry's code in the traced process takes its locks, thread idents and
thread-locals from ``_thread``, and never imports ``threading``: a program
that does not import it runs without it, as it would without fentry.  (Its
import is not without effects: the interpreter calls its ``_shutdown`` at
exit, which would be traced as a call the program never made, and its main
thread is the thread that imports it.)

Thread names are threading's, once the program has imported it: these
functions read its tables (``_active``, ``_limbo``) and a Thread's plain
attributes, and run none of its Python code, which would be traced.
"""

from __future__ import annotations

import _thread
import os
import sys
from types import MappingProxyType

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# The name of a thread threading does not know (a bare _thread, or any
# thread but the main one of a program without threading): the kernel's comm
# of a process named so.  The main thread is threading's MainThread, with
# threading or without.
NO_NAME = "python"
MAIN_NAME = "MainThread"
_NONE: Mapping[int, Any] = MappingProxyType({})


def module() -> Any:
    """The program's ``threading`` module, or None if it has not imported
    it, or not yet whole (its import is running, in some thread of the
    program: its names are not all there)."""
    threading = sys.modules.get("threading")
    if threading is None or getattr(getattr(threading, "__spec__", None), "_initializing", False):
        return None
    return threading


def active() -> Mapping[int, Any]:
    """threading's ``{ident: Thread}`` of running threads (none without it)."""
    table: Mapping[int, Any] = getattr(module(), "_active", _NONE)
    return table


def limbo() -> Mapping[Any, Any]:
    """threading's ``{Thread: Thread}`` of threads started and not yet running."""
    table: Mapping[Any, Any] = getattr(module(), "_limbo", _NONE)
    return table


def default_name(tid: int) -> str:
    """The name of thread ``tid`` (a native id) where threading does not
    know it: ``MAIN_NAME`` for the main thread (its id is the process's),
    else ``NO_NAME``."""
    return MAIN_NAME if tid == os.getpid() else NO_NAME


def comm() -> str:
    """The calling thread's name, threading's (``default_name`` where
    threading does not know it)."""
    t = active().get(_thread.get_ident())
    return t._name if t is not None else default_name(_thread.get_native_id())


def python_threads() -> int:
    """Threads threading knows (running or starting); 1, the main thread,
    for a program without threading."""
    if module() is None:
        return 1
    return len(active()) + len(limbo())
