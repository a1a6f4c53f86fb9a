"""The tracefs files, in process: what a user reads and writes."""

from __future__ import annotations

import re
import threading

import pytest

import fentry

FILES = {"available_tracers", "current_tracer", "set_ftrace_filter", "set_ftrace_notrace",
         "available_filter_functions", "tracing_on", "buffer_size_kb", "trace", "trace_pipe",
         "trace_options"}


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def helper(x):
    return x


def body_lines(text):
    return [l for l in text.splitlines() if l and not l.startswith("#")]


@pytest.fixture
def fs():
    return fentry.tracefs()


def test_ls_lists_the_files(fs):
    assert set(fs.ls()) >= FILES


def test_available_tracers_and_current_tracer(fs):
    assert fs.read("available_tracers").split() == ["function_graph", "function", "nop"]
    assert fs.read("current_tracer") == "nop\n"
    fs.write("current_tracer", "function\n")
    assert fs.read("current_tracer") == "function\n"


def test_filter_write_resets_and_append_adds(fs):
    assert fs.read("set_ftrace_filter") == "#### all functions enabled ####\n"
    fs.write("set_ftrace_filter", "fib")
    fs.write("set_ftrace_filter", "helper", append=True)
    assert fs.read("set_ftrace_filter") == "fib\nhelper\n"
    fs.write("set_ftrace_filter", "fib")
    assert fs.read("set_ftrace_filter") == "fib\n"


def test_function_trace_counts_every_call(fs):
    fs.write("set_ftrace_filter", f"{__name__}:fib")
    fs.write("current_tracer", "function")
    fib(10)
    text = fs.read("trace")
    lines = body_lines(text)
    assert len(lines) == 177            # fib(10) makes 177 calls
    assert sum(l.endswith("fib <-fib") for l in lines) == 176
    assert re.search(r"^# entries-in-buffer/entries-written: 177/177 ", text, re.M)
    assert text.startswith("# tracer: function\n")


def test_writing_trace_clears_it(fs):
    fs.write("set_ftrace_filter", "helper")
    fs.write("current_tracer", "function")
    helper(1)
    fs.write("trace", "")
    helper(2)
    assert len(body_lines(fs.read("trace"))) == 1


def test_trace_pipe_consumes(fs):
    fs.write("set_ftrace_filter", "helper")
    fs.write("current_tracer", "function")
    helper(1)
    helper(2)
    first = fs.read("trace_pipe")
    assert len(body_lines(first)) == 2
    assert fs.instance.read_pipe() == ""        # nothing new: nothing to read
    helper(3)
    assert len(body_lines(fs.read("trace_pipe"))) == 1
    assert len(body_lines(fs.read("trace"))) == 0   # consumed


def test_trace_pipe_blocks_until_there_is_something(fs):
    fs.write("set_ftrace_filter", "helper")
    fs.write("current_tracer", "function")
    timer = threading.Timer(0.2, helper, args=(1,))
    timer.start()
    text = fs.read("trace_pipe")
    timer.join()
    assert len(body_lines(text)) == 1


def test_tracing_on_off_switches_events_off(fs):
    fs.write("set_ftrace_filter", "helper")
    fs.write("current_tracer", "function")
    helper(1)
    fs.write("tracing_on", "0")
    from fentry import ftrace
    assert ftrace.traced_codes() == []          # switched off, not filtered
    helper(2)
    fs.write("tracing_on", "1")
    helper(3)
    assert len(body_lines(fs.read("trace"))) == 2
    assert fs.read("tracing_on") == "1\n"


def test_small_buffer_overwrites_oldest_and_counts_losses(fs):
    fs.write("buffer_size_kb", "1")
    fs.write("set_ftrace_filter", "helper")
    fs.write("current_tracer", "function")
    for i in range(5000):
        helper(i)
    text = fs.read("trace")
    kept, written = map(int, re.search(r"entries-written: (\d+)/(\d+)", text).groups())
    assert written == 5000
    assert 0 < kept < 5000
    assert len(body_lines(text)) == kept
    assert f"[LOST {5000 - kept} EVENTS]" in text


def test_buffers_are_per_thread(fs):
    fs.write("buffer_size_kb", "1")
    fs.write("set_ftrace_filter", "helper fib")
    fs.write("current_tracer", "function")
    t = threading.Thread(target=fib, args=(3,), name="quiet")
    t.start()
    t.join()
    for i in range(5000):          # a busy thread fills its own buffer only
        helper(i)
    lines = body_lines(fs.read("trace"))
    assert sum("quiet-" in l for l in lines) == 5


def test_bad_writes_are_refused_and_change_nothing(fs):
    fs.write("set_ftrace_filter", "fib")
    fs.write("current_tracer", "function")
    for path, text in [("current_tracer", "bogus"), ("tracing_on", "2"), ("buffer_size_kb", "-1"),
                       ("set_ftrace_filter", "a:b:c"), ("trace_options", "nosuchoption"),
                       ("available_tracers", "x"), ("no_such_file", "x")]:
        with pytest.raises(fentry.TraceError):
            fs.write(path, text)
    assert fs.read("current_tracer") == "function\n"
    assert fs.read("set_ftrace_filter") == "fib\n"
    assert fs.read("tracing_on") == "1\n"
    with pytest.raises(fentry.TraceError):
        fs.read("no_such_file")


def test_trace_options_toggle(fs):
    assert "nofuncgraph-tail" in fs.read("trace_options").split()
    fs.write("trace_options", "funcgraph-tail")
    assert "funcgraph-tail" in fs.read("trace_options").split()
    fs.write("set_ftrace_filter", "helper")
    fs.write("current_tracer", "function")
    fs.write("trace_options", "noprint-parent")
    helper(1)
    (line,) = body_lines(fs.read("trace"))
    assert line.endswith(": helper")


def test_available_filter_functions_lists_symbols(fs):
    text = fs.read("available_filter_functions")
    lines = set(text.splitlines())
    assert f"fib [{__name__}]" in lines
    assert f"test_trace_options_toggle [{__name__}]" in lines
    assert all(re.fullmatch(r"\S+ \[\S+\]", l) for l in lines)


def test_the_fentry_command_knows_the_tracers_and_sizes_there_are():
    """cli.py keeps copies (it starts without the in-process modules): they must agree."""
    from fentry import cli
    from fentry.tracers.ring_buffer import DEFAULT_SIZE_KB
    from fentry.tracers.trace import TRACERS
    assert tuple(TRACERS) == cli.TRACER_NAMES
    assert cli.DEFAULT_SIZE_KB == DEFAULT_SIZE_KB
