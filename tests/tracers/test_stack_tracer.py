"""The stack tracer: stack_tracer_enabled, stack_max_size, stack_trace,
stack_trace_filter; depth in Python frames."""

from __future__ import annotations

import re
import sys
import threading

import pytest

from fentry import TraceError

HERE = __name__
ROW = re.compile(r"^ {0,2}(?P<i>\d+)\) +(?P<depth>\d+) +(?P<size>\d+)   (?P<loc>\S+)(?: \[(?P<mod>\S+)\])?$")


def frames_here() -> int:
    """The Python frames of the caller's stack, itself included."""
    n, f = 0, sys._getframe(1)
    while f is not None:
        n += 1
        f = f.f_back
    return n


def rec(n):
    if n > 1:
        return rec(n - 1)
    return 0


def gen_rec(n):
    if n > 1:
        yield from gen_rec(n - 1)
    else:
        rec(1)
        yield 0


def shallow():
    return rec(3)


def rows(text: str) -> list[re.Match]:
    out = []
    for line in text.splitlines():
        if line.startswith("#") or "Depth" in line or "-----" in line:
            continue
        m = ROW.match(line)
        assert m, f"not a stack_trace row: {line!r}"
        out.append(m)
    return out


def test_disabled_says_how_to_enable(fs):
    text = fs.read("stack_trace")
    assert text.startswith("        Depth    Size   Location    (0 entries)\n"
                           "        -----    ----   --------\n"
                           "#\n#  Stack tracer disabled\n")
    assert "echo 1 > stack_tracer_enabled" in text
    assert fs.read("stack_max_size") == "0\n"
    assert fs.read("stack_tracer_enabled") == "0\n"
    assert fs.read("stack_trace_filter") == "#### all functions enabled ####\n"


@pytest.mark.parametrize("depth", [1, 500])
def test_max_size_is_the_exact_depth_in_frames(fs, depth):
    fs.write("stack_trace_filter", f"{HERE}:rec")
    fs.write("stack_tracer_enabled", "1")
    base = frames_here()
    rec(depth)
    fs.write("stack_tracer_enabled", "0")
    assert fs.read("stack_max_size") == f"{base + depth}\n"


def test_generators_count_as_frames(fs):
    fs.write("stack_trace_filter", f"{HERE}:rec")
    fs.write("stack_tracer_enabled", "1")
    base = frames_here()
    list(gen_rec(50))       # 50 generator frames, then rec: each one a frame deeper
    fs.write("stack_tracer_enabled", "0")
    assert fs.read("stack_max_size") == f"{base + 50 + 1}\n"


def test_frames_entered_from_c_count(fs):
    fs.write("stack_trace_filter", f"{HERE}:rec")
    fs.write("stack_tracer_enabled", "1")
    base = frames_here()
    list(map(rec, [20]))    # called by map (C), then 19 more
    sorted([1], key=lambda x: rec(30))
    fs.write("stack_tracer_enabled", "0")
    # the lambda is a frame of its own, between sorted and rec
    assert fs.read("stack_max_size") == f"{base + 1 + 30}\n"


def test_stack_trace_lists_the_frames_of_the_deepest_moment(fs):
    fs.write("stack_trace_filter", f"{HERE}:rec")
    fs.write("stack_tracer_enabled", "1")
    base = frames_here()
    shallow()
    rec(40)
    shallow()
    fs.write("stack_tracer_enabled", "0")
    text = fs.read("stack_trace")
    lines = text.splitlines()
    assert lines[0] == f"# MainThread-{threading.get_native_id()}"
    assert lines[1] == f"        Depth    Size   Location    ({base + 40} entries)"
    assert lines[2] == "        -----    ----   --------"
    table = rows(text)
    assert len(table) == base + 40
    assert [int(m["i"]) for m in table] == list(range(base + 40))
    assert [int(m["depth"]) for m in table] == list(range(base + 40, 0, -1))
    assert all(m["size"] == "1" for m in table)
    funcs = [m["loc"].split("+")[0] for m in table]
    assert funcs[:40] == ["rec"] * 40
    assert funcs[40] == "test_stack_trace_lists_the_frames_of_the_deepest_moment"
    assert table[0]["loc"] == f"rec+0x0/{len(rec.__code__.co_code):#x}" and table[0]["mod"] == HERE
    # each caller at its call: an offset inside its code, not 0
    assert all(int(m["loc"].split("+")[1].split("/")[0], 16) > 0 for m in table[1:41])
    # the kernel's columns: "%3ld) %8d   %5d   "
    assert lines[3].startswith(f"  0) {base + 40:8d}       1   rec+0x0/")


def test_the_deepest_thread_wins_and_is_named(fs):
    fs.write("stack_trace_filter", f"{HERE}:rec")
    fs.write("stack_tracer_enabled", "1")
    tids = {}

    def work(n):
        tids[n] = threading.get_native_id()
        for _ in range(1000):
            rec(n)
    threads = [threading.Thread(target=work, args=(n,), name=f"deep{n}") for n in (10, 60, 30, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fs.write("stack_tracer_enabled", "0")
    text = fs.read("stack_trace")
    assert text.splitlines()[0] == f"# deep60-{tids[60]}"
    table = rows(text)
    funcs = [m["loc"].split("+")[0] for m in table]
    assert funcs[:60] == ["rec"] * 60 and funcs[60] == "test_the_deepest_thread_wins_and_is_named.<locals>.work"
    assert fs.read("stack_max_size") == f"{len(table)}\n"


def test_stack_trace_filter_limits_where_depth_is_checked(fs):
    fs.write("stack_trace_filter", f"{HERE}:shallow")
    fs.write("stack_tracer_enabled", "1")
    base = frames_here()
    rec(100)                # deeper, but rec is not watched
    shallow()
    fs.write("stack_tracer_enabled", "0")
    assert fs.read("stack_max_size") == f"{base + 1}\n"
    assert fs.read("stack_trace_filter") == f"shallow [{HERE}]\n"
    assert rows(fs.read("stack_trace"))[0]["loc"].startswith("shallow+0x0/")


def test_writing_stack_max_size(fs):
    fs.write("stack_trace_filter", f"{HERE}:rec")
    fs.write("stack_tracer_enabled", "1")
    base = frames_here()
    rec(50)
    assert fs.read("stack_max_size") == f"{base + 50}\n"
    rec(10)                 # not deeper: nothing changes
    assert fs.read("stack_max_size") == f"{base + 50}\n"
    fs.write("stack_max_size", "0")     # the kernel's reset: the next entry starts anew
    assert len(rows(fs.read("stack_trace"))) == base + 50   # the table stays till then
    rec(10)
    assert fs.read("stack_max_size") == f"{base + 10}\n"
    assert len(rows(fs.read("stack_trace"))) == base + 10
    fs.write("stack_max_size", "1000")  # a high mark: only deeper stacks replace it
    rec(60)
    assert fs.read("stack_max_size") == "1000\n"
    fs.write("stack_tracer_enabled", "0")
    with pytest.raises(TraceError) as e:
        fs.write("stack_max_size", "-1")
    assert e.value.code == "BAD_NUMBER"
    assert fs.read("stack_max_size") == "1000\n"


def test_enabled_reads_back_and_disabled_keeps_the_maximum(fs):
    fs.write("stack_trace_filter", f"{HERE}:rec")
    fs.write("stack_tracer_enabled", "1")
    assert fs.read("stack_tracer_enabled") == "1\n"
    rec(5)
    fs.write("stack_tracer_enabled", "0")
    before = fs.read("stack_trace")
    rec(50)
    assert fs.read("stack_trace") == before and "Stack tracer disabled" not in before


def test_deep_recursion_past_the_default_limit(fs):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        fs.write("stack_trace_filter", f"{HERE}:rec")
        fs.write("stack_tracer_enabled", "1")
        base = frames_here()
        rec(3000)
        fs.write("stack_tracer_enabled", "0")
    finally:
        sys.setrecursionlimit(old)
    assert fs.read("stack_max_size") == f"{base + 3000}\n"
    table = rows(fs.read("stack_trace"))
    assert len(table) == base + 3000 and int(table[0]["depth"]) == base + 3000
