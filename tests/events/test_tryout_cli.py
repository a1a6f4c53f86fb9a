"""The command line's event options tried as a new user would (issue 14's
tryout): ``fentry run -e/-R/--hist`` on programs shaped like real ones."""

from __future__ import annotations

import re
import textwrap

from helpers import env, fentry_run

LIB = """
    def chunked(iterable, n, strict=False):
        it = list(iterable)
        return [it[i:i + n] for i in range(0, len(it), n)]
"""

USER = """
    import sys
    import mylib            # (imported by the program, after fentry run starts it)
    for i in range(1, 301):
        mylib.chunked(range(i), i % 3 + 1)
    print("done")
"""


def test_hist_on_an_fprobe_args_star_of_a_module_imported_later(tmp_path):
    """``-e 'f mylib:chunked $arg*' --hist 'chunked__entry:keys=n'``: the
    fields come from the function's parameters, known once it is found; the
    command line refused the hist before ("Couldn't find field"), though the
    same hist written to the event's trigger file was taken."""
    (tmp_path / "mylib.py").write_text(textwrap.dedent(LIB))
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(USER))
    e = env()
    e["PYTHONPATH"] = f"{tmp_path}:{e['PYTHONPATH']}"
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "f mylib:chunked $arg*",
                             "--hist", "chunked__entry:keys=n", program=(str(prog),), env=e, text=True)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    rows = {int(k): int(v) for k, v in re.findall(r"^\{ n: +(\d+) \} hitcount: +(\d+)", trace, flags=re.M)}
    assert rows == {1: 100, 2: 100, 3: 100}


def test_a_bad_hist_key_on_such_an_fprobe_is_still_refused_before_the_program_runs(tmp_path):
    (tmp_path / "mylib.py").write_text(textwrap.dedent(LIB))
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(USER))
    e = env()
    e["PYTHONPATH"] = f"{tmp_path}:{e['PYTHONPATH']}"
    proc, _ = fentry_run(tmp_path, "-t", "nop", "-e", "f mylib:chunked $arg*",
                         "--hist", "chunked__entry:keys=nosuch", program=(str(prog),), env=e, text=True)
    assert proc.returncode == 2 and "done" not in proc.stdout
    assert "error: Couldn't find field" in proc.stderr and "hist:keys=nosuch" in proc.stderr
