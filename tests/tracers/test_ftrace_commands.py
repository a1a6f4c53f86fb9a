"""set_ftrace_filter commands (FUNC:traceoff, :traceon, :stacktrace,
:snapshot, :enable_event, :disable_event, :dump), the snapshot file, and the
stack records of the stacktrace and func_stack_trace options: what a user
writes, then reads back, in process and through fentry run / record."""

from __future__ import annotations

import re
import sys
import threading
import traceback

import pytest
from helpers import body, fentry, fentry_run, function_lines

from fentry import TraceError

HERE = __name__
THREADS = 4
LINE = re.compile(r"^\s*(?P<task>\S+)-(?P<tid>\d+)\s+\[000\] \.\.\.\.\. +(?P<ts>\d+\.\d{6}): (?P<text>.*)$")


def c_leaf(i):
    return i


def c_mid(i):
    return c_leaf(i)


def work(n):
    for i in range(n):
        c_mid(i)


def c_other(i):
    return i


def in_threads(n_each: int, target=work) -> None:
    threads = [threading.Thread(target=target, args=(n_each,), name=f"worker{i}") for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def events(trace: str) -> list[tuple[str, int, str]]:
    """(tid, timestamp in us, text) of every event line; a stack's `` => `` lines
    are joined to its ``<stack trace>`` line."""
    out: list[tuple[str, int, str]] = []
    for line in body(trace):
        if line.startswith(" => "):
            tid, ts, text = out[-1]
            out[-1] = (tid, ts, text + "\n" + line)
            continue
        m = LINE.match(line)
        assert m, line
        out.append((m["tid"], int(m["ts"].replace(".", "")), m["text"]))
    return out


def stacks(trace: str) -> list[list[str]]:
    """Each stack record's frames: the function names, innermost first."""
    return [[f.split()[1] for f in text.splitlines()[1:]]
            for _, _, text in events(trace) if text.startswith("<stack trace>")]


# ---------------------------------------------------------------- traceoff / traceon

def test_traceoff_1_ends_the_trace_right_after_the_first_call(fs):
    """Four threads, 10^5 calls of c_mid: the trace ends with the first call's
    entry; the thread that made it records nothing after it, and no thread
    records a later call (beyond the race the kernel has too: a thread
    already past its check while the switch goes off)."""
    fs.write("buffer_size_kb", "20000")
    fs.write("set_ftrace_filter", f"{HERE}:c_leaf {HERE}:c_mid {HERE}:c_other")
    fs.write("set_ftrace_filter", "c_mid:traceoff:1", append=True)
    fs.write("current_tracer", "function")
    for i in range(100):
        c_other(i)
    in_threads(25_000)
    assert fs.read("tracing_on") == "0\n"
    lines = function_lines(fs.read("trace"))
    assert [m["func"] for m in lines[:100]] == ["c_other"] * 100
    hit = lines[100]
    assert hit["func"] == "c_mid"         # its entry is recorded; its c_leaf is not
    assert fs.read("set_ftrace_filter").splitlines()[-1] == "c_mid:traceoff:count=0"
    after = [m for m in lines[101:] if m["tid"] == hit["tid"]]
    assert after == []
    assert len(lines) - 101 < THREADS


def test_traceoff_without_a_count_and_traceon_turn_tracing_off_and_on(fs):
    fs.write("set_ftrace_filter", f"{HERE}:c_leaf c_other:traceoff c_mid:traceon")
    fs.write("current_tracer", "function")
    c_leaf(0)
    c_other(0)
    c_leaf(1)                             # off: not recorded
    assert fs.read("tracing_on") == "0\n"
    c_mid(2)                              # on again, c_mid's own c_leaf recorded
    assert fs.read("tracing_on") == "1\n"
    assert [m["func"] for m in function_lines(fs.read("trace"))] == ["c_leaf", "c_leaf"]
    assert fs.read("set_ftrace_filter").splitlines() == [
        f"c_leaf [{HERE}]", "c_other:traceoff:unlimited", "c_mid:traceon:unlimited"]


def test_counts_go_down_per_change_of_state_and_stop_at_0(fs):
    """traceoff:3 and traceon with 10^5 calls each way: three offs, then none."""
    fs.write("set_ftrace_filter", "c_other:traceoff:3 c_mid:traceon")
    for i in range(100_000):
        c_other(i)
        c_mid(i)
    assert fs.read("set_ftrace_filter").splitlines() == [
        "#### all functions enabled ####", "c_other:traceoff:count=0", "c_mid:traceon:unlimited"]
    assert fs.read("tracing_on") == "1\n"


def test_a_command_costs_only_its_functions_and_is_removed_with_bang(fs):
    fs.write("set_ftrace_filter", "c_other:traceoff:5")
    c_leaf(0)
    assert fs.read("enabled_functions") == ""
    c_other(0)
    assert fs.read("enabled_functions") == f"c_other [{HERE}] (1) R\n"
    with pytest.raises(TraceError) as err:
        fs.write("set_ftrace_filter", "!c_other:stacktrace", append=True)
    assert err.value.code == "CMD_NOT_SET" and err.value.pos == 0
    fs.write("set_ftrace_filter", "!c_other:traceoff", append=True)
    assert fs.read("set_ftrace_filter") == "#### all functions enabled ####\n"
    assert fs.read("enabled_functions") == ""


def test_a_write_with_greater_than_keeps_the_commands_and_resets_the_filter(fs):
    fs.write("set_ftrace_filter", f"{HERE}:c_leaf c_other:traceoff")
    fs.write("set_ftrace_filter", f"{HERE}:c_mid")
    assert fs.read("set_ftrace_filter").splitlines() == [f"c_mid [{HERE}]", "c_other:traceoff:unlimited"]


@pytest.mark.parametrize("word, code, pos", [
    ("c_other:traceoff:x", "BAD_CMD_COUNT", len("c_other:traceoff:")),
    ("no_such_function_anywhere:traceoff", "NO_MATCH", 0),
    ("c_other:enable_event:kprobes", "CMD_NEEDS_EVENT", len("c_other:enable_event:")),
    ("c_other:enable_event:kprobes:nothere", "CMD_NO_EVENT", len("c_other:enable_event:")),
    (f"{HERE}:c_leaf c_other:nosuch:1", "BAD_FILTER_CMD", len(f"{HERE}:c_leaf c_other:")),
    ("!c_mid:snapshot", "CMD_NOT_SET", 0),
    # a mistyped command on a function: refused, never a MOD:GLOB waiting for module c_other
    ("c_other:stacktrac", "NO_SUCH_COMMAND", len("c_other:")),
    ("!c_other:bogus", "NO_SUCH_COMMAND", len("!c_other:")),
])
def test_bad_commands_are_refused_with_a_caret_and_nothing_applies(fs, word, code, pos):
    fs.write("set_ftrace_filter", "c_mid:traceoff")
    with pytest.raises(TraceError) as err:
        fs.write("set_ftrace_filter", f"{word} c_other:traceon", append=True)
    assert (err.value.code, err.value.pos) == (code, pos)
    assert fs.read("set_ftrace_filter") == "#### all functions enabled ####\nc_mid:traceoff:unlimited\n"


def test_a_command_in_set_ftrace_notrace_is_refused(fs):
    with pytest.raises(TraceError) as err:
        fs.write("set_ftrace_notrace", "c_mid:traceoff")
    assert err.value.code == "FILTER_CMD_NOTRACE" and err.value.pos == len("c_mid:")


def test_a_command_acts_on_its_own_instance(fs):
    fs.mkdir("instances/side")
    fs.write("instances/side/set_ftrace_filter", "c_other:traceoff:1 c_other:snapshot")
    c_other(0)
    assert (fs.read("tracing_on"), fs.read("instances/side/tracing_on")) == ("1\n", "0\n")
    assert "* Snapshot is allocated *" in fs.read("instances/side/snapshot")
    assert "* Snapshot is freed *" in fs.read("snapshot")
    assert fs.read("set_ftrace_filter") == "#### all functions enabled ####\n"
    fs.rmdir("instances/side")
    assert fs.read("enabled_functions") == ""


def test_counts_in_the_kernels_bases(fs):
    fs.write("set_ftrace_filter", "c_mid:traceoff:0x10 c_other:traceoff:010")
    assert fs.read("set_ftrace_filter").splitlines()[1:] == ["c_mid:traceoff:count=16",
                                                            "c_other:traceoff:count=8"]


# ---------------------------------------------------------------- stacktrace

def caller_of_leaf():
    return c_leaf(7)


def test_stacktrace_command_records_the_frames_as_traceback_does(fs):
    fs.write("set_ftrace_filter", "c_leaf:stacktrace:2")
    expected = [f.name for f in reversed(traceback.extract_stack())]
    for _ in range(5):
        caller_of_leaf()
    got = stacks(fs.read("trace"))
    assert len(got) == 2
    assert got[0][:2] == ["c_leaf", "caller_of_leaf"]
    # Below: the test's own frames, as traceback names them (qualnames there).
    assert [name.rsplit(".", 1)[-1] for name in got[0][2:2 + 3]] == [
        "test_stacktrace_command_records_the_frames_as_traceback_does"] + expected[1:3]
    assert fs.read("set_ftrace_filter").splitlines()[-1] == "c_leaf:stacktrace:count=0"


def test_func_stack_trace_follows_each_function_entry_deep_recursion(fs):
    def down(n):
        return n if n == 0 else down(n - 1)
    fs.write("set_ftrace_filter", f"{HERE}:*down")
    fs.write("current_tracer", "function")
    fs.write("options/func_stack_trace", "1")
    down(200)
    got = stacks(fs.read("trace"))
    assert len(got) == 201
    assert [len([f for f in s if f.endswith("down")]) for s in got] == list(range(1, 202))
    fs.write("options/func_stack_trace", "0")
    fs.write("trace", "")
    down(3)
    assert stacks(fs.read("trace")) == []
    assert len(function_lines(fs.read("trace"))) == 4


def test_stacktrace_option_follows_each_probe_event(fs):
    fs.write("kprobe_events", f"p:kprobes/at_leaf {HERE}:c_leaf i=$arg1")
    fs.write("events/kprobes/at_leaf/enable", "1")
    fs.write("options/stacktrace", "1")
    caller_of_leaf()
    got = events(fs.read("trace"))
    assert [t.splitlines()[0] for _, _, t in got] == ["at_leaf: (c_leaf+0x0) i=7", "<stack trace>"]
    assert stacks(fs.read("trace"))[0][:2] == ["c_leaf", "caller_of_leaf"]
    fs.write("options/stacktrace", "0")
    fs.write("trace", "")
    caller_of_leaf()
    assert [t for _, _, t in events(fs.read("trace"))] == ["at_leaf: (c_leaf+0x0) i=7"]


# ---------------------------------------------------------------- snapshot

def test_snapshot_file_0_1_2(fs):
    help_freed = fs.read("snapshot")
    assert help_freed.startswith("# tracer: nop\n#\n#\n# * Snapshot is freed *\n#\n# Snapshot commands:\n")
    assert "# echo 2 > snapshot : Clears snapshot buffer (but does not allocate or free)\n" in help_freed
    fs.write("set_ftrace_filter", f"{HERE}:c_leaf")
    fs.write("current_tracer", "function")
    c_leaf(1)
    fs.write("snapshot", "1")
    assert fs.read("trace").count(" c_leaf <-") == 0
    assert fs.read("snapshot").count(" c_leaf <-") == 1
    c_leaf(2)
    assert fs.read("trace").count(" c_leaf <-") == 1
    fs.write("snapshot", "2")
    assert "# * Snapshot is allocated *" in fs.read("snapshot")
    fs.write("snapshot", "0")
    assert "# * Snapshot is freed *" in fs.read("snapshot")
    with pytest.raises(TraceError) as err:
        fs.write("snapshot", "x")
    assert err.value.code == "BAD_NUMBER"


def test_snapshot_of_busy_threads_keeps_each_record_once(fs):
    """Snapshots taken while four threads make 10^5 calls: every call is in
    exactly one of the snapshots or the trace, none half in each."""
    fs.write("buffer_size_kb", "40000")
    fs.write("set_ftrace_filter", f"{HERE}:c_leaf")
    fs.write("current_tracer", "function")
    seen = 0
    done = threading.Event()

    def snap():
        nonlocal seen
        while not done.is_set():
            fs.write("snapshot", "1")
            seen += len(function_lines(fs.read("snapshot")))
    t = threading.Thread(target=snap)
    t.start()
    in_threads(25_000)
    done.set()
    t.join()
    fs.write("snapshot", "1")
    seen += len(function_lines(fs.read("snapshot")))
    assert seen == 100_000


def test_snapshot_command_takes_one_at_the_call(fs):
    fs.write("set_ftrace_filter", f"{HERE}:c_leaf")
    fs.write("set_ftrace_filter", "c_other:snapshot:1", append=True)
    fs.write("current_tracer", "function")
    c_leaf(1)
    c_other(1)
    c_leaf(2)
    c_other(2)
    assert fs.read("snapshot").count(" c_leaf <-") == 1
    assert fs.read("trace").count(" c_leaf <-") == 1
    assert fs.read("set_ftrace_filter").splitlines()[-1] == "c_other:snapshot:count=0"


# ---------------------------------------------------------------- events, dump

def test_enable_event_turns_a_probe_event_on_at_the_hit(fs):
    fs.write("kprobe_events", f"p:kprobes/at_leaf {HERE}:c_leaf i=$arg1")
    fs.write("set_ftrace_filter", "c_other:enable_event:kprobes:at_leaf:1 c_mid:disable_event:kprobes:at_leaf")
    c_leaf(1)
    c_other(0)
    assert fs.read("events/kprobes/at_leaf/enable") == "1\n"
    c_leaf(2)
    c_mid(3)                      # off at c_mid's entry: its c_leaf is not recorded
    c_leaf(4)
    assert [t for _, _, t in events(fs.read("trace"))] == ["at_leaf: (c_leaf+0x0) i=2"]
    assert fs.read("set_ftrace_filter").splitlines()[1:] == [
        "c_other:enable_event:kprobes:at_leaf:count=0", "c_mid:disable_event:kprobes:at_leaf:unlimited"]


def test_dump_writes_the_buffer_to_stderr_once(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text("def c_leaf(i): return i\ndef c_other(): pass\n"
                    "for i in range(3): c_leaf(i)\nc_other()\nc_other()\n")
    proc, _ = fentry_run(tmp_path, "-t", "function", "-l", "c_leaf", "-l", "c_other:dump",
                             program=(str(prog),))
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert err.count("Dumping ftrace buffer:\n---------------------------------\n") == 1
    assert err.count(" c_leaf <-<module>") == 3


def test_cpudump_writes_the_calling_threads_buffer_only(fs, capfd):
    fs.write("set_ftrace_filter", f"{HERE}:c_leaf")
    fs.write("set_ftrace_filter", "c_other:cpudump", append=True)
    fs.write("current_tracer", "function")
    in_threads(10, target=work)
    c_leaf(1)
    c_other(0)
    c_other(1)
    err = capfd.readouterr().err
    assert err.startswith("Dumping ftrace buffer:\n---------------------------------\n")
    assert err.count(" c_leaf <-") == 1 and err.endswith("---------------------------------\n")
    assert fs.read("set_ftrace_filter").splitlines()[-1] == "c_other:cpudump:count=0"


def test_dump_turns_tracing_off_as_the_kernels_ftrace_dump(fs, capfd):
    fs.write("set_ftrace_filter", f"{HERE}:c_leaf")
    fs.write("set_ftrace_filter", "c_other:dump", append=True)
    fs.write("current_tracer", "function")
    c_leaf(1)
    c_other(0)                    # dumps, then tracing_on is 0 (tracer_tracing_off)
    c_leaf(2)
    err = capfd.readouterr().err
    assert err.count(" c_leaf <-") == 1
    assert fs.read("tracing_on") == "0\n"
    assert [t for _, _, t in events(fs.read("trace"))] == [
        "c_leaf <-test_dump_turns_tracing_off_as_the_kernels_ftrace_dump"]
    fs.write("tracing_on", "1")
    c_leaf(3)
    assert len(events(fs.read("trace"))) == 2


# ---------------------------------------------------------------- through fentry run / record

PROGRAM = """\
import threading
def c_leaf(i): return i
def c_mid(i): return c_leaf(i)
def work(n):
    for i in range(n): c_mid(i)
ts = [threading.Thread(target=work, args=(25000,), name=f"worker{i}") for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
"""


def test_fentry_run_l_traceoff(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    proc, trace = fentry_run(tmp_path, "-t", "function", "-l", "c_leaf", "-l", "c_mid", "-l", "c_mid:traceoff:1",
                             program=(str(prog),))
    assert proc.returncode == 0, proc.stderr
    assert b"selected no function" not in proc.stderr     # c_leaf ran, untraced after the traceoff
    lines = function_lines(trace)
    assert lines[0]["func"] == "c_mid"
    assert [m for m in lines[1:] if m["tid"] == lines[0]["tid"]] == []
    assert len(lines) <= THREADS


def test_fentry_record_and_report_show_stack_records(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    dat = tmp_path / "t.dat"
    got = fentry("record", "-t", "function", "-l", "c_mid", "-l", "c_leaf:stacktrace:3", "-O", "func_stack_trace",
                 "-o", str(dat), str(prog))
    assert got.returncode == 0, got.stderr
    report = fentry("report", "-i", str(dat))
    assert report.returncode == 0, report.stderr
    got_stacks = stacks(report.stdout)
    # Every c_mid entry has its stack (func_stack_trace), three c_leaf calls theirs (the command).
    assert len(got_stacks) == 100_000 + 3
    assert got_stacks[0][:3] == ["c_mid", "work", "Thread.run"]
    assert sum(s[:2] == ["c_leaf", "c_mid"] for s in got_stacks) == 3


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring")
def test_fentry_run_stacktrace_option_with_a_probe(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text("def c_leaf(i): return i\ndef c_mid(i): return c_leaf(i)\nc_mid(5)\n")
    proc, trace = fentry_run(tmp_path, "-e", "p:kprobes/at_leaf c_leaf i=$arg1", "-O", "stacktrace",
                             program=(str(prog),))
    assert proc.returncode == 0, proc.stderr
    assert stacks(trace) == [["c_leaf", "c_mid", "<module>"]]
