"""set_ftrace_filter commands: ``FUNC:COMMAND[:PARAM...]``.

As the kernel's function probes (ftrace.c ``register_ftrace_function_probe``,
trace_functions.c, trace_events.c, trace.c): a command does not add its
functions to the filter; its functions are traced by an ops of their own,
the commands' ops, whatever the tracer is, so the functions that have no
command pay nothing.  Each function a command is on has its own count
(``:N``), decremented as the kernel's are, and reads back as
``FUNC:COMMAND:count=N`` or ``FUNC:COMMAND:unlimited``.

``dump`` (and ``cpudump``: the calling thread's buffer only) writes the
buffer, as the kernel's ``ftrace_dump`` does to the console, to the traced
program's standard error (fd 2), once.
"""

from __future__ import annotations

import fnmatch
import os
from types import CodeType, FrameType
from typing import Any

from .. import arch, hotpath
from ..errors import TraceError
from ..events.stack import record_stack
from ..ftrace import (
    FTRACE_OPS_FL_SAVE_REGS,
    FilterCommand,
    FilterHash,
    FtraceOps,
    Handlers,
    check_selects,
    register_ftrace_function,
    unregister_ftrace_function,
)
from ..symbols import SYMBOLS

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from .trace import TraceInstance

PY_START = arch.EVENTS.PY_START
EVENT_COMMANDS = ("enable_event", "disable_event")
# Commands that take one count and ignore what follows it (ftrace_trace_probe_callback).
COUNTED = ("traceon", "traceoff", "stacktrace", "snapshot")
DUMP_LINE = "---------------------------------\n"


def _kstrtoul(text: str) -> int | None:
    """The kernel's ``kstrtoul(s, 0)``: decimal, 0x hex or 0 octal; None if not a number."""
    base = 16 if text[:2].lower() == "0x" else 8 if text.startswith("0") and len(text) > 1 else 10
    digits = text[2:] if base == 16 else text
    try:
        return int(digits, base) if digits and digits.isalnum() else None
    except ValueError:
        return None


class FuncProbe:
    """One command on a glob of functions (the kernel's ``ftrace_func_probe``
    and its data): ``count`` None is unlimited, else each function's count
    starts at it."""
    __slots__ = ("name", "glob", "count", "counts", "event", "word")

    def __init__(self, cmd: FilterCommand, count: int | None, event: Any) -> None:
        self.name = cmd.name
        self.glob = cmd.glob
        self.word = cmd.word
        self.count = count
        self.counts: dict[str, int] = {}    # "module:qualname" -> what is left
        self.event = event                  # enable_event / disable_event's ProbeEvent

    def same(self, cmd: FilterCommand, event: Any) -> bool:
        """Whether ``!cmd`` removes this probe: same command (and event), on
        functions its glob names (``!*:traceoff`` removes every traceoff)."""
        return (cmd.name == self.name and event is self.event
                and fnmatch.fnmatchcase(self.glob.func_text, cmd.glob.func_text))

    def take(self, key: str) -> bool:
        """One use of a counted command on function ``key``: False once none is left."""
        if self.count is None:
            return True
        left = self.counts.get(key, self.count)
        if left <= 0:
            return False
        self.counts[key] = left - 1
        return True

    def text(self, key: str, qualname: str) -> str:
        """Its read-back line for one function (ftrace_probe_print, event_enable_print)."""
        what = self.name
        if self.event is not None:
            what += f":{self.event.group}:{self.event.name}"
        if self.count is None:
            return f"{qualname}:{what}:unlimited\n"
        return f"{qualname}:{what}:count={self.counts.get(key, self.count)}\n"


class CommandOps(FtraceOps):
    """The commands' ops: on a function some command is on, a handler that
    runs those commands (a Python one: commands are the slow path)."""

    def __init__(self, commands: FuncCommands, probes: list[FuncProbe]) -> None:
        # The frame: a stacktrace's first (enabled_functions shows the R).
        super().__init__(None, FTRACE_OPS_FL_SAVE_REGS)
        self.commands = commands
        self.probes = probes
        self.dead = False       # replaced: its handlers do nothing more
        self.filter = FilterHash()
        self.filter.globs = [p.glob for p in probes]

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        mine = [p for p in self.probes if p.glob.matches(module, code.co_qualname)]
        key = f"{module}:{code.co_qualname}"
        fire = self.commands.fire

        def probe_hit(ip: Any, parent_ip: Any, ops: CommandOps, frame: FrameType) -> None:
            if ops.dead:
                return
            for p in mine:
                fire(p, key, frame)
        return {PY_START: hotpath.ops_entry(probe_hit, self, True, depth)}


class FuncCommands:
    """An instance's set_ftrace_filter commands and the ops that runs them."""

    def __init__(self, instance: TraceInstance) -> None:
        self.instance = instance
        self.probes: list[FuncProbe] = []
        self.ops: CommandOps | None = None
        # What enable_event / disable_event name (the shared ProbeEvents):
        # find(group, name), set_enable(events, on, instance).
        self.events: Any = None
        self.traced_off = False     # a traceoff command has turned tracing off

    # -- writing
    def write(self, commands: list[FilterCommand], text: str) -> None:
        """Apply the command words of one write: every one is checked before any applies."""
        probes = list(self.probes)
        adds = []
        for cmd in commands:
            count, event = self._parse(cmd, text)
            if cmd.negate:
                kept = [p for p in probes if not p.same(cmd, event)]
                if len(kept) == len(probes):
                    raise TraceError("CMD_NOT_SET", text, cmd.pos)
                probes = kept
            else:
                probes.append(FuncProbe(cmd, count, event))
                adds.append(cmd.glob)
        check_selects(adds, text)
        self._install(probes)

    def _parse(self, cmd: FilterCommand, text: str) -> tuple[int | None, Any]:
        """(count, event) of one command word, as the kernel's callbacks read them."""
        params, pos = cmd.params, cmd.params_pos
        event = None
        if cmd.name in EVENT_COMMANDS:
            if len(params) < 2 or not params[0] or not params[1]:
                raise TraceError("CMD_NEEDS_EVENT", text, pos)
            event = self.events.find(params[0], params[1]) if self.events is not None else None
            if event is None:
                raise TraceError("CMD_NO_EVENT", text, pos)
            pos += len(params[0]) + len(params[1]) + 2
            params = params[2:]
            if len(params) > 1:
                raise TraceError("BAD_CMD_PARAM", text, pos + len(params[0]) + 1)
        elif cmd.name in ("dump", "cpudump"):
            return 1, None          # the kernel's: only dump once, whatever the parameter
        if not params or not params[0]:
            return None, event
        count = _kstrtoul(params[0])
        if count is None:
            raise TraceError("BAD_CMD_COUNT", text, pos)
        return count, event

    def _install(self, probes: list[FuncProbe]) -> None:
        """The commands' ops anew, for ``probes``: the new one registered
        before the old goes, so the tool id stays held throughout."""
        old = self.ops
        new = CommandOps(self, probes) if probes else None
        if new is not None:
            register_ftrace_function(new)
        self.probes, self.ops = probes, new
        if old is not None:
            old.dead = True
            unregister_ftrace_function(old)

    def clear(self) -> None:
        """Every command gone (the instance is reset or removed)."""
        self._install([])

    # -- reading
    def text(self) -> str:
        """The commands' lines of set_ftrace_filter: one per function each is on."""
        symbols = SYMBOLS.symbols()
        lines = []
        for p in self.probes:
            hits = [s for s in symbols if p.glob.matches(s.module, s.qualname)]
            if not hits:        # waiting for its function (fentry run, before the program)
                lines.append(p.text(p.glob.func_text, p.glob.func_text))
            lines += [p.text(f"{s.module}:{s.qualname}", s.qualname) for s in hits]
        return "".join(lines)

    # -- the hit (in the traced thread, on entry of a function with a command)
    def fire(self, p: FuncProbe, key: str, frame: FrameType) -> None:
        inst = self.instance
        name = p.name
        if name in ("traceon", "traceoff"):
            on = name == "traceon"
            # The count goes down only when the state changes (update_traceon_count).
            if inst.tracing_on != on and p.take(key):
                self.traced_off = self.traced_off or not on
                inst.set_tracing_on(on)
        elif name == "stacktrace":
            if inst.tracing_on and p.take(key):
                record_stack(inst.buffer.current(), frame)
        elif name == "snapshot":
            if p.take(key):
                inst.take_snapshot()
        elif name in EVENT_COMMANDS:
            on = name == "enable_event"
            if p.event.file(inst).enabled != on and p.take(key):
                self.events.set_enable([p.event], on, inst)
        elif p.take(key):       # dump, cpudump
            os.write(2, self.dump_text(only_caller=name == "cpudump").encode("utf-8", "replace"))
            # The kernel's ftrace_dump_one: "Always turn off tracing when we
            # dump" (tracer_tracing_off); echo 1 > tracing_on turns it back on.
            self.traced_off = True
            inst.set_tracing_on(False)

    def dump_text(self, only_caller: bool = False) -> str:
        """What ``dump`` writes: the kernel's ftrace_dump lines around the trace."""
        inst = self.instance
        per_thread = inst.buffer.snapshot()
        if only_caller:
            mine = inst.buffer.current()
            per_thread = [(tb, r) for tb, r in per_thread if tb is mine]
        reader = inst.reader()
        lines = reader.lines(per_thread) + reader.flush()
        body = "".join(lines) + DUMP_LINE if lines else "   (ftrace buffer empty)\n"
        return "Dumping ftrace buffer:\n" + DUMP_LINE + body
