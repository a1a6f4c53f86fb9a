"""Probe events on a real program: kprobe_events, fetchargs, filters, kprobe_profile."""

from __future__ import annotations

import importlib
import os
import re

import pytest
from helpers import PROGRAMS, fentry_run, plain

from fentry.events.probe_parser import parse_probe

ORDERS = os.path.join(PROGRAMS, "orders.py")
EVENT = re.compile(r"^\s*\S+-\d+\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: (?P<event>\S+): \((?P<where>[^)]*)\)(?P<fields>.*)$")


@pytest.fixture
def orders(monkeypatch):
    """tests/programs/orders.py, imported in this process (as the module ``orders``)."""
    monkeypatch.syspath_prepend(PROGRAMS)
    return importlib.import_module("orders")


def run(tmp_path, *opts, program=(ORDERS,), **kw):
    """``fentry run -t nop OPTS`` on orders.py (or ``program``): the process and the trace, as text."""
    return fentry_run(tmp_path, "-t", "nop", *opts, program=program, sep=False, text=True, **kw)


def events(trace):
    found = []
    for line in trace.splitlines():
        m = EVENT.match(line)
        if m:
            fields = dict(f.split("=", 1) for f in m["fields"].split())
            found.append((m["event"], m["where"], fields))
    return found


def plain_orders():
    return plain(ORDERS, text=True)


def line_of(text):
    with open(ORDERS) as f:
        return next(i for i, l in enumerate(f, 1) if text in l)


def test_entry_probe_with_named_fetchargs(tmp_path):
    proc, trace = run(tmp_path, "-e", "p:shop/lt __main__:line_total sku=item.sku price=item.price:u32 qty=item.qty")
    assert proc.stdout == plain_orders().stdout
    got = [(e, f["sku"], f["price"], f["qty"]) for e, _, f in events(trace)]
    # order_total calls line_total for 4 items, then main for the same 4 again
    want = [("lt", "'apple'", "120", "3"), ("lt", "'bread'", "250", "1"),
            ("lt", "'cheese'", "499", "2"), ("lt", "'dates'", "75", "4")] * 2
    assert got == want
    assert all(where == "line_total+0x0" for _, where, _ in events(trace))


def test_return_probe_retvals_add_up(tmp_path):
    proc, trace = run(tmp_path, "-e", "r __main__:line_total $retval")
    grand = int(proc.stdout.split("grand")[1])
    rets = [int(f["arg1"]) for e, _, f in events(trace)]
    assert len(rets) == 8 and sum(rets[:4]) == grand
    assert all(where.startswith(("order_total+", "main.<locals>.<genexpr>+")) and
               where.endswith("<- line_total") for _, where, _ in events(trace))


def test_offset_and_line_probes_fetch_a_local_assigned_just_before(tmp_path, orders):
    # the instruction that starts the `discounted = ...` line: `subtotal` is set by then
    line = line_of("discounted = subtotal")
    offset = min(start for start, _, ln in orders.line_total.__code__.co_lines() if ln == line)
    _, trace = run(tmp_path, "-e", f"p:off __main__:line_total+{offset} subtotal",
                      "-e", f"p:ln {ORDERS}:{line} subtotal")
    values = [(e, int(f["arg1"])) for e, _, f in events(trace)]
    want = [120 * 3, 250, 499 * 2, 75 * 4] * 2
    assert [v for e, v in values if e == "off"] == want
    assert [v for e, v in values if e == "ln"] == want


def test_mid_instruction_offset_is_refused_with_a_caret(orders):
    import fentry
    from fentry.kprobes import instruction_boundaries
    code = orders.line_total.__code__
    cache = next(o for o in range(2, len(code.co_code), 2) if o not in instruction_boundaries(code))
    fs = fentry.tracefs()
    with pytest.raises(fentry.TraceError) as e:
        fs.write("kprobe_events", f"p orders:line_total+{cache}")
    assert e.value.message == "Probe point is not an instruction boundary"
    log = fs.read("error_log").splitlines()
    assert log[-2] == f"  Command: p orders:line_total+{cache}"
    assert log[-1].index("^") == log[-2].index("orders:")
    assert fs.read("kprobe_events") == ""


def test_filter_keeps_exactly_the_matching_events(tmp_path):
    _, trace = run(tmp_path, "-e", "p __main__:line_total price=item.price qty=item.qty",
                   "-f", "price > 100 && qty < 3")
    got = [(f["price"], f["qty"]) for _, _, f in events(trace)]
    assert got == [("250", "1"), ("499", "2")] * 2


def test_kprobe_profile_counts_the_calls(orders):
    import fentry
    fs = fentry.tracefs()
    fs.write("kprobe_events", "p orders:line_total item.nothing_here")
    fs.write("kprobe_events", "r orders:order_total $retval", append=True)
    fs.write("events/kprobes/enable", "1")
    items = [orders.Item("x", 1, 1)] * 5
    orders.order_total(items, None)
    orders.order_total(items[:2], None)
    fs.write("events/enable", "0")
    profile = {l.split()[0]: (int(l.split()[1]), int(l.split()[2]))
               for l in fs.read("kprobe_profile").splitlines()}
    fs.write("kprobe_events", "")
    assert profile == {"p_line_total_0": (7, 7), "r_order_total_0": (2, 0)}   # 7 hits, 7 faults


def test_fetches_never_run_user_code(tmp_path):
    proc, trace = run(tmp_path, "-e", "p __main__:order_total sneaky.secret sneaky.other sneaky[0] sneaky",
                      "-e", "p __main__:line_total item.price.real.nope")
    assert proc.stdout == plain_orders().stdout        # no PROPERTY/GETATTR/GETITEM/REPR RAN
    (fields,) = [f for e, _, f in events(trace) if e == "p_order_total_0"]
    assert fields["arg1"] == fields["arg2"] == fields["arg3"] == "(fault)"
    assert fields["arg4"] == "<__main__.Sneaky>"
    assert [f["arg1"] for e, _, f in events(trace) if e == "p_line_total_0"] == ["(fault)"] * 8


def test_bad_definition_stops_fentry_run_before_the_program(tmp_path):
    proc, _ = run(tmp_path, "-e", "p:x __main__:line_total $retval")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "trace_kprobe: error: $retval is not available on probe" in proc.stderr
    command, caret = proc.stderr.splitlines()[1:3]
    assert caret.index("^") == command.index("$retval")


def test_filter_on_a_missing_field_names_the_fields_there_are(tmp_path):
    proc, _ = run(tmp_path, "-e", "p:shop/lt __main__:line_total item price=item.price:u32",
                  "-f", "prize > 100")
    assert proc.returncode == 2 and proc.stdout == ""
    head, command, caret = proc.stderr.splitlines()[:3]
    assert head.endswith("] event filter parse error: error: Field not found: 'prize' "
                         "(fields: arg1, price, comm, common_pid)")
    # the kernel's caret: one past the field's name
    assert caret.index("^") == command.index("prize") + len("prize ")


@pytest.mark.parametrize("first, second, rename", [
    ("p:shop/lt __main__:line_total", "p:shop/lt __main__:order_total",
     "p:shop/NAME __main__:order_total"),
    ("p:lt __main__:line_total", "r:lt __main__:order_total $retval", "r:NAME __main__:order_total ..."),
    ("p __main__:line_total", "p __main__:line_total item", "p:NAME __main__:line_total ..."),
])
def test_two_probes_of_one_name_are_refused_before_the_program(tmp_path, first, second, rename):
    proc, _ = run(tmp_path, "-e", first, "-e", second)
    assert proc.returncode == 2 and proc.stdout == ""
    head, command, caret = proc.stderr.splitlines()[:3]
    assert head.endswith("] trace_kprobe: error: Given group/event name is already used by "
                         f"another event: an earlier -e defines {parse_probe(first).group}/"
                         f"{parse_probe(first).event}; give this one a name of its own (-e '{rename}')")
    assert command == "  Command: " + second
    assert caret.index("^") == command.index(second) + (second.index(":") + 1 if second[1] == ":" else 0)


def test_an_enabled_events_name_is_taken_not_busy(orders):
    """Disabling the event would not free its name: the kernel's 'already used', not 'busy'."""
    import fentry
    fs = fentry.tracefs()
    fs.write("kprobe_events", "p:dup orders:line_total")
    fs.write("events/kprobes/dup/enable", "1")
    with pytest.raises(fentry.TraceError) as e:
        fs.write("kprobe_events", "p:dup orders:order_total", append=True)
    assert e.value.message == "Given group/event name is already used by another event"
    assert fs.read("kprobe_events") == "p:kprobes/dup orders:line_total\n"


def test_probes_and_a_tracer_in_one_trace(tmp_path):
    proc, text = fentry_run(tmp_path, "-t", "function_graph", "-l", "__main__:*",
                            "-e", "r __main__:line_total $retval", program=(ORDERS,), text=True)
    assert proc.returncode == 0, proc.stderr
    assert "line_total() {" in text or "line_total();" in text
    assert text.count("/* r_line_total_0: (") == 8


HOSTILE = '''
import sys
class Bad:
    def __repr__(self):
        raise RuntimeError("no repr")
def big(n, obj, rec, s):
    return 1
rec = [1]
rec.append(rec)
d = {}
d["self"] = d
for i in range(3):
    big(10**5000, Bad(), rec, "x" * 100000)
    big(-2**200, d, (rec,), "\\u00e9\\udcff")
print("done")
'''


def test_hostile_values_never_stop_the_trace(tmp_path):
    """A huge int, an object whose repr fails, recursive containers, a huge
    string and a lone surrogate: every event is there, what cannot be printed
    is (fault), counted, and the program runs as it would."""
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    proc, trace = run(tmp_path, "-e", "p:g/big __main__:big n=n obj=obj rec=rec s=s t=s:string",
                      program=(str(script),))
    assert (proc.stdout, proc.returncode) == ("done\n", 0)
    assert proc.stderr == "fentry run: 3 values could not be printed (shown as (fault))\n"
    got = []
    for line in trace.splitlines():
        if ": big: (big+0x0) " in line:
            parts = re.split(r" (n|obj|rec|s|t)=", " " + line.split(": big: (big+0x0) ", 1)[1])
            got.append(dict(zip(parts[1::2], parts[2::2])))
    assert len(got) == 6
    for i, f in enumerate(got):
        if i % 2 == 0:
            assert f["n"] == "(fault)" and f["obj"] == "<__main__.Bad>"
            assert f["rec"] == "[1, [1, [1, [...]]]]"
            assert f["s"].endswith("...'") and len(f["s"]) <= 130
            assert f["t"] == '"' + "x" * 4096 + '"'         # the kernel's MAX_STRING_SIZE
        else:
            assert f["n"] == str(-2**200) and f["obj"] == "{'self': {'self': {'self': {...}}}}"
            assert f["s"] == "'\u00e9\\udcff'"


def test_format_file_as_the_kernels():
    """events/GRP/EVENT/format as Linux 6.18 writes it for the same types:
    64-bit with %L, arrays as ``u8 x[]`` of their whole size printed
    element by element, strings signed ``__data_loc`` read by __get_str;
    $comm and a string immediate are strings."""
    import fentry

    fs = fentry.tracefs()
    fs.write("kprobe_events", f"p:fmt/ev {__name__}:events a=trace:s64 b=trace:x64 c=trace:u8[2]"
                              ' d=trace:string[2] e=$comm f=\\"ab" g=trace:b3@2/8')
    text = fs.read("events/fmt/ev/format")
    assert "\tfield:s64 a;\toffset:16;\tsize:8;\tsigned:1;\n" in text
    assert "\tfield:u8 c[];\toffset:32;\tsize:2;\tsigned:0;\n" in text
    assert "\tfield:__data_loc char[][2] d;\toffset:34;\tsize:8;\tsigned:1;\n" in text
    assert "\tfield:__data_loc char[] e;\toffset:42;\tsize:4;\tsigned:1;\n" in text
    assert "\tfield:u8 g;\toffset:50;\tsize:1;\tsigned:0;\n" in text
    assert text.endswith(
        'print fmt: "(%lx) a=%Ld b=0x%Lx c={%u,%u} d={\\"%s\\",\\"%s\\"} e=\\"%s\\" f=\\"%s\\" g=%u",'
        " REC->__probe_ip, REC->a, REC->b, REC->c[0], REC->c[1], __get_str(d[0]), __get_str(d[1]),"
        " __get_str(e), __get_str(f), REC->g\n")
