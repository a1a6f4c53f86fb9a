"""Hist triggers fed hostile values, tried as a new user would (issue 14's
tryout): huge strings and numbers as keys and values, objects whose
``__repr__`` raises or hangs, through ``fentry run --hist``.  Run on both
hot paths (``FENTRY_PURE_PYTHON=1`` for the pure one)."""

from __future__ import annotations

import re
import textwrap

from helpers import fentry_run

HOSTILE = """
    import resource, sys, threading, time
    class Bad:
        def __repr__(self): raise RuntimeError("no repr")
        def __eq__(self, o): raise RuntimeError("no eq")
        def __hash__(self): raise RuntimeError("no hash")
    class Slow:
        def __repr__(self): time.sleep(100); return "slow"
        __hash__ = object.__hash__
    def f(x):
        return 1
    N = int(sys.argv[1])
    def work(t):
        for i in range(N):
            f(i % 100 - 50)                     # negative keys: u64, as the kernel prints them
        for i in range(20):
            f("A" * 10_000_000 + str(t) + str(i))   # 80 new 10 MB strings: one entry
        for v in (2 ** 100000, Bad(), Slow()):
            f(v)
    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("done", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_a_hist_keyed_on_hostile_values_counts_them_all_and_prints(tmp_path):
    """4 threads x 100000 calls, then huge strings, a 30103-digit int, an
    object whose __repr__ raises and one whose __repr__ hangs: every call
    counted, the program's output and status its own, its memory bounded
    (the map held each 10 MB string whole before, and printing the
    30103-digit key raised, losing the end of the trace)."""
    prog = tmp_path / "hostile.py"
    prog.write_text(textwrap.dedent(HOSTILE))
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "p:h/f __main__:f x=x",
                             "--hist", "f:keys=x:vals=hitcount,x", program=(str(prog), "100000"), text=True)
    assert proc.returncode == 0, proc.stderr
    assert "stops at its last drain" not in proc.stderr
    word, rss_mb = proc.stdout.split()
    assert word == "done" and int(rss_mb) < 400, rss_mb
    hist = trace[trace.index("# events/h/f/hist"):]
    assert re.search(r"^    Hits: 400092$", hist, flags=re.M)
    rows = re.findall(r"^\{ x: (.*?) *\} hitcount: +(\d+)  x: +(\d+)$", hist, flags=re.M)
    counts = {k: int(n) for k, n, _ in rows}
    assert counts["18446744073709551566"] == 4 * 1000        # -50
    assert counts["A" * 255] == 80
    assert counts["<__main__.Bad>"] == counts["<__main__.Slow>"] == 4
    assert max(len(line) for line in hist.splitlines()) < 400
