"""Text shared by the tracers' readers: timestamps, task columns, headers.

Formatting happens here, when the trace is read, never when it is recorded.
"""

from __future__ import annotations

from types import CodeType

from .ring_buffer import ThreadBuffer


def task(tb: ThreadBuffer) -> str:
    """``<task>-<tid>``, right-aligned as the kernel's comm-pid column."""
    return f"{tb.task_name()[:16]:>16}-{tb.tid:<7d}"


def event_line(prefix: str, rec: tuple) -> str:
    """A probe event's record, ``(seq, ts, event, site, values)``: the event
    formats its own part (its print fmt), after the usual prefix."""
    ts = rec[1]
    return f"{prefix} {ts // 1_000_000_000:5d}.{ts // 1000 % 1_000_000:06d}: {rec[2].line(rec[3], rec[4])}\n"


def is_event(rec: tuple) -> bool:
    """Tracer records hold a code object or a kind number third; events hold the event."""
    return rec[2].__class__ is not int and rec[2].__class__ is not CodeType


def merge_lines(stamps: list[list[int]], texts: list[list[str]]) -> list[str]:
    """Lines of several threads, in timestamp order (each thread's already is)."""
    if len(texts) == 1:
        return texts[0]
    all_stamps = [t for s in stamps for t in s]
    all_texts = [t for s in texts for t in s]
    # Timsort merges the per-thread runs in C: cheaper than heapq.merge here.
    order = sorted(range(len(all_stamps)), key=all_stamps.__getitem__)
    return [all_texts[i] for i in order]


def lost_line(tb: ThreadBuffer, lost: int) -> str:
    return f"TID:{tb.tid} [LOST {lost} EVENTS]\n"


def buffer_header(tracer: str, in_buffer: int, written: int, threads: int) -> str:
    return (f"# tracer: {tracer}\n"
            "#\n"
            f"# entries-in-buffer/entries-written: {in_buffer}/{written}   #P:{threads}\n"
            "#\n")


FUNCTION_COLUMNS = (
    "#                                _-----=> irqs-off/BH-disabled\n"
    "#                               / _----=> need-resched\n"
    "#                              | / _---=> hardirq/softirq\n"
    "#                              || / _--=> preempt-depth\n"
    "#                              ||| / _-=> migrate-disable\n"
    "#                              |||| /     delay\n"
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n"
    "#              | |         |   |||||     |         |\n"
    "# (TASK is the thread name, PID its native thread id; Python threads have\n"
    "#  no CPU or irq state, so CPU# is always 000 and the flags always .....)\n"
)
