"""symbols: the kallsyms of a Python process.

A symbol is ``MOD:QUALNAME`` (``shop:Cart.add``, ``__main__:fib``,
``pkg.sub:outer.<locals>.inner``) and names one function code object.  Module
and class bodies are not functions and are not symbols.  The table is built by
walking loaded modules (functions, methods, static/class methods, properties,
decorated functions through ``__wrapped__``, ``functools.partial``, and nested
code through ``co_consts``); code seen later is named from its frame's module.
"""

from __future__ import annotations

import functools
import os
import sys
from collections import namedtuple
from types import CodeType, FunctionType, MethodType, ModuleType

CO_OPTIMIZED = 0x0001        # inspect.CO_OPTIMIZED (inspect itself is slow to import)

MAIN = "__main__"
# A multiprocessing child started by spawn or forkserver runs the program's
# main script as module __mp_main__: its functions go by __main__, as in the parent.
MP_MAIN = "__mp_main__"

# fentry's own code is never traced (the NOKPROBE_SYMBOL of fentry).
FENTRY_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


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


def is_function_code(code: CodeType) -> bool:
    """Functions, lambdas and generator expressions; not module or class bodies."""
    return bool(code.co_flags & CO_OPTIMIZED)


def is_fentry_code(code: CodeType) -> bool:
    return code.co_filename.startswith(FENTRY_DIR)


def is_fentry_module(module: str) -> bool:
    """fentry's modules: also the home of code they generate (dataclasses')."""
    return module == "fentry" or module.startswith("fentry.")


def nested_codes(code: CodeType):
    """``code`` and every code object nested in it, depth first."""
    stack = [code]
    while stack:
        c = stack.pop()
        yield c
        stack.extend(k for k in reversed(c.co_consts) if isinstance(k, CodeType))


def _unwrap(obj, depth: int = 0):
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


def module_functions(module: ModuleType):
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
    """

    def __init__(self) -> None:
        self._by_code: dict[int, Symbol] = {}
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
            if not is_function_code(c) or is_fentry_code(c) or id(c) in self._by_code:
                continue
            # The code object whose co_qualname is the name wins: a wrapper made
            # by functools.wraps carries its wrapped function's __qualname__.
            name = c.co_qualname
            s = Symbol(module, name, c)
            self._by_code[id(c)] = s
            if c is code:
                sym = s
        return sym if sym is not None else self._by_code.get(id(code))

    def lookup(self, code: CodeType) -> Symbol | None:
        return self._by_code.get(id(code))

    def name_of(self, code: CodeType) -> str:
        """``MOD:QUALNAME`` of a symbol; just the qualified name of other code."""
        sym = self._by_code.get(id(code))
        return sym.name if sym is not None else code.co_qualname

    def symbols(self) -> list[Symbol]:
        self.refresh()
        return sorted(self._by_code.values(), key=lambda s: (s.module, s.qualname))

    def available_filter_functions(self) -> str:
        """One ``QUALNAME [MOD]`` per line, as the kernel's ``func [module]``."""
        return "".join(f"{s.qualname} [{s.module}]\n" for s in self.symbols())


SYMBOLS = SymbolTable()
