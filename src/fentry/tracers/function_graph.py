"""The ``function_graph`` tracer: entries and exits, nested, with durations.

Python's counterpart of the kernel's return trampolines is the set of exit
events: PY_RETURN, PY_YIELD (a generator or coroutine leaves, and PY_RESUME
re-enters it), and PY_UNWIND (a frame left by an exception; global-only in
CPython, so it costs a callback per unwound frame while this tracer runs).
PY_THROW (``gen.throw()``, ``close()``, cancellation) re-enters like a resume.
``text.GraphReader`` reads the records as the kernel's function_graph text.

set_graph_function, set_graph_notrace, max_graph_depth and tracing_thresh
select what is recorded, in the hot path (``hotpath.graph_gated_event``);
with none of them set the handlers are the plain ones, which keep no state.

With ``funcgraph-retval`` a return's record carries the value returned, and
with ``funcgraph-args`` an entry's the arguments (the kernel's graph entry
and return records with args and retval): other handlers, picked here only
when the option is on, so with the options off nothing differs.  Under a
selection the gated handlers take the values too: a selected entry or
return carries exactly what it would without one (with tracing_thresh the
lone exit record carries none).

With ``funcgraph-c`` the traced code objects get CALL too, and a call of a
C function (or a C type's method) from one of them is recorded as an entry
at CALL and an exit at C_RETURN or C_RAISE, of a stand-in code object named
after the function: a leaf ``len();`` with its duration.  Every call the
traced code makes then pays a callback (a Python function's call too, which
records nothing).  Not under a selection.
"""

from __future__ import annotations

import itertools
from types import CodeType, FrameType
from typing import Any

from .. import arch, ftrace, hotpath
from ..events.fetch import FAULT, parameters, shown
from ..ftrace import FilterHash, FtraceOps, Handlers
from ..hotpath import G_FILTERED, G_FUNC, G_NOTRACE, Ip
from ..raw import ENTRY, RESUME, RETURN, THROW, UNWIND, YIELD
from .ring_buffer import SKIP_FUNCTION, RingBuffer

E = arch.EVENTS
# The parameters funcgraph-args keeps of a call (ctrampolines/graph_values.c's
# GRAPH_MAX_ARGS); the line shows ``...`` for the rest.
MAX_ARGS = 32

# Each set of gated handlers is made for one selection: a thread's state
# kept for another starts over (hotpath.graph_gated_event).
_generations = itertools.count(1)
_NO_LIMIT = 2**31 - 1


class GraphLimits:
    """``max_graph_depth`` and ``tracing_thresh``: the top level's, for every
    instance's function_graph, as the kernel's ``fgraph_max_depth`` and
    ``tracing_thresh`` are global."""

    def __init__(self) -> None:
        self.max_depth = 0      # 0: unlimited
        self.thresh_us = 0      # 0: off

    def set(self, max_depth: int | None = None, thresh_us: int | None = None) -> None:
        """Change them; every function_graph tracer running makes its handlers again."""
        if max_depth is not None:
            self.max_depth = max_depth
        if thresh_us is not None:
            self.thresh_us = thresh_us
        for ops in ftrace.registered_ops():
            if isinstance(ops, GraphOps):
                ops.reselect()


LIMITS = GraphLimits()

# funcgraph-c's stand-ins: a code object per C function's qualified name
# (``len``, ``dict.get``), what records and readers name it by.
_STANDINS: dict[str, CodeType] = {}
_STANDIN_CACHE = hotpath.CodeTable()     # (the C hot path's, by PyMethodDef)
_TEMPLATE = compile("", "<C function>", "exec")
# What a C_RAISE's record says was raised: sys.monitoring does not say what.
C_RAISED = "(unknown)"


def c_standin(c: Any) -> CodeType:
    """The stand-in code object of C function ``c``."""
    name = c.__qualname__
    code = _STANDINS.get(name)
    if code is None:
        code = _STANDINS.setdefault(name, _TEMPLATE.replace(co_name=c.__name__, co_qualname=name))
    return code


class GraphOps(FtraceOps):
    """Records ``(seq, ts, kind, code[, exception type])`` on entry and exit."""

    local_events = E.PY_START | E.PY_RESUME | E.PY_RETURN | E.PY_YIELD
    global_events = E.PY_UNWIND | E.PY_THROW
    outermost = True

    def __init__(self, buffer: RingBuffer, options: dict[str, bool] | None = None) -> None:
        super().__init__(self.graph_entry)
        self.buffer = buffer
        # set_graph_function and set_graph_notrace (the instance's, once started)
        self.graph = FilterHash()
        self.graph_notrace = FilterHash()
        self.gen = next(_generations)
        options = options or {}
        self.retval = options.get("funcgraph-retval", False)
        self.args = options.get("funcgraph-args", False)
        self.ccalls = options.get("funcgraph-c", False)
        if self.ccalls:
            self.local_events = GraphOps.local_events | E.CALL

    def selecting(self) -> bool:
        """Whether a selection is set (set_graph_function, set_graph_notrace,
        max_graph_depth, tracing_thresh): the gated handlers are in use."""
        return not (self.graph.empty and self.graph_notrace.empty and not LIMITS.max_depth
                    and not LIMITS.thresh_us)

    def reselect(self) -> None:
        """The selection changed: make the handlers again, on every code traced."""
        self.gen = next(_generations)
        if self.registered:
            ftrace.refresh_handlers(self)

    def graph_entry(self, ip: Ip, parent_ip: Ip | None, ops: FtraceOps, regs: FrameType | None) -> None:
        """The four-argument form, for callers of ``func`` itself."""
        tb = self.buffer.current()
        if not tb.skip & SKIP_FUNCTION:
            tb.record((ENTRY, ip.code))

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        local, attach = self.buffer.local, self.buffer.attach
        limits = LIMITS
        if self.selecting():
            role = ((G_FUNC if self.graph.matches(module, code) else 0)
                    | (G_NOTRACE if self.graph_notrace.matches(module, code) else 0)
                    | (0 if self.graph.empty else G_FILTERED))
            # (a depth past a C int is no limit: no stack gets that deep)
            sel = (role, min(limits.max_depth, _NO_LIMIT), limits.thresh_us * 1000, self.gen)
            g = hotpath.graph_gated_event
            # With the value options, a selected entry (return) records what
            # graph_args_event (graph_retval_event) would.
            retval = (3, shown, FAULT) if self.retval else ()
            args = (2, shown, FAULT, min(len(parameters(code)), MAX_ARGS), depth) if self.args else (2,)
            # Exits first: while handlers are replaced (reselect), an entry
            # kept by new ones always has its exit seen by new ones.
            return {E.PY_RETURN: g(local, attach, RETURN, *sel, *retval),
                    E.PY_YIELD: g(local, attach, YIELD, *sel),
                    E.PY_UNWIND: g(local, attach, UNWIND, *sel),
                    E.PY_START: g(local, attach, ENTRY, *sel, *args),
                    E.PY_RESUME: g(local, attach, RESUME, *sel, 2),
                    E.PY_THROW: g(local, attach, THROW, *sel)}
        handlers = {E.PY_START: hotpath.graph_args_event(local, attach, ENTRY, shown, FAULT,
                                                         min(len(parameters(code)), MAX_ARGS), depth)
                    if self.args else hotpath.graph_event(local, attach, ENTRY, 2),
                    E.PY_RESUME: hotpath.graph_event(local, attach, RESUME, 2),
                    E.PY_RETURN: hotpath.graph_retval_event(local, attach, RETURN, shown, FAULT)
                    if self.retval else hotpath.graph_event(local, attach, RETURN),
                    E.PY_YIELD: hotpath.graph_event(local, attach, YIELD),
                    E.PY_UNWIND: hotpath.graph_exc_event(local, attach, UNWIND),
                    E.PY_THROW: hotpath.graph_event(local, attach, THROW)}
        if self.ccalls:
            c = hotpath.graph_c_event
            handlers[E.CALL] = c(local, attach, ENTRY, c_standin, _STANDIN_CACHE)
            handlers[E.C_RETURN] = c(local, attach, RETURN, c_standin, _STANDIN_CACHE)
            handlers[E.C_RAISE] = c(local, attach, UNWIND, c_standin, _STANDIN_CACHE, C_RAISED)
        return handlers
