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


def spawn(func: Callable[..., object], *args: object) -> None:
    """``func(*args)`` in a new bare thread that takes no signal."""
    everything = signal.valid_signals()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, everything)
    try:
        _thread.start_new_thread(func, args)        # the mask is inherited
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
