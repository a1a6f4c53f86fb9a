"""The ``fentry run`` side of the streams: one output, many processes.

Every process of a traced program streams its trace lines to ``fentry run``:
the program itself through a pipe, and with ``--follow`` each Python child
(``subprocess``, ``multiprocessing``, ``os.fork``) through a connection to
the collector's Unix socket.  ``Merger`` writes whole lines only, so lines of
different processes never mix within a line; each line names its task and
pid, as ``set_ftrace_pid`` with ``function-fork`` traces do.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Callable
from io import BufferedIOBase

from .wire import peer_credentials, remove_stale

COLLECTOR_NAME = "collect"


class Merger:
    """Copies streams of lines into one output, a whole line at a time."""

    def __init__(self, out: BufferedIOBase) -> None:
        self.out = out
        self.error: OSError | None = None      # the first failed write: the trace is cut there
        self.lock = threading.Lock()
        self.active = 0
        self.idle = threading.Condition(self.lock)

    def start(self, fd: int, on_end: Callable[[], None] | None = None) -> None:
        """Copy ``fd`` (to its end, then close it, then call ``on_end``) from a
        thread of its own."""
        with self.lock:         # counted at once: wait_idle must see it
            self.active += 1
        threading.Thread(target=self._copy, args=(fd, on_end), daemon=True).start()

    def _copy(self, fd: int, on_end: Callable[[], None] | None) -> None:
        partial = b""
        try:
            while True:
                data = os.read(fd, 1 << 16)
                if not data:
                    break
                data = partial + data
                cut = data.rfind(b"\n") + 1
                partial = data[cut:]
                if cut:
                    self._write(data[:cut])
        except (OSError, ValueError):
            pass
        finally:
            if partial:
                self._write(partial + b"\n")
            os.close(fd)
            if on_end is not None:
                on_end()
            with self.lock:
                self.active -= 1
                self.idle.notify_all()

    def _write(self, data: bytes) -> None:
        # After a failed write the streams are still read to their end (and
        # dropped), so that no traced process ever waits on a full pipe.
        with self.lock:
            if self.error is not None:
                return
            try:
                self.out.write(data)
                self.out.flush()
            except OSError as e:
                self.error = e
            except ValueError:      # closed
                pass

    def close(self, close_out: bool) -> OSError | None:
        """Flush (and close) the output; the first write error, if any."""
        with self.lock:
            try:
                if close_out:
                    self.out.close()
                else:
                    self.out.flush()
            except OSError as e:
                self.error = self.error or e
            except ValueError:
                pass
            return self.error

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every stream has ended (True), or ``timeout`` passes."""
        with self.lock:
            return self.idle.wait_for(lambda: self.active == 0, timeout)


class Collector:
    """A Unix socket in a private directory that followed processes stream to."""

    def __init__(self, merger: Merger) -> None:
        self.merger = merger
        self.dir = tempfile.mkdtemp(prefix="fentry-run-")       # 0700
        self.path = os.path.join(self.dir, COLLECTOR_NAME)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self.listener.bind(self.path)
        finally:
            os.umask(old_umask)
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            pid, _ = peer_credentials(sock)
            self.merger.start(sock.detach(), on_end=lambda pid=pid: remove_stale(pid))

    def close(self) -> None:
        try:
            self.listener.close()
        except OSError:
            pass
        for remove, path in ((os.unlink, self.path), (os.rmdir, self.dir)):
            try:
                remove(path)
            except OSError:
                pass
