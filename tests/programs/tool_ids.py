"""longrun.py beside other sys.monitoring tools, for the attach tests.

    tool_ids.py STOPFILE SLEEP all      claims every tool id first, as six other tools would

Each id is claimed under the name ``tool-N``.
"""

import sys

import longrun

if __name__ == "__main__":
    stop, pause, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    if mode == "all":
        for i in range(6):
            sys.monitoring.use_tool_id(i, f"tool-{i}")
    longrun.main(stop, pause)
