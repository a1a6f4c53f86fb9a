"""The tracefs files, served in-process.

Read and write semantics follow the kernel's: a plain write replaces (``>``),
``append=True`` adds (``>>``); writing ``trace`` clears the buffers;
``trace_pipe`` is a consuming, blocking read.  A rejected write raises
``TraceError`` (what and where, with a caret) and changes nothing.

As the kernel's ``instances/``, ``mkdir("instances/NAME")`` makes a tracing
instance with its own buffer, tracer, filters, options and event enables,
under ``instances/NAME/``; ``rmdir`` removes it.  Probe event definitions
(``kprobe_events``), ``kprobe_profile``, ``available_*`` and ``error_log``
are the top level's, shared; so is the function profiler
(``function_profile_enabled``, ``trace_stat/``), as the kernel's.
"""

from __future__ import annotations

import _thread
import re
import sys
from collections.abc import Callable
from typing import Any

import fentry

from .. import arch, ftrace
from ..arch import ToolIdBusy
from ..errors import TraceError
from ..events.hist import hist_text
from ..events.marker import marker_text
from ..events.set_event import available_events_text, parse_set_event, set_event_text
from ..events.trace_dynevent import DynamicEvents
from ..events.trace_kprobe import ProbeEvents, enable_text
from ..events.trace_synth import SynthEvents
from ..events.tracepoints import Tracepoint, Tracepoints
from ..events.trigger import TriggerContext, Triggered
from ..ftrace import FilterHash
from ..symbols import SYMBOLS
from ..tracers import rename
from ..tracers.function_graph import LIMITS
from ..tracers.profile import FunctionProfiler, rows as profile_rows, stat_text
from ..tracers.ring_buffer import DEFAULT_SIZE_KB, PID_FILES
from ..tracers.stack import StackTracer, stack_text
from ..tracers.trace import TOP_OPTIONS, TRACERS, TraceInstance
from .readme import readme_text

EVENT_FILES = ("enable", "filter", "format", "hist", "id", "trigger")
INSTANCE_NAME = re.compile(r"[A-Za-z0-9_.-]+")

Reader = Callable[[], str] | None
Writer = Callable[[str, bool], None] | None


def _parse_bool(text: str) -> bool:
    t = text.strip()
    if t not in ("0", "1"):
        raise TraceError("BAD_BOOL", text.rstrip("\n"), 0)
    return t == "1"


def _parse_size(text: str) -> int:
    t = text.strip()
    if not t.isdigit() or int(t) <= 0:
        raise TraceError("BAD_SIZE", text.rstrip("\n"), 0)
    return int(t)


def _parse_number_bool(text: str) -> bool:
    """A number, any non-zero one true (the kernel's ``val = !!val``)."""
    t = text.strip()
    if not t.isdigit():
        raise TraceError("BAD_BOOL", text.rstrip("\n"), 0)
    return int(t) != 0


def parse_unsigned(text: str, limit: int) -> int:
    """A decimal number up to ``limit``, as the kernel's ``kstrtoul_from_user``
    reads one: a trailing newline, nothing else around it."""
    t = text[:-1] if text.endswith("\n") else text
    if not re.fullmatch(r"\+?[0-9]+", t):
        raise TraceError("BAD_NUMBER", text.rstrip("\n"), 0)
    if int(t) > limit:
        raise TraceError("NUMBER_RANGE", text.rstrip("\n"), 0)
    return int(t)


# max_graph_depth is an unsigned int; tracing_thresh's microseconds must
# fit in the nanoseconds the hot path compares (the kernel's wrap around).
MAX_GRAPH_DEPTH = 2**32 - 1
MAX_THRESH_US = (2**63 - 1) // 1000
MAX_STACK_SIZE = 2**64 - 1     # stack_max_size: an unsigned long


def _resize(inst: TraceInstance, text: str) -> None:
    size = _parse_size(text)
    try:
        inst.buffer.resize(size)
    except MemoryError as e:
        raise TraceError("NO_MEMORY", text.rstrip("\n"), 0, detail=str(e)) from None


def _option_file(inst: TraceInstance, name: str) -> tuple[Reader, Writer]:
    """``options/NAME``: 0 or 1, the ``trace_options`` word's state."""
    return (lambda: f"{int(inst.options[name])}\n",
            lambda text, append: inst.set_options(name if _parse_bool(text) else "no" + name))


def _pid_file(inst: TraceInstance, name: str) -> tuple[Reader, Writer]:
    """``set_ftrace_pid`` and the other pid lists (``PID_FILES``)."""
    return (lambda: inst.pids_text(name),
            lambda text, append: inst.set_pids(name, text, append))


def _hash_text(hash_: FilterHash, empty: str) -> str:
    """set_ftrace_filter / set_ftrace_notrace read back: the kernel's line for
    an empty hash, else the functions it selects (``t_start``, ``t_show``)."""
    return empty if hash_.empty else hash_.text()


class Tracefs:
    """The files of the top-level instance and of every one under
    ``instances/``: ``ls``, ``read``, ``write``, ``mkdir``, ``rmdir``."""

    def __init__(self) -> None:
        self.probes = probes = ProbeEvents()
        self.tracepoints = Tracepoints()        # Python's own events: python:*, gc:*, audit:*
        probes.tracepoints = self.tracepoints   # (what eprobes and tprobes attach to)
        self.synth = SynthEvents(self.tracepoints, probes)      # synthetic:*, among the tracepoints
        self.dynamic_events = DynamicEvents(probes, self.synth)
        self.instance = self._wire(TraceInstance(top=True))     # the top level
        self.instances: dict[str, TraceInstance] = {}
        arch.set_error_log(probes.log)      # (a program refused fentry's tool id)
        fentry._marker = self.program_marker
        self.lock = _thread.RLock()
        # The function profiler is the top level's, on its filters, as the kernel's.
        self.profiler = FunctionProfiler(self.instance.filter, self.instance.notrace,
                                         self.instance.options)
        self.stack = StackTracer()      # the process's, as the kernel's is global
        # Files only the top level has: name -> (reader, writer(text, append)).
        self.global_files: dict[str, tuple[Reader, Writer]] = {
            "available_filter_functions": (SYMBOLS.available_filter_functions, None),
            "kprobe_events": (probes.definitions, probes.write),
            "dynamic_events": (self.dynamic_events.read, self.dynamic_events.write),
            "synthetic_events": (self.synth.read, self.synth.write),
            "kprobe_profile": (probes.profile, None),
            # (the top level's only, as the kernel's: instances have set_event)
            "available_events": (lambda: available_events_text(self.all_events()), None),
            "enabled_functions": (ftrace.enabled_functions, None),
            "saved_cmdlines": (self.saved_cmdlines, None),
            "README": (lambda: readme_text(self.instance_files(self.instance), self.global_files), None),
            "stack_tracer_enabled": (
                lambda: f"{int(self.stack.enabled)}\n",
                lambda text, append: self.stack.set_enabled(_parse_number_bool(text))),
            "stack_max_size": (lambda: f"{self.stack.stack.max}\n",
                               lambda text, append: self.stack.set_max(parse_unsigned(text, MAX_STACK_SIZE))),
            "stack_trace": (self.stack_trace, None),
            "stack_trace_filter": (
                lambda: _hash_text(self.stack.filter, "#### all functions enabled ####\n"),
                lambda text, append: ftrace.set_hash(self.stack.filter, text, reset=not append)),
            # function_graph's limits: the top level's, for every instance, as the kernel's
            "max_graph_depth": (lambda: f"{LIMITS.max_depth}\n",
                                lambda text, append: LIMITS.set(
                                    max_depth=parse_unsigned(text, MAX_GRAPH_DEPTH))),
            "tracing_thresh": (lambda: f"{LIMITS.thresh_us}\n",
                               lambda text, append: LIMITS.set(
                                   thresh_us=parse_unsigned(text, MAX_THRESH_US))),
            "function_profile_enabled": (
                lambda: f"{int(self.profiler.enabled)}\n",
                lambda text, append: self.profiler.set_enabled(_parse_number_bool(text))),
        }

    def stack_trace(self) -> str:
        """``stack_trace``: the deepest stack seen, in the kernel's table."""
        thread, locations = self.stack.rows()
        return stack_text(thread, locations, self.stack.enabled, self.stack.stack.max)
    def _wire(self, inst: TraceInstance) -> TraceInstance:
        """What an instance needs of the shared probe events: its
        enable_event commands name them, its stacktrace option re-arms them."""
        inst.commands.events = self.probes

        def on_options(changed: set[str]) -> None:
            if "stacktrace" in changed:
                self.probes.rearm(inst)
        inst.option_hooks.append(on_options)
        return inst

    def program_marker(self, text: object) -> None:
        """``fentry.trace_marker(text)``: as a write to the top level's
        ``trace_marker``, a marker in every instance whose
        ``copy_trace_marker`` is on and that takes one now; the calling
        thread's event, at the call.  Never raises into the program."""
        try:
            caller = sys._getframe(2)
            site = (caller.f_code, caller.f_lasti)
            text = marker_text(text)
            for inst in self.marker_copies():
                inst.mark(text, site)
        except Exception:
            pass

    def marker_copies(self) -> list[TraceInstance]:
        """Where the top level's markers go: every instance (the top level
        too) whose ``copy_trace_marker`` is on."""
        return [inst for inst in (self.instance, *tuple(self.instances.values()))
                if inst.options["copy_trace_marker"]]

    def saved_cmdlines(self) -> str:
        """``TID NAME`` of every thread with a buffer, as the kernel's ``PID COMM``."""
        seen: dict[int, str] = {}
        for inst in (self.instance, *tuple(self.instances.values())):
            for tb in inst.buffer.readable():
                seen.setdefault(tb.tid, tb.task_name())
        return "".join(f"{tid} {name}\n" for tid, name in sorted(seen.items()))

    def instance_files(self, inst: TraceInstance) -> dict[str, tuple[Reader, Writer]]:
        """The files every instance has (the top level too)."""
        probes = self.probes
        return {
            **{f"options/{name}": _option_file(inst, name) for name in inst.options},
            "buffer_total_size_kb": (lambda: f"{inst.buffer.size_kb * len(inst.buffer.readable())}\n",
                                     None),
            "available_tracers": (lambda: " ".join(TRACERS) + "\n", None),
            "current_tracer": (lambda: inst.tracer + "\n",
                               lambda text, append: inst.set_tracer(text)),
            "set_ftrace_filter": (inst.filter_text, lambda text, append: inst.set_filter(text, append)),
            "set_ftrace_notrace": (lambda: _hash_text(inst.notrace, "#### no functions disabled ####\n"),
                                   lambda text, append: inst.set_filter(text, append, notrace=True)),
            "set_graph_function": (lambda: _hash_text(inst.graph_filter, "#### all functions enabled ####\n"),
                                   lambda text, append: inst.set_graph_filter(text, append)),
            "set_graph_notrace": (lambda: _hash_text(inst.graph_notrace, "#### no functions disabled ####\n"),
                                  lambda text, append: inst.set_graph_filter(text, append, notrace=True)),
            "tracing_on": (lambda: f"{int(inst.tracing_on)}\n",
                           lambda text, append: inst.set_tracing_on(_parse_bool(text))),
            "buffer_size_kb": (lambda: f"{inst.buffer.size_kb}\n",
                               lambda text, append: _resize(inst, text)),
            "trace": (inst.read_trace, lambda text, append: None if append else inst.clear()),
            "snapshot": (inst.read_snapshot, lambda text, append: inst.write_snapshot(text)),
            "trace_pipe": (inst.wait_pipe, None),
            "trace_clock": (inst.clock_text, lambda text, append: inst.set_clock(text)),
            # Write-only, any text: the kernel frees at the close, fentry at the write.
            "free_buffer": (None, lambda text, append: inst.free_buffer()),
            "trace_options": (inst.options_text, lambda text, append: inst.set_options(text)),
            "trace_marker": (None, lambda text, append: inst.write_marker(
                text, self.marker_copies() if inst is self.instance else [inst])),
            "trace_marker_raw": (None, lambda data, append: inst.write_raw_marker(
                data, self.marker_copies() if inst is self.instance else [inst])),
            "error_log": (probes.error_log, lambda text, append: probes.errors.clear()),
            **{name: _pid_file(inst, name) for name in PID_FILES},
            "events/enable": (lambda: self.enable_text(self.all_events(), inst),
                              lambda text, append: self.set_enable(self.all_events(),
                                                                   _parse_bool(text), inst)),
            "set_event": (lambda: set_event_text(self.all_events(),
                                                 lambda e: bool(e.file(inst).enabled)),  # type: ignore[attr-defined]
                          lambda text, append: self.set_event(inst, text, append)),
        }

    # -- every event: tracepoints and probe events (events/enable, set_event)
    def all_events(self) -> list[Any]:
        return [*self.tracepoints.events.values(), *self.probes.events.values()]

    @staticmethod
    def enable_text(events: list[Any], inst: TraceInstance) -> str:
        """An ``enable`` file over any events: one event's own (``0*`` in
        soft mode), or 1, 0, or X when mixed (armed counts as enabled, as
        the kernel's system_enable_read)."""
        if len(events) == 1:
            return str(events[0].file(inst).enable_text())
        states = {e.file(inst).enabled for e in events}
        return "X\n" if len(states) > 1 else ("1\n" if states == {True} else "0\n")

    def set_enable(self, events: list[Any], on: bool, inst: TraceInstance) -> None:
        """Enable (disable) tracepoints and probe events together: all, or none."""
        points = [e for e in events if isinstance(e, Tracepoint)]
        probes = [e for e in events if not isinstance(e, Tracepoint)]
        was = [e for e in points if e.file(inst).enabled]
        self.tracepoints.set_enable(points, on, inst)
        try:
            self.probes.set_enable(probes, on, inst)
        except BaseException:
            if on:
                self.tracepoints.set_enable([e for e in points if e not in was], False, inst)
            raise

    def set_event(self, inst: TraceInstance, text: str, append: bool) -> None:
        """A write to ``set_event`` (``events/set_event.py``): checked whole, then applied."""
        events = self.all_events()
        words = parse_set_event(text, events)
        want = {id(e): e.file(inst).enabled and append for e in events}
        for on, selected in words:
            for e in selected:
                want[id(e)] = on
        before = [e for e in events if e.file(inst).enabled]
        self.set_enable([e for e in events if not want[id(e)]], False, inst)
        try:
            self.set_enable([e for e in events if want[id(e)]], True, inst)
        except BaseException:       # (no tool id free, say): as it was
            self.set_enable(before, True, inst)
            raise

    # -- instances/
    def _split(self, path: str) -> tuple[TraceInstance, list[str]]:
        """The instance a path is in, and the path's parts within it."""
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "instances":
            inst = self.instances.get(parts[1])
            if inst is None:
                raise TraceError("NO_SUCH_FILE", path, 0)
            return inst, parts[2:]
        return self.instance, parts

    def mkdir(self, path: str) -> None:
        """``mkdir instances/NAME``: a new tracing instance."""
        parts = [p for p in path.split("/") if p]
        if len(parts) != 2 or parts[0] != "instances":
            raise TraceError("NOT_WRITABLE", path, 0, detail="only instances/NAME can be made")
        name = parts[1]
        if not INSTANCE_NAME.fullmatch(name):
            raise TraceError("BAD_INSTANCE_NAME", path, len("instances/"))
        with self.lock:
            if name in self.instances:
                raise TraceError("INSTANCE_EXISTS", path, len("instances/"))
            self.instances[name] = self._wire(TraceInstance())

    def rmdir(self, path: str) -> None:
        """``rmdir instances/NAME``: the instance and all it traced, gone."""
        parts = [p for p in path.split("/") if p]
        if len(parts) != 2 or parts[0] != "instances" or parts[1] not in self.instances:
            raise TraceError("NO_SUCH_FILE", path, 0)
        with self.lock:
            if self.instances[parts[1]].buffer.raw_readers:
                raise TraceError("INSTANCE_BUSY", path, len("instances/"))
            inst = self.instances.pop(parts[1])
        inst.commands.clear()
        self.probes.forget_instance(inst)
        self.tracepoints.forget_instance(inst)
        inst.set_tracer("nop")
        inst.set_options("nofunction-fork noevent-fork")
        inst.set_filter("", append=False)
        inst.set_filter("", append=False, notrace=True)
        inst.set_graph_filter("", append=False)
        inst.set_graph_filter("", append=False, notrace=True)
        # Its records hold its events, and each thread's ring is held by the
        # thread (a thread-local): a cycle no collection frees while the
        # thread lives, keeping every event and the tracefs itself alive.
        inst.clear()

    def ls(self, path: str = "") -> list[str]:
        """The names in a directory of tracefs (the top one by default)."""
        top = [p for p in path.split("/") if p]
        if top == ["instances"]:
            return sorted(self.instances)
        if top == ["trace_stat"]:
            return [f"function{tid}" for tid in sorted(self.profiler.per_thread())]
        inst, parts = self._split(path)
        if not parts:
            names = {name.split("/", 1)[0] for name in self.instance_files(inst)}
            if inst is self.instance:
                names |= set(self.global_files) | {"instances", "trace_stat"}
            return sorted(names)
        if parts == ["options"]:
            return sorted(inst.options)
        if parts[0] == "events":
            probes, points = self.probes, self.tracepoints
            if len(parts) == 1:
                return ["enable"] + sorted({*probes.groups(), *points.groups()})
            if len(parts) == 2 and parts[1] in points.groups():
                return ["enable"] + sorted(e.name for e in points.in_group(parts[1]))
            if len(parts) == 2 and parts[1] in probes.groups():
                return ["enable"] + sorted(e.name for e in probes.in_group(parts[1]))
            if len(parts) == 3 and (probes.find(parts[1], parts[2])
                                    or points.find(parts[1], parts[2])):
                return list(EVENT_FILES)
        raise TraceError("NO_SUCH_FILE", path, 0)

    def _file(self, path: str) -> tuple[Reader, Writer]:
        inst, parts = self._split(path)
        name = "/".join(parts)
        entry = self.instance_files(inst).get(name)
        if entry is None and inst is self.instance:
            entry = self.global_files.get(name)
        if entry is None and parts[:1] == ["events"]:
            entry = self._event_file(inst, parts[1:])
        if entry is None and inst is self.instance and len(parts) == 2 and parts[0] == "trace_stat":
            entry = self._stat_file(parts[1])
        if entry is None:
            raise TraceError("NO_SUCH_FILE", path, 0)
        return entry

    def _event_file(self, inst: TraceInstance, parts: list[str]) -> tuple[Reader, Writer] | None:
        """events/GRP/enable and events/GRP/EVENT/{enable,filter,format,hist,id,trigger}."""
        probes = self.probes
        if parts and parts[0] in self.tracepoints.groups():
            return self._tracepoint_file(inst, parts)
        if len(parts) == 2 and parts[1] == "enable" and parts[0] in probes.groups():
            group = probes.in_group(parts[0])
            return (lambda: enable_text(group, inst),
                    lambda text, append: probes.set_enable(group, _parse_bool(text), inst))
        if len(parts) != 3 or parts[2] not in EVENT_FILES:
            return None
        event = probes.find(parts[0], parts[1])
        if event is None:
            return None
        return {
            "enable": (lambda: event.file(inst).enable_text(),
                       lambda text, append: probes.set_enable([event], _parse_bool(text), inst)),
            "filter": (lambda: event.file(inst).filter.text + "\n",
                       lambda text, append: probes.set_filter(event, text, inst)),
            "format": (event.format_text, None),
            "id": (lambda: f"{event.id}\n", None),
            "hist": (lambda: hist_text(event.file(inst)), None),
            "trigger": (lambda: event.file(inst).trigger_text(),
                        lambda text, append: self._write_trigger(event.file(inst), text, append)),
        }[parts[2]]

    def _tracepoint_file(self, inst: TraceInstance, parts: list[str]) -> tuple[Reader, Writer] | None:
        """The files of Python's tracepoints (events/python/, gc/, audit/)."""
        points = self.tracepoints
        if len(parts) == 2 and parts[1] == "enable":
            group = points.in_group(parts[0])
            return (lambda: self.enable_text(group, inst),
                    lambda text, append: points.set_enable(group, _parse_bool(text), inst))
        event = points.find(parts[0], parts[1]) if len(parts) == 3 else None
        if event is None or parts[2] not in EVENT_FILES:
            return None
        files: dict[str, tuple[Reader, Writer]] = {
            "enable": (lambda: self.enable_text([event], inst),
                       lambda text, append: points.set_enable([event], _parse_bool(text), inst)),
            "filter": (lambda: event.file(inst).filter.text + "\n",
                       lambda text, append: points.set_filter(event, text, inst)),
            "format": (event.format_text, None),
            "id": (lambda: f"{event.id}\n", None),
            "hist": (lambda: hist_text(event.file(inst)), None),
            "trigger": (lambda: event.file(inst).trigger_text(),
                        lambda text, append: self._write_trigger(event.file(inst), text, append)),
        }
        return files.get(parts[2])
    def _write_trigger(self, file: Triggered, text: str, append: bool) -> None:
        """A write to an event's ``trigger``: its commands name events of the same instance."""
        def find(group: str, name: str) -> Triggered | None:
            event: Any = self.probes.find(group, name) or self.tracepoints.find(group, name)
            return event.file(file.instance) if event is not None else None
        with self.probes.lock, self.tracepoints.lock:
            file.write_trigger(text, append, TriggerContext(text, find, self.probes.log))

    def _stat_file(self, name: str) -> tuple[Reader, Writer] | None:
        """trace_stat/function<TID>: a thread's profile, as the kernel's per-CPU one."""
        tid = name.removeprefix("function")
        if not tid.isdigit() or int(tid) not in self.profiler.per_thread():
            return None

        def read() -> str:
            functions = self.profiler.per_thread().get(int(tid), {})
            return stat_text(profile_rows(functions), self.instance.options["graph-time"])
        return read, None

    def reset(self) -> None:
        """Every file back to its default: no instance, no probe event, no
        tracer, no filter, default options and size, empty buffers and error_log, no snapshot."""
        for name in list(self.instances):
            self.rmdir(f"instances/{name}")
        self.probes.clear_triggers(self.instance)
        self.tracepoints.clear_triggers(self.instance)
        self.write("events/enable", "0")
        self.write("function_profile_enabled", "0")
        self.profiler = FunctionProfiler(self.instance.filter, self.instance.notrace,
                                         self.instance.options)
        self.write("stack_tracer_enabled", "0")
        self.stack = StackTracer()
        self.write("dynamic_events", "")
        self.write("error_log", "")
        self.write("current_tracer", "nop")
        self.write("tracing_on", "1")
        self.write("set_ftrace_filter", "")
        self.instance.commands.clear()
        self.write("set_ftrace_notrace", "")
        for name in PID_FILES:
            self.write(name, "")
        self.write("set_graph_function", "")
        self.write("set_graph_notrace", "")
        self.write("max_graph_depth", "0")
        self.write("tracing_thresh", "0")
        self.write("buffer_size_kb", str(DEFAULT_SIZE_KB))
        self.write("trace_clock", "local")
        self.write("trace_options", " ".join(k if v else "no" + k for k, v in TOP_OPTIONS.items()))
        self.write("trace", "")
        self.write("snapshot", "0")     # (a snapshot trigger or command may have taken one)

    def reinit_after_fork(self) -> None:
        """In a forked child: the locks anew (a thread of the parent may have
        held one at the fork, and that thread does not exist here)."""
        for lock in (self.probes.lock, self.tracepoints.lock, self.lock):
            lock._at_fork_reinit()      # type: ignore[attr-defined]  # (threading's own way)
        for inst in [self.instance, *self.instances.values()]:
            inst.lock._at_fork_reinit()     # type: ignore[attr-defined]
            inst.buffer.after_fork_in_child()

    def read(self, path: str) -> str:
        reader, _ = self._file(path)
        if reader is None:
            raise TraceError("NOT_READABLE", path, 0)
        return reader()

    def write(self, path: str, text: str | bytes, append: bool = False) -> None:
        """Write ``text`` to the file at ``path`` (``>``; ``>>`` with ``append``);
        bytes for a binary file (``trace_marker_raw``)."""
        if isinstance(text, bytes):     # (its writer takes them back: surrogateescape)
            text = text.decode("utf-8", "surrogateescape")
        _, writer = self._file(path)
        if writer is None:
            raise TraceError("NOT_WRITABLE", path, 0)
        try:
            writer(text, append)
        except ToolIdBusy as e:
            # Not the command's fault but the process's state: error_log
            # says so, and who holds the ids, whichever file was written.
            if not e.command:
                e.place(f"echo {text.strip()} > {path.strip('/')}", e.pos)
            entry = e.render() + "\n"
            if self.probes.errors[-1:] != [entry]:      # (an event's enable logged it)
                self.probes.log(e)
            raise


_instance: Tracefs | None = None
_lock = _thread.allocate_lock()


def forget() -> None:
    """Drop the process's tracefs; the next ``tracefs()`` makes a new one."""
    global _instance
    with _lock:
        _instance = None
        fentry._marker = None
        rename.unwatch()        # threading's Thread.name back


def tracefs() -> Tracefs:
    """The process's tracefs (one global instance, as /sys/kernel/tracing)."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = Tracefs()
        return _instance
