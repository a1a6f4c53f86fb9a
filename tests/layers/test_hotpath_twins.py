"""The hot path's twins: ``_ctrampolines`` (C) and ``pytrampolines`` (pure Python).

Both must export exactly the contract written in ``src/fentry/hotpath.pyi``,
and behave the same.  The first half reads the contract from the stub and
checks each module against it; the second runs the unit tests of ``Ring``,
``CodeTable``, the dispatchers and the handlers on both modules in the same
run (the ``impl`` fixture), as coverage.py's tests run on its CTracer and
PyTracer.  The rest of the suite runs through ``hotpath`` on one twin at a
time (``FENTRY_PURE_PYTHON=1`` for the Python one).

The C half is skipped where the extension is not built for this Python, and
fails instead where it was built but does not import, or where
``FENTRY_REQUIRE_C=1`` says it must be there.
"""

from __future__ import annotations

import ast
import dis
import importlib
import importlib.util
import os
import struct
import sys
import threading
import time
import types

import pytest

from fentry import hotpath, pytrampolines, raw
from fentry.events.fetch import FAULT

STUB = os.path.join(os.path.dirname(hotpath.__file__), "hotpath.pyi")
HOTPATH_OWN = {"IMPLEMENTATION", "WHY"}       # hotpath's, not the twins'
E = sys.monitoring.events
DISABLE = sys.monitoring.DISABLE


# -- the contract

def read_contract(path: str = STUB) -> dict[str, set[str] | None]:
    """The stub's public names: a class's to the set of its members, any
    other's to None (names starting with ``_`` are the stub's own aliases)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    contract: dict[str, set[str] | None] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            contract[node.name] = members
        elif isinstance(node, ast.FunctionDef):
            contract[node.name] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            contract[node.target.id] = None
    return {name: m for name, m in contract.items() if not name.startswith("_")}


def twin_contract() -> dict[str, set[str] | None]:
    return {name: m for name, m in read_contract().items() if name not in HOTPATH_OWN}


def public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def contract_violations(module: types.ModuleType, contract: dict[str, set[str] | None]) -> list[str]:
    """What ``module`` lacks of the contract, or has in public beyond it."""
    out = [f"missing {name}" for name in contract if not hasattr(module, name)]
    exported = set(getattr(module, "__all__", ()))
    out += [f"{name} not in __all__" for name in contract if name not in exported]
    out += [f"__all__ has {name}, not in the contract" for name in exported - contract.keys()]
    # Its own public names: what it defines (or re-exports from fentry), not what it imports.
    for name, value in vars(module).items():
        if name.startswith("_") or name in contract or isinstance(value, types.ModuleType):
            continue
        if getattr(value, "__module__", module.__name__) == module.__name__:
            out.append(f"public {name}, not in the contract")
    for name, members in contract.items():
        cls = getattr(module, name, None)
        if members is None or cls is None:
            continue
        out += [f"{name}.{m} missing" for m in sorted(members) if not hasattr(cls, m)]
        # The Python CodeTable is dict itself (a subclass would lose the
        # interpreter's dict-specialized lookups in the dispatchers): dict's
        # other methods are not the contract, and mypy keeps fentry off them.
        if cls.__module__ != "builtins":
            out += [f"{name}.{m}, not in the contract" for m in sorted(public(dir(cls)) - members)]
    return out


def c_module() -> types.ModuleType:
    """``fentry._ctrampolines``, or a skip saying why it is not there."""
    if importlib.util.find_spec("fentry._ctrampolines") is None:
        why = f"the C hot path is not built for Python {sys.version.split()[0]}"
        if os.environ.get("FENTRY_REQUIRE_C"):
            pytest.fail(f"{why}, and FENTRY_REQUIRE_C is set")
        pytest.skip(why)
    # Built for this Python: it must import (a failure here is a broken build).
    return importlib.import_module("fentry._ctrampolines")


@pytest.fixture(params=["python", "c"])
def impl(request) -> types.ModuleType:
    """Each twin in turn, as itself (not through hotpath)."""
    return pytrampolines if request.param == "python" else c_module()


def test_the_contract_lists_the_hot_path():
    contract = read_contract()
    assert contract.keys() >= HOTPATH_OWN
    assert {"Ring", "CodeTable", "Encoder", "PageQueue", "entry_dispatcher"} <= contract.keys()
    assert {"record", "consume", "page", "maxlen", "lost_told"} <= contract["Ring"]


def test_each_twin_exports_exactly_the_contract(impl):
    assert contract_violations(impl, twin_contract()) == []


def test_hotpath_exports_the_contract_from_the_twin_it_picked():
    twin = pytrampolines if hotpath.IMPLEMENTATION == "python" else c_module()
    for name in read_contract():
        assert hasattr(hotpath, name), name
    for name in twin_contract():
        assert getattr(hotpath, name) is getattr(twin, name), name
    assert hotpath.WHY


def test_the_twins_agree_on_their_constants():
    c = c_module()
    for name in ("RECORD_BYTES", "PROBE_MAX_ARGS"):
        assert getattr(c, name) == getattr(pytrampolines, name), name
    # Where a handler finds the traced frame differs, by design: a C
    # dispatcher or list function adds no frame.
    assert (c.DIRECT, c.LISTED) == (1, 1)
    assert (pytrampolines.DIRECT, pytrampolines.LISTED) == (2, 3)


def module_copy(module: types.ModuleType) -> types.ModuleType:
    copy = types.ModuleType(module.__name__)
    copy.__dict__.update(vars(module))
    copy.__all__ = list(module.__all__)
    return copy


def class_copy(cls: type, members: set[str]) -> type:
    """A stand-in for ``cls`` with just ``members``."""
    return type(cls.__name__, (), {m: getattr(cls, m) for m in members if m != "__init__"})


def test_the_check_fails_when_a_twin_drops_a_name(impl):
    contract = twin_contract()
    copy = module_copy(impl)
    del copy.list_func
    assert "missing list_func" in contract_violations(copy, contract)
    copy = module_copy(impl)
    copy.__all__.remove("RECORD_BYTES")
    assert contract_violations(copy, contract) == ["RECORD_BYTES not in __all__"]


def test_the_check_fails_when_a_twin_drops_a_method(impl):
    contract = twin_contract()
    copy = module_copy(impl)
    copy.Ring = class_copy(impl.Ring, contract["Ring"] - {"flush"})
    assert contract_violations(copy, contract) == ["Ring.flush missing"]


def test_the_check_fails_when_a_twin_adds_a_name(impl):
    contract = twin_contract()
    copy = module_copy(impl)
    exec("def drain(ring):\n    pass", copy.__dict__)
    assert contract_violations(copy, contract) == ["public drain, not in the contract"]
    copy = module_copy(impl)
    copy.__all__.append("drain")
    copy.drain = copy.list_func
    assert "__all__ has drain, not in the contract" in contract_violations(copy, contract)
    copy = module_copy(impl)
    copy.Ring = class_copy(impl.Ring, contract["Ring"])
    copy.Ring.take_raw = lambda self: b""
    assert contract_violations(copy, contract) == ["Ring.take_raw, not in the contract"]


# -- Ring

def records(ring) -> list[tuple]:
    """The records without their timestamps (the C ring's are converted
    from the TSC when read, so two reads may differ by a few ns)."""
    return [(rec[0], *rec[2:]) for rec in ring.snapshot()]


def test_a_record_reads_as_seq_timestamp_fields(impl):
    ring = impl.Ring(4)
    before = time.monotonic_ns()
    ring.record(("a", 1))
    after = time.monotonic_ns()
    [(seq, ts, *fields)] = ring.snapshot()
    assert (seq, fields) == (0, ["a", 1])
    # CLOCK_MONOTONIC ns on both.  The C ring's are TSC readings converted
    # when read, by interpolation between two (TSC, monotonic) pairs: a
    # thread preempted between the two reads of a pair skews it, by
    # milliseconds on a busy machine -- hence the margin.
    assert before - 50_000_000 <= ts <= after + 50_000_000
    assert (len(ring), ring.written(), ring.lost(), ring.maxlen) == (1, 1, 0, 4)


def test_a_full_ring_overwrites_the_oldest_and_counts_them_lost(impl):
    ring = impl.Ring(3)
    for i in range(5):
        ring.record(("x", i))
    assert records(ring) == [(2, "x", 2), (3, "x", 3), (4, "x", 4)]
    assert (len(ring), ring.written(), ring.lost()) == (3, 5, 2)


def test_consume_takes_the_records_and_keeps_the_counts(impl):
    ring = impl.Ring(3)
    for i in range(5):
        ring.record((i,))
    assert [rec[0] for rec in ring.consume()] == [2, 3, 4]
    assert (len(ring), ring.written(), ring.lost()) == (0, 5, 2)
    ring.record(("next",))
    assert records(ring) == [(5, "next")]
    assert ring.lost() == 2


def test_clear_empties_the_ring_and_its_counts(impl):
    ring = impl.Ring(2)
    for i in range(5):
        ring.record((i,))
    ring.lost_told = 3
    ring.clear()
    assert (len(ring), ring.written(), ring.lost(), ring.lost_told) == (0, 0, 0, 0)
    ring.record(("again",))
    assert records(ring) == [(0, "again")]


def test_resize_keeps_the_newest_and_counts_the_dropped_as_lost(impl):
    ring = impl.Ring(4)
    for i in range(4):
        ring.record((i,))
    ring.resize(2)
    assert ring.maxlen == 2
    assert records(ring) == [(2, 2), (3, 3)]
    assert (ring.written(), ring.lost()) == (4, 2)
    ring.resize(8)
    for i in range(4, 8):
        ring.record((i,))
    assert [seq for seq, _ in records(ring)] == [2, 3, 4, 5, 6, 7]


def test_a_ring_refuses_what_it_cannot_hold(impl):
    with pytest.raises(ValueError):
        impl.Ring(0)
    ring = impl.Ring(1)
    with pytest.raises(ValueError):
        ring.resize(0)
    with pytest.raises(TypeError):
        ring.record(["not", "a", "tuple"])
    assert len(ring) == 0


def test_a_ring_can_be_subclassed_with_slots(impl):
    class Buffer(impl.Ring):                    # as tracers.ring_buffer.ThreadBuffer
        __slots__ = ("name",)

        def __init__(self, maxlen: int) -> None:
            super().__init__(maxlen)
            self.name = "t"
    tb = Buffer(2)
    tb.record((1,))
    assert (tb.name, tb.maxlen, records(tb)) == ("t", 2, [(0, 1)])


def read_page(data: bytes, encoder) -> tuple[int, list[tuple]]:
    """A page's LOST count and its records, decoded by the reader's decoder."""
    lost, recs, pos = 0, [], 0
    refs = dict(encoder.take_refs())
    while pos < len(data):
        size, kind = struct.unpack_from("<IB", data, pos)
        body = data[pos + 5:pos + 4 + size]
        if kind == raw.MSG_LOST:
            lost += struct.unpack_from("<Iq", body)[1]
        else:
            assert kind == raw.MSG_RECORDS
            _, first, count = struct.unpack_from("<IqI", body)
            recs += raw.decode_records(body[16:], refs, first)
            assert len(recs) == count
        pos += 4 + size
    return lost, recs


def encoder(impl):
    return impl.Encoder(FAULT, raw.Shown, repr)


def probe_record(i: int) -> tuple:
    """A probe event's fields: (event, site, values); any object names the event."""
    return ("event", (None, 4), (i, "s"))


def test_page_takes_the_records_and_tells_the_lost_once(impl):
    ring, enc = impl.Ring(2), encoder(impl)
    for i in range(5):
        ring.record(probe_record(i))
    lost, recs = read_page(ring.page(enc), enc)
    assert lost == 3 == ring.lost_told
    assert [(seq, *rest) for seq, _, *rest in recs] == [
        (3, "event", (None, 4), (3, "s")), (4, "event", (None, 4), (4, "s"))]
    assert len(ring) == 0
    assert ring.page(enc) == b""                # nothing new, and the lost are told
    ring.record(probe_record(5))
    assert read_page(ring.page(enc), enc)[0] == 0


def test_a_ring_with_a_queue_moves_its_records_there_as_pages(impl):
    ring, enc = impl.Ring(8), encoder(impl)
    queue = impl.PageQueue(enc, 1 << 20, -1)
    ring.set_queue(queue, 7, 2)
    assert ring.key == 7
    for i in range(3):
        ring.record(probe_record(i))
    assert len(ring) == 1                       # the writer flushed at 2 records
    assert queue.bytes > 0 and queue.encoder is enc
    ring.flush()
    pages = queue.take()
    assert queue.bytes == 0 and queue.take() == []
    assert [len(read_page(p, enc)[1]) for p in pages] == [2, 1]
    ring.set_queue(None, 7, 0)
    ring.record(probe_record(3))
    assert len(ring) == 1 and queue.bytes == 0
    ring.after_fork()


# -- CodeTable

def test_a_code_table_maps_code_ids_to_handlers(impl):
    table = impl.CodeTable()
    code = test_a_code_table_maps_code_ids_to_handlers.__code__
    key = id(code)
    assert (len(table), key in table, table.get(key), table.get(key, 5)) == (0, False, None, 5)
    table[key] = print
    assert (len(table), key in table, table[key], table.get(key)) == (1, True, print, print)
    assert list(table.keys()) == [key]
    assert table.pop(key) is print
    assert table.pop(key, None) is None
    with pytest.raises(KeyError):
        table.pop(key)
    with pytest.raises(KeyError):
        table[key]
    table[key] = len
    del table[key]
    with pytest.raises(KeyError):
        del table[key]
    table[key], table[key + 16] = print, len
    table.clear()
    assert len(table) == 0 and list(table.keys()) == []


def test_a_code_table_grows(impl):
    table = impl.CodeTable()
    keys = [16 * i for i in range(1, 1000)]
    for k in keys:
        table[k] = k
    for k in keys[::2]:
        del table[k]
    assert sorted(table.keys()) == keys[1::2]
    assert all(table[k] == k for k in keys[1::2])


# -- dispatchers, called as sys.monitoring calls them

def code_of(fn) -> types.CodeType:
    return fn.__code__


def f(x=0):
    return x


def g():
    return f()


class Calls(list):
    """Records each call's arguments; ``raising`` raises as well."""

    def __call__(self, *args):
        self.append(args)

    def raising(self, *args):
        self.append(args)
        raise RuntimeError("handler")


def test_entry_dispatcher_calls_the_codes_handler(impl):
    calls, faults = Calls(), Calls()
    table = impl.CodeTable()
    table[id(code_of(f))] = calls
    dispatch = impl.entry_dispatcher(table, lambda code: pytest.fail("discovered"), faults)
    assert dispatch(code_of(f), 0) is None
    assert calls == [(code_of(f), 0)] and faults == []


def test_entry_dispatcher_discovers_unknown_code(impl):
    found, calls = Calls(), Calls()

    def discover(code):
        found.append(code)
        return calls if code is code_of(f) else None
    dispatch = impl.entry_dispatcher(impl.CodeTable(), discover, Calls())
    assert dispatch(code_of(g), 0) is DISABLE      # not traced: never again
    assert dispatch(code_of(f), 0) is None         # traced: its handler runs now
    assert found == [code_of(g), code_of(f)] and calls == [(code_of(f), 0)]


def test_a_raising_discovery_decides_nothing(impl):
    dispatch = impl.entry_dispatcher(impl.CodeTable(), lambda code: 1 / 0, Calls())
    assert dispatch(code_of(f), 0) is None          # neither traced nor DISABLEd


def test_a_raising_handler_is_reported_not_raised(impl):
    calls, faults = Calls(), Calls()
    table = impl.CodeTable()
    table[id(code_of(f))] = calls.raising
    for dispatch, args in [(impl.entry_dispatcher(table, Calls(), faults), (0,)),
                           (impl.dispatcher(table, faults, 2, True), (0,)),
                           (impl.dispatcher(table, faults, 3, False), (0, "arg"))]:
        assert dispatch(code_of(f), *args) is None
    assert calls == [(code_of(f), 0), (code_of(f), 0), (code_of(f), 0, "arg")]
    assert faults == [(code_of(f),)] * 3


def test_dispatcher_passes_the_events_arguments(impl):
    calls = Calls()
    table = impl.CodeTable()
    table[id(code_of(f))] = calls
    assert impl.dispatcher(table, Calls(), 3, True)(code_of(f), 6, 42) is None
    assert impl.dispatcher(table, Calls(), 2, True)(code_of(f), 8) is None
    assert calls == [(code_of(f), 6, 42), (code_of(f), 8)]


def test_dispatcher_disables_a_miss_only_where_asked(impl):
    table = impl.CodeTable()
    assert impl.dispatcher(table, Calls(), 3, True)(code_of(g), 0, None) is DISABLE
    assert impl.dispatcher(table, Calls(), 3, False)(code_of(g), 0, None) is None


def test_offset_dispatcher_calls_the_probed_offsets_handler(impl):
    calls = Calls()
    table = impl.CodeTable()
    table[id(code_of(f))] = {4: calls}
    dispatch = impl.offset_dispatcher(table, Calls())
    assert dispatch(code_of(f), 4) is None
    assert dispatch(code_of(f), 2) is DISABLE      # another offset of traced code
    assert dispatch(code_of(g), 4) is DISABLE      # untraced code
    assert calls == [(code_of(f), 4)]


def test_list_func_calls_each_ops_and_counts_what_raises(impl):
    class Ops:
        errors = 0
    first, second, calls = Ops(), Ops(), Calls()
    call = impl.list_func([(first, calls.raising), (second, calls)], 3)
    assert call(code_of(f), 0, None) is None
    assert (first.errors, second.errors) == (1, 0)
    assert calls == [(code_of(f), 0, None)] * 2
    assert impl.list_func([(second, calls)], 2)(code_of(f), 2) is None
    assert calls[-1] == (code_of(f), 2)


def test_a_quiet_threads_events_are_ignored(impl):
    calls = Calls()
    table = impl.CodeTable()
    table[id(code_of(f))] = calls
    dispatch = impl.dispatcher(table, Calls(), 2, True)
    impl.quiet_thread(True)
    try:
        assert dispatch(code_of(f), 0) is None
        assert dispatch(code_of(g), 0) is None      # not even DISABLEd: it is not this code's miss
    finally:
        impl.quiet_thread(False)
    other = threading.Thread(target=dispatch, args=(code_of(f), 1))
    impl.quiet_thread(True)
    try:
        other.start()                               # quiet is per thread
        other.join()
    finally:
        impl.quiet_thread(False)
    assert calls == [(code_of(f), 1)]


# -- handlers, under sys.monitoring itself

@pytest.fixture
def monitor():
    """``monitor(event, callback, *codes)``: the callback on ``event`` as
    local events of ``codes``, under a free tool id of the test's own."""
    mon = sys.monitoring
    tool = next(i for i in range(6) if mon.get_tool(i) is None)
    mon.use_tool_id(tool, "fentry-twins-test")
    armed: dict[types.CodeType, int] = {}

    def arm(event, callback, *codes):
        mon.register_callback(tool, event, callback)
        for code in codes:
            armed[code] = armed.get(code, 0) | event
            mon.set_local_events(tool, code, armed[code])
    try:
        yield arm
    finally:
        for code in armed:
            mon.set_local_events(tool, code, 0)
        for event in (E.PY_START, E.PY_RETURN):
            mon.register_callback(tool, event, None)
        mon.free_tool_id(tool)
        mon.restart_events()


class Buffers:
    """A ring buffer's ``local`` and ``attach``: one Ring per thread."""

    def __init__(self, impl):
        self.impl = impl
        self.local = threading.local()

    def attach(self):
        self.local.tb = self.impl.Ring(64)
        return self.local.tb


def test_a_handler_finds_the_traced_frame_at_direct(impl, monitor):
    frames = []
    table = impl.CodeTable()
    table[id(code_of(f))] = lambda code, offset: frames.append(sys._getframe(impl.DIRECT))
    monitor(E.PY_START, impl.entry_dispatcher(table, Calls(), Calls()), code_of(f))
    f(5)
    [frame] = frames
    assert frame.f_code is code_of(f) and frame.f_locals == {"x": 5}


def test_function_entry_records_the_code_and_its_caller(impl, monitor):
    buffers = Buffers(impl)
    table = impl.CodeTable()
    table[id(code_of(f))] = impl.function_entry(buffers.local, buffers.attach, impl.DIRECT)
    monitor(E.PY_START, impl.entry_dispatcher(table, Calls(), Calls()), code_of(f))
    g()
    f()
    assert [rec[2:] for rec in buffers.local.tb.snapshot()] == [
        (code_of(f), code_of(g)), (code_of(f), code_of(test_function_entry_records_the_code_and_its_caller))]


def test_graph_events_record_entry_and_return(impl, monitor):
    buffers = Buffers(impl)
    entries, returns = impl.CodeTable(), impl.CodeTable()
    entries[id(code_of(f))] = impl.graph_event(buffers.local, buffers.attach, raw.ENTRY, 2)
    returns[id(code_of(f))] = impl.graph_event(buffers.local, buffers.attach, raw.RETURN)
    monitor(E.PY_START, impl.entry_dispatcher(entries, Calls(), Calls()), code_of(f))
    monitor(E.PY_RETURN, impl.dispatcher(returns, Calls(), 3, True), code_of(f))
    g()
    assert [rec[2:] for rec in buffers.local.tb.snapshot()] == [
        (raw.ENTRY, code_of(f)), (raw.RETURN, code_of(f))]
    unwind = impl.graph_exc_event(buffers.local, buffers.attach, raw.UNWIND)
    unwind(code_of(f), 0, KeyError("k"))
    assert buffers.local.tb.snapshot()[-1][2:] == (raw.UNWIND, code_of(f), KeyError)


class Gated:
    """graph_gated_event's handlers of one role, called as sys.monitoring would."""

    def __init__(self, impl, buffers, role, max_depth=0, thresh_ns=0, gen=1):
        def make(kind, *nargs):
            return impl.graph_gated_event(buffers.local, buffers.attach, kind, role, max_depth,
                                          thresh_ns, gen, *nargs)
        self._enter, self._resume = make(raw.ENTRY, 2), make(raw.RESUME, 2)
        self._return, self._yield, self._unwind = make(raw.RETURN), make(raw.YIELD), make(raw.UNWIND)

    def enter(self, code):
        self._enter(code, 0)

    def resume(self, code):
        self._resume(code, 0)

    def leave(self, code, how="return"):
        {"return": self._return, "yield": self._yield}.get(how, self._unwind)(code, 0, KeyError("k"))


def _codes(n):
    return [compile("pass", f"<c{i}>", "exec") for i in range(n)]


def _recorded(buffers):
    return [rec[2:4] for rec in buffers.local.tb.snapshot()]


def test_graph_gated_records_the_subtrees_of_a_graph_function(impl):
    buffers = Buffers(impl)
    a, b, c = _codes(3)
    plain = Gated(impl, buffers, impl.G_FILTERED)
    func = Gated(impl, buffers, impl.G_FILTERED | impl.G_FUNC)
    plain.leave(a)                  # an exit never seen entering: nothing, and no harm
    plain.enter(a)                  # outside: not recorded
    func.enter(b)                   # the graph function ...
    plain.enter(c)                  # ... and what it calls
    plain.leave(c)
    func.enter(b)                   # recursion stays inside
    func.leave(b)
    func.leave(b)
    plain.enter(c)                  # outside again
    plain.leave(c)
    plain.leave(a)
    assert _recorded(buffers) == [(raw.ENTRY, b), (raw.ENTRY, c), (raw.RETURN, c), (raw.ENTRY, b),
                                  (raw.RETURN, b), (raw.RETURN, b)]


def test_graph_gated_notrace_drops_the_subtree_and_generators_reenter(impl):
    buffers = Buffers(impl)
    a, b, c = _codes(3)
    plain = Gated(impl, buffers, 0)
    notrace = Gated(impl, buffers, impl.G_NOTRACE)
    plain.enter(a)
    notrace.enter(b)
    plain.enter(c)
    plain.leave(c)
    notrace.leave(b, "yield")       # a generator leaves ...
    plain.resume(c)                 # (c is a generator too, resumed outside b)
    plain.leave(c, "unwind")
    notrace.resume(b)               # ... and re-enters: still not recorded
    notrace.leave(b)
    plain.leave(a)
    assert _recorded(buffers) == [(raw.ENTRY, a), (raw.RESUME, c), (raw.UNWIND, c), (raw.RETURN, a)]
    assert buffers.local.tb.snapshot()[2][4] is KeyError


def test_graph_gated_max_depth_and_a_new_selection_starts_over(impl):
    buffers = Buffers(impl)
    a, b, c = _codes(3)
    h = Gated(impl, buffers, 0, max_depth=2)
    for code in (a, b, c):
        h.enter(code)
    for code in (c, b, a):
        h.leave(code)
    assert _recorded(buffers) == [(raw.ENTRY, a), (raw.ENTRY, b), (raw.RETURN, b), (raw.RETURN, a)]
    h.enter(a)
    h.enter(b)                      # open when the selection changes
    again = Gated(impl, buffers, 0, max_depth=1, gen=2)
    again.leave(b)                  # exits of the old selection's activations: not seen entering
    again.leave(a)
    again.enter(c)
    again.leave(c)
    assert _recorded(buffers)[-2:] == [(raw.ENTRY, c), (raw.RETURN, c)]
    assert len(_recorded(buffers)) == 8


def test_graph_gated_thresh_records_long_calls_at_their_exit(impl):
    buffers = Buffers(impl)
    a, b, c = _codes(3)
    h = Gated(impl, buffers, 0, thresh_ns=5_000_000)
    h.enter(a)
    h.enter(b)
    h.leave(b)                      # quick: nothing
    h.enter(c)
    time.sleep(0.01)
    h.leave(c)
    h.leave(a)
    recs = buffers.local.tb.snapshot()
    assert [r[2:4] + (r[5],) for r in recs] == [(raw.THRESH_RETURN, c, 1), (raw.THRESH_RETURN, a, 0)]
    assert 10_000_000 <= recs[0][4] <= recs[1][4] and buffers.local.tb.graph_untimed == 0


def test_graph_gated_beyond_its_stack_counts_what_it_cannot_time(impl):
    buffers = Buffers(impl)
    [a] = _codes(1)
    h = Gated(impl, buffers, 0, thresh_ns=1)
    deep = impl.GRAPH_STACK + 10
    for _ in range(deep):
        h.enter(a)
    for _ in range(deep):
        h.leave(a)
    recs = buffers.local.tb.snapshot()
    assert buffers.local.tb.graph_untimed == 10
    assert len(recs) == min(impl.GRAPH_STACK, buffers.local.tb.maxlen)
    assert recs[-1][5] == 0 and all(r[2] == raw.THRESH_RETURN for r in recs)
def closure_args(a, b, *rest, **kw):
    return lambda: a


def test_graph_value_events_record_the_values_kept(impl, monitor):
    """funcgraph-args / -retval: an int of 64 bits, a float, None, a bool kept
    as is, anything else as ``shown(value)``, never the object; an argument
    a closure captured read through its cell."""
    buffers = Buffers(impl)
    entries, returns = impl.CodeTable(), impl.CodeTable()
    code = code_of(closure_args)
    shown = "shown:{}".format
    entries[id(code)] = impl.graph_args_event(buffers.local, buffers.attach, raw.ENTRY, shown, FAULT, 4,
                                              impl.DIRECT)
    returns[id(code)] = impl.graph_retval_event(buffers.local, buffers.attach, raw.RETURN, shown, FAULT)
    monitor(E.PY_START, impl.entry_dispatcher(entries, Calls(), Calls()), code)
    monitor(E.PY_RETURN, impl.dispatcher(returns, Calls(), 3, True), code)
    closure_args(2**63, 1.5, None, k=True)
    [(_, entry), (_, ret)] = [(rec[2], rec[3:]) for rec in buffers.local.tb.snapshot()]
    assert entry == (code, (f"shown:{2**63}", 1.5, "shown:(None,)", "shown:{'k': True}"))
    assert ret[0] is code and ret[1][0].startswith("shown:<function closure_args.<locals>.<lambda>")

    def interrupted(value):
        raise KeyboardInterrupt
    retval = impl.graph_retval_event(buffers.local, buffers.attach, raw.RETURN, interrupted, FAULT)
    with pytest.raises(KeyboardInterrupt):      # the program's, after the record
        retval(code, 0, object())
    assert buffers.local.tb.snapshot()[-1][2:] == (raw.RETURN, code, (FAULT,))


def test_graph_gated_with_values_records_them_as_the_value_events(impl, monitor):
    """Under a selection, with funcgraph-args/-retval: a selected entry
    carries its arguments and its return the value, exactly as
    graph_args_event and graph_retval_event record them; a call not selected
    records nothing; a tracing_thresh exit carries no values."""
    buffers = Buffers(impl)
    code = code_of(closure_args)
    shown = "shown:{}".format
    entries, returns = impl.CodeTable(), impl.CodeTable()

    def select(role, thresh_ns=0, gen=1, how=shown, count=4):
        sel = (role, 0, thresh_ns, gen)
        entries[id(code)] = impl.graph_gated_event(buffers.local, buffers.attach, raw.ENTRY, *sel,
                                                   2, how, FAULT, count, impl.DIRECT)
        returns[id(code)] = impl.graph_gated_event(buffers.local, buffers.attach, raw.RETURN, *sel,
                                                   3, how, FAULT)
    select(impl.G_FILTERED | impl.G_FUNC)
    monitor(E.PY_START, impl.entry_dispatcher(entries, Calls(), Calls()), code)
    monitor(E.PY_RETURN, impl.dispatcher(returns, Calls(), 3, True), code)
    closure_args(2**63, 1.5, None, k=True)
    [(_, entry), (_, ret)] = [(rec[2], rec[3:]) for rec in buffers.local.tb.snapshot()]
    assert entry == (code, (f"shown:{2**63}", 1.5, "shown:(None,)", "shown:{'k': True}"))
    assert ret[0] is code and ret[1][0].startswith("shown:<function closure_args.<locals>.<lambda>")
    select(impl.G_FILTERED, gen=2)              # not under a graph function: nothing
    closure_args(1, 2)
    select(0, thresh_ns=1, gen=3)               # the lone exit, with its duration and depth only
    closure_args(1, 2)
    recs = buffers.local.tb.snapshot()
    assert len(recs) == 3 and recs[2][2:4] == (raw.THRESH_RETURN, code) and len(recs[2]) == 6

    def interrupted(value):
        raise KeyboardInterrupt
    select(0, gen=4, how=interrupted, count=0)
    entries[id(code)](code, 0)
    with pytest.raises(KeyboardInterrupt):      # the program's, after the record
        returns[id(code)](code, 0, object())
    assert [rec[2:] for rec in buffers.local.tb.snapshot()[-2:]] == [
        (raw.ENTRY, code, ()), (raw.RETURN, code, (FAULT,))]


def test_ops_entry_passes_ip_parent_ip_ops_and_regs(impl, monitor):
    calls = Calls()
    ops = object()
    table = impl.CodeTable()
    table[id(code_of(f))] = impl.ops_entry(calls, ops, True, impl.DIRECT)
    monitor(E.PY_START, impl.entry_dispatcher(table, Calls(), Calls()), code_of(f))
    g()
    table[id(code_of(f))] = impl.ops_entry(calls, ops, False, impl.DIRECT)
    g()
    [(ip1, parent1, ops1, regs1), (ip2, parent2, ops2, regs2)] = calls
    assert ip1 == ip2 == impl.Ip(code_of(f), 0) and ops1 is ops2 is ops
    assert regs1 is not None and regs1.f_code is code_of(f) and regs2 is None
    assert parent1.code is code_of(g) and parent1 == parent2
    at = {i.offset: i.opname for i in dis.get_instructions(code_of(g))}
    assert at[parent1.offset].startswith("CALL")       # the call site, as the kernel's parent_ip
    assert hash(parent1) == hash(impl.Ip(code_of(g), parent1.offset))


def test_switch_is_a_flag(impl):
    switch = impl.Switch()
    assert switch.on is True and impl.Switch(on=False).on is False
    switch.on = 0
    assert switch.on is False


def test_probe_trace_hands_what_it_does_not_fetch_to_slow(impl, monitor):
    """With no fetchargs for C (``specs`` None) both call ``slow`` for every
    hit, with the traced frame, as the event's Python path wants it."""
    hits = Calls()
    buffers = Buffers(impl)
    trace = impl.ProbeTrace("event", None, buffers.local, buffers.attach, impl.Switch(),
                            lambda value: value, FAULT, hits)
    trace.set_filter(None, None)
    entries, returns = impl.CodeTable(), impl.CodeTable()
    entries[id(code_of(f))] = trace.entry(code_of(f), 0, impl.DIRECT)
    returns[id(code_of(f))] = trace.exit(code_of(f), impl.DIRECT, False)
    monitor(E.PY_START, impl.entry_dispatcher(entries, Calls(), Calls()), code_of(f))
    monitor(E.PY_RETURN, impl.dispatcher(returns, Calls(), 3, True), code_of(f))
    f(3)
    trace("kp", "regs")                         # as a kprobe's pre_handler
    assert trace.start(code_of(f), impl.DIRECT)(code_of(f), 0) is None
    [(entry,), (exit, value, raised), regs] = hits
    assert entry.f_code is exit.f_code is code_of(f) and (value, raised) == (3, False)
    assert regs == ("regs",)
    assert (trace.event, trace.nhit, trace.nmissed) == ("event", 0, 0)


def h(x, inner=None):
    x = x * 10
    if inner is not None:
        inner()
    return x


def test_probe_trace_keeps_entry_values_per_activation(impl, monitor):
    """A return probe's entry store: ``entry(frame)`` at PY_START, handed
    to ``slow`` by that activation's return, and nothing for a return not
    seen entering; past ``maxactive`` the oldest goes, counted as a miss."""
    hits, entries = Calls(), Calls()

    def entry(frame):
        entries.append(frame.f_locals["x"])
        return ("at entry", frame.f_locals["x"])
    buffers = Buffers(impl)
    trace = impl.ProbeTrace("event", None, buffers.local, buffers.attach, impl.Switch(),
                            lambda value: value, FAULT, hits, entry, 2)
    starts, returns = impl.CodeTable(), impl.CodeTable()
    starts[id(code_of(h))] = lambda code, offset: None
    returns[id(code_of(h))] = trace.exit(code_of(h), impl.DIRECT, False)
    monitor(E.PY_RETURN, impl.dispatcher(returns, Calls(), 3, True), code_of(h))
    monitor(E.PY_START, impl.entry_dispatcher(starts, Calls(), Calls()), code_of(h))
    h(1)                                        # not seen entering: nothing
    starts[id(code_of(h))] = trace.start(code_of(h), impl.DIRECT)
    h(2)
    [(frame, value, raised, entered)] = hits
    assert frame.f_code is code_of(h) and (value, raised, entered) == (20, False, ("at entry", 2))
    hits.clear()
    # Three activations at once, with room for two: the oldest one's goes.
    assert h(3, lambda: h(4, lambda: h(5))) == 30
    assert [hit[1:] for hit in hits] == [(50, False, ("at entry", 5)), (40, False, ("at entry", 4))]
    assert trace.nmissed == 1 and entries == [2, 3, 4, 5]
    with pytest.raises(ValueError):
        impl.ProbeTrace("event", None, buffers.local, buffers.attach, impl.Switch(),
                        lambda value: value, FAULT, hits, entry, 0)


# -- the function profiler's handlers

class Profiles:
    """A profiler's ``local`` and ``attach``: one ProfileStat per thread."""

    def __init__(self, impl):
        self.impl = impl
        self.local = threading.local()

    def attach(self):
        self.local.ps = self.impl.ProfileStat()
        return self.local.ps


def outer_p():
    inner_p()
    inner_p()


def inner_p():
    time.sleep(0.002)


def test_profile_events_count_hits_and_time_each_activation(impl, monitor):
    p = Profiles(impl)
    starts, returns = impl.CodeTable(), impl.CodeTable()
    for f in (outer_p, inner_p):
        starts[id(f.__code__)] = impl.profile_event(p.local, p.attach, 0, 2)
        returns[id(f.__code__)] = impl.profile_event(p.local, p.attach, 2, 3)
    monitor(E.PY_START, impl.entry_dispatcher(starts, Calls(), Calls()), outer_p.__code__, inner_p.__code__)
    monitor(E.PY_RETURN, impl.dispatcher(returns, Calls(), 3, True), outer_p.__code__, inner_p.__code__)
    outer_p()
    stats = {code.co_name: rest for code, *rest in p.local.ps.stats()}
    (oh, ot, otsq, oself, _), (ih, it, itsq, iself, _) = stats["outer_p"], stats["inner_p"]
    assert (oh, ih) == (1, 2) and p.local.ps.depth == 0
    assert it >= 4_000_000 and ot >= it and iself == it           # inner is a leaf
    assert abs(oself - (ot - it)) <= 2          # outer's own: less inner's (C: rounded ticks)
    assert otsq == ot * ot or abs(otsq - ot * ot) <= ot * ot // 1000    # (C: floating point)
    assert itsq >= it * it // 2 * 0.999     # Σx² ≥ (Σx)²/n (C: floating point)


def test_a_profile_exit_whose_start_was_not_seen_counts_nothing(impl):
    p = Profiles(impl)
    end = impl.profile_event(p.local, p.attach, 2, 3)
    end(outer_p.__code__, 0, None)          # no ProfileStat in this thread yet
    begin = impl.profile_event(p.local, p.attach, 0, 2)
    resume = impl.profile_event(p.local, p.attach, 1, 2)
    begin(outer_p.__code__, 0)
    end(inner_p.__code__, 0, None)          # inner never began: nothing
    assert p.local.ps.depth == 1
    resume(inner_p.__code__, 0)             # a resume: an activation, not a hit
    end(outer_p.__code__, 0, None)          # outer ends; inner's exit was not seen: dropped
    assert p.local.ps.depth == 0
    stats = {code.co_name: rest for code, *rest in p.local.ps.stats()}
    assert stats["outer_p"][0] == 1 and "inner_p" not in stats     # no hit, no time: no row


def gen_p(n):
    for i in range(n):
        inner_p()
        yield i


def test_profile_generator_events_count_a_call_from_its_first_start_sleep_included(impl, monitor):
    p = Profiles(impl)
    code = gen_p.__code__
    starts, resumes, yields, returns = impl.CodeTable(), impl.CodeTable(), impl.CodeTable(), impl.CodeTable()
    starts[id(code)] = impl.profile_event(p.local, p.attach, 3, 2, impl.DIRECT)
    resumes[id(code)] = impl.profile_event(p.local, p.attach, 1, 2)
    yields[id(code)] = impl.profile_event(p.local, p.attach, 4, 3, impl.DIRECT)
    returns[id(code)] = impl.profile_event(p.local, p.attach, 5, 3, impl.DIRECT)
    starts[id(inner_p.__code__)] = impl.profile_event(p.local, p.attach, 0, 2)
    returns[id(inner_p.__code__)] = impl.profile_event(p.local, p.attach, 2, 3)
    monitor(E.PY_START, impl.entry_dispatcher(starts, Calls(), Calls()), code, inner_p.__code__)
    monitor(E.PY_RESUME, impl.dispatcher(resumes, Calls(), 2, True), code)
    monitor(E.PY_YIELD, impl.dispatcher(yields, Calls(), 3, True), code)
    monitor(E.PY_RETURN, impl.dispatcher(returns, Calls(), 3, True), code, inner_p.__code__)
    for _ in gen_p(3):
        time.sleep(0.01)                # suspended: in its time, and in its self time
    stats = {c.co_name: rest for c, *rest in p.local.ps.stats()}
    hits, t, tsq, own, _ = stats["gen_p"]
    assert hits == 1 and stats["inner_p"][0] == 3 and p.local.ps.depth == 0
    assert t >= 36_000_000 and own >= 30_000_000
    assert abs(own - (t - stats["inner_p"][1])) <= 2          # less inner's time only
    assert tsq == t * t or abs(tsq - t * t) <= t * t // 1000  # one call: one sample
    # Suspended and never ended, more than a thread follows: the oldest
    # dropped, nothing left under way, and a call after them still counts whole.
    left = [gen_p(1) for _ in range(70)]
    for g in left:
        next(g)
    del left, g
    assert p.local.ps.depth == 0
    for _ in gen_p(1):
        time.sleep(0.01)
    hits2, t2, *_ = {c.co_name: rest for c, *rest in p.local.ps.stats()}["gen_p"]
    assert hits2 == 72 and t2 - t >= 12_000_000
    if impl is pytrampolines:
        assert len(p.local.ps._calls) <= pytrampolines._PROFILE_CALLS
