"""function_graph's options of current kernels: funcgraph-retval,
funcgraph-args, funcgraph-abstime, funcgraph-overhead, and the exit whose
entry was lost; in process, through ``fentry run``, and ``fentry record`` +
``fentry report``."""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest
from helpers import DURATION, GRAPH_LINE, env, fentry, fentry_run, graph_lines

from fentry import TraceError, hotpath
from fentry.arch import EVENTS as E
from fentry.ftrace import TABLES

HERE = __name__


# ---------------------------------------------------------------- traced code

def ident(x):
    return x


def pair(a, b="q", *rest, key=None, **kw):
    return ident(a)


def nothing():
    pass


def captures(v):
    return (lambda: v)()


def fails(n):
    raise ValueError(n)


def gen(n):
    yield n


def slow():
    sum(range(300_000))     # well over 10 us: a mark


class Payload:
    pass


def make(refs):
    p = Payload()
    refs.append(weakref.ref(p))
    return p


RAN = []        # what a hostile object ran (nothing, if fentry ran none of it)


class Hostile:
    def __repr__(self):
        RAN.append("repr")
        raise RuntimeError("repr")

    def __str__(self):
        RAN.append("str")
        raise RuntimeError("str")

    def __eq__(self, other):
        RAN.append("eq")
        raise RuntimeError("eq")

    __hash__ = None

    def __len__(self):
        RAN.append("len")
        raise RuntimeError("len")

    def __getattr__(self, name):
        RAN.append(f"getattr {name}")
        raise RuntimeError(name)

    @property
    def prop(self):
        RAN.append("prop")
        raise RuntimeError("prop")


class HostileStr(str):
    def __repr__(self):
        RAN.append("str repr")
        raise RuntimeError("str repr")


class HostileList(list):
    def __iter__(self):
        RAN.append("iter")
        raise RuntimeError("iter")


def traced(fs, func, *names, options=("funcgraph-retval", "funcgraph-args")):
    """``func()`` under function_graph on ``names`` of this module, with ``options``: the call lines."""
    fs.write("set_ftrace_filter", " ".join(f"{HERE}:{n}" for n in names))
    for o in options:
        fs.write("trace_options", o)
    fs.write("current_tracer", "function_graph")
    func()
    fs.write("tracing_on", "0")
    return [m["indent"] + m["text"] for m in graph_lines(fs.read("trace"))]


# ---------------------------------------------------------------- the values, in process

BIG = "x" * 1_000_000
SHOWN_BIG = repr(BIG[:124])[:124] + "...'"          # probe fetchargs' bound (MAX_REPR)


@pytest.mark.parametrize("value,shown", [
    (42, "42"), (-7, "-7"), (2**63 - 1, str(2**63 - 1)), (2**70, str(2**70)), (0, "0"),
    (1.5, "1.5"), (True, "True"), (None, "None"), ("x", "'x'"), (b"ab", "b'ab'"),
    (10**5000, "(fault)"),      # (past int's str digits limit: no text, as a probe's too-big int)
    ([1, [2, [3, [4]]]], "[1, [2, [3, [...]]]]"), ((1,), "(1,)"), ({"k": (1, 2)}, "{'k': (1, 2)}"),
    (list(range(100)), "[0, 1, 2, 3, 4, 5, 6, 7, ...]"),
    (BIG, SHOWN_BIG), (Hostile(), f"<{HERE}.Hostile>"), (HostileStr("s"), f"<{HERE}.HostileStr>"),
    (HostileList([1]), f"<{HERE}.HostileList>"), (nothing, f"<{HERE}:nothing>"),
], ids=lambda v: type(v).__name__ if not isinstance(v, str) or len(v) < 10 else "1MB")
def test_retval_and_args_show_the_value_as_probe_fetchargs_do(fs, value, shown):
    del RAN[:]
    lines = traced(fs, lambda: ident(value), "ident")
    assert lines == [f"ident(x={shown}); /* ret={shown} */"]
    assert RAN == []            # no user code ran: no __repr__, __eq__, __len__, __iter__


def test_the_exit_of_a_call_that_made_calls_names_it_with_its_value(fs):
    lines = traced(fs, lambda: pair(5, "y", 7, 8, key=1, z=2), "pair", "ident")
    assert lines == ["pair(a=5, b='y', key=1, rest=(7, 8), kw={'z': 2}) {",
                     "  ident(x=5); /* ret=5 */",
                     "} /* pair ret=5 */"]


def test_an_argument_a_closure_captured_shows_its_value(fs):
    lines = traced(fs, lambda: captures(9), "captures")
    assert lines == ["captures(v=9); /* ret=9 */"]


def test_values_where_a_probe_shares_the_function(fs):
    """A code traced by the tracer and a probe event is called through the
    list function: the values are the same."""
    fs.write("kprobe_events", f"p:in {HERE}:pair a")
    fs.write("events/kprobes/enable", "1")
    lines = traced(fs, lambda: pair(4, "z"), "pair", "ident")
    assert lines == ["pair(a=4, b='z', key=None, rest=(), kw={}) {", "  /* in: (pair+0x0) arg1=4 */",
                     "  ident(x=4); /* ret=4 */", "} /* pair ret=4 */"]


def test_a_raised_exit_and_a_yield_keep_their_comments(fs):
    def run():
        try:
            fails(1)
        except ValueError:
            pass
        list(gen(2))
    lines = traced(fs, run, "fails", "gen")
    assert lines[0] == "fails(n=1); /* raised ValueError */"
    assert lines[1] == "gen(n=2); /* yield */"
    assert lines[2:] == ["gen(); /* ret=None */"]        # the resume: no arguments, its return value


def test_each_option_alone(fs):
    assert traced(fs, lambda: ident(3), "ident", options=("funcgraph-retval",)) == ["ident(); /* ret=3 */"]
    fs.reset()
    assert traced(fs, lambda: ident(3), "ident", options=("funcgraph-args",)) == ["ident(x=3);"]


def test_a_returned_object_is_not_kept_alive_by_the_trace(fs):
    refs = []
    fs.write("set_ftrace_filter", f"{HERE}:make")
    fs.write("trace_options", "funcgraph-retval funcgraph-args")
    fs.write("current_tracer", "function_graph")
    make(refs)
    gc.collect()
    assert refs[0]() is None        # dead while its record is still in the ring
    assert [m["text"] for m in graph_lines(fs.read("trace"))] == [
        f"make(refs=[]); /* ret=<{HERE}.Payload> */"]     # (the argument as it was at entry)


def handler_kind(h) -> str:
    """Which hot-path function made a handler (C: its repr; Python: its function's name)."""
    return getattr(h, "__qualname__", None) or repr(h)


def test_with_the_options_off_the_handlers_are_the_plain_ones(fs):
    fs.write("set_ftrace_filter", f"{HERE}:ident")
    fs.write("current_tracer", "function_graph")
    ident(1)
    plain = {e: handler_kind(TABLES[e][id(ident.__code__)]) for e in (E.PY_START, E.PY_RETURN)}
    fs.write("options/funcgraph-retval", "1")
    fs.write("options/funcgraph-args", "1")
    ident(2)
    valued = {e: handler_kind(TABLES[e][id(ident.__code__)]) for e in (E.PY_START, E.PY_RETURN)}
    fs.write("trace_options", "nofuncgraph-retval nofuncgraph-args")
    ident(3)
    again = {e: handler_kind(TABLES[e][id(ident.__code__)]) for e in (E.PY_START, E.PY_RETURN)}
    assert plain == again != valued
    if hotpath.IMPLEMENTATION == "c":
        assert set(plain.values()) == {"<fentry C trampoline graph_event>"}
        assert set(valued.values()) == {"<fentry C trampoline graph_values>"}


def test_toggling_while_tracing_keeps_the_tracer_and_its_buffer(fs):
    fs.write("set_ftrace_filter", f"{HERE}:ident")
    fs.write("current_tracer", "function_graph")
    ident(1)
    fs.write("options/funcgraph-retval", "1")
    ident(2)
    fs.write("trace_options", "funcgraph-args nofuncgraph-retval")
    ident(3)
    fs.write("tracing_on", "0")
    assert fs.read("current_tracer") == "function_graph\n"
    assert [m["text"] for m in graph_lines(fs.read("trace"))] == [
        "ident();", "ident(); /* ret=2 */", "ident(x=3);"]


def test_options_files_and_trace_options_agree(fs):
    assert fs.read("options/funcgraph-retval") == "0\n"
    assert fs.read("options/funcgraph-args") == "0\n"
    assert fs.read("options/funcgraph-overhead") == "1\n"
    assert fs.read("options/funcgraph-abstime") == "0\n"
    fs.write("trace_options", "funcgraph-retval")
    assert fs.read("options/funcgraph-retval") == "1\n"
    assert "funcgraph-retval\n" in fs.read("trace_options")
    assert "nofuncgraph-args\n" in fs.read("trace_options")
    assert fs.read("options/sleep-time") == "1\n"       # (the profiler's)
    for left_out in ("funcgraph-irqs", "funcgraph-cpu"):
        with pytest.raises(TraceError):
            fs.write("trace_options", left_out)


CALLS = 100_000


def test_threads_at_scale_every_return_has_its_value(fs):
    """2 threads x 10^5 calls, a buffer that holds them all: every call's
    line carries its value, and its argument."""
    fs.write("buffer_size_kb", "10000")
    fs.write("set_ftrace_filter", f"{HERE}:ident")
    fs.write("trace_options", "funcgraph-retval funcgraph-args")
    fs.write("current_tracer", "function_graph")
    go = threading.Barrier(2)

    def work():
        go.wait(5)
        for i in range(CALLS):
            ident(i)
    threads = [threading.Thread(target=work, name=f"w{k}") for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fs.write("tracing_on", "0")
    text = fs.read("trace")
    assert "LOST" not in text
    lines = graph_lines(text)
    assert sum(" /* ret=" in m["text"] for m in lines) == 2 * CALLS
    for k in range(2):
        mine = [m["text"] for m in lines if m["task"] == f"w{k}"]
        assert mine == [f"ident(x={i}); /* ret={i} */" for i in range(CALLS)]


# ---------------------------------------------------------------- layout: abstime, overhead

ABSTIME = re.compile(r"^ *\d+\.\d{6} \|  ")


@pytest.mark.parametrize("options", [(), ("funcgraph-abstime",), ("nofuncgraph-overhead",),
                                     ("funcgraph-abstime", "nofuncgraph-overhead"),
                                     ("funcgraph-abstime", "nofuncgraph-proc"),
                                     ("funcgraph-abstime", "nofuncgraph-proc", "nofuncgraph-duration")])
def test_abstime_and_overhead_keep_the_kernels_layout(fs, options):
    fs.write("set_ftrace_filter", f"{HERE}:slow {HERE}:ident")
    for o in options:
        fs.write("trace_options", o)
    fs.write("current_tracer", "function_graph")
    slow()
    ident(1)
    fs.write("tracing_on", "0")
    lines = fs.read("trace").splitlines()
    abstime = "funcgraph-abstime" in options
    proc, dur = "nofuncgraph-proc" not in options, "nofuncgraph-duration" not in options
    heads = [line for line in lines if line.startswith("#")][-2:]
    # print_graph_headers_flags: TIME first, then the task, then the duration
    assert heads == [
        "#" + ("     TIME       " if abstime else "") + ("           TASK/TID       " if proc else "")
        + ("  DURATION   " if dur else "") + "               FUNCTION CALLS",
        "#" + ("      |         " if abstime else "") + ("            |    |        " if proc else "")
        + ("   |   |      " if dur else "") + "               |   |   |   |"]
    body = [line for line in lines if line and not line.startswith("#")]
    assert len(body) == 2
    rest = []
    for line in body:
        m = ABSTIME.match(line)
        assert (m is not None) == abstime, line
        if m:
            assert len(m.group()) == 16, line       # "%5lu.%06lu |  "
            line = line[16:]
        if proc:
            line = line[26:]
        if dur:
            d = DURATION.match(line[:14])
            assert d, line
            slow_line = line.endswith("slow();")
            assert (d["mark"] != " ") == (slow_line and "nofuncgraph-overhead" not in options), line
            assert line[14:17] == "|  "
            line = line[17:]
        rest.append(line)
    assert rest == ["slow();", "ident();"]


def test_abstime_is_the_records_time_as_the_function_tracer_prints_it(fs):
    fs.write("set_ftrace_filter", f"{HERE}:ident")
    fs.write("trace_options", "funcgraph-abstime")
    fs.write("current_tracer", "function_graph")
    ident(1)
    fs.write("tracing_on", "0")
    graph = [line for line in fs.read("trace").splitlines() if line and not line.startswith("#")]
    fs.write("current_tracer", "function")      # (empties the buffer)
    fs.write("tracing_on", "1")
    ident(1)
    fs.write("tracing_on", "0")
    func = [line for line in fs.read("trace").splitlines() if line and not line.startswith("#")]
    g = float(graph[0].split("|")[0])
    f = float(re.search(r" (\d+\.\d{6}): ", func[0])[1])
    assert 0 <= f - g < 60          # the same clock, the same seconds


# ---------------------------------------------------------------- lost entries

def deep(n):
    return 0 if n == 0 else deep(n - 1) + 1


def test_an_exit_whose_entry_was_lost_is_named_without_a_duration(fs):
    """A small buffer and a deep call: the ring keeps the newest records,
    the oldest entries are gone, and their exits say which function they
    close (print_graph_return's func_match), with no duration."""
    fs.write("buffer_size_kb", "1")
    fs.write("set_ftrace_filter", f"{HERE}:deep")
    fs.write("current_tracer", "function_graph")
    deep(200)
    deep(2)
    fs.write("tracing_on", "0")
    trace = fs.read("trace")
    assert re.search(r"^# TID:\d+ \[LOST \d+ EVENTS\]$", trace, re.M)
    in_buffer = int(re.search(r"entries-in-buffer/entries-written: (\d+)/", trace)[1])
    lines = graph_lines(trace)
    texts = [m["indent"] + m["text"] for m in lines]
    orphans = lines[:-5]
    assert len(orphans) == in_buffer - 6 > 0        # deep(2) is 6 records
    assert all(m["text"] == "} /* deep */" and m["duration"] == " " * 14 for m in orphans)
    assert texts[-5:] == ["deep() {", "  deep() {", "    deep();", "  }", "}"]
    assert all(DURATION.match(m["duration"]) for m in lines[-3:])


class Thread:
    """A thread as the readers name it."""
    tid = 7
    read_name = "t"
    renamed = 0

    def task_name(self) -> str:
        return "t"


def test_a_loss_inside_a_batch_is_placed_by_the_seq_numbers():
    """A reader given one batch with a gap in its seq numbers (a drain of
    several pages, records lost between two): the calls open before the
    gap are forgotten there, not at the batch's start."""
    from fentry.raw import ENTRY, RETURN
    from fentry.tracers.text import GraphReader
    main, d = outer.__code__, deep.__code__
    records = [(0, 1000, ENTRY, main), (1, 2000, ENTRY, d), (2, 3000, ENTRY, d), (3, 4000, RETURN, d),
               # seqs 4 .. 9 lost
               (10, 9000, RETURN, d), (11, 9500, RETURN, d), (12, 9600, ENTRY, d), (13, 9700, RETURN, d),
               (14, 9900, RETURN, main)]
    reader = GraphReader({})
    tb = Thread()
    reader.lost(tb)
    lines = [line.split("|", 2)[1:] for line in reader.lines([(tb, records)]) + reader.flush()]
    assert [(dur.strip() != "", text.rstrip("\n")[2:]) for dur, text in lines] == [
        (False, "outer() {"), (False, "  deep() {"), (True, "    deep();"),
        (False, "} /* deep */"), (False, "} /* deep */"), (True, "deep();"), (False, "} /* outer */")]


def outer():
    pass


def test_an_exit_whose_entry_was_never_seen_prints_nothing(fs):
    """Tracing switched on mid-call, nothing lost: the exit prints nothing."""
    def outer():
        fs.write("set_ftrace_filter", f"{HERE}:ident {HERE}:test_an_exit_whose_entry_was_never_seen_prints_nothing"
                 ".<locals>.outer")
        fs.write("current_tracer", "function_graph")
        ident(1)
    outer()
    fs.write("tracing_on", "0")
    assert [m["text"] for m in graph_lines(fs.read("trace"))] == ["ident();"]


# ---------------------------------------------------------------- fentry run, record + report

PROGRAM = '''
import sys, threading

def ident(x):
    return x

def pair(a, b="q"):
    return ident(a) + 1

class Hostile:
    def __repr__(self):
        sys.stdout.write("REPR RAN\\n")
        raise RuntimeError

def work(n):
    for i in range(n):
        ident(i)

pair(1, b="s")
ident(Hostile())
ident("y" * 1_000_000)
threads = [threading.Thread(target=work, args=(int(sys.argv[1]),), name=f"w{k}") for k in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done")
'''

VALUE_OPTS = ("-t", "function_graph", "-l", "__main__:ident", "-l", "__main__:pair",
              "-O", "funcgraph-retval", "-O", "funcgraph-args")


def calls_of(text: str) -> list[str]:
    return [m["indent"] + m["text"] for m in graph_lines(text)]


def check_values(text: str, n: int) -> None:
    lines = calls_of(text)
    assert lines[:4] == ["pair(a=1, b='s') {", "  ident(x=1); /* ret=1 */", "} /* pair ret=2 */",
                         "ident(x=<__main__.Hostile>); /* ret=<__main__.Hostile> */"]
    big = repr("y" * 124)[:124] + "...'"
    assert lines[4] == f"ident(x={big}); /* ret={big} */"
    workers = lines[5:]
    assert sum(" ret=" in line for line in workers) == 2 * n
    for k in range(2):
        # (A call whose return came in the drain after its entry's, with no
        # other record of its thread between, is printed open and closed:
        # `ident(x=5) {`, `} /* ident ret=5 */`.)
        mine = [m["text"] for m in graph_lines(text) if m["task"] == f"w{k}"]
        assert [int(re.search(r" ret=(\d+) \*/$", t)[1]) for t in mine if " ret=" in t] == list(range(n))
        assert [int(re.match(r"ident\(x=(\d+)\)", t)[1]) for t in mine if t.startswith("ident(")] \
            == list(range(n))


def test_values_through_fentry_run(tmp_path):
    script = tmp_path / "values.py"
    script.write_text(PROGRAM)
    proc, trace = fentry_run(tmp_path, *VALUE_OPTS, program=(str(script), str(CALLS)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == b"done\n"         # no __repr__ of the program's ran
    assert "LOST" not in trace
    check_values(trace, CALLS)


def test_values_through_record_and_report(tmp_path):
    script = tmp_path / "values.py"
    script.write_text(PROGRAM)
    dat = tmp_path / "values.dat"
    rec = fentry("record", *VALUE_OPTS, "-o", str(dat), str(script), "1000")
    assert rec.returncode == 0 and rec.stdout == "done\n", rec.stderr[-2000:]
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0 and rep.stderr == "", rep.stderr
    check_values(rep.stdout, 1000)


def test_abstime_through_fentry_run(tmp_path):
    script = tmp_path / "values.py"
    script.write_text(PROGRAM)
    proc, trace = fentry_run(tmp_path, *VALUE_OPTS, "-O", "funcgraph-abstime", "-O", "nofuncgraph-overhead",
                             program=(str(script), "10"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    heads = [line for line in trace.splitlines() if line.startswith("#")]
    assert heads[-2].startswith("#     TIME                  TASK/TID         DURATION   ")
    body = [line for line in trace.splitlines() if line and not line.startswith("#")]
    assert body and all(ABSTIME.match(line) and GRAPH_LINE.match(line[16:]) for line in body)
    assert all(GRAPH_LINE.match(line[16:])["duration"][0] == " " for line in body)


DEEP_PROGRAM = '''
import sys, time

def deep(n):
    return 0 if n == 0 else deep(n - 1) + 1

def main(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        deep(50)
        time.sleep(0.001)
    deep(2)

main(float(sys.argv[1]))
print("done")
'''


def test_lost_entries_through_fentry_run_with_a_stalled_reader(tmp_path):
    """``fentry run`` stopped for a while (the reader that does not read):
    the program's small ring overwrites its oldest records.  The calls open
    at the loss are forgotten, so ``main``'s exit, at the end, says which
    function it closes, with no duration, as does every exit whose entry
    went; once the reader reads again, new calls nest as before."""
    script = tmp_path / "deep.py"
    script.write_text(DEEP_PROGRAM)
    out = tmp_path / "trace.txt"
    proc = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "function_graph",
                             "-l", "__main__:deep", "-l", "__main__:main",
                             "--buffer-size-kb", "4", "-o", str(out), str(script), "5"],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(3)           # some 280,000 records: more than the pipe holds
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    text = out.read_text()
    assert re.search(r"^TID:\d+ \[LOST \d+ EVENTS\]$", text, re.M), "the reader never fell behind"
    lines = graph_lines(text)
    assert lines[0]["text"] == "main() {"
    named = [m for m in lines if m["text"] in ("} /* deep */", "} /* main */")]
    assert named and all(m["duration"] == " " * 14 for m in named)
    assert lines[-1]["text"] == "} /* main */"
    assert all(DURATION.match(m["duration"]) for m in lines if m["text"] in ("}", "deep();"))
    # after the loss, nesting starts again from the left
    assert [m["indent"] + m["text"] for m in lines[-6:-1]] == [
        "deep() {", "  deep() {", "    deep();", "  }", "}"]
