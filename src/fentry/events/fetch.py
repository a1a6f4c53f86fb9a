"""events.fetch: reading a fetcharg from a probed frame, without running user code.

The kernel's fetch instructions read memory; fentry's read Python objects the
same way: instance ``__dict__`` entries, slots, class attributes that are not
descriptors, items of builtin containers, module globals.  Nothing here calls
a user-defined ``__getattr__``, ``__getitem__``, property or ``__repr__``;
what cannot be read safely is a fault, and a fault is ``(fault)`` in the
trace, never an exception in the program.

Values are fetched when the event fires (objects change later), and kept raw
when immutable (numbers, strings, bytes, None, code objects); anything else is
turned into its bounded, safe representation right then, as the kernel
copies memory into the ring buffer.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from itertools import islice
from types import CodeType, FrameType, FunctionType, MemberDescriptorType, MethodType, ModuleType

from .. import pythreads
from ..raw import CodeInfo, FaultValue, Shown
from ..symbols import SYMBOLS
from .probe_parser import FetchArg, bitfield

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from typing import Any

MAX_REPR = 128          # characters of a default-typed value
MAX_STRING = 4096       # characters of a :string value (the kernel's MAX_STRING_SIZE; raw.py's too)
MAX_DEPTH = 3           # container nesting shown
MAX_ITEMS = 8           # container items shown


class Fault(Exception):
    """A fetch that cannot be done safely (or at all)."""


FAULT = "(fault)"
_MISSING = object()
_RAW = (int, float, str, bytes, bool, type(None), complex)


def safe_repr(value: Any, depth: int = MAX_DEPTH) -> str:
    """``repr`` for builtin types, ``<Type object>`` for the rest: no user code runs."""
    # (Any: ``value`` is told apart by its exact type, which mypy does not follow.)
    t = type(value)
    if t in (int, float, bool, type(None), complex):
        return repr(value)
    if t in (str, bytes):
        # Only what can show is repr'd: a 1 MB string costs what a short one does.
        text = repr(value if len(value) <= MAX_REPR else value[:MAX_REPR + 1])
        return text if len(text) <= MAX_REPR else text[:MAX_REPR - 4] + "...'"
    if t in (list, tuple, set, frozenset, dict):
        if depth <= 0:
            return "[...]" if t is list else "(...)" if t is tuple else "{...}"
        if t is dict:
            items = [f"{safe_repr(k, depth - 1)}: {safe_repr(v, depth - 1)}"
                     for k, v in islice(dict.items(value), MAX_ITEMS)]
        else:
            items = [safe_repr(v, depth - 1) for v in islice(value, MAX_ITEMS)]
        if len(value) > MAX_ITEMS:
            items.append("...")
        body = ", ".join(items)
        if t is list:
            text = f"[{body}]"
        elif t is tuple:
            text = f"({body}{',' if len(value) == 1 else ''})"
        elif t is dict:
            text = "{" + body + "}"
        else:
            text = ("{" + body + "}") if value else f"{t.__name__}()"
        return text if len(text) <= MAX_REPR else text[:MAX_REPR - 4] + "...]"
    if t in (FunctionType, CodeType):
        code = value if t is CodeType else value.__code__
        return f"<{SYMBOLS.name_of(code)}>"
    if t is CodeInfo:           # a code object, as a reader outside the process knows it
        return f"<{value.name}>"
    # type's own slots, read as stored: a metaclass's __getattribute__ or a
    # class's non-str __module__ (whose __format__ would run) never runs.
    module = type.__getattribute__(t, "__module__")
    qualname = type.__getattribute__(t, "__qualname__")
    return f"<{module if type(module) is str else '?'}.{qualname}>"


def snapshot(value: object) -> object:
    """What is stored in the ring buffer: the value if immutable, else its text."""
    return value if type(value) in _RAW or type(value) is CodeType else Shown(safe_repr(value))


def shown(value: object) -> object:
    """A function_graph value (``funcgraph-retval``, ``funcgraph-args``) as
    its record keeps it: its safe text, bounded, or FAULT -- never the value
    itself, which a record must not keep alive.  (The hot path keeps ints
    that fit in 64 bits, floats, None and bools itself, unboxed or immortal,
    and asks this for the rest.)"""
    try:
        return Shown(safe_repr(value))
    except Exception:
        return FAULT


def type_lookup(t: type, name: str) -> object:
    """``name`` in the dicts of ``t``'s MRO, as CPython's ``_PyType_Lookup``
    (no metaclass hook runs); _MISSING if absent."""
    for klass in type.__getattribute__(t, "__mro__"):
        found = type.__getattribute__(klass, "__dict__").get(name, _MISSING)
        if found is not _MISSING:
            return found
    return _MISSING


def get_attr(obj: object, name: str) -> object:
    """``obj.name`` read from storage: instance dict, slots, plain class attributes.

    The C hot path (``ctrampolines/probe.c``, fetch_attr) reads the same way."""
    if type(obj) is ModuleType:
        value = dict.get(object.__getattribute__(obj, "__dict__"), name, _MISSING)
        if value is _MISSING:
            raise Fault(name)
        return value
    tdict = type_lookup(type(obj), name)
    if type(tdict) is MemberDescriptorType:          # a slot
        return tdict.__get__(obj, type(obj))
    # CPython's data descriptor: its type has __set__ or __delete__ (tp_descr_set).
    tkind = type(tdict)
    data = tdict is not _MISSING and (type_lookup(tkind, "__set__") is not _MISSING
                                      or type_lookup(tkind, "__delete__") is not _MISSING)
    try:
        d = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        d = None
    if isinstance(d, dict) and not data:
        value = dict.get(d, name, _MISSING)
        if value is not _MISSING:
            return value
    if tdict is not _MISSING and type_lookup(tkind, "__get__") is _MISSING:
        return tdict                                 # a plain class attribute
    raise Fault(name)                                # absent, or a property / descriptor


def get_item(obj: object, key: str | int) -> object:
    """``obj[key]`` for builtin containers only (no user ``__getitem__``, no ``__missing__``)."""
    if isinstance(obj, dict):
        value = dict.get(obj, key, _MISSING)
        if value is _MISSING:
            raise Fault(key)
        return value
    if type(key) is int:
        for base in (list, tuple, str, bytes):
            if isinstance(obj, base):
                try:
                    return base.__getitem__(obj, key)  # type: ignore[index]  # (obj is a base)
                except IndexError:
                    raise Fault(key) from None
    raise Fault(key)


def parameters(code: CodeType | CodeInfo) -> tuple[str, ...]:
    """The names of a function's parameters, in order."""
    if isinstance(code, CodeInfo):
        return code.params
    n = code.co_argcount + code.co_kwonlyargcount
    n += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)      # *args, **kwargs
    return code.co_varnames[:n]


def fetch(arg: FetchArg, frame: FrameType, retval: object = _MISSING,
          local_vars: Mapping[str, object] | None = None) -> object:
    """The raw value of ``arg`` in ``frame`` (raises Fault).  ``local_vars``:
    ``frame.f_locals``, when the caller has it already (3.12 builds it anew
    at each access)."""
    if local_vars is None and arg.kind in ("arg", "local"):
        local_vars = frame.f_locals
    kind = arg.kind
    if kind == "imm":
        value = arg.root
    elif kind == "retval":
        if retval is _MISSING:
            raise Fault("$retval")
        value = retval
    elif kind == "comm":
        value = pythreads.comm()
    elif kind == "arg":
        names = parameters(frame.f_code)
        if not 1 <= arg.root <= len(names):
            raise Fault(arg.root)
        value = _local(local_vars, names[arg.root - 1])
    elif kind == "local":
        value = _local(local_vars, arg.root)
    elif kind == "global":
        module = sys.modules.get(arg.module)
        if module is None:
            raise Fault(arg.module)
        value = get_attr(module, arg.root)
    elif kind == "stack":
        value = _stack(frame, arg.root)
    else:
        raise Fault(kind)
    for step in arg.path:
        value = get_attr(value, step.key) if step.op == "attr" else get_item(value, step.key)
    return value


def _local(local_vars: Mapping[str, object] | None, name: str) -> object:
    value = local_vars.get(name, _MISSING) if local_vars is not None else _MISSING
    if value is _MISSING:
        raise Fault(name)
    return value


def _stack(frame: FrameType, n: int | None) -> object:
    """``$stack``: the call stack, innermost first; ``$stackN``: the N-th frame up."""
    f: FrameType | None
    if n is not None:
        f = frame
        for _ in range(n):
            f = f.f_back
            if f is None:
                raise Fault(n)
        return f.f_code
    names: list[str] = []
    f = frame
    while f is not None and len(names) < 16:
        names.append(f.f_code.co_qualname)
        f = f.f_back
    return " <- ".join(names)


# What a return probe fetches at the function's entry: ``$argN`` and
# ``$args``, the arguments as passed (the kernel's __store_entry_arg).  The
# kernel stores the raw register and dereferences it at return; a Python
# object cannot be held without keeping it alive (past a rebinding or a
# ``del`` of the parameter, and past a generator that CPython 3.13 closes
# with no event), so the whole fetcharg is fetched at entry, into what the
# ring stores: immutable values or their text, which nothing can observe.
AT_ENTRY = ("arg", "args")


def fetch_all(args: tuple[FetchArg, ...], frame: FrameType, retval: object = _MISSING,
              entry: tuple[object, ...] | None = None) -> tuple[object, ...]:
    """The stored value of every fetcharg, in order (``$args``: one per
    parameter, see ``field_names``); a failed fetch stores FAULT.
    ``entry``: a return's values of its AT_ENTRY fetchargs, fetched at
    entry (``fetch_all`` of those alone), taken in their places."""
    out: list[object] = []
    local_vars = frame.f_locals
    taken = iter(entry) if entry is not None else None
    for arg in args:
        if taken is not None and arg.kind in AT_ENTRY:
            if arg.kind == "arg":
                out.append(next(taken))
            else:
                out.extend([next(taken) for _ in parameters(frame.f_code)])
            continue
        if arg.kind == "args":
            for name in parameters(frame.f_code):
                value = local_vars.get(name, _MISSING)
                out.append(FAULT if value is _MISSING else snapshot(value))
            continue
        try:
            value = fetch(arg, frame, retval, local_vars)
            value = (convert(value, arg.type, arg.array_len) if arg.type is not None
                     else snapshot(value))
        except Exception:
            value = FAULT
        out.append(value)
    return tuple(out)


def field_names(args: tuple[FetchArg, ...], code: CodeType | CodeInfo) -> tuple[str, ...]:
    """The names of what ``fetch_all`` stores for a hit in ``code``."""
    return tuple(name for arg in args
                 for name in (parameters(code) if arg.kind == "args" else (arg.name,)))


def fast_specs(args: tuple[FetchArg, ...]) -> tuple[Any, ...] | None:
    """The fetchargs as the hot path's ProbeTrace takes them, or None when
    one of them is for the Python path only ($args, $stack, $comm, symbol
    and array types)."""
    specs = []
    for arg in args:
        if arg.kind not in ("arg", "local", "imm", "global", "retval") or arg.array_len is not None \
                or arg.type == "symbol" or (arg.type or "")[:1] == "b":
            return None
        # Names interned, as the program's own are: CPython's type-attribute
        # cache and dict lookups then match them by pointer.
        root = (arg.module, sys.intern(arg.root)) if arg.kind == "global" else \
            sys.intern(arg.root) if arg.kind == "local" else arg.root
        path = tuple((s.op == "item", sys.intern(s.key) if type(s.key) is str else s.key)
                     for s in arg.path)
        specs.append((arg.kind, root, path, arg.type))
    return tuple(specs)


_BITS = {"8": 8, "16": 16, "32": 32, "64": 64}


def convert(value: object, type_: str, array_len: int | None = None) -> object:
    """Apply a fetcharg TYPE at fetch time: ints wrapped to the width, strings
    kept, symbols named.  The result is what the trace prints (see render)."""
    if array_len is not None:
        if not isinstance(value, (list, tuple, str, bytes)):
            raise Fault("array")
        return tuple(convert(v, type_) for v in list(value)[:array_len])
    if type_ == "string":
        if type(value) is bytes:
            return value.decode("utf-8", "backslashreplace")
        if not isinstance(value, str):
            raise Fault("string")
        return str.__str__(value)
    if type_ == "symbol":
        if isinstance(value, (FunctionType, MethodType)):
            value = value.__func__ if isinstance(value, MethodType) else value
            return f"{SYMBOLS.name_of(value.__code__)}"
        if type(value) is CodeType:
            return SYMBOLS.name_of(value)
        raise Fault("symbol")
    if not isinstance(value, int):
        raise Fault(type_)
    if type_[0] == "b":                 # bWIDTH@OFFSET/SIZE: unsigned, as the kernel's
        width, offset, _ = bitfield(type_) or (0, 0, 0)
        return (int.__index__(value) >> offset) & ((1 << width) - 1)
    bits = _BITS[type_[1:]]
    value = int.__index__(value) & ((1 << bits) - 1)
    if type_[0] == "s" and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def render(value: Any, type_: str | None) -> str:
    """A stored value as the trace line prints it (the event's print fmt):
    the same for a value fetched in this process and one decoded by a reader
    (raw.py) outside it."""
    if type(value) is tuple and type_ is not None:
        return "{" + ",".join(render(v, type_) for v in value) + "}"
    if value is FAULT or type(value) is FaultValue:
        return FAULT
    if type_ is None:
        return value if type(value) is Shown else safe_repr(value)
    if type_ == "string":
        return f'"{value[:MAX_STRING]}"'
    if type_[0] == "x":
        return f"{value:#x}"
    return str(value)
