"""Where the kernel's tracefs is: found where it is mounted, mounted (as
root) where it is not.

As trace-cmd's ``tracefs_tracing_dir()``: tracefs itself first
(``/sys/kernel/tracing`` before any other mount point), then debugfs's
``tracing/``; else, for root, tracefs is mounted on ``/sys/kernel/tracing``.
Whatever stops that is a TraceError saying why, raised before anything
else is done."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from ..errors import TraceError

TRACEFS_DIR = "/sys/kernel/tracing"     # where the kernel's own docs and trace-cmd look first
SUBSYSTEM = "fentry tracefs"


def _unescape(field: str) -> str:
    # /proc/self/mounts writes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounted_tracefs() -> list[str]:
    """The tracing directories of the mounts this process sees: tracefs
    mount points (``/sys/kernel/tracing`` first), then ``tracing/`` of
    debugfs mounts; empty when there is none."""
    tracefs, debugfs = [], []
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3:
                continue
            where = _unescape(fields[1])
            if fields[2] == "tracefs":
                tracefs.append(where)
            elif fields[2] == "debugfs":
                debugfs.append(os.path.join(where, "tracing"))
    tracefs.sort(key=lambda d: d != TRACEFS_DIR)        # stable: mount order otherwise
    return tracefs + debugfs


def _usable(path: str) -> bool:
    # debugfs/tracing is an empty directory when tracefs is not auto-mounted there.
    return os.path.exists(os.path.join(path, "trace"))


def _kernel_has_tracefs() -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1:] == ["tracefs"] for line in f)


def mount_tracefs(target: str = TRACEFS_DIR) -> str:
    """Mount tracefs on ``target`` (made if missing) and return it: root only.

    Raises TraceError: not root (TRACEFS_NOT_ROOT), a kernel without tracefs
    (NO_TRACEFS), or the mount(2) failure with its errno text (TRACEFS_MOUNT).
    """
    if os.geteuid() != 0:
        raise TraceError("TRACEFS_NOT_ROOT", target, 0, subsystem=SUBSYSTEM)
    if not _kernel_has_tracefs():
        raise TraceError("NO_TRACEFS", target, 0, subsystem=SUBSYSTEM)
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as e:
        raise TraceError("TRACEFS_MOUNT", target, 0, subsystem=SUBSYSTEM,
                         detail=f"mkdir: {e.strerror}") from None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(b"nodev", os.fsencode(target), b"tracefs", ctypes.c_ulong(0), None) != 0:
        err = ctypes.get_errno()
        raise TraceError("TRACEFS_MOUNT", target, 0, subsystem=SUBSYSTEM, detail=os.strerror(err))
    return target


def find_tracefs(mount: bool = True) -> str:
    """The kernel's tracing directory (``/sys/kernel/tracing`` or wherever
    tracefs is mounted), mounted there first when it is nowhere and
    ``mount`` is true.

    Raises TraceError before anything is changed: tracefs not mounted and
    ``mount`` false (NO_TRACEFS_MOUNT), or what :func:`mount_tracefs`
    raises; a tracefs this user may not use (TRACEFS_NOT_ROOT).
    """
    for path in mounted_tracefs():
        if _usable(path):
            break
        if not os.access(path, os.X_OK):         # root's: its files cannot even be seen
            raise TraceError("TRACEFS_NOT_ROOT", path, 0, subsystem=SUBSYSTEM)
    else:
        if not mount:
            raise TraceError("NO_TRACEFS_MOUNT", TRACEFS_DIR, 0, subsystem=SUBSYSTEM)
        path = mount_tracefs()
    if not os.access(os.path.join(path, "trace"), os.R_OK | os.W_OK):
        raise TraceError("TRACEFS_NOT_ROOT", path, 0, subsystem=SUBSYSTEM)
    return path
