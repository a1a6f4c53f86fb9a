"""A kernel event's ``format`` file: its fields, and its ``print fmt``
evaluated as the kernel's ``trace`` prints the event (libtraceevent's
job in trace-cmd).

The print fmt's arguments are C expressions over ``REC->field``; they are
parsed here into a small tree (never ``eval``: a recording's formats are
data) with the helpers the kernel's events use: ``__print_flags``,
``__print_symbolic``, ``__get_str``, ``__get_dynamic_array``.  An event whose
print fmt cannot be parsed prints its fields as ``name=value``, as
libtraceevent does for an event it cannot parse."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from .syscalls import SYSCALLS_X86_64

_FIELD = re.compile(r"\s*field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
                    r"\s*signed:(?P<signed>-?\d+);")
_INTS = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
         (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}


class Field:
    """One ``field:`` line: how to read its value out of an event's payload."""
    __slots__ = ("name", "offset", "size", "signed", "kind", "count", "elem")

    def __init__(self, decl: str, offset: int, size: int, signed: bool) -> None:
        self.offset, self.size, self.signed = offset, size, signed
        m = re.match(r"(?P<type>.*?)\s*(?P<name>\w+)\s*(\[(?P<n>\w*)\])?\s*$", decl.strip())
        if m is None:
            raise ValueError(f"cannot read the field {decl!r}")
        ctype, self.name = m.group("type"), m.group("name")
        self.count = 0
        self.elem = size
        if ctype.startswith(("__data_loc", "__rel_loc")):
            self.kind = "rel_loc" if ctype.startswith("__rel_loc") else "data_loc"
            self.elem = 1 if "char" in ctype else 0
        elif m.group("n") is not None:
            base = ctype.split()[-1] if ctype else ""
            self.kind = "string" if base == "char" else "array"
            n = int(m.group("n"), 0) if m.group("n") else 0
            self.count = n or 1
            self.elem = size // self.count if self.count else size
        else:
            self.kind = "int"

    def value(self, data: bytes) -> Any:
        off, size = self.offset, self.size
        if self.kind == "int":
            code = _INTS.get((size, self.signed))
            return struct.unpack_from("<" + code, data, off)[0] if code else 0
        if self.kind == "string":
            return _cstr(data[off:off + size])
        if self.kind == "array":
            code = _INTS.get((self.elem, self.signed))
            if code is None:
                return data[off:off + size]
            return struct.unpack_from(f"<{self.count}{code}", data, off)
        loc = struct.unpack_from("<I", data, off)[0]
        start, length = loc & 0xffff, loc >> 16
        if self.kind == "rel_loc":
            start += off + size
        raw = data[start:start + length]
        return _cstr(raw) if self.elem == 1 else raw


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


class EventFormat:
    """An event's format file, parsed: ``system``, ``name``, ``id``, its
    fields, and ``text(payload)``: its part of a ``trace`` line."""

    def __init__(self, system: str, text: str) -> None:
        self.system = system
        self.source = text
        self.name = re.search(r"^name: (\S+)", text, re.M).group(1)        # type: ignore[union-attr]
        self.id = int(re.search(r"^ID: (\d+)", text, re.M).group(1))        # type: ignore[union-attr]
        self.fields = [Field(m.group("decl"), int(m.group("offset")), int(m.group("size")),
                             m.group("signed") == "1") for m in _FIELD.finditer(text)]
        self.by_name = {f.name: f for f in self.fields}
        fmt = text.split("print fmt: ", 1)[1].strip() if "print fmt: " in text else ""
        self.printer: Callable[[dict[str, Any]], str] | None
        try:
            self.printer = _compile(fmt)
        except (ValueError, IndexError, KeyError):
            self.printer = None
        # raw_syscalls: the number named (fentry's addition to the kernel's line)
        self.syscall = system == "raw_syscalls" and "id" in self.by_name

    def values(self, payload: bytes) -> dict[str, Any]:
        return {f.name: f.value(payload) for f in self.fields}

    def text(self, payload: bytes) -> str:
        """``name: ...`` as the kernel's ``trace`` prints the event (a
        syscalls event without its name, as the kernel's)."""
        values = self.values(payload)
        if self.system == "syscalls":
            return self._syscall_text(values)
        body = None
        if self.printer is not None:
            try:
                body = self.printer(values)
            except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError):
                body = None
        if body is None:
            body = " ".join(f"{f.name}={values[f.name]}" for f in self.fields
                            if not f.name.startswith("common_"))
        if self.syscall:
            name = SYSCALLS_X86_64.get(values["id"])
            if name is not None:
                body = body.replace(f"NR {values['id']}", f"NR {values['id']} {name}", 1)
        return f"{self.name}: {body}"


    def _syscall_text(self, values: dict[str, Any]) -> str:
        """The syscalls events print as the kernel's print_syscall_enter and
        print_syscall_exit, not by their print fmt: ``sys_read(fd: 3, buf:
        0x7ffc..., count: 0x400)``, ``sys_read -> 0x5``."""
        if self.name.startswith("sys_exit_"):
            return f"sys_{self.name[9:]} -> 0x{values.get('ret', 0) & (1 << 64) - 1:x}"
        args: list[str] = []
        for f in self.fields:
            if f.name.startswith("common_") or f.name == "__syscall_nr":
                continue
            v = values[f.name]
            if f.kind in ("data_loc", "rel_loc"):       # newer kernels: the user string read
                if args:
                    args[-1] += f' "{v}"' if isinstance(v, str) else \
                        f" ({':'.join(f'{b:02x}' for b in v)})"
                continue
            args.append(f"{f.name}: {v}" if v < 10 else f"{f.name}: 0x{v:x}")
        return f"sys_{self.name.removeprefix('sys_enter_')}({', '.join(args)})"


# ---------------------------------------------------------------- the print fmt

_TOKEN = re.compile(r"""\s*(?:(?P<num>0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*)|(?P<str>"(?:[^"\\]|\\.)*")
    |(?P<chr>'(?:[^'\\]|\\.)')|(?P<id>[A-Za-z_]\w*)
    |(?P<op>->|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^!~<>?:(),\[\]{}.]))""", re.X)
_TYPE_WORDS = {"unsigned", "signed", "long", "int", "short", "char", "void", "const", "u8", "u16",
               "u32", "u64", "s8", "s16", "s32", "s64", "size_t", "pid_t", "bool", "__u64",
               "__u32", "unsigned long", "struct", "gfp_t", "uint64_t", "uint32_t"}
_BINARY = {"||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7,
           ">=": 7, "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10}

type Node = Callable[[dict[str, Any]], Any]


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.toks = tokens
        self.i = 0

    def peek(self) -> str:
        return self.toks[self.i][1] if self.i < len(self.toks) else ""

    def take(self, want: str | None = None) -> tuple[str, str]:
        tok = self.toks[self.i]
        if want is not None and tok[1] != want:
            raise ValueError(f"expected {want}")
        self.i += 1
        return tok

    def expr(self) -> Node:
        cond = self.binary(1)
        if self.peek() == "?":
            self.take()
            yes = self.expr()
            self.take(":")
            no = self.expr()
            return lambda r: yes(r) if cond(r) else no(r)
        return cond

    def binary(self, level: int) -> Node:
        left = self.unary()
        while self.peek() in _BINARY and _BINARY[self.peek()] >= level:
            op = self.take()[1]
            right = self.binary(_BINARY[op] + 1)
            left = _binop(op, left, right)
        return left

    def unary(self) -> Node:
        tok = self.peek()
        if tok in ("!", "~", "-", "+"):
            self.take()
            inner = self.unary()
            if tok == "!":
                return lambda r: int(not inner(r))
            if tok == "~":
                return lambda r: ~inner(r)
            if tok == "-":
                return lambda r: -inner(r)
            return inner
        if tok == "(" and self._is_cast():
            while self.take()[1] != ")":
                pass
            return self.unary()
        return self.postfix()

    def _is_cast(self) -> bool:
        j = self.i + 1
        words = 0
        while j < len(self.toks) and self.toks[j][1] != ")":
            kind, text = self.toks[j]
            if not (text == "*" or (kind == "id" and (text in _TYPE_WORDS or text.endswith("_t")))):
                return False
            words += 1
            j += 1
        return words > 0

    def postfix(self) -> Node:
        node = self.primary()
        while self.peek() == "[":
            self.take()
            index = self.expr()
            self.take("]")
            node = _index(node, index)
        return node

    def primary(self) -> Node:
        kind, text = self.take()
        if kind == "num":
            n = int(text.rstrip("uUlL"), 0)
            return lambda r: n
        if kind == "str":
            s = _unescape(text[1:-1])
            return lambda r: s
        if kind == "chr":
            c = ord(_unescape(text[1:-1]))
            return lambda r: c
        if text == "(":
            node = self.expr()
            self.take(")")
            return node
        if text == "{":
            items = [self.expr()]
            while self.peek() == ",":
                self.take()
                items.append(self.expr())
            self.take("}")
            return lambda r: tuple(item(r) for item in items)
        if kind == "id":
            if text == "REC":
                self.take("->")
                name = self.take()[1]
                return lambda r: r[name]
            if self.peek() == "(":
                self.take()
                args: list[Node] = []
                if self.peek() != ")":
                    args.append(self.expr())
                    while self.peek() == ",":
                        self.take()
                        args.append(self.expr())
                self.take(")")
                return _call(text, args)
            return lambda r: r[text]        # a helper's argument: the field's bare name
        raise ValueError(f"unexpected {text!r}")


def _index(base: Node, index: Node) -> Node:
    return lambda r: base(r)[index(r)]


def _binop(op: str, a: Node, b: Node) -> Node:
    if op == "&&":
        return lambda r: int(bool(a(r)) and bool(b(r)))
    if op == "||":
        return lambda r: int(bool(a(r)) or bool(b(r)))
    fn: Callable[[Any, Any], Any] = {"|": lambda x, y: x | y, "^": lambda x, y: x ^ y, "&": lambda x, y: x & y,
          "==": lambda x, y: int(x == y), "!=": lambda x, y: int(x != y),
          "<": lambda x, y: int(x < y), ">": lambda x, y: int(x > y),
          "<=": lambda x, y: int(x <= y), ">=": lambda x, y: int(x >= y),
          "<<": lambda x, y: x << y, ">>": lambda x, y: x >> y, "+": lambda x, y: x + y,
          "-": lambda x, y: x - y, "*": lambda x, y: x * y,
          "/": lambda x, y: int(x / y), "%": lambda x, y: x % y}[op]
    return lambda r: fn(a(r), b(r))


def _call(name: str, args: list[Node]) -> Node:
    if name in ("__get_str", "__get_dynamic_array", "__get_rel_str", "__get_rel_dynamic_array"):
        # its argument is the field's bare name, read as REC->name
        return args[0]
    if name == "__print_flags":
        value, delim, pairs = args[0], args[1], args[2:]

        def print_flags(r: dict[str, Any]) -> str:
            v, words = value(r), []
            for pair in pairs:
                bit, word = pair(r)
                if bit and v & bit == bit:
                    words.append(word)
                    v &= ~bit
                elif bit == 0 and v == 0:
                    words.append(word)
            if v:
                words.append(f"0x{v:x}")
            return str(delim(r)).join(words)
        return print_flags
    if name == "__print_symbolic":
        value, pairs = args[0], args[1:]

        def print_symbolic(r: dict[str, Any]) -> str:
            v = value(r)
            for pair in pairs:
                key, word = pair(r)
                if key == v:
                    return str(word)
            return f"0x{v:x}"
        return print_symbolic
    raise ValueError(f"no helper {name}")


def _unescape(s: str) -> str:
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape")


_SPEC = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\*|\d+)?(?:\.(?P<prec>\d+))?"
                   r"(?P<len>hh|h|ll|l|z|j|t|L)?(?P<conv>[diouxXcspn%])(?P<ext>[a-zA-Z]*)")


def _split_args(tokens: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    args: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for tok in tokens:
        if tok[1] in ("(", "[", "{"):
            depth += 1
        elif tok[1] in (")", "]", "}"):
            depth -= 1
        if tok[1] == "," and depth == 0:
            args.append([])
        else:
            args[-1].append(tok)
    return args if args != [[]] else []


def _compile(fmt: str) -> Callable[[dict[str, Any]], str]:
    """The print fmt as a function of the field values."""
    tokens = _tokens(fmt)
    if not tokens or tokens[0][0] != "str":
        raise ValueError("no format string")
    text = _unescape(tokens[0][1][1:-1])
    rest = tokens[1:]
    if rest and rest[0][1] == ",":
        rest = rest[1:]
    nodes = []
    for arg in _split_args(rest):
        parser = _Parser(arg)
        nodes.append(parser.expr())
        if parser.i != len(arg):
            raise ValueError("trailing tokens")
    pieces: list[Any] = []
    pos = 0
    for m in _SPEC.finditer(text):
        pieces.append(text[pos:m.start()])
        pos = m.end()
        if m.group("conv") == "%":
            pieces.append("%")
            continue
        pieces.append(m)
    pieces.append(text[pos:])
    wanted = sum(1 for p in pieces if not isinstance(p, str))
    if wanted > len(nodes):
        raise ValueError("too few arguments")

    def printer(values: dict[str, Any]) -> str:
        out, k = [], 0
        for p in pieces:
            if isinstance(p, str):
                out.append(p)
                continue
            width = p.group("width")
            if width == "*":
                width = str(nodes[k](values))
                k += 1
            out.append(_format(p, width, nodes[k](values)))
            k += 1
        return "".join(out)
    return printer


def _format(m: re.Match[str], width: str | None, v: Any) -> str:
    conv, length, flags, prec = m.group("conv"), m.group("len") or "", m.group("flags"), m.group("prec")
    spec = "%" + flags + (width or "") + (f".{prec}" if prec is not None else "")
    if conv == "s":
        return (spec + "s") % (v if isinstance(v, str) else str(v))
    if conv == "p":
        return f"0x{int(v):x}" if isinstance(v, int) else str(v)
    if conv == "c":
        return (spec + "c") % (chr(v) if isinstance(v, int) else v)
    if not isinstance(v, int):
        v = int(v)
    bits = 64 if length in ("l", "ll", "z", "j", "t") else {"h": 16, "hh": 8}.get(length, 32)
    if conv in "ouxX":
        v &= (1 << bits) - 1
        return str((spec + (conv if conv != "u" else "d")) % v)
    v &= (1 << bits) - 1            # d, i: the value as a signed number of its length
    if v >= 1 << (bits - 1):
        v -= 1 << bits
    return str((spec + "d") % v)
