"""fentry: the kernel's ftrace and kprobe-based dynamic events, for Python programs."""

# The API is loaded on first use (PEP 562): the ``fentry`` command and the
# attach bootstrap import only what they need, and start faster for it.
_API = {
    "FtraceOps": "ftrace", "Ip": "ftrace", "FTRACE_OPS_FL_SAVE_REGS": "ftrace",
    "FTRACE_OPS_FL_RECURSION": "ftrace", "register_ftrace_function": "ftrace",
    "unregister_ftrace_function": "ftrace",
    "TraceError": "errors",
    "Kprobe": "kprobes", "Kretprobe": "kprobes", "KretprobeInstance": "kprobes",
    "register_kprobe": "kprobes", "unregister_kprobe": "kprobes",
    "register_kretprobe": "kprobes", "unregister_kretprobe": "kprobes",
}

__all__ = [*_API, "tracefs", "trace_marker"]

# Set while fentry's tracefs lives in this process (control/tracefs.py).
_marker: "Callable[[object], None] | None" = None


def trace_marker(text: object) -> None:
    """Write ``text`` into the trace, as writing the ``trace_marker`` file
    does: ``tracing_mark_write: text``, an event of the calling thread, in
    every tracing instance whose ``markers`` option is on.  Where fentry
    does not trace the process it does nothing, at the cost of a call: a
    program may leave its markers in."""
    mark = _marker
    if mark is not None:
        mark(text)


def __getattr__(name: str) -> object:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'fentry' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


TYPE_CHECKING = False       # (typing's, without importing typing at run time)
if TYPE_CHECKING:
    from collections.abc import Callable

    from .control.tracefs import Tracefs


def tracefs() -> "Tracefs":
    """The tracefs files of this process (``ls``, ``read``, ``write``)."""
    from .control.tracefs import tracefs as _tracefs
    return _tracefs()
