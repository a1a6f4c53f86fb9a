"""The function_graph tracer: nesting, durations, exceptions, generators, threads, asyncio."""

from __future__ import annotations

import asyncio
import collections
import re
import threading

import pytest

import fentry

LINE = re.compile(r"^\s*(?P<task>\S+)-(?P<tid>\d+)\s*\| (?P<dur>.{14})\|  (?P<indent> *)(?P<text>.*)$")


def leaf(x):
    return x


def middle(x):
    return leaf(x) + leaf(x)


def top():
    return middle(1) + leaf(2)


def fails():
    raise ValueError("no")


def catches():
    try:
        fails()
    except ValueError:
        return "caught"


def gen(n):
    for i in range(n):
        yield leaf(i)


def consume():
    return sum(gen(3))


async def child():
    await asyncio.sleep(0)
    return 1


async def parent():
    return await child() + await child()


def rec(n):
    return 0 if n == 0 else 1 + rec(n - 1)


@pytest.fixture
def graph():
    fs = fentry.tracefs()

    def run(func, *args, filter_=None, options=()):
        fs.write("set_ftrace_filter", filter_ or f"{__name__}:*")
        for o in options:
            fs.write("trace_options", o)
        fs.write("current_tracer", "function_graph")
        result = func(*args)
        fs.write("tracing_on", "0")
        text = fs.read("trace")
        return result, [LINE.match(l) for l in text.splitlines() if l and not l.startswith("#")]
    return run


def texts(lines):
    return [m["indent"] + m["text"] for m in lines]


def test_nesting_and_leaves(graph):
    _, lines = graph(top)
    assert texts(lines) == ["top() {", "  middle() {", "    leaf();", "    leaf();", "  }",
                            "  leaf();", "}"]
    assert all(re.fullmatch(r"[ +!#*@$] [\d.]+ us +", m["dur"]) for m in lines if m["text"] != "top() {"
               and m["text"] != "middle() {")


def test_funcgraph_tail(graph):
    _, lines = graph(top, options=["funcgraph-tail"])
    assert texts(lines)[4] == "  } /* middle */"


def test_exception_closes_the_frame_and_says_so(graph):
    result, lines = graph(catches)
    assert result == "caught"
    assert texts(lines) == ["catches() {", "  fails(); /* raised ValueError */", "}"]


def test_generator_yield_leaves_and_resume_reenters(graph):
    _, lines = graph(consume)
    t = texts(lines)
    assert t[0] == "consume() {" and t[-1] == "}"
    assert t.count("  gen() {") == 3                    # three resumes that yield a value...
    assert t.count("    leaf();") == 3
    assert t.count("  } /* yield */") == 3
    assert t[-2] == "  gen();"                          # ... and the final one returns


def test_recursion_indents(graph):
    _, lines = graph(rec, 3)
    assert texts(lines) == ["rec() {", "  rec() {", "    rec() {", "      rec();", "    }", "  }", "}"]


def test_coroutines(graph):
    result, lines = graph(asyncio.run, parent(), filter_=f"{__name__}:parent {__name__}:child")
    assert result == 2
    depth = 0
    for m in lines:
        depth += m["text"].endswith("{") - m["text"].startswith("}")
    assert depth == 0
    assert sum(m["text"].startswith("child()") or m["text"].startswith("child() {") for m in lines) >= 2


def test_threads_nest_separately(graph):
    def run_threads():
        ts = [threading.Thread(target=top, name=f"w{i}") for i in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    _, lines = graph(run_threads, filter_=f"{__name__}:top {__name__}:middle {__name__}:leaf")
    per_thread = collections.defaultdict(list)
    for m in lines:
        per_thread[m["task"]].append(m["indent"] + m["text"])
    assert set(per_thread) == {"w0", "w1", "w2"}
    for t in per_thread.values():
        assert t == ["top() {", "  middle() {", "    leaf();", "    leaf();", "  }", "  leaf();", "}"]
