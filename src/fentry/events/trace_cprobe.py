"""events.trace_cprobe: probe events on C functions (``p builtins:len``).

The same ``kprobe_events`` line as a Python function's probe: ``MOD:NAME``
or ``MOD:TYPE.METHOD`` that names a C function or a C type's method makes a
C probe (``cprobes``).  It fires at the call site, so its line shows the
caller, as a kprobe's shows the probed address::

    p_sorted_0: (main+0x1a) arg1=[3, 1]
    r_sorted_0: (main+0x1a <- builtins:sorted)
    r_len_0: (main+0x2c <- builtins:len) raised (unknown)

A C function has no frame: of the fetchargs, ``$arg1`` (the first positional
argument; ``self`` of a method), ``$comm``, ``@MOD:NAME`` and immediates can
be fetched; ``$retval`` cannot (C_RETURN does not give it), nor the other
arguments, locals or ``$stack``: refused when defined, with a caret.  A
return probe knows whether the call raised, not what.
"""

from __future__ import annotations

import sys
from types import CodeType, FrameType, FunctionType
from typing import TYPE_CHECKING, Any

from .. import cprobes
from ..errors import TraceError
from ..tracers.ring_buffer import SKIP_EVENT
from .fetch import FAULT, convert, fetch, get_attr, get_item, snapshot
from .probe_parser import FetchArg, ProbeDefinition, format_definition
from .stack import record_stack
from .trace_kprobe import EventFile

if TYPE_CHECKING:
    from ..tracers.trace import TraceInstance
    from .trace_kprobe import ProbeEvent

# A C return probe's "raised": CALL's C_RAISE does not say what was raised.
RAISED_UNKNOWN = "(unknown)"
# The target of a C probe on a C module not imported yet: found when it is.
PENDING = "pending"


def c_probe_target(defn: ProbeDefinition, command: str) -> object | None:
    """The C function ``defn`` probes (PENDING: in a C extension module not
    imported yet), or None when it is not a C probe (a Python function's, or
    a name the kprobe path judges).  Raises TraceError, with a caret, for
    what a C probe cannot do."""
    if defn.symbol is None or defn.module is None:
        return None
    target = cprobes.resolve(defn.symbol_name)      # type: ignore[arg-type]
    point = command.find(" ") + 1
    if target is None and defn.module not in sys.modules and cprobes.is_c_module(defn.module):
        target = PENDING
    elif target is None or isinstance(target, FunctionType) \
            or (isinstance(target, type) and target.__flags__ & (1 << 9)):   # a Python class
        return None
    if target is not PENDING and not cprobes.is_c_function(target):
        raise TraceError("NOT_C_FUNCTION", command, point, subsystem="trace_kprobe",
                         detail=f"{defn.symbol_name} is a {type(target).__name__}")
    if defn.offset:
        raise TraceError("C_OFFSET", command, point + command[point:].find("+"),
                         subsystem="trace_kprobe")
    words = command.split(" ")
    for i, arg in enumerate(defn.args):
        code = _unfetchable(arg)
        if code is not None:
            word = words[i + 2]
            pos = sum(len(w) + 1 for w in words[:i + 2]) + word.find("=") + 1 \
                if not word.startswith("$") else sum(len(w) + 1 for w in words[:i + 2])
            raise TraceError(code, command, pos, subsystem="trace_kprobe")
    return target


def _unfetchable(arg: FetchArg) -> str | None:
    """The error code of a fetcharg a C function's call cannot give, or None."""
    if arg.kind == "retval":
        return "C_RETVAL"
    if arg.kind == "arg" and arg.root != 1:
        return "C_ARG_NUM"
    if arg.kind in ("args", "local", "stack"):
        return "C_NO_FRAME"
    return None


class CEventFile(EventFile):
    """A C probe event in one instance: an ``EventFile`` whose probe is a
    ``cprobes.Cprobe`` (no hot-path ProbeTrace: every hit is handled here)."""

    def __init__(self, event: ProbeEvent, instance: TraceInstance) -> None:
        super().__init__(event, instance)
        self.probe: cprobes.Cprobe | None = None        # type: ignore[assignment]
        self._count = cprobes.hits_counter()       # (threads bump it with no lock)
        self._past_errors = 0
        self.at_offset = True       # (its hist's __probe_ip: the call site, as its line shows)

    @property
    def nhit(self) -> int:
        return cprobes.counted(self._count)

    @property
    def nmissed(self) -> int:
        probe = self.probe
        return self._nmissed + self._past_errors + (probe.errors if probe is not None else 0)

    def enable(self) -> None:
        if self.probe is not None:
            return
        event = self.event
        target = event.c_target
        symbol_name = None
        if target is PENDING:       # its module is looked for again when new code runs
            found = cprobes.resolve(event.defn.symbol_name)     # type: ignore[arg-type]
            target, symbol_name = (found, None) if cprobes.is_c_function(found) \
                else (None, event.defn.symbol_name)
        probe = cprobes.Cprobe(target, ret_handler=self._c_exit, symbol_name=symbol_name) \
            if event.defn.is_return else cprobes.Cprobe(target, handler=self._c_hit, symbol_name=symbol_name)
        try:
            cprobes.register_cprobe(probe)
        except TraceError as e:
            command = format_definition(event.defn)
            e.place(command, command.find(" ") + 1)
            raise
        self.probe = probe

    def disable(self) -> None:
        probe = self.probe
        if probe is None:
            return
        cprobes.unregister_cprobe(probe)
        self._past_errors += probe.errors
        self.probe = None

    # -- the hit (runs in the calling thread, at every call of the C function)
    def _c_hit(self, code: CodeType, offset: int, arg0: object) -> None:
        self._count()
        args = self.event.defn.args
        self._c_record(code, (code, offset), _fetch_all(args, arg0) if args else ())

    def _c_exit(self, code: CodeType, offset: int, arg0: object, raised: bool) -> None:
        self._count()
        args = self.event.defn.args
        self._c_record(code, (code, offset, None, RAISED_UNKNOWN if raised else None),
                       _fetch_all(args, arg0) if args else ())

    def _c_record(self, code: CodeType, site: tuple[Any, ...], values: tuple[object, ...]) -> None:
        if any(v is FAULT for v in values):
            self._nmissed += 1
        if self.sm_ref:             # triggers on it, or an enable_event naming it: soft mode
            frame = _caller_frame(code)
            record, post = self.soft_hit(values, None, frame)       # type: ignore[arg-type]
            if record:
                self._c_commit(code, site, values)
            if post:
                self.call_post_triggers(post, frame)                # type: ignore[arg-type]
            return
        self._c_commit(code, site, values)

    def _c_commit(self, code: CodeType, site: tuple[Any, ...], values: tuple[object, ...]) -> None:
        instance = self.instance
        if not instance.tracing_on:
            return
        if self.filtered and not self._matches(values):
            return
        tb = instance.buffer.current()
        if tb.skip & SKIP_EVENT:        # set_event_pid left this thread out
            return
        tb.record((self.event, site, values))
        if instance.options["stacktrace"]:
            frame = _caller_frame(code)
            if frame is not None:
                record_stack(tb, frame)


def _caller_frame(code: CodeType) -> FrameType | None:
    """The calling frame (running ``code``), above fentry's callbacks."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    return frame


def _fetch_all(args: tuple[FetchArg, ...], arg0: object) -> tuple[object, ...]:
    """The stored value of each fetcharg; ``$arg1`` is ``arg0`` (MISSING: a fault)."""
    out: list[object] = []
    for arg in args:
        try:
            if arg.kind == "arg":
                if arg0 is cprobes.MISSING:
                    raise LookupError("$arg1")
                value = arg0
                for step in arg.path:
                    value = get_attr(value, step.key) if step.op == "attr" else get_item(value, step.key)
            else:                       # $comm, @MOD:NAME, an immediate: no frame needed
                value = fetch(arg, None)    # type: ignore[arg-type]
            value = (convert(value, arg.type, arg.array_len) if arg.type is not None
                     else snapshot(value))
        except Exception:
            value = FAULT
        out.append(value)
    return tuple(out)
