"""The control socket's names and wire format, shared by the agent and the
``fentry`` command (which must not need the in-process machinery to talk).

Where: ``/tmp/fentry-PID/control``.  What: one JSON line each way, then
payload bytes (see ``server.py``).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Any

from ..fds import high_fd

SOCKET_ROOT = "/tmp"            # fixed, not $TMPDIR: client and target must agree
SOCKET_NAME = "control"
MAX_REQUEST = 1 << 20           # bytes of one request line (a kprobe_events write)

# fentry run: the agent's configuration, and the directory whose
# sitecustomize starts it (first on the program's PYTHONPATH).
ENV_CONFIG = "FENTRY_AGENT"
BOOT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_boot")


def socket_dir(pid: int) -> str:
    return os.path.join(SOCKET_ROOT, f"fentry-{pid}")


def socket_path(pid: int) -> str:
    return os.path.join(socket_dir(pid), SOCKET_NAME)


START_FILE = "start"        # beside the socket: which process made the directory


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, /proc/PID/stat):
    with the pid, it names one process, as the pid alone does not once pids
    wrap around."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else None


def made_by_current(pid: int) -> bool:
    """The control directory of ``pid`` was made by the process that has
    that pid now, not by one that had it before (killed, its directory
    left behind)."""
    directory = socket_dir(pid)
    try:
        with open(os.path.join(directory, START_FILE)) as f:
            made = f.read().strip()
    except OSError:
        # No record of its maker (an older fentry's): older than the process
        # by more than the clocks' slack, it is not this process's.
        started = _start_epoch(pid)
        try:
            return started is None or os.stat(directory).st_mtime > started - 1.0
        except OSError:
            return True
    return made == process_start(pid)


def _start_epoch(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (to a second)."""
    ticks = process_start(pid)
    try:
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    return None if ticks is None else boot + int(ticks) / os.sysconf("SC_CLK_TCK")


def agent_there(pid: int) -> bool:
    """An agent's socket is there for process ``pid`` (one left by a process
    that had this pid before is removed, and is not)."""
    path = socket_path(pid)
    if os.path.exists(path) and not made_by_current(pid):
        remove_stale(pid)
    return os.path.exists(path)


def alive(pid: int) -> bool:
    """Process ``pid`` runs (it is not gone, nor a zombie its parent has yet to reap)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command (state first); none if
    the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def remove_stale(pid: int, grace: float = 0.0) -> None:
    """The control directory of a process that died without removing it
    (SIGKILL): removed, if it is this user's.  ``grace``: seconds the process
    may take to finish dying (its stream just ended)."""
    path = socket_dir(pid)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline and os.path.exists(path):
        time.sleep(0.01)
    try:
        if (alive(pid) and made_by_current(pid)) or os.lstat(path).st_uid != os.getuid():
            return
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        pass


def high_socket(sock: socket.socket) -> socket.socket:
    """``sock`` moved to a high descriptor (see ``high_fd``)."""
    return socket.socket(sock.family, sock.type, fileno=high_fd(sock.detach()))


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """The connected peer's (pid, uid), as the kernel saw them at connect()."""
    pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      struct.calcsize("3i")))
    return pid, uid


def send_header(sock: socket.socket, header: dict[str, Any]) -> None:
    sock.sendall(json.dumps(header).encode() + b"\n", socket.MSG_NOSIGNAL)


def recv_line(sock: socket.socket, limit: int = MAX_REQUEST) -> bytes:
    """One line (without its newline); b"" if the peer closed first."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return b""
        data += chunk
        if len(data) > limit:
            raise ValueError("request line too long")
    return bytes(data[:-1])


SOCKET_BUFFER = 4 << 20         # bytes a stream's connection holds on its way to the reader
_BUFFORCE = {socket.SO_SNDBUF: 32, socket.SO_RCVBUF: 33}     # SO_SNDBUFFORCE, SO_RCVBUFFORCE


def widen_socket(sock: socket.socket, which: int) -> None:
    """A larger socket buffer (SO_SNDBUF or SO_RCVBUF): a stream rides out a
    reader that is late a moment.  Past the system's limit only with privilege."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _BUFFORCE[which], SOCKET_BUFFER)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, which, SOCKET_BUFFER)
        except OSError:
            pass
