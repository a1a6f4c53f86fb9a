"""The pid filters: set_ftrace_pid, set_ftrace_notrace_pid, set_event_pid,
set_event_notrace_pid, keyed by native thread id, and function-fork."""

from __future__ import annotations

import collections
import re
import threading

import pytest
from helpers import function_lines

from fentry import TraceError

HERE = __name__
CALLS = 100_000


def leaf(x):
    return x


def loop(n):
    for i in range(n):
        leaf(i)


class Workers:
    """``n`` threads that tell their tid, then wait to be let go, each then
    calling ``leaf`` ``calls`` times."""

    def __init__(self, n: int, calls: int = CALLS) -> None:
        self.tids: list[int] = [0] * n
        self.ready = threading.Barrier(n + 1)
        self.go = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(i, calls), name=f"w{i}") for i in range(n)]
        for t in self.threads:
            t.start()
        self.ready.wait()

    def _work(self, i: int, calls: int) -> None:
        self.tids[i] = threading.get_native_id()
        self.ready.wait()
        self.go.wait()
        loop(calls)

    def run(self) -> None:
        self.go.set()
        for t in self.threads:
            t.join()


def calls_per_tid(fs) -> collections.Counter:
    return collections.Counter(int(m["tid"]) for m in function_lines(fs.read("trace"))
                               if m["func"] == "leaf")


@pytest.fixture
def big(fs):
    """Room for every call of a worker in its buffer."""
    fs.write("buffer_size_kb", str(CALLS * 48 // 1024 + 64))


@pytest.mark.parametrize("tracer", ["function", "function_graph"])
def test_set_ftrace_pid_traces_exactly_the_listed_threads(fs, big, tracer):
    w = Workers(4)
    fs.write("set_ftrace_filter", f"{HERE}:leaf")
    fs.write("set_ftrace_pid", f"{w.tids[0]} {w.tids[2]}")
    fs.write("current_tracer", tracer)
    w.run()
    fs.write("tracing_on", "0")
    if tracer == "function":
        assert calls_per_tid(fs) == {w.tids[0]: CALLS, w.tids[2]: CALLS}
    else:
        # entries-written: an entry and an exit per call, of those two threads only
        written = {tb.tid: tb.written() for tb in fs.instance.buffer.readable() if tb.written()}
        assert written == {w.tids[0]: 2 * CALLS, w.tids[2]: 2 * CALLS}


def test_set_ftrace_notrace_pid_leaves_out_the_listed_threads(fs, big):
    w = Workers(4)
    fs.write("set_ftrace_filter", f"{HERE}:leaf")
    fs.write("set_ftrace_notrace_pid", f"{w.tids[0]} {w.tids[2]}")
    fs.write("current_tracer", "function")
    w.run()
    fs.write("tracing_on", "0")
    assert calls_per_tid(fs) == {w.tids[1]: CALLS, w.tids[3]: CALLS}


def test_changing_the_list_applies_to_threads_already_traced(fs):
    fs.write("set_ftrace_filter", f"{HERE}:leaf")
    fs.write("current_tracer", "function")
    leaf(1)
    me = threading.get_native_id()
    fs.write("set_ftrace_pid", str(me + 1))
    leaf(2)
    fs.write("set_ftrace_pid", str(me), append=True)
    leaf(3)
    fs.write("set_ftrace_pid", "")
    leaf(4)
    assert calls_per_tid(fs) == {me: 3}


def test_pid_files_read_back_as_the_kernel(fs):
    # An empty set_ftrace_pid says so (ftrace.c fpid_show); set_event_pid is empty.
    assert fs.read("set_ftrace_pid") == "no pid\n"
    assert fs.read("set_ftrace_notrace_pid") == "no pid\n"
    assert fs.read("set_event_pid") == ""
    assert fs.read("set_event_notrace_pid") == ""
    fs.write("set_event_pid", "30 1 2 2")
    assert fs.read("set_event_pid") == "1\n2\n30\n"
    fs.write("set_event_pid", "5", append=True)
    assert fs.read("set_event_pid") == "1\n2\n5\n30\n"
    fs.write("set_event_pid", " \n")
    assert fs.read("set_event_pid") == ""
    fs.write("set_ftrace_pid", "7")
    assert fs.read("set_ftrace_pid") == "7\n"


@pytest.mark.parametrize("text,pos,code", [("abc", 0, "BAD_PID"), ("7 x", 2, "BAD_PID"), ("-1", 0, "BAD_PID"),
                                           ("1,2", 0, "BAD_PID"), ("!5", 0, "BAD_PID"),
                                           # the 6.18 kernel: 1073741823 taken, 1073741824 EPERM
                                           ("5 1073741824", 2, "PID_RANGE")])
def test_a_bad_pid_is_refused_with_a_caret_and_nothing_changes(fs, text, pos, code):
    fs.write("set_ftrace_pid", "9")
    with pytest.raises(TraceError) as e:
        fs.write("set_ftrace_pid", text)
    assert e.value.code == code and e.value.pos == pos
    assert fs.read("set_ftrace_pid") == "9\n"


def test_pid_lists_are_per_instance(fs):
    fs.mkdir("instances/other")
    me = str(threading.get_native_id())
    fs.write("instances/other/set_ftrace_pid", me)
    assert fs.read("instances/other/set_ftrace_pid") == me + "\n"
    assert fs.read("set_ftrace_pid") == "no pid\n"


def test_set_event_pid_filters_probe_events(fs, big):
    w = Workers(3, calls=1000)
    fs.write("kprobe_events", f"p:leafp {HERE}:leaf x")
    fs.write("set_event_pid", str(w.tids[1]))
    fs.write("events/kprobes/leafp/enable", "1")
    w.run()
    fs.write("events/kprobes/leafp/enable", "0")
    lines = [line for line in fs.read("trace").splitlines() if "leafp:" in line]
    tids = collections.Counter(int(re.search(r"-(\d+) +\[000\]", line)[1]) for line in lines)
    assert tids == {w.tids[1]: 1000}


def test_set_event_notrace_pid_leaves_out_the_listed_threads(fs):
    fs.write("kprobe_events", f"p:leafp {HERE}:leaf x")
    fs.write("set_event_notrace_pid", str(threading.get_native_id()))
    fs.write("events/kprobes/leafp/enable", "1")
    leaf(1)
    fs.write("set_event_notrace_pid", "")
    leaf(2)
    fs.write("events/kprobes/leafp/enable", "0")
    lines = [line for line in fs.read("trace").splitlines() if "leafp:" in line]
    assert len(lines) == 1 and lines[0].endswith("=2")


# -- function-fork, event-fork

def spawn(target, *args) -> tuple[threading.Thread, list[int]]:
    """Start a thread running target(*args); its native id is in the list once it runs."""
    tid: list[int] = []

    def run():
        tid.append(threading.get_native_id())
        target(*args)
    t = threading.Thread(target=run, name="spawned")
    t.start()
    return t, tid


def test_function_fork_threads_of_listed_threads_are_traced_and_leave_at_exit(fs):
    fs.write("set_ftrace_filter", f"{HERE}:leaf")
    # an unlisted thread, waiting to start one of its own
    go = threading.Event()
    grandchildren: list = []

    def other():
        go.wait()
        grandchildren.append(spawn(loop, 100))
    outsider, _ = spawn(other)
    me = threading.get_native_id()
    fs.write("options/function-fork", "1")
    fs.write("set_ftrace_pid", str(me))
    fs.write("current_tracer", "function")
    nested: list = []
    child, child_tid = spawn(lambda: (loop(100), nested.append(spawn(loop, 100))))
    child.join()
    nested[0][0].join()
    go.set()
    outsider.join()
    grandchildren[0][0].join()
    fs.write("tracing_on", "0")
    counts = calls_per_tid(fs)
    # the child and the child's child are traced; the outsider's child is not
    assert counts == {child_tid[0]: 100, nested[0][1][0]: 100}
    # each traced thread left the list when it ended: only this one stays
    assert fs.read("set_ftrace_pid") == f"{me}\n"


def test_function_fork_follows_set_ftrace_notrace_pid_too(fs):
    fs.write("set_ftrace_filter", f"{HERE}:leaf")
    fs.write("trace_options", "function-fork")
    fs.write("set_ftrace_notrace_pid", str(threading.get_native_id()))
    fs.write("current_tracer", "function")
    seen: list[str] = []
    child, _ = spawn(lambda: (loop(10), seen.append(fs.read("set_ftrace_notrace_pid"))))
    child.join()
    loop(10)
    leaf(1)
    assert calls_per_tid(fs) == {}
    assert len(seen[0].split()) == 2            # it was in the list while it ran
    assert fs.read("set_ftrace_notrace_pid") == f"{threading.get_native_id()}\n"


def test_without_function_fork_new_threads_are_not_added(fs):
    fs.write("set_ftrace_filter", f"{HERE}:leaf")
    fs.write("set_ftrace_pid", str(threading.get_native_id()))
    fs.write("current_tracer", "function")
    child, _tid = spawn(loop, 10)
    child.join()
    leaf(1)
    assert calls_per_tid(fs) == {threading.get_native_id(): 1}
    assert fs.read("options/function-fork") == "0\n"


def test_event_fork_follows_set_event_pid(fs):
    fs.write("kprobe_events", f"p:leafp {HERE}:leaf x")
    fs.write("options/event-fork", "1")
    fs.write("set_event_pid", str(threading.get_native_id()))
    fs.write("events/kprobes/leafp/enable", "1")
    seen: list[str] = []
    child, tid = spawn(lambda: (loop(5), seen.append(fs.read("set_event_pid"))))
    child.join()
    fs.write("events/kprobes/leafp/enable", "0")
    lines = [line for line in fs.read("trace").splitlines() if "leafp:" in line]
    assert len(lines) == 5 and all(f"-{tid[0]} " in line for line in lines)
    assert str(tid[0]) in seen[0].split()
    assert fs.read("set_event_pid") == f"{threading.get_native_id()}\n"
