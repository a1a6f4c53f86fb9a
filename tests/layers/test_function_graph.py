"""The function_graph tracer: nesting, leaves, durations, exceptions, generators, threads."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import threading
import time

import pytest
from helpers import DURATION, SHOPAPP, fentry_run, graph_lines

import fentry

HERE = __name__

# The kernel's duration marks: (more than this many ns, mark)
MARKS = ((1_000_000_000, "$"), (100_000_000, "@"), (10_000_000, "*"),
         (1_000_000, "#"), (100_000, "!"), (10_000, "+"))


# ---------------------------------------------------------------- traced code

def leaf(x):
    return x


def branch(x):
    return leaf(x) + leaf(x + 1)


def fails():
    raise ValueError("no")


def middle():
    fails()


def catcher():
    try:
        middle()
    except ValueError:
        pass
    return leaf(1)


def gen(n):
    for i in range(n):
        yield leaf(i)


def consume():
    return sum(gen(2))


def rec(n):
    return 0 if n == 0 else 1 + rec(n - 1)


SLEPT_NS = []


def sleeper():
    start = time.perf_counter_ns()
    time.sleep(0.002)
    SLEPT_NS.append(time.perf_counter_ns() - start)


def slow_branch():
    sleeper()
    return leaf(1)


async def child(i):
    await asyncio.sleep(0)
    return i


async def parent():
    return await child(1) + await child(2)


def run_async():
    return asyncio.run(parent())


async def waits_forever():
    leaf(1)
    await asyncio.sleep(10)


async def cancels():
    task = asyncio.create_task(waits_forever())
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"


def handles():
    try:
        yield 1
    except KeyError:
        yield leaf(2)


def throws_in():
    it = handles()
    next(it)
    it.throw(KeyError)
    it.close()


# ---------------------------------------------------------------- reading the graph

def graph(fs, func, *names, options=()):
    """Run ``func`` under function_graph tracing ``names`` of this module; the parsed lines."""
    fs.write("set_ftrace_filter", " ".join(f"{HERE}:{n}" for n in names))
    for o in options:
        fs.write("trace_options", o)
    fs.write("current_tracer", "function_graph")
    func()
    fs.write("tracing_on", "0")
    trace = fs.read("trace")
    assert trace.startswith("# tracer: function_graph\n")
    lines = graph_lines(trace)
    check_balanced(lines)
    check_durations(lines)
    return lines


def texts(lines, task=None):
    return [m["indent"] + m["text"] for m in lines if task is None or m["task"] == task]


def check_balanced(lines) -> None:
    """Per thread: every `{` has its `}`, and indentation follows the nesting."""
    depth = collections.Counter()
    for m in lines:
        t = (m["task"], m["tid"])
        d = len(m["indent"]) // 2
        text = m["text"]
        if text.startswith("}"):
            depth[t] -= 1
            assert d == depth[t] >= 0, m.group(0)
        else:
            assert d == depth[t], m.group(0)
            if text.endswith("{"):
                depth[t] += 1
            elif text.startswith("/*"):     # a probe event, where it happened
                assert text.endswith(" */"), m.group(0)
            else:
                assert text.split(" /*")[0].endswith("();"), m.group(0)
    assert all(v == 0 for v in depth.values()), dict(depth)


def usecs(m) -> float | None:
    d = DURATION.match(m["duration"])
    return None if d is None else float(d["usecs"])


def check_durations(lines) -> None:
    """Entries have no duration; leaves and exits have one, with the kernel's mark for it."""
    for m in lines:
        text = m["text"]
        if text.endswith("{"):
            assert m["duration"].strip() == "", m.group(0)
            continue
        d = DURATION.match(m["duration"])
        assert d, m.group(0)
        ns = round(float(d["usecs"]) * 1000)
        mark = next((mk for limit, mk in MARKS if ns > limit), " ")
        assert d["mark"] == mark, m.group(0)


# ---------------------------------------------------------------- in process

def test_nesting_and_leaves(fs):
    lines = graph(fs, lambda: branch(1), "branch", "leaf")
    assert texts(lines) == ["branch() {", "  leaf();", "  leaf();", "}"]


def test_duration_of_a_frame_covers_its_children(fs):
    lines = graph(fs, slow_branch, "slow_branch", "sleeper", "leaf")
    assert texts(lines) == ["slow_branch() {", "  sleeper();", "  leaf();", "}"]
    sleep, leaf_, close = (usecs(m) for m in lines[1:])
    assert sleep * 1000 >= SLEPT_NS[-1]     # the traced call lasted at least what it measured itself
    assert close >= sleep + leaf_


def test_funcgraph_tail_names_the_closed_function(fs):
    lines = graph(fs, lambda: rec(2), "rec", options=["funcgraph-tail"])
    assert texts(lines) == ["rec() {", "  rec() {", "    rec();", "  } /* rec */", "} /* rec */"]


def test_without_funcgraph_tail_the_brace_is_bare(fs):
    lines = graph(fs, lambda: rec(1), "rec")
    assert texts(lines) == ["rec() {", "  rec();", "}"]


def test_recursion_indents_one_level_per_call(fs):
    lines = graph(fs, lambda: rec(4), "rec")
    opens = [m for m in lines if m["text"] == "rec() {"]
    assert [len(m["indent"]) for m in opens] == [0, 2, 4, 6]
    assert texts(lines)[4] == "        rec();"


def test_exception_closes_the_frame_and_says_so(fs):
    lines = graph(fs, catcher, "catcher", "middle", "fails", "leaf")
    assert texts(lines) == [
        "catcher() {",
        "  middle() {",
        "    fails(); /* raised ValueError */",
        "  } /* middle raised ValueError */",
        "  leaf();",
        "}",
    ]


def test_exception_caught_inside_the_frame_is_not_reported(fs):
    lines = graph(fs, catcher, "catcher", "leaf")
    assert texts(lines) == ["catcher() {", "  leaf();", "}"]


def test_generator_yield_leaves_and_resume_reenters(fs):
    lines = graph(fs, consume, "consume", "gen", "leaf")
    assert texts(lines) == [
        "consume() {",
        "  gen() {",
        "    leaf();",
        "  } /* yield */",
        "  gen() {",
        "    leaf();",
        "  } /* yield */",
        "  gen();",
        "}",
    ]


def test_generator_closed_early_is_balanced(fs):
    def early():
        g = gen(5)
        next(g)
        g.close()
    lines = graph(fs, early, "gen", "leaf")
    assert texts(lines)[:3] == ["gen() {", "  leaf();", "} /* yield */"]
    # 3.12 throws GeneratorExit into the frame (it re-enters and unwinds);
    # 3.13 closes a generator suspended outside any handler without running it.
    assert texts(lines)[3:] in ([], ["gen(); /* raised GeneratorExit */"])


def test_coroutines_leave_at_await_and_reenter(fs):
    lines = graph(fs, run_async, "parent", "child")
    assert texts(lines) == [
        "parent() {",
        "  child(); /* yield */",
        "} /* yield */",
        "parent() {",
        "  child();",
        "  child(); /* yield */",
        "} /* yield */",
        "parent() {",
        "  child();",
        "}",
    ]


def test_cancelled_coroutine_reenters_and_raises(fs):
    lines = graph(fs, lambda: asyncio.run(cancels()), "cancels", "waits_forever", "leaf")
    assert texts(lines)[:4] == ["cancels(); /* yield */", "waits_forever() {", "  leaf();", "} /* yield */"]
    assert "waits_forever(); /* raised CancelledError */" in texts(lines)
    assert texts(lines)[-1] == "cancels();"


def test_throw_into_a_generator_reenters_it(fs):
    # (the expected graph looks like the generator test's: data alike, not logic)
    lines = graph(fs, throws_in, "throws_in", "handles", "leaf")
    assert texts(lines) == [
        "throws_in() {",
        "  handles(); /* yield */",
        "  handles() {",
        "    leaf();",
        "  } /* yield */",
        "  handles(); /* raised GeneratorExit */",
        "}",
    ]


def climb_then(j, func, errors):
    """Recurse to the recursion limit, come back up ``j`` levels and call
    ``func`` there: its events fall at each distance from the limit, where
    a callback's frames (pure Python) or discovery's (either hot path) no
    longer fit.  The RecursionErrors the program catches go to ``errors``."""
    def down():
        try:
            r = down()
        except RecursionError as e:
            errors.append(e)
            r = j
        if r == 0:
            func()
        return r - 1
    down()


def near_the_limit():
    branch(1)
    consume()
    catcher()
    throws_in()


def deeper(n):
    leaf(n)
    return deeper(n + 1)


def into_the_limit(errors):
    """Recursion through traced calls until it fails (each level's leaf
    call meets the limit at another place of the tracer's callbacks)."""
    try:
        deeper(0)
    except RecursionError as e:
        errors.append(e)


def fentry_frames(e: BaseException) -> list[str]:
    """Frames of fentry's own in an exception's traceback, or in those of its context."""
    pkg = os.path.dirname(fentry.__file__)
    found = []
    while e is not None:
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith(pkg):
                found.append(f"{tb.tb_frame.f_code.co_qualname} ({type(e).__name__})")
            tb = tb.tb_next
        e = e.__context__
    return found


def test_at_the_recursion_limit_every_call_is_whole_and_errors_are_the_programs(fs):
    """Where the tracer's callbacks no longer fit on the stack, an event is
    lost with its pair (the graph stays balanced: no entry without its exit,
    on 3.13 too), and the RecursionError the program sees has no frame of
    fentry's, nor a context of its."""
    errors = []
    names = ("branch", "leaf", "consume", "gen", "catcher", "middle", "fails",
             "handles", "throws_in", "deeper")

    def run():
        into_the_limit(errors)
        for j in range(16):
            climb_then(j, near_the_limit, errors)
    lines = graph(fs, run, *names)
    assert errors and not [f for e in errors for f in fentry_frames(e)]
    assert "branch() {" in texts(lines)       # far enough from the limit, all of it


def test_threads_nest_separately(fs):
    barrier = threading.Barrier(2)

    def work():
        barrier.wait(5)
        for _ in range(20):
            branch(1)

    def both():
        threads = [threading.Thread(target=work, name=f"graph-{i}") for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    lines = graph(fs, both, "branch", "leaf")
    for task in ("graph-0", "graph-1"):
        assert texts(lines, task) == ["branch() {", "  leaf();", "  leaf();", "}"] * 20


def test_trace_pipe_read_mid_call_gives_the_same_graph(fs):
    pieces = []

    def outer():
        leaf(1)
        pieces.append(fs.instance.read_pipe())
        return leaf(2)
    fs.write("set_ftrace_filter", f"{HERE}:leaf")
    fs.write("set_ftrace_filter", f"{HERE}:test_trace_pipe_read_mid_call_gives_the_same_graph.<locals>.outer",
             append=True)
    fs.write("current_tracer", "function_graph")
    outer()
    pieces.append(fs.instance.read_pipe(final=True))
    lines = graph_lines("".join(pieces))
    check_balanced(lines)
    check_durations(lines)
    assert [t.replace(outer.__qualname__, "outer") for t in texts(lines)] == [
        "outer() {", "  leaf();", "  leaf();", "}"]


@pytest.mark.parametrize("first", ["probes", "tracer"])
def test_probe_events_sit_inside_the_call_whatever_was_set_up_first(fs, first):
    """An entry probe's event comes after the function's ``{``, a return
    probe's before its ``}``: the order of setup does not matter."""
    def probes():
        fs.write("kprobe_events", f"p:in {HERE}:branch x\nr:out {HERE}:branch $retval", append=True)
        fs.write("events/kprobes/enable", "1")

    def tracer():
        fs.write("set_ftrace_filter", f"{HERE}:branch {HERE}:leaf")
        fs.write("current_tracer", "function_graph")
    for step in (probes, tracer) if first == "probes" else (tracer, probes):
        step()
    branch(5)
    fs.write("tracing_on", "0")
    lines = graph_lines(fs.read("trace"))
    check_balanced(lines)
    got = texts(lines)
    assert got[:4] == ["branch() {", "  /* in: (branch+0x0) arg1=5 */", "  leaf();", "  leaf();"]
    assert got[4].startswith("  /* out: (") and got[4].endswith(" <- branch) arg1=11 */")
    assert got[5:] == ["}"]


# The kernel's graph columns (print_graph_prologue, print_graph_duration,
# print_graph_headers_flags): each option drops its column whole, separator
# and all, and the calls keep their indentation.
TASK_COLUMN = re.compile(r"^ *\S+-\d+ *\| ")
DURATION_COLUMN = re.compile(r"^[ +!#*@$] \d+\.\d+ us +\|  |^ {14}\|  ")


@pytest.mark.parametrize("options", [(), ("nofuncgraph-duration",), ("nofuncgraph-proc",),
                                     ("nofuncgraph-proc", "nofuncgraph-duration")])
def test_graph_options_drop_their_column_and_keep_the_layout(fs, options):
    fs.write("set_ftrace_filter", f"{HERE}:branch {HERE}:leaf")
    for o in options:
        fs.write("trace_options", o)
    fs.write("current_tracer", "function_graph")
    branch(1)
    threading.Thread(target=branch, args=(2,), name="other").start()
    time.sleep(0.2)
    fs.write("tracing_on", "0")
    lines = fs.read("trace").splitlines()
    proc, dur = "nofuncgraph-proc" not in options, "nofuncgraph-duration" not in options
    heads = [line for line in lines if line.startswith("#")]
    assert heads[-2:] == [
        "#" + ("           TASK/TID       " if proc else "") + ("  DURATION   " if dur else "")
        + "               FUNCTION CALLS",
        "#" + ("            |    |        " if proc else "") + ("   |   |      " if dur else "")
        + "               |   |   |   |"]
    body = [line for line in lines if line and not line.startswith("#")]
    calls = []
    for line in body:
        task = TASK_COLUMN.match(line)
        assert (task is not None) == proc, line
        if task:
            assert len(task.group()) == 26, line          # one width, whatever the thread
            line = line[26:]
        duration = DURATION_COLUMN.match(line)
        assert (duration is not None) == dur, line
        if duration:
            assert len(duration.group()) == 17, line
            line = line[17:]
        calls.append(line)
    assert calls == ["branch() {", "  leaf();", "  leaf();", "}"] * 2


# ---------------------------------------------------------------- shopapp, end to end

@pytest.mark.parametrize("how", ["0", "raise"])
def test_shop_graph_is_balanced_per_thread(tmp_path, how):
    proc, trace = fentry_run(tmp_path, "-t", "function_graph", "-l", "__main__:*", program=(SHOPAPP, how))
    assert proc.returncode == (0 if how == "0" else 1)
    lines = graph_lines(trace)
    check_balanced(lines)
    check_durations(lines)
    tasks = {m["task"] for m in lines}
    assert tasks == {"MainThread", "checkout-alice", "checkout-bob"}
    all_text = texts(lines)
    assert "    Inventory.take(); /* raised OutOfStock */" in "\n".join(all_text)
    assert any(t.strip() == "} /* Cart._reserve raised OutOfStock */" for t in all_text)
    # main() ends by raising: RuntimeError, or the SystemExit of sys.exit(0); and so
    # does the program's module code, the root of the whole trace
    exc = "RuntimeError" if how == "raise" else "SystemExit"
    assert all_text[0] == "<module>() {"
    assert all_text[-2:] == [f"  }} /* main raised {exc} */", f"}} /* <module> raised {exc} */"]


def test_shop_funcgraph_tail_from_the_command_line(tmp_path):
    proc, trace = fentry_run(tmp_path, "-t", "function_graph", "-l", "__main__:*", "-O", "funcgraph-tail")
    assert proc.returncode == 0
    lines = graph_lines(trace)
    check_balanced(lines)
    closes = [m["text"] for m in lines if m["text"].startswith("}")]
    assert closes and all(c.startswith("} /* ") and c.endswith(" */") for c in closes)
    assert "} /* checkout */" in closes and "} /* Cart.add */" in closes
