"""The ``function-fork`` and ``event-fork`` options: the pid lists follow
threads as they start and end (the kernel's sched_process_fork and
sched_process_exit hooks, ftrace_pid_follow_* and event_filter_pid_sched_*).

A thread started by a thread of ``set_ftrace_pid`` (``set_ftrace_notrace_pid``)
joins that list when it starts, and a thread of the list leaves it when it
ends; ``event-fork`` does the same for ``set_event_pid`` and
``set_event_notrace_pid``.  Python has no fork hook, so two functions of
``threading`` stand in, watched by an ops of the instance's while either
option is on: ``Thread.start`` (in the starting thread: who starts whom) and
``Thread._bootstrap_inner`` (in the new thread: it begins, and at its
return, ends).  They are known by name, in the program's ``threading``
whenever it imports it (fentry does not: ``pythreads``).  A thread started
with ``_thread.start_new_thread`` directly goes through neither: it is not
followed.
"""

from __future__ import annotations

import _thread
import sys
from types import CodeType

from .. import arch
from ..ftrace import FtraceOps, Handlers
from .ring_buffer import PID_FILES, SKIP_EVENT, SKIP_FUNCTION, RingBuffer

E = arch.EVENTS
_START, _BOOTSTRAP = "Thread.start", "Thread._bootstrap_inner"
OPTION_BITS = {"function-fork": SKIP_FUNCTION, "event-fork": SKIP_EVENT}


class ForkOps(FtraceOps):
    """An instance's watch on threads starting and ending, for the pid lists
    whose ``bits`` (``SKIP_*``, by option) it follows."""

    local_events = E.PY_START | E.PY_RETURN

    def __init__(self, buffer: RingBuffer) -> None:
        super().__init__()
        self.buffer = buffer
        self.bits = 0
        # id(Thread) -> (Thread, the native id of the thread that started it)
        self.parents: dict[int, tuple[object, int]] = {}

    def wants(self, module: str, code: CodeType) -> bool:
        return module == "threading" and code.co_qualname in (_START, _BOOTSTRAP)

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        def thread_start(code: CodeType, offset: int) -> None:
            thread = sys._getframe(depth).f_locals.get("self")
            if thread is not None:
                self.parents[id(thread)] = (thread, _thread.get_native_id())

        def thread_begin(code: CodeType, offset: int) -> None:
            thread = sys._getframe(depth).f_locals.get("self")
            parent = self.parents.pop(id(thread), None)
            if parent is not None and parent[0] is thread:
                self.fork(parent[1], _thread.get_native_id())

        def thread_end(code: CodeType, offset: int, retval: object) -> None:
            self.exit(_thread.get_native_id())

        if code.co_qualname == _START:
            return {E.PY_START: thread_start}
        return {E.PY_START: thread_begin, E.PY_RETURN: thread_end}

    def fork(self, parent: int, child: int) -> None:
        """``child`` joins each followed list that holds ``parent``."""
        for name, (bit, _) in PID_FILES.items():
            if bit & self.bits:
                self.buffer.update_pids(name, lambda pids: pids | {child} if parent in pids else pids)

    def exit(self, tid: int) -> None:
        """``tid`` leaves each followed list."""
        for name, (bit, _) in PID_FILES.items():
            if bit & self.bits:
                self.buffer.update_pids(name, lambda pids: pids - {tid})
