"""The ``function`` tracer: one record per call of a traced function
(read as text by ``text.FunctionReader``)."""

from __future__ import annotations

from types import CodeType, FrameType

from .. import arch, hotpath
from ..ftrace import FtraceOps, Handlers
from ..hotpath import Ip
from .ring_buffer import SKIP_FUNCTION, RingBuffer

PY_START = arch.EVENTS.PY_START


class FunctionOps(FtraceOps):
    """Records ``(seq, ts, code, caller_code)`` on each traced entry."""

    outermost = True

    def __init__(self, buffer: RingBuffer) -> None:
        super().__init__(self.function_trace_call)
        self.buffer = buffer

    def function_trace_call(self, ip: Ip, parent_ip: Ip | None, ops: FtraceOps, regs: FrameType | None) -> None:
        """The four-argument form, for callers of ``func`` itself."""
        self._record(ip.code, None if parent_ip is None else parent_ip.code)

    def _record(self, code: CodeType, caller: CodeType | None) -> None:
        tb = self.buffer.current()
        if not tb.skip & SKIP_FUNCTION:
            tb.record((code, caller))

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        return {PY_START: hotpath.function_entry(self.buffer.local, self.buffer.attach, depth)}
