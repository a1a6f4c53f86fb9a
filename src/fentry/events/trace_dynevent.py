"""trace_dynevent: ``dynamic_events``, as the kernel's ``trace_dynevent.c``.

The one file for every kind of dynamic event, each kind known by the first
letter of its line::

    p, r    probe events (trace_kprobe: what kprobe_events takes)
    f       fprobe events (trace_fprobe)
    t       tracepoint probe events (trace_tprobe: trace_fprobe.c's ``t``)
    e       eprobe events (trace_eprobe)
    s       synthetic events (trace_synth: among the tracepoints, not ProbeEvents)
    -       removal: -:[GRP/][EVENT] [POINT [FETCHARGS]], of any kind

A kind is one row of ``DYN_EVENT_KINDS`` (the kernel's
``dyn_event_register``): how a line of it is defined in the process, and
how a reader outside it (which resolves nothing) parses the line as reading
``dynamic_events`` shows it.  All kinds but ``s`` share one registry,
``ProbeEvents``: ``kprobe_events`` shows and clears the ``p``/``r`` ones
only, ``dynamic_events`` all of them.  ``s`` lines go to ``SynthEvents``
(``DynamicEvents._apply``): synthetic events are files of the tracepoints'
registry, and shown after the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..errors import TraceError
from ..symbols import check_batch
from .probe_parser import ProbeDefinition, ProbeRemoval, log_command, parse_probe
from .synth_format import parse_synth_definition
from .trace_eprobe import ANY_FIELD, EprobeDefinition, create_eprobe, parse_eprobe
from .trace_fprobe import parse_fprobe, resolve_fprobe
from .trace_kprobe import ProbeEvents
from .trace_synth import SynthEvents
from .trace_tprobe import TprobeDefinition, create_tprobe, parse_tprobe

__all__ = ["DYN_EVENT_KINDS", "DynamicEvents", "DynEventKind", "parse_definition"]

Definition = ProbeDefinition | EprobeDefinition | TprobeDefinition


class DynEventKind(NamedTuple):
    """One kind of dynamic event: ``create(probes, line)`` defines the event
    of a line (raising a logged TraceError if it is bad); ``parse(line)``
    reads a line as ``dynamic_events`` shows it, resolving nothing."""
    create: Callable[[ProbeEvents, str], None]
    parse: Callable[[str], Definition]


def _create_kprobe(probes: ProbeEvents, line: str) -> None:
    probes._apply(line)


def _create_fprobe(probes: ProbeEvents, line: str) -> None:
    try:
        defn = parse_fprobe(line)
    except TraceError as e:
        probes._fail(e)
    probes.add(defn, line, refine=resolve_fprobe)


def _parse_kprobe(line: str) -> Definition:
    defn = parse_probe(line)
    if isinstance(defn, ProbeRemoval):
        raise TraceError("BAD_DYN_EVENT", line, 0)
    return defn


_KPROBE = DynEventKind(_create_kprobe, _parse_kprobe)
DYN_EVENT_KINDS: dict[str, DynEventKind] = {
    "p": _KPROBE,
    "r": _KPROBE,
    "f": DynEventKind(_create_fprobe, parse_fprobe),
    "t": DynEventKind(create_tprobe, lambda line: parse_tprobe(line, None)),
    "e": DynEventKind(create_eprobe, lambda line: parse_eprobe(line, lambda s, e: ANY_FIELD)),
}


def parse_definition(line: str) -> Definition:
    """A definition as reading ``dynamic_events`` shows it, of any kind, in a
    reader outside the traced process."""
    if line.lstrip().startswith("s:"):
        return parse_synth_definition(line)     # type: ignore[return-value]  # (its group, event, args)
    kind = DYN_EVENT_KINDS.get(line.lstrip()[:1])
    if kind is None:
        raise TraceError("BAD_DYN_EVENT", line, 0)
    return kind.parse(line)


class DynamicEvents:
    """The ``dynamic_events`` file, on the shared registry ``probes``."""

    def __init__(self, probes: ProbeEvents, synth: SynthEvents) -> None:
        self.probes = probes
        self.synth = synth

    def read(self) -> str:
        """Every dynamic event's definition, as its kind shows it."""
        return self.probes.definitions(None) + self.synth.definitions()

    def write(self, text: str, append: bool) -> None:
        """``>`` removes every dynamic event first (none if one is busy);
        then each line, in order (an error stops there, as in the kernel)."""
        probes = self.probes
        with probes.lock, check_batch():
            if not append:
                self.synth.check_release_all(text)
                probes.release_all(None, text)
                self.synth.release_all(text)
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    self._apply(line)

    def _apply(self, line: str) -> None:
        if line[0] == "-":
            if not self._remove_synth(line):
                self.probes._remove(line, None)
            return
        if line.startswith("s:"):
            self.synth.dyn_command(line)
            return
        kind = DYN_EVENT_KINDS.get(line[0])
        if kind is None:        # the kernel's -EINVAL, which no kind logs
            raise TraceError("BAD_DYN_EVENT", log_command(line), 0, subsystem="trace_dynevent")
        kind.create(self.probes, line)

    def _remove_synth(self, line: str) -> bool:
        """``-:synthetic/NAME`` or ``-:NAME`` of a synthetic event (synth_event_match:
        the name, and the group if given); False if it names none."""
        head = line[2:].split(None, 1)[0] if line.startswith("-:") and len(line) > 2 else ""
        group, _, name = head.rpartition("/")
        if group not in ("", "synthetic") or self.synth.find(name) is None:
            return False
        self.synth.remove(name, log_command(line))
        return True
