"""events.hist_expr: a hist trigger's expressions, as the kernel's
``parse_expr`` / ``parse_atom`` / ``expr_str`` in ``trace_events_hist.c``.

A key, a value or a variable is an expression over the event's fields,
constants and variable references (``$ts0``, ``GRP.EVENT.$ts0``)::

    common_timestamp.usecs-$ts0     a-b+c (left to right)     x*2/3
    -(a+b) (unary minus: with parentheses, only at the start)

As the kernel's: the root operator is the rightmost ``+`` or ``-``, else
the rightmost ``*`` or ``/`` (parentheses group nothing but a leading
``-(...)``), at most 3 operators (``Too many subexpressions``), arithmetic
on u64, a division by a variable 0 gives -1, a division by a constant is
its ``div_by_mult_and_shift`` (off by one at most, as the kernel's), and two
constants fold into one.  Parsing makes ``HistField`` trees; references
are resolved later, against the instance's hists (``hist_vars``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hist import HistField, _Parse

__all__ = ["Env", "evaluate", "parse_expr", "field_type", "has_refs", "walk"]

U64 = (1 << 64) - 1
SUBEXPR_MAX = 3             # parse_expr's "*n_subexprs > 3"
DIV_SHIFT = 20              # HIST_DIV_SHIFT
# The modifiers parse_field takes (``.sym-offset`` is spelled ``.symXoffset``
# while parsing, as the kernel's, so its ``-`` is no operator).
SYM_OFFSET_X = ".symXoffset"


class Env:
    """One hit, as its expressions read it: the fields by name, its frame,
    its timestamp (one per event, as the ring buffer's) and the values of
    the hist's variable references (``var_ref_vals``)."""
    __slots__ = ("get", "frame", "ts", "refvals")

    def __init__(self, get: Callable[[str], object], frame: FrameType | None, ts: int) -> None:
        self.get = get
        self.frame = frame
        self.ts = ts
        self.refvals: list[int] = []


def _num(v: object) -> int:
    if type(v) is int:
        return v & U64
    if isinstance(v, (int, float)):
        return int(v) & U64
    return 0


def _divide(a: int, f: HistField) -> int:
    """``a`` divided by the operand 2 of ``f`` (hist_field_div and the
    constant divisors' div_by_*)."""
    d = f.operands[1]
    if d.kind == "const":
        b = d.constant
        if not b & (b - 1):
            return a >> (b.bit_length() - 1)
        if b > 1 << DIV_SHIFT or a >= 1 << DIV_SHIFT:
            return a // b
        return (a * ((1 << DIV_SHIFT) // b) + (1 << DIV_SHIFT) - 1) >> DIV_SHIFT
    return a  # (not reached: see evaluate)


def evaluate(f: HistField, env: Env) -> object:
    """The value of ``f`` in this hit (``hist_fn_call``): a number, or a
    field's value as it is (a key may be text)."""
    kind = f.kind
    if kind == "const":
        return f.constant
    if kind == "ref":
        return env.refvals[f.vref.index]
    if kind == "expr":
        a = _num(evaluate(f.operands[0], env))
        op = f.op
        if op == "neg":
            return -a & U64
        if op == "/" and f.operands[1].kind == "const":
            return _divide(a, f)
        b = _num(evaluate(f.operands[1], env))
        if op == "+":
            return (a + b) & U64
        if op == "-":
            return (a - b) & U64
        if op == "*":
            return (a * b) & U64
        return a // b if b else U64
    if kind == "timestamp":
        v: object = env.ts
    elif kind == "cpu":
        v = 0               # (threads have no CPU: the trace's CPU column is 000 too)
    else:
        v = env.get(f.name)
    if f.flag == "log2":    # ilog2(roundup_pow_of_two(v)), 0 for 0 and 1
        n = _num(v)
        return (n - 1).bit_length() if n > 1 else 0
    if f.flag == "buckets":
        return (_num(v) // f.buckets) * f.buckets
    return v


def walk(f: HistField) -> list[HistField]:
    """``f`` and every operand under it."""
    out = [f]
    for o in f.operands:
        out += walk(o)
    return out


def has_refs(f: HistField) -> bool:
    """Whether a variable reference is in it (``field_has_hist_vars``)."""
    return any(x.kind == "ref" for x in walk(f))


# A field's type, as the kernel's hist_field->type / size / is_signed:
# (type, size, signed, is a string).  fentry's numbers are u64 (a probe
# argument's default type) unless the kernel names another for the field.
_COMMON_TYPES: dict[str, tuple[str, int, bool, bool]] = {
    "common_pid": ("int", 4, True, False),
    "comm": ("char[16]", 16, False, True),
    "COMM": ("char[16]", 16, False, True),
}
U64_TYPE = ("u64", 8, False, False)


def field_type(f: HistField, kinds: Mapping[str, str]) -> tuple[str, int, bool, bool]:
    """The type of what ``f`` gives."""
    if f.kind in ("const", "timestamp", "hitcount"):
        return U64_TYPE
    if f.kind == "cpu":
        return ("unsigned int", 4, False, False)
    if f.kind == "expr":
        return field_type(f.operands[0], kinds)
    if f.kind == "ref":
        var = f.vref.var
        return var.ftype if var is not None and var.ftype is not None else U64_TYPE
    if f.name in _COMMON_TYPES:
        return _COMMON_TYPES[f.name]
    if kinds.get(f.name) == "str":
        return ("char[]", 256, False, True)
    return U64_TYPE


# -- parsing -----------------------------------------------------------------

def _contains_operator(s: str) -> tuple[str, int]:
    """The root operator and where it is (``contains_operator``): the
    rightmost + or -, else the rightmost * or /; a - at 0 is unary."""
    minus = s.rfind("-")
    if minus == 0:
        return "neg", 0
    plus = s.rfind("+")
    if plus >= 0 or minus >= 0:
        return ("+", plus) if plus > minus else ("-", minus)
    div = s.rfind("/")
    mult = s.rfind("*")
    if mult > div:
        return "*", mult
    if div >= 0:
        return "/", div
    return "", -1


def parse_expr(s: str, p: _Parse, kinds: Mapping[str, str], var_name: str | None,
               n: list[int], var_defs: Mapping[str, str], key: bool = False) -> HistField:
    """``s`` as a tree (``parse_expr``); ``n``: the operators so far (one
    count for the whole expression); ``var_defs``: this trigger's variables,
    name -> expression (a ``$name`` of a plain field is that field)."""
    from .hist import HistField
    if n[0] > SUBEXPR_MAX:
        raise p.err("HIST_ERR_TOO_MANY_SUBEXPR", _shown(s))
    op, at = _contains_operator(s)
    if not op:
        return parse_atom(s, p, kinds, var_name, var_defs, key)
    if op == "neg":
        return _parse_unary(s, p, kinds, var_name, n, var_defs)
    n[0] += 1
    left, right = s[:at], s[at + 1:]
    if not left or not right:
        raise p.err("HIST_EINVAL", logged=False)
    a = parse_expr(left, p, kinds, None, n, var_defs)
    if field_type(a, kinds)[3]:
        raise p.err("HIST_ERR_INVALID_STR_OPERAND", _shown(left))
    b = parse_expr(right, p, kinds, None, n, var_defs)
    if field_type(b, kinds)[3]:
        raise p.err("HIST_ERR_INVALID_STR_OPERAND", _shown(right))
    for x in (a, b):
        if x.ref is not None and x.kind == "ref":
            x.ref.read_once = True      # an operand reads its variable once
    if op == "/" and b.kind == "const" and b.constant == 0:
        raise p.err("HIST_ERR_DIVISION_BY_ZERO", _shown(right))
    expr = HistField("", "expr", operands=(a, b), op=op, var_name=var_name, usecs=a.usecs)
    if a.kind == "const" and b.kind == "const":
        value = _num(evaluate(expr, Env(lambda name: None, None, 0)))
        return HistField(str(value), "const", constant=value, var_name=var_name)
    expr.name = expr_str(expr)
    return expr


def _parse_unary(s: str, p: _Parse, kinds: Mapping[str, str], var_name: str | None,
                 n: list[int], var_defs: Mapping[str, str]) -> HistField:
    """``-(EXPR)`` (``parse_unary``): the parentheses are required, and close at the end."""
    from .hist import HistField
    n[0] += 1
    if n[0] > SUBEXPR_MAX:
        raise p.err("HIST_ERR_TOO_MANY_SUBEXPR", _shown(s))
    s = s[1:]
    if "(" not in s:
        raise p.err("HIST_EINVAL", logged=False)
    s = s[1:]
    close = s.rfind(")")
    if close < 0:
        raise p.err("HIST_EINVAL", logged=False)
    if close != len(s) - 1:
        raise p.err("HIST_ERR_UNARY_MINUS_SUBEXPR", _shown(s))
    inner = parse_expr(s[:close], p, kinds, None, n, var_defs)
    if field_type(inner, kinds)[3]:
        raise p.err("HIST_ERR_INVALID_STR_OPERAND", _shown(s))
    expr = HistField("", "expr", operands=(inner,), op="neg", var_name=var_name, usecs=inner.usecs)
    expr.name = expr_str(expr)
    return expr


def parse_atom(s: str, p: _Parse, kinds: Mapping[str, str], var_name: str | None,
               var_defs: Mapping[str, str], key: bool = False) -> HistField:
    """A constant, a variable reference or a field (``parse_atom``)."""
    from .hist import HistField, _parse_field
    from .hist_vars import VarRef
    if s[:1].isdigit():
        value = _kstrtoull(s)
        if value is None:
            raise p.err("HIST_ERR_EXPECT_NUMBER", _shown(s))
        return HistField(str(value), "const", constant=value, var_name=var_name)
    system = event = None
    ref_var = s
    parts = s.split(".", 2)
    if len(parts) == 3:             # GRP.EVENT.$VAR
        system, event, ref_var = parts
    if ref_var.startswith("$") and len(ref_var) >= 2:
        local = var_defs.get(ref_var[1:]) if system is None else None
        if local is not None and not _contains_operator(local)[0] and not local.startswith("$"):
            s = local               # (local_field_var_ref: $x of a plain field is the field)
        else:
            ref = VarRef(ref_var[1:], system, event)
            shown = f"{system}.{event}.{ref.name}" if system else ref.name
            return HistField(shown, "ref", ref=ref, var_name=var_name)
    f = _parse_field(s.replace(SYM_OFFSET_X, ".sym-offset"), kinds, key, p)
    f.var_name = var_name
    return f


def _kstrtoull(s: str) -> int | None:
    """kstrtoull(s, 0): decimal, 0x hex or 0 octal, one trailing newline allowed."""
    t = s[:-1] if s.endswith("\n") else s
    if _HEX.fullmatch(t):
        v = int(t[2:], 16)
    elif _OCT.fullmatch(t):
        v = int(t, 8)
    elif _DEC.fullmatch(t):
        v = int(t)
    else:
        return None
    return v if v <= U64 else None


_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_OCT = re.compile(r"0[0-7]*")
_DEC = re.compile(r"[1-9][0-9]*")


def _shown(s: str) -> str:
    """A piece of the command as it was written (for errpos)."""
    return s.replace(SYM_OFFSET_X, ".sym-offset")


def _operand_str(f: HistField) -> str:
    """``expr_field_str``: an operand as an expression's name shows it."""
    if f.kind == "ref":
        return "$" + f.name
    if f.kind == "const":
        return str(f.constant)
    text = f.name
    if f.kind == "expr":
        return text + (".usecs" if f.usecs else "")
    if f.flag is not None and f.flag not in ("percent", "graph"):
        text += "." + f.flag
    return text


def expr_str(f: HistField) -> str:
    """An expression's name (``expr_str``): operand, operator, operand."""
    if f.op == "neg":
        inner = f.operands[0]
        if inner.kind == "expr" and inner.operands:
            body = _operand_str(inner.operands[0]) + (inner.op if inner.op != "neg" else "") + \
                (_operand_str(inner.operands[1]) if len(inner.operands) > 1 else "")
        else:
            body = _operand_str(inner)
        return f"-({body})"
    return _operand_str(f.operands[0]) + f.op + _operand_str(f.operands[1])


def check_timestamps(f: HistField, p: _Parse) -> None:
    """``check_expr_operands``: both operands in the same timestamp units
    (a reference counts as its variable), once references are resolved."""
    for x in walk(f):
        if x.kind == "expr" and x.op != "neg":
            a, b = x.operands
            if _usecs(a) != _usecs(b):
                raise p.err("HIST_ERR_TIMESTAMP_MISMATCH")


def _usecs(f: HistField) -> bool:
    if f.kind == "ref" and f.vref.var is not None:
        return bool(f.vref.var.usecs)
    return f.usecs


def resolve_usecs(f: HistField) -> None:
    """An expression over a reference takes its variable's units (as
    ``init_var_ref`` copies the timestamp flags)."""
    for x in reversed(walk(f)):
        if x.kind == "ref" and x.vref.var is not None:
            x.usecs = x.vref.var.usecs
        elif x.kind == "expr":
            x.usecs = x.operands[0].usecs
