"""``fentry report --format folded``: folded stacks for flame graph tools.

One line per distinct stack, ``outer;inner;leaf WEIGHT``, as Brendan
Gregg's ``stackcollapse`` scripts write them (``flamegraph.pl``, inferno,
speedscope and others read them).  Frames are ``MODULE:QUALNAME``, fentry's
symbols.  Stacks of all threads and processes are added together, as a
flame graph does.

``--weight time`` (the default): the stack's self time, in microseconds --
the time spent in the call itself, not in the traced calls it made.  The
weights add up to the traced time: the sum of the durations of the
outermost traced calls of every thread (rounded as a whole: each line is
the running total rounded, less the one before it; a stack whose share
rounds to nothing is left out).  A generator or coroutine is in the stack
only from each resume to its yield.  Calls still open when the trace ends
count up to the thread's last timestamp.

``--weight calls``: how many calls ended with that stack.  The function
tracer records entries only, no durations and no stacks: its lines are
``caller;function COUNT`` (the caller as recorded, ``<top>`` for none), and
its weight is always the call count.

Memory grows with the number of distinct stacks, never with the trace.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from .calls import BEGIN, CALL, END, EVENT, CallSink, Op, ThreadCalls


class FoldedReport(CallSink):
    """Adds up each stack's weight; writes the lines when the recording is read."""

    def __init__(self, out: BinaryIO, weight: str = "time") -> None:
        super().__init__(out)
        self.by_calls = weight == "calls"
        self.weights: dict[str, int] = {}       # stack -> ns of self time, or calls
        self.counts: dict[str, int] = {}        # caller;function -> calls (function tracer)
        self.events_left_out = 0
        self.names: dict[object, str] = {}

    def new_thread(self, st: ThreadCalls) -> None:
        st.data = []        # the open calls: [path, start, time in traced callees]

    def _name(self, code: Any) -> str:
        name = self.names.get(code)
        if name is None:
            name = code.name if code.module else code.co_qualname
            name = self.names[code] = name.replace(";", ":").replace(" ", "_").replace("\n", "_")
        return name

    def thread_ops(self, st: ThreadCalls, ops: list[Op]) -> None:
        stack = st.data
        weights = self.weights
        names = self.names
        by_calls = self.by_calls
        for op in ops:
            kind = op[0]
            if kind == BEGIN:
                name = names.get(op[2]) or self._name(op[2])
                stack.append([f"{stack[-1][0]};{name}" if stack else name, op[1], 0])
            elif kind == END:
                if not stack:
                    continue
                path, start, inner = stack.pop()
                dur = op[1] - start
                if stack:
                    stack[-1][2] += dur
                weights[path] = weights.get(path, 0) + (1 if by_calls else dur - inner)
            elif kind == CALL:
                name = names.get(op[2]) or self._name(op[2])
                caller = op[3]
                path = f"{names.get(caller) or self._name(caller)};{name}" if caller is not None \
                    else f"<top>;{name}"
                self.counts[path] = self.counts.get(path, 0) + 1
            elif kind == EVENT:
                self.events_left_out += 1

    def close(self) -> None:
        if self.events_left_out:
            self.notes.append(f"{self.events_left_out} probe events left out: folded stacks "
                              "have no place for them (perfetto and chrome have)")
        if self.counts and not self.by_calls:
            self.notes.append("the function tracer records no durations: its folded weights "
                              "are call counts")
        lines = [f"{path} {n}\n" for path, n in sorted(self.counts.items())]
        if self.by_calls:
            lines += [f"{path} {n}\n" for path, n in sorted(self.weights.items())]
        else:
            # Rounded as a whole, so that the weights add up to the total.
            total = told = 0
            for path, ns in sorted(self.weights.items()):
                total += ns
                us = (total + 500) // 1000 - told
                if us > 0:
                    lines.append(f"{path} {us}\n")
                    told += us
        self.write("".join(lines).encode("utf-8", "surrogatepass"))
        self.flush_out()
