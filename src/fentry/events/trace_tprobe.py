"""trace_tprobe: tracepoint probe events, as the ``t`` lines of the kernel's
``trace_fprobe.c``::

    t[:[GRP/][EVENT]] TRACEPOINT [FETCHARGS]

A tprobe is a dynamic event on one of Python's tracepoints
(``events/tracepoints.py``).  As the kernel's, it names the tracepoint
bare, without its group (``t raise``, ``t gc_done``, ``t open``,
``t socket_connect``): a name is looked for in the ``python`` group, then
``gc``, then ``audit``; a ``:`` (``t python:raise``) is an invalid
character there, as in the kernel.  Its default group is ``tracepoints``,
its default name the tracepoint's (``_`` before one that starts with a
digit).

The tracepoint's arguments are its fields, known by name as BTF makes a
kernel tracepoint's known: ``$arg*`` expands into one ``NAME=NAME`` per
field, a field's name is a fetcharg (with attribute and item steps), and
``$argN`` is the Nth field; without a type, a field keeps the tracepoint's
(a number, or a string).  ``$comm``, immediates, ``@MOD:NAME`` and
``$stack`` are fetched in the frame the tracepoint fired in.  A tracepoint
has no return: ``%return`` and ``$retval`` are refused, as the kernel's.

It works as an eprobe on its tracepoint does (``trace_eprobe``: a hook on
the tracepoint's file in each instance it is enabled in, the tracepoint
armed in soft mode for it), and keeps a probe event's record head
(``__probe_ip``), printed as ``(TRACEPOINT)``.  Reading ``dynamic_events``
shows ``t:GRP/EVENT TRACEPOINT NAME=FETCHARG...``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable

from ..errors import TraceError
from .audit import AUDIT_FIELDS, event_name
from .probe_parser import (
    _NOT_EVENT_CHAR,
    MAX_EVENT_NAME_LEN,
    FetchArg,
    _Log,
    _name_end,
    _parse_event_name,
    _parse_fetchargs,
    _split_argv,
)
from .trace_eprobe import EprobeEvent
from .trace_fprobe import SUBSYSTEM, _name_args, find_retval, split_head
from .trace_kprobe import ProbeEvent, ProbeEvents
from .tracepoints import GC_EVENTS, NUM_FIELDS, PYTHON_EVENTS, TRACEPOINT_GROUPS

__all__ = ["TRACEPOINT_EVENT_SYSTEM", "TprobeDefinition", "create_tprobe", "parse_tprobe"]

TRACEPOINT_EVENT_SYSTEM = "tracepoints"

# A tracepoint's name -> (its group, its fields), or None: not one.
Lookup = Callable[[str], "tuple[str, tuple[str, ...]] | None"]


class TprobeDefinition(namedtuple("TprobeDefinition", "group event system name args written")):
    """A parsed ``t`` line: the tracepoint (``system``:``name``) and the
    fetchargs (kind ``field`` for one of its fields)."""
    __slots__ = ()
    dyn_type = "tprobe"
    is_return = False
    offset = 0
    path = None
    symbol = None
    kind = "tprobe"
    filter = None

    @property
    def location(self) -> str:
        return str(self.name)

    def words(self) -> list[str]:
        """What reading ``dynamic_events`` shows, word by word (trace_fprobe_show)."""
        return [f"t:{self.group}/{self.event}", self.name,
                *(f"{a.name}={w}" for a, w in zip(self.args, self.written, strict=True))]

    def match_head(self, point: str) -> bool:
        """A removal's point is the tracepoint's name (trace_fprobe_match_command_head)."""
        return bool(point == self.name)


def static_tracepoint(name: str) -> tuple[str, tuple[str, ...]] | None:
    """The tracepoint ``name`` as known without the traced process: the
    python and gc groups, and the audit events of CPython's table."""
    if name in PYTHON_EVENTS:
        return "python", PYTHON_EVENTS[name][1]
    if name in GC_EVENTS:
        return "gc", GC_EVENTS[name]
    return next((("audit", f) for raw, f in AUDIT_FIELDS.items() if event_name(raw) == name), None)


def parse_tprobe(line: str, lookup: Lookup | None) -> TprobeDefinition:
    """Parse one ``t`` line (the kernel's trace_fprobe_create, in its order).
    ``lookup``: the tracepoint of a name, in the traced process; None in a
    reader outside it, which resolves what the static tables know and
    leaves the rest as written."""
    argv, log, head, colon, maxactive = split_head(line)
    point = argv[1]
    pct = point.find("%")
    if pct >= 0:                        # no %return on a tracepoint
        log.err(pct, "BAD_ADDR_SUFFIX")
    for i, c in enumerate(point):
        if not (c.isascii() and (c.isalnum() or c == "_")):
            log.err(i, "BAD_TP_NAME")
    if (retval := find_retval(argv)) is not None:
        log.index = retval[0]
        log.err(retval[1], "RETVAL_ON_PROBE")
    log.index = 0
    if maxactive:                       # (a tracepoint is never a return)
        log.err(1, "BAD_MAXACT_TYPE")
    group, event = TRACEPOINT_EVENT_SYSTEM, None
    if colon >= 0:
        group_given, event = _parse_event_name(head[colon + 1:], colon + 1, log)
        group = group_given or TRACEPOINT_EVENT_SYSTEM
    if event is None:
        event = _NOT_EVENT_CHAR.sub("_", ("_" if point[:1].isdigit() else "") + point)
        event = event[:MAX_EVENT_NAME_LEN - 1]
    found = lookup(point) if lookup is not None else static_tracepoint(point)
    if found is None and lookup is not None:
        log.index = 1
        log.err(0, "NO_TRACEPOINT")
    args = _parse_fetchargs(argv, log, False)
    args, written = _name_args(args, argv[2:], log)
    system, fields = found if found is not None else ("audit", None)
    if fields is not None:
        args, written = _resolve(args, written, argv[2:], fields, system, log)
    return TprobeDefinition(group=group, event=event, system=system, name=point,
                            args=args, written=written)


def _resolve(args: tuple[FetchArg, ...], written: tuple[str, ...], words: list[str],
             fields: tuple[str, ...], system: str, log: _Log
             ) -> tuple[tuple[FetchArg, ...], tuple[str, ...]]:
    """The fetchargs on the tracepoint's ``fields``: ``$arg*`` expanded, a
    field's name or ``$argN`` its field, typed as the tracepoint's own
    unless a type is given (the kernel's BTF arguments)."""
    out: list[FetchArg] = []
    shown: list[str] = []
    names: set[str] = set()
    for i, (arg, text) in enumerate(zip(args, written, strict=True)):
        log.index = i + 2
        at = _name_end(words[i]) + 1
        if arg.kind == "args":
            if names & set(fields):
                log.err(0, "USED_ARG_NAME")
            names.update(fields)
            out.extend(FetchArg(name=f, kind="field", root=f, type=_field_type(f, system))
                       for f in fields)
            shown.extend(fields)
            continue
        if arg.name in names:           # (a field's name that $arg* gave already)
            log.err(0, "USED_ARG_NAME")
        names.add(arg.name)
        if arg.kind in ("local", "arg"):
            field = arg.root if arg.kind == "local" else \
                fields[arg.root - 1] if arg.root <= len(fields) else None
            if field not in fields:
                log.err(at, "NO_BTFARG")
            arg = arg._replace(kind="field", root=field,
                               type=arg.type if arg.type is not None or arg.path
                               else _field_type(str(field), system))
        out.append(arg)
        shown.append(text)
    return tuple(out), tuple(shown)


def _field_type(field: str, system: str) -> str | None:
    """A field's type, as the tracepoint's format has it (an audit argument: none)."""
    if system == "audit":
        return None
    return "s64" if field in NUM_FIELDS else "string"


class TprobeEvent(EprobeEvent):
    """A tprobe: an eprobe's hits (from its tracepoint), a probe event's record."""

    def format_text(self) -> str:
        return ProbeEvent.format_text(self)


def create_tprobe(probes: ProbeEvents, line: str) -> None:
    """Define the tprobe of a ``t`` line (the caller holds the lock)."""
    points = probes.tracepoints

    def lookup(name: str) -> tuple[str, tuple[str, ...]] | None:
        for group in TRACEPOINT_GROUPS:
            point = points.find(group, name) if points is not None else None
            if point is not None:
                return group, point.fields
        return None

    try:
        defn = parse_tprobe(line, lookup)
        if (defn.group, defn.event) in probes.events:
            raise TraceError("EVENT_EXIST", " ".join(_split_argv(line)), 0, subsystem=SUBSYSTEM)
    except TraceError as e:
        probes._fail(e)
    assert points is not None
    source = points.find(defn.system, defn.name)
    assert source is not None
    probes.insert(TprobeEvent(defn, probes, probes.next_id(), source, None), line)
