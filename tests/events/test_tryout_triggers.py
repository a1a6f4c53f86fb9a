"""Trigger files tried as a new user would (issue 14's tryout): what a
refused write leaves, in process (``fentry.tracefs()``, the code a live
``fentry -p PID write`` runs)."""

from __future__ import annotations

import pytest

from fentry.errors import TraceError


@pytest.fixture
def served(make_module, fs):
    mod = make_module("tryout_served", """
        def handle(path):
            return len(path)
    """)
    fs.write("kprobe_events", "p:srv/req tryout_served:handle path=path")
    yield mod
    fs.reset()          # (triggers off, then the event can go)
    fs.write("kprobe_events", "")


def test_a_refused_truncating_write_leaves_the_hists_and_their_counts(fs, served):
    """``echo 'hist:keys=nosuch' > trigger`` is refused; the hist that was
    there stays, counting (it was removed before the write was parsed)."""
    fs.write("events/srv/req/trigger", "hist:keys=path")
    fs.write("events/srv/req/trigger", "enable_hist:srv:req", append=True)
    for p in ("/a", "/b", "/a"):
        served.handle(p)
    before = fs.read("events/srv/req/trigger")
    with pytest.raises(TraceError, match="Couldn't find field"):
        fs.write("events/srv/req/trigger", "hist:keys=nosuch")
    assert fs.read("events/srv/req/trigger") == before
    assert fs.read("events/srv/req/enable") == "0*\n"
    served.handle("/a")
    hist = fs.read("events/srv/req/hist")
    assert "{ path: /a" in hist and "hitcount:          3" in hist and "Hits: 4" in hist


def test_a_truncating_write_that_is_taken_replaces_the_hists(fs, served):
    fs.write("events/srv/req/trigger", "hist:keys=path")
    served.handle("/a")
    fs.write("events/srv/req/trigger", "hist:keys=path:vals=hitcount:sort=hitcount.descending")
    assert fs.read("events/srv/req/trigger").startswith(
        "hist:keys=path:vals=hitcount:sort=hitcount.descending:size=2048 [active]")
    assert fs.read("events/srv/req/trigger").count("hist:") == 1
    served.handle("/b")
    assert "Hits: 1\n" in fs.read("events/srv/req/hist")
    fs.write("events/srv/req/trigger", "traceoff")      # (> removes the hists, as the kernel's)
    assert fs.read("events/srv/req/trigger") == "traceoff:unlimited\n"
    fs.write("events/srv/req/trigger", "!traceoff")
    assert fs.read("events/srv/req/enable") == "0\n"


def test_an_instance_removed_with_records_in_it_keeps_nothing_alive(fs, make_module):
    """``rmdir instances/NAME`` (what the end of an attach session does) with
    records still in its rings: its events, once removed, are freed.  Each
    thread's ring is a thread-local, so a record holding its event held the
    event, the instance and the whole tracefs for as long as the thread
    lived (found as test_tracepoints' audit-hook test failing after
    test_triggers in one process)."""
    import gc
    import weakref

    mod = make_module("tryout_rmdir", """
        def f(x):
            return x
    """)
    fs.write("kprobe_events", "p:trig/rm tryout_rmdir:f x=x")
    event = weakref.ref(fs.probes.events[("trig", "rm")])
    fs.mkdir("instances/mine")
    fs.write("instances/mine/events/trig/rm/trigger", "traceoff if x == 2")
    fs.write("instances/mine/events/trig/rm/enable", "1")
    for i in range(5):
        mod.f(i)
    assert "x=1" in fs.read("instances/mine/trace")
    fs.rmdir("instances/mine")
    fs.write("kprobe_events", "")
    gc.collect()
    assert event() is None
