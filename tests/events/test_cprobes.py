"""Probes on C functions: ``p builtins:sorted``, ``r builtins:len``, ``p builtins:dict.get``."""

from __future__ import annotations

import re
import sys
import textwrap

import pytest
from helpers import Recorder, fentry, fentry_run, fentry_tool_ids, plain

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
    fs.write("events/enable", "1")
    (tool,) = fentry_tool_ids()
    assert sys.monitoring.get_events(tool) & E.CALL
    for _ in range(1000):
        sorted(())
    fs.write("events/enable", "0")
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
    fs.write("events/enable", "1")
    assert sys.monitoring.get_events(tool) == before | sys.monitoring.events.CALL
    len(())
    fs.write("events/enable", "0")
    assert sys.monitoring.get_events(tool) == before
    assert _counts(fs) == {"r_len_0": (1, 0)}
    assert rec.names() == ["_counts"]       # the tracer goes on as before
    fs.write("kprobe_events", "")


def test_counts_are_exact_across_threads():
    import threading
    fs = fentry_api.tracefs()
    fs.write("kprobe_events", "p builtins:sorted")
    fs.write("events/enable", "1")

    def work():
        for i in range(CALLS):
            sorted((i,))
    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fs.write("events/enable", "0")
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
