"""The live kernel as the oracle for event triggers: one sequence of writes
to ``events/sched/sched_switch/trigger``, in a tracing instance of the
running kernel's tracefs and in fentry's (whose probe events are named
``sched/sched_switch``, with a field ``prev_pid``, and
``sched/sched_wakeup``), and after each write the verdict (accepted, or the
errno), the ``trigger`` file and both events' ``enable`` files compared.

The kernel's triggers never fire here (a filter no event matches, or a
count of 0), so its counts stay as written; its instance is removed at the
end.  Where tracefs cannot be mounted or written, the test skips."""

from __future__ import annotations

import fcntl
import os
import tempfile

import pytest

from fentry.errors import TraceError

from .test_kernel_oracle import _tracefs

INSTANCE = "fentry_trigger_oracle"

# No snapshot: the 6.18 kernel here is built without CONFIG_TRACER_SNAPSHOT.
WRITES = [
    "traceoff:5 if prev_pid < 0",
    "traceon if prev_pid < 0",
    "stacktrace:0",
    "stacktrace",
    "enable_event:sched:sched_wakeup:2 if prev_pid < 0",
    "disable_event:sched:sched_wakeup",
    "disable_event:sched:sched_switch:0x10 if prev_pid<0",
    "!traceon",
    "!traceoff",
    "traceoff:1:2 if prev_pid < 0",
    "bogus",
    "!bogus",
    "traceoff:abc",
    "traceoff:-1",
    "traceoff if",
    "traceoff:1x",
    "traceon:0",
    "enable_event",
    "enable_event:sched",
    "enable_event:sched:nope",
    "enable_event:sched:sched_wakeup:zz",
    "traceon  if   prev_pid < 0",
    "!stacktrace:7 if prev_pid > 3",
    "!enable_event:sched:sched_wakeup",
    "!disable_event:sched:sched_switch",
    "!traceoff",
    "traceon:0",
    "\n",
    "!traceon",
]


@pytest.fixture
def instance():
    """A tracing instance of the kernel's, held alone, removed after."""
    path, why = _tracefs()
    if path is None:
        pytest.skip(why)
    with open(os.path.join(tempfile.gettempdir(), "fentry-kernel-oracle.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        inst = os.path.join(path, "instances", INSTANCE)
        if not os.path.isdir(inst):
            os.mkdir(inst)
        try:
            yield inst
        finally:
            for t in ("sched_switch", "sched_wakeup"):
                with open(os.path.join(inst, f"events/sched/{t}/trigger")) as f:
                    lines = [ln for ln in f.read().splitlines() if not ln.startswith("#")]
                for ln in lines:
                    _kernel(inst, t, "!" + ln.split(" if ")[0])
            os.rmdir(inst)


def _kernel(inst: str, event: str, text: str) -> str:
    """One write(2), as echo's (a buffered file would write again at its close)."""
    fd = os.open(os.path.join(inst, f"events/sched/{event}/trigger"), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text.encode())
        return "ok"
    except OSError as e:
        return os.strerror(e.errno or 0)
    finally:
        os.close(fd)


def _read(root: str, name: str) -> str:
    with open(os.path.join(root, name)) as f:
        return f.read()


def test_trigger_writes_as_the_kernel_takes_them(instance, fs, make_module):
    make_module("trig_oracle_mod", "def f(x):\n    return x\n\ndef g(x):\n    return x\n")
    fs.write("kprobe_events", "p:sched/sched_switch trig_oracle_mod:f prev_pid=x\n"
                              "p:sched/sched_wakeup trig_oracle_mod:g x=x\n")
    files = ("events/sched/sched_switch/trigger", "events/sched/sched_switch/enable",
             "events/sched/sched_wakeup/enable")
    for text in WRITES:
        kernel = _kernel(instance, "sched_switch", text)
        try:
            fs.write(files[0], text, append=True)
            ours = "ok"
        except TraceError as e:
            ours = os.strerror(e.errno)
        assert ours == kernel, text
        for name in files:
            assert _without_extra(fs.read(name), _read(instance, name)) == _read(instance, name), \
                (text, name)


def _without_extra(ours: str, kernel: str) -> str:
    """``ours``, its ``# Available triggers:`` list cut to the kernel's
    commands (fentry has snapshot, which this kernel is built without)."""
    if not (ours.startswith("# Available triggers:\n") and kernel.startswith("# Available triggers:\n")):
        return ours
    theirs = kernel.splitlines()[1].split()
    return "# Available triggers:\n" + " ".join(w for w in ours.splitlines()[1].split() if w in theirs) + "\n"


def test_a_trigger_filter_error_is_logged_as_the_kernel_logs_it(instance, fs, make_module):
    make_module("trig_oracle_mod2", "def f(x):\n    return x\n")
    fs.write("kprobe_events", "p:sched/sched_switch trig_oracle_mod2:f prev_pid=x\n")
    for text in ("traceoff if nope > 1", "stacktrace:2 if prev_pid >", "traceon if prev_pid == abc"):
        with open(os.path.join(instance, "error_log"), "w") as f:
            f.write("\n")
        fs.write("error_log", "")
        assert _kernel(instance, "sched_switch", text) == "Invalid argument"
        with pytest.raises(TraceError):
            fs.write("events/sched/sched_switch/trigger", text, append=True)
        kernel = _read(instance, "error_log").split("]", 1)[1].splitlines()
        ours = fs.read("error_log").split("]", 1)[1].splitlines()
        # The subsystem and message (fentry's may add a detail), the filter as
        # the command, the caret.
        assert ours[0].startswith(kernel[0]) and ours[1:] == kernel[1:], (text, ours, kernel)
