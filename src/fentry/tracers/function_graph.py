"""The ``function_graph`` tracer: entries and exits, nested, with durations.

Python's counterpart of the kernel's return trampolines is the set of exit
events: PY_RETURN, PY_YIELD (a generator or coroutine leaves, and PY_RESUME
re-enters it), and PY_UNWIND (a frame left by an exception; global-only in
CPython, so it costs a callback per unwound frame while this tracer runs).
PY_THROW (``gen.throw()``, ``close()``, cancellation) re-enters like a resume.
``text.GraphReader`` reads the records as the kernel's function_graph text.

With ``funcgraph-retval`` a return's record carries the value returned, and
with ``funcgraph-args`` an entry's the arguments (the kernel's graph entry
and return records with args and retval): other handlers, picked here only
when the option is on, so with the options off nothing differs.
"""

from __future__ import annotations

from types import CodeType, FrameType

from .. import arch, hotpath
from ..events.fetch import FAULT, parameters, shown
from ..ftrace import FtraceOps, Handlers
from ..hotpath import Ip
from ..raw import ENTRY, RESUME, RETURN, THROW, UNWIND, YIELD
from .ring_buffer import RingBuffer

E = arch.EVENTS
# The parameters funcgraph-args keeps of a call (ctrampolines/graph_values.c's
# GRAPH_MAX_ARGS); the line shows ``...`` for the rest.
MAX_ARGS = 32


class GraphOps(FtraceOps):
    """Records ``(seq, ts, kind, code[, exception type])`` on entry and exit."""

    local_events = E.PY_START | E.PY_RESUME | E.PY_RETURN | E.PY_YIELD
    global_events = E.PY_UNWIND | E.PY_THROW
    outermost = True

    def __init__(self, buffer: RingBuffer, retval: bool = False, args: bool = False) -> None:
        super().__init__(self.graph_entry)
        self.buffer = buffer
        self.retval = retval        # funcgraph-retval
        self.args = args            # funcgraph-args

    def graph_entry(self, ip: Ip, parent_ip: Ip | None, ops: FtraceOps, regs: FrameType | None) -> None:
        """The four-argument form, for callers of ``func`` itself."""
        self.buffer.current().record((ENTRY, ip.code))

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        local, attach = self.buffer.local, self.buffer.attach
        return {E.PY_START: hotpath.graph_args_event(local, attach, ENTRY, shown, FAULT,
                                                     min(len(parameters(code)), MAX_ARGS), depth)
                if self.args else hotpath.graph_event(local, attach, ENTRY, 2),
                E.PY_RESUME: hotpath.graph_event(local, attach, RESUME, 2),
                E.PY_RETURN: hotpath.graph_retval_event(local, attach, RETURN, shown, FAULT)
                if self.retval else hotpath.graph_event(local, attach, RETURN),
                E.PY_YIELD: hotpath.graph_event(local, attach, YIELD),
                E.PY_UNWIND: hotpath.graph_exc_event(local, attach, UNWIND),
                E.PY_THROW: hotpath.graph_event(local, attach, THROW)}
