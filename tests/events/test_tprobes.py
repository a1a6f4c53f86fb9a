"""Tracepoint probes (``t`` in dynamic_events) and eprobes on Python's
tracepoints (issue 14), as a user writes and reads them: in the process
(``fentry.tracefs()``), with ``fentry run -e``, and ``fentry record`` +
``report``; ``fentry run`` on both hot paths."""

from __future__ import annotations

import errno
import re
import textwrap
import time

import pytest
from helpers import body, env, fentry, fentry_run, longrun_under_fentry

import fentry as fentry_api
from fentry.errors import TraceError

LINE = re.compile(r"^\s*(?P<task>\S+)-\d+\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: "
                  r"(?P<event>\S+): (?:\((?P<where>[^)]*)\))?(?P<fields>.*)$")
PATHS = [pytest.param({}, id="c"), pytest.param({"FENTRY_PURE_PYTHON": "1"}, id="pure")]
THREADS = 4
CALLS = 100_000

# Every 5th call raises in inner, passing through middle and worker (where
# it is handled): RAISE fires in the three frames; every 1000th call opens
# the program itself for reading.
RAISES = """
    import sys, threading

    def inner(i):
        if i % 5 == 0:
            raise ValueError(i)
        return i

    def middle(i):
        return inner(i)

    def worker(n):
        for i in range(n):
            try:
                middle(i)
            except ValueError:
                pass
            if i % 1000 == 0:
                with open(__file__) as f:
                    f.read(1)

    N = int(sys.argv[1])
    threads = [threading.Thread(target=worker, args=(N,), name=f"w{k}") for k in range(int(sys.argv[2]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("done")
"""


def program(tmp_path, source: str = RAISES) -> str:
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(source))
    return str(path)


def events(trace: str) -> list[tuple[str, str, str, dict[str, str]]]:
    """(thread, event, where, fields) of each event line."""
    out = []
    for line in body(trace):
        m = LINE.match(line)
        assert m, line
        out.append((m["task"], m["event"], m["where"], dict(re.findall(r'(\w+)=("[^"]*"|\S+)', m["fields"]))))
    return out


def run(tmp_path, *opts: str, extra_env=None, calls: int = CALLS):
    prog = program(tmp_path)
    proc, trace = fentry_run(tmp_path, "-t", "nop", "--buffer-size-kb", "32768", *opts,
                             program=(prog, str(calls), str(THREADS)), text=True,
                             env=env(**(extra_env or {})))
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    return prog, events(trace)


# ---------------------------------------------------------------- fentry run, at scale

@pytest.mark.parametrize("extra_env", PATHS)
def test_a_tprobe_on_raise_records_every_raise_with_its_fields(tmp_path, extra_env):
    _, got = run(tmp_path, "-e", "t raise $arg*", "-f", 'func ~ "__main__:*"', extra_env=extra_env)
    per_thread: dict[str, list] = {}
    for task, event, where, f in got:
        assert (event, where, f["type"]) == ("raise", "raise", '"ValueError"')
        per_thread.setdefault(task, []).append((f["func"], f["value"]))
    assert sorted(per_thread) == [f"w{k}" for k in range(THREADS)]
    want = [(f'"__main__:{func}"', f'"ValueError({i})"')
            for i in range(0, CALLS, 5) for func in ("inner", "middle", "worker")]
    for k in range(THREADS):
        assert per_thread[f"w{k}"] == want


@pytest.mark.parametrize("extra_env", PATHS)
def test_a_tprobe_on_an_audit_event_fetches_its_arguments(tmp_path, extra_env):
    prog, got = run(tmp_path, "-e", "t:files/opened open p=path how=mode:string $comm",
                    "-f", f'p == "{tmp_path / "prog.py"}"', extra_env=extra_env)
    assert {(e, w) for _, e, w, _ in got} == {("opened", "open")}
    by_thread: dict[str, int] = {}
    for task, _, _, f in got:
        assert f == {"p": repr(prog), "how": '"r"', "arg3": f'"{task}"'}
        by_thread[task] = by_thread.get(task, 0) + 1
    assert by_thread == {f"w{k}": CALLS // 1000 for k in range(THREADS)}


@pytest.mark.parametrize("extra_env", PATHS)
def test_an_eprobe_on_python_raise_with_its_filters_counts_exactly(tmp_path, extra_env):
    """The 'if' on python:raise's fields picks the handling frame's raises;
    the eprobe's own filter, on its own fields, a third of them."""
    _, got = run(tmp_path, "-e", 'e:exc/handled python.raise v=$value:string at=$func:string '
                 'if func == "__main__:worker"', "-f", 'v ~ "*0)"', extra_env=extra_env)
    per_thread: dict[str, list] = {}
    for task, event, where, f in got:
        assert (event, where, f["at"]) == ("handled", "python.raise", '"__main__:worker"')
        per_thread.setdefault(task, []).append(f["v"])
    want = [f'"ValueError({i})"' for i in range(0, CALLS, 5) if i % 10 == 0]
    assert per_thread == {f"w{k}": want for k in range(THREADS)}


def test_record_and_report_print_what_run_prints(tmp_path):
    prog = program(tmp_path)
    opts = ("-t", "nop", "-e", "t raise $arg*", "-f", 'func == "__main__:inner"',
            "-e", "t:files/opened open path mode", "-e", "e:ep/er python.raise t=$type:string n=$offset")
    args = (prog, "2000", "2")
    ran = fentry("run", *opts, "-o", str(tmp_path / "run.txt"), *args)
    assert ran.returncode == 0 and ran.stdout == "done\n", ran.stderr
    dat = tmp_path / "t.dat"
    rec = fentry("record", *opts, "-o", str(dat), *args)
    assert (rec.returncode, rec.stdout) == (0, "done\n"), rec.stderr
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0 and rep.stderr == "", rep.stderr

    def lines(text):
        return sorted((task, e, w, tuple(f.items())) for task, e, w, f in events(text))
    want = lines((tmp_path / "run.txt").read_text())
    assert lines(rep.stdout) == want
    count: dict[str, int] = {}
    for _, e, _, fields in want:
        # (the program's own: not those of its `import threading`, the
        # import system's raises and its open of the module's file)
        if dict(fields).get("t", "ValueError").strip('"') == "ValueError" \
                and dict(fields).get("path", repr(prog)) == repr(prog):
            count[e] = count.get(e, 0) + 1
    # (every raise passes three frames: the eprobe sees them all)
    assert count == {"raise": 2 * 400, "er": 2 * 400 * 3, "opened": 2 * 2}


def test_a_hist_on_a_tprobe(tmp_path):
    prog = program(tmp_path)
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "t raise func", "--hist", "raise:keys=func",
                             program=(prog, "1000", "2"), text=True)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    rows = dict(re.findall(r'\{ func: "?(__main__:\w+)"? *\} hitcount: +(\d+)', proc.stderr + trace))
    assert rows == {"__main__:inner": "400", "__main__:middle": "400", "__main__:worker": "400"}


# ---------------------------------------------------------------- the file, in the process

def raise_some(n: int) -> None:
    for i in range(n):
        try:
            raise KeyError(i)
        except KeyError:
            pass


def test_tprobes_defined_read_back_and_removed():
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", "t raise $arg*\nt:g/gc gc_done collected $arg1\n"
                               "t:g/conn socket_connect address")
    assert fs.read("dynamic_events") == (
        "t:tracepoints/raise raise type=type value=value func=func offset=offset\n"
        "t:g/gc gc_done collected=collected arg2=$arg1\n"
        "t:g/conn socket_connect address=address\n")
    assert sorted(fs.ls("events/g")) == ["conn", "enable", "gc"]
    fmt = fs.read("events/g/gc/format")
    assert "\tfield:unsigned long __probe_ip;\toffset:8;\tsize:8;\tsigned:0;\n" in fmt
    assert "\tfield:s64 collected;\toffset:16;\tsize:8;\tsigned:1;\n" in fmt
    assert fmt.endswith('print fmt: "(%lx) collected=%Ld arg2=%Ld", REC->__probe_ip, '
                        'REC->collected, REC->arg2\n')
    # Removal: by name, and by point and arguments (trace_fprobe_match).
    with pytest.raises(TraceError, match="No such event"):
        fs.write("dynamic_events", "-:g/gc gc_done collected=nope", append=True)
    fs.write("dynamic_events", "-:g/gc gc_done collected=collected", append=True)
    fs.write("dynamic_events", "-:tracepoints/raise", append=True)
    assert fs.read("dynamic_events") == "t:g/conn socket_connect address=address\n"
    # Enabled, it is busy.
    fs.write("events/g/conn/enable", "1")
    with pytest.raises(TraceError) as e:
        fs.write("dynamic_events", "-:g/conn", append=True)
    assert e.value.errno == errno.EBUSY
    fs.write("events/g/conn/enable", "0")
    fs.write("dynamic_events", "")
    assert fs.read("dynamic_events") == ""


def test_a_tprobe_arms_its_tracepoint_for_itself_alone():
    """Its tracepoint records nothing of its own; a tprobe, its filter, its
    trigger and the tracepoint's own record, each as a user reads them."""
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", "t raise value:string f=func")
    fs.write("events/tracepoints/raise/filter", 'f ~ "*raise_some"')
    fs.write("events/tracepoints/raise/enable", "1")
    assert fs.read("events/python/raise/enable") == "0*\n"
    raise_some(3)
    fs.write("events/tracepoints/raise/enable", "0")
    got = events(fs.read("trace"))
    assert [(e, w, f) for _, e, w, f in got] == [
        ("raise", "raise", {"value": f'"KeyError({i})"', "f": f'"{__name__}:raise_some"'})
        for i in range(3)]
    assert fs.read("events/python/raise/enable") == "0\n"
    # With python:raise enabled too: its record, then the tprobe's.
    fs.write("trace", "")
    fs.write("events/tracepoints/raise/trigger", "traceoff:1 if value == \"KeyError(1)\"")
    fs.write("events/python/raise/enable", "1")
    fs.write("events/tracepoints/raise/enable", "1")
    raise_some(3)
    fs.write("events/enable", "0")
    got = [(e, f.get("value")) for _, e, _, f in events(fs.read("trace"))]
    assert got == [("raise", "KeyError(0)"), ("raise", '"KeyError(0)"'),
                   ("raise", "KeyError(1)"), ("raise", '"KeyError(1)"')]
    assert fs.read("tracing_on") == "0\n"
    fs.write("tracing_on", "1")
    fs.write("events/tracepoints/raise/trigger", "!traceoff")
    fs.write("dynamic_events", "")


def test_an_eprobe_on_gc_done_in_an_instance():
    import gc
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", "e:mem/full gc.gc_done n=$collected if generation == 2")
    fs.mkdir("instances/one")
    fs.write("instances/one/events/mem/full/enable", "1")
    gc.collect(0)
    gc.collect(2)
    gc.collect(1)
    gc.collect(2)
    fs.write("instances/one/events/mem/full/enable", "0")
    assert body(fs.read("trace")) == []
    got = events(fs.read("instances/one/trace"))
    assert [(e, w) for _, e, w, _ in got] == [("full", "gc.gc_done")] * 2
    fs.rmdir("instances/one")
    fs.write("dynamic_events", "")


def test_an_eprobe_on_audit_open_with_its_if(tmp_path):
    target = str(tmp_path / "x.txt")
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", f'e:files/read audit.open p=$path:string m=$mode if path == "{target}"')
    assert fs.read("dynamic_events") == "e:files/read audit.open p=$path:string m=$mode\n"
    fs.write("events/files/read/filter", 'm == "r"')
    fs.write("events/files/read/enable", "1")
    for mode in ("w", "r", "a", "r"):
        with open(target, mode):
            pass
    with open(tmp_path / "other.txt", "w"):
        pass
    fs.write("events/files/read/enable", "0")
    assert [(e, w, f) for _, e, w, f in events(fs.read("trace"))] == \
        [("read", "audit.open", {"p": f'"{target}"', "m": "'r'"})] * 2
    fs.write("dynamic_events", "")


# What error_log says of a bad line: (line, message, caret column under the
# command), as trace_fprobe.c and trace_probe.c log them.
BAD = [
    ("t python:raise", "Invalid character in tracepoint name", 8),
    ("t raise%return", "Invalid probed address suffix", 7),
    ("t raise $retval", "$retval is not available on probe", 8),
    ("t raise x=$retval", "$retval is not available on probe", 10),
    ("t nosuch", "Tracepoint is not found", 2),
    ("t raise nofield", "This variable is not found at this probe point", 8),
    ("t raise x=$arg5", "This variable is not found at this probe point", 10),
    ("t3 raise", "Maxactive is only for function exit", 1),
    ("t raise $arg* $arg*", "$arg* can be used only once in the parameters", 14),
    ("t raise type=$arg1 type=func", "This argument name is already used", 19),
    ("t raise $arg* type", "This argument name is already used", 14),
    ("t:2bad raise", "Event name must follow the same rules as C identifiers", 2),
    ("t raise", "Given group/event name is already used by another event", 0),
]


@pytest.mark.parametrize("line,message,caret", BAD, ids=[b[0] for b in BAD])
def test_a_bad_line_is_logged_with_its_caret_and_changes_nothing(line, message, caret):
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", "t raise")
    before = fs.read("dynamic_events")
    fs.write("error_log", "")
    with pytest.raises(TraceError) as e:
        fs.write("dynamic_events", line, append=True)
    assert e.value.errno == errno.EINVAL or message.startswith("Given")
    assert fs.read("dynamic_events") == before
    head, command, carets = fs.read("error_log").splitlines()
    assert head.endswith(f"] trace_fprobe: error: {message}")
    assert command == f"  Command: {line}"
    assert carets == " " * 11 + " " * caret + "^"
    fs.write("dynamic_events", "")


def test_fentry_run_refuses_a_bad_tprobe_before_the_program_runs(tmp_path):
    prog = program(tmp_path)
    proc, _ = fentry_run(tmp_path, "-e", "t python:raise", program=(prog, "10", "1"), text=True)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "Invalid character in tracepoint name" in proc.stderr


def test_a_tprobe_live_with_fentry_p(tmp_path):
    """Defined, filtered, enabled and read in a running program over its
    control socket (``fentry -p PID``); a bad line is refused with its caret."""
    with longrun_under_fentry(tmp_path) as pid:
        def write(path, text, *a):
            got = fentry("-p", pid, "write", *a, path, text)
            assert got.returncode == 0, got.stderr
        write("dynamic_events", "t:live/appended call_c callable func", "-a")
        assert fentry("-p", pid, "read", "dynamic_events").stdout == \
            "t:live/appended call_c callable=callable func=func\n"
        write("events/live/appended/filter", 'callable == "list.append"')
        write("events/live/appended/enable", "1")
        deadline = time.monotonic() + 30
        got = []
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            got = events(fentry("-p", pid, "read", "trace").stdout)
        write("events/live/appended/enable", "0")
        assert len(got) >= 3
        assert {(e, w, f["callable"], f["func"]) for _, e, w, f in got} == \
            {("appended", "call_c", '"list.append"', '"__main__:add"')}
        bad = fentry("-p", pid, "write", "-a", "dynamic_events", "t:live/x call_c nope")
        assert bad.returncode != 0
        assert "  Command: t:live/x call_c nope\n" + " " * 11 + " " * 16 + "^" in bad.stderr
        assert "This variable is not found at this probe point" in bad.stderr
        write("dynamic_events", "")
