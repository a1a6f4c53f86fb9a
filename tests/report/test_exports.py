"""fentry report --format perfetto|chrome|speedscope|folded, on recordings of
real programs: one track per thread, balanced slices, the text trace's call
counts, and folded weights that add up."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys

import pytest
from helpers import SHOPAPP, env

from .exports import (
    BUSY,
    FAMILY,
    chrome_threads,
    counts,
    export,
    nested,
    perfetto_threads,
    record,
    report,
    speedscope_profiles,
    text_calls,
    text_names,
    text_traced_ns,
)

pytestmark = pytest.mark.slow     # real programs recorded, then exported and read back

FORMATS = ("perfetto", "chrome", "speedscope")


class Recording:
    def __init__(self, directory, dat: str) -> None:
        self.dir = directory
        self.dat = dat
        self.text = report(dat)
        self.calls = text_calls(self.text)
        self.names = text_names(self.text)
        self.stderr: dict[str, str] = {}

    def path(self, fmt: str) -> str:
        return str(self.dir / f"{os.path.basename(self.dat)}.{fmt}")

    def threads(self, fmt: str, *args: str) -> dict:
        """The export's threads, read back (and checked) by its reader."""
        out = self.path(fmt)
        self.stderr[fmt] = export(self.dat, fmt, out, *args)
        return {"perfetto": perfetto_threads, "chrome": chrome_threads,
                "speedscope": speedscope_profiles}[fmt](out)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """shopapp under function_graph, with a probe event: two named threads,
    a generator, an exception caught frames up, asyncio, recursion."""
    d = tmp_path_factory.mktemp("shop")
    dat = record(d, "shop.dat", "-t", "function_graph", "-l", "__main__:*",
                 "-e", "p __main__:cents amount", SHOPAPP, "3")
    return Recording(d, dat)


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_track_per_thread_with_balanced_slices_and_the_text_traces_calls(shop, fmt):
    threads = shop.threads(fmt)
    assert len(shop.calls) == 3         # MainThread, checkout-alice, checkout-bob
    assert set(threads) == set(shop.calls)
    for tid, t in threads.items():
        assert nested([s[:3] for s in t["slices"]]) == []
        assert counts(t["slices"]) == shop.calls[tid], tid
        assert shop.names[tid] in t["name"]
    main = next(t for t in threads.values() if t["name"].startswith("MainThread"))
    assert {"main", "Cart.add", "Cart.lines", "ship_all", "ship"} <= set(counts(main["slices"]))
    assert sum(counts(t["slices"])["fib"] for t in threads.values()) == 18


@pytest.mark.parametrize("fmt", ["perfetto", "chrome"])
def test_how_calls_began_and_ended_probe_events_and_process(shop, fmt):
    threads = shop.threads(fmt)
    slices = [s for t in threads.values() for s in t["slices"]]
    notes = collections.Counter((s[2], tuple(sorted(s[3].items()))) for s in slices if s[3])
    # the generator (two lines): each resume to its yield is a slice; an
    # exception raised in Inventory.take and caught in main ends four frames
    assert notes[("Cart.lines", (("exit", "yield"),))] == 1
    assert notes[("Cart.lines", (("entry", "resume"), ("exit", "yield")))] == 1
    assert notes[("Cart.lines", (("entry", "resume"),))] == 1
    for name in ("Inventory.take", "Cart._reserve", "Cart.add", "counted.<locals>.wrapper"):
        assert notes[(name, (("raised", "OutOfStock"),))] == 1
    assert notes[("main", (("raised", "SystemExit"),))] == 1
    assert notes[("ship", (("exit", "yield"),))] == 2             # await asyncio.sleep(0)
    # the probe event: instants with the fetched field, where the text has its comments
    instants = [i for t in threads.values() for i in t["instants"]]
    assert len(instants) == shop.text.count("/* p_cents_0: (cents+0x0) arg1=") == 4
    assert all(i[1] == "p_cents_0" and i[2]["site"] == "cents+0x0" and type(i[2]["arg1"]) is int
               for i in instants)
    # all in one process, the one that ran
    assert len({t["pid"] for t in threads.values()}) == 1


def test_perfetto_says_what_viewers_need(shop):
    """Read back with the same protos: thread tracks under the process track,
    names interned once per sequence, source locations."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace
    shop.threads("perfetto")
    with open(shop.path("perfetto"), "rb") as f:
        trace = Trace.FromString(f.read())
    processes = [p.track_descriptor.process for p in trace.packet
                 if p.HasField("track_descriptor") and p.track_descriptor.HasField("process")]
    assert [p.process_name for p in processes] == ["shopapp.py"]
    assert list(processes[0].cmdline)[-2:] == [SHOPAPP, "3"]
    locations = {loc.function_name: (loc.file_name, loc.line_number) for p in trace.packet
                 for loc in p.interned_data.source_locations}
    with open(SHOPAPP) as f:
        line = next(i for i, text in enumerate(f, 1) if text.startswith("def fib("))
    assert locations["__main__:fib"] == (SHOPAPP, line)


def test_speedscope_validates_against_the_npm_packages_schema(shop):
    import jsonschema

    from .test_view import viewer_or_skip
    viewer = viewer_or_skip()
    with open(os.path.join(viewer, "file-format-schema.json")) as f:
        schema = json.load(f)
    shop.threads("speedscope")
    with open(shop.path("speedscope")) as f:
        data = json.load(f)
    jsonschema.validate(data, schema)
    assert len(data["profiles"]) == 3 and data["activeProfileIndex"] == 0
    assert data["profiles"][0]["name"].startswith("MainThread-")


def test_folded_weights_add_up_to_the_traced_time_or_the_calls(shop):
    out = shop.path("folded")
    export(shop.dat, "folded", out)
    with open(out) as f:
        lines = [line.rsplit(" ", 1) for line in f.read().splitlines()]
    assert all(w.isdigit() and int(w) > 0 for _, w in lines)
    total_us = sum(int(w) for _, w in lines)
    assert abs(total_us - text_traced_ns(shop.text) / 1000) <= 1
    assert "__main__:<module>;__main__:main;__main__:counted.<locals>.wrapper;__main__:Cart.add" \
        in {s for s, _ in lines}
    export(shop.dat, "folded", out, "--weight", "calls")
    with open(out) as f:
        lines = [line.rsplit(" ", 1) for line in f.read().splitlines()]
    by_function = collections.Counter()
    for stack, n in lines:
        by_function[stack.rsplit(";", 1)[-1].split(":", 1)[1]] += int(n)
    text = sum(shop.calls.values(), collections.Counter())
    assert by_function == text


@pytest.mark.slow
def test_a_threaded_program_at_scale(tmp_path):
    """Three threads of 20000 calls each: every call in every format, each
    thread on its own track."""
    dat = record(tmp_path, "busy.dat", "-t", "function_graph", "-l", "take", "-l", "work",
                 "--buffer-size-kb", "100000", BUSY, "3", "20000")
    rec = Recording(tmp_path, dat)
    assert "LOST" not in rec.text
    want = collections.Counter({"take": 20000, "work": 1})
    assert sorted(rec.calls.values(), key=str) == [want] * 3
    for fmt in FORMATS:
        threads = rec.threads(fmt)
        assert sorted(t["name"].split("-")[0] for t in threads.values()) == ["b0", "b1", "b2"]
        for tid, t in threads.items():
            assert counts(t["slices"]) == rec.calls[tid], (fmt, tid)
            work = [s for s in t["slices"] if s[2] == "work"]
            assert all(work[0][0] <= s[0] <= s[1] <= work[0][1] for s in t["slices"])
    out = rec.path("folded")
    export(dat, "folded", out, "--weight", "calls")
    with open(out) as f:
        assert f.read() == "work 3\nwork;take 60000\n".replace("work", "__main__:work") \
            .replace("take", "__main__:take")


@pytest.mark.slow
def test_processes_followed_have_a_track_each(tmp_path):
    """--follow: fork, subprocess, multiprocessing; each process's threads
    under its own process, with the calls the text trace shows for them."""
    dat = record(tmp_path, "fam.dat", "--follow", "-t", "function_graph", "-l", "__main__:*",
                 FAMILY)
    rec = Recording(tmp_path, dat)
    assert len(rec.calls) >= 4
    for fmt in FORMATS:
        threads = rec.threads(fmt)
        assert set(threads) == set(rec.calls), fmt
        for tid, t in threads.items():
            assert counts(t["slices"]) == rec.calls[tid], (fmt, tid)
            if fmt == "speedscope":
                assert re.fullmatch(rf".+ \[\d+\] MainThread-{tid}", t["name"]), t["name"]
            else:
                assert t["pid"] == tid        # each process's main thread
    with open(rec.path("perfetto"), "rb") as f:
        from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace
        trace = Trace.FromString(f.read())
    pids = [p.track_descriptor.process.pid for p in trace.packet
            if p.HasField("track_descriptor") and p.track_descriptor.HasField("process")]
    assert len(set(pids)) == len(pids) and set(rec.calls) <= set(pids)


def test_the_function_tracer_has_no_durations(tmp_path):
    """Entries only: instants (perfetto, chrome), zero-length frames
    (speedscope), caller;function counts (folded, whatever the weight)."""
    dat = record(tmp_path, "f.dat", "-t", "function", "-l", "__main__:*", SHOPAPP)
    rec = Recording(tmp_path, dat)
    assert sum(sum(c.values()) for c in rec.calls.values()) > 50
    for fmt in ("perfetto", "chrome"):
        threads = rec.threads(fmt)
        for tid, t in threads.items():
            assert t["slices"] == []
            assert collections.Counter(i[1] for i in t["instants"]) == rec.calls[tid]
            assert all(i[2]["caller"] for i in t["instants"])
    for tid, t in rec.threads("speedscope").items():
        assert counts(t["slices"]) == rec.calls[tid]
        assert all(s[0] == s[1] for s in t["slices"])
    out = rec.path("folded")
    notes = export(dat, "folded", out)
    assert "the function tracer records no durations" in notes
    with open(out) as f:
        lines = [line.rsplit(" ", 1) for line in f.read().splitlines()]
    assert sum(int(n) for _, n in lines) == sum(sum(c.values()) for c in rec.calls.values())
    assert ["__main__:Cart.add;__main__:Cart._reserve", "5"] in lines


def test_calls_still_open_at_the_end_are_closed_and_marked(tmp_path):
    """os._exit inside main: main never returns; its slice ends at the
    thread's last timestamp, marked unfinished."""
    dat = record(tmp_path, "x.dat", "-t", "function_graph", "-l", "__main__:*", SHOPAPP, "osexit")
    rec = Recording(tmp_path, dat)
    for fmt in FORMATS:
        threads = rec.threads(fmt)
        main = next(t for t in threads.values() if t["name"].startswith("MainThread"))
        last = max(s[1] for s in main["slices"])
        [top] = [s for s in main["slices"] if s[2] == "main"]
        assert top[1] == last
        if fmt != "speedscope":
            assert top[3] == {"exit": "unfinished"}
        for tid, t in threads.items():
            assert counts(t["slices"]) == rec.calls[tid]


def test_a_perfetto_trace_is_not_written_to_a_terminal(tmp_path):
    import pty
    import subprocess
    import sys

    from helpers import env
    dat = record(tmp_path, "t.dat", "-t", "function", "-l", "fib", SHOPAPP)
    leader, follower = pty.openpty()
    try:
        got = subprocess.run([sys.executable, "-m", "fentry", "report", "-i", dat, "--format",
                              "perfetto"], stdout=follower, stderr=subprocess.PIPE, text=True,
                             env=env(), timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert got.returncode == 2 and "give -o FILE" in got.stderr


def test_only_the_perfetto_export_imports_perfetto():
    """The fentry command (run, attach: their start-up time) and the other
    formats import no third-party module; --format perfetto imports Perfetto's
    protos."""
    import subprocess
    import sys

    from helpers import env
    code = ("import sys, fentry.cli, fentry.report.calls, fentry.report.chrome, "
            "fentry.report.speedscope, fentry.report.folded, fentry.report.view\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'perfetto', 'google', "
            "'jsonschema'}))\n"
            "import fentry.report.perfetto\n"
            "print('perfetto' in sys.modules and 'google.protobuf' in sys.modules)\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(),
                         timeout=60)
    assert got.stdout == "[]\nTrue\n", got.stderr


def test_folded_memory_does_not_grow_with_stack_depth(tmp_path):
    """Twenty recursions 3000 deep: every depth is a stack of its own, and
    the folded output (about 60 MB of names) is far larger than the tree of
    stacks it comes from; the report's memory stays below the output's
    size (a string per stack took four times it)."""
    prog = tmp_path / "deep.py"
    prog.write_text("import sys\nsys.setrecursionlimit(20000)\n"
                    "def down(n):\n    if n:\n        down(n - 1)\n"
                    "for i in range(20):\n    down(3000)\n")
    dat = record(tmp_path, "deep.dat", "-t", "function_graph", str(prog))
    out = str(tmp_path / "deep.folded")
    # VmHWM, not ru_maxrss: that one carries over exec the peak of the
    # forking process, pytest's own.
    code = ("import sys\nfrom fentry.cli import main\n"
            "try:\n    main(sys.argv[1:])\nfinally:\n    print(open('/proc/self/status')"
            ".read().split('VmHWM:')[1].split()[0], file=sys.stderr)\n")
    got = subprocess.run([sys.executable, "-c", code, "report", "-i", dat, "--format", "folded",
                          "-o", out, "--weight", "calls"], capture_output=True, text=True, env=env(),
                         timeout=120)
    assert got.returncode == 0, got.stderr
    rss = int(got.stderr.split()[-1]) * 1024
    with open(out) as f:
        lines = [line.rsplit(" ", 1) for line in f]
    # One line per depth of down (3001 of them), each ended 20 times, plus
    # the module's frame and threading's _shutdown at exit.
    assert len(lines) == 3001 + 2
    assert sum(int(n) for _, n in lines) == 20 * 3001 + 2
    assert max(stack.count(";") for stack, _ in lines) == 3001
    size = os.path.getsize(out)
    assert size > 50e6
    assert rss < size, (rss, size)
