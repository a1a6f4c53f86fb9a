"""The in-process agent of a program started by ``fentry run``.

Configured from the ``FENTRY_AGENT`` environment variable (removed at once, so
the program sees the environment it was given), it sets up tracefs as asked
and streams ``trace_pipe`` to a file descriptor the ``fentry`` command reads.
Whatever way the program ends — return, ``sys.exit``, an uncaught exception,
Ctrl-C, SIGTERM, ``os._exit`` — the trace is drained to that point first.
"""

from __future__ import annotations

import _thread
import atexit
import fcntl
import functools
import json
import os
import select
import signal

from .. import hotpath
from ..errors import TraceError
from ..events.probe_parser import parse_probe
from .tracefs import tracefs

ENV_CONFIG = "FENTRY_AGENT"
AGENT_FD_MIN = 200        # fentry's descriptors live from here up
# The signal whose Python handler stands in for SIGTERM's (see catch_sigterm):
# a real-time one, that nothing sends.
SIGTERM_STANDIN = signal.SIGRTMAX - 1
DRAIN_INTERVAL = 0.02


class Streamer:
    """Drains trace_pipe to a file descriptor from a thread of its own."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.fs = tracefs()
        self.lock = _thread.allocate_lock()
        self.stopped = False
        self.running = _thread.allocate_lock()     # held while the thread runs

    def start(self) -> None:
        # A bare _thread, not a threading.Thread: the program's
        # threading.enumerate() and active_count() stay what they would be.
        self.running.acquire()
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        hotpath.quiet_thread(True)      # what this thread runs is never traced
        try:
            waiting_for = [_sigterm_pipe[0]] if _sigterm_pipe[0] >= 0 else []
            while not self.stopped:
                if select.select(waiting_for, [], [], DRAIN_INTERVAL)[0]:
                    _die_of_sigterm()
                self.drain()
        finally:
            self.running.release()

    def stop(self) -> None:
        """Stop the thread and wait (briefly) for it to finish."""
        self.stopped = True
        if self.running.acquire(timeout=1.0):
            self.running.release()

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        while data:
            try:
                n = os.write(self.fd, data)
            except OSError:         # reader gone: the program goes on untraced
                self.stopped = True
                return
            data = data[n:]

    def drain(self, final: bool = False) -> None:
        with self.lock:
            if self.fd < 0:
                return
            text = self.fs.instance.read_pipe(final=final)
            if text:
                self._write(text)
            if final:
                self.stopped = True
                try:
                    os.close(self.fd)
                except OSError:
                    pass
                self.fd = -1


_streamer: Streamer | None = None


def _final_drain() -> None:
    if _streamer is not None:
        _streamer.stop()
        # Tracing ends here: what runs while the interpreter tears itself down
        # (module teardown, finalizers) would find half of it gone.
        tracefs().instance.set_tracing_on(False)
        _streamer.drain(final=True)
    if _sigterm_pending():      # it came while the program was ending anyway
        hotpath.catch_sigterm(-1)
        os.kill(os.getpid(), signal.SIGTERM)


def _sigterm_pending() -> bool:
    try:
        return _sigterm_pipe[0] >= 0 and bool(os.read(_sigterm_pipe[0], 1))
    except BlockingIOError:
        return False


# SIGTERM: the hot path's catch_sigterm() writes to this pipe, the agent's
# thread reads it and drains.
_sigterm_pipe = (-1, -1)


def _high_fd(fd: int) -> int:
    """``fd`` moved to a high number, so the program's own open() calls get
    the descriptors they would without fentry."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, AGENT_FD_MIN)
    os.close(fd)
    return high


def _die_of_sigterm() -> None:
    """Drain, then die of SIGTERM exactly as the program would have.

    Called in the main thread at its next bytecode, or, when that thread is
    stuck in C code, by the agent's thread."""
    _final_drain()
    hotpath.catch_sigterm(-1)
    os.kill(os.getpid(), signal.SIGTERM)


def _wrap_os_exit() -> None:
    real_exit = os._exit

    @functools.wraps(real_exit)
    def _exit(status):
        _final_drain()
        real_exit(status)
    os._exit = _exit


def _after_fork_in_child() -> None:
    # A forked child does not write into its parent's stream.
    global _streamer
    if _streamer is not None:
        try:
            os.close(_streamer.fd)
        except OSError:
            pass
        _streamer.fd = -1
        _streamer.stopped = True
        _streamer = None
    fs = tracefs()
    fs.write("current_tracer", "nop")


def _add_probes(fs, probes: list) -> None:
    """-e definitions: appended to kprobe_events, filtered, enabled."""
    for definition, filter_text in probes:
        fs.write("kprobe_events", definition, append=True)
        defn = parse_probe(definition)
        path = f"events/{defn.group}/{defn.event}"
        if filter_text is not None:
            fs.write(f"{path}/filter", filter_text)
        fs.write(f"{path}/enable", "1")


def start_from_environment() -> None:
    """Read FENTRY_AGENT, set tracefs up as it says, and start streaming."""
    global _streamer
    raw = os.environ.pop(ENV_CONFIG, None)
    if raw is None:
        return
    cfg = json.loads(raw)
    old = cfg.get("pythonpath")
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old
    fd = cfg["fd"]
    os.set_inheritable(fd, False)
    fs = tracefs()
    fs.write("buffer_size_kb", str(cfg["buffer_size_kb"]))
    fs.write("trace_options", " ".join(cfg.get("options", [])))
    fs.write("set_ftrace_filter", " ".join(cfg.get("filter", [])))
    fs.write("set_ftrace_notrace", " ".join(cfg.get("notrace", [])))
    fs.write("current_tracer", cfg["tracer"])
    try:
        _add_probes(fs, cfg.get("probes", []))
    except TraceError as e:
        os.write(2, (e.render() + "\n").encode())
        os._exit(2)         # the program does not start, as with a bad definition
    _streamer = Streamer(fd)
    if fs.instance.tracer != "nop" or cfg.get("probes"):
        _streamer._write(f"# tracer: {fs.instance.tracer}\n#\n" + fs.instance.reader().header())
    atexit.register(_final_drain)
    _wrap_os_exit()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        global _sigterm_pipe
        _sigterm_pipe = tuple(_high_fd(fd) for fd in os.pipe())
        for fd in _sigterm_pipe:
            os.set_blocking(fd, False)
        signal.signal(SIGTERM_STANDIN, lambda signum, frame: _die_of_sigterm())
        hotpath.catch_sigterm(_sigterm_pipe[1], SIGTERM_STANDIN)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _streamer.start()
