"""events.filter: the kernel's event filter grammar, for fentry's events.

What a write to ``events/GRP/EVENT/filter`` accepts, as the kernel's
``kernel/trace/trace_events_filter.c`` (Documentation/trace/events.rst,
"Event filtering")::

    count > 3 && (name ~ "ab*" || !(flags & 4)) && comm == "MainThread"

- numeric fields: ``==  !=  <  <=  >  >=  &`` against an integer (decimal,
  ``0x`` hex, ``0`` octal, negative), as the kernel's ``kstrtoll``;
- string fields: ``==  !=`` and ``~`` (a glob: ``*  ?  [...]  \\``, a
  leading ``!`` in the pattern negates it) against a string in double or
  single quotes; an unquoted word is refused, as the kernel refuses it
  ("Invalid value (did you forget quotes)?");
- ``&&`` binds tighter than ``||``; ``!`` negates the next term or group;
- the common fields ``common_pid`` (num) and ``comm`` (str) always exist;
  an event's own field of the same name wins, as in the kernel.

The text is parsed as the kernel parses it -- first ``calc_stack()`` (quotes
and parentheses over the whole string), then ``predicate_parse()`` left to
right with ``parse_pred()`` for each term -- so a mistake gets the kernel's
message and the kernel's caret position (including its habit of pointing one
character past the spot it examined).  Errors raise ``TraceError`` with a
``FILT_ERR_*`` code of :mod:`fentry.errors`.

A filter is compiled once into one generated Python function (source built
from the parsed tokens only: every user string or name reaches it as a bound
constant, never as source text), so ``matches()`` costs one call and the
comparisons themselves.  The same parse also gives ``program``: the filter as
data (predicates and a postfix program of ``!  &&  ||``) for the C hot path,
when every predicate is one it evaluates (all but the globs that need a
regular expression).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ..errors import TraceError

__all__ = ["COMMON_FIELDS", "Filter", "NO_FILTER", "compile_filter"]

NUM = "num"
STR = "str"

# The kernel's common/generic fields that have a Python meaning.  An event's
# own fields are looked up first (trace_find_event_field()), then these.
COMMON_FIELDS: dict[str, str] = {"common_pid": NUM, "comm": STR}

SUBSYSTEM = "event filter parse error"    # the error_log "location" of the kernel
MAX_FILTER_STR_VAL = 256                   # kernel: longest quoted operand + 1
NUM_BUF = 24                               # kernel: parse_pred()'s num_buf

# C's isspace()/isalnum(): ASCII only (Python's str methods know Unicode).
_BLANKS = " \t\n\v\f\r"
_SPACE = frozenset(_BLANKS)
_DIGIT = frozenset("0123456789")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME = _ALNUM | {"_"}
_RADIX_DIGITS = {8: frozenset("01234567"), 10: _DIGIT,
                 16: frozenset("0123456789abcdefABCDEF")}
# The kernel's ops[] order: '<=' before '<' and '>=' before '>'.
_OPS = ("~", "!=", "==", "<=", "<", ">=", ">", "&")
_STRING_OPS = ("~", "!=", "==")
# Python's tokenizer refuses more than 200 nested parentheses: deeper groups
# are hoisted into functions of their own (see _Codegen._join).
_MAX_NEST = 40


Values = Mapping[str, object]
# What the C hot path runs: (predicates, postfix program), predicates being
# (field, op, operand, negate) and the program their indexes and operators.
type Program = tuple[tuple[tuple[object, ...], ...], tuple[int, ...]]


def _match_all(values: Values) -> bool:
    return True


class Filter:
    """A compiled event filter.

    ``text`` is what reading the ``filter`` file shows: the filter as written
    (trailing whitespace removed, as the kernel's ``strstrip``), or ``"none"``.

    ``matches(values)`` -- ``values`` maps field names to the event's values
    -- is the compiled predicate itself, so the hot path pays one call.  It
    never raises: a comparison whose field is missing, or holds a value of
    the wrong type (a ``num`` field needs an ``int``, ``bool`` included; a
    ``str`` field needs a ``str``), is False -- ``!=`` included -- and ``!``
    applies to that False like to any other.  Values are compared with
    ``int``'s and ``str``'s own methods, so no user code runs.
    """
    # (Plain class, not a dataclass: importing dataclasses costs `fentry
    # attach` more than all this module.)
    __slots__ = ("text", "matches", "program")

    def __init__(self, text: str, matches: Callable[[Values], bool],
                 program: Program | None = None) -> None:
        self.text = text
        self.matches = matches
        # (preds, code): preds are (field, op, operand, negate), op one of
        # == != < <= > >= & (int operand) or eq prefix suffix in (str operand),
        # negate applying to a string test; code is postfix: a pred's index,
        # NOT, AND or OR.  None: only ``matches`` can evaluate this filter.
        self.program = program

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Filter(text={self.text!r})"

    @property
    def empty(self) -> bool:
        """True for the "none" filter: every event matches, nothing to test."""
        return self.matches is _match_all


NO_FILTER = Filter("none", _match_all)

# The postfix program's operators (operands are predicate indexes, >= 0).
NOT, AND, OR = -1, -2, -3


def compile_filter(text: str, fields: Mapping[str, str]) -> Filter:
    """Compile ``text`` for an event whose fields are ``fields`` (name -> kind,
    kind ``"num"`` or ``"str"``).

    ``""`` (or blanks) and ``"0"`` give the empty filter (``text`` "none"),
    as writing ``0`` to the kernel's ``filter`` file clears it.  Anything
    else either compiles whole or raises ``TraceError`` (a ``FILT_ERR_*``
    code, ``command`` the filter, ``pos`` the kernel's caret position).
    """
    for name, kind in fields.items():
        if kind not in (NUM, STR):
            raise ValueError(f"field {name!r}: kind must be 'num' or 'str', not {kind!r}")
    # Kernel: apply_event_filter() strstrip()s the buffer in place, which cuts
    # trailing blanks from the stored filter string but keeps leading ones.
    cmd = text.rstrip(_BLANKS)
    if cmd.strip(_BLANKS) in ("", "0"):
        return NO_FILTER
    parser = _Parser(cmd, fields)
    matches = parser.compile()
    return Filter(cmd, matches, parser.program)


# -- numbers and globs, as the kernel reads them -----------------------------

def kstrtoll(text: str) -> int | None:
    """The kernel's ``kstrtoll(s, 0, &val)``: base from the prefix (``0x``
    hex, ``0`` octal, else decimal), optional ``-``, s64 range; None if not."""
    neg = text.startswith("-")
    body = text[1:] if neg else text
    if body[:1] == "0" and body[1:2] in ("x", "X") and body[2:3] in _RADIX_DIGITS[16]:
        base, digits = 16, body[2:]
    elif body[:1] == "0":
        base, digits = 8, body
    else:
        base, digits = 10, body
    if not digits or not set(digits) <= _RADIX_DIGITS[base]:
        return None
    value = int(digits, base)
    if neg:
        return -value if value <= 1 << 63 else None
    return value if value < 1 << 63 else None


def _glob_tokens(pattern: str) -> list[str | None]:
    """Split a glob as ``lib/glob.c`` reads it: None for ``*``, else a regex
    for one character (a literal, ``?`` or a ``[...]`` class)."""
    out: list[str | None] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(None)
        elif c == "?":
            out.append(".")
        elif c == "\\":
            if i == n:          # glob.c: a trailing '\' matches the end
                break
            out.append(_lit(pattern[i]))
            i += 1
        elif c == "[":
            cls, end = _glob_class(pattern, i)
            if cls is None:     # malformed: the '[' is a literal, go on after it
                out.append(_lit("["))
            else:
                out.append(cls)
                i = end
        else:
            out.append(_lit(c))
    return out


def _glob_class(pattern: str, i: int) -> tuple[str | None, int]:
    """The class starting after ``[`` at ``i``: (regex, index after ``]``),
    or (None, i) when glob.c would call it malformed."""
    n = len(pattern)
    inverted = i < n and pattern[i] == "!"
    j = i + inverted
    spans: list[tuple[str, str]] = []
    first = True
    while True:
        if j >= n:
            return None, i
        a = pattern[j]
        if a == "]" and not first:
            j += 1
            break
        first = False
        j += 1
        b = a
        if j < n and pattern[j] == "-" and (j + 1 >= n or pattern[j + 1] != "]"):
            if j + 1 >= n:
                return None, i
            b = pattern[j + 1]
            j += 2
        spans.append((a, b))
    # glob.c's "a <= c && c <= b": a reversed span matches nothing.
    body = "".join(_lit(a) if a == b else f"{_lit(a)}-{_lit(b)}"
                   for a, b in spans if a <= b)
    if not body:
        return ("." if inverted else "(?!)"), j
    return f"[{'^' if inverted else ''}{body}]", j


def _lit(c: str) -> str:
    # One code point, escaped the same way in and out of a class.
    return f"\\U{ord(c):08x}"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex that fullmatches exactly what glob.c's ``glob_match`` matches.

    glob.c backtracks only to the last ``*`` (linear-times-pattern time);
    a naive ``.*`` translation can take exponential time in Python's ``re``.
    The same bound here: every segment between two stars is fixed-length,
    so its leftmost occurrence is the best one and an atomic group commits
    to it.
    """
    tokens = _glob_tokens(pattern)
    segments: list[list[str]] = [[]]
    for t in tokens:
        if t is None:
            segments.append([])
        else:
            segments[-1].append(t)
    parts = ["".join(segments[0])]
    if len(segments) > 1:
        parts += [f"(?>.*?{''.join(s)})" for s in segments[1:-1] if s]
        parts.append(f".*{''.join(segments[-1])}")
    return re.compile("".join(parts), re.DOTALL)


# -- code generation ---------------------------------------------------------

def _as_int(x: object) -> int | None:
    # int's own __index__ on a subclass (bool, IntEnum, IntFlag) copies the
    # value out without calling anything the subclass overrides.
    return int.__index__(x) if issubclass(type(x), int) else None  # type: ignore[arg-type]


def _as_str(x: object) -> str | None:
    return str.__str__(x) if issubclass(type(x), str) else None


class _Code:
    """Source of one boolean expression over ``v`` (the values mapping)."""
    __slots__ = ("src", "depth", "prog", "positive")

    def __init__(self, src: str, depth: int, prog: tuple[int, ...] | None,
                 positive: _Code | None = None) -> None:
        self.src = src
        self.depth = depth              # nesting of parentheses in src
        self.prog = prog                # the same as a postfix program (None: Python only)
        self.positive = positive        # set when this is "not <positive>"

    def negate(self) -> _Code:
        if self.positive is not None:
            return self.positive
        return _Code(f"(not {self.src})", self.depth + 1,
                     None if self.prog is None else self.prog + (NOT,), self)


class _Codegen:
    """Builds the filter's source from predicates, bottom up, and compiles it.

    User text never enters the source: field names, strings and regexes are
    bound in the function's globals as ``K0``, ``S1``, ``M2``...; integers
    are written with ``int.__repr__`` of the parsed value.
    """

    def __init__(self) -> None:
        self.namespace: dict[str, object] = {
            "__builtins__": {}, "type": type, "int": int, "str": str,
            "Exception": Exception, "_as_int": _as_int, "_as_str": _as_str,
        }
        self.defs: list[str] = []
        self.count = 0
        self.preds: list[tuple[object, ...]] = []

    def pred(self, *pred: object) -> tuple[int, ...]:
        self.preds.append(pred)
        return (len(self.preds) - 1,)

    def bind(self, prefix: str, value: object) -> str:
        name = f"{prefix}{self.count}"
        self.count += 1
        self.namespace[name] = value
        return name

    def num(self, key: str, op: str, value: int) -> _Code:
        k = self.bind("K", key)
        c = repr(int(value))
        test = f"(x & {c}) != 0" if op == "&" else f"x {op} {c}"
        # Exact ints take the fast path; int subclasses are copied out first.
        return _Code(f"({test} if type(x := v.get({k})) is int else "
                     f"((x := _as_int(x)) is not None and {test}))", 3,
                     self.pred(key, op, int(value), False))

    def string(self, key: str, op: str, pattern: str) -> _Code:
        k = self.bind("K", key)
        negate = op == "!="
        if op == "~":
            # filter_parse_regex(): a leading '!' negates the glob.
            negate = pattern.startswith("!")
            test, ctest, operand = self._glob_test(pattern[1:] if negate else pattern)
        else:
            test, ctest, operand = f"x == {self.bind('S', pattern)}", "eq", pattern
        if negate:
            test = f"not ({test})"
        return _Code(f"({test} if type(x := v.get({k})) is str else "
                     f"((x := _as_str(x)) is not None and {test}))", 4,
                     None if ctest is None else self.pred(key, ctest, operand, negate))

    def _glob_test(self, pattern: str) -> tuple[str, str | None, str | None]:
        """The kernel's fast paths (MATCH_FULL/FRONT/MIDDLE/END), else a glob:
        (Python test, the C program's test and operand, or None for a glob)."""
        stars = pattern.count("*")
        plain = not any(c in pattern for c in "?[\\")
        inner = pattern[1:-1] if len(pattern) >= 2 else ""
        if plain and stars == 0:
            return f"x == {self.bind('S', pattern)}", "eq", pattern
        if plain and stars == 1 and pattern.endswith("*"):
            return f"x.startswith({self.bind('S', pattern[:-1])})", "prefix", pattern[:-1]
        if plain and stars == 1 and pattern.startswith("*"):
            return f"x.endswith({self.bind('S', pattern[1:])})", "suffix", pattern[1:]
        if plain and stars == 2 and len(pattern) >= 2 and pattern[0] == pattern[-1] == "*" \
                and "*" not in inner:
            return f"{self.bind('S', inner)} in x", "in", inner
        return f"{self.bind('M', glob_regex(pattern).fullmatch)}(x) is not None", None, None

    def group(self, terms: list[list[_Code]]) -> _Code:
        """``a && b || c`` as ``(a and b or c)``; one term stays itself."""
        ors = [self._join(" and ", ands) for ands in terms
               if ands]     # an empty one: "a ||" at the very end, which the kernel ignores
        return self._join(" or ", ors)

    def _join(self, sep: str, codes: list[_Code]) -> _Code:
        if len(codes) == 1:
            return codes[0]
        prog = None
        progs = [c.prog for c in codes if c.prog is not None]
        if codes and len(progs) == len(codes):
            op = AND if sep == " and " else OR
            prog = progs[0] + tuple(x for p in progs[1:] for x in p + (op,))
        code = _Code("(" + sep.join(c.src for c in codes) + ")",
                     max(c.depth for c in codes) + 1, prog)
        if code.depth > _MAX_NEST:
            name = f"_g{len(self.defs)}"
            self.defs.append(f"def {name}(v):\n    return {code.src}\n")
            code = _Code(f"{name}(v)", 1, prog)
        return code

    def program(self, top: _Code) -> Program | None:
        return None if top.prog is None else (tuple(self.preds), top.prog)

    def compile(self, top: _Code) -> Callable[[Values], bool]:
        source = "".join(self.defs) + (
            "def _match(v):\n"
            "    try:\n"
            f"        return {top.src}\n"
            "    except Exception:\n"
            "        return False\n")
        # Compiled under this file's name: fentry's own code is never traced
        # (symbols.is_fentry_code), and the filter runs inside callbacks.
        exec(compile(source, __file__, "exec"), self.namespace)
        fn = self.namespace["_match"]
        fn.__qualname__ = fn.__name__ = "filter_match_preds"  # type: ignore[attr-defined]
        return fn  # type: ignore[return-value]


# -- the parser --------------------------------------------------------------

class _Group:
    """One open parenthesis: its '!' parity and its ``||`` list of ``&&`` lists."""
    __slots__ = ("negated", "terms")

    def __init__(self, negated: bool) -> None:
        self.negated = negated
        self.terms: list[list[_Code]] = [[]]


class _Parser:
    def __init__(self, cmd: str, fields: Mapping[str, str]) -> None:
        self.cmd = cmd
        self.n = len(cmd)
        self.fields = fields
        self.gen = _Codegen()
        self.program: Program | None = None   # set by compile()

    def error(self, code: str, pos: int, detail: str = "") -> TraceError:
        return TraceError(code, self.cmd, pos, subsystem=SUBSYSTEM, detail=detail)

    def compile(self) -> Callable[[Values], bool]:
        self.calc_stack()
        top = self.predicate_parse()
        self.program = self.gen.program(top)
        return self.gen.compile(top)

    def calc_stack(self) -> None:
        """The kernel's calc_stack(): unmatched quotes and parentheses are
        found over the whole string before any term is parsed."""
        s = self.cmd
        open_, nr_preds, is_pred = 1, 0, False
        quote, last_quote = "", 0
        for i, c in enumerate(s):
            if c in _SPACE:
                continue
            if quote:
                if c == quote:
                    quote = ""
                continue
            if c in "'\"":
                quote, last_quote = c, i
            elif c in "|&" and s[i + 1:i + 2] == c:
                is_pred = False
                continue
            elif c == "(":
                is_pred = False
                open_ += 1
                continue
            elif c == ")":
                is_pred = False
                if open_ == 1:
                    raise self.error("FILT_ERR_TOO_MANY_CLOSE", i)
                open_ -= 1
                continue
            if not is_pred:
                nr_preds += 1
                is_pred = True
        if quote:
            raise self.error("FILT_ERR_MISSING_QUOTE", last_quote)
        if open_ != 1:
            raise self.error("FILT_ERR_TOO_MANY_OPEN", self._bad_open(open_))
        if not nr_preds:
            # The kernel returns a bare -EINVAL ("Error", caret at 0).
            raise self.error("FILT_ERR_NO_FILTER", 0)

    def _bad_open(self, open_: int) -> int:
        """Walk back from the end to the '(' left open (index 0 is never
        looked at: the kernel's loop stops before it and answers 0)."""
        s, level, quote = self.cmd, open_, ""
        for i in range(len(s) - 1, 0, -1):
            c = s[i]
            if quote:
                if c == quote:
                    quote = ""
                continue
            if c == "(":
                if level == open_:
                    return i
                level -= 1
            elif c == ")":
                level += 1
            elif c in "'\"":
                quote = c
        return 0

    def predicate_parse(self) -> _Code:
        """The kernel's predicate_parse(), first pass: terms, '!', '(' and
        ')', '&&' and '||', left to right, with the kernel's error positions."""
        s, n = self.cmd, self.n
        stack = [_Group(False)]
        negate = False
        nr_preds = 0
        i = 0
        while i < n:
            c = s[i]
            if c in _SPACE:
                i += 1
                continue
            if c == "(":
                stack.append(_Group(negate))
                negate = False
                i += 1
                continue
            if c == "!" and s[i + 1:i + 2] not in ("=", "~"):
                negate = not negate
                i += 1
                continue
            code, i = self.parse_pred(i)
            nr_preds += 1
            stack[-1].terms[-1].append(code.negate() if negate else code)
            negate = False
            while True:             # after a term: ')' '&&' '||' or the end
                if i >= n:
                    return self._finish(stack, n + 1)
                c = s[i]
                i += 1
                if c in _SPACE:
                    continue
                if c == ")":
                    if len(stack) == 1:
                        raise self.error("FILT_ERR_TOO_MANY_CLOSE", i)
                    closed = stack.pop()
                    code = self.gen.group(closed.terms)
                    stack[-1].terms[-1].append(code.negate() if closed.negated else code)
                    continue
                if c in "&|" and s[i:i + 1] == c:
                    i += 1
                    if c == "|":
                        stack[-1].terms.append([])
                    break
                raise self.error("FILT_ERR_TOO_MANY_PREDS", i - 1)
        # Input ended where a term was expected: after "&&", "||" or '!' the
        # kernel keeps what it has (so "a == 1 &&" is "a == 1").
        if not nr_preds:
            raise self.error("FILT_ERR_NO_FILTER", n)
        return self._finish(stack, n)

    def _finish(self, stack: list[_Group], pos: int) -> _Code:
        if len(stack) != 1:     # calc_stack() has caught this already
            raise self.error("FILT_ERR_TOO_MANY_OPEN", pos)
        return self.gen.group(stack[0].terms)

    def parse_pred(self, start: int) -> tuple[_Code, int]:
        """The kernel's parse_pred() for the term at ``start``: FIELD OP VALUE.

        Kernel positions: parse_pred() is given ``pos`` = start + 1 and
        reports ``pos + i``, i.e. one past the index it was looking at;
        reproduced as ``i + 1`` below (``s + 1`` for an integer it cannot
        read).  Returns the term's code and the index after it.
        """
        s, n = self.cmd, self.n
        i = start
        while i < n and s[i] in _NAME:
            i += 1
        if i == start:
            # The kernel's parse_pred() returns a bare -EINVAL: "Error", caret at 0.
            raise self.error("FILT_ERR_EXPECT_FIELD", 0)
        name = s[start:i]
        kind = self.fields.get(name) or COMMON_FIELDS.get(name)
        if kind is None:
            # The kernel's caret (one past the name); which name, and what there is, are fentry's.
            names = [*self.fields, *sorted(c for c in COMMON_FIELDS if c not in self.fields)]
            raise self.error("FILT_ERR_FIELD_NOT_FOUND", i + 1,
                             f"{name!r} (fields: {', '.join(names)})")
        while i < n and s[i] in _SPACE:
            i += 1
        op = next((o for o in _OPS if s.startswith(o, i)), None)
        if op is None:
            raise self.error("FILT_ERR_INVALID_OP", i + 1)
        i += len(op)
        while i < n and s[i] in _SPACE:
            i += 1
        begin = i
        c = s[i] if i < n else ""
        if c and c in "'\"":
            if op not in _STRING_OPS:
                raise self.error("FILT_ERR_ILLEGAL_FIELD_OP", i + 1)
            if kind != STR:
                raise self.error("FILT_ERR_EXPECT_DIGIT", i + 1)
            end = s.find(c, i + 1)
            if end < 0:
                raise self.error("FILT_ERR_MISSING_QUOTE", n + 1)
            value = s[i + 1:end]
            if len(value) >= MAX_FILTER_STR_VAL:
                raise self.error("FILT_ERR_OPERAND_TOO_LONG", end + 1)
            return self.gen.string(name, op, value), end + 1
        if c and (c in _DIGIT or c == "-"):
            if kind == STR:
                raise self.error("FILT_ERR_EXPECT_STRING", i + 1)
            if op == "~":
                raise self.error("FILT_ERR_ILLEGAL_FIELD_OP", i + 1)
            if c == "-":
                i += 1
            while i < n and s[i] in _ALNUM:    # "We allow 0xDEADBEEF"
                i += 1
            if i - begin >= NUM_BUF:
                raise self.error("FILT_ERR_OPERAND_TOO_LONG", i + 1)
            value_int = kstrtoll(s[begin:i])
            if value_int is None:
                raise self.error("FILT_ERR_ILLEGAL_INTVAL", begin + 1)
            return self.gen.num(name, op, value_int), i
        raise self.error("FILT_ERR_INVALID_VALUE", i + 1)
