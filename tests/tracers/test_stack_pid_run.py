"""The stack tracer and the pid filters from the command line: ``fentry run
--stack``, and ``fentry -p PID write set_ftrace_pid TID`` on a program that
``fentry run`` streams."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import textwrap

import pytest
from helpers import env, fentry

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "control"))
from live import wait_for

DEEP = """
    import sys

    def frames_here():
        n, f = 0, sys._getframe(1)
        while f is not None:
            n += 1
            f = f.f_back
        return n

    def rec(n):
        return rec(n - 1) if n > 1 else 0

    def main():
        print("base", frames_here(), flush=True)
        rec(200)

    main()
"""

ROW = re.compile(r"^ {0,2}(?P<i>\d+)\) +(?P<depth>\d+) +(?P<size>\d+)   (?P<loc>\S+)(?: \[(?P<mod>\S+)\])?$")


def test_fentry_run_stack_prints_the_deepest_stack_at_exit(tmp_path):
    prog, out = tmp_path / "deep.py", tmp_path / "stack.txt"
    prog.write_text(textwrap.dedent(DEEP))
    proc = subprocess.run([sys.executable, "-m", "fentry", "run", "--stack", "-o", str(out), str(prog)],
                          capture_output=True, text=True, timeout=120, env=env())
    assert proc.returncode == 0, proc.stderr
    base = int(proc.stdout.split()[1])      # main's frames: rec(1) is base + 200 deep
    lines = out.read_text().splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("# stack trace of"))
    assert "(pid " in lines[title]
    assert re.fullmatch(r"# MainThread-\d+", lines[title + 1])
    assert lines[title + 2] == f"        Depth    Size   Location    ({base + 200} entries)"
    assert lines[title + 3] == "        -----    ----   --------"
    rows = [ROW.match(line) for line in lines[title + 4:]]
    assert all(rows) and len(rows) == base + 200
    funcs = [m["loc"].split("+")[0] for m in rows]
    assert funcs[:200] == ["rec"] * 200 and funcs[200] == "main" and funcs[201] == "<module>"
    assert rows[0]["mod"] == "__main__" and int(rows[0]["depth"]) == base + 200


WORKERS = """
    import os, sys, threading, time

    def leaf(i):
        return i

    def work(go, n):
        go.wait()
        for i in range(n):
            leaf(i)

    go = threading.Event()
    threads = [threading.Thread(target=work, args=(go, 20000), name=f"w{i}") for i in range(3)]
    for t in threads:
        t.start()
    print("ready", os.getpid(), *[t.native_id for t in threads], flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.01)
    go.set()
    for t in threads:
        t.join()
"""


@pytest.mark.parametrize("command", ["run", "record"])
def test_set_ftrace_pid_written_live_to_a_running_program(tmp_path, command):
    """fentry run streams the trace as text; fentry record keeps the raw
    records, and fentry report formats them: the same threads, either way."""
    prog, go = tmp_path / "workers.py", tmp_path / "go"
    out = tmp_path / ("trace.txt" if command == "run" else "trace.dat")
    prog.write_text(textwrap.dedent(WORKERS))
    run = subprocess.Popen([sys.executable, "-m", "fentry", command, "-t", "function", "-l", "__main__:leaf",
                            "-o", str(out), str(prog), str(go)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        _, pid, *tids = run.stdout.readline().split()
        wait_for(lambda: os.path.exists(f"/tmp/fentry-{pid}/control"), what="the run's socket")
        got = fentry("-p", pid, "write", "set_ftrace_pid", tids[1])
        assert got.returncode == 0, got.stderr
        assert fentry("-p", pid, "read", "set_ftrace_pid").stdout == f"{tids[1]}\n"
        bad = fentry("-p", pid, "write", "set_ftrace_pid", f"{tids[0]} x")
        assert bad.returncode != 0 and "^" in bad.stderr
        assert fentry("-p", pid, "read", "set_ftrace_pid").stdout == f"{tids[1]}\n"
        go.touch()
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    if command == "run":
        text = out.read_text()
    else:
        rep = fentry("report", "-i", str(out))
        assert rep.returncode == 0, rep.stderr
        text = rep.stdout
    per_tid = collections.Counter(m[1] for line in text.splitlines()
                                  if (m := re.match(r"^\s*w\d-(\d+) .*: leaf <-work$", line)))
    assert per_tid == {tids[1]: 20000}
