"""``fentry attach`` and ``fentry -p PID ...`` on real programs started with
plain python, checked as a user would, and from inside the target."""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import helpers
import pytest
from helpers import env, fentry, ptrace_refusal, python_for

from .live import (
    LONGRUN,
    TOOL_IDS,
    Target,
    check_add_events,
    check_no_residue,
    check_result,
    fentry_bg,
    interrupt,
    lines_of,
    profile,
    wait_for,
)

ADD_PROBE = "p:shop/add add sku=item.sku price=item.price qty=qty"
RET_PROBE = "r:shop/added add total=$retval price=item.price qty=qty"

# Tests marked ptrace put fentry into a running process (conftest skips them
# where this machine refuses that); the others are refused before ptrace.


# -- the check that skips the ptrace tests

def test_the_ptrace_check_allows_a_sibling_here_or_says_why_not():
    """The check asks what `fentry attach` needs: may a *sibling* of the
    target (both started by the tests) seize it?  Not pytest's own child."""
    refusal = ptrace_refusal()
    scope = helpers.ptrace_scope()
    if os.geteuid() == 0 or scope in (None, 0):
        assert refusal is None or "not permitted" in refusal      # (a container may refuse even root)
    else:
        assert refusal is not None and f"ptrace_scope is {scope}" in refusal


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run the sibling as another uid")
def test_the_ptrace_check_refuses_a_sibling_that_may_not_trace(monkeypatch):
    """A sibling of another uid is refused, as one is under yama's
    ptrace_scope 1 without CAP_SYS_PTRACE: the reason names the scope."""
    python = python_for(65534)
    if python is None:
        pytest.skip("no interpreter that uid 65534 may run")
    monkeypatch.setattr(helpers, "ptrace_scope", lambda: 1)
    assert ptrace_refusal(python, user=65534) == ("a sibling process may not ptrace another here "
                                                  "(Operation not permitted; kernel.yama.ptrace_scope is 1)")
    monkeypatch.setattr(helpers, "ptrace_scope", lambda: None)
    assert ptrace_refusal(python, user=65534) == ("a sibling process may not ptrace another here "
                                                  "(Operation not permitted)")


@pytest.fixture
def target(tmp_path):
    t = Target(tmp_path)
    yield t
    t.kill()


def attach(pid: int, out, *opts: str) -> subprocess.Popen:
    return fentry_bg("attach", str(pid), "-e", ADD_PROBE, "-o", str(out), *opts)


def body_lines(out) -> list[str]:
    return [line for line in lines_of(out) if line and not line.startswith("#")]


def event_lines(out, name: str) -> list[str]:
    return [line for line in lines_of(out) if f": {name}: " in line]


@pytest.mark.ptrace
def test_attach_probe_live_control_and_detach_leave_nothing(target, tmp_path):
    out = tmp_path / "trace.txt"
    started = time.monotonic()
    proc = attach(target.pid, out)
    wait_for(lambda: event_lines(out, "add"), what="the first add event")
    first_event = time.monotonic() - started

    # A second probe, added while the program runs, in the session's instance.
    got = fentry("-p", str(target.pid), "ls", "instances")
    assert got.returncode == 0 and len(got.stdout.split()) == 1, (got.stdout, got.stderr)
    instance = got.stdout.split()[0]
    got = fentry("-p", str(target.pid), "write", "-a", "kprobe_events", RET_PROBE)
    assert got.returncode == 0, got.stderr
    got = fentry("-p", str(target.pid), "write", f"instances/{instance}/events/shop/added/enable", "1")
    assert got.returncode == 0, got.stderr
    wait_for(lambda: len(event_lines(out, "added")) >= 5, what="return events")

    got = fentry("-p", str(target.pid), "read", "kprobe_profile")
    assert got.returncode == 0, got.stderr
    counts = profile(got.stdout)
    assert counts["add"][0] > 0 and counts["added"][0] > 0, counts
    assert counts["add"][1] == counts["added"][1] == 0, counts

    _, err = interrupt(proc)
    assert proc.returncode == 0, err
    assert f"attached to {target.pid}" in err and f"detached from {target.pid}" in err
    assert not os.path.exists(f"/tmp/fentry-{target.pid}")

    lines = lines_of(out)
    assert lines[0] == "# tracer: nop"
    n = check_add_events(lines)
    assert n >= counts["add"][0]        # everything counted by then was streamed
    for line in event_lines(out, "added"):
        fields = dict(f.split("=") for f in line.split(") ", 1)[1].split())
        assert int(fields["total"]) == int(fields["price"]) * int(fields["qty"]), line
        assert "(<top> <- add)" not in line and "main+0x" in line and "<- add)" in line, line

    target.finish_clean()
    print(f"first event {first_event:.3f} s after starting `fentry attach`")


@pytest.mark.ptrace
def test_death_of_the_client_detaches(target, tmp_path):
    out = tmp_path / "trace.txt"
    proc = attach(target.pid, out)
    wait_for(lambda: event_lines(out, "add"), what="the first add event")
    proc.kill()
    proc.wait()
    wait_for(lambda: not os.path.exists(f"/tmp/fentry-{target.pid}"), what="the agent to detach")
    target.finish_clean()


@pytest.mark.ptrace
def test_attach_twice_reuses_the_agent(target, tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    a = attach(target.pid, first)
    wait_for(lambda: event_lines(first, "add"), what="events of the first attach")
    b = fentry("attach", str(target.pid), "-o", str(second), "--duration", "0.5")
    assert b.returncode == 0, b.stderr
    assert "reusing the agent already there" in b.stderr
    # The first session goes on: the agent stays for it.
    assert os.path.exists(f"/tmp/fentry-{target.pid}/control")
    seen = len(event_lines(first, "add"))
    wait_for(lambda: len(event_lines(first, "add")) > seen, what="more events after the second left")
    _, err = interrupt(a)
    assert a.returncode == 0, err
    result, residue, _ = target.finish()
    check_result(result)
    check_no_residue(residue)


@pytest.mark.ptrace
def test_control_of_a_process_with_no_agent_yet(target, tmp_path):
    pid = str(target.pid)
    # A read-only look leaves nothing behind; a rejected write neither.
    listing = fentry("-p", pid, "read", "available_filter_functions")
    assert listing.returncode == 0 and "add [__main__]" in listing.stdout.splitlines()
    assert not os.path.exists(f"/tmp/fentry-{pid}")
    bad = fentry("-p", pid, "write", "current_tracer", "bogus")
    assert bad.returncode == 1 and "No such tracer" in bad.stderr and "^" in bad.stderr
    assert not os.path.exists(f"/tmp/fentry-{pid}")
    # A write that is applied starts an agent that stays.
    got = fentry("-p", pid, "write", "kprobe_events", "p:add add qty=qty")
    assert got.returncode == 0, got.stderr
    assert f"started fentry's agent in process {pid}" in got.stderr
    assert fentry("-p", pid, "write", "events/kprobes/add/enable", "1").returncode == 0
    ls = fentry("-p", pid, "ls").stdout.split()
    assert {"kprobe_events", "kprobe_profile", "trace_pipe", "error_log", "events"} <= set(ls)
    assert fentry("-p", pid, "ls", "events/kprobes").stdout.split() == ["enable", "add"]
    fmt = fentry("-p", pid, "read", "events/kprobes/add/format").stdout
    assert "name: add" in fmt and "field:pyobject qty;" in fmt

    pipe = fentry_bg("-p", pid, "pipe")
    lines = []
    while len(lines) < 20:
        line = pipe.stdout.readline()
        assert line, pipe.stderr.read()
        lines.append(line)
    interrupt(pipe)
    assert all(": add: (add+0x0) qty=" in line for line in lines), lines[:3]

    # A rejected write: non-zero, the error_log entry with its caret, nothing applied.
    bad = fentry("-p", pid, "write", "-a", "kprobe_events", "p:bad add $retval")
    assert bad.returncode != 0
    assert "error: $retval is not available on probe" in bad.stderr
    assert "  Command: p:bad add $retval" in bad.stderr and "^" in bad.stderr
    assert "$retval is not available" in fentry("-p", pid, "read", "error_log").stdout
    assert fentry("-p", pid, "read", "kprobe_events").stdout == "p:kprobes/add add qty=qty\n"

    got = fentry("-p", pid, "detach")
    assert got.returncode == 0, got.stderr
    target.finish_clean()


@pytest.mark.slow
def test_control_of_a_process_started_by_fentry_run(tmp_path):
    stop, out = tmp_path / "stop", tmp_path / "run.txt"
    run = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "nop", "-o", str(out),
                            LONGRUN, str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env())
    try:
        pid = run.stdout.readline().split()[1]
        wait_for(lambda: os.path.exists(f"/tmp/fentry-{pid}/control"), what="the run's socket")
        got = fentry("-p", pid, "write", "kprobe_events", ADD_PROBE)
        assert got.returncode == 0 and got.stderr == "", got.stderr      # no injection needed
        assert fentry("-p", pid, "write", "events/shop/add/enable", "1").returncode == 0
        wait_for(lambda: len(event_lines(out, "add")) >= 10, what="events in fentry run's output")
        assert fentry("-p", pid, "read", "events/shop/add/enable").stdout == "1\n"
        assert fentry("-p", pid, "detach").returncode == 0
        stop.touch()
        stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    result = stdout.splitlines()[0]
    check_result(result)
    check_add_events(lines_of(out))


@pytest.mark.ptrace
def test_any_number_of_readers_at_once(target, tmp_path):
    """Twelve `fentry -p PID pipe` at once: every one is served and gets
    events, the program's stderr stays empty, and detach is as quick as
    with one (no reader's thread is left counted)."""
    pid = str(target.pid)
    assert fentry("-p", pid, "write", "kprobe_events", "p:add add qty=qty").returncode == 0
    assert fentry("-p", pid, "write", "events/kprobes/add/enable", "1").returncode == 0
    outs = [tmp_path / f"pipe{i}.txt" for i in range(12)]
    readers = []
    for out in outs:
        with open(out, "w") as f:
            readers.append(subprocess.Popen([sys.executable, "-m", "fentry", "-p", pid, "pipe"],
                                            stdout=f, stderr=subprocess.PIPE, text=True, env=env()))
    try:
        # trace_pipe consumes: the readers share the events, each gets some.
        for out in outs:
            wait_for(lambda out=out: lines_of(out), timeout=30, what=f"events in {out.name}")
        assert len(os.listdir(f"/proc/{pid}/task")) >= 1 + 12    # a thread per reader
    finally:
        for reader in readers:
            reader.send_signal(signal.SIGINT)
        errs = [reader.communicate(timeout=20)[1] for reader in readers]
    assert [r.returncode for r in readers] == [0] * 12, errs
    assert errs == [""] * 12
    for out in outs:
        assert all(": add: (add+0x0) qty=" in line for line in lines_of(out))
    started = time.monotonic()
    assert fentry("-p", pid, "detach").returncode == 0
    # A reader's thread counted and never uncounted made detach wait out the
    # server's 2 s stop timeout; a normal one takes well under 0.2 s.
    assert time.monotonic() - started < 1.5
    target.finish_clean()


@pytest.mark.ptrace
def test_all_tool_ids_taken_is_said_and_nothing_is_applied(tmp_path):
    """A program holding all six sys.monitoring tool ids: attach and a write
    that needs one are refused with the error_log entry naming the holders,
    and nothing is left half-applied."""
    target = Target(tmp_path, program=TOOL_IDS, extra=("all",))
    try:
        pid = str(target.pid)
        holders = [f"{i} by 'tool-{i}'" for i in range(6)]
        got = fentry("attach", pid, "-t", "function", "-l", "add", "--duration", "5")
        assert got.returncode == 2, got.stderr
        assert "error: No free sys.monitoring tool id" in got.stderr
        assert all(h in got.stderr for h in holders), got.stderr
        # (an attach session traces in an instance of its own)
        assert re.search(r"Command: echo function > instances/[^/]+/current_tracer\n", got.stderr)
        assert "closed the connection" not in got.stderr and "Traceback" not in got.stderr
        wait_for(lambda: not os.path.exists(f"/tmp/fentry-{pid}"), what="the agent to detach")

        assert fentry("-p", pid, "write", "set_ftrace_filter", "add").returncode == 0   # an agent that stays
        got = fentry("-p", pid, "write", "current_tracer", "function")
        assert got.returncode == 1 and "No free sys.monitoring tool id" in got.stderr, got.stderr
        assert fentry("-p", pid, "read", "current_tracer").stdout == "nop\n"
        assert fentry("-p", pid, "write", "kprobe_events", "p:add add qty=qty").returncode == 0
        got = fentry("-p", pid, "write", "events/kprobes/add/enable", "1")
        assert got.returncode == 1 and all(h in got.stderr for h in holders), got.stderr
        assert fentry("-p", pid, "read", "events/kprobes/add/enable").stdout == "0\n"
        log = fentry("-p", pid, "read", "error_log").stdout
        assert log.count("error: No free sys.monitoring tool id") == 2, log
        assert "Command: echo function > current_tracer" in log and "Command: p:kprobes/add add" in log
        assert fentry("-p", pid, "detach").returncode == 0

        result, residue, err = target.finish()
    finally:
        target.kill()
    check_result(result)
    assert residue["tools"] == [f"tool-{i}" for i in range(6)]      # the program's own, untouched
    assert residue["global_events"] == [0] * 6 and residue["local_events"] == [0] * 6
    assert residue["threads"] == 1 and residue["agent"] is False and residue["socket_dir"] is False
    assert residue["use_tool_id"] is True
    assert err == ""


@pytest.mark.ptrace
def test_a_program_taking_fentrys_id_gets_it_and_tracing_goes_on(tmp_path):
    """Once fentry is attached, the program claims the very tool id fentry
    holds (as coverage.py or cProfile would claim theirs): it gets it, its
    tool sees every event, and fentry traces on from another id."""
    target = Target(tmp_path, program=TOOL_IDS, extra=("take",))
    out = tmp_path / "trace.txt"
    try:
        proc = fentry_bg("attach", str(target.pid), "-t", "function", "-l", "add", "-o", str(out))
        took = target.proc.stderr.readline()
        assert took.startswith("took "), took
        seen = len(lines_of(out))
        wait_for(lambda: len(lines_of(out)) > seen + 20, what="add calls traced after the move")
        _, err = interrupt(proc)
        assert proc.returncode == 0, err
        result, residue, err = target.finish()
    finally:
        target.kill()
    check_result(result)
    assert err == ""
    assert residue["counted"] == residue["since"] > 0       # the program's own tool: every call
    assert residue["tools"] == ["the-program"]              # and nothing of fentry's is left
    assert residue["global_events"] == [0]
    assert residue["threads"] == 1 and residue["agent"] is False and residue["socket_dir"] is False
    assert residue["use_tool_id"] is True
    assert all(" add <-main" in line for line in body_lines(out))


@pytest.mark.ptrace
def test_a_program_refused_fentrys_id_is_told_in_error_log(tmp_path):
    """No other id free: the program gets CPython's ValueError, and error_log says why."""
    target = Target(tmp_path, program=TOOL_IDS, extra=("last",))
    out = tmp_path / "trace.txt"
    try:
        proc = fentry_bg("attach", str(target.pid), "-t", "function", "-l", "add", "-o", str(out))
        refused = target.proc.stderr.readline()
        held = refused.split()[1].rstrip(":")
        assert refused == f"refused {held}: tool {held} is already in use\n", refused
        log = fentry("-p", str(target.pid), "read", "error_log").stdout
        assert ("error: The program asked for fentry's sys.monitoring tool id, and no other is free: "
                "it gets ValueError") in log, log
        assert f"Command: sys.monitoring.use_tool_id({held}, 'the-program')" in log
        seen = len(lines_of(out))
        wait_for(lambda: len(lines_of(out)) > seen + 20, what="tracing going on")
        interrupt(proc)
        result, residue, err = target.finish()
    finally:
        target.kill()
    check_result(result)
    assert err == ""
    assert residue["tools"] == [f"tool-{i}" for i in range(6) if str(i) != held]


# -- who may connect

RAW_CONNECT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect failed:", e.strerror); raise SystemExit
try:
    s.sendall(json.dumps({"op": "read", "path": "kprobe_events"}).encode() + b"\\n")
except BrokenPipeError:
    pass                # refused before we asked: the answer is waiting
print(s.makefile().readline().strip())
"""


@pytest.mark.ptrace
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to connect as another uid")
def test_another_uid_is_refused(target):
    python = python_for(65534)
    if python is None:
        pytest.skip("no interpreter that uid 65534 may run")
    pid = str(target.pid)
    assert fentry("-p", pid, "write", "kprobe_events", "p:add add qty=qty").returncode == 0
    path = f"/tmp/fentry-{pid}/control"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    # The file modes keep other users out...
    got = subprocess.run([python, "-c", RAW_CONNECT, path], user=65534, capture_output=True, text=True)
    assert got.stdout.startswith("connect failed: Permission denied"), got
    # ...and if they were opened up, the peer's uid is still checked.
    os.chmod(os.path.dirname(path), 0o711)
    os.chmod(path, 0o666)
    got = subprocess.run([python, "-c", RAW_CONNECT, path], user=65534, capture_output=True, text=True)
    assert '"ok": false' in got.stdout and "only the same user or root may connect" in got.stdout
    assert "p:kprobes" not in got.stdout
    os.chmod(os.path.dirname(path), 0o700)
    os.chmod(path, 0o600)
    # (the fentry command itself talks only to a private directory)
    log = fentry("-p", pid, "read", "error_log")
    assert "fentry agent: error: Connection refused: only the same user or root may connect" in log.stdout
    assert "Command: connect from pid" in log.stdout and "uid 65534" in log.stdout
    assert fentry("-p", pid, "detach").returncode == 0
    result, residue, _ = target.finish()
    check_result(result)
    check_no_residue(residue)


# -- attach errors: what went wrong and what to do, the target untouched

def test_attach_errors_say_what_and_leave_the_target_untouched(tmp_path):
    got = fentry("attach", "999999999")
    assert got.returncode == 1 and "no process 999999999" in got.stderr

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        got = fentry("attach", str(sleeper.pid))
        assert got.returncode == 1 and "is not a Python process" in got.stderr, got.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(os.getuid() != 0, reason="the message for root, as root")
def test_a_process_the_kernel_protects_even_from_root_is_said_so():
    try:
        open("/proc/1/maps").close()
        pytest.skip("process 1 is open to us on this machine")
    except PermissionError:
        pass
    got = fentry("attach", "1", "--duration", "0.1")
    assert got.returncode == 1
    assert got.stderr.startswith("fentry attach: cannot read /proc/1/maps: permission denied, "
                                 "even to root:"), got.stderr
    assert "or as root" not in got.stderr


def test_attach_help_says_when_probes_are_enabled():
    got = fentry("attach", "--help")
    assert "before the program starts" not in got.stdout
    assert "as soon as fentry is attached" in " ".join(got.stdout.split())


def test_bad_definition_is_rejected_before_the_target_is_touched(target):
    control = f"/tmp/fentry-{target.pid}"

    def state() -> int | None:
        # (one may be there already: a SIGKILLed process's, whose pid the target has now)
        return os.stat(control).st_mtime_ns if os.path.exists(control) else None
    before = state()
    got = fentry("attach", str(target.pid), "-e", "p:bad add $retval")
    assert got.returncode == 2
    assert "error: $retval is not available on probe" in got.stderr and "^" in got.stderr
    assert state() == before
    result, residue, _ = target.finish()
    check_result(result)
    assert residue["fentry_loaded"] is False


def _python_311() -> str | None:
    for path in ("/root/.pyenv/versions/3.11.7/bin/python", "/usr/bin/python3.11"):
        if os.path.exists(path):
            return path
    found = shutil.which("python3.11")
    return found


def test_python_older_than_312_is_refused(tmp_path):
    python = _python_311()
    if python is None:
        pytest.skip("no Python 3.11 on this machine")
    old = subprocess.Popen([python, "-c", "import time\nprint('ready', flush=True)\nwhile True: time.sleep(0.01)"],
                           stdout=subprocess.PIPE, text=True)
    try:
        old.stdout.readline()
        got = fentry("attach", str(old.pid))
        assert got.returncode == 1
        assert "runs Python 3.11" in got.stderr and "needs Python 3.12 or newer" in got.stderr
    finally:
        old.kill()
        old.wait()


BUSY = """
import ctypes, os, sys, time
print("ready", flush=True)
ctypes.PyDLL(None).sleep(int(sys.argv[1]))    # C code that keeps the GIL: no safe point meanwhile
for i in range(50):
    time.sleep(0.01)
print("done", "fentry" in sys.modules, os.path.exists(f"/tmp/fentry-{os.getpid()}"),
      len(os.listdir("/proc/self/task")), flush=True)
"""


@pytest.mark.ptrace
def test_main_thread_busy_in_c_times_out_and_the_bootstrap_never_runs(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", BUSY, "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        got = fentry("attach", str(proc.pid), "--timeout", "0.5")
        assert got.returncode == 1
        assert "did not run the bootstrap within 0.5 s" in got.stderr
        assert "Nothing was changed" in got.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The queued bootstrap ran once the thread came back, and did nothing.
    assert out == "done False False 1\n" and err == ""


EXITS = """
import ctypes, signal
signal.alarm(1)                     # SIGALRM's default action ends the process in 1 s
print("ready", flush=True)
ctypes.PyDLL(None).sleep(10)        # C code that keeps the GIL: no safe point before that
"""


@pytest.mark.ptrace
def test_process_exiting_during_attach_is_said(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", EXITS], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        got = fentry("attach", str(proc.pid), "--timeout", "20")
        assert got.returncode == 1 and f"process {proc.pid} exited during attach" in got.stderr
    finally:
        proc.kill()
        proc.wait()
    assert not os.path.exists(f"/tmp/fentry-{proc.pid}")


BLOCKED = """
import os, select, sys, threading, time
def add(x):
    return x + 1
def worker():
    n = 0
    while not stop.is_set():
        add(n)
        n += 1
        time.sleep(0.002)
stop = threading.Event()
t = threading.Thread(target=worker, name="worker")
t.start()
print("ready", flush=True)
how, started = sys.argv[1], time.monotonic()
if how == "sleep":
    time.sleep(2)
elif how == "join":
    threading.Timer(2, stop.set).start()
    t.join()
elif how == "select":
    r, w = os.pipe()
    select.select([r], [], [], 2)
elif how == "input":
    print("got", input(), flush=True)
stop.set()
t.join()
print(how, "returned after", round(time.monotonic() - started), "s", flush=True)
"""


@pytest.mark.ptrace
@pytest.mark.parametrize("how", ["sleep", "join", "select", "input"])
def test_attach_while_the_main_thread_is_blocked(tmp_path, how):
    """A main thread blocked outside Python (sleep, select, a read) or on a
    lock (join) is attached to at once; its call ends when it would have."""
    out = tmp_path / "trace.txt"
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED, how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        got = fentry("attach", str(proc.pid), "-e", "p:add add x=x", "-o", str(out),
                     "--duration", "0.5", "--timeout", "1.5")
        assert got.returncode == 0, got.stderr
        assert [line for line in lines_of(out) if "worker-" in line and ": add: (add+0x0) x=" in line]
        stdout, stderr = proc.communicate("typed\n" if how == "input" else None, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stderr == ""
    lines = stdout.splitlines()
    if how == "input":      # it returns when the line is typed, after the attach
        assert lines[0] == "got typed" and lines[-1].startswith("input returned after"), stdout
    else:
        assert lines[-1] == f"{how} returned after 2 s", stdout


LATE_THREADING = """\
import sys, time
print("ready", flush=True)
sys.stdin.readline()                    # attached to (and detached) by now
import threading, asyncio
main = threading.current_thread()
print(main.name, main is threading.main_thread(), flush=True)
asyncio.set_event_loop(asyncio.new_event_loop())
print(type(asyncio.get_event_loop()).__name__, flush=True)
def work():
    time.sleep(0.2)
    print("worker done", flush=True)
threading.Thread(target=work).start()   # not a daemon: it is joined at exit
"""


@pytest.mark.ptrace
@pytest.mark.parametrize("how", [("-p", "{pid}", "ls"), ("attach", "{pid}", "--duration", "0.3")],
                         ids=["ls", "attach"])
def test_a_program_that_imports_threading_after_the_attach_keeps_its_main_thread(how):
    """3.12's threading takes whichever thread first imports it for the main
    thread: fentry's must not be that one."""
    proc = subprocess.Popen([sys.executable, "-c", LATE_THREADING], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        got = fentry(*(a.format(pid=proc.pid) for a in how))
        assert got.returncode == 0, got.stderr
        stdout, stderr = proc.communicate("go\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (stdout, stderr, proc.returncode) == (
        "MainThread True\n_UnixSelectorEventLoop\nworker done\n", "", 0)


def test_gdb_missing_is_said(target):
    e = env()
    e["PATH"] = str(os.path.dirname(sys.executable))        # no gdb there
    got = subprocess.run([sys.executable, "-m", "fentry", "attach", str(target.pid), "--injector", "gdb"],
                         capture_output=True, text=True, env=e, timeout=60)
    assert got.returncode == 1 and "gdb is needed" in got.stderr
    assert not os.path.exists(f"/tmp/fentry-{target.pid}")


@pytest.mark.ptrace
@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_gdb_injector(target, tmp_path):
    """Events through gdb; or, where gdb's calls would break the program
    (some kernel and CPU combinations), a refusal that leaves it untouched."""
    out = tmp_path / "trace.txt"
    proc = attach(target.pid, out, "--injector", "gdb")
    wait_for(lambda: len(event_lines(out, "add")) >= 5 or proc.poll() is not None, timeout=30,
             what="events via gdb")
    if proc.poll() is not None:
        _, err = proc.communicate()
        assert proc.returncode == 1
        assert err.startswith("fentry attach: gdb cannot call functions safely on this machine"), err
        assert f"process {target.pid}; it was not touched (use --injector ptrace)" in err
    else:
        _, err = interrupt(proc)
        assert "(gdb, paused" in err
        check_add_events(lines_of(out))
    target.finish_clean()


@pytest.mark.ptrace
@pytest.mark.skipif(sys.version_info < (3, 14), reason="sys.remote_exec needs Python 3.14")
def test_remote_exec_injector(target, tmp_path):
    out = tmp_path / "trace.txt"
    proc = attach(target.pid, out, "--injector", "remote_exec")
    wait_for(lambda: len(event_lines(out, "add")) >= 5, what="events via sys.remote_exec")
    interrupt(proc)
    check_add_events(lines_of(out))
    result, residue, _ = target.finish()
    check_result(result)
    check_no_residue(residue)


@pytest.mark.ptrace
def test_a_reader_that_does_not_read_or_vanishes_never_blocks_the_program(target):
    pid = str(target.pid)
    assert fentry("-p", pid, "write", "kprobe_events", "p:add add qty=qty").returncode == 0
    assert fentry("-p", pid, "write", "events/kprobes/add/enable", "1").returncode == 0
    assert fentry("-p", pid, "write", "current_tracer", "function").returncode == 0   # plenty to stream
    stuck = fentry_bg("-p", pid, "pipe")          # its output is never read: the pipe fills up
    hits = []
    for _ in range(3):
        time.sleep(0.5)
        hits.append(profile(fentry("-p", pid, "read", "kprobe_profile").stdout)["add"][0])
    assert hits[0] < hits[1] < hits[2], hits       # the program went on all along
    stuck.kill()                                   # and the reader vanishes
    stuck.wait()
    more = profile(fentry("-p", pid, "read", "kprobe_profile").stdout)["add"][0]
    assert more > hits[2]
    assert fentry("-p", pid, "detach").returncode == 0
    target.finish_clean()


@pytest.mark.ptrace
def test_a_process_traced_by_someone_else_is_refused_clearly(target):
    """ptrace refuses a second tracer: fentry says who holds it."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.ptrace(0x4206, target.pid, None, None) == 0        # PTRACE_SEIZE: we trace it now
    try:
        got = fentry("attach", str(target.pid))
        assert got.returncode == 1
        assert (f"permission denied: process {target.pid} is already being traced by process "
                f"{os.getpid()}") in got.stderr
        assert not os.path.exists(f"/tmp/fentry-{target.pid}")
    finally:
        libc.ptrace(0x4207, target.pid, None, None)                 # PTRACE_INTERRUPT,
        os.waitpid(target.pid, 0x40000000)                          # its stop (__WALL),
        libc.ptrace(17, target.pid, None, None)                     # PTRACE_DETACH
    result, residue, _ = target.finish()
    check_result(result)
    assert residue["fentry_loaded"] is False


@pytest.mark.ptrace
def test_output_closed_by_its_reader_detaches_quietly(target):
    """`fentry attach PID ... | head -3`: fentry ends without a traceback, and detaches."""
    proc = fentry_bg("attach", str(target.pid), "-e", ADD_PROBE)
    lines = [proc.stdout.readline() for _ in range(3)]
    assert lines[0] == "# tracer: nop\n"
    proc.stdout.close()                 # the reader goes, as head does
    err = proc.stderr.read()
    assert proc.wait(timeout=20) == 0
    assert "Traceback" not in err and f"output closed; detached from {target.pid}" in err
    wait_for(lambda: not os.path.exists(f"/tmp/fentry-{target.pid}"), what="the agent to detach")
    result, residue, _ = target.finish()
    check_result(result)
    check_no_residue(residue)


BUSY_THREADS = os.path.join(os.path.dirname(LONGRUN), "busy.py")
TAKE_LINE = re.compile(r"^ *(\S+)-\d+ +\[000\] \.\.\.\.\. +\d+\.\d{6}: take <-work$", re.M)


def take_counts(path) -> collections.Counter:
    body = [line for line in lines_of(path) if line and not line.startswith("#")]
    tasks = TAKE_LINE.findall("\n".join(body))
    assert len(tasks) == len(body), [line for line in body if not TAKE_LINE.match(line)][:5]
    return collections.Counter(tasks)


@pytest.mark.slow
@pytest.mark.ptrace
@pytest.mark.parametrize("how", ["attach", "pipe"])
def test_nothing_is_lost_at_scale_when_attached(tmp_path, how):
    """4 busy threads x 300,000 calls, traced by fentry attach or read by
    fentry -p PID pipe, with the default buffer: every call arrives."""
    out = tmp_path / "trace.txt"
    proc = subprocess.Popen([sys.executable, BUSY_THREADS, "4", "300000", "wait"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        pid = str(proc.pid)
        if how == "attach":
            reader = fentry_bg("attach", pid, "-t", "function", "-l", "take", "-o", str(out))
            wait_for(lambda: "attached" in (reader.stderr.readline() or "attached"), what="attach")
        else:
            for path, text in (("set_ftrace_filter", "take"), ("current_tracer", "function")):
                got = fentry("-p", pid, "write", path, text)
                assert got.returncode == 0, got.stderr
            with open(out, "w") as f:
                reader = subprocess.Popen([sys.executable, "-m", "fentry", "-p", pid, "pipe"], stdout=f,
                                          stderr=subprocess.PIPE, text=True, env=env())
            time.sleep(0.5)         # the stream is open
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"
        interrupt(reader, timeout=60)
        assert reader.returncode == 0
        if how == "pipe":
            assert fentry("-p", pid, "detach").returncode == 0
        proc.stdin.write("end\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lost = [line for line in lines_of(out) if "LOST" in line]
    assert not lost, lost[:5]       # (not the whole trace: a million lines)
    assert take_counts(out) == {f"b{k}": 300000 for k in range(4)}


@pytest.mark.ptrace
def test_two_attach_sessions_get_exactly_their_own_events(target, tmp_path):
    """Each session traces in an instance of its own: neither sees, steals
    nor leaves behind the other's events; the top level is untouched."""
    a_out, b_out = tmp_path / "a.txt", tmp_path / "b.txt"
    a = fentry_bg("attach", str(target.pid), "-e", "p:sa/add add qty=qty", "-o", str(a_out))
    wait_for(lambda: event_lines(a_out, "add"), what="session A's events")
    b = fentry_bg("attach", str(target.pid), "-t", "function", "-l", "add", "-o", str(b_out))
    b_lines = lambda: [line for line in lines_of(b_out) if line.endswith(": add <-main")]  # noqa: E731
    wait_for(lambda: len(b_lines()) >= 20, what="session B's function lines")
    got = fentry("-p", str(target.pid), "ls", "instances")
    assert len(got.stdout.split()) == 2, got.stdout
    assert fentry("-p", str(target.pid), "read", "current_tracer").stdout == "nop\n"

    _, err = interrupt(a)
    assert a.returncode == 0 and f"detached from {target.pid}" in err, err
    got = fentry("-p", str(target.pid), "read", "kprobe_events")
    assert "sa/add" not in got.stdout          # A's definition went with it
    seen = len(b_lines())
    wait_for(lambda: len(b_lines()) >= seen + 20, what="B going on after A left")
    _, err = interrupt(b)
    assert b.returncode == 0, err

    a_body = [line for line in lines_of(a_out) if line and not line.startswith("#")]
    b_body = [line for line in lines_of(b_out) if line and not line.startswith("#")]
    assert a_body and all(": add: (add+0x0) qty=" in line for line in a_body), a_body[:3]
    assert b_body and all(line.endswith(": add <-main") for line in b_body), \
        [line for line in b_body if not line.endswith(": add <-main")][:3]
    target.finish_clean()


@pytest.mark.ptrace
@pytest.mark.parametrize("maker", ["recorded", "older fentry"])
def test_a_control_directory_left_by_an_earlier_process_of_the_same_pid_is_not_its_agent(
        target, maker):
    """Pids wrap around: a directory left by a killed process that had this
    pid (a socket nobody listens on; the start time of that process, or no
    record but a directory older than this process) is removed, and an
    agent is started in the process that has the pid now."""
    pid = target.pid
    directory = f"/tmp/fentry-{pid}"
    shutil.rmtree(directory, ignore_errors=True)    # (one a run before this left, of this pid)
    os.mkdir(directory, 0o700)
    if maker == "recorded":
        with open(os.path.join(directory, "start"), "w") as f:
            f.write("1\n")      # not this process's start time
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(os.path.join(directory, "control"))
    dead.close()                # bound, never listening: connections are refused
    if maker == "older fentry":
        an_hour_ago = time.time() - 3600
        os.utime(directory, (an_hour_ago, an_hour_ago))
    got = fentry("-p", str(pid), "ls")
    assert got.returncode == 0, got.stderr
    assert "current_tracer" in got.stdout
    assert not os.path.exists(directory)        # the agent for ls went again
