"""report/calls.py: the call nesting every exporter shares, on records made
by hand -- and each exporter given what a real recording rarely has: lost
records, exits whose entries were lost, values that cannot be printed."""

from __future__ import annotations

import io
import json

import pytest

from fentry.events.event_format import EventFormat
from fentry.raw import ENTRY, RESUME, RETURN, THROW, UNWIND, YIELD, CodeInfo, FaultValue
from fentry.report.calls import (
    BEGIN,
    CALL,
    CUT,
    END,
    EVENT,
    LOST,
    OPEN,
    CallSink,
    ThreadCalls,
    close_all,
    walk,
)
from fentry.report.decode import ProcessStream, ThreadInfo

from .exports import chrome_threads, nested, perfetto_threads, speedscope_profiles

A = CodeInfo("m", "a", "/m.py", 1, ())
B = CodeInfo("m", "b", "/m.py", 5, ())
G = CodeInfo("m", "gen", "/m.py", 9, ())


def state() -> ThreadCalls:
    stream = ProcessStream(1)
    return ThreadCalls(ThreadInfo(1, 100, "T", stream), stream)


def graph(*recs):
    """(kind, code, ts[, exc]) -> function_graph records."""
    return [(i, r[2], r[0], r[1], *r[3:]) for i, r in enumerate(recs)]


def test_entries_and_exits_nest():
    st = state()
    ops = walk(st, graph((ENTRY, A, 10), (ENTRY, B, 20), (RETURN, B, 30), (RETURN, A, 40)))
    assert ops == [(BEGIN, 10, A, 0, ENTRY), (BEGIN, 20, B, 1, ENTRY),
                   (END, 30, B, 1, 20, RETURN, None, ENTRY), (END, 40, A, 0, 10, RETURN, None, ENTRY)]
    assert (st.first, st.last, st.stack) == (10, 40, [])


def test_an_exit_whose_entry_was_never_seen_is_dropped():
    st = state()
    ops = walk(st, graph((RETURN, B, 5), (ENTRY, A, 10), (UNWIND, B, 15, "E"), (RETURN, A, 20)))
    assert [op[0] for op in ops] == [BEGIN, END]
    assert ops[1][2] is A


def test_the_exit_of_a_lower_call_ends_those_above_it():
    """Their exits were lost: they end with it, marked CUT."""
    st = state()
    ops = walk(st, graph((ENTRY, A, 10), (ENTRY, B, 20), (ENTRY, G, 30), (UNWIND, A, 40, "KeyError")))
    assert ops[3:] == [(END, 40, G, 2, 30, CUT, None, ENTRY), (END, 40, B, 1, 20, CUT, None, ENTRY),
                       (END, 40, A, 0, 10, UNWIND, "KeyError", ENTRY)]


def test_a_generator_is_a_slice_from_each_resume_to_its_yield():
    st = state()
    ops = walk(st, graph((ENTRY, A, 1), (ENTRY, G, 2), (YIELD, G, 3), (RESUME, G, 4), (YIELD, G, 5),
                         (THROW, G, 6), (UNWIND, G, 7, "StopIteration"), (RETURN, A, 8)))
    ends = [(op[4], op[1], op[5], op[6], op[7]) for op in ops if op[0] == END and op[2] is G]
    assert ends == [(2, 3, YIELD, None, ENTRY), (4, 5, YIELD, None, RESUME),
                    (6, 7, UNWIND, "StopIteration", THROW)]


def test_open_calls_close_at_the_last_timestamp_and_losses_are_placed():
    st = state()
    st.lost = 7
    ops = walk(st, graph((ENTRY, A, 10), (ENTRY, B, 20)) + [(2, 25, EventFormat.from_definition(
        "p:ev m:b x"), (B, 0), (1,))])
    assert ops[0] == (LOST, 10, 7)
    assert ops[-1][0] == EVENT and ops[-1][-1] == 2
    st.lost = 3
    assert close_all(st) == [(LOST, 25, 3), (END, 25, B, 1, 20, OPEN, None, ENTRY),
                             (END, 25, A, 0, 10, OPEN, None, ENTRY)]


def test_function_tracer_records_are_calls():
    st = state()
    assert walk(st, [(0, 5, A, None), (1, 6, B, A)]) == [(CALL, 5, A, None), (CALL, 6, B, A)]


def test_a_value_that_cannot_be_rendered_is_a_fault_not_an_error():
    sink = CallSink(io.BytesIO())
    event = EventFormat.from_definition("p:ev m:b x=x:x32 y=y:string z=z")
    fields = sink.event_fields(event, (B, 0), ("not a number", FaultValue("too big"), 1 << 70))
    assert fields == [("x", "(fault)", "(fault)"), ("y", "(fault)", "(fault)"),
                      ("z", str(1 << 70), str(1 << 70))]
    assert sink.render_faults == 2


class _Stream:
    """A stream as decode.Streams makes it, fed by hand."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.stream = ProcessStream(1)
        self.stream.hello = {"pid": 4242, "argv": ["python", "prog.py"], "tracer": "function_graph",
                             "options": {}, "wall_minus_clock_ns": 10 ** 18}
        self.stream.tracer = "function_graph"
        self.thread = ThreadInfo(3, 4243, "worker", self.stream)
        sink.start(self.stream)

    def batch(self, *items) -> None:
        self.sink.batch(self.stream, [(self.thread, *item) for item in items])


def feed(sink):
    s = _Stream(sink)
    event = EventFormat.from_definition("p:grp/hit m:b n=n s=s:string")
    s.batch((0, graph((ENTRY, A, 1000), (ENTRY, B, 2000), (RETURN, B, 3000))),
            (5, []),
            (0, graph((RETURN, G, 3500), (ENTRY, B, 4000)) + [(9, 4500, event, (B, 0), (7, "x"))]
             + graph((ENTRY, G, 5000))))
    s.thread.name = "renamed"
    s.batch((0, graph((RETURN, A, 6000))))
    sink.end(s.stream)
    sink.finish({1: s.stream})
    return s


def test_the_exporters_mark_losses_cut_calls_and_events(tmp_path):
    """Lost records are marked where they were lost; calls whose exits were
    lost end with their caller, marked; slices stay balanced; a renamed
    thread keeps one track, under its last name."""
    for fmt in ("perfetto", "chrome", "speedscope"):
        path = tmp_path / fmt
        with open(path, "wb") as out:
            if fmt == "perfetto":
                from fentry.report.perfetto import PerfettoReport
                sink = PerfettoReport(out)
            elif fmt == "chrome":
                from fentry.report.chrome import ChromeReport
                sink = ChromeReport(out)
            else:
                from fentry.report.speedscope import SpeedscopeReport
                sink = SpeedscopeReport(out, "t")
            feed(sink)
        threads = {"perfetto": perfetto_threads, "chrome": chrome_threads,
                   "speedscope": speedscope_profiles}[fmt](str(path))
        [(tid, t)] = threads.items()
        assert tid == 4243 and t["name"].startswith("renamed")
        slices = sorted(s[:3] for s in t["slices"])
        assert slices == [(1000, 6000, "a"), (2000, 3000, "b"), (4000, 6000, "b"),
                          (5000, 6000, "gen")], fmt
        assert nested(slices) == []
        if fmt == "speedscope":
            assert t["name"] == "renamed-4243 (5 events lost)"
            continue
        marks = {s[2]: s[3] for s in t["slices"] if s[3]}
        assert marks == {"b": {"exit": "exit not seen"}, "gen": {"exit": "exit not seen"}}
        lost, hit = sorted(t["instants"])
        assert lost[:2] == (3500, "lost 5 events") and lost[2]["lost"] == 5
        assert hit[:2] == (4500, "hit") and hit[2] == {"site": "b+0x0", "n": 7, "s": '"x"'}


def test_folded_from_records_made_by_hand():
    from fentry.report.folded import FoldedReport
    out = io.BytesIO()
    feed(FoldedReport(out))
    # self times (ns): a 5000 - 1000 - 2000; a;b 1000 + (2000 - 1000); a;b;gen 1000
    assert out.getvalue().decode() == "m:a 2\nm:a;m:b 2\nm:a;m:b;m:gen 1\n"
    out = io.BytesIO()
    feed(FoldedReport(out, "calls"))
    assert out.getvalue().decode() == "m:a 1\nm:a;m:b 2\nm:a;m:b;m:gen 1\n"


@pytest.mark.parametrize("fmt", ["chrome", "speedscope"])
def test_names_that_need_escaping(tmp_path, fmt):
    odd = CodeInfo("m", 'odd"\\name\u2603', "/m\n.py", 1, ())
    path = tmp_path / fmt
    with open(path, "wb") as out:
        if fmt == "chrome":
            from fentry.report.chrome import ChromeReport
            sink = ChromeReport(out)
        else:
            from fentry.report.speedscope import SpeedscopeReport
            sink = SpeedscopeReport(out, "t")
        s = _Stream(sink)
        s.batch((0, graph((ENTRY, odd, 1), (RETURN, odd, 2))))
        sink.end(s.stream)
        sink.finish({1: s.stream})
    text = json.dumps(json.loads(path.read_text()))
    assert "odd\\\"\\\\name\\u2603" in text


def test_records_from_their_bytes_walk_as_decoded_ones(tmp_path):
    """walk() on RawRecords (runs unpacked from the bytes) gives the ops it
    gives on the decoded list, on a real recording with exceptions,
    generators, threads and probe events."""
    from helpers import SHOPAPP

    from fentry.report.datfile import DatReader
    from fentry.report.decode import Streams

    from .exports import record

    class Ops(CallSink):
        def __init__(self, raw: bool) -> None:
            super().__init__(io.BytesIO())
            self.raw_records = raw
            self.ops: dict[int, list] = {}

        def thread_ops(self, st, ops):
            self.ops.setdefault(st.thread.tid, []).extend(plain(op) for op in ops)

    def plain(x):       # the two readings' objects differ: compare by name
        if type(x) is tuple:
            return tuple(plain(y) for y in x)
        return getattr(x, "co_qualname", None) or getattr(x, "name", None) or x

    dat = record(tmp_path, "s.dat", "-t", "function_graph", "-l", "__main__:*",
                 "-e", "p __main__:cents amount", SHOPAPP)
    got = []
    for raw in (True, False):
        sink = Ops(raw)
        streams = Streams(sink)
        for number, payload in DatReader(dat).frames():
            streams.frame(number, payload)
        sink.finish(streams.streams)
        got.append(sink.ops)
    assert got[0] == got[1] and sum(map(len, got[0].values())) > 100


@pytest.mark.slow
def test_perfetto_packets_made_in_runs_are_the_packets_made_one_by_one(tmp_path, monkeypatch):
    """Ordinary begins and ends go out POOL at a time (perfetto._Pool): the
    same bytes as a packet at a time, whatever the runs' shapes."""
    from helpers import SHOPAPP

    from fentry.report import perfetto
    from fentry.report.datfile import DatReader
    from fentry.report.decode import Streams

    from .exports import BUSY, record

    dats = [record(tmp_path, "s.dat", "-t", "function_graph", "-l", "__main__:*", SHOPAPP),
            record(tmp_path, "b.dat", "-t", "function_graph", "-l", "take", "-l", "work",
                   "--buffer-size-kb", "20000", BUSY, "2", "3000")]
    for dat in dats:
        got = {}
        for pool in (128, 7, 2, 1):
            monkeypatch.setattr(perfetto, "POOL", pool)
            out = io.BytesIO()
            sink = perfetto.PerfettoReport(out)
            streams = Streams(sink)
            for number, payload in DatReader(dat).frames():
                streams.frame(number, payload)
            sink.finish(streams.streams)
            got[pool] = out.getvalue()
        assert got[128] == got[7] == got[2] == got[1]
        assert len(got[1]) > 1000
