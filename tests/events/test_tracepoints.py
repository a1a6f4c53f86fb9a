"""Python's own tracepoints (issue 14): python:*, gc:*, audit:*, set_event
and available_events -- on real programs, through ``fentry run``,
``fentry record`` / ``report`` and ``fentry.tracefs()``.  Run on both hot
paths (``FENTRY_PURE_PYTHON=1`` for the pure one)."""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import weakref

import pytest
from helpers import body, fentry, fentry_run, fentry_tool_ids, plain

import fentry as fentry_module
from fentry import hotpath
from fentry.control import tracefs as tracefs_module
from fentry.errors import TraceError

LINE = re.compile(r"^\s*(?P<task>\S+)-(?P<tid>\d+)\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: "
                  r"(?P<event>\w+): (?P<fields>.*)$")


def events(trace: str, name: str | None = None) -> list[dict[str, str]]:
    """The tracepoint lines' fields (``event`` too), of ``name`` only if given."""
    out = []
    for line in body(trace):
        m = LINE.match(line)
        if m and (name is None or m["event"] == name):
            fields = dict(re.findall(r"(\w+)=(\S+)", m["fields"]))
            fields["event"] = m["event"]
            out.append(fields)
    return out


def program(tmp_path, source: str, name: str = "prog.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


# -- python:raise counts equal sys.monitoring's RAISE events ----------------------

RAISES = """
    import sys, threading
    mon = sys.monitoring
    TOOL = [i for i in range(6) if mon.get_tool(i) is None][0]     # (a closed genexpr raises)
    mon.use_tool_id(TOOL, "counter")
    seen = [0]
    lock = threading.Lock()

    # (Only closure and default names: the callback runs in fentry's threads
    # too, where 3.12 has been seen to fail the program's global lookups.)
    def on_raise(code, offset, exc, here=__file__, seen=seen, lock=lock):
        if code.co_filename == here:
            with lock:
                seen[0] += 1

    mon.register_callback(TOOL, mon.events.RAISE, on_raise)
    mon.set_events(TOOL, mon.events.RAISE)

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

    N = int(sys.argv[1])
    threads = [threading.Thread(target=worker, args=(N,), name=f"w{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mon.set_events(TOOL, 0)
    mon.free_tool_id(TOOL)
    print(seen[0])
"""


def test_python_raise_counts_equal_sys_monitorings_raise_events(tmp_path):
    """Each exception passes through inner, middle and worker: RAISE fires in
    each (sys.monitoring's semantics), in 4 threads; fentry's python:raise
    lines are exactly the program's own tool's RAISE events."""
    n = 25_000
    prog = program(tmp_path, RAISES)
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "python:raise",
                             "-f", 'func ~ "__main__:*"', program=(prog, str(n)), text=True)
    assert proc.returncode == 0, proc.stderr
    seen = int(proc.stdout)
    assert seen == 4 * (n // 5) * 3           # every 5th call raises, in 3 frames
    raised = events(trace, "raise")
    assert len(raised) == seen
    by_func = {}
    for e in raised:
        by_func[e["func"]] = by_func.get(e["func"], 0) + 1
    assert by_func == {"__main__:inner": seen // 3, "__main__:middle": seen // 3,
                       "__main__:worker": seen // 3}
    assert {e["type"] for e in raised} == {"ValueError"}
    assert "ValueError(5)" in {e["value"] for e in raised}


def test_python_raise_through_record_and_report(tmp_path):
    prog = program(tmp_path, RAISES)
    dat = tmp_path / "t.dat"
    rec = fentry("record", "-t", "nop", "-e", "python:raise", "-f", 'func == "__main__:inner"',
                 "-o", str(dat), prog, "100")
    assert rec.returncode == 0, rec.stderr
    rep = fentry("report", "-i", str(dat))
    assert rep.returncode == 0, rep.stderr
    raised = events(rep.stdout, "raise")
    assert len(raised) == 4 * 20
    assert {(e["type"], e["func"], e["offset"]) for e in raised} == {
        ("ValueError", "__main__:inner", raised[0]["offset"])}
    out = tmp_path / "t.json"
    assert fentry("report", "-i", str(dat), "--format", "chrome", "-o", str(out)).returncode == 0
    marks = [e for e in json.loads(out.read_text())["traceEvents"] if e.get("name") == "raise"]
    assert len(marks) == 80
    assert {(m["args"]["type"], m["args"]["func"]) for m in marks} == {("ValueError", "__main__:inner")}


# -- the other python events ------------------------------------------------------

EXCEPTIONS = """
    import sys
    from types import FunctionType
    mon = sys.monitoring
    E = mon.events
    TOOL = [i for i in range(6) if mon.get_tool(i) is None][0]     # (a closed genexpr raises)
    mon.use_tool_id(TOOL, "counter")
    seen = {}

    def count(name, here=__file__, seen=seen, length=len):
        # (Only closure and default names: the callback runs in fentry's threads
        # too, where 3.12 has been seen to fail the program's global lookups.)
        def callback(code, offset, *rest):
            if code.co_filename != here:
                return
            if name in ("call_c", "c_return") and rest[0] is not length:
                return
            seen[name] = seen.get(name, 0) + 1
        return callback

    for name, event in (("exception_handled", E.EXCEPTION_HANDLED), ("reraise", E.RERAISE),
                        ("py_unwind", E.PY_UNWIND), ("c_raise", E.C_RAISE),
                        ("call_c", E.CALL), ("c_return", E.C_RETURN), ("raise", E.RAISE)):
        mon.register_callback(TOOL, event, count(name))
    mon.set_events(TOOL, E.EXCEPTION_HANDLED | E.RERAISE | E.PY_UNWIND | E.CALL | E.C_RAISE
                   | E.C_RETURN | E.RAISE)

    def handled():
        try:
            raise KeyError("k")
        except KeyError:
            pass

    def reraised():
        try:
            raise OSError(2, "gone")
        except OSError:
            raise

    def unwound():
        reraised()

    handled()
    try:
        unwound()
    except OSError:
        pass
    for s in ("1", "x", "2"):
        try:
            int(s)
        except ValueError:
            pass
    n = 0
    for i in range(1000):
        n += len([i])
    mon.set_events(TOOL, 0)
    mon.free_tool_id(TOOL)
    print(n, sorted(seen.items()))
"""


def test_exception_and_c_call_events_as_sys_monitoring_sees_them(tmp_path):
    """Each python event's lines are exactly the program's own tool's events
    of that kind (in its code; call_c and c_return: of len)."""
    prog = program(tmp_path, EXCEPTIONS)
    main = 'func ~ "__main__:*"'
    opts = []
    for name in ("exception_handled", "reraise", "py_unwind", "c_raise", "raise"):
        opts += ["-e", f"python:{name}", "-f", main]
    opts += ["-e", "python:call_c", "-f", f'callable == "builtins.len" && {main}',
             "-e", "python:c_return", "-f", f'callable == "builtins.len" && {main}']
    proc, trace = fentry_run(tmp_path, "-t", "nop", *opts, program=(prog,), text=True)
    assert proc.returncode == 0, proc.stderr
    n, seen = proc.stdout.split(" ", 1)
    assert n == "1000"
    got = {}
    for e in events(trace):
        got[e["event"]] = got.get(e["event"], 0) + 1
    assert sorted(got.items()) == eval(seen)
    assert got["call_c"] == got["c_return"] == 1000
    assert [e["func"] for e in events(trace, "py_unwind")] == ["__main__:reraised", "__main__:unwound"]
    assert [(e["callable"], e["func"]) for e in events(trace, "c_raise")] == [
        ("builtins.int", "__main__:<module>")]
    assert {e["type"] for e in events(trace, "reraise")} == {"FileNotFoundError"}
    assert "FileNotFoundError(2," in {e["value"] for e in events(trace, "py_unwind")}


# -- gc -------------------------------------------------------------------------

GC = """
    import gc
    gc.disable()        # only the program's own collections: exact counts
    import sys, threading       # (its import is the program's: a collection in it would be one)
    seen = {"start": 0, "stop": 0}
    lock = threading.Lock()

    def counter(phase, info):
        with lock:
            seen[phase] += 1

    gc.callbacks.append(counter)

    def churn(k):
        for i in range(k):
            a = []
            a.append(a)
            gc.collect(i % 3)

    threads = [threading.Thread(target=churn, args=(50,), name=f"churn{k}") for k in range(3)]
    for t in threads:
        t.start()
    churn(20)
    for t in threads:
        t.join()
    gc.callbacks.remove(counter)
    print(seen["start"], seen["stop"])
"""


@pytest.mark.parametrize("how", ["run", "record"])
def test_gc_events_match_the_programs_gc_callbacks(tmp_path, how):
    prog = program(tmp_path, GC)
    opts = ("-t", "nop", "-e", "gc:gc_start", "-e", "gc:gc_done")
    if how == "run":
        proc, trace = fentry_run(tmp_path, *opts, program=(prog,), text=True)
        assert proc.returncode == 0, proc.stderr
        stdout = proc.stdout
    else:
        dat = tmp_path / "gc.dat"
        rec = fentry("record", *opts, "-o", str(dat), prog)
        assert rec.returncode == 0, rec.stderr
        stdout, trace = rec.stdout, fentry("report", "-i", str(dat)).stdout
    starts, stops = map(int, stdout.split())
    assert starts == stops >= 20     # (a collect while another runs is none: the count varies)
    done = events(trace, "gc_done")
    assert len(events(trace, "gc_start")) == starts and len(done) == stops
    assert sorted({e["generation"] for e in done}) == ["0", "1", "2"]
    assert all(int(e["collected"]) >= 0 and e["uncollectable"] == "0" for e in done)


# -- audit --------------------------------------------------------------------------

AUDIT = """
    import os, sys, pathlib
    target = sys.argv[1]

    def save(text):
        with open(target, "w") as f:
            f.write(text)

    for i in range(3):
        save(str(i))
    open(os.devnull).close()
    pathlib.Path(target).read_text()
    sys.audit("myapp.thing", 7, "seven")
    print("ok")
"""


def test_audit_open_with_a_filter_on_the_path(tmp_path):
    """Exactly the program's opens of the file (3 writes, a read through
    pathlib), with their Python stack (the stacktrace option); no other open."""
    prog = program(tmp_path, AUDIT)
    target = str(tmp_path / "target.txt")
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-O", "stacktrace",
                             "-e", "audit:open", "-f", f'path == "{target}"',
                             "-e", "audit:myapp_thing", program=(prog, target), text=True)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr
    opens = events(trace, "open")
    assert [(e["path"], e["mode"]) for e in opens] == [(target, "w")] * 3 + [(target, "r")]
    stacks = re.findall(r"<stack trace>\n((?: => .*\n)+)", trace)
    assert len(stacks) == 5
    assert all(" => save (prog.py:" in s for s in stacks[:3])
    assert " => <module> (prog.py:" in stacks[3]
    assert [(e["arg0"], e["arg1"]) for e in events(trace, "myapp_thing")] == [("7", "seven")]


def test_audit_hook_after_detach_holds_nothing_of_fentrys(tmp_path):
    """fentry's one audit hook, after its events are disabled: one test
    (C: a pointer; pure: a flag), and nothing of fentry's reachable from it:
    the tracing objects die with the tracefs."""
    fs = fentry_module.tracefs()
    fs.write("events/audit/open/enable", "1")
    fs.write("events/audit/enable", "1")
    assert hotpath.audit_hook_armed()
    fs.write("events/audit/enable", "0")
    assert not hotpath.audit_hook_armed()
    source = weakref.ref(fs.tracepoints.audit)
    del fs
    tracefs_module.forget()
    gc.collect()
    assert source() is None
    if hotpath.IMPLEMENTATION == "python":
        # The Python hook: its references are its flag, its code and an empty namespace.
        from fentry import pytrampolines
        cells = [o for o in gc.get_referrers(pytrampolines._audit_flag) if type(o).__name__ == "cell"]
        hooks = [f for c in cells for t in gc.get_referrers(c) if type(t) is tuple
                 for f in gc.get_referrers(t) if getattr(f, "__name__", "") == "audit_hook"]
        assert len(hooks) == 1
        seen, todo, reached = {id(hooks[0])}, [hooks[0]], []
        while todo:
            for ref in gc.get_referents(todo.pop()):
                if id(ref) not in seen:
                    seen.add(id(ref))
                    reached.append(ref)
                    todo.append(ref)
        assert not any(type(o).__name__ == "module" or type(o).__module__.startswith("fentry")
                       for o in reached)
        assert not any(isinstance(o, dict) and str(o.get("__name__", "")).startswith("fentry")
                       for o in reached)
        assert [o for o in reached if callable(o) and o is not hooks[0] and o is not Exception] == []
        assert pytrampolines._audit_flag == [None]
    # Off, an audited operation records nothing anywhere.
    with open(tmp_path / "x", "w"):
        pass
    assert events(fentry_module.tracefs().read("trace")) == []


def test_unknown_audit_events_get_an_event_of_their_own(fs):
    fs.write("events/audit/enable", "1")
    sys.audit("l1test.something-odd", 1, (2, 3), None)
    fs.write("events/audit/enable", "0")
    assert "audit:l1test_something_odd\n" in fs.read("available_events")
    got = [e for e in events(fs.read("trace")) if e["event"] == "l1test_something_odd"]
    assert got == [{"arg0": "1", "arg1": "(2,", "arg2": "None", "event": "l1test_something_odd"}]


# -- nothing of fentry's own -----------------------------------------------------------

def test_nothing_fentry_does_itself_appears(fs, tmp_path):
    """fentry's own raises, opens and calls, in the program's thread (its
    tracefs here) and in its threads, are not events; the program's are."""
    mine = str(tmp_path / "mine")          # (pathlib raises inside: the test's own, not here)
    fs.write("set_event", "python:raise python:exception_handled audit:open audit:compile")
    try:
        fs.write("events/python/raise/filter", "nosuchfield == 1")      # raises inside fentry
    except TraceError:
        pass
    fs.mkdir("instances/l1")
    fs.read("available_events")
    fs.rmdir("instances/l1")
    with open(mine, "w"):
        pass
    fs.write("set_event", "")
    trace = fs.read("trace")
    got = events(trace)
    assert [e["path"] for e in got if e["event"] == "open"] == [mine]
    # The TraceError comes out of fentry's write into this test: there it is the program's.
    assert [(e["event"], e["type"], e["func"].rsplit(".", 1)[-1]) for e in got if "func" in e] == [
        ("raise", "TraceError", "test_tracepoints:test_nothing_fentry_does_itself_appears"),
        ("exception_handled", "TraceError", "test_tracepoints:test_nothing_fentry_does_itself_appears")]
    assert "fentry/" not in trace


def test_after_disable_no_monitoring_event_or_callback_stays(fs):
    for name in ("raise", "reraise", "exception_handled", "py_unwind", "c_raise", "call_c",
                 "c_return"):
        fs.write(f"events/python/{name}/enable", "1")
        (tool,) = fentry_tool_ids()
        assert sys.monitoring.get_events(tool) != 0
        fs.write(f"events/python/{name}/enable", "0")
        assert fentry_tool_ids() == []
    fs.write("events/gc/enable", "1")
    assert len(gc.callbacks) >= 1
    callbacks = list(gc.callbacks)
    fs.write("events/gc/enable", "0")
    assert len(gc.callbacks) == len(callbacks) - 1
    fs.write("events/enable", "1")
    assert fs.read("events/enable") == "1\n" and fentry_tool_ids() != []
    fs.write("events/enable", "0")
    assert fentry_tool_ids() == [] and not hotpath.audit_hook_armed()


# -- the files ----------------------------------------------------------------------------

def test_the_events_files(fs):
    assert fs.ls("events") == ["enable", "audit", "gc", "python"]
    assert fs.ls("events/python") == ["enable", "c_raise", "c_return", "call_c", "exception_handled",
                                      "py_unwind", "raise", "reraise"]
    assert fs.ls("events/gc/gc_done") == ["enable", "filter", "format", "hist", "id", "trigger"]
    avail = fs.read("available_events").splitlines()
    for name in ("python:raise", "python:call_c", "gc:gc_start", "gc:gc_done", "audit:open",
                 "audit:socket_connect", "audit:subprocess_Popen", "audit:import"):
        assert name in avail
    assert avail[:2] == ["python:raise", "python:reraise"]
    assert fs.read("events/python/raise/id") == "1000\n"
    fmt = fs.read("events/gc/gc_done/format")
    assert fmt.startswith("name: gc_done\nID: 1008\nformat:\n")
    assert '\nprint fmt: "generation=%ld collected=%ld uncollectable=%ld", REC->generation, ' \
           'REC->collected, REC->uncollectable\n' in fmt
    fs.write("events/audit/open/filter", 'path ~ "*.txt" && flags > 0')
    assert fs.read("events/audit/open/filter") == 'path ~ "*.txt" && flags > 0\n'
    with pytest.raises(TraceError) as e:
        fs.write("events/gc/gc_done/filter", 'generation == "x"')
    assert e.value.message == "Expecting numeric field"
    assert fs.read("events/gc/gc_done/filter") == "none\n"
    # A probe event is listed as the kernel lists it, after the static ones.
    fs.write("kprobe_events", "p:myprobe tests.events.test_tracepoints:program")
    assert fs.read("available_events").splitlines()[-1] == "kprobes:myprobe"


def test_set_event_grammar(fs):
    """As the 6.18 kernel's set_event (checked against it in
    test_set_event_errors_as_the_kernels)."""
    def enabled(text, append=False):
        fs.write("set_event", text, append=append)
        return fs.read("set_event").split()

    assert enabled("python:raise gc:gc_done") == ["python:raise", "gc:gc_done"]
    assert enabled("gc:gc_start", append=True) == ["python:raise", "gc:gc_start", "gc:gc_done"]
    assert enabled("!python:raise", append=True) == ["gc:gc_start", "gc:gc_done"]
    assert enabled("gc") == ["gc:gc_start", "gc:gc_done"]              # a group's name
    assert enabled("gc_done") == ["gc:gc_done"]                         # an event's name
    assert enabled(":c_raise *:call_c") == ["python:c_raise", "python:call_c"]
    assert len(enabled("python:")) == 7 and len(enabled("python:*")) == 7
    assert enabled("!python:*", append=True) == []
    assert enabled("gc:*") == ["gc:gc_start", "gc:gc_done"]
    assert enabled("") == []                                            # > disables all
    assert fs.read("events/gc/enable") == "0\n"
    fs.write("events/gc/gc_done/enable", "1")
    assert fs.read("events/gc/enable") == "X\n" and fs.read("events/enable") == "X\n"
    for bad, pos in (("nosuch:event", 0), ("*", 0), ("!", 0), ("python:raise:x", 0),
                     ("python:rai*", 0), ("python/raise", 0), ("gc:gc_start bad gc:gc_done", 12)):
        with pytest.raises(TraceError) as e:
            fs.write("set_event", bad)
        assert (e.value.errno, e.value.pos) == (errno.EINVAL, pos), bad
        # nothing half-applied (the kernel applies the words before a bad one)
        assert fs.read("set_event") == "gc:gc_done\n"
    assert fs.read("error_log") == ""          # the kernel logs none of these


def test_set_event_per_instance(fs):
    fs.mkdir("instances/a")
    fs.write("instances/a/set_event", "python:raise")
    assert fs.read("instances/a/set_event") == "python:raise\n"
    assert fs.read("set_event") == ""
    try:
        raise RuntimeError("x")
    except RuntimeError:
        pass
    assert len(events(fs.read("instances/a/trace"), "raise")) == 1
    assert events(fs.read("trace")) == []
    fs.rmdir("instances/a")
    assert fentry_tool_ids() == []


@pytest.fixture
def kernel_tracefs():
    """An instance of the kernel's tracefs of our own (its set_event is its
    own: nothing of the machine's is enabled), removed after."""
    if os.geteuid() != 0:
        pytest.skip("the kernel oracle needs root")
    with open("/proc/mounts") as f:
        mounted = [line.split()[1] for line in f if line.split()[2:3] == ["tracefs"]]
    path = mounted[0] if mounted else tempfile.mkdtemp(prefix="fentry-tracefs-")
    if not mounted and subprocess.run(["mount", "-t", "tracefs", "nodev", path]).returncode:
        pytest.skip("cannot mount tracefs")
    inst = os.path.join(path, "instances", f"fentry_set_event_{os.getpid()}")
    try:
        os.mkdir(inst)
    except OSError as e:
        pytest.skip(f"no tracefs instance: {e}")
    try:
        yield inst
    finally:
        with open(os.path.join(inst, "set_event"), "w"):
            pass
        os.rmdir(inst)


def _kernel_write(inst, text):
    fd = os.open(os.path.join(inst, "set_event"), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def test_set_event_errors_as_the_kernels(fs, kernel_tracefs):
    """The same words, on the kernel's sched group and on fentry's gc group."""
    for word in ("sched:sched_switch", "sched", "sched_switch", ":sched_switch", "*:sched_switch",
                 "sched:", "!sched:sched_switch", "nosuch:x", "*", "!", "sched:sched_sw*",
                 "sched/sched_switch", "sched:sched_switch:x", "", "  "):
        ours = word.replace("sched_switch", "gc_done").replace("sched_sw", "gc_do").replace(
            "sched", "gc")
        kernel = _kernel_write(kernel_tracefs, word)
        try:
            fs.write("set_event", ours)
            fentry_says = 0
        except TraceError as e:
            fentry_says = e.errno
        assert fentry_says == kernel, (word, ours)
        with open(os.path.join(kernel_tracefs, "set_event")) as f:
            kernel_enabled = len(f.read().split())
        assert (kernel_enabled > 0) == (fs.read("set_event") != ""), word
        _kernel_write(kernel_tracefs, "")
        fs.write("set_event", "")


def test_e_refuses_an_unknown_tracepoint_before_the_program_runs(tmp_path):
    proc, _ = fentry_run(tmp_path, "-e", "python:nosuch", program=("-c", "print(1)"), text=True)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "No such event" in proc.stderr and "python:nosuch" in proc.stderr
    proc, _ = fentry_run(tmp_path, "-e", "gc:gc_done", "-f", 'generation == "x"',
                         program=("-c", "print(1)"), text=True)
    assert proc.returncode != 0 and "Expecting numeric field" in proc.stderr


def test_tracing_does_not_change_the_program(tmp_path):
    prog = program(tmp_path, AUDIT)
    proc, _ = fentry_run(tmp_path, "-t", "nop", "-e", "python:raise", "-e", "python:call_c",
                         "-e", "python:c_return", "-e", "gc:gc_done", "-e", "audit:open",
                         program=(prog, str(tmp_path / "t")), text=True)
    want = plain(prog, str(tmp_path / "t"), text=True)
    assert (proc.returncode, proc.stdout) == (want.returncode, want.stdout)


def test_use_tool_id_is_cpythons_own_again_whatever_the_order(fs):
    """The tracepoints' tool id and a tracer's, started and stopped in either order."""
    own = sys.monitoring.use_tool_id
    for first, second in ((("events/python/raise/enable", "1"), ("current_tracer", "function")),
                          (("current_tracer", "function"), ("events/python/raise/enable", "1"))):
        fs.write(*first)
        fs.write(*second)
        assert len(fentry_tool_ids()) == 2
        fs.write("events/python/raise/enable", "0")
        fs.write("current_tracer", "nop")
        assert fentry_tool_ids() == [] and sys.monitoring.use_tool_id is own


@pytest.mark.ptrace
def test_set_event_live(tmp_path):
    """``fentry -p PID``: a running program's tracepoints, on and off."""
    from control.live import Target, wait_for
    target = Target(tmp_path)
    try:
        pid = str(target.pid)
        assert "python:call_c\n" in fentry("-p", pid, "read", "available_events").stdout
        bad = fentry("-p", pid, "write", "set_event", "python:nosuch")
        assert bad.returncode != 0 and "no event matches it" in bad.stderr and "^" in bad.stderr
        for args in (("events/python/c_return/filter", 'callable == "list.append"'),
                     ("set_event", "python:c_return")):
            got = fentry("-p", pid, "write", *args)
            assert got.returncode == 0, got.stderr
        assert fentry("-p", pid, "read", "set_event").stdout == "python:c_return\n"
        wait_for(lambda: len(events(fentry("-p", pid, "read", "trace").stdout, "c_return")) >= 3,
                 what="c_return events")
        got = events(fentry("-p", pid, "read", "trace").stdout, "c_return")
        assert {(e["callable"], e["func"]) for e in got} == {("list.append", "__main__:add")}
        assert fentry("-p", pid, "write", "set_event", "").returncode == 0
        assert fentry("-p", pid, "detach").returncode == 0
        target.finish_clean()
    finally:
        target.kill()


def test_a_set_event_that_gets_no_tool_id_changes_nothing(fs):
    fs.write("set_event", "gc:gc_done")
    taken = [i for i in range(6) if sys.monitoring.get_tool(i) is None]
    for i in taken:
        sys.monitoring.use_tool_id(i, "someone else")
    try:
        with pytest.raises(TraceError) as e:
            fs.write("set_event", "python:raise")
        assert e.value.code == "TOOL_ID_BUSY"
        assert fs.read("set_event") == "gc:gc_done\n"
        assert "No free sys.monitoring tool id" in fs.read("error_log")
    finally:
        for i in taken:
            sys.monitoring.free_tool_id(i)


@pytest.mark.parametrize("how", ["-c", "script"])
def test_the_trace_starts_with_the_program(tmp_path, how):
    """The interpreter's start-up (site, loading the script, the exec of its
    code) and fentry's are no events: a program that does nothing has none."""
    prog = ("-c", "x = 1") if how == "-c" else (program(tmp_path, "x = 1\n"),)
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "audit:exec", "-e", "audit:open",
                             "-e", "audit:import", "-e", "audit:compile", "-e", "python:raise",
                             "-e", "python:exception_handled", "-e", "gc:gc_start",
                             program=prog, text=True)
    assert proc.returncode == 0, proc.stderr
    assert events(trace) == []


def test_available_events_is_the_top_levels_only(fs):
    """As the 6.18 kernel's: an instance has set_event, not available_events."""
    fs.mkdir("instances/b")
    names = fs.ls("instances/b")
    assert "set_event" in names and "available_events" not in names
    assert "available_events" in fs.ls("")
    fs.rmdir("instances/b")
