"""What the tests share: paths, running programs with and without fentry,
parsing trace text, an FtraceOps that records its calls, and whether this
machine lets ``fentry attach`` ptrace its target.

The one helpers module: tests import it as ``helpers`` (tests/ is on sys.path,
as the directory of the rootdir conftest)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from types import CodeType

from fentry import FtraceOps

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
SRC = os.path.join(ROOT, "src")
PROGRAMS = os.path.join(TESTS, "programs")
SHOPAPP = os.path.join(PROGRAMS, "shopapp.py")
TIMEOUT = 60

# function tracer: `<task>-<tid> [000] ..... <sec>.<usec>: <func> <-<parent>`
FUNCTION_LINE = re.compile(
    r"^\s*(?P<task>\S+)-(?P<tid>\d+)\s+\[000\] \.\.\.\.\. +(?P<ts>\d+\.\d{6}): "
    r"(?P<func>\S+) <-(?P<parent>\S+)$")

# function_graph: `<task>-<tid> | <duration> |  <indent><text>`
GRAPH_LINE = re.compile(
    r"^\s*(?P<task>\S+)-(?P<tid>\d+)\s*\| (?P<duration>.{14})\|  (?P<indent>(?:  )*)(?P<text>\S.*)$")
DURATION = re.compile(r"^(?P<mark>[ +!#*@$]) (?P<usecs>\d+(?:\.\d+)?) us +$")


def env(**extra: str) -> dict:
    """The environment for a child that imports fentry from this checkout."""
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.update(extra)
    return e


def plain(*args: str, **kw) -> subprocess.CompletedProcess:
    """``python ARGS...``, as a user would run the program without fentry."""
    kw.setdefault("env", env())
    return subprocess.run([sys.executable, *args], capture_output=True, timeout=TIMEOUT, **kw)


def fentry(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """``python -m fentry ARGS...``, as a user types it; output as text."""
    kw.setdefault("env", env())
    return subprocess.run([sys.executable, "-m", "fentry", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def fentry_run(tmp_path, *opts: str, program: tuple[str, ...] = (SHOPAPP,), output: bool = True,
               sep: bool = True, **kw) -> tuple[subprocess.CompletedProcess, str]:
    """``python -m fentry run OPTS -o FILE [--] PROGRAM``: the process and the trace written."""
    out = tmp_path / "trace.txt"
    if out.exists():
        out.unlink()
    o = ("-o", str(out)) if output else ()
    kw.setdefault("env", env())
    proc = subprocess.run([sys.executable, "-m", "fentry", "run", *opts, *o, *(("--",) if sep else ()), *program],
                          capture_output=True, timeout=TIMEOUT, **kw)
    return proc, out.read_text() if out.exists() else ""


@contextlib.contextmanager
def longrun_under_fentry(tmp_path) -> Iterator[str]:
    """``fentry run -t nop`` of tests/programs/longrun.py, its agent's socket
    up: yields the program's pid (for ``fentry -p PID``); at the end the
    program is stopped, and must have ended well."""
    stop = tmp_path / "stop"
    run = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "nop", "-o", str(tmp_path / "t"),
                            os.path.join(PROGRAMS, "longrun.py"), str(stop)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        pid = run.stdout.readline().split()[1]
        deadline = time.monotonic() + 30
        while not os.path.exists(f"/tmp/fentry-{pid}/control") and time.monotonic() < deadline:
            time.sleep(0.02)
        yield pid
        stop.touch()
        run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0


LOST_LINE = re.compile(r"^TID:\d+ \[LOST \d+ EVENTS\]$")


def body(trace: str) -> list[str]:
    """The trace's event lines: no comment (header) lines, no ``[LOST n EVENTS]`` lines."""
    return [line for line in trace.splitlines()
            if line and not line.startswith("#") and not LOST_LINE.match(line)]


def parsed(trace: str, line: re.Pattern, what: str) -> list[re.Match]:
    """Every event line of ``trace`` matched by ``line``; fails on a line of any other shape."""
    lines = body(trace)
    matches = [line.match(text) for text in lines]
    bad = [text for text, m in zip(lines, matches) if m is None]
    assert not bad, f"not {what} lines: {bad[:5]}"
    return matches


def function_lines(trace: str) -> list[re.Match]:
    """Every line of a function trace, parsed."""
    return parsed(trace, FUNCTION_LINE, "function-tracer")


def graph_lines(trace: str) -> list[re.Match]:
    """Every line of a function_graph trace, parsed."""
    return parsed(trace, GRAPH_LINE, "function_graph")


def calls_printed(stdout: bytes | str) -> dict[str, int]:
    """shopapp's own count of its calls (its ``calls NAME=N ...`` line)."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode()
    line = next(line for line in stdout.splitlines() if line.startswith("calls "))
    return {name: int(n) for name, n in (word.split("=") for word in line.split()[1:])}


@dataclasses.dataclass
class Call:
    """What one callback invocation received."""
    ip: object
    parent_ip: object
    ops: object
    regs: object
    args: dict | None


class Recorder(FtraceOps):
    """An FtraceOps whose callback records what it was given."""

    def __init__(self, filter: str | None = None, flags: int = 0, notrace: str | None = None) -> None:
        super().__init__(self.callback, flags=flags)
        self.calls: list[Call] = []
        if filter is not None:
            self.set_filter(filter)
        if notrace is not None:
            self.set_notrace(notrace)

    def callback(self, ip, parent_ip, ops, regs) -> None:
        args = None if regs is None else dict(regs.f_locals)
        self.calls.append(Call(ip, parent_ip, ops, regs, args))

    def names(self) -> list[str]:
        """Qualified names of the functions entered, in order."""
        return [c.ip.code.co_qualname for c in self.calls]

    def codes(self) -> list[CodeType]:
        return [c.ip.code for c in self.calls]


def fentry_tool_ids() -> list[int]:
    """sys.monitoring tool ids held by fentry now."""
    return [i for i in range(6) if sys.monitoring.get_tool(i) == "fentry"]


# ---------------------------------------------------------------- may fentry attach ptrace here?

# A sibling's attempt: PTRACE_SEIZE, then exit (the kernel detaches a tracer that exits).
SEIZE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(0x4206, int(sys.argv[1]), None, None) == -1:
    print(os.strerror(ctypes.get_errno()))
"""


def ptrace_scope() -> int | None:
    """kernel.yama.ptrace_scope (None: the kernel has no yama)."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def ptrace_refusal(python: str = sys.executable, user: int | None = None) -> str | None:
    """Why ``fentry attach`` may not ptrace its target here (None: it may).

    ``fentry attach`` is not its target's parent: the tests start both, as a
    shell does, so the question is whether a *sibling* may seize a process the
    tests started.  Yama's ptrace_scope 1 allows a process only its own
    descendants (unless it has CAP_SYS_PTRACE), 2 needs CAP_SYS_PTRACE, 3
    refuses all; a container without CAP_SYS_PTRACE refuses too.  ``python``
    and ``user`` run the sibling as another uid (how the tests check this check).
    """
    if not sys.platform.startswith("linux"):
        return "fentry attach is Linux only"
    target = subprocess.Popen(["sleep", "60"])
    try:
        sibling = subprocess.run([python, "-c", SEIZE, str(target.pid)], capture_output=True, text=True,
                                 timeout=TIMEOUT, user=user)
    finally:
        target.kill()
        target.wait()
    assert sibling.returncode == 0, sibling.stderr      # the check itself must work, not skip
    if not sibling.stdout:
        return None
    scope = ptrace_scope()
    yama = f"; kernel.yama.ptrace_scope is {scope}" if scope else ""
    return f"a sibling process may not ptrace another here ({sibling.stdout.strip()}{yama})"


def python_for(uid: int) -> str | None:
    """An interpreter that ``uid`` may run (any version), or None."""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(path) and subprocess.run([path, "-c", "pass"], user=uid,
                                                   capture_output=True).returncode == 0:
            return path
    return None
