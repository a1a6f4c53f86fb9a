"""fentry's own file descriptors, in the traced process: high numbers,
close-on-exec, so that the program's own ``open()`` calls get exactly the
numbers they would without fentry, and its children inherit none of them."""

from __future__ import annotations

import fcntl
import os

FD_MIN = 200        # fentry's descriptors live from here up


def high_fd(fd: int) -> int:
    """``fd`` moved to the lowest free number from FD_MIN up (close-on-exec)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FD_MIN)
    os.close(fd)
    return high
