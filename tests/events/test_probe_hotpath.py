"""The probe hot path: the C ProbeTrace does the same as the Python path.

Every probe here runs on tests/programs/shapes.py (values of every shape a
fetcharg meets) in a child process twice, once on the C hot path and once
with FENTRY_PURE_PYTHON=1: the trace's event lines, kprobe_profile and the
program's own output must be the same, and what they show is checked too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import PROGRAMS, env

import fentry
from fentry import hotpath

SHAPES = os.path.join(PROGRAMS, "shapes.py")

# (definition, filter): each a probe event on shapes.work
PROBES = [
    ("p:hp/args shapes:work n $arg1 $arg5 rest kw $arg9 local unbound", ""),
    ("p:hp/attrs shapes:work obj.n obj.big obj.neg obj.ratio obj.name obj.blob obj.items obj.pair"
     " obj.table obj.nothing obj.flag obj.color obj.label obj.kind obj.missing_on_class", ""),
    ("p:hp/reads shapes:work obj.method obj.prop obj.nope obj.items[1] obj.items[-1] obj.items[9]"
     ' obj.pair[1] obj.table["a"] obj.table[1] obj.table["zz"] obj.name[0] obj.blob[1] obj.n[0]', ""),
    ('p:hp/roots shapes:work @shapes:LIMIT @shapes:nope @nomod:X \\42 \\"str" obj.__class__'
     " slotted.a slotted.b hooked.stored hooked.other hooked", ""),
    ("p:hp/types shapes:work u=obj.big:u8 s=obj.neg:s8 x=obj.n:x16 c=obj.color:u16 f=obj.flag:u8"
     " r=obj.ratio:u32 t=obj.name:string b=obj.blob:string l=obj.label:string i=obj.n:string"
     " w=obj.big:s64 v=obj.neg:x64", ""),
    ("p:hp/fnum shapes:work n=n o=obj.n", "n >= 2 && !(n == 4) || n < 0"),
    ("p:hp/fstr shapes:work name=obj.name", 'name ~ "item*" && name != "item3"'),
    ("p:hp/fglob shapes:work name=obj.name", 'name ~ "*m[24]"'),
    ("p:hp/fbig shapes:work big=obj.big n=n", "big > 5 && n < 4"),
    ("p:hp/flabel shapes:work label=obj.label:string", 'label == "lab3" || label ~ "*5"'),
    ("p:hp/fcomm shapes:work n=n", 'comm == "MainThread" && n & 1'),
    ("p:hp/fkind shapes:work obj.kind n=n", 'arg1 ~ "*lai*" && n <= 1'),
    ("p:hp/fbits shapes:work b=obj.neg:u8", "b > 250"),
    ("p:hp/ffault shapes:work obj.nope n=n", 'arg1 == "(fault)" && n == 3'),
    ("p:hp/line shapes.py:LINE local=local text=text", ""),
    ("p:hp/many shapes:work " + " ".join(f"a{i}=n" for i in range(20)), "a19 == 2"),
    ("p:hp/dollar shapes:work $args", ""),
    ("r:hp/ret shapes:work $retval n=n", ""),
    ("r:hp/risky shapes:risky $retval x=x r=$retval:x8", ""),
    ("r:hp/gen shapes:gen $retval n=n", "arg1 >= 4"),
    ("r:hp/rets shapes:work $stack1 $retval", ""),
]

DRIVER = r"""
import json, sys
sys.path.insert(0, PROGRAMS)
import fentry
from fentry import hotpath
import shapes
fs = fentry.tracefs()
for definition, filt in PROBES:
    fs.write("kprobe_events", definition, append=True)
    name = definition.split()[0].split("/")[1]
    if filt:
        fs.write(f"events/hp/{name}/filter", filt)
fs.write("events/hp/enable", "1")
shapes.main()
fs.write("events/enable", "0")
events = [line.split(": ", 1)[1] for line in fs.read("trace").splitlines() if not line.startswith("#")]
print(json.dumps({"impl": hotpath.IMPLEMENTATION, "events": events,
                  "profile": fs.read("kprobe_profile").split("\n")}))
"""


def probes() -> list[tuple[str, str]]:
    with open(SHAPES) as f:
        line = next(i for i, text in enumerate(f, 1) if "return local + len(text)" in text)
    return [(d.replace("shapes.py:LINE", f"{SHAPES}:{line}"), f) for d, f in PROBES]


def run_driver(code: str, pure: bool) -> tuple[dict, str]:
    """Run a driver script on one hot path: (its JSON result line, the output before it)."""
    e = env()
    e.pop("FENTRY_PURE_PYTHON", None)
    if pure:
        e["FENTRY_PURE_PYTHON"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    *program_output, result = proc.stdout.splitlines()
    return json.loads(result), "\n".join(program_output)


def run_shapes(pure: bool) -> tuple[dict, str]:
    return run_driver(f"PROGRAMS = {PROGRAMS!r}\nPROBES = {probes()!r}\n" + DRIVER, pure)


@pytest.fixture(scope="module")
def both():
    return run_shapes(pure=False), run_shapes(pure=True)


def test_c_and_python_paths_write_the_same_trace(both):
    (c, c_out), (py, py_out) = both
    if c["impl"] != "c":
        pytest.skip("the C hot path is not built here")
    assert py["impl"] == "python"
    assert c["events"] == py["events"]
    assert c["profile"] == py["profile"]
    assert c_out == py_out


def plain_output() -> str:
    proc = subprocess.run([sys.executable, SHAPES], capture_output=True, text=True, timeout=60)
    return proc.stdout.strip()


def lines(result: dict, event: str) -> list[str]:
    return [e.split(") ", 1)[1] if ") " in e else "" for e in result["events"]
            if e.startswith(event + ": ")]


def test_what_the_fetches_read(both):
    (c, c_out), _ = both
    assert c_out == plain_output()          # no PROPERTY RAN, no GETATTR RAN
    args = lines(c, "args")
    # $arg5 is *rest; `local` is not assigned yet at the entry
    assert args[3] == ("arg1=3 arg2=3 arg3=(3, 4) arg4=(3, 4) arg5={'key': 3} arg6=(fault)"
                       " arg7=(fault) arg8=(fault)")
    attrs = lines(c, "attrs")[1]
    assert attrs == ("arg1=1 arg2=100000000000000000000 arg3=-1 arg4=0.3333333333333333"
                     " arg5='item1' arg6=b'BBB' arg7=[1, 2, 3] arg8=(1, '1') arg9={'a': 1, 1: 'one'}"
                     " arg10=None arg11=False arg12=<shapes.Color> arg13=<shapes.Label>"
                     " arg14='plain' arg15=None")
    assert lines(c, "reads")[2] == ("arg1=(fault) arg2=(fault) arg3=(fault) arg4=3 arg5=4"
                                    " arg6=(fault) arg7='2' arg8=2 arg9='one' arg10=(fault)"
                                    " arg11='i' arg12=67 arg13=(fault)")
    # arg5, \"str": a string immediate is a string, as the kernel's
    assert lines(c, "roots")[0] == ("arg1=7 arg2=(fault) arg3=(fault) arg4=42 arg5=\"str\""
                                    " arg6=(fault) arg7=0 arg8=(fault) arg9=5 arg10=(fault)"
                                    " arg11=<shapes.Hooked>")
    assert lines(c, "types")[5] == ('u=0 s=-5 x=0x5 c=300 f=0 r=(fault) t="item5" b="FFF"'
                                    ' l="lab5" i=(fault) w=(fault) v=0xfffffffffffffffb'
                                    .replace("u=0 ", f"u={5 * 10**20 & 0xff} ")
                                    .replace("w=(fault)", f"w={(5 * 10**20 + 2**63) % 2**64 - 2**63}"))


def test_filters_keep_what_they_match(both):
    (c, _), _ = both
    field = lambda event, i=0: [l.split()[i].split("=")[1] for l in lines(c, event)]  # noqa: E731
    assert field("fnum") == ["2", "3", "5"]
    assert field("fstr") == ["'item0'", "'item1'", "'item2'", "'item4'", "'item5'"]
    assert field("fglob") == ["'item2'", "'item4'"]
    assert field("fbig", 1) == ["1", "2", "3"]
    assert field("flabel") == ['"lab3"', '"lab5"']
    assert field("fcomm") == ["1", "3", "5"]
    assert field("fkind", 1) == ["0", "1"]
    assert field("fbits") == ["255", "254", "253", "252", "251"]
    assert field("ffault", 1) == ["3"]
    assert field("many", 19) == ["2"]
    profile = {l.split()[0]: l.split()[1:] for l in c["profile"] if l.strip()}
    assert profile["fnum"] == ["6", "0"] and profile["ffault"] == ["6", "6"]


def test_line_return_and_args_probes(both):
    (c, _), _ = both
    assert lines(c, "line") == [f"local={2 * n} text='item{n}'" for n in range(6)]
    assert lines(c, "dollar")[1] == "n=1 obj=<shapes.Plain> slotted=<shapes.Slotted>" \
                                    " hooked=<shapes.Hooked> rest=(1, 2) kw={'key': 1}"
    assert [e.split()[-2:] for e in c["events"] if e.startswith("ret:")][2] == [
        f"arg1={4 + 5 + 2 + 1}", "n=2"]
    risky = [e.split(": ", 1)[1] for e in c["events"] if e.startswith("risky:")]
    assert risky[:2] == ["(main+0x%s <- risky) raised ValueError arg1=(fault) x=0 r=(fault)"
                         % risky[0].split("+0x")[1].split(" ")[0],
                         "(main+0x%s <- risky) arg1=2 x=1 r=0x2" % risky[0].split("+0x")[1].split(" ")[0]]
    assert lines(c, "gen") == ["arg1=4 n=2", "arg1=6 n=3", "arg1=8 n=4", "arg1=10 n=5"]
    assert [l.split()[-1] for l in lines(c, "rets")] == [l.split()[0].replace("arg1", "arg2")
                                                         for l in lines(c, "ret")]


# -- in process: the C path really is the one taken, and what it records

def probed(x, obj):
    return x


class Obj:
    def __init__(self, v):
        self.v = v


@pytest.mark.skipif(hotpath.IMPLEMENTATION != "c", reason="the C hot path is not in use")
def test_simple_probes_are_taken_in_c():
    fs = fentry.tracefs()
    fs.write("kprobe_events", f"p:hp/fast {__name__}:probed x obj.v")
    fs.write("kprobe_events", f"p:hp/slow {__name__}:probed $stack1", append=True)
    fs.write("kprobe_events", f"r:hp/ret {__name__}:probed $retval", append=True)
    fs.write("events/hp/enable", "1")
    for i in range(5):
        probed(i, Obj(i * 1.5))
    fast, slow, ret = (fs.probes.find("hp", name).file(fs.instance) for name in ("fast", "slow", "ret"))
    assert (fast.trace.nhit, fast.nhit, slow.trace.nhit, slow.nhit) == (5, 5, 0, 5)
    assert (ret.trace.nhit, ret.nhit) == (5, 5)
    fs.write("events/enable", "0")
    assert fs.read("kprobe_profile").split() == ["fast", "5", "0", "slow", "5", "0", "ret", "5", "0"]


def test_a_filter_set_while_enabled_applies_at_once():
    fs = fentry.tracefs()
    fs.write("kprobe_events", f"p:hp/f {__name__}:probed x=x")
    fs.write("events/hp/f/enable", "1")
    probed(1, None)
    fs.write("events/hp/f/filter", "x > 5")
    probed(2, None)
    probed(7, None)
    fs.write("events/hp/f/filter", "0")
    probed(3, None)
    fs.write("events/hp/f/enable", "0")
    got = [l.split(") ")[1] for l in fs.read("trace").splitlines() if "f: (probed" in l]
    assert got == ["x=1", "x=7", "x=3"]


def test_tracing_off_counts_hits_and_records_nothing():
    fs = fentry.tracefs()
    fs.write("kprobe_events", f"p:hp/off {__name__}:probed x=x obj.nope")
    fs.write("events/hp/enable", "1")
    fs.write("tracing_on", "0")
    probed(1, Obj(1))
    fs.write("tracing_on", "1")
    probed(2, Obj(2))
    fs.write("events/enable", "0")
    assert fs.instance.buffer.stats() == (1, 1)
    assert fs.read("kprobe_profile").split() == ["off", "2", "2"]


def test_a_small_buffer_keeps_the_newest_events_and_counts_the_lost():
    fs = fentry.tracefs()
    fs.write("buffer_size_kb", "1")
    fs.write("kprobe_events", f"p:hp/small {__name__}:probed x a=x b=x c=x obj.v")
    fs.write("events/hp/enable", "1")
    for i in range(100):
        probed(i, Obj(i * 0.5))
    fs.write("events/enable", "0")
    in_buf, written = fs.instance.buffer.stats()
    assert written == 100 and 0 < in_buf < 100
    text = fs.read("trace")
    assert f"entries-in-buffer/entries-written: {in_buf}/100" in text
    kept = [l.split(") ")[1] for l in text.splitlines() if "small: (" in l]
    assert kept == [f"arg1={i} a={i} b={i} c={i} arg5={i * 0.5}" for i in range(100 - in_buf, 100)]


def test_each_thread_records_its_own_events():
    import threading
    fs = fentry.tracefs()
    fs.write("kprobe_events", f"p:hp/th {__name__}:probed x=x v=obj.v")
    fs.write("events/hp/enable", "1")

    def worker(base):
        for i in range(50):
            probed(base + i, Obj(base))
    threads = [threading.Thread(target=worker, args=(k * 1000,), name=f"w{k}") for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fs.write("events/enable", "0")
    per_task: dict[str, list[str]] = {}
    for line in fs.read("trace").splitlines():
        if "th: (probed" in line:
            per_task.setdefault(line.split()[0].rsplit("-", 1)[0], []).append(line.split(") ")[1])
    assert per_task == {f"w{k}": [f"x={k * 1000 + i} v={k * 1000}" for i in range(50)]
                        for k in range(3)}
    assert fs.read("kprobe_profile").split() == ["th", "150", "0"]


# -- generated: many definitions and filters, the same trace on both paths

FETCHARGS = [
    "n", "obj", "obj.n", "obj.big", "obj.neg", "obj.ratio", "obj.name", "obj.blob", "obj.items[1]",
    "obj.items[-4]", "obj.pair[0]", 'obj.table["a"]', "obj.table[1]", "obj.label", "obj.color",
    "obj.kind", "obj.missing_on_class", "obj.prop", "obj.method", "obj.nothing", "obj.flag",
    "slotted.a", "slotted.b", "hooked.stored", "hooked.x", "rest", "rest[0]", "kw", "local", "text",
    "$arg1", "$arg2", "$arg7", "@shapes:LIMIT", "\\5", '\\"s"', "$comm", "$stack", "$args",
    "$retval", "$retval[0]", "x", "$stack1",
]
TYPES = ["", ":u8", ":s16", ":x32", ":u64", ":s64", ":string", ":symbol"]
FILTERS = ["", "arg1 > 2", "arg1 == 3 || arg2 < 0", 'arg1 ~ "item*"', 'arg1 != "x"', "!(arg1 & 1)",
           "arg1 >= -1 && arg2 <= 10", 'arg2 ~ "*m[12]"', 'arg1 ~ "*1*"', "common_pid > 0 && arg1 < 4",
           "(arg1 < 2 || arg1 > 4) && !(arg2 == 0)"]

DIFF_DRIVER = r"""
import json, sys
sys.path.insert(0, PROGRAMS)
import fentry
import shapes
fs = fentry.tracefs()
for i, (definition, filt) in enumerate(BATCH):
    try:
        fs.write("kprobe_events", definition, append=True)
        if filt:
            fs.write(f"events/gen/e{i}/filter", filt)
    except fentry.TraceError:
        pass
if "gen" in fs.ls("events"):        # (the probe events only: events/enable is every event)
    fs.write("events/gen/enable", "1")
shapes.main()
fs.write("events/enable", "0")
events = [line.split(": ", 1)[1] for line in fs.read("trace").splitlines() if not line.startswith("#")]
print(json.dumps({"events": events, "profile": fs.read("kprobe_profile"),
                  "errors": fs.read("error_log").count("error:")}))
"""


def run_batch(batch: list[tuple[str, str]], pure: bool) -> tuple[dict, str]:
    return run_driver(f"PROGRAMS = {PROGRAMS!r}\nBATCH = {batch!r}\n" + DIFF_DRIVER, pure)


@pytest.mark.slow
def test_generated_probes_trace_the_same_on_both_paths():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    with open(SHAPES) as f:
        line = next(i for i, text in enumerate(f, 1) if "return local + len(text)" in text)
    where = st.sampled_from(["p shapes:work", f"p {SHAPES}:{line}", "r shapes:work",
                             "r shapes:risky", "r shapes:gen"])
    fetcharg = st.tuples(st.sampled_from(FETCHARGS), st.sampled_from(TYPES)).map("".join)
    probe = st.tuples(where, st.lists(fetcharg, min_size=0, max_size=5), st.sampled_from(FILTERS))
    seen = {"events": 0}

    @hypothesis.settings(max_examples=6, deadline=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.lists(probe, min_size=1, max_size=10))
    def check(probes):
        batch = [(f"{w[0]}:gen/e{i} {w[2:]} {' '.join(args)}".strip(), filt)
                 for i, (w, args, filt) in enumerate(probes)]
        (c, c_out), (py, py_out) = run_batch(batch, pure=False), run_batch(batch, pure=True)
        assert c == py and c_out == py_out == plain_output()
        seen["events"] += len(c["events"])

    check()
    assert seen["events"] > 50
