"""The live kernel as the oracle (issue 12): generated probe arguments and
event filters are written to the running kernel's tracefs and to fentry's
parsers, and the verdicts compared -- accept or refuse, the message, and the
caret (measured from the first argument for probes, from the start for
filters).

The kernel's side: ``uprobe_events`` shares the fetcharg parser with
``kprobe_events`` (trace_probe.c), so a definition on a real uprobe target
(the ELF entry point of /bin/true) parses ARGS as kprobe_events would; the
``filter`` of ``sched/sched_switch`` is the kernel's event filter parser.
Both write ``error_log``.  Where tracefs cannot be mounted or written
(not root, no uprobes, a container), the tests skip and say why.

The examples come from seeded hypothesis strategies (derandomized, a fixed
count: the same examples every run).  ``FENTRY_ORACLE_EXAMPLES=1000`` runs
more of them; the disagreements left are printed and must match the
README's "Differences from the kernel".
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import fentry
from fentry.errors import ERRORS, TraceError
from fentry.events.filter import compile_filter
from fentry.events.probe_parser import format_definition, parse_probe

EXAMPLES = int(os.environ.get("FENTRY_ORACLE_EXAMPLES", "300"))
GROUP = "fentry_oracle"
# The goal.  Reached on 6.18: probe arguments 99.7% (of 300 and of
# 5000: the rest is $retval as a string or an array, see README), filters 100%.
PROBE_AGREEMENT = 0.99
FILTER_AGREEMENT = 0.99


class Verdict(NamedTuple):
    """What a parser said: message None when it accepted, and then the
    arguments as reading the probe events file shows them, and the event's
    argument fields and print fmt as its ``format`` file shows them."""
    message: str | None
    caret: int | None
    shown: str | None = None


# -- the kernel's tracefs ------------------------------------------------------

def _mounted_tracefs() -> str | None:
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "tracefs" and \
                    os.path.exists(os.path.join(fields[1], "error_log")):
                return fields[1]
    return None


@functools.cache
def _tracefs() -> tuple[str | None, str]:
    """(the tracefs directory, or None and why not)."""
    if os.geteuid() != 0:
        return None, "the kernel oracle needs root (tracefs is root's)"
    path = _mounted_tracefs()
    if path is None:
        path = tempfile.mkdtemp(prefix="fentry-tracefs-")
        done = subprocess.run(["mount", "-t", "tracefs", "nodev", path],
                              capture_output=True, text=True)
        if done.returncode:
            return None, f"cannot mount tracefs: {done.stderr.strip() or done.returncode}"
    for name in ("uprobe_events", "error_log", "events/sched/sched_switch/filter"):
        if not os.access(os.path.join(path, name), os.W_OK):
            return None, f"this kernel's tracefs has no writable {name}"
    return path, ""


@pytest.fixture
def tracefs() -> Iterator[str]:
    """The kernel's tracefs, held alone: error_log and the oracle's event are
    the machine's, and another pytest (another worktree) may run this too."""
    path, why = _tracefs()
    if path is None:
        pytest.skip(why)
    with open(os.path.join(tempfile.gettempdir(), "fentry-kernel-oracle.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path


def _entry_offset(path: str) -> int | None:
    """The file offset of an ELF's entry point (64-bit little-endian), or None."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError:
        return None
    if data[:6] != b"\x7fELF\x02\x01":
        return None
    entry, phoff = struct.unpack_from("<QQ", data, 24)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1 and p_vaddr <= entry < p_vaddr + p_filesz:
            return entry - p_vaddr + p_offset
    return None


@functools.cache
def _uprobe_target() -> str | None:
    """``PATH:0xOFFS`` of an instruction the kernel accepts a uprobe on."""
    for path in ("/bin/true", "/usr/bin/true", os.path.realpath(sys.executable)):
        offset = _entry_offset(path)
        if offset is not None:
            return f"{path}:{offset:#x}"
    return None


def _clear_error_log(tracefs: str) -> None:
    with open(os.path.join(tracefs, "error_log"), "w") as f:   # O_TRUNC clears it
        f.write("\n")


_LOG_ENTRY = re.compile(r"^\[[ \d.]+\] [^:]+: error: (.*)\n  Command: (.*)\n( *)\^", re.M)


def _kernel_write(tracefs: str, name: str, text: str, mode: str) -> Verdict:
    """Write ``text`` to a tracefs file; the error_log entry it made, if any."""
    _clear_error_log(tracefs)
    # os.open: Python's "a" mode seeks to the end, which tracefs refuses.
    flags = os.O_WRONLY | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(os.path.join(tracefs, name), flags)
    try:
        os.write(fd, (text + "\n").encode())
    except OSError as e:
        with open(os.path.join(tracefs, "error_log")) as f:
            entries = _LOG_ENTRY.findall(f.read())
        if not entries:
            return Verdict(f"({errno.errorcode.get(e.errno or 0, e.errno)}, no error_log)", None)
        message, _, indent = entries[-1]
        return Verdict(message, len(indent) - len("  Command: "))
    finally:
        os.close(fd)
    return Verdict(None, None)


# -- probe arguments -----------------------------------------------------------

def _from_args(caret: int | None, word0: str, head: str) -> int | None:
    """A caret in the arguments counted from the first of them; one in the
    first word (``p:GRP/EVENT``, the same on both sides) as it is."""
    if caret is None or caret <= len(word0):
        return caret
    return caret - len(head) - 1


def kernel_probe(tracefs: str, word0: str, args: str) -> Verdict:
    head = f"{word0} {_uprobe_target()}"
    verdict = _kernel_write(tracefs, "uprobe_events", f"{head} {args}", "a")
    if verdict.message is None:
        with open(os.path.join(tracefs, "uprobe_events")) as f:
            added = f.read().splitlines()[-1].split()   # p:GRP/EVENT as the kernel named it
        with open(os.path.join(tracefs, "events", added[0][2:], "format")) as f:
            fmt = _arg_format(f.read())
        _kernel_write(tracefs, "uprobe_events", "-" + added[0][1:], "a")
        return verdict._replace(shown=_shown(added[2:], fmt))
    return verdict._replace(caret=_from_args(verdict.caret, word0, head))


def _target() -> None:
    """What fentry's events go on (the kernel's are on /bin/true)."""


def _shown(args: list[str], fmt: str) -> str:
    """The arguments read back, and their format where every one has a type:
    an untyped argument is a u64 in the kernel and a Python object here."""
    typed = all(":" in a or a.partition("=")[2].startswith(("$comm", "$COMM", '\\"'))
                for a in args)
    return " ".join(args) + ("\n" + fmt if typed else "")


def _arg_format(text: str) -> str:
    """The argument fields and the print fmt of a ``format`` file."""
    common = ("\tfield:unsigned short common_", "\tfield:unsigned char common_",
              "\tfield:int common_pid")
    return "\n".join(line for line in text.splitlines()
                     if line.startswith(("print fmt:", "\tfield:")) and not line.startswith(common))


def fentry_probe(word0: str, args: str) -> Verdict:
    head = f"{word0} {__name__}:_target"
    try:
        defn = parse_probe(f"{head} {args}")
        fs = fentry.tracefs()
        fs.write("kprobe_events", f"{head} {args}")
        fmt = _arg_format(fs.read(f"events/{defn.group}/{defn.event}/format"))
        fs.write("kprobe_events", "")
    except TraceError as e:
        return Verdict(e.message, _from_args(e.pos, word0, head))
    return Verdict(None, None, _shown(format_definition(defn).split()[2:], fmt))


_names = st.sampled_from(["x", "y", "arg1", "a_b", "_z", "x9", "common_pid", "1x",
                          "a-b", "", "n" * 33, "N" * 32])
_ints = st.sampled_from(["0", "7", "010", "0x10", "0X1f", "08", "0x", "4294967296",
                         "18446744073709551615", "18446744073709551616", "12ab", ""])
_imm = st.one_of(
    st.builds(lambda s, n: f"\\{s}{n}", st.sampled_from(["", "-", "+"]), _ints),
    st.builds(lambda s, q: f'\\"{s}{q}', st.sampled_from(["abc", "", "a:b", "a b", "x y z"]),
              st.sampled_from(['"', "", '"x'])),
    st.just("\\abc"),
)
_var = st.one_of(
    st.sampled_from(["$comm", "$COMM", "$retval", "$stack", "$foo", "$", "$stackx"]),
    # Not above 2048: PARAM_MAX_STACK binds kprobes only, uprobe_events cannot show it.
    st.builds("$stack{}".format, st.sampled_from(["0", "3", "2048", "010", "3x"])),
)
_scalar = st.sampled_from([f"{c}{n}" for c in "usx" for n in (8, 16, 32, 64)])
_type = st.one_of(
    _scalar, st.just("string"), st.sampled_from(["u7", "foo", "", "u8[", "string[2"]),
    st.builds(lambda t, n, close: f"{t}[{n}{close}", st.one_of(_scalar, st.just("string")),
              st.sampled_from(["1", "2", "4", "64", "65", "0", "x", "010"]),
              st.sampled_from(["]", "", "]x"])),
    st.builds(lambda w, o, s: f"b{w}@{o}/{s}", st.sampled_from(["1", "4", "0", "65", "x", "0x4", "010"]),
              st.sampled_from(["0", "2", "31", "63", "64", "0x2", ""]),
              st.sampled_from(["8", "16", "32", "64", "7", "x", "0x10"])),
)
_fetcharg = st.builds(
    lambda name, body, type_: (f"{name}=" if name is not None else "") + body
    + (f":{type_}" if type_ is not None else ""),
    st.none() | _names, _var | _imm, st.none() | _type)
# Event names mostly in the oracle's own group (never an existing event's).
_event = st.sampled_from([
    None, f"{GROUP}/ev", f"{GROUP}/ev", f"{GROUP}/ev", f"{GROUP}.ev2", f"{GROUP}/",
    "/ev", "1g/ev", f"{GROUP}/e-v", f"{GROUP}/1e", f"{GROUP}/" + "e" * 65,
    "g" * 65 + "/ev", "", f"{GROUP}/" + "e" * 64, "fentry-oracle/ev",
])
probe_examples = st.tuples(
    st.builds(lambda kind, event: kind if event is None else f"{kind}:{event}",
              st.sampled_from(["p", "r"]), _event),
    st.lists(_fetcharg, min_size=1, max_size=4).map(" ".join))


# -- filters -------------------------------------------------------------------

SCHED_SWITCH = {"prev_comm": "str", "prev_pid": "num", "prev_prio": "num",
                "prev_state": "num", "next_comm": "str", "next_pid": "num",
                "next_prio": "num", "common_pid": "num"}


def kernel_filter(tracefs: str, text: str) -> Verdict:
    return _kernel_write(tracefs, "events/sched/sched_switch/filter", text, "w")


def fentry_filter(text: str) -> Verdict:
    """fentry's verdict; the message as the table has it ("Field not found"
    is followed by the name and the event's fields in fentry, see README)."""
    try:
        compile_filter(text, SCHED_SWITCH)
    except TraceError as e:
        return Verdict(ERRORS[e.code], e.pos)
    return Verdict(None, None)


_field = st.sampled_from([*SCHED_SWITCH, "nope", "prev_pidx", "", "1"])
_op = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&", "~", "=", "=<", "!~", "<>"])
_value = st.sampled_from([
    "0", "7", "-3", "0x1f", "010", "08", "99999999999999999999", "12ab", "",
    '"abc"', "'a*'", '"*b?"', '"[ab]c"', '"abc', "'", "word", '"a b"', '""', '"x"y',
])
_pred = st.builds(lambda f, sp1, op, sp2, v: f"{f}{sp1}{op}{sp2}{v}",
                  _field, st.sampled_from([" ", "", "  "]), _op,
                  st.sampled_from([" ", "", "  "]), _value)
_filter = st.recursive(
    _pred,
    lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner,
                  st.sampled_from(["&&", "||", "&", "|", "&&&"]), inner),
        st.builds("!{}".format, inner),
        st.builds(lambda a, o, c: f"{o}{a}{c}", inner,
                  st.sampled_from(["(", "((", "", "( "]), st.sampled_from([")", "))", "", " )"])),
    ),
    max_leaves=4,
).map(str.rstrip)


# -- the comparison ------------------------------------------------------------

def _examples(strategy: st.SearchStrategy, n: int) -> list:
    """``n`` examples of ``strategy``, the same ones every run."""
    out: list = []

    @settings(max_examples=n, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(strategy)
    def collect(example: object) -> None:
        out.append(example)

    collect()
    return out


def _compare(examples: list, kernel: Callable[..., Verdict],
             ours: Callable[..., Verdict]) -> tuple[float, list[str]]:
    differ = []
    for example in examples:
        k, f = kernel(*example), ours(*example)
        if k != f:
            differ.append(f"{example!r}\n    kernel: {k}\n    fentry: {f}")
    return 1 - len(differ) / len(examples), differ


def _report(what: str, rate: float, n: int, differ: list[str]) -> None:
    print(f"\n{what}: {rate:.1%} of {n} identical; {len(differ)} differ:")
    for line in differ:
        print("  " + line)


def test_probe_arguments_agree_with_the_kernel(tracefs):
    if _uprobe_target() is None:
        pytest.skip("no ELF executable to put the oracle's uprobe on")
    examples = _examples(probe_examples, EXAMPLES)
    rate, differ = _compare(examples, functools.partial(kernel_probe, tracefs), fentry_probe)
    _report("probe arguments", rate, len(examples), differ)
    assert rate >= PROBE_AGREEMENT, "\n".join(differ)


def test_filters_agree_with_the_kernel(tracefs):
    examples = [(text,) for text in _examples(_filter, EXAMPLES)]
    try:
        rate, differ = _compare(examples, functools.partial(kernel_filter, tracefs),
                                fentry_filter)
    finally:
        kernel_filter(tracefs, "0")
    _report("filters", rate, len(examples), differ)
    assert rate >= FILTER_AGREEMENT, "\n".join(differ)


def test_the_oracle_sees_the_kernel(tracefs):
    """The harness itself: a known refusal and a known acceptance, read back."""
    if _uprobe_target() is None:
        pytest.skip("no ELF executable to put the oracle's uprobe on")
    accepted = kernel_probe(tracefs, "p", "x=$comm \\0x10:u8")
    assert accepted.message is None
    assert accepted.shown.startswith("x=$comm arg2=\\0x10:u8\n\tfield:unsigned long __probe_ip;")
    assert kernel_probe(tracefs, "p", "x=$comm y=$retval").caret == len("x=$comm y=")
    assert kernel_filter(tracefs, "prev_pid == 1") == Verdict(None, None)
    assert kernel_filter(tracefs, 'prev_comm == "abc') == \
        Verdict("Missing matching quote", len("prev_comm == "))
    kernel_filter(tracefs, "0")


def test_error_log_keeps_as_many_as_the_kernel(tracefs):
    """TRACING_LOG_ERRS_MAX: the newest entries, the oldest dropped."""
    import fentry

    _clear_error_log(tracefs)
    filter_file = os.path.join(tracefs, "events/sched/sched_switch/filter")
    for i in range(12):
        with pytest.raises(OSError), open(filter_file, "w") as f:
            f.write(f"nope{i} == 1\n")
    with open(os.path.join(tracefs, "error_log")) as f:
        kept = len(_LOG_ENTRY.findall(f.read()))
    kernel_filter(tracefs, "0")
    _clear_error_log(tracefs)
    fs = fentry.tracefs()
    for i in range(12):
        with pytest.raises(TraceError):
            fs.write("kprobe_events", f"p __main__:f x{i}=$nope", append=True)
    log = fs.read("error_log")
    assert len(_LOG_ENTRY.findall(log)) == kept == 8
    assert "x4=$nope" in log and "x3=$nope" not in log


# Arguments whose refusal has the same cause in both grammars, though the
# generator does not write them (the kernel's syntax on the left of fentry's).
KERNEL_MESSAGES = [
    ("x=" + "a" * 64, "ARG_TOO_LONG"),
    ("x=", "NO_ARG_BODY"),
    ("x=%foo", "BAD_REG_NAME"),
    ("x=+0($comm)", "COMM_CANT_DEREF"),
    ("x=+0(%ax", "DEREF_OPEN_BRACE"),
    ("x=+z(%ax)", "BAD_DEREF_OFFS"),
    ("x=$comm:u8[2]x", "BAD_ARRAY_SUFFIX"),
    ("x=$stack:u8[65]", "ARRAY_TOO_BIG"),
    ("x=$stack:u8[0]", "BAD_ARRAY_NUM"),
    ("x=$stack:foo", "BAD_TYPE"),
    ("x=$stack:string", "BAD_STRING"),
    ("x=$stack:b0@1/8", "BAD_BITFIELD"),
    (" ".join(f"a{i}=$comm" for i in range(129)), "TOO_MANY_ARGS"),
]


@pytest.mark.parametrize("args, code", KERNEL_MESSAGES, ids=[c for _, c in KERNEL_MESSAGES])
def test_the_messages_are_the_kernels(tracefs, args, code):
    """fentry's table spells each message as the running kernel does."""
    if _uprobe_target() is None:
        pytest.skip("no ELF executable to put the oracle's uprobe on")
    assert kernel_probe(tracefs, f"p:{GROUP}/ev", args).message == ERRORS[code]


# -- removal: -:GRP/EVENT [POINT [ARGS]] (dyn_event_release) ---------------------

# The event both sides define, then what each removal gives after the name:
# the probe point (the event's, another, or none) and the arguments.
REMOVED_ARGS = "x=$comm \\0x10:u8 y=$stack3"
REMOVALS = [
    (f"{GROUP}/ev", None, ""),
    (f"{GROUP}/ev", "its", ""),
    (f"{GROUP}/ev", "its", "x=$comm"),
    (f"{GROUP}/ev", "its", "x=$comm arg2=\\0x10:u8"),
    (f"{GROUP}/ev", "its", "x=$comm  arg2=\\0x10:u8\ty=$stack3"),
    (f"{GROUP}/ev", "its", "x=$comm arg2=\\16:u8"),
    (f"{GROUP}/ev", "its", "x=$comm \\0x10:u8"),
    (f"{GROUP}/ev", "its", "arg2=\\0x10:u8"),
    (f"{GROUP}/ev", "its", "x=$comm arg2=\\0x10:u8 y=$stack3 z=$comm"),
    (f"{GROUP}/ev", "its", "x=$comm:string"),
    (f"{GROUP}/ev", "another", ""),
    (f"{GROUP}/ev", "another", "x=$comm"),
    (f"{GROUP}/", None, ""),
    (f"{GROUP}/", "its", "x=$comm"),
    (f"{GROUP}/", "its", "y=$comm"),
    (f"{GROUP}/ev2", None, ""),
    (f"{GROUP}.ev", None, ""),
]


def _kernel_removal(tracefs: str, name: str, point: str | None, args: str) -> tuple[Verdict, bool]:
    """(the verdict, whether the event is still there), on the kernel's uprobe_events."""
    target = _uprobe_target()
    assert target is not None
    _kernel_write(tracefs, "uprobe_events", f"p:{GROUP}/ev {target} {REMOVED_ARGS}", "a")
    with open(os.path.join(tracefs, "uprobe_events")) as f:
        its = next(line.split()[1] for line in f if line.startswith(f"p:{GROUP}/ev "))
    path, _, offset = its.rpartition(":")
    where = {None: None, "its": its, "another": f"{path}:0x{int(offset, 16) + 1:016x}"}[point]
    verdict = _kernel_write(tracefs, "uprobe_events", " ".join(
        w for w in (f"-:{name}", where, args) if w), "a")
    with open(os.path.join(tracefs, "uprobe_events")) as f:
        there = any(line.startswith(f"p:{GROUP}/ev ") for line in f)
    _kernel_write(tracefs, "uprobe_events", f"-:{GROUP}/ev", "a")
    return verdict, there


def _fentry_removal(name: str, point: str | None, args: str) -> tuple[Verdict, bool]:
    fs = fentry.tracefs()
    fs.write("kprobe_events", f"p:{GROUP}/ev {__name__}:_target {REMOVED_ARGS}")
    where = {None: None, "its": f"{__name__}:_target", "another": f"{__name__}:_shown"}[point]
    before = fs.read("error_log")
    try:
        fs.write("kprobe_events", " ".join(w for w in (f"-:{name}", where, args) if w), append=True)
        verdict = Verdict(None, None)
    except TraceError as e:
        logged = fs.read("error_log") != before
        errno_name = {"NO_SUCH_EVENT": "ENOENT", "BAD_REMOVE": "EINVAL"}.get(e.code, e.code)
        verdict = Verdict(e.message if logged else f"({errno_name}, no error_log)", None)
    there = f"p:{GROUP}/ev " in fs.read("kprobe_events")
    fs.write("kprobe_events", "")
    return verdict, there


@pytest.mark.parametrize("name, point, args", REMOVALS)
def test_removal_matches_as_the_kernels(tracefs, name, point, args):
    """An event goes only when the rest of the line is its own (the probe
    point, then the arguments given, as reading the file shows them); else
    -ENOENT, and neither writes error_log."""
    if _uprobe_target() is None:
        pytest.skip("no ELF executable to put the oracle's uprobe on")
    assert _fentry_removal(name, point, args) == _kernel_removal(tracefs, name, point, args)
