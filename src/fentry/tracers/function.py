"""The ``function`` tracer: one record per call of a traced function."""

from __future__ import annotations

from types import CodeType
from collections.abc import Callable

from .. import arch, hotpath
from ..ftrace import FtraceOps
from . import output
from .ring_buffer import RingBuffer, ThreadBuffer

PY_START = arch.EVENTS.PY_START


class FunctionOps(FtraceOps):
    """Records ``(seq, ts, code, caller_code)`` on each traced entry."""

    outermost = True

    def __init__(self, buffer: RingBuffer) -> None:
        super().__init__(self.function_trace_call)
        self.buffer = buffer

    def function_trace_call(self, ip, parent_ip, ops, regs) -> None:
        """The four-argument form, for callers of ``func`` itself."""
        self._record(ip.code, None if parent_ip is None else parent_ip.code)

    def _record(self, code, caller) -> None:
        local = self.buffer.local
        tb = getattr(local, "tb", None) or self.buffer.attach()
        tb.record((code, caller))

    def handlers(self, code: CodeType, module: str, depth: int) -> dict[int, Callable]:
        return {PY_START: hotpath.function_entry(self.buffer.local, self.buffer.attach, depth)}


class FunctionReader:
    """Formats function records: ``task-tid [000] ..... ts: func <-parent``.

    This is where the trace's cost is paid, so it is written for speed: one
    format string per thread, one comprehension per thread's records.
    """

    def __init__(self, options: dict[str, bool]) -> None:
        self.parent = options.get("print-parent", True)

    def header(self) -> str:
        return output.FUNCTION_COLUMNS

    def lines(self, per_thread: list[tuple[ThreadBuffer, list]]) -> list[str]:
        texts, stamps = [], []
        for tb, records in per_thread:
            prefix = output.task(tb) + " [000] ....."
            if self.parent:
                fmt = prefix + " %5d.%06d: %s <-%s\n"
                texts.append([fmt % (r[1] // 1_000_000_000, r[1] // 1000 % 1_000_000, r[2].co_qualname,
                                     "<top>" if r[3] is None else r[3].co_qualname)
                              if r[2].__class__ is CodeType else output.event_line(prefix, r)
                              for r in records])
            else:
                fmt = prefix + " %5d.%06d: %s\n"
                texts.append([fmt % (r[1] // 1_000_000_000, r[1] // 1000 % 1_000_000, r[2].co_qualname)
                              if r[2].__class__ is CodeType else output.event_line(prefix, r)
                              for r in records])
            stamps.append([rec[1] for rec in records])
        return output.merge_lines(stamps, texts)

    def flush(self) -> list[str]:
        return []
