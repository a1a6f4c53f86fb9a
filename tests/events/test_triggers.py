"""Event triggers, events/GRP/EVENT/trigger: what a user writes and reads
back, as on the kernel's tracefs (checked against a 6.18 kernel: the
read-back, which triggers coexist, what ``!`` removes, the errno of a
refused write, soft mode's ``0*`` / ``1*``), and what the triggers do to a
real program's trace, in-process, through ``fentry run -R`` and
``fentry record`` / ``fentry report``, and in a running process."""

from __future__ import annotations

import errno
import os
import re
import threading

import pytest
from control.live import Target, wait_for
from helpers import fentry, fentry_run

from fentry.errors import TraceError

# (with hist triggers: the kernel's list with CONFIG_HIST_TRIGGERS, in its order)
HEADER = ("# Available triggers:\n# traceon traceoff snapshot stacktrace enable_event disable_event"
          " enable_hist disable_hist hist\n")
EVENT = re.compile(r"^\s*(?P<task>.+?)-(?P<tid>\d+)\s+\[000\] \.\.\.\.\. +(?P<ts>\d+\.\d{6}): "
                   r"(?P<event>\w+): \((?P<where>[^)]*)\) x=(?P<x>-?\d+)$", re.M)

SOURCE = """
def f(x):
    return x + 1

def g(x):
    return x * 2

def nested(x):
    return f(x)
"""

PROGRAM = """
def work(x):
    return x * 2

def main():
    total = 0
    for i in range(100000):
        total += work(i)
    print("total", total)

main()
"""


def xs(trace, event="f"):
    return [int(m["x"]) for m in EVENT.finditer(trace) if m["event"] == event]


@pytest.fixture
def mod(fs, make_module, request):
    """A module with f and g, and probe events trig/f and trig/g on them (x=x)."""
    name = "trig_" + re.sub(r"\W", "_", request.node.name)[:40]
    m = make_module(name, SOURCE)
    fs.write("current_tracer", "nop")
    fs.write("kprobe_events", f"p:trig/f {name}:f x=x\np:trig/g {name}:g x=x\n")
    return m


T = "events/trig/f/trigger"


def test_the_trigger_file_reads_back_as_the_kernel_s(fs, mod):
    assert fs.read(T) == HEADER
    fs.write(T, "traceoff:5 if x > 10")
    fs.write(T, "stacktrace", append=True)
    fs.write(T, "enable_event:trig:g:2 if x==1")
    fs.write(T, "snapshot:0x10")
    # Newest first; a count as count=N, none as unlimited; the filter as written.
    assert fs.read(T) == ("snapshot:count=16\n"
                          "enable_event:trig:g:count=2 if x==1\n"
                          "stacktrace:unlimited\n"
                          "traceoff:count=5 if x > 10\n")
    for cmd in ("!snapshot", "!stacktrace", "!traceoff", "!enable_event:trig:g"):
        fs.write(T, cmd)
    assert fs.read(T) == HEADER
    fs.write(T, "traceon:1:2")           # (what follows the count is ignored, as the kernel's)
    fs.write(T, "!traceon")
    fs.write(T, "traceoff:")            # an empty count: unlimited
    assert fs.read(T) == "traceoff:unlimited\n"


def test_one_trigger_of_a_kind_per_event_and_bang_removes_by_kind(fs, mod):
    fs.write(T, "traceoff:3")
    # traceon and traceoff are one kind (ETT_TRACE_ONOFF): -EEXIST, as the
    # kernel's, whatever the count or filter; and not logged.
    for again in ("traceon", "traceoff if x > 1", "traceoff:7"):
        with pytest.raises(TraceError) as e:
            fs.write(T, again, append=True)
        assert e.value.errno == errno.EEXIST
    assert fs.read("error_log") == ""
    fs.write(T, "!traceon")             # removes the traceoff: same kind
    assert fs.read(T) == HEADER
    fs.write(T, "!traceoff")            # nothing to remove: no error, as the kernel's
    # enable_event and disable_event are one kind per target event.
    fs.write(T, "enable_event:trig:g")
    with pytest.raises(TraceError) as e:
        fs.write(T, "disable_event:trig:g")
    assert e.value.errno == errno.EEXIST
    fs.write(T, "disable_event:trig:f")     # another target: fine
    assert fs.read(T) == "disable_event:trig:f:unlimited\nenable_event:trig:g:unlimited\n"
    fs.write(T, "!enable_event:trig:f:5 if x > 99")    # its kind and target; not its count or filter
    assert fs.read(T) == "enable_event:trig:g:unlimited\n"


@pytest.mark.parametrize("command, code, pos", [
    ("bogus", "NO_SUCH_TRIGGER", 0),
    ("!bogus", "NO_SUCH_TRIGGER", 1),
    ("traceoff:abc", "TRIGGER_NEEDS_IF", 9),
    ("traceoff:-1", "TRIGGER_NEEDS_IF", 9),
    ("traceoff:1x", "BAD_CMD_COUNT", 9),
    ("traceoff if", "TRIGGER_NO_FILTER", 11),
    ("enable_event", "CMD_NEEDS_EVENT", 12),
    ("enable_event:trig", "CMD_NEEDS_EVENT", 17),
    ("enable_event:trig:nope", "CMD_NO_EVENT", 13),
    ("enable_event:trig:g:zz", "BAD_CMD_COUNT", 20),
])
def test_a_bad_trigger_is_refused_with_a_caret_and_changes_nothing(fs, mod, command, code, pos):
    fs.write(T, "stacktrace:2")
    with pytest.raises(TraceError) as e:
        fs.write(T, command, append=True)
    assert (e.value.code, e.value.pos, e.value.errno) == (code, pos, errno.EINVAL)
    assert e.value.command == command and e.value.render().endswith("\n" + " " * 11 + " " * pos + "^")
    assert fs.read(T) == "stacktrace:count=2\n"
    assert fs.read("events/trig/g/enable") == "0\n"       # an enable_event refused: g not in soft mode
    assert fs.read("error_log") == ""                     # the kernel logs none of these


def test_an_empty_write_is_refused(fs, mod):
    with pytest.raises(TraceError) as e:        # (echo > trigger: the kernel's -EINVAL)
        fs.write(T, "\n")
    assert e.value.errno == errno.EINVAL and fs.read(T) == HEADER


def test_a_trigger_filter_error_is_logged_as_the_event_filter_s(fs, mod):
    with pytest.raises(TraceError) as e:
        fs.write(T, "traceoff if nope > 1")
    assert e.value.errno == errno.EINVAL
    # As the kernel's: the filter's error, its command the filter alone.
    log = fs.read("error_log")
    assert "event filter parse error: error: Field not found" in log
    assert "  Command: nope > 1\n" in log
    assert fs.read(T) == HEADER and fs.read("events/trig/f/enable") == "0\n"


def test_traceoff_if_arg_stops_the_trace_at_the_first_match(fs, mod):
    fs.write("buffer_size_kb", "16384")
    fs.write(T, "traceoff:1 if x > 50000")
    fs.write("events/trig/f/enable", "1")
    for i in range(100000):
        mod.f(i)
    assert fs.read("tracing_on") == "0\n"
    assert xs(fs.read("trace")) == list(range(50002))   # the matching event is the last
    assert fs.read(T) == "traceoff:count=0 if x > 50000\n"


def test_traceoff_with_threads_in_flight_stops_each_thread_within_one_event(fs, mod):
    """4 threads x 100,000 calls; one call of one thread matches.  That
    thread's trace ends at it; another thread records every call it made
    before it could see tracing off, and at most the one under way then
    (as another CPU's event in flight in the kernel)."""
    n, match = 100000, 2 * 1000000 + 60000
    fs.write("buffer_size_kb", "16384")
    fs.write(T, f"traceoff:1 if x == {match}")
    fs.write("events/trig/f/enable", "1")
    inst = fs.instance
    seen_off = {}
    start = threading.Barrier(4)

    def run(k):
        start.wait()
        f, base = mod.f, k * 1000000
        for i in range(n):
            if k not in seen_off and not inst.tracing_on:
                seen_off[k] = i
            f(base + i)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trace = fs.read("trace")
    per_thread: dict[int, list[int]] = {}
    for m in EVENT.finditer(trace):
        x = int(m["x"])
        per_thread.setdefault(x // 1000000, []).append(x % 1000000)
    assert per_thread[2] == list(range(60001))
    for k in (0, 1, 3):
        got = per_thread.get(k, [])
        off = seen_off[k]
        assert got in (list(range(off - 1)), list(range(off))), (k, off, len(got))
    assert fs.read(T) == f"traceoff:count=0 if x == {match}\n"


def test_counts_go_down_as_the_kernel_s(fs, mod):
    fs.write(T, "stacktrace:3 if x >= 10")
    fs.write("events/trig/f/enable", "1")
    for i in range(20):
        mod.nested(i)
    trace = fs.read("trace")
    assert trace.count("<stack trace>") == 3
    # Each stack follows its event (a post trigger) and is the Python stack.
    lines = [ln for ln in trace.splitlines() if not ln.startswith("#")]
    for x in (10, 11, 12):
        at = next(i for i, ln in enumerate(lines) if ln.endswith(f" x={x}"))
        assert lines[at + 1].endswith("<stack trace>")
        assert lines[at + 2].startswith(" => f (") and lines[at + 3].startswith(" => nested (")
    assert fs.read(T) == "stacktrace:count=0 if x >= 10\n"
    # traceon's count goes down only when it turns tracing on.
    fs.write(T, "!stacktrace")
    fs.write(T, "traceon:2")
    for i in range(5):
        mod.f(i)
    assert fs.read(T) == "traceon:count=2\n"
    fs.write("tracing_on", "0")
    mod.f(0)
    assert fs.read(T) == "traceon:count=1\n" and fs.read("tracing_on") == "1\n"


def test_enable_event_turns_another_probe_on_at_the_first_hit(fs, mod):
    G = "events/trig/g/enable"
    fs.write(T, "enable_event:trig:g:1 if x == 3")
    # g is armed in soft mode, disabled: 0*, as the kernel's.
    assert fs.read(G) == "0*\n" and fs.read("events/trig/f/enable") == "0*\n"
    fs.write("events/trig/f/enable", "1")
    for i in range(6):
        mod.g(i)
        mod.f(i)
    trace = fs.read("trace")
    assert xs(trace, "f") == list(range(6)) and xs(trace, "g") == [4, 5]
    assert fs.read(G) == "1*\n" and fs.read(T) == "enable_event:trig:g:count=0 if x == 3\n"
    # disable_event: the other way; removing it gives g its own state back.
    fs.write(T, "!enable_event:trig:g")
    assert fs.read(G) == "1\n"
    fs.write(T, "disable_event:trig:g")
    assert fs.read(G) == "1*\n"
    fs.write("trace", "")
    mod.g(100)
    mod.f(100)
    mod.g(101)
    assert xs(fs.read("trace"), "g") == [100] and fs.read(G) == "0*\n"
    fs.write(T, "!disable_event:trig:g")
    assert fs.read(G) == "0\n"
    assert fs.read("kprobe_events") and fs.read("events/trig/g/trigger") == HEADER


def test_a_soft_disabled_event_records_nothing_but_its_triggers_run(fs, mod):
    fs.write(T, "stacktrace:2")
    assert fs.read("events/trig/f/enable") == "0*\n"
    for i in range(4):
        mod.f(i)
    trace = fs.read("trace")
    assert xs(trace) == [] and trace.count("<stack trace>") == 2
    # Armed (kprobe_events says busy), as the kernel's event with a trigger.
    with pytest.raises(TraceError) as e:
        fs.write("kprobe_events", "")
    assert e.value.errno == errno.EBUSY
    fs.write("events/trig/f/enable", "1")
    assert fs.read("events/trig/f/enable") == "1*\n"
    fs.write("events/trig/f/enable", "0")
    assert fs.read("events/trig/f/enable") == "0*\n"
    fs.write(T, "!stacktrace")
    assert fs.read("events/trig/f/enable") == "0\n"
    fs.write("kprobe_events", "")       # disarmed with its last trigger


def test_the_event_filter_does_not_gate_the_triggers(fs, mod):
    fs.write("events/trig/f/filter", "x > 1000")
    fs.write(T, "traceoff if x == 5")
    fs.write("events/trig/f/enable", "1")
    for i in range(10):
        mod.f(i)
    assert fs.read("tracing_on") == "0\n" and xs(fs.read("trace")) == []


def test_a_snapshot_trigger_takes_the_trace_before_its_event(fs, mod):
    fs.write(T, "snapshot:1 if x == 7")
    fs.write("events/trig/f/enable", "1")
    for i in range(10):
        mod.f(i)
    assert xs(fs.read("snapshot")) == list(range(7))
    assert xs(fs.read("trace")) == [7, 8, 9]


def test_triggers_are_per_instance(fs, mod):
    fs.mkdir("instances/mine")
    fs.write("instances/mine/events/trig/f/trigger", "traceoff if x == 2")
    fs.write("events/trig/f/enable", "1")
    fs.write("instances/mine/events/trig/f/enable", "1")
    assert fs.read(T) == HEADER
    for i in range(5):
        mod.f(i)
    assert fs.read("tracing_on") == "1\n" and fs.read("instances/mine/tracing_on") == "0\n"
    assert xs(fs.read("trace")) == list(range(5))
    assert xs(fs.read("instances/mine/trace")) == [0, 1, 2]
    fs.rmdir("instances/mine")          # its triggers go with it
    fs.write("events/trig/f/enable", "0")
    fs.write("kprobe_events", "")


def run_program(tmp_path, *opts, command="run"):
    prog = tmp_path / "work.py"
    prog.write_text(PROGRAM)
    return fentry_run(tmp_path, "-t", "nop", "-e", "p:app/work __main__:work x=x", *opts,
                      program=(str(prog),), sep=False, text=True)


def test_fentry_run_R_traceoff_and_stacktrace(tmp_path):
    proc, trace = run_program(tmp_path, "-R", "traceoff:1 if x > 41", "-R", "stacktrace:1 if x == 42")
    assert proc.returncode == 0 and proc.stdout == "total 9999900000\n", proc.stderr
    assert xs(trace, "work") == list(range(43))
    assert ("<stack trace>\n => work (work.py:2)\n => main (work.py:8)\n => <module> (work.py:11)\n"
            in trace)
    assert trace.count("<stack trace>") == 1


def test_fentry_record_and_report_carry_a_trigger_s_stack(tmp_path):
    prog = tmp_path / "work.py"
    prog.write_text(PROGRAM)
    data = tmp_path / "rec.dat"
    rec = fentry("record", "-t", "nop", "-e", "p:app/work __main__:work x=x",
                 "-R", "stacktrace:2 if x >= 99998", "-o", str(data), str(prog))
    assert rec.returncode == 0 and rec.stdout == "total 9999900000\n", rec.stderr
    report = fentry("report", "-i", str(data))
    assert report.returncode == 0, report.stderr
    assert xs(report.stdout, "work") == list(range(100000))
    assert report.stdout.count("<stack trace>\n => work (work.py:2)\n => main (work.py:8)\n") == 2


def test_fentry_run_refuses_a_bad_trigger(tmp_path):
    proc, _ = run_program(tmp_path, "-R", "traceoff:zz")
    assert proc.returncode != 0 and "Invalid argument" in proc.stderr and "^" in proc.stderr
    assert "total" not in proc.stdout


@pytest.fixture
def target(tmp_path):
    t = Target(tmp_path)
    yield t
    t.kill()


@pytest.mark.ptrace
def test_a_trigger_written_live(target):
    pid = str(target.pid)

    def fe(*args):
        got = fentry("-p", pid, *args)
        assert got.returncode == 0, got.stderr
        return got.stdout
    fe("write", "-a", "kprobe_events", "p:live/add __main__:add qty=qty")
    trig = "events/live/add/trigger"
    assert fe("read", trig) == HEADER
    fe("write", "events/live/add/enable", "1")      # (first: a trigger runs on a disabled event too)
    fe("write", trig, "traceoff:1 if qty == 3")
    wait_for(lambda: fentry("-p", pid, "read", "tracing_on").stdout == "0\n", what="tracing off")
    assert fe("read", trig) == "traceoff:count=0 if qty == 3\n"
    last = [ln for ln in fe("read", "trace").splitlines() if not ln.startswith("#")][-1]
    assert last.endswith(" qty=3")
    bad = fentry("-p", pid, "write", "-a", trig, "traceon:zz")
    assert bad.returncode != 0 and "expected a count, or if FILTER" in bad.stderr
    assert "  Command: traceon:zz\n" + " " * 19 + "^" in bad.stderr
    assert fe("read", trig) == "traceoff:count=0 if qty == 3\n"
    fe("detach")
    target.finish_clean()


def test_the_c_hot_path_runs_triggers_on_the_values_it_fetched(fs, mod):
    """With the C hot path, a triggered event still fetches in C (its hits
    count in the C object), and calls the triggers with the values; an
    event with no trigger calls nothing in Python."""
    fs.write("events/trig/f/enable", "1")
    file = fs.probes.find("trig", "f").file(fs.instance)
    c = os.environ.get("FENTRY_PURE_PYTHON") != "1"
    for i in range(10):
        mod.f(i)
    assert file.trace.nhit == (10 if c else 0) and file._record == file._record_event
    fs.write(T, "stacktrace:1 if x == 12")
    fs.write(T, "traceoff:1 if x == 14")
    assert file._record == file._record_triggered
    for i in range(10, 20):
        mod.nested(i)
    assert file.trace.nhit == (20 if c else 0)
    trace = fs.read("trace")
    assert xs(trace) == list(range(15)) and trace.count("<stack trace>") == 1
    lines = trace.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.endswith("<stack trace>"))
    assert lines[at - 1].endswith(" x=12") and lines[at + 1].startswith(" => f (")
    fs.write(T, "!stacktrace")
    fs.write(T, "!traceoff")
    assert file._record == file._record_event and fs.read("events/trig/f/enable") == "1\n"


def test_a_return_probe_s_trigger_sees_its_retval_and_entry_args(fs, mod):
    fs.write("kprobe_events", f"r:trig/fr {mod.__name__}:f x=$retval a=$arg1", append=True)
    fs.write("events/trig/fr/trigger", "stacktrace:1 if x == 8 && a == 7")
    fs.write("events/trig/fr/trigger", "traceoff:1 if a >= 9")
    fs.write("events/trig/fr/enable", "1")
    for i in range(20):
        mod.nested(i)
    trace = fs.read("trace")
    got = [(int(m["x"]), int(m["a"])) for m in re.finditer(r" fr: \([^)]*\) x=(?P<x>\d+) a=(?P<a>\d+)$",
                                                            trace, re.M)]
    assert got == [(i + 1, i) for i in range(10)]
    assert trace.count("<stack trace>") == 1
    lines = trace.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.endswith("<stack trace>"))
    assert lines[at - 1].endswith(" x=8 a=7") and lines[at + 1].startswith(" => f (")


def test_a_soft_disabled_event_counts_its_hits_and_faults_on_both_hot_paths(fs, mod):
    fs.write("kprobe_events", f"p:trig/fa {mod.__name__}:f y=x.nope", append=True)
    fs.write("events/trig/fa/trigger", "traceoff:0")      # (a count of 0: never fires)
    for i in range(7):
        mod.f(i)
    profile = {ln.split()[0]: ln.split()[1:] for ln in fs.read("kprobe_profile").splitlines()}
    assert profile["fa"] == ["7", "7"]              # hits, misses: every fetch faulted
    assert "fa:" not in fs.read("trace")
    fs.write("events/trig/fa/trigger", "!traceoff")
