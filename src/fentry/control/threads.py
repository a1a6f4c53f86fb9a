"""fentry's own threads, in the traced process.

Bare ``_thread``s, not ``threading.Thread``s: the program's
``threading.enumerate()`` and ``active_count()`` stay what they were.  Born
with every signal blocked: a signal sent to the process is delivered to one
of the program's threads, as it would be without fentry (delivered to ours,
it would not interrupt what the program's main thread waits in, and a
Python handler would not run until that wait ends).
"""

from __future__ import annotations

import _thread
import signal
from collections.abc import Callable

from ..hotpath import name_thread

# The kernel's name of fentry's threads in the traced process (their comm,
# at most 15 characters), so that `fentry run -K`, top and perf tell them
# from the program's.
AGENT_COMM = "fentry-agent"


def spawn(func: Callable[..., object], *args: object) -> None:
    """``func(*args)`` in a new bare thread that takes no signal, named
    ``fentry-agent`` by the kernel (see ``AGENT_COMM``)."""
    everything = signal.valid_signals()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, everything)
    try:
        _thread.start_new_thread(_as_agent, (func, args))     # the mask is inherited
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _as_agent(func: Callable[..., object], args: tuple[object, ...]) -> None:
    # Named by the thread itself, first thing: the thread that spawns it (the
    # program's, at its start) pays nothing for it; and with no descriptor
    # (hotpath.name_thread), so the program's open() in another thread meanwhile
    # gets the number it would without fentry.
    try:
        name_thread(AGENT_COMM)
    except OSError:
        pass
    func(*args)
