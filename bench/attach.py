"""How fast ``fentry attach`` gets to the first event, and how long the target is paused.

    python bench/attach.py [--rounds N] [--json FILE]

Each round starts a fresh long-running program with plain python (a loop of
orders, one every 2 ms), then runs ``fentry attach PID -e 'p:add add ...'``
as a user would and times, from the moment the command is started, the first
event line on its output.  The pause is what fentry reports: how long the
target's main thread was stopped under ptrace (or gdb).  Goals (issue 5):
first event <= 0.2 s, pause <= 0.1 s.  For reference, on this machine kind:
pymontrace shows its first event at 0.19 s, hunter's --gdb at 0.46-0.49 s.
Medians over the rounds; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PROGRAM = """
import os, sys, time
class Item:
    def __init__(self, sku, price):
        self.sku = sku
        self.price = price
def add(cart, item, qty):
    cart.append((item.sku, qty))
    return item.price * qty
print("ready", flush=True)
cart, n = [], 0
while True:
    add(cart, Item("sku%d" % (n % 7), n % 13), n % 3 + 1)
    n += 1
    time.sleep(0.002)
"""
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402

PROBE = "p:bench/add add sku=item.sku qty=qty"
PAUSE = re.compile(r"paused ([\d.]+) ms")


class Unusable(Exception):
    """The injector refused this machine before touching the target."""


def one_round(script: str, injector: str) -> tuple[float, float]:
    target = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True)
    try:
        target.stdout.readline()
        started = time.perf_counter()
        attach = subprocess.Popen([sys.executable, "-m", "fentry", "attach", str(target.pid),
                                   "--injector", injector, "-e", PROBE],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  bufsize=1)
        while True:
            line = attach.stdout.readline()
            if not line:
                err = attach.stderr.read()
                if "cannot call functions safely" in err:
                    raise Unusable(err.strip().splitlines()[-1])
                raise RuntimeError(f"fentry attach ended before any event: {err}")
            if ": add: (add+0x0)" in line:
                first = time.perf_counter() - started
                break
        attach.send_signal(signal.SIGINT)
        try:
            _, status = attach.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            attach.kill()
            raise RuntimeError("fentry attach did not end within 30 s of Ctrl-C") from None
        if target.poll() is not None:
            raise RuntimeError("the target died")
        m = PAUSE.search(status)
        return first, float(m[1]) / 1e3 if m else float("nan")
    finally:
        target.kill()
        target.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", metavar="FILE",
                    help="also write the table to FILE as JSON (bench/results.py)")
    opts = ap.parse_args(argv)
    injectors = ["ptrace"] + (["gdb"] if shutil.which("gdb") else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "orders.py")
        with open(script, "w") as f:
            f.write(PROGRAM)
        print(f"fentry attach on Python {sys.version.split()[0]}, {opts.rounds} rounds each "
              "(a fresh target per round)")
        print(f"{'injector':<10} {'first event (s)':>16} {'goal':>7} {'pause (s)':>10} {'goal':>7}")
        for injector in injectors:
            firsts, pauses = [], []
            try:
                for _ in range(opts.rounds):
                    first, pause = one_round(script, injector)
                    firsts.append(first)
                    pauses.append(pause)
            except Unusable as e:
                # gdb's inferior calls are broken on some machines; fentry
                # checks that on a scratch process and refuses: no row.
                print(f"{injector:<10} not usable here: {e}")
                continue
            f, p = statistics.median(firsts), statistics.median(pauses)
            print(f"{injector:<10} {f:>16.3f} {'<= 0.2':>7} {p:>10.4f} {'<= 0.1':>7}"
                  f"   first-event min {min(firsts):.3f} max {max(firsts):.3f}")
            rows.append(results.row(f"{injector} first event", "fentry attach: seconds to the "
                                    "first event", {"median": f, "min": min(firsts),
                                                    "max": max(firsts)}, None, "<= 0.2", f <= 0.2))
            known = p == p          # NaN: fentry did not say how long it paused
            rows.append(results.row(f"{injector} pause", "fentry attach: seconds the target "
                                    "is stopped", {"median": p if known else None}, None,
                                    "<= 0.1", p <= 0.1 if known else None))
    if opts.json:
        results.write(opts.json, "attach", rows, [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
