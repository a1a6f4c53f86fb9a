"""hist triggers (events/GRP/EVENT/hist), as the kernel's trace_events_hist.c:
the grammar, the hist file's layout, exact counts from several threads,
buckets, sorting, size and Dropped, errors with their caret, soft mode, and
``fentry run --hist`` / ``fentry record`` + ``report`` / ``fentry -p PID read``
on both hot paths."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap

import pytest
from helpers import env, fentry, fentry_run

import fentry as fentry_api
from fentry.errors import TraceError
from fentry.events.hist import parse_hist

THREADS = 4
CALLS = 100_000

PROGRAM = textwrap.dedent('''\
    import sys
    import threading

    def send(kind, nbytes):
        return kind, nbytes

    def worker(calls):
        for i in range(calls):
            send(i % 5, (i % 7) * 300)

    def main(threads, calls):
        ts = [threading.Thread(target=worker, args=(calls,)) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    if __name__ == "__main__":
        main(int(sys.argv[1]), int(sys.argv[2]))
        print("sent", int(sys.argv[1]) * int(sys.argv[2]))
''')

# What the program sends, worked out here: calls by kind, by nbytes, bytes by kind.
KINDS = {k: sum(1 for i in range(CALLS) if i % 5 == k) * THREADS for k in range(5)}
SIZES = {n * 300: sum(1 for i in range(CALLS) if i % 7 == n) * THREADS for n in range(7)}
BYTES = {k: sum((i % 7) * 300 for i in range(CALLS) if i % 5 == k) * THREADS for k in range(5)}

ROW = re.compile(r"^\{ (?P<key>.*?) *\} hitcount: +(?P<hits>\d+)(?P<vals>.*)$")
TOTALS = re.compile(r"\nTotals:\n    Hits: (\d+)\n    Entries: (\d+)\n    Dropped: (\d+)\n?$")


@pytest.fixture(scope="module")
def sender(tmp_path_factory):
    """The program, importable here as the module ``sender`` (once: fentry's
    symbol table knows a module by its name)."""
    where = tmp_path_factory.mktemp("sender")
    (where / "sender.py").write_text(PROGRAM)
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module("sender")
    finally:
        sys.path.remove(str(where))
        sys.modules.pop("sender", None)


@pytest.fixture
def fs(sender):
    """tracefs with the probe event ``kprobes/send kind=kind nbytes=nbytes``."""
    t = fentry_api.tracefs()
    t.write("kprobe_events", "p:send sender:send kind=kind nbytes=nbytes")
    return t


def rows(hist: str) -> list[tuple[str, int, str]]:
    """(key text, hitcount, the values text) of each row, in order."""
    return [(m["key"], int(m["hits"]), m["vals"]) for m in map(ROW.match, hist.splitlines()) if m]


def totals(hist: str) -> tuple[int, int, int]:
    m = TOTALS.search(hist)
    assert m, hist
    hits, entries, dropped = map(int, m.groups())
    return hits, entries, dropped


# -- the grammar and the layout, against the kernel's source and histogram.rst

FIELDS = {"bytes_req": "num", "bytes_alloc": "num", "call_site": "num", "common_pid": "num",
          "comm": "str"}


@pytest.mark.parametrize("command, info", [
    # histogram.rst's and LKML's examples, as the kernel prints them back
    ("keys=bytes_req.log2:sort=bytes_req",
     "hist:keys=bytes_req.log2:vals=hitcount:sort=bytes_req.log2:size=2048 [active]"),
    ("keys=call_site.sym:vals=bytes_req,bytes_alloc:sort=bytes_alloc.descending",
     "hist:keys=call_site.sym:vals=hitcount,bytes_req,bytes_alloc:sort=bytes_alloc.descending"
     ":size=2048 [active]"),
    ("key=common_pid.execname:val=bytes_req:sort=bytes_req.descending,hitcount",
     "hist:keys=common_pid.execname:vals=hitcount,bytes_req:sort=bytes_req.descending,hitcount"
     ":size=2048 [active]"),
    ("keys=bytes_req.buckets=100:values=bytes_alloc.percent:size=100:pause",
     "hist:keys=bytes_req.buckets=100:vals=hitcount,bytes_alloc.percent:sort=hitcount"
     ":size=128 [paused]"),
    ("keys=call_site.hex,bytes_req:name=foo:size=3000 if bytes_req > 10",
     "hist:name=foo:keys=call_site.hex,bytes_req:vals=hitcount:sort=hitcount:size=4096"
     " if bytes_req > 10 [active]"),
    ("keys=stacktrace:vals=bytes_req.graph",
     "hist:keys=stacktrace:vals=hitcount,bytes_req.graph:sort=hitcount:size=2048 [active]"),
    ("keys=common_pid:vals=common_timestamp.usecs",
     "hist:keys=common_pid:vals=hitcount,common_timestamp.usecs:sort=hitcount:size=2048"
     ":clock=global [active]"),
])
def test_trigger_info_reads_back_as_the_kernels(fs, command, info):
    fs.write("kprobe_events", "p:kmalloc sender:send call_site=kind bytes_req=nbytes "
                              "bytes_alloc=nbytes", append=True)
    fs.write("events/kprobes/kmalloc/trigger", "hist:" + command)
    assert fs.read("events/kprobes/kmalloc/trigger") == info + "\n"
    assert fs.read("events/kprobes/kmalloc/hist").startswith(
        "# event histogram\n#\n# trigger info: " + info + "\n#\n\n")


@pytest.mark.parametrize("command, message, word", [
    ("keys=bogus", "Couldn't find field", "bogus"),
    ("keys=bytes_req.foo", "Invalid field modifier", "foo"),
    ("keys=bytes_req.buckets=0", "Invalid field modifier", "buckets=0"),
    ("keys=bytes_req.percent", "Invalid field modifier", "percent"),
    ("keys=bytes_req:vals=", "Empty assignment", "vals="),
    ("keys=bytes_req:sort=nosuch", "Sort field must be a key or a val", "nosuch"),
    ("keys=bytes_req:sort=bytes_req.up", "Invalid sort modifier", "up"),
    ("keys=bytes_req:sort=hitcount,bytes_req,call_site", "Too many sort fields (Max = 2)", "sort="),
    ("keys=comm.execname", "Invalid field modifier", "execname"),
])
def test_errors_are_the_kernels_with_a_caret(command, message, word):
    with pytest.raises(TraceError) as e:
        parse_hist(command, FIELDS, "hist:kmem:kmalloc")
    err = e.value
    assert err.message == message
    assert err.command == "hist:" + command
    assert err.pos == ("hist:" + command).find(word)
    assert err.subsystem == "hist:kmem:kmalloc"


def test_a_refused_command_is_in_error_log_and_changes_nothing(fs):
    fs.write("events/kprobes/send/trigger", "hist:keys=kind")
    with pytest.raises(TraceError) as e:
        fs.write("events/kprobes/send/trigger", "hist:keys=kind,bogus", append=True)
    assert e.value.errno == 22
    assert fs.read("error_log").endswith(
        "] hist:kprobes:send: error: Couldn't find field\n"
        "  Command: hist:keys=kind,bogus\n"
        "                          ^\n")
    # the one there is untouched
    assert fs.read("events/kprobes/send/trigger") == \
        "hist:keys=kind:vals=hitcount:sort=hitcount:size=2048 [active]\n"
    with pytest.raises(TraceError) as e:
        fs.write("events/kprobes/send/trigger", "hist:keys=kind", append=True)
    assert e.value.message == "Hist trigger already exists"
    with pytest.raises(TraceError) as e:
        fs.write("events/kprobes/send/trigger", "hist:keys=nbytes:clear", append=True)
    assert e.value.message == "Can't clear or continue a nonexistent hist trigger"


@pytest.mark.parametrize("size, ok", [("128", 128), ("100", 128), ("0x1000", 4096),
                                      ("131072", 131072), ("65", 128), ("64", None),
                                      ("131073", None), ("x", None)])
def test_size_rounds_up_to_a_power_of_two_within_the_kernels_bounds(size, ok):
    if ok is None:
        with pytest.raises(TraceError):
            parse_hist(f"keys=bytes_req:size={size}", FIELDS, "hist:kmem:kmalloc")
    else:
        assert 1 << parse_hist(f"keys=bytes_req:size={size}", FIELDS, "x").map_bits == ok


# -- counting: exact, from several threads, as the events arrive

@pytest.mark.slow
def test_counts_from_threads_are_exact_and_add_up(fs, sender):
    fs.write("events/kprobes/send/trigger", "hist:keys=kind:vals=nbytes:sort=kind")
    sender.main(THREADS, CALLS)
    hist = fs.read("events/kprobes/send/hist")
    got = rows(hist)
    assert [key for key, _, _ in got] == [f"kind: {k:10d}" for k in range(5)]
    assert {int(key.split()[1]): hits for key, hits, _ in got} == KINDS
    assert {int(key.split()[1]): int(vals.split()[1]) for key, _, vals in got} == BYTES
    assert totals(hist) == (THREADS * CALLS, 5, 0)
    # The event only fed the hist: soft mode, nothing in the ring buffer.
    assert fs.read("events/kprobes/send/enable") == "0*\n"
    assert "send:" not in fs.read("trace")


def test_log2_and_buckets_bucket_exactly(fs, sender):
    fs.write("events/kprobes/send/trigger", "hist:keys=nbytes.log2:sort=nbytes")
    fs.write("events/kprobes/send/trigger", "hist:keys=nbytes.buckets=500:sort=nbytes",
             append=True)
    sender.main(1, 7 * 10)
    first, second = fs.read("events/kprobes/send/hist").split("\n\n\n")
    log2: dict[int, int] = {}
    buckets: dict[int, int] = {}
    for n in range(7):          # nbytes 0, 300, ..., 1800, ten times each
        v = n * 300
        b = (v - 1).bit_length() if v > 1 else 0        # ilog2(roundup_pow_of_two(v))
        log2[b] = log2.get(b, 0) + 10
        buckets[v // 500 * 500] = buckets.get(v // 500 * 500, 0) + 10
    assert [(k, h) for k, h, _ in rows(first)] == \
        [(f"nbytes: ~ 2^{b}", h) for b, h in sorted(log2.items())]
    assert "\n{ nbytes: ~ 2^9  } hitcount:         10\n" in first     # 300: 2^9, as the kernel's
    assert [(k, h) for k, h, _ in rows(second)] == \
        [(f"nbytes: ~ {b}-{b + 499}", h) for b, h in sorted(buckets.items())]


def test_sort_by_a_value_descending(fs, sender):
    fs.write("events/kprobes/send/trigger", "hist:keys=kind:vals=nbytes:sort=nbytes.descending")
    sender.main(1, 1000)
    got = [int(vals.split()[1]) for _, _, vals in rows(fs.read("events/kprobes/send/hist"))]
    assert got == sorted(got, reverse=True) and len(got) == 5


def test_a_full_map_counts_dropped(fs, sender):
    fs.write("kprobe_events", "p:pair sender:send n=kind m=nbytes", append=True)
    fs.write("events/kprobes/pair/trigger", "hist:keys=n,m:size=128")
    # 200 distinct keys, each twice: the first 128 keys get in, the others are dropped
    for i in range(200):
        for _ in range(2):
            sender.send(i, 0)
    hist = fs.read("events/kprobes/pair/hist")
    assert totals(hist) == (256, 128, 144)
    assert rows(hist)[0][0] == "n:          0, m:          0"


def test_several_hists_filters_pause_continue_clear_and_remove(fs, sender):
    trig = "events/kprobes/send/trigger"
    fs.write(trig, "hist:keys=kind if kind < 2")
    fs.write(trig, "hist:keys=common_pid.execname:vals=nbytes.percent", append=True)
    sender.main(1, 100)
    first, second = fs.read("events/kprobes/send/hist").split("\n\n\n")
    assert totals(first) == (40, 2, 0)
    (key, hits, vals), = rows(second)
    assert re.fullmatch(r"common_pid: Thread-\d+ \(worker\)\s*\[\s*\d+\]", key) and hits == 100
    assert vals == "  nbytes (%): 100.00"
    fs.write(trig, "hist:keys=kind:pause if kind < 2", append=True)
    sender.main(1, 100)
    assert totals(fs.read("events/kprobes/send/hist").split("\n\n\n")[0]) == (40, 2, 0)
    assert "[paused]" in fs.read(trig)
    fs.write(trig, "hist:keys=kind:cont if kind < 2", append=True)
    fs.write(trig, "hist:keys=kind:clear if kind < 2", append=True)
    sender.main(1, 5)
    assert totals(fs.read("events/kprobes/send/hist").split("\n\n\n")[0]) == (2, 2, 0)
    fs.write(trig, "!hist:keys=kind if kind < 2", append=True)
    fs.write(trig, "!hist:keys=common_pid.execname:vals=nbytes.percent", append=True)
    assert fs.read("events/kprobes/send/hist") == ""
    assert fs.read(trig).startswith("# Available triggers:\n")
    assert fs.read("events/kprobes/send/enable") == "0\n"


def test_enable_hist_and_disable_hist(fs, sender):
    fs.write("kprobe_events", "p:gate sender:worker calls=calls", append=True)
    fs.write("events/kprobes/send/trigger", "hist:keys=kind:pause")
    fs.write("events/kprobes/gate/trigger", "enable_hist:kprobes:send if calls == 3")
    sender.main(1, 2)           # the gate stays shut: nothing counted
    assert totals(fs.read("events/kprobes/send/hist")) == (0, 0, 0)
    sender.main(1, 3)
    assert totals(fs.read("events/kprobes/send/hist")) == (3, 3, 0)
    fs.write("events/kprobes/gate/trigger", "disable_hist:kprobes:send")
    sender.main(1, 3)
    assert totals(fs.read("events/kprobes/send/hist")) == (3, 3, 0)


def test_stacktrace_key(fs, sender):
    fs.write("events/kprobes/send/trigger", "hist:keys=stacktrace")
    sender.worker(3)
    hist = fs.read("events/kprobes/send/hist")
    entry = hist.split("#\n\n", 1)[1].split("\nTotals:")[0]
    lines = entry.splitlines()
    assert lines[0] == "{ stacktrace:"
    assert re.fullmatch(r" {9}send\+\d+ \(sender\.py:\d+\)", lines[1])
    assert re.fullmatch(r" {9}worker\+\d+ \(sender\.py:\d+\)", lines[2])
    assert re.fullmatch(r"\} hitcount: +3", lines[-1])


# -- the command: fentry run --hist, record + report, -p PID read; both hot paths

def _program(tmp_path):
    path = tmp_path / "send.py"
    path.write_text(PROGRAM)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("pure", ["0", "1"])
def test_fentry_run_hist_prints_the_hist_at_exit(tmp_path, pure):
    e = env()
    e.pop("FENTRY_PURE_PYTHON", None)
    if pure == "1":
        e["FENTRY_PURE_PYTHON"] = "1"
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "p:send __main__:send kind=kind nbytes=nbytes",
                             "--hist", "send:keys=kind:vals=nbytes:sort=kind",
                             program=(_program(tmp_path), str(THREADS), str(CALLS)), env=e, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"sent {THREADS * CALLS}\n"     # the program, as without fentry
    head, hist = trace.split("# events/kprobes/send/hist\n")
    assert "send:" not in head          # the event fed the hist only
    got = rows(hist)
    assert {int(key.split()[1]): hits for key, hits, _ in got} == KINDS
    assert {int(key.split()[1]): int(vals.split()[1]) for key, _, vals in got} == BYTES
    assert totals(hist) == (THREADS * CALLS, 5, 0)


def test_fentry_run_R_hist_prints_it_too(tmp_path):
    """trace-cmd's spelling, -e EVENT -R 'hist:...': the event is enabled
    (recorded) as well, and its hist printed at the end."""
    proc, trace = fentry_run(tmp_path, "-t", "nop", "-e", "p:send __main__:send kind=kind",
                             "-R", "hist:keys=kind:vals=hitcount.percent,hitcount.graph:sort=kind",
                             program=(_program(tmp_path), "1", "500"), text=True)
    assert proc.returncode == 0, proc.stderr
    head, hist = trace.split("# events/kprobes/send/hist\n")
    assert head.count(" send: (") == 500
    assert rows(hist) == [(f"kind: {k:10d}", 100, "  hitcount (%):  20.00  hitcount: " + "#" * 20)
                          for k in range(5)]
    assert "trigger info: hist:keys=kind:vals=hitcount,hitcount.percent,hitcount.graph:sort=kind" in hist


def test_fentry_run_hist_refuses_a_bad_one_before_the_program_starts(tmp_path):
    proc, _ = fentry_run(tmp_path, "-t", "nop", "-e", "p:send __main__:send kind=kind",
                         "--hist", "send:keys=kinds", program=(_program(tmp_path), "1", "1"), text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "hist:kprobes:send: error: Couldn't find field\n  Command: hist:keys=kinds\n" \
           "                     ^" in proc.stderr
    proc, _ = fentry_run(tmp_path, "-t", "nop", "--hist", "nosuch:keys=x",
                         program=(_program(tmp_path), "1", "1"), text=True)
    assert proc.returncode == 2 and "No such event for the hist trigger" in proc.stderr


def test_record_and_report_carry_the_hist(tmp_path):
    out = tmp_path / "h.dat"
    proc = fentry("record", "-o", str(out), "-t", "nop", "-e", "p:send __main__:send nbytes=nbytes",
                  "--hist", "kprobes:send:keys=nbytes.log2:sort=nbytes", "--",
                  _program(tmp_path), "2", "700")
    assert proc.returncode == 0, proc.stderr
    report = fentry("report", "-i", str(out))
    assert report.returncode == 0, report.stderr
    hist = report.stdout.split("# events/kprobes/send/hist\n")[1]
    assert sum(h for _, h, _ in rows(hist)) == 1400
    assert totals(hist) == (1400, 4, 0)      # 0: 2^0; 300: 2^9; 600, 900: 2^10; the rest 2^11


@pytest.mark.slow
def test_hist_read_live_over_the_socket(tmp_path):
    prog = tmp_path / "slow.py"
    stop = tmp_path / "stop"
    prog.write_text(textwrap.dedent(f'''\
        import os, time
        def tick(n):
            return n
        print("pid", os.getpid(), flush=True)
        n = 0
        while not os.path.exists({str(stop)!r}):
            tick(n % 3)
            n += 1
            time.sleep(0.001)
    '''))
    run = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "nop", "-o", str(tmp_path / "t"),
                            str(prog)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env())
    try:
        pid = run.stdout.readline().split()[1]
        for _ in range(200):
            if os.path.exists(f"/tmp/fentry-{pid}/control"):
                break
            subprocess.run(["sleep", "0.05"])
        assert fentry("-p", pid, "write", "kprobe_events", "p:tick __main__:tick n=n").returncode == 0
        got = fentry("-p", pid, "write", "events/kprobes/tick/trigger", "hist:keys=n:sort=n")
        assert got.returncode == 0, got.stderr
        got = fentry("-p", pid, "write", "-a", "events/kprobes/tick/trigger", "hist:keys=bogus")
        assert got.returncode != 0 and "Couldn't find field" in got.stderr
        for _ in range(100):
            hist = fentry("-p", pid, "read", "events/kprobes/tick/hist").stdout
            if totals(hist)[0] >= 30:
                break
            subprocess.run(["sleep", "0.05"])
        assert [k for k, _, _ in rows(hist)] == [f"n: {i:10d}" for i in range(3)]
        assert fentry("-p", pid, "read", "events/kprobes/tick/enable").stdout == "0*\n"
        assert fentry("-p", pid, "detach").returncode == 0
        stop.touch()
        run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0



def test_a_named_hist_is_shared_by_the_events_that_name_it(fs, sender):
    fs.write("kprobe_events", "p:work sender:worker kind=calls", append=True)
    fs.write("events/kprobes/send/trigger", "hist:name=both:keys=kind:sort=kind")
    fs.write("events/kprobes/work/trigger", "hist:name=both:keys=kind:sort=kind")
    sender.main(1, 3)                   # work: kind=3 once; send: kinds 0, 1, 2
    for event in ("send", "work"):
        hist = fs.read(f"events/kprobes/{event}/hist")
        assert "# trigger info: hist:name=both:keys=kind:vals=hitcount:sort=kind:size=2048 [active]\n" in hist
        assert [(k, h) for k, h, _ in rows(hist)] == [(f"kind: {k:10d}", 1) for k in range(4)]
    with pytest.raises(TraceError) as e:
        fs.write("events/kprobes/work/trigger", "hist:name=both:keys=kind:vals=kind", append=True)
    assert e.value.message.startswith("Named hist trigger doesn't match existing named trigger")


def test_an_event_file_without_per_code_names_is_read_by_field_name(fs, sender):
    """(python:*, gc:*, audit:* files: their triggers get a hit's fields by name)"""
    fs.write("events/kprobes/send/trigger", "hist:keys=kind.log2:vals=nbytes:sort=kind")
    trigger, = fs.probes.find("kprobes", "send").file(fs.instance).triggers
    for kind, nbytes in [(3, 10), (4, 20), (5, 30), (0, 1)]:
        trigger.hit({"kind": kind, "nbytes": nbytes}.get, None)
    assert [(k, h, v) for k, h, v in rows(fs.read("events/kprobes/send/hist"))] == [
        ("kind: ~ 2^0", 1, "  nbytes:          1"), ("kind: ~ 2^2", 2, "  nbytes:         30"),
        ("kind: ~ 2^3", 1, "  nbytes:         30")]


def test_sym_keys_name_where_the_probe_hit_and_who_called(fs, sender):
    """As the kernel's keys=call_site.sym: a probe's location fields (its
    format's __probe_ip, and a return probe's __probe_ret_ip) print as the
    function, with .sym-offset its offset in it and its size."""
    fs.write("kprobe_events", "r:back sender:send", append=True)
    fs.write("events/kprobes/send/trigger", "hist:keys=__probe_ip.sym")
    fs.write("events/kprobes/back/trigger", "hist:keys=__probe_ret_ip.sym-offset")
    sender.main(1, 4)
    sender.send(0, 0)
    (key, hits, _), = rows(fs.read("events/kprobes/send/hist"))
    assert re.fullmatch(r"__probe_ip: \[[0-9a-f]+\] send", key) and hits == 5
    got = sorted(rows(fs.read("events/kprobes/back/hist")), key=lambda r: r[1])
    assert [h for _, h, _ in got] == [1, 4]
    assert re.fullmatch(r"__probe_ret_ip: \[[0-9a-f]+\] test_sym_keys_name_where_the_probe_hit_and_who_called"
                        r"\+0x[0-9a-f]+/0x[0-9a-f]+", got[0][0])
    assert re.fullmatch(r"__probe_ret_ip: \[[0-9a-f]+\] worker\+0x[0-9a-f]+/0x[0-9a-f]+", got[1][0])


def test_args_fields_are_the_parameters_of_the_function(fs, sender):
    fs.write("kprobe_events", "p:all sender:send $args", append=True)
    fs.write("events/kprobes/all/trigger", "hist:keys=kind:vals=nbytes:sort=kind")
    sender.main(1, 10)
    got = rows(fs.read("events/kprobes/all/hist"))
    assert [(k, h) for k, h, _ in got] == [(f"kind: {k:10d}", 2) for k in range(5)]
    assert [int(v.split()[1]) for _, _, v in got] == \
        [sum((i % 7) * 300 for i in range(10) if i % 5 == k) for k in range(5)]
