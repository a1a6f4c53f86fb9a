"""Python's tracepoints tried as a new user would (issue 14's tryout), on
programs shaped like real ones: the stdlib's own recursion, CPython's test
suite.  Run on both hot paths (``FENTRY_PURE_PYTHON=1`` for the pure one)."""

from __future__ import annotations

import re
import textwrap

from helpers import fentry_run

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
