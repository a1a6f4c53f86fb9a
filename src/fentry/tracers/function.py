"""The ``function`` tracer: one record per call of a traced function
(read as text by ``text.FunctionReader``)."""

from __future__ import annotations

import sys
from types import CodeType, FrameType

from .. import arch, hotpath
from ..events.stack import record_stack
from ..ftrace import FtraceOps, Handlers
from ..hotpath import Ip
from .ring_buffer import SKIP_FUNCTION, RingBuffer

_getframe = sys._getframe

PY_START = arch.EVENTS.PY_START


class FunctionOps(FtraceOps):
    """Records ``(seq, ts, code, caller_code)`` on each traced entry; with
    the ``func_stack_trace`` option, the stack after it (a Python handler:
    the hot path's stays as it is when the option is off)."""

    outermost = True

    def __init__(self, buffer: RingBuffer, options: dict[str, bool] | None = None) -> None:
        super().__init__(self.function_trace_call)
        self.buffer = buffer
        self.stack = bool(options and options.get("func_stack_trace"))

    def function_trace_call(self, ip: Ip, parent_ip: Ip | None, ops: FtraceOps, regs: FrameType | None) -> None:
        """The four-argument form, for callers of ``func`` itself."""
        self._record(ip.code, None if parent_ip is None else parent_ip.code)

    def _record(self, code: CodeType, caller: CodeType | None) -> None:
        tb = self.buffer.current()
        if not tb.skip & SKIP_FUNCTION:
            tb.record((code, caller))

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        buffer = self.buffer
        if not self.stack:
            return {PY_START: hotpath.function_entry(buffer.local, buffer.attach, depth)}

        def function_stack_entry(code: CodeType, offset: int) -> None:
            frame = _getframe(depth)
            caller = frame.f_back
            tb = buffer.current()
            tb.record((code, None if caller is None else caller.f_code))
            record_stack(tb, frame)
        return {PY_START: function_stack_entry}
