"""arch: the only module that touches ``sys.monitoring``.

It owns fentry's tool id, the callbacks registered under it, and the local
events set on code objects.  Everything above speaks in code objects and event
masks; nothing above imports ``sys.monitoring`` itself.
"""

from __future__ import annotations

import _thread
import sys
import weakref
from collections import deque
from collections.abc import Callable
from itertools import starmap
from operator import call
from types import CodeType
from typing import Any

from . import hotpath
from .errors import TraceError
from .lifetime import pop_at_death

_mon = sys.monitoring
EVENTS = _mon.events
DISABLE = _mon.DISABLE

TOOL_NAME = "fentry"

# Ids in the order we try them, the ones the tools people run use last:
# 5 is nominally the optimizer's, and CPython uses none; 4 and 3 have no
# name (ad-hoc tools take 3 first; CPython's test_monitoring takes 2-4);
# coverage.py takes COVERAGE_ID (1); cProfile and viztracer take
# PROFILER_ID (2) -- and viztracer evicts whoever holds it when
# use_tool_id fails; debuggers take DEBUGGER_ID (0), and pdb's monitoring
# backend (3.14) and debugpy check get_tool() rather than ask.  We never
# evict a tool: an id held by anyone is skipped.  A program that asks for
# the id we hold gets it: we move (see Monitor).
TOOL_ID_ORDER = (5, 4, 3, 1, 2, 0)

# Events that can be set per code object.  PY_UNWIND and PY_THROW are
# global-only, and DISABLE may not be returned from them (ValueError).
LOCAL_EVENTS = (EVENTS.PY_START | EVENTS.PY_RESUME | EVENTS.PY_RETURN
                | EVENTS.PY_YIELD | EVENTS.LINE | EVENTS.INSTRUCTION
                | EVENTS.CALL | EVENTS.JUMP | EVENTS.BRANCH
                | EVENTS.STOP_ITERATION)
DISABLE_ALLOWED = LOCAL_EVENTS



class ToolIdBusy(TraceError, RuntimeError):
    """Every sys.monitoring tool id is held by another tool.

    A TraceError, so that every way in (a tracefs write in process or over
    the control socket, ``fentry attach``, ``fentry -p PID write``) rejects
    the command with an error_log entry naming the holders, and ``holders``
    maps each id to its tool's name."""

    def __init__(self, holders: dict[int, str | None], command: str = "") -> None:
        self.holders = holders
        held = ", ".join(f"{i} by {name!r}" for i, name in holders.items())
        super().__init__("TOOL_ID_BUSY", command, 0, detail=f"all are held ({held})")


# The real use_tool_id, for our own claims: sys.monitoring's attribute is
# our wrapper while we hold an id.
_use_tool_id = _mon.use_tool_id

# The monitors holding an id, in the order they wrapped use_tool_id.
_started: list[Monitor] = []

# Where a refused request of the program's is reported (error_log).
_error_log: Callable[[TraceError], None] | None = None


def set_error_log(log: Callable[[TraceError], None] | None) -> None:
    global _error_log
    _error_log = log


class Monitor:
    """fentry's hold on ``sys.monitoring``: one tool id, its callbacks and events.

    ``start()`` claims an id; ``stop()`` undoes everything ``start()`` and the
    setters did, so after it no event, callback or id of fentry remains.

    While it holds an id, ``sys.monitoring.use_tool_id`` is a wrapper
    (``hotpath.use_tool_id_wrapper``): a program asking for our id makes us
    move to a free one first (``_yield_id``), so it gets the id as it would
    without fentry; with none free it gets CPython's ValueError, and
    error_log says why.  ``lock`` (the ftrace core's) guards all of it: the
    program may ask from any thread.
    """

    def __init__(self, lock: _thread.RLock | None = None) -> None:
        self.tool_id: int | None = None
        self.lock = lock if lock is not None else _thread.RLock()
        self._callbacks: dict[int, Callable[..., object]] = {}
        # id(code) -> code with events set, weakly: a code that dies leaves
        # it (its events die with it; see lifetime.py).
        self._local: dict[int, weakref.ref[CodeType]] = {}
        self._global = 0
        self._wrapper: Callable[[int, str], None] | None = None    # our use_tool_id, while installed
        self._wrapped: Callable[[int, str], None] | None = None    # what it replaced

    @property
    def active(self) -> bool:
        return self.tool_id is not None

    def start(self) -> int:
        with self.lock:
            if self.tool_id is not None:
                return self.tool_id
            tool_id = self._claim()
            if tool_id is None:
                raise ToolIdBusy({i: _mon.get_tool(i) for i in range(6)})
            self.tool_id = tool_id
            self._wrapped = wrapped = _mon.use_tool_id
            self._wrapper = wrapper = hotpath.use_tool_id_wrapper(_mon, wrapped, self._yield_id)
            _mon.use_tool_id = wrapper
            _started.append(self)
            return tool_id

    def check_free(self) -> None:
        """Raise ToolIdBusy if ``start()`` could find no id now."""
        if self.tool_id is None and all(_mon.get_tool(i) is not None for i in range(6)):
            raise ToolIdBusy({i: _mon.get_tool(i) for i in range(6)})

    @staticmethod
    def _claim(avoid: int | None = None) -> int | None:
        for tool_id in TOOL_ID_ORDER:
            if tool_id != avoid and _mon.get_tool(tool_id) is None:
                try:
                    _use_tool_id(tool_id, TOOL_NAME)
                except ValueError:      # taken between the check and the claim
                    continue
                return tool_id
        return None

    def stop(self) -> None:
        with self.lock:
            tool_id = self.tool_id
            if tool_id is None:
                return
            if _mon.use_tool_id is self._wrapper and self._wrapped is not None:
                _mon.use_tool_id = self._wrapped
            else:
                # Someone wrapped ours: it stays in their chain, passing
                # through.  If that is another of fentry's monitors (the
                # tracepoints' own id), it puts back what ours wrapped.
                for other in _started:
                    if other._wrapped is self._wrapper:
                        other._wrapped = self._wrapped
            if self in _started:
                _started.remove(self)
            self._wrapper = self._wrapped = None
            # Ours still (a tool that evicts with free_tool_id, as viztracer
            # does when its id is in use, owns it now: left alone).
            if _mon.get_tool(tool_id) == TOOL_NAME:
                for code in self.traced_codes():
                    _mon.set_local_events(tool_id, code, 0)
                _mon.set_events(tool_id, 0)
                for event in self._callbacks:
                    _mon.register_callback(tool_id, event, None)
                _mon.free_tool_id(tool_id)
            self._local.clear()
            self._global = 0
            self._callbacks.clear()
            self.tool_id = None
            # Locations our callbacks DISABLEd stay so for the id's next
            # owner (CPython keeps them across free_tool_id): re-armed.
            _mon.restart_events()

    def _yield_id(self, *args: object) -> None:
        """``sys.monitoring.use_tool_id(*args)`` is about to run: if it asks
        for our id, move to a free one, or say in error_log that there is none."""
        if len(args) != 2 or type(args[0]) is not int or type(args[1]) is not str:
            return              # not ours to judge: CPython's checks answer it
        with self.lock:
            old = self.tool_id
            if old is None or args[0] != old or _mon.get_tool(old) != TOOL_NAME:
                return
            new = self._claim(avoid=old)
            if new is None:
                if _error_log is not None:
                    command = f"sys.monitoring.use_tool_id({old}, {args[1]!r})"
                    held = ", ".join(f"{i} by {_mon.get_tool(i)!r}" for i in range(6))
                    _error_log(TraceError("TOOL_ID_TAKEN", command, command.index("(") + 1,
                                          detail=f"it gets ValueError (held: {held})"))
                return
            self._move(old, new)

    def _move(self, old: int, new: int) -> None:
        """Everything of ours from tool id ``old`` to ``new`` (already claimed).

        One C-level loop over sys.monitoring calls runs no bytecode, so no
        other thread runs between its steps: no event of traced code is
        lost or seen twice while both ids are set up."""
        local = [(code, _mon.get_local_events(old, code)) for code in self.traced_codes()]
        # (callable, *args) steps, of calls of several signatures.
        steps: list[tuple[Any, ...]] = [
            (_mon.register_callback, new, event, func) for event, func in self._callbacks.items()]
        steps += [(_mon.set_local_events, new, code, events) for code, events in local]
        steps.append((_mon.set_events, new, self._global))
        steps += [(_mon.set_local_events, old, code, 0) for code, _ in local]
        steps.append((_mon.set_events, old, 0))
        steps += [(_mon.register_callback, old, event, None) for event in self._callbacks]
        steps.append((_mon.free_tool_id, old))
        try:
            deque(starmap(call, steps), maxlen=0)
        except BaseException:       # (MemoryError at worst) as before, on the old id
            undo: list[tuple[Any, ...]] = [(_mon.set_local_events, new, code, 0) for code, _ in local]
            undo.append((_mon.set_events, new, 0))
            undo += [(_mon.register_callback, new, event, None) for event in self._callbacks]
            undo.append((_mon.free_tool_id, new))
            if _mon.get_tool(old) is None:
                undo.append((_use_tool_id, old, TOOL_NAME))
            undo += [(_mon.register_callback, old, event, func) for event, func in self._callbacks.items()]
            undo += [(_mon.set_local_events, old, code, events) for code, events in local]
            undo.append((_mon.set_events, old, self._global))
            deque(starmap(call, undo), maxlen=0)
            raise
        self.tool_id = new
        _mon.restart_events()       # (see stop)

    def set_callback(self, event: int, func: Callable[..., object] | None) -> None:
        assert self.tool_id is not None
        _mon.register_callback(self.tool_id, event, func)
        if func is None:
            self._callbacks.pop(event, None)
        else:
            self._callbacks[event] = func

    def set_global_events(self, events: int) -> None:
        assert self.tool_id is not None
        if events != self._global:
            _mon.set_events(self.tool_id, events)
            self._global = events

    def set_code_events(self, code: CodeType, events: int) -> None:
        """Set exactly ``events`` (local ones) on ``code``; 0 removes them."""
        assert self.tool_id is not None
        key = id(code)
        if events:
            self._local[key] = pop_at_death(code, self._local, key)
        elif key in self._local:
            del self._local[key]
        else:
            return
        _mon.set_local_events(self.tool_id, code, events)

    def traced_codes(self) -> list[CodeType]:
        return [code for code in (ref() for ref in list(self._local.values())) if code is not None]

    @staticmethod
    def restart_events() -> None:
        """Re-arm every location a callback DISABLEd (all tools: CPython offers no finer knob)."""
        _mon.restart_events()

