"""The hot path, in pure Python: event dispatchers and the handlers (trampolines).

Everything here runs on every traced event, so it is small, flat and
allocation-light.  ``_ctrampolines`` (C, built from ``ctrampolines/``)
implements the same interface with the same behaviour; ``hotpath`` picks one.
Handlers are made per traced code object, and find the traced frame ``depth``
frames up: 0 is the handler itself, 1 the dispatcher (or 2 when a list
function sits between them).
"""

from __future__ import annotations

import _thread
import ctypes
import os
import sys
from _thread import get_ident
from functools import partial
from time import clock_gettime_ns, perf_counter_ns, sleep
from types import CodeType, FrameType

__all__ = ["Ip", "CodeTable", "Ring", "Encoder", "PageQueue", "RECORD_BYTES", "DIRECT", "LISTED", "quiet_thread",
           "recursion_guard", "name_thread",
           "quiet_until_program", "audit_dispatch", "audit_hook_armed", "catch_sigterm",
           "use_tool_id_wrapper", "Switch", "ProbeTrace",
           "PROBE_MAX_ARGS",
           "offset_dispatcher", "entry_dispatcher", "dispatcher", "list_func", "call_dispatcher",
           "graph_c_event",
           "ops_entry", "function_entry", "graph_event", "graph_exc_event", "graph_gated_event",
           "graph_retval_event", "graph_args_event",
           "GRAPH_STACK", "G_FUNC", "G_NOTRACE", "G_FILTERED",
           "ProfileStat", "profile_event", "StackMax", "stack_check"]

import itertools
from collections import deque
from collections.abc import Callable

from .raw import (
    ENTER_KINDS as _ENTER_KINDS,
    ENTRY as _ENTRY,
    RETURN as _RETURN,
    THRESH_RETURN as _THRESH_RETURN,
    UNWIND as _UNWIND,
    Encoder,
    page as raw_page,
)
from .symbols import call_site

# Dispatch tables map id(code) -> handler; a dict does it in Python.
CodeTable = dict

_QUEUE_WAIT_STEP = 0.0001       # a full page queue: the writer lets the reader run...
_QUEUE_WAIT_STEPS = 2000        # ... for at most 200 ms (ctrampolines/pagequeue.c's ring_flush)

# The bytes of buffer_size_kb one record counts for: the C ring's slot
# (sizeof(Rec) on a 64-bit build), so that a buffer holds as many records on
# both hot paths and a trace overflows at the same place.  A record here
# really costs about 136 bytes (a 4-5 field tuple and its two integers): the
# pure-Python path uses some 3.4 times the memory for the same buffer_size_kb.
RECORD_BYTES = 40


class Ring:
    """One thread's ring of raw records, the oldest overwritten when full.

    Records are tuples whose first field is the thread's write count
    (``next(_seq)``), so what was lost is known at read time without any
    bookkeeping on the write path.  This module's handlers call ``_append``
    and ``next(_seq)`` (the C ones write the C ring directly).
    """
    __slots__ = ("_records", "_append", "_seq", "_consumed", "_mark", "lost_told", "_queue", "key",
                 "_flush_at", "_paging", "_overwrite", "_dropped", "_clock", "skip",
                 "_graph")

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be positive")
        self._records: deque = deque(maxlen=maxlen)
        self._append = self._records.append
        self._seq = itertools.count()
        self._consumed = 0      # records taken by consuming reads since the last clear
        self._mark = 0          # entries written, as known at the last consuming read
        self.lost_told = 0      # lost records a consuming reader has been told of
        self._queue: PageQueue | None = None
        self.key = 0
        self._flush_at = 0
        self._paging = _thread.RLock()      # it knows its owner (atomically)
        self._overwrite = True
        self._dropped = 0       # new records dropped when full, overwrite off
        self._clock: Callable[[], int] | None = None    # None: perf_counter_ns, the handlers'
        self.skip = 0           # the pid filters' verdict on this thread: 1 function tracers, 2 events
        self._graph: _GraphState | None = None  # graph_gated_event's

    @property
    def graph_untimed(self) -> int:
        """function_graph exits under tracing_thresh deeper than GRAPH_STACK: not timed."""
        return self._graph.untimed if self._graph is not None else 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def maxlen(self) -> int:
        return self._records.maxlen or 0

    def written(self) -> int:
        """Records written since the last clear (the kernel's entries-written)."""
        records = self._records
        return records[-1][0] + 1 if records else self._mark

    def lost(self) -> int:
        """Records overwritten (or dropped) before anyone read them."""
        return self.written() - self._consumed - len(self._records) + self._dropped

    @property
    def overwrite(self) -> bool:
        """Full: True overwrites the oldest record, False drops the new one."""
        return self._overwrite

    @overwrite.setter
    def overwrite(self, on: bool) -> None:
        self._overwrite = bool(on)
        self.set_queue(self._queue, self.key, self._flush_at)

    def set_clock(self, clock: int, shared: Switch) -> None:
        """-1: the default clock; -2: ``shared``'s counter; else a clock_gettime id."""
        if clock < -2:
            raise ValueError("set_clock() takes -1, -2 or a clock id")
        if clock == -1:
            self._clock = None
        elif clock == -2:
            self._clock = shared._count.__next__
        else:
            self._clock = partial(clock_gettime_ns, clock)
        self.set_queue(self._queue, self.key, self._flush_at)

    def snapshot(self) -> list:
        return list(self._records)

    def consume(self) -> list:
        records = self._records
        pop = records.popleft
        taken = []
        try:
            for _ in range(len(records)):
                taken.append(pop())
        except IndexError:      # a writer overwrote what we were about to take
            pass
        if taken:
            self._consumed += len(taken)
            self._mark = taken[-1][0] + 1
        return taken

    def clear(self) -> None:
        self._records.clear()
        self._seq = itertools.count()
        self._consumed = self._mark = self.lost_told = self._dropped = 0
        if self._graph is not None:
            self._graph.untimed = 0     # (counted with the records: a count of the trace's)

    def page(self, encoder: Encoder) -> bytes:
        """Every record, taken, as raw stream messages (raw.page)."""
        lost = self.lost() - self.lost_told
        records = self.consume()
        out = bytearray()
        count = 0
        for rec in records:
            mark = len(out)
            try:
                encoder._record(out, rec)
                count += 1
            except Exception:       # one record that cannot be encoded: dropped, not the rest
                del out[mark:]
        if lost > 0:
            self.lost_told += lost
        first = records[0][0] if records else 0
        return raw_page(self.key, lost, first, count, bytes(out))

    def set_queue(self, queue: PageQueue | None, key: int, flush_at: int) -> None:
        """With a queue, the writer moves its records into it, as a page, when
        it holds ``flush_at`` of them (see ctrampolines/pagequeue.c)."""
        self._queue, self.key = queue, key
        self._flush_at = max(1, flush_at) if queue is not None else 0
        records = self._records
        # What a record goes through, innermost first; each only when on, so
        # the defaults cost nothing (the C ring_reserve's order).
        append_record = records.append
        clock = self._clock
        if clock is not None:
            def append_record(rec, store=append_record):  # hot path
                store((rec[0], clock(), *rec[2:]))
        if not self._overwrite:
            maxlen = self.maxlen

            def append_record(rec, store=append_record):  # hot path
                if len(records) < maxlen:
                    store(rec)
                else:       # dropped: it takes no sequence number (the next one has it)
                    self._dropped += 1
                    self._seq = itertools.count(rec[0])
        if queue is None:
            self._append = append_record
            return
        mark = self._flush_at

        def append(rec):  # hot path
            append_record(rec)
            if len(records) >= mark:
                self._flush(False)
        self._append = append

    def flush(self) -> None:
        """Move every record (and what was lost) into the queue, as a page."""
        self._flush(True)

    def after_fork(self) -> None:
        """In a forked child: a reader of the parent may have been paging this
        ring at the fork, in a thread that does not exist here."""
        self._paging = _thread.RLock()

    def _flush(self, force: bool) -> None:
        """As ctrampolines/pagequeue.c's ring_flush.  A lock keeps a writer's flush and a
        reader's from splitting one ring's records into pages out of order
        (C does it in one call, under the GIL); a flush that a signal
        handler's drain would start inside another, in the same thread, is
        left to the one under way."""
        queue = self._queue
        if queue is None or (not force and not self._records):
            return
        if not force and queue.bytes >= queue.cap:
            for _ in range(_QUEUE_WAIT_STEPS):      # let the reader run (as pagequeue.c)
                if queue.bytes < queue.cap or queue._stalled:
                    break
                sleep(_QUEUE_WAIT_STEP)
            if queue.bytes >= queue.cap:
                queue._stalled = True
                return          # full: the ring overwrites, as with no reader
        if self._paging._is_owned():      # type: ignore[attr-defined]  # RLock's own test
            return          # a signal handler's drain inside this thread's flush: it finishes
        self._paging.acquire()
        try:
            data = self.page(queue.encoder)
            if data:
                queue._pages.append(data)
                queue.bytes += len(data)
                if queue._wake_fd >= 0:
                    try:
                        os.write(queue._wake_fd, b"\1")
                    except OSError:
                        pass
        finally:
            self._paging.release()

    def record(self, fields: tuple) -> None:
        """Write ``(seq, ts, *fields)`` (for callers outside the hot path)."""
        if fields.__class__ is not tuple:
            raise TypeError("record() takes a tuple of fields")
        self._append((next(self._seq), perf_counter_ns(), *fields))

    def resize(self, maxlen: int) -> None:
        """Keep the newest records that fit; the dropped ones count as lost."""
        if maxlen < 1:
            raise ValueError("maxlen must be positive")
        self._records = deque(self._records, maxlen=maxlen)
        self.set_queue(self._queue, self.key, self._flush_at)


class PageQueue:
    """Pages of raw records on their way to a reader (see ctrampolines/pagequeue.c)."""
    __slots__ = ("_pages", "bytes", "cap", "encoder", "_wake_fd", "_stalled")

    def __init__(self, encoder: Encoder, cap: int, wake_fd: int) -> None:
        self._pages: list[bytes] = []
        self.bytes = 0
        self.cap = cap
        self.encoder = encoder
        self._wake_fd = wake_fd
        self._stalled = False

    def take(self) -> list[bytes]:
        """Every page waiting, in order; the queue empties."""
        pages, self._pages = self._pages, []
        self.bytes = 0
        self._stalled = False
        return pages

_getframe = sys._getframe
_DISABLE = sys.monitoring.DISABLE


class Ip:
    """A site in Python code: ``code`` and bytecode ``offset`` (``ip``, ``parent_ip``)."""
    __slots__ = ("code", "offset")

    def __init__(self, code: CodeType, offset: int) -> None:
        self.code = code
        self.offset = offset

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Ip) and other.code is self.code
                and other.offset == self.offset)

    def __hash__(self) -> int:
        return hash((id(self.code), self.offset))

    def __repr__(self) -> str:
        return f"{self.code.co_qualname}+{self.offset:#x}"


# Where a Python handler finds the traced frame (sys._getframe(depth)): 0 is
# the handler, 1 the dispatcher (DIRECT), and a list function adds one (LISTED).
DIRECT = 2
LISTED = 3

# -- fentry's own threads

# Idents of fentry's own threads (the agent's): their events are ignored, so
# nothing they run, stdlib code included, is ever traced.
_quiet: set[int] = set()


def quiet_thread(on: bool) -> bool:
    """Ignore (or stop ignoring) the calling thread's events; whether it was quiet."""
    ident = get_ident()
    was = ident in _quiet
    if on:
        _quiet.add(ident)
    else:
        _quiet.discard(ident)
    return was


# prctl(PR_SET_NAME), through ctypes loaded here, where the agent is set up
# (loaded in an agent's thread, its files would take the lowest free
# descriptors while the program runs).
# (The function itself, here: finding it runs ctypes' Python code, which an
# agent's thread calling it before it is quiet would have traced.)
_PR_SET_NAME = 15
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def name_thread(name: str) -> None:
    """The calling thread's kernel name (comm, 15 bytes at most), with no
    descriptor (writing /proc/self/task/TID/comm takes the lowest free
    number for a moment, and the program's open() in another thread would
    get the next one)."""
    if _prctl(_PR_SET_NAME, name.encode(), 0, 0, 0) < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def recursion_guard(owner: object, func: Callable[..., object]) -> Callable[..., object]:
    """``func`` itself: pure Python cannot check, without a frame of its own,
    that a callback has frames to run in (ctrampolines/guard.c can), so at
    the program's recursion limit a callback's frame fails as it would."""
    return func


# The thread that waits, quiet, for the interpreter to start the program
# (see ctrampolines/quiet.c's quiet_until_program); 0: none.  Pure Python cannot
# afford an audit hook (a Python call on every audited operation, id() and
# sys._getframe among them, for the rest of the process): the entry
# dispatcher sees the program's module code start instead.
_awaiting_program = 0


def quiet_until_program() -> None:
    """The calling thread is quiet until the program's module code starts
    (``<module>`` run as ``__main__``): what the interpreter does until then
    is not the program's.  Only while fentry traces (the entry dispatcher
    sees it start); else the thread is simply not quiet."""
    global _awaiting_program
    _awaiting_program = get_ident()
    quiet_thread(True)


# The audit tracepoints' hook (ctrampolines/audit.c): a Python audit hook,
# made once per process in a namespace of its own (not this module's
# globals), closing over its flag only -- the dispatcher while armed, None
# after -- so that off it holds nothing of fentry's.  (Off, its cost is a
# Python call per audited operation, the C twin's a pointer test.)
_AUDIT_HOOK = """
def make(flag):
    def audit_hook(event, args):
        dispatch = flag[0]
        if dispatch is not None:
            try:
                dispatch(event, args)
            except Exception:       # a hook that raises aborts the operation: never
                pass
    return audit_hook
"""
_audit_flag: list = [None]
_audit_hook_added = False


def audit_dispatch(dispatch) -> None:
    """``dispatch(event, args)`` on every audit event (the process's one
    hook, added at the first call); None: off, nothing held."""
    global _audit_hook_added
    if dispatch is not None and not callable(dispatch):
        raise TypeError("audit_dispatch() takes a callable or None")
    if dispatch is not None and not _audit_hook_added:
        namespace: dict = {"__builtins__": {"Exception": Exception}}
        exec(compile(_AUDIT_HOOK, __file__, "exec"), namespace)    # (__file__: fentry's, never traced)
        sys.addaudithook(namespace.pop("make")(_audit_flag))
        _audit_hook_added = True
    _audit_flag[0] = dispatch


def audit_hook_armed() -> bool:
    """Whether the audit hook calls a dispatcher now."""
    return _audit_flag[0] is not None


def _program_starts(code: CodeType) -> bool:
    """PY_START of the program's module code, in the thread awaiting it."""
    global _awaiting_program
    if code.co_name != "<module>" or get_ident() != _awaiting_program \
            or _getframe(2).f_globals.get("__name__") != "__main__":
        return False
    _awaiting_program = 0
    quiet_thread(False)
    return True


def catch_sigterm(fd: int, standin: int = 0) -> None:
    """On SIGTERM, run the Python handler of signal ``standin`` (-1 for
    ``fd``: back to the default action).

    Pure Python can only do this with a Python-level SIGTERM handler, which the
    program would see in ``signal.getsignal()``; the C hot path's is invisible.
    """
    import signal
    if fd < 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    else:
        signal.signal(signal.SIGTERM, signal.getsignal(standin))


def use_tool_id_wrapper(monitoring: object, original: Callable[..., None],
                        hook: Callable[..., object]) -> Callable[..., None]:
    """``sys.monitoring.use_tool_id`` while fentry holds a tool id:
    ``hook(*args)`` (fentry moves off the id asked for, if it is its own),
    then ``original(*args)``.

    Pure Python can only make it a Python function: its repr says
    ``<function ...>`` where the C one's says ``<built-in function ...>``, and
    an error of ``original`` (the ValueError of an id in use) shows this
    frame in its traceback."""
    def use_tool_id(*args: object) -> None:
        try:
            hook(*args)
        except Exception:
            pass
        return original(*args)
    use_tool_id.__qualname__ = "use_tool_id"
    use_tool_id.__module__ = getattr(original, "__module__", None)  # type: ignore[assignment]  # (or None)
    use_tool_id.__doc__ = getattr(original, "__doc__", None)
    return use_tool_id


# -- dispatchers: the sys.monitoring callbacks
#
# Nothing may propagate out of them: CPython raises what a callback raises
# in the traced frame, with the callback's frames in its traceback.  These
# callbacks are Python frames, so at the program's recursion limit the
# handler, discovery, or even the fault report can fail with RecursionError
# -- and so can ``id()``, whose audit event runs any Python audit hook (the
# start-up one of quiet_until_program stays for good): all are caught here,
# in place, with no further call (a helper would be one more frame, failing
# in turn).  What is left is CPython failing to enter the dispatcher
# itself, which raises in the traced frame with no frame of ours.
# The dispatchers below repeat one shape on purpose: each is the flat body
# of its own callback, as the C twin's; a shared helper would be a frame.


def entry_dispatcher(table: dict, discover, fault):
    """PY_START: the code's handler, or discovery on its first call."""
    def dispatch_entry(code, offset):  # hot path, repeated inline: a helper is a frame more (above)
        if _quiet and get_ident() in _quiet:
            try:
                if not (_awaiting_program and _program_starts(code)):
                    return
            except Exception:
                return
        try:
            handler = table[id(code)]
        except KeyError:
            try:
                handler = discover(code)
            except Exception:       # (recursion limit) decided at a later call
                return
            if handler is None:
                return _DISABLE
        except Exception:
            return
        try:
            handler(code, offset)
        except Exception:
            try:
                fault(code)
            except Exception:
                pass
    return dispatch_entry


def dispatcher(table: dict, fault, nargs: int, disable: bool):
    """Any other event: the code's handler; a miss is DISABLEd where CPython allows it."""
    miss = _DISABLE if disable else None
    if nargs == 2:
        def dispatch(code, offset):  # hot path, repeated inline: a helper is a frame more (above)
            if _quiet and get_ident() in _quiet:
                return
            try:
                handler = table[id(code)]
            except KeyError:
                return miss
            except Exception:
                return
            try:
                handler(code, offset)
            except Exception:
                try:
                    fault(code)
                except Exception:
                    pass
    else:
        def dispatch(code, offset, arg):  # type: ignore[misc]  # hot path, repeated inline: a helper is a frame more (above)
            if _quiet and get_ident() in _quiet:
                return
            try:
                handler = table[id(code)]
            except KeyError:
                return miss
            except Exception:
                return
            try:
                handler(code, offset, arg)
            except Exception:
                try:
                    fault(code)
                except Exception:
                    pass
    return dispatch


def offset_dispatcher(table: dict, fault):
    """INSTRUCTION: the handler of the probed offset; any other offset is DISABLEd."""
    def dispatch_offset(code, offset):  # hot path, repeated inline: a helper is a frame more (above)
        if _quiet and get_ident() in _quiet:
            return
        try:
            handler = table[id(code)][offset]
        except KeyError:
            return _DISABLE
        except Exception:
            return
        try:
            handler(code, offset)
        except Exception:
            try:
                fault(code)
            except Exception:
                pass
    return dispatch_offset


def list_func(pairs: list, nargs: int):
    """One code traced by several ops: call each handler; count a raise on its ops."""
    if nargs == 2:
        def list_func2(code, offset):  # hot path
            for ops, handler in pairs:
                try:
                    handler(code, offset)
                except Exception:
                    ops.errors += 1
        return list_func2

    if nargs == 4:      # CALL, C_RETURN, C_RAISE: (code, offset, callable, arg0)
        def list_func4(code, offset, callable, arg0):  # hot path
            for ops, handler in pairs:
                try:
                    handler(code, offset, callable, arg0)
                except Exception:
                    ops.errors += 1
        return list_func4

    def list_func3(code, offset, arg):  # hot path
        for ops, handler in pairs:
            try:
                handler(code, offset, arg)
            except Exception:
                ops.errors += 1
    return list_func3


def call_dispatcher(table: dict, probes: dict, fault):
    """CALL, C_RETURN or C_RAISE: the code's handler (``table[id(code)]``,
    funcgraph-c's), then the callable's (``probes[id(callable)]``, else, for
    a C function bound to an object that is not a module (``f = d.get``),
    ``probes[id(type(callable))]``: C probes), each called ``(code, offset,
    callable, arg0)``.  Never DISABLE: what a call site calls may change."""
    def dispatch_c_call(code, offset, callable, arg0):  # hot path
        if _quiet and get_ident() in _quiet:
            return
        handler = table.get(id(code))
        if handler is not None:
            try:
                handler(code, offset, callable, arg0)
            except Exception:
                try:
                    fault(code)
                except Exception:
                    pass
        handler = probes.get(id(callable))
        if handler is None:
            # a C method bound beforehand: by its type (a module's function is never bound so)
            if type(callable) is not _BuiltinFunction or type(callable.__self__) in _MODULE_TYPES:  # type: ignore[attr-defined]
                return
            handler = probes.get(id(_BuiltinFunction))
            if handler is None:
                return
        try:
            handler(code, offset, callable, arg0)
        except Exception:
            try:
                fault(code)
            except Exception:
                pass
    return dispatch_c_call


# -- handlers

def ops_entry(func, ops, save_regs: bool, depth: int):
    """An FtraceOps entry: ``func(ip, parent_ip, ops, regs)``; ``ip`` is made
    per call (a handler kept in a table must not keep its code alive)."""
    if save_regs:
        def ops_entry_regs(code, offset):  # hot path
            frame = _getframe(depth)
            caller = frame.f_back
            if caller is None:
                return func(Ip(code, 0), None, ops, frame)
            c = caller.f_code
            func(Ip(code, 0), Ip(c, call_site(c, caller.f_lasti)), ops, frame)
        return ops_entry_regs
    cdepth = depth + 1

    def ops_entry_noregs(code, offset):  # hot path
        try:
            caller = _getframe(cdepth)
        except ValueError:
            return func(Ip(code, 0), None, ops, None)
        c = caller.f_code
        func(Ip(code, 0), Ip(c, call_site(c, caller.f_lasti)), ops, None)
    return ops_entry_noregs


def function_entry(local, attach, depth: int):
    """The function tracer: records ``(seq, ts, code, caller_code)``."""
    cdepth = depth + 1

    def function_entry(code, offset):  # hot path
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        if tb.skip & 1:         # set_ftrace_pid left this thread out
            return
        try:
            caller = _getframe(cdepth).f_code
        except ValueError:
            caller = None
        tb._append((next(tb._seq), perf_counter_ns(), code, caller))
    return function_entry


def graph_event(local, attach, kind: int, nargs: int = 3):
    """The function_graph tracer: records ``(seq, ts, kind, code)``; an
    event's handler of ``nargs`` arguments (2: PY_START, PY_RESUME).

    Exactly as many parameters as the event passes: CPython 3.13 lets a call
    that fills in a default go one frame deeper past the recursion limit than
    an exact one, and an entry handler that can run where its exit's cannot
    would leave a call open in the trace."""
    if nargs == 2:
        def graph_event2(code, offset):  # hot path
            try:
                tb = local.tb
            except AttributeError:
                tb = attach()
            if tb.skip & 1:
                return
            tb._append((next(tb._seq), perf_counter_ns(), kind, code))
        return graph_event2

    def graph_event(code, offset, arg):  # hot path
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        if tb.skip & 1:
            return
        tb._append((next(tb._seq), perf_counter_ns(), kind, code))
    return graph_event


def graph_exc_event(local, attach, kind: int):
    """function_graph on unwind: records ``(seq, ts, kind, code, exception type)``."""
    def graph_exc_event(code, offset, exc):  # hot path
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        if tb.skip & 1:
            return
        tb._append((next(tb._seq), perf_counter_ns(), kind, code, type(exc)))
    return graph_exc_event


def graph_c_event(local, attach, kind: int, standin, cache, exc=None):
    """funcgraph-c: at CALL (``kind`` ENTRY), C_RETURN (RETURN) or C_RAISE
    (UNWIND, with ``exc``) of a traced code's call to a C function or a C
    type's method, records ``(seq, ts, kind, stand-in)`` (``exc`` after it,
    when given), as graph_event; any other callable, nothing.  The stand-in
    is ``standin(callable)``, a code object named after the function; the C
    twin keeps it in ``cache`` by the function's PyMethodDef."""
    def graph_c_event(code, offset, callable, arg0):  # hot path
        t = type(callable)
        if t is not _BuiltinFunction and t is not _MethodDescriptor:
            return
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        if tb.skip & 1:
            return
        if exc is None:
            tb._append((next(tb._seq), perf_counter_ns(), kind, standin(callable)))
        else:
            tb._append((next(tb._seq), perf_counter_ns(), kind, standin(callable), exc))
    return graph_c_event


_BuiltinFunction = type(len)
_MethodDescriptor = type(str.join)
_MODULE_TYPES = (type(sys), type(None))      # what a module's C function is bound to


# -- function_graph's values (funcgraph-retval, funcgraph-args; see ctrampolines/graph_values.c)

def graph_retval_event(local, attach, kind: int, shown, fault):
    """function_graph at PY_RETURN with ``funcgraph-retval``: records
    ``(seq, ts, kind, code, (value,))``, the value kept as the C twin keeps
    it (an int of 64 bits, a float, None, a bool) or ``shown(value)``, its
    safe text (``fault`` if even that fails): a record never keeps the
    returned object alive."""
    def graph_retval_event(code, offset, retval):  # hot path
        t = retval.__class__
        raised = None
        if not (t is float or t is bool or retval is None or (t is int and _I64_MIN <= retval <= _I64_MAX)):
            try:
                retval = shown(retval)
            except BaseException as e:      # (KeyboardInterrupt: recorded first, as the C twin does)
                retval, raised = fault, e
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        tb._append((next(tb._seq), perf_counter_ns(), kind, code, (retval,)))
        if raised is not None:
            raise raised
    return graph_retval_event


def graph_args_event(local, attach, kind: int, shown, fault, count: int, depth: int):
    """function_graph at PY_START with ``funcgraph-args``: records
    ``(seq, ts, kind, code, values)``, the values of the frame's first
    ``count`` fast locals (its parameters, ``*args`` and ``**kwargs`` too),
    each kept as ``graph_retval_event`` keeps a value; ``fault`` for an
    unbound one."""
    def graph_args_event(code, offset):  # hot path
        f_locals = _getframe(depth).f_locals
        values = []
        raised = None
        for name in code.co_varnames[:count]:
            v = f_locals.get(name, fault)
            t = v.__class__
            if not (v is fault or t is float or t is bool or v is None
                    or (t is int and _I64_MIN <= v <= _I64_MAX)):
                try:
                    v = shown(v)
                except BaseException as e:  # (KeyboardInterrupt: recorded first, as the C twin does)
                    values.append(fault)
                    raised = e
                    break
            values.append(v)
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        tb._append((next(tb._seq), perf_counter_ns(), kind, code, tuple(values)))
        if raised is not None:
            raise raised
    return graph_args_event


_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1



# -- function_graph's selection (see ctrampolines/graph.h)

GRAPH_STACK = 1024      # activations kept per thread (graph.h's)
G_FUNC, G_NOTRACE, G_FILTERED = 1, 2, 4     # a code's role: graph.h's


class _GraphState:
    """One thread's activations, for graph_gated_event (graph.h's GraphState)."""
    __slots__ = ("gen", "depth", "gate", "notrace", "untimed", "code", "start")

    def __init__(self) -> None:
        self.gen = -1
        self.depth = 0
        self.gate = self.notrace = -1
        self.untimed = 0
        self.code: list[CodeType | None] = [None] * GRAPH_STACK
        self.start = [0] * GRAPH_STACK


def _graph_state(tb: Ring, gen: int) -> _GraphState:
    """The ring's state for selection ``gen``, started over if it followed another."""
    s = tb._graph
    if s is None:
        s = tb._graph = _GraphState()
    s.gen = gen
    s.depth = 0
    s.gate = s.notrace = -1
    return s


def graph_gated_event(local, attach, kind: int, role: int, max_depth: int, thresh_ns: int,
                      gen: int, nargs: int = 3, shown=None, fault=None, count: int = 0,
                      depth: int = 0):
    """graph_event (or graph_exc_event, for UNWIND) under a selection:
    records only the selected activations -- under a ``G_FUNC`` code when
    ``G_FILTERED``, not under a ``G_NOTRACE`` one, at depth below
    ``max_depth`` (0: any) -- keeping the thread's open activations in its
    ring.  With ``shown`` (not None), a recorded ENTRY carries its arguments
    and a RETURN its value, as graph_args_event and graph_retval_event
    record them.  With ``thresh_ns``, no entry is recorded, and an exit only
    when the call lasted that long: ``(seq, ts, THRESH_RETURN, code, ns,
    depth)``, without values."""
    is_func, is_notrace, filtered = role & G_FUNC, role & G_NOTRACE, role & G_FILTERED
    values = shown is not None

    # The bodies are repeated inline: a helper would be a frame more (see the dispatchers).
    if kind == _ENTRY and values:
        def graph_enter_args(code, offset):  # hot path
            try:
                tb = local.tb
            except AttributeError:
                tb = attach()
            if tb.skip & 1:         # set_ftrace_pid left this thread out
                return
            s = tb._graph
            if s is None or s.gen != gen:
                s = _graph_state(tb, gen)
            d = s.depth
            s.depth = d + 1
            if d < GRAPH_STACK:
                s.code[d] = code
                s.start[d] = perf_counter_ns() if thresh_ns else 0
            if s.notrace >= 0:
                return
            if is_notrace:
                s.notrace = d
                return
            if s.gate < 0:
                if is_func:
                    s.gate = d
                elif filtered:
                    return
            if thresh_ns or (max_depth and d >= max_depth):
                return
            # graph_args_event's values
            f_locals = _getframe(depth).f_locals
            kept = []
            raised = None
            for name in code.co_varnames[:count]:
                v = f_locals.get(name, fault)
                t = v.__class__
                if not (v is fault or t is float or t is bool or v is None
                        or (t is int and _I64_MIN <= v <= _I64_MAX)):
                    try:
                        v = shown(v)
                    except BaseException as e:  # (KeyboardInterrupt: recorded first, as the C twin does)
                        kept.append(fault)
                        raised = e
                        break
                kept.append(v)
            tb._append((next(tb._seq), perf_counter_ns(), kind, code, tuple(kept)))
            if raised is not None:
                raise raised
        return graph_enter_args

    if kind in _ENTER_KINDS:
        if nargs == 2:
            def graph_enter2(code, offset):  # hot path
                try:
                    tb = local.tb
                except AttributeError:
                    tb = attach()
                if tb.skip & 1:         # set_ftrace_pid left this thread out
                    return
                s = tb._graph
                if s is None or s.gen != gen:
                    s = _graph_state(tb, gen)
                d = s.depth
                s.depth = d + 1
                if d < GRAPH_STACK:
                    s.code[d] = code
                    s.start[d] = perf_counter_ns() if thresh_ns else 0
                if s.notrace >= 0:
                    return
                if is_notrace:
                    s.notrace = d
                    return
                if s.gate < 0:
                    if is_func:
                        s.gate = d
                    elif filtered:
                        return
                if thresh_ns or (max_depth and d >= max_depth):
                    return
                tb._append((next(tb._seq), perf_counter_ns(), kind, code))
            return graph_enter2

        def graph_enter3(code, offset, arg):  # hot path
            try:
                tb = local.tb
            except AttributeError:
                tb = attach()
            if tb.skip & 1:         # set_ftrace_pid left this thread out
                return
            s = tb._graph
            if s is None or s.gen != gen:
                s = _graph_state(tb, gen)
            d = s.depth
            s.depth = d + 1
            if d < GRAPH_STACK:
                s.code[d] = code
                s.start[d] = perf_counter_ns() if thresh_ns else 0
            if s.notrace >= 0:
                return
            if is_notrace:
                s.notrace = d
                return
            if s.gate < 0:
                if is_func:
                    s.gate = d
                elif filtered:
                    return
            if thresh_ns or (max_depth and d >= max_depth):
                return
            tb._append((next(tb._seq), perf_counter_ns(), kind, code))
        return graph_enter3

    exc = kind == _UNWIND
    retval = values and kind == _RETURN

    def graph_leave(code, offset, arg):  # hot path
        now = perf_counter_ns() if thresh_ns else 0
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        if tb.skip & 1:         # set_ftrace_pid left this thread out
            return
        s = tb._graph
        if s is None or s.gen != gen:
            s = _graph_state(tb, gen)
        k = s.depth - 1
        if k < 0:
            return                  # an exit never seen entering
        if k < GRAPH_STACK:
            stack = s.code
            while k >= 0 and stack[k] is not code:
                k -= 1
            if k < 0:
                return
            start = s.start[k]
        else:
            start = -1              # beyond the stack: trusted, not timed
        s.depth = k
        if s.notrace >= k:
            own = s.notrace == k
            s.notrace = -1
            if own:
                return
        elif s.notrace >= 0:
            return
        inside = not filtered or 0 <= s.gate <= k
        if s.gate >= k:
            s.gate = -1
        if not inside or (max_depth and k >= max_depth):
            return
        if not thresh_ns:
            if exc:
                tb._append((next(tb._seq), perf_counter_ns(), kind, code, type(arg)))
            elif retval:            # graph_retval_event's value
                t = arg.__class__
                raised = None
                if not (t is float or t is bool or arg is None
                        or (t is int and _I64_MIN <= arg <= _I64_MAX)):
                    try:
                        arg = shown(arg)
                    except BaseException as e:  # (KeyboardInterrupt: recorded first, as the C twin does)
                        arg, raised = fault, e
                tb._append((next(tb._seq), perf_counter_ns(), kind, code, (arg,)))
                if raised is not None:
                    raise raised
            else:
                tb._append((next(tb._seq), perf_counter_ns(), kind, code))
        elif start < 0:
            s.untimed += 1
        elif now - start >= thresh_ns:
            tb._append((next(tb._seq), perf_counter_ns(), _THRESH_RETURN, code, now - start, k))
    return graph_leave


# -- the function profiler (see ctrampolines/profile.c)

# How many generator or coroutine calls under way a thread follows with
# sleep-time (see ctrampolines/profile.c's PROF_CALLS): the oldest is dropped.
_PROFILE_CALLS = 64


class ProfileStat:
    """One thread's function profile: per function, an entry
    ``[hits, time, time_sq, self, self_sq, code]`` (nanoseconds), the
    stack of activations under way, ``[entry, start, sub]`` (``sub``: the
    time of the profiled calls it made), and with sleep-time the generator
    calls under way, id(frame) -> ``[entry, start, sub]``, oldest first."""
    __slots__ = ("_entries", "_stack", "_calls")

    def __init__(self) -> None:
        self._entries: dict[int, list] = {}
        self._stack: list[list] = []
        self._calls: dict[int, list] = {}

    @property
    def depth(self) -> int:
        """Activations under way."""
        return len(self._stack)

    def stats(self) -> list[tuple]:
        """``[(code, hits, time, time_sq, self, self_sq)]``: per function called, in nanoseconds."""
        return [(e[5], e[0], e[1], e[2], e[3], e[4]) for e in list(self._entries.values())
                if e[0] or e[1]]

    def _entry(self, code: CodeType) -> list:
        e = self._entries.get(id(code))
        if e is None:
            e = self._entries[id(code)] = [0, 0, 0, 0, 0, code]
        return e


def _entry_add(e: list, dt: int, sub: int) -> None:
    own = dt - sub if dt > sub else 0
    e[1] += dt
    e[2] += dt * dt
    e[3] += own
    e[4] += own * own


def profile_event(local, attach, kind: int, nargs: int, depth: int = DIRECT):
    """The function profiler's handler of one code object: ``kind`` 0 at
    PY_START (a hit, and an activation begins), 1 at PY_RESUME or PY_THROW
    (an activation begins), 2 at PY_RETURN, PY_YIELD or PY_UNWIND (it ends);
    with sleep-time, a generator's or coroutine's 3 at PY_START (a call
    begins too), 4 at PY_YIELD (its activation ends, in the call) and 5 at
    PY_RETURN or PY_UNWIND (the call ends: its time from its first start).
    The thread's ProfileStat is ``local.ps``, made by ``attach()``.  Exactly
    ``nargs`` parameters, as graph_event's; the traced frame is
    ``sys._getframe(depth)``."""
    # (the ProfileStat last used, this code's entry in it): one assignment,
    # so that threads cannot mix its halves
    cache: tuple[ProfileStat | None, list] = (None, [])

    # The bodies are repeated inline: a helper would be a frame more (see the dispatchers).
    if kind == 3:
        def profile_gen_begin(code, offset):  # hot path
            nonlocal cache
            try:
                st = local.ps
            except AttributeError:
                st = attach()
            c = cache
            if c[0] is st:
                e = c[1]
            else:
                e = st._entry(code)
                cache = (st, e)
            e[0] += 1
            calls = st._calls
            key = id(_getframe(depth))
            calls.pop(key, None)        # (a generator closed suspended, its frame reused)
            if len(calls) >= _PROFILE_CALLS:
                del calls[next(iter(calls))]
            now = perf_counter_ns()
            calls[key] = [e, now, 0]
            st._stack.append([e, now, 0])
        return profile_gen_begin

    if kind != 2 and kind < 4:
        hit = kind == 0
        if nargs == 2:
            def profile_begin(code, offset):  # hot path
                nonlocal cache
                try:
                    st = local.ps
                except AttributeError:
                    st = attach()
                c = cache
                if c[0] is st:
                    e = c[1]
                else:
                    e = st._entry(code)
                    cache = (st, e)
                if hit:
                    e[0] += 1
                st._stack.append([e, perf_counter_ns(), 0])     # last: this handler's time is not the call's
            return profile_begin

        def profile_begin3(code, offset, arg):  # hot path
            nonlocal cache
            try:
                st = local.ps
            except AttributeError:
                st = attach()
            c = cache
            if c[0] is st:
                e = c[1]
            else:
                e = st._entry(code)
                cache = (st, e)
            if hit:
                e[0] += 1
            st._stack.append([e, perf_counter_ns(), 0])
        return profile_begin3

    if kind != 2:
        final = kind == 5

        def profile_gen_end(code, offset, arg):  # hot path
            now = perf_counter_ns()
            try:
                st = local.ps
            except AttributeError:
                return
            stack = st._stack
            d = len(stack)
            while d and stack[d - 1][0][5] is not code:
                d -= 1
            if not d:
                return
            e, start, sub = stack[d - 1]
            del stack[d - 1:]
            dt = now - start
            key = id(_getframe(depth))
            call = st._calls.get(key)
            if call is None or call[0] is not e:
                _entry_add(e, dt, sub)
            elif not final:
                call[2] += sub
            else:
                del st._calls[key]
                _entry_add(e, now - call[1], call[2] + sub)
            if d > 1:
                stack[d - 2][2] += dt
        return profile_gen_end

    def profile_end(code, offset, arg):  # hot path
        now = perf_counter_ns()
        try:
            stack = local.ps._stack
        except AttributeError:
            return              # nothing began in this thread
        # An exit whose activation was not seen counts nothing; activations
        # above it whose exits were not seen are dropped with it.
        d = len(stack)
        while d and stack[d - 1][0][5] is not code:
            d -= 1
        if not d:
            return
        e, start, sub = stack[d - 1]
        del stack[d - 1:]
        dt = now - start
        own = dt - sub if dt > sub else 0
        e[1] += dt
        e[2] += dt * dt
        e[3] += own
        e[4] += own * own
        if d > 1:
            stack[d - 2][2] += dt
    return profile_end


# -- probe events

class Switch:
    """A ring buffer's shared state the hot path reads: tracing_on, and the
    count of its counter clock."""
    __slots__ = ("_on", "_count")

    def __init__(self, on: bool = True) -> None:
        self._on = bool(on)
        self._count = itertools.count(1)    # (next() on it is atomic under the GIL)

    @property
    def on(self) -> bool:
        """True: records are written."""
        return self._on

    @on.setter
    def on(self, on: bool) -> None:
        self._on = bool(on)         # as the C one: whatever is set reads back as a bool


# Fetchargs the C ProbeTrace fetches itself, at most (more: the Python path).
PROBE_MAX_ARGS = 16


class ProbeTrace:
    """One probe event's hit (the kernel's kprobe_trace_func).

    The C one fetches, counts, filters and records without a Python call
    when it can, and calls ``slow`` for the rest; here every hit is ``slow``:
    the event's own Python path, which does all of it -- ``slow(frame)`` at
    an entry, offset or line, ``slow(frame, value, raised)`` at a return.
    So ``nhit`` (the hits this object took itself) stays 0, ``nmissed``
    counts only returns whose entry values were dropped (``maxactive``), and
    ``specs`` and the filter program are not needed.

    A return probe given ``entry`` keeps, per activation, what
    ``entry(frame)`` fetched at its PY_START, until the PY_RETURN or
    PY_UNWIND of that activation takes it (exactly the events that fire the
    probe): ``slow(frame, value, raised, entered)``.  Activations are told
    apart by their frame, so recursion and threads each find their own; one
    that was running before the probe (attached mid-call) finds none and
    records nothing, as the kernel has no kretprobe instance for it.  At most
    ``maxactive`` are kept (a generator that CPython 3.13 closes with no
    event leaves its values behind): the oldest goes, its return a miss.
    """
    __slots__ = ("event", "_slow", "_entry", "_active", "_maxactive", "nhit", "nmissed")

    def __init__(self, event, specs, local, attach, switch: Switch, snapshot, fault, slow,
                 entry=None, maxactive: int = 0) -> None:
        if entry is not None and maxactive < 1:
            raise ValueError("ProbeTrace: an entry store needs maxactive >= 1")
        self.event = event
        self._slow = slow
        self._entry = entry
        # id(frame) -> (code, entered): the frame object lives as long as the
        # activation (made at its PY_START), and the code guards against an
        # id reused by a frame made later, for an activation not seen entering.
        self._active: dict[int, tuple] = {}
        self._maxactive = maxactive
        self.nhit = self.nmissed = 0

    def set_filter(self, program, matches) -> None:
        """The event's filter (the Python path reads it from the event)."""

    def set_triggers(self, triggers, post) -> None:
        """The event's triggers (the Python path runs them from the event)."""

    def entry(self, code: CodeType, offset: int, depth: int):
        """The handler of the probe at (code, offset): PY_START or INSTRUCTION."""
        slow = self._slow

        def probe_hit(code, offset):  # hot path
            slow(_getframe(depth))
        return probe_hit

    def exit(self, code: CodeType, depth: int, raised: bool):
        """The handler of the return probe on code: PY_RETURN, or PY_UNWIND if ``raised``."""
        slow = self._slow
        if self._entry is None:
            def probe_exit(code, offset, value):  # hot path
                slow(_getframe(depth), value, raised)
            return probe_exit
        take = self._active.pop

        def probe_exit_entered(code, offset, value):  # hot path
            frame = _getframe(depth)
            entered = take(id(frame), None)
            if entered is not None and entered[0] is code:      # else: not seen entering
                slow(frame, value, raised, entered[1])
        return probe_exit_entered

    def start(self, code: CodeType, depth: int):
        """A return probe's PY_START handler: with ``entry``, what stores the
        values it fetches; else nothing to do (the return does it all)."""
        entry = self._entry
        if entry is None:
            return _nothing
        active, maxactive = self._active, self._maxactive

        def probe_start(code, offset):  # hot path
            frame = _getframe(depth)
            key = id(frame)
            if len(active) >= maxactive and key not in active:
                self._drop_oldest()
            active[key] = (code, entry(frame))
        return probe_start

    def _drop_oldest(self) -> None:
        """The oldest activation's entry values go (its return will be a miss)."""
        try:
            active = self._active
            active.pop(next(iter(active)), None)        # insertion order: the oldest
            self.nmissed += 1
        except (RuntimeError, StopIteration):           # another thread changed it meanwhile
            pass

    def __call__(self, kp, regs) -> None:
        """As a kprobe pre_handler(kp, regs)."""
        self._slow(regs)


def _nothing(code, offset):  # hot path
    pass


# -- the stack tracer (see ctrampolines/stack.c)

class StackMax:
    """The deepest Python stack seen: ``max`` frames, kept as ``[(code,
    offset)]`` innermost first, and its thread (native id, and its Thread
    in the program's ``threading._active``, if it has imported threading)."""
    __slots__ = ("max", "tid", "thread", "_frames")

    def __init__(self) -> None:
        self.max = 0
        self.tid = 0
        self.thread = None
        self._frames: list[tuple[CodeType, int]] = []

    def frames(self) -> list[tuple[CodeType, int]]:
        """``[(code, offset)]`` of the deepest stack, innermost first."""
        return list(self._frames)


def stack_check(stack: StackMax, depth: int):
    """The stack tracer's PY_START handler: the depth of the calling
    thread's stack, in frames (the traced one is ``depth`` up), against
    ``stack.max``; a new maximum keeps the stack.  C reads the depth from
    CPython's recursion count; here f_back is walked, to the same number."""
    def stack_check(code, offset):  # hot path
        frame = _getframe(depth)
        n = 0
        f: FrameType | None = frame
        while f is not None:
            n += 1
            f = f.f_back
        if n <= stack.max:
            return
        frames = [(code, 0)]
        f = frame.f_back
        while f is not None:
            c = f.f_code
            frames.append((c, call_site(c, f.f_lasti)))
            f = f.f_back
        stack._frames = frames
        stack.tid = _thread.get_native_id()
        stack.thread = getattr(sys.modules.get("threading"), "_active", {}).get(get_ident())
        stack.max = n
    return stack_check
