"""Bounded memory: fentry keeps no code object alive, and forgets the dead ones.

A program that makes code as it runs (``exec`` in a loop: rule engines,
uncached templates, REPL-like servers) runs in bounded memory under fentry,
and a code object born at a dead one's address is traced and named as
itself, never as the dead one (ids are addresses)."""

from __future__ import annotations

import gc
import json
import struct
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest
from helpers import body, env, function_lines, graph_lines

from fentry import FtraceOps, ftrace, raw
from fentry.control.agent import _make_encoder
from fentry.symbols import SYMBOLS
from fentry.tracers import stream


def dyn_anchor():
    """Named so that the filter ``dyn_*`` selects something before the
    functions it is meant for exist (a word that selects nothing is refused)."""


def make(i: int, body: str = "    return x + {i}\n", params: str = "x"):
    """A new function ``dyn_I``, compiled from a string as ``exec`` users do,
    in a file of its own (``<dynI>``)."""
    ns: dict = {}
    exec(compile(f"def dyn_{i}({params}):\n" + body.format(i=i), f"<dyn{i}>", "exec"), ns)
    return ns[f"dyn_{i}"]


def held_by_fentry(key: int) -> list[str]:
    """Where fentry still has something for the code of id ``key``."""
    where = [name for name, table in (("traced", ftrace._core.traced),
                                      ("monitor", ftrace._core.monitor._local),
                                      ("symbols", SYMBOLS._by_code)) if key in table]
    return where + [f"table {event}" for event, table in ftrace.TABLES.items() if key in table]


class Reader:
    """The reader's side of a raw stream, in-process: its REFS and RECORDS."""

    def __init__(self) -> None:
        self.refs: dict[int, raw.CodeInfo] = {}
        self.records: list[tuple] = []

    def feed(self, pieces: list[bytes]) -> None:
        data = b"".join(pieces)
        pos = 0
        while pos < len(data):
            size, kind = struct.unpack_from("<IB", data, pos)
            payload = data[pos + 5:pos + 4 + size]
            pos += 4 + size
            if kind == stream.REFS:
                for i, what, *desc in json.loads(payload):
                    assert i not in self.refs, f"id {i} described twice"
                    if what == "code":
                        self.refs[i] = raw.CodeInfo(*desc)
            elif kind == stream.RECORDS:
                _, first, _ = struct.unpack_from("<IqI", payload)
                self.records += raw.decode_records(payload[16:], self.refs, first)


def test_a_code_born_at_a_dead_codes_address_is_traced_as_itself(fs):
    fs.write("set_ftrace_filter", "dyn_*")
    fs.write("current_tracer", "function")
    raw_stream = stream.RawStream(fs.instance, _make_encoder)
    reader = Reader()
    try:
        first = make(0)
        key = id(first.__code__)
        first(1)
        raw_stream.flush()
        reader.feed(raw_stream.drain())
        assert "traced" in held_by_fentry(key)
        del first
        gc.collect()
        assert held_by_fentry(key) == []
        # Functions of the same shape, each dropped, until one's code is at the same address.
        again = None
        for i in range(1, 100_000):
            candidate = make(i)
            if id(candidate.__code__) == key:
                again = candidate
                break
            del candidate
        if again is None:
            pytest.skip("no code object was born at the dead one's address")
        again(1)
        assert SYMBOLS.name_of(again.__code__) == f"?:dyn_{i}"
        assert f"dyn_{i} [?] (1)" in ftrace.enabled_functions()
        raw_stream.flush()
        reader.feed(raw_stream.drain())
    finally:
        raw_stream.close()
    got = [(code.co_qualname, code.co_filename) for _, _, code, _ in reader.records]
    assert got == [("dyn_0", "<dyn0>"), (f"dyn_{i}", f"<dyn{i}>")]


def test_readers_of_one_queue_are_each_told_and_dead_codes_leave_their_descriptions(fs):
    """Readers share the page queue and its ids: one that comes later is
    told what the earlier one was; a dead code's description goes two
    drains after its death (a page made before may still wait)."""
    fs.write("set_ftrace_filter", "dyn_*")
    fs.write("current_tracer", "function")
    first, second = (stream.RawStream(fs.instance, _make_encoder) for _ in range(2))
    readers = [Reader(), Reader()]
    try:
        dead, alive = make(0), make(1)
        dead(1)
        first.flush()
        readers[0].feed(first.drain())
        [(_, _, code, _)] = readers[0].records
        dead_id = next(i for i, c in readers[0].refs.items() if c is code)
        del dead, code
        gc.collect()
        for r, reader in ((second, readers[1]), (first, readers[0]), (second, readers[1])):
            alive(1)
            r.flush()
            reader.feed(r.drain())
        assert dead_id not in first.descriptions.known
        assert [c.co_qualname for _, _, c, _ in readers[1].records] == ["dyn_1", "dyn_1"]
        assert [c.co_qualname for _, _, c, _ in readers[0].records] == ["dyn_0", "dyn_1"]
    finally:
        first.close()
        second.close()


def test_an_ops_callback_keeps_no_code_alive(register):
    """An FtraceOps' handler holds its ``ip`` (the code's) only during a call:
    an ip the callback keeps is its own, one it does not is emptied."""
    ips, seen = [], []

    def callback(ip, parent_ip, ops, regs):
        seen.append((ip.code.co_qualname, ip.offset))
        if len(seen) == 2:
            ips.append(ip)
    ops = FtraceOps(callback)
    ops.set_filter("dyn_*")
    register(ops)
    func = make(2)
    code = weakref.ref(func.__code__)
    key = id(func.__code__)
    for _ in range(3):
        func(1)
    assert seen == [("dyn_2", 0)] * 3
    assert ips[0].code is func.__code__
    del func, ips[:]
    gc.collect()
    assert code() is None
    assert held_by_fentry(key) == []


def test_a_code_that_dies_while_a_thread_is_inside_it(fs):
    """Its frame keeps it alive: the return is traced, then the code goes."""
    fs.write("set_ftrace_filter", "dyn_*")
    fs.write("current_tracer", "function_graph")
    inside, leave = threading.Event(), threading.Event()
    func = make(1, body="    inside.set()\n    leave.wait()\n    return {i}\n", params="inside, leave")
    code = weakref.ref(func.__code__)
    key = id(func.__code__)
    thread = threading.Thread(target=func, args=(inside, leave), name="worker")
    thread.start()
    assert inside.wait(10)
    del func
    assert code() is not None and "traced" in held_by_fentry(key)
    leave.set()
    thread.join(10)
    trace = fs.read("trace")
    assert [m["text"] for m in graph_lines(trace)] == ["dyn_1();"]     # its entry and return
    fs.write("trace", "")           # the ring's records held the code too
    gc.collect()
    assert code() is None
    assert held_by_fentry(key) == []
    assert "dyn_1" not in ftrace.enabled_functions()


EVAL_LOOP = textwrap.dedent("""\
    import sys

    def f(x):
        return x

    for i in range(int(sys.argv[1])):
        ns = {}
        exec(f"def g(x):\\n    return x + {i}\\n", ns)
        ns["g"](i)
    f(0)
    # VmHWM, not ru_maxrss: that one carries over exec the peak of the
    # (v)forking process, pytest's own.
    print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0], file=sys.stderr)
    """)
N = 200_000


@pytest.fixture(scope="module")
def plain_peak_kb(tmp_path_factory) -> int:
    script = tmp_path_factory.mktemp("evalloop") / "evalloop.py"
    script.write_text(EVAL_LOOP)
    proc = subprocess.run([sys.executable, str(script), str(N)], capture_output=True, text=True,
                          env=env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.split()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("opts,calls_of_g", [
    (("-t", "function"), N),
    (("-t", "function_graph"), N),
    (("-t", "function", "-l", "g"), N),
    (("-t", "nop", "-e", "p f"), 0),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v))
def test_a_program_making_code_as_it_runs_runs_in_bounded_memory(tmp_path, plain_peak_kb, opts,
                                                                 calls_of_g):
    script = tmp_path / "evalloop.py"
    script.write_text(EVAL_LOOP)
    out = tmp_path / "trace.txt"
    proc = subprocess.run([sys.executable, "-m", "fentry", "run", *opts, "-o", str(out), "--",
                           str(script), str(N)], capture_output=True, text=True, env=env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_kb = int(proc.stderr.split()[-1])
    # Before fentry forgot dead code: 150 MB (nop) to 270 MB (function) more.
    assert peak_kb < plain_peak_kb + 60_000, (peak_kb, plain_peak_kb)
    trace = out.read_text()
    if opts[1] == "function":
        funcs = [m["func"] for m in function_lines(trace)]
    elif opts[1] == "function_graph":
        funcs = [m["text"].removesuffix("();") for m in graph_lines(trace)]
    else:
        funcs = [line.split(": ")[1].split(":")[0] for line in body(trace)]
        assert funcs == ["p_f_0"]       # the probe on f: one hit
    assert funcs.count("g") == calls_of_g
