"""What the tests share: paths, running programs with and without fentry,
parsing trace text, and an FtraceOps that records its calls."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from types import CodeType

import fentry

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(os.path.dirname(TESTS), "src")
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


LOST_LINE = re.compile(r"^TID:\d+ \[LOST \d+ EVENTS\]$")


def body(trace: str) -> list[str]:
    """The trace's event lines: no comment (header) lines, no ``[LOST n EVENTS]`` lines."""
    return [line for line in trace.splitlines()
            if line and not line.startswith("#") and not LOST_LINE.match(line)]


def function_lines(trace: str) -> list[re.Match]:
    """Every line of a function trace, parsed; fails on a line of any other shape."""
    lines = body(trace)
    matches = [FUNCTION_LINE.match(line) for line in lines]
    bad = [line for line, m in zip(lines, matches) if m is None]
    assert not bad, f"not function-tracer lines: {bad[:5]}"
    return matches


def graph_lines(trace: str) -> list[re.Match]:
    """Every line of a function_graph trace, parsed; fails on a line of any other shape."""
    lines = body(trace)
    matches = [GRAPH_LINE.match(line) for line in lines]
    bad = [line for line, m in zip(lines, matches) if m is None]
    assert not bad, f"not function_graph lines: {bad[:5]}"
    return matches


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


class Recorder(fentry.FtraceOps):
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
