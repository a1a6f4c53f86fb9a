"""The agent's control socket: tracefs served to the ``fentry`` command.

One Unix-domain socket per process, ``/tmp/fentry-PID/control``, in a
directory only its owner can enter (0700; the socket itself 0600).  Each
connection carries one request, a JSON line::

    {"op": "ls", "path": "events"}
    {"op": "read", "path": "kprobe_profile"}
    {"op": "write", "path": "kprobe_events", "text": "p:...", "append": true}
    {"op": "mkdir", "path": "instances/NAME"}     (and "rmdir")
    {"op": "pipe", "header": true}        stream the trace, raw, until either side closes
    {"op": "pipe", "session": true, "settings": {...}}   an attach session, in its own instance
    {"op": "detach"}

and gets one JSON line back, ``{"ok": true, "size": N}`` followed by N bytes
of text, ``{"ok": true, "stream": true, "instance": NAME}`` followed by the raw
stream (``tracers/stream.py``) until the end, or
``{"ok": false, "error": "..."}`` (a rejected write: its error_log entry).

The peer's uid is checked (``SO_PEERCRED``) before anything is read: only
the same user or root may connect; a refusal is logged in ``error_log``.
Every thread here is a bare ``_thread`` that never traces itself, and none
holds the GIL longer than its request needs: the streams drain the ring
buffers every few milliseconds, and a slow reader only slows its own thread
(the buffers overwrite and count, as they do with no reader at all).
"""

from __future__ import annotations

import _thread
import json
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import hotpath
from ..errors import TraceError
from .threads import spawn
from .wire import (
    START_FILE,
    high_socket,
    peer_credentials,
    process_start,
    recv_line,
    send_header,
    socket_dir,
    socket_path,
)

if TYPE_CHECKING:
    from .tracefs import Tracefs

# An extra op's handler: handler(server, conn, request) -> reply, or None.
type Handler = Callable[[ControlServer, Connection, dict[str, Any]], dict[str, Any] | None]

POLL_INTERVAL = 0.02            # how often a stream drains, and threads look for stop


def _make_private_dir(path: str) -> None:
    """``path`` as a directory of ours, mode 0700, empty of any stale socket.

    A leftover of a process that had our pid before (killed before it could
    clean up) is reused only if it is ours and private; anything else is
    refused rather than trusted."""
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} exists and is not a private directory of this user")
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))


class Connection:
    """One client's connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ident = _thread.get_ident()        # the thread serving it
        self.peer_pid = 0                       # the client's pid (SO_PEERCRED)

    def write(self, data: bytes) -> None:
        """Send, never raising SIGPIPE (the program may have set it to default)."""
        view = memoryview(data)
        while view:
            n = self.sock.send(view, socket.MSG_NOSIGNAL)
            view = view[n:]


class ControlServer:
    """Serves a ``Tracefs`` on the process's control socket.

    ``handlers`` maps extra ops (``detach``, ``pipe``) to functions of the
    agent: ``handler(server, conn, request) -> dict | None`` (None: the
    handler answered itself)."""

    def __init__(self, fs: Tracefs, handlers: dict[str, Handler], log: Callable[[TraceError], None],
                 tick: Callable[[], None] | None = None) -> None:
        self.fs = fs
        self.tick = tick            # called every POLL_INTERVAL by the accept loop
        self.handlers = handlers
        self.log = log
        self.pid = os.getpid()
        self.dir = socket_dir(self.pid)
        self.path = socket_path(self.pid)
        self.listener: socket.socket | None = None
        self.stopping = False
        self.threads = 0                    # running threads of this server
        self.threads_lock = _thread.allocate_lock()
        self.connections: set[Connection] = set()
        self.own_idents: set[int] = set()   # thread idents of this server

    # -- lifecycle
    def start(self) -> None:
        _make_private_dir(self.dir)
        start_file = os.path.join(self.dir, START_FILE)
        with open(os.open(start_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600),
                  "w") as f:
            f.write(f"{process_start(self.pid)}\n")
        listener = high_socket(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        try:
            # Born 0600 under a temporary name, listening before it appears
            # under its own: whoever sees the socket can connect to it.
            old_umask = os.umask(0o177)
            try:
                listener.bind(self.path + ".new")
            finally:
                os.umask(old_umask)
            listener.listen(8)
            listener.setblocking(False)
            os.rename(self.path + ".new", self.path)
        except OSError:
            listener.close()
            self.remove_files()
            raise
        self.listener = listener
        self._spawn(self._accept_loop)

    def stop(self, wait: float = 2.0) -> None:
        """Stop accepting, end every connection, wait (up to ``wait`` seconds)
        for the server's threads to end, and remove the socket and its
        directory last: once they are gone, so is everything else.  May be
        called from one of the server's own threads (which ends when it returns)."""
        self.stopping = True
        me = _thread.get_ident()
        for conn in list(self.connections):
            if conn.ident == me:
                continue        # the caller's: it closes when its request is done
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        ours = 1 if _thread.get_ident() in self.own_idents else 0
        deadline = time.monotonic() + wait
        while self.threads > ours and time.monotonic() < deadline:
            time.sleep(0.002)
        self.remove_files()

    def close_in_child(self) -> None:
        """After fork, in the child: close the copies of our sockets, and
        leave the socket file to the parent it belongs to."""
        self.stopping = True
        for sock in [self.listener, *(c.sock for c in self.connections)]:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self.connections.clear()
        self.threads = 0

    def remove_files(self) -> None:
        """The socket and its directory, gone."""
        for remove, path in ((os.unlink, self.path), (os.unlink, os.path.join(self.dir, START_FILE)),
                             (os.rmdir, self.dir)):
            try:
                remove(path)
            except OSError:
                pass

    # -- threads
    def _spawn(self, func: Callable[..., object], *args: object) -> None:
        with self.threads_lock:
            self.threads += 1
        spawn(self._thread_main, func, *args)

    def _thread_main(self, func: Callable[..., object], *args: object) -> None:
        ident = _thread.get_ident()
        self.own_idents.add(ident)
        try:
            # Inside the try: whatever happens, the thread is uncounted at
            # its end (a counted thread that is gone makes stop() wait).
            hotpath.quiet_thread(True)      # nothing this thread runs is traced
            func(*args)
        except Exception:
            pass                # a broken client never disturbs the program
        finally:
            hotpath.quiet_thread(False)
            self.own_idents.discard(ident)
            with self.threads_lock:
                self.threads -= 1

    def _accept_loop(self) -> None:
        listener = self.listener
        if listener is None:
            return
        try:
            while not self.stopping:
                if self.tick is not None:
                    self.tick()
                if not select.select([listener], [], [], POLL_INTERVAL)[0]:
                    continue
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                sock = high_socket(sock)
                sock.setblocking(True)
                self._spawn(self._serve, sock)
        finally:
            listener.close()

    # -- requests
    def _serve(self, sock: socket.socket) -> None:
        conn = Connection(sock)
        self.connections.add(conn)
        try:
            pid, uid = peer_credentials(sock)
            conn.peer_pid = pid
            if uid not in (os.getuid(), 0):
                who = f"connect from pid {pid} "
                error = TraceError("PEER_REFUSED", f"{who}uid {uid}", len(who),
                                   subsystem="fentry agent", detail=f"owner is uid {os.getuid()}")
                self.log(error)
                send_header(sock, {"ok": False, "error": error.render()})
                return
            line = recv_line(sock)
            if not line or self.stopping:
                return
            request = json.loads(line)
            reply = self._dispatch(conn, request)
            if reply is not None:
                self._answer(conn, reply)
        finally:
            self.connections.discard(conn)
            try:
                sock.close()
            except OSError:
                pass

    def _answer(self, conn: Connection, reply: dict[str, Any] | str) -> None:
        if isinstance(reply, str):
            data = reply.encode("utf-8", "backslashreplace")
            send_header(conn.sock, {"ok": True, "size": len(data)})
            conn.write(data)
        else:
            send_header(conn.sock, reply)

    def _dispatch(self, conn: Connection, request: dict[str, Any]) -> dict[str, Any] | str | None:
        op = request.get("op")
        path = str(request.get("path", ""))
        try:
            if op == "ls":
                return "".join(name + "\n" for name in self.fs.ls(path))
            if op == "read":
                return self.fs.read(path)
            if op in ("mkdir", "rmdir"):
                getattr(self.fs, op)(path)
                return ""
            if op == "write":
                self.fs.write(path, str(request.get("text", "")), bool(request.get("append")))
                return ""
            if op in self.handlers:
                return self.handlers[op](self, conn, request)
        except TraceError as e:
            return {"ok": False, "error": e.render()}
        except Exception as e:
            # Anything else is fentry's own failure: said, logged, and the
            # client answered (a dropped connection says nothing).
            error = TraceError("AGENT_FAILED", f"{op} {path}".strip(), 0, subsystem="fentry agent",
                               detail=f"{type(e).__name__}: {e}")
            self.log(error)
            return {"ok": False, "error": error.render()}
        return {"ok": False, "error": f"fentry agent: unknown request {op!r}"}
