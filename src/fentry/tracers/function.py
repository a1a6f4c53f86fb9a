"""The ``function`` tracer: one record per call of a traced function."""

from __future__ import annotations

from time import perf_counter_ns
from types import CodeType
from typing import Callable

from .. import arch, hotpath
from ..ftrace import FtraceOps
from . import output
from .ring_buffer import RingBuffer, ThreadBuffer, merge_by_time

PY_START = arch.EVENTS.PY_START


class FunctionOps(FtraceOps):
    """Records ``(seq, ts, code, caller_code)`` on each traced entry."""

    def __init__(self, buffer: RingBuffer) -> None:
        super().__init__(self.function_trace_call)
        self.buffer = buffer

    def function_trace_call(self, ip, parent_ip, ops, regs) -> None:
        """The four-argument form, for callers of ``func`` itself."""
        self._record(ip.code, None if parent_ip is None else parent_ip.code)

    def _record(self, code, caller) -> None:
        local = self.buffer.local
        tb = getattr(local, "tb", None) or self.buffer.attach()
        tb.append((next(tb.seq), perf_counter_ns(), code, caller))

    def handlers(self, code: CodeType, module: str, depth: int) -> dict[int, Callable]:
        return {PY_START: hotpath.function_entry(self.buffer.local, self.buffer.attach, depth)}


class FunctionReader:
    """Formats function records: ``task-tid [000] ..... ts: func <-parent``."""

    def __init__(self, options: dict[str, bool]) -> None:
        self.parent = options.get("print-parent", True)

    def header(self) -> str:
        return output.FUNCTION_COLUMNS

    def lines(self, per_thread: list[tuple[ThreadBuffer, list]]) -> list[str]:
        out: list[str] = []
        append = out.append
        name = output.func_name
        tasks: dict[int, str] = {}
        for tb, (_, ts, code, caller) in merge_by_time(per_thread):
            t = tasks.get(id(tb))
            if t is None:
                t = tasks[id(tb)] = output.task(tb)
            if self.parent:
                append(f"{t} [000] ..... {output.timestamp(ts)}: {name(code)} <-{name(caller)}\n")
            else:
                append(f"{t} [000] ..... {output.timestamp(ts)}: {name(code)}\n")
        return out

    def flush(self) -> list[str]:
        return []
