"""Probes on modules not imported yet: checked against their source, compiled
and never run, exactly as on an imported module; pending only where the
module cannot be found, and saying so."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from helpers import SRC, env, plain

import fentry
from fentry import symbols
from fentry.kprobes import instruction_boundaries

from .test_probe_events import ORDERS, events, run

# Imports textwrap and email.utils itself, after saying whether they were imported already.
LATE = """\
import sys
print([m for m in ("textwrap", "email", "email.utils") if m in sys.modules])
import textwrap
import email.utils
print(textwrap.dedent("  a\\n  b"))
print(email.utils.parseaddr("Ann <ann@example.com>"))
"""


def late_program(tmp_path):
    path = tmp_path / "late.py"
    path.write_text(LATE)
    return str(path)


def inner_offset(code) -> int:
    """An instruction boundary other than the entry."""
    return sorted(instruction_boundaries(code))[3]


@pytest.mark.parametrize("point, message", [
    ("{mod}:nonexistent", "Invalid probed address or symbol"),
    ("{mod}:{func}+3", "Probe point is not an instruction boundary"),
    ("{mod}:{func}+1000", "Invalid probed address or symbol: offset 0x3e8 is past the end of {func}"),
])
@pytest.mark.parametrize("mod, func", [("textwrap", "dedent"),      # imported later by the program
                                       ("posixpath", "join")])      # imported at startup
def test_refused_alike_whether_imported_or_not(tmp_path, point, message, mod, func):
    definition = "p " + point.format(mod=mod, func=func)
    proc, _ = run(tmp_path, "-e", definition, program=(late_program(tmp_path),))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    head, command, caret = proc.stderr.splitlines()[:3]
    assert head.endswith("] trace_kprobe: error: " + message.format(func=func))
    assert command == "  Command: " + definition
    assert caret.index("^") == command.index(mod)


def test_a_valid_probe_on_a_module_imported_later_fires(tmp_path):
    program = late_program(tmp_path)
    offset = inner_offset(textwrap.dedent.__code__)
    proc, trace = run(tmp_path, "-e", f"p:tw/dedent textwrap:dedent+{offset}",
                      "-e", "p:em/parse email.utils:parseaddr", program=(program,))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plain(program, text=True).stdout      # nothing imported (nor run) by the check
    assert proc.stdout.startswith("[]\n")
    assert [(e, where) for e, where, _ in events(trace)] == [
        ("dedent", f"dedent+{offset:#x}"), ("parse", "parseaddr+0x0")]


def test_a_module_that_cannot_be_found_is_pending_and_says_so(tmp_path):
    program = late_program(tmp_path)
    proc, _ = run(tmp_path, "-e", "p:x/y no_such_module_here:f", program=(program,))
    assert proc.returncode == 0 and proc.stdout == plain(program, text=True).stdout
    head, command, caret = proc.stderr.splitlines()[:3]
    assert head.endswith("] trace_kprobe: info: Module not found yet; "
                         "the probe is pending until it is imported")
    assert caret.index("^") == command.index("no_such_module_here")


@pytest.fixture
def pkgdir(tmp_path, monkeypatch):
    """A package whose __init__ leaves a mark when it runs; none of it imported."""
    root = tmp_path / "site"
    (root / "markpkg").mkdir(parents=True)
    (root / "markpkg" / "__init__.py").write_text(
        f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    (root / "markpkg" / "sub.py").write_text(
        "def work(x):\n    total = 0\n    for i in range(x):\n        total += i\n    return total\n")
    monkeypatch.syspath_prepend(str(root))
    yield tmp_path
    for name in ("markpkg", "markpkg.sub", "markpkg.later"):
        sys.modules.pop(name, None)


def test_the_module_and_its_package_are_never_run(pkgdir):
    fs = fentry.tracefs()
    with pytest.raises(fentry.TraceError) as e:
        fs.write("kprobe_events", "p markpkg.sub:nothing")
    assert e.value.message == "Invalid probed address or symbol"
    with pytest.raises(fentry.TraceError) as e:
        fs.write("kprobe_events", "p markpkg.sub:work+3")
    assert e.value.message == "Probe point is not an instruction boundary"
    fs.write("kprobe_events", "p markpkg.sub:work")
    assert fs.read("kprobe_events") == "p:kprobes/p_work_0 markpkg.sub:work\n"
    assert "markpkg" not in sys.modules and "markpkg.sub" not in sys.modules
    assert not (pkgdir / "ran").exists()


def test_pending_until_the_module_is_there_and_imported(pkgdir):
    fs = fentry.tracefs()
    fs.write("kprobe_events", "p:later/work markpkg.later:work x=x")
    text = fs.read("kprobe_events")
    assert text == "# pending: module markpkg.later not found yet\np:later/work markpkg.later:work x=x\n"
    log = fs.read("error_log").splitlines()
    assert log[0].endswith("] trace_kprobe: info: Module not found yet; "
                           "the probe is pending until it is imported")
    assert log[2].index("^") == log[1].index("markpkg.later")
    fs.write("kprobe_events", text)                 # what was read can be written back
    assert fs.read("kprobe_events") == text

    (pkgdir / "site" / "markpkg" / "later.py").write_text("def work(x):\n    return x\n")
    import importlib
    importlib.invalidate_caches()
    import markpkg.later
    assert fs.read("kprobe_events") == "p:later/work markpkg.later:work x=x\n"
    fs.write("events/later/work/enable", "1")
    markpkg.later.work(7)
    fs.write("events/later/work/enable", "0")
    assert "work: (work+0x0) x=7" in fs.read("trace")


def test_the_compilers_warnings_are_not_the_programs(tmp_path):
    """A SyntaxWarning the module's source gives is the import's to give, if it comes."""
    (tmp_path / "escapes.py").write_text('def f():\n    return "\\d"\n')
    script = tmp_path / "main.py"
    script.write_text("print('ok')\n")
    got = subprocess.run([sys.executable, "-m", "fentry", "run", "-t", "nop", "-e", "p escapes:f",
                          "-o", str(tmp_path / "t"), str(script)],
                         capture_output=True, text=True, env=env(PYTHONPATH=os.pathsep.join([SRC, str(tmp_path)])),
                         timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (0, "ok\n", "")


def test_a_modules_source_is_compiled_once_per_write(pkgdir, monkeypatch):
    compiled = []
    real = symbols._compile
    monkeypatch.setattr(symbols, "_compile", lambda *a: compiled.append(a[1]) or real(*a))
    fentry.tracefs().write("kprobe_events", "p:a/a markpkg.sub:work\np:a/b markpkg.sub:work x\n"
                                            "r:a/c markpkg.sub:work $retval")
    assert compiled == ["markpkg.sub"]


@pytest.mark.parametrize("point, message", [
    ("__main__:no_such_function", "Invalid probed address or symbol"),
    ("__main__:line_total+3", "Probe point is not an instruction boundary"),
])
def test_the_scripts_functions_are_checked_before_it_runs(tmp_path, point, message):
    """fentry run sets -e up before the script runs: its file is compiled and checked."""
    proc, _ = run(tmp_path, "-e", "p " + point, program=(ORDERS,))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    head, command, caret = proc.stderr.splitlines()[:3]
    assert head.endswith("] trace_kprobe: error: " + message)
    assert caret.index("^") == command.index("__main__")


def test_a_module_beside_the_script_is_found_before_the_script_runs(tmp_path):
    """Python puts the script's directory on sys.path only as the script starts,
    after fentry run has set its probes up: it is looked in all the same."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "helper.py").write_text("def work(x):\n    return x + 1\n")
    script = tmp_path / "app" / "main.py"
    script.write_text("import helper\nprint(helper.work(1))\n")
    got, _ = run(tmp_path, "-e", "p helper:nope", program=(str(script),), cwd=tmp_path)
    assert got.returncode == 2 and "error: Invalid probed address or symbol" in got.stderr
    got, trace = run(tmp_path, "-e", "p:h/work helper:work x=x", program=(str(script),), cwd=tmp_path)
    assert (got.returncode, got.stdout, got.stderr) == (0, "2\n", "")
    assert "work: (work+0x0) x=1" in trace
