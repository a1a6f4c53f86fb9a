"""``fentry run --follow``: every Python process the program starts is traced,
each under its own agent, into one trace with their pids."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys

import pytest
from helpers import PROGRAMS, env

pytestmark = pytest.mark.slow     # multiprocessing: pools, spawn and forkserver children

FAMILY = os.path.join(PROGRAMS, "family.py")
LEAF = re.compile(r"^\s*\S+-(?P<pid>\d+)\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: leaf <-work\.<locals>\.<genexpr>$")


def run(*args: str, tmp_path) -> tuple[subprocess.CompletedProcess, str]:
    out = tmp_path / "trace.txt"
    proc = subprocess.run([sys.executable, "-m", "fentry", "run", *args, "-o", str(out), FAMILY],
                          capture_output=True, text=True, timeout=120, env=env())
    return proc, out.read_text()


def processes(stdout: str) -> dict[str, tuple[int, int]]:
    """role -> (pid, calls of leaf), from the program's own report."""
    out = {}
    for line in stdout.splitlines()[:-1]:
        role, pid, n = line.split()
        out[role] = (int(pid), int(n))
    return out


def leaf_calls(trace: str) -> collections.Counter:
    lines = [line for line in trace.splitlines() if line and not line.startswith("#")]
    matches = [LEAF.match(line) for line in lines]
    assert all(matches), [line for line, m in zip(lines, matches) if not m][:3]
    return collections.Counter(int(m["pid"]) for m in matches)


def plain() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, FAMILY], capture_output=True, text=True, timeout=120)


def test_follow_traces_every_python_process(tmp_path):
    want = plain()
    got, trace = run("--follow", "-l", "leaf", tmp_path=tmp_path)
    assert got.returncode == want.returncode == 0, got.stderr
    assert got.stderr == want.stderr == ""          # no fork warning fentry's threads would cause
    roles = processes(got.stdout)
    assert {r: n for r, (_, n) in roles.items()} == {r: n for r, (_, n) in processes(want.stdout).items()}
    assert set(roles) == {"parent", "forked", "subprocess", "pool-SpawnPoolWorker", "pool-ForkPoolWorker"}
    assert leaf_calls(trace) == dict(roles.values())
    assert trace.count("# tracer: function") == 1


def test_without_follow_only_the_program_is_traced(tmp_path):
    got, trace = run("-l", "leaf", tmp_path=tmp_path)
    assert got.returncode == 0 and got.stderr == "", got.stderr
    roles = processes(got.stdout)
    assert leaf_calls(trace) == {roles["parent"][0]: roles["parent"][1]}


def test_follow_leaves_an_older_python_child_as_it_was(tmp_path):
    old = "/usr/bin/python3"
    if not os.path.exists(old) or subprocess.run(
            [old, "-c", "import sys; assert sys.version_info < (3, 12)"]).returncode:
        pytest.skip("no Python older than 3.12 at /usr/bin/python3")
    script = tmp_path / "spawn_old.py"
    script.write_text(
        "import subprocess\n"
        f"r = subprocess.run([{old!r}, '-c', 'import os; print(sorted(os.environ.get(k, \"-\")"
        " for k in (\"FENTRY_AGENT\", \"PYTHONPATH\")))'],"
        " capture_output=True, text=True)\n"
        "print(r.stdout, r.stderr, r.returncode)\n")
    want = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env=env())
    got = subprocess.run([sys.executable, "-m", "fentry", "run", "--follow", "-o", str(tmp_path / "t"),
                          str(script)], capture_output=True, text=True, timeout=60, env=env())
    assert got.stdout == want.stdout and got.returncode == 0, (got.stdout, want.stdout, got.stderr)


FORKS = """
import os, sys, threading, time
if sys.argv[1] == "threaded":
    threading.Thread(target=time.sleep, args=(0.5,), daemon=True).start()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("forked")
"""


@pytest.mark.parametrize("follow", [[], ["--follow"]])
@pytest.mark.parametrize("kind", ["threaded", "single"])
def test_fork_warning_is_the_programs_own(tmp_path, kind, follow):
    """Python warns at fork in a multi-threaded process: under fentry exactly
    when it would without (fentry's own threads do not count)."""
    script = tmp_path / "forks.py"
    script.write_text(FORKS)
    want = subprocess.run([sys.executable, str(script), kind], capture_output=True, text=True,
                          timeout=60, env=env())
    got = subprocess.run([sys.executable, "-m", "fentry", "run", *follow, "-o", str(tmp_path / "t"),
                          str(script), kind], capture_output=True, text=True, timeout=60, env=env())
    strip = lambda text: re.sub(r"pid=\d+", "pid=N", text)      # noqa: E731
    assert strip(got.stderr) == strip(want.stderr)
    assert ("multi-threaded" in want.stderr) == (kind == "threaded")
    assert got.stdout == want.stdout == "forked\n"


ALTERNATING_FORKS = """
import os, threading, time
ev = threading.Event()
for i in range(6):
    t = None
    if i % 2:       # a thread of the program's own at every other fork
        t = threading.Thread(target=ev.wait)
        t.start()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    if t is not None:
        ev.set()
        t.join()
        ev.clear()
    time.sleep(0.3)
print("forked")
"""


@pytest.mark.parametrize("follow", [[], ["--follow"]])
def test_the_programs_fork_warning_is_shown_once_a_place(tmp_path, follow):
    """Python shows a DeprecationWarning once a place: fentry's ignoring of
    the warning its own threads would cause, at the forks in between, does
    not make the program's show again (it did, once each: a new warnings
    filter forgets the places warned)."""
    script = tmp_path / "alternating.py"
    script.write_text(ALTERNATING_FORKS)
    want = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=env())
    got = subprocess.run([sys.executable, "-m", "fentry", "run", *follow, "-o", str(tmp_path / "t"),
                          str(script)], capture_output=True, text=True, timeout=60, env=env())
    strip = lambda text: re.sub(r"pid=\d+", "pid=N", text)      # noqa: E731
    assert want.stderr.count("multi-threaded") == 1
    assert strip(got.stderr) == strip(want.stderr)
    assert got.stdout == want.stdout == "forked\n"


FORK_WHILE_DISCOVERING = """
import os, sys, threading, time
funcs = []
for i in range(20000):
    ns = {}
    exec(f"def f{i}(x):\\n    return x + {i}\\n", ns)
    funcs.append(ns[f"f{i}"])
stop = False
def churn(k):
    for f in funcs[k::4]:    # each first call: discovered, under fentry's lock
        if stop:
            break
        f(1)
sys.setswitchinterval(1e-6)
for k in range(4):
    threading.Thread(target=churn, args=(k,), daemon=True).start()
time.sleep(0.02)
pid = os.fork()
if pid == 0:
    os._exit(7)
deadline = time.monotonic() + 10
while not os.waitpid(pid, os.WNOHANG)[0]:
    if time.monotonic() > deadline:
        print("the child hung")
        os.kill(pid, 9)
        break
    time.sleep(0.001)
else:
    print("the child ended")
stop = True
"""


@pytest.mark.parametrize("follow", [[], ["--follow"]])
def test_a_fork_while_another_thread_is_discovering_code(tmp_path, follow):
    """A thread holds fentry's lock (discovering a function's first call)
    at the instant of the fork: the child's first hooks (threading's) ran
    traced before fentry's own could reset its locks, and hung on that
    lock, held by a thread that does not exist there (CPython's
    test_threading hung so).  The forking thread is quiet over the fork."""
    script = tmp_path / "discovering.py"
    script.write_text(FORK_WHILE_DISCOVERING)
    for _ in range(8):
        got = subprocess.run([sys.executable, "-m", "fentry", "run", *follow, "-t", "function",
                              "-l", "__main__:nothing", "-o", os.devnull, str(script)],
                             capture_output=True, text=True, timeout=60, env=env())
        assert got.stdout == "the child ended\n", got.stderr


def test_a_killed_program_leaves_no_control_socket(tmp_path):
    """SIGKILL gives the agent no chance to clean up: fentry run does it."""
    script = tmp_path / "killed.py"
    script.write_text("import os, signal\nprint(os.getpid(), flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    got = subprocess.run([sys.executable, "-m", "fentry", "run", "-o", str(tmp_path / "t"), str(script)],
                         capture_output=True, text=True, timeout=60, env=env())
    assert got.returncode == -9
    pid = int(got.stdout.split()[0])
    assert not os.path.exists(f"/tmp/fentry-{pid}")


MP_MAIN = os.path.join(os.path.dirname(FAMILY), "mp_main.py")


def test_main_names_the_script_in_spawn_and_forkserver_children(tmp_path):
    """A spawn or forkserver worker runs the script as __mp_main__: filters and
    probes naming __main__ select its functions there too, under that name."""
    out = tmp_path / "trace.txt"
    got = subprocess.run([sys.executable, "-m", "fentry", "run", "--follow", "-l", "__main__:leaf",
                          "-e", "p:mp/leaf __main__:leaf x=x", "-o", str(out), MP_MAIN],
                         capture_output=True, text=True, timeout=120, env=env())
    assert got.returncode == 0, got.stderr
    workers = {method: int(pid) for method, pid in (line.split() for line in got.stdout.splitlines())}
    assert set(workers) == {"spawn", "forkserver"}
    lines = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    for pid in workers.values():
        mine = [line.split(": ", 1)[1] for line in lines if re.match(rf"\s*\S+-{pid}\s", line)]
        assert mine == ["leaf <-task", "leaf: (leaf+0x0) x=3"], lines


def test_a_child_whose_script_lacks_a_probed_function_runs_as_it_would(tmp_path):
    """A probe on the program's __main__ is refused in a child running another
    script: left out there (in its error_log), the child untouched."""
    child = tmp_path / "child.py"
    child.write_text("print('child', flush=True)\n")
    parent = tmp_path / "parent.py"
    parent.write_text("import subprocess, sys\n\ndef hello():\n    return 1\n\nhello()\n"
                      f"subprocess.run([sys.executable, {str(child)!r}], check=True)\nprint('parent')\n")
    out = tmp_path / "trace.txt"
    got = subprocess.run([sys.executable, "-m", "fentry", "run", "--follow", "-t", "nop",
                          "-e", "p:s/hello __main__:hello", "-o", str(out), str(parent)],
                         capture_output=True, text=True, timeout=120, env=env())
    assert (got.returncode, got.stdout, got.stderr) == (0, "child\nparent\n", "")
    assert [line.split(": ", 1)[1] for line in out.read_text().splitlines()
            if not line.startswith("#")] == ["hello: (hello+0x0)"]


POOL = os.path.join(os.path.dirname(FAMILY), "pool_terminate.py")


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_a_pool_ended_by_terminate_never_hangs_and_leaves_nothing(tmp_path, method):
    """SIGTERM to every worker, whatever it is doing (starting, working,
    draining at its exit): every run ends, as it does without fentry."""
    want = subprocess.run([sys.executable, POOL, method], capture_output=True, text=True, timeout=60)
    for _ in range(7):
        out = tmp_path / "trace.txt"
        got = subprocess.run([sys.executable, "-m", "fentry", "run", "--follow", "-t", "function_graph",
                              "-o", str(out), POOL, method],
                             capture_output=True, text=True, timeout=60, env=env())
        assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, 0)
        tids = {int(m) for m in re.findall(r"^ *\S+-(\d+) ", out.read_text(), re.M)}
        assert len(tids) > 4
        left = [tid for tid in tids if os.path.exists(f"/tmp/fentry-{tid}")]
        assert not left, left


KILLED_CHILD = """
import os, signal
def work(i):
    return i
pid = os.fork()
if pid == 0:
    for i in range(1000):
        work(i)
    os.kill(os.getpid(), signal.SIGKILL)
os.waitpid(pid, 0)
print("child", pid)
"""


def test_a_child_killed_before_its_first_drain_is_said(tmp_path):
    """A forked child SIGKILLed a moment after its fork, before its stream's
    first drain: its records are gone with it, and fentry run says so (it
    said nothing: the child had not even said who it was)."""
    script = tmp_path / "killed.py"
    script.write_text(KILLED_CHILD)
    for _ in range(3):
        got = subprocess.run([sys.executable, "-m", "fentry", "run", "--follow", "-t", "function",
                              "-l", "work", "-o", str(tmp_path / "t.txt"), str(script)],
                             capture_output=True, text=True, timeout=60, env=env())
        assert got.returncode == 0, got.stderr
        pid = int(got.stdout.split()[1])
        assert got.stderr == (f"fentry run: the trace of process {pid} stops at its last drain: "
                              "the process was killed before it could send the rest\n")
