"""cprobes: probes on C functions (``builtins:len``, ``builtins:dict.get``).

A C function has no code object, so no PY_START: it is seen where Python
code calls it, by sys.monitoring's CALL event, which gives the callable and
its first argument, and by C_RETURN / C_RAISE after it, which give the same
two and nothing else (no return value, no exception: PEP 669).

CALL is a local event: a C function can be called from any code, so while a
C probe is armed CALL is set globally, and every call the program makes, of
any function, pays one callback and a table lookup of the callable
(hotpath.call_dispatcher; while a method is probed, of its type too).
C_RETURN and C_RAISE ride CALL (CPython reports them to the tools that have
CALL on the call site).  The last C probe disarmed takes the global CALL
away again.  A call made from C code (``map(len, xs)``, ``sorted(key=len)``
calling ``len``) has no call site in Python: sys.monitoring does not see it.

What a hit knows is what CALL gives: the caller's code and the CALL's
offset, and the first positional argument (``self`` of a method).  The other
arguments are on the caller's value stack, which Python cannot read.
"""

from __future__ import annotations

import _thread
import dis
import importlib
import importlib.machinery
import importlib.util
import itertools
import sys
import types
import weakref
from collections.abc import Callable
from types import CodeType
from typing import Any

from . import arch
from .ftrace import C_PROBES, FtraceOps, register_ftrace_function, unregister_ftrace_function
from .lifetime import pop_at_death
from .symbols import is_fentry_code, is_fentry_module

E = arch.EVENTS
MISSING = sys.monitoring.MISSING

# What a C probe can be put on: C functions and the methods of C types.
C_FUNCTION_TYPES = (types.BuiltinFunctionType, types.MethodDescriptorType,
                    types.WrapperDescriptorType)
_METHOD_TYPES = (types.MethodDescriptorType, types.WrapperDescriptorType)


def resolve(symbol_name: str) -> object | None:
    """The C callable ``MOD:NAME`` or ``MOD:TYPE.METHOD`` names, found in the
    module's and the type's ``__dict__`` (no ``__getattr__`` runs); None when
    it names something else, or nothing (a Python function's probe, or an
    error, is the caller's).  A module not imported yet is imported only if
    it is built into the interpreter (its C init runs, no Python code)."""
    module_name, sep, qualname = symbol_name.rpartition(":")
    if not sep or is_fentry_module(module_name):
        return None
    module = sys.modules.get(module_name)
    if module is None:
        if module_name not in sys.builtin_module_names:
            return None
        module = importlib.import_module(module_name)
    obj: object = module
    for part in qualname.split("."):
        space = obj.__dict__ if isinstance(obj, (types.ModuleType, type)) else None
        if space is None or part not in space:
            return None
        obj = space[part]
    return obj


def is_c_module(module_name: str) -> bool:
    """Whether ``module_name``, not imported yet, is a C extension module:
    found (and not imported) by its spec, its parent package imported."""
    parent = module_name.rpartition(".")[0]
    if parent and parent not in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def is_c_function(obj: object) -> bool:
    """A C function or a C type's method (a descriptor, not bound)."""
    return isinstance(obj, C_FUNCTION_TYPES)


class Cprobe:
    """A probe on one C callable.  ``handler(code, offset, arg0)`` runs at
    each call from Python code (``code`` and ``offset`` are the caller's and
    its CALL's; ``arg0`` the first positional argument, MISSING when none);
    ``ret_handler(code, offset, arg0, raised)`` after it returns or raises.
    ``nmissed``: handlers that raised (the program never sees it).

    ``target`` None and ``symbol_name`` given: pending, the function of a C
    module not imported yet, found once it is (when new code first runs)."""

    def __init__(self, target: object,
                 handler: Callable[[CodeType, int, object], object] | None = None,
                 ret_handler: Callable[[CodeType, int, object, bool], object] | None = None,
                 symbol_name: str | None = None) -> None:
        if (target is None and symbol_name is None) or (target is not None and not is_c_function(target)):
            raise TypeError(f"not a C function: {target!r}")
        self.target = target
        self.symbol_name = symbol_name
        self.handler = handler
        self.ret_handler = ret_handler
        self.errors = 0
        self.armed = False

    @property
    def nmissed(self) -> int:
        return self.errors


# ---------------------------------------------------------------- dispatch
# ftrace's call dispatcher (hotpath.call_dispatcher) looks the callable up in
# ftrace.C_PROBES; each C function probed has there one handler per event.

def _on_call(probes: tuple[Cprobe, ...]) -> Callable[[CodeType, int, object, object], None]:
    def on_call(code: CodeType, offset: int, c: object, arg0: object) -> None:
        if is_fentry_code(code):
            return
        if arg0 is not MISSING and c.__class__ is _BUILTIN and keywords_only(code, offset):
            arg0 = MISSING          # CALL gave the first keyword argument's value
        for p in probes:
            try:
                p.handler(code, offset, arg0)       # type: ignore[misc]
            except Exception:
                p.errors += 1
    return on_call


def _on_exit(probes: tuple[Cprobe, ...], raised: bool) -> Callable[[CodeType, int, object, object], None]:
    def on_exit(code: CodeType, offset: int, c: object, arg0: object) -> None:
        if is_fentry_code(code):
            return
        if arg0 is not MISSING and c.__class__ is _BUILTIN and keywords_only(code, offset):
            arg0 = MISSING
        for p in probes:
            try:
                p.ret_handler(code, offset, arg0, raised)   # type: ignore[misc]
            except Exception:
                p.errors += 1
    return on_exit


def _on_bound(table: Any) -> Callable[[CodeType, int, object, object], None]:
    """A C function called with no handler of its own: a method bound
    beforehand (``f = d.get; f(k)``) is a new object at each binding, found
    here by its type and name; its ``self`` is the first argument."""
    def on_bound(code: CodeType, offset: int, c: object, arg0: object) -> None:
        if c.__class__ is not _BUILTIN:
            return
        owner = c.__self__
        if owner is None or owner.__class__ is types.ModuleType:
            return                  # a module's function: not probed (else it had its handler)
        key = (owner.__class__, c.__name__)
        descr = _descriptors.get(key, MISSING)
        if descr is MISSING:
            descr = _descriptors[key] = next(
                (k.__dict__[key[1]] for k in key[0].__mro__ if key[1] in k.__dict__), None)
        handler = table.get(id(descr)) if descr is not None else None
        if handler is not None:
            handler(code, offset, descr, owner)
    return on_bound


_BUILTIN = types.BuiltinFunctionType
# (type, name) -> the method descriptor a bound C method of that type comes from
_descriptors: dict[tuple[type, str], object] = {}


# ---------------------------------------------------------------- call sites

# id(code) -> (code, weakly: the entry goes with it, see lifetime.py;
# {offset: whether its call passes keyword arguments only})
_sites: dict[int, tuple[weakref.ref[CodeType], dict[int, bool]]] = {}


def keywords_only(code: CodeType, offset: int) -> bool:
    """Whether the call at ``offset`` passes no positional argument but
    keyword ones: then CALL's "first argument" is the first keyword's value
    (``sorted(key=len)`` gives ``len``), which no probe must take for
    ``$arg1``.  Read from the bytecode once per code object."""
    entry = _sites.get(id(code))
    if entry is None:
        entry = _sites[id(code)] = (pop_at_death(code, _sites, id(code)), _keyword_calls(code))
    return entry[1].get(offset, False)


def _keyword_calls(code: CodeType) -> dict[int, bool]:
    out: dict[int, bool] = {}
    prev = None
    for ins in dis.get_instructions(code):
        # 3.12: KW_NAMES (the names) then CALL; 3.13: LOAD_CONST (the names) then CALL_KW
        if prev is not None and ((ins.opname == "CALL" and prev.opname == "KW_NAMES")
                                 or (ins.opname == "CALL_KW" and prev.opname == "LOAD_CONST")):
            names = prev.argval
            if type(names) is tuple:
                out[ins.offset] = ins.arg == len(names)
        prev = ins
    return out


# ---------------------------------------------------------------- registration

class _CallOps(FtraceOps):
    """The ftrace_ops that holds CALL set globally while any C probe is armed.
    It traces no code object itself (no local event, no handler)."""
    local_events = 0
    global_events = E.CALL

    def __init__(self) -> None:
        super().__init__(None)

    def wants(self, module: str, code: CodeType) -> bool:
        # Asked of every code object when it first runs: a pending probe's
        # module may have been imported since.
        if _pending:
            _resolve_pending()
        return False


_ops: _CallOps | None = None
_armed: list[Cprobe] = []
_pending: list[Cprobe] = []     # armed, their module not imported yet
_lock = _thread.RLock()


def _resolve_pending() -> None:
    with _lock:
        found = [p for p in _pending if p.symbol_name is not None
                 and p.symbol_name.rpartition(":")[0] in sys.modules
                 and is_c_function(resolve(p.symbol_name))]
        for p in found:
            p.target = resolve(p.symbol_name)       # type: ignore[arg-type]
            _pending.remove(p)
        if found:
            _rebuild()


def register_cprobe(p: Cprobe) -> None:
    """Arm ``p``: from now every call of its C function from Python code runs
    its handlers.  The first one sets CALL globally."""
    global _ops
    with _lock:
        if p.armed:
            raise ValueError("cprobe already registered")
        if not _armed:
            ops = _CallOps()
            register_ftrace_function(ops)       # (ToolIdBusy, raised before anything is set)
            _ops = ops
        _armed.append(p)
        if p.target is None:
            _pending.append(p)
        p.armed = True
        _rebuild()


def unregister_cprobe(p: Cprobe) -> None:
    """Disarm ``p``; the last one takes CALL away."""
    global _ops
    with _lock:
        if not p.armed:
            raise ValueError("cprobe not registered")
        _armed.remove(p)
        if p in _pending:
            _pending.remove(p)
        p.armed = False
        _rebuild()
        if not _armed and _ops is not None:
            unregister_ftrace_function(_ops)
            _ops = None


def _rebuild() -> None:
    """Make the handlers in ftrace.C_PROBES again, for the probes armed now.
    The tables are the dispatcher's: entries are set, then the stale ones
    removed, so a call in another thread finds the old handler or the new."""
    calls: dict[int, list[Cprobe]] = {}
    returns: dict[int, list[Cprobe]] = {}
    for p in _armed:
        if p.target is None:
            continue
        if p.handler is not None:
            calls.setdefault(id(p.target), []).append(p)
        if p.ret_handler is not None:
            returns.setdefault(id(p.target), []).append(p)
    methods = any(isinstance(p.target, _METHOD_TYPES) for p in _armed)
    _descriptors.clear()
    for event, wanted in ((E.CALL, {k: _on_call(tuple(v)) for k, v in calls.items()}),
                          (E.C_RETURN, {k: _on_exit(tuple(v), False) for k, v in returns.items()}),
                          (E.C_RAISE, {k: _on_exit(tuple(v), True) for k, v in returns.items()})):
        table = C_PROBES[event]
        if methods and wanted:
            wanted[id(_BUILTIN)] = _on_bound(table)
        for key, handler in wanted.items():
            table[key] = handler
        for key in [k for k in table.keys() if k not in wanted]:     # noqa: SIM118  # (C's: keys() only)
            del table[key]


def hits_counter() -> Callable[[], int]:
    """A counter that threads bump without a lock (``next`` of
    ``itertools.count`` is one C call under the GIL); call ``.__next__``."""
    return itertools.count(1).__next__


def counted(counter: Callable[[], int]) -> int:
    """How many times ``counter`` was bumped (its next value, less one)."""
    text = repr(counter.__self__)           # type: ignore[attr-defined]  # "count(N)"
    return int(text[6:-1]) - 1


__all__ = ["MISSING", "Cprobe", "counted", "hits_counter", "is_c_function", "keywords_only",
           "register_cprobe", "resolve", "unregister_cprobe"]
