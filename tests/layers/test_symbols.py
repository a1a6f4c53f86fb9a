"""symbols: names (MOD:QUALNAME) of every kind of function, and the listing."""

from __future__ import annotations

import itertools
import re

import pytest
from helpers import Recorder

from fentry.symbols import SymbolTable

_serial = itertools.count()

SHOP_SOURCE = '''
import functools

def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper

class Cart:
    def add(self, x):
        return x

    @staticmethod
    def make():
        return Cart()

    @classmethod
    def named(cls):
        return cls()

    @property
    def size(self):
        return 0

    @logged
    def checkout(self):
        return 1

    class Inner:
        def deep(self):
            return 2

def outer():
    def inner():
        return lambda: 2
    return inner

square = lambda x: x * x

def _base(a, b):
    return a + b

plus1 = functools.partial(_base, 1)
del _base          # reachable only through the partial now
'''


@pytest.fixture
def shop(make_module):
    """A fresh module with one function of each kind (a new name each time)."""
    return make_module(f"symshop{next(_serial)}", SHOP_SOURCE)


def listing(fs, module) -> list[str]:
    return [line for line in fs.read("available_filter_functions").splitlines()
            if line.endswith(f" [{module.__name__}]")]


def test_available_filter_functions_lines_are_qualname_and_module(fs, shop):
    lines = fs.read("available_filter_functions").splitlines()
    assert lines
    assert all(re.fullmatch(r"\S+ \[[^\]\s]+\]", line) for line in lines), \
        [line for line in lines if not re.fullmatch(r"\S+ \[[^\]\s]+\]", line)][:5]
    assert f"Cart.add [{shop.__name__}]" in lines
    keys = [tuple(reversed(line[:-1].rsplit(" [", 1))) for line in lines]     # (module, qualname)
    assert keys == sorted(keys)


@pytest.mark.parametrize("qualname", [
    "Cart.add",                 # method
    "Cart.make",                # staticmethod
    "Cart.named",               # classmethod
    "Cart.size",                # property getter
    "outer",
    "Cart.Inner.deep",          # a method of a nested class
    "outer.<locals>.inner",     # nested, found through co_consts
    "outer.<locals>.inner.<locals>.<lambda>",
    "<lambda>",                 # lambda bound to a module global
    "Cart.checkout",            # the wrapped function, under its own qualname
    "logged.<locals>.wrapper",  # and the wrapper made by functools.wraps, under its own
    "_base",                    # reachable only through functools.partial
])
def test_each_kind_of_function_is_listed(fs, shop, qualname):
    assert f"{qualname} [{shop.__name__}]" in listing(fs, shop)


def test_module_and_class_bodies_are_not_symbols(fs, shop):
    names = [line.split()[0] for line in listing(fs, shop)]
    assert "<module>" not in names and "Cart" not in names


def test_fentry_itself_is_not_listed(fs, shop):
    assert not [line for line in fs.read("available_filter_functions").splitlines()
                if line.endswith(" [fentry]") or " [fentry." in line]


@pytest.mark.parametrize("qualname,call", [
    ("Cart.add", lambda m: m.Cart().add(1)),
    ("Cart.make", lambda m: m.Cart.make()),
    ("Cart.named", lambda m: m.Cart.named()),
    ("Cart.size", lambda m: m.Cart().size),
    ("Cart.Inner.deep", lambda m: m.Cart.Inner().deep()),
    ("outer.<locals>.inner", lambda m: m.outer()()),
    ("outer.<locals>.inner.<locals>.<lambda>", lambda m: m.outer()()()),
    ("<lambda>", lambda m: m.square(3)),
    ("Cart.checkout", lambda m: m.Cart().checkout()),
    ("_base", lambda m: m.plus1(2)),
])
def test_symbol_name_selects_that_function(register, shop, qualname, call):
    ops = register(Recorder(f"{shop.__name__}:{qualname}"))
    call(shop)
    assert ops.names() == [qualname]


def test_the_symbol_table_names_a_code_object(shop):
    table = SymbolTable()
    table.add_module(shop)
    assert table.lookup(shop.Cart.add.__code__).name == f"{shop.__name__}:Cart.add"
    assert table.lookup(shop.Cart.checkout.__wrapped__.__code__).name == f"{shop.__name__}:Cart.checkout"
    assert table.lookup(shop.plus1.func.__code__).name == f"{shop.__name__}:_base"


def test_wrapper_and_wrapped_are_told_apart(register, shop):
    wrapped = register(Recorder(f"{shop.__name__}:Cart.checkout"))
    wrapper = register(Recorder(f"{shop.__name__}:logged.<locals>.wrapper"))
    shop.Cart().checkout()
    assert [c.ip.code is shop.Cart.checkout.__wrapped__.__code__ for c in wrapped.calls] == [True]
    assert [c.ip.code is shop.Cart.checkout.__code__ for c in wrapper.calls] == [True]


def test_filter_set_before_import_traces_the_module_once_imported(register, make_module):
    name = f"symlate{next(_serial)}"
    ops = register(Recorder(f"{name}:*"))
    late = make_module(name, '''
        def greet(who):
            return helper(who) + "!"

        def helper(who):
            return "hello " + who
    ''')
    assert late.greet("you") == "hello you!"
    assert ops.names() == ["greet", "helper"]


def test_module_imported_later_is_listed(fs, make_module):
    before = fs.read("available_filter_functions")
    name = f"symlisted{next(_serial)}"
    assert f"[{name}]" not in before
    make_module(name, "def found():\n    return 1\n")
    assert f"found [{name}]" in fs.read("available_filter_functions").splitlines()


def test_code_made_at_run_time_is_named_by_its_module(register, shop):
    # (A word must select some function when written, as the kernel's; a glob
    # selects what appears later too.)
    ops = register(Recorder(f"{shop.__name__}:*"))
    exec("def made_later():\n    return 3\n", vars(shop))
    assert shop.made_later() == 3
    assert ops.names() == ["made_later"]
