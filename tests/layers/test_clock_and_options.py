"""trace_clock, the overwrite and context-info options, free_buffer, README,
and instances side by side: read and written as a user would, in process and
through ``fentry run`` / ``fentry record`` + ``fentry report``."""

from __future__ import annotations

import itertools
import re
import threading
import time

import pytest
from helpers import body, fentry, fentry_run, function_lines, longrun_under_fentry

from fentry import TraceError
from fentry.control.agent import _make_encoder
from fentry.tracers.stream import RawStream

HERE = __name__
CLOCKS = "local global counter uptime mono mono_raw boot tai"
# The function tracer's line with the counter clock: a plain count for the timestamp.
COUNTER_LINE = re.compile(r"^\s*(?P<task>.+)-(?P<tid>\d+)\s+\[000\] \.\.\.\.\. +(?P<count>\d+): "
                          r"(?P<func>\S+) <-(?P<parent>\S+)$")


def leaf():
    return 1


def caller():
    return leaf()


def other():
    return 2


def start(fs, path=""):
    fs.write(path + "set_ftrace_filter", f"{HERE}:leaf")
    fs.write(path + "current_tracer", "function")


def counts(trace: str) -> dict[int, list[int]]:
    """The counter clock's values in a function trace, per thread."""
    out: dict[int, list[int]] = {}
    for line in body(trace):
        m = COUNTER_LINE.match(line)
        assert m, line
        out.setdefault(int(m["tid"]), []).append(int(m["count"]))
    return out


# ---------------------------------------------------------------- trace_clock

def test_trace_clock_reads_as_the_kernels_with_the_current_one_in_brackets(fs):
    assert fs.read("trace_clock") == "[local] " + CLOCKS.split(" ", 1)[1] + "\n"
    fs.write("trace_clock", " mono \n")         # (echo's newline, spaces: stripped, as the kernel)
    assert fs.read("trace_clock") == CLOCKS.replace("mono ", "[mono] ", 1) + "\n"


@pytest.mark.parametrize("text", ["perf", "x86-tsc", "", "local global", "LOCAL"])
def test_an_unknown_clock_is_refused_and_changes_nothing(fs, text):
    fs.write("trace_clock", "boot")
    with pytest.raises(TraceError) as err:
        fs.write("trace_clock", text)
    assert err.value.code == "BAD_CLOCK"
    assert "[boot]" in fs.read("trace_clock")


def test_changing_the_clock_empties_the_buffer(fs):
    start(fs)
    caller()
    assert len(function_lines(fs.read("trace"))) == 1
    fs.write("trace_clock", "global")
    assert body(fs.read("trace")) == []
    caller()
    assert len(function_lines(fs.read("trace"))) == 1


def test_the_counter_clock_counts_every_record_once_across_threads(fs):
    """4 threads x 100,000 calls: each thread's counts increase, and together
    they are 1..400,000, each once (an atomic count, the kernel's counter)."""
    fs.mkdir("instances/count")         # (a new instance: its counter starts at 1)
    at = "instances/count/"
    fs.write(at + "buffer_size_kb", "8192")
    fs.write(at + "trace_clock", "counter")
    start(fs, at)

    def work():
        for _ in range(100_000):
            leaf()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_thread = counts(fs.read(at + "trace"))
    assert len(per_thread) == 4
    for values in per_thread.values():
        assert len(values) == 100_000 and all(a < b for a, b in itertools.pairwise(values))
    assert sorted(v for values in per_thread.values() for v in values) == list(range(1, 400_001))


@pytest.mark.parametrize("clock, clock_id, slack_ns", [
    ("mono", time.CLOCK_MONOTONIC, 0),
    ("mono_raw", time.CLOCK_MONOTONIC_RAW, 0),
    ("boot", time.CLOCK_BOOTTIME, 0),
    ("tai", time.CLOCK_TAI, 0),
    ("uptime", time.CLOCK_MONOTONIC, 50_000_000),  # jiffies: a tick behind at most
    ("local", time.CLOCK_MONOTONIC, 1_000),     # TSC, interpolated to ns
])
def test_a_clocks_timestamps_are_that_clocks_time(fs, clock, clock_id, slack_ns):
    """What the program reads from the same clock around a call brackets the
    call's timestamp (to the trace's microseconds)."""
    fs.write("trace_clock", clock)
    start(fs)
    before = time.clock_gettime_ns(clock_id)
    caller()
    after = time.clock_gettime_ns(clock_id)
    [m] = function_lines(fs.read("trace"))
    sec, usec = m["ts"].split(".")
    ts_us = int(sec) * 1_000_000 + int(usec)
    assert (before - slack_ns) // 1000 <= ts_us <= (after + slack_ns) // 1000, (before, ts_us, after)


def test_boot_and_tai_are_not_mono(fs):
    """tai runs 37 s and more ahead of the monotonic clock: the trace shows it."""
    fs.write("trace_clock", "tai")
    start(fs)
    caller()
    [m] = function_lines(fs.read("trace"))
    assert float(m["ts"]) - time.monotonic() > 1_000_000     # TAI: seconds since 1970


# ---------------------------------------------------------------- overwrite

@pytest.mark.parametrize("overwrite, kept", [("1", range(76, 101)), ("0", range(1, 26))])
def test_overwrite_off_keeps_the_first_records_and_counts_the_dropped(fs, overwrite, kept):
    """A 1 KB buffer holds 25 records: of 100 calls, overwrite keeps the last
    25, and off the first 25; either way the 75 others are said lost.  (In
    a new instance: its counter starts at 1.)"""
    fs.mkdir("instances/ow")
    at = "instances/ow/"
    fs.write(at + "buffer_size_kb", "1")
    fs.write(at + "trace_clock", "counter")
    fs.write(at + "options/overwrite", overwrite)
    start(fs, at)
    for _ in range(100):
        leaf()
    trace = fs.read(at + "trace")
    assert list(counts(trace).values()) == [list(kept)]
    assert re.search(r"^# TID:\d+ \[LOST 75 EVENTS\]$", trace, re.M)
    assert "entries-in-buffer/entries-written: 25/" in trace
    pipe = fs.read(at + "trace_pipe")       # a consuming reader is told too
    assert re.search(r"^TID:\d+ \[LOST 75 EVENTS\]$", pipe, re.M)
    leaf()                                  # room again: recorded, off or on
    assert len(body(fs.read(at + "trace"))) == 1


def test_overwrite_is_per_instance_and_an_option_word(fs):
    fs.mkdir("instances/keep")
    fs.write("instances/keep/trace_options", "nooverwrite")
    assert fs.read("instances/keep/options/overwrite") == "0\n"
    assert fs.read("options/overwrite") == "1\n"
    assert "nooverwrite\n" in fs.read("instances/keep/trace_options")


# ---------------------------------------------------------------- free_buffer

def test_free_buffer_shrinks_the_buffer_and_cannot_be_read(fs):
    start(fs)
    for _ in range(100):
        leaf()
    fs.write("free_buffer", "anything")
    assert fs.read("buffer_size_kb") == "1\n"
    trace = fs.read("trace")
    assert len(body(trace)) == 25 and "[LOST 75 EVENTS]" in trace     # the newest kept
    assert fs.read("tracing_on") == "1\n"
    with pytest.raises(TraceError) as err:
        fs.read("free_buffer")
    assert err.value.code == "NOT_READABLE"


def test_free_buffer_with_disable_on_free_turns_tracing_off(fs):
    start(fs)
    fs.write("options/disable_on_free", "1")
    fs.write("free_buffer", "")
    assert fs.read("tracing_on") == "0\n"
    leaf()
    assert body(fs.read("trace")) == []


# ---------------------------------------------------------------- context-info, README

def test_context_info_off_leaves_the_function_alone(fs):
    """The kernel's layout: no header beyond the tracer's name, and each line
    the function and its parent only."""
    start(fs)
    caller()
    fs.write("options/context-info", "0")
    assert fs.read("trace") == "# tracer: function\n#\nleaf <-caller\n"
    fs.write("options/print-parent", "0")
    assert fs.read("trace") == "# tracer: function\n#\nleaf\n"


def test_sym_offset_prints_the_function_with_its_entry_offset_and_size(fs):
    start(fs)
    caller()
    fs.write("options/sym-offset", "1")
    [m] = function_lines(fs.read("trace"))
    assert m["func"] == f"leaf+0x0/0x{len(leaf.__code__.co_code):x}" and m["parent"] == "caller"
    fs.write("trace_options", "nosym-offset")
    assert function_lines(fs.read("trace"))[0]["func"] == "leaf"


def test_readme_is_a_mini_howto_of_every_file(fs):
    text = fs.read("README")
    assert text.startswith("tracing mini-HOWTO")
    listed = set(re.findall(r"^  (\S+)", text, re.M))
    assert set(fs.ls()) <= listed
    assert "  trace_clock\t\t- change the clock used to order events\n" in text
    with pytest.raises(TraceError):
        fs.write("README", "x")


# ---------------------------------------------------------------- instances

def test_two_instances_trace_different_functions_of_threads_without_mixing(fs):
    fs.mkdir("instances/a")
    fs.mkdir("instances/b")
    for name, func in (("a", "leaf"), ("b", "other")):
        fs.write(f"instances/{name}/buffer_size_kb", "4096")
        fs.write(f"instances/{name}/set_ftrace_filter", f"{HERE}:{func}")
        fs.write(f"instances/{name}/current_tracer", "function")

    def work():
        for _ in range(10_000):
            leaf()
            other()
    threads = [threading.Thread(target=work, name=f"worker{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, func in (("a", "leaf"), ("b", "other")):
        lines = function_lines(fs.read(f"instances/{name}/trace"))
        assert len(lines) == 40_000 and {m["func"] for m in lines} == {func}, name
    assert body(fs.read("trace")) == []


def test_rmdir_is_refused_while_the_instance_is_read(fs):
    fs.mkdir("instances/busy")
    reader = RawStream(fs.instances["busy"], _make_encoder)
    try:
        with pytest.raises(TraceError) as err:
            fs.rmdir("instances/busy")
        assert err.value.code == "INSTANCE_BUSY"
        assert fs.ls("instances") == ["busy"]
    finally:
        reader.close()
    fs.rmdir("instances/busy")
    assert fs.ls("instances") == []


# ---------------------------------------------------------------- fentry run, record, report

PROGRAM = """
import threading
def f(): pass
def g():
    for _ in range(20000):
        f()
threads = [threading.Thread(target=g, name=f"w{i}") for i in range(3)]
for t in threads: t.start()
for t in threads: t.join()
"""


def test_run_and_report_print_the_counter_clock_as_counts(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    proc, trace = fentry_run(tmp_path, "-C", "counter", "-l", "__main__:f", program=(str(script),))
    assert proc.returncode == 0, proc.stderr
    per_thread = counts(trace)
    assert len(per_thread) == 3
    assert sorted(v for values in per_thread.values() for v in values) == list(range(1, 60_001))
    dat = tmp_path / "t.dat"
    assert fentry("record", "-C", "counter", "-l", "__main__:f", "-o", str(dat),
                  str(script)).returncode == 0
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0, rep.stderr
    per_thread = counts(rep.stdout)
    assert sorted(v for values in per_thread.values() for v in values) == list(range(1, 60_001))


def test_report_prints_sym_offset_as_run_does(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM + "print(len(f.__code__.co_code))\n")
    proc, trace = fentry_run(tmp_path, "-O", "sym-offset", "-l", "__main__:f", program=(str(script),))
    assert proc.returncode == 0, proc.stderr
    size = int(proc.stdout)
    assert {m["func"] for m in function_lines(trace)} == {f"f+0x0/0x{size:x}"}
    dat = tmp_path / "t.dat"
    assert fentry("record", "-O", "sym-offset", "-l", "__main__:f", "-o", str(dat),
                  str(script)).returncode == 0
    rep = fentry("report", "-i", str(dat))
    assert {m["func"] for m in function_lines(rep.stdout)} == {f"f+0x0/0x{size:x}"}


def test_run_with_context_info_off_and_a_bad_clock(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    proc, trace = fentry_run(tmp_path, "-C", "boot", "-O", "nocontext-info", "-l", "__main__:f",
                             program=(str(script),))
    assert proc.returncode == 0, proc.stderr
    assert trace.startswith("# tracer: function\n#\nf <-g\n")
    assert set(body(trace)) == {"f <-g"} and len(body(trace)) == 60_000
    proc, trace = fentry_run(tmp_path, "-C", "perf", program=(str(script),))
    assert proc.returncode != 0 and trace == ""
    assert b"no such trace clock" in proc.stderr and b"Command: perf" in proc.stderr


def test_the_files_through_fentry_p_pid(tmp_path):
    """trace_clock, free_buffer and README from outside, on a program run by fentry."""
    with longrun_under_fentry(tmp_path) as pid:
        assert fentry("-p", pid, "write", "trace_clock", "tai").returncode == 0
        assert fentry("-p", pid, "read", "trace_clock").stdout == CLOCKS.replace("tai", "[tai]") + "\n"
        bad = fentry("-p", pid, "write", "trace_clock", "perf")
        assert bad.returncode != 0 and "no such trace clock" in bad.stderr and "^" in bad.stderr
        assert fentry("-p", pid, "write", "free_buffer", "1").returncode == 0
        assert fentry("-p", pid, "read", "buffer_size_kb").stdout == "1\n"
        assert fentry("-p", pid, "read", "free_buffer").returncode != 0
        assert fentry("-p", pid, "read", "README").stdout.startswith("tracing mini-HOWTO")
        assert fentry("-p", pid, "detach").returncode == 0
