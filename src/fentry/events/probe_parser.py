"""probe_parser: one line of ``kprobe_events`` into data.

The kernel's ``kernel/trace/trace_probe.c`` (what every probe event has in
common: event names, fetchargs, types) and the parsing half of
``trace_kprobe.c`` (``__trace_kprobe_create``), for Python programs::

    p[:[GRP/][EVENT]] [MOD:]SYM[+OFFS]|PATH:LINE [FETCHARGS]   entry, offset or line probe
    r[MAXACTIVE][:[GRP/][EVENT]] [MOD:]SYM[+0] [FETCHARGS]     return probe
    p[:[GRP/][EVENT]] [MOD:]SYM[+0]%return [FETCHARGS]        return probe, too
    -:[GRP/][EVENT] [POINT [FETCHARGS]]                       remove

Nothing is resolved here: no symbol lookup, no code object, no offset
decoding (a later layer does that and reports ``BAD_PROBE_ADDR`` or
``BAD_INSN_BNDRY`` itself).  A rejected line raises
``TraceError`` with the kernel's message and the caret where the kernel's
``kprobe_syntax_errors.tc`` expects it: as the kernel's ``trace_probe_log``,
an error is given as (word index, offset in that word) and the position in
the command comes for free.  The command shown is the words joined by one
space, as the kernel's error_log shows it.

Names, as the kernel makes them:

- the default group is ``kprobes``;
- the default event name is ``p_SYM_OFFS`` / ``r_SYM_OFFS`` where SYM is the
  qualified name without its module (``shop:Cart.add`` -> ``p_Cart_add_0``),
  and ``p_FILE_LINE`` for a line probe, FILE being the path's last component
  (``src/shop.py:42`` -> ``p_shop_py_42``); every character not allowed in an
  event name becomes ``_`` and the name is cut to MAX_EVENT_NAME_LEN - 1, as
  the kernel's ``snprintf`` into a MAX_EVENT_NAME_LEN buffer does;
- a fetcharg without ``NAME=`` is named ``argN`` by its position (1-based).

Fetchargs are Python's counterparts of the kernel's, kept as data (a root and
a tuple of attribute/item steps) so the runtime fetches them without eval:

==================  ==========================  ===========================
kernel              fentry                      ``FetchArg.kind`` / root
==================  ==========================  ===========================
``$argN``           ``$argN`` (1-based)         ``"arg"`` / N
``$arg*``           ``$args`` (or ``$arg*``)    ``"args"`` / None
``%REG``            a local or argument name    ``"local"`` / the name
``$retval``         ``$retval`` (return only)   ``"retval"`` / None
``$comm``           ``$comm`` (thread name)     ``"comm"`` / None
``$stack[N]``       ``$stack``, ``$stackN``     ``"stack"`` / None or N
``@SYM``            ``@MOD:NAME``               ``"global"`` / NAME (+module)
``+offs(ARG)``      ``ARG.attr``, ``ARG[key]``  ``path`` steps
``\\IMM``, ``\\"S"``  the same                    ``"imm"`` / int or str
``$FIELD`` (eprobe) the same                    ``"field"`` / FIELD
==================  ==========================  ===========================
"""

from __future__ import annotations

import keyword
import os
import re
from collections import namedtuple
from typing import NoReturn, Protocol

from fentry.errors import TraceError

__all__ = [
    "Definition", "FetchArg", "ProbeDefinition", "ProbeRemoval", "Step",
    "bitfield", "definition_words", "format_definition", "format_fetcharg", "log_command",
    "parse_probe",
    "KPROBE_EVENT_SYSTEM", "TYPES",
]

SUBSYSTEM = "trace_kprobe"
KPROBE_EVENT_SYSTEM = "kprobes"
# The kernel's limits (trace.h, trace_probe.h, kprobes.h).
MAX_EVENT_NAME_LEN = 64
MAX_ARGSTR_LEN = 63
MAX_ARG_NAME_LEN = 32
MAX_ARRAY_LEN = 64
MAX_TRACE_ARGS = 128
KRETPROBE_MAXACTIVE_MAX = 4096
UINT_MAX = 2**32 - 1
# THREAD_SIZE / sizeof(long) on x86_64: the kernel's bound for $stackN and $argN.
PARAM_MAX_STACK = 2048
# "fetch + deref*N + store + mod + end <= 16, this allows N=12" (trace_probe.h)
MAX_DEREF = 12

TYPES = frozenset({
    "u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64",
    "x8", "x16", "x32", "x64", "string", "symbol",
})
# The kernel's reserved_field_names: no fetcharg may take these names.
RESERVED_FIELD_NAMES = frozenset({
    "common_type", "common_flags", "common_preempt_count", "common_pid",
    "common_tgid", "__probe_ip", "__probe_ret_ip", "__probe_func",
})

# What a fetcharg's value starts from (FetchArg.kind).
FETCH_KINDS = ("arg", "args", "local", "retval", "comm", "stack", "global", "imm", "field")

_C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
# The kernel's is_good_system_name: a group may hold '-' (and start with it).
_GROUP_NAME = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*", re.ASCII)
_NOT_EVENT_CHAR = re.compile(r"[^A-Za-z0-9_]", re.ASCII)
# kstrtoul's base 0: the digits are checked by int() (08 is no octal).
_UINT = re.compile(r"\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", re.ASCII)
_DIGITS = frozenset("0123456789")
_BLANKS = re.compile(r"[ \t\n\v\f\r]+")     # C's isspace(), as argv_split
_BITFIELD = re.compile(r"b(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*|)@"
                       r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*|)/", re.ASCII)
_INT_KEY = re.compile(r"-?[0-9]{1,19}", re.ASCII)
_PY_IDENT = re.compile(r"[^\W\d]\w*")
_VAR = re.compile(r"[A-Za-z0-9_*]*", re.ASCII)
_META_ARGS = re.compile(r"\$arg[s*](?![A-Za-z0-9_])", re.ASCII)


# -- data -------------------------------------------------------------------
# Immutable records, as namedtuples: importing dataclasses (and inspect with
# it) would cost `fentry attach` more than this whole module.

class Step(namedtuple("Step", "op key")):
    """One dereference: ``.key`` (``op="attr"``) or ``[key]`` (``op="item"``)."""
    __slots__ = ()


class FetchArg(namedtuple("FetchArg", "name kind root module path type array_len",
                          defaults=(None, None, (), None, None))):
    """One ``[NAME=]FETCHARG[:TYPE]``, the kernel's ``struct probe_arg``.

    ``kind`` says where the value starts (see the module docstring), ``root``
    is the kind's operand (argument number, local or global name, stack
    depth, immediate value; None for ``$retval``, ``$comm``, ``$stack`` and
    ``$args``), ``module`` the module of a ``global``, ``path`` the
    attribute and item steps taken from there.  ``type`` is the TYPE as
    written (None: the default, a bounded repr; ``$comm`` and string
    immediates are strings), ``array_len`` the N of ``TYPE[N]``.
    ``$args`` is named ``"$args"``: the runtime expands it into one field
    per parameter, named after it.
    """
    __slots__ = ()

    @property
    def expr(self) -> str:
        """The fetcharg as written, without name and type (``item.sku``)."""
        return _format_expr(self)


class ProbeDefinition(namedtuple("ProbeDefinition", "group event is_return module symbol offset "
                                                  "path line args maxactive written dyn_type",
                                 defaults=((), 0, (), "kprobe"))):
    """A parsed ``p``/``r`` line: where to probe and what to fetch.

    Exactly one of (``symbol``, ``offset``) and (``path``, ``line``) is set:
    ``module`` is the MOD of ``MOD:SYM`` (None when not given), ``symbol`` its
    qualified name, ``offset`` a bytecode offset (0 is the function entry);
    ``path`` and ``line`` a line probe's ``PATH:LINE`` as written.
    ``maxactive`` is a return probe's ``rNN`` (0: not given).  ``written``
    holds each fetcharg's ``FETCHARG[:TYPE]`` as written, what reading
    ``kprobe_events`` shows (the kernel's ``probe_arg.comm``: ``\\0x10``
    stays ``\\0x10``); empty when the definition was not parsed.
    ``dyn_type`` is the dynamic event kind that made it (the kernel's
    ``dyn_event_operations``): ``kprobe`` (``p``/``r``) or ``fprobe`` (``f``).
    """
    __slots__ = ()

    @property
    def kind(self) -> str:
        """entry, offset, line or return."""
        if self.is_return:
            return "return"
        if self.path is not None:
            return "line"
        return "offset" if self.offset else "entry"

    @property
    def symbol_name(self) -> str | None:
        """``MOD:QUALNAME`` (or ``QUALNAME``) for symbol probes, else None."""
        if self.symbol is None:
            return None
        return f"{self.module}:{self.symbol}" if self.module else self.symbol

    @property
    def location(self) -> str:
        """The probe point as ``kprobe_events`` shows it (offset 0 omitted)."""
        if self.path is not None:
            return f"{self.path}:{self.line}"
        return f"{self.symbol_name}+{self.offset}" if self.offset else f"{self.symbol_name}"

    def words(self) -> list[str]:
        """The line as reading ``dynamic_events`` shows it, word by word (the
        kernel's trace_kprobe_show, trace_fprobe_show)."""
        if self.dyn_type == "fprobe":
            head = f"f{self.maxactive}" if self.is_return and self.maxactive else "f"
            location = self.location + ("%return" if self.is_return else "")
        else:
            head, location = "p", self.location
            if self.is_return:
                head = f"r{self.maxactive}" if self.maxactive else "r"
        words = [f"{head}:{self.group}/{self.event}", location]
        if self.written:
            words.extend(w if a.kind == "args" else f"{a.name}={w}"
                         for a, w in zip(self.args, self.written, strict=True))
        else:
            words.extend(format_fetcharg(a) for a in self.args)
        return words

    def match_head(self, point: str) -> bool:
        """Whether a removal's probe point is this one's (an fprobe's: the
        symbol, without %return, as the kernel's trace_fprobe_match)."""
        return point == (self.location if self.dyn_type == "fprobe" else self.words()[1])


class Definition(Protocol):
    """What every kind of dynamic event definition has (``ProbeDefinition``,
    trace_eprobe's ``EprobeDefinition``)."""
    @property
    def group(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def is_return(self) -> bool: ...
    @property
    def args(self) -> tuple[FetchArg, ...]: ...
    @property
    def dyn_type(self) -> str: ...
    @property
    def location(self) -> str: ...
    def words(self) -> list[str]: ...
    def match_head(self, point: str) -> bool: ...


class ProbeRemoval(namedtuple("ProbeRemoval", "group event point args", defaults=(None, ()))):
    """A ``-:[GRP/][EVENT] [POINT [FETCHARGS]]`` line, as the kernel's
    ``dyn_event_release`` reads it: ``group`` None matches any group, an
    empty ``event`` every event of the group; ``point`` (or None) and
    ``args``, the words after it, must be the event's own as reading
    ``kprobe_events`` shows them (the arguments a prefix of its own)."""
    __slots__ = ()


# -- the error context (the kernel's trace_probe_log) ------------------------

class _Log:
    """Which word of the command is being parsed, so errors get their caret."""

    def __init__(self, argv: list[str], subsystem: str = SUBSYSTEM) -> None:
        self.argv = argv
        self.index = 0
        self.subsystem = subsystem      # the kernel's trace_probe_log_init(subsystem, ...)

    def err(self, offset: int, code: str) -> NoReturn:
        command = " ".join(self.argv)
        # A missing word (index past the last) is pointed at the end, as before it.
        pos = min(sum(len(a) + 1 for a in self.argv[:self.index]) + offset, len(command))
        raise TraceError(code, command, pos, subsystem=self.subsystem)


# -- helpers ----------------------------------------------------------------

def _split_argv(line: str) -> list[str]:
    """Words split on whitespace, quotes or not, as the kernel's argv_split:
    ``\\"a b"`` is two words (and the first a string left open)."""
    return [w for w in _BLANKS.split(line) if w]


def _top_level(s: str, chars: str, skip: int = 0, quotes_outside: bool = True) -> int:
    """Index of the first of ``chars`` outside fentry's item steps ``[...]``
    and quotes (after skipping ``skip`` of them), or -1.  With
    ``quotes_outside`` false, quotes count only inside brackets: where the
    kernel's strchr() looks, it does not know them."""
    depth = 0
    quote = ""
    for i, ch in enumerate(s):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and (depth or quotes_outside):
            quote = ch
        elif ch in chars and depth == 0:
            if not skip:
                return i
            skip -= 1
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
    return -1


def _uint(text: str, limit: int = 2**64 - 1) -> int | None:
    """The kernel's kstrtoul(text, 0): decimal, 0x hex or 0 octal (``010`` is
    8), one leading ``+`` allowed; None if not a number or above ``limit``."""
    m = _UINT.fullmatch(text)
    if not m:
        return None
    digits = m.group(1)
    if digits[:2].lower() == "0x":
        value = int(digits[2:], 16)
    elif digits[:1] == "0":
        value = int(digits, 8)
    else:
        value = int(digits)
    return value if value <= limit else None


def _long(text: str) -> int | None:
    """The kernel's kstrtol(text, 0): a signed long."""
    if text[:1] == "-":
        value = _uint(text[1:], 2**63)
        return None if value is None or text[1:2] == "+" else -value
    return _uint(text, 2**63 - 1)


def _is_good_name(name: str) -> bool:
    """The kernel's is_good_name: a C identifier."""
    return _C_IDENT.fullmatch(name) is not None


def _is_py_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _is_dotted(name: str) -> bool:
    return all(_is_py_name(p) for p in name.split("."))


def _is_qualname(name: str) -> bool:
    """``Cart.add``, ``outer.<locals>.inner``, ``<lambda>``."""
    return all(_is_py_name(p) or (len(p) > 2 and p[0] == "<" and p[-1] == ">"
                                  and p[1:-1].isidentifier())
               for p in name.split("."))


def _event_name(prefix: str, middle: str, suffix: int) -> str:
    name = _NOT_EVENT_CHAR.sub("_", f"{prefix}_{middle}_{suffix}")
    return name[:MAX_EVENT_NAME_LEN - 1]


# -- the probe line (trace_kprobe.c) ----------------------------------------

def parse_probe(line: str) -> ProbeDefinition | ProbeRemoval:
    """Parse one ``kprobe_events`` line; raise ``TraceError`` if it is bad.

    Blank lines and ``#`` comments are the caller's to skip, as the kernel's
    ``trace_parse_run_command`` does before a line reaches the parser.
    """
    argv = _split_argv(line)
    log = _Log(argv)
    if not argv:
        log.err(0, "BAD_PROBE_TYPE")
    head = argv[0]
    if head[0] == "-":
        return _parse_removal(argv, log)
    if head[0] not in "pr":
        log.err(0, "BAD_PROBE_TYPE")
    is_return = head[0] == "r"
    colon = head.find(":", 1)
    maxactive = _parse_maxactive(head[1:colon] if colon >= 0 else head[1:], is_return, log)
    if len(argv) < 2:
        log.index = len(argv)
        log.err(0, "NO_PROBE_POINT")

    # The probe point first, then the event name: the kernel's order.
    log.index = 1
    point = argv[1]
    pct = point.find("%")
    if pct >= 0:
        if point[pct:] != "%return":
            log.err(pct, "BAD_ADDR_SUFFIX")
        point = point[:pct]
        is_return = True
    lcolon = point.rfind(":")
    path: str | None
    line_no: int | None
    if lcolon >= 0 and point[:lcolon].endswith(".py"):
        path, line_no = _parse_line_point(point, lcolon, is_return, log)
        module = symbol = None
        offset = 0
        default = _event_name("p", os.path.basename(path), line_no)
    else:
        module, symbol, offset = _parse_symbol_point(point, is_return, log)
        path = line_no = None
        default = _event_name("r" if is_return else "p", symbol, offset)

    log.index = 0
    group, event = KPROBE_EVENT_SYSTEM, None
    if colon >= 0:
        group_given, event = _parse_event_name(head[colon + 1:], colon + 1, log)
        group = group_given or KPROBE_EVENT_SYSTEM

    args = _parse_fetchargs(argv, log, is_return)
    return ProbeDefinition(
        group=group, event=event or default, is_return=is_return,
        module=module, symbol=symbol, offset=offset, path=path, line=line_no,
        args=args, maxactive=maxactive, written=tuple(
            format_fetcharg(a) if a.kind == "args" else w[_name_end(w) + 1:]
            for a, w in zip(args, argv[2:], strict=True)))


def _parse_maxactive(text: str, is_return: bool, log: _Log) -> int:
    """The NN of ``rNN`` (0 when not given)."""
    if not text:
        return 0
    if text[0] not in "0123456789":
        log.err(1, "BAD_PROBE_TYPE")
    if not is_return:
        log.err(1, "BAD_MAXACT_TYPE")
    if len(text) > MAX_EVENT_NAME_LEN - 1:
        log.err(1, "BAD_MAXACT")
    value = _uint(text)
    if not value:
        log.err(1, "BAD_MAXACT")
    if value > KRETPROBE_MAXACTIVE_MAX:
        log.err(1, "MAXACT_TOO_BIG")
    return value


def _parse_line_point(point: str, lcolon: int, is_return: bool, log: _Log) -> tuple[str, int]:
    """``PATH:LINE`` (``lcolon`` the index of its colon): (path, line)."""
    digits = point[lcolon + 1:]
    line_no = int(digits) if re.fullmatch(r"[0-9]{1,20}", digits, re.ASCII) else None
    if not line_no or line_no > 2**31 - 1:
        log.err(lcolon + 1, "BAD_LINE_NUM")
    if is_return:
        log.err(0, "BAD_RETPROBE")
    return point[:lcolon], line_no


def _parse_symbol_point(point: str, is_return: bool, log: _Log) -> tuple[str | None, str, int]:
    """``[MOD:]SYM[+OFFS]``: (module or None, qualified name, offset)."""
    sign = min((i for i in (point.find("+"), point.find("-")) if i >= 0),
               default=-1)
    name = point
    offset = 0
    if sign >= 0:
        value = _uint(point[sign + 1:]) if point[sign] == "+" else None
        if value is None or value > UINT_MAX:
            log.err(0, "BAD_PROBE_ADDR")
        name, offset = point[:sign], value
    module = None
    if ":" in name:
        module, _, symbol = name.partition(":")
        if not _is_dotted(module):
            log.err(0, "BAD_PROBE_ADDR")
    else:
        symbol = name
    if not _is_qualname(symbol):
        log.err(0, "BAD_PROBE_ADDR")
    if is_return and offset:
        log.err(0, "BAD_RETPROBE")
    return module, symbol, offset


def _parse_removal(argv: list[str], log: _Log) -> ProbeRemoval:
    """The kernel's dyn_event_release: names are not checked (one that is no
    event's matches none), a group is what comes before the first '/'."""
    head = argv[0]
    if head[1:2] != ":":
        log.err(1, "BAD_REMOVE")
    group: str | None
    group, slash, event = head[2:].partition("/")
    if not slash:
        group, event = None, head[2:]
        if not event:
            log.err(2, "BAD_REMOVE")
    return ProbeRemoval(group=group, event=event, point=argv[1] if len(argv) > 1 else None,
                        args=tuple(argv[2:]))


def _parse_event_name(text: str, offset: int, log: _Log) -> tuple[str | None, str | None]:
    """The kernel's traceprobe_parse_event_name: ``[GRP/][EVENT]`` (``GRP.EVENT``
    too).  Returns (group or None, event or None: the default name)."""
    group = None
    slash = text.find("/")
    if slash < 0:
        slash = text.find(".")
    if slash >= 0:
        if slash == 0:
            log.err(offset, "NO_GROUP_NAME")
        if slash + 1 > MAX_EVENT_NAME_LEN:
            log.err(offset, "GROUP_TOO_LONG")
        group = text[:slash]
        if not _GROUP_NAME.fullmatch(group):
            log.err(offset, "BAD_GROUP_NAME")
        offset += slash + 1
        text = text[slash + 1:]
    if not text:
        if slash >= 0:
            return group, None
        log.err(offset, "NO_EVENT_NAME")
    if len(text) >= MAX_EVENT_NAME_LEN:
        log.err(offset, "EVENT_TOO_LONG")
    if not _is_good_name(text):
        log.err(offset, "BAD_EVENT_NAME")
    return group, text


# -- fetchargs (trace_probe.c) ----------------------------------------------

def _parse_fetchargs(argv: list[str], log: _Log, is_return: bool,
                     fields: frozenset[str] | None = None) -> tuple[FetchArg, ...]:
    """``argv[2:]``; ``fields``: an eprobe's, the attached event's field names."""
    if len(argv) - 2 > MAX_TRACE_ARGS:
        log.index = 2 + MAX_TRACE_ARGS
        log.err(0, "TOO_MANY_ARGS")
    args: list[FetchArg] = []
    names: set[str] = set()
    has_args = False
    for i, word in enumerate(argv[2:]):
        log.index = i + 2
        arg = _parse_fetcharg(word, i, log, is_return, names, has_args, fields)
        has_args = has_args or arg.kind == "args"
        names.add(arg.name)
        args.append(arg)
    return tuple(args)


def _name_end(word: str) -> int:
    """Index of the ``=`` after ``NAME`` in ``[NAME=]FETCHARG``, or -1.  An
    immediate has no item steps: its '[' opens none."""
    return word.find("=") if word[:1] == "\\" else _top_level(word, "=", quotes_outside=False)


def _parse_fetcharg(word: str, i: int, log: _Log, is_return: bool,
                    names: set[str], has_args: bool,
                    fields: frozenset[str] | None = None) -> FetchArg:
    """The kernel's traceprobe_parse_probe_arg: ``[NAME=]BODY[:TYPE]``."""
    eq = _name_end(word)
    body_at = eq + 1 if eq >= 0 else 0
    body = word[body_at:]

    # $arg* is checked before anything else (traceprobe_expand_meta_args).
    m = _META_ARGS.match(body)
    if m:
        if eq >= 0 or body != m.group():
            log.err(body_at, "BAD_VAR_ARGS")
        if has_args:
            log.err(0, "DOUBLE_ARGS")
        return FetchArg(name="$args", kind="args")

    if eq >= 0:
        name = word[:eq]
        if len(name) > MAX_ARG_NAME_LEN:
            log.err(0, "ARG_NAME_TOO_LONG")
        if not name:
            log.err(0, "NO_ARG_NAME")
    else:
        name = f"arg{i + 1}"
    if not _is_good_name(name):
        log.err(0, "BAD_ARG_NAME")
    if name in names or name in RESERVED_FIELD_NAMES:
        log.err(0, "USED_ARG_NAME")

    return _parse_arg_body(body, body_at, name, log, is_return, fields)


def _parse_arg_body(body: str, offs: int, name: str, log: _Log,
                    is_return: bool, fields: frozenset[str] | None = None) -> FetchArg:
    """The kernel's traceprobe_parse_probe_arg_body, in its order: length,
    then the type (``:TYPE[N]`` after the first colon), then the expression,
    then what the type allows of it."""
    if len(body) > MAX_ARGSTR_LEN:
        log.err(offs, "ARG_TOO_LONG")
    if not body:
        log.err(offs, "NO_ARG_BODY")

    # For @MOD:NAME the first colon is the module's.
    skip = 1 if body[:1] == "@" and body[1:2] not in ("+", *"0123456789") else 0
    colon = body.find(":") if body[:1] == "\\" else _top_level(body, ":", skip, quotes_outside=False)
    expr = body if colon < 0 else body[:colon]
    type_ = None if colon < 0 else body[colon + 1:]
    type_pos = offs + colon + 1 if colon >= 0 else offs
    array_len = None
    if type_ is not None:
        br = type_.find("[")
        if br >= 0:
            close = type_.find("]", br + 1)
            if close < 0:
                log.err(offs + len(body), "ARRAY_NO_CLOSE")
            if close + 1 != len(type_):
                log.err(type_pos + close + 1, "BAD_ARRAY_SUFFIX")
            array_len = _uint(type_[br + 1:close], UINT_MAX)
            if not array_len:
                log.err(type_pos + br + 1, "BAD_ARRAY_NUM")
            if array_len > MAX_ARRAY_LEN:
                log.err(type_pos + br + 1, "ARRAY_TOO_BIG")
            type_ = type_[:br]

    if expr in ("$comm", "$COMM") or expr.startswith('\\"'):
        if array_len or (type_ is not None and type_ != "string"):
            log.err(type_pos, "NEED_STRING_TYPE")
    elif type_ is not None and type_ not in TYPES and not _is_bitfield_type(type_):
        log.err(type_pos, "BAD_TYPE")

    kind, root, module, path = _parse_expr(expr, offs, log, is_return, fields)
    if kind == "comm" or (kind == "imm" and isinstance(root, str)):
        type_ = "string"            # the kernel's type of $comm and \"STR", given or not

    # What the type allows: the kernel stores a string or an array only from
    # memory (an immediate counts); here, what can hold text or items can
    # (a frame cannot, a number holds no items).  $retval is a Python value
    # and may be a str: accepted (the kernel refuses a register).
    numeric_imm = kind == "imm" and isinstance(root, int)
    if type_ == "string" and kind == "stack":
        log.err(type_pos, "BAD_STRING")
    if type_ is not None and type_[:1] == "b":
        _check_bitfield(type_, type_pos, log)
    if array_len and (kind == "stack" or (numeric_imm and type_ != "string")):
        log.err(type_pos, "BAD_STRING")
    return FetchArg(name=name, kind=kind, root=root, module=module,
                    path=path, type=type_, array_len=array_len)


def _is_bitfield_type(type_: str) -> bool:
    """The kernel's find_fetch_type for ``b...``: the container size after
    ``/`` must be 8, 16, 32 or 64 (the rest is checked after the body)."""
    slash = type_.find("/")
    return type_[:1] == "b" and slash >= 0 and _uint(type_[slash + 1:]) in (8, 16, 32, 64)


def bitfield(type_: str) -> tuple[int, int, int] | None:
    """(width, offset, container bits) of a ``bWIDTH@OFFSET/SIZE`` type the
    kernel's __parse_bitfield_probe_arg accepts, else None."""
    if type_[:1] != "b" or not _is_bitfield_type(type_):
        return None
    size = _uint(type_[type_.find("/") + 1:]) or 0
    # simple_strtoul(..., 0): the longest number that starts there.
    m = _BITFIELD.match(type_)
    if not m or not m.group(2):
        return None
    width, offset = _uint(m.group(1)) or 0, _uint(m.group(2)) or 0
    return (width, offset, size) if width and width + offset <= size else None


def _check_bitfield(type_: str, type_pos: int, log: _Log) -> None:
    if bitfield(type_) is None:
        log.err(type_pos, "BAD_BITFIELD")


# (kind, root, module, path): what a FetchArg keeps of its expression.
_Expr = tuple[str, str | int | None, str | None, tuple[Step, ...]]


def _parse_expr(expr: str, offs: int, log: _Log, is_return: bool,
                fields: frozenset[str] | None = None) -> _Expr:
    """The kernel's parse_probe_arg: a root, then attribute and item steps
    (the Python form of ``+offs(FETCHARG)``).  With ``fields`` (an eprobe's),
    ``$FIELD`` and ``$comm`` are its only variables, as the kernel's
    TPARG_FL_TEVENT: another ``$`` name is BAD_VAR at the argument's start,
    a plain name NOSUP_BTFARG."""
    c = expr[:1]
    module: str | None = None
    root: str | int | None = None
    if fields is not None and c == "$":
        m = _PY_IDENT.match(expr, 1)
        var = m.group() if m else ""
        if var in fields:
            return "field", var, None, _parse_steps(expr, 1 + len(var), offs, log)
        if var not in ("comm", "COMM"):
            log.err(0, "BAD_VAR")
    elif fields is not None and c not in ("\\", "@"):
        log.err(offs, "NOSUP_BTFARG")
    if c == "$":
        m = _VAR.match(expr, 1)             # (always matches: [...]* takes "")
        var = m.group() if m else ""
        end = 1 + len(var)
        if var == "retval":
            if not is_return:
                log.err(offs, "RETVAL_ON_PROBE")
            kind = "retval"
        elif var in ("comm", "COMM"):
            if end < len(expr):
                log.err(offs, "COMM_CANT_DEREF")
            return "comm", None, None, ()
        elif var.startswith("stack"):
            kind = "stack"
            if var != "stack":
                root = int(var[5:]) if re.fullmatch(r"[0-9]{1,20}", var[5:]) else None
                if root is None:
                    log.err(offs, "BAD_VAR")
                if root > PARAM_MAX_STACK:
                    log.err(offs, "BAD_STACK_NUM")
        elif re.fullmatch(r"arg[0-9]{1,20}", var):
            kind, root = "arg", int(var[3:])
            if not root or root > PARAM_MAX_STACK:
                log.err(offs, "BAD_ARG_NUM")
        else:
            log.err(offs, "BAD_VAR")
    elif c == "%":
        log.err(offs, "BAD_REG_NAME")
    elif c == "@":
        if expr[1:2].isdigit():
            log.err(offs, "BAD_MEM_ADDR")
        if expr[1:2] == "+":
            log.err(offs, "FILE_ON_KPROBE")
        sep = expr.find(":")
        m = _PY_IDENT.match(expr, sep + 1) if sep > 0 else None
        if not m or not _is_dotted(expr[1:sep]) or not _is_py_name(m.group()):
            log.err(offs, "BAD_GLOBAL")
        kind, module, root, end = "global", expr[1:sep], m.group(), m.end()
    elif c == "\\":
        return _parse_immediate(expr, offs, log)
    elif c in ("+", "-"):
        log.err(offs, "KERNEL_DEREF")
    else:
        m = _PY_IDENT.match(expr)
        if not m or not _is_py_name(m.group()):
            log.err(offs, "BAD_FETCH_ARG")
        kind, root, end = "local", m.group(), m.end()
    return kind, root, module, _parse_steps(expr, end, offs, log)


def _parse_immediate(expr: str, offs: int, log: _Log) -> _Expr:
    """The kernel's ``\\IMM`` (str_to_immediate: kstrtoul, or kstrtol after a
    sign) and ``\\"STR"`` (__parse_imm_string: whatever ends with '"')."""
    if expr[1:2] == '"':
        if len(expr) < 3 or expr[-1] != '"':
            log.err(offs + len(expr), "IMMSTR_NO_CLOSE")
        return "imm", expr[2:-1], None, ()
    text = expr[1:]
    if text[:1] in _DIGITS:
        value = _uint(text)
    elif text[:1] == "-":
        value = _long(text)
    elif text[:1] == "+":
        value = _long(text[1:])
    else:
        value = None
    if value is None:
        log.err(offs + 1, "BAD_IMM")
    return "imm", value, None, ()


def _parse_steps(expr: str, i: int, offs: int, log: _Log) -> tuple[Step, ...]:
    steps: list[Step] = []
    while i < len(expr):
        start = i
        if expr[i] == ".":
            m = _PY_IDENT.match(expr, i + 1)
            if not m or not _is_py_name(m.group()):
                log.err(offs + i + 1, "BAD_DEREF_OFFS")
            steps.append(Step("attr", m.group()))
            i = m.end()
        elif expr[i] == "[":
            close = _top_level(expr[i + 1:], "]")
            if close < 0:
                log.err(offs + len(expr), "DEREF_OPEN_BRACE")
            key_text = expr[i + 1:i + 1 + close]
            key = _item_key(key_text)
            if key is None:
                log.err(offs + i + 1, "BAD_DEREF_OFFS")
            steps.append(Step("item", key))
            i += close + 2
        else:
            log.err(offs + i, "BAD_FETCH_ARG")
        if len(steps) > MAX_DEREF:
            log.err(offs + start, "TOO_MANY_OPS")
    return tuple(steps)


def _item_key(text: str) -> str | int | None:
    """``0``, ``-1``, ``"host"`` or ``'host'`` (no escapes), else None."""
    if _INT_KEY.fullmatch(text):
        return int(text)
    if len(text) >= 2 and text[0] in "\"'" and text[-1] == text[0] \
            and text[0] not in text[1:-1]:
        return text[1:-1]
    return None


# -- formatting (reading kprobe_events) --------------------------------------

def _format_expr(arg: FetchArg) -> str:
    kind, root = arg.kind, arg.root
    if kind == "imm":
        return f'\\"{root}"' if isinstance(root, str) else f"\\{root}"
    if kind == "arg":
        text = f"$arg{root}"
    elif kind == "stack":
        text = "$stack" if root is None else f"$stack{root}"
    elif kind == "global":
        text = f"@{arg.module}:{root}"
    elif kind == "local":
        text = str(root)
    elif kind == "field":
        text = f"${root}"
    else:                                   # retval, comm, args
        text = f"${kind}"
    for step in arg.path:
        if step.op == "attr":
            text += f".{step.key}"
        elif isinstance(step.key, int):
            text += f"[{step.key}]"
        else:
            q = "'" if '"' in step.key else '"'
            text += f"[{q}{step.key}{q}]"
    return text


def format_fetcharg(arg: FetchArg) -> str:
    """``NAME=FETCHARG[:TYPE]`` as ``kprobe_events`` shows it."""
    if arg.kind == "args":
        return "$args"
    text = f"{arg.name}={_format_expr(arg)}"
    if arg.type is not None:
        text += f":{arg.type}"
        if arg.array_len:
            text += f"[{arg.array_len}]"
    return text


def format_definition(defn: Definition | ProbeRemoval) -> str:
    """The line as reading ``kprobe_events`` shows it, as the kernel's
    trace_kprobe_show: ``p:kprobes/p_Cart_add_0 shop:Cart.add item=item:x64``."""
    return " ".join(definition_words(defn))


def definition_words(defn: Definition | ProbeRemoval) -> list[str]:
    """The words of ``format_definition``: what a removal's are compared with."""
    if isinstance(defn, ProbeRemoval):
        name = f"-:{defn.event}" if defn.group is None else f"-:{defn.group}/{defn.event}"
        return [name, *([defn.point] if defn.point is not None else []), *defn.args]
    return defn.words()


def log_command(line: str) -> str:
    """A line as error_log shows it: its words joined by one space (the
    command of every error in it, whichever layer finds the error)."""
    return " ".join(_split_argv(line))
