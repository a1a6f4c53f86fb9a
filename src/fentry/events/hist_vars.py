"""events.hist_vars: hist variables and their references, as the kernel's
``trace_events_hist.c`` (``find_event_var``, ``create_var_ref``,
``resolve_var_refs``, ``tr->hist_vars``).

``hist:keys=common_pid:ts0=common_timestamp.usecs`` keeps ``ts0`` in the
entry of the event's key (the map's element), and another hist on the same
keys reads it as ``$ts0``: ``common_timestamp.usecs-$ts0``.  As the
kernel's:

- a reference names a variable of a hist in the same instance: of the
  ``onmatch(GRP.EVENT)`` event's hists first, else of any hist that has
  variables (two events with it: ``Variable name not unique``), or of one
  event, ``GRP.EVENT.$var``;
- a hit reads the referenced variables in the element of its own key; one
  not set there (no entry hit yet) drops the hit: no entry, no count;
- a variable an expression reads (an operand, ``$ts0`` in ``a-$ts0``) is
  read once: the read unsets it (``tracing_map_read_var_once``), so one
  entry event feeds one return;
- a hist whose variables another hist reads cannot be removed (``EBUSY``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import TraceError

if TYPE_CHECKING:
    from .hist import HistField, HistTrigger, _Parse
    from .tracing_map import TracingMap
    from .trigger import TriggerContext, Triggered

__all__ = ["VarRef", "RefSlot", "HIST_VARS", "resolve_ref", "referenced", "var_read", "vars_set"]

VARS_MAX = 16           # TRACING_MAP_VARS_MAX


@dataclass(eq=False)
class VarRef:
    """A ``$name`` as written (``system.event.$name`` too) and, once
    resolved, the hist that has it, the variable, and its slot in the
    referring hist's ``var_ref_vals`` (``index``)."""
    name: str
    system: str | None = None
    event: str | None = None
    read_once: bool = False
    owner: HistTrigger | None = None
    var: HistField | None = None
    index: int = -1


@dataclass(eq=False)
class RefSlot:
    """One of a hist's references (``hist_data->var_refs[i]``): one per
    variable, however many times it is named."""
    owner: HistTrigger
    name: str
    read_once: bool


# The hists that have variables or references, every instance's (the
# kernel's tr->hist_vars; each is filtered by its file's instance).
HIST_VARS: list[HistTrigger] = []


def own_var(trigger: HistTrigger, name: str) -> HistField | None:
    """``find_var_field``: the variable ``name`` of this hist."""
    for v in trigger.spec.vars:
        if v.var_name == name:
            return v
    return None


def _file_var(file: Triggered, name: str) -> tuple[HistTrigger, HistField] | None:
    """``find_file_var``: the first hist on ``file`` with the variable."""
    from .hist import hist_triggers
    for t in hist_triggers(file):
        v = own_var(t, name)
        if v is not None:
            return t, v
    return None


def _var_file(file: Triggered, ctx: TriggerContext, system: str | None, event: str | None,
              name: str, p: _Parse) -> Triggered | None:
    """``find_var_file``: the named event's file, else the one event file
    of this instance whose hists have the variable."""
    if system is not None and event is not None:
        return ctx.find(system, event)
    found: Triggered | None = None
    for t in HIST_VARS:
        if t.file.instance is not file.instance or t.file is found:
            continue
        if own_var(t, name) is not None:
            if found is not None:
                raise p.err("HIST_ERR_VAR_NOT_UNIQUE", name)
            found = t.file
    return found


def find_event_var(file: Triggered, ctx: TriggerContext, matches: list[tuple[str, str]],
                   system: str | None, event: str | None, name: str,
                   p: _Parse) -> tuple[HistTrigger, HistField] | None:
    """``find_event_var``: the variable a reference names; ``matches``: the
    events of the hist's ``onmatch()`` actions, looked in first."""
    if system is None or event is None:
        found = None
        for msys, mevent in matches:
            f = _var_file(file, ctx, msys, mevent, name, p)
            hit = _file_var(f, name) if f is not None else None
            if hit is not None:
                if found is not None:
                    raise p.err("HIST_ERR_VAR_NOT_UNIQUE", name)
                found = hit
        if found is not None:
            return found
    f = _var_file(file, ctx, system, event, name, p)
    return _file_var(f, name) if f is not None else None


def resolve_ref(node: HistField, trigger: HistTrigger, ctx: TriggerContext,
                matches: list[tuple[str, str]], slots: list[RefSlot], p: _Parse) -> None:
    """Point a ``ref`` node at its variable and a slot (``parse_var_ref`` +
    ``create_var_ref``: one slot per variable, read once if any use is)."""
    ref = node.vref
    found = find_event_var(trigger.file, ctx, matches, ref.system, ref.event, ref.name, p)
    if found is None:
        raise p.err("HIST_ERR_VAR_NOT_FOUND", ref.name)
    owner, var = found
    ref.owner, ref.var = owner, var
    add_slot(ref, slots)


def add_slot(ref: VarRef, slots: list[RefSlot]) -> None:
    """``ref``'s slot among ``slots``, made if it is the first of its variable."""
    assert ref.owner is not None
    for i, s in enumerate(slots):
        if s.owner is ref.owner and s.name == ref.name:
            s.read_once = s.read_once or ref.read_once
            ref.index = i
            return
    slots.append(RefSlot(ref.owner, ref.name, ref.read_once))
    ref.index = len(slots) - 1


def referenced(trigger: HistTrigger) -> bool:
    """``check_var_refs``: another hist reads one of its variables."""
    return any(s.owner is trigger for t in HIST_VARS if t is not trigger for s in t.refs)


def busy(text: str, location: str) -> TraceError:
    """The ``-EBUSY`` of removing a hist whose variables are read (not logged, as the kernel's)."""
    return TraceError("HIST_EBUSY", text, 0, subsystem=location)


# -- the variables' values, kept in the map's elements (a key's dict: a
# name there is a variable set, as tracing_map_var_set says)

def var_read(m: TracingMap, key: tuple[object, ...], name: str, once: bool) -> Any:
    """The variable ``name`` of ``key``'s element, None if not set; ``once``:
    unset it (``tracing_map_read_var_once``)."""
    with m.lock:
        d = m.vars.get(key)
        if d is None:
            return None
        return d.pop(name, None) if once else d.get(name)


def vars_set(m: TracingMap, key: tuple[object, ...], values: dict[str, object]) -> None:
    """Set variables of ``key``'s element (which the insert made)."""
    with m.lock:
        d = m.vars.get(key)
        if d is None:
            d = m.vars[key] = {}
        d.update(values)
