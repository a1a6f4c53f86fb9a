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
import functools
import json
import os
import signal
import time

from .. import hotpath
from .tracefs import tracefs

ENV_CONFIG = "FENTRY_AGENT"
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
            while not self.stopped:
                time.sleep(DRAIN_INTERVAL)
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


def _on_sigterm(signum, frame) -> None:
    # Drain, then die of SIGTERM exactly as the program would have.
    _final_drain()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
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
    for opt in cfg.get("options", []):
        fs.write("trace_options", opt)
    fs.write("set_ftrace_filter", " ".join(cfg.get("filter", [])))
    fs.write("set_ftrace_notrace", " ".join(cfg.get("notrace", [])))
    fs.write("current_tracer", cfg["tracer"])
    _streamer = Streamer(fd)
    if fs.instance.tracer != "nop":
        _streamer._write(f"# tracer: {fs.instance.tracer}\n#\n" + fs.instance.reader().header())
    atexit.register(_final_drain)
    _wrap_os_exit()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _streamer.start()
