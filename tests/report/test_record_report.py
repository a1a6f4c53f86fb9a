"""fentry record and fentry report: the raw trace in a file, formatted later,
exactly as fentry run formats it live."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(os.path.dirname(TESTS), "src")
SHOPAPP = os.path.join(TESTS, "programs", "shopapp.py")

# What differs between two runs of one program: timestamps, thread ids, durations.
VOLATILE = [(re.compile(r"-\d+ "), "-TID "), (re.compile(r"\d+\.\d{6}:"), "TS:"),
            (re.compile(r"\| [ +!#*@$] +[\d.]+ us +\|"), "| DURATION |")]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def fentry(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    return subprocess.run([sys.executable, "-m", "fentry", *args], capture_output=True, text=True,
                          env=env(), **kw)


def normalized(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        for pattern, repl in VOLATILE:
            line = pattern.sub(repl, line)
        out.append(line)
    return out


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
        if "not permitted" in rec.stderr:
            pytest.skip(rec.stderr.strip())
        assert rec.returncode == 0, rec.stderr
        rep = fentry("report", "-i", str(dat))
        assert rep.stdout.startswith("# tracer: function\n")
        assert rep.stdout.count(": tick <-<module>") > 20
    finally:
        proc.kill()
        proc.wait()
