"""Thousands of generated probe definitions and filters, valid and broken, on a
running function: no traceback escapes, every rejection is in error_log with
a caret, and what the traced code computes never changes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fentry
from fentry.events.tracepoints import TRACEPOINT_GROUPS

pytestmark = pytest.mark.slow     # 1500 generated definitions


class Box:
    def __init__(self, v):
        self.v = v
        self.items = [v, v + 1]


def target(a, b=2):
    box = Box(a)
    total = a * b
    for i in range(3):
        total += box.items[i % 2]
    return total


WANT = [target(a) for a in range(5)]
SEEN = {"rejected": 0, "enabled": 0, "recorded": 0}
MOD = __name__

symbols = st.sampled_from([f"{MOD}:target", "target", f"{MOD}:Box.__init__", f"{MOD}:nope",
                           "no.such.module:f", "fentry.ftrace:set_hash", "", "Box.__init__"])
offsets = st.one_of(st.just(""), st.integers(0, 300).map(lambda n: f"+{n}"), st.sampled_from(["+x", "+-1"]))
fetchargs = st.lists(st.sampled_from([
    "a", "b", "box", "box.v", "box.items[1]", "total", "$arg1", "$arg3", "$args", "$retval", "$comm",
    "$stack", "$stack2", f"@{MOD}:MOD", "x=a:u8", "y=total:s16", "z=box.items:u32[2]", "s=$comm:string",
    "n=a:x64", "bad name=a", "a:nosuchtype", "box..v", "box[", '\\"str"', "\\42", "@nomod", "q=a:symbol",
    "a.__class__", "box.missing",
]), max_size=4)
filters = st.sampled_from(["", "arg1 > 1", "x < 3 && y >= 0", "s ~ \"Main*\"", "arg1 ==", "((", "nosuch == 1",
                           "s == 3", "x & 1", "!(x == 2) || common_pid > 0"])
kinds = st.sampled_from(["p", "r", "p:grp/ev", "r:ev2", "x"])


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=kinds, symbol=symbols, offset=offsets, args=fetchargs, filt=filters)
def test_generated_definitions_never_disturb_the_program(kind, symbol, offset, args, filt):
    fs = fentry.tracefs()
    line = " ".join([kind, symbol + offset, *args]).strip()
    before = fs.read("error_log").count("error:")
    try:
        fs.write("kprobe_events", line)
    except fentry.TraceError as e:
        log = fs.read("error_log")
        assert log.count("error:") == min(before + 1, 8)     # TRACING_LOG_ERRS_MAX
        last = log.rstrip("\n").splitlines()
        assert e.message in last[-3] and last[-2] == f"  Command: {e.command}"
        assert last[-1].strip() == "^" and 0 <= e.pos <= len(e.command)
        assert fs.read("kprobe_events") == ""
        SEEN["rejected"] += 1
        return
    (event_path,) = [f"events/{g}/{e}" for g in fs.ls("events")[1:] if g not in TRACEPOINT_GROUPS
                     for e in fs.ls(f"events/{g}")[1:]]
    try:
        fs.write(f"{event_path}/filter", filt)
    except fentry.TraceError as e:
        assert e.message in fs.read("error_log")
    try:
        fs.write(f"{event_path}/enable", "1")
        SEEN["enabled"] += 1
    except fentry.TraceError as e:
        assert e.message in fs.read("error_log")
    try:
        assert [target(a) for a in range(5)] == WANT
        SEEN["recorded"] += fs.instance.buffer.stats()[0] > 0
    finally:
        fs.write("events/enable", "0")
        fs.write("kprobe_events", "")
        fs.write("trace", "")
        fs.write("error_log", "")


def test_the_generator_reached_every_outcome():
    """The test above saw rejections, enabled probes and recorded events.
    Run alone, or before it, this test runs the generator itself first."""
    if not any(SEEN.values()):
        test_generated_definitions_never_disturb_the_program()
    assert all(n > 20 for n in SEEN.values()), SEEN
