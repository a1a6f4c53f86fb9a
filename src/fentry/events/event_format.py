"""How a probe event's records print: its ``print fmt``, applied when the
trace is read, in the traced process (the ``trace`` file) or in a reader
outside it (``fentry run``, ``report``), which rebuilds it from the event's
definition as the raw stream describes it.
"""

from __future__ import annotations

from types import CodeType
from typing import Any

from ..raw import CodeInfo, FaultValue
from .fetch import FAULT, field_names, render
from .probe_parser import Definition, ProbeRemoval


class EventFormat:
    """One probe event's line: ``EVENT: (SYM+0xOFF) name=value ...``.

    ``faults`` counts values that could not be printed (each shows as
    ``(fault)``; the rest of the line, and the trace, go on)."""

    def __init__(self, defn: Definition) -> None:
        self.defn = defn
        self.name = defn.event
        self.types = {a.name: a.type for a in defn.args}
        self._names = None if any(a.kind == "args" for a in defn.args) \
            else tuple(a.name for a in defn.args)
        self.faults = 0

    @classmethod
    def from_definition(cls, text: str) -> EventFormat:
        """From a definition as ``dynamic_events`` shows it (any kind)."""
        # (imported here: trace_dynevent's kinds import the events that use this module)
        from .trace_dynevent import parse_definition
        defn = parse_definition(text)
        assert not isinstance(defn, ProbeRemoval)
        return cls(defn)

    def field_names(self, code: CodeType | CodeInfo | None) -> tuple[str, ...]:
        """The names of a record's values (``$args`` gives the parameters of ``code``)."""
        if self._names is not None:
            return self._names
        return field_names(self.defn.args, code)  # type: ignore[arg-type]  # (None: no $args)

    def line(self, site: tuple[Any, ...], values: tuple[object, ...]) -> str:
        """``EVENT: (SYM+0xOFF) name=value ...``; a return: ``(CALLER+0xOFF <- SYM)``."""
        if self.defn.dyn_type in ("eprobe", "tprobe"):      # the attached event, or tracepoint
            code = site[0]
            where = f"({self.defn.location})"
        elif self.defn.is_return:
            caller, offset, code, raised = site
            # (code None: a C function's return, named by the definition)
            name = code.co_qualname if code is not None \
                else getattr(self.defn, "symbol_name", None)      # (a C probe's: a ProbeDefinition)
            where = f"({caller.co_qualname}+{offset:#x} <- {name})" if caller \
                else f"(<top> <- {name})"
            if raised:
                where += f" raised {raised}"
        else:
            code, offset = site
            where = f"({code.co_qualname}+{offset:#x})"
        types = self.types
        fields = " ".join(f"{name}={self._render(value, types.get(name))}"
                          for name, value in zip(self.field_names(code), values))
        return f"{self.name}: {where}" + (f" {fields}" if fields else "")

    def _render(self, value: object, type_: str | None) -> str:
        if type(value) is FaultValue and value.why:     # kept as a fault: too large
            self.faults += 1
        try:
            return render(value, type_)
        except Exception:       # a huge int, a failing conversion: this value only
            self.faults += 1
            return FAULT
