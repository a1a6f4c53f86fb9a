"""symbols: the kallsyms of a Python process.

A symbol is ``MOD:QUALNAME`` (``shop:Cart.add``, ``__main__:fib``,
``pkg.sub:outer.<locals>.inner``) and names one function code object.  Module
and class bodies are not functions and are not symbols.  The table is built by
walking loaded modules (functions, methods, static/class methods, properties,
decorated functions through ``__wrapped__``, ``functools.partial``, and nested
code through ``co_consts``); code seen later is named from its frame's module.

A module not imported yet is looked into without running it: ``source_functions``
finds it as ``import`` would and compiles its source.
"""

from __future__ import annotations

import _thread
import functools
import os
import re
import sys
import warnings
import weakref
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType, FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, Any

from .lifetime import pop_at_death

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

CO_OPTIMIZED = 0x0001        # inspect.CO_OPTIMIZED (inspect itself is slow to import)

MAIN = "__main__"
# A multiprocessing child started by spawn or forkserver runs the program's
# main script as module __mp_main__: its functions go by __main__, as in the parent.
MP_MAIN = "__mp_main__"

# fentry's own code is never traced (the NOKPROBE_SYMBOL of fentry).
FENTRY_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _SymbolRef(weakref.ref):  # type: ignore[type-arg]  # (a ref to a CodeType)
    """A symbol as the table keeps it: its code, weakly (the entry goes when
    the code dies: see lifetime.py), and its module."""
    __slots__ = ("module",)
    module: str


class Symbol(namedtuple("Symbol", "module qualname code")):
    """One function code object and its name: ``module``, ``qualname``, ``code``."""
    __slots__ = ()

    @property
    def name(self) -> str:
        return f"{self.module}:{self.qualname}"


def module_name(name: str) -> str:
    """The name a module's symbols go by: the module's own, but ``__main__``
    for a multiprocessing child's ``__mp_main__``."""
    return MAIN if name == MP_MAIN else name


def is_main_module(name: str) -> bool:
    """The program's own main module, whose body (``__main__:<module>``) is
    traced like a function: the root of a whole program's trace."""
    return name == MAIN


def is_function_code(code: CodeType) -> bool:
    """Functions, lambdas and generator expressions; not module or class bodies."""
    return bool(code.co_flags & CO_OPTIMIZED)


def is_fentry_code(code: CodeType) -> bool:
    return code.co_filename.startswith(FENTRY_DIR)


def is_fentry_module(module: str) -> bool:
    """fentry's modules: also the home of code they generate (dataclasses')."""
    return module == "fentry" or module.startswith("fentry.")


# Where a caller is in its code: the ``parent_ip`` of ftrace and the return
# address of a kretprobe, read from the caller's frame (``f_lasti``).
if sys.version_info < (3, 13):
    def call_site(code: CodeType, lasti: int) -> int:
        """The offset of the CALL a caller is in: 3.12's f_lasti points at its
        last inline CACHE entry (opcode 0, which no instruction has)."""
        co = code.co_code
        while lasti > 0 and co[lasti] == 0:
            lasti -= 2
        return lasti
else:
    def call_site(code: CodeType, lasti: int) -> int:
        """The offset of the instruction a caller is in (3.13's f_lasti)."""
        return lasti


def nested_codes(code: CodeType) -> Iterator[CodeType]:
    """``code`` and every code object nested in it, depth first."""
    stack = [code]
    while stack:
        c = stack.pop()
        yield c
        stack.extend(k for k in reversed(c.co_consts) if isinstance(k, CodeType))


def _unwrap(obj: object, depth: int = 0) -> Iterator[FunctionType]:
    """Function objects reachable from a module or class attribute."""
    if depth > 8:
        return
    if isinstance(obj, (staticmethod, classmethod)):
        yield from _unwrap(obj.__func__, depth + 1)
    elif isinstance(obj, property):
        for f in (obj.fget, obj.fset, obj.fdel):
            if f is not None:
                yield from _unwrap(f, depth + 1)
    elif isinstance(obj, functools.partial):
        yield from _unwrap(obj.func, depth + 1)
    elif isinstance(obj, MethodType):
        yield from _unwrap(obj.__func__, depth + 1)
    elif isinstance(obj, FunctionType):
        yield obj
        wrapped = obj.__dict__.get("__wrapped__")
        if wrapped is not None:
            yield from _unwrap(wrapped, depth + 1)
    elif isinstance(obj, functools.cached_property):
        yield from _unwrap(obj.func, depth + 1)


def module_functions(module: ModuleType) -> Iterator[FunctionType]:
    """Function objects defined in ``module`` (its dict and its classes')."""
    modname = module.__name__
    try:
        items = list(vars(module).values())
    except TypeError:
        return
    seen_classes: set[int] = set()
    stack = items
    while stack:
        obj = stack.pop()
        if isinstance(obj, type):
            if id(obj) in seen_classes or getattr(obj, "__module__", None) != modname:
                continue
            seen_classes.add(id(obj))
            try:
                stack.extend(vars(obj).values())
            except TypeError:
                pass
            continue
        for func in _unwrap(obj):
            if func.__globals__ is vars(module) or func.__module__ == modname:
                yield func


class SymbolTable:
    """Code objects by name, and names by code object.

    Cheap to keep: a module is walked once, the first time a listing or a
    lookup needs it; modules imported later are walked when next asked.
    A code object is held weakly: its symbol goes when it dies.
    """

    def __init__(self) -> None:
        self._by_code: dict[int, _SymbolRef] = {}
        self._scanned: dict[str, int] = {}   # module name -> id(module) walked

    def refresh(self) -> None:
        for modname, module in list(sys.modules.items()):
            if module is None or self._scanned.get(modname) == id(module):
                continue
            if modname == "fentry" or modname.startswith("fentry."):
                continue
            self._scanned[modname] = id(module)
            self.add_module(module)

    def add_module(self, module: ModuleType) -> None:
        modname = module.__name__
        for func in module_functions(module):
            self.add_code(func.__code__, modname, func.__qualname__)

    def add_code(self, code: CodeType, module: str, qualname: str | None = None) -> Symbol | None:
        """Name ``code`` (and the code nested in it) as belonging to ``module``."""
        module = module_name(module)
        if is_fentry_module(module):
            return None
        sym = None
        for c in nested_codes(code):
            if id(c) in self._by_code or is_fentry_code(c) or not (
                    is_function_code(c) or (c is code and is_main_module(module)
                    and c.co_name == "<module>")):
                continue
            # The code object whose co_qualname is the name wins: a wrapper made
            # by functools.wraps carries its wrapped function's __qualname__.
            ref = pop_at_death(c, self._by_code, id(c), _SymbolRef)
            ref.module = module
            self._by_code[id(c)] = ref
            if c is code:
                sym = Symbol(module, c.co_qualname, c)
        return sym if sym is not None else self.lookup(code)

    def _live(self) -> list[Symbol]:
        """Every symbol, as (module, qualname, code)."""
        out = []
        for ref in list(self._by_code.values()):
            code = ref()
            if code is not None:
                out.append(Symbol(ref.module, code.co_qualname, code))
        return out

    def named(self, qualname: str, module: str | None = None) -> list[Symbol]:
        """The loaded functions named ``qualname`` (in ``module``, if given)."""
        self.refresh()
        return [s for s in self._live()
                if s.qualname == qualname and (module is None or s.module == module)]

    def lookup(self, code: CodeType) -> Symbol | None:
        ref = self._by_code.get(id(code))
        # (ref() is code: the entry of a dead code is gone before its address is reused.)
        return Symbol(ref.module, code.co_qualname, code) if ref is not None and ref() is code \
            else None

    def name_of(self, code: CodeType) -> str:
        """``MOD:QUALNAME`` of a symbol; just the qualified name of other code."""
        sym = self.lookup(code)
        return sym.name if sym is not None else code.co_qualname

    def symbols(self) -> list[Symbol]:
        self.refresh()
        return sorted(self._live(), key=lambda s: (s.module, s.qualname))

    def available_filter_functions(self) -> str:
        """One ``QUALNAME [MOD]`` per line, as the kernel's ``func [module]``."""
        return "".join(f"{s.qualname} [{s.module}]\n" for s in self.symbols())


SYMBOLS = SymbolTable()


# ---------------------------------------------------------------- modules not imported yet

_NOT_FOUND = object()
_batch = _thread._local()      # .codes: module name -> its compiled code, while a batch runs


@contextmanager
def check_batch() -> Iterator[None]:
    """Within it, a module's source is compiled once, however many probes name it."""
    if getattr(_batch, "codes", None) is not None:
        yield
        return
    _batch.codes = {}
    try:
        yield
    finally:
        _batch.codes = None


def source_functions(module: str, qualname: str) -> list[CodeType] | None:
    """The functions ``qualname`` of ``module``, compiled from its source, none
    of which runs; None if it has no source to compile (an extension or
    namespace module).  ModuleNotFoundError if it cannot be found."""
    codes = getattr(_batch, "codes", None)
    if codes is not None and module in codes:
        code = codes[module]
    else:
        code = _module_code(module)
        if codes is not None:
            codes[module] = code
    if code is _NOT_FOUND:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    if code is None:
        return None
    return [c for c in nested_codes(code) if is_function_code(c) and c.co_qualname == qualname]


def _module_code(name: str) -> CodeType | object | None:
    """The code of module ``name`` as ``import`` would make it, or None, or _NOT_FOUND."""
    from importlib.machinery import BuiltinImporter, FrozenImporter, SourceFileLoader
    if name == MAIN:
        path = _main_path()
        return None if path is None else _compile(SourceFileLoader(MAIN, path), MAIN, path)
    try:
        spec = find_module_spec(name)
    except Exception:       # a path hook's, or a namespace package's in one not imported
        return None
    if spec is None:
        if BuiltinImporter.find_spec(name) or FrozenImporter.find_spec(name):
            return None     # no source: C, or frozen into the interpreter
        return _NOT_FOUND
    return _compile(spec.loader, name, spec.origin)


def find_module_spec(name: str) -> ModuleSpec | None:
    """Where ``import name`` would find module ``name`` (its ModuleSpec, or None).

    Unlike importlib.util.find_spec, nothing is imported: that would run the
    parent packages' ``__init__``.  A parent already imported gives its
    ``__path__``; one that is not is located in turn.  Only the path finder is
    asked: other meta path finders are the program's code.
    """
    from importlib.machinery import PathFinder
    path: list[str] | None = _import_path()
    spec = None
    parts = name.split(".")
    for i in range(len(parts)):
        prefix = ".".join(parts[:i + 1])
        parent = sys.modules.get(prefix) if i < len(parts) - 1 else None
        if parent is not None:
            path = vars(parent).get("__path__")    # vars(): no module __getattr__ runs
        else:
            spec = PathFinder.find_spec(prefix, path)
            if spec is None:
                return None
            path = spec.submodule_search_locations
        if path is None and i < len(parts) - 1:
            return None     # not a package: it has no submodules
    return spec


def _unstarted_argv0() -> str | None:
    """``sys.argv[0]`` while ``__main__`` has no ``__file__``: before the
    script has started (fentry run sets its probes up then), or with -c, -m
    not started yet, or the REPL."""
    main = sys.modules.get(MAIN)
    if main is None or "__file__" in vars(main) or not sys.argv:
        return None
    return sys.argv[0]


def _main_path() -> str | None:
    """The program's script: ``__main__.__file__``, or the one about to start."""
    main = sys.modules.get(MAIN)
    path = (vars(main).get("__file__") if main is not None else None) or _unstarted_argv0()
    return path if isinstance(path, str) and path not in ("-c", "-m") and os.path.isfile(path) \
        else None


def _import_path() -> list[str]:
    """``sys.path`` as the program's imports see it: before its script has
    started, Python has yet to put the script's directory first (the current
    one for -m and -c), as it does unless -P."""
    argv0 = _unstarted_argv0()
    if argv0 is None or sys.flags.safe_path:
        return sys.path
    if argv0 == "-m":
        first = os.getcwd()
    elif argv0 in ("-c", ""):
        first = ""
    else:
        first = argv0 if os.path.isdir(argv0) else os.path.dirname(os.path.realpath(argv0))
    return sys.path if first in sys.path else [first, *sys.path]


def _compile(loader: Any, name: str, path: str | None) -> CodeType | None:
    """The module's code from its loader's source (or its .pyc alone, if it
    has no source: unmarshalled, not run); None when there is neither."""
    from importlib.machinery import SourcelessFileLoader
    try:
        if isinstance(loader, SourcelessFileLoader):
            return loader.get_code(name)
        source = loader.get_source(name) if hasattr(loader, "get_source") else None
        if source is None or path is None:
            return None
        # The warnings the compiler gives (a SyntaxWarning) are the import's
        # to give, if the program imports it: only those, attributed to this
        # file, are ignored meanwhile.
        ignore = ("ignore", None, Warning, re.compile(re.escape(path.removesuffix(".py")) + r"\Z"), 0)
        filters: list[Any] = warnings.filters   # type: ignore[assignment]  # (a list)
        filters.insert(0, ignore)
        try:
            # dont_inherit: not this module's __future__ flags; optimize as import does.
            return compile(source, path, "exec", dont_inherit=True)
        finally:
            filters.remove(ignore)
    except Exception:       # whatever the loader or the compiler says: nothing to check against
        return None
