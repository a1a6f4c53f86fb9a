"""Every test starts and ends with a clean fentry; the fixtures the tests share.

sys.monitoring is process-global, and so are fentry's ops, its tracefs files
and its symbol table: a test that leaves a tracer running, an ops registered
or a filter set changes every test after it.  ``clean_fentry`` (autouse)
puts everything back through fentry's own interfaces after each test, then
checks that no sys.monitoring tool id is held by fentry any more.

Tests marked ``ptrace`` (they put fentry into a running process) are skipped,
with the reason, where this machine refuses ``fentry attach`` its ptrace.
"""

from __future__ import annotations

import functools
import importlib
import signal
import sys
import textwrap

import pytest
from helpers import fentry_tool_ids, ptrace_refusal

import fentry
from fentry import ftrace


@pytest.fixture(autouse=True)
def clean_fentry():
    assert fentry_tool_ids() == [], "fentry held a tool id before the test started"
    fentry.tracefs().reset()
    yield
    fentry.tracefs().reset()
    leaked = list(ftrace._core.ops)
    for ops in leaked:              # a test that forgot to unregister
        fentry.unregister_ftrace_function(ops)
    held = fentry_tool_ids()
    for tool_id in held:            # fentry failed to release it: free it, so later tests can run
        sys.monitoring.set_events(tool_id, 0)
        sys.monitoring.free_tool_id(tool_id)
    assert not leaked, f"ops left registered: {leaked}"
    assert held == [], f"sys.monitoring tool id(s) {held} still held by fentry after cleanup"
    assert ftrace.traced_codes() == [], "code objects still have fentry's local events"


@functools.cache
def _attach_refusal() -> str | None:
    return ptrace_refusal()


def pytest_runtest_setup(item):
    # Asked once, and only when a ptrace test is about to run (not for `-m "not ptrace"`).
    if item.get_closest_marker("ptrace") and (reason := _attach_refusal()):
        pytest.skip(reason)


@pytest.fixture
def register():
    """``register(ops)``: register_ftrace_function, undone after the test."""
    registered = []

    def _register(ops):
        fentry.register_ftrace_function(ops)
        registered.append(ops)
        return ops
    yield _register
    for ops in registered:
        if ops.registered:
            fentry.unregister_ftrace_function(ops)


@pytest.fixture
def fs():
    """The process's tracefs (reset around the test by clean_fentry)."""
    return fentry.tracefs()


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """``make_module(name, source)``: write a module under tmp_path and import it.

    The module is taken out of sys.modules after the test.  Names must be
    unique across the session (the symbol table remembers modules by name).
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def _make(name: str, source: str, do_import: bool = True):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        made.append(name)
        return importlib.import_module(name) if do_import else None
    yield _make
    for name in made:
        sys.modules.pop(name, None)


@pytest.fixture
def claimed_tool_ids():
    """``claim(ids)``: hold sys.monitoring tool ids as another tool would; freed after the test."""
    held = []

    def _claim(ids, name="other-tool"):
        for i in ids:
            sys.monitoring.use_tool_id(i, f"{name}-{i}")
            held.append(i)
    yield _claim
    for i in held:
        if sys.monitoring.get_tool(i) is not None and sys.monitoring.get_tool(i) != "fentry":
            sys.monitoring.free_tool_id(i)


# A test run started in the background (nohup, `cmd &` in a script) inherits
# SIGINT ignored, and so would every program the tests start, plain python
# included.  Programs should see what they get from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
