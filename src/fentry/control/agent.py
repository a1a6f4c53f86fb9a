"""The in-process agent: tracefs on a control socket, streams, detach.

One agent per process, started one of two ways:

- by ``fentry run``, from the ``FENTRY_AGENT`` environment variable (removed
  at once, so the program sees the environment it was given): it sets
  tracefs up as asked and streams ``trace_pipe`` to a file descriptor the
  ``fentry`` command reads.  Whatever way the program ends (return,
  ``sys.exit``, an uncaught exception, Ctrl-C, SIGTERM, ``os._exit``) the
  trace is drained to that point first.
- by ``fentry attach``, whose bootstrap calls ``attach()`` in a running
  program: only the control socket; the ``fentry`` command configures
  tracefs and reads ``trace_pipe`` through it.  When the last attach session
  ends (or ``detach`` is asked for), ``detach()`` leaves nothing behind.

Both serve every tracefs file on the control socket (``server.py``), so
``fentry -p PID ...`` works on either.
"""

from __future__ import annotations

import _thread
import atexit
import functools
import json
import os
import select
import signal
import socket
import sys
from typing import Callable

from .. import ftrace, hotpath
from ..errors import TraceError
from ..events.probe_parser import parse_probe
from . import tracefs as tracefs_module
from .server import Connection, ControlServer, high_fd, send_header
from .tracefs import tracefs

ENV_CONFIG = "FENTRY_AGENT"
# The signal whose Python handler stands in for SIGTERM's (see catch_sigterm):
# a real-time one, that nothing sends.
SIGTERM_STANDIN = signal.SIGRTMAX - 1
DRAIN_INTERVAL = 0.02


class Streamer:
    """Drains trace_pipe into ``sink`` every DRAIN_INTERVAL until stopped.

    ``run()`` loops in the calling thread and drains once more at its end, so
    stopping it (after tracing is turned off) loses nothing.  ``watch`` is a
    descriptor to wait on between drains; when it is readable ``on_watch()``
    is called, and a true result ends the stream (a reader that hung up)."""

    def __init__(self, sink: Callable[[bytes], None], watch: int = -1,
                 on_watch: Callable[[], bool] | None = None,
                 on_end: Callable[[], None] | None = None) -> None:
        self.sink = sink
        self.on_end = on_end
        self.watch = [watch] if watch >= 0 else []
        self.on_watch = on_watch
        self.fs = tracefs()
        self.stopped = False
        self.broken = False         # the reader is gone
        self.running = _thread.allocate_lock()     # held while run() runs
        self.ident = 0

    def run(self) -> None:
        self.ident = _thread.get_ident()
        with self.running:
            while not self.stopped and not self.broken:
                if select.select(self.watch, [], [], DRAIN_INTERVAL)[0] and self.on_watch():
                    break
                self.drain()
            self.drain()
            if self.on_end is not None:
                self.on_end()

    def start_thread(self) -> None:
        """``run()`` in a bare _thread of its own, not a threading.Thread: the
        program's threading.enumerate() and active_count() stay what they were."""
        _thread.start_new_thread(_quietly, (self.run,))

    def stop(self) -> None:
        """Stop, and wait (briefly) for the last drain; from the stream's own
        thread (SIGTERM seen there), drain now."""
        self.stopped = True
        if _thread.get_ident() == self.ident:
            self.drain()
        elif self.running.acquire(timeout=1.0):
            self.running.release()

    def write(self, text: str) -> None:
        if text and not self.broken:
            try:
                self.sink(text.encode("utf-8", "backslashreplace"))
            except OSError:         # reader gone: the program goes on untraced
                self.broken = True

    def drain(self) -> None:
        self.write(self.fs.instance.read_pipe())


def _quietly(func: Callable[[], None]) -> None:
    hotpath.quiet_thread(True)      # what this thread runs is never traced
    try:
        func()
    finally:
        hotpath.quiet_thread(False)


def _fd_sink(fd: int) -> Callable[[bytes], None]:
    def sink(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return sink


def _peer_hung_up(sock: socket.socket) -> bool:
    """Readable: the reader sent something (ignored) or closed (True)."""
    try:
        return not sock.recv(4096)
    except OSError:
        return True


def stream_header() -> str:
    """What a stream starts with: the ``# tracer:`` line and the tracer's columns."""
    inst = tracefs().instance
    return f"# tracer: {inst.tracer}\n#\n" + inst.reader().header()


class Agent:
    """The process's agent: its control server, streams and attach sessions."""

    def __init__(self, mode: str) -> None:
        self.mode = mode            # "run" or "attach"
        self.fs = tracefs()
        self.lock = _thread.allocate_lock()
        self.streams: set[Streamer] = set()
        self.sessions = 0
        self.detached = False
        self.run_stream: Streamer | None = None       # fentry run's pipe
        self.server = ControlServer(self.fs, {"pipe": self._pipe, "detach": self._detach_request,
                                              "header": lambda *_: stream_header()},
                                    self.fs.probes.log)

    def start_server(self) -> None:
        try:
            self.server.start()
        except OSError as e:
            # Tracing works without it; say so in error_log, where fentry's own problems go.
            self.fs.probes.log(TraceError("NO_CONTROL_SOCKET", self.server.path, 0,
                                          subsystem="fentry agent", detail=str(e)))

    # -- ops of the control socket
    def _pipe(self, server: ControlServer, conn: Connection, request: dict) -> None:
        session = bool(request.get("session"))
        send_header(conn.sock, {"ok": True, "stream": True})
        stream = Streamer(conn.write, conn.sock.fileno(), lambda: _peer_hung_up(conn.sock))
        if request.get("header"):
            stream.write(stream_header())
        with self.lock:
            if self.detached:
                return None
            self.streams.add(stream)
            self.sessions += session
        try:
            stream.run()
        finally:
            with self.lock:
                self.streams.discard(stream)
                self.sessions -= session
                last = session and self.sessions == 0 and self.mode == "attach"
            if last:        # the end of the last fentry attach, or its death
                self.detach()
        return None

    def _detach_request(self, server: ControlServer, conn: Connection, request: dict) -> dict:
        send_header(conn.sock, {"ok": True, "size": 0})
        self.detach()
        return None

    # -- the end
    def finish_streams(self) -> None:
        """Turn tracing off and drain every stream to its end."""
        self.fs.instance.set_tracing_on(False)
        for stream in list(self.streams) + ([self.run_stream] if self.run_stream else []):
            stream.stop()

    def detach(self) -> None:
        """Leave nothing behind: streams drained and ended, every probe and
        tracer removed, every monitoring event off and the tool id free, the
        control socket and its directory gone, the server's threads ended."""
        with self.lock:
            if self.detached:
                return
            self.detached = True
        global _agent
        try:
            self.finish_streams()
        finally:
            self.server.stopping = True         # no request from here on
            release_tracing()
            atexit.unregister(_at_exit)
            _agent = None
            self.server.stop()

    def forget_in_child(self) -> None:
        """After fork, in the child: nothing of the parent's agent goes on (its
        threads did not survive the fork; the socket is the parent's)."""
        global _agent
        self.detached = True
        if self.run_stream is not None:
            self.run_stream.stopped = True
        ftrace.reinit_after_fork()
        self.fs.reinit_after_fork()
        release_tracing()
        _agent = None


def release_tracing() -> None:
    """Every tracefs file back to its default and every ftrace ops unregistered:
    with no ops left, the core gives its sys.monitoring tool id back."""
    tracefs().reset()
    for ops in ftrace.registered_ops():
        ftrace.unregister_ftrace_function(ops)
    tracefs_module.forget()


_agent: Agent | None = None


def current() -> Agent | None:
    return _agent


def _at_exit() -> None:
    agent = _agent
    if agent is not None:
        # Tracing ends here: what runs while the interpreter tears itself down
        # (module teardown, finalizers) would find half of it gone.
        agent.finish_streams()
        agent.server.stop(wait=0.5)
    if _sigterm_pending():      # it came while the program was ending anyway
        hotpath.catch_sigterm(-1)
        os.kill(os.getpid(), signal.SIGTERM)


def _sigterm_pending() -> bool:
    try:
        return _sigterm_pipe[0] >= 0 and bool(os.read(_sigterm_pipe[0], 1))
    except BlockingIOError:
        return False


# SIGTERM: the hot path's catch_sigterm() writes to this pipe, the stream's
# thread reads it and drains.
_sigterm_pipe = (-1, -1)


def _die_of_sigterm() -> bool:
    """Drain, then die of SIGTERM exactly as the program would have.

    Called in the main thread at its next bytecode, or, when that thread is
    stuck in C code, by the stream's thread."""
    _at_exit()
    hotpath.catch_sigterm(-1)
    os.kill(os.getpid(), signal.SIGTERM)
    return True


def _wrap_os_exit() -> None:
    real_exit = os._exit

    @functools.wraps(real_exit)
    def _exit(status):
        _at_exit()
        real_exit(status)
    os._exit = _exit


def _after_fork_in_child() -> None:
    # A forked child does not write into its parent's stream, nor serve its socket.
    if _agent is not None:
        _agent.forget_in_child()


_fork_hook_installed = False


def _install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


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
    """``fentry run``: read FENTRY_AGENT, set tracefs up as it says, and start streaming."""
    global _agent, _sigterm_pipe
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
    agent = _agent = Agent("run")
    if fs.instance.tracer != "nop" or cfg.get("probes"):
        _fd_sink(fd)(stream_header().encode())
    atexit.register(_at_exit)
    _wrap_os_exit()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        _sigterm_pipe = tuple(high_fd(fd) for fd in os.pipe())
        for pipe_fd in _sigterm_pipe:
            os.set_blocking(pipe_fd, False)
        signal.signal(SIGTERM_STANDIN, lambda signum, frame: _die_of_sigterm())
        hotpath.catch_sigterm(_sigterm_pipe[1], SIGTERM_STANDIN)
    _install_fork_hook()
    agent.run_stream = Streamer(_fd_sink(fd), _sigterm_pipe[0], _die_of_sigterm,
                                on_end=lambda: os.close(fd))
    agent.run_stream.start_thread()
    agent.start_server()


def attach() -> str:
    """``fentry attach``: start the agent in this (running) process, or find
    the one already here.  Returns the control socket's path."""
    global _agent
    agent = _agent
    if agent is None:
        agent = _agent = Agent("attach")
        atexit.register(_at_exit)
        _install_fork_hook()
        agent.start_server()
    return agent.server.path
