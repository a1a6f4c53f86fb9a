"""The hot path's contract: what ``hotpath`` exports.

``_ctrampolines`` (C) and ``pytrampolines`` (pure Python) each export exactly
the names below (their ``__all__``), each class with exactly these public
methods and attributes, and behave the same; ``hotpath`` picks one and adds
``IMPLEMENTATION`` and ``WHY``.  ``tests/layers/test_hotpath_twins.py``
checks both modules against this file, and runs the unit tests of ``Ring``,
``CodeTable`` and the dispatchers on both; mypy checks the rest of fentry
against it.

Parameters before ``/`` are positional only, as the C functions take them.
A handler is what the dispatchers call: ``handler(code, offset)`` or
``handler(code, offset, arg)``, by event.  ``depth`` is where a Python
handler finds the traced frame (``sys._getframe(depth)``).
"""

import builtins
import threading
from collections.abc import Callable, Iterable
from types import CodeType, FrameType, ModuleType
from typing import Any, Final, Literal

# -- hotpath's own

IMPLEMENTATION: Literal["c", "python"]
"""Which hot path is in use."""
WHY: str
"""Why that one, in a few words (``fentry --version`` prints it)."""

# -- the twins'

type _Handler = Callable[..., object]
type _Fault = Callable[[CodeType], object]
type _Attach = Callable[[], Ring]

RECORD_BYTES: Final[int]
"""Bytes of ``buffer_size_kb`` one record counts for: the C ring's slot, 40
on a 64-bit build, on both paths (a pure-Python record takes ~136 bytes)."""
PROBE_MAX_ARGS: Final[int]
"""Fetchargs a ``ProbeTrace`` fetches itself, at most (more: the Python path)."""
DIRECT: Final[int]
"""Where a Python handler called by a dispatcher finds the traced frame:
1 in C (a C dispatcher adds no frame), 2 in Python (the dispatcher's)."""
LISTED: Final[int]
"""The same, called by a list function: 1 in C, 3 in Python."""
GRAPH_STACK: Final[int]
"""function_graph activations ``graph_gated_event`` keeps per thread."""
G_FUNC: Final[int]
"""A code's role for ``graph_gated_event``: in set_graph_function ..."""
G_NOTRACE: Final[int]
"""... in set_graph_notrace ..."""
G_FILTERED: Final[int]
"""... set_graph_function is set, so only its subtrees are recorded."""


class Ip:
    """A site in Python code: ``code`` and bytecode ``offset`` (``ip``, ``parent_ip``).
    Equal when the code is the same object and the offsets are equal."""
    def __init__(self, code: CodeType, offset: int) -> None: ...
    @property
    def code(self) -> CodeType: ...
    @property
    def offset(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...


class CodeTable:
    """A dispatch table, ``id(code) -> handler``, used as a dict (Python's is
    one: only these methods are the contract)."""
    def __init__(self) -> None: ...
    def __getitem__(self, key: int, /) -> Any: ...
    def __setitem__(self, key: int, value: Any, /) -> None: ...
    def __delitem__(self, key: int, /) -> None: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __len__(self) -> int: ...
    def get(self, key: int, default: Any = None, /) -> Any:
        """The handler of ``key``, or ``default``."""
    def pop(self, key: int, default: Any = ..., /) -> Any:
        """Remove ``key``: its handler, or ``default`` (KeyError without one)."""
    def clear(self) -> None:
        """Remove every entry."""
    def keys(self) -> Iterable[int]:
        """The ids in the table."""


class Encoder:
    """Ids for what raw records point at (code objects, events, types):
    ``fault`` is the value of a failed fetch, ``shown`` the type of a value
    kept as its safe text, ``fallback(value) -> str`` any other value's text.

    An id never names two objects: an object given an id is kept alive until
    ``take_refs`` hands it out, then held weakly (if it can be: code objects,
    events and types can), and its id is forgotten when it dies, so an object
    later at its address gets a new id (and is described anew)."""
    def __init__(self, fault: object, shown: type, fallback: Callable[[object], str], /) -> None: ...
    def take_refs(self) -> list[tuple[int, object]]:
        """``[(id, object)]``: the objects given ids since the last call, in id order."""
    def take_forgotten(self) -> list[int]:
        """The ids forgotten since the last call: their objects died."""


class PageQueue:
    """Pages of raw records on their way to a reader; a ring moves its
    records in when it holds its ``flush_at`` of them."""
    cap: int
    """Bytes that may wait; a writer finding it full waits up to 200 ms for
    the reader, then its ring overwrites as with no reader."""
    def __init__(self, encoder: Encoder, cap: int, wake_fd: int, /) -> None: ...
    def take(self) -> list[builtins.bytes]:
        """Every page waiting, in order; the queue empties."""
    @property
    def bytes(self) -> int:
        """Bytes waiting."""
    @property
    def encoder(self) -> Encoder:
        """The Encoder of its pages."""


class Ring:
    """One thread's ring of raw records, the oldest overwritten when full.

    A record reads as a tuple ``(seq, ts, ...)``: ``seq`` counts the ring's
    writes since the last clear, so what was lost is known when it is read."""
    lost_told: int
    """Lost records a consuming reader has been told of."""
    overwrite: bool
    """Full: True (the default) overwrites the oldest record; False drops the
    new one, which takes no ``seq`` and counts in ``lost``."""
    skip: int
    """The pid filters' verdict on this ring's thread: bit 1, the function
    tracers record nothing of it (``set_ftrace_pid``); bit 2, probe events
    (``set_event_pid``).  0 when made; the ring buffer sets it."""
    def __init__(self, maxlen: int, /) -> None:
        """``maxlen``: capacity in records (ValueError below 1)."""
    def __len__(self) -> int: ...
    @property
    def maxlen(self) -> int:
        """Capacity in records."""
    @property
    def key(self) -> int:
        """This ring's thread, in the raw stream (``set_queue``)."""
    @property
    def graph_untimed(self) -> int:
        """function_graph exits under tracing_thresh deeper than ``GRAPH_STACK``
        activations: not timed, so not recorded (``graph_gated_event``)."""
    def written(self) -> int:
        """Records written since the last clear (the kernel's entries-written)."""
    def lost(self) -> int:
        """Records overwritten (or dropped) before anyone read them."""
    def set_clock(self, clock: int, shared: Switch, /) -> None:
        """The clock of the records' ``ts`` (empty the ring after: records of
        two clocks do not compare): -1 the default (CLOCK_MONOTONIC ns, read
        from the TSC in C where it is the kernel's clocksource), -2 the counter
        of ``shared`` (1, 2, ... across every ring sharing it), else a
        ``time.CLOCK_*`` id, read with clock_gettime."""
    def snapshot(self) -> list[tuple[Any, ...]]:
        """The records, not consumed."""
    def consume(self) -> list[tuple[Any, ...]]:
        """Take the records."""
    def clear(self) -> None:
        """Empty the ring, counts too."""
    def resize(self, maxlen: int, /) -> None:
        """Keep the newest records that fit; the dropped ones count as lost."""
    def record(self, fields: tuple[Any, ...], /) -> None:
        """Write ``(seq, ts, *fields)`` (for callers outside the hot path)."""
    def page(self, encoder: Encoder, /) -> builtins.bytes:
        """Every record, taken, as raw stream messages (``raw.page``)."""
    def set_queue(self, queue: PageQueue | None, key: int, flush_at: int, /) -> None:
        """With a queue, the writer moves its records into it, as a page,
        when it holds ``flush_at`` of them; ``None``: they stay."""
    def flush(self) -> None:
        """Move every record (and what was lost) into the queue, as a page."""
    def after_fork(self) -> None:
        """In a forked child: no paging of this ring is under way."""


class Switch:
    """A ring buffer's shared state the hot path reads: tracing_on, and the
    count of its counter clock (``Ring.set_clock``)."""
    on: bool
    def __init__(self, on: bool = True) -> None: ...


class ProbeTrace:
    """One probe event's hit (the kernel's kprobe_trace_func): fetch, count,
    filter and record.  The C one does it without a Python call when it can
    (``specs``: the fetchargs, or None) and calls ``slow`` for the rest; the
    Python one calls ``slow`` for every hit: ``slow(frame)`` at an entry,
    offset or line, ``slow(frame, value, raised)`` at a return.

    A return probe with ``entry`` (its ``$argN`` fetchargs, fetched at entry:
    ``entry(frame)`` is their stored values, the ``"arg"`` specs' in C) keeps
    them per activation from its PY_START to its PY_RETURN or PY_UNWIND, and
    calls ``slow(frame, value, raised, entered)``; a return not seen entering
    records nothing.  At most ``maxactive`` activations are kept: the oldest
    goes, and its return counts in ``nmissed``."""
    def __init__(self, event: Any, specs: tuple[Any, ...] | None, local: threading.local,
                 attach: _Attach, switch: Switch, snapshot: Callable[[object], object],
                 fault: object, slow: Callable[..., None],
                 entry: Callable[[FrameType], tuple[object, ...]] | None = None,
                 maxactive: int = 0) -> None: ...
    @property
    def event(self) -> Any:
        """The probe event."""
    @property
    def nhit(self) -> int:
        """Hits this object took itself (always 0 in Python)."""
    @property
    def nmissed(self) -> int:
        """Of those, the ones where a fetch faulted; and returns whose entry
        values were dropped (``maxactive``)."""
    def set_filter(self, program: tuple[Any, ...] | None,
                   matches: Callable[[tuple[Any, ...]], bool] | None, /) -> None:
        """The event's filter: ``program`` for the C path (None: only
        ``matches``, the Python filter over a record's values)."""
    def set_triggers(self, triggers: Callable[[tuple[Any, ...]], object] | None,
                     post: Callable[[Any], None] | None, /) -> None:
        """Soft mode (the event has triggers; None: none): at each hit the C
        path calls ``triggers(values)`` with the fetched values, whatever
        ``tracing_on`` and the filter say, and records only if it answers
        True, or ``(True, post_list)``, then calls ``post(post_list)``.  Both
        find the probed frame as their caller's.  The Python one runs them
        from the event's own Python path."""
    def entry(self, code: CodeType, offset: int, depth: int, /) -> _Handler:
        """The handler of the probe at (code, offset): PY_START or INSTRUCTION."""
    def exit(self, code: CodeType, depth: int, raised: bool, /) -> _Handler:
        """The handler of the return probe on code: PY_RETURN, or PY_UNWIND if ``raised``."""
    def start(self, code: CodeType, depth: int, /) -> _Handler:
        """A return probe's PY_START handler: stores what ``entry`` fetches
        (without ``entry``: nothing to do)."""
    def __call__(self, kp: object, regs: FrameType, /) -> None:
        """As a kprobe ``pre_handler(kp, regs)``."""


class ProfileStat:
    """One thread's function profile (the kernel's per-CPU profile stat):
    per traced function its hits and times, counted in place by the
    ``profile_event`` handlers, and its activations under way."""
    def __init__(self) -> None: ...
    @property
    def depth(self) -> int:
        """Activations under way (begun and not yet ended)."""
    def stats(self) -> list[tuple[CodeType, int, int, int, int, int]]:
        """``[(code, hits, time, time_sq, self, self_sq)]`` per function
        called, in nanoseconds (ns² for the squares): ``time`` sums its
        activations, ``self`` the same less the time of the profiled calls
        each made.  C counts in clock ticks, and its squares in floating point."""


class StackMax:
    """The stack tracer's maximum: the deepest Python stack seen, in frames,
    the frames of that moment, and its thread, found in the program's
    ``threading._active`` if it has imported threading (fentry does not)."""
    max: int
    """The depth, in frames (``stack_max_size``); set it to 0 and the next
    traced entry starts a new maximum."""
    def __init__(self) -> None: ...
    @property
    def tid(self) -> int:
        """Its thread's native id (0: none yet)."""
    @property
    def thread(self) -> threading.Thread | None:
        """Its Thread (None: a thread threading did not start)."""
    def frames(self) -> list[tuple[CodeType, int]]:
        """``[(code, offset)]`` of the deepest stack, innermost first: the
        entered function at offset 0, then each caller at its call."""


def quiet_thread(on: bool, /) -> bool:
    """Ignore (or stop ignoring) the calling thread's events; whether it was quiet."""
def name_thread(name: str, /) -> None:
    """The calling thread's kernel name (comm, 15 bytes at most), with no
    descriptor: prctl(PR_SET_NAME)."""
def recursion_guard(owner: object, func: Callable[..., object], /) -> Callable[..., object]:
    """``func``, called only where it has the frames to run in: at the
    program's recursion limit a hit is counted in ``owner.nmissed`` instead,
    so that fentry's callback never turns into the program's RecursionError
    (the C hot path; the pure-Python one returns ``func`` itself)."""
def quiet_until_program() -> None:
    """The calling thread is quiet until the program's module code starts."""
def audit_dispatch(dispatch: Callable[[str, tuple[object, ...]], object] | None, /) -> None:
    """``dispatch(event, args)`` on every audit event, from the process's one
    audit hook (added at the first call: it cannot be removed); None: off,
    the hook holds nothing and costs one test."""
def audit_hook_armed() -> bool:
    """Whether the audit hook calls a dispatcher now."""
def catch_sigterm(fd: int, standin: int = 0, /) -> None:
    """On SIGTERM, write a byte to ``fd`` (C) and run the Python handler of
    signal ``standin``; ``fd`` -1: SIGTERM's default action again."""
def use_tool_id_wrapper(monitoring: ModuleType, original: Callable[[int, str], None],
                        hook: Callable[[int, str], object], /) -> Callable[[int, str], None]:
    """``sys.monitoring.use_tool_id`` while fentry holds a tool id:
    ``hook(*args)``, then ``original(*args)``."""


# -- dispatchers: the sys.monitoring callbacks (nothing propagates out of them)

def entry_dispatcher(table: CodeTable, discover: Callable[[CodeType], _Handler | None],
                     fault: _Fault, /) -> _Handler:
    """PY_START: the code's handler, or ``discover(code)`` on its first call
    (None: DISABLE); a handler that raises is reported to ``fault(code)``."""
def dispatcher(table: CodeTable, fault: _Fault, nargs: int, disable: bool, /) -> _Handler:
    """Any other event (``nargs`` 2 or 3): the code's handler; a miss
    returns DISABLE if ``disable`` (where CPython allows it)."""
def offset_dispatcher(table: CodeTable, fault: _Fault, /) -> _Handler:
    """INSTRUCTION: ``table[id(code)][offset]``; any other offset is DISABLEd."""
def list_func(pairs: list[tuple[Any, _Handler]], nargs: int, /) -> _Handler:
    """One code traced by several ops: call each ``(ops, handler)``; a
    handler that raises counts one on ``ops.errors``."""
def call_dispatcher(table: CodeTable, probes: CodeTable, fault: _Fault, /) -> _Handler:
    """CALL, C_RETURN or C_RAISE: the code's handler (``table[id(code)]``,
    funcgraph-c's), then the callable's (``probes[id(callable)]``, else, for
    a C function bound to an object that is not a module (``f = d.get``),
    ``probes[id(type(callable))]``: C probes), each called ``(code, offset,
    callable, arg0)``.  Never DISABLE: what a call site calls may change."""


# -- handlers (trampolines)

def ops_entry(func: Callable[..., object], ops: Any, save_regs: bool, depth: int, /) -> _Handler:
    """An FtraceOps entry: ``func(ip, parent_ip, ops, regs)``, ``ip`` the
    code's entry (made per call: no handler keeps its code alive), regs the
    traced frame if ``save_regs`` else None."""
def function_entry(local: threading.local, attach: _Attach, depth: int, /) -> _Handler:
    """The function tracer: records ``(seq, ts, code, caller_code)``."""
def graph_event(local: threading.local, attach: _Attach, kind: int, nargs: int = 3, /) -> _Handler:
    """The function_graph tracer: records ``(seq, ts, kind, code)``; a
    handler of ``nargs`` arguments (2: PY_START, PY_RESUME)."""
def graph_exc_event(local: threading.local, attach: _Attach, kind: int, /) -> _Handler:
    """function_graph on unwind: records ``(seq, ts, kind, code, exception type)``."""
def graph_gated_event(local: threading.local, attach: _Attach, kind: int, role: int, max_depth: int,
                      thresh_ns: int, gen: int, nargs: int = 3,
                      shown: Callable[[object], object] | None = None, fault: object = None,
                      count: int = 0, depth: int = 0, /) -> _Handler:
    """graph_event (graph_exc_event for UNWIND) under a selection: records
    only the activations selected -- under a code whose ``role`` has
    ``G_FUNC`` when ``G_FILTERED`` (set_graph_function), not under a
    ``G_NOTRACE`` one, at a depth below ``max_depth`` (0: any).  The
    thread's open activations are kept in its Ring (``GRAPH_STACK`` of them;
    deeper ones are counted, not matched), for selection ``gen``: one made
    for another starts over.  With ``thresh_ns`` no entry is recorded, and
    an exit only when the call lasted that long, as ``(seq, ts,
    THRESH_RETURN, code, duration_ns, depth)``.  With ``shown`` (not None),
    a recorded ENTRY carries the traced frame's first ``count`` parameters
    (``depth``: the traced frame's), as ``graph_args_event`` records them,
    and a recorded RETURN its value, as ``graph_retval_event``; a thresh
    record carries none."""
def graph_c_event(local: threading.local, attach: _Attach, kind: int,
                  standin: Callable[[object], CodeType], cache: CodeTable, exc: object = None,
                  /) -> _Handler:
    """funcgraph-c: at CALL (``kind`` ENTRY), C_RETURN (RETURN) or C_RAISE
    (UNWIND, with ``exc``) of a traced code's call to a C function or a C
    type's method, records ``(seq, ts, kind, stand-in)`` (``exc`` after it,
    when given), as graph_event; any other callable, nothing.  The stand-in
    is ``standin(callable)``, a code object named after the function; the C
    twin keeps it in ``cache`` by the function's PyMethodDef."""
def graph_retval_event(local: threading.local, attach: _Attach, kind: int,
                       shown: Callable[[object], object], fault: object, /) -> _Handler:
    """function_graph at PY_RETURN with ``funcgraph-retval``: records
    ``(seq, ts, kind, code, (value,))``: an int of 64 bits, a float, None or
    a bool as it is, anything else ``shown(value)`` (its safe text), so a
    record never keeps the returned object alive."""
def graph_args_event(local: threading.local, attach: _Attach, kind: int,
                     shown: Callable[[object], object], fault: object, count: int, depth: int,
                     /) -> _Handler:
    """function_graph at PY_START with ``funcgraph-args``: records
    ``(seq, ts, kind, code, values)``, the traced frame's first ``count``
    fast locals (its parameters), each kept as ``graph_retval_event`` keeps
    a value; ``fault`` for an unbound one.  ``depth``: the traced frame's."""
def profile_event(local: threading.local, attach: Callable[[], ProfileStat], kind: int,
                  nargs: int, depth: int = ..., /) -> _Handler:
    """The function profiler's handler of one code object, on the thread's
    ProfileStat (``local.ps``, made by ``attach()``): ``kind`` 0 at PY_START
    (a hit, and an activation begins), 1 at PY_RESUME or PY_THROW (an
    activation begins), 2 at PY_RETURN, PY_YIELD or PY_UNWIND (the innermost
    activation of that code ends; none seen: nothing).  With sleep-time, a
    generator's or coroutine's: 3 at PY_START (a hit, and a call begins in
    the traced frame, at most PROFILE_CALLS (64) of them followed per thread,
    the oldest dropped), 4 at PY_YIELD (its activation ends, kept in the
    call), 5 at PY_RETURN or PY_UNWIND (the call ends: its time is from its
    first start, the time suspended in; a call not followed counts the
    activation, as 2).  ``nargs``: the event's; ``depth``: the traced
    frame's (C ignores it: a handler adds no frame)."""
def stack_check(stack: StackMax, depth: int, /) -> _Handler:
    """The stack tracer's PY_START handler: if the calling thread's stack is
    deeper than ``stack.max`` frames, it is the new maximum (the only case
    that copies anything).  O(1) in C (CPython's own count of the thread's
    frames); Python walks the frames from the traced one, ``depth`` up."""
