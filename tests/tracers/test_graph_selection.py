"""function_graph's selection: set_graph_function, set_graph_notrace,
max_graph_depth and tracing_thresh, as a user sets them (``fentry run`` and
``record`` options, tracefs files) and reads them (the trace's lines)."""

from __future__ import annotations

import collections
import os
import re
import threading

import pytest
from helpers import DURATION, PROGRAMS, env, fentry, fentry_run, graph_lines

from fentry.errors import TraceError

GRAPHSEL = os.path.join(PROGRAMS, "graphsel.py")
THREAD_CALLS = 100_000
HANDLES = THREAD_CALLS // 100           # handle() calls per thread


def run(tmp_path, *opts, scenario, calls=None):
    args = (GRAPHSEL, scenario) + ((str(calls),) if calls else ())
    proc, trace = fentry_run(tmp_path, *opts, program=args)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc, graph_lines(trace)


def per_thread(lines) -> dict[str, list[str]]:
    """Each thread's lines, as indent + text."""
    out = collections.defaultdict(list)
    for m in lines:
        out[m["task"]].append(m["indent"] + m["text"])
    return out


def check_balanced(texts: list[str]) -> None:
    """Every `{` has its `}`, and the indentation follows the nesting."""
    depth = 0
    for t in texts:
        d = (len(t) - len(t.lstrip(" "))) // 2
        if t.lstrip().startswith("}"):
            depth -= 1
        assert d == depth >= 0, t
        if t.endswith("{"):
            depth += 1
    assert depth == 0


def usecs(m) -> float:
    d = DURATION.match(m["duration"])
    assert d, m.group(0)
    return float(d["usecs"])


# ---------------------------------------------------------------- set_graph_function

HANDLE_SUBTREE = ["handle() {", "  helper() {", "    leaf();", "  }", "  leaf();", "}"]


def test_graph_function_gives_exactly_its_subtrees_in_every_thread(tmp_path):
    _, lines = run(tmp_path, "-g", "handle", scenario="threads")
    threads = per_thread(lines)
    assert sorted(threads) == [f"worker{k}" for k in range(4)]     # nothing of main's
    for texts in threads.values():
        check_balanced(texts)
        assert texts == HANDLE_SUBTREE * HANDLES      # 800k noise() calls around them: none


def test_graph_notrace_drops_the_function_and_its_subtree(tmp_path):
    _, lines = run(tmp_path, "-g", "handle", "--graph-notrace", "helper", scenario="threads",
                   calls=10_000)
    for texts in per_thread(lines).values():
        assert texts == ["handle() {", "  leaf();", "}"] * 100


def test_graph_function_on_deep_recursion(tmp_path):
    _, lines = run(tmp_path, "-g", "deep", scenario="deep")
    texts = [m["indent"] + m["text"] for m in lines]
    check_balanced(texts)
    assert texts == (["  " * d + "deep() {" for d in range(499)] + ["  " * 499 + "deep();"]
                     + ["  " * d + "}" for d in reversed(range(499))])


def test_graph_function_on_a_generator_follows_each_resume(tmp_path):
    _, lines = run(tmp_path, "-g", "produce", scenario="gen")
    texts = [m["indent"] + m["text"] for m in lines]
    assert texts == ["produce() {", "  leaf();", "} /* yield */"] * 3 + ["produce();"]


# ---------------------------------------------------------------- max_graph_depth

def test_max_graph_depth_2_shows_two_levels_with_exact_counts(tmp_path):
    _, lines = run(tmp_path, "-l", "__main__:*", "--max-graph-depth", "2", scenario="threads",
                   calls=10_000)
    assert max(len(m["indent"]) // 2 for m in lines) == 1
    threads = per_thread(lines)
    for k in range(4):
        texts = threads[f"worker{k}"]
        check_balanced(texts)
        assert texts[0] == "worker() {" and texts[-1] == "}"
        # (a call cut by the stream's page shows as `{` ... `}`, as in the kernel's trace_pipe)
        calls = collections.Counter(t.strip().split("(")[0] for t in texts[1:-1] if t != "  }")
        assert calls == {"noise": 10_000, "handle": 100}
    main = threads["MainThread"]
    check_balanced(main)
    assert [t.strip().split("(")[0] for t in main if not t.endswith("}")] == ["<module>", "main"]


# ---------------------------------------------------------------- tracing_thresh

THRESH_CLOSE = re.compile(r"^} /\* (?P<name>\S+) \*/$")


def test_tracing_thresh_keeps_exactly_the_calls_that_long(tmp_path):
    """As funcslower: the calls of 10 ms or more, each at its end, at its
    depth, with its duration: the same calls a full graph of the program
    shows lasting that long, and as many naps as the program itself timed
    at 10 ms or more (3 of 30 ms; one of 0 ms only on a machine that busy)."""
    proc, full = run(tmp_path, "-l", "__main__:*", "-t", "function_graph", "-O", "funcgraph-tail",
                     scenario="naps")
    long_calls = collections.Counter(
        (re.sub(r"^} /\* (\S+) \*/$|^(\S+)\(\);$", r"\1\2", m["text"]), len(m["indent"]) // 2)
        for m in full if not m["text"].endswith("{") and usecs(m) >= 10_000)
    assert long_calls[("nap", 3)] in slow_naps(proc)
    proc, lines = run(tmp_path, "-l", "__main__:*", "--tracing-thresh", "10000", scenario="naps")
    shown = collections.Counter()
    for m in lines:
        close = THRESH_CLOSE.match(m["text"])
        assert close, m.group(0)
        assert usecs(m) >= 10_000, m.group(0)
        shown[close["name"], len(m["indent"]) // 2] += 1
    assert shown[("nap", 3)] in slow_naps(proc)       # <module>, main, naps, nap
    assert shown.keys() == long_calls.keys() == {("<module>", 0), ("main", 1), ("naps", 2), ("nap", 3)}
    assert all(n == 1 for key, n in shown.items() if key[0] != "nap")


def slow_naps(proc) -> range:
    """The program's own counts of its naps that lasted 10 ms or more: the
    range a tracer's count must be in (timed inside the call, and around it;
    the same number unless the machine paused the program)."""
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()
    m = re.search(r"slow nap=(\d+) (\d+)", out)
    assert int(m[1]) >= 3
    return range(int(m[1]), int(m[2]) + 1)


def test_tracing_thresh_through_record_and_report(tmp_path):
    out = tmp_path / "rec.dat"
    proc = fentry("record", "-o", str(out), "-l", "__main__:*", "--tracing-thresh", "10000",
                  GRAPHSEL, "naps")
    assert proc.returncode == 0, proc.stderr
    report = fentry("report", "-i", str(out))
    lines = graph_lines(report.stdout)
    texts = [m["indent"] + m["text"] for m in lines]
    assert texts.count("      } /* nap */") in slow_naps(proc)
    assert texts[-1] == "} /* <module> */" and all(usecs(m) >= 10_000 for m in lines)


# ---------------------------------------------------------------- the files

def test_graph_files_read_back_and_refuse_bad_input_as_the_kernel(fs):
    assert fs.read("set_graph_function") == "#### all functions enabled ####\n"
    assert fs.read("set_graph_notrace") == "#### no functions disabled ####\n"
    assert fs.read("max_graph_depth") == "0\n" and fs.read("tracing_thresh") == "0\n"
    fs.write("set_ftrace_filter", f"{__name__}:*")
    fs.write("current_tracer", "function_graph")
    fs.write("max_graph_depth", "4294967295")      # the largest: no limit
    outer()
    assert len(graph_lines(fs.read("trace"))) == 4
    fs.write("set_graph_function", "test_graph_files_read_back_and_refuse_bad_input_as_the_kernel")
    assert fs.read("set_graph_function").startswith(
        "test_graph_files_read_back_and_refuse_bad_input_as_the_kernel [")
    fs.write("max_graph_depth", "3\n")
    fs.write("tracing_thresh", "250\n")
    assert fs.read("max_graph_depth") == "3\n" and fs.read("tracing_thresh") == "250\n"
    # kstrtoul's: -EINVAL for anything but digits (and one newline), -ERANGE past the type
    for name, text, code in (("max_graph_depth", "-1\n", "BAD_NUMBER"),
                             ("tracing_thresh", "abc\n", "BAD_NUMBER"),
                             ("tracing_thresh", " 5\n", "BAD_NUMBER"),
                             ("tracing_thresh", "5 6\n", "BAD_NUMBER"),
                             ("max_graph_depth", "4294967296\n", "NUMBER_RANGE"),
                             ("tracing_thresh", "99999999999999999999\n", "NUMBER_RANGE")):
        with pytest.raises(TraceError) as e:
            fs.write(name, text)
        assert e.value.code == code and e.value.pos == 0
    assert fs.read("max_graph_depth") == "3\n" and fs.read("tracing_thresh") == "250\n"
    with pytest.raises(TraceError) as e:
        fs.write("set_graph_function", "no_such_function_anywhere")
    assert e.value.code == "NO_MATCH"
    # set_graph_* are each instance's; the limits are the top level's, as the kernel's
    fs.mkdir("instances/g")
    names = fs.ls("instances/g")
    assert {"set_graph_function", "set_graph_notrace"} <= set(names)
    assert not {"max_graph_depth", "tracing_thresh"} & set(names)
    assert {"max_graph_depth", "tracing_thresh"} <= set(fs.ls())


def outer():
    return inner() + inner()


def inner():
    return 1


def test_changing_the_selection_while_tracing_keeps_the_tracer(fs):
    fs.write("set_ftrace_filter", f"{__name__}:*")
    fs.write("current_tracer", "function_graph")
    outer()
    fs.write("set_graph_function", "inner")
    outer()
    fs.write("set_graph_function", "")
    fs.write("max_graph_depth", "1")
    outer()
    fs.write("max_graph_depth", "0")
    outer()
    assert fs.read("current_tracer") == "function_graph\n"
    texts = [m["indent"] + m["text"] for m in graph_lines(fs.read("trace"))]
    whole = ["outer() {", "  inner();", "  inner();", "}"]
    assert texts == whole + ["inner();", "inner();"] + ["outer();"] + whole


def test_graph_function_in_a_thread_of_its_own_in_process(fs):
    fs.write("set_ftrace_filter", f"{__name__}:*")
    fs.write("set_graph_function", "outer")
    fs.write("current_tracer", "function_graph")
    t = threading.Thread(target=lambda: [outer() for _ in range(1000)], name="g1")
    t.start()
    inner()
    t.join()
    texts = [m["text"] for m in graph_lines(fs.read("trace"))]
    assert texts == ["outer() {", "inner();", "inner();", "}"] * 1000


@pytest.mark.ptrace
def test_live_write_of_set_graph_function_reselects_without_losing_the_tracer(tmp_path):
    from control.live import Target, wait_for
    target = Target(tmp_path)
    try:
        pid = str(target.pid)
        for path, text in (("set_ftrace_filter", "__main__:*"), ("set_graph_function", "add"),
                           ("current_tracer", "function_graph")):
            got = fentry("-p", pid, "write", path, text)
            assert got.returncode == 0, got.stderr

        def calls():
            trace = fentry("-p", pid, "read", "trace").stdout
            return {m["text"] for m in graph_lines(trace)}
        assert wait_for(lambda: calls() == {"add();"} and calls(), what="add() alone")
        assert fentry("-p", pid, "write", "set_graph_function", "Item.__init__").returncode == 0
        assert fentry("-p", pid, "write", "trace", "").returncode == 0
        assert wait_for(lambda: calls() == {"Item.__init__();"} and calls(), what="Item.__init__ alone")
        assert fentry("-p", pid, "read", "current_tracer").stdout == "function_graph\n"
        bad = fentry("-p", pid, "write", "max_graph_depth", "-1")
        assert bad.returncode == 1 and "expected a number" in bad.stderr and "^" in bad.stderr
        assert fentry("-p", pid, "detach").returncode == 0
        target.finish_clean()
    finally:
        target.kill()


def down(n):
    return 0 if n == 0 else down(n - 1)


def test_tracing_thresh_past_its_stack_counts_what_it_cannot_time(fs):
    import sys

    from fentry.hotpath import GRAPH_STACK
    fs.write("set_ftrace_filter", f"{__name__}:down")
    fs.write("tracing_thresh", "1")
    fs.write("current_tracer", "function_graph")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(GRAPH_STACK + 500)
    try:
        down(GRAPH_STACK + 99)         # GRAPH_STACK + 100 calls
    finally:
        sys.setrecursionlimit(limit)
    trace = fs.read("trace")
    assert f"[100 CALLS DEEPER THAN {GRAPH_STACK} NOT TIMED]" in trace
    depths = [len(m["indent"]) // 2 for m in graph_lines(trace)]
    assert max(depths) < GRAPH_STACK and all(THRESH_CLOSE.match(m["text"]) for m in graph_lines(trace))


def test_each_instance_has_its_own_graph_function(fs):
    fs.mkdir("instances/sel")
    for at in ("", "instances/sel/"):
        fs.write(at + "set_ftrace_filter", f"{__name__}:*")
        fs.write(at + "current_tracer", "function_graph")
    fs.write("instances/sel/set_graph_function", "inner")
    outer()
    top = [m["indent"] + m["text"] for m in graph_lines(fs.read("trace"))]
    sel = [m["indent"] + m["text"] for m in graph_lines(fs.read("instances/sel/trace"))]
    assert top == ["outer() {", "  inner();", "  inner();", "}"]
    assert sel == ["inner();", "inner();"]
    assert fs.read("set_graph_function") == "#### all functions enabled ####\n"


def test_a_graph_function_that_selects_nothing_is_said(tmp_path):
    proc, lines = run(tmp_path, "-g", "no_such_function", scenario="gen")
    assert lines == []
    assert "the filter 'no_such_function' selected no function that ran" in proc.stderr.decode()


# ---------------------------------------------------------------- with the value options

VALUES = ("-O", "funcgraph-retval", "-O", "funcgraph-args")


def hot_path_env(pure: bool) -> dict:
    """The environment of a child on the C hot path (where built) or the pure one."""
    e = env()
    e.pop("FENTRY_PURE_PYTHON", None)
    if pure:
        e["FENTRY_PURE_PYTHON"] = "1"
    return e


def uncut(texts: list[str]) -> list[str]:
    """The lines with each leaf call cut by the stream (its entry read before
    its exit was written: ``f(x=1) {`` then ``} /* f ret=1 */``, as the
    kernel's trace_pipe prints it) joined back into its one line."""
    out: list[str] = []
    for t in texts:
        prev = out[-1] if out else ""
        indent = prev[:len(prev) - len(prev.lstrip(" "))]
        if prev.endswith(" {") and t.startswith(indent + "}") and not t.startswith(indent + " "):
            ret = re.search(r" (ret=.*) \*/$", t)
            out[-1] = indent + prev.strip()[:-2] + ";" + (f" /* {ret[1]} */" if ret else "")
        else:
            out.append(t)
    return out


def handle_subtree(i: int) -> list[str]:
    """handle(i)'s lines with funcgraph-args and funcgraph-retval."""
    return [f"handle(i={i}) {{", f"  helper(x={i}) {{", f"    leaf(x={i}); /* ret={i} */",
            f"  }} /* helper ret={i + 1} */", f"  leaf(x={i}); /* ret={i} */",
            f"}} /* handle ret={2 * i + 1} */"]


@pytest.mark.parametrize("pure", [False, True], ids=["c", "pure"])
def test_graph_function_with_values_gives_exactly_its_subtrees_and_their_values(tmp_path, pure):
    """-g with funcgraph-args and -retval: each thread's handle() subtrees,
    every one of them (4 threads x 10^5 calls around them), each entry with
    its arguments and each return with its value, as without a selection."""
    proc, trace = fentry_run(tmp_path, "-g", "handle", *VALUES, program=(GRAPHSEL, "threads"),
                             env=hot_path_env(pure))
    assert proc.returncode == 0, proc.stderr.decode()
    threads = per_thread(graph_lines(trace))
    assert sorted(threads) == [f"worker{k}" for k in range(4)]
    expected = [line for i in range(0, THREAD_CALLS, 100) for line in handle_subtree(i)]
    for texts in threads.values():
        assert uncut(texts) == expected


@pytest.mark.parametrize("pure", [False, True], ids=["c", "pure"])
def test_graph_function_with_values_on_recursion_and_generators(tmp_path, pure):
    proc, trace = fentry_run(tmp_path, "-g", "deep", *VALUES, program=(GRAPHSEL, "deep"),
                             env=hot_path_env(pure))
    assert proc.returncode == 0, proc.stderr.decode()
    texts = [m["indent"] + m["text"] for m in graph_lines(trace)]
    check_balanced(texts)
    assert texts == ([f"{'  ' * d}deep(n={499 - d}) {{" for d in range(499)]
                     + [f"{'  ' * 499}deep(n=0); /* ret=0 */"]
                     + [f"{'  ' * d}}} /* deep ret={499 - d} */" for d in reversed(range(499))])
    proc, trace = fentry_run(tmp_path, "-g", "produce", *VALUES, program=(GRAPHSEL, "gen"),
                             env=hot_path_env(pure))
    assert proc.returncode == 0, proc.stderr.decode()
    texts = [m["indent"] + m["text"] for m in graph_lines(trace)]
    # an entry carries the arguments, a resume none; a yield no value, the return its own
    assert texts == (["produce(n=3) {", "  leaf(x=0); /* ret=0 */", "} /* yield */"]
                     + [line for i in (1, 2) for line in
                        ("produce() {", f"  leaf(x={i}); /* ret={i} */", "} /* yield */")]
                     + ["produce(); /* ret=None */"])


@pytest.mark.parametrize("pure", [False, True], ids=["c", "pure"])
def test_graph_selection_with_values_through_record_and_report(tmp_path, pure):
    out = tmp_path / "rec.dat"
    proc = fentry("record", "-o", str(out), "-g", "handle", "--graph-notrace", "helper", *VALUES,
                  GRAPHSEL, "threads", "10000", env=hot_path_env(pure))
    assert proc.returncode == 0, proc.stderr
    report = fentry("report", "-i", str(out))
    assert report.returncode == 0, report.stderr
    threads = per_thread(graph_lines(report.stdout))
    assert sorted(threads) == [f"worker{k}" for k in range(4)]
    for texts in threads.values():
        assert uncut(texts) == [line for i in range(0, 10_000, 100) for line in
                         (f"handle(i={i}) {{", f"  leaf(x={i}); /* ret={i} */",
                          f"}} /* handle ret={2 * i + 1} */")]


def test_tracing_thresh_with_values_writes_the_lone_exits_only(tmp_path):
    """As the kernel's trace_graph_thresh_return: no entry is recorded, so
    no arguments; the exit line is the one tracing_thresh writes alone."""
    proc, lines = run(tmp_path, "-l", "__main__:*", "--tracing-thresh", "10000", *VALUES,
                      scenario="naps")
    assert lines and all(THRESH_CLOSE.match(m["text"]) for m in lines)
    assert [m["text"] for m in lines].count("} /* nap */") in slow_naps(proc)


def test_values_and_a_selection_are_taken_together_whichever_comes_second(fs):
    """Options then selection, or selection then options: both taken, and
    the running tracer records the selected calls with their values."""
    fs.write("set_ftrace_filter", f"{__name__}:*")
    fs.write("current_tracer", "function_graph")
    fs.write("set_graph_function", "outer")
    fs.write("trace_options", "funcgraph-tail funcgraph-retval")
    assert fs.read("options/funcgraph-retval") == "1\n" and fs.read("options/funcgraph-tail") == "1\n"
    outer()
    fs.write("trace_options", "nofuncgraph-retval nofuncgraph-tail")
    fs.write("set_graph_function", "")
    fs.write("options/funcgraph-args", "1")
    for name, text in (("set_graph_function", "down"), ("set_graph_notrace", "inner"),
                       ("max_graph_depth", "100"), ("tracing_thresh", "0")):
        fs.write(name, text)
    assert fs.read("max_graph_depth") == "100\n"
    down(2)
    texts = [m["indent"] + m["text"] for m in graph_lines(fs.read("trace"))]
    assert texts == ["outer() {", "  inner(); /* ret=1 */", "  inner(); /* ret=1 */",
                     "} /* outer ret=2 */",
                     "down(n=2) {", "  down(n=1) {", "    down(n=0);", "  }", "}"]
    fs.write("max_graph_depth", "0")
