"""Probes on C functions: ``p builtins:sorted``, ``r builtins:len``, ``p builtins:dict.get``."""

from __future__ import annotations

import os
import re
import sys
import textwrap
import threading

import pytest
from helpers import DURATION, Recorder, fentry, fentry_run, fentry_tool_ids, plain

import fentry as fentry_api
from fentry.errors import TraceError

EVENT = re.compile(r"^\s*.+?-\d+\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: (?P<event>\S+): \((?P<where>[^)]*)\)(?P<rest>.*)$")

THREADS, CALLS = 4, 100_000

# Threads that call sorted() CALLS times each, and a few calls sys.monitoring
# cannot see (from C: map, sorted's key); prints what it did.
SORTS = textwrap.dedent(f"""
    import sys, threading
    def work(n):
        for i in range(n):
            sorted((i, 2, 1))
    def other():
        d = {{"k": 1}}
        d.get("k")
        get = d.get
        get("k")
        sorted([3, 1], key=len) if False else sorted(["bb", "a"], key=len)
        sorted(key=len, reverse=True) if False else None
        try:
            len(5)
        except TypeError as e:
            print("raised", type(e).__name__)
        return list(map(len, ["ab", "c", ""]))
    threads = [threading.Thread(target=work, args=({CALLS},)) for _ in range({THREADS})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("lens", other())
    print("threads", threading.active_count())
    sys.exit(3)
""")


@pytest.fixture
def sorts(tmp_path):
    path = tmp_path / "sorts.py"
    path.write_text(SORTS)
    return str(path)


def events(trace):
    return [(m["event"], m["where"], m["rest"].strip()) for m in map(EVENT.match, trace.splitlines()) if m]


def run(tmp_path, program, *opts):
    return fentry_run(tmp_path, "-t", "nop", "--buffer-size-kb", "65536", *opts,
                      program=(program,), sep=False, text=True)


def test_sorted_probe_sees_every_call_from_python_code(tmp_path, sorts):
    proc, trace = run(tmp_path, sorts, "-e", "p builtins:sorted $arg1")
    want = plain(sorts, text=True)
    # the program is the same: output, exit status, threads
    assert (proc.stdout, proc.returncode) == (want.stdout, want.returncode) == (want.stdout, 3)
    got = events(trace)
    in_work = [w for e, w, _ in got if w.startswith("work+")]
    assert len(in_work) == THREADS * CALLS
    assert len(set(in_work)) == 1               # one call site
    # sorted(["bb", "a"], key=len): seen once, with its first argument
    assert [r for e, w, r in got if w.startswith("other+")] == ["arg1=['bb', 'a']"]
    assert all(e == "p_sorted_0" for e, _, _ in got)


def test_calls_from_c_code_are_not_seen(tmp_path, sorts):
    # len: once from other() (len(5), which raises); the calls made by map()
    # and by sorted(key=len) are C calling C: sys.monitoring has no CALL for them
    proc, trace = run(tmp_path, sorts, "-e", "p builtins:len $arg1", "-e", "r builtins:len")
    assert proc.returncode == 3
    got = [(e, w.split("+")[0], r) for e, w, r in events(trace) if "other+" in w]
    assert got == [("p_len_0", "other", "arg1=5"), ("r_len_0", "other", "raised (unknown)")]
    (ret,) = [w for e, w, _ in events(trace) if e == "r_len_0" and "other+" in w]
    assert ret.endswith(" <- builtins:len")


def test_method_of_a_c_type_called_bound_or_not(tmp_path, sorts):
    proc, trace = run(tmp_path, sorts, "-e", "p:get builtins:dict.get d=$arg1")
    assert proc.returncode == 3
    # d.get("k") and get("k") after get = d.get: $arg1 is self both times
    assert [(e, r) for e, w, r in events(trace) if "other+" in w] == [("get", "d={'k': 1}")] * 2


def test_keyword_only_call_has_no_arg1(tmp_path):
    prog = tmp_path / "kw.py"
    prog.write_text("def main():\n    sorted([2, 1])\n    sorted(iterable=[1]) if False else None\n"
                    "    try:\n        sorted(key=len)\n    except TypeError:\n        pass\n"
                    "    sorted(*[[4, 3]])\nmain()\n")
    proc, trace = run(tmp_path, str(prog), "-e", "p builtins:sorted $arg1")
    assert proc.returncode == 0
    # sorted(key=len): CALL's "first argument" is len, a keyword's value: a fault, not len
    assert [r for e, w, r in events(trace) if w.startswith("main+")] == [
        "arg1=[2, 1]", "arg1=(fault)", "arg1=[4, 3]"]


def test_record_and_report_print_what_run_prints(tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("def main():\n    for i in range(3):\n        sorted([i, 0])\n"
                    "    try:\n        len(1)\n    except TypeError:\n        pass\nmain()\n")
    opts = ("-t", "nop", "-e", "p builtins:sorted x=$arg1", "-e", "r builtins:len")
    run_out = tmp_path / "run.txt"
    assert fentry("run", *opts, "-o", str(run_out), str(prog)).returncode == 0
    dat = tmp_path / "p.dat"
    assert fentry("record", *opts, "-o", str(dat), str(prog)).returncode == 0
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0 and rep.stderr == ""
    want = [(e, w, r) for e, w, r in events(run_out.read_text()) if w.startswith("main+")]
    got = [(e, w, r) for e, w, r in events(rep.stdout) if w.startswith("main+")]
    assert got == want
    assert [r for e, _, r in got] == ["x=[0, 0]", "x=[1, 0]", "x=[2, 0]", "raised (unknown)"]
    assert got[-1][1].endswith(" <- builtins:len")


# ---------------------------------------------------------------- in process

def _counts(fs):
    return {l.split()[0]: (int(l.split()[1]), int(l.split()[2]))
            for l in fs.read("kprobe_profile").splitlines()}


def test_enable_sets_call_globally_and_disable_restores_exactly():
    fs = fentry_api.tracefs()
    E = sys.monitoring.events
    fs.write("kprobe_events", "p builtins:sorted")
    assert fentry_tool_ids() == []
    fs.write("events/kprobes/enable", "1")     # (events/enable: Python's tracepoints too)
    (tool,) = fentry_tool_ids()
    assert sys.monitoring.get_events(tool) & E.CALL
    for _ in range(1000):
        sorted(())
    fs.write("events/kprobes/enable", "0")
    assert fentry_tool_ids() == []          # nothing of fentry's is left
    assert _counts(fs)["p_sorted_0"] == (1000, 0)
    fs.write("kprobe_events", "")


def test_disable_keeps_the_function_tracer_events(register):
    """A C probe on and off under a tracer: the tracer's events are as before."""
    rec = Recorder("_counts")
    register(rec)
    (tool,) = fentry_tool_ids()
    before = sys.monitoring.get_events(tool)
    fs = fentry_api.tracefs()
    fs.write("kprobe_events", "r builtins:len")
    fs.write("events/kprobes/enable", "1")
    assert sys.monitoring.get_events(tool) == before | sys.monitoring.events.CALL
    len(())
    fs.write("events/kprobes/enable", "0")
    assert sys.monitoring.get_events(tool) == before
    assert _counts(fs) == {"r_len_0": (1, 0)}
    assert rec.names() == ["_counts"]       # the tracer goes on as before
    fs.write("kprobe_events", "")


def test_counts_are_exact_across_threads():
    import threading
    fs = fentry_api.tracefs()
    fs.write("kprobe_events", "p builtins:sorted")
    fs.write("events/kprobes/enable", "1")

    def work():
        for i in range(CALLS):
            sorted((i,))
    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fs.write("events/kprobes/enable", "0")
    assert _counts(fs)["p_sorted_0"] == (THREADS * CALLS, 0)
    fs.write("kprobe_events", "")


@pytest.mark.parametrize("line, message, at", [
    ("r builtins:sorted $retval", "$retval of a C function is not available", "$retval"),
    ("p builtins:sorted $arg2", "Only $arg1 of a C function can be fetched", "$arg2"),
    ("p builtins:len n=$arg3", "Only $arg1 of a C function can be fetched", "$arg3"),
    ("p builtins:len cnt", "A C function has no frame", "cnt"),
    ("p builtins:len $args", "A C function has no frame", "$args"),
    ("p builtins:len+4", "A C function has no offsets", "+4"),
    ("p sys:path", "Not a function", "sys:path"),
    ("p builtins:dict.nosuch", "Invalid probed address or symbol", "builtins:"),
])
def test_what_a_c_probe_cannot_do_is_refused_with_a_caret(line, message, at):
    fs = fentry_api.tracefs()
    with pytest.raises(TraceError) as e:
        fs.write("kprobe_events", line)
    assert e.value.message.startswith(message)
    log = fs.read("error_log").splitlines()
    assert log[-2] == f"  Command: {line}"
    assert log[-1].index("^") == log[-2].index(at)
    assert fs.read("kprobe_events") == ""


def test_bad_c_probe_stops_fentry_run_before_the_program(tmp_path, sorts):
    proc, _ = run(tmp_path, sorts, "-e", "r builtins:sorted $retval")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "trace_kprobe: error: $retval of a C function is not available" in proc.stderr


# ---------------------------------------------------------------- funcgraph-c

GRAPH = textwrap.dedent(f"""
    import threading
    def work(n):
        d = {{"k": "v"}}
        for i in range(n):
            len(d)
            d.get("k")
        return list(map(len, ["ab", "c"]))      # map's calls of len: from C, not seen
    def fails():
        try:
            len(5)
        except TypeError:
            pass
    threads = [threading.Thread(target=work, args=({CALLS},)) for _ in range({THREADS})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fails()
    print("done")
""")
# (helpers.GRAPH_LINE's, with a thread name that has blanks: "Thread-1 (work)")
GRAPH_LINE = re.compile(r"^\s*(?P<task>.+?)-(?P<tid>\d+)\s*\| (?P<duration>.{14})\|  "
                        r"(?P<indent>(?:  )*)(?P<text>\S.*)$")


def graph(trace):
    return [(m["indent"], m["text"], m["duration"]) for m in map(GRAPH_LINE.match, trace.splitlines()) if m]


def test_funcgraph_c_shows_each_c_call_as_a_timed_leaf(tmp_path):
    prog = tmp_path / "graph.py"
    prog.write_text(GRAPH)
    proc, trace = fentry_run(tmp_path, "-t", "function_graph", "-l", "__main__:work", "-l", "__main__:fails",
                             "-O", "funcgraph-c", "--buffer-size-kb", "65536",
                             program=(str(prog),), sep=False, text=True)
    assert (proc.returncode, proc.stdout) == (0, "done\n"), proc.stderr
    lines = graph(trace)
    leaves = [(text, indent) for indent, text, _ in lines if text.endswith(";") or "/* raised" in text]
    assert sum(1 for t, _ in leaves if t == "len();") == THREADS * CALLS
    assert sum(1 for t, _ in leaves if t == "dict.get();") == THREADS * CALLS
    assert ("len(); /* raised (unknown) */", "  ") in leaves
    assert len(leaves) == 2 * THREADS * CALLS + 1       # nothing else: no map, list, or their len
    assert all(indent == "  " for _, indent in leaves)  # inside work() { / fails() {
    assert all(DURATION.match(d) for _, text, d in lines if text.endswith(";"))
    assert sum(1 for _, text, _ in lines if text == "work() {") == THREADS


def test_funcgraph_c_is_off_by_default_and_costs_no_call_event():
    import fentry.ftrace as ftrace
    fs = fentry_api.tracefs()
    fs.write("set_ftrace_filter", "_counts")
    fs.write("current_tracer", "function_graph")
    (tool,) = fentry_tool_ids()
    assert not sys.monitoring.get_events(tool) & sys.monitoring.events.CALL
    code = _counts.__code__
    _counts(fs)
    assert sys.monitoring.get_local_events(tool, code) & sys.monitoring.events.CALL == 0
    fs.write("trace_options", "funcgraph-c")
    _counts(fs)
    # CALL on the traced code object only, not globally
    assert sys.monitoring.get_local_events(tool, code) & sys.monitoring.events.CALL
    assert not sys.monitoring.get_events(tool) & sys.monitoring.events.CALL
    fs.write("trace_options", "nofuncgraph-c")
    assert sys.monitoring.get_local_events(tool, code) & sys.monitoring.events.CALL == 0
    text = fs.read("trace")
    fs.write("current_tracer", "nop")
    assert fentry_tool_ids() == [] and ftrace.traced_codes() == []
    # before the option a leaf; with it, its C call (fs.read is fentry's own: never traced)
    assert [t for _, t, _ in graph(text)] == ["_counts();", "_counts() {", "str.splitlines();", "}"]


# ---------------------------------------------------------------- the twins

def _twins():
    from fentry import pytrampolines
    twins = [pytrampolines]
    try:
        from fentry import _ctrampolines
        twins.append(_ctrampolines)
    except ImportError:
        pass
    return twins


@pytest.fixture(params=_twins(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def impl(request):
    return request.param


def test_call_dispatcher_calls_the_codes_then_the_callables_handler(impl):
    calls = []
    code = _counts.__code__
    table, probes = impl.CodeTable(), impl.CodeTable()
    table[id(code)] = lambda *a: calls.append(("code",) + a)
    probes[id(len)] = lambda *a: calls.append(("len",) + a)
    probes[id(type(len))] = lambda *a: calls.append(("type",) + a)
    dispatch = impl.call_dispatcher(table, probes, lambda c: calls.append(("fault", c)))
    bound = {}.get
    assert dispatch(code, 4, len, "x") is None
    assert dispatch(code, 5, abs, -1) is None               # a module's function: not by its type
    assert dispatch(code, 6, bound, "k") is None            # a bound C method: by its type
    assert dispatch(graph.__code__, 8, _counts, 1) is None     # no handler: nothing, no DISABLE
    assert calls == [("code", code, 4, len, "x"), ("len", code, 4, len, "x"),
                     ("code", code, 5, abs, -1),
                     ("code", code, 6, bound, "k"), ("type", code, 6, bound, "k")]


def test_call_dispatcher_reports_a_raising_handler(impl):
    faults = []
    code = _counts.__code__
    probes = impl.CodeTable()
    probes[id(len)] = lambda *a: 1 / 0
    dispatch = impl.call_dispatcher(impl.CodeTable(), probes, faults.append)
    assert dispatch(code, 0, len, "x") is None
    assert faults == [code]


def test_graph_c_event_records_c_functions_only(impl):
    from fentry import raw
    from fentry.tracers.function_graph import c_standin

    class Buffers:
        def __init__(self):
            self.local = threading.local()

        def attach(self):
            tb = self.local.tb = impl.Ring(64)
            return tb
    b = Buffers()
    cache = impl.CodeTable()
    entry = impl.graph_c_event(b.local, b.attach, raw.ENTRY, c_standin, cache)
    unwind = impl.graph_c_event(b.local, b.attach, raw.UNWIND, c_standin, cache, "(unknown)")
    code = _counts.__code__
    entry(code, 0, len, "x")
    entry(code, 2, {}.get, "k")             # bound: the same stand-in as dict.get's
    entry(code, 4, dict.get, {})
    entry(code, 6, _counts, None)           # a Python function: nothing
    entry(code, 8, dict, None)              # a type: nothing
    unwind(code, 10, len, 5)
    recs = [r[2:] for r in b.local.tb.snapshot()]
    assert [(k, c.co_qualname) + tuple(rest) for k, c, *rest in recs] == [
        (raw.ENTRY, "len"), (raw.ENTRY, "dict.get"), (raw.ENTRY, "dict.get"),
        (raw.UNWIND, "len", "(unknown)")]
    assert recs[1][1] is recs[2][1] is c_standin(dict.get)


def test_a_c_module_not_imported_yet_is_pending_until_it_is(tmp_path):
    prog = tmp_path / "j.py"
    prog.write_text("import _json\ndef main():\n    for s in ['\"ab\"', '\"c\"']:\n"
                    "        _json.scanstring(s, 1)\nmain()\n")
    proc, trace = run(tmp_path, str(prog), "-e", "p _json:scanstring s=$arg1", "-e", "r _json:scanstring")
    assert proc.returncode == 0, proc.stderr
    assert [(e, r) for e, w, r in events(trace) if w.startswith("main+")] == [
        ("p_scanstring_0", "s='\"ab\"'"), ("r_scanstring_0", ""),
        ("p_scanstring_0", "s='\"c\"'"), ("r_scanstring_0", "")]


@pytest.mark.ptrace
def test_c_probes_through_fentry_p_write_live(tmp_path):
    from control.live import Target, wait_for
    target = Target(tmp_path)
    try:
        pid = str(target.pid)
        got = fentry("-p", pid, "write", "kprobe_events",
                     "p:sl time:sleep secs=$arg1\nr:ap builtins:list.append cart=$arg1")
        assert got.returncode == 0, got.stderr
        assert fentry("-p", pid, "write", "events/kprobes/enable", "1").returncode == 0
        trace = wait_for(lambda: (t := fentry("-p", pid, "read", "trace").stdout).count("ap: (add+") > 3
                         and t, what="list.append's returns in the trace")
        got = events(trace)
        assert {r for e, w, r in got if e == "sl"} == {"secs=0.002"}
        assert all(w.startswith("main+") for e, w, _ in got if e == "sl")
        assert all(w.startswith("add+") and w.endswith(" <- builtins:list.append") and r.startswith("cart=[")
                   for e, w, r in got if e == "ap")
        bad = fentry("-p", pid, "write", "-a", "kprobe_events", "r builtins:sorted $retval")
        assert bad.returncode != 0 and "$retval of a C function is not available" in bad.stderr
        assert fentry("-p", pid, "write", "events/kprobes/enable", "0").returncode == 0
        assert fentry("-p", pid, "write", "kprobe_events", "").returncode == 0
        assert fentry("-p", pid, "detach").returncode == 0
        target.finish_clean()
    finally:
        target.kill()


def test_a_filter_and_the_stacktrace_option_on_a_c_probe():
    fs = fentry_api.tracefs()
    fs.write("kprobe_events", "p builtins:sorted x=$arg1")
    fs.write("events/kprobes/p_sorted_0/filter", 'x == "ba"')
    fs.write("options/stacktrace", "1")
    fs.write("events/kprobes/enable", "1")
    for v in ("ba", "cd", "ba"):
        _sort(v)
    fs.write("events/kprobes/enable", "0")
    lines = [l.strip() for l in fs.read("trace").splitlines() if not l.startswith("#")]
    code = _sort.__code__
    assert [l.split(": ", 1)[1] for l in lines if "p_sorted_0" in l] == [
        f"p_sorted_0: (_sort+{_call_offset(code):#x}) x='ba'"] * 2
    here = os.path.basename(__file__)
    assert [l for l in lines if l.startswith("=>")][:2] == [       # from the caller up
        f"=> _sort ({here}:{code.co_firstlineno + 1})",
        f"=> test_a_filter_and_the_stacktrace_option_on_a_c_probe ({here}:"
        f"{test_a_filter_and_the_stacktrace_option_on_a_c_probe.__code__.co_firstlineno + 7})"]


def _sort(v):
    return sorted(v)


def _call_offset(code):
    import dis
    return next(i.offset for i in dis.get_instructions(code) if i.opname == "CALL")
