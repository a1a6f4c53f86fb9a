"""The kernel's events as fentry prints them, line by line against the
running kernel's own ``trace`` of the same events: fentry's instance and
reader (``kernel/instance.py``, ``kernel/reader.py``) record a program's
events, the kernel's ``trace`` file is read before the pages are spliced
out, and fentry's decoding (``kernel/stream.py``) must print the same
lines: task, CPU, flags, timestamp and the event's text.  Root and tracefs
only (skipped with the reason otherwise)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from fentry.report.datfile import DatReader, DatWriter


def _tracefs() -> str:
    if os.geteuid() != 0:
        pytest.skip("tracefs is root's: -K needs root")
    from fentry.errors import TraceError
    from fentry.kernel.mount import find_tracefs
    try:
        return find_tracefs()
    except TraceError as e:
        pytest.skip(f"no usable tracefs: {e.message}")


def _recorded(tmp_path, events: list[str], program: str) -> tuple[list[str], list[str]]:
    """(the kernel's trace lines, fentry's) of ``program``'s events."""
    from fentry.kernel.instance import Instance, KernelEvents
    from fentry.kernel.reader import KernelReader
    from fentry.kernel.stream import KERNEL_STREAM, KernelStream
    instance = Instance(KernelEvents(events, []), _tracefs())
    instance.create()
    try:
        with open(tmp_path / "k.dat", "wb") as f:
            writer = DatWriter(f)
            reader = KernelReader(instance, writer)
            reader.hello()
            # It waits on its stdin once done: alive while its name is asked.
            child = subprocess.Popen([sys.executable, "-c", program + "\nimport sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE)
            instance.follow([child.pid])
            instance.enable()
            try:
                child.stdin.write(b"")
                import time
                time.sleep(0.3)
                instance.enable(False)
                with open(instance.file("trace")) as t:
                    kernel = [line for line in t.read().splitlines() if not line.startswith("#")]
                reader.start()
                reader.stop()
                writer.close()
            finally:
                child.stdin.close()
                child.wait()
    finally:
        instance.close()
    stream = KernelStream()
    for number, payload in DatReader(str(tmp_path / "k.dat")).frames():
        assert number == KERNEL_STREAM
        stream.feed(payload)
    ours = [rec[2].kernel_line(rec).rstrip("\n") for rec in stream.take(1 << 62)]
    # (fentry leaves out its own process's events: here, this test's, as it starts the program)
    me = os.getpid()
    kernel = [line for line in kernel if not re.search(rf"(-|_pid=){me}\b", line)]
    return kernel, ours


def _same(kernel: str, ours: str) -> bool:
    # raw_syscalls: fentry names the number (`NR 0 read`); a task the kernel
    # (its saved_cmdlines) or fentry (gone when it asked) has no name of is `<...>`
    ours = re.sub(r"(: NR -?\d+) [a-z_0-9]+", r"\1", ours)
    unnamed = re.compile(r"^\s*.{1,16}-(\d+)")
    if ours.lstrip().startswith("<...>-") or kernel.lstrip().startswith("<...>-"):
        kernel = unnamed.sub(lambda m: f"{'<...>':>16}-{m.group(1)}", kernel)
        ours = unnamed.sub(lambda m: f"{'<...>':>16}-{m.group(1)}", ours)
    return kernel.rstrip() == ours


def test_lines_are_the_kernels(tmp_path):
    kernel, ours = _recorded(tmp_path, ["sched:sched_switch", "sched:sched_wakeup", "raw_syscalls", "irq"],
                             "import os, time\nfor _ in range(20):\n    os.getppid()\n    time.sleep(0.002)")
    assert len(ours) == len(kernel) > 40
    bad = [(k, o) for k, o in zip(kernel, ours) if not _same(k, o)]
    assert not bad, bad[:5]


def test_syscalls_events_are_the_kernels(tmp_path):
    kernel, ours = _recorded(tmp_path, ["syscalls:sys_enter_getppid", "syscalls:sys_exit_getppid",
                                        "syscalls:sys_enter_openat", "syscalls:sys_exit_openat"],
                             "import os\nfor _ in range(5):\n    os.getppid()\n    os.close(os.open('/', 0))")
    assert len(ours) == len(kernel) >= 20
    bad = [(k, o) for k, o in zip(kernel, ours) if not _same(k, o)]
    assert not bad, bad[:5]


def test_lost_events_are_said_as_the_kernel_says_them():
    # A page as trace_pipe_raw gives one after the writer overran the reader:
    # commit's bit 31 (missed events) and 30 (their count stored after the data).
    import struct

    from fentry.kernel.stream import KHELLO, KPAGE, KernelStream, message
    stream = KernelStream()
    stream.feed(message(KHELLO, b'{"fentry_pid": 1, "formats": []}'))
    data = struct.pack("<I", 2 | 10 << 5) + b"\0" * 8        # one 8-byte event, 10 ns in
    page = struct.pack("<Qq", 5_000_000_000, len(data) | 1 << 31 | 1 << 30) + data + struct.pack("<Q", 7)
    stream.feed(message(KPAGE, struct.pack("<I", 1) + page))
    [rec] = stream.take(1 << 62)
    assert rec[2].kernel_line(rec) == "CPU:1 [LOST 7 EVENTS]\n"
    assert stream.lost == 7
