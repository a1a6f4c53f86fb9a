"""trace_fprobe: fprobe events, as the kernel's ``trace_fprobe.c``::

    f[:[GRP/][EVENT]] [MOD:]SYM [FETCHARGS]           function entry
    f[N][:[GRP/][EVENT]] [MOD:]SYM%return [FETCHARGS] function exit (N: maxactive)

An fprobe is an entry or return probe (a ``ProbeDefinition`` with
``dyn_type="fprobe"``, armed as a kprobe at +0 or a kretprobe) with the
fprobe's defaults: group ``fprobes``, event ``SYM__entry`` / ``SYM__exit``,
a ``$retval`` making it a return probe, and the function's parameters known
by name, as the kernel's BTF makes them known (the code object is fentry's
BTF):

- ``$arg*`` is expanded when the event is defined into one ``NAME=NAME``
  per parameter (``f:fprobes/add__entry shop:add a=a b=b``);
- a parameter's name is a fetcharg (``$argN`` of that parameter: at a
  return, the value it was passed), and names the field when no ``NAME=``
  is given, as the kernel's generate_probe_arg_name.

A function not found when defined (its module not imported yet) keeps
``$arg*`` expanded at each hit and plain names read as locals, as
``kprobe_events`` does.
"""

from __future__ import annotations

import sys
from types import CodeType

from ..errors import TraceError
from ..symbols import MAIN, SYMBOLS, source_functions
from .fetch import parameters
from .probe_parser import (
    _NOT_EVENT_CHAR,
    KRETPROBE_MAXACTIVE_MAX,
    MAX_EVENT_NAME_LEN,
    UINT_MAX,
    FetchArg,
    ProbeDefinition,
    _is_good_name,
    _Log,
    _name_end,
    _parse_event_name,
    _parse_fetchargs,
    _parse_symbol_point,
    _split_argv,
    _uint,
    format_fetcharg,
)

__all__ = ["FPROBE_EVENT_SYSTEM", "parse_fprobe", "resolve_fprobe"]

FPROBE_EVENT_SYSTEM = "fprobes"
SUBSYSTEM = "trace_fprobe"


def parse_fprobe(line: str) -> ProbeDefinition:
    """Parse one ``f`` line (the kernel's trace_fprobe_create); nothing is
    resolved here (``resolve_fprobe`` does, once the function is found)."""
    argv, log, head, colon, maxactive = split_head(line)
    point = argv[1]
    is_return = False
    pct = point.find("%")
    if pct >= 0:
        if point[pct:] != "%return":
            log.err(pct, "BAD_ADDR_SUFFIX")
        point, is_return = point[:pct], True
    module, symbol, offset = _parse_symbol_point(point, is_return, log)
    if offset:                          # an fprobe is on the entry or the exit only
        log.err(0, "BAD_PROBE_ADDR")
    # A $retval makes it an exit probe (parse_symbol_and_return).
    is_return = is_return or find_retval(argv) is not None
    log.index = 0
    if maxactive and not is_return:
        log.err(1, "BAD_MAXACT_TYPE")
    group, event = FPROBE_EVENT_SYSTEM, None
    if colon >= 0:
        group_given, event = _parse_event_name(head[colon + 1:], colon + 1, log)
        group = group_given or FPROBE_EVENT_SYSTEM
    if event is None:
        event = _NOT_EVENT_CHAR.sub("_", f"{symbol}__{'exit' if is_return else 'entry'}")
        event = event[:MAX_EVENT_NAME_LEN - 1]
    args = _parse_fetchargs(argv, log, is_return)
    args, written = _name_args(args, argv[2:], log)
    return ProbeDefinition(group=group, event=event, is_return=is_return, module=module,
                           symbol=symbol, offset=0, path=None, line=None, args=args,
                           maxactive=maxactive, written=written, dyn_type="fprobe")


def split_head(line: str) -> tuple[list[str], _Log, str, int, int]:
    """The start ``f`` and ``t`` lines share (trace_fprobe_create): the
    words (a point in ``argv[1]``, or the error), their error log, the head
    word, where its ``:`` is (-1: none), and its maxactive."""
    argv = _split_argv(line)
    log = _Log(argv, SUBSYSTEM)
    head = argv[0]
    colon = head.find(":", 1)
    maxactive = _parse_maxactive(head[1:colon] if colon >= 0 else head[1:], log)
    if len(argv) < 2:
        log.index = len(argv)
        log.err(0, "NO_PROBE_POINT")
    log.index = 1
    return argv, log, head, colon, maxactive


def find_retval(argv: list[str]) -> tuple[int, int] | None:
    """The first ``$retval`` among the fetchargs: (word, offset in it)."""
    for i, word in enumerate(argv[2:], 2):
        at = word.find("$retval")
        if at >= 0 and not (word[at + 7:at + 8].isalnum() or word[at + 7:at + 8] == "_"):
            return i, at
    return None


def _parse_maxactive(text: str, log: _Log) -> int:
    """``fNN``'s NN (0 when not given), as __trace_fprobe_create reads it:
    only what starts with a digit is one."""
    if not text[:1].isdigit():
        return 0
    if len(text) > MAX_EVENT_NAME_LEN - 1:
        log.err(1, "BAD_MAXACT")
    value = _uint(text, UINT_MAX)           # kstrtouint
    if not value:
        log.err(1, "BAD_MAXACT")
    if value > KRETPROBE_MAXACTIVE_MAX:     # (the kernel's RETHOOK_MAXACTIVE_MAX, the same)
        log.err(1, "MAXACT_TOO_BIG")
    return value


def _name_args(args: tuple[FetchArg, ...], words: list[str],
               log: _Log) -> tuple[tuple[FetchArg, ...], tuple[str, ...]]:
    """A fetcharg without ``NAME=`` whose body is a plain name is named after
    it (``count`` -> ``count=count``; ``count:u32`` too), as the kernel's
    generate_probe_arg_name; and what each shows as written."""
    out, written = [], []
    names = {a.name for a in args}
    for i, (arg, word) in enumerate(zip(args, words, strict=True)):
        eq = _name_end(word)
        body = word[eq + 1:]
        written.append(format_fetcharg(arg) if arg.kind == "args" else body)
        expr = body.partition(":")[0]
        if eq < 0 and arg.kind == "local" and _is_good_name(expr) and not arg.path:
            if expr in names:
                log.index = i + 2
                log.err(0, "USED_ARG_NAME")
            names.discard(arg.name)
            names.add(expr)
            arg = arg._replace(name=expr)
        out.append(arg)
    return tuple(out), tuple(written)


def function_parameters(module: str, qualname: str) -> tuple[str, ...] | None:
    """The parameter names of ``MOD:QUALNAME`` (the first of its code objects),
    or None if it cannot be found now."""
    codes: list[CodeType] | None
    if module in sys.modules:
        codes = [s.code for s in SYMBOLS.named(qualname, module)]
        if not codes and module == MAIN:
            codes = source_functions(MAIN, qualname)
    else:
        try:
            codes = source_functions(module, qualname)
        except ModuleNotFoundError:
            return None
    return tuple(parameters(codes[0])) if codes else None


def resolve_fprobe(defn: ProbeDefinition, module: str, pending: bool) -> ProbeDefinition:
    """``defn`` with the parameters of its function (in ``module``) known:
    ``$arg*`` expanded, parameter names taken as ``$argN``."""
    params = None if pending else function_parameters(module, defn.symbol)
    if params is None:
        return defn
    index = {name: i + 1 for i, name in enumerate(params)}
    args: list[FetchArg] = []
    written: list[str] = []
    for arg, text in zip(defn.args, defn.written, strict=True):
        if arg.kind == "args":
            args.extend(FetchArg(name=p, kind="arg", root=index[p]) for p in params)
            written.extend(params)
            continue
        if arg.kind == "local" and arg.root in index:
            arg = arg._replace(kind="arg", root=index[arg.root])
        args.append(arg)
        written.append(text)
    names = [a.name for a in args]
    if len(set(names)) != len(names):       # (placed in the command by the caller)
        raise TraceError("USED_ARG_NAME", subsystem=SUBSYSTEM)
    return defn._replace(args=tuple(args), written=tuple(written))
