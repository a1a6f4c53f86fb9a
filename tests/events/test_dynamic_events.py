"""dynamic_events, fprobe (f:) and eprobe (e:) events, as a user writes and
reads them: in the process (``fentry.tracefs()``), with ``fentry run -e``,
``fentry record`` + ``report``, and ``fentry -p PID``; on both hot paths."""

from __future__ import annotations

import errno
import importlib
import os
import re

import pytest
from helpers import PROGRAMS, body, env, fentry, fentry_run, longrun_under_fentry

import fentry as fentry_api
from fentry.errors import TraceError

DYNEVENTS = os.path.join(PROGRAMS, "dynevents.py")
CALLS = 100_000
THREADS = 4
LINE = re.compile(r"^\s*(?P<task>\S+)-\d+\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: "
                  r"(?P<event>\S+): \((?P<where>[^)]*)\)(?P<fields>.*)$")
PATHS = [pytest.param({}, id="c"), pytest.param({"FENTRY_PURE_PYTHON": "1"}, id="pure")]


@pytest.fixture
def dynevents(monkeypatch):
    """tests/programs/dynevents.py, imported in this process (as ``dynevents``)."""
    monkeypatch.syspath_prepend(PROGRAMS)
    return importlib.import_module("dynevents")


def events(trace: str) -> list[tuple[str, str, str, dict[str, str]]]:
    """(thread, event, where, fields) of each event line."""
    out = []
    for line in body(trace):
        m = LINE.match(line)
        assert m, line
        out.append((m["task"], m["event"], m["where"],
                    dict(f.split("=", 1) for f in m["fields"].split())))
    return out


def run(tmp_path, *opts: str, calls: int = CALLS, threads: int = THREADS, extra_env=None):
    proc, trace = fentry_run(tmp_path, "-t", "nop", "--buffer-size-kb", "16384", *opts,
                             program=(DYNEVENTS, str(calls), str(threads)), sep=False, text=True,
                             env=env(**(extra_env or {})))
    assert proc.returncode == 0, proc.stderr
    total = sum(3 * i + t for t in range(threads) for i in range(calls))
    assert proc.stdout == f"total {total}\n"            # the program's own output, untouched
    return events(trace)


# ---------------------------------------------------------------- the file

DEFINED = ("p:kprobes/kp dynevents:work x=a y=b\n"
           "r:kprobes/r_work_0 dynevents:work\n"
           "f:fprobes/work__entry dynevents:work a=a b=b scale=scale\n"
           "f8:g/exit dynevents:work%return arg1=$retval\n"
           "e:eprobes/ep kprobes.kp w=$x:u8\n")


def define_all(fs) -> None:
    fs.write("dynamic_events", "p:kp dynevents:work x=a y=b\n"
                               "r dynevents:work\n"
                               "f dynevents:work $arg*\n")
    fs.write("dynamic_events", "f8:g/exit dynevents:work $retval", append=True)
    fs.write("dynamic_events", "e:ep kprobes.kp w=$x:u8 if x > 1", append=True)


def test_every_kind_in_one_file_and_p_r_in_kprobe_events(dynevents):
    fs = fentry_api.tracefs()
    define_all(fs)
    # The kernel's forms: $arg* expanded, a $retval makes an exit probe, no
    # eprobe 'if' shown (eprobe_dyn_event_show).
    assert fs.read("dynamic_events") == DEFINED
    assert fs.read("kprobe_events") == "".join(DEFINED.splitlines(True)[:2])
    assert [g for g in fs.ls("events") if g not in ("audit", "gc", "python")] == \
        ["enable", "eprobes", "fprobes", "g", "kprobes"]      # (and Python's tracepoints)
    assert fs.ls("events/fprobes/work__entry") == ["enable", "filter", "format", "hist", "id", "trigger"]
    # An eprobe's record is the common fields and its own (PROBE_PRINT_EVENT).
    fmt = fs.read("events/eprobes/ep/format")
    assert "__probe_ip" not in fmt
    assert "\tfield:u8 w;\toffset:8;\tsize:1;\tsigned:0;\n" in fmt
    assert fmt.endswith('print fmt: " w=%u", REC->w\n')
    # One registry: a kprobe defined through either file is the same event.
    with pytest.raises(TraceError) as e:
        fs.write("kprobe_events", "p:kp dynevents:work", append=True)
    assert e.value.code == "EVENT_EXIST"


def test_removal_matches_as_dyn_event_release(dynevents):
    fs = fentry_api.tracefs()
    define_all(fs)
    for line in ("-:eprobes/ep kprobes.kp w=$x:u16",    # an argument that is not its own
                 "-:eprobes/ep kprobes.other",
                 "-:fprobes/work__entry dynevents:work b=b",
                 "-:nosuch"):
        with pytest.raises(TraceError) as e:
            fs.write("dynamic_events", line, append=True)
        assert e.value.code == "NO_SUCH_EVENT", line
    assert fs.read("dynamic_events") == DEFINED
    # An event an eprobe is attached to cannot go, by either file (-EBUSY).
    with pytest.raises(TraceError) as e:
        fs.write("dynamic_events", "-:kprobes/kp", append=True)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(TraceError) as e:
        fs.write("kprobe_events", "")
    assert e.value.errno == errno.EBUSY
    assert fs.read("dynamic_events") == DEFINED         # nothing half-applied
    fs.write("dynamic_events", "-:eprobes/ep kprobes/kp w=$x:u8", append=True)
    fs.write("dynamic_events", "-:fprobes/work__entry dynevents:work a=a", append=True)
    fs.write("dynamic_events", "-:exit dynevents:work", append=True)     # (no %return: the symbol)
    assert fs.read("dynamic_events") == "".join(DEFINED.splitlines(True)[:2])
    define_all(fs)
    # kprobe_events '>' takes its own only; dynamic_events '>' takes all.
    fs.write("dynamic_events", "-:eprobes/", append=True)
    fs.write("kprobe_events", "")
    assert fs.read("dynamic_events") == "".join(DEFINED.splitlines(True)[2:4])
    fs.write("dynamic_events", "")
    assert fs.read("dynamic_events") == ""


def test_an_enabled_event_is_busy(dynevents):
    fs = fentry_api.tracefs()
    define_all(fs)
    fs.write("events/fprobes/work__entry/enable", "1")
    for line in ("-:fprobes/work__entry",):
        with pytest.raises(TraceError) as e:
            fs.write("dynamic_events", line, append=True)
        assert e.value.errno == errno.EBUSY
    with pytest.raises(TraceError) as e:
        fs.write("dynamic_events", "")
    assert e.value.errno == errno.EBUSY
    fs.write("events/fprobes/work__entry/enable", "0")
    fs.write("events/eprobes/ep/enable", "1")
    with pytest.raises(TraceError) as e:
        fs.write("dynamic_events", "-:ep", append=True)
    assert e.value.errno == errno.EBUSY
    fs.write("events/eprobes/ep/enable", "0")
    fs.write("dynamic_events", "")
    assert fs.read("dynamic_events") == ""


# What error_log says of a bad line: (line, subsystem, message, caret column
# under the command).  The eprobe ones as trace_eprobe.c logs them.
BAD = [
    ("e:ep2 kprobes.nope", "event_probe", "Attached event does not exist", 6),
    ("e:ep2 kprobes", "event_probe", "This requires both group and event name to attach", 6),
    ("e:ep2 kprobes.kp z=$nofield", "event_probe", "Invalid $-variable specified", 17),
    ("e:ep2 kprobes.kp z=$retval", "event_probe", "Invalid $-variable specified", 17),
    ("e:ep2 kprobes.kp z=x", "event_probe", "BTF is not available or not supported", 19),
    ("e:ep2 kprobes.kp z=$x if", "event_probe", "No filter rule after 'if'", 24),   # (the end)
    ("e:ep2 kprobes.kp z=$x:u99", "event_probe", "Unknown type is specified", 22),
    ("e:2bad kprobes.kp", "event_probe", "Event name must follow the same rules as C identifiers", 2),
    ("e:ep eprobes.ep", "event_probe", "Attached event does not exist", 5),   # not on an eprobe
    ("e kprobes.kp", "event_probe", "Given group/event name is already used by another event", 0),
    ("f dynevents:nosuch", "trace_fprobe", "Invalid probed address or symbol", 2),
    ("f dynevents:work+4", "trace_fprobe", "Invalid probed address or symbol", 2),
    ("f dynevents:work%exit", "trace_fprobe", "Invalid probed address suffix", 16),
    ("f3 dynevents:work", "trace_fprobe", "Maxactive is only for function exit", 1),
    ("f0 dynevents:work%return", "trace_fprobe", "Invalid maxactive number", 1),
    ("f4097:x dynevents:work%return", "trace_fprobe", "Maxactive is too big", 1),
    ("f dynevents:work $arg* $arg*", "trace_fprobe", "$arg* can be used only once in the parameters", 23),
    ("f dynevents:work a a", "trace_fprobe", "This argument name is already used", 19),
]


@pytest.mark.parametrize("line,subsystem,message,caret", BAD, ids=[b[0] for b in BAD])
def test_a_bad_line_is_logged_with_its_caret_and_changes_nothing(dynevents, line, subsystem,
                                                                 message, caret):
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", "p:kp dynevents:work x=a\ne kprobes.kp $x")
    before = fs.read("dynamic_events")
    fs.write("error_log", "")
    with pytest.raises(TraceError):
        fs.write("dynamic_events", line, append=True)
    assert fs.read("dynamic_events") == before
    head, command, carets = fs.read("error_log").splitlines()
    assert head.endswith(f"] {subsystem}: error: {message}")
    assert command == f"  Command: {line}"
    assert carets == " " * 11 + " " * caret + "^"


def test_an_unknown_kind_is_refused_and_not_logged():
    fs = fentry_api.tracefs()
    with pytest.raises(TraceError) as e:
        fs.write("dynamic_events", "z:foo bar")
    assert e.value.errno == errno.EINVAL
    assert fs.read("error_log") == ""        # (the kernel's create_dyn_event logs nothing)


# ---------------------------------------------------------------- eprobes in the process

def test_an_eprobe_alone_arms_its_event_in_soft_mode(dynevents):
    """The attached event records nothing of its own, and every one of its
    hits that passes the 'if' gives the eprobe exactly one record."""
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", "p:kp dynevents:work x=a y=b\n"
                               "e:ep kprobes.kp w=$x:u8 y=$y if x >= 250")
    fs.write("events/eprobes/ep/enable", "1")
    assert fs.read("events/kprobes/kp/enable") == "0*\n"       # armed for the eprobe only
    dynevents.run(7, 300, {})
    got = events(fs.read("trace"))
    assert [(e, w, f) for _, e, w, f in got] == [
        ("ep", "kprobes.kp", {"w": str(i % 256), "y": "7"}) for i in range(250, 300)]
    # Its own filter, on its own fields.
    fs.write("trace", "")
    fs.write("events/eprobes/ep/filter", "w < 3")
    dynevents.run(7, 300, {})
    assert [f["w"] for _, _, _, f in events(fs.read("trace"))] == ["0", "1", "2"]
    # Enabled too, the attached event records every hit, and its own filter
    # does not stop the eprobe's.
    fs.write("trace", "")
    fs.write("events/kprobes/kp/filter", "x < 2")
    fs.write("events/kprobes/kp/enable", "1")
    dynevents.run(7, 300, {})
    assert [(e, f.get("x", f.get("w"))) for _, e, _, f in events(fs.read("trace"))] == \
        [("kp", "0"), ("kp", "1"), ("ep", "0"), ("ep", "1"), ("ep", "2")]   # (x = 256, 257, 258)
    fs.write("events/eprobes/ep/enable", "0")
    fs.write("events/kprobes/kp/enable", "0")
    fs.write("trace", "")
    dynevents.run(7, 300, {})
    assert body(fs.read("trace")) == []


def test_an_eprobe_record_follows_its_sources(dynevents):
    """As the kernel's, whose eprobe record is nested in the attached event's."""
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", "p:kp dynevents:work x=a\ne:ep kprobes.kp x=$x")
    fs.write("events/kprobes/enable", "1")
    fs.write("events/eprobes/enable", "1")
    dynevents.run(0, 3, {})
    assert [(e, f["x"]) for _, e, _, f in events(fs.read("trace"))] == \
        [(e, str(i)) for i in range(3) for e in ("kp", "ep")]


def test_an_eprobe_in_an_instance_fires_there_only(dynevents):
    fs = fentry_api.tracefs()
    fs.write("dynamic_events", "f dynevents:work $arg*\ne:ep fprobes.work__entry b=$b s=$scale")
    fs.mkdir("instances/one")
    fs.write("instances/one/events/eprobes/ep/enable", "1")
    dynevents.run(2, 5, {})
    assert body(fs.read("trace")) == []
    got = events(fs.read("instances/one/trace"))
    assert [(e, w, f) for _, e, w, f in got] == [("ep", "fprobes.work__entry", {"b": "2", "s": "3"})] * 5


# ---------------------------------------------------------------- fentry run, at scale

@pytest.mark.parametrize("extra_env", PATHS)
def test_fprobe_args_and_retval_on_every_call_of_every_thread(tmp_path, extra_env):
    got = run(tmp_path, "-e", "f __main__:work $arg*", "-e", "f __main__:work%return $retval",
              extra_env=extra_env)
    per_thread: dict[str, list] = {}
    for task, event, where, fields in got:
        assert where == ("work+0x0" if event == "work__entry" else f"{where.split()[0]} <- work")
        per_thread.setdefault(task, []).append((event, fields))
    assert sorted(per_thread) == [f"worker{t}" for t in range(THREADS)]
    for t in range(THREADS):
        want = []
        for i in range(CALLS):
            want.append(("work__entry", {"a": str(i), "b": str(t), "scale": "3"}))
            want.append(("work__exit", {"arg1": str(3 * i + t)}))
        assert per_thread[f"worker{t}"] == want


@pytest.mark.parametrize("extra_env", PATHS)
def test_an_eprobe_gives_one_record_per_hit_with_its_fields(tmp_path, extra_env):
    got = run(tmp_path, "-e", "p:kp __main__:work x=a y=b",
              "-e", "e:ep kprobes.kp w=$x:u8 t=$y if y == 1", "-f", "w < 10",
              extra_env=extra_env)
    kp = [(task, f["x"], f["y"]) for task, e, _, f in got if e == "kp"]
    assert sorted(kp) == sorted((f"worker{t}", str(i), str(t))
                                for t in range(THREADS) for i in range(CALLS))
    ep = [(task, w, f) for task, e, w, f in got if e == "ep"]
    assert ep == [("worker1", "kprobes.kp", {"w": str(i % 256), "t": "1"})
                  for i in range(CALLS) if i % 256 < 10]


def test_record_and_report_print_what_run_prints(tmp_path):
    opts = ("-t", "nop", "-e", "f __main__:work $arg*", "-e", "f __main__:work%return $retval",
            "-e", "e:ep fprobes.work__exit r=$arg1:x16")
    args = (DYNEVENTS, "1000", "2")
    ran = fentry("run", *opts, "-o", str(tmp_path / "run.txt"), *args)
    assert ran.returncode == 0, ran.stderr
    dat = tmp_path / "dyn.dat"
    rec = fentry("record", *opts, "-o", str(dat), *args)
    assert (rec.returncode, rec.stdout) == (0, ran.stdout)
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0 and rep.stderr == "", rep.stderr

    def lines(text):
        return sorted((task, e, w, tuple(f.items())) for task, e, w, f in events(text))
    want = lines((tmp_path / "run.txt").read_text())
    assert len(want) == 2 * 1000 * 3
    assert lines(rep.stdout) == want
    assert ("worker1", "ep", "fprobes.work__exit", (("r", hex(3 * 999 + 1)),)) in want


def test_a_bad_e_stops_fentry_run_before_the_program(tmp_path):
    proc, trace = fentry_run(tmp_path, "-e", "e:ep kprobes", program=(DYNEVENTS, "1", "1"),
                             sep=False, text=True)
    assert proc.returncode != 0 and proc.stdout == "" and trace == ""
    assert "This requires both group and event name to attach" in proc.stderr
    assert "Command: e:ep kprobes" in proc.stderr


# ---------------------------------------------------------------- fentry -p PID

def test_dynamic_events_through_fentry_p_pid(tmp_path):
    with longrun_under_fentry(tmp_path) as pid:
        assert fentry("-p", pid, "write", "-a", "dynamic_events", "f add $arg*").returncode == 0
        assert fentry("-p", pid, "write", "-a", "dynamic_events",
                      "e:q fprobes.add__entry q=$qty").returncode == 0
        assert fentry("-p", pid, "read", "dynamic_events").stdout == (
            "f:fprobes/add__entry add cart=cart item=item qty=qty\n"
            "e:eprobes/q fprobes.add__entry q=$qty\n")
        bad = fentry("-p", pid, "write", "-a", "dynamic_events", "e:r fprobes.add__entry $nope")
        assert bad.returncode != 0
        assert "Invalid $-variable specified" in bad.stderr
        assert "  Command: e:r fprobes.add__entry $nope\n" + " " * 11 + " " * 23 + "^" in bad.stderr
        assert "Invalid $-variable specified" in fentry("-p", pid, "read", "error_log").stdout
        assert fentry("-p", pid, "write", "dynamic_events", "").returncode == 0
        assert fentry("-p", pid, "read", "dynamic_events").stdout == ""
        assert fentry("-p", pid, "detach").returncode == 0
