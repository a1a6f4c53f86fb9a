"""trace_marker: the file, ``fentry.trace_marker()`` in the program, and where
markers go (the kernel's ``markers`` and ``copy_trace_marker`` options)."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import threading

import pytest
from helpers import body, env, fentry, graph_lines

import fentry as fentry_api
from fentry import TraceError

HERE = __name__
MARK = re.compile(r"tracing_mark_write: (?P<text>.*)$")


def step(i):
    return i + 1


def marked(fs, path: str = "trace") -> list[str]:
    """The markers' texts in a trace, in order."""
    return [m["text"] for line in body(fs.read(path)) if (m := MARK.search(line))]


def test_a_marker_is_printed_where_it_was_written(fs):
    fs.write("set_ftrace_filter", f"{HERE}:step")
    fs.write("current_tracer", "function_graph")
    for i in range(3):
        step(i)
        fentry_api.trace_marker(f"after step {i}\n")
    fs.write("tracing_on", "0")
    lines = [m["text"] for m in graph_lines(fs.read("trace"))
             if m["tid"] == str(threading.get_native_id())]
    assert lines == ["step();", "/* tracing_mark_write: after step 0 */",
                     "step();", "/* tracing_mark_write: after step 1 */",
                     "step();", "/* tracing_mark_write: after step 2 */"]


def test_the_function_tracer_prints_the_kernels_line(fs):
    fs.write("current_tracer", "nop")
    fs.write("trace_marker", "hello")
    line, = body(fs.read("trace"))
    assert re.fullmatch(r"\s*\S+-\d+\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: tracing_mark_write: hello",
                        line), line


def test_every_marker_of_busy_threads_is_in_its_threads_order(fs):
    """Four threads, each 20000 calls and a marker after each call: every
    marker is there, in its thread's order, right after its call."""
    n = 20000
    fs.write("buffer_size_kb", "20000")
    fs.write("set_ftrace_filter", f"{HERE}:step")
    fs.write("current_tracer", "function_graph")
    tids: dict[int, str] = {}

    def work(k: int) -> None:
        tids[threading.get_native_id()] = str(k)
        for i in range(n):
            step(i)
            fentry_api.trace_marker(f"{k}:{i}")

    threads = [threading.Thread(target=work, args=(k,), name=f"m{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fs.write("tracing_on", "0")
    per_thread: dict[str, list[str]] = {}
    for m in graph_lines(fs.read("trace")):
        if int(m["tid"]) in tids:
            per_thread.setdefault(tids[int(m["tid"])], []).append(m["text"])
    assert sorted(per_thread) == ["0", "1", "2", "3"]
    for k, lines in per_thread.items():
        want = [x for i in range(n) for x in ("step();", f"/* tracing_mark_write: {k}:{i} */")]
        assert lines == want, k


def test_markers_off_refuses_the_file_and_drops_the_programs(fs):
    fs.write("trace_options", "nomarkers")
    with pytest.raises(TraceError) as e:
        fs.write("trace_marker", "no")
    assert "the markers option is off" in str(e.value)
    fentry_api.trace_marker("dropped")
    fs.write("trace_options", "markers")
    fentry_api.trace_marker("kept")
    assert marked(fs) == ["kept"]


def test_tracing_off_refuses_the_file_as_the_kernels_ebadf(fs):
    fs.write("tracing_on", "0")
    with pytest.raises(TraceError) as e:
        fs.write("trace_marker", "no")
    assert "tracing is off" in str(e.value)
    fentry_api.trace_marker("dropped")
    fs.write("tracing_on", "1")
    assert marked(fs) == []


def test_trace_marker_cannot_be_read(fs):
    with pytest.raises(TraceError):
        fs.read("trace_marker")


def test_the_top_level_copies_to_instances_that_ask(fs):
    """As the kernel's copy_trace_marker: the top level's writes (and the
    program's markers) go to the instances with it on; an instance's own
    trace_marker only to itself."""
    fs.mkdir("instances/a")
    fs.mkdir("instances/b")
    fs.write("instances/b/trace_options", "copy_trace_marker")
    assert "nocopy_trace_marker" in fs.read("instances/a/trace_options").split()
    assert "copy_trace_marker" in fs.read("trace_options").split()
    fs.write("trace_marker", "top")
    fentry_api.trace_marker("program")
    fs.write("instances/a/trace_marker", "only a")
    assert marked(fs) == ["top", "program"]
    assert marked(fs, "instances/a/trace") == ["only a"]
    assert marked(fs, "instances/b/trace") == ["top", "program"]
    fs.write("trace_options", "nocopy_trace_marker")
    fentry_api.trace_marker("b alone")
    assert marked(fs) == ["top", "program"]
    assert marked(fs, "instances/b/trace")[-1] == "b alone"


class Hostile(str):
    def __str__(self):
        raise RuntimeError("never called")


class Loud:
    def __repr__(self):
        raise RuntimeError("never called")

    def __str__(self):
        raise RuntimeError("never called")


def test_hostile_and_huge_texts_never_run_the_programs_code(fs):
    fentry_api.trace_marker(Hostile("a str subclass"))
    fentry_api.trace_marker(b"bytes \xff")
    fentry_api.trace_marker(Loud())
    fentry_api.trace_marker("\u00e9" * 10_000)      # 2 bytes each in UTF-8
    fentry_api.trace_marker(42)
    got = marked(fs)
    assert got[:2] == ["a str subclass", "bytes \\xff"]
    assert got[2].startswith("<") and "Loud" in got[2]
    assert got[3] == "\u00e9" * 2048
    assert got[4] == "42"


def test_without_fentry_a_marker_does_nothing(tmp_path):
    """No agent: a call, nothing printed, nothing of fentry's tracing loaded."""
    code = ("import sys, fentry\n"
            "for i in range(1000):\n    fentry.trace_marker(f'm{i}')\n"
            "print(sorted(m for m in sys.modules if m.startswith('fentry.')))\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(),
                         timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (0, "[]\n", "")


PROGRAM = """
import threading, fentry
def work(i):
    return i
def worker(k):
    for i in range(1000):
        work(i)
        fentry.trace_marker(f"{k} {i}")
ts = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
for t in ts: t.start()
for t in ts: t.join()
print("done")
"""


@pytest.mark.slow
def test_a_program_marks_its_run_and_its_recording(tmp_path):
    script = tmp_path / "marks.py"
    script.write_text(PROGRAM)
    out = tmp_path / "trace.txt"
    run = fentry("run", "-t", "function", "-l", "work", "-o", str(out), str(script))
    assert (run.returncode, run.stdout) == (0, "done\n"), run.stderr
    texts = [m["text"] for line in body(out.read_text()) if (m := MARK.search(line))]
    assert sorted(texts) == sorted(f"{k} {i}" for k in range(3) for i in range(1000))
    dat = tmp_path / "m.dat"
    rec = fentry("record", "-t", "function", "-l", "work", "-o", str(dat), str(script))
    assert rec.returncode == 0, rec.stderr
    rep = fentry("report", "-i", str(dat))
    lines = body(rep.stdout)
    assert sum(1 for line in lines if MARK.search(line)) == 3000
    assert sum(1 for line in lines if ": work <-worker" in line) == 3000


def test_trace_marker_raw_prints_as_the_kernels_raw_data(fs):
    """Checked on the 6.18 kernel: an int id and data, padded with zeros to
    whole words, ``# ID buf: XX ...``; under 4 bytes or over 4064, EINVAL;
    tracing off, EBADF; not readable."""
    fs.write("trace_marker_raw", struct.pack("i", 42) + b"hello")
    fs.write("trace_marker_raw", struct.pack("i", 7))
    fs.write("trace_marker_raw", struct.pack("i", -1) + bytes(range(1, 10)))
    fs.write("trace_marker_raw", struct.pack("i", 1) + b"y" * 4060)
    for bad in (b"", b"ab", struct.pack("i", 1) + b"y" * 4061):
        with pytest.raises(TraceError) as e:
            fs.write("trace_marker_raw", bad)
        assert e.value.code == "RAW_MARKER_SIZE"
    lines = [line.split(": ", 1)[1] for line in fs.read("trace").splitlines() if "buf:" in line]
    assert lines[:3] == ["# 2a buf: 68 65 6c 6c 6f 00 00 00", "# 7 buf:",
                         "# ffffffff buf: 01 02 03 04 05 06 07 08 09 00 00 00"]
    assert lines[3] == "# 1 buf:" + " 79" * 4060 and len(lines) == 4
    with pytest.raises(TraceError):
        fs.read("trace_marker_raw")
    fs.write("tracing_on", "0")
    with pytest.raises(TraceError) as e:
        fs.write("trace_marker_raw", struct.pack("i", 5))
    assert e.value.code == "TRACING_OFF"


RAW_PROGRAM = """
import struct, fentry
def work(i):
    return i
for i in range(500):
    work(i)
    fentry.tracefs().write("trace_marker_raw", struct.pack("i", i) + b"ab")
"""


@pytest.mark.slow
def test_raw_markers_go_through_run_and_record(tmp_path):
    script = tmp_path / "raw.py"
    script.write_text(RAW_PROGRAM)
    want = [f"# {i:x} buf: 61 62 00 00" for i in range(500)]
    run = fentry("run", "-t", "function", "-l", "work", str(script))
    assert run.returncode == 0, run.stderr
    assert [line.split(": ", 1)[1] for line in body(run.stderr) if "buf:" in line] == want
    dat = tmp_path / "r.dat"
    assert fentry("record", "-t", "function", "-l", "work", "-o", str(dat), str(script)).returncode == 0
    rep = fentry("report", "-i", str(dat))
    assert [line.split(": ", 1)[1] for line in body(rep.stdout) if "buf:" in line] == want
