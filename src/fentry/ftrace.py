"""ftrace: ``FtraceOps``, filter hashes and per-code dispatch.

The kernel's dynamic ftrace, on ``sys.monitoring``:

* A code object is "patched" (given local events) only when some ops traces
  it.  Code that is not traced has no local event at all.
* Code is discovered when it first runs: a global PY_START callback names it,
  asks every ops whether it wants it, and either installs it or returns
  DISABLE, so an untraced function pays for one callback in its lifetime.
  When the set of ops or a filter changes, the traced codes are re-decided at
  once and ``restart_events`` lets the DISABLEd ones be decided again.
* Dispatch is per code object, per event: a code traced by one ops calls that
  ops' handler (its trampoline, made for that code) directly; only a code
  traced by several ops goes through a list function.
* Callbacks never re-enter tracing: CPython fires no event for code run
  inside a monitoring callback, and fentry's own code is never traced.  An
  exception from a handler is caught and counted on its ops.
"""

from __future__ import annotations

import _thread
import fnmatch
import re
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any

from . import arch, hotpath
from .errors import TraceError
from .hotpath import Ip
from .lifetime import pop_at_death
from .symbols import (
    SYMBOLS,
    is_fentry_code,
    is_fentry_module,
    is_function_code,
    is_main_module,
    module_name,
)

E = arch.EVENTS
_getframe = sys._getframe

FTRACE_OPS_FL_SAVE_REGS = 1 << 0
FTRACE_OPS_FL_RECURSION = 1 << 1   # accepted for the kernel's sake; always on

# Frame depth of the traced function as seen from inside a Python handler:
# called by an event callback (DIRECT) or by a list function (LISTED); the
# hot path in use says what those are.
DIRECT = hotpath.DIRECT
LISTED = hotpath.LISTED


# ---------------------------------------------------------------- filters

# The kernel's set_ftrace_filter commands (FUNC:COMMAND[:PARAM...]), never
# read as a MOD:GLOB (ftrace_process_regex: the word after the first ':' is
# looked up in the registered commands).
FTRACE_COMMANDS = ("traceon", "traceoff", "stacktrace", "snapshot", "enable_event",
                   "disable_event", "dump", "cpudump")
_GLOB_CHARS = re.compile(r"[*?\[]")


class _Glob:
    """One word of set_ftrace_filter: ``[!]GLOB``, ``[!]MOD:GLOB``, ``[!]GLOB:mod:MODGLOB``."""
    __slots__ = ("negate", "func", "mod", "pos", "func_text", "mod_text", "word", "selected")

    def __init__(self, negate: bool, func: re.Pattern[str], mod: re.Pattern[str] | None,
                 pos: int, func_text: str, mod_text: str, word: str = "") -> None:
        self.word = word            # as written
        self.selected = False       # it has selected a function that ran (discovery)
        self.negate = negate
        self.func = func
        self.mod = mod
        self.pos = pos              # where the word starts in the command written
        self.func_text = func_text
        self.mod_text = mod_text

    def matches(self, module: str, qualname: str) -> bool:
        if self.mod is not None:
            return (self.mod.fullmatch(module) is not None
                    and self.func.fullmatch(qualname) is not None)
        # A bare glob names the qualified name, or the dotted path a Python
        # user would write: "Cart.add" and "shop.Cart.add" both select it.
        return (self.func.fullmatch(qualname) is not None
                or self.func.fullmatch(f"{module}.{qualname}") is not None)

    def pending_text(self) -> str:
        """How read-back lists the word while it selects nothing yet: a
        module's as the kernel lists a cached ``:mod:`` filter (``t_mod_show``)."""
        if self.mod is None:
            return self.func_text
        return f"{self.func_text}:mod:{self.mod_text}"


def _compile_glob(glob: str, command: str, pos: int) -> re.Pattern[str]:
    if not glob:
        raise TraceError("EMPTY_GLOB", command, pos)
    if glob.count("[") != glob.count("]"):
        raise TraceError("BAD_GLOB", command, pos + glob.find("[" if "[" in glob else "]"))
    return re.compile(fnmatch.translate(glob))


class FilterCommand:
    """One command word of set_ftrace_filter: ``[!]GLOB:COMMAND[:PARAM...]``
    (what the command does is its owner's: ``tracers.commands``)."""
    __slots__ = ("negate", "glob", "name", "params", "pos", "params_pos", "word")

    def __init__(self, negate: bool, glob: _Glob, name: str, params: list[str], pos: int,
                 params_pos: int, word: str) -> None:
        self.negate = negate
        self.glob = glob            # the functions it is on
        self.name = name
        self.params = params        # the words after the command, split at ':'
        self.pos = pos              # where the word starts in the command written
        self.params_pos = params_pos    # where its first parameter starts
        self.word = word


def parse_filter_words(text: str | Iterable[str]) -> tuple[list[_Glob], list[FilterCommand]]:
    """Parse set_ftrace_filter words into filter globs and commands; raise
    TraceError (with position) on bad input."""
    if not isinstance(text, str):
        text = " ".join(text)
    globs: list[_Glob] = []
    commands: list[FilterCommand] = []
    for m in re.finditer(r"\S+", text):
        word, pos = m.group(), m.start()
        negate = word.startswith("!")
        body = word[1:] if negate else word
        bpos = pos + negate
        parts = body.split(":")
        if is_command_word(body):
            # FUNC:COMMAND, even where it could be read as MOD:GLOB: a
            # function of that name in a module is GLOB:mod:MOD.
            glob = _Glob(False, _compile_glob(parts[0], text, bpos), None, pos, parts[0], "",
                         parts[0])
            commands.append(FilterCommand(negate, glob, parts[1], parts[2:], pos,
                                          bpos + len(parts[0]) + len(parts[1]) + 2, word))
            continue
        if len(parts) == 1:
            func, mod = parts[0], None
        elif len(parts) == 2:              # fentry's MOD:GLOB
            mod, func = parts
            if not mod:
                raise TraceError("EMPTY_GLOB", text, bpos)
        elif len(parts) == 3 and parts[1] == "mod":   # the kernel's GLOB:mod:MODGLOB
            func, _, mod = parts
            if not mod:
                raise TraceError("EMPTY_GLOB", text, bpos + len(func) + 5)
            func = func or "*"          # ":mod:M", as the kernel: every function of M
        else:
            raise TraceError("BAD_FILTER_CMD", text, bpos + len(parts[0]) + 1)
        fpos = bpos if mod is None or len(parts) != 2 else bpos + len(mod) + 1
        globs.append(_Glob(negate, _compile_glob(func, text, fpos),
                           None if mod is None else _compile_glob(mod, text, bpos),
                           pos, func, mod or "", word))
    return globs, commands


def is_command_word(word: str) -> bool:
    """Whether a set_ftrace_filter word is a command (``[!]FUNC:COMMAND...``)."""
    parts = word.split(":")
    return len(parts) > 1 and parts[1] in FTRACE_COMMANDS


def parse_filter(text: str | Iterable[str]) -> list[_Glob]:
    """Parse filter words that may not be commands (set_ftrace_notrace, an
    ops' own filter): a command is refused, as the kernel's ``!enable``."""
    if not isinstance(text, str):
        text = " ".join(text)
    globs, commands = parse_filter_words(text)
    if commands:
        c = commands[0]
        raise TraceError("FILTER_CMD_NOTRACE", text, c.params_pos - len(c.name) - 1)
    return globs


class FilterHash:
    """The functions an ops traces (or, as notrace, skips).

    Words apply in order, as writes to the kernel's hash do: a glob adds what
    it matches, ``!glob`` removes it.  Unlike the kernel's hash of the
    functions there were at the write, a glob also selects functions that
    appear later (Python code appears as it is imported).  Sites added by
    ``set_filter_ip`` are exact code objects.  ``empty`` means no word and no
    site.
    """

    def __init__(self) -> None:
        self.globs: list[_Glob] = []
        self.codes: dict[int, CodeType] = {}

    @property
    def empty(self) -> bool:
        return not self.codes and not any(not g.negate for g in self.globs)

    def matches(self, module: str, code: CodeType) -> bool:
        hit = id(code) in self.codes
        qualname = code.co_qualname
        for g in self.globs:
            if g.negate:
                if hit and g.matches(module, qualname):
                    hit = False
            elif not hit and g.matches(module, qualname):
                hit = g.selected = True
        return hit

    def unselected(self) -> list[str]:
        """The words that have selected no function that ran: none of the
        functions they name was called (or there is none).  What ``fentry
        run`` says at the end, where the kernel would have refused the write."""
        words = [g for g in self.globs if not g.negate and not g.selected]
        if not words:
            return []
        with _core.lock:
            codes = [(ref(), module) for ref, module, _ in _core.traced.values()]
        traced = [(module, code.co_qualname) for code, module in codes if code is not None]
        return [g.word for g in words if not any(g.matches(m, q) for m, q in traced)]

    def text(self) -> str:
        """What reading the file shows, as the kernel's ``t_show``: the
        functions selected now, one a line, named as in
        available_filter_functions; then each word that selects nothing yet
        (its module not imported) as the kernel lists a cached ``:mod:``."""
        symbols = SYMBOLS.symbols()
        lines = [f"{s.qualname} [{s.module}]\n" for s in symbols if self.matches(s.module, s.code)]
        known = {id(s.code) for s in symbols}
        lines += [f"{c.co_qualname}\n" for key, c in self.codes.items() if key not in known]
        lines += [g.pending_text() + "\n" for g in self.globs
                  if not g.negate and not any(g.matches(s.module, s.qualname) for s in symbols)]
        return "".join(lines)


# While fentry run sets its filters up, the program has not started: none of
# its code is there yet, so a word that selects nothing waits for it.
_starting = False


@contextmanager
def program_starting() -> Iterator[None]:
    """Within it, set_hash keeps a word that selects nothing, as pending."""
    global _starting
    old, _starting = _starting, True
    try:
        yield
    finally:
        _starting = old


def check_selects(globs: list[_Glob], command: str) -> None:
    """A word that selects no function is refused (the kernel's -EINVAL from
    ``match_records``), unless it waits for a module not imported yet (the
    kernel's ``cache_mod``: for a module-glob too, as the kernel's
    ``module_exists`` knows no globs)."""
    if _starting or not globs:
        return
    symbols = SYMBOLS.symbols()
    modules = {module_name(name) for name in list(sys.modules)}
    for g in globs:
        if any(g.matches(s.module, s.qualname) for s in symbols):
            continue
        if g.mod is not None and (_GLOB_CHARS.search(g.mod_text)
                                  or not any(g.mod.fullmatch(m) for m in modules)):
            if g.word.lstrip("!").count(":") == 1 and any(
                    _Glob(False, g.mod, None, 0, "", "").matches(s.module, s.qualname) for s in symbols):
                # FUNC:WORD, FUNC a function, no module: a mistyped command,
                # never a filter waiting for ever (the kernel: -EINVAL).
                raise TraceError("NO_SUCH_COMMAND", command, g.pos + len(g.mod_text) + 1
                                 + g.word.startswith("!"), detail="commands: " + " ".join(FTRACE_COMMANDS))
            continue        # pending: it waits for its module
        hint = "" if g.mod is not None else "for a module not imported yet, write GLOB:mod:MODULE"
        raise TraceError("NO_MATCH", command, g.pos, detail=hint)


def set_hash(hash_: FilterHash, patterns: str | Iterable[str], reset: bool,
             globs: list[_Glob] | None = None) -> None:
    """Write ``patterns`` to a filter hash (``>`` when ``reset``, else ``>>``);
    takes effect at once.  ``globs``: the words already parsed (and checked)."""
    if not isinstance(patterns, str):
        patterns = " ".join(patterns)
    if globs is None:
        globs = parse_filter(patterns)      # raises before anything changes
        check_selects(globs, patterns)
    if reset:
        hash_.globs = globs
        hash_.codes.clear()
    else:
        hash_.globs = hash_.globs + globs
    _core.update()


# ---------------------------------------------------------------- ops

class FtraceOps:
    """``struct ftrace_ops``: a callback and the functions it traces.

    ``func(ip, parent_ip, ops, regs)`` is called on entry of every traced
    function: ``ip`` is its entry site, ``parent_ip`` the call site in its
    caller (None when there is no Python caller), ``regs`` its frame when
    ``flags`` has FTRACE_OPS_FL_SAVE_REGS, else None.
    """

    # Local events this ops needs on the code it traces, and global ones.
    local_events = E.PY_START
    global_events = 0
    # A tracer's ops (function, function_graph) is outermost on a code traced
    # by several: its entry is recorded before any probe's there, its exit
    # after, so a probe event always sits inside the call it hit, whichever
    # was set up first.
    outermost = False

    def __init__(self, func: Callable[..., object] | None = None, flags: int = 0,
                 private: object = None) -> None:
        self.func = func
        self.flags = flags
        self.private = private
        self.filter = FilterHash()
        self.notrace = FilterHash()
        self.errors = 0         # exceptions raised by this ops' handlers
        self.registered = False

    # -- filters (the set_ftrace_filter / set_ftrace_notrace files)
    def set_filter(self, patterns: str | Iterable[str], reset: bool = True) -> None:
        self._set(self.filter, patterns, reset)

    def set_notrace(self, patterns: str | Iterable[str], reset: bool = True) -> None:
        self._set(self.notrace, patterns, reset)

    def set_filter_ip(self, ip: Ip, remove: bool = False, reset: bool = False) -> None:
        """Filter on one site (``ftrace_set_filter_ip``)."""
        if reset:
            self.filter.globs.clear()
            self.filter.codes.clear()
        if remove:
            self.filter.codes.pop(id(ip.code), None)
        else:
            self.filter.codes[id(ip.code)] = ip.code
        _core.update()

    def _set(self, hash_: FilterHash, patterns: str | Iterable[str], reset: bool) -> None:
        set_hash(hash_, patterns, reset)

    def wants(self, module: str, code: CodeType) -> bool:
        return ((self.filter.empty or self.filter.matches(module, code))
                and not self.notrace.matches(module, code))

    # -- the trampoline: handlers made for one code object
    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        """Event handlers for ``code``, called ``depth`` frames below the traced one."""
        save_regs = bool(self.flags & FTRACE_OPS_FL_SAVE_REGS)
        # (A func of None is called, and its fault counted, as the kernel's would crash.)
        return {E.PY_START: hotpath.ops_entry(self.func,  # type: ignore[arg-type]
                                              self, save_regs, depth)}


# event -> its handler; for INSTRUCTION, {offset: handler}.
Handlers = dict[int, Any]

# ---------------------------------------------------------------- dispatch

# Per-event dispatch tables: id(code) -> handler.  Mutated in place, never
# rebound: the event callbacks below hold them.
_entry: hotpath.CodeTable = hotpath.CodeTable()
_resume: hotpath.CodeTable = hotpath.CodeTable()
_return: hotpath.CodeTable = hotpath.CodeTable()
_yield: hotpath.CodeTable = hotpath.CodeTable()
_unwind: hotpath.CodeTable = hotpath.CodeTable()
_throw: hotpath.CodeTable = hotpath.CodeTable()
_instruction: hotpath.CodeTable = hotpath.CodeTable()
# (_instruction: id(code) -> {offset: handler})
# A traced code's calls of C functions (funcgraph-c): CALL, and C_RETURN /
# C_RAISE, which CPython reports where CALL is set.
_call: hotpath.CodeTable = hotpath.CodeTable()
_c_return: hotpath.CodeTable = hotpath.CodeTable()
_c_raise: hotpath.CodeTable = hotpath.CodeTable()
TABLES: dict[int, hotpath.CodeTable] = {E.PY_START: _entry, E.PY_RESUME: _resume, E.PY_RETURN: _return,
          E.PY_YIELD: _yield, E.PY_UNWIND: _unwind, E.PY_THROW: _throw,
          E.INSTRUCTION: _instruction, E.CALL: _call, E.C_RETURN: _c_return, E.C_RAISE: _c_raise}
# The C probes (cprobes): per event, id(callable) -> handler, wherever it is called.
C_PROBES: dict[int, hotpath.CodeTable] = {E.CALL: hotpath.CodeTable(), E.C_RETURN: hotpath.CodeTable(),
                                          E.C_RAISE: hotpath.CodeTable()}


_NARGS = {E.PY_START: 2, E.PY_RESUME: 2, E.PY_RETURN: 3, E.PY_YIELD: 3,
          E.PY_UNWIND: 3, E.PY_THROW: 3, E.CALL: 4, E.C_RETURN: 4, E.C_RAISE: 4}


def _fault(code: CodeType) -> None:
    _core.fault(code)


def _discover(code: CodeType) -> Callable[..., object] | None:
    return _core.discover(code)


CALLBACKS = {
    E.PY_START: hotpath.entry_dispatcher(_entry, _discover, _fault),
    E.INSTRUCTION: hotpath.offset_dispatcher(_instruction, _fault),
    **{event: hotpath.dispatcher(TABLES[event], _fault, _NARGS[event],
                                 bool(event & arch.DISABLE_ALLOWED))
       for event in (E.PY_RESUME, E.PY_RETURN, E.PY_YIELD, E.PY_UNWIND, E.PY_THROW)},
    **{event: hotpath.call_dispatcher(TABLES[event], C_PROBES[event], _fault)
       for event in (E.CALL, E.C_RETURN, E.C_RAISE)},
}


class _TracedRef(weakref.ref):  # type: ignore[type-arg]  # (a ref to a CodeType)
    """A traced code, weakly: its entry in ``_Core.traced`` and, through
    ``guards``, its handlers in the event tables go when it dies."""
    __slots__ = ("guards",)
    guards: tuple[weakref.ref[CodeType], ...]


class _Core:
    """The registry of live ops and the state of every traced code object."""

    def __init__(self) -> None:
        self.lock = _thread.RLock()
        self.monitor = arch.Monitor(self.lock)
        self.ops: list[FtraceOps] = []
        # id(code) -> (code, weakly; module; ops tuple) for every code traced
        # now: a code that dies leaves it, and every table (_TracedRef).
        self.traced: dict[int, tuple[_TracedRef, str, tuple[FtraceOps, ...]]] = {}
        self.tables = tuple(TABLES.values())
        self.faults = 0

    # -- registration
    def register(self, ops: FtraceOps) -> None:
        with self.lock:
            if ops in self.ops:
                raise ValueError("ftrace_ops already registered")
            if not self.ops:
                self.monitor.start()
                for event, cb in CALLBACKS.items():
                    self.monitor.set_callback(event, cb)
            self.ops.append(ops)
            ops.registered = True
            self.update()

    def unregister(self, ops: FtraceOps) -> None:
        with self.lock:
            if ops not in self.ops:
                raise ValueError("ftrace_ops not registered")
            self.ops.remove(ops)
            ops.registered = False
            if self.ops:
                self.update()
            else:
                self._clear()
                self.monitor.stop()

    # -- decisions
    def _ops_for(self, code: CodeType, module: str) -> tuple[FtraceOps, ...]:
        return tuple(o for o in self.ops if o.wants(module, code))

    def discover(self, code: CodeType) -> Callable[..., object] | None:
        """First PY_START of a code object: trace it or let it go (slow path)."""
        with self.lock:
            if not self.ops or is_fentry_code(code):
                return None
            function = is_function_code(code)
            if not function and code.co_name != "<module>":
                return None         # a class body
            module = _module_of_running(code)
            if is_fentry_module(module) or (not function and not is_main_module(module)):
                return None         # a module body traces only as the program's: __main__:<module>
            sym = SYMBOLS.add_code(code, module)
            if sym is not None:
                module = sym.module
            ops = self._ops_for(code, module)
            if not ops:
                return None
            self._install(code, module, ops)
            handler: Callable[..., object] | None = _entry.get(id(code))
            return handler

    def update(self) -> None:
        """Re-decide every traced code after a change of ops or filters."""
        with self.lock:
            if not self.ops:
                return
            glob = E.PY_START
            for o in self.ops:
                glob |= o.global_events
            self.monitor.set_global_events(glob)
            for ref, module, old in list(self.traced.values()):
                code = ref()
                if code is None:
                    continue        # died meanwhile: its entries go with it
                new = self._ops_for(code, module)
                if new != old:
                    self._uninstall(code)
                    if new:
                        self._install(code, module, new)
            # Codes DISABLEd under the old filters get decided again.
            self.monitor.restart_events()

    def refresh(self, ops: FtraceOps) -> None:
        """Make ``ops``' handlers again on every code it traces: their choice
        changed, not the codes.  Each table entry is replaced, never removed,
        so no event of a running code finds none (and DISABLEs itself)."""
        with self.lock:
            for ref, module, all_ops in list(self.traced.values()):
                code = ref()
                if code is not None and ops in all_ops:
                    self._install(code, module, all_ops)

    def _install(self, code: CodeType, module: str, ops: tuple[FtraceOps, ...]) -> None:
        key = id(code)
        events = 0
        if len(ops) == 1:
            events = ops[0].local_events
            for event, h in ops[0].handlers(code, module, DIRECT).items():
                TABLES[event][key] = h
        else:
            per_event: dict[int, list[tuple[FtraceOps, Any]]] = {}
            per_offset: dict[int, list[tuple[FtraceOps, Any]]] = {}
            for o in ops:
                events |= o.local_events
                for event, h in o.handlers(code, module, LISTED).items():
                    if event == E.INSTRUCTION:      # {offset: handler}
                        for offset, oh in h.items():
                            per_offset.setdefault(offset, []).append((o, oh))
                    else:
                        per_event.setdefault(event, []).append((o, h))
            for event, pairs in per_event.items():
                pairs.sort(key=_nesting if event in _LEAVING else _nesting_in)
                TABLES[event][key] = hotpath.list_func(pairs, _NARGS[event])
            if per_offset:
                TABLES[E.INSTRUCTION][key] = {
                    offset: hotpath.list_func(sorted(pairs, key=_nesting_in), 2)
                    for offset, pairs in per_offset.items()}
        ref = pop_at_death(code, self.traced, key, _TracedRef)
        # Every table that has the code forgets it with it (see lifetime.py).
        ref.guards = tuple(pop_at_death(code, table, key) for table in self.tables if key in table)
        self.traced[key] = (ref, module, ops)
        self.monitor.set_code_events(code, events & arch.LOCAL_EVENTS)

    def _uninstall(self, code: CodeType) -> None:
        key = id(code)
        for table in TABLES.values():
            table.pop(key, None)
        self.traced.pop(key, None)
        self.monitor.set_code_events(code, 0)

    def _clear(self) -> None:
        for ref, _, _ in list(self.traced.values()):
            code = ref()
            if code is not None:
                self._uninstall(code)

    def fault(self, code: CodeType) -> None:
        """A handler raised: count it on its ops; the traced program never sees it."""
        self.faults += 1
        state = self.traced.get(id(code))
        if state is not None and len(state[2]) == 1:
            state[2][0].errors += 1


# Events that leave a frame: there the outermost ops' handler runs last.
_LEAVING = (E.PY_RETURN, E.PY_YIELD, E.PY_UNWIND)


def _nesting(pair: tuple[FtraceOps, Any]) -> bool:
    """Sort key of (ops, handler) pairs at a leaving event: outermost last."""
    return pair[0].outermost


def _nesting_in(pair: tuple[FtraceOps, Any]) -> bool:
    """Sort key at an entering event: outermost first."""
    return not pair[0].outermost


def _module_of_running(code: CodeType) -> str:
    """The module whose globals the running ``code`` uses (its innermost frame)."""
    frame: FrameType | None = _getframe(1)
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    name = frame.f_globals.get("__name__") if frame is not None else None
    return name if isinstance(name, str) else "?"


_core = _Core()


def register_ftrace_function(ops: FtraceOps) -> None:
    """Start calling ``ops.func`` on entry of the functions its filter selects."""
    _core.register(ops)


def refresh_handlers(ops: FtraceOps) -> None:
    """Make a registered ``ops``' handlers again, where it traces (its
    ``handlers`` would choose others now), without stopping it."""
    _core.refresh(ops)


def check_tool_id() -> None:
    """Raise ToolIdBusy if an ops registered now could get no tool id."""
    with _core.lock:
        if not _core.ops:
            _core.monitor.check_free()


def unregister_ftrace_function(ops: FtraceOps) -> None:
    """Stop ``ops``; the last unregister releases the sys.monitoring tool id."""
    _core.unregister(ops)


def registered_ops() -> list[FtraceOps]:
    """Every ops registered now."""
    return list(_core.ops)


def reinit_after_fork() -> None:
    """In a forked child: the core's lock anew (a thread of the parent may
    have held it at the fork, and that thread does not exist here)."""
    _core.lock._at_fork_reinit()      # type: ignore[attr-defined]  # (threading's own way)


def enabled_functions() -> str:
    """The ``enabled_functions`` file: each function traced now, with how
    many ops trace it, and `` R`` when one of them saves regs (the frame),
    as the kernel's ``func [mod] (N) R``."""
    with _core.lock:
        traced = list(_core.traced.values())
    lines = []
    for ref, module, ops in traced:
        code = ref()
        if code is None:
            continue
        regs = any(o.flags & FTRACE_OPS_FL_SAVE_REGS for o in ops)
        lines.append((module, code.co_qualname, f"{code.co_qualname} [{module}] ({len(ops)})"
                      f"{' R' if regs else ''}\n"))
    return "".join(line for _, _, line in sorted(lines))


def traced_codes() -> list[CodeType]:
    """Code objects that have fentry's local events set now."""
    return _core.monitor.traced_codes()
