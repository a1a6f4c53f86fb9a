"""The ``fentry`` command.

``fentry run`` starts the program as ``python SCRIPT`` would, with the agent
inside (see ``_boot/sitecustomize.py``), and reads the trace it streams: the
reader lives outside the traced process, so a program that dies still leaves
the trace read out up to that point.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading

from .control.agent import AGENT_FD_MIN, ENV_CONFIG
from .errors import TraceError
from .events.probe_parser import ProbeRemoval, parse_probe
from .events.trace_kprobe import compile_event_filter
from .ftrace import parse_filter
from .tracers.trace import TRACERS

BOOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_boot")
RUN_BUFFER_SIZE_KB = 65536    # per thread; more than the kernel's default, as trace-cmd asks for


def _run_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help="run a Python program under tracing",
        usage="fentry run [-t TRACER] [-l GLOB]... [-n GLOB]... [-e PROBEDEF [-f FILTER]]...\n"
              "                  [-o FILE] [--buffer-size-kb N]\n"
              "                  [--] (SCRIPT [ARGS...] | -m MODULE [ARGS...] | -c CODE [ARGS...])",
        description="Run a Python program with fentry's agent inside and stream its trace "
                    "(like trace_pipe) to stderr, or to FILE with -o.")
    p.add_argument("-t", "--tracer", default="function", choices=list(TRACERS),
                   help="the tracer (current_tracer); default: function")
    p.add_argument("-l", "--filter", action="append", default=[], metavar="GLOB",
                   help="trace only matching functions (set_ftrace_filter); repeatable")
    p.add_argument("-n", "--notrace", action="append", default=[], metavar="GLOB",
                   help="do not trace matching functions (set_ftrace_notrace); repeatable")
    p.add_argument("-e", "--event", action=_ProbeAction, dest="probes", default=[], metavar="PROBEDEF",
                   help="add a probe event (a kprobe_events line), enabled before the program starts; "
                        "repeatable")
    p.add_argument("-f", "--filter-event", action=_ProbeAction, dest="probes", metavar="FILTER",
                   help="the filter of the probe event given by the preceding -e")
    p.add_argument("-O", "--option", action="append", default=[], metavar="OPTION",
                   help="a trace_options word, e.g. funcgraph-tail; repeatable")
    p.add_argument("-o", "--output", metavar="FILE", help="write the trace to FILE")
    p.add_argument("--buffer-size-kb", type=int, default=RUN_BUFFER_SIZE_KB, metavar="N",
                   help=f"per-thread ring buffer size (default {RUN_BUFFER_SIZE_KB})")
    p.add_argument("-m", dest="module", metavar="MODULE", help="run library module as a script")
    p.add_argument("-c", dest="code", metavar="CODE", help="program passed in as string")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="SCRIPT [ARGS...]")
    return p


class _ProbeAction(argparse.Action):
    """-e adds [definition, filter]; -f fills in the filter of the -e before it (trace-cmd's way)."""

    def __call__(self, parser, namespace, value, option_string=None):
        probes = list(getattr(namespace, self.dest) or [])
        if option_string in ("-e", "--event"):
            probes.append([value, None])
        elif not probes:
            parser.error(f"{option_string} {value!r}: no -e before it to filter")
        else:
            probes[-1][1] = value
        setattr(namespace, self.dest, probes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fentry", description="ftrace for Python programs")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    return parser


def _split_run_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """fentry's options, and the program's command line (from SCRIPT, -m or -c on)."""
    takes_value = {"-t", "--tracer", "-l", "--filter", "-n", "--notrace", "-o", "--output",
                   "--buffer-size-kb", "-O", "--option", "-e", "--event", "-f", "--filter-event"}
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
    for g in globs:
        try:
            parse_filter(g)
        except TraceError as e:
            e.subsystem = f"fentry run {what}"
            raise


def _check_probes(probes: list[list]) -> None:
    """What can be checked before the program starts: the grammar of each -e,
    and each -f against the fields of its event."""
    for definition, filter_text in probes:
        defn = parse_probe(definition)
        if isinstance(defn, ProbeRemoval):
            raise TraceError("BAD_PROBE_TYPE", definition, 0, subsystem="trace_kprobe")
        if filter_text is not None:
            try:
                compile_event_filter(filter_text, defn.args)
            except TraceError as e:
                e.subsystem = "event filter parse error"
                raise


def cmd_run(opts: argparse.Namespace, program: list[str]) -> int:
    if not program or program[0] in ("-m", "-c") and len(program) < 2:
        print("fentry run: no program given (SCRIPT, -m MODULE or -c CODE)", file=sys.stderr)
        return 2
    try:
        _check_filters(opts.filter, "-l")
        _check_filters(opts.notrace, "-n")
        from .tracers.trace import OPTIONS
        for o in opts.option:
            if o.removeprefix("no") not in OPTIONS:
                raise TraceError("BAD_OPTION", o, 0, subsystem="fentry run -O")
        if opts.buffer_size_kb <= 0:
            raise TraceError("BAD_SIZE", str(opts.buffer_size_kb), 0, subsystem="fentry run")
        _check_probes(opts.probes)
    except TraceError as e:
        print(e.render(), file=sys.stderr)
        return 2
    out = sys.stderr.buffer
    close_out = False
    if opts.output:
        try:
            out = open(opts.output, "wb")
        except OSError as e:
            print(f"fentry run: cannot write {opts.output}: {e.strerror}", file=sys.stderr)
            return 2
        close_out = True

    read_fd, pipe_fd = os.pipe()
    # The program gets the write end at a high descriptor number, so its own
    # open() calls return the numbers they would without fentry.
    write_fd = fcntl.fcntl(pipe_fd, fcntl.F_DUPFD_CLOEXEC, AGENT_FD_MIN)
    os.close(pipe_fd)
    env = dict(os.environ)
    env[ENV_CONFIG] = json.dumps({
        "fd": write_fd, "tracer": opts.tracer, "filter": opts.filter, "notrace": opts.notrace,
        "options": opts.option, "buffer_size_kb": opts.buffer_size_kb, "probes": opts.probes,
        "pythonpath": os.environ.get("PYTHONPATH"),
    })
    env["PYTHONPATH"] = BOOT_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Ctrl-C reaches the program (same process group); we keep reading until
    # it is done.  A handler that does nothing, not SIG_IGN: an ignored signal
    # stays ignored across exec, and the program would not see its Ctrl-C.
    # (If SIGINT is ignored already, as in a background job, it stays so: the
    # program inherits that, as it would from plain python.)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        child = subprocess.Popen([sys.executable, *program], env=env, pass_fds=[write_fd])
    except OSError as e:
        print(f"fentry run: cannot start {sys.executable}: {e.strerror}", file=sys.stderr)
        return 2
    finally:
        os.close(write_fd)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda s, f: child.send_signal(s))

    copier = threading.Thread(target=_copy, args=(read_fd, out), daemon=True)
    copier.start()
    status = child.wait()
    # A process forked by the program may hold the pipe open: read what the
    # program wrote, but do not wait for such strays.
    copier.join(timeout=2.0)
    if close_out:
        out.close()
    else:
        out.flush()
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


def _copy(fd: int, out) -> None:
    try:
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            out.write(data)
            out.flush()
    except (OSError, ValueError):
        pass
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        own, program = _split_run_argv(argv[1:])
        parser = build_parser()
        opts = parser.parse_args(["run", *own])
        return cmd_run(opts, program)
    parser = build_parser()
    parser.parse_args(argv)
    return 0
