"""Synthetic events (issue 14): ``synthetic_events`` and ``s:`` in
``dynamic_events``, as the kernel's trace_events_synth.c -- read back, errors
with their caret, removal refused while busy -- and the events themselves:
fired (as a hist action fires them) from several threads, filtered, with
triggers and hists, through ``fentry run``, ``fentry record``/``report`` and
in process.  Run on both hot paths (``FENTRY_PURE_PYTHON=1`` for the pure one).

This kernel has no synthetic events (no CONFIG_HIST_TRIGGERS, CONFIG_SYNTH_EVENTS),
so the expected texts are the kernel source's: synth_event_show,
__set_synth_event_print_fmt, print_synth_event, the SYNTH_ERR_* table.
"""

from __future__ import annotations

import errno
import re
import textwrap
import threading

import pytest
from helpers import body, fentry, fentry_run, longrun_under_fentry

from fentry.errors import TraceError
from fentry.events.trace_synth import find_synth_event

LAT = "wakeup_latency u64 lat; pid_t pid; char comm[16]"


def fire_all(fs, name, rows):
    f = find_synth_event(fs, fs.instance, name)
    for row in rows:
        f.fire(row)


def trace_lines(fs, name):
    return [line.split(": ", 1)[1] for line in body(fs.read("trace")) if f" {name}: " in line]


# -- definitions, read back ------------------------------------------------------------

def test_define_read_back_and_remove_through_both_files(fs):
    fs.write("synthetic_events", LAT)
    fs.write("synthetic_events", "wakeup_new_test pid_t pid; char[] msg; unsigned int n", append=True)
    assert fs.read("synthetic_events") == (
        "wakeup_latency\tu64 lat; pid_t pid; char[16] comm\n"
        "wakeup_new_test\tpid_t pid; char[] msg; unsigned int n\n")
    assert fs.read("dynamic_events") == (
        "s:synthetic/wakeup_latency\tu64 lat; pid_t pid; char[16] comm\n"
        "s:synthetic/wakeup_new_test\tpid_t pid; char[] msg; unsigned int n\n")
    assert fs.ls("events/synthetic") == ["enable", "wakeup_latency", "wakeup_new_test"]
    assert fs.ls("events/synthetic/wakeup_latency") == ["enable", "filter", "format", "hist", "id", "trigger"]
    assert "synthetic:wakeup_latency\n" in fs.read("available_events")
    fs.write("synthetic_events", "!wakeup_new_test", append=True)
    fs.write("dynamic_events", "s:synthetic/other u8 b", append=True)
    fs.write("dynamic_events", "s:more s64 v", append=True)        # (the group is optional)
    assert fs.read("synthetic_events") == "wakeup_latency\tu64 lat; pid_t pid; char[16] comm\n" \
                                          "other\tu8 b\nmore\ts64 v\n"
    fs.write("dynamic_events", "-:synthetic/other", append=True)
    fs.write("dynamic_events", "-:more", append=True)
    assert fs.read("synthetic_events") == "wakeup_latency\tu64 lat; pid_t pid; char[16] comm\n"
    fs.write("synthetic_events", "")            # > : every one gone
    assert fs.read("synthetic_events") == "" and fs.read("dynamic_events") == ""
    assert "synthetic" not in fs.ls("events")


def test_old_form_without_semicolons_and_comments(fs):
    # (create_synth_event still takes several fields between semicolons)
    fs.write("synthetic_events", "old u64 a s32 b  # a comment\n\n  new unsigned long c;bool d\n")
    assert fs.read("synthetic_events") == "old\tu64 a; s32 b\nnew\tunsigned long c; bool d\n"


def test_format_file_is_the_kernels_layout(fs):
    fs.write("synthetic_events", "ev u64 lat; pid_t pid; char comm[16]; char[] msg; s8 small")
    fmt = fs.read("events/synthetic/ev/format")
    event_id = int(fs.read("events/synthetic/ev/id"))
    assert fmt == (
        f"name: ev\nID: {event_id}\nformat:\n"
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
        "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
        "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
        "\tfield:u64 lat;\toffset:8;\tsize:8;\tsigned:0;\n"
        "\tfield:pid_t pid;\toffset:16;\tsize:4;\tsigned:1;\n"
        "\tfield:char comm[];\toffset:24;\tsize:16;\tsigned:1;\n"       # (a static string: 256 bytes)
        "\tfield:__data_loc char[] msg;\toffset:280;\tsize:8;\tsigned:1;\n"
        "\tfield:s8 small;\toffset:288;\tsize:1;\tsigned:1;\n\n"
        'print fmt: "lat=%llu, pid=%d, comm=%.*s, msg=%.*s, small=%d", '
        "REC->lat, REC->pid, REC->comm, __get_str(msg), REC->small\n")


# -- errors: the kernel's messages, caret where its errpos puts it ---------------------

@pytest.mark.parametrize("cmd, message, pos", [
    ("ev", "Command must be of the form: <name> field[;field] ...", 0),
    ("ev u64", "Command must be of the form: <name> field[;field] ...", 0),
    ("1ev u64 a", "Illegal name", 0),
    ("ev u64 a-b", "Illegal name", 7),
    ("ev unsigned a", "Incomplete type", 3),
    ("ev u64 a; float b", "Invalid type", 10),
    ("ev u64 a; u32", "Invalid field", 10),
    ("ev char s[300]", "Invalid array specification", 8),
    ("ev u64 x[4]", "Invalid type", 3),          # (an array of numbers: size 0, not a string)
    ("ev u64 a; u128 b", "Invalid type", 10),
])
def test_errors_have_the_kernels_text_and_caret(fs, cmd, message, pos):
    with pytest.raises(TraceError) as e:
        fs.write("synthetic_events", cmd)
    assert e.value.errno == errno.EINVAL
    log = fs.read("error_log")
    assert f"synthetic_events: error: {message}\n  Command: {cmd}\n" + " " * (11 + pos) + "^\n" in log
    assert fs.read("synthetic_events") == ""            # nothing half-applied


def test_too_many_fields_and_exists(fs):
    cmd = "ev " + "; ".join(f"u64 f{i}" for i in range(65))
    with pytest.raises(TraceError, match="Too many fields"):
        fs.write("synthetic_events", cmd)
    fs.write("synthetic_events", "ev " + "; ".join(f"u64 f{i}" for i in range(64)))
    with pytest.raises(TraceError, match="Event already exists") as e:
        fs.write("synthetic_events", "ev u64 a", append=True)
    assert e.value.pos == 0
    assert fs.read("synthetic_events").count("u64") == 64


def test_dynamic_events_errors(fs):
    dyn_form = "Command must be of the form: s or -:[synthetic/]<name> field[;field] ..."
    form = "Command must be of the form: <name> field[;field] ..."
    for cmd, message in [("s:other/ev u64 a", dyn_form), ("s:ev", form), ("s:synthetic/ev u64", form)]:
        with pytest.raises(TraceError) as e:
            fs.write("dynamic_events", cmd, append=True)
        assert e.value.message == message and e.value.pos == 0
        assert f"synthetic_events: error: {message}\n  Command: {cmd}\n" in fs.read("error_log")
    with pytest.raises(TraceError) as e:
        fs.write("dynamic_events", "s:ev u64 a; nosuch b", append=True)
    assert (e.value.message, e.value.pos) == ("Invalid type", 12)
    assert fs.read("dynamic_events") == ""


def test_removal_refused_while_enabled_or_held(fs):
    fs.write("synthetic_events", LAT)
    fs.write("events/synthetic/wakeup_latency/enable", "1")
    for path, cmd in [("synthetic_events", "!wakeup_latency"), ("dynamic_events", "-:synthetic/wakeup_latency")]:
        with pytest.raises(TraceError) as e:
            fs.write(path, cmd, append=True)
        assert e.value.errno == errno.EBUSY
    for path in ("synthetic_events", "dynamic_events"):     # > refuses too, removing nothing
        with pytest.raises(TraceError) as e:
            fs.write(path, "")
        assert e.value.errno == errno.EBUSY
    assert fs.read("synthetic_events") == "wakeup_latency\tu64 lat; pid_t pid; char[16] comm\n"
    fs.write("events/synthetic/wakeup_latency/enable", "0")
    # A trigger on it puts it in soft mode: busy too, as the kernel's enabled file.
    fs.write("events/synthetic/wakeup_latency/trigger", "traceoff")
    with pytest.raises(TraceError):
        fs.write("synthetic_events", "!wakeup_latency", append=True)
    fs.write("events/synthetic/wakeup_latency/trigger", "!traceoff")
    # A hist action that names it holds it (se->ref).
    event = fs.synth.find("wakeup_latency")
    event.hold()
    with pytest.raises(TraceError) as e:
        fs.write("synthetic_events", "!wakeup_latency", append=True)
    assert e.value.errno == errno.EBUSY
    event.unhold()
    fs.write("synthetic_events", "!wakeup_latency", append=True)
    with pytest.raises(TraceError, match="No such event"):
        fs.write("synthetic_events", "!wakeup_latency", append=True)
    assert "!wakeup_latency" not in fs.read("error_log")       # (not logged, as the kernel's)


# -- firing ---------------------------------------------------------------------------

def test_fire_prints_the_kernels_line_with_its_casts(fs):
    fs.write("synthetic_events", "ev u64 lat; s32 d; s8 small; u16 w; char comm[16]; char[] msg; s64 neg")
    f = find_synth_event(fs, fs.instance, "ev")
    assert f.fields == [("u64", "lat"), ("s32", "d"), ("s8", "small"), ("u16", "w"),
                        ("char[16]", "comm"), ("char[]", "msg"), ("s64", "neg")]
    f.fire((1, 2, 3, 4, "a", "b", 5))              # disabled: nothing
    fs.write("events/synthetic/ev/enable", "1")
    f.fire((-1, -1, -1, 70000, "bash", "hello world", -7))
    f.fire((2**64 + 5, 2**31, 300, 1, "x" * 300, "", 2**63))
    assert trace_lines(fs, "ev") == [
        # (a 1- or 2-byte value goes to printf cut to its size: -1 prints 255)
        "ev: lat=18446744073709551615 d=-1 small=255 w=4464 comm=bash msg=hello world neg=-7",
        f"ev: lat=5 d=-2147483648 small=44 w=1 comm={'x' * 256} msg= neg=-9223372036854775808"]
    assert fs.read("events/synthetic/ev/enable") == "1\n"
    f.fire((1, 2))          # (not one value per field: a miss, never an exception)
    assert f.event.nmissed == 1 and len(trace_lines(fs, "ev")) == 2
    with pytest.raises(TraceError):     # (no such event: None)
        fs.write("events/synthetic/nosuch/enable", "1")
    assert find_synth_event(fs, fs.instance, "nosuch") is None


def test_stack_field_prints_a_frame_a_line(fs):
    fs.write("synthetic_events", "st u64 n; unsigned long[] stack; s16 x")
    fs.write("events/synthetic/st/enable", "1")
    fire_all(fs, "st", [(5, ("mod:a", "mod:b"), -1)])
    # (print_synth_event: "=> %pS\\n" each, and no space after them)
    assert fs.read("trace").endswith(" st: n=5 stack=STACK:\n=> mod:a\n=> mod:b\nx=65535\n")
    assert fs.read("synthetic_events") == "st\tu64 n; unsigned long[] stack; s16 x\n"


def test_fire_from_threads_records_exactly_n_in_its_instance(fs):
    fs.write("synthetic_events", LAT)
    fs.mkdir("instances/other")
    fs.write("instances/other/events/synthetic/wakeup_latency/enable", "1")
    fs.write("instances/other/events/synthetic/wakeup_latency/trigger", "hist:keys=pid:vals=lat")
    top = find_synth_event(fs, fs.instance, "wakeup_latency")
    other = find_synth_event(fs, fs.instances["other"], "wakeup_latency")
    n, nthreads = 25_000, 4

    def work(t):
        for i in range(n):
            top.fire((i, t, "w"))       # (not enabled at the top level: nothing)
            other.fire((i, t, "w"))
    threads = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trace_lines(fs, "wakeup_latency") == []
    fs.write("instances/other/buffer_size_kb", "65536")
    lines = [line for line in body(fs.read("instances/other/trace")) if "wakeup_latency:" in line]
    assert len(lines) == n * nthreads
    seen = {(int(m[1]), int(m[2])) for m in (re.search(r"lat=(\d+) pid=(\d+)", line) for line in lines)}
    assert seen == {(i, t) for i in range(n) for t in range(nthreads)}
    hist = fs.read("instances/other/events/synthetic/wakeup_latency/hist")
    for t in range(nthreads):
        assert re.search(rf"{{ pid: +{t} }} hitcount: +{n}  lat: +{n * (n - 1) // 2}\n", hist), hist
    assert "Hits: 100000\n" in hist


def test_filter_trigger_and_hist_on_a_synthetic_event(fs):
    fs.write("synthetic_events", LAT)
    path = "events/synthetic/wakeup_latency"
    fs.write(f"{path}/filter", "lat > 10 && comm ~ \"b*\"")
    fs.write(f"{path}/trigger", "hist:keys=pid:vals=lat:sort=pid")
    fs.write(f"{path}/enable", "1")
    rows = [(i, i % 3, "bash" if i % 2 else "zsh") for i in range(30)]
    fire_all(fs, "wakeup_latency", rows)
    assert len(trace_lines(fs, "wakeup_latency")) == sum(1 for r in rows if r[0] > 10 and r[2] == "bash")
    hist = fs.read(f"{path}/hist")
    for pid in range(3):            # (the hist counts every hit, the filter is the record's)
        total = sum(r[0] for r in rows if r[1] == pid)
        assert re.search(rf"{{ pid: +{pid} }} hitcount: +10  lat: +{total}\n", hist), hist
    with pytest.raises(TraceError) as e:
        fs.write(f"{path}/filter", "nosuch == 1")
    assert e.value.message.startswith("Field not found")
    # traceoff on it: the first hit stops tracing.
    fs.write(f"{path}/trigger", "!hist:keys=pid:vals=lat:sort=pid")
    fs.write(f"{path}/trigger", "traceoff:1 if pid == 2")
    fire_all(fs, "wakeup_latency", [(100, 1, "bash"), (100, 2, "bash")])
    assert fs.read("tracing_on") == "0\n"


def test_set_event_and_enable_event_name_it(fs):
    fs.write("synthetic_events", "a u64 x\nb u64 y")
    fs.write("set_event", "synthetic:*")
    assert fs.read("set_event") == "synthetic:a\nsynthetic:b\n"
    assert fs.read("events/synthetic/enable") == "1\n"
    fs.write("set_event", "")
    fs.write("events/synthetic/b/trigger", "enable_event:synthetic:a")
    assert fs.read("events/synthetic/a/enable") == "0*\n"
    fire_all(fs, "a", [(1,)])           # soft disabled: nothing
    fs.write("events/synthetic/b/enable", "1")
    fire_all(fs, "b", [(2,)])
    fire_all(fs, "a", [(3,)])
    assert [line for line in body(fs.read("trace"))
            if re.search(r" [ab]: ", line)][-2:][0].endswith("b: y=2")
    assert trace_lines(fs, "a") == ["a: x=3"]


# -- from outside: fentry run, record/report, -p PID -----------------------------------

PROGRAM = """
    import sys, threading
    from fentry.control.tracefs import tracefs
    from fentry.events.trace_synth import find_synth_event

    # (as a hist action fires it: in every instance it is enabled in)
    fs = tracefs()
    files = [f for f in (find_synth_event(fs, i, "lat") for i in (fs.instance, *fs.instances.values()))
             if f is not None and f.enabled]
    n = int(sys.argv[1])

    def work(t):
        for i in range(n):
            for f in files:
                f.fire((i, t, f"t{t}"))
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(len(files))
"""
LINE = re.compile(r"lat: n=(\d+) t=(\d+) who=t(\d+)$")


def _program(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    return str(path)


@pytest.mark.parametrize("how", ["run", "record"])
def test_fired_n_times_from_threads_through_run_and_record(tmp_path, how):
    prog, n = _program(tmp_path), 25_000         # (4 threads: 10^5 events)
    opts = ("-t", "nop", "--buffer-size-kb", "16384", "-e", "s:lat u64 n; int t; char[] who", "-f", "t != 1")
    if how == "run":
        proc, trace = fentry_run(tmp_path, *opts, program=(prog, str(n)), text=True)
    else:
        dat = tmp_path / "t.dat"
        proc = fentry("record", *opts, "-o", str(dat), prog, str(n))
        trace = fentry("report", "-i", str(dat)).stdout
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    found = [LINE.search(line) for line in body(trace) if " lat: " in line]
    assert all(found)
    assert sorted((int(m[1]), int(m[2])) for m in found) == sorted(
        (i, t) for t in (0, 2, 3) for i in range(n))
    assert all(m[2] == m[3] for m in found)


def test_live_write_and_read_through_pid(tmp_path):
    with longrun_under_fentry(tmp_path) as pid:
        w = fentry("-p", pid, "write", "synthetic_events", LAT)
        assert w.returncode == 0, w.stderr
        r = fentry("-p", pid, "read", "dynamic_events")
        assert r.stdout == "s:synthetic/wakeup_latency\tu64 lat; pid_t pid; char[16] comm\n"
        bad = fentry("-p", pid, "write", "-a", "synthetic_events", "ev u64 a; float b")
        assert bad.returncode != 0
        assert "Invalid type" in fentry("-p", pid, "read", "error_log").stdout
        assert fentry("-p", pid, "write", "synthetic_events", "").returncode == 0
        assert fentry("-p", pid, "read", "synthetic_events").stdout == ""


def test_run_refuses_a_bad_definition_before_the_program_starts(tmp_path):
    marker = tmp_path / "ran"
    prog = tmp_path / "prog.py"
    prog.write_text(f"open({str(marker)!r}, 'w').close()\n")
    proc, _ = fentry_run(tmp_path, "-t", "nop", "-e", "s:ev u64 a; float b", program=(str(prog),), text=True)
    assert proc.returncode != 0
    assert "synthetic_events: error: Invalid type\n  Command: s:ev u64 a; float b\n" + " " * 23 + "^" \
        in proc.stderr
    proc, _ = fentry_run(tmp_path, "-t", "nop", "-e", "s:ev u64 a", "-f", "b == 1",
                         program=(str(prog),), text=True)
    assert proc.returncode != 0 and "Field not found" in proc.stderr
    assert not marker.exists()
