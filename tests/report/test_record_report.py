"""fentry record and fentry report: the raw trace in a file, formatted later,
exactly as fentry run formats it live."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import SHOPAPP, fentry

# What differs between two runs of one program: timestamps, thread ids, durations.
VOLATILE = [(re.compile(r"-\d+ "), "-TID "), (re.compile(r"\d+\.\d{6}:"), "TS:"),
            (re.compile(r"\| [ +!#*@$] +[\d.]+ us +\|"), "| DURATION |")]


def normalized(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        for pattern, repl in VOLATILE:
            line = pattern.sub(repl, line)
        out.append(line)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("opts", [("-t", "function_graph", "-l", "__main__:*"),
                                  ("-t", "function", "-l", "__main__:*"),
                                  ("-t", "nop", "-e", "p __main__:cents x", "-e", "r __main__:fib $retval")],
                         ids=["graph", "function", "probes"])
def test_report_prints_what_run_prints(tmp_path, opts):
    """Threads, generators, exceptions and asyncio: the same lines, but for
    timestamps, thread ids and durations; the program's output and status
    the same."""
    run_out = tmp_path / "run.txt"
    run = fentry("run", *opts, "-o", str(run_out), SHOPAPP, "3")
    dat = tmp_path / "shop.dat"
    rec = fentry("record", *opts, "-o", str(dat), SHOPAPP, "3")
    assert run.returncode == 3
    assert (rec.stdout, rec.returncode) == (run.stdout, run.returncode)
    assert rec.stderr.startswith("fentry record: ") and f"bytes of raw trace in {dat}" in rec.stderr
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0 and rep.stderr == "", rep.stderr
    want, got = normalized(run_out.read_text()), normalized(rep.stdout)
    assert len(got) > 20
    assert got == want


@pytest.mark.slow
def test_report_to_a_file_and_the_default_file(tmp_path):
    got = fentry("record", "-t", "function", "-l", "fib", SHOPAPP, cwd=tmp_path)
    assert got.returncode == 0 and (tmp_path / "fentry.dat").exists()
    out = tmp_path / "report.txt"
    rep = fentry("report", "-o", str(out), cwd=tmp_path)
    assert rep.returncode == 0 and rep.stdout == ""
    assert out.read_text().count(": fib <-") > 10


KILLED = """
import os, signal, sys, time
def tick(i):
    return i
for i in range(50):
    tick(i)
time.sleep(0.3)                     # a drain or two: these are out
for i in range(50, 60):
    tick(i)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_a_program_killed_while_recorded_is_reported_up_to_its_last_drain(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    dat = tmp_path / "k.dat"
    rec = fentry("record", "-t", "function", "-l", "tick", "-o", str(dat), str(script))
    assert rec.returncode == -signal.SIGKILL
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0
    ticks = [line for line in rep.stdout.splitlines() if ": tick <-<module>" in line]
    assert len(ticks) >= 50
    assert "stops at its last drain: it ended before it could send the rest" in rep.stderr


@pytest.mark.slow
def test_a_recording_cut_mid_frame_is_read_to_its_last_whole_frame(tmp_path):
    """fentry record itself killed (or its disk full): what was written reads."""
    dat = tmp_path / "cut.dat"
    got = fentry("record", "-t", "function", "-l", "fib", "-o", str(dat), SHOPAPP)
    assert got.returncode == 0
    data = dat.read_bytes()
    whole = fentry("report", "-i", str(dat)).stdout.count(": fib <-")
    dat.write_bytes(data[:-7])          # the last frame, short of its end
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0
    assert "bytes into a frame: the recording was cut there" in rep.stderr
    assert 0 <= rep.stdout.count(": fib <-") <= whole


def test_report_of_what_is_not_a_recording(tmp_path):
    rep = fentry("report", "-i", str(tmp_path / "none.dat"))
    assert rep.returncode == 2 and "no " in rep.stderr and "fentry record writes it" in rep.stderr
    bad = tmp_path / "bad.dat"
    bad.write_text("hello\n")
    rep = fentry("report", "-i", str(bad))
    assert rep.returncode == 2 and "is not a fentry.dat file" in rep.stderr


@pytest.mark.ptrace
def test_record_a_running_program(tmp_path):
    """fentry record -p PID: an attach session, recorded."""
    script = tmp_path / "loop.py"
    script.write_text("import sys, time\ndef tick(i):\n    return i\nprint('ready', flush=True)\n"
                      "i = 0\nwhile True:\n    tick(i)\n    i += 1\n    time.sleep(0.001)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        dat = tmp_path / "att.dat"
        rec = fentry("record", "-p", str(proc.pid), "-t", "function", "-l", "tick", "--duration",
                     "0.5", "-o", str(dat))
        assert rec.returncode == 0, rec.stderr
        rep = fentry("report", "-i", str(dat))
        assert rep.stdout.startswith("# tracer: function\n")
        assert rep.stdout.count(": tick <-<module>") > 20
    finally:
        proc.kill()
        proc.wait()


DEEP = """
import sys
import threading
import time
sys.setrecursionlimit(30000)
def r(n):
    return 0 if n == 0 else r(n - 1) + 1
for _ in range({rounds}):
    r({depth})
print("done", flush=True)
"""


@pytest.mark.slow
def test_a_deep_graph_is_formatted_in_bounded_memory(tmp_path, monkeypatch):
    """Two spaces a level: 5,000 levels deep a line is 10 KB.  The report
    formats a drain a slice at a time (its memory does not grow with the
    drain's text), and the slices give the lines formatting it whole gives."""
    script = tmp_path / "deep.py"
    script.write_text(DEEP.format(rounds=3, depth=5000))
    dat = tmp_path / "deep.dat"
    assert fentry("record", "-t", "function_graph", "-l", "__main__:r", "-o", str(dat),
                  str(script)).returncode == 0
    # VmHWM, not ru_maxrss: that one carries over exec the peak of the
    # (v)forking process, pytest's own.
    probe = ("import sys\nfrom fentry.cli import main\nmain(sys.argv[1:])\n"
             "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr)\n")
    out = tmp_path / "deep.txt"
    rep = subprocess.run([sys.executable, "-c", probe, "report", "-i", str(dat), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    peak_kb = int(rep.stderr.split()[-1])
    assert out.stat().st_size > 150_000_000        # 30,000 lines of up to 10 KB
    assert peak_kb < 120_000, peak_kb               # formatted whole: ~400 MB

    from fentry.cli import main
    from fentry.report import text
    whole = tmp_path / "whole.txt"
    monkeypatch.setattr(text, "SLICE_RECORDS", 10**9)
    assert main(["report", "-i", str(dat), "-o", str(whole)]) == 0
    monkeypatch.setattr(text, "SLICE_RECORDS", 7)
    small = tmp_path / "small.txt"
    assert main(["report", "-i", str(dat), "-o", str(small)]) == 0
    assert whole.read_bytes() == small.read_bytes() == out.read_bytes()


@pytest.mark.slow
def test_a_signal_after_the_program_ended_stops_the_formatting(tmp_path):
    """The program is over; what is left is fentry's: SIGTERM stops it, says
    so, and fentry dies of it (a deep trace takes long to format)."""
    script = tmp_path / "deep.py"
    script.write_text(DEEP.format(rounds=40, depth=10000))
    proc = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "function_graph",
                             "-l", "__main__:r", "-o", str(tmp_path / "t.txt"), str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "done\n"
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"
    deadline = time.monotonic() + 30
    while open(children).read().strip() and time.monotonic() < deadline:
        time.sleep(0.01)        # the program is gone: a signal now is fentry's alone
    time.sleep(0.3)             # (and fentry has seen it go; formatting takes seconds more)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    assert err == ("fentry run: stopped by SIGTERM after the program ended (status 0); "
                   "the trace is incomplete\n")


@pytest.mark.slow
def test_a_recording_read_from_a_pipe_and_a_reader_that_goes(tmp_path):
    """``fentry report -i <(zcat t.dat.gz) | head``: the recording comes
    through a pipe and is read in turn, and when head goes the report stops
    reading at once -- the pipe it reads breaks before the recording has all
    gone through -- and exits 0, saying nothing."""
    script = tmp_path / "deep.py"
    script.write_text(DEEP.format(rounds=40, depth=10000))
    dat = tmp_path / "deep.dat"
    assert fentry("record", "-t", "function_graph", "-l", "__main__:r", "-o", str(dat),
                  str(script)).returncode == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    small = tmp_path / "shop.dat"
    assert fentry("record", "-t", "function_graph", "-o", str(small), SHOPAPP).returncode == 0
    whole = fentry("report", "-i", str(small))
    with open(small, "rb") as f:
        fed = fentry("report", "-i", "/dev/stdin", stdin=f)
    assert fed.returncode == 0 and fed.stderr == "" and fed.stdout == whole.stdout

    rep = subprocess.Popen([sys.executable, "-m", "fentry", "report", "-i", str(fifo)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wrote = []

    def feed() -> None:
        try:
            with open(fifo, "wb") as w, open(dat, "rb") as r:
                shutil.copyfileobj(r, w)
            wrote.append("all")
        except BrokenPipeError:
            wrote.append("broken")

    feeder = threading.Thread(target=feed)
    feeder.start()
    assert rep.stdout.readline() == b"# tracer: function_graph\n"
    rep.stdout.close()
    assert rep.wait(timeout=60) == 0
    feeder.join(timeout=60)
    assert wrote == ["broken"]
    assert rep.stderr.read() == b""
