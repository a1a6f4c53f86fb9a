"""Running real programs for the live-control tests: a target started with
plain python, and the ``fentry`` command run against it as a user would."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time

from helpers import PROGRAMS, env

LONGRUN = os.path.join(PROGRAMS, "longrun.py")
TOOL_IDS = os.path.join(PROGRAMS, "tool_ids.py")      # longrun beside other tools

ADD_LINE = re.compile(r"^\s*\S+-(?P<tid>\d+)\s+\[000\] \.\.\.\.\. +\d+\.\d{6}: "
                      r"add: \(add\+0x0\) sku='sku(?P<sku>\d)' price=(?P<price>\d+) "
                      r"qty=(?P<qty>\d)$")


def fentry_bg(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fentry", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), **kw)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (a failure guard, not a timing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def lines_of(path) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def order_number(sku: int, price: int, qty: int) -> int | None:
    """The loop counter n that gives this order (n % 7, n % 13, n % 3 + 1), mod 273."""
    for n in range(7 * 13 * 3):
        if (n % 7, n % 13, n % 3 + 1) == (sku, price, qty):
            return n
    return None


def check_add_events(lines: list[str]) -> int:
    """Every ``add`` event has the values of one real order, and consecutive
    events are consecutive orders (none lost, none made up).  Returns how many."""
    events = [ADD_LINE.match(line) for line in lines if ": add: " in line]
    assert events and all(events), [line for line in lines if ": add: " in line][:5]
    ns = [order_number(int(m["sku"]), int(m["price"]), int(m["qty"])) for m in events]
    assert None not in ns
    for a, b in itertools.pairwise(ns):
        assert b == (a + 1) % 273, (a, b)
    return len(events)


def profile(text: str) -> dict[str, tuple[int, int]]:
    out = {}
    for line in text.splitlines():
        name, hits, misses = line.split()
        out[name] = (int(hits), int(misses))
    return out


class Target:
    """tests/programs/longrun.py, started with plain python (no fentry)."""

    def __init__(self, tmp_path, python: str = sys.executable, pause: float = 0.002,
                 argv: list[str] | None = None, program: str = LONGRUN, extra: tuple = ()) -> None:
        self.stop_file = tmp_path / f"stop-{time.monotonic_ns()}"
        self.proc = subprocess.Popen(argv or [python, program, str(self.stop_file), str(pause), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()
        assert first.startswith("ready"), (first, self.proc.stderr.read())
        self.pid = self.proc.pid

    def finish(self) -> tuple[str, dict, str]:
        """Stop the loop; its result line, its residue report, its stderr."""
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=30)
        lines = out.splitlines()
        assert self.proc.returncode == 0, (out, err)
        return lines[0], json.loads(lines[1]), err

    def finish_clean(self) -> None:
        """Stop the loop: the program computed what it would have without
        fentry, nothing of fentry's is left in it, and its stderr is empty."""
        result, residue, err = self.finish()
        check_result(result)
        check_no_residue(residue)
        assert err == ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check_result(result: str) -> None:
    """The program computed what it would have without fentry."""
    m = re.match(r"orders (\d+) total (\d+) expected (\d+) cart (\d+)$", result)
    assert m, result
    assert m[2] == m[3] and m[1] == m[4], result


def check_no_residue(residue: dict) -> None:
    """Section 4 of the issue, seen from inside the target."""
    assert residue["tools"] == [], residue
    assert residue["global_events"] == [] and residue["local_events"] == [], residue
    assert residue["threads"] == 1, residue
    assert residue["fds"] == residue["start_fds"], residue
    assert residue["agent"] is False and residue["ops"] == 0, residue
    assert residue["socket_dir"] is False, residue
    assert residue["threading"] is False, residue
    assert residue["use_tool_id"] is True, residue


def interrupt(proc: subprocess.Popen, timeout: float = 20) -> tuple[str, str]:
    """Ctrl-C, as a user at the terminal would."""
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout)
