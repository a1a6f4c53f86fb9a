"""Thread names as they were at the time of each event (issue 13): a thread
renamed while traced, by itself, by ``setName`` or by another thread, shows
each name on the lines of its time, in ``trace``, ``trace_pipe``, ``fentry
run``, ``fentry record`` + ``fentry report`` and the Perfetto export; the
``Thread.name`` property is wrapped only while fentry traces."""

from __future__ import annotations

import os
import queue
import re
import threading
import warnings

import pytest
from helpers import body, fentry

import fentry as fentry_module
from fentry.control import tracefs as tracefs_module

HERE = __name__
PROGRAM = os.path.join(os.path.dirname(os.path.dirname(__file__)), "programs", "renames.py")
# Any line with a probe event of step: its task, and the name step was given.
STEP = re.compile(r"^\s*(?P<task>\S+)-(?P<tid>\d+)\s.*\(step\+0x0\) arg1='(?P<name>[^']*)'")
ORIGINAL = threading.Thread.__dict__["name"]


def step(name):
    return name


def named_steps(text: str) -> list[tuple[str, str]]:
    """(task, name given) of every step line; each must be the same."""
    got = []
    for line in body(text):
        m = STEP.match(line)
        if m:
            got.append((m["task"], m["name"]))
    return got


def renames(names, out=None, back=None):
    """Steps under each of ``names``: renamed by ``name =``, then ``setName``,
    then ``name =``; with queues, waits for ``back`` after each name."""
    me = threading.current_thread()
    for k, name in enumerate(names):
        if k == 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                me.setName(name)
        elif k:
            me.name = name
        for _ in range(3):
            step(name)
        if out is not None:
            out.put(k)
            back.get()


def start_events(fs, tracer: str) -> None:
    fs.write("kprobe_events", f"p:names/step {HERE}:step name")
    fs.write("events/names/step/enable", "1")
    if tracer != "nop":
        fs.write("set_ftrace_filter", f"{HERE}:step")
        fs.write("current_tracer", tracer)


def check(got: list[tuple[str, str]], want: int) -> None:
    assert len(got) == want
    assert all(task == name[:16] for task, name in got), got


@pytest.mark.parametrize("tracer", ["nop", "function", "function_graph"])
def test_trace_shows_each_name_on_the_lines_of_its_time(fs, tracer):
    start_events(fs, tracer)
    threads = [threading.Thread(target=renames, args=([f"t{i}", f"t{i}-b", f"t{i}-c", f"t{i}-d"],),
                                name=f"t{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(named_steps(fs.read("trace")), 3 * 4 * 3)
    assert fs.read("trace").count("task_rename") == 0     # (a name, not a line)


def test_trace_pipe_between_renames_and_a_rename_by_another_thread(fs):
    """Read between each rename and the next, and once with a rename of the
    thread by the reader between two reads of its records."""
    start_events(fs, "function_graph")
    out, back = queue.Queue(), queue.Queue()
    names = ["p0", "p0-b", "p0-c"]
    t = threading.Thread(target=renames, args=(names, out, back), name="p0")
    t.start()
    text = ""
    for k in range(len(names)):
        out.get()
        if k == 1:
            t.name = "p0-other"         # its records so far keep their names
        text += fs.read("trace_pipe")
        back.put(k)
    t.join()
    text += fs.instance.read_pipe(final=True)
    check(named_steps(text), 9)


def test_snapshot_keeps_the_names_of_its_records(fs):
    start_events(fs, "nop")
    t = threading.Thread(target=renames, args=(["s0", "s0-b"],), name="s0")
    t.start()
    t.join()
    fs.write("snapshot", "1")
    check(named_steps(fs.read("snapshot")), 6)


def test_the_property_is_wrapped_only_while_tracing_and_restored_on_detach(fs):
    tracefs_module.forget()
    fs = fentry_module.tracefs()
    assert threading.Thread.__dict__["name"] is ORIGINAL        # nothing recorded yet
    start_events(fs, "nop")
    step("x")
    wrapped = threading.Thread.__dict__["name"]
    assert wrapped is not ORIGINAL and wrapped.__doc__ == ORIGINAL.__doc__
    t = threading.Thread(name="a")
    t.name = 12                         # as threading's: str() of it
    assert t.name == "12"
    bare = threading.Thread.__new__(threading.Thread)
    with pytest.raises(AssertionError):
        bare.name = "b"
    fs.reset()
    tracefs_module.forget()
    assert threading.Thread.__dict__["name"] is ORIGINAL


def _steps_of(text: str) -> list[tuple[str, str]]:
    got = named_steps(text)
    check(got, 3 * (3 * 3 + 1))
    return got


def test_run_and_record_report_show_the_names_of_their_time(tmp_path):
    """renames.py: 3 threads, each renamed twice by itself and once by the
    main thread."""
    opts = ("-t", "nop", "-e", "p __main__:step name")
    run = fentry("run", *opts, PROGRAM, "3")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("property True") == 1
    got = _steps_of(run.stderr if "arg1=" in run.stderr else run.stdout)
    assert {name for _, name in got} == {f"w{i}{s}" for i in range(3)
                                         for s in ("", "-b", "-c", "-main")}
    dat = str(tmp_path / "r.dat")
    rec = fentry("record", *opts, "-o", dat, PROGRAM, "3")
    assert rec.returncode == 0, rec.stderr
    rep = fentry("report", "-i", dat)
    assert rep.returncode == 0, rep.stderr
    _steps_of(rep.stdout)
    from report.exports import chrome_threads, perfetto_threads
    want = {f"w{i}-main": [(f"w{i}", f"w{i}-b"), (f"w{i}-b", f"w{i}-c"), (f"w{i}-c", f"w{i}-main")]
            for i in range(3)}
    out = str(tmp_path / "r.json")
    exp = fentry("report", "-i", dat, "--format", "chrome", "-o", out)
    assert exp.returncode == 0, exp.stderr
    workers = {t["name"]: t for t in chrome_threads(out).values() if t["name"].startswith("w")}
    assert {name: [(args["oldcomm"], args["newcomm"]) for _, ev, args in t["instants"]
                   if ev == "task_rename"] for name, t in workers.items()} == want
    pytest.importorskip("perfetto")
    out = str(tmp_path / "r.pftrace")
    exp = fentry("report", "-i", dat, "--format", "perfetto", "-o", out)
    assert exp.returncode == 0, exp.stderr
    threads = perfetto_threads(out)
    workers = {t["name"]: t for t in threads.values() if t["name"].startswith("w")}
    assert {name: [(notes["oldcomm"], notes["newcomm"]) for _, ev, notes in t["instants"]
                   if ev == "task_rename"] for name, t in workers.items()} == want  # (its last name)
