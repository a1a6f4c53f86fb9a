"""The ring buffer: per-thread, bounded by buffer_size_kb, oldest overwritten, losses counted."""

from __future__ import annotations

import re
import threading

from helpers import function_lines

HERE = __name__
ENTRIES = re.compile(r"^# entries-in-buffer/entries-written: (\d+)/(\d+)", re.M)
LOST = re.compile(r"\[LOST (\d+) EVENTS\]")


def busy(i):
    return i


def quiet():
    return 0


def last():
    return 1


def entries(trace: str) -> tuple[int, int]:
    m = ENTRIES.search(trace)
    assert m, trace[:500]
    return int(m[1]), int(m[2])


def start_function_tracer(fs, size_kb: int | None = None) -> None:
    if size_kb is not None:
        fs.write("buffer_size_kb", str(size_kb))
    fs.write("set_ftrace_filter", f"{HERE}:busy {HERE}:quiet {HERE}:last")
    fs.write("current_tracer", "function")


def test_entries_header_counts_every_call_when_nothing_is_lost(fs):
    start_function_tracer(fs)
    for i in range(100):
        busy(i)
    trace = fs.read("trace")
    assert entries(trace) == (100, 100)
    assert len(function_lines(trace)) == 100
    assert not LOST.search(trace)


def test_small_buffer_keeps_the_newest_and_counts_the_lost(fs):
    start_function_tracer(fs, size_kb=1)
    calls = 2000
    for i in range(calls - 3):
        busy(i)
    for _ in range(3):
        last()
    trace = fs.read("trace")
    kept = function_lines(trace)
    in_buffer, written = entries(trace)
    assert written == calls
    assert in_buffer == len(kept) < calls
    assert [m["func"] for m in kept[-3:]] == ["last"] * 3       # the newest survive
    assert {m["func"] for m in kept[:-3]} <= {"busy"}
    [lost] = LOST.findall(trace)
    assert int(lost) == written - in_buffer == calls - len(kept)


def test_a_busy_thread_does_not_evict_a_quiet_threads_events(fs):
    start_function_tracer(fs, size_kb=1)
    t = threading.Thread(target=quiet, name="quiet-one")
    t.start()
    t.join()
    for i in range(5000):
        busy(i)
    lines = function_lines(fs.read("trace"))
    assert [(m["task"], m["func"]) for m in lines if m["task"] == "quiet-one"] == [("quiet-one", "quiet")]
    assert {m["func"] for m in lines if m["task"] == "MainThread"} == {"busy"}


def test_each_thread_is_bounded_by_buffer_size_kb(fs):
    start_function_tracer(fs, size_kb=1)
    for i in range(3000):
        busy(i)
    per_thread = len(function_lines(fs.read("trace")))
    fs.write("trace", "")

    def work():
        for i in range(3000):
            busy(i)
    threads = [threading.Thread(target=work, name=f"w{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trace = fs.read("trace")
    lines = function_lines(trace)
    assert sorted({m["task"] for m in lines}) == ["w0", "w1"]
    for name in ("w0", "w1"):
        assert sum(m["task"] == name for m in lines) == per_thread
    assert entries(trace) == (2 * per_thread, 6000)


def test_bigger_buffer_keeps_more(fs):
    start_function_tracer(fs, size_kb=1)
    for i in range(3000):
        busy(i)
    small = entries(fs.read("trace"))[0]
    fs.write("current_tracer", "nop")
    start_function_tracer(fs, size_kb=4)
    for i in range(3000):
        busy(i)
    big = entries(fs.read("trace"))[0]
    assert small < big < 3000


def test_shrinking_the_buffer_drops_the_oldest_as_lost(fs):
    start_function_tracer(fs)
    for i in range(1000):
        busy(i)
    last()
    fs.write("buffer_size_kb", "1")
    assert fs.read("buffer_size_kb") == "1\n"
    trace = fs.read("trace")
    in_buffer, written = entries(trace)
    assert written == 1001 and in_buffer < 1001
    assert function_lines(trace)[-1]["func"] == "last"
    assert int(LOST.search(trace)[1]) == written - in_buffer


def test_trace_pipe_reports_lost_events_once(fs):
    start_function_tracer(fs, size_kb=1)
    for i in range(2000):
        busy(i)
    first = fs.instance.read_pipe()
    kept = len(function_lines(first))
    assert [int(n) for n in LOST.findall(first)] == [2000 - kept]
    last()
    second = fs.instance.read_pipe()
    assert not LOST.search(second)
    assert [m["func"] for m in function_lines(second)] == ["last"]


def test_clearing_the_trace_resets_the_counts(fs):
    start_function_tracer(fs, size_kb=1)
    for i in range(2000):
        busy(i)
    fs.write("trace", "")
    trace = fs.read("trace")
    assert entries(trace) == (0, 0)
    assert not LOST.search(trace)
    last()
    assert entries(fs.read("trace")) == (1, 1)
