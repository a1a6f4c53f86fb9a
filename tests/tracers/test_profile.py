"""The function profiler: ``function_profile_enabled``, ``trace_stat/function<TID>``
and ``fentry run --profile``, on real programs, read as a user reads them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from control.live import Target
from helpers import env, fentry

from fentry.errors import TraceError

LONGRUN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "programs", "longrun.py")
HEADER = ("  Function                               Hit    Time            Avg             s^2\n"
          "  --------                               ---    ----            ---             ---\n")
ROW = re.compile(r"^  (?P<name>\S+) +(?P<hit>\d+)    (?P<time>\d+(?:\.\d+)?) us +"
                 r"(?P<avg>\d+(?:\.\d+)?) us +(?P<s2>\d+(?:\.\d+)?) us +$")
TITLE = re.compile(r"^# function profile of (?P<prog>\S+) \(pid \d+\), "
                   r"(?:1 thread|(?P<threads>\d+) threads together); Time: (?P<what>.*)$")


def stat(text: str) -> dict[str, tuple[int, float]]:
    """A stat file (or the profile's table): name -> (hits, Time in us), in order."""
    assert text.startswith(HEADER) or HEADER.split("\n")[0].split() == text.split("\n")[0].split(), text
    rows = {}
    for line in text.splitlines()[2:]:
        m = ROW.match(line)
        assert m, line
        rows[m["name"]] = (int(m["hit"]), float(m["time"]))
    times = [t for _, t in rows.values()]
    assert times == sorted(times, reverse=True), "most time first"
    return rows


def run_profile(tmp_path, source: str, *opts: str) -> tuple[subprocess.CompletedProcess, str, str]:
    """``fentry run --profile OPTS -o FILE prog.py``: the process, its title line, its table."""
    prog, out = tmp_path / "prog.py", tmp_path / "profile.txt"
    prog.write_text(textwrap.dedent(source))
    proc = subprocess.run([sys.executable, "-m", "fentry", "run", "--profile", *opts, "-o", str(out),
                           str(prog)], capture_output=True, text=True, timeout=120, env=env())
    text = out.read_text()
    title, _, table = text.partition("\n")
    return proc, title, table


# -- what it counts

BUSY = """
    import threading, sys
    def leaf(i):
        return i + 1
    def busy(n):
        for i in range(n):
            leaf(i)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)
    threads = [threading.Thread(target=busy, args=(100_000,)) for _ in range(4)]
    for t in threads:
        t.start()
    fib(18)
    for t in threads:
        t.join()
    print("done")
    sys.exit(3)
"""


def test_hits_are_the_real_call_counts_in_busy_threads_and_recursion(tmp_path):
    proc, title, table = run_profile(tmp_path, BUSY, "-l", "leaf", "-l", "busy", "-l", "fib")
    assert proc.returncode == 3 and proc.stdout == "done\n", proc.stderr    # the program's own
    assert proc.stderr == ""
    m = TITLE.match(title)
    assert m and m["prog"] == "prog.py" and m["what"] == "time with the calls made (graph-time)", title
    assert int(m["threads"]) == 5
    rows = stat(table)
    assert {name: hits for name, (hits, _) in rows.items()} == {
        "__main__:leaf": 400_000, "__main__:busy": 4, "__main__:fib": 2 * 4181 - 1}    # fib(18)'s calls


def test_each_thread_has_its_own_stat_file(fs):
    def leaf(i):
        return i

    def busy(n):
        for i in range(n):
            leaf(i)
    fs.write("set_ftrace_filter", "*.leaf *.busy")
    fs.write("function_profile_enabled", "1")
    tids = []
    threads = [threading.Thread(target=lambda n=n: (tids.append(threading.get_native_id()), busy(n)))
               for n in (1000, 2000, 3000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    busy(10)
    fs.write("function_profile_enabled", "0")
    files = fs.ls("trace_stat")
    assert sorted(files) == sorted(f"function{tid}" for tid in [*tids, threading.get_native_id()])
    hits = {}
    for tid, n in zip(tids, (1000, 2000, 3000)):
        rows = stat(fs.read(f"trace_stat/function{tid}"))
        assert {k.split(":")[-1]: h for k, (h, _) in rows.items()} == {
            "test_each_thread_has_its_own_stat_file.<locals>.leaf": n,
            "test_each_thread_has_its_own_stat_file.<locals>.busy": 1}
        hits[tid] = rows
    # Disabled, the numbers stay; enabled again, a new profile starts.
    assert fs.read(f"trace_stat/function{tids[0]}").count("\n") == 4
    fs.write("function_profile_enabled", "1")
    assert fs.ls("trace_stat") == []
    fs.write("function_profile_enabled", "0")


def test_the_profiler_writes_nothing_to_the_ring_buffer_and_keeps_the_filters(fs):
    def kept():
        return 1

    def skipped():
        return 2
    fs.write("set_ftrace_filter", "*.kept *.skipped")
    fs.write("set_ftrace_notrace", "*.skipped")
    fs.write("function_profile_enabled", "1")
    for _ in range(10):
        kept()
        skipped()
    fs.write("function_profile_enabled", "0")
    rows = stat(fs.read(f"trace_stat/function{threading.get_native_id()}"))
    assert [(name.rsplit(".", 1)[-1], hits) for name, (hits, _) in rows.items()] == [("kept", 10)]
    assert "entries-in-buffer/entries-written: 0/0" in fs.read("trace")


def test_function_profile_enabled_reads_and_writes_as_the_kernels(fs):
    assert fs.read("function_profile_enabled") == "0\n"
    fs.write("function_profile_enabled", "2")       # any number: !!val
    assert fs.read("function_profile_enabled") == "1\n"
    with pytest.raises(TraceError):
        fs.write("function_profile_enabled", "on")
    assert fs.read("function_profile_enabled") == "1\n"
    assert {"function_profile_enabled", "trace_stat"} <= set(fs.ls())
    fs.reset()
    assert fs.read("function_profile_enabled") == "0\n" and fs.ls("trace_stat") == []


# -- what its Time is

SLEEPS = """
    import time
    def inner():
        time.sleep(0.2)
    def outer():
        time.sleep(0.05)
        inner()
    def raiser():
        time.sleep(0.05)
        raise ValueError("no")
    def catcher():
        try:
            raiser()
        except ValueError:
            time.sleep(0.2)
    def gen():
        for i in range(3):
            yield i
    def consume():
        g = gen()
        for _ in g:
            time.sleep(0.05)        # gen is suspended: its time with sleep-time only
        g2 = gen()
        next(g2)
        g2.close()
    outer()
    catcher()
    consume()
"""


def test_time_with_graph_time_includes_the_calls_made(tmp_path):
    proc, _, table = run_profile(tmp_path, SLEEPS, "-l", "inner", "-l", "outer", "-l", "raiser",
                                     "-l", "catcher", "-l", "gen", "-l", "consume")
    assert proc.returncode == 0, proc.stderr
    rows = {k.split(":")[1]: v for k, v in stat(table).items()}
    assert rows["inner"][1] >= 200_000 and rows["outer"][1] >= rows["inner"][1] + 50_000
    # The exception ends raiser's time where it leaves: catcher's sleep after it is not in it.
    assert rows["raiser"][1] >= 50_000 and rows["catcher"][1] >= rows["raiser"][1] + 200_000
    # Two generators started (one closed early): 2 hits, and with sleep-time
    # (the default) the 3 x 50 ms the first spent suspended.
    assert rows["gen"][0] == 2 and rows["gen"][1] >= 150_000
    assert rows["consume"][1] >= 150_000
    assert {name: hits for name, (hits, _) in rows.items()} == {
        "inner": 1, "outer": 1, "raiser": 1, "catcher": 1, "gen": 2, "consume": 1}


@pytest.mark.parametrize("graph_time", ["graph-time", "nograph-time"])
def test_run_profile_nosleep_time_counts_a_generators_activations_only(tmp_path, graph_time):
    proc, _, table = run_profile(tmp_path, SLEEPS, "-O", "nosleep-time", "-O", graph_time,
                                 "-l", "gen", "-l", "consume")
    assert proc.returncode == 0, proc.stderr
    rows = {k.split(":")[1]: v for k, v in stat(table).items()}
    # 2 hits, and only their running time, not the 3 x 50 ms suspended
    # (which is consume's own, in its self time too).
    assert rows["gen"][0] == 2 and rows["gen"][1] < 100_000
    assert rows["consume"][0] == 1 and rows["consume"][1] >= 150_000


def test_time_without_graph_time_is_self_time(tmp_path):
    proc, title, table = run_profile(tmp_path, SLEEPS, "-O", "nograph-time", "-l", "inner", "-l",
                                     "outer", "-l", "raiser", "-l", "catcher")
    assert proc.returncode == 0, proc.stderr
    assert title.endswith("Time: self time (nograph-time)")
    rows = {k.split(":")[1]: v for k, v in stat(table).items()}
    # outer: its own 50 ms, not inner's 200; an exception ends raiser's time
    # where it leaves, so catcher's own is the 200 after it, not raiser's 50.
    assert 50_000 <= rows["outer"][1] < rows["inner"][1] and rows["inner"][1] >= 200_000
    assert 50_000 <= rows["raiser"][1] < rows["catcher"][1] and rows["catcher"][1] >= 200_000
    assert list(rows)[:2] in (["inner", "catcher"], ["catcher", "inner"])


def test_recursion_counts_each_activation(fs):
    def rec(n):
        if n:
            time.sleep(0.01)
            rec(n - 1)
    fs.write("set_ftrace_filter", "*.rec")
    fs.write("function_profile_enabled", "1")
    rec(3)
    fs.write("function_profile_enabled", "0")
    path = f"trace_stat/function{threading.get_native_id()}"
    [(hits, total)] = stat(fs.read(path)).values()
    fs.write("trace_options", "nograph-time")
    [(_, own)] = stat(fs.read(path)).values()
    fs.write("trace_options", "graph-time")
    # Activations of 30, 20, 10 and 0 ms: 60 ms with graph-time (the kernel's
    # sum), and their self times, 10 ms each, 30 ms without: twice as much,
    # however long the sleeps take.
    assert hits == 4
    assert total >= 60_000 and own >= 30_000 and 1.8 <= total / own <= 2.2


@pytest.mark.parametrize("sleep_time", ["sleep-time", "nosleep-time"])
def test_generators_and_coroutines_count_one_call_each_and_close_every_activation(fs, sleep_time):
    import asyncio
    fs.write("trace_options", sleep_time)

    def gen():
        yield 1
        yield 2

    async def sub():
        await asyncio.sleep(0.01)

    async def main():
        await asyncio.gather(sub(), sub())
        try:
            await asyncio.wait_for(asyncio.sleep(1), 0.01)      # cancelled: a throw, then an unwind
        except TimeoutError:
            pass
    fs.write("set_ftrace_filter", "*.gen *.sub *.main")
    fs.write("function_profile_enabled", "1")
    g = gen()
    next(g)
    g.close()                   # a throw into it, then GeneratorExit leaves it
    g = gen()
    next(g)
    with pytest.raises(ValueError):
        g.throw(ValueError)
    gen().close()               # never run: never called
    list(gen())
    asyncio.run(main())
    fs.write("function_profile_enabled", "0")
    rows = stat(fs.read(f"trace_stat/function{threading.get_native_id()}"))
    assert {name.rsplit(".", 1)[-1]: hits for name, (hits, _) in rows.items()} == {
        "gen": 3, "sub": 2, "main": 1}
    subs = rows[next(n for n in rows if n.endswith(".sub"))][1]
    if sleep_time == "sleep-time":
        assert subs >= 20_000       # their 2 x 10 ms asleep
    else:
        assert subs < 5_000         # not their 2 x 10 ms asleep
    assert [st.depth for st in fs.profiler.last.threads] == [0]     # no activation left open


# -- sleep-time: a generator's or coroutine's time suspended

def profile_of(fs, run, *options: str) -> dict[str, tuple[int, float]]:
    """Profile ``run()`` with ``options`` set: name (last word) -> (hits, Time in us) of this thread."""
    fs.write("trace_options", " ".join(options))
    fs.write("function_profile_enabled", "1")
    try:
        run()
    finally:
        fs.write("function_profile_enabled", "0")
        fs.write("trace_options", "sleep-time graph-time")
    text = fs.read(f"trace_stat/function{threading.get_native_id()}")
    return {name.rsplit(".", 1)[-1]: v for name, v in stat(text).items()}


def test_sleep_time_is_an_option_on_by_default(fs):
    assert fs.read("options/sleep-time") == "1\n"
    assert "\nsleep-time\n" in fs.read("trace_options")
    fs.write("options/sleep-time", "0")
    assert "\nnosleep-time\n" in fs.read("trace_options")
    fs.write("trace_options", "sleep-time")
    assert fs.read("options/sleep-time") == "1\n"


@pytest.mark.parametrize("graph_time", ["graph-time", "nograph-time"])
def test_sleep_time_puts_a_coroutines_await_in_its_time(fs, graph_time):
    import asyncio

    async def napper():
        await asyncio.sleep(0.05)

    fs.write("set_ftrace_filter", "*.napper")
    on = profile_of(fs, lambda: asyncio.run(napper()), "sleep-time", graph_time)
    off = profile_of(fs, lambda: asyncio.run(napper()), "nosleep-time", graph_time)
    # One call each; the 50 ms asleep in its Time (its self time too: it is
    # in no profiled call it made, as the kernel's), or not at all.
    assert on["napper"][0] == off["napper"][0] == 1
    assert 50_000 <= on["napper"][1] < 1_000_000 and off["napper"][1] < 20_000


def test_sleep_time_in_recursive_generators(fs):
    def walk(n):
        yield n
        if n:
            yield from walk(n - 1)

    def consume():
        for _ in walk(3):
            time.sleep(0.01)

    fs.write("set_ftrace_filter", "*.walk")
    on = profile_of(fs, consume, "sleep-time")
    off = profile_of(fs, consume, "nosleep-time")
    # 4 calls; walk(3) is suspended for the 4 sleeps, walk(2) for 3, ...: 100 ms in all.
    assert on["walk"][0] == off["walk"][0] == 4
    assert on["walk"][1] >= 100_000 and off["walk"][1] < 10_000
    self_on = profile_of(fs, consume, "sleep-time", "nograph-time")
    # Self time: each call's less the inner walks' activations only, its
    # sleep kept (the kernel's: sleep is in no call it made): 100 ms still.
    assert self_on["walk"][0] == 4 and 100_000 <= self_on["walk"][1] < 1_000_000


def test_sleep_time_per_thread(fs):
    def gen():
        yield 1
        yield 2

    def consume():
        for _ in gen():
            time.sleep(0.02)

    fs.write("set_ftrace_filter", "*.gen")
    fs.write("function_profile_enabled", "1")
    threads = [threading.Thread(target=consume) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fs.write("function_profile_enabled", "0")
    files = [f"trace_stat/function{tid}" for tid in fs.profiler.per_thread()]
    assert len(files) == 3
    for path in files:
        [(hits, t)] = stat(fs.read(path)).values()
        assert hits == 1 and 40_000 <= t < 1_000_000
    assert all(st.depth == 0 for st in fs.profiler.last.threads)


# -- fentry run --profile, and a running program

def test_run_profile_prints_the_kernels_columns_after_the_trace(tmp_path):
    source = """
        def f():
            return 1
        for _ in range(3):
            f()
        print("out")
    """
    proc, title, _ = run_profile(tmp_path, source, "-t", "function", "-l", "f")
    assert proc.returncode == 0 and proc.stdout == "out\n"
    assert title == "# tracer: function"        # the trace first ...
    text = (tmp_path / "profile.txt").read_text()
    trace, _, profile = text.partition("# function profile of")
    assert len(re.findall(r": f <-<module>$", trace, re.M)) == 3
    lines = profile.splitlines()
    assert TITLE.match("# function profile of" + lines[0])
    assert "\n".join(lines[1:3]) + "\n" == HEADER
    assert [ROW.match(line)["name"] for line in lines[3:]] == ["__main__:f"]
    assert ROW.match(lines[3])["hit"] == "3"
    # Without -o: the program's output is its own, the profile on stderr.
    prog = tmp_path / "prog.py"
    got = subprocess.run([sys.executable, "-m", "fentry", "run", "--profile", "-l", "f", str(prog)],
                         capture_output=True, text=True, timeout=60, env=env())
    assert got.stdout == "out\n" and got.returncode == 0
    assert got.stderr.startswith("# function profile of prog.py") and "__main__:f" in got.stderr


@pytest.mark.slow
def test_a_running_program_is_profiled_live(tmp_path):
    stop = tmp_path / "stop"
    run = subprocess.Popen([sys.executable, "-m", "fentry", "run", "-t", "nop", LONGRUN, str(stop),
                            "0.001"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        pid = run.stdout.readline().split()[1]
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/tmp/fentry-{pid}/control") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fentry("-p", pid, "write", "set_ftrace_filter", "main add").returncode == 0
        assert fentry("-p", pid, "write", "function_profile_enabled", "1").returncode == 0
        time.sleep(0.3)
        assert fentry("-p", pid, "ls", "trace_stat").stdout.split() == [f"function{pid}"]
        first = stat(fentry("-p", pid, "read", f"trace_stat/function{pid}").stdout)
        time.sleep(0.2)
        second = stat(fentry("-p", pid, "read", f"trace_stat/function{pid}").stdout)
        # main was running before the profiler: it is not counted; add is, more and more.
        assert list(first) == list(second) == ["__main__:add"], first
        assert 0 < first["__main__:add"][0] < second["__main__:add"][0]
        assert fentry("-p", pid, "write", "function_profile_enabled", "0").returncode == 0
        stop.touch()
        stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    orders = re.match(r"orders (\d+) total (\d+) expected (\d+)", stdout.splitlines()[0])
    assert orders and orders[2] == orders[3]


@pytest.mark.ptrace
@pytest.mark.slow
def test_a_plain_python_program_is_profiled_live_and_left_as_it_was(tmp_path):
    target = Target(tmp_path, pause=0.001)
    try:
        pid = str(target.pid)
        got = fentry("-p", pid, "write", "set_ftrace_filter", "main add")     # starts the agent
        assert got.returncode == 0, got.stderr
        assert fentry("-p", pid, "write", "function_profile_enabled", "1").returncode == 0
        deadline = time.monotonic() + 10
        while fentry("-p", pid, "ls", "trace_stat").stdout.split() != [f"function{pid}"]:
            assert time.monotonic() < deadline, "no profile"
            time.sleep(0.05)
        time.sleep(0.2)
        rows = stat(fentry("-p", pid, "read", f"trace_stat/function{pid}").stdout)
        assert list(rows) == ["__main__:add"] and rows["__main__:add"][0] > 0     # main: under way
        assert fentry("-p", pid, "detach").returncode == 0
        target.finish_clean()       # its result, and nothing of fentry's left in it
    finally:
        target.kill()
