"""dynamic_events against the live kernel's (issue 14): the same writes to
both, the same verdicts.  The kernel's events are uprobes on /bin/true (this
kernel has no kprobe events, and no eprobes: CONFIG_EPROBE_EVENTS is off);
fentry's are probes on a function of this module.  Skips, saying why, where
tracefs cannot be used (see test_kernel_oracle)."""

from __future__ import annotations

import errno
import os

import pytest

import fentry
from events.test_kernel_oracle import GROUP, Verdict, _kernel_write, _uprobe_target, tracefs  # noqa: F401
from fentry.errors import TraceError


def _target() -> None:
    """What fentry's event goes on."""


def _fentry_write(text: str, append: bool = True) -> Verdict:
    fs = fentry.tracefs()
    fs.write("error_log", "")
    try:
        fs.write("dynamic_events", text, append=append)
    except TraceError as e:
        if fs.read("error_log"):
            return Verdict(e.message, None)
        # (fentry says "No such event" where the kernel's write fails with ENOENT)
        number = errno.ENOENT if e.code == "NO_SUCH_EVENT" else e.errno
        return Verdict(f"({errno.errorcode[number]}, no error_log)", None)
    return Verdict(None, None)


def _kernel_enable(path: str, on: bool) -> None:
    with open(os.path.join(path, f"events/{GROUP}/ev/enable"), "w") as f:
        f.write("1" if on else "0")


def _kernel_truncate(path: str) -> Verdict:
    """``echo > dynamic_events``: the kernel removes at the open (O_TRUNC)."""
    try:
        os.close(os.open(os.path.join(path, "dynamic_events"), os.O_WRONLY | os.O_TRUNC))
    except OSError as e:
        return Verdict(f"({errno.errorcode[e.errno]}, no error_log)", None)
    return Verdict(None, None)


def _ours(text: str) -> list[str]:
    """Our event's line of a dynamic_events read, without its probe point."""
    return [" ".join(w for i, w in enumerate(line.split()) if i != 1)
            for line in text.splitlines() if line.startswith(f"p:{GROUP}/")]


def test_dynamic_events_verdicts_as_the_kernels(tracefs):  # noqa: F811  # (the fixture)
    target = _uprobe_target()
    if target is None:
        pytest.skip("no ELF executable to put the oracle's uprobe on")
    kernel: list[object] = []
    mine: list[object] = []
    define = f"p:{GROUP}/ev {{}} x=$comm y=\\0x10:u8"
    kernel.append(_kernel_write(tracefs, "dynamic_events", define.format(target), "a"))
    mine.append(_fentry_write(define.format(f"{__name__}:_target")))
    try:
        with open(os.path.join(tracefs, "dynamic_events")) as f:
            kernel.append(_ours(f.read()))
        mine.append(_ours(fentry.tracefs().read("dynamic_events")))
        for line in ("z:foo bar",                          # no such kind
                     f"-:{GROUP}/ev POINT",                # not its probe point
                     f"-:{GROUP}/nosuch",
                     f"-:{GROUP}/ev {{}} x=$comm y=\\0x10:u16"):      # not its own argument
            kernel.append(_kernel_write(tracefs, "dynamic_events", line.format(target), "a"))
            mine.append(_fentry_write(line.format(f"{__name__}:_target")))
        _kernel_enable(tracefs, True)
        fentry.tracefs().write(f"events/{GROUP}/ev/enable", "1")
        # Busy: neither the removal nor '>' (which removes nothing then) goes.
        kernel.append(_kernel_write(tracefs, "dynamic_events", f"-:{GROUP}/ev", "a"))
        mine.append(_fentry_write(f"-:{GROUP}/ev"))
        kernel.append(_kernel_truncate(tracefs))
        mine.append(_fentry_write("", append=False))
        with open(os.path.join(tracefs, "dynamic_events")) as f:
            kernel.append(len(_ours(f.read())))
        mine.append(len(_ours(fentry.tracefs().read("dynamic_events"))))
    finally:
        _kernel_enable(tracefs, False)
        fentry.tracefs().write(f"events/{GROUP}/ev/enable", "0")
        kernel.append(_kernel_write(tracefs, "dynamic_events", f"-:{GROUP}/ev", "a"))
        mine.append(_fentry_write(f"-:{GROUP}/ev"))
    assert mine == kernel
    assert kernel[1] == [f"p:{GROUP}/ev x=$comm y=\\0x10:u8"]
    assert kernel[-4] == Verdict("(EBUSY, no error_log)", None)
