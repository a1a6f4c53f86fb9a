"""How a tracepoint's records print: ``NAME: field=value field=value``, as
the kernel prints a tracepoint's event (its ``print fmt``, ``%s`` strings
bare, numbers in decimal).

The same class prints in the traced process (the ``trace`` file, where a
``Tracepoint`` is one) and in a reader outside it (``fentry run``,
``fentry report``), which rebuilds it from the raw stream's description
``["tracepoint", group, name, [field, ...]]``.  A value beyond the named
fields (an audit event of a name fentry has no table for, called with more
arguments than seen first) prints as ``argN``.
"""

from __future__ import annotations

from types import CodeType
from typing import Any

from ..raw import CodeInfo, FaultValue, Shown
from .fetch import FAULT, safe_repr


def value_text(value: Any) -> str:
    """A stored value as a tracepoint line prints it."""
    t = type(value)
    if t is str or t is Shown:
        return str.__str__(value)
    if t is int:
        return str(value)
    if t is CodeType:
        from ..symbols import SYMBOLS  # (in the traced process only)
        return SYMBOLS.name_of(value)
    if t is CodeInfo:
        return str(value.name)
    if value is FAULT or t is FaultValue:
        return FAULT
    return safe_repr(value)


class TracepointFormat:
    """One tracepoint's line.  ``faults`` counts values that could not be
    printed (never, here: every value has a text)."""

    def __init__(self, group: str, name: str, fields: tuple[str, ...]) -> None:
        self.group = group
        self.name = name
        self.fields = fields
        self.faults = 0

    def field_name(self, i: int) -> str:
        return self.fields[i] if i < len(self.fields) else f"arg{i}"

    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        """``NAME: field=value ...`` (``site`` is not printed: the fields say where)."""
        fields = " ".join(f"{self.field_name(i)}={value_text(v)}" for i, v in enumerate(values))
        return f"{self.name}: {fields}" if fields else f"{self.name}:"

    def raw_description(self) -> list[object]:
        """The raw stream's description of it (``tracers/stream.describe``)."""
        return ["tracepoint", self.group, self.name, list(self.fields)]

    def __repr__(self) -> str:
        return f"<tracepoint {self.group}:{self.name}>"
