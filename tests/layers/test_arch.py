"""arch: fentry's hold on sys.monitoring (tool id, local events, release)."""

from __future__ import annotations

import inspect
import sys
import threading

import pytest
from helpers import Recorder, fentry_tool_ids

import fentry
from fentry import arch, hotpath

M = sys.monitoring
E = M.events


def traced_target(x):
    return x + 1


def untraced_neighbour(x):
    return x - 1


FILTER = f"{__name__}:traced_target"


@pytest.mark.parametrize("free_id", range(6))
def test_tool_id_claimed_without_evicting_others(claimed_tool_ids, register, free_id):
    others = [i for i in range(6) if i != free_id]
    claimed_tool_ids(others)
    ops = register(Recorder(FILTER))
    assert fentry_tool_ids() == [free_id]
    assert [M.get_tool(i) for i in others] == [f"other-tool-{i}" for i in others]
    traced_target(1)
    assert ops.names() == ["traced_target"]
    fentry.unregister_ftrace_function(ops)
    assert M.get_tool(free_id) is None
    assert [M.get_tool(i) for i in others] == [f"other-tool-{i}" for i in others]


def test_no_free_tool_id_is_a_clear_error_naming_the_holders(claimed_tool_ids):
    claimed_tool_ids(range(6))
    ops = Recorder(FILTER)
    with pytest.raises(arch.ToolIdBusy) as err:
        fentry.register_ftrace_function(ops)
    assert "ftrace: error: No free sys.monitoring tool id: all are held (0 by 'other-tool-0', " in str(err.value)
    assert err.value.holders == {i: f"other-tool-{i}" for i in range(6)}
    assert not ops.registered
    traced_target(1)
    assert ops.calls == []
    assert [M.get_tool(i) for i in range(6)] == [f"other-tool-{i}" for i in range(6)]


def test_registering_works_once_a_tool_id_is_freed(claimed_tool_ids, register):
    claimed_tool_ids(range(6))
    ops = Recorder(FILTER)
    with pytest.raises(arch.ToolIdBusy):
        fentry.register_ftrace_function(ops)
    M.free_tool_id(2)
    register(ops)
    traced_target(1)
    assert fentry_tool_ids() == [2] and ops.names() == ["traced_target"]


def test_another_tools_events_keep_firing(claimed_tool_ids, register):
    claimed_tool_ids([0])
    seen = []
    M.register_callback(0, E.PY_START, lambda code, offset: seen.append(code.co_qualname))
    M.set_local_events(0, untraced_neighbour.__code__, E.PY_START)
    try:
        untraced_neighbour(1)
        ops = register(Recorder(FILTER))
        traced_target(1)
        untraced_neighbour(1)
        fentry.unregister_ftrace_function(ops)
        untraced_neighbour(1)
        assert seen == ["untraced_neighbour"] * 3
        assert M.get_local_events(0, untraced_neighbour.__code__) == E.PY_START
    finally:
        M.set_local_events(0, untraced_neighbour.__code__, 0)
        M.register_callback(0, E.PY_START, None)


def test_traced_code_has_local_events_and_untraced_code_none(register):
    register(Recorder(FILTER))
    traced_target(1)
    untraced_neighbour(1)
    [tool_id] = fentry_tool_ids()
    assert M.get_local_events(tool_id, traced_target.__code__) & E.PY_START
    assert M.get_local_events(tool_id, untraced_neighbour.__code__) == 0


def test_last_unregister_leaves_no_local_events_and_frees_the_tool_id(register):
    ops = register(Recorder(FILTER))
    traced_target(1)
    [tool_id] = fentry_tool_ids()
    assert M.get_local_events(tool_id, traced_target.__code__) == E.PY_START
    assert M.get_events(tool_id) != 0
    fentry.unregister_ftrace_function(ops)
    assert M.get_tool(tool_id) is None
    # CPython 3.12/3.13 keep local events across free_tool_id: claim the id
    # back and look at what fentry left on it.
    M.use_tool_id(tool_id, "probe")
    try:
        assert M.get_local_events(tool_id, traced_target.__code__) == 0
        assert M.get_events(tool_id) == 0
        assert M.register_callback(tool_id, E.PY_START, None) is None
    finally:
        M.free_tool_id(tool_id)
    traced_target(1)
    assert len(ops.calls) == 1


def test_function_graph_tracer_releases_everything_when_switched_off(fs):
    fs.write("set_ftrace_filter", FILTER)
    fs.write("current_tracer", "function_graph")
    traced_target(1)
    [tool_id] = fentry_tool_ids()
    assert M.get_events(tool_id) != 0
    fs.write("current_tracer", "nop")
    assert fentry_tool_ids() == []
    M.use_tool_id(tool_id, "probe")
    try:
        assert M.get_local_events(tool_id, traced_target.__code__) == 0
        assert M.get_events(tool_id) == 0
        for event in (E.PY_START, E.PY_RETURN, E.PY_UNWIND, E.PY_YIELD, E.PY_RESUME):
            assert M.register_callback(tool_id, event, None) is None
    finally:
        M.free_tool_id(tool_id)


def test_unregistering_one_ops_keeps_the_others_code_traced(register):
    a = register(Recorder(FILTER))
    b = register(Recorder(f"{__name__}:untraced_neighbour"))
    traced_target(1)
    untraced_neighbour(1)
    [tool_id] = fentry_tool_ids()
    fentry.unregister_ftrace_function(a)
    assert M.get_local_events(tool_id, traced_target.__code__) == 0
    assert M.get_local_events(tool_id, untraced_neighbour.__code__) & E.PY_START
    traced_target(1)
    untraced_neighbour(1)
    assert a.names() == ["traced_target"]
    assert b.names() == ["untraced_neighbour", "untraced_neighbour"]


# ---------------------------------------------------------------- beside other tools

def test_a_program_asking_for_fentrys_id_gets_it_and_fentry_moves(claimed_tool_ids, register, fs):
    ops = register(Recorder(FILTER))
    traced_target(1)
    untraced_neighbour(1)           # discovered, and DISABLEd under fentry's id
    [held] = fentry_tool_ids()
    claimed_tool_ids([held], name="the-program")    # as coverage.py or cProfile would
    assert M.get_tool(held) == f"the-program-{held}"
    [moved] = fentry_tool_ids()
    assert moved != held
    # Nothing of fentry's is left on the id the program now has...
    assert M.get_events(held) == 0 and M.get_local_events(held, traced_target.__code__) == 0
    assert M.register_callback(held, E.PY_START, None) is None
    # ...and it sees every event there, those fentry had DISABLEd included.
    seen = []
    M.register_callback(held, E.PY_START, lambda code, offset: seen.append(code.co_qualname))
    M.set_events(held, E.PY_START)
    try:
        traced_target(1)
        untraced_neighbour(1)
    finally:
        M.set_events(held, 0)
        M.register_callback(held, E.PY_START, None)
    assert seen == ["traced_target", "untraced_neighbour"]
    assert ops.names() == ["traced_target"] * 2         # fentry traces on, from its new id
    assert M.get_local_events(moved, traced_target.__code__) == E.PY_START
    assert M.get_local_events(moved, untraced_neighbour.__code__) == 0
    assert "tool id" not in fs.read("error_log")        # not an error: the program got its id


def test_a_move_loses_no_event_and_doubles_none(register):
    """The program takes fentry's id, again and again, from one thread while
    another runs traced code: every call is recorded exactly once."""
    ops = register(Recorder(FILTER))
    n = 100_000
    done = threading.Event()

    def work():
        for i in range(n):
            traced_target(i)
        done.set()
    worker = threading.Thread(target=work)
    worker.start()
    moves = 0
    while not done.is_set():
        [held] = fentry_tool_ids()
        M.use_tool_id(held, "the-program")
        M.free_tool_id(held)
        moves += 1
    worker.join()
    assert moves > 10 and len(ops.calls) == n


def test_function_graph_stays_whole_across_a_move(claimed_tool_ids, fs):
    fs.write("set_ftrace_filter", FILTER)
    fs.write("current_tracer", "function_graph")
    traced_target(1)
    claimed_tool_ids(fentry_tool_ids())
    traced_target(2)
    assert fs.read("trace").count("traced_target();") == 2


def test_with_no_other_id_free_the_program_gets_valueerror_and_error_log_says_so(claimed_tool_ids, fs):
    fs.write("set_ftrace_filter", FILTER)
    fs.write("current_tracer", "function")
    [held] = fentry_tool_ids()
    claimed_tool_ids([i for i in range(6) if i != held])
    with pytest.raises(ValueError, match=f"tool {held} is already in use"):
        M.use_tool_id(held, "late-tool")
    assert fentry_tool_ids() == [held]
    traced_target(1)
    assert "traced_target <-" in fs.read("trace")
    log = fs.read("error_log")
    assert ("ftrace: error: The program asked for fentry's sys.monitoring tool id, and no other is free: "
            "it gets ValueError (held: 0 by 'other-tool-0'") in log
    assert f"  Command: sys.monitoring.use_tool_id({held}, 'late-tool')\n" in log


def test_use_tool_id_is_wrapped_only_while_fentry_holds_an_id(register):
    original = M.use_tool_id
    ops = register(Recorder(FILTER))
    wrapper = M.use_tool_id
    assert wrapper is not original
    assert (wrapper.__name__, wrapper.__qualname__, wrapper.__module__) == (
        "use_tool_id", "use_tool_id", "sys.monitoring")
    if hotpath.IMPLEMENTATION == "c":       # a builtin, as the original (README)
        assert repr(wrapper) == repr(original) == "<built-in function use_tool_id>"
        assert wrapper.__text_signature__ == original.__text_signature__
        assert inspect.signature(wrapper) == inspect.signature(original)
    with pytest.raises(TypeError):
        M.use_tool_id("5", "x")                 # CPython's own checks answer bad calls
    fentry.unregister_ftrace_function(ops)
    assert M.use_tool_id is original


def test_the_next_owner_of_a_released_id_sees_every_event(register):
    ops = register(Recorder(FILTER))
    untraced_neighbour(1)               # DISABLEd under fentry's id
    [held] = fentry_tool_ids()
    fentry.unregister_ftrace_function(ops)
    seen = []
    M.use_tool_id(held, "next-owner")
    try:
        M.register_callback(held, E.PY_START, lambda code, offset: seen.append(code.co_qualname))
        M.set_events(held, E.PY_START)
        untraced_neighbour(1)
    finally:
        M.set_events(held, 0)
        M.register_callback(held, E.PY_START, None)
        M.free_tool_id(held)
    assert seen == ["untraced_neighbour"]
