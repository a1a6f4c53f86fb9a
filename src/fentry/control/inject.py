"""Getting the agent into a running Python process (``fentry attach``).

The bootstrap is a few lines of Python that load fentry from its own
directory (without touching the program's ``sys.path``) and call
``agent.attach()`` from a thread of its own.  It has to run at a safe point,
never in the middle of whatever the program's main thread was doing:

- a *pending call*: ``Py_AddPendingCall(PyRun_SimpleString, bootstrap)``
  queues it, and the main thread runs it between two bytecodes, with the
  GIL, exactly where it would handle a signal;
- or, when the main thread is blocked in a system call without the GIL
  (sleep, select, a read), a call it makes itself there, as a C callback
  would: ``PyGILState_Ensure(); PyRun_SimpleString(); PyGILState_Release()``.

The injectors:

- ``ptrace`` (x86-64 Linux, the default): fentry's own.  It stops the main
  thread, has it map a page (``mmap``) for the bootstrap, picks the safe
  point (see ``_inject_ptrace``) and puts every register back.  The program
  is stopped for about a millisecond.
- ``gdb``: the pending call made by gdb (``gdb -p PID -batch``); about half a
  second of pause, and gdb must be installed.  The fallback where ptrace is
  not ours to use (another architecture).
- ``remote_exec``: Python 3.14's ``sys.remote_exec``, when fentry itself
  runs on the target's Python version (3.14 or newer).

A bootstrap that has not run when the client gives up (the main thread is
blocked outside Python) does nothing when it finally runs: it starts only if
its token file is still there, and the client removes that file.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import signal
import struct
import sys
import time
from collections import namedtuple
from collections.abc import Callable
from typing import BinaryIO

from .wire import agent_there, alive, socket_dir, socket_path

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIN_VERSION = (3, 12)
ERROR_FILE = "attach-error"


class AttachError(Exception):
    """Attaching failed; the message says why and what to do.  The target is untouched."""


# How it went: the injector used, and the seconds the target's thread was stopped.
Injection = namedtuple("Injection", "method pause")


# -- what the target is

Mapping = namedtuple("Mapping", "start end perms offset path")      # a line of /proc/PID/maps


def _maps(pid: int) -> list[Mapping]:
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise AttachError(f"no process {pid}") from None
    except PermissionError:
        raise AttachError(f"cannot read /proc/{pid}/maps: {_denied_because(pid)}") from None
    out = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        out.append(Mapping(start, end, parts[1], int(parts[2], 16), parts[5]))
    return out


def _file_path(pid: int, path: str) -> str:
    """The mapped file as this process can open it (the target may be in
    another mount namespace)."""
    path = path.removesuffix(" (deleted)")
    rooted = f"/proc/{pid}/root{path}"
    return rooted if os.path.exists(rooted) else path


def _elf_symbols(path: str, wanted: set[str]) -> tuple[dict[str, int], int]:
    """Values of the ``wanted`` dynamic symbols of an ELF file, and the
    virtual address of its first loadable segment.  Reads only the headers,
    ``.dynsym`` and ``.dynstr`` (a libpython is 30 MB)."""
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        except ValueError:          # empty file
            return {}, 0
    with data:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:     # 64-bit little-endian
            return {}, 0
        (e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize,
         e_shnum, _) = struct.unpack_from("<QQIHHHHHH", data, 0x20)
        loads = [struct.unpack_from("<IIQQ", data, e_phoff + i * e_phentsize)
                 for i in range(e_phnum)]
        first_load = min((p[3] for p in loads if p[0] == 1), default=0)   # PT_LOAD
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
                    for i in range(e_shnum)]
        found: dict[str, int] = {}
        for sh in sections:
            if sh[1] != 11:         # SHT_DYNSYM
                continue
            strtab = sections[sh[6]]
            names = data[strtab[4]:strtab[4] + strtab[5]]
            # Where each wanted name starts in .dynstr; then one pass over the symbols.
            offsets = {}
            for name in wanted:
                at = names.find(b"\0" + name.encode() + b"\0")
                if at >= 0:
                    offsets[at + 1] = name
            symbols = data[sh[4]:sh[4] + sh[5]]
            for st_name, _, _, shndx, value, _ in struct.iter_unpack("<IBBHQQ", symbols):
                if st_name in offsets and shndx and value:
                    found[offsets[st_name]] = value
    return found, first_load & ~0xFFF


class Target:
    """A running Python process: where its C API functions are, its version."""

    def __init__(self, pid: int, symbols: dict[str, int], version: tuple[int, int, int],
                 libc_syscall: int) -> None:
        self.pid = pid
        self.symbols = symbols
        self.version = version
        self.libc_syscall = libc_syscall        # address of a `syscall` instruction


PY_SYMBOLS = {"Py_AddPendingCall", "PyRun_SimpleString", "Py_Version", "PyGILState_Check",
              "PyGILState_Ensure", "PyGILState_Release"}


def inspect_target(pid: int) -> Target:
    """Find the Python runtime in process ``pid`` (raises AttachError)."""
    if pid == os.getpid():
        raise AttachError("fentry cannot attach to itself")
    maps = _maps(pid)
    by_file: dict[str, list[Mapping]] = {}
    for m in maps:
        by_file.setdefault(m.path, []).append(m)
    symbols: dict[str, int] = {}
    for path, ms in by_file.items():
        if "python" not in os.path.basename(path):
            continue
        try:
            found, first_vaddr = _elf_symbols(_file_path(pid, path), PY_SYMBOLS)
        except OSError:
            continue
        if "Py_AddPendingCall" in found:
            base = min(m.start for m in ms) - first_vaddr
            symbols = {name: base + value for name, value in found.items()}
            break
    if not {"Py_AddPendingCall", "PyRun_SimpleString"} <= symbols.keys():
        exe = _exe(pid)
        raise AttachError(f"process {pid} ({exe}) is not a Python process "
                          "(no Python runtime is loaded in it)")
    if "Py_Version" not in symbols:
        raise AttachError(f"process {pid} runs a Python older than 3.11; fentry needs "
                          f"Python {'.'.join(map(str, MIN_VERSION))} or newer (sys.monitoring)")
    raw = _read_memory(pid, symbols["Py_Version"], 4)
    hexversion = struct.unpack("<I", raw)[0]
    version = (hexversion >> 24, (hexversion >> 16) & 0xFF, (hexversion >> 8) & 0xFF)
    if version[:2] < MIN_VERSION:
        raise AttachError(f"process {pid} runs Python {'.'.join(map(str, version))}; fentry needs "
                          f"Python {'.'.join(map(str, MIN_VERSION))} or newer (sys.monitoring)")
    return Target(pid, symbols, version, _find_syscall(pid, maps))


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return "?"


def _read_memory(pid: int, addr: int, size: int) -> bytes:
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except PermissionError:
        raise AttachError(permission_message(pid)) from None
    except FileNotFoundError:
        raise AttachError(f"process {pid} exited") from None
    try:
        return os.pread(fd, size, addr)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES, errno.EIO):
            raise AttachError(permission_message(pid)) from None
        raise
    finally:
        os.close(fd)


def permission_message(pid: int) -> str:
    """Why ptrace was refused, as far as can be told, and what to do."""
    tracer = _tracer_of(pid)
    if tracer:
        return (f"permission denied: process {pid} is already being traced by process {tracer} "
                f"({_exe(tracer)}): a process has one tracer at a time; detach that one first")
    scope = ""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            value = f.read().strip()
        if value != "0":
            scope = (f"; /proc/sys/kernel/yama/ptrace_scope is {value}: run fentry as root, or "
                     "`sysctl kernel.yama.ptrace_scope=0`")
    except OSError:
        pass
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = None
    who = (f" (it belongs to uid {owner}, you are uid {os.getuid()}: attach as that user or as root)"
           if owner is not None and owner != os.getuid() and os.getuid() != 0 else "")
    return f"permission denied: cannot trace process {pid}{who}{scope}"


def _denied_because(pid: int) -> str:
    """The kernel refused us process ``pid``'s files: why, as far as can be told."""
    if os.getuid() == 0:
        return ("permission denied, even to root: the kernel protects this process (it may be "
                "not dumpable, in another user namespace or container, or guarded by a "
                "security module); fentry cannot attach to it from here")
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = None
    if owner is not None and owner != os.getuid():
        return (f"permission denied: it belongs to uid {owner}, you are uid {os.getuid()}; "
                "attach as that user, or as root")
    return "permission denied (the process may not be dumpable); try as root"


def _tracer_of(pid: int) -> int:
    """The pid tracing ``pid`` (a debugger, strace), or 0."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _find_syscall(pid: int, maps: list[Mapping]) -> int:
    """The address of a ``syscall`` instruction in the target's libc text
    (read from the file: text is what the file holds)."""
    for m in maps:
        name = os.path.basename(m.path)
        if "x" in m.perms and name.startswith(("libc.so", "libc-")):
            with open(_file_path(pid, m.path), "rb") as f, \
                    mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as text:
                at = text.find(b"\x0f\x05", m.offset, m.offset + m.end - m.start)
            if at >= 0:
                return int(m.start + at - m.offset)
    return 0


# -- the bootstrap

BOOTSTRAP = """\
def _fentry_bootstrap(token, parent, error_file):
    import os
    if not os.path.exists(token):
        return                  # the client gave up waiting: do nothing
    os.unlink(token)
    # (Not threading: fentry never imports it, pythreads.py.  3.12's takes
    # the thread that first imports it for the main thread, and a program
    # without it runs as it would without fentry.)
    import _thread
    import signal
    def start():
        try:
            import sys
            from importlib.machinery import PathFinder
            from importlib.util import module_from_spec
            if "fentry" not in sys.modules:
                spec = PathFinder.find_spec("fentry", [parent])
                module = module_from_spec(spec)
                sys.modules["fentry"] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules["fentry"]
                    raise
            from fentry.control import agent
            agent.attach()
        except BaseException:
            import traceback
            with open(error_file, "w") as f:
                f.write(traceback.format_exc())
    # Born with every signal blocked: they are the program's (control/threads.py).
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        _thread.start_new_thread(start, ())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
try:
    _fentry_bootstrap(%r, %r, %r)
except BaseException:
    pass
"""


def bootstrap_code(token: str, error_file: str) -> str:
    """One line for PyRun_SimpleString: binds nothing in ``__main__``."""
    return f"exec({BOOTSTRAP % (token, PACKAGE_PARENT, error_file)!r}, {{}})"


def _prepare_dir(pid: int) -> str:
    """The target's control directory (0700), made by us for it; a token file in it."""
    path = socket_dir(pid)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if not os.path.isdir(path) or os.path.islink(path) or st.st_mode & 0o077:
            raise AttachError(f"{path} exists and is not a private directory: remove it") from None
    owner = os.stat(f"/proc/{pid}").st_uid
    if os.stat(path).st_uid != owner:
        os.chown(path, owner, -1)
    token = os.path.join(path, f"attach-{os.urandom(8).hex()}")
    with open(token, "w"):
        pass
    if os.getuid() == 0:
        os.chown(token, owner, -1)
    try:
        os.unlink(os.path.join(path, ERROR_FILE))
    except FileNotFoundError:
        pass
    return token


def _give_up(pid: int, token: str) -> None:
    try:
        os.unlink(token)
    except FileNotFoundError:
        return          # the bootstrap took it: it is running after all
    try:
        os.rmdir(socket_dir(pid))
    except OSError:
        pass


def blocked_in(pid: int) -> str:
    """What the target's main thread waits in, from the kernel's wchan."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        wchan = ""
    return f" (it waits in {wchan})" if wchan and wchan != "0" else ""


def inject(pid: int, method: str = "auto", timeout: float = 5.0) -> Injection:
    """Start the agent in process ``pid``; return once its control socket is
    up.  Raises AttachError, leaving the target untouched, if it cannot."""
    if agent_there(pid):
        return Injection("reused", 0.0)
    target = inspect_target(pid)
    if method == "auto":
        if sys.version_info >= (3, 14) and target.version[:2] == sys.version_info[:2]:
            method = "remote_exec"
        elif os.uname().machine == "x86_64" and target.libc_syscall:
            method = "ptrace"
        else:
            method = "gdb"
    token = _prepare_dir(pid)
    page = 0
    error_file = os.path.join(socket_dir(pid), ERROR_FILE)
    code = bootstrap_code(token, error_file)
    try:
        if method == "ptrace":
            bootstrap = code.encode() + b"\0"
            pause, page = _inject_ptrace(target, bootstrap)
        elif method == "gdb":
            pause = _inject_gdb(target, code)
        elif method == "remote_exec":
            pause = _inject_remote_exec(target, code)
        else:
            raise AttachError(f"unknown injector {method!r} (ptrace, gdb, remote_exec)")
    except BaseException:
        _give_up(pid, token)
        raise
    deadline = time.monotonic() + timeout
    path = socket_path(pid)
    while not os.path.exists(path):
        if os.path.exists(error_file):
            time.sleep(0.01)
            with open(error_file) as f:
                detail = f.read()
            os.unlink(error_file)
            _give_up(pid, token)
            raise AttachError(f"fentry's agent failed to start in process {pid}:\n{detail}")
        if not alive(pid):
            _give_up(pid, token)
            raise AttachError(f"process {pid} exited during attach")
        if time.monotonic() > deadline:
            _give_up(pid, token)
            raise AttachError(
                f"process {pid} did not run the bootstrap within {timeout:g} s: its main thread "
                f"has not run Python code{blocked_in(pid)}.  Nothing was changed; try again when "
                "it is running Python (or with a longer --timeout)")
        time.sleep(0.002)
    if method == "ptrace" and page:
        pause += _unmap_page(target, page, len(bootstrap))
    return Injection(method, pause)


# -- injector: ptrace (x86-64)

PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_CONT, PTRACE_SINGLESTEP = 12, 13, 7, 9
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
REGS = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
        "rsp ss fs_base gs_base ds es fs gs").split()
MINUS_ONE = (1 << 64) - 1
SYS_MMAP, SYS_MUNMAP = 9, 11


class _Regs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in REGS]


_libc = None


def _ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        _libc.ptrace.restype = ctypes.c_long
    if _libc.ptrace(request, pid, addr, data) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class _Tracee:
    """The target's main thread, stopped under ptrace for as short as possible."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pending_signal = 0     # a signal that arrived meanwhile: delivered at detach

    def wait_stop(self, timeout: float) -> tuple[int, int]:
        """(signal, ptrace event) of the next stop."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG | WALL)
            if pid:
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    raise AttachError(f"process {self.pid} exited during attach")
                return os.WSTOPSIG(status), status >> 16
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.0002)

    def stop(self) -> None:
        try:
            _ptrace(PTRACE_SEIZE, self.pid)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise AttachError(f"process {self.pid} exited during attach") from None
            if e.errno in (errno.EPERM, errno.EACCES):
                raise AttachError(permission_message(self.pid)) from None
            raise
        _ptrace(PTRACE_INTERRUPT, self.pid)
        self.expect_stop(signal.SIGTRAP, 2.0)

    def expect_stop(self, want: int, timeout: float) -> None:
        """Wait for the stop we caused; other signals are held for detach."""
        while True:
            sig, event = self.wait_stop(timeout)
            if sig == want or event == PTRACE_EVENT_STOP:
                return
            if sig == signal.SIGSEGV and want != signal.SIGSEGV:
                raise AttachError(f"process {self.pid}: unexpected fault during attach")
            self.pending_signal = sig       # not now; it is delivered at detach
            _ptrace(PTRACE_CONT, self.pid, 0, 0)

    def regs(self) -> _Regs:
        regs = _Regs()
        _ptrace(PTRACE_GETREGS, self.pid, 0, ctypes.addressof(regs))
        return regs

    def set_regs(self, regs: _Regs) -> None:
        _ptrace(PTRACE_SETREGS, self.pid, 0, ctypes.addressof(regs))

    def detach(self) -> None:
        _ptrace(PTRACE_DETACH, self.pid, 0, self.pending_signal)


# A thread stopped in a system call shows one of these in rax (the kernel
# restarts the call when it resumes), with the call's number in orig_rax.
ERESTART = {MINUS_ONE + 1 - e for e in (512, 513, 514, 516)} | {MINUS_ONE + 1 - 4}   # and -EINTR
EINTR_RESULT = MINUS_ONE + 1 - 4
SYS_FUTEX = 202
STACK_SKIP = 512        # past the red zone below rsp, for our calls' frames


# While the target's thread runs our calls with its registers changed, this
# process must not die of a signal: the thread would go on from there.
# (SIGKILL cannot be held; nothing can be done about that one.)
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE}


def _signals_held[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def held(*args: P.args, **kwargs: P.kwargs) -> R:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
        try:
            return func(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return held


@_signals_held
def _inject_ptrace(target: Target, code: bytes) -> tuple[float, int]:
    """Run ``PyRun_SimpleString(code)`` in the target's main thread at a safe point.

    Where the thread was stopped decides which:

    - running (it holds the GIL, or is about to): the code is queued with
      ``Py_AddPendingCall``; the thread runs it between two bytecodes.
    - blocked in a system call other than futex, without the GIL (time.sleep,
      select, accept, read...): the thread is where a C extension that let go
      of the GIL is, and may well stay there; it makes the call itself, as a
      C callback would: ``PyGILState_Ensure(); PyRun_SimpleString(code);
      PyGILState_Release()``, then goes back into its system call.
    - waiting on a lock (futex): the code is queued, and the wait ends with
      EINTR, as a signal ends it; CPython's lock wait then runs pending calls
      (thread.join(), queue.get(), lock.acquire()).

    Returns how long the thread was stopped, and the page the bootstrap is
    in if it is still needed (queued; 0 if it already ran and the page is
    gone)."""
    pid = target.pid
    tracee = _Tracee(pid)
    started = time.perf_counter()
    tracee.stop()
    saved = tracee.regs()
    resume = _Regs.from_buffer_copy(saved)
    try:
        in_syscall = saved.orig_rax != MINUS_ONE and saved.rax in ERESTART
        page = _map_page(tracee, target, saved, len(code))
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(page)
            mem.write(code)
            call = _Caller(tracee, saved, mem)
            holds_gil = not in_syscall or call(target.symbols["PyGILState_Check"])
            if in_syscall and not holds_gil and saved.orig_rax != SYS_FUTEX:
                _run_in_thread(call, tracee, target, saved, page, len(code))
                page = 0
            else:
                _queue_pending_call(call, tracee, target, page)
                if in_syscall and saved.orig_rax == SYS_FUTEX:
                    resume.rax = EINTR_RESULT
    finally:
        tracee.set_regs(resume)
        tracee.detach()
    return time.perf_counter() - started, page


def _run_in_thread(call: _Caller, tracee: _Tracee, target: Target, saved: _Regs,
                   page: int, size: int) -> None:
    """The stopped thread, blocked without the GIL, runs the bootstrap at
    ``page`` now, as a C callback would; then its page is unmapped."""
    state = call(target.symbols["PyGILState_Ensure"], timeout=30.0)
    result = call(target.symbols["PyRun_SimpleString"], page, timeout=30.0)
    call(target.symbols["PyGILState_Release"], state & 0xFFFFFFFF)
    _syscall(tracee, target, saved, SYS_MUNMAP, page, _pages(size))
    if ctypes.c_int(result & 0xFFFFFFFF).value != 0:
        raise AttachError(f"process {tracee.pid}: the bootstrap failed to run")


def _queue_pending_call(call: _Caller, tracee: _Tracee, target: Target, page: int) -> None:
    """Queue ``PyRun_SimpleString(page)`` with ``Py_AddPendingCall``: the
    thread runs it between two bytecodes."""
    try:
        result = call(target.symbols["Py_AddPendingCall"],
                      target.symbols["PyRun_SimpleString"], page)
    except TimeoutError:
        # It waits on the pending-calls lock, held where we stopped it:
        # put it back there, untouched, and say so.
        _ptrace(PTRACE_INTERRUPT, tracee.pid)
        tracee.expect_stop(signal.SIGTRAP, 2.0)
        raise AttachError(f"process {tracee.pid} is busy (its pending-call queue is locked); "
                          "nothing was changed, try again") from None
    if ctypes.c_int(result & 0xFFFFFFFF).value != 0:
        raise AttachError(f"process {tracee.pid}: Py_AddPendingCall failed (its queue is "
                          "full); try again")


def _syscall(tracee: _Tracee, target: Target, saved: _Regs, nr: int, *args: int) -> int:
    """Make system call ``nr`` in the stopped thread: the `syscall`
    instruction of its libc, one step.  Returns rax."""
    regs = _Regs.from_buffer_copy(saved)
    regs.rip, regs.rax, regs.orig_rax = target.libc_syscall, nr, MINUS_ONE
    for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
        setattr(regs, name, value)
    tracee.set_regs(regs)
    _ptrace(PTRACE_SINGLESTEP, tracee.pid)
    tracee.expect_stop(signal.SIGTRAP, 2.0)
    return int(tracee.regs().rax)


def _map_page(tracee: _Tracee, target: Target, saved: _Regs, size: int) -> int:
    """An anonymous read-write mapping of ``size`` bytes in the target."""
    page = _syscall(tracee, target, saved, SYS_MMAP, 0, _pages(size), 3, 0x22, MINUS_ONE, 0)
    if page >= MINUS_ONE - 4095:
        raise AttachError(f"process {tracee.pid}: mmap failed in the target "
                          f"({os.strerror(MINUS_ONE + 1 - page)})")
    return page


def _pages(size: int) -> int:
    return (size + 0xFFF) & ~0xFFF


@_signals_held
def _unmap_page(target: Target, page: int, size: int) -> float:
    """Give the bootstrap's page back, once the bootstrap has run (it is read
    only while compiled).  Another stop of the main thread, as short."""
    tracee = _Tracee(target.pid)
    started = time.perf_counter()
    tracee.stop()
    saved = tracee.regs()
    try:
        _syscall(tracee, target, saved, SYS_MUNMAP, page, _pages(size))
    finally:
        tracee.set_regs(saved)
        tracee.detach()
    return time.perf_counter() - started


class _Caller:
    """Calls a C function in the stopped thread: arguments in registers, a
    return address of 0, whose fault stops the thread again with the result
    in rax."""

    def __init__(self, tracee: _Tracee, saved: _Regs, mem: BinaryIO) -> None:
        self.tracee = tracee
        self.saved = saved
        self.sp = ((saved.rsp - STACK_SKIP) & ~0xF) - 8      # aligned as just after a call
        mem.seek(self.sp)
        mem.write(b"\0" * 8)

    def __call__(self, func: int, *args: int, timeout: float = 1.0) -> int:
        regs = _Regs.from_buffer_copy(self.saved)
        regs.rip, regs.rsp, regs.rax, regs.orig_rax = func, self.sp, 0, MINUS_ONE
        for name, value in zip(("rdi", "rsi", "rdx"), args):
            setattr(regs, name, value)
        self.tracee.set_regs(regs)
        _ptrace(PTRACE_CONT, self.tracee.pid)
        self.tracee.expect_stop(signal.SIGSEGV, timeout)
        return int(self.tracee.regs().rax)


# -- injector: gdb

def _inject_gdb(target: Target, code: str) -> float:
    import shutil
    import subprocess
    gdb = shutil.which("gdb")
    if gdb is None:
        raise AttachError("gdb is needed to attach here and is not installed "
                          "(apt-get install gdb, or use --injector ptrace on x86-64)")
    broken = _gdb_call_breaks(gdb)
    if broken:
        raise AttachError(f"gdb cannot call functions safely on this machine: in a scratch "
                          f"process it failed to restore the registers ({broken}), which would "
                          f"break process {target.pid}; it was not touched (use --injector ptrace)")
    literal = code.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    started = time.perf_counter()
    proc = subprocess.run(
        [gdb, "-p", str(target.pid), "-batch", "-nx", "-q",
         "-ex", "set confirm off",
         "-ex", f'call (int)Py_AddPendingCall((void*)PyRun_SimpleString, (char*)"{literal}")'],
        capture_output=True, text=True, timeout=60)
    pause = time.perf_counter() - started
    if "$1 = 0" not in proc.stdout:
        text = (proc.stdout + proc.stderr).strip()
        if "ptrace" in text and "ermission" in text:
            raise AttachError(permission_message(target.pid))
        raise AttachError(f"gdb could not queue the bootstrap in process {target.pid}:\n{text}")
    return pause


def _gdb_call_breaks(gdb: str) -> str | None:
    """What goes wrong when gdb calls a function in a process blocked in a
    system call, tried on a scratch ``sleep`` (None: nothing).  Some gdb,
    kernel and CPU combinations cannot write the extended register state
    back: the interrupted call then fails in the program (errno 514)."""
    import subprocess
    scratch = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.05)            # into its nanosleep
        proc = subprocess.run([gdb, "-p", str(scratch.pid), "-batch", "-nx", "-q",
                               "-ex", "set confirm off", "-ex", "call (int)getpid()"],
                              capture_output=True, text=True, timeout=60)
        text = proc.stdout + proc.stderr
        time.sleep(0.05)
        failed = [line.strip() for line in text.splitlines() if line.startswith("Couldn't")]
        if failed:
            return failed[0]
        if f"$1 = {scratch.pid}" not in text:
            return text.strip().splitlines()[-1] if text.strip() else "no answer"
        if scratch.poll() is not None:
            err = scratch.stderr.read().decode().strip() if scratch.stderr else ""
            return f"the scratch process died: {err}"
        return None
    finally:
        scratch.kill()
        scratch.wait()


# -- injector: sys.remote_exec (3.14+)

def _inject_remote_exec(target: Target, code: str) -> float:
    script = os.path.join(socket_dir(target.pid), "bootstrap.py")
    with open(script, "w") as f:
        f.write(code + "\n")
    started = time.perf_counter()
    try:
        sys.remote_exec(target.pid, script)     # type: ignore[attr-defined]
    except PermissionError:
        raise AttachError(permission_message(target.pid)) from None
    except (OSError, RuntimeError) as e:
        raise AttachError(f"sys.remote_exec into process {target.pid} failed: {e}") from None
    return time.perf_counter() - started
