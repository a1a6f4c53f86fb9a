"""symbols: naming functions as MOD:QUALNAME, and finding them in modules."""

from __future__ import annotations

import importlib
import sys

import pytest

import fentry
from fentry.symbols import SymbolTable

SOURCE = '''
import functools

def deco(func):
    @functools.wraps(func)
    def wrapper(*args):
        return func(*args)
    return wrapper

class Cart:
    def add(self, x):
        return x
    @staticmethod
    def zero():
        return 0
    @classmethod
    def make(cls):
        return cls()
    @property
    def size(self):
        return 0
    class Inner:
        def deep(self):
            return 1

def outer():
    def inner():
        return lambda: 1
    return inner

@deco
def decorated(x):
    return x

def plain(a, b):
    return a + b

part = functools.partial(plain, 1)
'''


@pytest.fixture
def symmod(tmp_path, monkeypatch):
    (tmp_path / "symmod.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("symmod")
    yield mod
    sys.modules.pop("symmod", None)


def test_names_every_kind_of_function(symmod):
    table = SymbolTable()
    table.add_module(symmod)
    names = {s.name for s in table._by_code.values()}
    assert {"symmod:Cart.add", "symmod:Cart.zero", "symmod:Cart.make", "symmod:Cart.size",
            "symmod:Cart.Inner.deep", "symmod:outer", "symmod:outer.<locals>.inner",
            "symmod:outer.<locals>.inner.<locals>.<lambda>", "symmod:decorated",
            "symmod:deco.<locals>.wrapper", "symmod:deco", "symmod:plain"} <= names


def test_a_symbol_maps_to_its_code_object(symmod):
    table = SymbolTable()
    table.add_module(symmod)
    assert table.lookup(symmod.Cart.add.__code__).name == "symmod:Cart.add"
    assert table.lookup(symmod.decorated.__wrapped__.__code__).name == "symmod:decorated"
    assert table.lookup(symmod.part.func.__code__).name == "symmod:plain"


def test_available_filter_functions_format(symmod):
    text = fentry.tracefs().read("available_filter_functions")
    lines = text.splitlines()
    assert "Cart.Inner.deep [symmod]" in lines
    assert "outer.<locals>.inner [symmod]" in lines
    keys = [tuple(reversed(l[:-1].rsplit(" [", 1))) for l in lines]   # (module, qualname)
    assert keys == sorted(keys)


def test_filter_by_symbol_traces_nested_and_decorated_functions(symmod):
    calls = []
    ops = fentry.FtraceOps(lambda ip, p, o, r: calls.append(ip.code.co_qualname))
    ops.set_filter(["symmod:outer.<locals>.*", "symmod:decorated", "symmod:Cart.size"])
    fentry.register_ftrace_function(ops)
    symmod.outer()()()
    symmod.decorated(1)
    _ = symmod.Cart().size     # the property's getter is a call
    fentry.unregister_ftrace_function(ops)
    assert calls == ["outer.<locals>.inner", "outer.<locals>.inner.<locals>.<lambda>",
                     "decorated", "Cart.size"]


def test_fentry_itself_is_not_a_symbol():
    text = fentry.tracefs().read("available_filter_functions")
    assert not any(l.endswith("[fentry]") or "[fentry." in l for l in text.splitlines())
