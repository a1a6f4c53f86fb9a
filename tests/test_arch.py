"""arch: fentry's hold on sys.monitoring."""

from __future__ import annotations

import sys

import pytest

import fentry
from fentry import arch, ftrace

M = sys.monitoring


def free_ids():
    return [i for i in range(6) if M.get_tool(i) is None]


@pytest.fixture
def hold_ids():
    held = []

    def hold(*ids):
        for i in ids:
            if M.get_tool(i) is None:
                M.use_tool_id(i, f"other-{i}")
                held.append(i)
    yield hold
    for i in held:
        M.free_tool_id(i)


def test_a_free_id_is_claimed_without_evicting_anyone(hold_ids):
    hold_ids(0, 1, 2, 5)
    ops = fentry.FtraceOps(lambda *a: None)
    ops.set_filter("nothing_at_all")
    fentry.register_ftrace_function(ops)
    tool = ftrace._core.monitor.tool_id
    assert tool in (3, 4)
    assert [M.get_tool(i) for i in (0, 1, 2, 5)] == ["other-0", "other-1", "other-2", "other-5"]
    fentry.unregister_ftrace_function(ops)
    assert M.get_tool(tool) is None


def test_no_free_id_is_a_clear_error(hold_ids):
    hold_ids(*range(6))
    ops = fentry.FtraceOps(lambda *a: None)
    with pytest.raises(arch.ToolIdBusy) as e:
        fentry.register_ftrace_function(ops)
    assert "3 by 'other-3'" in str(e.value) and "No free sys.monitoring tool id" in str(e.value)
    assert e.value.holders == {i: f"other-{i}" for i in range(6)}
    assert ops not in ftrace._core.ops


def test_last_unregister_releases_events_callbacks_and_id():
    def f():
        return 1
    ops = fentry.FtraceOps(lambda *a: None)
    ops.set_filter(f"{__name__}:test_last_unregister_releases_events_callbacks_and_id.<locals>.f")
    fentry.register_ftrace_function(ops)
    f()
    tool = ftrace._core.monitor.tool_id
    assert M.get_local_events(tool, f.__code__) == M.events.PY_START
    assert M.get_events(tool) != 0
    fentry.unregister_ftrace_function(ops)
    assert M.get_tool(tool) is None
    M.use_tool_id(tool, "probe")    # nothing of fentry's is left on it
    try:
        assert M.get_events(tool) == 0
        assert M.get_local_events(tool, f.__code__) == 0
        assert M.register_callback(tool, M.events.PY_START, None) is None
    finally:
        M.free_tool_id(tool)
