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
the running total rounded, less the one before it, in the order written;
a stack whose share rounds to nothing is left out).  A generator or coroutine is in the stack
only from each resume to its yield.  Calls still open when the trace ends
count up to the thread's last timestamp.

``--weight calls``: how many calls ended with that stack.  The function
tracer records entries only, no durations and no stacks: its lines are
``caller;function COUNT`` (the caller as recorded, ``<top>`` for none), and
its weight is always the call count.

Memory grows with the number of distinct stacks, never with the trace,
nor with their depth: stacks are kept as a tree of frames (a stack is a
node: its parent stack and its leaf), so a stack of depth D costs one node,
not a string of D names.  The lines are written depth first, each sibling
set sorted by name, a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from .calls import BEGIN, CALL, END, EVENT, CallSink, Op, ThreadCalls


class FoldedReport(CallSink):
    """Adds up each stack's weight; writes the lines when the recording is read."""

    def __init__(self, out: BinaryIO, weight: str = "time") -> None:
        super().__init__(out)
        self.by_calls = weight == "calls"
        # The tree of stacks: node 0 is the root (no frame); a node's stack
        # is its parent's plus one frame name.
        self.nodes: dict[tuple[int, str], int] = {}     # (parent, name) -> node
        self.parent: list[int] = [0]
        self.leaf: list[str] = [""]
        self.weights: list[int] = [0]       # node -> ns of self time, or calls
        self.counts: dict[str, int] = {}        # caller;function -> calls (function tracer)
        self.events_left_out = 0
        self.names: dict[object, str] = {}

    def _node(self, parent: int, name: str) -> int:
        node = self.nodes.get((parent, name))
        if node is None:
            node = self.nodes[(parent, name)] = len(self.parent)
            self.parent.append(parent)
            self.leaf.append(name)
            self.weights.append(0)
        return node

    def new_thread(self, st: ThreadCalls) -> None:
        st.data = []        # the open calls: [node, start, time in traced callees]

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
        nodes = self.nodes
        by_calls = self.by_calls
        for op in ops:
            kind = op[0]
            if kind == BEGIN:
                name = names.get(op[2]) or self._name(op[2])
                parent = stack[-1][0] if stack else 0
                node = nodes.get((parent, name)) or self._node(parent, name)
                stack.append([node, op[1], 0])
            elif kind == END:
                if not stack:
                    continue
                node, start, inner = stack.pop()
                dur = op[1] - start
                if stack:
                    stack[-1][2] += dur
                weights[node] += 1 if by_calls else dur - inner
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
        self._write_lines(f"{path} {n}" for path, n in sorted(self.counts.items()))
        self._write_lines(self._stack_lines())
        self.flush_out()

    def _stack_lines(self) -> Iterator[str]:
        """The stacks' lines, depth first; time rounded as a whole, so that
        the weights add up to the total."""
        children: list[list[int]] = [[] for _ in self.parent]
        for (parent, _name), node in sorted(self.nodes.items(), key=lambda kv: kv[0][1]):
            children[parent].append(node)
        weights, leaf, by_calls = self.weights, self.leaf, self.by_calls
        total = told = 0
        path: list[str] = []
        todo: list[tuple[int, int]] = [(node, 0) for node in reversed(children[0])]
        while todo:
            node, depth = todo.pop()
            del path[depth:]
            path.append(leaf[node])
            n = weights[node]
            if by_calls:
                if n:
                    yield f"{';'.join(path)} {n}"
            elif n:
                total += n
                us = (total + 500) // 1000 - told
                if us > 0:
                    yield f"{';'.join(path)} {us}"
                    told += us
            todo.extend((child, depth + 1) for child in reversed(children[node]))

    def _write_lines(self, lines: Iterable[str], chunk: int = 1 << 20) -> None:
        """Write lines a chunk at a time: the output of deep stacks can be
        far larger than the tree it comes from."""
        buf: list[str] = []
        size = 0
        for line in lines:
            buf.append(line)
            size += len(line)
            if size >= chunk:
                buf.append("")
                self.write("\n".join(buf).encode("utf-8", "surrogatepass"))
                buf, size = [], 0
        if buf:
            buf.append("")
            self.write("\n".join(buf).encode("utf-8", "surrogatepass"))
