"""``-K``: the kernel's events of the traced threads in fentry's trace, on
the running kernel (root and tracefs; skipped, with the reason, where
either is missing).  Each test runs fentry as a user types it and reads
what a user reads: the trace, the kernel's instances/, the exit status."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import GRAPH_LINE, PROGRAMS, env, fentry

PIPE_SLEEP = os.path.join(PROGRAMS, "pipe_sleep.py")
# a function_graph line, after its funcgraph-abstime column if it has one
LINE = re.compile(r"^(?:\s*(?P<abs>\d+\.\d{6}) \|  )?" + GRAPH_LINE.pattern[1:])


def _tracefs() -> str:
    if os.geteuid() != 0:
        pytest.skip("tracefs is root's: -K needs root")
    from fentry.errors import TraceError
    from fentry.kernel.mount import find_tracefs
    try:
        return find_tracefs()
    except TraceError as e:
        pytest.skip(f"no usable tracefs: {e.message}")


@pytest.fixture
def tracefs() -> str:
    return _tracefs()


def _instances(tracefs: str) -> list[str]:
    return sorted(n for n in os.listdir(os.path.join(tracefs, "instances")) if n.startswith("fentry-"))


def _comments(trace: str) -> list[tuple[re.Match, str]]:
    """function_graph lines that are kernel events: (the line, the event's text)."""
    out = []
    for line in trace.splitlines():
        m = GRAPH_LINE.match(line)
        if m and m["text"].startswith("/* ") and m["text"].endswith(" */"):
            out.append((m, m["text"][3:-3]))
    return out


def _run_graph(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    out = tmp_path / "trace.txt"
    proc = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "function_graph",
                             "-K", "sched:sched_switch", "-K", "raw_syscalls", *extra,
                             "-o", str(out), PIPE_SLEEP],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    stdout, stderr = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    done.fentry_pid = proc.pid      # type: ignore[attr-defined]
    return done, out.read_text()


def _frame(trace: str, func: str) -> list[str]:
    """The lines of ``func``'s first frame, from ``func() {`` to its ``}``."""
    lines = trace.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if re.search(rf"\|\s+{re.escape(func)}\(\) \{{$", line))
    depth = len(LINE.match(lines[start])["indent"])
    for end in range(start + 1, len(lines)):
        m = LINE.match(lines[end])
        if m and m["text"].startswith("}") and len(m["indent"]) == depth:
            return lines[start:end + 1]
    raise AssertionError(f"{func}'s frame does not end")


def test_read_and_switch_inside_the_frame_and_nothing_else(tracefs, tmp_path):
    done, trace = _run_graph(tmp_path)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    frame = _frame(trace, "reader")
    inner = [GRAPH_LINE.match(line) for line in frame[1:-1]]
    depth = len(GRAPH_LINE.match(frame[0])["indent"]) + 2
    events = [m["text"] for m in inner if m and m["text"].startswith("/* ")]
    assert all(len(m["indent"]) == depth for m in inner if m), frame
    # the read of the pipe (fd 3, 100 bytes asked, 5 read), by name, and the sleep's switch
    assert any(re.fullmatch(r"/\* sys_enter: NR 0 read \(3, [0-9a-f]+, 64, .*\) \*/", e) for e in events), frame
    assert "/* sys_exit: NR 0 read = 5 */" in events, frame
    assert any(re.fullmatch(rf"/\* sched_switch: prev_comm=\S+ prev_pid={pid} .*prev_state=S .* \*/", e)
               for e in events), frame
    assert all(int(m["tid"]) == pid for m in inner if m), frame
    # no other process's events anywhere: each is the program's thread's, or a
    # switch to or from it
    comments = _comments(trace)
    assert comments
    for m, text in comments:
        assert int(m["tid"]) == pid, m.group(0)
        if text.startswith("sched_switch:"):
            pids = re.findall(r"(?:prev|next)_pid=(\d+)", text)
            assert str(pid) in pids, text
    assert f"fentry-{done.fentry_pid}" not in _instances(tracefs)


def test_syscall_lies_between_the_entry_and_the_exit(tracefs, tmp_path):
    done, trace = _run_graph(tmp_path, "-O", "funcgraph-abstime")
    assert done.returncode == 0, done.stderr
    frame = _frame(trace, "reader")
    stamps = [float(LINE.match(line)["abs"]) for line in frame]
    read = [k for k, line in enumerate(frame) if "sys_enter: NR 0 read (3," in line]
    assert read, frame
    assert stamps[0] <= stamps[read[0]] <= stamps[-1]
    assert stamps == sorted(stamps), frame


def test_function_tracer_prints_the_kernels_lines_in_time_order(tracefs, tmp_path):
    out = tmp_path / "trace.txt"
    done = fentry("run", "-l", "reader", "-K", "sched:sched_switch,raw_syscalls:sys_enter",
                  "-o", str(out), PIPE_SLEEP)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    lines = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    kernel = re.compile(r"^\s*(?P<comm>.{1,16})-(?P<tid>\d+)\s+\[(?P<cpu>\d{3})\] (?P<flags>[.dDbBNnLlphsHzZ0-9]{5}) "
                        r"+(?P<ts>\d+\.\d{6}): (?P<text>(sched_switch|sys_enter): .*)$")
    python = re.compile(r"^\s*MainThread-(?P<tid>\d+)\s+\[000\] \.\.\.\.\. +(?P<ts>\d+\.\d{6}): reader <-main$")
    stamps = []
    for line in lines:
        m = kernel.match(line) or python.match(line)
        assert m, line
        stamps.append(float(m["ts"]))
    assert stamps == sorted(stamps)
    entry = next(float(m["ts"]) for line in lines if (m := python.match(line)))
    reads = [float(m["ts"]) for line in lines
             if f"-{pid} " in line and "sys_enter: NR 0 read (3," in line and (m := kernel.match(line))]
    # the read comes after the call that makes it (its first act): one clock, mono
    assert reads and reads[-1] >= entry, (entry, reads)


def test_record_and_report(tracefs, tmp_path):
    dat = tmp_path / "t.dat"
    done = fentry("record", "-t", "function_graph", "-K", "raw_syscalls", "-o", str(dat), PIPE_SLEEP)
    assert done.returncode == 0, done.stderr
    report = fentry("report", "-i", str(dat))
    assert report.returncode == 0, report.stderr
    frame = _frame(report.stdout, "reader")
    assert any("/* sys_exit: NR 0 read = 5 */" in line for line in frame), frame
    # an exporter that does not show them still reads the file
    export = fentry("report", "-i", str(dat), "--format", "chrome", "-o", str(tmp_path / "t.json"))
    assert export.returncode == 0, export.stderr


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _start_sleeping(tmp_path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-K", "sched:sched_switch",
                             "-o", str(tmp_path / "t.txt"), PIPE_SLEEP, "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            start_new_session=True)
    program = int(proc.stdout.readline())
    return proc, program


def test_instance_is_gone_after_ctrl_c(tracefs, tmp_path):
    proc, _ = _start_sleeping(tmp_path)
    try:
        assert f"fentry-{proc.pid}" in _instances(tracefs)
        os.killpg(proc.pid, signal.SIGINT)      # Ctrl-C: the terminal's whole process group
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert f"fentry-{proc.pid}" not in _instances(tracefs)


def test_instance_is_gone_after_sigterm(tracefs, tmp_path):
    proc, _ = _start_sleeping(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGTERM)       # to fentry alone: it hands it to the program
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert f"fentry-{proc.pid}" not in _instances(tracefs)


def test_instance_of_a_sigkilled_fentry_is_removed_by_the_next(tracefs, tmp_path):
    proc, program = _start_sleeping(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.kill(program, signal.SIGKILL)
    _wait_for(lambda: not os.path.exists(f"/proc/{program}"))
    assert f"fentry-{proc.pid}" in _instances(tracefs)      # nobody could remove it
    done = fentry("run", "-K", "sched:sched_switch", "-o", str(tmp_path / "t2.txt"), "-c", "pass")
    assert done.returncode == 0, done.stderr
    assert f"fentry-{proc.pid}" not in _instances(tracefs)


def test_an_idle_programs_kernel_events_come_while_it_runs(tracefs, tmp_path):
    """A program asleep in time.sleep writes no record of its own (``-t
    nop``: none at all); its kernel events are in the trace while it
    sleeps, not held in fentry's memory until it ends."""
    out = tmp_path / "t.txt"
    proc = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "nop", "-K", "raw_syscalls:sys_enter",
                             "-o", str(out), PIPE_SLEEP, "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        program = int(proc.stdout.readline())
        _wait_for(lambda: any(f"-{program} " in line and "clock_nanosleep" in line
                              for line in out.read_text().splitlines()))
        assert proc.poll() is None          # (still asleep)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM


def _never_ran(tmp_path, *opts: str) -> subprocess.CompletedProcess:
    """``fentry run OPTS`` of a program that leaves a file if it runs."""
    marker = tmp_path / "ran"
    done = fentry("run", *opts, "-c", f"open({str(marker)!r}, 'w')")
    assert not marker.exists(), "the program ran"
    assert done.returncode == 2
    return done


def test_unknown_event_fails_before_the_program_starts(tracefs, tmp_path):
    done = _never_ran(tmp_path, "-K", "sched:bogus")
    assert "no such kernel event" in done.stderr and "sched:bogus" in done.stderr
    done = _never_ran(tmp_path, "-K", "nosuchsystem")
    assert "no such kernel event" in done.stderr and "nosuchsystem" in done.stderr


def test_bad_filter_says_the_kernels_error(tracefs, tmp_path):
    done = _never_ran(tmp_path, "-K", "sched:sched_switch",
                      "--kernel-filter", "sched:sched_switch:prev_pidd == 3")
    # the kernel's own words (its error_log), its caret placed in the option, nothing left behind
    assert "the kernel refused the filter: Field not found" in done.stderr, done.stderr
    command = "  Command: sched:sched_switch:prev_pidd == 3"
    lines = done.stderr.splitlines()
    caret = lines[lines.index(command) + 1]
    # the kernel's own caret, for the same filter, in an instance of the test's
    oracle = os.path.join(tracefs, "instances", f"kfilter-oracle-{os.getpid()}")
    os.mkdir(oracle)
    try:
        with pytest.raises(OSError), open(os.path.join(oracle, "events/sched/sched_switch/filter"), "w") as f:
            f.write("prev_pidd == 3")
        with open(os.path.join(oracle, "error_log")) as f:
            log = f.read().splitlines()
    finally:
        os.rmdir(oracle)
    kernel_caret = log[log.index("  Command: prev_pidd == 3") + 1]
    assert len(caret) == len(kernel_caret) + len("sched:sched_switch:"), (caret, kernel_caret)
    assert not [n for n in _instances(tracefs) if not os.path.exists(f"/proc/{n.split('-')[1]}")]


def test_filter_applies(tracefs, tmp_path):
    out = tmp_path / "trace.txt"
    done = fentry("run", "-t", "function_graph", "-K", "raw_syscalls:sys_enter",
                  "--kernel-filter", "raw_syscalls:sys_enter:id == 0", "-o", str(out), PIPE_SLEEP)
    assert done.returncode == 0, done.stderr
    texts = [text for _, text in _comments(out.read_text())]
    assert texts and all(t.startswith("sys_enter: NR 0 read ") for t in texts), texts[:5]


def test_not_root_fails_before_the_program_starts(tracefs, tmp_path):
    marker = tmp_path / "ran"
    os.chmod(tmp_path, 0o777)
    # fentry is imported as root (its Python is under root's home), then it becomes nobody
    code = ("import os, sys\n"
            "import fentry.cli, fentry.kernel.session\n"
            "os.chdir('/')\n"
            "os.setgid(65534)\n"
            "os.setuid(65534)\n"
            f"sys.exit(fentry.cli.main(['run', '-K', 'sched:sched_switch', '-c', "
            f"{f'open({str(marker)!r}, chr(119))'!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(),
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Permission denied" in done.stderr and "root" in done.stderr, done.stderr
    assert not marker.exists()


@pytest.mark.ptrace
def test_attach_follows_the_threads_already_there(tracefs, tmp_path):
    program = tmp_path / "threads.py"
    program.write_text(
        "import os, threading, time\n"
        "def work():\n"
        "    os.getppid()\n"
        "    time.sleep(0.02)\n"
        "def worker():\n"
        "    while True:\n"
        "        work()\n"
        "threading.Thread(target=worker, name='w0', daemon=True).start()\n"
        "print(os.getpid(), threading.get_native_id(), flush=True)\n"
        "while True:\n"
        "    time.sleep(1)\n")
    target = subprocess.Popen([sys.executable, str(program)], stdout=subprocess.PIPE, text=True)
    try:
        target.stdout.readline()
        worker = [int(t) for t in os.listdir(f"/proc/{target.pid}/task") if int(t) != target.pid]
        done = fentry("attach", str(target.pid), "-t", "function_graph", "-l", "work",
                      "-K", "raw_syscalls:sys_enter",
                      "--kernel-filter", "raw_syscalls:sys_enter:id == 110", "--duration", "1")
    finally:
        target.kill()
        target.wait()
    assert done.returncode == 0, done.stderr
    comments = _comments(done.stdout)
    assert comments, done.stdout
    assert {int(m["tid"]) for m, _ in comments} == set(worker)
    assert all(text.startswith("sys_enter: NR 110 getppid (") for _, text in comments)
    # inside work()'s frames
    assert all(len(m["indent"]) >= 2 for m, _ in comments[1:])


def test_perfetto_export_has_them_as_ftrace_events_on_the_same_threads(tracefs, tmp_path):
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import BUILTIN_CLOCK_BOOTTIME, Trace
    from report.exports import perfetto_threads
    dat, out = tmp_path / "t.dat", tmp_path / "t.pftrace"
    done = fentry("record", "-t", "function_graph", "-K", "sched:sched_switch", "-K", "raw_syscalls",
                  "-o", str(dat), PIPE_SLEEP)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    export = fentry("report", "-i", str(dat), "--format", "perfetto", "-o", str(out))
    assert export.returncode == 0, export.stderr
    threads = perfetto_threads(str(out))            # (fentry's slices, checked as every export's)
    [(start, end, _, _)] = [s for s in threads[pid]["slices"] if s[2] == "reader"]
    trace = Trace.FromString(out.read_bytes())
    [boot] = [c.timestamp for p in trace.packet if p.HasField("clock_snapshot")
              for c in p.clock_snapshot.clocks if c.clock_id == BUILTIN_CLOCK_BOOTTIME]
    events = [(e.timestamp - boot, e) for p in trace.packet if p.HasField("ftrace_events")
              for e in p.ftrace_events.event]
    assert events
    # the read of the pipe, by the program's thread (the thread track's tid), inside reader's slice
    reads = [ts for ts, e in events if e.HasField("sys_enter") and e.sys_enter.id == 0
             and e.pid == pid and e.sys_enter.args[0] == 3]
    assert any(start <= ts <= end for ts in reads)
    switches = [e.sched_switch for _, e in events if e.HasField("sched_switch")]
    assert switches and all(pid in (s.prev_pid, s.next_pid) for s in switches)
    assert any(s.prev_pid == pid and s.prev_state == 1 for s in switches)     # slept (S)


def test_threads_the_program_starts_are_followed(tracefs, tmp_path):
    program = tmp_path / "threads.py"
    program.write_text(
        "import os, threading\n"
        "def work():\n"
        "    os.getppid()\n"
        "def worker():\n"
        "    work()\n"
        "ts = [threading.Thread(target=worker, name=f'w{k}') for k in range(3)]\n"
        "for t in ts:\n"
        "    t.start()\n"
        "for t in ts:\n"
        "    t.join()\n"
        "print(*(t.native_id for t in ts))\n")
    out = tmp_path / "trace.txt"
    done = fentry("run", "-t", "function_graph", "-l", "work", "-K", "raw_syscalls:sys_enter",
                  "--kernel-filter", "raw_syscalls:sys_enter:id == 110", "-o", str(out), str(program))
    assert done.returncode == 0, done.stderr
    tids = {int(t) for t in done.stdout.split()}
    lines = [GRAPH_LINE.match(line) for line in out.read_text().splitlines()]
    lines = [m for m in lines if m]
    # each thread's getppid, inside its work() frame, under the thread's name
    for tid in tids:
        mine = [(m["task"], m["indent"], m["text"]) for m in lines if int(m["tid"]) == tid]
        texts = [text for _, _, text in mine]
        assert texts[0] == "work() {" and texts[-1] == "}" and len(texts) == 3, mine
        assert mine[1][1] == "  " and texts[1].startswith("/* sys_enter: NR 110 getppid ("), mine
        assert {task for task, _, _ in mine} <= {f"w{k}" for k in range(3)}
