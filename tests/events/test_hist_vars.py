"""hist variables, expressions and actions (Documentation/trace/histogram.rst
2.2 on; kernel/trace/trace_events_hist.c): a latency histogram of a Python
function from an entry and a return probe matched per thread, one synthetic
event per call, its buckets against function_graph's durations of the same
run; expressions; onmax()/onchange() with save() and snapshot(); read-once
variables; errors with their caret; through ``fentry run``, ``fentry
record`` + ``report`` and ``fentry.tracefs()``, on both hot paths."""

from __future__ import annotations

import collections
import importlib
import re
import sys
import textwrap
import threading
import time

import pytest
from helpers import env, fentry, fentry_run, longrun_under_fentry

import fentry as fentry_api
from fentry.errors import TraceError

LAT_PROGRAM = textwrap.dedent('''\
    import sys
    import threading
    import time

    def work(ms):
        time.sleep(ms / 1000)
        return ms

    def worker(rounds):
        for _ in range(rounds):
            for ms in (2.5, 10, 40):
                work(ms)

    if __name__ == "__main__":
        threads, rounds = int(sys.argv[1]), int(sys.argv[2])
        ts = [threading.Thread(target=worker, args=(rounds,)) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        print("worked", threads * rounds * 3)
''')
THREADS = 3
ROUNDS = 2
CALLS = THREADS * ROUNDS * 3

# The must-show, as a user types it: entry and return probes, a synthetic
# event, and three hists.  The sleeps (2.5, 10, 40 ms) sit inside log2
# buckets 12, 14 and 16 (2049-4096, 8193-16384, 32769-65536 us), far from
# their edges but for a loaded machine's oversleep; what is checked is that
# each call falls where function_graph's duration of it does.
LATENCY = ["-e", "p:lat/work_entry __main__:work", "-e", "r:lat/work_exit __main__:work",
           "-e", "s:synthetic/wakeup_lat u64 lat; pid_t pid",
           "--hist", "lat/work_entry:keys=common_pid:ts0=common_timestamp.usecs",
           "--hist", "lat/work_exit:keys=common_pid:lat=common_timestamp.usecs-$ts0"
                     ":onmatch(lat.work_entry).trace(wakeup_lat,$lat,common_pid)",
           "--hist", "synthetic/wakeup_lat:keys=lat.log2:sort=lat"]

ROW = re.compile(r"^\{ (?P<key>.*?) *\} hitcount: +(?P<hits>\d+)(?P<vals>.*)$")
TOTALS = re.compile(r"\nTotals:\n    Hits: (\d+)\n    Entries: (\d+)\n    Dropped: (\d+)\n")
# A work() call's duration: a leaf line, or the closing brace of one that
# other threads' lines split (only work is traced: every brace is its).
GRAPH_WORK = re.compile(r"\|\s*[!#*@$+ ]?\s*([\d.]+) us\s*\|\s+(?:work\(\);|\})")


def rows(hist: str) -> list[tuple[str, int, str]]:
    return [(m["key"], int(m["hits"]), m["vals"]) for m in map(ROW.match, hist.splitlines()) if m]


def totals(hist: str) -> tuple[int, int, int]:
    m = TOTALS.search(hist)
    assert m, hist
    hits, entries, dropped = map(int, m.groups())
    return hits, entries, dropped


def log2(us: int) -> int:
    """The kernel's .log2 bucket: ilog2(roundup_pow_of_two(us))."""
    return (us - 1).bit_length() if us > 1 else 0


def hists(trace: str) -> dict[str, str]:
    """Each ``# events/GRP/EVENT/hist`` section of a trace's end."""
    parts = re.split(r"^# events/(\S+)/hist\n", trace, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _env(pure: str) -> dict:
    e = env()
    e.pop("FENTRY_PURE_PYTHON", None)
    if pure == "1":
        e["FENTRY_PURE_PYTHON"] = "1"
    return e


def _check_latency(trace: str, graph: list[float]) -> None:
    """One synthetic event per call, in the bucket of its function_graph duration."""
    h = hists(trace)
    synth = h["synthetic/wakeup_lat"]
    assert "trigger info: hist:keys=lat.log2:vals=hitcount:sort=lat.log2:size=2048 [active]" in synth
    got = {int(re.search(r"2\^(\d+)", key)[1]): hits for key, hits, _ in rows(synth)}
    assert sum(got.values()) == CALLS
    assert totals(synth) == (CALLS, len(got), 0)
    assert len(graph) == CALLS
    assert got == dict(collections.Counter(log2(int(d)) for d in graph))
    assert len(got) >= 3 and min(got) >= 12
    exit_hist = h["lat/work_exit"]
    assert ("trigger info: hist:keys=common_pid:vals=hitcount:lat=common_timestamp.usecs-$ts0"
            ":sort=hitcount:size=2048:clock=global"
            ":onmatch(lat.work_entry).trace(wakeup_lat,$lat,common_pid) [active]") in exit_hist
    # matched per thread: each thread's calls, its own returns
    assert [hits for _, hits, _ in rows(exit_hist)] == [ROUNDS * 3] * THREADS
    assert totals(h["lat/work_entry"]) == (CALLS, THREADS, 0)


@pytest.mark.parametrize("pure", ["0", "1"])
def test_latency_histogram_of_a_function_agrees_with_function_graph(tmp_path, pure):
    prog = tmp_path / "work.py"
    prog.write_text(LAT_PROGRAM)
    proc, trace = fentry_run(tmp_path, "-t", "function_graph", "-l", "work", *LATENCY,
                             program=(str(prog), str(THREADS), str(ROUNDS)), env=_env(pure), text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"worked {CALLS}\n"
    head = trace.split("\n# events/")[0]
    assert "work_entry:" not in head and "wakeup_lat:" not in head     # they fed the hists only
    _check_latency(trace, [float(d) for d in GRAPH_WORK.findall(head)])


def test_latency_histogram_through_record_and_report(tmp_path):
    prog = tmp_path / "work.py"
    prog.write_text(LAT_PROGRAM)
    out = tmp_path / "lat.dat"
    proc = fentry("record", "-o", str(out), "-t", "function_graph", "-l", "work", *LATENCY,
                  "--", str(prog), str(THREADS), str(ROUNDS))
    assert proc.returncode == 0, proc.stderr
    report = fentry("report", "-i", str(out))
    assert report.returncode == 0, report.stderr
    head = report.stdout.split("\n# events/")[0]
    _check_latency(report.stdout, [float(d) for d in GRAPH_WORK.findall(head)])


def test_latency_buckets_and_the_synthetic_events_records(tmp_path):
    """``.buckets=N`` on the synthetic event, which is enabled too: each
    call's record carries its lat and pid."""
    prog = tmp_path / "work.py"
    prog.write_text(LAT_PROGRAM)
    opts = LATENCY[:-2] + ["-R", "hist:keys=lat.buckets=10000"]
    proc, trace = fentry_run(tmp_path, "-t", "nop", *opts, program=(str(prog), str(THREADS), "1"),
                             text=True)
    assert proc.returncode == 0, proc.stderr
    records = re.findall(r"wakeup_lat: lat=(\d+) pid=(\d+)", trace)
    assert len(records) == THREADS * 3
    assert len({pid for _, pid in records}) == THREADS
    buckets = rows(hists(trace)["synthetic/wakeup_lat"])
    assert {key: hits for key, hits, _ in buckets} == collections.Counter(
        f"lat: ~ {int(lat) // 10000 * 10000}-{int(lat) // 10000 * 10000 + 9999}" for lat, _ in records)


# -- in process, fentry.tracefs(): exact counts at scale

FAST = textwrap.dedent('''\
    def work(n):
        return n * 2
''')


@pytest.fixture(scope="module")
def fastwork(tmp_path_factory):
    where = tmp_path_factory.mktemp("fastwork")
    (where / "fastwork.py").write_text(FAST)
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module("fastwork")
    finally:
        sys.path.remove(str(where))
        sys.modules.pop("fastwork", None)


@pytest.fixture
def fs(fastwork):
    t = fentry_api.tracefs()
    t.write("dynamic_events", "p:lat/work_entry fastwork:work n=n nr=n\n"
                              "r:lat/work_exit fastwork:work ret=$retval\n"
                              "s:synthetic/work_lat u64 lat; pid_t pid; u64 n")
    return t


def _threads(fn, n: int, calls: int) -> list[int]:
    ids: list[int] = []

    def run() -> None:
        ids.append(threading.get_native_id())
        for i in range(calls):
            fn(i)
    ts = [threading.Thread(target=run) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return ids


def test_one_synthetic_event_per_call_from_several_threads(fs, fastwork):
    fs.write("events/lat/work_entry/trigger", "hist:keys=common_pid:ts0=common_timestamp,n0=n")
    fs.write("events/lat/work_exit/trigger", "hist:keys=common_pid:lat=common_timestamp-$ts0:"
                                             "onmatch(lat.work_entry).work_lat($lat,common_pid,$n0)")
    fs.write("events/synthetic/work_lat/trigger", "hist:keys=pid:vals=n")
    threads, calls = 4, 25_000          # 10^5 calls
    ids = _threads(fastwork.work, threads, calls)
    hist = fs.read("events/synthetic/work_lat/hist")
    # the shorthand reads back as written
    assert fs.read("events/lat/work_exit/trigger") == (
        "hist:keys=common_pid:vals=hitcount:lat=common_timestamp-$ts0:sort=hitcount:size=2048"
        ":clock=global:onmatch(lat.work_entry).work_lat($lat,common_pid,$n0) [active]\n")
    got = {int(key.split()[1]): (hits, int(vals.split()[1])) for key, hits, vals in rows(hist)}
    # each thread: one event per call, and n read back from the entry: sum(range(calls))
    assert got == dict.fromkeys(ids, (calls, calls * (calls - 1) // 2))
    assert totals(hist) == (threads * calls, threads, 0)


def test_a_variable_is_read_once_by_an_expression(fs, fastwork):
    """The entry sets ts0 only for n < 10; a return reads and unsets it, so
    the return of a later call finds none: it is dropped (no entry, no hit)."""
    fs.write("events/lat/work_entry/trigger", "hist:keys=common_pid:ts0=common_timestamp if n < 10")
    fs.write("events/lat/work_exit/trigger", "hist:keys=common_pid:lat=common_timestamp-$ts0")
    fs.write("events/lat/work_exit/trigger", "hist:keys=common_pid:vals=ret:x=$ts0", append=True)
    for i in range(100):
        fastwork.work(i)
    one, two = fs.read("events/lat/work_exit/hist").split("\n\n# event histogram")
    assert totals(one) == (10, 1, 0)        # n < 10: 10 entries set ts0, each read once
    # the second hist reads ts0 too (not once: an alias), but after the first unset it: never set
    assert totals(two) == (0, 0, 0)


# -- expressions

@pytest.mark.parametrize("keys, shown, value", [
    ("n*2+1", "n*2+1", lambda n: n * 2 + 1),
    ("n-3-2", "n-3-2", lambda n: (n - 5) & (2**64 - 1)),           # left to right, u64
    # a constant divisor below 2^20: the kernel's multiply and shift, which rounds up
    ("n/3", "n/3", lambda n: (n * (2**20 // 3) + 2**20 - 1) >> 20),
    ("n/4*2", "n/4*2", lambda n: (n // 4) * 2),
    ("-(n)", "-(n)", lambda n: -n & (2**64 - 1)),
    ("-(n+1)", "-(n+1)", lambda n: -(n + 1) & (2**64 - 1)),
    ("n+2*3", "n+6", lambda n: n + 6),                              # constants folded
    ("0x10+n", "16+n", lambda n: n + 16),
])
def test_expression_keys(fs, fastwork, keys, shown, value):
    fs.write("events/lat/work_entry/trigger", f"hist:keys={keys}")
    assert fs.read("events/lat/work_entry/trigger") == \
        f"hist:keys={shown}:vals=hitcount:sort=hitcount:size=2048 [active]\n"
    for i in range(20):
        fastwork.work(i)
    got = {int(key.split(": ")[1]): hits for key, hits, _ in rows(fs.read("events/lat/work_entry/hist"))}
    assert got == collections.Counter(value(i) for i in range(20))


def test_variables_and_expressions_read_back_as_the_kernel_prints_them(fs):
    fs.write("events/lat/work_entry/trigger",
             "hist:keys=common_pid:ts0=common_timestamp.usecs,a=n*3,b=$ts0:c=2*8")
    assert fs.read("events/lat/work_entry/trigger") == (
        "hist:keys=common_pid:vals=hitcount:ts0=common_timestamp.usecs,a=n*3,b=common_timestamp.usecs,"
        "c=16:sort=hitcount:size=2048:clock=global [active]\n")


# -- onmax / onchange

def test_onmax_saves_the_fields_of_the_max(fs, fastwork):
    fs.write("events/lat/work_entry/trigger", "hist:keys=common_pid:m=n-500:onmax($m).save(nr,common_pid)")
    assert fs.read("events/lat/work_entry/trigger").endswith(
        ":m=n-500:sort=hitcount:size=2048:onmax($m).save(nr,common_pid) [active]\n")
    ids = _threads(fastwork.work, 2, 700)
    hist = fs.read("events/lat/work_entry/hist")
    # n-500 is u64: n < 500 wraps to the biggest; the max is at n = 499
    for tid in ids:
        assert (f"{{ common_pid: {tid:10d} }} hitcount:        700\n"
                f"\tmax: {(499 - 500) & (2**64 - 1):10d}  nr:        499  common_pid: {tid:10d}\n") in hist
    assert totals(hist) == (1400, 2, 0)


def test_onchange_keeps_the_last_change(fs, fastwork):
    fs.write("events/lat/work_entry/trigger", "hist:keys=common_pid:m=n/16:onchange($m).save(nr)")
    for i in range(95):
        fastwork.work(i)
    hist = fs.read("events/lat/work_entry/hist")
    assert "hitcount:         95\n\tchanged:          5  nr:         80\n" in hist


def test_onmax_snapshot_takes_the_snapshot(fs, fastwork):
    fs.write("events/lat/work_exit/enable", "1")
    fs.write("events/lat/work_entry/trigger", "hist:keys=common_pid:m=n:onmax($m).snapshot()")
    for i in range(5):
        fastwork.work(i)
    hist = fs.read("events/lat/work_entry/hist")
    tid = threading.get_native_id()
    assert ("\nSnapshot taken (see tracing/snapshot).  Details:\n"
            f"\ttriggering value {{ onmax($m) }}:          4\ttriggered by event with key: "
            f"{{ common_pid: {tid:10d} }}\n\nTotals:") in hist
    assert "\tmax:" not in hist         # (a snapshot's max is not printed per entry)
    # each new max took a snapshot (fentry's: the records since the one before):
    # the last, at n=4's entry, holds n=3's return
    assert re.findall(r"work_exit: .* ret=(\d+)", fs.read("snapshot")) == ["6"]
    assert re.findall(r"work_exit: .* ret=(\d+)", fs.read("trace")) == ["8"]


# -- errors, with the kernel's messages and caret; nothing half-applied

@pytest.mark.parametrize("command, message, word", [
    ("keys=common_pid:x=$nosuch", "Couldn't find variable", "nosuch"),
    ("keys=common_pid:x=ret+ret+ret+ret+ret", "Too many subexpressions (3 max)", "ret"),
    ("keys=common_pid:x=ret/0", "Division by zero", "0"),
    ("keys=common_pid:x=1x", "Expecting numeric literal", "1x"),
    ("keys=common_pid:x=-(ret)+1", "Unary minus not supported in sub-expressions", "ret)+1"),
    ("keys=common_pid:x=ret,y", "Malformed assignment", "y"),
    ("keys=common_pid:x=ret,x=ret", "Variable already defined", "x=ret,x"),
    ("keys=common_pid+$ts0", "Using variable references in keys not supported", "common_pid+$ts0"),
    ("keys=common_pid:x=common_timestamp-$ts0", "Timestamp units in expression don't match", ""),
    # (the caret at the first x, in onmax: the kernel's errpos is a strstr)
    ("keys=common_pid:onmax(x).save(ret)", "For onmax(x) or onchange(x), x must be a variable", "x"),
    ("keys=common_pid:onmax($nosuch).save(ret)", "Couldn't find onmax or onchange variable", "nosuch"),
    ("keys=common_pid:x=ret:onmax($x).save(nosuch)", "Couldn't create field variable", "nosuch"),
    ("keys=common_pid:x=ret:onmax($x).save(ret):onchange($x).save(ret)",
     "Can't have more than one save() action per hist", ""),
    ("keys=common_pid:x=ret:onmax($x).bogus", "No action found", ""),
    ("keys=common_pid:onmatch(lat).trace(work_lat,$x)", "Missing subsystem", "lat"),
    ("keys=common_pid:onmatch(lat.nosuch).trace(work_lat,$x)", "Invalid subsystem or event name", "nosuch"),
    ("keys=common_pid:onmatch(lat.work_entry", "No closing paren found", "lat.work_entry"),
    ("keys=common_pid:onmatch(lat.work_entry).save(ret)", "Handler doesn't support action", "save"),
    ("keys=common_pid:x=ret:onmatch(lat.work_entry).trace(nosynth,$x)", "Couldn't find synthetic event",
     "nosynth"),
    ("keys=common_pid:x=ret:onmatch(lat.work_entry).trace(work_lat,$x,common_pid)",
     "Param count doesn't match synthetic event field count", "work_lat"),
    ("keys=common_pid:x=ret:onmatch(lat.work_entry).trace(work_lat,$x,comm,$x)",
     "Param type doesn't match synthetic event field type", "comm"),
    ("keys=common_pid:x=ret:onmatch(lat.work_entry).trace(work_lat,$x,common_pid,$x,$x)",
     "Param type doesn't match synthetic event field type", "$x"),   # (the first $x: strstr)
    ("keys=common_pid:x=ret:onmatch(lat.work_entry).trace(work_lat,$nosuch,common_pid,$x)",
     "Couldn't find param", "nosuch"),
    ("keys=common_pid:x=ret:onmatch(lat.work_entry).trace(work_lat,$x,common_pid,)", "Invalid action param",
     ""),
])
def test_errors_are_the_kernels_with_a_caret(fs, command, message, word):
    fs.write("events/lat/work_entry/trigger", "hist:keys=common_pid:ts0=common_timestamp.usecs")
    before = fs.read("events/lat/work_exit/trigger")
    with pytest.raises(TraceError) as e:
        fs.write("events/lat/work_exit/trigger", "hist:" + command, append=True)
    full = "hist:" + command
    pos = full.find(word) if word else 0
    assert e.value.message == message
    assert (e.value.command, e.value.pos) == (full, pos)
    assert f"hist:lat:work_exit: error: {message}\n  Command: {full}\n{' ' * (11 + pos)}^" in \
        fs.read("error_log")
    assert fs.read("events/lat/work_exit/trigger") == before


def test_a_hist_whose_variable_is_read_cannot_be_removed(fs):
    entry = "hist:keys=common_pid:ts0=common_timestamp.usecs"
    fs.write("events/lat/work_entry/trigger", entry)
    fs.write("events/lat/work_exit/trigger", "hist:keys=common_pid:lat=common_timestamp.usecs-$ts0")
    with pytest.raises(TraceError) as e:
        fs.write("events/lat/work_entry/trigger", "!" + entry, append=True)
    assert e.value.errno == 16          # EBUSY
    fs.write("events/lat/work_entry/trigger", "hist:keys=n")     # (> removes no hist while one is read)
    assert fs.read("events/lat/work_entry/trigger").splitlines() == [
        "hist:keys=common_pid:vals=hitcount:ts0=common_timestamp.usecs:sort=hitcount:size=2048"
        ":clock=global [active]",
        "hist:keys=n:vals=hitcount:sort=hitcount:size=2048 [active]"]
    fs.write("events/lat/work_exit/trigger", "!hist:keys=common_pid:lat=common_timestamp.usecs-$ts0",
             append=True)
    fs.write("events/lat/work_entry/trigger", "!" + entry, append=True)
    assert fs.read("events/lat/work_entry/trigger") == \
        "hist:keys=n:vals=hitcount:sort=hitcount:size=2048 [active]\n"


@pytest.mark.slow
def test_latency_hist_written_and_read_live(tmp_path):
    """The same writes over ``fentry -p PID``, to a running program: the
    return's hist and the synthetic event's count the same calls."""
    with longrun_under_fentry(tmp_path) as pid:
        for path, text in [
                ("dynamic_events", "p:lat/add_entry __main__:add\nr:lat/add_exit __main__:add\n"
                                   "s:synthetic/add_lat u64 lat; pid_t pid"),
                ("events/synthetic/add_lat/trigger", "hist:keys=pid:vals=lat"),
                ("events/lat/add_entry/trigger", "hist:keys=common_pid:ts0=common_timestamp"),
                ("events/lat/add_exit/trigger", "hist:keys=common_pid:lat=common_timestamp-$ts0"
                                                ":onmatch(lat.add_entry).trace(add_lat,$lat,common_pid)")]:
            w = fentry("-p", pid, "write", "-a", path, text)
            assert w.returncode == 0, w.stderr
        time.sleep(0.5)
        # the entry's hist is read: it cannot go, and says so
        busy = fentry("-p", pid, "write", "-a", "events/lat/add_entry/trigger",
                      "!hist:keys=common_pid:ts0=common_timestamp")
        assert busy.returncode != 0 and "Device or resource busy" in busy.stderr
        exit_spec = ("hist:keys=common_pid:lat=common_timestamp-$ts0"
                     ":onmatch(lat.add_entry).trace(add_lat,$lat,common_pid)")
        paused = fentry("-p", pid, "write", "-a", "events/lat/add_exit/trigger", exit_spec + ":pause")
        assert paused.returncode == 0, paused.stderr
        time.sleep(0.05)            # (a hit under way when it paused)
        exit_hist = fentry("-p", pid, "read", "events/lat/add_exit/hist").stdout
        synth = fentry("-p", pid, "read", "events/synthetic/add_lat/hist").stdout
        assert "[paused]" in exit_hist
        hits, entries, dropped = totals(synth)
        assert hits > 0 and entries == 1 and dropped == 0, synth
        assert totals(exit_hist)[0] == hits         # one synthetic event per matched return
        for path, text in [("events/lat/add_exit/trigger", "!" + exit_spec),
                           ("events/lat/add_entry/trigger", "!hist:keys=common_pid:ts0=common_timestamp")]:
            w = fentry("-p", pid, "write", "-a", path, text)
            assert w.returncode == 0, w.stderr
