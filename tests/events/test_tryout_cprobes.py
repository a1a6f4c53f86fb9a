"""Probes on C functions with triggers and hists, tried as a new user would
(issue 14's tryout): ``p builtins:sorted`` under ``fentry run -R/--hist``.
Run on both hot paths (``FENTRY_PURE_PYTHON=1`` for the pure one)."""

from __future__ import annotations

import re
import textwrap

from helpers import body, fentry_run

SORTER = """
    import sys, threading
    N = int(sys.argv[1])
    def by_key(xs):
        return sorted(xs, key=abs)
    def plain(xs):
        return sorted(xs)
    def work(t):
        for i in range(N):
            (by_key if i % 4 == 0 else plain)([i, -t, 3])
    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("done")
"""


def program(tmp_path, source: str) -> str:
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_a_hist_on_a_c_probe_counts_every_call_by_call_site(tmp_path):
    """4 threads x 20000 calls of sorted, a quarter from by_key: the hist
    (keyed on the call site, as the event's line shows it) counts each one,
    and the event, which only feeds the hist, records nothing.  The C
    probe's hits called no trigger before: an empty hist, and every call
    recorded though the event was not enabled."""
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "p:srt builtins:sorted $arg1",
                             "--hist", "srt:keys=__probe_ip.sym:sort=hitcount.descending",
                             program=(program(tmp_path, SORTER), "20000"), text=True)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    assert not [line for line in body(trace) if "srt:" in line]
    rows = {k: int(v) for k, v in re.findall(r"^\{ __probe_ip: \[[0-9a-f]+\] (\S+) +\} hitcount: +(\d+)",
                                              trace, flags=re.M)}
    assert rows == {"plain": 60000, "by_key": 20000}
    assert re.search(r"^    Hits: 80000$", trace, flags=re.M)


def test_traceoff_on_a_c_probe_stops_the_trace_at_the_first_match(tmp_path):
    """``-R 'traceoff:1 if arg1 ...'`` on a C probe: the trace ends with the
    first call that matches (traceoff records the event, then stops)."""
    prog = program(tmp_path, """
        for i in range(100):
            len("x" * i)
        print("done")
    """)
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "p:ln builtins:len s=$arg1:string",
                             "-R", 'traceoff:1 if s == "xxxxxxx"', program=(prog,), text=True)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    lines = [line for line in body(trace) if " ln: " in line]
    assert len(lines) == 8 and lines[-1].endswith('s="xxxxxxx"'), lines[-3:]


POOL = """
    import multiprocessing as mp, os, sys
    def work(n):
        for i in range(n):
            sorted([i, 2, 1])
        return os.getpid(), n
    def before():
        return sorted([3, 2])
    if __name__ == "__main__":
        mp.set_start_method(sys.argv[1])
        before()                        # the parent's, before it forks
        with mp.Pool(3) as p:
            res = p.map(work, [1000 + i for i in range(12)], chunksize=1)
        per = {}
        for pid, n in res:
            per[pid] = per.get(pid, 0) + n
        for pid in per:
            print(pid, per[pid])
"""


def test_follow_a_pool_hist_on_a_c_probe_counts_each_process_alone(tmp_path):
    """``--follow`` over a forking pool, a hist of ``p builtins:sorted`` by
    process and call site: each worker's rows are exactly the calls it made.
    A forked child started with a copy of its parent's hist before (the
    parent's hits counted again in every child, and a map lock a parent's
    thread held would be held for ever)."""
    proc, trace = fentry_run(tmp_path, "--follow", "-t", "nop", "-e", "p:srt builtins:sorted",
                             "--hist", "srt:keys=common_pid,__probe_ip.sym",
                             program=(program(tmp_path, POOL), "fork"), text=True)
    assert proc.returncode == 0, proc.stderr
    made = {int(pid): int(n) for pid, n in (line.split() for line in proc.stdout.splitlines())}
    rows = re.findall(r"^\{ common_pid: +(\d+), __probe_ip: \[[0-9a-f]+\] (\S+) +\} hitcount: +(\d+)",
                      trace, flags=re.M)
    seen: dict[tuple[int, str], int] = {}
    for pid, where, n in rows:
        seen[(int(pid), where)] = seen.get((int(pid), where), 0) + int(n)
    assert {pid: n for (pid, where), n in seen.items() if where == "work"} == made
    assert [n for (pid, where), n in seen.items() if where == "before"] == [1]
