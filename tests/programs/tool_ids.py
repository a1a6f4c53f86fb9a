"""longrun.py's order loop beside other sys.monitoring tools, for the attach and run tests.

    tool_ids.py STOPFILE SLEEP all    claims every tool id first, as six other tools would
    tool_ids.py STOPFILE SLEEP take   once fentry holds an id, claims that very id for a tool
                                      of its own that counts add's calls (as coverage.py or
                                      cProfile claim theirs)
    tool_ids.py STOPFILE SLEEP last   the same, every other id claimed first: it gets ValueError

Ids are claimed as ``tool-N``, the taken one as ``the-program``.  On taking it
says on stderr ``took N`` or ``refused N: MESSAGE``.  At the end, as longrun.py:
the ``orders`` line, then the residue as JSON, with ``counted`` (add's calls its
own tool saw) and ``since`` (orders made after it took the id).
"""

import json
import os
import sys
import time

from longrun import Item, add, expected_total, fds, residue

M = sys.monitoring


def fentrys_id():
    return next((i for i in range(6) if M.get_tool(i) == "fentry"), None)


def main(stop, pause, mode):
    if mode == "all":
        for i in range(6):
            M.use_tool_id(i, f"tool-{i}")
    print(f"ready {os.getpid()}", flush=True)
    start_fds = fds()
    cart, total, n = [], 0, 0
    counted = []
    since = None
    while not os.path.exists(stop):
        if mode in ("take", "last") and since is None and (held := fentrys_id()) is not None:
            if mode == "last":
                for i in range(6):
                    if M.get_tool(i) is None:
                        M.use_tool_id(i, f"tool-{i}")
            since = n
            try:
                M.use_tool_id(held, "the-program")
            except ValueError as e:
                print(f"refused {held}: {e}", file=sys.stderr, flush=True)
            else:
                M.register_callback(held, M.events.PY_START, lambda code, offset: counted.append(1))
                M.set_local_events(held, add.__code__, M.events.PY_START)
                print(f"took {held}", file=sys.stderr, flush=True)
        total += add(cart, Item(f"sku{n % 7}", n % 13), n % 3 + 1)
        n += 1
        time.sleep(pause)
    print(f"orders {n} total {total} expected {expected_total(n)} cart {len(cart)}", flush=True)
    print(json.dumps({"start_fds": start_fds, **residue(), "counted": len(counted),
                      "since": None if since is None else n - since}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
