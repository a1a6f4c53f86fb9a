"""The audit group: one tracepoint per ``sys.audit`` event name.

``audit:open``, ``audit:socket_connect`` (``socket.connect``: every
character that cannot be in an event name becomes ``_``),
``audit:subprocess_Popen``, ``audit:import``, ...: the fields are the audit
event's arguments, named as CPython's audit events table names them
(Doc/library/audit_events.rst, the ``audit-event`` entries); a name not in
``AUDIT_FIELDS`` gets its event the first time it is seen, with fields
``arg0``, ``arg1``, ...  An argument is kept as it is if immutable (str,
int, bytes, None, ...), else as its safe text (``fetch.safe_repr``: no code
of the program's runs); a path object as its path.

An audit hook cannot be removed from a Python process.  fentry adds one, on
the first enable, and never a second (``hotpath.audit_dispatch``: a C hook
on the C hot path, a Python one on the pure one); it calls ``dispatch``
while an audit event is enabled, and after detach it holds nothing of
fentry's and costs one test (C: a pointer; Python: a call and a flag).
"""

from __future__ import annotations

import _thread
import re
import sys
from typing import TYPE_CHECKING, Any

from .. import hotpath
from ..hotpath import quiet_thread
from ..symbols import FENTRY_DIR
from .fetch import snapshot
from .tracepoints import Source, TracepointFile, from_fentry

if TYPE_CHECKING:
    from .tracepoints import Tracepoints

# The audit events of CPython's table that programs raise most, with its
# argument names (3.12 / 3.13).
AUDIT_FIELDS: dict[str, tuple[str, ...]] = {
    "open": ("path", "mode", "flags"),
    "import": ("module", "filename", "sys_path", "sys_meta_path", "sys_path_hooks"),
    "exec": ("code_object",),
    "compile": ("source", "filename"),
    "builtins.input": ("prompt",),
    "builtins.input/result": ("result",),
    "subprocess.Popen": ("executable", "args", "cwd", "env"),
    "os.system": ("command",),
    "os.exec": ("path", "args", "env"),
    "os.posix_spawn": ("path", "argv", "env"),
    "os.spawn": ("mode", "path", "args", "env"),
    "os.fork": (),
    "os.forkpty": (),
    "os.kill": ("pid", "sig"),
    "os.killpg": ("pgid", "sig"),
    "os.remove": ("path", "dir_fd"),
    "os.rename": ("src", "dst", "src_dir_fd", "dst_dir_fd"),
    "os.mkdir": ("path", "mode", "dir_fd"),
    "os.rmdir": ("path", "dir_fd"),
    "os.listdir": ("path",),
    "os.scandir": ("path",),
    "os.chdir": ("path",),
    "os.chmod": ("path", "mode", "dir_fd"),
    "os.chown": ("path", "uid", "gid", "dir_fd"),
    "os.link": ("src", "dst", "src_dir_fd", "dst_dir_fd"),
    "os.symlink": ("src", "dst", "dir_fd"),
    "os.truncate": ("fd", "length"),
    "os.utime": ("path", "times", "ns", "dir_fd"),
    "os.walk": ("top", "topdown", "onerror", "followlinks"),
    "os.putenv": ("key", "value"),
    "os.unsetenv": ("key",),
    "socket.__new__": ("self", "family", "type", "protocol"),
    "socket.bind": ("self", "address"),
    "socket.connect": ("self", "address"),
    "socket.sendto": ("self", "address"),
    "socket.sendmsg": ("self", "address"),
    "socket.getaddrinfo": ("host", "port", "family", "type", "protocol"),
    "socket.gethostbyname": ("hostname",),
    "socket.gethostbyaddr": ("ip_address",),
    "socket.getnameinfo": ("sockaddr",),
    "http.client.connect": ("self", "host", "port"),
    "http.client.send": ("self", "data"),
    "urllib.Request": ("fullurl", "data", "headers", "method"),
    "shutil.copyfile": ("src", "dst"),
    "shutil.copymode": ("src", "dst"),
    "shutil.copystat": ("src", "dst"),
    "shutil.copytree": ("src", "dst"),
    "shutil.move": ("src", "dst"),
    "shutil.rmtree": ("path", "dir_fd"),
    "shutil.make_archive": ("base_name", "format", "root_dir", "base_dir"),
    "shutil.unpack_archive": ("filename", "extract_dir", "format"),
    "tempfile.mkstemp": ("fullpath",),
    "tempfile.mkdtemp": ("fullpath",),
    "glob.glob": ("pathname", "recursive"),
    "pickle.find_class": ("module", "name"),
    "marshal.loads": ("bytes",),
    "marshal.dumps": ("value", "version"),
    "sqlite3.connect": ("database",),
    "ctypes.dlopen": ("name",),
    "mmap.__new__": ("fileno", "length", "access", "offset"),
    "webbrowser.open": ("url",),
    "smtplib.connect": ("self", "host", "port"),
    "ftplib.connect": ("self", "host", "port"),
    "time.sleep": ("secs",),
    "sys._getframe": ("frame",),
    "sys.settrace": (),
    "sys.setprofile": (),
    "sys.addaudithook": (),
    "sys.excepthook": ("hook", "type", "value", "traceback"),
    "sys.unraisablehook": ("hook", "unraisable"),
    "object.__setattr__": ("obj", "name", "value"),
    "object.__delattr__": ("obj", "name"),
    "object.__getattr__": ("obj", "name"),
    "function.__new__": ("code",),
    "code.__new__": ("code", "filename", "name", "argcount", "posonlyargcount",
                     "kwonlyargcount", "nlocals", "stacksize", "flags"),
    "cpython.run_file": ("filename",),
    "cpython.run_module": ("module_name",),
    "cpython.run_command": ("command",),
    "signal.pthread_kill": ("thread_id", "signalnum"),
    "resource.setrlimit": ("resource", "limits"),
    "fcntl.fcntl": ("fd", "cmd", "arg"),
    "fcntl.ioctl": ("fd", "request", "arg"),
    "gc.get_objects": ("generation",),
    "gc.get_referrers": ("objs",),
    "gc.get_referents": ("objs",),
}

_NOT_NAME = re.compile(r"\W")


def event_name(raw: str) -> str:
    """The event's name for an audit name: ``socket.connect`` -> ``socket_connect``."""
    return _NOT_NAME.sub("_", raw)


def _argument(value: object) -> object:
    """An argument as a record keeps it: immutable as it is, a path
    object as its path (pathlib's own method), else its safe text."""
    t = type(value)
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and issubclass(t, pathlib.PurePath):
        fspath: Any = pathlib.PurePath.__fspath__
        try:        # (type's own lookup: a metaclass's __getattr__ never runs)
            if type.__getattribute__(t, "__fspath__") is fspath:
                return fspath(value)
        except Exception:
            pass
    return snapshot(value)


class AuditSource(Source):
    """The audit events' source: the process's one hook, its flag set while
    any audit event is enabled in some instance."""

    def __init__(self, lock: _thread.RLock, tracepoints: Tracepoints) -> None:
        super().__init__(lock)
        self.tracepoints = tracepoints
        self.names: dict[str, Any] = {}    # audit name -> its Tracepoint (names seen)
        # fentry run's start-up, on the C hot path: its audit hook ends the
        # quiet at the exec of the program's code, an event that is still the
        # start-up's (the pure path's ends it at the code's first line).
        self.awaiting_exec = False
        self.guarded_dispatch = hotpath.recursion_guard(self, self.dispatch)   # (at the recursion limit)

    def update(self) -> None:
        hotpath.audit_dispatch(self.guarded_dispatch if self.files else None)

    def dispatch(self, raw: str, args: tuple[object, ...]) -> None:
        """An audit event, in the thread that raised it."""
        if raw == "cpython._PySys_ClearAuditHooks":
            return              # the interpreter's finalization: no time for Python code
        if quiet_thread(True):
            return              # fentry's own thread, or fentry's work re-entering here
        try:
            event = self.names.get(raw)
            if event is None:
                event = self._discover(raw, args)
            targets: tuple[TracepointFile, ...] | None = self.files.get(event.key)
            if self.awaiting_exec:
                self.awaiting_exec = False
                if raw == "exec":
                    return
            if not targets:
                return
            # The audited code's frame (None when the interpreter audits with
            # no Python frame at all: opening the script), past the pure
            # twin's hook (the C one has no frame).
            frame = sys._getframe(0).f_back
            if frame is not None and frame.f_code.co_name == "audit_hook" \
                    and frame.f_code.co_filename.startswith(FENTRY_DIR):
                frame = frame.f_back
            if from_fentry(frame):
                return
            values = tuple(_argument(a) for a in args) if type(args) is tuple else ()
            for f in targets:
                f._record((None, 0), values)
        except Exception:       # an audit hook that raises aborts the operation: never
            self.nmissed += 1
        finally:
            quiet_thread(False)

    def _discover(self, raw: str, args: tuple[object, ...]) -> Any:
        name = event_name(raw)
        event = self.tracepoints.find("audit", name)
        if event is None:
            event = self.tracepoints.add_audit(raw, name, len(args) if type(args) is tuple else 0)
        elif event.key != raw:
            return event        # (another raw name with the same event name: the first keeps it)
        self.names[raw] = event
        return event
