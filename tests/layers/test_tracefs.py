"""The in-process tracefs: its files, read and write semantics, bad input."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from helpers import body, fentry_tool_ids, function_lines

import fentry
from fentry import TraceError

HERE = __name__
FILES = {"available_tracers", "current_tracer", "set_ftrace_filter", "set_ftrace_notrace",
         "available_filter_functions", "tracing_on", "buffer_size_kb", "trace", "trace_pipe",
         "trace_options"}


def alpha():
    return 1


def beta():
    return 2


def gamma():
    return 3


def call_all():
    alpha()
    beta()
    gamma()


def traced(fs) -> list[str]:
    """The functions in the trace now (a snapshot, not consumed)."""
    return [m["func"] for m in function_lines(fs.read("trace"))]


CALLED = f"{HERE}:call_all {HERE}:alpha {HERE}:beta {HERE}:gamma"


def start(fs, filter_=CALLED):
    fs.write("set_ftrace_filter", filter_)
    fs.write("current_tracer", "function")


# ---------------------------------------------------------------- the files

def test_ls_lists_the_files(fs):
    assert set(fs.ls()) >= FILES
    assert set(fs.ls("/")) >= FILES


def test_ls_of_a_missing_directory_is_an_error(fs):
    with pytest.raises(TraceError):
        fs.ls("no/such/dir")


def test_available_tracers(fs):
    assert fs.read("available_tracers").split() == ["function_graph", "function", "nop"]


def test_the_fentry_command_knows_the_tracers_and_sizes_there_are():
    """cli.py keeps copies (it starts without the in-process modules): they must agree."""
    from fentry import cli
    from fentry.tracers.ring_buffer import DEFAULT_SIZE_KB
    from fentry.tracers.trace import TRACERS
    assert tuple(TRACERS) == cli.TRACER_NAMES
    assert cli.DEFAULT_SIZE_KB == DEFAULT_SIZE_KB


def test_current_tracer_starts_as_nop_and_switches(fs):
    assert fs.read("current_tracer") == "nop\n"
    fs.write("current_tracer", "function\n")          # as `echo function > current_tracer`
    assert fs.read("current_tracer") == "function\n"
    fs.write("current_tracer", "function_graph")
    assert fs.read("current_tracer") == "function_graph\n"


def test_switching_tracer_changes_the_header_and_empties_the_buffer(fs):
    start(fs, f"{HERE}:alpha")
    alpha()
    assert fs.read("trace").startswith("# tracer: function\n")
    fs.write("current_tracer", "function_graph")
    trace = fs.read("trace")
    assert trace.startswith("# tracer: function_graph\n")
    assert body(trace) == []
    alpha()
    assert len(body(fs.read("trace"))) == 1


def test_writing_the_current_tracer_again_keeps_the_buffer(fs):
    start(fs, f"{HERE}:alpha")
    alpha()
    fs.write("current_tracer", "function")
    assert traced(fs) == ["alpha"]


def test_nop_records_nothing_and_holds_no_tool_id(fs):
    start(fs, f"{HERE}:alpha")
    alpha()
    fs.write("current_tracer", "nop")
    assert fentry_tool_ids() == []
    alpha()
    assert body(fs.read("trace")) == []


# ---------------------------------------------------------------- filters

def test_empty_filter_reads_as_all_functions_enabled(fs):
    assert fs.read("set_ftrace_filter") == "#### all functions enabled ####\n"


def test_filter_write_replaces_and_append_adds(fs):
    fs.write("set_ftrace_filter", f"{HERE}:alpha")
    fs.write("set_ftrace_filter", f"{HERE}:beta", append=True)
    assert fs.read("set_ftrace_filter") == f"alpha [{HERE}]\nbeta [{HERE}]\n"
    fs.write("current_tracer", "function")
    call_all()
    assert traced(fs) == ["alpha", "beta"]
    fs.write("set_ftrace_filter", f"{HERE}:gamma")
    assert fs.read("set_ftrace_filter") == f"gamma [{HERE}]\n"
    call_all()
    assert traced(fs) == ["alpha", "beta", "gamma"]


def test_writing_an_empty_filter_resets_to_all_functions(fs):
    start(fs, f"{HERE}:alpha")
    fs.write("set_ftrace_filter", "")
    assert fs.read("set_ftrace_filter") == "#### all functions enabled ####\n"
    call_all()
    assert {"alpha", "beta", "gamma"} <= set(traced(fs))


def test_notrace_removes_and_wins_over_the_filter(fs):
    start(fs)
    fs.write("set_ftrace_notrace", f"{HERE}:beta")
    fs.write("set_ftrace_notrace", f"{HERE}:gamma", append=True)
    assert fs.read("set_ftrace_notrace") == f"beta [{HERE}]\ngamma [{HERE}]\n"
    call_all()
    assert traced(fs) == ["call_all", "alpha"]
    fs.write("set_ftrace_notrace", "")
    assert fs.read("set_ftrace_notrace") == "#### no functions disabled ####\n"
    call_all()
    assert traced(fs)[2:] == ["call_all", "alpha", "beta", "gamma"]


def test_filter_reads_back_the_functions_it_selects(fs):
    """As the kernel's t_show: one function a line, named as
    available_filter_functions names it, whatever glob selected it."""
    fs.write("set_ftrace_filter", f"{HERE}:[ab]*")
    fs.write("set_ftrace_filter", f"!{HERE}:beta", append=True)
    assert fs.read("set_ftrace_filter") == f"alpha [{HERE}]\n"
    assert f"alpha [{HERE}]\n" in fs.read("available_filter_functions")
    fs.write("set_ftrace_filter", "gamma:mod:" + HERE)
    assert fs.read("set_ftrace_filter") == f"gamma [{HERE}]\n"


def test_filter_on_a_module_not_imported_waits_and_reads_back_as_the_kernels_cached_mod(fs):
    name = "fentry_never_imported_module"
    assert name not in sys.modules
    fs.write("set_ftrace_filter", f"{name}:Cart.*")
    fs.write("set_ftrace_filter", f":mod:{name}", append=True)
    fs.write("set_ftrace_filter", f"{HERE}:alpha", append=True)
    assert fs.read("set_ftrace_filter") == (f"alpha [{HERE}]\n"
                                            f"Cart.*:mod:{name}\n*:mod:{name}\n")
    fs.write("set_ftrace_filter", f"*:mod:{name}")
    assert fs.read("set_ftrace_filter") == f"*:mod:{name}\n"
    fs.write("current_tracer", "function")
    call_all()      # a pending filter is not empty: it traces nothing yet
    assert traced(fs) == []


def test_filter_that_selects_no_function_is_refused_as_the_kernel_refuses_it(fs):
    start(fs, f"{HERE}:alpha")
    for word, pos in [("no_such_function_anywhere", 0), (f"{HERE}:alpha {HERE}:nothing", len(f"{HERE}:alpha ")),
                      ("!no_such_function_anywhere", 0), (f"nothing:mod:{HERE}", 0)]:
        with pytest.raises(TraceError) as err:
            fs.write("set_ftrace_filter", word, append=True)
        assert err.value.code == "NO_MATCH" and err.value.message.startswith("Invalid argument")
        assert err.value.pos == pos
        assert fs.read("set_ftrace_filter") == f"alpha [{HERE}]\n"
    assert fs.read("error_log") == ""       # as the kernel's: ftrace filters log nothing
    call_all()
    assert traced(fs) == ["alpha"]


@pytest.mark.parametrize("word, code, pos", [
    ("no_such_function_anywhere:traceoff", "NO_MATCH", 0),
    ("alpha:traceoff:x", "BAD_CMD_COUNT", len("alpha:traceoff:")),
    (f"{HERE}:enable_event:sched:sched_switch", "CMD_NO_EVENT", len(f"{HERE}:enable_event:")),
    ("!alpha:snapshot", "CMD_NOT_SET", 0)])
def test_a_filter_command_is_never_read_as_mod_glob(fs, word, code, pos):
    with pytest.raises(TraceError) as err:
        fs.write("set_ftrace_filter", word)
    assert (err.value.code, err.value.pos) == (code, pos)
    assert fs.read("set_ftrace_filter") == "#### all functions enabled ####\n"


def test_filter_change_applies_to_the_running_tracer(fs):
    start(fs, f"{HERE}:alpha")
    call_all()
    fs.write("set_ftrace_filter", f"{HERE}:beta")
    call_all()
    assert traced(fs) == ["alpha", "beta"]


# ---------------------------------------------------------------- trace and trace_pipe

def test_reading_trace_does_not_consume(fs):
    start(fs, f"{HERE}:alpha")
    alpha()
    first = fs.read("trace")
    # Read again and again, nothing written between: the same text, to the
    # timestamps (the C path converts its clock when the trace is read).
    assert all(fs.read("trace") == first for _ in range(50))
    assert traced(fs) == ["alpha"]


def test_writing_trace_clears_it(fs):
    start(fs, f"{HERE}:alpha")
    alpha()
    fs.write("trace", "")
    assert body(fs.read("trace")) == []
    alpha()
    assert traced(fs) == ["alpha"]


def test_appending_to_trace_does_not_clear_it(fs):
    start(fs, f"{HERE}:alpha")
    alpha()
    fs.write("trace", "", append=True)
    assert traced(fs) == ["alpha"]


def test_trace_pipe_consumes(fs):
    start(fs, f"{HERE}:alpha {HERE}:beta")
    alpha()
    first = fs.instance.read_pipe()
    assert [m["func"] for m in function_lines(first)] == ["alpha"]
    assert fs.instance.read_pipe() == ""             # nothing new: nothing to read
    assert fs.instance.wait_pipe(timeout=0.1) == ""   # not even after waiting a little
    beta()
    assert [m["func"] for m in function_lines(fs.instance.read_pipe())] == ["beta"]
    assert body(fs.read("trace")) == []               # consumed: gone from trace too


def test_trace_pipe_read_blocks_until_there_is_something(fs):
    start(fs, f"{HERE}:alpha")
    t = threading.Timer(0.2, alpha)
    t.start()
    try:
        text = fs.read("trace_pipe")
    finally:
        t.join()
    assert [m["func"] for m in function_lines(text)] == ["alpha"]
    assert fs.instance.read_pipe() == ""


def test_trace_pipe_has_no_header(fs):
    start(fs, f"{HERE}:alpha")
    alpha()
    text = fs.instance.read_pipe()
    assert not any(line.startswith("#") for line in text.splitlines())


# ---------------------------------------------------------------- tracing_on

def test_tracing_on_0_stops_recording_and_1_resumes(fs):
    start(fs, f"{HERE}:alpha {HERE}:beta {HERE}:gamma")
    alpha()
    fs.write("tracing_on", "0\n")
    assert fs.read("tracing_on") == "0\n"
    beta()
    fs.write("tracing_on", "1")
    assert fs.read("tracing_on") == "1\n"
    gamma()
    assert traced(fs) == ["alpha", "gamma"]


def test_tracing_off_leaves_no_events_set(fs):
    start(fs, f"{HERE}:alpha")
    alpha()
    [tool_id] = fentry_tool_ids()
    fs.write("tracing_on", "0")
    held = fentry_tool_ids()
    if held:        # still holding the id is allowed; events are not
        assert sys.monitoring.get_local_events(held[0], alpha.__code__) == 0
        assert sys.monitoring.get_events(held[0]) == 0
    else:
        sys.monitoring.use_tool_id(tool_id, "probe")
        try:
            assert sys.monitoring.get_local_events(tool_id, alpha.__code__) == 0
            assert sys.monitoring.get_events(tool_id) == 0
        finally:
            sys.monitoring.free_tool_id(tool_id)
    assert fs.read("current_tracer") == "function\n"


def test_tracing_off_then_switching_tracer_starts_nothing(fs):
    fs.write("tracing_on", "0")
    start(fs, f"{HERE}:alpha")
    alpha()
    assert body(fs.read("trace")) == []
    fs.write("tracing_on", "1")
    alpha()
    assert traced(fs) == ["alpha"]


# ---------------------------------------------------------------- options and sizes

def test_trace_options_read_and_toggle(fs):
    words = fs.read("trace_options").split()
    assert "stream-header" in words
    assert "print-parent" in words and "nofuncgraph-tail" in words
    fs.write("trace_options", "funcgraph-tail")
    assert "funcgraph-tail" in fs.read("trace_options").split()
    fs.write("trace_options", "nofuncgraph-tail")
    assert "nofuncgraph-tail" in fs.read("trace_options").split()


def test_options_files_are_the_trace_options_words(fs):
    """options/NAME: one 0/1 file per trace_options word, either way round."""
    words = [w.removeprefix("no") for w in fs.read("trace_options").split()]
    assert fs.ls("options") == sorted(words)
    for word in words:
        on = fs.read("options/" + word)
        assert on == ("0\n" if f"no{word}" in fs.read("trace_options").split() else "1\n")
    fs.write("options/funcgraph-tail", "1")
    assert "funcgraph-tail" in fs.read("trace_options").split()
    fs.write("trace_options", "nofuncgraph-tail")
    assert fs.read("options/funcgraph-tail") == "0\n"
    with pytest.raises(TraceError):
        fs.write("options/funcgraph-tail", "2")
    assert fs.read("options/funcgraph-tail") == "0\n"
    fs.mkdir("instances/opts")
    fs.write("instances/opts/options/print-parent", "0")
    assert fs.read("options/print-parent") == "1\n"


def test_enabled_functions_counts_the_ops_on_each_function(fs):
    start(fs, f"{HERE}:alpha {HERE}:beta")
    call_all()
    assert fs.read("enabled_functions") == f"alpha [{HERE}] (1)\nbeta [{HERE}] (1)\n"
    ops = fentry.FtraceOps(lambda *a: None, flags=fentry.FTRACE_OPS_FL_SAVE_REGS)
    ops.set_filter(f"{HERE}:beta {HERE}:gamma")
    fentry.register_ftrace_function(ops)
    try:
        call_all()
        assert fs.read("enabled_functions") == (f"alpha [{HERE}] (1)\nbeta [{HERE}] (2) R\n"
                                                f"gamma [{HERE}] (1) R\n")
    finally:
        fentry.unregister_ftrace_function(ops)
    fs.write("current_tracer", "nop")
    assert fs.read("enabled_functions") == ""


def test_saved_cmdlines_and_buffer_total_size_kb_know_the_threads(fs):
    fs.write("buffer_size_kb", "64")
    start(fs, f"{HERE}:alpha")
    t = threading.Thread(target=alpha, name="cmdline-worker")
    t.start()
    t.join()
    alpha()
    lines = fs.read("saved_cmdlines").splitlines()
    assert f"{t.native_id} cmdline-worker" in lines
    assert f"{threading.get_native_id()} {threading.current_thread().name}" in lines
    assert fs.read("buffer_total_size_kb") == f"{64 * len(lines)}\n"


def test_buffer_size_kb_reads_back(fs):
    fs.write("buffer_size_kb", "64\n")
    assert fs.read("buffer_size_kb") == "64\n"


def test_a_buffer_larger_than_memory_is_refused_as_the_kernel_does(fs):
    with pytest.raises(TraceError) as err:
        fs.write("buffer_size_kb", "30000000000")
    assert err.value.message.startswith("Cannot allocate memory: 30000000000 KB per thread is "
                                        "more than the ")
    assert fs.read("buffer_size_kb") == "1408\n"


# ---------------------------------------------------------------- bad input

def running_state(fs) -> dict:
    return {name: fs.read(name) for name in ("current_tracer", "tracing_on", "set_ftrace_filter",
                                              "set_ftrace_notrace", "trace_options", "buffer_size_kb")}


@pytest.mark.parametrize("path,text", [
    ("current_tracer", "bogus"),
    ("current_tracer", "function function_graph"),
    ("tracing_on", "2"),
    ("tracing_on", "yes"),
    ("tracing_on", ""),
    ("set_ftrace_filter", "alpha beta["),
    ("set_ftrace_filter", "a:b:c"),
    ("set_ftrace_notrace", "[gamma"),
    ("buffer_size_kb", "0"),
    ("buffer_size_kb", "-4"),
    ("buffer_size_kb", "lots"),
    ("buffer_size_kb", str(1 << 40)),           # more than any machine's memory
    ("trace_options", "bogus-option"),
    ("trace_options", "funcgraph-tail bogus-option"),
    ("available_tracers", "function"),
    ("available_filter_functions", "alpha"),
    ("no_such_file", "1"),
])
def test_bad_write_raises_and_changes_nothing(fs, path, text):
    start(fs, f"{HERE}:alpha")
    alpha()
    before = running_state(fs)
    with pytest.raises(TraceError) as err:
        fs.write(path, text)
    assert err.value.message
    assert running_state(fs) == before
    beta()
    alpha()
    assert traced(fs) == ["alpha", "alpha"]


def test_unknown_tracer_error_names_the_available_ones(fs):
    with pytest.raises(TraceError) as err:
        fs.write("current_tracer", "bogus")
    for name in ("nop", "function", "function_graph"):
        assert name in str(err.value)


def test_no_free_tool_id_is_logged_and_nothing_is_half_applied(fs, claimed_tool_ids):
    fs.write("set_ftrace_filter", f"{HERE}:alpha")
    fs.write("tracing_on", "0")
    fs.write("current_tracer", "function")          # (tracing off: nothing to start yet)
    claimed_tool_ids(range(6))
    with pytest.raises(TraceError) as err:
        fs.write("tracing_on", "1")
    assert err.value.code == "TOOL_ID_BUSY" and isinstance(err.value, RuntimeError)
    assert fs.read("tracing_on") == "0\n" and fs.read("current_tracer") == "function\n"
    fs.write("current_tracer", "nop")
    fs.write("tracing_on", "1")
    with pytest.raises(TraceError):
        fs.write("current_tracer", "function_graph")
    assert fs.read("current_tracer") == "nop\n" and fentry_tool_ids() == []
    log = fs.read("error_log")
    assert log.count("ftrace: error: No free sys.monitoring tool id: all are held (0 by 'other-tool-0', "
                     "1 by 'other-tool-1', 2 by 'other-tool-2', 3 by 'other-tool-3', "
                     "4 by 'other-tool-4', 5 by 'other-tool-5')") == 2, log
    assert "  Command: echo 1 > tracing_on\n" in log
    assert "  Command: echo function_graph > current_tracer\n" in log
    sys.monitoring.free_tool_id(4)
    fs.write("current_tracer", "function_graph")    # once one is free
    alpha()
    assert fentry_tool_ids() == [4] and "alpha();" in fs.read("trace")


def test_switching_tracers_with_only_fentrys_tool_id_free(fs, claimed_tool_ids):
    start(fs, f"{HERE}:alpha")
    [held] = fentry_tool_ids()
    claimed_tool_ids([i for i in range(6) if i != held])
    fs.write("current_tracer", "function_graph")    # (let go by the old tracer, taken by the new)
    alpha()
    assert fentry_tool_ids() == [held] and "alpha();" in fs.read("trace")


def test_reading_a_missing_file_is_an_error(fs):
    with pytest.raises(TraceError):
        fs.read("no_such_file")


def test_a_slow_reader_does_not_block_the_program(fs):
    start(fs, f"{HERE}:alpha")
    results = []
    reader = threading.Thread(target=lambda: results.append(fs.read("trace_pipe")))
    reader.start()
    time.sleep(0.05)
    assert alpha() == 1
    reader.join(5)
    assert not reader.is_alive()
    assert [m["func"] for m in function_lines(results[0])] == ["alpha"]


# ---------------------------------------------------------------- instances/

def test_an_instance_has_its_own_files_and_the_top_level_the_shared_ones(fs):
    fs.mkdir("instances/foo")
    assert fs.ls("instances") == ["foo"]
    names = set(fs.ls("instances/foo"))
    assert FILES - {"available_filter_functions"} <= names
    assert not names & {"kprobe_events", "kprobe_profile", "instances", "available_filter_functions"}
    assert "instances" in fs.ls()


def test_instances_trace_apart(fs):
    """Each instance its tracer, filter and buffer; neither sees the other's."""
    fs.mkdir("instances/graph")
    start(fs, f"{HERE}:alpha")
    fs.write("instances/graph/set_ftrace_filter", f"{HERE}:beta")
    fs.write("instances/graph/current_tracer", "function_graph")
    call_all()
    assert traced(fs) == ["alpha"]
    graph = fs.read("instances/graph/trace")
    assert graph.startswith("# tracer: function_graph\n") and "beta();" in graph
    assert "alpha" not in graph
    assert fs.read("current_tracer") == "function\n"


def test_a_probe_event_is_enabled_per_instance(fs):
    fs.mkdir("instances/mine")
    fs.write("kprobe_events", f"p:inst/a {HERE}:alpha")
    fs.write("instances/mine/events/inst/a/enable", "1")
    fs.write("instances/mine/events/inst/a/filter", "common_pid > 0")
    call_all()
    assert fs.read("events/inst/a/enable") == "0\n"
    assert fs.read("instances/mine/events/inst/a/enable") == "1\n"
    assert fs.read("events/inst/a/filter") == "none\n"
    assert ": a: (alpha+0x0)" in fs.read("instances/mine/trace")
    assert ": a: " not in fs.read("trace")
    with pytest.raises(TraceError) as err:           # busy: enabled in an instance
        fs.write("kprobe_events", "-:inst/a", append=True)
    assert err.value.code == "BUSY"
    fs.rmdir("instances/mine")                       # its enables go with it
    fs.write("kprobe_events", "-:inst/a", append=True)
    assert fs.read("kprobe_events") == ""


def test_instance_errors(fs):
    fs.mkdir("instances/a")
    for call, path, code in [(fs.mkdir, "instances/a", "INSTANCE_EXISTS"),
                             (fs.mkdir, "instances/bad name", "BAD_INSTANCE_NAME"),
                             (fs.mkdir, "elsewhere/x", "NOT_WRITABLE"),
                             (fs.rmdir, "instances/none", "NO_SUCH_FILE")]:
        with pytest.raises(TraceError) as err:
            call(path)
        assert err.value.code == code, path
    fs.rmdir("instances/a")
    with pytest.raises(TraceError):
        fs.write("instances/a/current_tracer", "function")
    assert fs.ls("instances") == []


def test_a_refusal_carries_the_kernels_errno(fs):
    """What a write to the kernel's file fails with, as the README names it."""
    import errno
    cases = (("tracing_thresh", "abc", errno.EINVAL), ("max_graph_depth", "4294967296", errno.ERANGE),
             ("current_tracer", "wakeup", errno.EINVAL), ("set_ftrace_filter", "!nothere:traceon", errno.ENODEV))
    for path, text, number in cases:
        with pytest.raises(TraceError) as e:
            fs.write(path, text)
        assert e.value.errno == number, (path, text, e.value.message)
    fs.write("tracing_on", "0")
    with pytest.raises(TraceError) as e:
        fs.write("trace_marker", "x")
    assert e.value.errno == errno.EBADF
