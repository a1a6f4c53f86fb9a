"""Synthetic events' fields, as the kernel's ``trace_events_synth.c`` has
them: the grammar of a definition (``NAME TYPE FIELD[; TYPE FIELD...]``),
its types, its ``format`` fields, and how a record prints
(``print_synth_event``: ``NAME: lat=123 pid=456``).

Used in the traced process (``trace_synth``: the events themselves) and by
a reader outside it (``fentry run``, ``fentry report``), which rebuilds a
``SynthFormat`` from the raw stream's description
``["synthetic", name, [[type, field], ...]]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..errors import TraceError
from .tracepoint_format import TracepointFormat, value_text

SYNTH_SYSTEM = "synthetic"
SYNTH_FIELDS_MAX = 64
STR_VAR_LEN_MAX = 256       # a char[N] field's room in the record (MAX_FILTER_STR_VAL)
SUBSYSTEM = "synthetic_events"      # (error_log's, for both files, as the kernel's synth_err)

# synth_field_size and synth_field_fmt: type -> (size, printf format).
# (gfp_t is the kernel's allocation flags: no Python value has them.)
NUM_TYPES: dict[str, tuple[int, str]] = {
    "s64": (8, "%lld"), "u64": (8, "%llu"), "s32": (4, "%d"), "u32": (4, "%u"),
    "s16": (2, "%d"), "u16": (2, "%u"), "s8": (1, "%d"), "u8": (1, "%u"),
    "char": (1, "%d"), "unsigned char": (1, "%u"), "int": (4, "%d"),
    "unsigned int": (4, "%u"), "long": (8, "%ld"), "unsigned long": (8, "%lu"),
    "bool": (1, "%d"), "pid_t": (4, "%d"),
}
_GOOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def is_good_name(name: str) -> bool:
    """The kernel's is_good_name: a C identifier."""
    return _GOOD_NAME.fullmatch(name) is not None


class SynthField(NamedTuple):
    """One field: ``type`` as a definition reads back (``u64``, ``char[16]``,
    ``char[]``, ``unsigned long[]``) and its size in the record."""
    type: str
    name: str
    size: int

    @property
    def is_string(self) -> bool:
        return "char[" in self.type

    @property
    def is_stack(self) -> bool:
        return "long[" in self.type

    @property
    def is_dynamic(self) -> bool:
        """A ``__data_loc`` field: ``char[]`` (or ``char[0]``), a stack."""
        return self.size == 0

    @property
    def is_signed(self) -> bool:
        # (synth_field_signed, on the format's type: __data_loc ones are signed)
        return self.is_dynamic or not self.type.startswith("u")

    @property
    def fmt(self) -> str:
        if self.is_string:
            return "%.*s"
        if self.is_stack:
            return "%s"
        return NUM_TYPES[self.type][1]

    def store(self, value: object) -> object:
        """``value`` as the record keeps it: a number cut to the field's
        size (as the kernel's ``(u32)val``), read back signed if the type
        is (what a filter compares); a string as text, cut to a static
        string's room; a stack as a tuple of its frames' texts."""
        if self.is_string:
            text = value if type(value) is str else value_text(value)
            return text if self.is_dynamic else text[:STR_VAR_LEN_MAX]
        if self.is_stack:
            if type(value) is tuple or type(value) is list:
                return tuple(v if type(v) is str else value_text(v) for v in value)
            return ()
        v = int(value) if type(value) is int or type(value) is bool else 0
        bits = NUM_TYPES[self.type][0] * 8
        v &= (1 << bits) - 1
        if self.is_signed and v >> (bits - 1):
            v -= 1 << bits
        return v

    def text(self, value: object) -> str:
        """The value as ``print_synth_event`` prints it: a 1- or 2-byte
        number is passed to printf cut to its size, unsigned whatever ``%d``."""
        if self.is_string:
            return value if type(value) is str else value_text(value)
        if self.is_stack:
            frames = value if type(value) is tuple else ()
            return "STACK:" + "".join(f"\n=> {value_text(f)}" for f in frames)
        if type(value) is not int:
            return value_text(value)
        size = NUM_TYPES[self.type][0]
        return str(value & ((1 << size * 8) - 1)) if size < 4 else str(value)

    def format_line(self, offset: int) -> str:
        """Its ``format`` line (f_show): an array's brackets after the name."""
        signed = int(self.is_signed)
        if self.is_dynamic:
            return f"\tfield:__data_loc {self.type} {self.name};\toffset:{offset};\tsize:8;\tsigned:{signed};"
        if "[" in self.type:
            base = self.type[:self.type.index("[")]
            return f"\tfield:{base} {self.name}[];\toffset:{offset};\tsize:{self.size};\tsigned:{signed};"
        return f"\tfield:{self.type} {self.name};\toffset:{offset};\tsize:{self.size};\tsigned:{signed};"

    @property
    def room(self) -> int:
        """Its room in the record: a u64, or STR_VAR_LEN_MAX for a static string."""
        return STR_VAR_LEN_MAX if self.is_string and not self.is_dynamic else 8


def _field_size(type_: str) -> int | None:
    """synth_field_size: the size, 0 for a dynamic one; None for a bad
    ``char[N]`` (the kernel's -EINVAL), -1 for no such type."""
    if type_ in NUM_TYPES:
        return NUM_TYPES[type_][0]
    if "char[" in type_:
        start = type_.index("char[") + len("char[")
        end = type_.find("]")
        if end < start or end != len(type_) - 1 or end - start > 3:
            return None
        digits = type_[start:end]
        if not digits:
            return 0
        try:
            size = int(digits, 0)       # (kstrtouint, base 0)
        except ValueError:
            return None
        return None if size < 0 or size > STR_VAR_LEN_MAX else size
    if "long[" in type_:
        return 0
    return -1       # none of them: "Invalid type" (the kernel's size 0 of a non-array)


def errpos(command: str, token: str) -> int:
    """The kernel's err_pos: where ``token`` first occurs in the command."""
    found = command.find(token) if token else -1
    return found if found >= 0 else 0


def parse_fields(command: str, raw_fields: str) -> list[SynthField]:
    """The fields of ``__create_synth_event``: ``;``-separated, each
    ``[unsigned] TYPE NAME[[N]]`` (more than one between semicolons is the
    old form, still taken).  Errors are placed in ``command``."""
    fields: list[SynthField] = []
    for part in raw_fields.split(";"):
        argv = part.split()
        consumed = 0
        while len(argv) > consumed:
            args = argv[consumed:]
            field_type = args[0]
            prefix = ""
            if field_type == "unsigned":
                if len(args) < 3:
                    raise TraceError("SYNTH_ERR_INCOMPLETE_TYPE", command, errpos(command, field_type),
                                     subsystem=SUBSYSTEM)
                prefix, field_type, name = "unsigned ", args[1], args[2]
                consumed += 3
            else:
                if len(args) < 2:
                    raise TraceError("SYNTH_ERR_INVALID_FIELD", command, errpos(command, field_type),
                                     subsystem=SUBSYSTEM)
                name = args[1]
                consumed += 2
            array = name[name.index("["):] if "[" in name else ""
            bare = name[:len(name) - len(array)]
            if not is_good_name(bare):
                raise TraceError("SYNTH_ERR_BAD_NAME", command, errpos(command, name), subsystem=SUBSYSTEM)
            type_ = prefix + field_type + array
            size = _field_size(type_)
            if size is None:
                code, token = ("SYNTH_ERR_INVALID_ARRAY_SPEC", name) if array \
                    else ("SYNTH_ERR_INVALID_TYPE", field_type)
                raise TraceError(code, command, errpos(command, token), subsystem=SUBSYSTEM)
            if size < 0:
                raise TraceError("SYNTH_ERR_INVALID_TYPE", command, errpos(command, field_type),
                                 subsystem=SUBSYSTEM)
            if len(fields) == SYNTH_FIELDS_MAX:
                raise TraceError("SYNTH_ERR_TOO_MANY_FIELDS", command, 0, subsystem=SUBSYSTEM)
            fields.append(SynthField(type_, bare, size))
    if not fields:
        raise TraceError("SYNTH_ERR_INVALID_CMD", command, 0, subsystem=SUBSYSTEM)
    return fields


def first_space(cmd: str) -> int:
    """strpbrk(cmd, " \\t"), -1 for none."""
    found = [i for i in (cmd.find(" "), cmd.find("\t")) if i >= 0]
    return min(found) if found else -1


def split_dyn_command(cmd: str) -> tuple[str, str]:
    """An ``s:[synthetic/]NAME FIELDS`` line of ``dynamic_events``: its
    name and its fields' text (the kernel's create_synth_event, up to
    __create_synth_event); errors placed in ``cmd``."""
    space = first_space(cmd)
    if space < 0:
        raise TraceError("SYNTH_ERR_INVALID_CMD", cmd, 0, subsystem=SUBSYSTEM)
    start = 2
    if "/" in cmd[start:]:
        if not cmd.startswith(f"s:{SYNTH_SYSTEM}/"):
            raise TraceError("SYNTH_ERR_INVALID_DYN_CMD", cmd, 0, subsystem=SUBSYSTEM)
        start += len(SYNTH_SYSTEM) + 1
    if not is_command(cmd[start:]):
        raise TraceError("SYNTH_ERR_INVALID_CMD", cmd, 0, subsystem=SUBSYSTEM)
    return cmd[start:space], cmd[space:].lstrip()


def is_command(cmd: str) -> bool:
    """check_command: a removal, or a name and at least one type and field."""
    name_and_fields = cmd.split(";", 1)[0]
    return name_and_fields[:1] == "!" or len(name_and_fields.split()) >= 3


def check_name(cmd: str, name: str) -> None:
    """An event's name, in ``cmd``: a C identifier."""
    if not name:
        raise TraceError("SYNTH_ERR_INVALID_CMD", cmd, 0, subsystem=SUBSYSTEM)
    if not is_good_name(name):
        raise TraceError("SYNTH_ERR_BAD_NAME", cmd, errpos(cmd, name), subsystem=SUBSYSTEM)


def parse_synth_definition(line: str) -> SynthFormat:
    """An ``s:`` line of ``dynamic_events`` (``-e`` of ``fentry run``),
    checked as far as it can be without the events defined (not whether
    the name is taken)."""
    name, raw_fields = split_dyn_command(line.strip())
    check_name(line.strip(), name)
    return SynthFormat(name, parse_fields(line.strip(), raw_fields))


def fields_text(fields: Sequence[SynthField]) -> str:
    """``TYPE NAME; TYPE NAME`` (``__synth_event_show``)."""
    return "; ".join(f"{f.type} {f.name}" for f in fields)


class SynthFormat(TracepointFormat):
    """How one synthetic event's records print (``print_synth_event``):
    ``NAME: lat=123 pid=456``; a tracepoint's, to a reader's exports."""

    def __init__(self, name: str, fields: Sequence[SynthField]) -> None:
        super().__init__(SYNTH_SYSTEM, name, tuple(f.name for f in fields))
        self.synth_fields = tuple(fields)

    dyn_type = "synthetic"
    args = ()           # (no fetchargs: what a probe definition's readers look for)

    @property
    def event(self) -> str:
        """Its name (as a probe definition's ``event``)."""
        return self.name

    def field_kinds(self) -> dict[str, str]:
        """Each field's filter kind: ``num`` or ``str`` (a stack: its text)."""
        return {f.name: "str" if f.is_string or f.is_stack else "num" for f in self.synth_fields}

    @classmethod
    def from_description(cls, desc: list[Any]) -> SynthFormat:
        """From the raw stream's ``["synthetic", name, [[type, field, size], ...]]``."""
        return cls(desc[1], [SynthField(t, n, s) for t, n, s in desc[2]])

    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        """``NAME: field=value ...`` (``site``, the event that fired it, is
        not printed); a stack's frames a line each, ``=> FRAME``, and no
        space after them, as print_synth_event."""
        last = len(self.synth_fields) - 1
        parts = [f"{self.name}: "]
        for i, (f, v) in enumerate(zip(self.synth_fields, values)):
            if f.is_stack:
                parts.append(f"{f.name}={f.text(v)}\n")
            else:
                parts.append(f"{f.name}={f.text(v)}" + ("" if i == last else " "))
        return "".join(parts).removesuffix("\n")     # (the line's own newline is the reader's)

    def raw_description(self) -> list[object]:
        """The raw stream's description of it (``tracers/stream.describe``)."""
        return ["synthetic", self.name, [list(f) for f in self.synth_fields]]

    def print_fmt(self) -> str:
        """The ``print fmt`` line of its ``format`` (``__set_synth_event_print_fmt``)."""
        fmts = ", ".join(f"{f.name}={f.fmt}" for f in self.synth_fields)
        refs = "".join(f", __get_str({f.name})" if f.is_string and f.is_dynamic
                       else f", __get_stacktrace({f.name})" if f.is_stack
                       else f", REC->{f.name}" for f in self.synth_fields)
        return f'print fmt: "{fmts}"{refs}'

    def __repr__(self) -> str:
        return f"<synthetic event {self.name}>"
