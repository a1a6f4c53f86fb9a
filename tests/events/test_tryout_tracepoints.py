"""Python's tracepoints tried as a new user would (issue 14's tryout), on
programs shaped like real ones: the stdlib's own recursion, CPython's test
suite.  Run on both hot paths (``FENTRY_PURE_PYTHON=1`` for the pure one)."""

from __future__ import annotations

import re
import textwrap

import pytest
from helpers import fentry_run, plain

# copy.deepcopy (stdlib code, recursing two frames a level) of a nested list
# whose innermost item raises: one RAISE in each frame it passes through,
# counted by the program's own sys.monitoring tool as well.
DEEP_STDLIB = """
    import copy, sys, time
    from collections import Counter
    sys.setrecursionlimit(40000)
    raises = Counter()
    M = sys.monitoring
    M.use_tool_id(2, "own-counter")
    M.register_callback(2, M.events.RAISE, lambda code, off, exc: raises.update((type(exc).__name__,)))
    class Bottom:
        def __deepcopy__(self, memo):
            raise ValueError("bottom")
    nested = Bottom()
    for _ in range(int(sys.argv[1])):
        nested = [nested]
    t = time.perf_counter()
    M.set_events(2, M.events.RAISE)
    try:
        copy.deepcopy(nested)
    except ValueError:
        pass
    M.set_events(2, 0)
    print(raises["ValueError"], f"{time.perf_counter() - t:.3f}")
"""


def test_python_raise_through_deep_stdlib_recursion_is_counted_exactly_and_fast(tmp_path):
    """Each event used to walk the whole stack of stdlib frames looking for
    fentry's (a program that is all stdlib, as ``python -m test``, or one that
    recurses in it): 8000 frames took ~20 s, quadratic.  Now the counts equal
    the program's own RAISE counter, in well under a second's work."""
    prog = tmp_path / "deep.py"
    prog.write_text(textwrap.dedent(DEEP_STDLIB))
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "python:raise",
                             "--hist", "python:raise:keys=type", program=(str(prog), "4000"), text=True)
    assert proc.returncode == 0, proc.stderr
    own, seconds = proc.stdout.split()
    assert int(own) == 2 * 4000 + 3
    rows = dict(re.findall(r"^\{ type: (\w+) +\} hitcount: +(\d+)", trace, flags=re.M))
    assert rows == {"ValueError": own}
    assert float(seconds) < 5, f"{seconds} s for {own} events"


# Exceptions, C calls, a collection and an open() at every depth around the
# recursion limit: what the program sees there must not change.
AT_THE_LIMIT = """
    import gc, sys
    def f(n):
        if n == 0:
            len("x")
            gc.collect(0)
            open(__file__).close()
            raise ValueError("bottom")
        return f(n - 1)
    def depth():
        d, fr = 0, sys._getframe()
        while fr:
            d, fr = d + 1, fr.f_back
        return d
    lim = sys.getrecursionlimit()
    base = depth()
    seen = []
    for k in range(lim - base - 8, lim - base + 3):
        try:
            f(k)
        except ValueError:
            seen.append("ValueError")
        except RecursionError:
            seen.append("RecursionError")
    print(seen)
"""


def test_tracepoints_at_the_recursion_limit_leave_the_programs_exceptions_alone(tmp_path):
    """A tracepoint's callback is Python: at the program's recursion limit its
    frame cannot be pushed, and its RecursionError replaced the program's
    ValueError (gc printed it as unraisable; the audit hook lost it).  The C
    hot path calls them through ``recursion_guard``, which counts such a hit
    as missed instead; pure Python cannot check without a frame."""
    from fentry import hotpath
    if hotpath.IMPLEMENTATION != "c":
        pytest.skip("the pure-Python hot path cannot guard a callback's frame (hotpath.recursion_guard)")
    prog = tmp_path / "limit.py"
    prog.write_text(textwrap.dedent(AT_THE_LIMIT))
    want = plain(str(prog))
    assert want.returncode == 0 and b"ValueError" in want.stdout, want.stderr
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "python:raise", "-e", "python:call_c",
                             "-e", "gc:gc_start", "-e", "audit:open", "--hist", "python:raise:keys=type",
                             program=(str(prog),))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == want.stdout
    assert b"Exception ignored" not in proc.stderr and b"RecursionError" not in proc.stderr, proc.stderr
    assert re.search(r"^\{ type: ValueError +\} hitcount: +\d+", trace, flags=re.M), trace[-2000:]
