"""``--to-kernel``: fentry's events in the kernel's own ``trace``.

Each test writes into a tracing instance of the running kernel made for it
(``--to-kernel-instance``), never into the top-level buffer, and removes it
after; a tracefs mounted for the tests is unmounted.  Skipped, with the
reason, where the user is not root or tracefs cannot be had.  Every test
runs on the C hot path and on the pure-Python one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from control.live import Target, check_no_residue, check_result
from helpers import FUNCTION_LINE, env

from fentry.errors import TraceError
from fentry.kernel import mount

# tracing_mark_write: fentry: TS PID/TID KIND REST
MARK = re.compile(r"^\s*\S+-\d+\s+\[\d+\] \S+ +(?P<kts>\d+\.\d+): tracing_mark_write: "
                  r"fentry: (?P<ts>\d+\.\d{9}) (?P<pid>\d+)/(?P<tid>\d+) (?P<kind>\S+) (?P<rest>.*)$")

THREADS_PROGRAM = """\
import threading

def f(i):
    return g(i) + 1

def g(i):
    return i * 2

def worker(n):
    for i in range(n):
        f(i)

threads = [threading.Thread(target=worker, args=(N,), name=f"w{k}") for k in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
worker(N)
print("done")
"""
CALLS = 50          # f's calls per thread, 4 threads


@pytest.fixture(params=["c", "pure"])
def hot_path(request) -> dict[str, str]:
    """The environment of a run on that hot path."""
    return env(FENTRY_PURE_PYTHON="1") if request.param == "pure" else env()


@pytest.fixture(scope="module")
def tracefs():
    """The kernel's tracefs: where mounted, or mounted for these tests (and unmounted after)."""
    if os.geteuid() != 0:
        pytest.skip("the kernel's tracefs is root's: these tests need root")
    try:
        yield mount.find_tracefs(mount=False)
        return
    except TraceError:
        pass
    target = tempfile.mkdtemp(prefix="fentry-tracefs-")
    try:
        mount.mount_tracefs(target)
    except TraceError as e:
        os.rmdir(target)
        pytest.skip(f"cannot mount tracefs: {e.message}")
    try:
        yield target
    finally:
        subprocess.run(["umount", target], check=True)
        os.rmdir(target)


@pytest.fixture
def instance(tracefs, request):
    """A kernel instance of this test's own (not named fentry-PID, which fentry
    may clean up as a dead session's): its name; removed after."""
    name = f"fentrytest_tokernel_{os.getpid()}"
    path = os.path.join(tracefs, "instances", name)
    os.mkdir(path)
    try:
        yield name, path
    finally:
        if os.path.isdir(path):     # (trace-cmd extract -B removes it itself)
            os.rmdir(path)


def kernel_marks(path: str) -> list[re.Match[str]]:
    with open(os.path.join(path, "trace")) as f:
        lines = [ln for ln in f.read().splitlines() if "tracing_mark_write: fentry: " in ln]
    marks = [MARK.match(ln) for ln in lines]
    assert None not in marks, [ln for ln, m in zip(lines, marks) if m is None][:3]
    return marks        # type: ignore[return-value]


def run(tmp_path, hot_path, *opts: str, source: str = THREADS_PROGRAM) -> tuple[subprocess.CompletedProcess, str]:
    program = tmp_path / "prog.py"
    program.write_text(source.replace("N", str(CALLS)) if source is THREADS_PROGRAM else source)
    out = tmp_path / "trace.txt"
    done = subprocess.run([sys.executable, "-m", "fentry", "run", *opts, "-o", str(out), str(program)],
                          capture_output=True, text=True, env=hot_path, timeout=120)
    return done, out.read_text() if out.exists() else ""


def test_function_entries_in_the_kernels_trace_as_in_fentrys(tmp_path, hot_path, instance):
    name, path = instance
    done, trace = run(tmp_path, hot_path, "-l", "f", "-l", "g", "-l", "worker", "--to-kernel-instance", name)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    ours = [FUNCTION_LINE.match(ln) for ln in trace.splitlines() if not ln.startswith("#")]
    assert None not in ours
    marks = kernel_marks(path)
    # Exactly the calls: f CALLS times in each of 4 threads.
    calls = [m["rest"].split()[0] for m in marks]
    assert calls.count("__main__:f") == calls.count("__main__:g") == 4 * CALLS
    assert calls.count("__main__:worker") == 4
    assert len({m["tid"] for m in marks}) == 4
    assert {m["kind"] for m in marks} == {"function"}
    assert {int(m["pid"]) for m in marks} == {int(m["tid"]) for m in marks if "<module>" in m["rest"]}
    # The same lines, in the same order, as fentry's own trace: thread, time, function, parent.
    assert [(m["tid"], m["ts"][:-3], m["rest"]) for m in marks] == \
        [(o["tid"], o["ts"], f"__main__:{o['func']} <-{'threading:' if o['parent'] == 'Thread.run' else '__main__:'}"
                               f"{o['parent']}") for o in ours]


def test_graph_entries_exits_and_probe_events(tmp_path, hot_path, instance):
    name, path = instance
    done, trace = run(tmp_path, hot_path, "-t", "function_graph", "-g", "worker", "-e", "p:k2 __main__:g x=i",
                      "-O", "funcgraph-retval", "--to-kernel-instance", name)
    assert done.returncode == 0, done.stderr
    marks = kernel_marks(path)
    kinds = [(m["kind"], m["rest"]) for m in marks]
    entries = [r for k, r in kinds if k == "funcgraph_entry"]
    exits = [r for k, r in kinds if k == "funcgraph_exit"]
    events = [r for k, r in kinds if k == "event"]
    assert entries.count("depth=1 __main__:f") == 4 * CALLS
    assert entries.count("depth=2 __main__:g") == 4 * CALLS
    assert entries.count("depth=0 __main__:worker") == 4
    assert sorted(r for r in exits if "__main__:f " in r) == \
        sorted(f"depth=1 __main__:f ret={2 * i + 1}" for i in range(CALLS) for _ in range(4))
    assert len(exits) == len(entries)
    assert sorted(events) == sorted(f"k2: (g+0x0) x={i}" for i in range(CALLS) for _ in range(4))
    # A thread's lines nest: each exit closes the last open entry, at its depth.
    for tid in {m["tid"] for m in marks}:
        open_calls: list[str] = []
        for m in (m for m in marks if m["tid"] == tid):
            depth, func = m["rest"].split()[:2]
            if m["kind"] == "funcgraph_entry":
                assert depth == f"depth={len(open_calls)}"
                open_calls.append(func)
            elif m["kind"] == "funcgraph_exit":
                assert open_calls.pop() == func and depth == f"depth={len(open_calls)}"
        assert open_calls == []
    # fentry's own trace has the same calls
    assert trace.count("f() {") == 4 * CALLS and trace.count("/* k2: (g+0x0) x=") == 4 * CALLS


def test_fentrys_timestamps_are_the_kernels_mono_clock(tmp_path, hot_path, instance):
    """With the instance on the kernel's ``mono`` clock, each event's own
    time (fentry's, CLOCK_MONOTONIC) is before the kernel's time of its
    write, and not long before: the clocks are one."""
    name, path = instance
    with open(os.path.join(path, "trace_clock"), "w") as f:
        f.write("mono")
    done, _ = run(tmp_path, hot_path, "-l", "f", "--to-kernel-instance", name)
    assert done.returncode == 0, done.stderr
    marks = kernel_marks(path)
    assert len(marks) == 4 * CALLS
    for m in marks:
        ours, kernels = float(m["ts"]), float(m["kts"])
        assert ours <= kernels + 1e-6 and kernels - ours < 30


def test_the_program_is_not_disturbed(tmp_path, hot_path, instance):
    """Its output, status, descriptors and threads are the same with --to-kernel as without."""
    name, _ = instance
    source = textwrap.dedent("""\
        import os, sys, threading
        def f():
            return sorted(os.listdir("/proc/self/fd")), sorted(os.listdir("/proc/self/task"))
        fds, tasks = f()
        print(len(fds), len(tasks), threading.active_count())
        sys.exit(3)
        """)
    plain, _ = run(tmp_path, hot_path, "-l", "f", source=source)
    to_kernel, _ = run(tmp_path, hot_path, "-l", "f", "--to-kernel-instance", name, source=source)
    assert (to_kernel.returncode, to_kernel.stdout) == (plain.returncode, plain.stdout) == (3, plain.stdout)


def test_no_such_instance_is_said_before_the_program_starts(tmp_path, hot_path, tracefs):
    ran = tmp_path / "ran"
    done, _ = run(tmp_path, hot_path, "--to-kernel-instance", "fentrytest_no_such",
                  source=f"open({str(ran)!r}, 'w').close()\n")
    assert done.returncode == 2
    assert "fentry run --to-kernel: error: No such file or directory: no such instance in the " \
           "kernel's tracefs" in done.stderr
    assert not ran.exists()


def test_record_writes_them_too(tmp_path, hot_path, instance):
    name, path = instance
    program = tmp_path / "prog.py"
    program.write_text(THREADS_PROGRAM.replace("N", "5"))
    done = subprocess.run([sys.executable, "-m", "fentry", "record", "-l", "f", "--to-kernel-instance", name,
                           "-o", str(tmp_path / "t.dat"), str(program)],
                          capture_output=True, text=True, env=hot_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [m["rest"].split()[0] for m in kernel_marks(path)] == ["__main__:f"] * 20


@pytest.mark.ptrace
def test_attach_writes_them_and_leaves_the_program_as_it_was(tmp_path, instance):
    name, path = instance
    target = Target(tmp_path)
    try:
        out = tmp_path / "attach.txt"
        done = subprocess.run([sys.executable, "-m", "fentry", "attach", str(target.pid), "-e",
                               "p:shop/add add sku=item.sku qty=qty", "--to-kernel-instance", name,
                               "--duration", "1", "-o", str(out)],
                              capture_output=True, text=True, env=env(), timeout=120)
        assert done.returncode == 0, done.stderr
        ours = [ln.split(": ", 1)[1] for ln in out.read_text().splitlines() if ": add: " in ln]
        theirs = [f"{m['kind']} {m['rest']}" for m in kernel_marks(path)]
        assert ours and theirs == [f"event {line}" for line in ours]
        result, residue, err = target.finish()
        check_result(result)
        check_no_residue(residue)
        assert err == ""
    finally:
        target.kill()


def test_the_kernels_mono_clock_is_perf_counter_ns(instance):
    """The clock fentry stamps with (time.perf_counter_ns, CLOCK_MONOTONIC)
    is the kernel's ``mono``: a marker written between two reads of it is
    stamped between them, to the microsecond the kernel prints (rounded:
    its ns2usecs)."""
    _, path = instance
    with open(os.path.join(path, "trace_clock"), "w") as f:
        f.write("mono")
    fd = os.open(os.path.join(path, "trace_marker"), os.O_WRONLY)
    try:
        spans = []
        for i in range(20):
            before = time.perf_counter_ns()
            os.write(fd, f"fentrytest {i}".encode())
            spans.append((before, time.perf_counter_ns()))
    finally:
        os.close(fd)
    with open(os.path.join(path, "trace")) as f:
        stamps = [m[1] for m in re.finditer(r" (\d+\.\d{6}): tracing_mark_write: fentrytest \d+", f.read())]
    assert len(stamps) == 20
    for (before, after), kernel in zip(spans, stamps):
        usecs = int(kernel.replace(".", ""))
        assert (before + 500) // 1000 <= usecs <= (after + 500) // 1000


@pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="trace-cmd is not installed")
def test_trace_cmd_report_shows_them(tmp_path, hot_path, instance):
    """What a trace-cmd user does: extract the instance's buffer into a
    trace.dat and read it with trace-cmd report, no plugin."""
    name, _ = instance
    done, _ = run(tmp_path, hot_path, "-l", "g", "--to-kernel-instance", name)
    assert done.returncode == 0, done.stderr
    dat = tmp_path / "trace.dat"
    subprocess.run(["trace-cmd", "extract", "-B", name, "-o", str(dat)], check=True, capture_output=True,
                   timeout=60, cwd=tmp_path)
    report = subprocess.run(["trace-cmd", "report", "-i", str(dat)], check=True, capture_output=True,
                            text=True, timeout=60).stdout
    lines = [ln for ln in report.splitlines() if "tracing_mark_write: fentry: " in ln]
    assert len(lines) == 4 * CALLS
    assert all(re.search(r" print: +tracing_mark_write: fentry: \d+\.\d{9} \d+/\d+ function __main__:g "
                         r"<-__main__:f$", ln) for ln in lines), lines[:3]
