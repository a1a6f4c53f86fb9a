"""set_ftrace_filter commands and the snapshot file in a running process:
``fentry -p PID write/read``, as a user types them."""

from __future__ import annotations

import pytest
from helpers import fentry

from .live import Target, wait_for


@pytest.fixture
def target(tmp_path):
    t = Target(tmp_path)
    yield t
    t.kill()


@pytest.mark.ptrace
def test_snapshot_and_a_traceoff_command_live(target):
    pid = str(target.pid)
    assert "# * Snapshot is freed *" in fentry("-p", pid, "read", "snapshot").stdout
    for args in (("set_ftrace_filter", "add"), ("current_tracer", "function")):
        got = fentry("-p", pid, "write", *args)
        assert got.returncode == 0, got.stderr
    wait_for(lambda: " add <-" in fentry("-p", pid, "read", "trace").stdout, what="add in the trace")
    assert fentry("-p", pid, "write", "snapshot", "1").returncode == 0
    assert " add <-main" in fentry("-p", pid, "read", "snapshot").stdout
    got = fentry("-p", pid, "write", "-a", "set_ftrace_filter", "add:traceoff:1")
    assert got.returncode == 0, got.stderr
    wait_for(lambda: fentry("-p", pid, "read", "tracing_on").stdout == "0\n", what="tracing off")
    assert fentry("-p", pid, "read", "set_ftrace_filter").stdout == "add [__main__]\nadd:traceoff:count=0\n"
    bad = fentry("-p", pid, "write", "-a", "set_ftrace_filter", "add:traceoff:zz")
    assert bad.returncode != 0 and "the count must be a number" in bad.stderr and "^" in bad.stderr
    assert fentry("-p", pid, "detach").returncode == 0
    target.finish_clean()
