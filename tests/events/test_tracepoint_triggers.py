"""Triggers and hists on Python's tracepoints (issue 14): the same
``trigger`` and ``hist`` files as a probe event's, with soft mode -- on real
programs through ``fentry run`` and in process.  Run on both hot paths
(``FENTRY_PURE_PYTHON=1`` for the pure one)."""

from __future__ import annotations

import re
import textwrap

from helpers import body, fentry_run

RAISER = """
    import sys, threading
    N = int(sys.argv[1])
    def f(i):
        try:
            if i % 3 == 0:
                raise KeyError(i)
            raise ValueError(i)
        except Exception:
            pass
    def work():
        for i in range(N):
            f(i)
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("done")
"""


def program(tmp_path, source: str, name: str = "prog.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def hist_rows(text: str) -> dict[tuple[str, ...], int]:
    """``{ a: x, b: y } hitcount: N`` rows: (x, y) -> N."""
    rows = {}
    for m in re.finditer(r"^\{ (.*) \} hitcount: +(\d+)", text, flags=re.M):
        key = tuple(part.split(":", 1)[1].strip() for part in m[1].split(" , ")
                    if ":" in part)
        rows[key] = int(m[2])
    return rows


def test_a_hist_on_python_raise_counts_every_raise_of_every_thread(tmp_path):
    """4 threads x 30000 calls: exactly a KeyError in a third of them and a
    ValueError in the rest; the event only feeds the hist (no line)."""
    prog = program(tmp_path, RAISER)
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "python:raise",
                             "--hist", "python:raise:keys=type,func:sort=hitcount.descending",
                             program=(prog, "30000"), text=True)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    hist = trace[trace.index("# events/python/raise/hist"):]
    rows = hist_rows(hist)
    mine = {key: n for key, n in rows.items() if key[1].startswith("__main__:")}
    assert mine == {("ValueError", "__main__:f"): 80000, ("KeyError", "__main__:f"): 40000}
    # the rest: the program's `import threading` (fentry imports none of it
    # before the program does), the import system's own raises
    assert all(key[1].startswith(("importlib.", "zipimport:")) for key in rows.keys() - mine), rows
    hits = sum(rows.values())
    assert re.search(rf"Hits: {hits}\n\s+Entries: {len(rows)}\n\s+Dropped: 0", hist)
    assert not [line for line in body(trace[:trace.index("# events/python/raise/hist")])
                if "raise:" in line]


AUDIT = """
    import os, sys
    target = sys.argv[1]
    def save(text):
        with open(target, "w") as f:
            f.write(text)
    for i in range(3):
        save(str(i))
    open(os.devnull).close()
    print("ok")
"""


def test_audit_open_with_a_stacktrace_trigger_on_the_path(tmp_path):
    """The issue's example: the program's opens of one file, each followed
    by its Python stack, from a ``stacktrace`` trigger filtered on the path."""
    prog = program(tmp_path, AUDIT)
    target = str(tmp_path / "target.txt")
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "audit:open", "-f", f'path == "{target}"',
                             "-R", f'stacktrace if path == "{target}"',
                             program=(prog, target), text=True)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr
    lines = body(trace)
    opens = [i for i, line in enumerate(lines) if " open: " in line]
    assert len(opens) == 3 and all(f"path={target}" in lines[i] for i in opens)
    for i in opens:
        assert lines[i + 1].endswith("<stack trace>")
        assert lines[i + 2].startswith(" => save (prog.py:")
        assert lines[i + 3].startswith(" => <module> (prog.py:")


def test_trigger_file_soft_mode_and_traceoff_on_a_tracepoint(fs):
    fs.write("events/python/raise/trigger", 'traceoff:1 if type == "KeyError"')
    assert fs.read("events/python/raise/trigger") == 'traceoff:count=1 if type == "KeyError"\n'
    assert fs.read("events/python/raise/enable") == "0*\n"     # armed for its trigger only
    fs.write("events/python/raise/enable", "1")
    assert fs.read("events/python/raise/enable") == "1*\n"

    def f(i):
        try:
            raise (KeyError if i == 5 else ValueError)(i)
        except Exception:
            pass
    for i in range(10):
        f(i)
    raises = [line for line in body(fs.read("trace")) if " raise: " in line]
    # traceoff runs after the event is recorded: the KeyError is the last line
    assert [re.search(r"value=(\w+\(\d+\))", line)[1] for line in raises] == \
        [f"ValueError({i})" for i in range(5)] + ["KeyError(5)"]
    assert fs.read("tracing_on") == "0\n"
    assert fs.read("events/python/raise/trigger") == 'traceoff:count=0 if type == "KeyError"\n'
    fs.write("events/python/raise/trigger", "!traceoff", append=True)
    fs.write("events/python/raise/enable", "0")
    assert fs.read("events/python/raise/enable") == "0\n"
    assert fs.read("events/python/raise/trigger").startswith("# Available triggers:")


def test_enable_event_from_a_tracepoint_to_another(fs):
    """A gc collection turns python:raise on: raises before it are not
    recorded, those after it are."""
    import gc
    fs.write("events/gc/gc_start/trigger", "enable_event:python:raise:1")
    assert fs.read("events/python/raise/enable") == "0*\n"

    def boom(i):
        try:
            raise ValueError(i)
        except ValueError:
            pass
    gc.disable()            # (only the collection asked for)
    try:
        boom(1)
        gc.collect()
        boom(2)
    finally:
        gc.enable()
    raises = [line for line in body(fs.read("trace")) if " raise: " in line]
    assert len(raises) == 1 and "ValueError(2)" in raises[0]
    assert fs.read("events/gc/gc_start/trigger") == "enable_event:python:raise:count=0\n"
