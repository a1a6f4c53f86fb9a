"""A return probe's ``$argN`` is the argument as passed, stored at entry (the
kernel's ``__store_entry_arg``), on both hot paths.

Each test runs one scenario of tests/programs/entry_args.py in a child
process, on the C hot path and on the pure-Python one, and reads the trace
and what the program itself saw.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from helpers import PROGRAMS, env

PROGRAM = os.path.join(PROGRAMS, "entry_args.py")
C_BUILT = importlib.util.find_spec("fentry._ctrampolines") is not None


@pytest.fixture(params=["c", "python"])
def path(request):
    if request.param == "c" and not C_BUILT:
        pytest.skip("the C hot path is not built for this Python")
    return request.param


def scenario(name: str, path: str) -> tuple[list[str], object]:
    """Run one scenario on one hot path: (its event lines, what it saw)."""
    e = env()
    e.pop("FENTRY_PURE_PYTHON", None)
    if path == "python":
        e["FENTRY_PURE_PYTHON"] = "1"
    proc = subprocess.run([sys.executable, PROGRAM, name], capture_output=True, text=True,
                          env=e, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["impl"] == path
    return result["events"], result["seen"]


def fields(line: str) -> str:
    """An event line's fields, after its ``(site)``."""
    return line.split(") ", 1)[1]


def test_a_rebound_deleted_or_mutated_parameter_reads_as_passed(path):
    events, seen = scenario("rebinding", path)
    assert seen == [11, 6, 0, 1, None]                  # the program is unchanged
    assert [fields(e) for e in events] == [
        "arg1=1 arg2=10 x=11 arg4=11",                  # $argN as passed; x, a local, at exit
        "arg1=5 arg2=1 x=6 arg4=6",
        "arg1='gone' x=(fault)",                        # del x: $arg1 still reads
        "arg1='empty' arg2='empty' v='filled'",         # a fetch built on $argN: at entry too
        "a=1 rest=(2, 3) kw={'k': 4}",                  # $args
    ]


def test_each_level_of_a_recursion_has_its_own_arguments(path):
    events, limit = scenario("recursion", path)
    assert limit == 1000                                # (depth 500 fits the default limit)
    assert [fields(e) for e in events] == [f"arg1={n} arg2={499 - n}" for n in range(500)]


def test_past_maxactive_the_oldest_calls_returns_are_misses(path):
    events, profile = scenario("maxactive", path)
    assert [fields(e) for e in events] == ["arg1=0", "arg1=1", "arg1=2"]
    assert profile == ["down", "3", "7"]


def test_a_generator_or_coroutine_keeps_its_arguments_across_yields(path):
    events, seen = scenario("generators", path)
    assert seen == [[0, 0], [1, 1]]
    counters = [fields(e) for e in events if " counter: " in e]
    assert counters == ["arg1=2 arg2='b'", "arg1=3 arg2='a'"]      # interleaved: b ends first
    assert [fields(e) for e in events if " task: " in e] == ["arg1='one'", "arg1='two'"]
    # A generator dropped while suspended: 3.12 unwinds it (GeneratorExit);
    # 3.13 closes it with no event (gen_close's fast path), so no return.
    endless = [e.split(" <- ", 1)[1] for e in events if " endless: " in e]
    if sys.version_info < (3, 13):
        assert endless == [f"endless) raised GeneratorExit arg1={100 + n}" for n in range(5)]
    else:
        assert endless == []


def test_a_frame_left_by_an_exception_reads_its_arguments_as_passed(path):
    events, seen = scenario("exceptions", path)
    assert seen is None
    assert [e.split(" <- ", 1)[1] for e in events] == [
        "boom) raised ValueError arg1=42 x='rebound'",
        "catches) arg1=21",
    ]


def test_each_thread_reads_the_arguments_it_passed(path):
    events, (threads, calls) = scenario("threads", path)
    assert len(events) == threads * calls
    got: dict[str, list[int]] = {}
    for line in events:
        task, rest = line.split(" ", 1)
        got.setdefault(task, []).append(int(rest.rsplit("arg1=", 1)[1]))
    assert got == {f"w{k}": list(range(k * calls, (k + 1) * calls)) for k in range(threads)}


def test_the_probe_never_keeps_an_argument_alive(path):
    events, seen = scenario("lifetimes", path)
    assert [fields(e) for e in events] == ["arg1=<__main__.Thing>"] * 2
    # Removed while in_flight and a generator were running: their returns
    # record nothing, and the argument goes when the program drops it.
    assert seen["freed after"] is True
    if path == "python" and sys.version_info < (3, 13):
        # 3.12's frame.f_locals, which the pure-Python path reads, keeps a
        # dict of the locals in the frame until it returns (entry probes alike).
        assert (seen["freed at once"], seen["refcount"]) == (False, 1)
    else:
        assert (seen["freed at once"], seen["refcount"]) == (True, 0)


def test_a_return_not_seen_entering_records_nothing(path):
    """As ``fentry -p PID`` attaching while the function runs: the kernel has
    no kretprobe instance for a call it did not see enter, so no event."""
    events, _ = scenario("attach", path)
    assert [fields(e) for e in events] == ["arg1='second' x='at exit'", "arg1=0", "arg1=1"]
