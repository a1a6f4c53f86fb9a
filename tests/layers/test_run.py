"""`fentry run`: the program runs as `python SCRIPT` would, and the trace is complete."""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import PROGRAMS, SHOPAPP, SRC, body, calls_printed, env, fentry_run, function_lines, plain


def write_script(tmp_path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def same_run(want: subprocess.CompletedProcess, got: subprocess.CompletedProcess) -> None:
    assert got.stdout == want.stdout
    assert got.stderr == want.stderr
    assert got.returncode == want.returncode


# ---------------------------------------------------------------- the program is unchanged

@pytest.mark.parametrize("opts,status", [
    (("-t", "nop"), "3"),
    (("-t", "function"), "3"),
    pytest.param(("-t", "function"), "0", marks=pytest.mark.slow),
    (("-t", "function_graph"), "3"),
    pytest.param(("-t", "function", "-l", "__main__:*"), "3", marks=pytest.mark.slow),
    pytest.param(("-t", "function", "-l", "fib", "-l", "Inventory.*"), "0", marks=pytest.mark.slow),
    pytest.param(("-t", "function_graph", "-l", "Cart.*", "-n", "Cart.add"), "3", marks=pytest.mark.slow),
    pytest.param(("-t", "function_graph", "-l", "__main__:*", "-O", "funcgraph-tail"), "0", marks=pytest.mark.slow),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_output_and_exit_status_are_byte_identical(tmp_path, opts, status):
    want = plain(SHOPAPP, status)
    got, trace = fentry_run(tmp_path, *opts, program=(SHOPAPP, status))
    assert want.returncode == int(status)
    same_run(want, got)
    if opts[1] != "nop":
        assert body(trace)


def test_trace_goes_to_stderr_without_o(tmp_path):
    want = plain(SHOPAPP)
    got, _ = fentry_run(tmp_path, "-t", "function", "-l", "fib", output=False)
    assert got.stdout == want.stdout and got.returncode == want.returncode
    stderr = got.stderr.decode()
    assert stderr.startswith("# tracer: function\n")
    assert [m["func"] for m in function_lines(stderr)] == ["fib"] * calls_printed(got.stdout)["fib"]


def test_o_writes_the_trace_to_the_file(tmp_path):
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "fib")
    assert got.stderr == b""
    assert trace.startswith("# tracer: function\n")
    assert len(function_lines(trace)) == calls_printed(got.stdout)["fib"]


@pytest.mark.parametrize("tracer", ["function", "function_graph"])
def test_the_header_comes_once_and_nostream_header_drops_it(tmp_path, tracer):
    """trace_pipe has no header, as the kernel's; fentry run's text starts
    with one, once, which trace_options' stream-header controls."""
    got, with_header = fentry_run(tmp_path, "-t", tracer, "-l", "fib")
    heads = [line for line in with_header.splitlines() if line.startswith("#")]
    assert with_header.startswith(f"# tracer: {tracer}\n") and heads
    assert with_header.count("# tracer:") == 1
    got, without = fentry_run(tmp_path, "-t", tracer, "-l", "fib", "-O", "nostream-header")
    assert got.returncode == 0, got.stderr
    assert not any(line.startswith("#") for line in without.splitlines())
    assert len(body(without)) == len(body(with_header)) > 0


PROBE = '''
    import json, os, sys, threading
    print(json.dumps({
        "argv": sys.argv,
        "orig_argv": sys.orig_argv[1:],
        "name": __name__,
        "file": globals().get("__file__"),
        "spec": None if __spec__ is None else [__spec__.name, __spec__.origin],
        "path": sys.path,
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "threads": [t.name for t in threading.enumerate()],
        "globals": sorted(globals()),
        "stdin": sys.stdin.read(),
        "fd": os.open(os.devnull, os.O_RDONLY),
        "sitecustomize": getattr(sys.modules.get("sitecustomize"), "__file__", None),
    }, indent=1))
'''


@pytest.mark.parametrize("form", ["script", "-m", "-c"])
def test_program_sees_what_plain_python_gives_it(tmp_path, form):
    script = write_script(tmp_path, "probe.py", PROBE)
    program = {"script": (script, "a", "--b"),
               "-m": ("-m", "probe", "a", "--b"),
               "-c": ("-c", textwrap.dedent(PROBE), "a", "--b")}[form]
    kw = dict(input=b"some input\n", cwd=str(tmp_path))
    want = plain(*program, **kw)
    got, _ = fentry_run(tmp_path, "-t", "function", "-n", "*", program=program, **kw)
    assert want.returncode == 0, want.stderr
    seen, expected = json.loads(got.stdout), json.loads(want.stdout)
    for key in expected:
        assert seen[key] == expected[key], key
    assert expected["name"] == "__main__" and expected["stdin"] == "some input\n"
    if form == "script":
        assert expected["argv"] == [script, "a", "--b"]
        assert expected["path"][0] == str(tmp_path)


def test_the_programs_own_sitecustomize_still_runs_once(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.sitecustomize_runs = getattr(sys, 'sitecustomize_runs', 0) + 1\n")
    script = write_script(tmp_path, "site_probe.py", '''
        import sys
        print(sys.sitecustomize_runs, sys.modules["sitecustomize"].__file__)
    ''')
    e = env()
    e["PYTHONPATH"] += os.pathsep + str(site)
    want = plain(script, env=e)
    got, _ = fentry_run(tmp_path, "-n", "*", program=(script,), env=e)
    assert want.stdout == f"1 {site / 'sitecustomize.py'}\n".encode()
    same_run(want, got)


def test_inherited_descriptors_reach_the_program(tmp_path):
    """``3<file``: what the shell gives fentry run, the program gets, as from plain python."""
    data = tmp_path / "data.txt"
    data.write_text("inherited\n")
    code = ("import os; print(os.read(3, 20), os.read(9, 20)); "
            "print(os.open(os.devnull, os.O_RDONLY))")     # the lowest free number
    out = tmp_path / "trace.txt"

    def shell(*argv: str) -> subprocess.CompletedProcess:
        command = " ".join(shlex.quote(a) for a in argv) + f" 3<{data} 9<{data}"
        return subprocess.run(["sh", "-c", command], capture_output=True, env=env(), timeout=60)

    want = shell(sys.executable, "-c", code)
    got = shell(sys.executable, "-m", "fentry", "run", "-t", "function", "-o", str(out),
                "-c", code)
    assert want.stdout == b"b'inherited\\n' b'inherited\\n'\n4\n", want
    same_run(want, got)
    assert function_lines(out.read_text())


def test_a_trace_that_cannot_be_written_is_said_once_and_the_status_stands():
    want = plain(SHOPAPP, "3")
    got = subprocess.run([sys.executable, "-m", "fentry", "run", "-t", "function", "-o", "/dev/full",
                          SHOPAPP, "3"], capture_output=True, env=env(), timeout=60)
    assert (got.stdout, got.returncode) == (want.stdout, 3)
    assert got.stderr.decode().splitlines() == [
        "fentry run: writing the trace to /dev/full failed: No space left on device; "
        "the trace is incomplete"]


def test_missing_script_fails_as_plain_python_does(tmp_path):
    missing = str(tmp_path / "no_such_script.py")
    want = plain(missing)
    got, _ = fentry_run(tmp_path, "-n", "*", program=(missing,))
    assert want.returncode == 2
    same_run(want, got)


PURE_PYTHON = bool(os.environ.get("FENTRY_PURE_PYTHON"))


# The pure-Python hot path's callbacks are Python frames, and a traced call
# needs one more than the program's own (README: "The pure-Python hot path").
DEPTH_LOST = 1 if PURE_PYTHON else 0


def check_graph_balanced(trace: str) -> None:
    opens = closes = 0
    for line in body(trace):
        text = line.split("|", 2)[2].strip()
        opens += text.endswith("{")
        closes += text.startswith("}")
    assert opens == closes, (opens, closes)


@pytest.mark.slow
def test_deep_recursion_reaches_the_same_depth(tmp_path):
    script = write_script(tmp_path, "deep.py", '''
        def down(n):
            try:
                return down(n + 1)
            except RecursionError:
                return n
        print(down(0))
    ''')
    want = plain(script)
    for tracer in ("function", "function_graph"):
        got, trace = fentry_run(tmp_path, "-t", tracer, "-l", "down", program=(script,))
        assert (got.returncode, got.stderr) == (want.returncode, want.stderr) == (0, b"")
        assert int(got.stdout) == int(want.stdout) - DEPTH_LOST
        assert trace
        if tracer == "function_graph":
            check_graph_balanced(trace)


FIRST_CALL_AT_THE_LIMIT = '''
    SOURCE = """
    def leaf(n):
        return n
    def down(n, j):
        try:
            r = down(n + 1, j)
        except RecursionError:
            r = j
        if r == 0:
            return ("leaf", leaf(n))
        return r - 1 if isinstance(r, int) else r
    """
    for j in range(24):
        ns = {}
        exec(SOURCE, ns)        # a new leaf each time: its first call, j frames above the limit
        print(j, ns["down"](0, j), ns["leaf"](-1))
'''


@pytest.mark.slow
def test_a_function_first_called_at_the_recursion_limit(tmp_path):
    """Discovery (Python code, on either hot path) runs on the program's
    stack: where it does not fit, the call goes untraced, and the program
    does exactly what it would have."""
    script = write_script(tmp_path, "first_call.py", FIRST_CALL_AT_THE_LIMIT)
    want = plain(script)
    assert want.returncode == 0, want.stderr
    for tracer in ("function", "function_graph"):
        got, trace = fentry_run(tmp_path, "-t", tracer, "-l", "leaf", program=(script,))
        assert (got.returncode, got.stderr) == (0, b"")
        expected = want.stdout.decode().splitlines()
        if PURE_PYTHON:
            # The first call right at the limit needs the dispatcher's frame
            # (the documented one level); from two levels up, the same.
            expected = expected[2:]
            assert got.stdout.decode().splitlines()[2:] == expected
        else:
            assert got.stdout.decode().splitlines() == expected
        assert trace
        if tracer == "function_graph":
            check_graph_balanced(trace)


CODE_DIES_AT_THE_LIMIT = '''
    import gc
    SOURCE = "def leaf(n):\\n    return n\\ndef other(n):\\n    return n\\n"
    def make():
        ns = {}
        exec(SOURCE, ns)        # leaf and other live in a cycle with ns: only the gc frees them
        ns["other"](2)
        ns["leaf"](1)
    def down(n):
        try:
            return down(n + 1)
        except RecursionError:
            gc.collect()        # at the limit: no Python frame fits here
            return n
    gc.disable()
    for j in range(5):
        make()
    print(down(0) > 100)
    for j in range(5):
        make()                  # new codes, maybe at the dead ones' addresses
    print("ok")
'''


@pytest.mark.parametrize("tracer", ["function", "function_graph"])
def test_code_freed_by_the_gc_at_the_recursion_limit(tmp_path, tracer):
    """fentry forgets a dead code object in C (lifetime.py): when the gc
    frees traced and untraced code at the recursion limit, where no Python
    callback can run, the program prints nothing more, and each call is
    traced once, under its own name."""
    script = write_script(tmp_path, "dies.py", CODE_DIES_AT_THE_LIMIT)
    got, trace = fentry_run(tmp_path, "-t", tracer, "-l", "leaf", program=(script,))
    assert (got.returncode, got.stdout, got.stderr) == (0, b"True\nok\n", b"")
    lines = body(trace)
    if tracer == "function":
        assert [line.split()[-2:] for line in lines] == [["leaf", "<-make"]] * 10
    else:
        assert sum("leaf(" in line for line in lines) == 10, trace
        assert not any("other" in line for line in lines)


UNBOUNDED = '''
    import sys
    depth = 0
    def f(n):
        global depth
        depth = n
        return f(n + 1)
    try:
        f(0)
    except RecursionError as e:
        print("depth", depth, e.__context__, flush=True)
    f(0)
'''


@pytest.mark.slow
@pytest.mark.parametrize("tracer", ["function", "function_graph"])
def test_recursion_error_traceback_is_the_programs_own(tmp_path, tracer):
    script = write_script(tmp_path, "unbounded.py", UNBOUNDED)
    want = plain(script)
    assert want.returncode == 1
    got, trace = fentry_run(tmp_path, "-t", tracer, "-l", "f", program=(script,))
    if not PURE_PYTHON:
        same_run(want, got)
    else:
        # One level less (README), and not one frame or exception of fentry's.
        assert got.returncode == want.returncode
        assert got.stdout == f"depth {int(want.stdout.split()[1]) - 1} None\n".encode()
        err, plain_err = got.stderr.decode(), want.stderr.decode()
        assert "During handling" not in err and "fentry" not in err.replace(str(tmp_path), "")
        assert err.splitlines()[:6] == plain_err.splitlines()[:6]
        assert err.splitlines()[-1] == plain_err.splitlines()[-1]
        def_line = open(script).read().splitlines().index("def f(n):") + 1
        assert {line for line in err.splitlines() if line.startswith("  File ")} <= {
            line for line in plain_err.splitlines() if line.startswith("  File ")} | {
            f'  File "{script}", line {def_line}, in f'}      # (raised as f starts)
    assert trace
    if tracer == "function_graph":
        check_graph_balanced(trace)


TOOL_IDS = os.path.join(PROGRAMS, "tool_ids.py")


@pytest.mark.slow
def test_a_program_taking_fentrys_tool_id_gets_it_and_every_call_is_traced(tmp_path):
    """The program claims the sys.monitoring tool id fentry holds, as
    coverage.py or cProfile claim theirs: it gets it and its tool sees every
    event from then on, and fentry, moved to another id, traces every call
    once, before the move and after."""
    stop, out = tmp_path / "stop", tmp_path / "trace.txt"
    run = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "function", "-l", "add",
                            "-o", str(out), "--", TOOL_IDS, str(stop), "0.001", "take"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        assert run.stdout.readline().startswith("ready ")
        took = run.stderr.readline()
        assert took.startswith("took "), took
        time.sleep(0.2)
        stop.touch()
        stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0 and stderr == "", stderr
    result, residue = stdout.splitlines()
    orders, residue = int(result.split()[1]), json.loads(residue)
    assert residue["counted"] == residue["since"] > 0
    assert len([m for m in function_lines(out.read_text()) if m["func"] == "add"]) == orders


@pytest.mark.slow
def test_a_long_trace_arrives_complete(tmp_path):
    script = write_script(tmp_path, "many.py", '''
        def tick(i):
            return i
        for i in range(200000):
            tick(i)
    ''')
    got, trace = fentry_run(tmp_path, "-l", "tick", program=(script,))
    assert got.returncode == 0
    assert len(function_lines(trace)) == 200000


WHOLE = "import json\ndef f():\n    return json.dumps([1])\nf()\n"


@pytest.mark.slow
@pytest.mark.parametrize("form", ["script", "-c"])
def test_a_whole_program_trace_starts_with_the_programs_first_call(tmp_path, form):
    """Nothing of fentry's start-up, nor of the interpreter's (site's imports,
    loading the script): the program's module code is the first call, the
    root of a balanced graph."""
    program = (write_script(tmp_path, "whole.py", WHOLE),) if form == "script" else ("-c", WHOLE)
    got, trace = fentry_run(tmp_path, "-t", "function", program=program, sep=form == "script")
    assert got.returncode == 0, got.stderr
    first = function_lines(trace)[:3]
    assert [(m["func"], m["parent"]) for m in first] == [
        ("<module>", "<top>"), ("f", "<module>"), ("dumps", "f")]
    got, trace = fentry_run(tmp_path, "-t", "function_graph", program=program, sep=form == "script")
    texts = [line.split("|", 2)[2].rstrip() for line in trace.splitlines()
             if line and not line.startswith("#")]
    assert texts[:2] == ["  <module>() {", "    f() {"]
    depth = 0
    for text in texts:
        depth += text.endswith("{") - text.lstrip().startswith("}")
        assert depth >= 0, text
    assert depth == 0 and "fentry" not in trace.replace("# tracer", "")


SIGNAL_MASKS = """
import os, threading
me = threading.get_native_id()
masks = {}
for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{tid}/status") as f:
        blocked = next(line.split()[1] for line in f if line.startswith("SigBlk:"))
    masks[int(tid)] = int(blocked, 16)
print(masks.pop(me), len(masks), all(m & (1 << 14) and m & (1 << 1) for m in masks.values()))
"""


def test_fentrys_threads_take_none_of_the_programs_signals(tmp_path):
    """A signal sent to the process goes to one of the program's threads, as
    without fentry: its own threads are born with every signal blocked."""
    got, _ = fentry_run(tmp_path, "-t", "function", program=("-c", SIGNAL_MASKS), sep=False)
    assert got.returncode == 0, got.stderr
    main_mask, others, all_blocked = got.stdout.decode().split()
    assert main_mask == "0" and int(others) >= 2 and all_blocked == "True", got.stdout


THREAD_NAMES = '''
import threading, time
def f(i):
    return i
def short():
    for i in range(5):
        f(i)
def renamer():
    for i in range(5):
        f(i)
    time.sleep(0.2)
    threading.current_thread().name = "after"
    for i in range(5):
        f(i)
ts = [threading.Thread(target=short, name=f"short{k}") for k in range(3)]
ts.append(threading.Thread(target=renamer, name="before"))
for t in ts:
    t.start()
for t in ts:
    t.join()
f(0)
'''


@pytest.mark.slow
def test_task_names_are_the_threads_names_when_the_events_happened(tmp_path):
    """A thread's first calls (before threading registers it) carry its name;
    a renamed thread's events carry the name it had then."""
    script = write_script(tmp_path, "names.py", THREAD_NAMES)
    got, trace = fentry_run(tmp_path, "-t", "function", program=(script,))
    assert got.returncode == 0, got.stderr
    lines = function_lines(trace)
    tasks = collections.Counter(m["task"] for m in lines)
    assert not [t for t in tasks if t.startswith("python")], tasks
    assert {"short0", "short1", "short2", "before", "after", "MainThread"} <= set(tasks)
    calls = collections.Counter((m["task"], m["func"]) for m in lines if m["func"] == "f")
    assert calls == {("short0", "f"): 5, ("short1", "f"): 5, ("short2", "f"): 5, ("before", "f"): 5,
                     ("after", "f"): 5, ("MainThread", "f"): 1}
    # The new threads' first calls are threading's own, under their names.
    assert {m["task"] for m in lines if m["func"] == "Thread._bootstrap_inner"} == {
        "short0", "short1", "short2", "before"}


BUSY = os.path.join(PROGRAMS, "busy.py")


TAKE_LINE = re.compile(r"^ *(\S+)-\d+ +\[000\] \.\.\.\.\. +\d+\.\d{6}: take <-work\n", re.M)


def take_counts(trace: str) -> collections.Counter:
    """Lines of take() per task name; and no line may be anything else."""
    body = "".join(line + "\n" for line in trace.splitlines() if line and not line.startswith("#"))
    tasks = TAKE_LINE.findall(body)
    assert len(tasks) == body.count("\n"), [line for line in body.splitlines()
                                             if not TAKE_LINE.match(line + "\n")][:5]
    return collections.Counter(tasks)


@pytest.mark.slow
@pytest.mark.parametrize("threads,calls", [(4, 300_000), (0, 1_000_000)], ids=["4x300k", "1x1M"])
@pytest.mark.parametrize("where", ["-o", "stderr"])
def test_nothing_is_lost_at_scale_with_the_default_buffer(tmp_path, threads, calls, where):
    """Busy threads at full speed, the default buffer_size_kb: every call is
    in the trace, under its thread's name, and no event is lost."""
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "take", program=(BUSY, str(threads), str(calls)),
                            output=where == "-o")
    assert got.returncode == 0, got.stderr[-2000:]
    if where == "stderr":
        trace = got.stderr.decode()
    assert "LOST" not in trace
    names = [f"b{k}" for k in range(threads)] or ["MainThread"]
    assert take_counts(trace) == dict.fromkeys(names, calls)


@pytest.mark.skipif(PURE_PYTHON, reason="pure Python can only catch SIGTERM with a Python-level "
                    "handler, which signal.getsignal() shows; the C hot path's is invisible")
def test_program_sees_the_default_signal_handlers(tmp_path):
    script = write_script(tmp_path, "signals.py", '''
        import signal
        print(signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    ''')
    want = plain(script)
    got, _ = fentry_run(tmp_path, "-n", "*", program=(script,))
    same_run(want, got)


def test_dash_m_runs_a_module_as_main(tmp_path):
    kw = dict(cwd=PROGRAMS)
    want = plain("-m", "shopapp", "5", **kw)
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:fib", program=("-m", "shopapp", "5"),
                            sep=False, **kw)
    assert want.returncode == 5
    same_run(want, got)
    assert len(function_lines(trace)) == calls_printed(got.stdout)["fib"]


def test_dash_c_runs_code_with_its_arguments(tmp_path):
    code = "import sys, json\ndef hello(who): return 'hello ' + who\nprint(hello(sys.argv[1]), sys.argv)"
    want = plain("-c", code, "world", "x")
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "hello", program=("-c", code, "world", "x"),
                            sep=False)
    same_run(want, got)
    assert got.stdout == b"hello world ['-c', 'world', 'x']\n"
    assert [(m["func"], m["parent"]) for m in function_lines(trace)] == [("hello", "<module>")]


def _other_python() -> str:
    """A CPython 3.12+ other than this one, if the machine has one (pyenv's),
    else this one by its own path."""
    other = "3.12" if sys.version_info >= (3, 13) else "3.13"
    root = os.path.expanduser("~/.pyenv/versions")
    for version in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        exe = os.path.join(root, version, "bin", f"python{other}")
        if version.startswith(other + ".") and os.access(exe, os.X_OK):
            return exe
    return sys.executable


def test_a_program_given_as_an_interpreter_runs_in_it(tmp_path):
    """``fentry run -- PYTHON ARGS``, as py-spy's ``record -- python app.py``:
    the program runs in that Python, traced, with its arguments."""
    python = _other_python()
    code = "import sys\ndef hello(): return sys.version_info[:2]\nprint(hello(), sys.argv[1:])"
    want = subprocess.run([python, "-c", code, "a"], capture_output=True, timeout=60)
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "hello",
                            program=(python, "-c", code, "a"))
    same_run(want, got)
    assert [(m["func"], m["parent"]) for m in function_lines(trace)] == [("hello", "<module>")]


def test_an_interpreter_wrapper_is_asked_which_python_it_runs(tmp_path):
    """pyenv's ``python`` shim is a shell script that execs the Python it
    chooses: that Python runs the program (not fentry's, nor the script as
    Python code)."""
    shim = tmp_path / "python"
    shim.write_text(f"#!/bin/sh\nexec {_other_python()} \"$@\"\n")
    shim.chmod(0o755)
    code = "import sys\ndef hello(): return sys.version_info[:2]\nprint(hello())"
    want = subprocess.run([_other_python(), "-c", code], capture_output=True, timeout=60)
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "hello", program=(str(shim), "-c", code))
    same_run(want, got)
    assert [m["func"] for m in function_lines(trace)] == ["hello"]


@pytest.mark.parametrize("program", ["/bin/true", "/usr/bin/python3.11"])
def test_a_program_that_is_not_a_python_312_is_refused(tmp_path, program):
    if not os.access(program, os.X_OK):
        pytest.skip(f"this machine has no {program}")
    got, trace = fentry_run(tmp_path, program=(program, "-c", "print(1)"))
    assert (got.returncode, got.stdout, trace) == (2, b"", "")
    assert got.stderr.decode().startswith(f"fentry run: {program} is ")
    assert b"fentry traces Python" in got.stderr or b"needs CPython 3.12 or later" in got.stderr


def test_stdlib_functions_can_be_traced(tmp_path):
    code = "import json\nprint(json.dumps([1]), json.dumps({}))"
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "json:dumps", program=("-c", code))
    assert got.stdout == b"[1] {}\n"
    assert [m["func"] for m in function_lines(trace)] == ["dumps", "dumps"]


# ---------------------------------------------------------------- however the program ends

def test_uncaught_exception_same_traceback_and_status(tmp_path):
    want = plain(SHOPAPP, "raise")
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:*", program=(SHOPAPP, "raise"))
    assert want.returncode == 1
    assert b"RuntimeError: the shop is closed" in want.stderr
    same_run(want, got)
    # (The program's own path names fentry's directory: an unpacked sdist's is fentry-X.Y.Z.)
    assert b"fentry" not in got.stderr.replace(SHOPAPP.encode(), b"")
    assert [m["func"] for m in function_lines(trace)].count("main") == 1


def test_sys_exit_status(tmp_path):
    got, _ = fentry_run(tmp_path, "-t", "function", "-l", "fib", program=(SHOPAPP, "3"))
    assert got.returncode == 3


def complete(trace: str, stdout: bytes) -> None:
    """Every call the program counted is in the trace."""
    counts = collections.Counter(m["func"] for m in function_lines(trace))
    for name, n in calls_printed(stdout).items():
        assert counts[name] == n, name


def test_os_exit_status_and_the_trace_is_complete(tmp_path):
    want = plain(SHOPAPP, "osexit")
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:*", program=(SHOPAPP, "osexit"))
    assert want.returncode == 4
    same_run(want, got)
    complete(trace, got.stdout)


def test_sigterm_status_and_the_trace_is_complete(tmp_path):
    want = plain(SHOPAPP, "sigterm")
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:*", program=(SHOPAPP, "sigterm"))
    assert want.returncode == -signal.SIGTERM
    same_run(want, got)
    complete(trace, got.stdout)


def test_sigterm_from_outside_during_a_long_run(tmp_path):
    ready = tmp_path / "ready"
    script = write_script(tmp_path, "waits.py", f'''
        import time
        def tick(i):
            return i
        for i in range(100):
            tick(i)
        open({str(ready)!r}, "w").close()
        while True:
            time.sleep(0.01)
    ''')
    out = tmp_path / "trace.txt"
    proc = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-l", "tick", "-o", str(out), script],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        for _ in range(1000):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert ready.exists()
        proc.send_signal(signal.SIGTERM)        # to fentry: it passes it on to the program
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:                # and the program, if fentry failed to pass the signal on
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGTERM
    assert [m["func"] for m in function_lines(out.read_text())] == ["tick"] * 100


@pytest.mark.slow
def test_ctrl_c_reaches_the_program(tmp_path):
    # (a tick loop, as in test_a_long_trace_arrives_complete: each test's program is its own)
    script = write_script(tmp_path, "ctrlc.py", '''
        import os, signal, time
        def tick(i):
            return i
        for i in range(10):
            tick(i)
        os.kill(os.getpid(), signal.SIGINT)     # what Ctrl-C does
        time.sleep(1)
        print("still running after Ctrl-C")
    ''')
    want = plain(script)
    got, trace = fentry_run(tmp_path, "-l", "tick", program=(script,))
    assert want.returncode == -signal.SIGINT and b"KeyboardInterrupt" in want.stderr
    same_run(want, got)
    assert len(function_lines(trace)) == 10


def test_forked_child_does_not_write_into_the_trace(tmp_path):
    script = write_script(tmp_path, "forks.py", '''
        import os
        def tick(i):
            return i
        tick(0)
        pid = os.fork()
        if pid == 0:
            for i in range(5):
                tick(i)
            os._exit(0)
        os.waitpid(pid, 0)
        tick(1)
        print("done")
    ''')
    got, trace = fentry_run(tmp_path, "-l", "tick", program=(script,))
    assert got.stdout == b"done\n" and got.returncode == 0
    assert len(function_lines(trace)) == 2


# ---------------------------------------------------------------- filters on the command line

def test_notrace_removes_what_it_names(tmp_path):
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:*", "-n", "Cart.*", "-n", "fib")
    funcs = collections.Counter(m["func"] for m in function_lines(trace))
    assert not [f for f in funcs if f.startswith("Cart.") or f == "fib"]
    printed = calls_printed(got.stdout)
    assert funcs["Inventory.take"] == printed["Inventory.take"]
    assert funcs["ship"] == printed["ship"]
    assert funcs["checkout"] == 2 and funcs["main"] == 1


def test_repeated_l_adds_up(tmp_path):
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "fib", "-l", "__main__:ship")
    funcs = collections.Counter(m["func"] for m in function_lines(trace))
    printed = calls_printed(got.stdout)
    assert funcs == {"fib": printed["fib"], "ship": printed["ship"]}


def test_kernel_mod_form_on_the_command_line(tmp_path):
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "Inventory.*:mod:__main__")
    funcs = collections.Counter(m["func"] for m in function_lines(trace))
    assert funcs == {"Inventory.__init__": 1, "Inventory.take": calls_printed(got.stdout)["Inventory.take"]}


def test_bad_l_glob_exits_2_with_a_caret_and_never_starts_the_program(tmp_path):
    marker = tmp_path / "started"
    code = f"open({str(marker)!r}, 'w').close()"
    got, trace = fentry_run(tmp_path, "-l", "fib", "-l", "Cart.[add", program=("-c", code))
    assert got.returncode == 2
    assert not marker.exists()
    err = got.stderr.decode().splitlines()
    assert any("error" in line and "glob" in line.lower() for line in err), err
    command = next(line for line in err if "Cart.[add" in line)
    caret = err[err.index(command) + 1]
    assert caret.strip() == "^"
    assert caret.index("^") == command.index("Cart.[add") + len("Cart.")
    assert trace == ""


def test_bad_n_glob_exits_2(tmp_path):
    marker = tmp_path / "started"
    got, _ = fentry_run(tmp_path, "-n", "a:b:c", program=("-c", f"open({str(marker)!r}, 'w').close()"))
    assert got.returncode == 2 and b"error" in got.stderr
    assert not marker.exists()


def test_a_buffer_larger_than_memory_exits_2_and_never_starts_the_program(tmp_path):
    marker = tmp_path / "started"
    got, trace = fentry_run(tmp_path, "--buffer-size-kb", "30000000000",
                            program=("-c", f"open({str(marker)!r}, 'w')"), sep=False)
    assert got.returncode == 2 and not marker.exists() and trace == ""
    err = got.stderr.decode()
    assert "fentry run: error: Cannot allocate memory: 30000000000 KB per thread" in err, err
    assert "  Command: --buffer-size-kb 30000000000\n" in err


def test_run_usage_names_every_option():
    from fentry.cli import build_parser
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    usage = run.format_usage()
    for action in run._actions:
        if action.option_strings and action.dest != "help":
            assert any(o in usage for o in action.option_strings), action.option_strings


def test_unknown_tracer_exits_2(tmp_path):
    got, _ = fentry_run(tmp_path, "-t", "bogus", program=("-c", "print('ran')"))
    assert got.returncode == 2 and got.stdout == b""


# ---------------------------------------------------------------- what the agent brings in

MODULES = '''
    import os, sys, sysconfig
    paths = sysconfig.get_paths()
    std = tuple(os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib"))
    site = tuple(os.path.realpath(paths[k]) + os.sep for k in ("purelib", "platlib"))
    fentry_dir = os.path.realpath(sys.argv[1]) + os.sep
    outside = []
    for name, module in sorted(sys.modules.items()):
        f = getattr(module, "__file__", None)
        if not f:
            continue
        f = os.path.realpath(f)
        if f.startswith(fentry_dir):
            continue
        if f.startswith(std) and not f.startswith(site):
            continue
        outside.append(name)
    print(outside)
'''


@pytest.mark.slow
def test_traced_process_imports_nothing_outside_the_standard_library(tmp_path):
    code = textwrap.dedent(MODULES)
    fentry_dir = os.path.join(SRC, "fentry")
    want = plain("-c", code, fentry_dir)
    for tracer in ("function", "function_graph"):
        got, _ = fentry_run(tmp_path, "-t", tracer, "-n", "*", program=("-c", code, fentry_dir))
        assert got.returncode == 0, got.stderr
        assert got.stdout == want.stdout       # whatever plain python imports (.pth files), and no more


def test_a_filter_that_selected_nothing_that_ran_is_said(tmp_path):
    """The kernel refuses a filter word that matches nothing when written;
    a program's functions do not exist yet then, so the word waits, and at
    the end fentry says which selected no function that ran (an empty
    trace otherwise looks like a program that did nothing)."""
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "__main__:fib", "-l", "no_such_function",
                            "-l", "Cart.*", "-l", "!__main__:fib")
    notes = [line for line in got.stderr.decode().splitlines() if line.startswith("fentry run:")]
    assert notes == ["fentry run: the filter 'no_such_function' selected no function that ran "
                     "(none it names was called; names are MOD:QUALNAME, as "
                     "available_filter_functions lists them)"]
    assert any(m["func"].startswith("Cart.") for m in function_lines(trace))


def test_the_programs_open_gets_the_lowest_number_while_fentrys_threads_start_and_drain(tmp_path):
    """fentry's threads in the program open no descriptor while it runs (a
    moment's one, in another thread, would push the program's open() to the
    next number): from its first line on, ``os.open`` gets 3 every time."""
    script = write_script(tmp_path, "opens.py", '''
        import os, time

        def work(k):
            return k + 1

        numbers = set()
        end = time.monotonic() + 1.0
        k = 0
        while time.monotonic() < end:
            fd = os.open(os.devnull, os.O_RDONLY)
            numbers.add(fd)
            os.close(fd)
            k = work(k)
        print(sorted(numbers), k > 0)
    ''')
    want = plain(script)
    got, trace = fentry_run(tmp_path, "-t", "function_graph", program=(script,))
    assert want.stdout == b"[3] True\n"
    same_run(want, got)
    assert "work();" in trace


@pytest.mark.parametrize("imports", ["", "import threading"])
def test_threading_is_the_programs_to_import(tmp_path, imports):
    """fentry never imports threading into the program: one that does not
    import it runs without it, and at its exit the interpreter calls no
    ``threading._shutdown`` (traced, it would be a call the program never
    made); one that does gets its ``_shutdown`` traced, as it runs it."""
    script = write_script(tmp_path, "nothreads.py", f'''
        import sys
        {imports}

        def work():
            return 1

        work()
        print("threading" in sys.modules)
    ''')
    want = plain(script)
    got, trace = fentry_run(tmp_path, "-t", "function", "-O", "function-fork", program=(script,))
    same_run(want, got)
    functions = [f"{m['func']} <-{m['parent']}" for m in function_lines(trace)]
    assert "work <-<module>" in functions
    if imports:
        assert want.stdout == b"True\n"
        assert "_shutdown <-<top>" in functions
    else:
        assert want.stdout == b"False\n"
        assert not any("_shutdown" in f or "Thread" in f for f in functions), functions


def test_a_threading_module_half_imported_while_fentry_drains(tmp_path):
    """The program's ``threading`` is in sys.modules from the start of its
    import (here a module of the program's own by that name, whose import
    takes a while): fentry, draining meanwhile, reads it only once it is
    whole.  (It read ``threading.Thread`` of the half module, and the
    exception ended the trace there, silently.)"""
    (tmp_path / "threading.py").write_text(textwrap.dedent('''
        import time
        time.sleep(0.3)         # (fentry drains some ten times meanwhile)
        class Thread:
            pass
        def _shutdown():            # (what the interpreter calls at exit)
            pass
    '''))
    script = write_script(tmp_path, "halfway.py", '''
        import sys
        sys.path.insert(0, sys.argv[1])

        def work(k):
            return k

        work(-1)
        import threading
        for k in range(1000):
            work(k)
        print(threading.__file__ == sys.argv[1] + "/threading.py")
    ''')
    want = plain(script, str(tmp_path))
    got, trace = fentry_run(tmp_path, "-t", "function", "-l", "work", program=(script, str(tmp_path)))
    assert (want.stdout, want.stderr) == (b"True\n", b"")
    same_run(want, got)
    assert len(function_lines(trace)) == 1001
