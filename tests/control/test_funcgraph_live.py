"""function_graph's value options on a running program, through ``fentry -p PID``."""

from __future__ import annotations

import re

import pytest
from helpers import fentry, graph_lines

from .live import Target, wait_for

ADD = re.compile(r"^add\(cart=\[.*\], item=<__main__\.Item>, qty=(\d)\); /\* ret=(\d+) \*/$")


@pytest.fixture
def target(tmp_path):
    t = Target(tmp_path)
    yield t
    t.kill()


def graph(pid: str) -> list[str]:
    got = fentry("-p", pid, "read", "trace")
    assert got.returncode == 0, got.stderr
    return [m["text"] for m in graph_lines(got.stdout)]


@pytest.mark.ptrace
def test_retval_and_args_written_live_and_toggled_while_tracing(target):
    pid = str(target.pid)
    for path, text in (("set_ftrace_filter", "add"), ("options/funcgraph-retval", "1"),
                       ("trace_options", "funcgraph-args"), ("current_tracer", "function_graph")):
        got = fentry("-p", pid, "write", path, text)
        assert got.returncode == 0, got.stderr
    assert fentry("-p", pid, "read", "options/funcgraph-args").stdout == "1\n"
    lines = wait_for(lambda: graph(pid), what="add's calls in the trace")
    assert all(ADD.match(line) for line in lines), lines[:3]
    # the option off while tracing: the tracer goes on, its lines without values
    got = fentry("-p", pid, "write", "trace_options", "nofuncgraph-retval nofuncgraph-args")
    assert got.returncode == 0, got.stderr
    assert fentry("-p", pid, "read", "current_tracer").stdout == "function_graph\n"
    wait_for(lambda: graph(pid)[-1:] == ["add();"], what="add's calls without values")
    bad = fentry("-p", pid, "write", "trace_options", "funcgraph-retval funcgraph-irqs")
    assert bad.returncode == 1 and "^" in bad.stderr
    assert fentry("-p", pid, "read", "options/funcgraph-retval").stdout == "0\n"   # nothing half-applied
    got = fentry("-p", pid, "detach")
    assert got.returncode == 0, got.stderr
    target.finish_clean()
