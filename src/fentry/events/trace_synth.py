"""trace_synth: synthetic events, as the kernel's ``trace_events_synth.c``.

A synthetic event is defined by a line written to ``synthetic_events``
(``NAME TYPE FIELD[; TYPE FIELD...]``, ``!NAME`` removes it) or to
``dynamic_events`` (``s:[synthetic/]NAME TYPE FIELD...``, ``-:synthetic/NAME``
removes it).  It is then an event like Python's tracepoints, in the
``synthetic`` group of every instance: ``events/synthetic/NAME/{enable,
filter,format,hist,id,trigger}``, in ``available_events`` and ``set_event``,
with filters, triggers and hists on its fields.  It has no source of its own:
it is fired, by a hist trigger's action (``onmatch(...).trace(NAME, ...)``),
through the API below::

    file = find_synth_event(tracefs, instance, "wakeup_latency")
    file.fields                     # [("u64", "lat"), ("pid_t", "pid")]
    file.fire((lat, pid), frame)    # recorded if enabled (or soft-enabled)

(``TriggerContext.find("synthetic", NAME)`` returns the same object.)  A
hist action that names an event holds it (``hold()``/``unhold()``, the
kernel's ``se->ref``): while held, or enabled, it cannot be removed (EBUSY).
"""

from __future__ import annotations

import _thread
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from ..errors import TraceError
from .synth_format import (
    SUBSYSTEM,
    SYNTH_SYSTEM,
    SynthField,
    SynthFormat,
    check_name,
    errpos,
    fields_text,
    first_space,
    is_command,
    parse_fields,
    split_dyn_command,
)
from .tracepoints import Source, Tracepoint, TracepointFile, Tracepoints

if TYPE_CHECKING:
    from ..control.tracefs import Tracefs
    from ..tracers.trace import TraceInstance
    from .trace_kprobe import ProbeEvents

__all__ = ["SynthEvent", "SynthEventFile", "SynthEvents", "find_synth_event"]


class SynthEvent(SynthFormat, Tracepoint):
    """One synthetic event: its fields, its format and id, and its file in
    each instance (a ``SynthEventFile``)."""

    def __init__(self, name: str, fields: Sequence[SynthField], event_id: int, source: Source) -> None:
        Tracepoint.__init__(self, SYNTH_SYSTEM, name, tuple(f.name for f in fields), event_id, source, name)
        self.synth_fields = tuple(fields)
        self.ref = 0            # hist actions that name it (the kernel's se->ref)
        self.nmissed = 0        # values that could not be stored

    def file(self, instance: TraceInstance) -> SynthEventFile:
        f = self.files.get(id(instance))
        if f is None:
            f = self.files[id(instance)] = SynthEventFile(self, instance)
        return f  # type: ignore[return-value]  # (only SynthEventFiles are made for it)

    def format_text(self) -> str:
        """The ``format`` file: the common fields, then a u64 slot each
        (a static string: STR_VAR_LEN_MAX bytes), as synth_event_define_fields."""
        lines = [f"name: {self.name}", f"ID: {self.id}", "format:",
                 "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;",
                 "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;",
                 "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;",
                 "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;", ""]
        offset = 8
        for f in self.synth_fields:
            lines.append(f.format_line(offset))
            offset += f.room
        lines += ["", self.print_fmt()]
        return "\n".join(lines) + "\n"

    def hold(self) -> None:
        """A hist action names it: it cannot be removed until ``unhold``."""
        self.ref += 1

    def unhold(self) -> None:
        self.ref -= 1

    def store(self, values: Sequence[object]) -> tuple[object, ...]:
        """The values as its record keeps them (each cut to its field's type)."""
        if len(values) != len(self.synth_fields):
            raise ValueError(f"{self.name} has {len(self.synth_fields)} fields, "
                             f"given {len(values)} values")
        return tuple([f.store(v) for f, v in zip(self.synth_fields, values)])

    def __repr__(self) -> str:
        return f"<synthetic event {self.name}>"


class SynthEventFile(TracepointFile):
    """A synthetic event in one instance: what a hist action fires."""

    event: SynthEvent

    @property
    def fields(self) -> list[tuple[str, str]]:
        """``(type, name)`` of each field, in order (``u64``, ``char[]``, ...)."""
        return [(f.type, f.name) for f in self.event.synth_fields]

    def fire(self, values: Sequence[object], frame: FrameType | None = None) -> None:
        """One event with these values (one per field, in order: numbers,
        strings, a stack as a sequence of frame texts), in the calling
        thread: if it is enabled in this instance (or in soft mode: its
        triggers run), filtered, recorded, its triggers and hists run (the
        kernel's trace_event_raw_event_synth).  Never raises: values that
        cannot be stored (not one per field) are counted in ``event.nmissed``."""
        if not self.armed:
            return
        try:
            self._record((None, 0), self.event.store(values), frame)
        except Exception:       # (never into the program: counted, as a kprobe's miss)
            self.event.nmissed += 1


def find_synth_event(tracefs: Tracefs, instance: TraceInstance, name: str) -> SynthEventFile | None:
    """The synthetic event ``name``'s file in ``instance`` (None if there is
    no such event): what a hist action in ``instance`` fires."""
    event = tracefs.tracepoints.find(SYNTH_SYSTEM, name)
    return event.file(instance) if isinstance(event, SynthEvent) else None


class SynthEvents:
    """The synthetic events of a tracefs: ``synthetic_events``, and the
    ``s`` kind of ``dynamic_events``.  They live in the tracepoints'
    registry (their files are tracepoints' files), under its lock."""

    def __init__(self, tracepoints: Tracepoints, probes: ProbeEvents) -> None:
        self.tracepoints = tracepoints
        self.probes = probes            # (its error_log)
        self.source = Source(tracepoints.lock)      # (nothing to arm: a hist action fires them)
        self.lock: _thread.RLock = tracepoints.lock

    def events(self) -> list[SynthEvent]:
        return [e for e in self.tracepoints.in_group(SYNTH_SYSTEM) if isinstance(e, SynthEvent)]

    def find(self, name: str) -> SynthEvent | None:
        event = self.tracepoints.find(SYNTH_SYSTEM, name)
        return event if isinstance(event, SynthEvent) else None

    def defined_as(self, defn: object) -> bool:
        """Whether ``defn`` (a parsed ``s:`` line) is a synthetic event defined
        already, with the same fields."""
        if not isinstance(defn, SynthFormat):
            return False
        event = self.find(defn.name)
        return event is not None and event.synth_fields == defn.synth_fields

    # -- synthetic_events
    def read(self) -> str:
        """``NAME\\tTYPE FIELD; ...`` a line each (synth_events_seq_show)."""
        return "".join(f"{e.name}\t{fields_text(e.synth_fields)}\n" for e in self.events())

    def definitions(self) -> str:
        """As ``dynamic_events`` shows them: ``s:synthetic/NAME\\tTYPE FIELD; ...``."""
        return "".join(f"s:{SYNTH_SYSTEM}/{line}" for line in self.read().splitlines(True))

    def write(self, text: str, append: bool) -> None:
        """``>`` removes every synthetic event first (none if one is busy);
        then each line (``#`` starts a comment), an error stopping there."""
        with self.lock:
            if not append:
                self.release_all(text)
            for line in text.split("\n"):
                line = line.split("#", 1)[0].lstrip()
                if line:
                    self.command(line)

    def command(self, cmd: str) -> None:
        """A line of ``synthetic_events`` (create_or_delete_synth_event)."""
        if not is_command(cmd):
            self._fail(TraceError("SYNTH_ERR_INVALID_CMD", cmd, 0, subsystem=SUBSYSTEM))
        space = first_space(cmd)
        name = cmd[:space] if space >= 0 else cmd
        if name[0] == "!":
            self.remove(name[1:], cmd)
            return
        self.create(cmd, name, cmd[space:].lstrip())

    def dyn_command(self, cmd: str) -> None:
        """An ``s:[synthetic/]NAME FIELDS`` line of ``dynamic_events`` (create_synth_event)."""
        try:
            name, raw_fields = split_dyn_command(cmd)
        except TraceError as e:
            self._fail(e)
        self.create(cmd, name, raw_fields)

    def create(self, cmd: str, name: str, raw_fields: str) -> SynthEvent:
        """``__create_synth_event``: errors placed in ``cmd`` and logged."""
        with self.lock:
            try:
                check_name(cmd, name)
                if self.find(name) is not None:
                    raise TraceError("SYNTH_ERR_EVENT_EXISTS", cmd, errpos(cmd, name), subsystem=SUBSYSTEM)
                fields = parse_fields(cmd, raw_fields)
            except TraceError as e:
                self._fail(e)
            points = self.tracepoints
            event = SynthEvent(name, fields, points._next_id, self.source)
            points._next_id += 1
            points.events[(SYNTH_SYSTEM, name)] = event
            return event

    def remove(self, name: str, cmd: str) -> None:
        """``!NAME`` (synth_event_delete): ENOENT, or EBUSY while a hist
        action holds it or an instance has it enabled (soft mode too);
        neither is logged, as the kernel's."""
        with self.lock:
            event = self.find(name)
            if event is None:
                raise TraceError("NO_SUCH_EVENT", cmd, 0, subsystem=SUBSYSTEM)
            self._check_free(event, cmd)
            self._drop(event)

    def release_all(self, text: str) -> None:
        """Every synthetic event removed, or none if one is busy (EBUSY, not logged)."""
        with self.lock:
            events = self.events()
            for event in events:
                self._check_free(event, text.strip())
            for event in events:
                self._drop(event)

    def check_release_all(self, text: str) -> None:
        """EBUSY if ``release_all`` would refuse (before other kinds go)."""
        for event in self.events():
            self._check_free(event, text.strip())

    def remove_unused(self, keys: list[tuple[str, str]]) -> None:
        """Those of ``keys`` that are synthetic events, where free (the end
        of the session that defined them)."""
        with self.lock:
            for group, name in keys:
                event = self.find(name) if group == SYNTH_SYSTEM else None
                if event is not None and not event.ref and not event.enabled:
                    self._drop(event)

    @staticmethod
    def _check_free(event: SynthEvent, cmd: str) -> None:
        if event.ref:
            raise TraceError("SYNTH_IN_USE", cmd, 0, subsystem=SUBSYSTEM)
        if event.enabled:
            raise TraceError("BUSY", cmd, 0, subsystem=SUBSYSTEM)

    def _drop(self, event: SynthEvent) -> None:
        self.tracepoints.events.pop((SYNTH_SYSTEM, event.name), None)
        for f in list(event.files.values()):
            f.clear_triggers()
            f.disable()
        event.files.clear()

    def _fail(self, error: TraceError) -> NoReturn:
        self.probes.log(error)
        raise error

