"""kprobes: probes on a function's entry, any bytecode offset or line, and its return.

The kernel's kprobes, on the ftrace core:

* A probe at offset 0 rides the function-entry hook (kprobes-on-ftrace): it
  is an ``FtraceOps`` with SAVE_REGS, so ``regs`` is the probed frame.
* A probe at another offset (or at ``PATH:LINE``, the first instruction of
  that line) sets a local INSTRUCTION event on that one code object; every
  other offset of it is DISABLEd at its first pass, so only the probed
  instruction calls back.
* A return probe fires on PY_RETURN with the return value, and on PY_UNWIND
  (a frame left by an exception: ``ri.exception`` is set, there is no
  return value).  A generator or coroutine fires once, when it finishes, not
  at every ``yield``.

A symbol is checked when the probe is registered, by the kernel's rule: a
bare ``QUALNAME`` must name a loaded function (or one of the script about to
run) in exactly one module, and the probe stays on that module's.
``MOD:QUALNAME`` is checked in MOD's loaded code or, for a module not imported
yet (or a script's function not defined yet), in its source, compiled and
not run; only a module that cannot be found leaves the probe unchecked,
pending.  The offset is checked as well (the decoder, the blacklist).  Code
objects are matched when they first run, as the ftrace filter is, so a probe
on a module imported later takes effect once it is.
"""

from __future__ import annotations

import dis
import os
import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from . import arch, hotpath
from .errors import TraceError
from .ftrace import FtraceOps, Handlers, register_ftrace_function, unregister_ftrace_function
from .hotpath import Ip
from .symbols import (
    MAIN,
    SYMBOLS,
    call_site,
    is_fentry_code,
    is_fentry_module,
    nested_codes,
    source_functions,
)

E = arch.EVENTS
_getframe = sys._getframe


# ---------------------------------------------------------------- the decoder

def instruction_boundaries(code: CodeType) -> set[int]:
    """Offsets where a probe may go: instruction starts, not inline CACHE
    entries, and an EXTENDED_ARG sequence only at its first unit (the x86
    decoder's instruction boundaries, for bytecode)."""
    starts = set()
    prefixed = False
    for ins in dis.get_instructions(code):
        if not prefixed:
            starts.add(ins.offset)
        prefixed = ins.opname == "EXTENDED_ARG"
    return starts


def check_offset(code: CodeType, offset: int, command: str = "", pos: int = 0) -> None:
    """Refuse an offset past the end of ``code`` or inside an instruction."""
    if offset < 0 or offset >= len(code.co_code):
        raise TraceError("BAD_PROBE_ADDR", command, pos, subsystem="trace_kprobe",
                         detail=f"offset {offset:#x} is past the end of {code.co_qualname}")
    if offset not in instruction_boundaries(code):
        raise TraceError("BAD_INSN_BNDRY", command, pos, subsystem="trace_kprobe")


def line_offset(code: CodeType, line: int) -> int | None:
    """The first instruction of ``line`` in ``code`` itself (not in code nested in it)."""
    offsets = [start for start, _, ln in code.co_lines() if ln == line and start > 0]
    return min(offsets) if offsets else None


def covers_line(code: CodeType, line: int) -> bool:
    """Whether ``line`` is ``code``'s own: it has instructions there, and no
    function nested in it does (the innermost function owns a line)."""
    if line_offset(code, line) is None:
        return False
    return not any(line_offset(c, line) is not None
                   for c in nested_codes(code) if c is not code)


def same_file(code: CodeType, path: str) -> bool:
    """``path`` (absolute, or relative to the current directory) names the code's file."""
    filename = code.co_filename
    return os.path.abspath(filename) == os.path.abspath(path) or (
        not os.path.isabs(path) and filename.endswith(os.sep + path))


# ---------------------------------------------------------------- the blacklist

def blacklisted(code: CodeType) -> bool:
    """NOKPROBE_SYMBOL: fentry itself (and so everything its hot path runs)."""
    return is_fentry_code(code)


# ---------------------------------------------------------------- probes

class Kprobe:
    """``struct kprobe``: ``pre_handler(kp, regs)`` runs when the probed
    instruction is reached, ``regs`` being the probed frame.

    Give ``symbol_name`` (``MOD:QUALNAME`` or ``QUALNAME``) and ``offset``, or
    ``path`` and ``line``, or ``code`` (and ``offset``) for one code object.
    ``nmissed`` counts handlers that raised (the program never sees it).
    """

    def __init__(self, symbol_name: str | None = None, offset: int = 0,
                 pre_handler: Callable[[Kprobe, FrameType], object] | None = None, *, path: str | None = None,
                 line: int | None = None, code: CodeType | None = None) -> None:
        if sum(x is not None for x in (symbol_name, path, code)) != 1:
            raise ValueError("give one of symbol_name, path (with line), or code")
        if path is not None and line is None:
            raise ValueError("a path probe needs a line")
        self.symbol_name = symbol_name
        self.offset = offset
        self.path = path
        self.line = line
        self.code = code
        self.pre_handler = pre_handler
        self._ops: _ProbeOps | None = None

    @property
    def nmissed(self) -> int:
        return self._ops.errors if self._ops is not None else 0

    def where(self) -> str:
        if self.path is not None:
            return f"{self.path}:{self.line}"
        name = self.symbol_name or (self.code.co_qualname if self.code is not None else "?")
        return f"{name}+{self.offset}" if self.offset else name


class KretprobeInstance:
    """One return of a probed function (``struct kretprobe_instance``)."""
    __slots__ = ("rp", "retval", "exception", "ret_addr", "data")

    def __init__(self, rp: Kretprobe) -> None:
        self.rp = rp
        self.retval: object = None
        self.exception: BaseException | None = None   # set when left by an exception
        self.ret_addr: Ip | None = None               # the call site it returns to
        self.data: dict[str, object] = {}             # shared by entry_handler and handler


class Kretprobe:
    """``struct kretprobe``: ``handler(ri, regs)`` on return, ``ri.retval``
    the value returned; ``entry_handler(ri, regs)``, if given, on entry."""

    # Kprobe's twin in shape (fields assigned, nmissed from its ops), as the
    # kernel's two structs are: different fields, nothing to share.

    def __init__(self, symbol_name: str | None = None,
                 handler: Callable[[KretprobeInstance, FrameType], object] | None = None,
                 entry_handler: Callable[[KretprobeInstance, FrameType], object] | None = None,
                 *, code: CodeType | None = None,
                 maxactive: int = 0) -> None:
        if (symbol_name is None) == (code is None):
            raise ValueError("give one of symbol_name or code")
        self.symbol_name = symbol_name
        self.code = code
        self.handler = handler
        self.entry_handler = entry_handler
        self.maxactive = maxactive
        self._ops: _RetprobeOps | None = None

    @property
    def nmissed(self) -> int:
        return self._ops.errors if self._ops is not None else 0


def split_symbol(name: str) -> tuple[str | None, str]:
    """``MOD:QUALNAME`` -> (MOD, QUALNAME); ``QUALNAME`` -> (None, QUALNAME)."""
    module, sep, qualname = name.rpartition(":")
    return (module, qualname) if sep else (None, name)


class _ProbeOps(FtraceOps):
    """The ftrace_ops a kprobe rides: its filter is the probed symbol or site."""

    def __init__(self, kp: Kprobe, module: str | None) -> None:
        super().__init__(self._entry, flags=0)
        self.kp = kp
        # The module its symbol was found in when registered: a bare symbol
        # names that function, not one of the same name imported since.
        self.module = module
        if kp.symbol_name is not None:
            self.qualname = split_symbol(kp.symbol_name)[1]
        self.local_events = E.PY_START if self._at_entry() else E.INSTRUCTION

    def _at_entry(self) -> bool:
        return self.kp.path is None and self.kp.offset == 0

    def wants(self, module: str, code: CodeType) -> bool:
        kp = self.kp
        if blacklisted(code):
            return False
        if kp.code is not None:
            return code is kp.code
        if kp.path is not None:
            return kp.line is not None and same_file(code, kp.path) and covers_line(code, kp.line)
        return code.co_qualname == self.qualname and module == self.module

    def _entry(self, ip: Ip, parent_ip: Ip | None, ops: FtraceOps, regs: FrameType) -> None:
        if self.kp.pre_handler is not None:
            self.kp.pre_handler(self.kp, regs)

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        kp = self.kp
        # A probe event's pre_handler is its hot-path ProbeTrace: called
        # straight from the dispatcher, with no Ip made and no Python frame.
        trace = kp.pre_handler if isinstance(kp.pre_handler, hotpath.ProbeTrace) else None
        if self._at_entry():
            if trace is not None:
                return {E.PY_START: trace.entry(code, 0, depth)}
            return {E.PY_START: hotpath.ops_entry(self._entry, self, True, depth)}
        offset = (line_offset(code, kp.line) if kp.path is not None and kp.line is not None
                  else kp.offset)
        if offset is None or offset not in instruction_boundaries(code):
            self.errors += 1            # a symbol loaded since, that the offset does not fit
            return {}
        if trace is not None:
            return {E.INSTRUCTION: {offset: trace.entry(code, offset, depth)}}
        pre_handler = kp.pre_handler
        if pre_handler is None:
            return {}

        def kprobe_at_offset(code: CodeType, offset: int) -> None:
            pre_handler(kp, _getframe(depth))
        return {E.INSTRUCTION: {offset: kprobe_at_offset}}


class _RetprobeOps(FtraceOps):
    """The ops of a kretprobe: entry (for the instance), return and unwind."""

    local_events = E.PY_START | E.PY_RETURN
    global_events = E.PY_UNWIND

    def __init__(self, rp: Kretprobe, module: str | None) -> None:
        super().__init__(None)
        self.rp = rp
        self.module = module            # as _ProbeOps'
        if rp.symbol_name is not None:
            self.qualname = split_symbol(rp.symbol_name)[1]
        self.active: dict[int, KretprobeInstance] = {}     # id(frame) -> its instance

    def wants(self, module: str, code: CodeType) -> bool:
        rp = self.rp
        if blacklisted(code):
            return False
        if rp.code is not None:
            return code is rp.code
        return code.co_qualname == self.qualname and module == self.module

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        rp, active = self.rp, self.active
        if isinstance(rp.handler, hotpath.ProbeTrace) and rp.entry_handler is None:
            # A return probe event: its hot-path handlers do the whole return,
            # and keep what its entry stores ($argN values) themselves.
            trace = rp.handler
            return {E.PY_START: trace.start(code, depth),
                    E.PY_RETURN: trace.exit(code, depth, False),
                    E.PY_UNWIND: trace.exit(code, depth, True)}

        def kretprobe_entry(code: CodeType, offset: int) -> None:
            frame = _getframe(depth)
            ri = active[id(frame)] = KretprobeInstance(rp)
            if rp.entry_handler is not None:
                rp.entry_handler(ri, frame)

        def kretprobe_exit(frame: FrameType, value: Any, raised: bool) -> None:
            ri = active.pop(id(frame), None) or KretprobeInstance(rp)
            if raised:
                ri.exception = value
            else:
                ri.retval = value
            caller = frame.f_back
            if caller is not None:
                c = caller.f_code
                ri.ret_addr = Ip(c, call_site(c, caller.f_lasti))
            if rp.handler is not None:
                rp.handler(ri, frame)

        def kretprobe_return(code: CodeType, offset: int, retval: object) -> None:
            kretprobe_exit(_getframe(depth), retval, False)

        def kretprobe_unwind(code: CodeType, offset: int, exc: BaseException) -> None:
            kretprobe_exit(_getframe(depth), exc, True)
        return {E.PY_START: kretprobe_entry, E.PY_RETURN: kretprobe_return,
                E.PY_UNWIND: kretprobe_unwind}


# ---------------------------------------------------------------- registration

def check_symbol(symbol_name: str, offset: int, retprobe: bool) -> tuple[str, bool]:
    """What can be checked now, as the kernel's ``validate_probe_symbol`` and
    registration: the symbol, its offset, the blacklist.  Returns (the module
    of the probed function, whether the probe is pending).

    A bare ``QUALNAME`` must name a function loaded now (the script about to
    run counts), in one module: else "Invalid probed address or symbol", or
    "The symbol is not unique" (``MOD:QUALNAME`` says which).  Several code
    objects of one module under one name (a property's getter and setter)
    are one symbol.  ``MOD:QUALNAME`` must be in MOD once MOD is imported or
    can be found; only while it cannot is the probe pending, unchecked."""
    module, qualname = split_symbol(symbol_name)
    if module is not None and is_fentry_module(module):
        raise TraceError("BLACKLISTED", symbol_name, 0, subsystem="trace_kprobe")
    if retprobe and offset:
        raise TraceError("BAD_RETPROBE", symbol_name, 0, subsystem="trace_kprobe")
    found: list[CodeType] | None
    if module is None:
        module, found = _loaded_function(symbol_name, qualname)
    elif module in sys.modules:
        found = [s.code for s in SYMBOLS.named(qualname, module)]
        if not found and module == MAIN:
            found = source_functions(MAIN, qualname)    # a function the script defines later
    else:
        try:
            found = source_functions(module, qualname)
        except ModuleNotFoundError:
            return module, True
    if found is None:
        return module, False            # no source to check it against: resolved when it runs
    if not found:
        raise TraceError("BAD_PROBE_ADDR", symbol_name, 0, subsystem="trace_kprobe")
    for code in found:
        if offset:
            check_offset(code, offset, symbol_name)
    return module, False


def _loaded_function(symbol_name: str, qualname: str) -> tuple[str, list[CodeType]]:
    """The one module whose loaded functions (or, for the script, its
    source) have a bare symbol's name, and those functions."""
    by_module: dict[str, list[CodeType]] = {}
    for sym in SYMBOLS.named(qualname):
        by_module.setdefault(sym.module, []).append(sym.code)
    if MAIN not in by_module:
        script = source_functions(MAIN, qualname)
        if script:
            by_module[MAIN] = script
    if not by_module:
        raise TraceError("BAD_PROBE_ADDR", symbol_name, 0, subsystem="trace_kprobe")
    if len(by_module) > 1:
        names = sorted(by_module)
        more = f" and {len(names) - 4} more" if len(names) > 4 else ""
        raise TraceError("NON_UNIQ_SYMBOL", symbol_name, 0, subsystem="trace_kprobe",
                         detail=f"in {', '.join(names[:4])}{more}; give MOD:{qualname}")
    ((module, codes),) = by_module.items()
    return module, codes


def register_kprobe(kp: Kprobe) -> None:
    """Arm ``kp``; raises TraceError for a bad offset or a blacklisted symbol."""
    if kp._ops is not None:
        raise ValueError("kprobe already registered")
    if kp.code is not None:
        if blacklisted(kp.code):
            raise TraceError("BLACKLISTED", kp.code.co_qualname, 0, subsystem="trace_kprobe")
        if kp.offset:
            check_offset(kp.code, kp.offset)
    module = None
    if kp.symbol_name is not None:
        module, _ = check_symbol(kp.symbol_name, kp.offset, retprobe=False)
    ops = _ProbeOps(kp, module)
    register_ftrace_function(ops)
    kp._ops = ops


def unregister_kprobe(kp: Kprobe) -> None:
    if kp._ops is None:
        raise ValueError("kprobe not registered")
    unregister_ftrace_function(kp._ops)
    kp._ops = None


def register_kretprobe(rp: Kretprobe) -> None:
    """Arm ``rp``; raises TraceError for a blacklisted or unknown symbol."""
    if rp._ops is not None:
        raise ValueError("kretprobe already registered")
    if rp.code is not None and blacklisted(rp.code):
        raise TraceError("BLACKLISTED", rp.code.co_qualname, 0, subsystem="trace_kprobe")
    module = None
    if rp.symbol_name is not None:
        module, _ = check_symbol(rp.symbol_name, 0, retprobe=True)
    ops = _RetprobeOps(rp, module)
    register_ftrace_function(ops)
    rp._ops = ops


def unregister_kretprobe(rp: Kretprobe) -> None:
    if rp._ops is None:
        raise ValueError("kretprobe not registered")
    unregister_ftrace_function(rp._ops)
    rp._ops.active.clear()
    rp._ops = None
