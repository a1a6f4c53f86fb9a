"""The hot path, in pure Python: event dispatchers and the handlers (trampolines).

Everything here runs on every traced event, so it is small, flat and
allocation-light.  ``_ctrampolines`` (C) implements the same interface with
the same behaviour; ``hotpath`` picks one.  Handlers are made per traced code
object, and find the traced frame ``depth`` frames up: 0 is the handler
itself, 1 the dispatcher (or 2 when a list function sits between them).
"""

from __future__ import annotations

import _thread
import os
import sys
from _thread import get_ident
from time import perf_counter_ns, sleep
from types import CodeType

__all__ = ["Ip", "CodeTable", "Ring", "Encoder", "PageQueue", "RECORD_BYTES", "DIRECT", "LISTED", "quiet_thread",
           "quiet_until_program", "catch_sigterm", "use_tool_id_wrapper", "Switch", "ProbeTrace",
           "PROBE_MAX_ARGS",
           "offset_dispatcher", "entry_dispatcher", "dispatcher", "list_func",
           "ops_entry", "function_entry", "graph_event", "graph_exc_event"]

import itertools
from collections import deque
from collections.abc import Callable

from .raw import Encoder, page as raw_page

# Dispatch tables map id(code) -> handler; a dict does it in Python.
CodeTable = dict

QUEUE_WAIT_STEP = 0.0001        # a full page queue: the writer lets the reader run...
QUEUE_WAIT_STEPS = 2000         # ... for at most 200 ms (see _ctrampolines' ring_flush)

# What one record costs (a 4-5 field tuple and its two integers), for
# turning buffer_size_kb into a number of records.
RECORD_BYTES = 136


class Ring:
    """One thread's ring of raw records, the oldest overwritten when full.

    Records are tuples whose first field is the thread's write count
    (``next(seq)``), so what was lost is known at read time without any
    bookkeeping on the write path.  Writers call ``append`` and ``next(seq)``.
    """
    __slots__ = ("_records", "append", "seq", "_consumed", "_mark", "lost_told", "queue", "key",
                 "flush_at", "_paging")

    def __init__(self, maxlen: int) -> None:
        self._records: deque = deque(maxlen=maxlen)
        self.append = self._records.append
        self.seq = itertools.count()
        self._consumed = 0      # records taken by consuming reads since the last clear
        self._mark = 0          # entries written, as known at the last consuming read
        self.lost_told = 0      # lost records a consuming reader has been told of
        self.queue: PageQueue | None = None
        self.key = 0
        self.flush_at = 0
        self._paging = _thread.RLock()      # it knows its owner (atomically)

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
        """Records overwritten before anyone read them."""
        return self.written() - self._consumed - len(self._records)

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
        self.seq = itertools.count()
        self._consumed = self._mark = self.lost_told = 0

    def page(self, encoder: Encoder) -> bytes:
        """Every record, taken, as raw stream messages (raw.page)."""
        lost = self.lost() - self.lost_told
        records = self.consume()
        out = bytearray()
        count = 0
        for rec in records:
            mark = len(out)
            try:
                encoder.record(out, rec)
                count += 1
            except Exception:       # one record that cannot be encoded: dropped, not the rest
                del out[mark:]
        if lost > 0:
            self.lost_told += lost
        first = records[0][0] if records else 0
        return raw_page(self.key, lost, first, count, bytes(out))

    def set_queue(self, queue: PageQueue | None, key: int, flush_at: int) -> None:
        """With a queue, the writer moves its records into it, as a page, when
        it holds ``flush_at`` of them (see _ctrampolines' PageQueue)."""
        self.queue, self.key = queue, key
        self.flush_at = max(1, flush_at) if queue is not None else 0
        records = self._records
        if queue is None:
            self.append = records.append
            return
        append_record = records.append
        mark = self.flush_at

        def append(rec):  # hot path
            append_record(rec)
            if len(records) >= mark:
                self._flush(False)
        self.append = append

    def flush(self) -> None:
        """Move every record (and what was lost) into the queue, as a page."""
        self._flush(True)

    def after_fork(self) -> None:
        """In a forked child: a reader of the parent may have been paging this
        ring at the fork, in a thread that does not exist here."""
        self._paging = _thread.RLock()

    def _flush(self, force: bool) -> None:
        """As _ctrampolines' ring_flush.  A lock keeps a writer's flush and a
        reader's from splitting one ring's records into pages out of order
        (C does it in one call, under the GIL); a flush that a signal
        handler's drain would start inside another, in the same thread, is
        left to the one under way."""
        queue = self.queue
        if queue is None or (not force and not self._records):
            return
        if not force and queue.bytes >= queue.cap:
            for _ in range(QUEUE_WAIT_STEPS):       # let the reader run (see _ctrampolines)
                if queue.bytes < queue.cap or queue.stalled:
                    break
                sleep(QUEUE_WAIT_STEP)
            if queue.bytes >= queue.cap:
                queue.stalled = True
                return          # full: the ring overwrites, as with no reader
        if self._paging._is_owned():      # type: ignore[attr-defined]  # RLock's own test
            return          # a signal handler's drain inside this thread's flush: it finishes
        self._paging.acquire()
        try:
            data = self.page(queue.encoder)
            if data:
                queue.pages.append(data)
                queue.bytes += len(data)
                if queue.wake_fd >= 0:
                    try:
                        os.write(queue.wake_fd, b"\1")
                    except OSError:
                        pass
        finally:
            self._paging.release()

    def record(self, fields: tuple) -> None:
        """Write ``(seq, ts, *fields)`` (for callers outside the hot path)."""
        self.append((next(self.seq), perf_counter_ns(), *fields))

    def resize(self, maxlen: int) -> None:
        """Keep the newest records that fit; the dropped ones count as lost."""
        self._records = deque(self._records, maxlen=maxlen)
        self.set_queue(self.queue, self.key, self.flush_at)


class PageQueue:
    """Pages of raw records on their way to a reader (see _ctrampolines')."""
    __slots__ = ("pages", "bytes", "cap", "encoder", "wake_fd", "stalled")

    def __init__(self, encoder: Encoder, cap: int, wake_fd: int) -> None:
        self.pages: list[bytes] = []
        self.bytes = 0
        self.cap = cap
        self.encoder = encoder
        self.wake_fd = wake_fd
        self.stalled = False

    def take(self) -> list[bytes]:
        pages, self.pages = self.pages, []
        self.bytes = 0
        self.stalled = False
        return pages

_getframe = sys._getframe
DISABLE = sys.monitoring.DISABLE


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


def quiet_thread(on: bool) -> None:
    """Ignore (or stop ignoring) the calling thread's events."""
    if on:
        _quiet.add(get_ident())
    else:
        _quiet.discard(get_ident())


# The thread that waits, quiet, for the interpreter to start the program
# (see _ctrampolines' quiet_until_program); 0: none.  Pure Python cannot
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
    def dispatch_entry(code, offset):  # hot path
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
                return DISABLE
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
    miss = DISABLE if disable else None
    if nargs == 2:
        def dispatch(code, offset):  # hot path
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
        def dispatch(code, offset, arg):  # type: ignore[misc]  # hot path; an arity of its own
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
    def dispatch_offset(code, offset):  # hot path
        if _quiet and get_ident() in _quiet:
            return
        try:
            handler = table[id(code)][offset]
        except KeyError:
            return DISABLE
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

    def list_func3(code, offset, arg):  # hot path
        for ops, handler in pairs:
            try:
                handler(code, offset, arg)
            except Exception:
                ops.errors += 1
    return list_func3


# -- handlers

if sys.version_info < (3, 13):
    def call_site(code: CodeType, lasti: int) -> int:
        """The offset of the CALL a caller is in: 3.12's f_lasti points at its
        last inline CACHE entry (opcode 0, which no instruction has)."""
        co = code.co_code
        while lasti > 0 and co[lasti] == 0:
            lasti -= 2
        return lasti
else:
    def call_site(code: CodeType, lasti: int) -> int:
        """The offset of the instruction a caller is in (3.13's f_lasti)."""
        return lasti


def ops_entry(func, ip: Ip, ops, save_regs: bool, depth: int):
    """An FtraceOps entry: ``func(ip, parent_ip, ops, regs)``."""
    if save_regs:
        def ops_entry_regs(code, offset):  # hot path
            frame = _getframe(depth)
            caller = frame.f_back
            if caller is None:
                return func(ip, None, ops, frame)
            c = caller.f_code
            func(ip, Ip(c, call_site(c, caller.f_lasti)), ops, frame)
        return ops_entry_regs
    cdepth = depth + 1

    def ops_entry_noregs(code, offset):  # hot path
        try:
            caller = _getframe(cdepth)
        except ValueError:
            return func(ip, None, ops, None)
        c = caller.f_code
        func(ip, Ip(c, call_site(c, caller.f_lasti)), ops, None)
    return ops_entry_noregs


def function_entry(local, attach, depth: int):
    """The function tracer: records ``(seq, ts, code, caller_code)``."""
    cdepth = depth + 1

    def function_entry(code, offset):  # hot path
        try:
            caller = _getframe(cdepth).f_code
        except ValueError:
            caller = None
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        tb.append((next(tb.seq), perf_counter_ns(), code, caller))
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
            tb.append((next(tb.seq), perf_counter_ns(), kind, code))
        return graph_event2

    def graph_event(code, offset, arg):  # hot path
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        tb.append((next(tb.seq), perf_counter_ns(), kind, code))
    return graph_event


def graph_exc_event(local, attach, kind: int):
    """function_graph on unwind: records ``(seq, ts, kind, code, exception type)``."""
    def graph_exc_event(code, offset, exc):  # hot path
        try:
            tb = local.tb
        except AttributeError:
            tb = attach()
        tb.append((next(tb.seq), perf_counter_ns(), kind, code, type(exc)))
    return graph_exc_event



# -- probe events

class Switch:
    """An on/off flag the hot path reads (a ring buffer's tracing_on)."""
    __slots__ = ("on",)

    def __init__(self, on: bool = True) -> None:
        self.on = bool(on)


# Fetchargs the C ProbeTrace fetches itself, at most (more: the Python path).
PROBE_MAX_ARGS = 16


class ProbeTrace:
    """One probe event's hit (the kernel's kprobe_trace_func).

    The C one fetches, counts, filters and records without a Python call
    when it can, and calls ``slow`` for the rest; here every hit is ``slow``:
    the event's own Python path, which does all of it -- ``slow(frame)`` at
    an entry, offset or line, ``slow(frame, value, raised)`` at a return.
    So ``nhit`` and ``nmissed`` (the hits this object took itself) stay 0,
    and ``specs`` and the filter program are not needed.
    """
    __slots__ = ("event", "slow", "nhit", "nmissed")

    def __init__(self, event, specs, local, attach, switch: Switch, snapshot, fault, slow) -> None:
        self.event = event
        self.slow = slow
        self.nhit = self.nmissed = 0

    def set_filter(self, program, matches) -> None:
        """The event's filter (the Python path reads it from the event)."""

    def entry(self, code: CodeType, offset: int, depth: int):
        """The handler of the probe at (code, offset): PY_START or INSTRUCTION."""
        slow = self.slow

        def probe_hit(code, offset):  # hot path
            slow(_getframe(depth))
        return probe_hit

    def exit(self, code: CodeType, depth: int, raised: bool):
        """The handler of the return probe on code: PY_RETURN, or PY_UNWIND if ``raised``."""
        slow = self.slow

        def probe_exit(code, offset, value):  # hot path
            slow(_getframe(depth), value, raised)
        return probe_exit

    def start(self, code: CodeType, depth: int):
        """A return probe's PY_START handler: nothing to do (the return does it all)."""
        return _nothing

    def __call__(self, kp, regs) -> None:
        """As a kprobe pre_handler(kp, regs)."""
        self.slow(regs)


def _nothing(code, offset):  # hot path
    pass
