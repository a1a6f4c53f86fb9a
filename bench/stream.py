"""fentry benchmarks, rows 11-15 and 18: the trace on its way out of the process.

    python bench/stream.py [--quick] [--rows 11,12,13,14,15,18] [--json FILE]

Each row runs real commands, side by side in interleaved rounds, and
prints a ratio with its goal (medians; nothing asserted: a missed goal
informs, it does not fail).  What is checked is that every command ran
and recorded what it should; a failure is listed and makes the exit
status 1.

Rows:
 11  -t function, every call of the method-heavy workload (120k calls): the
     program's own timed section under `fentry record` and under `fentry run -o
     FILE`, time added over the untraced run, vs what viztracer (default
     settings) adds to it
 12  the same with -t function_graph
 13  whole wall time, `fentry record` + `fentry report` to text, vs viztracer's
     run and save (the workload at 400k calls)
 14  peak RSS of the traced process, 4 threads making 2M calls each, default
     buffer_size_kb: its growth over the untraced run, vs threads x
     buffer_size_kb x 1.5 + 20 MB
 15  `fentry report --format perfetto` and `--format chrome` of 1M events, vs
     viztracer's save of the same calls
 18  --to-kernel, -t function, every call of the method-heavy workload (120k
     calls) into a kernel instance made for it: the program's own timed section,
     then the whole command's wall time, under `fentry run --to-kernel` vs under
     `fentry run` (root and the kernel's tracefs, else the row says why not)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "stream_program.py")
BUFFER_KB = 1408            # fentry's default buffer_size_kb (the kernel's)
sys.path.insert(0, HERE)
import results  # noqa: E402

ISSUES: list[str] = []
ROWS: list[tuple[str, str, float | None, float | None, str]] = []


def python_env() -> dict:
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(HERE), "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run(argv: list[str], what: str) -> tuple[dict, float]:
    """Run a command; the program's own report (``key value`` lines on stdout)
    and the command's wall time."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=900)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        ISSUES.append(f"{what}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return {}, wall
    report = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("section_ns", "calls", "peak_rss_kb"):
            report[key] = int(value)
    return report, wall


def viztracer_argv(out: str, entries: int | None = None) -> list[str] | None:
    """viztracer's command, with its default settings (or a buffer of
    ``entries``, for more calls than its default one holds)."""
    exe = shutil.which("viztracer") or os.path.join(os.path.dirname(sys.executable), "viztracer")
    if not os.path.exists(exe):
        return None
    size = ["--tracer_entries", str(entries)] if entries else []
    return [exe, "--quiet", *size, "-o", out, "--"]


def fentry(*args: str) -> list[str]:
    return [sys.executable, "-m", "fentry", *args]


def rows_11_12_13(rounds: int, tracer: str, workload: list[str], tmp: str, row13: bool,
                  timed: bool = True) -> None:
    """The timed section under each tool (rows 11, 12), and the whole
    commands' wall time (row 13), rounds interleaved; medians."""
    dat, txt, vjson = (os.path.join(tmp, n) for n in ("t.dat", "t.txt", "v.json"))
    viz = viztracer_argv(vjson)
    variants = {
        "untraced": [sys.executable, PROGRAM, *workload],
        "record": fentry("record", "-t", tracer, "-l", "workloads:*", "-o", dat, PROGRAM, *workload),
    }
    if timed:
        variants["run"] = fentry("run", "-t", tracer, "-l", "workloads:*", "-o", txt, PROGRAM,
                                 *workload)
    if viz is not None:
        variants["viztracer"] = [*viz, PROGRAM, *workload]
    sections: dict[str, list[int]] = {k: [] for k in variants}
    walls: dict[str, list[float]] = {"record+report": [], "viztracer": []}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            report, wall = run(variants[name], f"row 11/12 {tracer} {name}")
            if "section_ns" in report:
                sections[name].append(report["section_ns"])
            if name == "record" and row13:
                _, report_wall = run(fentry("report", "-i", dat, "-o", txt), "row 13 report")
                walls["record+report"].append(wall + report_wall)
            if name == "viztracer":
                walls["viztracer"].append(wall)
    med = {k: statistics.median(v) if v else None for k, v in sections.items()}
    row = "11" if tracer == "function" else "12"
    base = med["untraced"]
    for name in ("record", "run") if timed else ():
        added = None if med.get(name) is None or base is None else med[name] - base
        viz_added = None if med.get("viztracer") is None or base is None else med["viztracer"] - base
        ROWS.append((row, f"-t {tracer}, every call: time `fentry {name}` adds / viztracer adds",
                     added, viz_added, "<= 1.0"))
    if row13:
        a = statistics.median(walls["record+report"]) if walls["record+report"] else None
        b = statistics.median(walls["viztracer"]) if walls["viztracer"] else None
        ROWS.append(("13", "wall time: fentry record + report (text) / viztracer run + save",
                     a, b, "<= 0.5"))


def row14_memory(threads: int, calls: int, tmp: str) -> None:
    plain, _ = run([sys.executable, PROGRAM, "threads", str(threads), str(calls)], "row 14 untraced")
    traced, _ = run(fentry("record", "-t", "function", "-l", "workloads:*",
                           "-o", os.path.join(tmp, "m.dat"), PROGRAM, "threads", str(threads),
                           str(calls)), "row 14 record")
    if "peak_rss_kb" in plain and "peak_rss_kb" in traced:
        growth = traced["peak_rss_kb"] - plain["peak_rss_kb"]
        bound = threads * BUFFER_KB * 1.5 + 20 * 1024
        ROWS.append(("14", f"peak RSS growth, {threads} threads x {calls} calls (KB) / the bound (KB)",
                     float(growth), bound, "<= 1.0"))


def row15_exports(calls: int, tmp: str) -> None:
    """Export 1M function_graph events vs viztracer's save of the same calls."""
    dat = os.path.join(tmp, "e.dat")
    _, _ = run(fentry("record", "-t", "function_graph", "-l", "workloads:*", "-o", dat,
                           PROGRAM, "leaf", str(calls // 2)), "row 15 record")
    viz = viztracer_argv(os.path.join(tmp, "e.json"), entries=2 * calls)
    if viz is None:
        ROWS.append(("15", "exports: viztracer not installed", None, None, "<= 0.5"))
        return
    _, viz_wall = run([*viz, PROGRAM, "leaf", str(calls // 2)], "row 15 viztracer")
    _, bare_wall = run([sys.executable, PROGRAM, "leaf", str(calls // 2)], "row 15 untraced")
    viz_save = max(viz_wall - bare_wall, 1e-9)
    for fmt in ("perfetto", "chrome"):
        out = os.path.join(tmp, f"e.{fmt}")
        probe = subprocess.run(fentry("report", "--help"), capture_output=True, text=True,
                               env=python_env())
        if fmt not in probe.stdout:
            ROWS.append(("15", f"report --format {fmt}: not available", None, None, "<= 0.5"))
            continue
        _, wall = run(fentry("report", "-i", dat, "--format", fmt, "-o", out), f"row 15 {fmt}")
        ROWS.append(("15", f"report --format {fmt} of {calls} events / viztracer's run minus "
                           "the untraced run", wall, viz_save, "<= 0.5"))


def row18_to_kernel(rounds: int, workload: list[str], tmp: str) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))     # (as the commands' PYTHONPATH)
    from fentry.errors import TraceError
    from fentry.kernel.mount import find_tracefs
    try:
        root = find_tracefs() if os.geteuid() == 0 else None
    except TraceError as e:
        root, why = None, e.message
    else:
        why = "not root"
    if root is None:
        ROWS.append(("18", f"--to-kernel: not measured ({why})", None, None, "<= 1.1"))
        return
    name = f"fentrybench_tokernel_{os.getpid()}"
    os.mkdir(os.path.join(root, "instances", name))
    txt = os.path.join(tmp, "t.txt")
    base = ["run", "-t", "function", "-l", "workloads:*", "-o", txt]
    variants = {"run": fentry(*base, PROGRAM, *workload),
                "to-kernel": fentry(*base, "--to-kernel-instance", name, PROGRAM, *workload)}
    sections: dict[str, list[int]] = {k: [] for k in variants}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for r in range(rounds):
            for k in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                report, wall = run(variants[k], f"row 18 {k}")
                if "section_ns" in report:
                    sections[k].append(report["section_ns"])
                    walls[k].append(wall)
                with open(os.path.join(root, "instances", name, "trace"), "w"):
                    pass        # (emptied: the instance's buffer never fills, never wraps)
    finally:
        os.rmdir(os.path.join(root, "instances", name))
    med = {k: statistics.median(v) if v else None for k, v in sections.items()}
    wall_med = {k: statistics.median(v) if v else None for k, v in walls.items()}
    ROWS.append(("18", "--to-kernel, -t function, every call: program's section / without",
                 med["to-kernel"], med["run"], "<= 1.1"))
    ROWS.append(("18", "--to-kernel: the command's wall time / without", wall_med["to-kernel"],
                 wall_med["run"], "<= 3.0"))


def ratio_met(a: float | None, b: float | None, goal: str) -> tuple[float | None, bool | None]:
    """A row's ratio, and whether it met ``goal`` (None, None: not measured)."""
    if a is None or b is None:
        return None, None
    ratio = a / b if b else float("inf")
    return ratio, ratio <= float(goal.split()[-1])


def print_table() -> None:
    print(f"{'row':>4}  {'measure':<78} {'fentry':>12} {'base':>12} {'ratio':>7}  goal")
    for row, what, a, b, goal in ROWS:
        ratio, met = ratio_met(a, b, goal)
        if ratio is None:
            print(f"{row:>4}  {what:<78} {'-':>12} {'-':>12} {'-':>7}  {goal}")
            continue
        print(f"{row:>4}  {what:<78} {a:>12.4g} {b:>12.4g} {ratio:>7.2f}  {goal} "
              f"{'met' if met else 'MISSED'}")


def write_json(path: str) -> None:
    rows = []
    for row, what, a, b, goal in ROWS:
        ratio, met = ratio_met(a, b, goal)
        rows.append(results.row(row, what, {"fentry": a, "base": b}, ratio, goal, met))
    results.write(path, "stream", rows, ISSUES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller runs")
    parser.add_argument("--rows", metavar="LIST", help="only these rows (e.g. 11,14)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the table to FILE as JSON (bench/results.py)")
    args = parser.parse_args(argv)
    wanted = set(args.rows.split(",")) if args.rows else {"11", "12", "13", "14", "15", "18"}
    rounds = 3 if args.quick else 5
    # The method-heavy workload: 120k calls (400k for the whole-command row 13,
    # where three processes' start-up would otherwise be most of what is timed).
    ticks, whole_ticks = ("30", "100") if args.quick else ("300", "1000")
    print(f"fentry bench (streams): Python {platform.python_version()} ({sys.executable}); "
          f"{os.cpu_count()} CPUs; medians of {rounds} interleaved rounds")
    with tempfile.TemporaryDirectory(prefix="fentry-bench-") as tmp:
        if "11" in wanted:
            rows_11_12_13(rounds, "function", ["methods", ticks], tmp, False)
        if "12" in wanted:
            rows_11_12_13(rounds, "function_graph", ["methods", ticks], tmp, False)
        if "13" in wanted:
            rows_11_12_13(rounds, "function", ["methods", whole_ticks], tmp, True, timed=False)
        if "14" in wanted:
            row14_memory(4, 200_000 if args.quick else 2_000_000, tmp)
        if "15" in wanted:
            row15_exports(100_000 if args.quick else 1_000_000, tmp)
        if "18" in wanted:
            row18_to_kernel(rounds, ["methods", ticks], tmp)
    print_table()
    if ISSUES:
        print(f"{len(ISSUES)} problem(s) seen:")
        for issue in ISSUES:
            print("  - " + issue)
    if args.json:
        write_json(args.json)
    return 1 if ISSUES else 0


if __name__ == "__main__":
    sys.exit(main())
