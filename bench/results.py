"""The benchmarks' tables as JSON (``--json FILE``), to compare runs over time.

One file holds the rows of one or more benchmark scripts run on one Python
(``scripts/bench-all`` gives run.py, stream.py and attach.py the same file):
each script replaces its own rows and leaves the others'.  Every row stands
on its own, so the rows of many files can simply be concatenated::

    {"rows": [{"bench": "run", "row": "2", "measure": "...",
               "values": {"ns": 41.2, "base ns": 38.0}, "ratio": 1.08, "spread": 0.01,
               "goal": "<= 1.3", "met": true,
               "python": "3.13.0", "hot_path": "c", "fentry": "0.1.0",
               "date": "2026-11-30T14:10:00Z", "cpus": 2, "machine": "x86_64"}, ...],
     "issues": {"run": ["..."]}}

``met`` is null where a row has no goal or was not measured (its ratio is
null then too); ``values`` holds what the table prints for each side.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version


def context() -> dict:
    """What every row carries besides its own figures."""
    from fentry import hotpath
    try:
        fentry_version = version("fentry")
    except PackageNotFoundError:
        fentry_version = None
    return {"python": platform.python_version(), "hot_path": hotpath.IMPLEMENTATION,
            "fentry": fentry_version,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(), "machine": platform.machine()}


def row(row: str, measure: str, values: dict, ratio: float | None, goal: str | None,
        met: bool | None, **extra) -> dict:
    """One row of a table (``extra``: what a bench adds, e.g. ``spread``)."""
    return {"row": row, "measure": measure, "values": values,
            "ratio": ratio if ratio is None or math.isfinite(ratio) else None,  # JSON has no inf
            "goal": goal, "met": met, **extra}


def write(path: str, bench: str, rows: list[dict], issues: list[str]) -> None:
    """Put ``bench``'s rows into the file at ``path``, replacing any it held."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        data = {"rows": [], "issues": {}}
    ctx = context()
    data["rows"] = [r for r in data["rows"] if r.get("bench") != bench] \
        + [{"bench": bench, **r, **ctx} for r in rows]
    data["issues"][bench] = issues
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)       # a reader never sees half a file
