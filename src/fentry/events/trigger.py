"""events.trigger: event triggers, as the kernel's ``trace_events_trigger.c``.

``events/GRP/EVENT/trigger`` takes one command a write, ``CMD[:PARAM...] [if
FILTER]`` (``!CMD...`` removes it), and reads back the event's triggers,
newest first, as the kernel prints them (``traceoff:count=3 if x > 1``), or
the ``# Available triggers:`` header when it has none.

The commands are a table (``register_trigger_command``): ``traceon``,
``traceoff``, ``snapshot``, ``stacktrace``, ``enable_event`` and
``disable_event`` are registered here, in the kernel's order; another module
registers its own (``hist``) the same way, with a ``parse`` that builds a
``Trigger`` and registers it on the event file (``register_trigger``), and
``event_enable_command`` makes the commands that act on another event
(``enable_hist``).  A trigger's ``run`` gets the ``Hit``: the event's field
values by name (``hit.fields``), for each hit its filter passes.

An event file that can carry triggers mixes in ``Triggered`` and, in soft
mode, calls ``soft_hit`` before its record and ``call_post_triggers`` after
it.  As in the kernel, the event's own filter does not gate its
triggers (each has its own ``if``), and a triggered event is armed in soft
mode: its triggers run while its ``enable`` is 0 (read back as ``0*``), and
it records nothing then (the kernel's soft-disabled event).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TYPE_CHECKING

from ..errors import TraceError
from ..tracers.commands import _kstrtoul
from .filter import Filter
from .stack import record_stack

if TYPE_CHECKING:
    from ..tracers.trace import TraceInstance

# The kernel's enum event_trigger_type: triggers of one type exclude each
# other on an event (traceon and traceoff are one type).
ETT_TRACE_ONOFF = 1 << 0
ETT_SNAPSHOT = 1 << 1
ETT_STACKTRACE = 1 << 2
ETT_EVENT_ENABLE = 1 << 3
ETT_EVENT_HIST = 1 << 4
ETT_HIST_ENABLE = 1 << 5

UNLIMITED = -1          # a trigger's count when none was given
_COMMON = re.compile(r"\b(comm|common_pid)\b")


class Hit:
    """One hit of a triggered event, as its triggers see it: the record's
    values, and its fields by name (``fields``, made on first use: a hist
    trigger's keys and values)."""
    __slots__ = ("file", "values", "code", "frame", "_fields", "_own")

    def __init__(self, file: Triggered, values: tuple[object, ...], code: CodeType | None,
                 frame: FrameType) -> None:
        self.file = file
        self.values = values
        self.code = code            # the probed code (``$args`` names its parameters)
        self.frame = frame
        self._fields: dict[str, object] | None = None
        self._own: dict[str, object] | None = None

    @property
    def fields(self) -> dict[str, object]:
        """The event's fields, name -> value, and ``comm`` and ``common_pid``."""
        if self._fields is None:
            self._fields = self.file.trigger_fields(self.values, self.code, True)
        return self._fields

    @property
    def own_fields(self) -> dict[str, object]:
        """The event's own fields only (what most filters name: no thread lookup)."""
        if self._own is None:
            self._own = self.file.trigger_fields(self.values, self.code, False)
        return self._own


class Trigger:
    """One trigger on one event file (``struct event_trigger_data``): its
    command, count (``UNLIMITED``, or how many more times it may fire) and
    filter.  A command's trigger overrides ``run`` (the kernel's ``trigger``),
    and ``take`` (``count_func``) and ``text`` (``print``) where they differ."""
    __slots__ = ("command", "file", "count", "counted", "filter", "filter_text",
                 "filter_common", "paused")

    def __init__(self, command: TriggerCommand, file: Triggered) -> None:
        self.command = command
        self.file = file                    # the event it is on
        self.count = UNLIMITED
        self.counted = False                # a count was given: take() decides each firing
        self.filter: Filter | None = None
        self.filter_text: str | None = None
        self.filter_common = False          # the filter names comm or common_pid
        self.paused = False                 # (a hist trigger's :pause)

    def matches(self, hit: Hit) -> bool:
        """Its own filter, on the hit's fields."""
        f = self.filter
        if f is None:
            return True
        return f.matches(hit.fields if self.filter_common else hit.own_fields)

    def take(self, hit: Hit) -> bool:
        """One use of the count (``event_trigger_count``): False once none is left."""
        if self.count == 0:
            return False
        if self.count != UNLIMITED:
            self.count -= 1
        return True

    def fire(self, hit: Hit) -> None:
        """``data_ops_trigger``: the count first, if one was given, then the trigger."""
        if self.counted and not self.take(hit):
            return
        self.run(hit)

    def run(self, hit: Hit) -> None:
        """What the trigger does (a post trigger's ``hit`` has no values: it runs after the record)."""
        raise NotImplementedError

    def text(self) -> str:
        """Its line in the ``trigger`` file (``event_trigger_print``)."""
        return self.command.name + _count_and_filter(self)

    def same(self, other: Trigger) -> bool:
        """Whether registering ``other`` finds this one in its way (-EEXIST),
        and ``!`` of ``other`` removes it: the same trigger type."""
        return self.command.trigger_type == other.command.trigger_type

    def registered(self) -> None:
        """It is on its event now (``init``)."""

    def freed(self) -> None:
        """It is off its event (``free``)."""


def _count_and_filter(t: Trigger) -> str:
    count = ":unlimited" if t.count == UNLIMITED else f":count={t.count}"
    return count + (f" if {t.filter_text}\n" if t.filter_text is not None else "\n")


Parse = Callable[["TriggerCommand", "Triggered", str, "Param", "TriggerContext"], None]


class TriggerCommand:
    """A trigger command (``struct event_command``): its name, its trigger
    type, and its ``parse`` (which registers or removes a trigger).
    ``post``: its triggers run after the event is recorded (traceoff's and
    stacktrace's ``EVENT_CMD_FL_POST_TRIGGER``); ``needs_rec``: they need
    the hit's fields (a hist's ``EVENT_CMD_FL_NEEDS_REC``); ``unreg_all``:
    what a write with ``>`` (O_TRUNC) removes first."""
    __slots__ = ("name", "trigger_type", "parse", "post", "needs_rec", "unreg_all")

    def __init__(self, name: str, trigger_type: int, parse: Parse, post: bool = False,
                 needs_rec: bool = False, unreg_all: Callable[[Triggered], None] | None = None) -> None:
        self.name = name
        self.trigger_type = trigger_type
        self.parse = parse
        self.post = post
        self.needs_rec = needs_rec
        self.unreg_all = unreg_all


_COMMANDS: dict[str, TriggerCommand] = {}     # in the order registered (as the kernel lists them)


def register_trigger_command(command: TriggerCommand) -> None:
    """Add a command to the table (``register_event_command``)."""
    if command.name in _COMMANDS:
        raise ValueError(f"trigger command {command.name!r} is registered already")
    _COMMANDS[command.name] = command


class Param:
    """What follows a command (the kernel's ``param_and_filter``), and where
    it starts in the command written (for carets)."""
    __slots__ = ("text", "pos")

    def __init__(self, text: str | None, pos: int) -> None:
        self.text = text
        self.pos = pos


class TriggerContext:
    """One write to a ``trigger`` file: the command as written (for errors),
    how to find an event file of the same instance by ``GRP``, ``EVENT``
    (``find_event_file``), and the error_log (``log``)."""
    __slots__ = ("command", "find", "log")

    def __init__(self, command: str, find: Callable[[str, str], Triggered | None],
                 log: Callable[[TraceError], None]) -> None:
        self.command = command
        self.find = find
        self.log = log

    def error(self, code: str, pos: int) -> TraceError:
        return TraceError(code, self.command, pos, subsystem="trigger")


# -- the event file's side: triggers and soft mode --------------------------

class Triggered:
    """Mixed into an event file (``struct trace_event_file``): its triggers
    and its soft mode.  The class provides ``instance``, ``group`` and
    ``name``, ``enabled`` and ``enable()`` / ``disable()`` (its probe armed
    or not: the kernel's ``ENABLED`` flag and ``reg``), ``rearm()`` (in or
    out of soft mode: whether its hits call ``call_triggers``),
    ``compile_trigger_filter(text)`` and ``trigger_fields(values, code,
    common)``, the fields by name (``common``: ``comm`` and ``common_pid`` too)."""

    instance: TraceInstance
    triggers: tuple[Trigger, ...]
    sm_ref: int             # soft-mode references: having triggers, each enable_event naming it
    tm_ref: int             # triggers on it
    soft_disabled: bool     # armed, but records nothing (enable 0 while in soft mode)
    trigger_cond: bool      # some trigger has a filter, runs after the record, or needs the fields

    def init_triggers(self) -> None:
        self.triggers = ()
        self.sm_ref = self.tm_ref = 0
        self.soft_disabled = self.trigger_cond = False

    @property
    def enabled(self) -> bool:
        raise NotImplementedError

    @property
    def group(self) -> str:
        raise NotImplementedError

    @property
    def name(self) -> str:
        raise NotImplementedError

    def enable(self) -> None:
        raise NotImplementedError

    def disable(self) -> None:
        raise NotImplementedError

    def rearm(self) -> None:
        raise NotImplementedError

    def compile_trigger_filter(self, text: str) -> Filter:
        raise NotImplementedError

    def trigger_fields(self, values: tuple[object, ...], code: CodeType | None,
                       common: bool) -> dict[str, object]:
        raise NotImplementedError

    # -- enable, as the kernel's __ftrace_event_enable_disable
    def enable_disable(self, enable: bool, soft: bool = False) -> None:
        """A write to ``enable`` (``soft`` False), or a soft-mode reference
        taken or dropped (a trigger on it, an enable_event naming it): in
        soft mode the event stays armed, and ``enable`` only says whether
        it records."""
        if not enable:
            if soft:
                self.sm_ref -= 1
                if self.sm_ref > 0:
                    return
                disable = self.soft_disabled
            else:
                disable = not self.sm_ref
            if disable and self.enabled:
                self.disable()
            self.soft_disabled = bool(self.sm_ref)
            if soft and self.enabled:
                self.rearm()            # out of soft mode: its hits call no trigger
            return
        if not soft:
            self.soft_disabled = False
        else:
            self.sm_ref += 1
            if self.sm_ref > 1:
                return
        if not self.enabled:
            if soft:
                self.soft_disabled = True   # armed for its triggers, recording nothing
            try:
                self.enable()
            except TraceError:
                if soft:
                    self.sm_ref -= 1
                    self.soft_disabled = False
                raise
        elif soft:
            self.rearm()                # into soft mode: its hits call the triggers

    def enable_text(self) -> str:
        """The ``enable`` file: 1 if it records, else 0; ``*`` in soft mode."""
        on = "1" if self.enabled and not self.soft_disabled else "0"
        return on + ("*" if self.soft_disabled or self.sm_ref else "") + "\n"

    # -- the trigger list
    def trigger_text(self) -> str:
        """The ``trigger`` file."""
        if not self.triggers:
            return "# Available triggers:\n#" + "".join(f" {n}" for n in _COMMANDS) + "\n"
        return "".join(t.text() for t in self.triggers)

    def write_trigger(self, text: str, append: bool, ctx: TriggerContext) -> None:
        """One write to the ``trigger`` file (``trigger_process_regex``).
        ``>`` removes first what the commands with ``unreg_all`` have (hist),
        as the kernel's O_TRUNC; ``!`` that matches nothing is no error.
        Unlike the kernel's, a refused write removes nothing: what ``>``
        removes is only out of sight until the write is taken."""
        if append:
            self._write_trigger(text, ctx)
            return
        truncated = _Truncated(self.triggers)
        for c in _COMMANDS.values():
            if c.unreg_all is not None:
                c.unreg_all(truncated)      # type: ignore[arg-type]  # (it only names them)
        if not truncated.removed:
            self._write_trigger(text, ctx)
            return
        before = self.triggers
        self.triggers = truncated.triggers      # (still holding their soft-mode references)
        self._update_cond()
        try:
            self._write_trigger(text, ctx)
        except TraceError:
            self.triggers = tuple(t for t in self.triggers if t not in before) + before
            self._update_cond()
            raise
        for t in truncated.removed:
            self._trigger_mode(False)
            t.freed()

    def _write_trigger(self, text: str, ctx: TriggerContext) -> None:
        buff = text.strip()
        ctx.command = buff
        m = re.match(r"[^: \t]*", buff)
        assert m is not None
        glob = m.group()
        param: str | None = None
        pos = m.end()
        if pos < len(buff):
            rest = buff[pos + 1:]
            param = rest.lstrip() or None
            pos += 1 + len(rest) - len(rest.lstrip())
        name = glob[1:] if glob.startswith("!") else glob
        command = _COMMANDS.get(name)
        if command is None:
            raise ctx.error("NO_SUCH_TRIGGER", 1 if glob.startswith("!") else 0)
        command.parse(command, self, glob, Param(param, pos), ctx)

    def register_trigger(self, trigger: Trigger, ctx: TriggerContext) -> None:
        """Put ``trigger`` first on this event (``register_trigger``): one
        of a type per event (-EEXIST), and the event in soft mode."""
        if any(t.same(trigger) for t in self.triggers):
            raise ctx.error("TRIGGER_EXISTS", 0)
        self.triggers = (trigger, *self.triggers)
        self._update_cond()
        try:
            self._trigger_mode(True)
        except TraceError:
            self.triggers = self.triggers[1:]
            self._update_cond()
            raise
        trigger.registered()

    def unregister_trigger(self, test: Trigger) -> bool:
        """Remove the first trigger that ``test`` matches (``!CMD``); False if none does."""
        for t in self.triggers:
            if t.same(test):
                self._remove(t)
                return True
        return False

    def _remove(self, t: Trigger) -> None:
        self.triggers = tuple(x for x in self.triggers if x is not t)
        self._trigger_mode(False)
        self._update_cond()
        t.freed()

    def clear_triggers(self) -> None:
        """Every trigger off (``clear_event_triggers``: the instance is reset or goes)."""
        for t in self.triggers:
            self._remove(t)

    def _trigger_mode(self, on: bool) -> None:
        """``trace_event_trigger_enable_disable``: the first trigger takes a
        soft-mode reference, the last gives it back."""
        if on:
            self.tm_ref += 1
            if self.tm_ref == 1:
                try:
                    self.enable_disable(True, soft=True)
                except TraceError:
                    self.tm_ref -= 1
                    raise
        else:
            self.tm_ref -= 1
            if self.tm_ref == 0:
                self.enable_disable(False, soft=True)

    def _update_cond(self) -> None:
        self.trigger_cond = any(t.filter is not None or t.command.post or t.command.needs_rec
                                for t in self.triggers)

    # -- the hit (in the traced thread; the list is replaced, never changed, so it can be read)
    def soft_hit(self, values: tuple[object, ...], code: CodeType | None,
                 frame: FrameType) -> tuple[bool, list[Trigger] | None]:
        """A hit in soft mode, before its record (the kernel's
        trace_trigger_soft_disabled and event_triggers_call): the triggers
        run whatever the event's filter and ``tracing_on`` say; returns
        whether to record (not if soft disabled; with a conditional trigger,
        as ``tracing_on`` was before they ran: the kernel reserves the
        record first) and the post triggers, for ``call_post_triggers``
        after the record.  An event file's hook is::

            record, post = self.soft_hit(values, code, frame)
            if record: ...record as without triggers...
            if post: self.call_post_triggers(post, frame)
        """
        if not self.trigger_cond:
            self.call_triggers(values, code, frame)
            return not self.soft_disabled, None
        on = self.instance.tracing_on
        post = self.call_triggers(values, code, frame)
        return on and not self.soft_disabled, post

    def call_triggers(self, values: tuple[object, ...], code: CodeType | None,
                      frame: FrameType) -> list[Trigger] | None:
        """``event_triggers_call``: every trigger whose filter matches, before
        the record; the post triggers among them are returned, for after it."""
        hit = Hit(self, values, code, frame)
        post: list[Trigger] | None = None
        for t in self.triggers:
            if t.paused or not t.matches(hit):
                continue
            if t.command.post:
                if post is None:
                    post = []
                post.append(t)
                continue
            t.fire(hit)
        return post

    def call_post_triggers(self, post: list[Trigger], frame: FrameType) -> None:
        """``event_triggers_post_call``: after the record."""
        hit = Hit(self, (), None, frame)
        for t in post:
            t.fire(hit)


class _Truncated:
    """What a ``>`` write's ``unreg_all`` calls would remove, named without
    removing it (a stand-in for the event file: ``triggers`` and
    ``unregister_trigger`` are all they use)."""

    def __init__(self, triggers: tuple[Trigger, ...]) -> None:
        self.triggers = triggers
        self.removed: list[Trigger] = []

    def unregister_trigger(self, test: Trigger) -> bool:
        self.removed.append(test)
        self.triggers = tuple(t for t in self.triggers if t is not test)
        return True


def set_files_enabled(files: list[Triggered], on: bool) -> None:
    """A write to ``enable`` over several event files (a group's, ``events/enable``):
    all enabled (or disabled), or none if one fails, what was enabled
    disabled again before the error goes on."""
    done = []
    try:
        for f in files:
            if on and (not f.enabled or f.soft_disabled):
                f.enable_disable(True)
                done.append(f)
            elif not on:
                f.enable_disable(False)
    except BaseException:
        for f in done:
            f.enable_disable(False)
        raise


# -- parsing helpers, the kernel's event_trigger_* ---------------------------

def separate_filter(param: Param, ctx: TriggerContext, required: bool
                    ) -> tuple[str | None, int, str | None, int]:
    """(param, its pos, filter, its pos) (``event_trigger_separate_filter``):
    an optional param is only a count, a number; else it all is the filter."""
    text = param.text
    if text is None:
        if required:
            raise ctx.error("CMD_NEEDS_EVENT", param.pos)
        return None, param.pos, None, param.pos
    if not required and not text[0].isdigit():
        return None, param.pos, text, param.pos
    m = re.match(r"[^ \t]*", text)
    assert m is not None
    p = m.group()
    if m.end() == len(text):
        return p, param.pos, None, param.pos + len(text)
    rest = text[m.end() + 1:]
    fpos = param.pos + m.end() + 1 + len(rest) - len(rest.lstrip())
    return p, param.pos, rest.lstrip() or None, fpos


def parse_num(trigger: Trigger, param: str | None, pos: int, ctx: TriggerContext) -> None:
    """``:N`` (``event_trigger_parse_num``): the count, and what follows it ignored."""
    if param is None:
        return
    number = param.split(":", 1)[0]
    count = _kstrtoul(number) if number else None
    if count is None:
        raise ctx.error("BAD_CMD_COUNT", pos)
    trigger.count = count
    trigger.counted = True


def set_filter(trigger: Trigger, filter_text: str | None, pos: int, ctx: TriggerContext) -> None:
    """``if FILTER`` (``set_trigger_filter``), over the fields of the event
    the trigger is on; a filter that does not compile is logged as the
    event filter's errors are."""
    if filter_text is None:
        return
    m = re.match(r"[^ \t]*", filter_text)
    assert m is not None
    if m.group() != "if":
        raise ctx.error("TRIGGER_NEEDS_IF", pos)
    if m.end() == len(filter_text):
        raise ctx.error("TRIGGER_NO_FILTER", pos + len(filter_text))
    body = filter_text[m.end() + 1:]
    try:
        trigger.filter = trigger.file.compile_trigger_filter(body)
    except TraceError as e:
        e.subsystem = "event filter parse error"
        ctx.log(e)
        raise
    trigger.filter_text = body
    trigger.filter_common = bool(_COMMON.search(body))


def event_trigger_parse(trigger_class: type[Trigger]) -> Parse:
    """The ``parse`` of a command whose only param is a count (``event_trigger_parse``)."""

    def parse(command: TriggerCommand, file: Triggered, glob: str, param: Param,
              ctx: TriggerContext) -> None:
        p, ppos, filter_text, fpos = separate_filter(param, ctx, required=False)
        trigger = trigger_class(command, file)
        if glob.startswith("!"):
            file.unregister_trigger(trigger)
            return
        parse_num(trigger, p, ppos, ctx)
        set_filter(trigger, filter_text, fpos, ctx)
        file.register_trigger(trigger, ctx)
    return parse


# -- the commands ------------------------------------------------------------

class TraceOnOff(Trigger):
    """``traceon`` / ``traceoff``: the instance's ``tracing_on``.  Counted,
    a firing counts only when it changes the state (``traceon_count_func``)."""
    __slots__ = ()

    def take(self, hit: Hit) -> bool:
        if self.file.instance.tracing_on == (self.command.name == "traceon"):
            return False
        return super().take(hit)

    def run(self, hit: Hit) -> None:
        inst = self.file.instance
        on = self.command.name == "traceon"
        if inst.tracing_on != on:
            if not on:
                inst.commands.traced_off = True     # (fentry run then says nothing of unseen functions)
            inst.set_tracing_on(on)


class Snapshot(Trigger):
    """``snapshot``: the instance's trace into its ``snapshot``, as ``echo 1 > snapshot``."""
    __slots__ = ()

    def run(self, hit: Hit) -> None:
        self.file.instance.take_snapshot()


class StackTrace(Trigger):
    """``stacktrace``: the Python stack, as a record after the event's."""
    __slots__ = ()

    def run(self, hit: Hit) -> None:
        inst = self.file.instance
        if hit is not None and inst.tracing_on:
            record_stack(inst.buffer.current(), hit.frame)


class EventEnable(Trigger):
    """``enable_event:GRP:EVENT`` / ``disable_event:GRP:EVENT``: the named
    event (in soft mode while the trigger is there) records, or not."""
    __slots__ = ("target", "enable")

    def __init__(self, command: TriggerCommand, file: Triggered) -> None:
        super().__init__(command, file)
        self.target: Triggered = file
        self.enable = command.name.startswith("enable")

    def same(self, other: Trigger) -> bool:
        return (super().same(other) and isinstance(other, EventEnable)
                and other.target is self.target)

    def take(self, hit: Hit) -> bool:
        if self.count == 0:
            return False
        if self.enable == (not self.target.soft_disabled):     # already so
            return False
        return super().take(hit)

    def run(self, hit: Hit) -> None:
        self.target.soft_disabled = not self.enable

    def text(self) -> str:
        t = self.target
        return f"{self.command.name}:{t.group}:{t.name}" + _count_and_filter(self)

    def freed(self) -> None:
        self.target.enable_disable(False, soft=True)


def event_enable_command(name: str, trigger_type: int,
                         trigger_class: type[EventEnable] = EventEnable) -> TriggerCommand:
    """A command ``NAME:GRP:EVENT[:N] [if FILTER]`` whose trigger acts on
    another event (``event_enable_trigger_parse``): enable_event and
    disable_event here; enable_hist and disable_hist (a ``trigger_class``
    whose ``run`` pauses the target's hist triggers) the same way."""

    def parse(command: TriggerCommand, file: Triggered, glob: str, param: Param,
              ctx: TriggerContext) -> None:
        event_enable_parse(command, file, glob, param, ctx, trigger_class)
    return TriggerCommand(name, trigger_type, parse)


def event_enable_parse(command: TriggerCommand, file: Triggered, glob: str, param: Param,
                       ctx: TriggerContext, trigger_class: type[EventEnable] = EventEnable) -> None:
    """``CMD:GRP:EVENT[:N] [if FILTER]``: the target in soft mode while the trigger is there."""
    if param.text is None:
        raise ctx.error("CMD_NEEDS_EVENT", param.pos)
    p, ppos, filter_text, fpos = separate_filter(param, ctx, required=True)
    assert p is not None
    system, sep, rest = p.partition(":")
    if not sep:
        raise ctx.error("CMD_NEEDS_EVENT", ppos + len(p))
    event, sep, count = rest.partition(":")
    target = ctx.find(system, event)
    if target is None:
        raise ctx.error("CMD_NO_EVENT", ppos)
    trigger = trigger_class(command, file)
    trigger.target = target
    if glob.startswith("!"):
        file.unregister_trigger(trigger)
        return
    parse_num(trigger, count if sep else None, ppos + len(system) + len(event) + 2, ctx)
    set_filter(trigger, filter_text, fpos, ctx)
    target.enable_disable(True, soft=True)
    try:
        file.register_trigger(trigger, ctx)
    except TraceError:
        target.enable_disable(False, soft=True)
        raise


register_trigger_command(TriggerCommand("traceon", ETT_TRACE_ONOFF, event_trigger_parse(TraceOnOff)))
register_trigger_command(TriggerCommand("traceoff", ETT_TRACE_ONOFF, event_trigger_parse(TraceOnOff),
                                        post=True))
register_trigger_command(TriggerCommand("snapshot", ETT_SNAPSHOT, event_trigger_parse(Snapshot)))
register_trigger_command(TriggerCommand("stacktrace", ETT_STACKTRACE, event_trigger_parse(StackTrace),
                                        post=True))
register_trigger_command(event_enable_command("enable_event", ETT_EVENT_ENABLE))
register_trigger_command(event_enable_command("disable_event", ETT_EVENT_ENABLE))


def trigger_names() -> list[str]:
    """The commands, as the ``# Available triggers:`` line lists them."""
    return list(_COMMANDS)

