"""events.hist: hist triggers, as the kernel's ``kernel/trace/trace_events_hist.c``.

A write of ``hist:keys=...`` to an event's ``trigger`` file makes a
histogram that the event's hits aggregate into as they happen, in the
traced thread (a ``TracingMap``); reading the event's ``hist`` file prints
it.  The grammar (Documentation/trace/histogram.rst)::

    hist:keys=<field1[,field2,...]>[:values=<field1[,field2,...]>]
      [:sort=<field1[,field2,...]>][:size=#entries][:pause][:continue]
      [:clear][:name=histname1][:nohitcount] [if <filter>]

with ``key=``, ``val=`` and ``vals=`` as aliases, key modifiers ``.hex``,
``.sym``, ``.sym-offset``, ``.execname`` (on ``common_pid``), ``.log2``,
``.buckets=N``, ``.usecs`` (on ``common_timestamp``), value modifiers
``.percent`` and ``.graph``, and ``stacktrace`` as a key (the Python stack,
innermost first, at most 16 frames).  Parsing, the ``hist`` file's layout
and the error messages (``HIST_ERR_*``, with the kernel's caret: where the
bad word first occurs in ``hist:`` + the command) follow the kernel's
source.  Variables, expressions and actions (``ts0=common_timestamp.usecs``,
``common_timestamp.usecs-$ts0``, ``onmatch()``, ``onmax()``, ``onchange()``)
are the kernel's too: their parsing and evaluation are ``hist_expr``, the
variables' lookup and storage ``hist_vars``, the actions ``hist_actions``.

Hits come through ``HistTrigger.hit`` with the event's fields by name (the
Python path of the event, see ``trace_kprobe.EventFile``).
"""

from __future__ import annotations

import _thread
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from .. import pythreads
from ..errors import TraceError
from ..symbols import FENTRY_DIR, SYMBOLS, call_site
from . import hist_actions
from .hist_expr import Env, check_timestamps, evaluate, field_type, has_refs, parse_expr, resolve_usecs, walk
from .hist_vars import (
    HIST_VARS,
    VARS_MAX,
    RefSlot,
    VarRef,
    busy,
    own_var,
    referenced,
    resolve_ref,
    var_read,
    vars_set,
)
from .tracing_map import BITS_DEFAULT, BITS_MAX, BITS_MIN, TracingMap
from .trigger import (
    ETT_EVENT_HIST,
    ETT_HIST_ENABLE,
    EventEnable,
    Hit,
    Param,
    Trigger,
    TriggerCommand,
    TriggerContext,
    Triggered,
    event_enable_command,
    register_trigger_command,
    set_filter,
)

__all__ = ["HistSpec", "HistTrigger", "parse_hist", "hist_text", "hist_triggers", "COMMON_HIST_FIELDS"]

HIST_PREFIX = "hist:"
U64 = (1 << 64) - 1
KEYS_MAX = 3                # TRACING_MAP_KEYS_MAX
VALS_MAX = 3                # TRACING_MAP_VALS_MAX (the hitcount is one of them)
SORT_KEYS_MAX = 2           # TRACING_MAP_SORT_KEYS_MAX
STACKTRACE_DEPTH = 16       # HIST_STACKTRACE_DEPTH
BAR_WIDTH = 20              # the .graph bar, as the kernel's

# The fields every event has for a hist besides its own (trace_find_event_field's
# common and generic fields that mean something in Python): name -> kind.
COMMON_HIST_FIELDS: dict[str, str] = {"common_pid": "num", "comm": "str", "COMM": "str"}
_CPU_NAMES = ("common_cpu", "cpu", "CPU")
# A probe event's location fields (its format's): where it hit, as (code, offset);
# with .sym / .sym-offset they print as the function (the kernel's %ps / %pS).
_IP_FIELDS = ("__probe_ip", "__probe_func", "__probe_ret_ip")


def _now_ns() -> int:
    return time.perf_counter_ns()      # the rings' local clock (CLOCK_MONOTONIC)


@dataclass(eq=False)
class HistField:
    """One key, value or variable (``struct hist_field``): what it reads, and how."""
    name: str                   # the event field; hitcount, common_timestamp, common_cpu, stacktrace;
                                # an expression's text, a reference's variable ([GRP.EVENT.]VAR)
    kind: str                   # "field", "hitcount", "timestamp", "cpu", "stacktrace", "ip",
                                # "const", "expr", "ref"
    flag: str | None = None     # the modifier: hex sym sym-offset execname log2 buckets usecs percent graph
    buckets: int = 0
    var_name: str | None = None                 # a variable's name (``ts0=...``)
    operands: tuple[HistField, ...] = ()        # an expression's
    op: str = ""                                # + - * / or "neg"
    constant: int = 0
    ref: VarRef | None = None                   # a reference's variable
    usecs: bool = False                         # in microseconds (HIST_FIELD_FL_TIMESTAMP_USECS)
    ftype: tuple[str, int, bool, bool] | None = None    # a variable's type, once resolved

    def __post_init__(self) -> None:
        if self.kind == "timestamp" and self.flag == "usecs":
            self.usecs = True

    def printed(self) -> str:
        """As the trigger info shows it (``hist_field_print``)."""
        if self.kind == "stacktrace":
            return "stacktrace"
        text = f"{self.var_name}=" if self.var_name else ""
        if self.kind == "const":
            return text + str(self.constant)
        if self.kind == "ref":
            return text + "$" + self.name
        if self.kind == "expr":
            return text + self.name
        text += self.name + (f".{self.flag}" if self.flag else "")
        return text + (f"={self.buckets}" if self.buckets else "")

    @property
    def vref(self) -> VarRef:
        """A reference's variable (a ``ref`` field's, never None)."""
        assert self.ref is not None
        return self.ref

    def shape(self) -> tuple[object, ...]:
        """What ``hist_trigger_match`` compares of it."""
        return (self.kind, self.printed(), self.flag, self.buckets)


@dataclass
class HistSpec:
    """A parsed ``hist:`` command (``struct hist_trigger_attrs`` and the fields)."""
    keys: list[HistField]
    vals: list[HistField]                     # the hitcount first, always
    sort: list[tuple[int, bool]]              # (index into vals + keys, descending)
    map_bits: int = BITS_DEFAULT
    name: str | None = None                   # "name=NAME", as the kernel keeps it
    pause: bool = False
    cont: bool = False
    clear: bool = False
    no_hitcount: bool = False
    filter_text: str | None = None
    timestamps: bool = False                  # common_timestamp is used: ":clock=global"
    param: str = ""                           # the command after "hist:", as written
    vars: list[HistField] = field(default_factory=list)     # the variables, as defined
    actions: list[hist_actions.Action] = field(default_factory=list)
    usecs: bool = False                       # every common_timestamp in usecs (attrs->ts_in_usecs)
    kinds: dict[str, str] = field(default_factory=dict)     # the event's fields (for types)

    def identity(self) -> tuple[object, ...]:
        """What ``hist_trigger_match`` compares: fields (variables too),
        sort keys, filter, name, actions."""
        return (tuple(f.shape() for f in self.keys),
                tuple(f.shape() for f in self.vals) + tuple(f.shape() for f in self.vars),
                tuple(self.sort), self.filter_text, self.name,
                tuple(a.identity() for a in self.actions))

    def simple(self) -> bool:
        """Plain fields only: hits take the fast path (no variables, references, actions or expressions)."""
        return not self.vars and not self.actions and \
            all(f.kind not in ("const", "expr", "ref") for f in self.keys + self.vals)


class _Parse:
    """One command's parse: errors placed where the kernel's ``errpos``
    puts them (the first occurrence of the word in ``hist:`` + command)."""

    def __init__(self, param: str, location: str) -> None:
        self.command = HIST_PREFIX + param
        self.location = location

    def err(self, code: str, word: str | None = None, logged: bool = True) -> TraceError:
        pos = self.command.find(word) if word else 0
        e = TraceError(code, self.command, max(pos, 0), subsystem=self.location)
        e.logged = logged           # type: ignore[attr-defined]
        return e


def _split_filter(param: str, p: _Parse) -> tuple[str, str | None]:
    """The trigger and its ``if FILTER``: ``if`` with a blank either side
    (event_hist_trigger_parse's loop)."""
    i = 0
    while True:
        i = param.find("if", i)
        if i < 0:
            return param.strip(), None
        if i == 0:
            raise p.err("HIST_EINVAL", logged=False)
        if param[i - 1] not in " \t":
            i += 1
            continue
        if i >= len(param) - 3:
            raise p.err("HIST_EINVAL", logged=False)
        if param[i + 2] not in " \t":
            i += 1
            continue
        return param[:i - 1].strip(), param[i:].removeprefix("if").strip()


def _map_bits(text: str, p: _Parse) -> int:
    """``size=N``: the kernel's parse_map_size, a power of two from 128 to 131072."""
    try:
        size = int(text, 0)
    except ValueError:
        raise p.err("HIST_BAD_SIZE", logged=False) from None
    bits = (size - 1).bit_length() if size > 0 else 0
    if size <= 0 or not BITS_MIN <= bits <= BITS_MAX:
        raise p.err("HIST_BAD_SIZE", logged=False)
    return bits


def _parse_field(text: str, fields: Mapping[str, str], key: bool, p: _Parse) -> HistField:
    """``NAME[.MODIFIER]`` (the kernel's parse_field)."""
    name, _, modifier = text.partition(".")
    flag: str | None = None
    buckets = 0
    if modifier:
        if modifier in ("hex", "sym", "sym-offset", "log2", "usecs") \
                or (modifier == "execname" and name == "common_pid"):
            flag = modifier
        elif modifier.startswith("bucket"):
            rest = modifier[6:].removeprefix("s")
            try:
                buckets = int(rest[1:], 0) if rest[:1] == "=" else 0
            except ValueError:
                buckets = 0
            if buckets <= 0:
                raise p.err("HIST_ERR_BAD_FIELD_MODIFIER", modifier)
            flag = "buckets"
        elif modifier in ("percent", "graph") and not key:
            flag = modifier
        else:
            raise p.err("HIST_ERR_BAD_FIELD_MODIFIER", modifier)
    if key and flag in ("percent", "graph"):
        raise p.err("HIST_ERR_BAD_FIELD_MODIFIER", modifier)
    if name == "common_timestamp":
        return HistField(name, "timestamp", flag, buckets)
    if name in _IP_FIELDS and name in fields:
        return HistField(name, "ip", flag, buckets)
    if name in _CPU_NAMES and name not in fields:
        return HistField("common_cpu", "cpu", flag, buckets)
    if name not in fields and name not in COMMON_HIST_FIELDS:
        raise p.err("HIST_ERR_FIELD_NOT_FOUND", name)
    return HistField(name, "field", flag, buckets)


def parse_hist(param: str, fields: Mapping[str, str], location: str) -> HistSpec:
    """Parse ``param``, the command after ``hist:`` (filter included), over
    an event whose fields are ``fields`` (name -> "num" or "str").
    ``location``: the error_log's, ``hist:GRP:EVENT``."""
    p = _Parse(param, location)
    trigger, filter_text = _split_filter(param, p)
    keys_str = vals_str = sort_str = name = None
    map_bits = BITS_DEFAULT
    pause = cont = clear = no_hitcount = False
    assignments: list[str] = []
    actions: list[str] = []
    for word in trigger.split(":"):
        lhs, eq, rhs = word.partition("=")
        if eq:
            if not rhs:
                raise p.err("HIST_ERR_EMPTY_ASSIGNMENT", word)
            if lhs in ("key", "keys"):
                keys_str = rhs
            elif lhs in ("val", "vals", "values"):
                vals_str = rhs
            elif lhs == "sort":
                sort_str = rhs
            elif lhs == "name":
                name = word
            elif lhs == "size":
                map_bits = _map_bits(rhs, p)
            elif lhs == "clock":
                if rhs.strip() != "global":
                    raise p.err("HIST_ERR_SET_CLOCK_FAIL", rhs)
            else:                       # variables: NAME=EXPR[,NAME=EXPR...]
                if len(assignments) == VARS_MAX:
                    raise p.err("HIST_ERR_TOO_MANY_VARS", word)
                assignments.append(word)
        elif word == "pause":
            pause = True
        elif word in ("cont", "continue"):
            cont = True
        elif word == "clear":
            clear = True
        elif word in ("nohitcount", "NOHC"):
            no_hitcount = True
        elif word.startswith(hist_actions.ACTION_PREFIXES) and len(actions) < hist_actions.ACTIONS_MAX:
            actions.append(word)
        else:
            raise p.err("HIST_EINVAL", logged=False)
    if keys_str is None:
        raise p.err("HIST_EINVAL", logged=False)
    parsed_actions = [hist_actions.parse_action(a, p) for a in actions]
    var_defs: dict[str, str] = {}
    for word in assignments:                    # parse_var_defs
        for text in word.split(","):
            var, eq, expr = text.partition("=")
            if not eq:
                raise p.err("HIST_ERR_MALFORMED_ASSIGNMENT", var)
            if len(var_defs) == VARS_MAX:
                raise p.err("HIST_ERR_TOO_MANY_VARS", var)
            if var in var_defs:
                raise p.err("HIST_ERR_DUPLICATE_VAR", var)
            var_defs[var] = expr
    sym = {k: v.replace(".sym-offset", ".symXoffset") for k, v in var_defs.items()}

    vals = [HistField("hitcount", "hitcount")]
    for text in (vals_str.split(",") if vals_str else []):
        if text == "hitcount" or text.startswith("hitcount."):
            flag = text[9:] or None
            if flag not in (None, "percent", "graph"):
                raise p.err("HIST_ERR_BAD_FIELD_MODIFIER", flag)
            if flag is not None:         # the raw hitcount stays first; this one shows it so
                vals.append(HistField("hitcount", "hitcount", flag))
            continue
        if len(vals) >= VALS_MAX:
            raise p.err("HIST_EINVAL", logged=False)
        vals.append(parse_expr(text.replace(".sym-offset", ".symXoffset"), p, fields, None, [0], sym))
    if no_hitcount and len(vals) == 1:
        raise p.err("HIST_ERR_NEED_NOHC_VAL")

    keys: list[HistField] = []
    for text in keys_str.split(","):
        if len(keys) >= KEYS_MAX:
            raise p.err("HIST_EINVAL", logged=False)
        if text in ("stacktrace", "common_stacktrace"):
            keys.append(HistField("stacktrace", "stacktrace"))
        else:
            key = parse_expr(text.replace(".sym-offset", ".symXoffset"), p, fields, None, [0], sym, True)
            if has_refs(key):
                raise p.err("HIST_ERR_INVALID_REF_KEY", text)
            keys.append(key)
    variables = [parse_expr(expr, p, fields, var, [0], sym) for var, expr in sym.items()]

    sort = _sort_keys(sort_str, vals, keys, p)
    every = [x for f in vals + keys + variables for x in walk(f)]
    every += [x for a in parsed_actions for x in a.save]
    timestamps = any(f.kind == "timestamp" for f in every)
    usecs = any(f.kind == "timestamp" and f.flag == "usecs" for f in every)
    return HistSpec(keys, vals, sort, map_bits, name, pause, cont, clear, no_hitcount,
                    filter_text, timestamps, param, variables, parsed_actions, usecs, dict(fields))


def _sort_keys(text: str | None, vals: list[HistField], keys: list[HistField],
               p: _Parse) -> list[tuple[int, bool]]:
    """``sort=F[.descending|.ascending][,F2...]``, at most two (create_sort_keys)."""
    if text is None:
        return [(0, False)]
    words = text.split(",")
    sort: list[tuple[int, bool]] = []
    candidates = vals[1:] + keys
    for i, word in enumerate(words):
        if not word:
            raise p.err("HIST_ERR_EMPTY_SORT_FIELD", "sort=")
        if i == SORT_KEYS_MAX - 1 and i + 1 < len(words):
            raise p.err("HIST_ERR_TOO_MANY_SORT_FIELDS", "sort=")
        name, dot, modifier = word.partition(".")
        if not name:
            raise p.err("HIST_ERR_EMPTY_SORT_FIELD", "sort=")
        if modifier not in ("", "descending", "ascending") or (dot and not modifier):
            raise p.err("HIST_ERR_INVALID_SORT_MODIFIER", modifier)
        descending = modifier == "descending"
        if name == "hitcount":
            sort.append((0, descending))
            continue
        for j, f in enumerate(candidates, start=1):
            if f.name == name:
                sort.append((j, descending))
                break
        else:
            raise p.err("HIST_ERR_INVALID_SORT_FIELD", name)
    return sort


# -- the trigger

class HistTrigger(Trigger):
    """One hist trigger on one event file (the kernel's event_trigger_data
    with its hist_trigger_data): its spec, its map (a named one's is
    shared), paused or not, its filter (the trigger framework's).  ``run``
    runs in the traced thread, on each hit its filter passes."""
    __slots__ = ("spec", "map", "_keys", "_vals", "_execname", "_plans", "_simple", "refs", "actions")

    def __init__(self, command: TriggerCommand, file: Triggered, spec: HistSpec,
                 shared_map: TracingMap | None = None) -> None:
        super().__init__(command, file)
        self.spec = spec
        self.paused = spec.pause
        self.map = shared_map if shared_map is not None else TracingMap(spec.map_bits, len(spec.vals))
        self._keys = tuple(spec.keys)
        self._vals = tuple(spec.vals)
        self._execname = any(f.flag == "execname" for f in spec.keys)
        self._simple = spec.simple()
        self.refs: list[RefSlot] = []            # the variables it reads (resolve)
        self.actions = list(spec.actions)
        # Per probed code (``$args`` names differ by code): how each key and
        # value is read from a hit's values, worked out once (see _plan).
        self._plans: dict[CodeType | None, tuple[tuple[Reader, ...], tuple[ValReader, ...]]] = {}

    # -- the hit (in the traced thread, on every hit: flat, no dict per hit)
    def run(self, hit: Hit) -> None:
        """One event (``event_hist_trigger``): its key and values into the map."""
        if not self._simple:
            self.run_vars(hit.fields.get, hit.frame)
            return
        plan = self._plans.get(hit.code)
        if plan is None:
            if getattr(self.file, "event", None) is None:      # (no names per code: by name)
                self.hit(hit.fields.get, hit.frame)
                return
            plan = self._plan(hit.code)
        keys, vals = plan
        values = hit.values
        frame = hit.frame
        self.map.insert(tuple([values[r] if type(r) is int else r(values, frame)  # type: ignore[operator]
                               for r in keys]),
                        [r(values, frame) for r in vals],
                        pythreads.comm if self._execname else None)

    def _plan(self, code: CodeType | None) -> tuple[tuple[Reader, ...], tuple[ValReader, ...]]:
        """How each key and value is read from a hit's values: the field's
        index when it is used as fetched (a key), else a function of
        (values, frame)."""
        names = self.file.event.field_names(code)      # type: ignore[attr-defined]  # (run checked)
        index = {name: i for i, name in enumerate(names)}
        at_offset = bool(getattr(self.file, "at_offset", False))
        plan = (tuple(_reader(f, index.get(f.name), at_offset) for f in self._keys),
                tuple(_val_reader(f, index.get(f.name)) for f in self._vals))
        self._plans[code] = plan
        return plan

    def run_vars(self, get: Callable[[str], object], frame: FrameType | None) -> None:
        """One event of a hist with variables, references, expressions or
        actions (``event_hist_trigger``): the variables of other hists it
        reads, for its key (not set: the event is dropped; read once: unset
        by the read), then its entry and its own variables, then its
        actions once the variables it reads of its own are set."""
        spec = self.spec
        ts = 0
        if spec.timestamps:
            ts = _now_ns() // 1000 if spec.usecs else _now_ns()
        env = Env(get, frame, ts)
        key = tuple([_stack_key(frame) if f.kind == "stacktrace" else _hashable(evaluate(f, env))
                     for f in self._keys])
        refs = self.refs
        if refs:
            refvals = env.refvals = [0] * len(refs)
            for i, r in enumerate(refs):
                if r.owner is not self:
                    v = var_read(r.owner.map, key, r.name, r.read_once)
                    if v is None:
                        return
                    refvals[i] = v
        if not self.map.insert(key, [1 if f.kind == "hitcount" else _number(evaluate(f, env))
                                     for f in self._vals],
                               pythreads.comm if self._execname else None):
            return
        if spec.vars:
            vars_set(self.map, key, {f.var_name: evaluate(f, env) for f in spec.vars})  # type: ignore[misc]
        if not self.actions:
            return
        for i, r in enumerate(refs):
            if r.owner is self:
                v = var_read(self.map, key, r.name, False)
                if v is None:
                    return
                env.refvals[i] = v
        for a in self.actions:
            hist_actions.run(a, self, key, env)

    def hit(self, get: Callable[[str], object], frame: FrameType | None) -> None:
        """One event whose fields ``get(name)`` gives: an event file that is
        not a probe event's (its fields by name, ``Hit.fields``)."""
        if not self._simple:
            self.run_vars(get, frame)
            return
        key = tuple([_key_value(f, get, frame) for f in self._keys])
        vals = [1 if f.kind == "hitcount" else _number(_value(f, get)) for f in self._vals]
        self.map.insert(key, vals, pythreads.comm if self._execname else None)

    def same(self, other: Trigger) -> bool:
        """``hist_trigger_match``: the same keys, values, sort, filter and name."""
        return isinstance(other, HistTrigger) and other.spec.identity() == self.spec.identity()

    def text(self) -> str:
        return self.info()

    def freed(self) -> None:
        if self in HIST_VARS:
            HIST_VARS.remove(self)
        hist_actions.hold(self.actions, False)
        name = self.spec.name
        if name is not None and self in NAMED.get(name, []):
            NAMED[name].remove(self)
            if not NAMED[name]:
                del NAMED[name]

    # -- reading
    def info(self) -> str:
        """The trigger as the ``trigger`` file and the hist header show it
        (``event_hist_trigger_print``), newline included."""
        s = self.spec
        text = HIST_PREFIX + (f"{s.name}:" if s.name else "") + "keys="
        text += ",".join(f.printed() for f in s.keys)
        vals = [] if s.no_hitcount else ["hitcount"]
        vals += [f.printed() for f in s.vals[1:]]
        text += ":vals=" + ",".join(vals)
        if s.vars:
            text += ":" + ",".join(f.printed() for f in s.vars)
        sorts = []
        for idx, descending in s.sort:
            f = s.vals[idx] if idx < len(s.vals) else s.keys[idx - len(s.vals)]
            sorts.append((f.printed() if idx else "hitcount") + (".descending" if descending else ""))
        text += ":sort=" + ",".join(sorts) + f":size={1 << self.map.map_bits}"
        if s.timestamps:
            text += ":clock=global"
        text += "".join(a.spec() for a in self.actions)
        if s.filter_text:
            text += f" if {s.filter_text}"
        return text + (" [paused]" if self.paused else " [active]") + "\n"

    def show(self) -> str:
        """This trigger's part of the ``hist`` file (``hist_trigger_show``)."""
        entries, hits, drops = self.map.read()
        comms = dict(self.map.private)
        entries.sort(key=lambda kv: _sortable(kv[0]))        # ties: in key order
        for idx, descending in reversed(self.spec.sort):
            if idx < len(self.spec.vals):
                entries.sort(key=lambda kv, i=idx: kv[1][i], reverse=descending)  # type: ignore[misc]
            else:
                k = idx - len(self.spec.vals)
                entries.sort(key=lambda kv, k=k: _sortable(kv[0][k:k + 1]),  # type: ignore[misc]
                             reverse=descending)
        stats = [(sum(v[i] for _, v in entries), max((v[i] for _, v in entries), default=0))
                 for i in range(len(self.spec.vals))]
        out = ["# event histogram\n#\n# trigger info: ", self.info(), "#\n\n"]
        for key, sums in entries:
            out.append(self._entry(key, sums, comms.get(key), stats))
        if self.actions:
            out.append(hist_actions.snapshot_text(self, self._key_text))
        out.append(f"\nTotals:\n    Hits: {hits}\n    Entries: {len(entries)}\n    Dropped: {drops}\n")
        return "".join(out)

    def _key_text(self, key: tuple[object, ...], comm: object) -> str:
        """``hist_trigger_print_key``."""
        return self._entry(key, None, comm, [])

    def _entry(self, key: tuple[object, ...], sums: list[int] | None, comm: object,
               stats: list[tuple[int, int]]) -> str:
        parts = []
        multiline = False
        for f, v in zip(self.spec.keys, key):
            if f.kind == "stacktrace":
                parts.append("stacktrace:\n" + "".join(f"{' ' * 9}{frame}\n" for frame in v))  # type: ignore[attr-defined]
                multiline = True
            else:
                parts.append(_key_text(f, v, comm))
        line = "{ " + ", ".join(parts) + ("" if multiline else " ") + "}"
        if sums is None:
            return line
        if not self.spec.no_hitcount:
            line += f" hitcount: {sums[0]:10d}"
        for i, f in enumerate(self.spec.vals[1:], start=1):
            if f.kind == "expr":
                continue            # (hist_trigger_entry_print skips expressions)
            name = "hitcount" if f.kind == "hitcount" else f.name
            line += " " + _val_text(name, f.flag, sums[i], stats[i])
        if self.actions:
            line += hist_actions.entry_text(self, key)
        return line + "\n"


# How a key is read from a hit: an index into its values, or a function;
# how a value is (a number: always a function).
Reader = int | Callable[[tuple[object, ...], FrameType | None], object]
ValReader = Callable[[tuple[object, ...], FrameType | None], int]


def _one(values: tuple[object, ...], frame: FrameType | None) -> int:
    return 1


def _stack_reader(values: tuple[object, ...], frame: FrameType | None) -> object:
    return _stack_key(frame)


def _ip_reader(name: str, at_offset: bool) -> Reader:
    """The reader of a location field: (code, offset) of the probed frame
    (``__probe_ip``: where it hit; ``__probe_func``: its function) or of its
    caller's call (``__probe_ret_ip``: a return probe's return address)."""
    if name == "__probe_ret_ip":
        def read(values: tuple[object, ...], frame: FrameType | None) -> object:
            caller = frame.f_back if frame is not None else None
            return (caller.f_code, call_site(caller.f_code, caller.f_lasti)) if caller is not None else 0
    else:
        def read(values: tuple[object, ...], frame: FrameType | None) -> object:
            if frame is None:
                return 0
            return (frame.f_code, frame.f_lasti if at_offset and name == "__probe_ip" else 0)
    return read


def _reader(f: HistField, i: int | None, at_offset: bool = False) -> Reader:
    """The reader of key ``f``, the hit's value ``i`` (None: a common field)."""
    if f.kind == "stacktrace":
        return _stack_reader
    if f.kind == "ip":
        return _ip_reader(f.name, at_offset)
    if i is not None and f.kind == "field" and f.flag not in ("log2", "buckets"):
        return i

    def read(values: tuple[object, ...], frame: FrameType | None) -> object:
        return _hashable(_value(f, _common_get if i is None else lambda name: values[i]))
    return read


def _val_reader(f: HistField, i: int | None) -> ValReader:
    """The reader of value ``f``, the hit's value ``i`` (None: a common field)."""
    if f.kind == "hitcount":
        return _one
    if i is not None and f.kind == "field" and f.flag not in ("log2", "buckets"):
        return lambda values, frame: _number(values[i])

    def read(values: tuple[object, ...], frame: FrameType | None) -> int:
        return _number(_value(f, _common_get if i is None else lambda name: values[i]))
    return read


def _common_get(name: str) -> object:
    """A field the event does not have: a common one."""
    if name == "common_pid":
        return _thread.get_native_id()
    if name in ("comm", "COMM"):
        return pythreads.comm()
    return 0


def _number(v: object) -> int:
    """A value summed: an int as it is, a float truncated, anything else 0."""
    if type(v) is int:
        return v
    if isinstance(v, (int, float)):
        return int(v)
    return 0


def _value(f: HistField, get: Callable[[str], object]) -> object:
    """A field's value in this event, as its modifier makes it (hist_fn_call)."""
    if f.kind == "timestamp":
        ns = _now_ns()
        return ns // 1000 if f.flag == "usecs" else ns
    if f.kind == "cpu":
        return 0            # (threads have no CPU: the trace's CPU column is 000 too)
    v = get(f.name)
    if f.flag == "log2":    # ilog2(roundup_pow_of_two(v)), 0 for 0 and 1
        n = _number(v) & U64
        return (n - 1).bit_length() if n > 1 else 0
    if f.flag == "buckets":
        return ((_number(v) & U64) // f.buckets) * f.buckets
    return v


def _key_value(f: HistField, get: Callable[[str], object], frame: FrameType | None) -> object:
    if f.kind == "stacktrace":
        return _stack_key(frame)
    return _hashable(_value(f, get))


def _hashable(v: object) -> object:
    if type(v) in (int, str, bool, float, tuple, type(None)) or type(v) is CodeType:
        return v
    return str(v)           # (a value kept as its text; always hashable)


def _stack_key(frame: FrameType | None) -> tuple[str, ...]:
    """The Python stack, innermost first, fentry's frames left out: at most
    16 frames, each ``FUNC+OFFSET (FILE:LINE)``."""
    out: list[str] = []
    while frame is not None and len(out) < STACKTRACE_DEPTH:
        code = frame.f_code
        if not code.co_filename.startswith(FENTRY_DIR):
            out.append(f"{code.co_qualname}+{frame.f_lasti} "
                       f"({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        frame = frame.f_back
    return tuple(out)


def _sortable(v: object) -> Any:
    """A key made comparable across types (numbers before text)."""
    if type(v) is tuple:
        return tuple(_sortable(x) for x in v)
    if isinstance(v, (int, float)):
        return (0, v, "")
    return (1, 0, str(v))


def _symbol(v: object) -> str:
    """``%ps`` of a value: a code object's name; a number no symbol has, as the kernel's, in hex."""
    if type(v) is CodeType:
        return v.co_qualname
    if isinstance(v, int):
        return f"0x{v & U64:x}"
    return str(v)


def _key_text(f: HistField, v: object, comm: object) -> str:
    """One key as ``hist_trigger_print_key`` prints it."""
    name = f.name
    if f.kind == "ip" and type(v) is tuple:
        return _ip_text(f, v)
    if f.flag == "hex" and isinstance(v, int):
        return f"{name}: {v & U64:x}"
    if f.flag in ("sym", "sym-offset"):
        addr = v & U64 if isinstance(v, int) else id(v)
        return f"{name}: [{addr:x}] {_symbol(v):<{45 if f.flag == 'sym' else 55}}"
    if f.flag == "execname":
        return f"{name}: {comm!s:<16}[{_number(v) & U64:10d}]"
    if f.flag == "log2":
        return f"{name}: ~ 2^{v:<2d}"
    if f.flag == "buckets":
        return f"{name}: ~ {v}-{v + f.buckets - 1}"      # type: ignore[operator]
    if isinstance(v, int):      # (a u64, as the kernel's %10llu: -1 is 18446744073709551615)
        return f"{name}: {v & U64:10d}"
    return f"{name}: {v!s:<50}"


def _ip_text(f: HistField, v: tuple[Any, ...]) -> str:
    """A location key: with .sym its function, with .sym-offset and the
    offset in it and its size (%pS's FUNC+0xOFF/0xSIZE); else its "address"."""
    code, offset = v
    addr = id(code) + offset
    if f.flag == "sym":
        return f"{f.name}: [{addr:x}] {code.co_qualname:<45}"
    if f.flag == "sym-offset":
        where = f"{code.co_qualname}+{offset:#x}/{len(code.co_code):#x}"
        return f"{f.name}: [{addr:x}] {where:<55}"
    if f.flag == "hex":
        return f"{f.name}: {addr:x}"
    return f"{f.name}: {addr:10d}"


def _percentage(val: int, total: int) -> int | None:
    """100 times the percentage (the kernel's __get_percentage); None: no total."""
    if not total:
        return None if val else 0
    return val * 10000 // total


def _val_text(name: str, flag: str | None, val: int, stat: tuple[int, int]) -> str:
    """One value as ``hist_trigger_print_val`` prints it."""
    total, most = stat
    if flag == "percent":
        pc = _percentage(val, total)
        return f" {name} (%):[ERROR]" if pc is None else f" {name} (%): {pc // 100:3d}.{pc % 100:02d}"
    if flag == "graph":
        pc = _percentage(val, most)
        bar = "[ERROR]" if pc is None else "#" * min(pc * BAR_WIDTH // 10000, BAR_WIDTH)
        return f" {name}: {bar:<{BAR_WIDTH}}"
    if flag == "hex":
        return f" {name}: {val & U64:10x}"
    return f" {name}: {val & U64:10d}"


# Named hist triggers (``name=``), the process's, as the kernel's
# named_triggers list: name -> the triggers that share one map.
NAMED: dict[str, list[HistTrigger]] = {}


def hist_triggers(file: Triggered) -> list[HistTrigger]:
    """The event's hist triggers, in the order they were made."""
    return [t for t in file.triggers if isinstance(t, HistTrigger)]


def hist_text(file: Triggered) -> str:
    """The event's ``hist`` file (``hist_show``)."""
    return "\n\n".join(t.show() for t in hist_triggers(file))


def hist_fields(file: Triggered) -> dict[str, str]:
    """What a hist on ``file`` can name: its fields (name -> "num" or "str")
    and the common ones.  A probe event's file has them from its event;
    another kind of event file gives them with a ``field_kinds()`` of its own."""
    source = getattr(file, "field_kinds", None) or getattr(getattr(file, "event", None),
                                                          "field_kinds", None)
    kinds: dict[str, str] = source() if source is not None else {}
    event: Any = getattr(file, "event", None)
    defn = getattr(event, "defn", None)
    if defn is not None:        # a probe event's location fields, as its format has them
        ips = ("__probe_func", "__probe_ret_ip") if defn.is_return else ("__probe_ip",)
        kinds = {**dict.fromkeys(ips, "num"), **kinds}
        if any(a.kind == "args" for a in defn.args) and event.symbol_name is not None:
            # $args: the parameters of the function probed, as loaded now
            module, _, qualname = event.symbol_name.partition(":")
            for sym in SYMBOLS.named(qualname, module):
                kinds = {**dict.fromkeys(event.field_names(sym.code), "num"), **kinds}
    return {**COMMON_HIST_FIELDS, **kinds}


def _logged(e: TraceError, ctx: TriggerContext) -> TraceError:
    if getattr(e, "logged", True):
        ctx.log(e)
    return e


def hist_parse(command: TriggerCommand, file: Triggered, glob: str, param: Param,
               ctx: TriggerContext) -> None:
    """``hist:...`` / ``!hist:...`` written to ``file``'s trigger file
    (``event_hist_trigger_parse``).  A refused command changes nothing."""
    text = param.text or ""
    location = f"hist:{file.group}:{file.name}"
    try:
        spec = parse_hist(text, hist_fields(file), location)
    except TraceError as e:
        raise _logged(e, ctx) from None
    shared = None
    if spec.name is not None and NAMED.get(spec.name):
        other = NAMED[spec.name][0]
        if other.spec.identity()[:3] != spec.identity()[:3]:
            raise _logged(TraceError("HIST_ERR_NAMED_MISMATCH", HIST_PREFIX + text,
                                     len(HIST_PREFIX) + text.find(spec.name), subsystem=location), ctx)
        shared = other.map
    trigger = HistTrigger(command, file, spec, shared)
    if spec.filter_text is not None:
        at = text.rfind(spec.filter_text)
        set_filter(trigger, "if " + spec.filter_text, param.pos + max(at - 3, 0), ctx)
    if glob.startswith("!"):
        there = next((t for t in hist_triggers(file) if t.same(trigger)), None)
        if there is not None and referenced(there):
            raise busy(HIST_PREFIX + text, location)
        file.unregister_trigger(trigger)        # (none that matches: no error, as the kernel's)
        return
    match = next((t for t in hist_triggers(file) if t.same(trigger)), None)
    if match is not None and (spec.pause or spec.cont or spec.clear):
        if spec.clear:
            match.map.clear()
        else:
            match.paused = spec.pause
        return
    if match is not None:
        raise _logged(TraceError("HIST_ERR_TRIGGER_EEXIST", HIST_PREFIX + text, 0,
                                 subsystem=location), ctx)
    if spec.cont or spec.clear:
        raise _logged(TraceError("HIST_ERR_TRIGGER_ENOENT_CLEAR", HIST_PREFIX + text, 0,
                                 subsystem=location), ctx)
    try:
        _resolve(trigger, ctx, _Parse(text, location))
    except TraceError as e:
        raise _logged(e, ctx) from None
    file.register_trigger(trigger, ctx)
    hist_actions.hold(trigger.actions, True)
    if spec.vars or trigger.refs:
        HIST_VARS.append(trigger)
    # The kernel's hist_trigger_enable adds a hist at the tail of the list.
    file.triggers = tuple(t for t in file.triggers if t is not trigger) + (trigger,)
    if spec.name is not None:
        NAMED.setdefault(spec.name, []).append(trigger)


def _resolve(trigger: HistTrigger, ctx: TriggerContext, p: _Parse) -> None:
    """What a new hist reads of the instance (``create_hist_fields``'
    references, ``create_actions``): the variables it names, the events of
    its ``onmatch()``, the synthetic events it fires."""
    spec = trigger.spec
    file = trigger.file
    matches = [a.match for a in spec.actions if a.handler == "onmatch"]
    for a in spec.actions:
        if a.handler == "onmatch" and ctx.find(*a.match) is None:
            raise p.err("HIST_ERR_INVALID_SUBSYS_EVENT", a.match[1])
    for v in spec.vars:
        if any(own_var(t, v.var_name or "") is not None for t in hist_triggers(file)):
            raise p.err("HIST_ERR_DUPLICATE_VAR", v.var_name)
    slots: list[RefSlot] = []
    for f in spec.vals + spec.vars:
        for x in walk(f):
            if x.kind == "ref":
                resolve_ref(x, trigger, ctx, matches, slots, p)
        resolve_usecs(f)
        check_timestamps(f, p)
    for k in spec.keys:
        check_timestamps(k, p)
    for v in spec.vars:
        v.ftype = field_type(v, spec.kinds)
    trigger.refs = slots
    for a in trigger.actions:
        hist_actions.create(a, trigger, ctx, spec.kinds, slots, matches, p)


def hist_unreg_all(file: Triggered) -> None:
    """Every hist trigger off ``file`` (a ``>`` write to its trigger file);
    none if another hist reads a variable of one (``hist_file_check_refs``)."""
    if any(referenced(t) for t in hist_triggers(file)):
        return
    for t in hist_triggers(file):
        file.unregister_trigger(t)


class HistEnable(EventEnable):
    """``enable_hist:GRP:EVENT`` / ``disable_hist:GRP:EVENT``: the hist
    triggers of the named event continue, or pause (``hist_enable_trigger``)."""
    __slots__ = ()

    def take(self, hit: Hit) -> bool:
        return Trigger.take(self, hit)      # (counted every firing, as hist_enable_count_trigger)

    def run(self, hit: Hit) -> None:
        for t in hist_triggers(self.target):
            t.paused = not self.enable


def hist_enable_unreg_all(file: Triggered) -> None:
    """Every enable_hist and disable_hist off ``file`` (a ``>`` write, as the kernel's)."""
    for t in file.triggers:
        if isinstance(t, HistEnable):
            file.unregister_trigger(t)


for _name in ("enable_hist", "disable_hist"):
    _command = event_enable_command(_name, ETT_HIST_ENABLE, HistEnable)
    _command.unreg_all = hist_enable_unreg_all
    register_trigger_command(_command)
register_trigger_command(TriggerCommand("hist", ETT_EVENT_HIST, hist_parse, needs_rec=True,
                                        unreg_all=hist_unreg_all))


_ATTR_WORDS = ("pause", "cont", "continue", "clear", "nohitcount", "NOHC")


def split_hist_option(text: str) -> tuple[str | None, str, str]:
    """``fentry run --hist [GRP:|GRP/]EVENT:[hist:]KEYS...``: (group or None,
    event, the trigger after ``hist:``).  The event's words are those before
    the first with ``=`` (or a bare attribute such as ``pause``)."""
    words = text.split(":")
    i = next((i for i, w in enumerate(words) if "=" in w or w in _ATTR_WORDS or w == "hist"),
             len(words))
    event = words[:i]
    rest = words[i:]
    if rest and rest[0] == "hist":
        rest = rest[1:]
    if len(event) == 1 and "/" in event[0]:
        event = event[0].split("/", 1)
    if not rest or not 1 <= len(event) <= 2 or not all(event):
        raise TraceError("HIST_BAD_OPTION", text, 0, subsystem="fentry --hist")
    group = event[0] if len(event) == 2 else None
    return group, event[-1], ":".join(rest)
