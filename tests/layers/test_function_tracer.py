"""The function tracer: one kernel-format line per call, with parent and thread."""

from __future__ import annotations

import collections
import threading

import pytest
from helpers import FUNCTION_LINE, body, calls_printed, fentry_run, function_lines

HERE = __name__


def leaf(x):
    return x


def branch(x):
    return leaf(x) + leaf(x + 1)


def gen(n):
    for i in range(n):
        yield leaf(i)


# ---------------------------------------------------------------- in process

def trace_of(fs, func, *args, filter_=f"{HERE}:*"):
    fs.write("set_ftrace_filter", filter_)
    fs.write("current_tracer", "function")
    func(*args)
    fs.write("tracing_on", "0")
    return fs.read("trace")


def test_header_says_tracer_function(fs):
    trace = trace_of(fs, branch, 1)
    lines = trace.splitlines()
    assert lines[0] == "# tracer: function"
    assert any(line.startswith("# entries-in-buffer/entries-written: 3/3") for line in lines)
    assert any("TASK-PID" in line and "CPU#" in line and "FUNCTION" in line for line in lines)


def test_one_line_per_call_in_call_order_with_parents(fs):
    trace = trace_of(fs, branch, 1)
    assert [(m["func"], m["parent"]) for m in function_lines(trace)] == [
        ("branch", "trace_of"), ("leaf", "branch"), ("leaf", "branch")]


def test_lines_have_the_kernel_format(fs):
    trace = trace_of(fs, branch, 1)
    lines = body(trace)
    assert len(lines) == 3
    assert all(FUNCTION_LINE.match(line) for line in lines)


def test_task_column_is_thread_name_and_native_tid(fs):
    fs.write("set_ftrace_filter", f"{HERE}:leaf")
    fs.write("current_tracer", "function")
    tids = {}

    def work():
        tids[threading.current_thread().name] = threading.get_native_id()
        leaf(1)
    t = threading.Thread(target=work, name="worker-7")
    t.start()
    t.join()
    leaf(2)
    tids["MainThread"] = threading.get_native_id()
    lines = function_lines(fs.read("trace"))
    assert sorted((m["task"], int(m["tid"])) for m in lines) == sorted(tids.items())


def test_generator_is_one_line_per_call_not_per_resume(fs):
    trace = trace_of(fs, lambda: list(gen(3)), filter_=f"{HERE}:gen {HERE}:leaf")
    assert [m["func"] for m in function_lines(trace)] == ["gen", "leaf", "leaf", "leaf"]


def test_timestamps_are_in_order(fs):
    trace = trace_of(fs, lambda: [branch(i) for i in range(50)], filter_=f"{HERE}:branch {HERE}:leaf")
    stamps = [float(m["ts"]) for m in function_lines(trace)]
    assert len(stamps) == 150 and stamps == sorted(stamps)


def test_noprint_parent_drops_the_parent(fs):
    fs.write("trace_options", "noprint-parent")
    trace = trace_of(fs, branch, 1)
    funcs = [line.rsplit(": ", 1)[1] for line in body(trace)]
    assert funcs == ["branch", "leaf", "leaf"]


# ---------------------------------------------------------------- shopapp, end to end

@pytest.fixture(scope="module")
def shop_trace(tmp_path_factory):
    proc, trace = fentry_run(tmp_path_factory.mktemp("function"), "-t", "function", "-l", "__main__:*")
    assert proc.returncode == 0, proc.stderr
    return proc, trace, function_lines(trace)


def test_shop_header_is_the_function_tracers(shop_trace):
    _, trace, _ = shop_trace
    assert trace.startswith("# tracer: function\n")


def test_shop_exactly_one_line_per_call(shop_trace):
    proc, _, lines = shop_trace
    counts = collections.Counter(m["func"] for m in lines)
    for name, n in calls_printed(proc.stdout).items():
        assert counts[name] == n, name
    assert counts["counted.<locals>.wrapper"] == calls_printed(proc.stdout)["Cart.add"]
    assert counts["main"] == 1 and counts["checkout"] == 2 and counts["ship_all"] == 1


def test_shop_parents(shop_trace):
    _, _, lines = shop_trace
    parents = collections.defaultdict(set)
    for m in lines:
        parents[m["func"]].add(m["parent"])
    assert parents["main"] == {"<module>"}
    assert parents["Cart.add"] == {"counted.<locals>.wrapper"}
    assert parents["Cart._reserve"] == {"Cart.add"}
    assert parents["Inventory.take"] == {"Cart._reserve"}
    assert parents["Cart.for_owner"] == {"main"}
    assert parents["Cart.__init__"] == {"Cart.for_owner", "main"}
    assert parents["Cart.total"] == {"checkout"}
    assert parents["make_discount.<locals>.discount"] == {"Cart.total"}
    assert parents["<lambda>"] == {"Cart.total"}
    assert parents["fib"] == {"checkout", "fib"}
    assert parents["checkout"] == {"Thread.run"}
    assert parents["ship"] == {"ship_all"}
    assert parents["Cart.price_of"] == {"Cart.lines", "Cart.total.<locals>.<genexpr>"}


def test_shop_thread_names(shop_trace):
    _, _, lines = shop_trace
    tasks = collections.defaultdict(set)
    for m in lines:
        tasks[m["func"]].add(m["task"])
    assert tasks["checkout"] == {"checkout-alice", "checkout-bob"}
    assert tasks["fib"] == {"checkout-alice", "checkout-bob"}
    assert tasks["main"] == tasks["Cart.add"] == tasks["ship"] == {"MainThread"}
    tids = collections.defaultdict(set)
    for m in lines:
        tids[m["task"]].add(m["tid"])
    assert all(len(t) == 1 for t in tids.values())              # one tid per thread
    assert len({t for ts in tids.values() for t in ts}) == 3   # and a different one each


def test_shop_each_thread_does_its_own_work(shop_trace):
    proc, _, lines = shop_trace
    per_thread = collections.Counter((m["task"], m["func"]) for m in lines)
    for task in ("checkout-alice", "checkout-bob"):
        assert per_thread[(task, "checkout")] == 1
        assert per_thread[(task, "Cart.total")] == 1
        # each thread computes the same fib(4): half of all fib calls each
        assert per_thread[(task, "fib")] * 2 == calls_printed(proc.stdout)["fib"]
