"""fentry's own tracing instance in the kernel's tracefs,
``instances/fentry-PID`` (PID: the ``fentry`` command's), for ``-K``.

As trace-cmd's ``-B``: a buffer of its own, so the top level's settings and
buffer, and every other user's, are never touched.  It is made with
``trace_clock`` ``mono`` (CLOCK_MONOTONIC: fentry's timestamps' clock),
the option ``event-fork`` (threads and children of a followed task are
followed), the events asked for and their filters; ``set_event_pid`` names
the traced threads.  It is removed however fentry ends (``close``, called
from ``finally`` and from the signal handlers' paths); one left by a
fentry that was SIGKILLed is removed by the next (``remove_stale``).
"""

from __future__ import annotations

import errno
import os
import re

from ..errors import TraceError
from .mount import find_tracefs

PREFIX = "fentry-"
# Per CPU: the kernel's default is 1408 KB; this many keeps seconds of
# sched and syscall events of a busy program between two drains.
BUFFER_SIZE_KB = 4096
SUBSYSTEM = "fentry -K"


def _fentry_alive(pid: int) -> bool:
    """Whether ``pid`` is a running fentry (not gone, nor reused by another program)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"fentry" in f.read()
    except OSError:
        return False


def remove_stale(tracefs: str) -> list[str]:
    """Remove the instances of fentry commands that are gone (a fentry
    killed by SIGKILL leaves its instance): ``fentry-PID`` whose PID is
    dead, or is another program now.  The names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(os.path.join(tracefs, "instances"))
    except OSError:
        return removed
    for name in names:
        m = re.fullmatch(re.escape(PREFIX) + r"(\d+)", name)
        if m is None or _fentry_alive(int(m.group(1))):
            continue
        try:
            _remove(os.path.join(tracefs, "instances", name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _remove(path: str) -> None:
    # Its events off first: a buffer still written to is removed all the same,
    # but nothing more is recorded meanwhile.
    try:
        _write(os.path.join(path, "events", "enable"), "0")
    except OSError:
        pass
    os.rmdir(path)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class KernelEvents:
    """What ``-K`` and ``--kernel-filter`` ask for: ``events``, a list of
    ``(system, event or None for all of system)``, and ``filters``,
    ``{(system, event): filter}``."""

    def __init__(self, specs: list[str], filters: list[str]) -> None:
        self.events: list[tuple[str, str | None]] = []
        self.filters: dict[tuple[str, str], str] = {}
        for spec in specs:
            for word in spec.split(","):
                parts = word.strip().split(":")
                if not word.strip() or len(parts) > 2 or not all(parts):
                    raise TraceError("KEVENT_SYNTAX", word, 0, subsystem=SUBSYSTEM)
                system, event = parts[0], parts[1] if len(parts) == 2 else None
                if (system, event) not in self.events:
                    self.events.append((system, event))
        for spec in filters:
            parts = spec.split(":", 2)
            if len(parts) < 3 or not parts[0] or not parts[1]:
                raise TraceError("KFILTER_SYNTAX", spec, 0, subsystem="fentry --kernel-filter")
            self.filters[(parts[0], parts[1])] = parts[2]

    def __bool__(self) -> bool:
        return bool(self.events)


class Instance:
    """``instances/fentry-PID``, made and set up by ``create`` (which
    checks everything first and leaves nothing if it fails), removed by
    ``close``."""

    def __init__(self, wanted: KernelEvents, tracefs: str | None = None) -> None:
        self.wanted = wanted
        self.tracefs = tracefs or find_tracefs()
        self.name = f"{PREFIX}{os.getpid()}"
        self.path = os.path.join(self.tracefs, "instances", self.name)
        self.made = False
        # (system, event) -> its format file's text, of every event enabled
        self.formats: dict[tuple[str, str], str] = {}

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def _check(self) -> None:
        """Every event and filter names something the kernel has (read
        from the top level's events/, before anything is made)."""
        events = os.path.join(self.tracefs, "events")
        for system, event in self.wanted.events:
            name = f"{system}:{event}" if event else system
            where = os.path.join(events, system, event or "")
            if not os.path.isdir(where) or (event is None and not os.path.exists(
                    os.path.join(where, "enable"))):
                raise TraceError("NO_KEVENT", name, 0, subsystem=SUBSYSTEM)
        for system, event in self.wanted.filters:
            if not os.path.isdir(os.path.join(events, system, event)):
                raise TraceError("NO_KEVENT", f"{system}:{event}", 0,
                                 subsystem="fentry --kernel-filter")
            if not any(s == system and e in (None, event) for s, e in self.wanted.events):
                raise TraceError("KFILTER_NOT_ENABLED", f"{system}:{event}", 0,
                                 subsystem="fentry --kernel-filter")

    def create(self) -> None:
        """Make and set up the instance, events not yet enabled.  Raises
        TraceError (the instance removed again) if the kernel refuses."""
        remove_stale(self.tracefs)
        self._check()
        try:
            os.mkdir(self.path)
        except FileExistsError:         # ours, from a pid reused: nothing of it is wanted
            _remove(self.path)
            os.mkdir(self.path)
        except OSError as e:
            raise TraceError("KINSTANCE", self.path, 0, subsystem=SUBSYSTEM,
                             detail=e.strerror or str(e)) from None
        self.made = True
        try:
            _write(self.file("trace_clock"), "mono")
            _write(self.file("options", "event-fork"), "1")
            _write(self.file("buffer_size_kb"), str(BUFFER_SIZE_KB))
            for (system, event), text in self.wanted.filters.items():
                self._set_filter(system, event, text)
            for system, one in self.wanted.events:
                names = [one] if one else sorted(
                    e for e in os.listdir(self.file("events", system))
                    if os.path.isdir(self.file("events", system, e)))
                for name in names:
                    with open(self.file("events", system, name, "format")) as f:
                        self.formats[(system, name)] = f.read()
        except BaseException:
            self.close()
            raise

    def _set_filter(self, system: str, event: str, text: str) -> None:
        try:
            _write(self.file("events", system, event, "filter"), text)
        except OSError as e:
            # The kernel's own words and caret, from error_log, placed in the whole option.
            message, pos = _last_error(self.file("error_log"))
            prefix = f"{system}:{event}:"
            raise TraceError("KFILTER", prefix + text, len(prefix) + pos,
                             subsystem="fentry --kernel-filter",
                             detail=message or e.strerror or str(e)) from None

    def follow(self, tids: list[int]) -> None:
        """``set_event_pid``: exactly these tasks (and, by event-fork,
        what they start from now on)."""
        _write(self.file("set_event_pid"), " ".join(map(str, tids)))

    def enable(self, on: bool = True) -> None:
        for system, event in self.wanted.events:
            parts = ("events", system, event, "enable") if event else ("events", system, "enable")
            _write(self.file(*parts), "1" if on else "0")

    def close(self) -> None:
        """Remove the instance (idempotent; an instance busy because a reader
        still has its files open is retried by the caller after closing them)."""
        if not self.made:
            return
        try:
            _remove(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        self.made = False


def _last_error(path: str) -> tuple[str, int]:
    """The last entry of an error_log: its message (without its time stamp
    and the logger's own words), and where its caret points in the command."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return "", 0
    starts = [i for i, line in enumerate(lines) if line.startswith("[")]
    if not starts:
        return "", 0
    entry = lines[starts[-1]:]
    message = re.sub(r"^\[\s*[\d.]+\]\s*", "", entry[0])
    message = message.rsplit(" error: ", 1)[-1]      # "event filter parse error: error: Field not found"
    pos = 0
    for k, line in enumerate(entry):
        if line.startswith("  Command: ") and k + 1 < len(entry) and entry[k + 1].endswith("^"):
            pos = max(0, len(entry[k + 1]) - 1 - len("  Command: "))
    return message, pos
