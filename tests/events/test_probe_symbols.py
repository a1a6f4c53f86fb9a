"""Probe points by the kernel's rule (trace_kprobe.c's validate_probe_symbol):
a bare symbol must name a function loaded now, in one module; ``MOD:SYM``
may wait for MOD, and must be in MOD once MOD is there.  And ``-:GRP/EV
POINT ARGS`` removes an event only when the rest matches it
(dyn_event_release)."""

from __future__ import annotations

import pytest
from helpers import env, fentry_run

from fentry.errors import TraceError


class Basket:
    def add(self, item):
        return item

    def nope_not_this(self):
        return None


def error_log_entry(fs) -> str:
    """The newest entry of error_log: its three lines."""
    return "\n".join(fs.read("error_log").splitlines()[-3:])


def refused(fs, line: str) -> TraceError:
    """``line`` written to kprobe_events is refused, applies nothing, and
    str() of the error is the entry error_log gets."""
    before = fs.read("kprobe_events")
    with pytest.raises(TraceError) as info:
        fs.write("kprobe_events", line, append=True)
    assert fs.read("kprobe_events") == before
    assert str(info.value) == error_log_entry(fs)
    return info.value


def caret_at(err: TraceError, word: str) -> bool:
    return err.pos == err.command.index(word)


def test_a_bare_symbol_must_exist_now(fs):
    err = refused(fs, "p:s/x Basket.nope")          # Basket is loaded; it has no nope
    assert err.message == "Invalid probed address or symbol"
    assert err.command == "p:s/x Basket.nope" and caret_at(err, "Basket.nope")
    err = refused(fs, "p   no_function_of_that_name_anywhere  x")
    assert err.command == "p no_function_of_that_name_anywhere x"
    assert caret_at(err, "no_function")
    fs.write("kprobe_events", "p:s/add Basket.add item")      # it is there: accepted
    assert fs.read("kprobe_events") == "p:s/add Basket.add arg1=item\n"


def test_a_module_qualified_symbol_of_a_loaded_module_must_exist(fs):
    err = refused(fs, f"p {__name__}:Basket.nope")
    assert err.message == "Invalid probed address or symbol" and caret_at(err, __name__)


@pytest.fixture
def twins(make_module):
    """Two modules, each with a class Twin whose method work has one name."""
    source = """
        class Twin:
            def work(self, x):
                return x + {n}
    """
    return [make_module(f"h2_twin_{c}", source.format(n=i)) for i, c in enumerate("ab")]


def test_a_symbol_in_several_modules_is_not_unique(fs, twins):
    err = refused(fs, "p:s/w Twin.work x")
    assert err.message == ("The symbol is not unique: in h2_twin_a, h2_twin_b; "
                           "give MOD:Twin.work")
    assert err.code == "NON_UNIQ_SYMBOL" and caret_at(err, "Twin.work")
    fs.write("kprobe_events", "p:s/w h2_twin_b:Twin.work x")      # qualified: accepted
    assert fs.read("kprobe_events") == "p:s/w h2_twin_b:Twin.work arg1=x\n"


def test_a_bare_symbol_stays_on_the_module_it_was_found_in(fs, make_module):
    """As the kernel resolves a symbol once: a function of the same name
    imported later is another symbol."""
    source = "class Solo:\n    def work(self, x):\n        return x\n"
    first = make_module("h2_solo_a", source)
    fs.write("kprobe_events", "p:s/w Solo.work x")
    second = make_module("h2_solo_b", source)
    fs.write("events/s/w/enable", "1")
    first.Solo().work(1)
    second.Solo().work(2)
    fs.write("events/s/w/enable", "0")
    assert [line.split(": w: ")[1] for line in fs.read("trace").splitlines()
            if ": w: " in line] == ["(Solo.work+0x0) arg1=1"]
    refused(fs, "p:s/w2 Solo.work x")               # now it is not unique


def test_an_offset_error_shows_the_command_written(fs):
    err = refused(fs, f"p:s/o {__name__}:Basket.add+1")
    assert err.message == "Probe point is not an instruction boundary"
    assert err.command == f"p:s/o {__name__}:Basket.add+1" and caret_at(err, __name__)
    assert str(err).splitlines()[1:] == [f"  Command: {err.command}",
                                         " " * (11 + err.pos) + "^"]


def test_an_error_at_enable_shows_the_definition(fs, make_module):
    """A pending probe whose module is imported since without its function:
    refused when enabled, the caret on the probe point of the definition."""
    fs.write("kprobe_events", "p:s/late h2_late_mod:nothing")
    make_module("h2_late_mod", "def something():\n    return 1\n")
    with pytest.raises(TraceError) as info:
        fs.write("events/s/late/enable", "1")
    assert info.value.message == "Invalid probed address or symbol"
    assert info.value.command == "p:s/late h2_late_mod:nothing"
    assert caret_at(info.value, "h2_late_mod")
    assert str(info.value) == error_log_entry(fs)


# -- MOD:SYM waits for MOD, live in a traced program ----------------------------

LATE_PROGRAM = '''
import importlib, os, sys
import fentry
here = os.path.dirname(os.path.abspath(__file__))
fs = fentry.tracefs()

def define(line):
    try:
        fs.write("kprobe_events", line, append=True)
        print("accepted", line)
    except fentry.TraceError as e:
        print("refused", line, "|", e.message)

define("p:w/early latemod:nope")          # latemod cannot be found: pending
define("p:w/soon latemod:work x=x")
with open(os.path.join(here, "latemod.py"), "w") as f:
    f.write("def work(x):\\n    return x * 2\\n")
importlib.invalidate_caches()
import latemod
define("p:w/again latemod:nope")          # imported now: nope must be in it
define("p:w/work latemod:work x=x")
for event in ("soon", "work", "early"):
    try:
        fs.write(f"events/w/{event}/enable", "1")
        print("enabled", event)
    except fentry.TraceError as e:
        print("not enabled", event, "|", e.message)
print(latemod.work(21))
'''


@pytest.mark.parametrize("pure", ["", "1"], ids=["c", "pure"])
def test_a_pending_module_symbol_is_checked_once_the_module_is_there(tmp_path, pure):
    program = tmp_path / "late.py"
    program.write_text(LATE_PROGRAM)
    proc, trace = fentry_run(tmp_path, "-t", "nop", program=(str(program),), sep=False, text=True,
                             env=env(FENTRY_PURE_PYTHON=pure))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "accepted p:w/early latemod:nope",
        "accepted p:w/soon latemod:work x=x",
        "refused p:w/again latemod:nope | Invalid probed address or symbol",
        "accepted p:w/work latemod:work x=x",
        "enabled soon", "enabled work",
        "not enabled early | Invalid probed address or symbol",
        "42",
    ]
    # (from fentry run's trace: its stream consumes the rings, so the program
    # reading its own `trace` may find them already gone)
    assert [line.split(": ", 1)[1] for line in trace.splitlines() if not line.startswith("#")] == [
        "soon: (work+0x0) x=21", "work: (work+0x0) x=21"]


# -- -:GRP/EV POINT ARGS -------------------------------------------------------

def test_removal_with_the_rest_of_the_definition(fs):
    point = f"{__name__}:Basket.add"
    fs.write("kprobe_events", f"p:rm/a {point} item x=item:u8 \\0x10")
    # The arguments are matched as reading kprobe_events shows them (named), a prefix will do.
    assert fs.read("kprobe_events") == f"p:rm/a {point} arg1=item x=item:u8 arg3=\\0x10\n"
    for mismatch in [f"-:rm/a {point}+0", f"-:rm/a {__name__}:Basket.nope_not_this",
                     f"-:rm/a {point} item", f"-:rm/a {point} arg1=item x=item:u16",
                     f"-:rm/a {point} x=item:u8", f"-:rm/a {point} arg1=item x=item:u8 arg3=\\16",
                     f"-:rm/a {point} arg1=item x=item:u8 arg3=\\0x10 arg4=x", "-:rm.a",
                     "-:other/a", "-:rm/b"]:
        before = fs.read("error_log")
        with pytest.raises(TraceError) as info:
            fs.write("kprobe_events", mismatch, append=True)
        assert info.value.message == "No such event"
        assert fs.read("error_log") == before       # the kernel logs nothing: -ENOENT alone
    assert fs.read("kprobe_events") != ""
    fs.write("kprobe_events", f"-:rm/a {point} arg1=item x=item:u8", append=True)
    assert fs.read("kprobe_events") == ""


def test_removal_by_group_and_while_enabled(fs):
    point = f"{__name__}:Basket.add"
    fs.write("kprobe_events", f"p:rg/a {point} x=item:u8\np:rg/b {point} item\np:keep/c {point}")
    fs.write("events/rg/b/enable", "1")
    before = fs.read("error_log")
    with pytest.raises(TraceError) as info:
        fs.write("kprobe_events", f"-:rg/ {point} arg1=item", append=True)     # b's: busy
    assert info.value.code == "BUSY" and fs.read("error_log") == before     # -EBUSY alone
    with pytest.raises(TraceError) as info:
        fs.write("kprobe_events", "")        # `> kprobe_events` while one is enabled
    assert info.value.code == "BUSY" and fs.read("error_log") == before     # -EBUSY alone too
    fs.write("kprobe_events", f"-:rg/ {point} x=item:u8", append=True)      # a's: removed
    assert fs.read("kprobe_events").splitlines() == [f"p:rg/b {point} arg1=item", f"p:keep/c {point}"]
    fs.write("events/rg/b/enable", "0")
    fs.write("kprobe_events", "-:rg/", append=True)            # every event of the group
    assert fs.read("kprobe_events") == f"p:keep/c {point}\n"
    for bad in ("-", "-x", "-:"):
        with pytest.raises(TraceError) as info:
            fs.write("kprobe_events", bad, append=True)
        assert info.value.code == "BAD_REMOVE" and fs.read("error_log") == before
