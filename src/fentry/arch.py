"""arch: the only module that touches ``sys.monitoring``.

It owns fentry's tool id, the callbacks registered under it, and the local
events set on code objects.  Everything above speaks in code objects and event
masks; nothing above imports ``sys.monitoring`` itself.
"""

from __future__ import annotations

import sys
from types import CodeType
from collections.abc import Callable

from .errors import TraceError

_mon = sys.monitoring
EVENTS = _mon.events
DISABLE = _mon.DISABLE

TOOL_NAME = "fentry"

# Ids in the order we try them.  Debuggers take 0, coverage.py 1 (or 3),
# profilers 2; 5 is nominally the optimizer's but unused by CPython itself.
# We never evict a tool: an id held by anyone is skipped.
TOOL_ID_ORDER = (5, 3, 4, 2, 1, 0)

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


class Monitor:
    """fentry's hold on ``sys.monitoring``: one tool id, its callbacks and events.

    ``start()`` claims an id; ``stop()`` undoes everything ``start()`` and the
    setters did, so after it no event, callback or id of fentry remains.
    """

    def __init__(self) -> None:
        self.tool_id: int | None = None
        self._callbacks: set[int] = set()
        self._local: dict[int, CodeType] = {}   # id(code) -> code with events set
        self._global = 0

    @property
    def active(self) -> bool:
        return self.tool_id is not None

    def start(self) -> int:
        if self.tool_id is not None:
            return self.tool_id
        for tool_id in TOOL_ID_ORDER:
            if _mon.get_tool(tool_id) is None:
                try:
                    _mon.use_tool_id(tool_id, TOOL_NAME)
                except ValueError:      # taken between the check and the claim
                    continue
                self.tool_id = tool_id
                return tool_id
        raise ToolIdBusy({i: _mon.get_tool(i) for i in range(6)})

    def stop(self) -> None:
        tool_id = self.tool_id
        if tool_id is None:
            return
        for code in self._local.values():
            _mon.set_local_events(tool_id, code, 0)
        self._local.clear()
        _mon.set_events(tool_id, 0)
        self._global = 0
        for event in self._callbacks:
            _mon.register_callback(tool_id, event, None)
        self._callbacks.clear()
        _mon.free_tool_id(tool_id)
        self.tool_id = None

    def set_callback(self, event: int, func: Callable | None) -> None:
        assert self.tool_id is not None
        _mon.register_callback(self.tool_id, event, func)
        if func is None:
            self._callbacks.discard(event)
        else:
            self._callbacks.add(event)

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
            self._local[key] = code
        elif key in self._local:
            del self._local[key]
        else:
            return
        _mon.set_local_events(self.tool_id, code, events)

    def traced_codes(self) -> list[CodeType]:
        return list(self._local.values())

    @staticmethod
    def restart_events() -> None:
        """Re-arm every location a callback DISABLEd (all tools: CPython offers no finer knob)."""
        _mon.restart_events()

