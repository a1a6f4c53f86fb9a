"""The stack tracer: ``stack_tracer_enabled``, ``stack_max_size``,
``stack_trace`` and ``stack_trace_filter`` (the kernel's trace_stack.c).

The kernel's watches the kernel stack, in bytes, on entry of every function
(or of those ``stack_trace_filter`` selects) and keeps the deepest it saw,
with its frames.  Here it is the Python stack of any thread, in frames: a
frame counts 1, so ``stack_max_size`` is the depth of the deepest stack
seen, in frames, and in ``stack_trace`` each frame's Size is 1 and its Depth
the frames from it to the bottom of its thread's stack (row 0: the function
whose entry was deepest).  One for the process (the kernel's is global),
over all threads: the deepest of any, its thread named on a ``#`` line
above the table.  Only a new maximum copies the stack (``hotpath.StackMax``).

The kernel switches it with ``/proc/sys/kernel/stack_tracer_enabled``; here
it is the top level's file ``stack_tracer_enabled`` (0 or 1).
"""

from __future__ import annotations

from types import CodeType

from .. import arch, ftrace, hotpath, pythreads
from ..ftrace import FilterHash, FtraceOps, Handlers
from ..symbols import SYMBOLS

E = arch.EVENTS

# trace_stack.c print_disabled, with fentry's switch.
DISABLED = ("#\n"
            "#  Stack tracer disabled\n"
            "#\n"
            "# To enable the stack tracer, either run the program with\n"
            "# 'fentry run --stack'\n"
            "# or 'echo 1 > stack_tracer_enabled'\n"
            "#\n")


class StackOps(FtraceOps):
    """The stack tracer's ops (trace_stack.c's ``trace_ops``): on entry of
    each function ``stack_trace_filter`` selects (all when empty), the stack's
    depth against the maximum."""

    def __init__(self, stack: hotpath.StackMax, filter_: FilterHash) -> None:
        super().__init__(self.stack_trace_call)
        self.stack = stack
        self.filter = filter_

    def stack_trace_call(self, ip: hotpath.Ip, parent_ip: hotpath.Ip | None, ops: FtraceOps,
                         regs: object) -> None:
        """The four-argument form, for callers of ``func`` itself (the
        caller's frame is the one checked)."""
        hotpath.stack_check(self.stack, 1)(ip.code, 0)

    def handlers(self, code: CodeType, module: str, depth: int) -> Handlers:
        return {E.PY_START: hotpath.stack_check(self.stack, depth)}


class StackTracer:
    """The process's stack tracer: its switch, its filter, and its maximum."""

    def __init__(self) -> None:
        self.filter = FilterHash()
        self.stack = hotpath.StackMax()
        self.ops: StackOps | None = None

    @property
    def enabled(self) -> bool:
        return self.ops is not None

    def set_enabled(self, on: bool) -> None:
        """On: the functions of ``stack_trace_filter`` are watched (the
        maximum so far is kept, as the kernel's); off: no longer."""
        if on == self.enabled:
            return
        if on:
            ftrace.check_tool_id()      # ToolIdBusy, before anything changes
            ops = StackOps(self.stack, self.filter)
            ftrace.register_ftrace_function(ops)
            self.ops = ops
        else:
            assert self.ops is not None
            ftrace.unregister_ftrace_function(self.ops)
            self.ops = None

    def set_max(self, frames: int) -> None:
        """A write to ``stack_max_size`` (0: the next entry starts anew); the
        frames kept stay until a deeper stack replaces them, as the kernel's."""
        self.stack.max = frames

    def rows(self) -> tuple[str, list[str]]:
        """The deepest stack's thread (``NAME-TID``, "" when none) and
        locations, innermost first: ``func+0xOFF/0xSIZE [module]``, OFF the
        frame's instruction and SIZE its bytecode's length (``%pS``)."""
        frames = self.stack.frames()
        if not frames:
            return "", []
        thread = self.stack.thread
        name = (thread._name if thread is not None      # type: ignore[attr-defined]  # (no Python code of threading runs)
                else pythreads.default_name(self.stack.tid))
        return f"{name}-{self.stack.tid}", [location(code, offset) for code, offset in frames]


def location(code: CodeType, offset: int) -> str:
    """A frame as ``%pS`` prints a kernel address: ``func+0xOFF/0xSIZE [module]``."""
    symbol = SYMBOLS.lookup(code)
    where = f"{code.co_qualname}+{offset:#x}/{len(code.co_code):#x}"
    return f"{where} [{symbol.module}]" if symbol is not None else where


def stack_text(thread: str, locations: list[str], enabled: bool, max_size: int) -> str:
    """``stack_trace``: trace_stack.c's t_show table; the thread of the
    deepest stack on a ``#`` line first (the kernel's is one stack for all)."""
    n = len(locations)
    out = [f"# {thread}\n"] if thread else []
    out.append(f"        Depth    Size   Location    ({n} entries)\n"
               "        -----    ----   --------\n")
    if not enabled and not max_size:
        out.append(DISABLED)
    out.extend(f"{i:3d}) {n - i:8d}   {1:5d}   {where}\n" for i, where in enumerate(locations))
    return "".join(out)
