"""``-K`` for one ``fentry run``, ``record`` or ``attach``: the instance
made and checked before the program starts, its events read while it
runs, the instance removed however the command ends."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import TraceError
from .instance import Instance, KernelEvents
from .reader import KernelReader

if TYPE_CHECKING:
    from ..report.datfile import DatWriter


class KernelSide:
    """The kernel's events for one command (see above)."""

    def __init__(self, wanted: KernelEvents) -> None:
        self.instance = Instance(wanted)
        self.reader: KernelReader | None = None
        self._handlers: dict[int, Any] = {}

    @classmethod
    def prepare(cls, specs: list[str], filters: list[str]) -> KernelSide | None:
        """The instance, made and set up (events off), or None without
        ``-K``.  Raises TraceError, leaving nothing, when tracefs cannot be
        used (not root, not mounted and not mountable), an event is unknown
        or the kernel refuses a filter."""
        wanted = KernelEvents(specs, filters)
        if not wanted:
            if wanted.filters:
                system, event = next(iter(wanted.filters))
                raise TraceError("KFILTER_NOT_ENABLED", f"{system}:{event}", 0,
                                 subsystem="fentry --kernel-filter")
            return None
        side = cls(wanted)
        side.instance.create()
        side._guard()
        return side

    def _guard(self) -> None:
        # SIGTERM or SIGHUP to fentry while it sets up: the instance goes.
        # (cmd_run and attach set their own handlers after; they end through
        # ``close`` in a finally.)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._handlers[sig] = signal.signal(sig, self._die)

    def _die(self, signum: int, frame: FrameType | None) -> None:
        try:
            self.close()
        except OSError:
            pass            # (a file of it open where the signal cut in: the next fentry removes it)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def begin(self, writer: DatWriter, tids: list[int]) -> None:
        """Start reading into ``writer`` (stream 0), following ``tids``, events on."""
        self.reader = KernelReader(self.instance, writer)
        self.reader.hello()
        self.reader.start()
        self.instance.follow(tids)
        self.instance.enable()

    def follow(self, tids: list[int]) -> None:
        self.instance.follow(tids)

    def stop(self, why: str = "end") -> None:
        """Events off, the last of them read, stream 0 ended."""
        if self.reader is not None:
            self.reader.stop(why)
            self.reader = None

    def close(self) -> None:
        """Stop, and remove the instance (idempotent)."""
        try:
            self.stop("stopped")
        except OSError:
            pass
        self.instance.close()
