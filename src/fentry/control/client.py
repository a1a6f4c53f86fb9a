"""The ``fentry`` command's side of a process's control socket (see ``server.py``)."""

from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any

from .wire import (
    agent_there,
    recv_line,
    remove_stale,
    send_header,
    socket_dir,
    socket_path,
    widen_socket,
)


class NoAgent(Exception):
    """Process ``pid`` has no fentry agent (or it is not ours to talk to)."""


class Refused(Exception):
    """The agent rejected the request; ``str()`` is its error_log entry."""


class Client:
    """Requests to the agent of process ``pid``, one connection each."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.path = socket_path(pid)

    def available(self) -> bool:
        """An agent's socket is there (one left by a process that had this
        pid before is removed, and is not)."""
        return agent_there(self.pid)

    def connect(self) -> socket.socket:
        directory = socket_dir(self.pid)
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            raise NoAgent(f"process {self.pid} has no fentry agent") from None
        # Talk only to a socket in a private directory of the process's owner
        # (or ours): anything else could be someone else's impostor.
        try:
            owner = os.stat(f"/proc/{self.pid}").st_uid
        except FileNotFoundError:
            raise NoAgent(f"no process {self.pid}") from None
        if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o077 or st.st_uid not in (owner, os.getuid()):
            raise NoAgent(f"{directory} is not a private directory of process {self.pid}'s owner")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise NoAgent(f"process {self.pid} has no fentry agent") from None
        except ConnectionRefusedError:
            sock.close()
            remove_stale(self.pid)
            raise NoAgent(f"process {self.pid}'s agent is gone (stale {self.path})") from None
        except PermissionError:
            sock.close()
            raise NoAgent(f"permission denied: {self.path} belongs to another user") from None
        return sock

    def _open(self, request: dict[str, Any]) -> tuple[socket.socket, dict[str, Any]]:
        sock = self.connect()
        try:
            try:
                send_header(sock, request)
            except BrokenPipeError:
                pass            # refused before we asked: the answer is waiting
            line = recv_line(sock)
        except OSError as e:
            sock.close()
            raise NoAgent(f"process {self.pid}'s agent closed the connection ({e})") from None
        if not line:
            sock.close()
            raise NoAgent(f"process {self.pid}'s agent closed the connection")
        header = json.loads(line)
        if not header.get("ok"):
            sock.close()
            raise Refused(header.get("error", "refused"))
        return sock, header

    def request(self, op: str, **fields: object) -> str:
        """One request; its answer as text (raises Refused, NoAgent)."""
        sock, header = self._open({"op": op, **fields})
        with sock:
            size = header.get("size", 0)
            data = bytearray()
            while len(data) < size:
                chunk = sock.recv(min(1 << 20, size - len(data)))
                if not chunk:
                    break
                data += chunk
        return data.decode("utf-8", "replace")

    def ls(self, path: str = "") -> list[str]:
        return self.request("ls", path=path).splitlines()

    def read(self, path: str) -> str:
        return self.request("read", path=path)

    def write(self, path: str, text: str, append: bool = False) -> None:
        self.request("write", path=path, text=text, append=append)

    def detach(self) -> None:
        self.request("detach")

    def open_pipe(self, header: bool = False, instance: str | None = None) -> socket.socket:
        """A connection streaming the trace of the top level (or of
        ``instances/INSTANCE``), raw (``tracers/stream.py``)."""
        sock, _ = self._open({"op": "pipe", "header": header, "instance": instance})
        widen_socket(sock, socket.SO_RCVBUF)
        return sock

    def open_session(self, settings: dict[str, Any]) -> tuple[socket.socket, str]:
        """An attach session: its own instance, set up as ``settings`` say,
        streaming its trace; and the instance's name.  When the last session
        closes, the agent detaches (raises Refused for bad settings: nothing
        of them is left)."""
        sock, header = self._open({"op": "pipe", "session": True, "header": True,
                                   "settings": settings})
        widen_socket(sock, socket.SO_RCVBUF)
        return sock, header["instance"]

    def mkdir(self, path: str) -> None:
        self.request("mkdir", path=path)

    def rmdir(self, path: str) -> None:
        self.request("rmdir", path=path)
