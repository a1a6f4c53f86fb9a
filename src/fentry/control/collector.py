"""``fentry run --follow``: the socket the traced program's children stream to.

Every process of a traced program streams its raw trace to ``fentry run``:
the program itself through a pipe, and with ``--follow`` each Python child
(``subprocess``, ``multiprocessing``, ``os.fork``) through a connection to
the collector's Unix socket.  Each connection is one stream of the
recording (``report/record.py``), so the processes' records never mix; each
line of the text names its task and thread id.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import threading
from typing import TYPE_CHECKING

from .wire import peer_credentials, remove_stale

if TYPE_CHECKING:
    from ..report.record import Recorder

COLLECTOR_NAME = "collect"
STALE_GRACE = 0.5       # seconds a followed process whose stream ended may take to be gone


class Collector:
    """A Unix socket in a private directory that followed processes stream to."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
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
            self.recorder.start(sock.detach(), on_end=functools.partial(remove_stale, pid, STALE_GRACE))

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
