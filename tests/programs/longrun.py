"""A long-running program for the attach tests: an order loop that runs
until a stop file appears, started with plain python.

    longrun.py STOPFILE [SLEEP]

Prints ``ready PID`` first, and at the end ``orders N total T`` (T is
``expected_total(N)``, so a changed result shows) and, as JSON, what fentry
left behind in this very process (``residue()``).
"""

import json
import os
import sys
import time


class Item:
    def __init__(self, sku, price):
        self.sku = sku
        self.price = price


def add(cart, item, qty):
    total = item.price * qty
    cart.append((item.sku, qty))
    return total


def expected_total(n):
    return sum((i % 13) * (i % 3 + 1) for i in range(n))


def fds():
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))


def residue():
    """What a detached fentry must not have left: tool ids, events, threads,
    descriptors, its agent and socket."""
    mon = sys.monitoring
    deadline = time.monotonic() + 2.0       # a thread that was ending has a moment to end
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    tools = {i: mon.get_tool(i) for i in range(6)}
    agent = sys.modules.get("fentry.control.agent")
    ftrace = sys.modules.get("fentry.ftrace")
    return {
        "tools": sorted(t for t in tools.values() if t),
        "global_events": [mon.get_events(i) for i in range(6) if tools[i]],
        "local_events": [mon.get_local_events(i, add.__code__) for i in range(6) if tools[i]],
        "threads": len(os.listdir("/proc/self/task")),
        "fds": fds(),
        "fentry_loaded": "fentry" in sys.modules,
        "agent": agent is not None and agent.current() is not None,
        "ops": len(ftrace.registered_ops()) if ftrace else 0,
        "socket_dir": os.path.exists(f"/tmp/fentry-{os.getpid()}"),
        # this program never imports threading: nor must fentry, here
        "threading": "threading" in sys.modules,
        # sys.monitoring.use_tool_id CPython's own again (fentry's wraps it while it holds an id)
        "use_tool_id": getattr(mon.use_tool_id, "__self__", None) is mon,
    }


def main(stop, pause):
    print(f"ready {os.getpid()}", flush=True)
    start_fds = fds()
    cart, total, n = [], 0, 0
    while not os.path.exists(stop):
        total += add(cart, Item(f"sku{n % 7}", n % 13), n % 3 + 1)
        n += 1
        time.sleep(pause)
    print(f"orders {n} total {total} expected {expected_total(n)} cart {len(cart)}", flush=True)
    print(json.dumps({"start_fds": start_fds, **residue()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.002)
