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
import math
import os
import re
import select
import signal
import socket
import struct
import sys
import time
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from .. import ftrace, hotpath, pythreads
from ..errors import TraceError
from ..events import tracing_map
from ..events.fetch import FAULT, safe_repr
from ..fds import high_fd
from ..raw import Shown
from ..symbols import check_batch
from ..tracers.stream import RawStream
from ..tracers.trace import TraceInstance
from . import tracefs as tracefs_module
from .server import Connection, ControlServer
from .threads import spawn
from .tracefs import Tracefs, tracefs
from .wire import BOOT_DIR, ENV_CONFIG, send_header, widen_socket

# The signal whose Python handler stands in for SIGTERM's (see catch_sigterm):
# a real-time one, that nothing sends.
SIGTERM_STANDIN = signal.SIGRTMAX - 1
DRAIN_INTERVAL = 0.02       # seconds between drains
BUSY_DRAIN = 1 << 18        # bytes: a drain this large means busy threads; the next one comes at once
EXIT_SEND_PATIENCE = 5.0    # seconds a pipe reader may take no data while the program ends
SEND_TIMEOUT = 0.5          # seconds a send to a pipe reader blocks before it looks again
IOV_MAX = 1024              # buffers one writev or sendmsg takes


# A stream's sink: sink(pieces, stopping) sends them all (stopping(): the
# stream is being stopped, so a reader that takes nothing may be given up).
type Sink = Callable[[list[bytes], Callable[[], bool]], None]


class Streamer:
    """One reader's raw stream of the trace (``tracers/stream.py``): drains
    the instance's buffers into ``sink`` every DRAIN_INTERVAL, until stopped.

    ``run()`` loops in the calling thread; when it is stopped it drains once
    more and ends the stream (END), so stopping it after tracing is turned off
    loses nothing.  ``watch`` is a descriptor to wait on between drains; when
    it is readable ``on_watch()`` is called, and a true result ends the stream
    (a reader that hung up).  ``patient``: the sink is fentry run's own reader,
    which always reads; any other may give up on a program that ends."""

    def __init__(self, sink: Sink, header: bool,
                 watch: int = -1, on_watch: Callable[[], bool] | None = None,
                 on_end: Callable[[], None] | None = None,
                 instance: TraceInstance | None = None) -> None:
        self.sink = sink
        self.header = header
        self.on_end = on_end
        self.watch = [watch] if watch >= 0 else []
        self.on_watch = on_watch
        self.raw = RawStream(instance or tracefs().instance, _make_encoder)
        self.stopped = False
        self.broken = False         # the reader is gone
        self.why = "detach"         # what END says
        self.ended = False
        self.greeted = False        # HELLO sent
        self.profile = False        # END is preceded by the function profile (fentry run --profile)
        self.stack = False          # ... and by the deepest stack (fentry run --stack)
        self.hist = False           # ... and by the hist files (fentry run --hist)
        self.running = _thread.allocate_lock()     # held while run() runs
        # One drain at a time, whoever drains: messages must leave in the
        # order they were made.  An RLock knows its owner atomically: a drain
        # that a signal handler would start inside this thread's own is left
        # to that one to finish.
        self.writing = _thread.RLock()

    def run(self) -> None:
        """The stream, in the calling thread, to its end."""
        with self.running:
            self._run()

    def _run_started(self) -> None:
        try:
            self._run()
        finally:
            self.running.release()      # taken by start_thread

    def _run(self) -> None:
        try:
            self.drain(first=True)
            busy = False
            wake = self.raw.wake
            while not self.stopped and not self.broken:
                ready = select.select(self.watch + [wake], [], [], 0 if busy else DRAIN_INTERVAL)[0]
                if wake in ready:
                    _read_all(wake)
                if self.watch and self.watch[0] in ready and self.on_watch is not None \
                        and self.on_watch():
                    break
                busy = self.drain() >= BUSY_DRAIN
            self.close()
        finally:
            self.raw.close()
            if self.on_end is not None:
                self.on_end()

    def start_thread(self) -> None:
        """``run()`` in a thread of fentry's own (threads.py)."""
        global _stream_threads
        with _stream_threads_lock:  # += is no atomic step: a lost update leaks a count
            _stream_threads += 1    # counted from before it exists (see _before_fork)
        # Held from now, not from when the thread first runs: a program that
        # ends at once must find its stream running, and wait for its END.
        self.running.acquire()
        try:
            spawn(_quietly, self._run_started)
        except BaseException:
            self.running.release()
            raise

    def stop(self, why: str) -> None:
        """Stop, and wait for the stream's end: its last drain, and END."""
        self.why = why
        self.stopped = True
        self.running.acquire()
        self.running.release()

    def drain(self, first: bool = False) -> int:
        """Send what was written since the last drain; how many bytes.

        The rings are flushed before ``writing`` is taken: a thread holding
        that lock never waits for a ring's paging, which the thread a signal
        handler interrupted may hold (pure Python)."""
        if self.writing._is_owned():      # type: ignore[attr-defined]  # RLock's own test
            return 0        # a signal handler inside this thread's own drain: it finishes it
        self.raw.flush()
        with self.writing:
            data = self.raw.drain()
            if first and not self.greeted:
                data.insert(0, self.raw.hello(self.header))
                self.greeted = True
            self._send(data)
        _sigterm_after_write()
        return sum(map(len, data))

    def greet(self) -> None:
        """Send HELLO now, before any drain: a process killed before its
        first drain (SIGKILL, a moment after its fork) is then known to the
        reader, which says its trace stops there, instead of nothing."""
        with self.writing:
            if not self.greeted:
                self._send([self.raw.hello(self.header)])
                self.greeted = True
        _sigterm_after_write()

    def close(self) -> None:
        """The last drain, and END: the stream is complete (once)."""
        if self.writing._is_owned():      # type: ignore[attr-defined]
            return
        self.raw.flush()
        with self.writing:
            if not self.ended:
                last = [self.raw.profile(tracefs().profiler)] if self.profile else []
                if self.stack:
                    last.append(self.raw.stack(tracefs().stack))
                if self.hist:
                    last.append(self.raw.hists(tracefs().all_events()))
                self._send(self.raw.drain() + last + [self.raw.end(self.why)])
                self.ended = True
        _sigterm_after_write()

    def _send(self, data: list[bytes]) -> None:
        if data and not self.broken:
            try:
                self.sink(data, lambda: self.stopped)
            except OSError:         # reader gone: the program goes on untraced
                self.broken = True


_stream_threads = 0         # Streamer threads started and not yet ended
_stream_threads_lock = _thread.allocate_lock()


def _make_encoder() -> hotpath.Encoder:
    """The hot path's Encoder, knowing what a fetch stores (events/fetch.py)."""
    return hotpath.Encoder(FAULT, Shown, safe_repr)


def _read_all(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:         # empty (non-blocking), or closed
        pass


def _quietly(func: Callable[[], None]) -> None:
    global _stream_threads
    try:
        hotpath.quiet_thread(True)  # what this thread runs is never traced
        func()
    except BaseException as e:      # never a traceback on the program's stderr
        log_failure(e)
    finally:
        hotpath.quiet_thread(False)
        with _stream_threads_lock:
            _stream_threads -= 1


def log_failure(e: BaseException) -> None:
    """fentry's own failure, in error_log (where fentry's problems go)."""
    try:
        where = e.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        at = f" at {os.path.basename(where.tb_frame.f_code.co_filename)}:{where.tb_lineno}" \
            if where is not None else ""
        tracefs().probes.log(TraceError("AGENT_FAILED", "", 0, subsystem="fentry agent",
                                        detail=f"{type(e).__name__}: {e}{at}"))
    except BaseException:
        pass


def write_pieces(writev: Callable[[list[memoryview]], int], pieces: list[bytes],
                 idle: Callable[[], None] = lambda: None) -> None:
    """All of ``pieces``, in order, through ``writev(buffers) -> bytes
    written`` (os.writev, socket.sendmsg): no piece is copied on its way.
    ``idle()`` is called when a write took nothing (it may raise)."""
    views = [memoryview(p) for p in pieces if p]
    while views:
        n = writev(views[:IOV_MAX])
        if not n:
            idle()
        while n:
            if n >= len(views[0]):
                n -= len(views.pop(0))
            else:
                views[0] = views[0][n:]
                n = 0


def _fd_sink(fd: int) -> Sink:
    """fentry run's pipe: its reader always reads, so writes simply block."""
    def sink(pieces: list[bytes], stopping: Callable[[], bool]) -> None:
        write_pieces(lambda views: os.writev(fd, views), pieces)
    return sink


def _socket_sink(sock: socket.socket) -> Sink:
    """A pipe connection: its reader may stop reading (then the buffers
    overwrite and count, as with no reader); once the program ends, a reader
    that takes nothing for EXIT_SEND_PATIENCE is given up.  Sends block, one
    system call for a whole drain (the GIL is let go for all of it), and
    wake every SEND_TIMEOUT to look at the clock."""
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    struct.pack("ll", int(SEND_TIMEOUT), int(SEND_TIMEOUT % 1 * 1e6)))
    widen_socket(sock, socket.SO_SNDBUF)

    def sink(pieces: list[bytes], stopping: Callable[[], bool]) -> None:
        idle_since = [0.0]

        def send(views: list[memoryview]) -> int:
            try:
                sent = sock.sendmsg(views, (), socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return 0
            idle_since[0] = 0.0
            return sent

        def idle() -> None:
            if stopping():
                idle_since[0] = idle_since[0] or time.monotonic()
                if time.monotonic() - idle_since[0] > EXIT_SEND_PATIENCE:
                    raise OSError("the reader took nothing")
        write_pieces(send, pieces, idle)
    return sink


def _peer_hung_up(sock: socket.socket) -> bool:
    """Readable: the reader sent something (ignored) or closed (True)."""
    try:
        return not sock.recv(4096)
    except OSError:
        return True


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
        self.run_fd = -1
        self.follow: dict[str, Any] | None = None     # fentry run --follow: the config children get
        self.server = ControlServer(self.fs, {"pipe": self._pipe, "detach": self._detach_request},
                                    self.fs.probes.log, tick=_drop_stale_fork_filter)

    def thread_count(self) -> int:
        """Threads of this agent running now (or about to, or just ending)."""
        return self.server.threads + _stream_threads

    def start_server(self) -> None:
        try:
            self.server.start()
        except OSError as e:
            # Tracing works without it; say so in error_log, where fentry's own problems go.
            self.fs.probes.log(TraceError("NO_CONTROL_SOCKET", self.server.path, 0,
                                          subsystem="fentry agent", detail=str(e)))

    # -- ops of the control socket
    def _pipe(self, server: ControlServer, conn: Connection, request: dict[str, Any]) -> None:
        """Stream the trace, raw, until either side ends it.

        A session (``fentry attach``) holds the agent in the process while it
        lasts, and traces in an instance of its own, set up as its
        ``settings`` say: it sees no other session's events, nor they its.
        When it ends (or its client dies) the instance goes, and the events
        it defined that nobody else uses.  Without a session: the top level."""
        session = bool(request.get("session"))
        settings = request.get("settings")
        name, defined = None, []
        instance: TraceInstance | None = self.fs.instance
        if request.get("instance"):         # an instance's trace_pipe
            instance = self.fs.instances.get(request["instance"])
            if instance is None:
                error = TraceError("NO_SUCH_FILE", f"instances/{request['instance']}", 0)
                send_header(conn.sock, {"ok": False, "error": error.render()})
                return None
        elif settings is not None:
            name = self._new_instance_name(conn.peer_pid)
            try:
                self.fs.mkdir(f"instances/{name}")
                # The program's markers (fentry.trace_marker) reach the session.
                self.fs.write(f"instances/{name}/trace_options", "copy_trace_marker")
                with check_batch():
                    defined = apply_settings(self.fs, settings, instance=name)
            except TraceError as e:
                self._end_instance(name, defined)
                send_header(conn.sock, {"ok": False, "error": e.render()})
                return None
            instance = self.fs.instances[name]
        with self.lock:
            if self.detached:
                return None
            self.sessions += session
        stream = None
        try:
            send_header(conn.sock, {"ok": True, "stream": True, "instance": name})
            stream = Streamer(_socket_sink(conn.sock), bool(request.get("header")),
                              conn.sock.fileno(), lambda: _peer_hung_up(conn.sock),
                              instance=instance)
            # The session's hists at its end: --hist's, and -R hist:...'s
            stream.hist = settings is not None and (bool(settings.get("hists")) or any(
                str(t).startswith("hist:") for p in settings.get("probes", []) for t in p[2:]))
            with self.lock:
                if self.detached:
                    return None
                self.streams.add(stream)
            stream.run()
        finally:
            with self.lock:
                self.streams.discard(stream)
                self.sessions -= session
                last = session and self.sessions == 0 and self.mode == "attach"
            if name is not None and not last:
                self._end_instance(name, defined)
            if last:        # the end of the last fentry attach, or its death
                self.detach()
        return None

    def _new_instance_name(self, pid: int) -> str:
        name, n = f"attach-{pid}", 1
        while name in self.fs.instances:
            n += 1
            name = f"attach-{pid}-{n}"
        return name

    def _end_instance(self, name: str, defined: list[tuple[str, str]]) -> None:
        """A session's instance, and the events it defined that no instance
        has enabled, gone."""
        try:
            if name in self.fs.instances:
                self.fs.rmdir(f"instances/{name}")
            self.fs.probes.remove(defined)
            self.fs.synth.remove_unused(defined)
        except TraceError as e:
            self.fs.probes.log(e)

    def _detach_request(self, server: ControlServer, conn: Connection, request: dict[str, Any]) -> dict[str, Any]:
        self.detach()           # answered once done: the socket and its directory are gone
        return {"ok": True, "size": 0}

    # -- the end
    def all_streams(self) -> list[Streamer]:
        return list(self.streams) + ([self.run_stream] if self.run_stream else [])

    def finish_streams(self, why: str) -> None:
        """Turn tracing off and drain every stream to its end (END says ``why``)."""
        self.fs.instance.set_tracing_on(False)
        for stream in self.all_streams():
            stream.stop(why)

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
            self.finish_streams("detach")
        finally:
            self.server.stopping = True         # no request from here on
            release_tracing()
            if self.mode == "attach":
                atexit.unregister(_at_exit)
                _once.discard("exit hooks")
            _agent = None
            self.server.stop()

    def forget_in_child(self, keep_tracing: bool = False) -> None:
        """After fork, in the child: let go of the parent's agent (its
        descriptors here are copies; its socket file stays the parent's)."""
        global _agent, _sigterm_pipe, _stream_threads
        self.detached = True
        _stream_threads = 0         # they stayed in the parent
        _stream_threads_lock._at_fork_reinit()    # type: ignore[attr-defined]  # (what threading's own locks use)
        if self.run_stream is not None:
            self.run_stream.stopped = True
        ftrace.reinit_after_fork()
        self.fs.reinit_after_fork()
        self.server.close_in_child()
        for fd in (self.run_fd, *_sigterm_pipe):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if _sigterm_pipe[1] >= 0:
            hotpath.catch_sigterm(-1)       # it wrote to the parent's pipe
            if hotpath.IMPLEMENTATION == "python":
                # Python's wakeup fd too, when it is still that pipe.
                try:
                    old = signal.set_wakeup_fd(-1)
                    if old not in (-1, _sigterm_pipe[1]):
                        signal.set_wakeup_fd(old)
                except ValueError:      # not the main thread: Python keeps it
                    pass
            _sigterm_pipe = (-1, -1)
        if not keep_tracing:
            release_tracing()
        _agent = None


def apply_settings(fs: Tracefs, settings: dict[str, Any], instance: str | None = None,
                   skip_refused_probes: bool = False) -> list[tuple[str, str]]:
    """Set tracing up as ``fentry run`` / ``fentry attach`` options say, by
    writes to tracefs ``fs``, in the top level or in ``instances/INSTANCE``.
    ``settings``: buffer_size_kb, options, filter, notrace, graph_function,
    graph_notrace, max_graph_depth, tracing_thresh, tracer, profile
    (function_profile_enabled), stack (stack_tracer_enabled), clock
    (trace_clock, None: as it is), probes, a list of [definition, filter or
    None, triggers...], each defined (in the shared dynamic_events), filtered and
    enabled, then its triggers written (they may name any of the events), and
    hists, ``--hist`` texts, each a hist trigger on its event (an event of
    probes that a hist names is not enabled: it feeds the hist).  A definition the same as
    one there already is that one.  Returns the events it defined.

    ``skip_refused_probes``: a probe the Tracefs refuses is left out, its
    error in error_log, and the others applied: for a child of ``fentry run
    --follow``, whose code may well not have what the program's has."""
    at = f"instances/{instance}/" if instance else ""
    fs.write(at + "buffer_size_kb", str(settings["buffer_size_kb"]))
    fs.write(at + "trace_options", " ".join(settings.get("options", [])))
    if settings.get("clock"):
        fs.write(at + "trace_clock", settings["clock"])
    # Commands (FUNC:COMMAND) after the probe events, which enable_event names.
    words = " ".join(settings.get("filter", [])).split()
    commands = [w for w in words if ftrace.is_command_word(w)]
    fs.write(at + "set_ftrace_filter", " ".join(w for w in words if w not in commands))
    fs.write(at + "set_ftrace_notrace", " ".join(settings.get("notrace", [])))
    fs.write(at + "set_graph_function", " ".join(settings.get("graph_function", [])))
    fs.write(at + "set_graph_notrace", " ".join(settings.get("graph_notrace", [])))
    for name in ("max_graph_depth", "tracing_thresh"):     # (the top level's only, as the kernel's)
        if settings.get(name, "0").strip() != "0":
            fs.write(name, settings[name])
    fs.write(at + "current_tracer", settings["tracer"])
    if settings.get("profile"):         # (the profiler is the top level's only)
        fs.write("function_profile_enabled", "1")
    if settings.get("stack"):           # (so is the stack tracer)
        fs.write("stack_tracer_enabled", "1")
    probes = settings.get("probes", [])
    from ..events.probe_parser import format_definition, log_command
    from ..events.trace_dynevent import parse_definition
    from ..events.tracepoints import tracepoint_name
    keys = [tracepoint_name(p[0]) or _event_key(p[0]) for p in probes]
    hists = [hist_target(fs, text, keys) for text in settings.get("hists", [])]
    defined = []
    triggers = []
    for definition, filter_text, *event_triggers in probes:
        key = tracepoint_name(definition)
        if key is not None:             # a tracepoint (python:raise): nothing to define
            fs.tracepoints.declare(*key)
        else:
            defn = parse_definition(definition)
            key = (defn.group, defn.event)
            there = fs.probes.events.get(key)
            if fs.synth.defined_as(defn):
                pass        # (a synthetic event of these fields: shared, as a tracepoint is)
            elif there is None or (format_definition(there.defn) != format_definition(defn)
                                 and there.command != log_command(definition)):
                try:
                    fs.write("dynamic_events", definition, append=True)
                except TraceError:
                    if skip_refused_probes:
                        continue
                    raise
                defined.append(key)
        path = f"{at}events/{key[0]}/{key[1]}"
        if filter_text is not None:
            fs.write(f"{path}/filter", filter_text)
        if key not in [(group, name) for group, name, _ in hists]:     # (else it feeds the hist only)
            fs.write(f"{path}/enable", "1")
        triggers += [(f"{path}/trigger", t) for t in event_triggers]
    triggers += [(f"{at}events/{group}/{name}/trigger", "hist:" + param) for group, name, param in hists]
    for path, trigger in triggers:
        fs.write(path, trigger, append=True)
    if commands:
        fs.write(at + "set_ftrace_filter", " ".join(commands), append=True)
    return defined


def _event_key(definition: str) -> tuple[str, str]:
    """The (group, event) a dynamic event's definition defines."""
    from ..events.trace_dynevent import parse_definition
    defn = parse_definition(definition)
    return defn.group, defn.event


def hist_target(fs: Tracefs, text: str, keys: list[tuple[str, str]]) -> tuple[str, str, str]:
    """A ``--hist`` text's event group and name, and its trigger (after
    ``hist:``).  A bare event name is looked up by name, among the events
    defined and ``keys``, those this run defines."""
    from ..events.hist import split_hist_option
    group, name, param = split_hist_option(text)
    if group is None:
        found = {g for g, n in keys if n == name} | \
            {e.group for e in fs.probes.events.values() if e.name == name}
        if len(found) != 1:
            raise TraceError("HIST_NO_EVENT", text, 0, subsystem="fentry --hist",
                             detail="give it as GRP:EVENT" if found else "define it with -e")
        group = found.pop()
    return group, name, param


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
    """The program ends (atexit, os._exit): drain everything, in the main thread."""
    agent = _agent
    if agent is not None:
        # fentry's end is not the program's: nothing from here on is traced.
        # Tracing ends here: what runs while the interpreter tears itself down
        # (module teardown, finalizers) would find half of it gone.  Every
        # record is out before the process goes, however long that takes.
        hotpath.quiet_thread(True)
        agent.finish_streams("exit")
        agent.server.stop(wait=0.5)
    if _sigterm_pending():      # it came while the program was ending anyway
        _die_now()


# SIGTERM.  The hot path's catch_sigterm() makes it run _on_sigterm in the
# main thread at its next bytecode (with the C hot path, through a stand-in
# signal whose handler the program cannot see), and (C) writes a byte to
# this pipe, which the stream's thread waits on.  The main thread does the
# work.  It may be anywhere, fentry's own code included, so a drain takes
# no lock that the code it interrupts may hold (the ring buffers' list is
# read without one), and a drain interrupted in its own thread is left to
# finish rather than entered again (Streamer.owner); the only lock it waits
# on is a stream's, held by the stream's thread for as long as one write to
# a reader that reads.  The stream's thread takes over only when the main
# thread does not come (stuck in C code) within SIGTERM_GRACE.  Whichever
# claims it, drains and ends the process; the other leaves it alone.
_sigterm_pipe = (-1, -1)
_sigterm_pid = 0            # the process whose SIGTERM this is
_sigterm_claim = _thread.allocate_lock()
_sigterm_seen = False
_sigterm_main = 0           # the main thread's ident (pure Python)
_sigterm_deferred = 0       # it came inside a write of this thread's own (ident): done after it
SIGTERM_GRACE = 0.2         # seconds


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """The Python-level SIGTERM handler, in the main thread."""
    if os.getpid() != _sigterm_pid:
        # A child forked a moment ago, before its after-fork hooks ran: what
        # this handler would drain is its parent's.  It dies as it would have.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    global _sigterm_deferred
    if not _sigterm_claim.acquire(False):
        # The stream's thread took it while this thread was stuck: with C it
        # ends the process any moment; pure Python cannot from there.
        time.sleep(SIGTERM_GRACE)
        _die_now()
    if _writing_here():
        # It came inside a stream's write of this very thread (its HELLO,
        # the last drain at the program's exit): that write is not entered
        # again, and ending the process now would cut it, END and all.  It
        # finishes first, and ends the process (_sigterm_after_write).
        _sigterm_deferred = _thread.get_ident()
        return
    try:
        _drain_for_sigterm()
    finally:
        _die_now()          # (whatever happened: the program dies as SIGTERM says)


def _writing_here() -> bool:
    """A stream's write is in progress in the calling thread."""
    agent = _agent
    return agent is not None and any(
        s.writing._is_owned() for s in agent.all_streams())  # type: ignore[attr-defined]


def _sigterm_after_write() -> None:
    """After a stream's write: a SIGTERM that came inside it, handled."""
    if _sigterm_deferred == _thread.get_ident() and not _writing_here():
        try:
            _drain_for_sigterm()
        finally:
            _die_now()


def _sigterm_in_stream() -> bool:
    """The stream's thread saw a byte on the pipe: SIGTERM's, or (pure
    Python) another signal's."""
    global _sigterm_seen
    try:
        if not _is_sigterm(os.read(_sigterm_pipe[0], 4096)):
            return False
    except OSError:
        pass
    _sigterm_seen = True
    deadline = time.monotonic() + SIGTERM_GRACE
    while time.monotonic() < deadline:
        if _sigterm_claim.locked():
            return False        # the main thread has it
        time.sleep(0.005)
    if not _sigterm_claim.acquire(False):
        return False
    _drain_for_sigterm()
    if hotpath.IMPLEMENTATION == "c":
        _die_now()
    # Pure Python: only the handler, in the main thread, can end the process.
    # The main thread may wait in C for ever (SIGTERM came just before it
    # blocked, so the wait was not interrupted): a SIGTERM of its own ends
    # that wait, and the handler runs.
    try:
        signal.pthread_kill(_sigterm_main, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    return True


def _drain_for_sigterm() -> None:
    """Everything recorded, out to every reader, from whichever thread
    claimed SIGTERM.  Tracing is left on: turning it off takes the core's
    lock, and the process ends right after anyway."""
    agent = _agent
    for stream in agent.all_streams() if agent is not None else []:
        stream.why = "signal"
        stream.stopped = True
        try:
            stream.close()
        except Exception:       # (fentry's own fault: never the program's, which dies now)
            pass


def _sigterm_pending() -> bool:
    """A SIGTERM came (seen on the pipe, or still in it)."""
    try:
        return _sigterm_seen or (_sigterm_pipe[0] >= 0 and _is_sigterm(os.read(_sigterm_pipe[0], 4096)))
    except BlockingIOError:
        return False


def _is_sigterm(data: bytes) -> bool:
    """SIGTERM among the bytes read from the pipe: the C handler's ``T``, or
    (pure Python, the pipe being Python's wakeup fd) its signal number."""
    return b"T" in data or _SIGTERM_BYTE in data


_SIGTERM_BYTE = bytes([signal.SIGTERM])


def _die_now() -> None:
    """Die of SIGTERM, exactly as the program would have (and leave no
    control socket behind)."""
    agent = _agent
    if agent is not None:
        agent.server.remove_files()
    hotpath.catch_sigterm(-1)
    os.kill(os.getpid(), signal.SIGTERM)


def _run_stream_ended(fd: int) -> None:
    """fentry run's stream is over (the program ends, or its reader is gone):
    nobody waits on the SIGTERM pipe any more, so SIGTERM is the default
    again (from C, which may do that from this thread; the pure-Python
    handler sees the stream ended and dies at once)."""
    os.close(fd)
    if hotpath.IMPLEMENTATION == "c" and _sigterm_pipe[1] >= 0:
        hotpath.catch_sigterm(-1)


def _wrap_os_exit() -> None:
    real_exit = os._exit

    @functools.wraps(real_exit)
    def _exit(status: int) -> NoReturn:
        _at_exit()
        real_exit(status)
    os._exit = _exit


def _install_fork_hook() -> None:
    if "fork hook" not in _once:
        _once.add("fork hook")
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork_in_child)


# os.fork() in Python 3.12+ warns when the process has other threads.  A
# program that has none but fentry's would see a warning it does not get
# without fentry: for such a fork only, that warning is ignored.  3.12 warns
# before the after-fork hooks run, 3.13 after them: there the filter goes a
# moment later, from the agent's own thread.
_FORK_WARNING = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"
_FORK_WARNING_RE = re.compile(_FORK_WARNING, re.I)
_WARNS_AFTER_HOOKS = sys.version_info >= (3, 13)
FORK_FILTER_LINGER = 0.1        # seconds
FORK_COUNT_SETTLE = 0.01        # seconds
_fork_filter: tuple[Any, ...] | None = None
_fork_filter_since = 0.0


# Forking threads: whether each was quiet before its fork.
_quiet_over_fork: dict[int, bool] = {}


def _before_fork() -> None:
    global _fork_filter, _fork_filter_since, _sigterm_held
    # The forking thread is quiet over the fork, until fentry's after-fork
    # hook: the hooks that run before it in the child (threading's, random's,
    # logging's) would otherwise be traced while fentry's locks may be held
    # by threads that do not exist there (a first call discovered in
    # another thread at the instant of the fork), and hang the child.
    _quiet_over_fork[_thread.get_ident()] = hotpath.quiet_thread(True)
    if _python_sigterm_handler():
        # Pure Python catches SIGTERM with a Python handler, which a child
        # inherits, and Python drops the signals a child gets before its
        # after-fork hooks run: a SIGTERM at that instant would be lost, and
        # the child live on.  Over the fork, SIGTERM is the default (from
        # another thread than the main one Python cannot set it: there the
        # instant stays).
        try:
            _sigterm_held = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:
            pass
    agent = _agent
    if agent is None or _program_threads(agent) > 1:
        _drop_fork_filter()         # the program's own threads: it gets its warning
    else:
        if _fork_filter is None:
            _fork_filter = ("ignore", _FORK_WARNING_RE, DeprecationWarning, None, 0)
            # Not filterwarnings(): that bumps the filters' version, and a new
            # version forgets which warnings the program has been shown, so
            # a "default" (once a place) warning would show again.  An ignored
            # warning is not remembered: the list alone is enough.
            warnings.filters.insert(0, _fork_filter)     # type: ignore[attr-defined]  # a list
        # Not stale while the fork runs: the agent's thread must not drop
        # it before the warning it is for (after_in_parent starts the clock).
        _fork_filter_since = math.inf


def _program_threads(agent: Agent) -> int:
    """Threads of the process that are not the agent's, as the fork warning
    counts them (the kernel's count).  A thread of ours that has just ended
    may linger there for a moment: when Python knows of no thread but the
    caller, the count is given that moment to settle."""
    python_view = pythreads.python_threads()
    deadline = time.monotonic() + FORK_COUNT_SETTLE
    while True:
        try:
            threads = len(os.listdir("/proc/self/task"))
        except OSError:
            return python_view
        others = threads - agent.thread_count()
        if others <= 1 or python_view > 1 or time.monotonic() > deadline:
            return others
        time.sleep(0.0005)


def _python_sigterm_handler() -> bool:
    return hotpath.IMPLEMENTATION == "python" and _sigterm_pipe[1] >= 0 \
        and signal.getsignal(signal.SIGTERM) is _on_sigterm


_sigterm_held = None        # our Python SIGTERM handler, set aside over a fork


def _after_fork_in_parent() -> None:
    global _fork_filter_since, _sigterm_held
    hotpath.quiet_thread(_quiet_over_fork.pop(_thread.get_ident(), False))
    if _sigterm_held is not None:
        signal.signal(signal.SIGTERM, _sigterm_held)
        _sigterm_held = None
    if _WARNS_AFTER_HOOKS:
        _fork_filter_since = time.monotonic()
    else:
        _drop_fork_filter()


def _drop_stale_fork_filter() -> None:
    """Called by the agent's thread now and then."""
    if _fork_filter is not None and time.monotonic() - _fork_filter_since > FORK_FILTER_LINGER:
        _drop_fork_filter()


def _drop_fork_filter() -> None:
    global _fork_filter
    if _fork_filter is not None:
        try:
            warnings.filters.remove(_fork_filter)     # type: ignore[attr-defined]  # a list
        except ValueError:
            pass
        _fork_filter = None


def _after_fork_in_child() -> None:
    global _sigterm_held
    was_quiet = _quiet_over_fork.pop(_thread.get_ident(), False)
    _quiet_over_fork.clear()        # (other threads' forks were the parent's)
    try:
        _sigterm_held = None    # SIGTERM is the default here; the agent sets it if it follows
        _drop_fork_filter()
        tracing_map.after_fork_in_child()
        agent = _agent
        if agent is None:
            return
        # Nothing of the parent's agent goes on here: its threads did not
        # survive the fork, and its socket, stream and SIGTERM pipe are the
        # parent's.  (The thread is quiet: fentry's work here is not the program's.)
        follow = agent.follow
        agent.forget_in_child(keep_tracing=follow is not None)
        if follow is not None:
            # --follow: this child is traced too, under an agent of its own,
            # streaming to the same fentry run.  What the parent had recorded
            # but not yet streamed is the parent's to stream.
            tracefs().instance.clear()
            fd = _connect_collector(follow["collector"])
            if fd < 0:
                release_tracing()
            else:
                _start_run_agent(follow, fd, header=False)
    finally:
        hotpath.quiet_thread(was_quiet)


_once: set[str] = set()         # process-wide hooks installed (they survive fork)


def _export_for_children(cfg: dict[str, Any]) -> None:
    """--follow: Python programs this one starts load the agent too.

    Set in the process environment with putenv only: ``os.environ``, what the
    program sees, stays as it was given; children started with the inherited
    environment (subprocess, multiprocessing, os.exec*) get both variables."""
    child = {k: v for k, v in cfg.items() if k != "fd"}
    os.putenv(ENV_CONFIG, json.dumps(child))
    old = cfg.get("pythonpath")
    os.putenv("PYTHONPATH", BOOT_DIR + (os.pathsep + old if old else ""))


def _connect_collector(path: str) -> int:
    """A stream to the fentry run that follows us; -1 if it is gone."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return -1
    return high_fd(sock.detach())


def start_from_environment() -> None:
    """``fentry run``: read FENTRY_AGENT, set tracefs up as it says, and start streaming."""
    raw = os.environ.pop(ENV_CONFIG, None)
    if raw is None:
        return
    cfg = json.loads(raw)
    old = cfg.get("pythonpath")
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old
    if cfg.get("follow"):
        _export_for_children(cfg)
    fd = cfg.get("fd")
    if fd is None:          # a followed child: it streams to the collector
        fd = _connect_collector(cfg["collector"])
        if fd < 0:
            return
    else:
        os.set_inheritable(fd, False)
    program = cfg.get("fd") is not None         # not a followed child
    fs = tracefs()
    try:
        # (The program has yet to start: a filter word waits for its code.)
        with check_batch(), ftrace.program_starting():
            apply_settings(fs, cfg, skip_refused_probes=not program)
    except TraceError as e:
        os.write(2, (e.render() + "\n").encode())
        os._exit(2)         # the program does not start, as with a bad definition
    if program and fs.probes.errors:
        # Applied, with a note (a probe pending on a module not found yet): the user should see it.
        os.write(2, fs.probes.error_log().encode())
    _start_run_agent(cfg, fd, header=program)


def _start_run_agent(cfg: dict[str, Any], fd: int, header: bool) -> None:
    """The agent of a process of ``fentry run``, streaming to ``fd``."""
    global _agent, _sigterm_pipe, _sigterm_pid
    fs = tracefs()
    agent = _agent = Agent("run")
    agent.follow = cfg if cfg.get("follow") else None
    header = header and (fs.instance.tracer != "nop" or bool(cfg.get("probes")))
    if "exit hooks" not in _once:
        _once.add("exit hooks")
        atexit.register(_at_exit)
        _wrap_os_exit()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        _sigterm_pid = os.getpid()
        read_end, write_end = os.pipe()
        _sigterm_pipe = (high_fd(read_end), high_fd(write_end))
        for pipe_fd in _sigterm_pipe:
            os.set_blocking(pipe_fd, False)
        signal.signal(SIGTERM_STANDIN, _on_sigterm)
        hotpath.catch_sigterm(_sigterm_pipe[1], SIGTERM_STANDIN)
        if hotpath.IMPLEMENTATION == "python":
            _watch_python_sigterm()
    _install_fork_hook()
    agent.run_stream = Streamer(_fd_sink(fd), header, _sigterm_pipe[0], _sigterm_in_stream,
                                on_end=lambda: _run_stream_ended(fd))
    agent.run_stream.profile = bool(cfg.get("profile"))
    agent.run_stream.stack = bool(cfg.get("stack"))
    # The hists at the end: --hist's, and those of -R hist:... (trace-cmd's spelling)
    agent.run_stream.hist = bool(cfg.get("hists")) or any(
        str(t).startswith("hist:") for p in cfg.get("probes", []) for t in p[2:])
    agent.run_fd = fd
    agent.run_stream.greet()
    agent.run_stream.start_thread()
    agent.start_server()


def _watch_python_sigterm() -> None:
    """Pure Python: the pipe becomes Python's signal wakeup fd, so that the
    stream's thread sees SIGTERM even when the handler cannot run (the main
    thread blocked in C a moment after it came).  Not where the program set
    one of its own (a fork child inherits its parent's, ours, which
    forget_in_child has let go of)."""
    global _sigterm_main
    _sigterm_main = _thread.get_ident()
    old = signal.set_wakeup_fd(_sigterm_pipe[1], warn_on_full_buffer=False)
    if old not in (-1, _sigterm_pipe[1]):
        signal.set_wakeup_fd(old)
    # A forkserver child sets -1 after the fork hooks, then starts its
    # process: multiprocessing's own after-fork hooks run then, and take it back.
    global _rewatch_pid
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _agent is not None and _rewatch_pid != os.getpid():
        _rewatch_pid = os.getpid()
        util.register_after_fork(_agent, _rewatch_python_sigterm)


_rewatch_pid = 0            # the process that registered _rewatch_python_sigterm


def _rewatch_python_sigterm(agent: Agent) -> None:
    if agent is _agent and _sigterm_pipe[1] >= 0 and os.getpid() == _sigterm_pid:
        try:
            _watch_python_sigterm()
        except ValueError:      # not the main thread
            pass


def attach() -> str:
    """``fentry attach``: start the agent in this (running) process, or find
    the one already here.  Returns the control socket's path."""
    global _agent
    agent = _agent
    if agent is None:
        agent = _agent = Agent("attach")
        if "exit hooks" not in _once:
            _once.add("exit hooks")
            atexit.register(_at_exit)
        _install_fork_hook()
        agent.start_server()
    return agent.server.path
