"""events.hist_actions: a hist trigger's actions, as the kernel's
``trace_events_hist.c`` (``onmatch_parse``, ``track_data_parse``,
``action_parse``, ``trace_action_create``, ``ontrack_action``).

::

    onmatch(GRP.EVENT).trace(SYNTH,PARAM[,PARAM...])    (or .SYNTH(PARAM,...))
    onmax($VAR).save(FIELD[,FIELD...])   onmax($VAR).snapshot()   onmax($VAR).trace(...)
    onchange($VAR).save(...)             onchange($VAR).snapshot()

An action runs on a hit of its hist once every variable the hist reads is
set for the hit's key.  ``trace`` fires the synthetic event with its
parameters: ``$var`` (this hist's, or the ``onmatch`` event's hists') or a
field of this event.  ``onmax`` / ``onchange`` keep, per entry, the
variable's max (or last value), and when it rises (changes) ``save`` keeps
the fields' values of that hit in the entry (the ``hist`` file prints them
after its values: ``max: N  FIELD: V``) and ``snapshot`` takes the
instance's snapshot when the entry's value beats every entry's so far (the
kernel's conditional snapshot; the ``hist`` file says which).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .hist_expr import Env, _num, evaluate, field_type
from .hist_vars import add_slot, own_var

if TYPE_CHECKING:
    from .hist import HistField, HistTrigger, _Parse
    from .hist_vars import RefSlot
    from .trace_synth import SynthEventFile
    from .trigger import TriggerContext

__all__ = ["Action", "parse_action", "ACTION_PREFIXES"]

SYNTH_FIELDS_MAX = 64
ACTIONS_MAX = 8                 # HIST_ACTIONS_MAX
ACTION_PREFIXES = ("onmatch(", "onmax(", "onchange(")


@dataclass(eq=False)
class Action:
    """One action (``struct action_data``), as parsed, then resolved."""
    handler: str                            # onmatch, onmax, onchange
    action: str = ""                        # save, trace, snapshot
    action_name: str = ""                   # as written: trace, save, snapshot, or the synthetic event's
    params: list[str] = field(default_factory=list)
    use_trace_keyword: bool = False
    synth_name: str | None = None
    match: tuple[str, str] = ("", "")       # onmatch's GRP, EVENT
    var_str: str = ""                       # onmax's / onchange's $VAR
    # resolved (create_actions):
    synth: Any = None
    args: list[HistField] = field(default_factory=list)      # what each param reads
    track: HistField | None = None          # the $VAR tracked
    save: list[HistField] = field(default_factory=list)      # save()'s fields
    snap_val: int = 0                       # the conditional snapshot's value, key and comm
    snap_key: tuple[object, ...] | None = None
    snap_comm: object = None

    def spec(self) -> str:
        """As the trigger info prints it (``print_onmatch_spec``, ``print_track_data_spec``)."""
        if self.action == "save":
            inner = ",".join(f.var_name or f.name for f in self.save) if self.save \
                else ",".join(self.params)
        elif self.action == "trace":
            inner = ",".join(([self.synth_name or ""] if self.use_trace_keyword else []) + self.params)
        else:
            inner = ""
        if self.handler == "onmatch":
            return f":onmatch({self.match[0]}.{self.match[1]}).{self.action_name}({inner})"
        return f":{self.handler}({self.var_str}).{self.action_name}({inner})"

    def identity(self) -> tuple[object, ...]:
        """What ``actions_match`` compares."""
        return (self.handler, self.action, tuple(self.params),
                self.synth_name if self.use_trace_keyword else self.action_name,
                self.match, self.var_str)


def parse_action(text: str, p: _Parse) -> Action:
    """One ``onmatch(...)``, ``onmax(...)`` or ``onchange(...)`` word (``parse_actions``)."""
    if text.startswith("onmatch("):
        rest = text[len("onmatch("):]
        match_event, close, after = rest.partition(")")
        if not close:
            raise p.err("HIST_ERR_NO_CLOSING_PAREN", match_event)
        system, dot, event = match_event.partition(".")
        if not dot:
            raise p.err("HIST_ERR_SUBSYS_NOT_FOUND", system)
        a = Action("onmatch", match=(system, event))
    else:
        handler = "onmax" if text.startswith("onmax(") else "onchange"
        rest = text[len(handler) + 1:]
        var_str, close, after = rest.partition(")")
        if not close:
            raise p.err("HIST_EINVAL", logged=False)
        a = Action(handler, var_str=var_str)
    _action_parse(after, a, p)
    return a


def _action_parse(s: str, a: Action, p: _Parse) -> None:
    """``.NAME(PARAMS)`` (``action_parse``)."""
    _, dot, s = s.partition(".")
    if not dot:
        raise p.err("HIST_ERR_ACTION_NOT_FOUND")
    name, paren, s = s.partition("(")
    if not paren:
        raise p.err("HIST_ERR_ACTION_NOT_FOUND")
    params, close, _ = s.partition(")")
    if name.startswith("save"):
        _params(params, a, p)
        if a.handler == "onmatch":
            raise p.err("HIST_ERR_ACTION_MISMATCH", name)
        a.action = "save"
    elif name.startswith("snapshot"):
        if not close:
            raise p.err("HIST_ERR_NO_CLOSING_PAREN", params)
        if a.handler == "onmatch":
            raise p.err("HIST_ERR_ACTION_MISMATCH", name)
        a.action = "snapshot"
    else:
        a.use_trace_keyword = name.startswith("trace")
        _params(params, a, p)
        a.action = "trace"
        if not a.use_trace_keyword:
            a.synth_name = name
    a.action_name = name


def _params(text: str, a: Action, p: _Parse) -> None:
    """``parse_action_params``: comma-separated, each at least 2 characters;
    with ``trace``, the first is the synthetic event."""
    first = True
    for param in text.split(","):
        if len(a.params) >= SYNTH_FIELDS_MAX:
            return          # (the kernel logs it, and goes on with those it has)
        param = param.strip()
        if len(param) < 2:
            raise p.err("HIST_ERR_INVALID_PARAM", param)
        if first and a.use_trace_keyword:
            a.synth_name = param
        else:
            a.params.append(param)
        first = False


# -- create_actions: against the instance's synthetic events and hists

def find_synth(ctx: TriggerContext, name: str) -> SynthEventFile | None:
    """The synthetic event ``name``'s file in the hist's instance
    (``find_synth_event``), None if there is none."""
    from .synth_format import SYNTH_SYSTEM
    from .trace_synth import SynthEventFile
    file = ctx.find(SYNTH_SYSTEM, name)
    return file if isinstance(file, SynthEventFile) else None


_TYPE_SIZES = {"u8": (1, False), "s8": (1, True), "u16": (2, False), "s16": (2, True),
               "u32": (4, False), "s32": (4, True), "u64": (8, False), "s64": (8, True),
               "char": (1, True), "unsigned char": (1, False), "short": (2, True),
               "unsigned short": (2, False), "int": (4, True), "unsigned int": (4, False),
               "long": (8, True), "unsigned long": (8, False), "pid_t": (4, True),
               "bool": (1, False), "gfp_t": (4, False)}


def synth_type_ok(synth_type: str, f: HistField, kinds: Mapping[str, str]) -> bool:
    """``check_synth_field``: the same type, or the same size and signedness
    (a string param only to a string field; a dynamic one takes any string)."""
    htype, hsize, hsigned, hstring = field_type(f, kinds)
    is_string = synth_type.startswith("char[") or synth_type == "string"
    if is_string:
        return hstring and (synth_type in ("char[]", "string") or synth_type == htype)
    if hstring:
        return False
    if synth_type == htype:
        return True
    size, signed = _TYPE_SIZES.get(synth_type.removeprefix("unsigned ").strip()
                                   if synth_type not in _TYPE_SIZES else synth_type, (8, False))
    return size == hsize and signed == hsigned


def create(a: Action, trigger: HistTrigger, ctx: TriggerContext, kinds: Mapping[str, str],
           slots: list[RefSlot], matches: list[tuple[str, str]], p: _Parse) -> None:
    """Resolve ``a`` (``onmatch_create`` / ``track_data_create``)."""
    from .hist_expr import parse_atom
    from .hist_vars import VarRef, find_event_var
    if a.handler != "onmatch":
        if not a.var_str.startswith("$"):
            raise p.err("HIST_ERR_ONX_NOT_VAR", a.var_str)
        var = own_var(trigger, a.var_str[1:])
        if var is None:
            raise p.err("HIST_ERR_ONX_VAR_NOT_FOUND", a.var_str[1:])
        a.track = _ref_node(VarRef(var.var_name or "", owner=trigger, var=var), slots)
    if a.action == "save":
        if any(x.action == "save" and x.save for x in trigger.actions if x is not a):
            raise p.err("HIST_ERR_TOO_MANY_SAVE_ACTIONS")
        for param in a.params:
            try:
                f = parse_atom(param, p, kinds, param, {})
            except Exception:
                raise p.err("HIST_ERR_FIELD_VAR_CREATE_FAIL", param) from None
            if f.kind == "ref":
                raise p.err("HIST_ERR_FIELD_VAR_CREATE_FAIL", param)
            a.save.append(f)
        return
    if a.action != "trace":
        return
    synth = find_synth(ctx, a.synth_name or "")
    if synth is None:
        raise p.err("HIST_ERR_SYNTH_EVENT_NOT_FOUND", a.synth_name)
    fields = list(synth.fields)
    for i, param in enumerate(a.params):
        system = event = None
        name = param
        if "." in param:
            system, _, rest = param.partition(".")
            event, dot, name = rest.partition(".")
            if not dot:
                raise p.err("HIST_EINVAL", logged=False)
        if name.startswith("$"):
            found = None
            if system is None or (system, event) == (trigger.file.group, trigger.file.name):
                var = own_var(trigger, name[1:])
                found = (trigger, var) if var is not None else None
            if found is None:
                where = [(system, event)] if system is not None else \
                    (matches if a.handler == "onmatch" else [])
                found = None
                for s, e in where:
                    found = find_event_var(trigger.file, ctx, [], s, e, name[1:], p)
                    if found is not None:
                        break
                if found is None and system is None and a.handler != "onmatch":
                    found = find_event_var(trigger.file, ctx, [], None, None, name[1:], p)
            if found is None:
                raise p.err("HIST_ERR_PARAM_NOT_FOUND", name[1:])
            node = _ref_node(VarRef(name[1:], system, event, owner=found[0], var=found[1]), slots)
        else:
            if system is not None and (system, event) != (trigger.file.group, trigger.file.name):
                raise p.err("HIST_ERR_FIELD_VAR_PARSE_FAIL", name)
            try:
                node = parse_atom(name, p, kinds, None, {})
            except Exception:
                raise p.err("HIST_ERR_FIELD_VAR_PARSE_FAIL", name) from None
        if i >= len(fields) or not synth_type_ok(fields[i][0], node, kinds):
            raise p.err("HIST_ERR_SYNTH_TYPE_MISMATCH", name)
        a.args.append(node)
    if len(a.args) != len(fields):
        raise p.err("HIST_ERR_SYNTH_COUNT_MISMATCH", a.synth_name)
    a.synth = synth


def hold(actions: list[Action], on: bool) -> None:
    """The synthetic events the actions fire held (``se->ref``: not removable), or let go."""
    for a in actions:
        if a.synth is not None:
            a.synth.event.hold() if on else a.synth.event.unhold()


def _ref_node(ref: Any, slots: list[RefSlot]) -> HistField:
    from .hist import HistField
    add_slot(ref, slots)
    return HistField(ref.name, "ref", ref=ref, ftype=ref.var.ftype if ref.var is not None else None)


# -- on a hit (the traced thread), once the hist's references are read

def run(a: Action, trigger: HistTrigger, key: tuple[object, ...], env: Env) -> None:
    """``data->fn``: ``action_trace`` for onmatch, ``ontrack_action`` for onmax / onchange."""
    if a.handler == "onmatch":
        _trace(a, env)
        return
    assert a.track is not None
    val = _num(env.refvals[a.track.vref.index])
    m = trigger.map
    track = "__max" if a.handler == "onmax" else "__change"
    with m.lock:
        d = m.vars.setdefault(key, {})
        old = d.get(track, 0)
        assert isinstance(old, int)
        if (val <= old) if a.handler == "onmax" else (val == old):
            return
        d[track] = val
        if a.action == "save":
            for f in a.save:
                d[f.var_name or f.name] = evaluate(f, env)
    if a.action == "trace":
        _trace(a, env)
    elif a.action == "snapshot":
        _snapshot(a, trigger, key, val)


def _trace(a: Action, env: Env) -> None:
    values = [evaluate(f, env) for f in a.args]
    a.synth.fire(values, env.frame)


def _snapshot(a: Action, trigger: HistTrigger, key: tuple[object, ...], val: int) -> None:
    """``cond_snapshot_update``: the snapshot, when this entry's value beats
    the one of the last snapshot."""
    if (val <= a.snap_val) if a.handler == "onmax" else (val == a.snap_val):
        return
    a.snap_val, a.snap_key = val, key
    a.snap_comm = trigger.map.private.get(key)
    trigger.file.instance.take_snapshot()


# -- the hist file

def entry_text(trigger: HistTrigger, key: tuple[object, ...]) -> str:
    """``print_actions``: after an entry's values, each onmax / onchange's
    value and the saved fields (``track_data_print``)."""
    out = []
    d = trigger.map.vars.get(key, {})
    for a in trigger.actions:
        if a.handler == "onmatch" or a.action == "snapshot":
            continue
        label = "max" if a.handler == "onmax" else "changed"
        out.append(f"\n\t{label}: {d.get('__max' if a.handler == 'onmax' else '__change', 0):10d}")
        for x in trigger.actions:
            for f in x.save:
                v = d.get(f.var_name or f.name, 0)
                name = f.var_name or f.name
                out.append(f"  {name}: {v:<32}" if isinstance(v, str) else f"  {name}: {_u64(v):10d}")
    return "".join(out)


def _u64(v: object) -> int:
    """A saved value as the kernel's u64 prints."""
    return v & ((1 << 64) - 1) if isinstance(v, int) else 0


def snapshot_text(trigger: HistTrigger, key_text: Any) -> str:
    """``track_data_snapshot_print``: what took the snapshot, if one was taken."""
    for a in trigger.actions:
        if a.action == "snapshot" and a.snap_key is not None:
            return ("\nSnapshot taken (see tracing/snapshot).  Details:\n"
                    f"\ttriggering value {{ {a.handler}({a.var_str}) }}: {a.snap_val:10d}"
                    f"\ttriggered by event with key: {key_text(a.snap_key, a.snap_comm)}\n")
    return ""
