"""trace_eprobe: event probes, as the kernel's ``trace_eprobe.c``::

    e[:[GRP/][EVENT]] SYSTEM.EVENT [FETCHARGS] [if FILTER]

An eprobe is an event made of another event's fields: ``$FIELD`` (with the
fetcharg types, and attribute and item steps), ``$comm`` and immediates.
Its default group is ``eprobes``, its default name the attached event's.

As the kernel's, it works through the attached event: enabling the eprobe in
an instance attaches a hook to the attached event's file there (the
kernel's EVENT_TRIGGER_FL_PROBE trigger), which arms that event in soft mode
if it is not enabled itself: its hits then run the eprobe and record nothing
of their own.  The hook runs on every hit of the attached event, before that
event's own filter; the definition's ``if FILTER`` (on the attached event's
fields) decides whether the eprobe fires, and the eprobe's own ``filter``
file whether it records.

The kernel attaches eprobes to static events (not kprobes or other
eprobes); fentry attaches them to Python's tracepoints (``e python.raise
$type``, ``gc.gc_done``, ``audit.open``), whose fields are kept as the
tracepoint records them, and to kprobe and fprobe events (not to eprobes).
Reading ``dynamic_events`` shows no ``if FILTER``, as the kernel's
eprobe_dyn_event_show.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import TraceError
from .fetch import FAULT, convert, fetch, get_attr, get_item, snapshot
from .filter import Filter
from .probe_parser import (
    FetchArg,
    _Log,
    _name_end,
    _parse_event_name,
    _parse_fetchargs,
    _split_argv,
    log_command,
)
from .trace_kprobe import EventFile, ProbeEvent, ProbeEvents, compile_event_filter
from .tracepoint_format import value_text
from .tracepoints import Tracepoint, compile_tracepoint_filter

if TYPE_CHECKING:
    from ..tracers.trace import TraceInstance

__all__ = ["EPROBE_EVENT_SYSTEM", "EprobeDefinition", "EprobeEvent", "create_eprobe", "parse_eprobe"]

EPROBE_EVENT_SYSTEM = "eprobes"
_OFFSET = re.compile(r"\toffset:(\d+);")
_ARGS_AT, _IP_SIZE = 16, 8     # a probe event's fields start after its 8-byte __probe_ip
SUBSYSTEM = "event_probe"


class _AnyField(frozenset):         # type: ignore[type-arg]
    """Every name is a field: a reader outside the process parses what the
    traced process checked."""
    def __contains__(self, name: object) -> bool:
        return True


ANY_FIELD = _AnyField()


class EprobeDefinition(namedtuple("EprobeDefinition", "group event system name args written filter")):
    """A parsed ``e`` line: the attached event (``system``.``name``), the
    fetchargs (kind ``field`` for ``$FIELD``), and the ``if`` filter's text
    (None: none)."""
    __slots__ = ()
    dyn_type = "eprobe"
    is_return = False
    offset = 0
    path = None
    symbol = None
    kind = "eprobe"

    @property
    def location(self) -> str:
        return f"{self.system}.{self.name}"

    def words(self) -> list[str]:
        """What reading ``dynamic_events`` shows, word by word."""
        return [f"e:{self.group}/{self.event}", self.location,
                *(f"{a.name}={w}" for a, w in zip(self.args, self.written, strict=True))]

    def match_head(self, point: str) -> bool:
        """A removal's ``SYSTEM/EVENT`` or ``SYSTEM.EVENT``, as eprobe_dyn_event_match."""
        slash = point.find("/")
        if slash < 0:
            slash = point.find(".")
        return slash >= 0 and point[:slash] == self.system and point[slash + 1:] == self.name


def parse_eprobe(line: str, fields_of: Callable[[str, str], frozenset[str] | None]
                 ) -> EprobeDefinition:
    """Parse one ``e`` line (the kernel's __trace_eprobe_create, in its
    order).  ``fields_of(system, event)``: the attached event's field names,
    None if there is no such event.  The ``if`` filter is checked by the caller."""
    argv = _split_argv(line)
    log = _Log(argv, SUBSYSTEM)
    head = argv[0]
    group, event = EPROBE_EVENT_SYSTEM, None
    colon = head.find(":", 1)
    if colon >= 0:
        given, event = _parse_event_name(head[colon + 1:], colon + 1, log)
        group = given or EPROBE_EVENT_SYSTEM
    log.index = 1
    sep = argv[1].find("/")
    if sep < 0:
        sep = argv[1].find(".")
    system, name = argv[1][:sep], argv[1][sep + 1:]
    if sep <= 0 or not name:
        log.err(0, "NO_EVENT_INFO")
    words = argv[2:]
    filter_text = None
    if "if" in words:
        at = words.index("if")
        filter_text = " ".join(words[at + 1:])
        if not filter_text:
            log.index = len(argv)
            log.err(0, "NO_EP_FILTER")
        words = words[:at]
    fields = fields_of(system, name)
    if fields is None:
        log.err(0, "BAD_ATTACH_EVENT")
    args = _parse_fetchargs(argv[:2] + words, log, False, fields)
    return EprobeDefinition(group=group, event=event or name, system=system, name=name, args=args,
                            written=tuple(w[_name_end(w) + 1:] for w in words),
                            filter=filter_text)


class EprobeEvent(ProbeEvent):
    """An eprobe: a ``ProbeEvent`` whose hits come from the event it is
    attached to (``source``: a probe event or a tracepoint), which it holds
    a reference on while defined."""

    source: Any         # ProbeEvent | Tracepoint

    def __init__(self, defn: Any, events: ProbeEvents, event_id: int,
                 source: ProbeEvent | Tracepoint, condition: Filter | None) -> None:
        super().__init__(defn, events, event_id)
        self.source = source
        self.condition = condition      # the definition's ``if FILTER``, on the source's fields
        # A tracepoint's field that is not a number or a str is filtered as its text.
        self.cooked = isinstance(source, Tracepoint)
        source.refs += 1

    def release(self) -> None:
        self.source.refs -= 1

    def _new_file(self, instance: TraceInstance) -> EventFile:
        return EprobeFile(self, instance)

    def format_text(self) -> str:
        """The ``format`` file, as the kernel's: the common fields, then the
        eprobe's (its record head has no ``__probe_ip``), and a print fmt
        of its fields alone (PROBE_PRINT_EVENT)."""
        out = []
        for line in super().format_text().split("\n"):
            if "__probe_ip;" in line:
                continue
            m = _OFFSET.search(line)
            if m and int(m.group(1)) >= _ARGS_AT:
                line = line[:m.start(1)] + str(int(m.group(1)) - _IP_SIZE) + line[m.end(1):]
            if line.startswith("print fmt: "):
                line = line.replace('"(%lx)', '"', 1).replace(", REC->__probe_ip", "", 1)
            out.append(line)
        return "\n".join(out)


class EprobeFile(EventFile):
    """An eprobe in one instance: while enabled, a hook on its source's file there."""

    def __init__(self, event: EprobeEvent, instance: TraceInstance) -> None:
        super().__init__(event, instance)
        self.source_file: EventFile | None = None

    @property
    def enabled(self) -> bool:
        return self.source_file is not None

    def enable(self) -> None:
        if self.source_file is not None:
            return
        source = self.event.source
        assert source is not None           # (an eprobe's event has one)
        f = source.file(self.instance)
        f.attach_hook(self._fire)
        self.source_file = f
        self.rearm()

    def disable(self) -> None:
        if self.source_file is not None:
            self.source_file.detach_hook(self._fire)
            self.source_file = None

    def rearm(self) -> None:
        """In or out of soft mode (its own triggers: a hist on it): which
        record its hits make, as ``EventFile._arm_triggers`` chooses."""
        self._record = self._record_triggered if self.sm_ref else self._record_event

    # -- the hit: the source's, on every hit of it (runs in the traced thread)
    def _fire(self, site: tuple[Any, ...], values: tuple[object, ...], frame: FrameType) -> None:
        """The source event fired with ``values``: fetch this event's fields from them."""
        event: EprobeEvent = self.event         # type: ignore[assignment]
        code = site[2] if len(site) == 4 else site[0]
        fields = dict(zip(event.source.field_names(code), values))
        if event.condition is not None and not event.condition.matches(
                _cooked(fields) if event.cooked else fields):
            return
        self._nhit += 1
        out = tuple(_field_value(a, fields, frame) for a in event.defn.args)
        # Where the source fired (a return's probed function): an event record's site.
        self._record((code, 0 if len(site) == 4 else site[1]), out, frame)


def _cooked(fields: dict[str, object]) -> dict[str, object]:
    return {k: v if type(v) is int or type(v) is str else value_text(v) for k, v in fields.items()}


def _field_value(arg: FetchArg, fields: dict[str, object], frame: FrameType) -> object:
    """A fetcharg's stored value, from the source's stored fields."""
    try:
        if arg.kind == "field":
            value = fields[arg.root]
            if value is FAULT:
                return FAULT
            for step in arg.path:
                value = get_attr(value, step.key) if step.op == "attr" else get_item(value, step.key)
        else:                           # $comm, an immediate
            value = fetch(arg, frame)
        return convert(value, arg.type, arg.array_len) if arg.type is not None else snapshot(value)
    except Exception:
        return FAULT


def create_eprobe(probes: ProbeEvents, line: str) -> None:
    """Define the eprobe of an ``e`` line (the caller holds the lock)."""
    command = log_command(line)

    def find(system: str, name: str) -> ProbeEvent | Tracepoint | None:
        points = probes.tracepoints
        return probes.find(system, name) or (points.find(system, name) if points else None)

    def fields_of(system: str, name: str) -> frozenset[str] | None:
        source = find(system, name)
        if source is None or isinstance(source, EprobeEvent):
            return None
        if isinstance(source, Tracepoint):
            return frozenset(source.fields)
        return frozenset(a.name for a in source.defn.args if a.kind != "args")

    try:
        defn = parse_eprobe(line, fields_of)
        source = find(defn.system, defn.name)
        assert source is not None
        condition = None
        if defn.filter is not None:
            try:
                condition = compile_tracepoint_filter(defn.filter, source) \
                    if isinstance(source, Tracepoint) else compile_event_filter(defn.filter, source.defn.args)
            except TraceError as e:     # as the kernel's create_event_filter reports it
                e.subsystem = "event filter parse error"
                raise
        if (defn.group, defn.event) in probes.events:
            raise TraceError("EVENT_EXIST", command, 0, subsystem=SUBSYSTEM)
    except TraceError as e:
        probes._fail(e)
    probes.insert(EprobeEvent(defn, probes, probes.next_id(), source, condition), line)
