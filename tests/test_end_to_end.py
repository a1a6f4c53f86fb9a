"""`fentry run` on a real program, checked as a user would check it."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "programs", "worker_pool.py")
SRC = os.path.join(os.path.dirname(HERE), "src")
FUNCTION_LINE = re.compile(r"^\s*(?P<task>\S+)-(?P<tid>\d+)\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: "
                           r"(?P<func>\S+) <-(?P<parent>\S+)$")


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def plain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)


def fentry_run(tmp_path, *opts: str, program: tuple[str, ...] = (PROGRAM,)):
    out = tmp_path / "trace.txt"
    proc = subprocess.run([sys.executable, "-m", "fentry", "run", *opts, "-o", str(out), "--", *program],
                          capture_output=True, text=True, timeout=60, env=env())
    return proc, out.read_text() if out.exists() else ""


def function_lines(trace: str) -> list[re.Match]:
    lines = [l for l in trace.splitlines() if l and not l.startswith("#")]
    matches = [FUNCTION_LINE.match(l) for l in lines]
    assert all(matches), [l for l, m in zip(lines, matches) if not m]
    return matches


@pytest.mark.parametrize("opts", [
    ("-t", "nop"),
    ("-t", "function"),
    ("-t", "function", "-l", "square", "-l", "Job.*"),
    ("-t", "function_graph"),
    ("-t", "function_graph", "-l", "__main__:*", "-n", "numbers"),
])
def test_output_and_status_unchanged(tmp_path, opts):
    for status in ("0", "3"):
        want = plain(PROGRAM, status)
        got, _ = fentry_run(tmp_path, *opts, program=(PROGRAM, status))
        assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)


def test_function_trace_has_one_line_per_call(tmp_path):
    proc, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:*")
    counts = re.search(r"counts (\d+) (\d+) (\d+)", proc.stdout).groups()
    funcs = collections.Counter(m["func"] for m in function_lines(trace))
    # the program counts its own calls; the trace must agree exactly
    assert funcs["Job.run"] == int(counts[0])
    assert funcs["square"] == int(counts[1])
    assert funcs["numbers"] == int(counts[2])
    assert funcs["fetch"] == 2 and funcs["gather"] == 1 and funcs["main"] == 1
    assert funcs["make_adder.<locals>.<lambda>"] == 1
    assert funcs["Job.label"] == 1 and funcs["Job.fail"] == 1


def test_function_trace_parents_and_threads(tmp_path):
    _, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:*")
    lines = function_lines(trace)
    runs = [m for m in lines if m["func"] == "Job.run"]
    assert {m["task"] for m in runs} == {"pool-0", "pool-1"}
    assert {m["parent"] for m in runs} == {"counted.<locals>.deco.<locals>.wrapper"}
    assert {m["parent"] for m in lines if m["func"] == "worker"} == {"Thread.run"}
    assert {m["parent"] for m in lines if m["func"] == "main"} == {"<module>"}
    tids = {m["task"]: m["tid"] for m in lines}
    assert len(set(tids.values())) == len(tids)  # one native tid per thread


def test_notrace_removes_what_it_names(tmp_path):
    _, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:*", "-n", "square", "-n", "Job.*")
    funcs = {m["func"] for m in function_lines(trace)}
    assert "square" not in funcs and not any(f.startswith("Job.") for f in funcs)
    assert {"numbers", "main", "worker"} <= funcs


def test_function_graph_is_balanced_per_thread(tmp_path):
    _, trace = fentry_run(tmp_path, "-t", "function_graph", "-l", "__main__:*")
    depth = collections.Counter()
    body = [l for l in trace.splitlines() if l and not l.startswith("#")]
    assert body
    for line in body:
        task, _, rest = line.partition("|")
        call = rest.rsplit("|", 1)[1]
        if call.rstrip().endswith("{"):
            depth[task.strip()] += 1
        elif call.strip().startswith("}"):
            depth[task.strip()] -= 1
            assert depth[task.strip()] >= 0, line
    assert all(d == 0 for d in depth.values()), depth
    assert any("Job.fail(); /* raised ValueError */" in l for l in body)


@pytest.mark.parametrize("how,status", [("exit", 4), ("raise", 1), ("osexit", 5), ("sigterm", -signal.SIGTERM)])
def test_trace_complete_however_the_program_ends(tmp_path, how, status):
    code = (
        "import os, signal, sys\n"
        "def tick(i): return i\n"
        "for i in range(1000): tick(i)\n"
        f"how = {how!r}\n"
        "if how == 'exit': sys.exit(4)\n"
        "if how == 'raise': raise RuntimeError('boom')\n"
        "if how == 'osexit': os._exit(5)\n"
        "if how == 'sigterm': os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    script = tmp_path / "ends.py"
    script.write_text(code)
    want = plain(str(script))
    proc, trace = fentry_run(tmp_path, "-l", "tick", program=(str(script),))
    assert want.returncode == status
    assert proc.returncode == status    # a signal too: fentry dies of the same one
    assert proc.stderr == want.stderr  # same traceback, no fentry frames
    assert sum(1 for m in function_lines(trace) if m["func"] == "tick") == 1000


def test_program_sees_plain_python(tmp_path):
    code = ("import os, sys, threading\n"
            "print(sys.argv, __name__, sys.path[0] == os.path.dirname(os.path.abspath(__file__)))\n"
            "print(sorted(k for k in os.environ if 'FENTRY' in k), os.environ.get('PYTHONPATH'))\n"
            "print(threading.active_count(), open(os.devnull).fileno())\n")
    script = tmp_path / "look.py"
    script.write_text(code)
    e = env()
    want = subprocess.run([sys.executable, str(script), "a", "b"], capture_output=True, text=True, env=e)
    got = subprocess.run([sys.executable, "-m", "fentry", "run", "-l", "nothing", "-o", str(tmp_path / "t"),
                          str(script), "a", "b"], capture_output=True, text=True, env=e)
    assert got.stdout == want.stdout and got.returncode == 0


def test_module_and_code_forms(tmp_path):
    proc, trace = fentry_run(tmp_path, "-l", "json.dumps", program=("-c", "import json; print(json.dumps([1]))"))
    assert proc.stdout == "[1]\n"
    assert [m["func"] for m in function_lines(trace)] == ["dumps"]
    proc, _ = fentry_run(tmp_path, "-t", "nop", program=("-m", "json.tool", "--help"))
    assert proc.returncode == 0 and "usage" in proc.stdout


def test_traced_process_imports_only_the_standard_library(tmp_path):
    code = ("import sys, sysconfig\n"
            "std = sysconfig.get_paths()['stdlib']\n"
            "out = [n for n, m in list(sys.modules.items()) if getattr(m, '__file__', None)\n"
            "       and not m.__file__.startswith(std) and not n.startswith('fentry')]\n"
            "print(out)\n")
    proc, _ = fentry_run(tmp_path, "-t", "function", "-l", "nothing", program=("-c", code))
    assert proc.stdout == "[]\n"


def test_bad_filter_stops_before_the_program_starts(tmp_path):
    marker = tmp_path / "ran"
    proc, _ = fentry_run(tmp_path, "-l", "Cart.[add", program=("-c", f"open({str(marker)!r}, 'w')"))
    assert proc.returncode == 2
    assert "error: Invalid glob pattern" in proc.stderr
    command, caret = proc.stderr.splitlines()[1:3]
    assert command.index("Cart.[add") + 5 == caret.index("^")   # under the '['
    assert not marker.exists()
