"""The raw record format: what a ring buffer's records become on their way
out of the traced process (``Ring.take_raw``), and how a reader decodes them.

The kernel's ``trace_pipe_raw`` ships ring-buffer pages that
libtraceevent decodes with the events' formats; here one ring's records are
encoded into bytes by the hot path's ``Encoder`` (C in ``ctrampolines/encoder.c``,
Python in ``pytrampolines``, both to this layout), and decoded by
``decode_records`` in the reader.  Objects a record points at -- code
objects, probe events, exception types -- travel as ids (``REF``) that the
stream describes once each (see ``tracers/stream.py``).

Every number is little-endian.  A record::

    u8 type, u8 kind, i64 timestamp (ns, CLOCK_MONOTONIC)
    FUNC          u32 code, u32 caller (0: none)                  the function tracer
    GRAPH         u32 code [, u32 exception type if kind=UNWIND]   function_graph; kind
                  [, i64 duration (ns), u32 depth                 is ENTRY ... THRESH_RETURN
                     if kind=THRESH_RETURN]
    GRAPH_VALUES  u32 code, u32 n, n VALUEs                       function_graph with values:
                                                                  ENTRY's arguments
                                                                  (funcgraph-args), RETURN's
                                                                  value (funcgraph-retval)
    EVENT         u32 event, u32 code, u32 offset, u32 n, n VALUEs a probe hit
    EVENT_RETURN  u32 event, u32 caller (0: none), u32 offset,     a return probe hit
                  u32 code, u32 raised (0: returned), u32 n, n VALUEs

A VALUE is a u8 tag, then::

    FAULT NONE TRUE FALSE   nothing
    INT                     i64
    UINT                    u64
    BIGINT                  u32 n, n bytes (two's complement)
    FLOAT                   f64
    COMPLEX                 f64 real, f64 imaginary
    STR SHOWN               u32 n, n bytes of UTF-8 (surrogates passed)
    BYTES                   u32 n, n bytes
    REF                     u32 id (a code object)
    TUPLE                   u32 n, n VALUEs (an array type's elements)
    TOOBIG                  i64 bits (an int too large to keep: a fault)

Strings and bytes are cut to MAX_STRING, as the kernel's string fetches stop
at MAX_STRING_SIZE.  ``SHOWN`` is a value kept as its safe text (a mutable
object at fetch time).
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from itertools import count
from types import CodeType

from .lifetime import pop_at_death

TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from typing import Any

    # A record in the rings' tuple form: (seq, ts, ...), shaped by its type.
    Record = tuple[Any, ...]
    # What a record's ids name: refs.get.
    Lookup = Callable[[int], object]
    # The start of a run of fixed-size records at a position, or None.
    RunMatch = Callable[[bytes | memoryview, int], Any]


class Shown(str):
    """A value kept as its safe text: it was not immutable when fetched."""
    __slots__ = ()

FUNC, GRAPH, EVENT, EVENT_RETURN, GRAPH_VALUES = 1, 2, 3, 4, 5
(FAULT, NONE, TRUE, FALSE, INT, UINT, BIGINT, FLOAT, COMPLEX, STR, SHOWN, BYTES, REF, TUPLE,
 TOOBIG) = range(15)
# A GRAPH record's kind: function_graph's events (tracers.function_graph).
# THRESH_RETURN: a call that lasted tracing_thresh, recorded at its exit only.
ENTRY, RESUME, RETURN, YIELD, UNWIND, THROW, THRESH_RETURN = range(7)
ENTER_KINDS = (ENTRY, RESUME, THROW)        # those that (re)enter a frame
MAX_STRING = 4096
MAX_INT_BYTES = 1024
MAX_NESTED = 4

_HEAD = struct.Struct("<BBq")
_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
_THRESH = struct.Struct("<qI")     # a THRESH_RETURN's duration and depth
_U32X3 = struct.Struct("<III")
_U32X4 = struct.Struct("<IIII")
_U32X5 = struct.Struct("<IIIII")
_U32X6 = struct.Struct("<IIIIII")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_F64X2 = struct.Struct("<dd")


# The raw stream's messages a ring's page holds (tracers/stream.py has them all).
MSG_RECORDS, MSG_LOST = 4, 5
_MSG_HEAD = struct.Struct("<IB")
_RECORDS_HEAD = struct.Struct("<IqI")
_LOST_BODY = struct.Struct("<Iq")


def page(key: int, lost: int, first: int, count: int, records: bytes) -> bytes:
    """A ring's page: LOST (if records were overwritten since the last
    page), then RECORDS; b"" if there is nothing to say."""
    out = b""
    if lost > 0:
        out = _MSG_HEAD.pack(1 + _LOST_BODY.size, MSG_LOST) + _LOST_BODY.pack(key, lost)
    if count:
        out += _MSG_HEAD.pack(1 + _RECORDS_HEAD.size + len(records), MSG_RECORDS) \
            + _RECORDS_HEAD.pack(key, first, count) + records
    return out


# ---------------------------------------------------------------- encoding (the Python twin)

class Encoder:
    """Ids for what records point at; the Python twin of ``_ctrampolines.Encoder``.

    ``fault`` is the value of a fetch that failed, ``shown`` the type of a
    value kept as its safe text, ``fallback(value) -> str`` the text of any
    other kind of value.  Only ``take_refs`` is shared with the C one; the
    rest is this twin's own (``Ring.page`` calls ``_record``).

    An id never names two objects: an object with a new id is kept alive
    until ``take_refs`` hands it out to be described, then held weakly (if it
    can be), and when it dies its id is forgotten, before its address can
    be another object's, which gets an id of its own."""
    __slots__ = ("_fault", "_shown", "_fallback", "_ids", "_new", "_told", "_alive", "_kept",
                 "_forgotten")

    def __init__(self, fault: object, shown: type, fallback: Callable[[object], object]) -> None:
        self._fault = fault
        self._shown = shown
        self._fallback = fallback
        self._ids: dict[int, int] = {}                  # id(object) -> its id, while it lives
        self._new: list[object] = []                    # ids _told + 1, ...: not described yet
        self._told = 0
        self._alive: dict[int, tuple[weakref.ref[Any], ...]] = {}  # id -> what forgets it
        self._kept: list[object] = []                   # described, with no weak reference
        self._forgotten: dict[int, object] = {}         # ids whose objects died since take_forgotten

    def _ref(self, obj: object) -> int:
        if obj is None:
            return 0
        i = self._ids.get(id(obj))
        if i is None:
            self._new.append(obj)
            i = self._ids[id(obj)] = self._told + len(self._new)
        return i

    def take_refs(self) -> list[tuple[int, object]]:
        """[(id, object)]: the objects given ids since the last call, in order."""
        new, self._new = self._new, []
        out = [(i, o) for i, o in enumerate(new, self._told + 1)]
        self._told += len(new)
        for i, obj in out:
            try:
                # At its death, its id is forgotten, and the id goes on the
                # list for the reader: both by C callbacks (see lifetime.py).
                self._alive[i] = (pop_at_death(obj, self._ids, id(obj)),
                                  weakref.ref(obj, partial(self._forgotten.__setitem__, i)))
            except TypeError:   # (a str: a return's exception type name)
                self._kept.append(obj)
        return out

    def take_forgotten(self) -> list[int]:
        """The ids forgotten since the last call: their objects died."""
        forgotten, alive, out = self._forgotten, self._alive, []
        while forgotten:        # (popitem: a death meanwhile only adds)
            i = forgotten.popitem()[0]
            alive.pop(i, None)
            out.append(i)
        out.sort()
        return out

    def _record(self, out: bytearray, rec: Record) -> None:
        """Append one record, in the Python ring's tuple form (``seq, ts, ...``)."""
        ts, a = rec[1], rec[2]
        if a.__class__ is CodeType:
            out += _HEAD.pack(FUNC, 0, ts) + _U32X2.pack(self._ref(a), self._ref(rec[3]))
        elif a.__class__ is int:
            if len(rec) > 4 and rec[4].__class__ is tuple:     # (kind, code, values)
                values = rec[4]
                out += _HEAD.pack(GRAPH_VALUES, a, ts) + _U32X2.pack(self._ref(rec[3]), len(values))
                self._values(out, values)
                return
            out += _HEAD.pack(GRAPH, a, ts) + _U32.pack(self._ref(rec[3]))
            if a == THRESH_RETURN:
                out += _THRESH.pack(rec[4], rec[5])
            elif len(rec) > 4:
                out += _U32.pack(self._ref(rec[4]))
        else:
            site, values = rec[3], rec[4]
            if len(site) == 4:
                out += _HEAD.pack(EVENT_RETURN, 0, ts) + _U32X6.pack(
                    self._ref(a), self._ref(site[0]), site[1], self._ref(site[2]),
                    self._ref(site[3]), len(values))
            else:
                out += _HEAD.pack(EVENT, 0, ts) + _U32X4.pack(
                    self._ref(a), self._ref(site[0]), site[1], len(values))
            self._values(out, values)

    def _values(self, out: bytearray, values: tuple[object, ...]) -> None:
        for v in values:
            mark = len(out)
            try:
                self._value(out, v, 0)
            except Exception:
                del out[mark:]
                out.append(FAULT)

    def _value(self, out: bytearray, v: Any, depth: int) -> None:
        # (Any: ``v`` is told apart by its exact type, which mypy does not follow.)
        t = v.__class__
        if v is self._fault:
            out.append(FAULT)
        elif v is None:
            out.append(NONE)
        elif t is bool:
            out.append(TRUE if v else FALSE)
        elif t is int:
            if -(1 << 63) <= v < 1 << 63:
                out.append(INT)
                out += _I64.pack(v)
            else:
                bits = v.bit_length()
                n = bits // 8 + 1
                if n > MAX_INT_BYTES:
                    out.append(TOOBIG)
                    out += _I64.pack(bits)
                else:
                    out.append(BIGINT)
                    out += _U32.pack(n) + v.to_bytes(n, "little", signed=True)
        elif t is float:
            out.append(FLOAT)
            out += _F64.pack(v)
        elif t is str or t is self._shown:
            data = str.__str__(v)[:MAX_STRING].encode("utf-8", "surrogatepass")
            out.append(STR if t is str else SHOWN)
            out += _U32.pack(len(data)) + data
        elif t is bytes:
            data = v[:MAX_STRING]
            out.append(BYTES)
            out += _U32.pack(len(data)) + data
        elif t is complex:
            out.append(COMPLEX)
            out += _F64X2.pack(v.real, v.imag)
        elif t is CodeType:
            out.append(REF)
            out += _U32.pack(self._ref(v))
        elif t is tuple and depth < MAX_NESTED:
            out.append(TUPLE)
            out += _U32.pack(len(v))
            for item in v:
                self._value(out, item, depth + 1)
        else:
            try:
                text = self._fallback(v)
            except Exception:
                text = None
            if type(text) is not str:
                out.append(FAULT)
            else:
                data = text[:MAX_STRING].encode("utf-8", "surrogatepass")
                out.append(SHOWN)
                out += _U32.pack(len(data)) + data


# ---------------------------------------------------------------- decoding (the reader)

class FaultValue:
    """A value that could not be fetched or kept (prints ``(fault)``)."""
    __slots__ = ("why",)

    def __init__(self, why: str = "") -> None:
        self.why = why

    def __repr__(self) -> str:
        return "(fault)"


FAULT_VALUE = FaultValue()


class CodeInfo:
    """What a reader knows of a code object of the traced process, under the
    code object's own attribute names where it has them (the tracers' readers
    format either)."""
    __slots__ = ("module", "co_qualname", "co_filename", "co_firstlineno", "params", "co_size")

    def __init__(self, module: str | None, qualname: str, filename: str, firstlineno: int,
                 params: tuple[str, ...], size: int = 0) -> None:
        self.module = module
        self.co_qualname = qualname
        self.co_filename = filename
        self.co_firstlineno = firstlineno
        self.params = params
        self.co_size = size         # len(co_code): bytes of bytecode (0: not told)

    @property
    def name(self) -> str:
        """``MOD:QUALNAME`` (just the qualified name when its module is not known)."""
        return f"{self.module}:{self.co_qualname}" if self.module else self.co_qualname

    def __repr__(self) -> str:
        return f"<CodeInfo {self.name}>"


def decode_records(data: bytes | memoryview, refs: dict[int, object], first_seq: int
                   ) -> list[Record]:
    """Records as the in-process rings give them: ``(seq, ts, code, caller)``,
    ``(seq, ts, kind, code[, exception | values])`` or ``(seq, ts, event, site, values)``,
    with every id replaced by what ``refs`` says it is (None for 0)."""
    out: list[Record] = []
    get = refs.get
    for rtype, seq, part in record_chunks(data, refs, first_seq):
        if rtype == GRAPH:
            out += [(s, ts, k, get(c)) for s, (_, k, ts, c)
                    in zip(count(seq), GRAPH_RECORD.iter_unpack(part))]
        elif rtype == FUNC:
            out += [(s, ts, get(c), get(p)) for s, (_, _, ts, c, p)
                    in zip(count(seq), FUNC_RECORD.iter_unpack(part))]
        else:
            out += part
    return out


def record_chunks(data: bytes | memoryview, refs: dict[int, object], first_seq: int
                  ) -> Iterator[tuple[int | None, int, Any]]:
    """The records of ``data``, in order, in chunks ``(type, first seq, part)``:
    a run of fixed-size records (the common case), left for the reader to
    unpack in C -- ``GRAPH``: function_graph records but UNWIND's and
    THRESH_RETURN's, each
    ``GRAPH_RECORD`` (type, kind, ts, code id); ``FUNC``: function tracer
    records, each ``FUNC_RECORD`` (type, kind, ts, code id, caller id) --
    or ``None``: any other records, decoded as ``decode_records`` does."""
    pos = 0
    end = len(data)
    seq = first_seq
    graph_run, func_run = _RUNS or _run_patterns()
    while pos < end:
        rtype = data[pos]
        run = graph_run(data, pos) if rtype == GRAPH else func_run(data, pos) if rtype == FUNC \
            else None
        if run is not None:
            stop = run.end()
            yield rtype, seq, data[pos:stop]
            seq += (stop - pos) // (GRAPH_RECORD.size if rtype == GRAPH else FUNC_RECORD.size)
            pos = stop
        else:
            records, pos = _decode_until_run(data, pos, refs, seq)
            yield None, seq, records
            seq += len(records)


def _decode_until_run(data: bytes | memoryview, pos: int, refs: dict[int, object], seq: int
                      ) -> tuple[list[Record], int]:
    """Records from ``pos`` up to the next that starts a run (or the end)."""
    out: list[Record] = []
    end = len(data)
    get = refs.get
    head, u2, u4, u6 = _HEAD.unpack_from, _U32X2.unpack_from, _U32X4.unpack_from, _U32X6.unpack_from
    while pos < end:
        rtype, kind, ts = head(data, pos)
        if out and ((rtype == GRAPH and kind not in _SIZED_KINDS) or (rtype == FUNC and kind == 0)):
            break
        pos += 10
        if rtype == FUNC:
            code, caller = u2(data, pos)
            pos += 8
            out.append((seq, ts, get(code), get(caller)))
        elif rtype == GRAPH:
            code = get(_U32.unpack_from(data, pos)[0])
            pos += 4
            if kind == UNWIND:
                out.append((seq, ts, kind, code, get(_U32.unpack_from(data, pos)[0])))
                pos += 4
            elif kind == THRESH_RETURN:
                out.append((seq, ts, kind, code, *_THRESH.unpack_from(data, pos)))
                pos += _THRESH.size
            else:
                out.append((seq, ts, kind, code))
        elif rtype == GRAPH_VALUES:
            code, n = u2(data, pos)
            values, pos = _values(data, pos + 8, n, get)
            out.append((seq, ts, kind, get(code), values))
        elif rtype == EVENT:
            event, code, offset, n = u4(data, pos)
            pos += 16
            values, pos = _values(data, pos, n, get)
            out.append((seq, ts, get(event), (get(code), offset), values))
        elif rtype == EVENT_RETURN:
            event, caller, offset, code, raised, n = u6(data, pos)
            pos += 24
            values, pos = _values(data, pos, n, get)
            out.append((seq, ts, get(event), (get(caller), offset, get(code), get(raised)), values))
        else:
            raise ValueError(f"unknown record type {rtype} at byte {pos - 10}")
        seq += 1
    return out, pos


# Records of one fixed size: a GRAPH record of any kind but these, a FUNC record.
_SIZED_KINDS = (UNWIND, THRESH_RETURN)
GRAPH_RECORD = struct.Struct("<BBqI")
FUNC_RECORD = struct.Struct("<BBqII")
_RUNS: tuple[RunMatch, RunMatch] | None = None


def _run_patterns() -> tuple[RunMatch, RunMatch]:
    """Matchers of a run of such records (compiled when first needed: the
    traced process, which only encodes, never needs them)."""
    global _RUNS
    import re
    kinds = bytes(k for k in range(256) if k not in _SIZED_KINDS)
    graph = re.compile(b"(?:" + re.escape(bytes([GRAPH])) + b"[" + re.escape(kinds) + b"].{"
                       + str(GRAPH_RECORD.size - 2).encode() + b"})+", re.S)
    func = re.compile(b"(?:" + re.escape(bytes([FUNC, 0])) + b".{"
                      + str(FUNC_RECORD.size - 2).encode() + b"})+", re.S)
    _RUNS = (graph.match, func.match)
    return _RUNS


def _values(data: bytes | memoryview, pos: int, n: int, get: Lookup) -> tuple[tuple[object, ...], int]:
    values = []
    for _ in range(n):
        v, pos = _value(data, pos, get)
        values.append(v)
    return tuple(values), pos


def _value(data: bytes | memoryview, pos: int, get: Lookup) -> tuple[object, int]:
    tag = data[pos]
    pos += 1
    if tag == INT:
        return _I64.unpack_from(data, pos)[0], pos + 8
    if tag in (STR, SHOWN):
        n = _U32.unpack_from(data, pos)[0]
        text = bytes(data[pos + 4:pos + 4 + n]).decode("utf-8", "surrogatepass")
        return (text if tag == STR else Shown(text)), pos + 4 + n
    if tag == FAULT:
        return FAULT_VALUE, pos
    if tag == NONE:
        return None, pos
    if tag in (TRUE, FALSE):
        return tag == TRUE, pos
    if tag == UINT:
        return _U64.unpack_from(data, pos)[0], pos + 8
    if tag == FLOAT:
        return _F64.unpack_from(data, pos)[0], pos + 8
    if tag == BIGINT:
        n = _U32.unpack_from(data, pos)[0]
        return int.from_bytes(data[pos + 4:pos + 4 + n], "little", signed=True), pos + 4 + n
    if tag == BYTES:
        n = _U32.unpack_from(data, pos)[0]
        return bytes(data[pos + 4:pos + 4 + n]), pos + 4 + n
    if tag == COMPLEX:
        re, im = _F64X2.unpack_from(data, pos)
        return complex(re, im), pos + 16
    if tag == REF:
        return get(_U32.unpack_from(data, pos)[0]), pos + 4
    if tag == TUPLE:
        n = _U32.unpack_from(data, pos)[0]
        return _values(data, pos + 4, n, get)
    if tag == TOOBIG:
        bits = _I64.unpack_from(data, pos)[0]
        return FaultValue(f"an int of {bits} bits"), pos + 8
    raise ValueError(f"unknown value tag {tag} at byte {pos - 1}")
