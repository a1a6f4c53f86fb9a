"""Python's own tracepoints: static events, as the kernel's ``TRACE_EVENT``s.

They exist without a definition, grouped as the kernel groups its events:

- ``python``: sys.monitoring's global events, with its semantics --
  ``raise`` (RAISE: in each frame the exception passes through), ``reraise``,
  ``exception_handled``, ``py_unwind``, ``c_raise``, and ``call_c`` /
  ``c_return`` (CALL of a callable that is not a Python function, C_RETURN);
- ``gc``: ``gc_start`` and ``gc_done``, from ``gc.callbacks``;
- ``audit``: one event per ``sys.audit`` event name (``events/audit.py``).

Each has ``enable``, ``filter``, ``format`` and ``id`` in every instance's
``events/GRP/EVENT/``; a ``TracepointFile`` is one event in one instance,
and ``_record`` is where a hit that passed its filter is written (as
``trace_kprobe.EventFile._record``).  A source is armed only while one of
its events is enabled in some instance: the monitoring events are set on a
tool id of their own (``arch.Monitor``) and removed with the last one, the
gc callback is removed, the audit hook's flag is cleared.

fentry's own work is never an event: a thread fentry made quiet (its agent,
its start-up), code in fentry's files, and stdlib code called from them.
"""

from __future__ import annotations

import _thread
import gc
import os
import re
import sys
import weakref
from collections.abc import Callable
from types import (
    BuiltinFunctionType,
    ClassMethodDescriptorType,
    CodeType,
    FrameType,
    FunctionType,
    MethodDescriptorType,
    MethodType,
    MethodWrapperType,
    WrapperDescriptorType,
)
from typing import TYPE_CHECKING, Any

from .. import arch, pythreads
from ..errors import TraceError
from ..hotpath import quiet_thread, recursion_guard
from ..lifetime import pop_at_death
from ..symbols import FENTRY_DIR, SYMBOLS
from ..tracers.ring_buffer import SKIP_EVENT
from .fetch import MAX_REPR, safe_repr
from .filter import NO_FILTER, Filter, compile_filter
from .stack import record_stack
from .tracepoint_format import TracepointFormat, value_text
from .trigger import Triggered, set_files_enabled

if TYPE_CHECKING:
    from ..tracers.trace import TraceInstance

FIRST_TRACEPOINT_ID = 1000      # the static events' ids; probe events' start at 2000
E = arch.EVENTS
STDLIB_DIR = os.path.dirname(os.__file__) + os.sep

# name -> (monitoring event, fields): the python group, in id order.
_EXC_FIELDS = ("type", "value", "func", "offset")
_CALL_FIELDS = ("callable", "func", "offset")
PYTHON_EVENTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "raise": (E.RAISE, _EXC_FIELDS),
    "reraise": (E.RERAISE, _EXC_FIELDS),
    "exception_handled": (E.EXCEPTION_HANDLED, _EXC_FIELDS),
    "py_unwind": (E.PY_UNWIND, _EXC_FIELDS),
    # (C_RAISE's callback is not given the exception: CPython holds it aside)
    "c_raise": (E.C_RAISE, _CALL_FIELDS),
    "call_c": (E.CALL, _CALL_FIELDS),
    "c_return": (E.C_RETURN, _CALL_FIELDS),
}
GC_EVENTS: dict[str, tuple[str, ...]] = {
    "gc_start": ("generation",),
    "gc_done": ("generation", "collected", "uncollectable"),
}
NUM_FIELDS = {"offset", "generation", "collected", "uncollectable"}
# -e takes GRP:EVENT of these groups as a tracepoint's name (else a probe definition).
TRACEPOINT_GROUPS = ("python", "gc", "audit")
_NAME = re.compile(r"([A-Za-z_]\w*):([A-Za-z_]\w*)")

_CALLS = E.CALL | E.C_RETURN | E.C_RAISE
# The types of C functions and methods, named by their slots.
_C_FUNCTIONS = (BuiltinFunctionType, MethodDescriptorType, WrapperDescriptorType,
                MethodWrapperType, ClassMethodDescriptorType)


def tracepoint_name(text: str) -> tuple[str, str] | None:
    """``(GRP, EVENT)`` if ``text`` names a tracepoint (``python:raise``),
    else None (a probe definition, say)."""
    m = _NAME.fullmatch(text.strip())
    return (m[1], m[2]) if m and m[1] in TRACEPOINT_GROUPS else None


def check_tracepoint(text: str, filter_text: str | None) -> Tracepoint:
    """What ``-e GRP:EVENT [-f FILTER]`` can be checked for before the
    program runs: the event is one (any name in ``audit``: the program may
    raise it), the filter compiles over its fields.  The tracepoint, as a
    definition alone (its fields, to check a ``--hist`` on it against)."""
    from .audit import AUDIT_FIELDS, event_name
    group, name = tracepoint_name(text) or ("", "")
    if group == "python":
        fields = PYTHON_EVENTS[name][1] if name in PYTHON_EVENTS else None
    elif group == "gc":
        fields = GC_EVENTS.get(name)
    else:
        fields = next((f for raw, f in AUDIT_FIELDS.items() if event_name(raw) == name), ())
    if fields is None:
        raise TraceError("NO_SUCH_EVENT", text, text.index(":") + 1)
    point = Tracepoint(group, name, fields, 0, Source(_thread.RLock()))
    if filter_text is not None:
        try:
            compile_tracepoint_filter(filter_text, point)
        except TraceError as e:
            e.subsystem = "event filter parse error"
            raise
    return point


# ---------------------------------------------------------------- the events

class Tracepoint(TracepointFormat):
    """One static event: its format, its id, and its file in each instance."""

    def __init__(self, group: str, name: str, fields: tuple[str, ...], event_id: int,
                 source: Source, key: object = None) -> None:
        super().__init__(group, name, fields)
        self.id = event_id
        self.source = source
        self.key = key          # what its source knows it by (a monitoring event, a gc phase, an audit name)
        self.files: dict[int, TracepointFile] = {}      # id(instance) -> its file
        self.refs = 0           # eprobes and tprobes on it (counted only: it never goes)

    def file(self, instance: TraceInstance) -> TracepointFile:
        f = self.files.get(id(instance))
        if f is None:
            f = self.files[id(instance)] = TracepointFile(self, instance)
        return f

    @property
    def enabled(self) -> bool:
        return any(f.enabled for f in self.files.values())

    def field_names(self, code: CodeType | None = None) -> tuple[str, ...]:
        """The names of a hit's values, in order (a hist trigger's plan)."""
        return self.fields

    def field_kinds(self) -> dict[str, str]:
        """Each field's filter kind: ``num``, ``str``, or ``any`` (an audit
        argument: numeric unless a filter compares it with a string)."""
        return {name: "num" if name in NUM_FIELDS else "str" if self.group != "audit" else "any"
                for name in self.fields}

    def format_text(self) -> str:
        """The ``format`` file, as the kernel's: common fields, then the event's."""
        lines = [f"name: {self.name}", f"ID: {self.id}", "format:",
                 "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;",
                 "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;",
                 "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;",
                 "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;", ""]
        offset, fmts, refs = 8, [], []
        for name in self.fields:
            if name in NUM_FIELDS:
                lines.append(f"\tfield:long {name};\toffset:{offset};\tsize:8;\tsigned:1;")
                offset += 8
                fmts.append(f"{name}=%ld")
                refs.append(f"REC->{name}")
            else:           # (an audit argument of any type: its safe text)
                lines.append(f"\tfield:__data_loc char[] {name};\toffset:{offset};\tsize:4;\tsigned:1;")
                offset += 4
                fmts.append(f"{name}=%s")
                refs.append(f"__get_str({name})")
        lines += ["", f'print fmt: "{" ".join(fmts)}"' + "".join(", " + r for r in refs)]
        return "\n".join(lines) + "\n"


class TracepointFile(Triggered):
    """A tracepoint in one instance (``struct trace_event_file``): its
    ``enable``, ``filter`` and ``trigger`` there (triggers and soft mode as
    a probe event's: ``events/trigger.py``)."""

    def __init__(self, event: Tracepoint, instance: TraceInstance) -> None:
        self.event = event
        self.instance = instance
        self.armed = False          # its source calls it: enabled, or in soft mode
        self.filter: Filter = NO_FILTER
        self.filtered = False
        self.filter_common = False
        self.filter_fields: tuple[int, ...] = ()     # the values the filter reads, by index
        self.nhit = 0
        self.init_triggers()
        # Called on every hit with (site, values, frame), whatever this
        # event's own filter, after its record: the eprobes and tprobes on
        # it here, each holding it in soft mode (as trace_kprobe.EventFile's).
        self.hit_hooks: tuple[Callable[[tuple[Any, ...], tuple[object, ...], FrameType], None], ...] = ()

    @property
    def enabled(self) -> bool:
        return self.armed

    @property
    def group(self) -> str:
        return self.event.group

    @property
    def name(self) -> str:
        return self.event.name

    def enable(self) -> None:
        if not self.armed:
            self.event.source.attach(self)
            self.armed = True

    def disable(self) -> None:
        if self.armed:
            self.armed = False
            self.event.source.detach(self)

    def rearm(self) -> None:
        """(Every hit takes the one Python path, which checks for soft mode itself.)"""

    def attach_hook(self, hook: Callable[[tuple[Any, ...], tuple[object, ...], FrameType], None]) -> None:
        """Call ``hook`` on every hit here, whatever this event's filter (an
        eprobe or a tprobe on it): a soft-mode reference, as a trigger's."""
        self.hit_hooks += (hook,)
        try:
            self.enable_disable(True, soft=True)
        except TraceError:
            self.hit_hooks = tuple(h for h in self.hit_hooks if h != hook)
            raise

    def detach_hook(self, hook: Callable[[tuple[Any, ...], tuple[object, ...], FrameType], None]) -> None:
        # (!=: a bound method is an equal one each time, not the same)
        self.hit_hooks = tuple(h for h in self.hit_hooks if h != hook)
        self.enable_disable(False, soft=True)

    def compile_trigger_filter(self, text: str) -> Filter:
        return compile_tracepoint_filter(text, self.event)

    def trigger_fields(self, values: tuple[object, ...], code: CodeType | None,
                       common: bool) -> dict[str, object]:
        event = self.event
        fields: dict[str, object] = {}
        if common:
            fields["comm"] = pythreads.comm()
            fields["common_pid"] = _thread.get_native_id()
        for i, v in enumerate(values):
            fields[event.field_name(i)] = v if type(v) is int or type(v) is str else value_text(v)
        return fields

    def set_filter(self, text: str) -> None:
        self.filter = compile_tracepoint_filter(text, self.event)
        self.filtered = not self.filter.empty
        self.filter_common = bool(re.search(r"\b(comm|common_pid)\b", text))
        # (the values it reads: only those are turned into text for it)
        named = set(re.findall(r"[A-Za-z_]\w*", text))
        self.filter_fields = tuple(i for i in range(16) if self.event.field_name(i) in named)

    def _matches(self, values: tuple[object, ...], code: CodeType | None = None) -> bool:
        """The filter, on a hit's values (``code``: as EventFile's, unused here)."""
        event = self.event
        fields: dict[str, object] = {}
        if self.filter_common:
            fields["comm"] = pythreads.comm()
            fields["common_pid"] = _thread.get_native_id()
        for i in self.filter_fields:
            if i < len(values):
                v = values[i]
                fields[event.field_name(i)] = v if type(v) is int or type(v) is str else value_text(v)
        return self.filter.matches(fields)

    # -- the hit (in the traced thread, on every hit of an enabled event)
    def _record(self, site: tuple[Any, ...], values: tuple[object, ...],
                frame: FrameType | None = None) -> None:
        """A hit: its triggers, in soft mode; filtered, then written to the
        instance's buffer (and its stack, with the ``stacktrace`` option);
        then, whatever the filter, its hooks (eprobes, tprobes)."""
        self.nhit += 1
        if self.sm_ref:             # triggers on it, or an enable_event naming it
            frame = frame if frame is not None else program_frame()
            record, post = self.soft_hit(values, None, frame)   # type: ignore[arg-type]
            if record:
                self._commit(site, values, frame)
            if self.hit_hooks and frame is not None and self.instance.tracing_on:
                for hook in self.hit_hooks:
                    hook(site, values, frame)
            if post:
                self.call_post_triggers(post, frame)        # type: ignore[arg-type]
            return
        self._commit(site, values, frame)

    def _commit(self, site: tuple[Any, ...], values: tuple[object, ...],
                frame: FrameType | None) -> None:
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
            frame = frame if frame is not None else program_frame()
            if frame is not None:
                record_stack(tb, frame)


def compile_tracepoint_filter(text: str, event: Tracepoint) -> Filter:
    """The filter over a tracepoint's fields; an audit argument is numeric
    unless the filter compares it with a string (as an untyped fetcharg)."""
    kinds = event.field_kinds()
    if event.group == "audit":     # arguments beyond the known ones: argN
        kinds.update({f"arg{i}": "any" for i in range(len(event.fields), 16)})
    loose = {name for name, kind in kinds.items() if kind == "any"}
    typed = {name: "num" if kind == "any" else kind for name, kind in kinds.items()}
    while True:
        try:
            return compile_filter(text, typed)
        except TraceError as e:
            names = re.findall(r"[A-Za-z_]\w*", text[:e.pos])
            field = names[-1] if names else None
            if field in loose and typed.get(field) == "num":
                typed[field] = "str"
                continue
            raise


def program_frame(depth: int = 1) -> FrameType | None:
    """The innermost frame that is not fentry's (for a stack record)."""
    frame: FrameType | None = sys._getframe(depth + 1)
    while frame is not None and frame.f_code.co_filename.startswith(FENTRY_DIR):
        frame = frame.f_back
    return frame


# How far from_fentry looks through the stdlib's frames for fentry's: more
# than fentry's own calls into it ever nest, and a bound, so that a program
# that is all stdlib (``python -m test``) or recurses in it (``copy.deepcopy``,
# ``json``'s pure encoder) pays a few frames per event, not its whole stack.
STDLIB_DEPTH = 48


def from_fentry(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs for fentry: fentry's code, or the stdlib's
    called by it, or code made by ``exec``/``eval`` (``<string>``: a
    namedtuple's ``__new__``) called by it; the first frame out that is
    none of these decides, or ``STDLIB_DEPTH`` frames of them (the program's)."""
    for _ in range(STDLIB_DEPTH):
        if frame is None:
            return False
        filename = frame.f_code.co_filename
        if filename.startswith(FENTRY_DIR):
            return True
        if not filename.startswith(STDLIB_DIR) and not filename.startswith("<"):
            return False
        frame = frame.f_back
    return False


# id(code) -> (a weak reference to it, its MOD:QUALNAME): named once per code.
_names: dict[int, tuple[weakref.ref[CodeType], str]] = {}


def code_name(code: CodeType, frame: FrameType) -> str:
    """``MOD:QUALNAME`` of ``code``, running in ``frame`` (named in the
    symbol table as the function tracer names what it traces)."""
    entry = _names.get(id(code))
    if entry is not None and entry[0]() is code:
        return entry[1]
    if SYMBOLS.lookup(code) is None:
        module = frame.f_globals.get("__name__")
        if type(module) is str:
            SYMBOLS.add_code(code, module)
    name = SYMBOLS.name_of(code)
    _names[id(code)] = (pop_at_death(code, _names, id(code)), name)     # (see lifetime.py)
    return name


# BaseException's own args slot (a subclass's ``args`` property never runs).
_exception_args: Callable[[BaseException], tuple[object, ...]] = \
    BaseException.__dict__["args"].__get__


def exception_text(exc: BaseException) -> str:
    """``Type(args...)``, bounded, from the exception's args as stored: no
    ``__repr__`` or ``__str__`` of the program's runs."""
    name = type_name(type(exc))
    try:
        args = _exception_args(exc)
        if len(args) == 1:      # (the common case, without a join)
            text = f"{name}({safe_repr(args[0])})"
        else:
            text = f"{name}({', '.join([safe_repr(a) for a in args[:8]])})"
    except Exception:
        text = f"{name}(?)"
    return text if len(text) <= MAX_REPR else text[:MAX_REPR - 4] + "...)"


def type_name(t: type) -> str:
    # (a plain class's own slot; through type's lookup if it has a metaclass)
    name = t.__name__ if type(t) is type else type.__getattribute__(t, "__name__")
    return name if type(name) is str else "?"


def callable_name(c: object) -> str:
    """``builtins.len``, ``math.sqrt``, ``dict.get``, ``builtins.dict``: read
    from the callable's own slots, so no code of the program's runs."""
    t = type(c)
    if issubclass(t, type):
        module = type.__getattribute__(c, "__module__")
        qualname = type.__getattribute__(c, "__qualname__")
    elif t in _C_FUNCTIONS:
        qualname = object.__getattribute__(c, "__qualname__")
        # (a bound method's __module__ is None: dict.get says enough)
        module = object.__getattribute__(c, "__module__") if t is BuiltinFunctionType else None
    else:
        return safe_repr(c)
    if type(qualname) is not str:
        return safe_repr(c)
    return f"{module}.{qualname}" if type(module) is str else qualname


# ---------------------------------------------------------------- sources

class Source:
    """What arms a group's events: ``attach(file)`` when one is enabled in
    an instance, ``detach(file)`` when disabled; armed while any is."""

    def __init__(self, lock: _thread.RLock) -> None:
        self.lock = lock
        self.files: dict[object, tuple[TracepointFile, ...]] = {}       # key -> enabled files
        self.nmissed = 0        # hits that failed in fentry (the program never sees them)

    def attach(self, f: TracepointFile) -> None:
        with self.lock:
            key = f.event.key
            before = self.files.get(key, ())
            self.files[key] = before + (f,)
            try:
                self.update()
            except BaseException:
                self.files[key] = before
                raise

    def detach(self, f: TracepointFile) -> None:
        with self.lock:
            key = f.event.key
            left = tuple(x for x in self.files.get(key, ()) if x is not f)
            if left:
                self.files[key] = left
            else:
                self.files.pop(key, None)
            self.update()

    def update(self) -> None:
        """Arm or disarm after a change of ``files``."""


class MonitoringSource(Source):
    """The python group: sys.monitoring's global events, on a tool id of
    their own while any is enabled (so a function tracer's callbacks and
    these never stand in each other's way)."""

    def __init__(self, lock: _thread.RLock) -> None:
        super().__init__(lock)
        self.monitor = arch.Monitor(lock)
        self.awaiting = False           # await_program: the start-up is not over yet
        exc = self._exception_callback
        call = self._call_callback
        # (each guarded: at the program's recursion limit, a callback that
        # cannot push its frame would replace the program's exception)
        self.callbacks: dict[int, Callable[..., object]] = {
            event: recursion_guard(self, cb) for event, cb in (
                (E.RAISE, exc(E.RAISE)), (E.RERAISE, exc(E.RERAISE)),
                (E.EXCEPTION_HANDLED, exc(E.EXCEPTION_HANDLED)), (E.PY_UNWIND, exc(E.PY_UNWIND)),
                (E.C_RAISE, call(E.C_RAISE, False)), (E.C_RETURN, call(E.C_RETURN, False)),
                (E.CALL, call(E.CALL, True)), (E.PY_START, self._py_start))}

    def await_program(self) -> None:
        """The pure-Python hot path: watch PY_START for the program's start,
        which ends the start-up's quiet (``pytrampolines.quiet_until_program``;
        the C twin's audit hook sees it itself)."""
        with self.lock:
            self.awaiting = True
            self.update()

    def _py_start(self, code: CodeType, offset: int) -> object:
        from ..pytrampolines import _program_starts
        try:
            if self.awaiting and _program_starts(code):
                self.awaiting = False
                with self.lock:
                    self.update()
        except Exception:
            self.nmissed += 1
        return arch.DISABLE if not self.awaiting else None

    def update(self) -> None:
        mask = E.PY_START if self.awaiting else 0
        for key in self.files:
            mask |= key          # type: ignore[operator]  # (its keys are event bits)
        if mask & _CALLS:
            # C_RETURN and C_RAISE come only with CALL, and only both
            # together: CALL's callback finds no file when call_c is off.
            mask |= _CALLS
        monitor = self.monitor
        if mask and not monitor.active:
            monitor.start()
            for event, cb in self.callbacks.items():
                monitor.set_callback(event, cb)
        if monitor.active:
            if mask:
                monitor.set_global_events(mask)
            else:
                monitor.stop()      # events, callbacks and the id: nothing stays

    def _exception_callback(self, event: int) -> Callable[[CodeType, int, BaseException], None]:
        files = self.files

        def callback(code: CodeType, offset: int, exc: BaseException) -> None:
            targets = files.get(event)
            if not targets or code.co_filename.startswith(FENTRY_DIR):
                return
            if quiet_thread(True):
                return              # fentry's own thread (or fentry, re-entered)
            try:
                frame = sys._getframe(1)
                if code.co_filename.startswith(STDLIB_DIR) and from_fentry(frame):
                    return
                values = (type_name(type(exc)), exception_text(exc), code_name(code, frame), offset)
                for f in targets:
                    f._record((None, 0), values)
            except Exception:       # (never into the program: counted, as a kprobe's miss)
                self.nmissed += 1
            finally:
                quiet_thread(False)
        return callback

    def _call_callback(self, event: int, only_c: bool) -> Callable[[CodeType, int, object, object], None]:
        files = self.files

        def callback(code: CodeType, offset: int, func: object, arg0: object) -> None:
            targets = files.get(event)
            if not targets:
                return
            if only_c:          # CALL fires for every call: Python functions are not ours
                t = type(func)
                if t is FunctionType or (t is MethodType and type(func.__func__) is FunctionType):  # type: ignore[attr-defined]
                    return
            if code.co_filename.startswith(FENTRY_DIR):
                return
            if quiet_thread(True):
                return
            try:
                frame = sys._getframe(1)
                if code.co_filename.startswith(STDLIB_DIR) and from_fentry(frame):
                    return
                values = (callable_name(func), code_name(code, frame), offset)
                for f in targets:
                    f._record((None, 0), values)
            except Exception:
                self.nmissed += 1
            finally:
                quiet_thread(False)
        return callback


class GcSource(Source):
    """The gc group: one ``gc.callbacks`` entry while any is enabled.  A
    collection that fentry's own allocations set off (in its thread, in its
    start-up) is not an event, as nothing fentry does is."""

    def __init__(self, lock: _thread.RLock) -> None:
        super().__init__(lock)
        self.installed = False
        # (a collection at the program's recursion limit: unraisable otherwise)
        self.guarded_callback = recursion_guard(self, self._callback)

    def update(self) -> None:
        if self.files and not self.installed:
            gc.callbacks.append(self.guarded_callback)
            self.installed = True
        elif not self.files and self.installed:
            try:
                gc.callbacks.remove(self.guarded_callback)
            except ValueError:      # (the program emptied the list)
                pass
            self.installed = False

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            targets = self.files.get("start")
            values: tuple[object, ...] = (info.get("generation", -1),)
        else:
            targets = self.files.get("stop")
            values = (info.get("generation", -1), info.get("collected", 0),
                      info.get("uncollectable", 0))
        if not targets:
            return
        if quiet_thread(True):
            return          # set off by fentry's own allocations (its thread, its start-up)
        try:
            for f in targets:
                f._record((None, 0), values)
        except Exception:       # (gc prints a callback's exception as unraisable: none here)
            self.nmissed += 1
        finally:
            quiet_thread(False)


# ---------------------------------------------------------------- the registry

class Tracepoints:
    """Every static event, by ``(group, name)``, in id order."""

    def __init__(self) -> None:
        from .audit import AUDIT_FIELDS, AuditSource, event_name
        self.lock = _thread.RLock()
        self.events: dict[tuple[str, str], Tracepoint] = {}
        self._next_id = FIRST_TRACEPOINT_ID
        monitoring = MonitoringSource(self.lock)
        for name, (event, fields) in PYTHON_EVENTS.items():
            self._add("python", name, fields, monitoring, event)
        gcs = GcSource(self.lock)
        for name, fields in GC_EVENTS.items():
            self._add("gc", name, fields, gcs, "start" if name == "gc_start" else "stop")
        self.audit = AuditSource(self.lock, self)
        # id(instance) -> instance where every audit event is enabled
        self.audit_all: dict[int, TraceInstance] = {}
        for raw, fields in AUDIT_FIELDS.items():
            self._add("audit", event_name(raw), fields, self.audit, raw)
        self.monitoring = monitoring

    def _add(self, group: str, name: str, fields: tuple[str, ...], source: Source,
             key: object) -> Tracepoint:
        event = self.events[(group, name)] = Tracepoint(group, name, fields, self._next_id,
                                                        source, key)
        self._next_id += 1
        return event

    def add_audit(self, raw: str, name: str, nargs: int) -> Tracepoint:
        """An audit event of a name not in the table, first seen: its fields
        are ``arg0``..; enabled where every audit event is (``audit:*``)."""
        with self.lock:
            event = self.events.get(("audit", name))
            if event is not None:
                return event
            event = self._add("audit", name, tuple(f"arg{i}" for i in range(nargs)), self.audit, raw)
            for instance in list(self.audit_all.values()):
                event.file(instance).enable()
            return event

    def declare(self, group: str, name: str) -> Tracepoint:
        """The event ``group:name`` (``-e``): an audit event of a name not
        in the table is made now, its fields ``argN``."""
        event = self.events.get((group, name))
        if event is None and group == "audit":
            with self.lock:
                event = self.events.get((group, name)) or self._add(group, name, (), self.audit, name)
        if event is None:
            raise TraceError("NO_SUCH_EVENT", f"{group}:{name}", len(group) + 1)
        return event

    def groups(self) -> list[str]:
        return list(dict.fromkeys(g for g, _ in self.events))

    def any_enabled(self) -> bool:
        return any(e.enabled for e in self.events.values())

    def await_program(self) -> None:
        """``fentry run``'s start-up is quiet until the program starts: on
        the pure-Python hot path, with no ftrace ops to see it start, the
        python group's tool id watches for it."""
        from .. import hotpath
        if hotpath.IMPLEMENTATION == "python":
            self.monitoring.await_program()
        else:
            self.audit.awaiting_exec = True

    def in_group(self, group: str) -> list[Tracepoint]:
        return [e for (g, _), e in self.events.items() if g == group]

    def find(self, group: str, name: str) -> Tracepoint | None:
        return self.events.get((group, name))

    def set_enable(self, events: list[Tracepoint], on: bool, instance: TraceInstance) -> None:
        """Enable (disable) ``events`` in ``instance``: all, or none if one fails."""
        with self.lock:
            # The whole audit group on: names seen later join it (audit:*);
            # one of it off: they do not.  (Before the enables: a name the
            # enabling itself raises joins too.)
            audit = [e for e in events if e.group == "audit"]
            was_all = self.audit_all.get(id(instance))
            if on and audit and len(audit) == len(self.in_group("audit")):
                self.audit_all[id(instance)] = instance
            elif not on and audit:
                self.audit_all.pop(id(instance), None)
            try:
                set_files_enabled([e.file(instance) for e in events], on)
            except BaseException:
                if was_all is None:
                    self.audit_all.pop(id(instance), None)
                raise

    def set_filter(self, event: Tracepoint, text: str, instance: TraceInstance) -> None:
        try:
            event.file(instance).set_filter(text)
        except TraceError as e:
            e.subsystem = "event filter parse error"
            raise

    def clear_triggers(self, instance: TraceInstance) -> None:
        """Every trigger of ``instance``'s tracepoints off (clear_event_triggers)."""
        with self.lock:
            for e in self.events.values():
                f = e.files.get(id(instance))
                if f is not None:
                    f.clear_triggers()

    def forget_instance(self, instance: TraceInstance) -> None:
        with self.lock:
            self.audit_all.pop(id(instance), None)
            for e in self.events.values():
                f = e.files.pop(id(instance), None)
                if f is not None:
                    f.clear_triggers()
                    f.disable()
