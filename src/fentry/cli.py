"""The ``fentry`` command.

``fentry run`` starts the program as ``python SCRIPT`` would, with the agent
inside (see ``_boot/sitecustomize.py``), and reads the trace it streams: the
reader lives outside the traced process, so a program that dies still leaves
the trace read out up to that point.

``fentry attach PID`` puts the same agent into a running program
(``control/inject.py``), configures it and streams its trace until Ctrl-C or
``--duration``; then the agent detaches, leaving nothing behind.

``fentry -p PID ls|read|write|pipe|detach`` work on the tracefs of a process
with an agent (started by either), over its control socket.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from .control.client import Client, NoAgent, Refused
from .control.collector import Collector
from .control.inject import AttachError, inject
from .control.wire import BOOT_DIR, ENV_CONFIG, remove_stale
from .errors import TraceError
from .fds import FD_MIN
from .report.record import Live, Recording, widen_pipe

if TYPE_CHECKING:
    from .kernel.session import KernelSide
    from .report.calls import CallSink
    from .report.text import TextReport

# The in-process modules (tracers, probe events, the ftrace core) are imported
# only to check what a command is given: `fentry attach` starts faster so.
TRACER_NAMES = ("function_graph", "function", "nop")      # tracers.trace.TRACERS
DEFAULT_SIZE_KB = 1408                                     # tracers.ring_buffer's
EXIT_WAIT = 10.0    # seconds an agent may take to send what is left once asked to stop
DEFAULT_RECORDING = "fentry.dat"
REPORT_FORMATS = ("text", "perfetto", "chrome", "speedscope", "folded")


# What add_subparsers returns.
type _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

# The parsers: declarations of one shape (add_parser, add_argument with its
# help), each of different options; options two commands share are in
# _tracing_options and _attach_only_options.

def _tracing_options(p: argparse.ArgumentParser, default_tracer: str | None, buffer_kb: int,
                     when: str) -> None:
    """What run and attach both set up: tracer, filters, probe events, output.
    ``when``: when they take effect, for the help."""
    p.add_argument("-t", "--tracer", default=default_tracer, choices=TRACER_NAMES,
                   help=f"the tracer (current_tracer); default: {default_tracer or 'as run or attach'}")
    p.add_argument("-l", "--filter", action="append", default=[], metavar="GLOB",
                   help="trace only matching functions (set_ftrace_filter); repeatable")
    p.add_argument("-n", "--notrace", action="append", default=[], metavar="GLOB",
                   help="do not trace matching functions (set_ftrace_notrace); repeatable")
    p.add_argument("-g", "--graph-function", action="append", default=[], metavar="GLOB",
                   help="function_graph: only these functions and what they call "
                        "(set_graph_function); repeatable; without -t, the tracer is function_graph")
    p.add_argument("--graph-notrace", action="append", default=[], metavar="GLOB",
                   help="function_graph: not these functions nor what they call (set_graph_notrace); "
                        "repeatable")
    p.add_argument("--max-graph-depth", default="0", metavar="N",
                   help="function_graph: only calls less than N deep (max_graph_depth; 0: any)")
    p.add_argument("--tracing-thresh", default="0", metavar="USECS",
                   help="function_graph: only calls that last USECS or more, at their end, "
                        "as funcslower (tracing_thresh; 0: all)")
    p.add_argument("-e", "--event", action=_ProbeAction, dest="probes", default=[], metavar="PROBEDEF",
                   help=f"add an event (a dynamic_events line: p, r, f, t, e or s), or name a "
                        f"tracepoint (python:raise, gc:gc_done, audit:open), enabled {when}; repeatable")
    p.add_argument("-f", "--filter-event", action=_ProbeAction, dest="probes", metavar="FILTER",
                   help="the filter of the probe event given by the preceding -e")
    p.add_argument("-R", "--trigger", action=_ProbeAction, dest="probes", metavar="TRIGGER",
                   help="a trigger (events/GRP/EVENT/trigger) on the probe event given by the "
                        "preceding -e, e.g. 'traceoff:1 if x > 5' (trace-cmd's); repeatable")
    p.add_argument("-O", "--option", action="append", default=[], metavar="OPTION",
                   help="a trace_options word, e.g. funcgraph-tail; repeatable")
    p.add_argument("-o", "--output", metavar="FILE", help="write the trace to FILE")
    p.add_argument("--buffer-size-kb", type=int, default=buffer_kb, metavar="N",
                   help=f"per-thread ring buffer size (default {buffer_kb})")
    p.add_argument("-C", "--clock", metavar="CLOCK",
                   help="the trace clock (trace_clock): local (default), global, counter, uptime, "
                        "mono, mono_raw, boot or tai")
    p.add_argument("--to-kernel", action="store_true",
                   help="write each event into the kernel's trace as well, one trace_marker line "
                        "(written by fentry, not by the program; the trace option to-kernel, which "
                        "-O to-kernel sets too); README: fentry's events in the kernel's trace")
    p.add_argument("--to-kernel-instance", metavar="NAME",
                   help="with --to-kernel: write into the kernel's instances/NAME (which must "
                        "exist) instead of its top-level buffer")
    p.add_argument("-K", "--kernel-event", action="append", default=[], dest="kernel_events",
                   metavar="SUBSYS[:EVENT][,...]",
                   help="the kernel's events of the traced threads (sched:sched_switch, "
                        "raw_syscalls, ...) in the trace, from an instance of the kernel's "
                        "tracefs (root); repeatable")
    p.add_argument("--kernel-filter", action="append", default=[], dest="kernel_filters",
                   metavar="SUBSYS:EVENT:FILTER",
                   help="the kernel's filter on a -K event (its events/SUBSYS/EVENT/filter); repeatable")


def _hist_option(p: argparse.ArgumentParser) -> None:
    """--hist, for run, record and attach (whose end prints or keeps the hists)."""
    p.add_argument("--hist", action="append", default=[], metavar="[GRP:]EVENT:KEYS...",
                   help="a hist trigger on a probe event (EVENT:keys=...[:vals=...][:sort=...]"
                        "[:size=N], as written after hist: to its trigger file), printed at the "
                        "end; an -e event it names feeds the hist only; repeatable")


def _run_parser(sub: _Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help="run a Python program under tracing",
        usage="fentry run [-t TRACER] [-l GLOB]... [-n GLOB]... [-e PROBEDEF [-f FILTER] [-R TRIGGER]...]...\n"
              "                  [-g GLOB]... [--graph-notrace GLOB]... [--max-graph-depth N] "
              "[--tracing-thresh USECS]\n"
              "                  [-O OPTION]... [-C CLOCK] [-o FILE] [--buffer-size-kb N] [--follow] [--profile]\n"
              "                  [--stack] [--hist [GRP:]EVENT:KEYS...]... [--to-kernel] [--to-kernel-instance NAME]\n"
              "                  [-K SUBSYS[:EVENT][,...]]... [--kernel-filter SUBSYS:EVENT:FILTER]...\n"
              "                  [--] [PYTHON] (SCRIPT [ARGS...] | -m MODULE [ARGS...] | -c CODE [ARGS...])",
        description="Run a Python program with fentry's agent inside and stream its trace "
                    "(like trace_pipe) to stderr, or to FILE with -o.")
    _tracing_options(p, "function", DEFAULT_SIZE_KB, "before the program starts")
    _hist_option(p)
    p.set_defaults(tracer=None)     # function, or nop with --profile (main)
    p.add_argument("--profile", action="store_true",
                   help="profile the traced functions (function_profile_enabled) and print the "
                        "profile at exit, all threads together, to stderr or FILE; without -t, "
                        "no trace (current_tracer nop)")
    p.add_argument("--stack", action="store_true",
                   help="run the stack tracer (stack_tracer_enabled, on every function) and print "
                        "the deepest Python stack at exit (stack_trace), like trace-cmd stack; "
                        "without -t, no trace")
    p.add_argument("--follow", action="store_true",
                   help="trace the Python processes the program starts too (subprocess, "
                        "multiprocessing, os.fork), each under its own agent, into one trace")
    p.add_argument("-m", dest="module", metavar="MODULE", help="run library module as a script")
    p.add_argument("-c", dest="code", metavar="CODE", help="program passed in as string")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="[PYTHON] SCRIPT [ARGS...]")
    return p


def _record_parser(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "record", help="record a program's trace, raw, into a file (fentry report reads it)",
        usage="fentry record [-t TRACER] [-l GLOB]... [-n GLOB]... [-e PROBEDEF [-f FILTER] [-R TRIGGER]...]...\n"
              "                     [-g GLOB]... [--graph-notrace GLOB]... [--max-graph-depth N] "
              "[--tracing-thresh USECS]\n"
              "                     [-O OPTION]... [-C CLOCK] [-o FILE] [--buffer-size-kb N] [--follow]\n"
              "                     [--hist [GRP:]EVENT:KEYS...]... [--to-kernel] [--to-kernel-instance NAME]\n"
              "                     [-K SUBSYS[:EVENT][,...]]... [--kernel-filter SUBSYS:EVENT:FILTER]...\n"
              "                     [--] [PYTHON] (SCRIPT [ARGS...] | -m MODULE [ARGS...] | -c CODE [ARGS...])\n"
              "       fentry record -p PID [the options of fentry attach] [-o FILE] [--duration S]",
        description="As fentry run (or, with -p, fentry attach), but the trace goes raw into "
                    f"FILE (default {DEFAULT_RECORDING}), as trace-cmd record does: nothing is "
                    "formatted while the program runs.  fentry report formats it.")
    _tracing_options(p, None, DEFAULT_SIZE_KB, "before the program starts (or once attached)")
    _hist_option(p)
    p.add_argument("-p", "--pid", dest="record_pid", type=int, metavar="PID",
                   help="record a running program (as fentry attach) instead of starting one")
    p.add_argument("--follow", action="store_true",
                   help="record the Python processes the program starts too")
    _attach_only_options(p)
    p.add_argument("-m", dest="module", metavar="MODULE", help="run library module as a script")
    p.add_argument("-c", dest="code", metavar="CODE", help="program passed in as string")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="[PYTHON] SCRIPT [ARGS...]")


def _report_parser(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "report", help="format a recording (fentry record's file)",
        description="Read a recording and print the trace as fentry run would have, or export "
                    "it for a viewer.")
    p.add_argument("-i", "--input", default=DEFAULT_RECORDING, metavar="FILE",
                   help=f"the recording (default {DEFAULT_RECORDING})")
    p.add_argument("--format", default="text", choices=REPORT_FORMATS,
                   help="text (default): the trace as fentry run prints it; "
                        "perfetto: Perfetto's protobuf trace (Perfetto's UI); "
                        "chrome: Chrome's trace-event JSON (chrome://tracing, Perfetto); "
                        "speedscope: speedscope's JSON (fentry view shows it); "
                        "folded: 'a;b;c WEIGHT' lines for flame graph tools.  "
                        "function_graph calls become slices (a generator or coroutine: each "
                        "resume to its yield); the function tracer records entries only, no "
                        "durations: instants (perfetto, chrome), zero-length frames "
                        "(speedscope), call counts (folded); probe events are instants with "
                        "their fields (perfetto, chrome), and have no place in speedscope "
                        "and folded")
    p.add_argument("--weight", default="time", choices=("time", "calls"),
                   help="folded: a stack's weight is its self time in microseconds (time, "
                        "the default) or its number of calls (calls)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="write to OUT (default: stdout; perfetto, a binary format, only to a "
                        "file or a pipe)")


def _view_parser(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "view", help="show a trace in speedscope, served on 127.0.0.1",
        description="Serve a trace in speedscope (the real viewer, installed with fentry: "
                    "scripts/install-viewer) on 127.0.0.1, print its URL, and serve until "
                    "Ctrl-C.  A recording is converted as fentry report --format speedscope "
                    "does; any other file speedscope reads (a speedscope, chrome or folded "
                    "export) is served as it is.  Works offline.")
    p.add_argument("file", nargs="?", default=DEFAULT_RECORDING, metavar="FILE",
                   help=f"the recording or profile (default {DEFAULT_RECORDING})")
    p.add_argument("--port", type=int, default=0, metavar="N",
                   help="the port on 127.0.0.1 (default: a free one)")
    p.add_argument("--viewer", metavar="DIR",
                   help="speedscope's release directory (default: $FENTRY_VIEWER, or the one "
                        "scripts/install-viewer installed)")


def _attach_only_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, metavar="SECONDS", help="detach after SECONDS")
    p.add_argument("--injector", default="auto", choices=["auto", "ptrace", "gdb", "remote_exec"],
                   help="how to get the agent in (default: remote_exec on 3.14+, else ptrace "
                        "on x86-64, else gdb)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long the program's main thread may take to reach a safe point "
                        "(default 5)")


def _attach_parser(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "attach", help="trace a running Python program (3.12+) until Ctrl-C",
        description="Put fentry's agent into running Python process PID, set tracing up as "
                    "the options say, and stream its trace to stdout (or FILE with -o) until "
                    "Ctrl-C, --duration, or the program's end; then detach, leaving nothing "
                    "behind.  Attaching to a process that has an agent reuses it.")
    p.add_argument("pid", type=int, metavar="PID")
    _tracing_options(p, "nop", DEFAULT_SIZE_KB, "as soon as fentry is attached")
    _hist_option(p)
    p.set_defaults(tracer=None)     # nop, or function_graph with a graph option (main)
    _attach_only_options(p)


def _control_parsers(sub: _Subparsers) -> None:
    """ls, read, write, pipe, detach: tracefs of process -p PID."""
    p = sub.add_parser("ls", help="list a tracefs directory of process -p PID")
    p.add_argument("path", nargs="?", default="", metavar="DIR")
    p = sub.add_parser("read", help="read a tracefs file of process -p PID")
    p.add_argument("path", metavar="FILE")
    p = sub.add_parser("write", help="write a tracefs file of process -p PID (-a: append, as >>)")
    p.add_argument("-a", "--append", action="store_true", help="append (>>) instead of replacing (>)")
    p.add_argument("path", metavar="FILE")
    p.add_argument("text", metavar="TEXT")
    p = sub.add_parser("pipe", help="stream trace_pipe of process -p PID (or of one of its "
                                    "instances) until Ctrl-C")
    p.add_argument("path", nargs="?", default="", metavar="instances/NAME")
    p = sub.add_parser("mkdir", help="make a tracing instance of process -p PID (instances/NAME)")
    p.add_argument("path", metavar="instances/NAME")
    p = sub.add_parser("rmdir", help="remove a tracing instance of process -p PID")
    p.add_argument("path", metavar="instances/NAME")
    sub.add_parser("detach", help="remove fentry from process -p PID: every probe, tracer, "
                                  "instance, its thread and socket")


class _ProbeAction(argparse.Action):
    """-e adds [definition, filter]; -f fills in the filter of the -e before it, -R adds a
    trigger to it (trace-cmd's way)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 value: object, option_string: str | None = None) -> None:
        probes = list(getattr(namespace, self.dest) or [])
        if option_string in ("-e", "--event"):
            probes.append([value, None])
        elif not probes:
            parser.error(f"{option_string} {value!r}: no -e before it to "
                         + ("filter" if option_string in ("-f", "--filter-event") else "trigger"))
        elif option_string in ("-R", "--trigger"):
            probes[-1].append(value)
        else:
            probes[-1][1] = value
        setattr(namespace, self.dest, probes)


def version_line() -> str:
    """What ``fentry --version`` prints: the version, the Python, and which
    hot path is in use and why (a C extension that failed to build shows here)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from . import hotpath
    try:
        v = version("fentry")
    except PackageNotFoundError:
        v = "(not installed)"
    return (f"fentry {v} ({platform.python_implementation()} {platform.python_version()}; "
            f"hot path: {hotpath.IMPLEMENTATION}, {hotpath.WHY})")


class _VersionAction(argparse.Action):
    """``--version``, worked out only when asked: it imports the hot path,
    which the other commands' start-up does without."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, help="print the version, the Python and the hot path in use")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fentry", description="ftrace for Python programs",
        usage="fentry run ... | fentry attach PID ... | fentry record ... | fentry report ... |\n"
              "       fentry view [FILE] |\n"
              "       fentry -p PID {ls,read,write,pipe,mkdir,rmdir,detach} ...")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("-p", "--pid", type=int, metavar="PID",
                        help="the process whose tracefs ls/read/write/pipe/detach work on")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _attach_parser(sub)
    _record_parser(sub)
    _report_parser(sub)
    _view_parser(sub)
    _control_parsers(sub)
    return parser


def _split_run_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """fentry's options, and the program's command line (from SCRIPT, -m or -c on)."""
    takes_value = {"-t", "--tracer", "-l", "--filter", "-n", "--notrace", "-o", "--output",
                   "-g", "--graph-function", "--graph-notrace", "--max-graph-depth", "--tracing-thresh",
                   "--buffer-size-kb", "-O", "--option", "-e", "--event", "-f", "--filter-event",
                   "-R", "--trigger",
                   "-C", "--clock", "--hist", "--to-kernel-instance",
                   "-K", "--kernel-event", "--kernel-filter",
                   "-p", "--pid", "--duration", "--injector", "--timeout"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[:i], argv[i + 1:]
        if a in ("-m", "-c"):
            return argv[:i], argv[i:]
        if a in takes_value:
            i += 2
            continue
        if a.startswith("-") and a != "-":
            i += 1
            continue
        return argv[:i], argv[i:]
    return argv, []


def _check_filters(globs: list[str], what: str) -> None:
    from .ftrace import parse_filter, parse_filter_words
    for g in globs:
        try:
            parse_filter_words(g) if what == "-l" else parse_filter(g)
        except TraceError as e:
            e.subsystem = f"fentry run {what}"
            raise


def _check_hists(hists: list[str], probes: list[list[Any]]) -> None:
    """Each --hist against the -e it names (its fields), before the program starts."""
    from .events.hist import COMMON_HIST_FIELDS, parse_hist, split_hist_option
    from .events.synth_format import SynthFormat
    from .events.trace_dynevent import parse_definition
    from .events.trace_kprobe import _filter_kind
    from .events.tracepoints import check_tracepoint, tracepoint_name
    events: list[tuple[str, str, dict[str, str] | None]] = []     # (group, event, field kinds) of each -e
    for p in probes:
        if tracepoint_name(p[0]) is not None:
            point = check_tracepoint(p[0], None)
            events.append((point.group, point.name, point.field_kinds()))
        else:
            d = parse_definition(p[0])
            if isinstance(d, SynthFormat):
                events.append((d.group, d.event, d.field_kinds()))
                continue
            # (an fprobe's $arg* names its fields once its function is found: checked then)
            known = not any(a.kind == "args" for a in d.args) or d.dyn_type != "fprobe"
            # (its location fields, as its format has them: hist.hist_fields)
            ips = ("__probe_func", "__probe_ret_ip") if getattr(d, "is_return", False) else ("__probe_ip",)
            events.append((d.group, d.event,
                           {**dict.fromkeys(ips, "num"),
                            **{a.name: _filter_kind(a) for a in d.args if a.kind != "args"}} if known else None))
    for text in hists:
        group, name, param = split_hist_option(text)
        found = [e for e in events if e[1] == name and group in (None, e[0])]
        if len(found) != 1:
            raise TraceError("HIST_NO_EVENT", text, 0, subsystem="fentry --hist",
                             detail="give it as GRP:EVENT" if found else "define it with -e")
        g, n, kinds = found[0]
        if kinds is None:
            continue
        parse_hist(param, {**COMMON_HIST_FIELDS, **kinds}, f"hist:{g}:{n}")


def _check_probes(probes: list[list[Any]]) -> None:
    """What can be checked before the program starts: the grammar of each -e,
    that no two name the same event, and each -f against the fields of its event.
    ``probes``: [definition, filter or None, triggers...] of each -e."""
    if not probes:
        return
    from .events.filter import compile_filter
    from .events.probe_parser import KPROBE_EVENT_SYSTEM
    from .events.synth_format import SynthFormat
    from .events.trace_dynevent import parse_definition
    from .events.trace_kprobe import compile_event_filter, event_name_pos
    from .events.tracepoints import check_tracepoint, tracepoint_name
    names: set[tuple[str, str]] = set()
    for definition, filter_text, *_ in probes:
        if tracepoint_name(definition) is not None:       # python:raise, audit:open, ...
            check_tracepoint(definition, filter_text)
            continue
        if definition.lstrip()[:1] == "-":
            raise TraceError("BAD_PROBE_TYPE", definition, 0, subsystem="trace_kprobe")
        defn = parse_definition(definition)
        if (defn.group, defn.event) in names:
            head = definition.split()[0].partition(":")[0]
            group = "" if defn.group == KPROBE_EVENT_SYSTEM else defn.group + "/"
            rename = f"{head}:{group}NAME {defn.location}" + (" ..." if defn.args else "")
            raise TraceError("EVENT_EXIST", definition, event_name_pos(definition),
                             subsystem="trace_kprobe",
                             detail=f"an earlier -e defines {defn.group}/{defn.event}; "
                                    f"give this one a name of its own (-e '{rename}')")
        names.add((defn.group, defn.event))
        if isinstance(defn, SynthFormat):       # s:NAME FIELDS: a filter on its fields
            if filter_text is not None:
                try:
                    compile_filter(filter_text, defn.field_kinds())
                except TraceError as e:
                    e.subsystem = "event filter parse error"
                    raise
            continue
        # (an fprobe's $arg* names its fields once its function is found: checked then)
        if filter_text is not None and not (defn.dyn_type == "fprobe"
                                            and any(a.kind == "args" for a in defn.args)):
            try:
                compile_event_filter(filter_text, defn.args)
            except TraceError as e:
                e.subsystem = "event filter parse error"
                raise


def _check_tracing_options(opts: argparse.Namespace, command: str) -> bool:
    """Everything checkable before the program is touched; False (and the
    error on stderr) if something is wrong."""
    try:
        _check_filters(opts.filter, "-l")
        _check_filters(opts.notrace, "-n")
        _check_filters(opts.graph_function, "-g")
        _check_filters(opts.graph_notrace, "--graph-notrace")
        from .control.tracefs import MAX_GRAPH_DEPTH, MAX_THRESH_US, parse_unsigned
        for value, name, limit in ((opts.max_graph_depth, "--max-graph-depth", MAX_GRAPH_DEPTH),
                                   (opts.tracing_thresh, "--tracing-thresh", MAX_THRESH_US)):
            try:
                parse_unsigned(value, limit)
            except TraceError as e:
                e.subsystem = f"fentry {command} {name}"
                raise
        if opts.option:
            from .tracers.trace import OPTIONS
        for o in opts.option:
            if o.removeprefix("no") not in OPTIONS:
                raise TraceError("BAD_OPTION", o, 0, subsystem=f"fentry {command} -O")
        if opts.clock is not None:
            from .tracers.ring_buffer import TRACE_CLOCKS
            if opts.clock not in TRACE_CLOCKS:
                raise TraceError("BAD_CLOCK", opts.clock, 0, subsystem=f"fentry {command} -C",
                                 detail=f"available: {' '.join(TRACE_CLOCKS)}")
        if opts.buffer_size_kb <= 0:
            raise TraceError("BAD_SIZE", str(opts.buffer_size_kb), 0, subsystem=f"fentry {command}")
        from .tracers.ring_buffer import available_kb
        available = available_kb()
        if available is not None and opts.buffer_size_kb > available:
            raise TraceError("NO_MEMORY", f"--buffer-size-kb {opts.buffer_size_kb}", 17,
                             subsystem=f"fentry {command}",
                             detail=f"{opts.buffer_size_kb} KB per thread is more than the "
                                    f"{available} KB of memory available")
        _check_probes(opts.probes)
        _check_hists(getattr(opts, "hist", []), opts.probes)
    except TraceError as e:
        print(e.render(), file=sys.stderr)
        return False
    return True


def _settings(opts: argparse.Namespace) -> dict[str, Any]:
    """The tracing options, as ``agent.apply_settings`` takes them.  With
    ``-K`` the clock is ``mono`` unless ``-C`` says otherwise: the kernel
    instance's, read as it is (``local`` turns TSC readings into it,
    within microseconds, and a syscall could seem to come before the call
    that made it)."""
    clock = opts.clock
    if clock is None and getattr(opts, "kernel_events", None):
        clock = "mono"
    return {"buffer_size_kb": opts.buffer_size_kb, "options": opts.option, "filter": opts.filter,
            "notrace": opts.notrace, "tracer": opts.tracer, "probes": opts.probes,
            "graph_function": opts.graph_function, "graph_notrace": opts.graph_notrace,
            "max_graph_depth": opts.max_graph_depth, "tracing_thresh": opts.tracing_thresh,
            "profile": getattr(opts, "profile", False), "clock": clock,
            "stack": getattr(opts, "stack", False), "hists": getattr(opts, "hist", [])}


def _open_output(opts: argparse.Namespace, command: str, default: BinaryIO
                 ) -> tuple[BinaryIO | None, bool]:
    """(file, close it) for -o FILE, else ``default``.  None if it cannot be written."""
    if not opts.output:
        return default, False
    try:
        return open(opts.output, "wb"), True
    except OSError as e:
        print(f"fentry {command}: cannot write {opts.output}: {e.strerror}", file=sys.stderr)
        return None, False


def _interpreter(program: list[str], command: str) -> tuple[str, list[str]] | None:
    """The Python to run the program in, and its arguments.  The program is
    run by fentry's own Python, unless it is given as an interpreter and its
    arguments (``fentry run -- python3 -m test``, ``-- .venv/bin/python
    app.py``, as ``py-spy record -- python app.py``): then in that one, if it
    is a Python 3.12 or later.  None, said why, for a program that is not."""
    first = program[0]
    if first in ("-m", "-c"):
        return sys.executable, program
    path = first if os.sep in first or os.path.exists(first) else shutil.which(first)
    try:
        with open(path or first, "rb") as f:
            magic = f.read(4)
    except OSError:
        return sys.executable, program              # (Python says it cannot open it)
    # A script, unless it is a program, or an executable script named as an
    # interpreter is (a wrapper: pyenv's shims, which exec the Python they choose).
    wrapper = magic.startswith(b"#!") and _INTERPRETER_NAME.fullmatch(os.path.basename(first)) \
        and os.access(path or first, os.X_OK)
    if magic != b"\x7fELF" and not wrapper:
        return sys.executable, program              # (Python says if it is not one)
    assert path is not None
    try:
        got = subprocess.run([path, "-c", "import sys; print(sys.implementation.name, "
                              "*sys.version_info[:2], sys.executable)"],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        name, major, minor, executable = got.stdout.rstrip("\n").split(" ", 3)
        version = (int(major), int(minor))
    except (OSError, subprocess.SubprocessError, ValueError):
        print(f"fentry {command}: {first} is a program, not a Python script: fentry traces "
              "Python (SCRIPT, -m MODULE, -c CODE, or a Python interpreter and its arguments)",
              file=sys.stderr)
        return None
    if name != "cpython" or version < (3, 12):
        print(f"fentry {command}: {first} is {name} {major}.{minor}: fentry needs CPython 3.12 "
              "or later (sys.monitoring)", file=sys.stderr)
        return None
    # The interpreter itself, not a wrapper that would choose again.
    return executable or path, program[1:]


_INTERPRETER_NAME = re.compile(r"python(\d+(\.\d+)?)?")


def _kernel_marker(opts: argparse.Namespace, command: str) -> tuple[bool, int | None]:
    """--to-kernel (or -O to-kernel): (True, the kernel's trace_marker, opened
    before the program is touched); (True, None): not asked; (False, None):
    it cannot be written (said on stderr)."""
    if opts.to_kernel or opts.to_kernel_instance:
        opts.option.append("to-kernel")     # the agent's option: its stream says when it is on
    if "to-kernel" not in opts.option:
        return True, None
    from .kernel.to_kernel import open_marker
    try:
        return True, open_marker(opts.to_kernel_instance)[0]
    except TraceError as e:
        e.subsystem = f"fentry {command} --to-kernel"
        print(e.render(), file=sys.stderr)
        return False, None


def _follow_to_kernel(live: Live | Recording, marker: int | None) -> Any:
    """The ToKernel that writes ``live``'s events into ``marker``; None
    without --to-kernel, or (said on stderr) where it cannot follow."""
    if marker is None:
        return None
    from .kernel.to_kernel import ToKernel
    try:
        return ToKernel(live.writer, marker)
    except TraceError as e:
        os.close(marker)
        print(e.render(), file=sys.stderr)
        return None


def _finish_to_kernel(to_kernel: Any, command: str) -> None:
    if to_kernel is not None and (problem := to_kernel.finish()):
        _say(f"fentry {command}: {problem}")


def cmd_run(opts: argparse.Namespace, program: list[str], record: bool = False) -> int:
    kernel = _kernel_side(opts, "record" if record else "run")
    if isinstance(kernel, int):
        return kernel
    try:
        return _cmd_run(opts, program, record, kernel)
    finally:
        if kernel is not None:
            kernel.close()


def _kernel_side(opts: argparse.Namespace, command: str) -> KernelSide | int | None:
    """-K's instance, set up before the program starts (None without -K);
    2, said why, if it cannot be."""
    if not opts.kernel_events and not opts.kernel_filters:
        return None         # (nothing of the kernel's tracefs is touched)
    from .kernel.session import KernelSide
    try:
        return KernelSide.prepare(opts.kernel_events, opts.kernel_filters)
    except TraceError as e:
        print(e.render(), file=sys.stderr)
        return 2


def _cmd_run(opts: argparse.Namespace, program: list[str], record: bool,
             kernel: KernelSide | None) -> int:
    command = "record" if record else "run"
    if not program or (program[0] in ("-m", "-c") and len(program) < 2):
        print(f"fentry {command}: no program given (SCRIPT, -m MODULE or -c CODE)", file=sys.stderr)
        return 2
    if not _check_tracing_options(opts, command):
        return 2
    found = _interpreter(program, command)
    if found is None:
        return 2
    ok, marker = _kernel_marker(opts, command)
    if not ok:
        return 2
    python, program = found
    if not program:
        print(f"fentry {command}: no program given to {python} (SCRIPT, -m MODULE or -c CODE)",
              file=sys.stderr)
        return 2
    # stderr: stdout is the program's
    live = _output(opts, command, record, sys.stderr.buffer, [python, *program])
    if live is None:
        return 2
    to_kernel = _follow_to_kernel(live, marker)
    if marker is not None and to_kernel is None:
        return 2

    read_fd, pipe_fd = os.pipe()
    # The program gets the write end at a high descriptor number, so its own
    # open() calls return the numbers they would without fentry.
    write_fd = fcntl.fcntl(pipe_fd, fcntl.F_DUPFD_CLOEXEC, FD_MIN)
    os.close(pipe_fd)
    os.set_inheritable(write_fd, True)
    widen_pipe(read_fd)
    collector = Collector(live.recorder) if opts.follow else None
    env = dict(os.environ)
    config = {"fd": write_fd, "pythonpath": os.environ.get("PYTHONPATH"), **_settings(opts)}
    if collector is not None:
        config.update(follow=True, collector=collector.path)
    env[ENV_CONFIG] = json.dumps(config)
    env["PYTHONPATH"] = BOOT_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Ctrl-C reaches the program (same process group); we keep reading until
    # it is done.  A handler that does nothing, not SIG_IGN: an ignored signal
    # stays ignored across exec, and the program would not see its Ctrl-C.
    # (If SIGINT is ignored already, as in a background job, it stays so: the
    # program inherits that, as it would from plain python.)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, lambda signum, frame: None)
    # SIGTERM, SIGHUP, SIGQUIT are the program's: handed to it, or, one that
    # comes before it is started, as soon as it is (never in the middle of
    # fentry's setup, which a handler cutting in could leave half done).
    started: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []

    def hand_over(signum: int, frame: object) -> None:
        if started:
            started[0].send_signal(signum)
        else:
            pending.append(signum)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, hand_over)
    if kernel is not None:
        # fentry's own thread until the program is forked: event-fork adds it
        kernel.begin(live.writer, [threading.get_native_id()])
    try:
        # close_fds=False: every descriptor the program inherits from whoever
        # started fentry (``3<file``) reaches it, as it would from plain
        # python.  fentry's own are close-on-exec, but for write_fd.
        child = subprocess.Popen([python, *program], env=env, close_fds=False)
    except OSError as e:
        print(f"fentry run: cannot start {python}: {e.strerror}", file=sys.stderr)
        return 2
    finally:
        os.close(write_fd)
    if kernel is not None:
        kernel.follow([child.pid])       # the program alone (its threads and children follow)
    started.append(child)
    for signum in pending:
        child.send_signal(signum)

    program_done = threading.Event()
    live.recorder.start(read_fd, on_end=program_done.set)
    status = child.wait()
    remove_stale(child.pid)         # its agent's socket, if it was killed
    # The program is over: from now on Ctrl-C, SIGTERM or SIGHUP are for
    # fentry, which stops where it is (a deep trace can take long to format).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _stop_formatting)
    try:
        # Everything the program recorded is read, however long it takes; with
        # --follow, children that outlive it are not waited for long.
        program_done.wait()
        live.recorder.wait_idle(timeout=2.0)
        if kernel is not None:
            kernel.close()          # (its last events read: before a signal may end fentry)
        if collector is not None:
            collector.close()
        live.finish()
        _finish_to_kernel(to_kernel, command)
        if isinstance(live, Live):
            _write_profiles(live)
    except _Interrupted as stop:
        if kernel is not None:
            kernel.close()
        _say(f"fentry {command}: stopped by {signal.Signals(stop.signum).name} after the program "
             f"ended (status {status}); the trace is incomplete")
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)
        return 128 + stop.signum
    _report_end(live, opts, command)
    if status < 0:      # die of the same signal (SIGKILL's action cannot be set, nor needs to)
        if -status != signal.SIGKILL:
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_formatting(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


def _output(opts: argparse.Namespace, command: str, record: bool, default: BinaryIO, argv: list[str]
            ) -> Live | Recording | None:
    """Where the trace goes: a recording (fentry record), or text to -o FILE or ``default``."""
    if record:
        path = opts.output or DEFAULT_RECORDING
        try:
            return Recording(path, argv)
        except OSError as e:
            print(f"fentry {command}: cannot write {path}: {e.strerror}", file=sys.stderr)
            return None
    out, close_out = _open_output(opts, command, default)
    if out is None:
        return None
    return Live(out, argv, close_out)


def _write_profiles(live: Live) -> None:
    """After the trace, each process's function profile (fentry run
    --profile) and deepest stack (--stack)."""
    from .report.profile import profile_text, stack_report
    for stream in live.streams.streams.values():
        if stream.profile is not None:
            live.report.write(profile_text(stream).encode())
        if stream.stack is not None:
            live.report.write(stack_report(stream).encode())
        write_hists(live.report.write, stream)


def write_hists(write: Callable[[bytes], object], stream: Any) -> None:
    """A stream's hist files (fentry run --hist), each under its event's name."""
    for h in stream.hists or ():
        write(f"\n# events/{h['event']}/hist\n{h['text']}".encode())


def _report_end(live: Live | Recording, opts: argparse.Namespace, command: str) -> None:
    """Close the output, and say (one line each) what a user must know of
    the trace: it could not be written, values could not be printed, a
    process's stream was cut."""
    output = opts.output or (DEFAULT_RECORDING if isinstance(live, Recording) else None)
    error = live.error
    if isinstance(live, Live):
        try:
            if live.close_out:
                live.report.out.close()
            else:
                live.report.out.flush()
        except OSError as e:
            error = error or e
        except ValueError:
            pass
    if error is not None:
        # The program's status stands; the lost trace is said once, not as a traceback.
        _say(f"fentry {command}: writing the trace to {output or 'stderr'} failed: "
             f"{error.strerror or error}; the trace is incomplete")
    if isinstance(live, Recording):
        if error is None:
            _say(f"fentry record: {live.writer.size} bytes of raw trace in {output}; "
                 f"`fentry report{'' if output == DEFAULT_RECORDING else f' -i {output}'}` "
                 "formats it")
        return
    if error is not None:
        return          # formatting stopped at the error: nothing more is known
    faults = live.report.faults(live.streams.streams)
    if faults:
        _say(f"fentry {command}: {faults} value{'s' if faults > 1 else ''} could not be printed "
             "(shown as (fault))")
    _say_unselected(command, live.streams.streams)
    for stream in live.streams.streams.values():
        if stream.ended is None and stream.hello:
            _say(f"fentry {command}: the trace of process {stream.pid} stops at its last drain: "
                 "the process was killed before it could send the rest")


def cmd_attach(opts: argparse.Namespace, record: bool = False) -> int:
    command = "record" if record else "attach"
    if not _check_tracing_options(opts, command):
        return 2
    kernel = _kernel_side(opts, command)
    if isinstance(kernel, int):
        return kernel
    try:
        return _cmd_attach(opts, command, record, kernel)
    finally:
        if kernel is not None:
            kernel.close()


def _cmd_attach(opts: argparse.Namespace, command: str, record: bool,
                kernel: KernelSide | None) -> int:
    if opts.duration is not None and opts.duration <= 0:
        print(f"fentry {command}: --duration must be positive", file=sys.stderr)
        return 2
    # stdout: there is no program output here (fentry's own lines go to stderr)
    ok, marker = _kernel_marker(opts, command)
    if not ok:
        return 2
    live = _output(opts, command, record, sys.stdout.buffer, ["fentry", "attach", str(opts.pid)])
    if live is None:
        return 2
    to_kernel = _follow_to_kernel(live, marker)
    if marker is not None and to_kernel is None:
        return 2
    # Ctrl-C (or SIGTERM, SIGHUP) only asks to stop: whenever it comes, the
    # session ends in order and the agent detaches; never a traceback halfway.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.set())
    started = time.perf_counter()
    opened = _open_attach_session(opts, command)
    if isinstance(opened, int):
        return opened
    session, instance, how = opened
    print(f"fentry: attached to {opts.pid} ({how}; ready in "
          f"{(time.perf_counter() - started) * 1e3:.0f} ms); tracing in instances/{instance}; "
          "Ctrl-C detaches", file=sys.stderr)
    ended = threading.Event()
    if kernel is not None:
        # Its threads now; those it starts from now on follow (event-fork);
        # one started between the listing and the write is listed again.
        followed = _threads_of(opts.pid)
        kernel.begin(live.writer, followed)
        while not set(now := _threads_of(opts.pid)) <= set(followed):
            followed = sorted(set(followed) | set(now))
            kernel.follow(followed)
    live.recorder.start(os.dup(session.fileno()), on_end=ended.set)
    deadline = None if opts.duration is None else time.monotonic() + opts.duration
    while not ended.wait(0.05):
        if stop.is_set() or live.error is not None \
                or (deadline is not None and time.monotonic() >= deadline):
            break
    return _end_attach(opts, command, live, session, ended, kernel=kernel, to_kernel=to_kernel)


def _threads_of(pid: int) -> list[int]:
    """The threads of process ``pid`` (``/proc/PID/task``)."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return [pid]


def _open_attach_session(opts: argparse.Namespace, command: str
                         ) -> tuple[socket.socket, str, str] | int:
    """Start the agent in the target (or reuse it) and open this command's
    session: (session, its instance, how the agent was reached), or the exit
    status when that failed (said on stderr)."""
    try:
        injection = inject(opts.pid, opts.injector, opts.timeout)
    except AttachError as e:
        print(f"fentry {command}: {e}", file=sys.stderr)
        return 1
    client = Client(opts.pid)
    try:
        # The session, in an instance of its own: if this command dies from
        # here on, the agent ends it (and detaches, if it was the last).
        session, instance = client.open_session(_settings(opts))
    except Refused as e:
        print(str(e), file=sys.stderr)
        if injection.method != "reused":
            try:
                client.detach()     # started for this attach, and nothing to do
            except (NoAgent, Refused):
                pass
        return 2
    except NoAgent as e:
        print(f"fentry {command}: {e}", file=sys.stderr)
        return 1
    how = ("reusing the agent already there" if injection.method == "reused" else
           f"{injection.method}, paused {injection.pause * 1e3:.1f} ms")
    return session, instance, how


def _end_attach(opts: argparse.Namespace, command: str, live: Live | Recording,
                session: socket.socket, ended: threading.Event,
                kernel: KernelSide | None = None, to_kernel: Any = None) -> int:
    """End an attach session (asked to, or the process ended), and say so."""
    if live.error is not None and not ended.is_set():
        # Whoever read our output is gone (`| head`): our end of the session
        # is closed with the socket, and the agent detaches.
        session.close()
        if kernel is not None:
            kernel.close()
        live.finish()
        _finish_to_kernel(to_kernel, command)
        _quiet_stdout()
        print(f"fentry: output closed; detached from {opts.pid}", file=sys.stderr)
        return 0
    if not ended.is_set():
        # Our end of the session: the agent drains what is left to us, and,
        # if no other session remains, detaches.
        try:
            session.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        ended.wait(EXIT_WAIT)
        message = f"fentry: detached from {opts.pid}"
    else:
        remove_stale(opts.pid)
        message = f"fentry: process {opts.pid} ended, or fentry was detached from it"
    session.close()
    if kernel is not None:
        kernel.close()
    live.finish()
    _finish_to_kernel(to_kernel, command)
    if isinstance(live, Live):
        _write_profiles(live)       # (its hists: --hist, -R hist:...)
    _report_end(live, opts, command)
    print(message, file=sys.stderr)
    return 0


def _say_unselected(command: str, streams: dict[int, Any]) -> None:
    """The filter words that selected no function that ran, in any process:
    an empty trace says why (the kernel refuses such a word when written;
    a program's functions do not exist yet then)."""
    told = [s.unselected for s in streams.values() if s.hello]
    if not told or None in told:
        return          # a process cut short (killed) may have run them: nothing is known
    for word in sorted(set.intersection(*(set(t or ()) for t in told))):
        _say(f"fentry {command}: the filter {word!r} selected no function that ran (none it "
             "names was called; names are MOD:QUALNAME, as available_filter_functions lists them)")


def cmd_report(opts: argparse.Namespace) -> int:
    """``fentry report``: a recording, formatted."""
    from .report.datfile import DatFormatError, DatReader
    from .report.decode import read_recording
    try:
        reader = DatReader(opts.input)
    except FileNotFoundError:
        print(f"fentry report: no {opts.input} here (fentry record writes it; -i names another)",
              file=sys.stderr)
        return 2
    except (DatFormatError, OSError) as e:
        print(f"fentry report: {e}", file=sys.stderr)
        return 2
    if opts.format == "perfetto" and not opts.output and sys.stdout.isatty():
        print("fentry report: a Perfetto trace is binary: give -o FILE (or redirect stdout)",
              file=sys.stderr)
        return 2
    try:
        make_sink = _report_sink(opts)
    except ImportError as e:
        package = (e.name or "perfetto").split(".")[0]
        print(f"fentry report --format {opts.format}: the {package} package is missing "
              f"(pip install {package}): {e}", file=sys.stderr)
        return 2
    out, close_out = _open_output(opts, "report", sys.stdout.buffer)
    if out is None:
        return 2
    sink = make_sink(out)
    streams = read_recording(reader, sink)
    reader.close()
    if opts.format == "text" and sink.error is None:
        try:
            for stream in streams.streams.values():
                write_hists(out.write, stream)
        except OSError as e:
            sink.error = e
    try:
        if close_out:
            out.close()
    except OSError as e:
        sink.error = sink.error or e
    if sink.error is not None:
        # The reading stopped at the error: nothing more is known.  A closed
        # pipe (fentry report | head) is the reader's choice, not a failure.
        _quiet_stdout()
        if isinstance(sink.error, BrokenPipeError):
            return 0
        _say(f"fentry report: writing {opts.output or 'stdout'} failed: {sink.error.strerror}")
        return 1
    faults = sink.faults(streams.streams)
    if faults:
        _say(f"fentry report: {faults} value{'s' if faults > 1 else ''} could not be printed "
             "(shown as (fault))")
    for note in getattr(sink, "notes", ()):
        _say(f"fentry report: {note}")
    if reader.cut:
        _say(f"fentry report: {opts.input} ends {reader.cut} bytes into a frame: the recording "
             "was cut there (killed, or its disk full); the trace stops at the last whole frame")
    _say_unselected("report", streams.streams)
    for stream in streams.streams.values():
        if stream.ended is None and stream.hello:
            _say(f"fentry report: the trace of process {stream.pid} stops at its last drain: "
                 "it ended before it could send the rest (killed?)")
    return 0


def _report_sink(opts: argparse.Namespace) -> Callable[[BinaryIO], CallSink | TextReport]:
    """What makes ``fentry report``'s sink for ``--format``, given the output.
    Each exporter's module (and the libraries it needs) is imported only here."""
    if opts.format == "perfetto":
        from .report.perfetto import PerfettoReport
        return PerfettoReport
    if opts.format == "chrome":
        from .report.chrome import ChromeReport
        return ChromeReport
    if opts.format == "speedscope":
        from .report.speedscope import SpeedscopeReport
        return lambda out: SpeedscopeReport(out, os.path.basename(opts.input))
    if opts.format == "folded":
        from .report.folded import FoldedReport
        return lambda out: FoldedReport(out, opts.weight)
    from .report.text import TextReport
    return TextReport


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def cmd_view(opts: argparse.Namespace) -> int:
    """``fentry view``: the trace in speedscope, on 127.0.0.1, until Ctrl-C."""
    from .report.datfile import DatFormatError
    from .report.view import View, ViewerMissing
    if not os.path.isfile(opts.file):
        print(f"fentry view: no {opts.file} here (fentry record writes it)", file=sys.stderr)
        return 2
    try:
        view = View(opts.file, opts.viewer, opts.port)
    except ViewerMissing as e:
        print(f"fentry view: {e}", file=sys.stderr)
        return 2
    except (DatFormatError, OSError) as e:
        print(f"fentry view: {e}", file=sys.stderr)
        return 2
    for note in view.notes:
        _say(f"fentry view: {note}")
    _say(f"fentry view: serving {opts.file} in speedscope ({view.viewer}); Ctrl-C stops")
    print(view.url, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        view.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_control(opts: argparse.Namespace) -> int:
    """ls, read, write, pipe, detach on process -p PID.

    On a process with no agent, one is started for the command.  It stays
    after a write that was applied (the state the write set lives in it,
    until ``detach``); after anything else it goes again at once."""
    command = opts.command
    if opts.pid is None:
        print(f"fentry {command}: which process? (fentry -p PID {command} ...)", file=sys.stderr)
        return 2
    client = Client(opts.pid)
    started = False
    status = 1
    try:
        if not client.available() and command != "detach":
            inject(opts.pid)
            started = True
        if command == "ls":
            sys.stdout.write("".join(name + "\n" for name in client.ls(opts.path)))
        elif command == "read" and opts.path.strip("/").rpartition("/")[2] != "trace_pipe":
            sys.stdout.write(client.read(opts.path))
        elif command in ("write", "mkdir", "rmdir"):
            if command == "write":
                client.write(opts.path, opts.text, opts.append)
            else:
                client.request(command, path=opts.path)
            if started:
                print(f"fentry: started fentry's agent in process {opts.pid}; "
                      f"`fentry -p {opts.pid} detach` removes it", file=sys.stderr)
                started = False         # it stays
        elif command in ("pipe", "read"):
            _pipe(client, opts.pid, _instance_of(opts.path))
        elif command == "detach":
            client.detach()
        status = 0
    except Refused as e:
        print(str(e), file=sys.stderr)
    except (NoAgent, AttachError) as e:
        print(f"fentry {command}: {e}", file=sys.stderr)
    finally:
        if started:
            try:
                client.detach()
            except (NoAgent, Refused):
                pass
    return status


def _instance_of(path: str) -> str | None:
    """``instances/NAME`` (or ``instances/NAME/trace_pipe``): NAME; None: the top level."""
    parts = [p for p in path.split("/") if p]
    return parts[1] if len(parts) >= 2 and parts[0] == "instances" else None


def _pipe(client: Client, pid: int, instance: str | None) -> None:
    """``fentry -p PID pipe``: the trace, as text, until Ctrl-C or the program's end."""
    sock = client.open_pipe(instance=instance)
    live = Live(sys.stdout.buffer, ["fentry", "-p", str(pid), "pipe"])
    ended = threading.Event()
    live.recorder.start(os.dup(sock.fileno()), on_end=ended.set)
    try:
        while not ended.wait(0.05) and live.report.error is None:
            pass
    except KeyboardInterrupt:
        pass
    if not ended.is_set() and live.report.error is None:
        try:
            sock.shutdown(socket.SHUT_WR)       # the agent drains what is left to us
        except OSError:
            pass
        ended.wait(EXIT_WAIT)
    sock.close()
    live.finish()
    if live.report.error is not None:
        _quiet_stdout()


def _say(message: str) -> None:
    """One line on stderr, if stderr can take it (it may be the full disk)."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _quiet_stdout() -> None:
    """stdout's reader is gone: point it at /dev/null, so that flushing it
    at exit does not fail with a traceback."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass


def _graph_selected(opts: argparse.Namespace) -> bool:
    """Whether a function_graph option was given (-g and the others)."""
    return bool(opts.graph_function or opts.graph_notrace
                or opts.max_graph_depth.strip() not in ("", "0")
                or opts.tracing_thresh.strip() not in ("", "0"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("run", "record"):
        own, program = _split_run_argv(argv[1:])
        parser = build_parser()
        opts = parser.parse_args([argv[0], *own])
        if opts.tracer is None and _graph_selected(opts):
            opts.tracer = "function_graph"
        if argv[0] == "run":
            opts.tracer = opts.tracer or ("nop" if opts.profile or opts.stack else "function")
            return cmd_run(opts, program)
        if opts.record_pid is not None:
            if program:
                parser.error("fentry record -p PID records a running program: give no program")
            opts.pid = opts.record_pid
            opts.tracer = opts.tracer or "nop"
            return cmd_attach(opts, record=True)
        opts.tracer = opts.tracer or "function"
        return cmd_run(opts, program, record=True)
    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.command == "attach":
        opts.tracer = opts.tracer or ("function_graph" if _graph_selected(opts) else "nop")
        return cmd_attach(opts)
    if opts.command == "report":
        return cmd_report(opts)
    if opts.command == "view":
        return cmd_view(opts)
    return cmd_control(opts)
