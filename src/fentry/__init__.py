"""fentry: the kernel's ftrace and kprobe-based dynamic events, for Python programs."""

from .ftrace import (FTRACE_OPS_FL_RECURSION, FTRACE_OPS_FL_SAVE_REGS, FtraceOps, Ip,
                     register_ftrace_function, unregister_ftrace_function)
from .errors import TraceError
from .kprobes import (Kprobe, Kretprobe, KretprobeInstance, register_kprobe, register_kretprobe,
                      unregister_kprobe, unregister_kretprobe)

__all__ = ["FtraceOps", "Ip", "FTRACE_OPS_FL_SAVE_REGS", "FTRACE_OPS_FL_RECURSION",
           "register_ftrace_function", "unregister_ftrace_function", "TraceError",
           "Kprobe", "Kretprobe", "KretprobeInstance", "register_kprobe", "unregister_kprobe",
           "register_kretprobe", "unregister_kretprobe", "tracefs"]


def tracefs():
    """The tracefs files of this process (``ls``, ``read``, ``write``)."""
    from .control.tracefs import tracefs as _tracefs
    return _tracefs()
