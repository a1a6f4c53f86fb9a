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
import os
import signal
from collections.abc import Callable


def spawn(func: Callable[..., object], *args: object) -> None:
    """``func(*args)`` in a new bare thread that takes no signal, named
    ``fentry-agent`` by the kernel (see ``AGENT_COMM``)."""
    everything = signal.valid_signals()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, everything)
    # A new thread is born with its creator's name: named so from its first
    # instant (it may wait long for the GIL before it could name itself).
    # The creator's own name is put back at once.
    name = _comm()
    _set_comm(AGENT_COMM)
    try:
        _thread.start_new_thread(func, args)        # the mask is inherited
    finally:
        _set_comm(name)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# The kernel's name of fentry's threads in the traced process (their comm,
# at most 15 characters), so that `fentry run -K`, top and perf tell them
# from the program's.
AGENT_COMM = "fentry-agent"


def _comm_path() -> str:
    return f"/proc/self/task/{_thread.get_native_id()}/comm"


def _comm() -> bytes:
    # (os calls only: no Python code runs in them, so none is traced)
    try:
        fd = os.open(_comm_path(), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 64).rstrip(b"\n")
    finally:
        os.close(fd)


def _set_comm(name: str | bytes) -> None:
    if not name:
        return
    try:
        fd = os.open(_comm_path(), os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, name.encode() if isinstance(name, str) else name)
    except OSError:
        pass
    finally:
        os.close(fd)
