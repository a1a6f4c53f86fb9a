"""events.trace_kprobe: probe events, as the kernel's ``trace_kprobe.c``.

A line written to ``kprobe_events`` is parsed by ``probe_parser`` (the grammar
every probe definition shares) into a ``ProbeEvent``; enabling it arms a
``Kprobe`` or ``Kretprobe``, whose handler fetches the fetchargs, applies the
event's filter and records ``(event, site, values)`` into the trace's ring
buffer, ``values`` holding one stored value per field (``field_names``).
Text is made when the trace is read (``line()``), as the event's ``print
fmt`` says.

A probe event's handler is a ``hotpath.ProbeTrace`` (the kernel's
``kprobe_dispatcher``): the C one does the whole hit itself when its
fetchargs and filter are simple, and calls ``_hit`` / ``_exit_hit`` (the
Python path, the reference) for anything else; the pure-Python one always
calls them.
"""

from __future__ import annotations

import _thread
import re
import sys
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from .. import hotpath, kprobes, pythreads
from ..errors import TraceError
from ..symbols import call_site, check_batch
from ..tracers.ring_buffer import SKIP_EVENT
from .event_format import EventFormat
from .fetch import AT_ENTRY, FAULT, fast_specs, fetch_all, snapshot
from .filter import NO_FILTER, Filter, compile_filter
from .probe_parser import (
    KRETPROBE_MAXACTIVE_MAX,
    FetchArg,
    ProbeDefinition,
    ProbeRemoval,
    bitfield,
    definition_words,
    format_definition,
    log_command,
    parse_probe,
)
from .stack import record_stack
from .trigger import Trigger, Triggered, set_files_enabled

if TYPE_CHECKING:
    from ..tracers.trace import TraceInstance
    from .tracepoints import Tracepoints

FIRST_EVENT_ID = 2000           # ids of dynamic events, after the static ones'
ERROR_LOG_MAX = 8               # entries the error_log keeps: the kernel's TRACING_LOG_ERRS_MAX

_NUM_TYPES = re.compile(r"[usx](8|16|32|64)")


class ProbeEvent:
    """One probe event (``struct trace_kprobe``): a definition, and its
    ``EventFile`` in each tracing instance that enabled it (the kernel's
    ``trace_probe_link``s): each arms a probe that records into its
    instance's buffer, through its instance's filter."""

    source: ProbeEvent | None = None        # the event it is attached to (an eprobe's)

    def __init__(self, defn: ProbeDefinition, events: ProbeEvents, event_id: int,
                 module: str | None = None, pending: bool = False) -> None:
        self.defn = defn
        self.events = events
        self.id = event_id
        self.format = EventFormat(defn)
        self.files: dict[int, EventFile] = {}       # id(instance) -> its file
        # What it probes: MOD:QUALNAME, the module a bare symbol was found in
        # when defined (as the kernel resolves it once); None for PATH:LINE.
        self.symbol_name = None if module is None else f"{module}:{defn.symbol}"
        self.pending = module if pending else None  # the module it waits for, not found when defined
        self._names = None if any(a.kind == "args" for a in defn.args) \
            else tuple(a.name for a in defn.args)
        self._nhit = 0              # hits of files no longer there
        self._nmissed = 0
        self.refs = 0               # eprobes attached to it: it cannot be removed (trace_eprobe)
        self.command: str | None = None     # the line that defined it, as error_log shows one
        self.c_target: object = None    # the C function of a C probe (trace_cprobe)

    @property
    def name(self) -> str:
        return str(self.defn.event)

    @property
    def group(self) -> str:
        return str(self.defn.group)

    @property
    def enabled(self) -> bool:
        """Enabled in some instance (then it cannot be removed: busy)."""
        return any(f.enabled for f in self.files.values())

    @property
    def nhit(self) -> int:
        """Hits, in every instance it is enabled in (each counts its own)."""
        return self._nhit + sum(f.nhit for f in self.files.values())

    @property
    def nmissed(self) -> int:
        """Hits with a fetch that faulted, and handlers that raised."""
        return self._nmissed + sum(f.nmissed for f in self.files.values())

    def file(self, instance: TraceInstance) -> EventFile:
        """This event's file in ``instance`` (its enable and filter there)."""
        f = self.files.get(id(instance))
        if f is None:
            f = self.files[id(instance)] = self._new_file(instance)
        return f

    def _new_file(self, instance: TraceInstance) -> EventFile:
        if self.c_target is not None:
            from .trace_cprobe import CEventFile  # (it builds on EventFile)
            return CEventFile(self, instance)
        return EventFile(self, instance)

    def release(self) -> None:
        """It is removed (an eprobe lets go of its source)."""

    def forget(self, instance: TraceInstance) -> None:
        """``instance`` is removed: its file goes, its triggers off, disabled."""
        f = self.files.pop(id(instance), None)
        if f is not None:
            f.clear_triggers()
            f.disable()
            self._nhit += f.nhit
            self._nmissed += f.nmissed

    def field_names(self, code: CodeType | None) -> tuple[str, ...]:
        """The names of a record's values (``$args`` gives the parameters of ``code``)."""
        return self.format.field_names(code)

    # -- reading
    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        """The record's line, as its print fmt says (``EventFormat``)."""
        return self.format.line(site, values)

    def raw_description(self) -> list[str]:
        """What a reader outside the process needs to print this event's
        records (the raw stream's description of it)."""
        return ["event", self.group, self.name, format_definition(self.defn)]

    def format_text(self) -> str:
        """The ``format`` file: fields and print fmt, as the kernel's."""
        lines = [f"name: {self.name}", f"ID: {self.id}", "format:",
                 "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;",
                 "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;",
                 "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;",
                 "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;",
                 ""]
        if self.defn.is_return:
            lines += ["\tfield:unsigned long __probe_func;\toffset:8;\tsize:8;\tsigned:0;",
                      "\tfield:unsigned long __probe_ret_ip;\toffset:16;\tsize:8;\tsigned:0;"]
            offset = 24
        else:
            lines += ["\tfield:unsigned long __probe_ip;\toffset:8;\tsize:8;\tsigned:0;"]
            offset = 16
        fmts: list[str] = []
        refs: list[str] = []
        for a in self.defn.args:
            ctype, size, signed, fmt = _field_layout(a)
            ref = f"__get_str({a.name}{{}})" if a.type == "string" else f"REC->{a.name}{{}}"
            name = a.name
            if a.array_len:                 # as the kernel's: u8 x[] / __data_loc char[][N] x
                size *= a.array_len
                if a.type == "string":
                    ctype += f"[{a.array_len}]"
                else:
                    name += "[]"
                fmt = "{" + ",".join([fmt] * a.array_len) + "}"
                refs.extend(ref.format(f"[{i}]") for i in range(a.array_len))
            else:
                refs.append(ref.format(""))
            lines.append(f"\tfield:{ctype} {name};\toffset:{offset};\tsize:{size};\tsigned:{signed};")
            offset += size
            fmts.append(f"{a.name}={fmt}")
        head = '"(%lx <- %lx)' if self.defn.is_return else '"(%lx)'
        ips = "REC->__probe_func, REC->__probe_ret_ip" if self.defn.is_return else "REC->__probe_ip"
        lines += ["", f"print fmt: {head}{' ' if fmts else ''}{' '.join(fmts)}\", "
                      + ", ".join([ips] + refs)]
        return "\n".join(lines) + "\n"

    def field_kinds(self) -> dict[str, str]:
        return {a.name: _filter_kind(a) for a in self.defn.args if a.kind != "args"}


class EventFile(Triggered):
    """A probe event in one tracing instance (``struct trace_event_file``):
    its ``enable``, ``filter`` and ``trigger`` there, and while enabled (or
    in soft mode, for triggers) the probe that records into that instance's
    buffer."""

    def __init__(self, event: ProbeEvent, instance: TraceInstance) -> None:
        self.event = event
        self.instance = instance
        self.filter: Filter = NO_FILTER
        self.filtered = False
        self.filter_common = False
        self.at_offset = bool(event.defn.offset or event.defn.path)
        self._nhit = 0              # hits taken by the Python path, and by past traces
        self._nmissed = 0           # fetch or handler failures, as the kernel's misses
        self.probe: kprobes.Kprobe | kprobes.Kretprobe | None = None
        self.trace: hotpath.ProbeTrace | None = None    # the hot path's, while enabled
        # A return probe's fetchargs taken at entry ($argN, $args): only a
        # probe that has some pays for an entry store.
        self.at_entry = tuple(a for a in event.defn.args if a.kind in AT_ENTRY) \
            if event.defn.is_return else ()
        self.init_triggers()
        # What a hit of the Python path records with: in soft mode, the
        # triggers' way (chosen when armed, so an event without any pays nothing).
        self._record: Callable[[tuple[Any, ...], tuple[object, ...], FrameType], None] = \
            self._record_event
        # Called on every hit with (site, values, frame), whatever this
        # event's own filter, after its record: the eprobes attached to it
        # here (trace_eprobe), as the kernel's EVENT_TRIGGER_FL_PROBE
        # triggers, each holding the event in soft mode.
        self.hit_hooks: list[Callable[[tuple[Any, ...], tuple[object, ...], FrameType], None]] = []

    @property
    def group(self) -> str:
        return self.event.group

    @property
    def name(self) -> str:
        return self.event.name

    @property
    def enabled(self) -> bool:
        """Armed (Triggered's contract): recording, or in soft mode."""
        return self.probe is not None

    @property
    def nhit(self) -> int:
        return self._nhit + (self.trace.nhit if self.trace is not None else 0)

    @property
    def nmissed(self) -> int:
        trace, probe = self.trace, self.probe
        return (self._nmissed + (trace.nmissed if trace is not None else 0)
                + (probe.nmissed if probe is not None else 0))

    # -- enable / disable
    def enable(self) -> None:
        if self.probe is not None:
            return
        d = self.event.defn
        command = format_definition(d)
        try:
            trace = self._make_trace()
            probe: kprobes.Kprobe | kprobes.Kretprobe
            symbol_name = self.event.symbol_name
            if d.is_return:
                probe = kprobes.Kretprobe(symbol_name, handler=trace)
                kprobes.register_kretprobe(probe)
            else:
                probe = (kprobes.Kprobe(path=d.path, line=d.line, pre_handler=trace)
                         if d.path is not None
                         else kprobes.Kprobe(symbol_name, d.offset, pre_handler=trace))
                kprobes.register_kprobe(probe)
            self.trace = trace
        except TraceError as e:
            # Point the caret at the probe point in the definition as written.
            e.place(command, command.find(" ") + 1)
            raise
        self.probe = probe

    def _make_trace(self) -> hotpath.ProbeTrace:
        """The hot path's handler for this probe."""
        specs = self._fast_specs()
        buffer = self.instance.buffer
        d = self.event.defn
        # Without rNN, as many activations as the kernel allows at most:
        # a Python program recurses deeper than the kernel's default.
        trace = hotpath.ProbeTrace(self.event, specs, buffer.local, buffer.attach, buffer.recording,
                                   snapshot, FAULT, self._exit_hit if d.is_return else self._hit,
                                   self._entry_hit if self.at_entry else None,
                                   d.maxactive or KRETPROBE_MAXACTIVE_MAX)
        self._arm_filter(trace)
        self._arm_triggers(trace)
        return trace

    def _arm_triggers(self, trace: hotpath.ProbeTrace) -> None:
        """Soft mode or not: which record the Python path makes, and what the C path calls."""
        soft = bool(self.sm_ref)
        self._record = self._record_triggered if soft else self._record_event
        trace.set_triggers(self._c_triggers if soft else None, self._c_post_triggers if soft else None)

    def _fast_specs(self) -> tuple[Any, ...] | None:
        """The fetchargs for the C path, or None: every hit takes the Python
        path (so with the ``stacktrace`` option, which records the stack there)."""
        if self.instance.options["stacktrace"] or self.hit_hooks:
            return None
        specs = fast_specs(self.event.defn.args)
        return specs if specs is not None and len(specs) <= hotpath.PROBE_MAX_ARGS else None

    def _arm_filter(self, trace: hotpath.ProbeTrace) -> None:
        """Give the hot path the filter: its program over value indexes, if it
        can run it, and the Python filter over a record's values."""
        if not self.filtered:
            trace.set_filter(None, None)
            return
        program = self.filter.program
        if program is not None and not self.filter_common and self._fast_specs() is not None:
            index = {name: i for i, name in enumerate(self.event._names or ())}
            preds, code = program
            if all(field in index for field, *_ in preds):
                program = (tuple((index[field], op, operand, negate)
                                 for field, op, operand, negate in preds), code)
            else:
                program = None
        else:
            program = None
        trace.set_filter(program, self._matches)

    def attach_hook(self, hook: Callable[[tuple[Any, ...], tuple[object, ...], FrameType], None]) -> None:
        """Call ``hook`` on every hit here, whatever this event's filter (an
        eprobe attached to it): a soft-mode reference, as a trigger's, and
        the Python path, which calls the hooks."""
        armed = self.enabled
        self.hit_hooks.append(hook)
        try:
            self.enable_disable(True, soft=True)
            if armed:
                self.rebuild()
        except TraceError:
            self.hit_hooks.remove(hook)
            raise

    def detach_hook(self, hook: Callable[[tuple[Any, ...], tuple[object, ...], FrameType], None]) -> None:
        self.hit_hooks.remove(hook)
        self.enable_disable(False, soft=True)
        if self.enabled and not self.hit_hooks:
            self.rebuild()              # back on the C path, if it can take it

    def rebuild(self) -> None:
        """Armed anew, in the same mode: which path its hits take changed."""
        self.disable()
        self.enable()

    def disable(self) -> None:
        if self.probe is None:
            return
        if isinstance(self.probe, kprobes.Kretprobe):      # (the definition's is_return)
            kprobes.unregister_kretprobe(self.probe)
        else:
            kprobes.unregister_kprobe(self.probe)
        self._nmissed += self.probe.nmissed
        if self.trace is not None:
            self._nhit += self.trace.nhit
            self._nmissed += self.trace.nmissed
            self.trace = None
        self.probe = None

    def rearm(self) -> None:
        """In or out of soft mode: its hits run the triggers, or not."""
        if self.trace is not None:
            self._arm_triggers(self.trace)

    # -- the hit: fetch, filter, record (runs in the traced thread, on every hit)
    def _hit(self, frame: FrameType) -> None:
        """An entry, offset or line probe's hit, in Python (the C ProbeTrace's reference)."""
        self._nhit += 1
        args = self.event.defn.args
        values = fetch_all(args, frame) if args else ()
        self._record((frame.f_code, frame.f_lasti if self.at_offset else 0), values, frame)

    def _entry_hit(self, frame: FrameType) -> tuple[object, ...]:
        """A return probe's entry, in Python: the stored values of its
        ``$argN`` and ``$args``, the arguments as passed."""
        return fetch_all(self.at_entry, frame)

    def _exit_hit(self, frame: FrameType, value: object, raised: bool,
                  entered: tuple[object, ...] | None = None) -> None:
        """A return probe's hit, in Python: ``value`` is the return value, or
        the exception the frame is left by (then $retval is a fault);
        ``entered``: what ``_entry_hit`` fetched at this activation's entry."""
        self._nhit += 1
        args = self.event.defn.args
        values = fetch_all(args, frame, entry=entered) if raised \
            else fetch_all(args, frame, value, entered)
        caller = frame.f_back               # the return address: the call site
        if caller is not None:
            c = caller.f_code
            site: tuple[Any, ...] = (c, call_site(c, caller.f_lasti), frame.f_code,
                                     type(value).__name__ if raised else None)
        else:
            site = (None, 0, frame.f_code, type(value).__name__ if raised else None)
        self._record(site, values, frame)

    def _matches(self, values: tuple[object, ...], code: CodeType | None = None) -> bool:
        """The filter, on a record's values (``code``: the probed code, for ``$args``)."""
        fields = dict(zip(self.event.field_names(code), values))
        return self.filter.matches(_filter_values(fields) if self.filter_common else fields)

    def _record_triggered(self, site: tuple[Any, ...], values: tuple[object, ...],
                          frame: FrameType) -> None:
        """The record in soft mode (``soft_hit``): the triggers, then the
        record if it is to be, then the post triggers.  A fault counts as a
        miss, recorded or not (as the C path counts it)."""
        record, post = self.soft_hit(values, frame.f_code, frame)
        if record:
            self._record_event(site, values, frame)
        else:
            if any(v is FAULT for v in values):     # (is: a fetched value's __eq__ is not called)
                self._nmissed += 1
            if self.hit_hooks and self.instance.tracing_on:
                self._call_hooks(site, values, frame)
        if post:
            self.call_post_triggers(post, frame)

    def _c_triggers(self, values: tuple[object, ...]) -> object:
        """The C path's hit in soft mode: the triggers, on the values it
        fetched; whether to record, as ``_record_triggered`` decides."""
        record, post = self.soft_hit(values, None, sys._getframe(1))    # (the probed frame)
        return (record, post) if post else record

    def _c_post_triggers(self, post: list[Trigger]) -> None:
        self.call_post_triggers(post, sys._getframe(1))

    def _record_event(self, site: tuple[Any, ...], values: tuple[object, ...], frame: FrameType) -> None:
        for v in values:
            if v is FAULT:
                self._nmissed += 1
                break
        instance = self.instance
        if not instance.tracing_on:
            return
        self._commit(site, values, frame)
        if self.hit_hooks:
            self._call_hooks(site, values, frame)

    def _call_hooks(self, site: tuple[Any, ...], values: tuple[object, ...], frame: FrameType) -> None:
        """Its eprobes, on every hit whatever its own filter, after its
        record: the kernel's eprobe records follow the attached event's."""
        for hook in self.hit_hooks:
            hook(site, values, frame)

    def _commit(self, site: tuple[Any, ...], values: tuple[object, ...], frame: FrameType) -> None:
        instance = self.instance
        if self.filtered and not self._matches(values, frame.f_code):
            return
        tb = instance.buffer.current()
        if tb.skip & SKIP_EVENT:        # set_event_pid left this thread out
            return
        tb.record((self.event, site, values))
        if instance.options["stacktrace"]:
            record_stack(tb, frame)

    def compile_trigger_filter(self, text: str) -> Filter:
        return compile_event_filter(text, self.event.defn.args)

    def trigger_fields(self, values: tuple[object, ...], code: CodeType | None,
                       common: bool) -> dict[str, object]:
        names = self.event._names          # (known once, unless $args names them per code)
        fields = dict(zip(self.event.field_names(code) if names is None else names, values))
        return _filter_values(fields) if common else fields

    def set_filter(self, text: str) -> None:
        self.filter = compile_event_filter(text, self.event.defn.args)
        self.filtered = not self.filter.empty
        # comm and common_pid cost a lookup each: only when the filter names them
        self.filter_common = bool(re.search(r"\b(comm|common_pid)\b", text))
        if self.trace is not None:
            self._arm_filter(self.trace)


def _field_layout(arg: FetchArg) -> tuple[str, int, int, str]:
    t = arg.type
    if t is None:
        return "pyobject", 8, 0, "%s"
    if t == "string":
        return "__data_loc char[]", 4, 1, '\\"%s\\"'
    if t == "symbol":
        return "unsigned long", 8, 0, "%pS"
    if t[0] == "b":                     # a bitfield prints as its unsigned container
        bits = (bitfield(t) or (0, 0, 64))[2]
        return f"u{bits}", bits // 8, 0, "%u"
    bits = int(t[1:])
    ctype = {"u": f"u{bits}", "s": f"s{bits}", "x": f"u{bits}"}[t[0]]
    fmt = {"u": "%u", "s": "%d", "x": "0x%x"}[t[0]]
    if bits == 64:                      # the kernel's print_fmt for u64/s64/x64
        fmt = fmt.replace("%", "%L")
    return ctype, bits // 8, int(t[0] == "s"), fmt


def _filter_kind(arg: FetchArg) -> str:
    if arg.type == "string" or arg.type == "symbol" or arg.kind == "comm":
        return "str"
    return "num"


def compile_event_filter(text: str, args: tuple[FetchArg, ...]) -> Filter:
    """Compile a filter over an event's fields.  A field with no type holds
    whatever Python value was fetched, so it is numeric, unless the filter
    compares it with a string."""
    kinds = {a.name: _filter_kind(a) for a in args if a.kind != "args"}
    untyped = {a.name for a in args if a.type is None and a.kind != "comm"}
    while True:
        try:
            return compile_filter(text, kinds)
        except TraceError as e:
            field = _field_before(text, e.pos)
            if field in untyped and kinds.get(field) == "num":
                kinds[field] = "str"
                continue
            raise


def _field_before(text: str, pos: int) -> str | None:
    names = re.findall(r"[A-Za-z_]\w*", text[:pos])
    return names[-1] if names else None


def event_name_pos(line: str) -> int:
    """Where a definition names its event (after ``p:``), or 0 if it takes the default name."""
    return line.find(":") + 1 if ":" in line.split()[0] else 0


def _removal_matches(removal: ProbeRemoval, key: tuple[str, str], defn: ProbeDefinition) -> bool:
    """The kernel's trace_kprobe_match: the names, then the probe point and
    each argument given, compared as reading ``kprobe_events`` shows them."""
    group, name = key
    if (removal.event and removal.event != name) or removal.group not in (None, group):
        return False
    if removal.point is None:
        return True
    words = definition_words(defn)
    return (defn.match_head(removal.point) and len(removal.args) <= len(words) - 2
            and list(removal.args) == words[2:2 + len(removal.args)])


def _filter_values(fields: dict[str, object]) -> dict[str, object]:
    """The event's fields, and the common ones the filter may name (the event's win)."""
    d: dict[str, object] = {"comm": pythreads.comm(),
                            "common_pid": _thread.get_native_id()}
    d.update(fields)
    return d


class ProbeEvents:
    """``kprobe_events``, ``kprobe_profile``, ``error_log``, and the probe
    events' files in each instance's ``events/``."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], ProbeEvent] = {}
        self.errors: list[str] = []
        self.lock = _thread.RLock()
        self._next_id = FIRST_EVENT_ID
        self._tracepoints: weakref.ref[Tracepoints] | None = None

    @property
    def tracepoints(self) -> Tracepoints | None:
        """Python's tracepoints, which eprobes and tprobes attach to (the
        Tracefs's, held weakly: the process's error log keeps this registry)."""
        return self._tracepoints() if self._tracepoints is not None else None

    @tracepoints.setter
    def tracepoints(self, points: Tracepoints) -> None:
        self._tracepoints = weakref.ref(points)

    # -- error_log
    def log(self, error: TraceError) -> None:
        self.errors.append(error.render() + "\n")
        del self.errors[:-ERROR_LOG_MAX]

    def error_log(self) -> str:
        return "".join(self.errors)

    # -- kprobe_events
    def write(self, text: str, append: bool) -> None:
        """Apply a write to kprobe_events: ``>`` clears every kprobe event
        first; then each line, in order (an error stops there, as in the kernel)."""
        with self.lock, check_batch():
            if not append:
                self.release_all("kprobe", text)
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):     # comments, as the kernel skips them
                    self._apply(line)

    def release_all(self, dyn_type: str | None, text: str) -> None:
        """Every event of ``dyn_type`` (None: every one) removed, or none if
        one is enabled or has an eprobe that stays (the kernel's -EBUSY,
        which it does not log).  Eprobes go before what they are attached to."""
        going = [k for k, e in self.events.items() if dyn_type in (None, e.defn.dyn_type)]
        for key in going:
            e = self.events[key]
            if e.enabled or e.refs > sum(1 for k in going if self.events[k].source is e):
                raise TraceError("BUSY", text.strip(), 0, subsystem="trace_kprobe")
        for key in reversed(going):
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        self.events.pop(key).release()

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def insert(self, event: ProbeEvent, line: str) -> None:
        """A new event, defined by ``line`` (its name checked free by the caller)."""
        event.command = log_command(line)
        self.events[(event.group, event.name)] = event

    def _fail(self, error: TraceError) -> NoReturn:
        self.log(error)
        raise error

    def _apply(self, line: str) -> None:
        if line[0] == "-":
            self._remove(line)
            return
        try:
            defn = parse_probe(line)
        except TraceError as e:
            self._fail(e)
        assert isinstance(defn, ProbeDefinition)        # (a removal starts with '-')
        self.add(defn, line)

    def add(self, defn: ProbeDefinition, line: str,
            refine: Callable[[ProbeDefinition, str, bool], ProbeDefinition] | None = None) -> None:
        """Define the probe event of a parsed ``line``: its symbol checked,
        then ``refine(defn, module, pending)`` (an fprobe's parameters)."""
        command = log_command(line)
        module, pending = None, False
        from .trace_cprobe import PENDING, c_probe_target  # (it builds on EventFile)
        try:
            c_target = c_probe_target(defn, command)
        except TraceError as e:
            self._fail(e)
        if c_target is not None:
            module, pending = defn.module, c_target is PENDING
        elif defn.symbol_name is not None:
            try:        # what can be checked now is checked now, as registration does
                module, pending = kprobes.check_symbol(defn.symbol_name, defn.offset, defn.is_return)
                if refine is not None:
                    defn = refine(defn, module, pending)
            except TraceError as e:
                e.place(command, command.find(" ") + 1)     # on the symbol, as the kernel's
                if defn.dyn_type == "fprobe":
                    e.subsystem = "trace_fprobe"
                self._fail(e)
        if (defn.group, defn.event) in self.events:
            # Taken, enabled or not: disabling the other event would not free its name.
            self._fail(TraceError("EVENT_EXIST", command, event_name_pos(command),
                                  subsystem="trace_kprobe"))
        event = ProbeEvent(defn, self, self.next_id(), module, pending)
        event.c_target = c_target
        self.insert(event, line)
        if pending:
            self.log(TraceError("NO_MODULE_YET", command, command.find(" ") + 1,
                                subsystem="trace_kprobe", level="info"))

    def _remove(self, line: str, dyn_type: str | None = "kprobe") -> None:
        """``-:[GRP/][EVENT] [POINT [FETCHARGS]]``: every event it matches goes
        (the kernel's dyn_event_release), and an enabled one stops it there.
        The kernel logs none of its errors (-EINVAL, -ENOENT, -EBUSY): they
        are raised, not logged."""
        removal = parse_probe(line)
        assert isinstance(removal, ProbeRemoval)
        command = log_command(line)
        removed = False
        for key, event in list(self.events.items()):
            if dyn_type in (None, event.defn.dyn_type) and _removal_matches(removal, key, event.defn):
                if event.enabled:
                    raise TraceError("BUSY", command, 0, subsystem="trace_kprobe")
                if event.refs:
                    raise TraceError("EVENT_IN_USE", command, 0, subsystem="trace_kprobe")
                self._drop(key)
                removed = True
        if not removed:
            raise TraceError("NO_SUCH_EVENT", command, 2, subsystem="trace_kprobe")

    def remove(self, keys: list[tuple[str, str]]) -> None:
        """Remove these events, where no instance has them enabled (the end of
        the attach session that defined them)."""
        with self.lock:
            for key in reversed(keys):      # (an eprobe before its source)
                event = self.events.get(key)
                if event is not None and not event.enabled and not event.refs:
                    self._drop(key)

    def definitions(self, dyn_type: str | None = "kprobe") -> str:
        """The definitions (of ``dyn_type``; None: all, ``dynamic_events``); a
        comment (which a write skips) before one whose module is not found yet."""
        return "".join(
            (f"# pending: module {e.pending} not found yet\n"
             if e.pending is not None and e.pending not in sys.modules else "")
            + format_definition(e.defn) + "\n" for e in self.events.values()
            if dyn_type in (None, e.defn.dyn_type))

    def profile(self) -> str:
        """``kprobe_profile``: event, hits, misses (the kernel's columns)."""
        return "".join(f"  {e.name:<44} {e.nhit:>15} {e.nmissed:>15}\n"
                       for e in self.events.values() if e.defn.dyn_type == "kprobe")

    # -- events/ of an instance
    def groups(self) -> list[str]:
        return sorted({g for g, _ in self.events})

    def in_group(self, group: str) -> list[ProbeEvent]:
        return [e for (g, _), e in self.events.items() if g == group]

    def find(self, group: str, name: str) -> ProbeEvent | None:
        return self.events.get((group, name))

    def set_enable(self, events: list[ProbeEvent], on: bool, instance: TraceInstance) -> None:
        with self.lock, check_batch():
            try:
                set_files_enabled([e.file(instance) for e in events], on)
            except TraceError as err:
                self._fail(err)

    def set_filter(self, event: ProbeEvent, text: str, instance: TraceInstance) -> None:
        try:
            event.file(instance).set_filter(text)
        except TraceError as e:
            e.subsystem = "event filter parse error"
            self._fail(e)

    def rearm(self, instance: TraceInstance) -> None:
        """The events enabled in ``instance``, enabled anew: its
        ``stacktrace`` option changed, and with it which path their hits take."""
        with self.lock:
            for e in self.events.values():
                f = e.file(instance)
                if f.enabled:
                    f.rebuild()

    def clear_triggers(self, instance: TraceInstance) -> None:
        """Every trigger of ``instance``'s events off (the kernel's clear_event_triggers)."""
        with self.lock:
            for e in self.events.values():
                e.file(instance).clear_triggers()

    def forget_instance(self, instance: TraceInstance) -> None:
        """``instance`` is removed: every event's file there goes, disabled."""
        with self.lock:
            for e in self.events.values():
                e.forget(instance)


def enable_text(events: list[ProbeEvent], instance: TraceInstance) -> str:
    """An ``enable`` file: one event's own (``0*`` in soft mode), or a
    group's: 1, 0, or X when mixed, armed counting as enabled (the kernel's
    system_enable_read tests EVENT_FILE_FL_ENABLED, which soft mode sets)."""
    if len(events) == 1:
        return events[0].file(instance).enable_text()
    states = {e.file(instance).enabled for e in events}
    return "X\n" if len(states) > 1 else ("1\n" if states == {True} else "0\n")
