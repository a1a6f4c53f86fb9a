"""FtraceOps: the callback, its four arguments, filters and dispatch."""

from __future__ import annotations

import dis
import importlib
import sys
import threading

import pytest

import fentry
from fentry import ftrace


class Cart:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)
        return self.total()

    def total(self):
        return len(self.items)

    @staticmethod
    def zero():
        return 0

    @classmethod
    def make(cls):
        return cls()


def shop(n):
    cart = Cart.make()
    for i in range(n):
        cart.add(i)
    Cart.zero()
    return cart


def untraced(x):
    return x + 1


class Recorder:
    def __init__(self, flags=0):
        self.calls = []
        self.ops = fentry.FtraceOps(self.cb, flags=flags)

    def cb(self, ip, parent_ip, ops, regs):
        self.calls.append((ip, parent_ip, ops, regs))

    def names(self):
        return [ip.code.co_qualname for ip, *_ in self.calls]


def test_callback_gets_ip_parent_ip_ops_and_no_regs():
    r = Recorder()
    r.ops.set_filter("Cart.add")
    fentry.register_ftrace_function(r.ops)
    shop(3)
    fentry.unregister_ftrace_function(r.ops)
    assert len(r.calls) == 3
    for ip, parent_ip, ops, regs in r.calls:
        assert ip.code is Cart.add.__code__ and ip.offset == 0
        assert parent_ip.code is shop.__code__
        assert ops is r.ops
        assert regs is None


def test_parent_ip_is_the_call_instruction_in_the_caller():
    r = Recorder()
    r.ops.set_filter("Cart.total")
    fentry.register_ftrace_function(r.ops)
    shop(1)
    fentry.unregister_ftrace_function(r.ops)
    (_, parent_ip, _, _), = r.calls
    assert parent_ip.code is Cart.add.__code__
    at = {i.offset: i for i in dis.get_instructions(parent_ip.code)}
    assert at[parent_ip.offset].opname.startswith("CALL")


def test_save_regs_passes_the_traced_frame():
    r = Recorder(flags=fentry.FTRACE_OPS_FL_SAVE_REGS)
    seen = []
    r.ops.func = lambda ip, parent_ip, ops, regs: seen.append(dict(regs.f_locals))
    r.ops.set_filter("Cart.add")
    fentry.register_ftrace_function(r.ops)
    shop(2)
    fentry.unregister_ftrace_function(r.ops)
    assert [s["item"] for s in seen] == [0, 1]


@pytest.mark.parametrize("filter_, notrace, expected", [
    ("Cart.*", "", {"Cart.__init__", "Cart.add", "Cart.total", "Cart.zero", "Cart.make"}),
    ("Cart.*", "Cart.total", {"Cart.__init__", "Cart.add", "Cart.zero", "Cart.make"}),
    ("Cart.* !Cart.add !Cart.total", "", {"Cart.__init__", "Cart.zero", "Cart.make"}),
    (f"{__name__}:shop", "", {"shop"}),
    (f"Cart.ad?:mod:{__name__}", "", {"Cart.add"}),
    ("Cart.add:mod:no_such_module", "", set()),
    (f"{__name__.rpartition('.')[2]}.shop", "", {"shop"}),
    ("", "Cart.*", {"shop"}),
])
def test_filter_grammar(filter_, notrace, expected):
    r = Recorder()
    r.ops.set_filter(filter_)
    r.ops.set_notrace(notrace)
    fentry.register_ftrace_function(r.ops)
    shop(2)
    fentry.unregister_ftrace_function(r.ops)
    names = set(r.names())
    if filter_:
        assert names == expected
    else:   # an empty filter means every function: ours, and anything shop calls
        assert expected <= names and not any(n.startswith("Cart.") for n in names)


def test_filter_list_form_and_append():
    r = Recorder()
    r.ops.set_filter(["Cart.add", "Cart.zero"])
    r.ops.set_filter("Cart.make", reset=False)
    fentry.register_ftrace_function(r.ops)
    shop(1)
    fentry.unregister_ftrace_function(r.ops)
    assert sorted(r.names()) == ["Cart.add", "Cart.make", "Cart.zero"]


def test_set_filter_ip_traces_exactly_that_site():
    r = Recorder()
    r.ops.set_filter_ip(fentry.Ip(Cart.zero.__code__, 0))
    fentry.register_ftrace_function(r.ops)
    shop(2)
    fentry.unregister_ftrace_function(r.ops)
    assert r.names() == ["Cart.zero"]


def test_filter_change_takes_effect_at_once():
    r = Recorder()
    r.ops.set_filter("Cart.add")
    fentry.register_ftrace_function(r.ops)
    shop(2)
    r.ops.set_filter("Cart.total")
    shop(3)
    fentry.unregister_ftrace_function(r.ops)
    assert r.names() == ["Cart.add"] * 2 + ["Cart.total"] * 3


def test_two_ops_on_one_function_each_called_once_per_call():
    a, b = Recorder(), Recorder()
    a.ops.set_filter("Cart.add")
    b.ops.set_filter("Cart.add Cart.total")
    fentry.register_ftrace_function(a.ops)
    fentry.register_ftrace_function(b.ops)
    shop(4)
    fentry.unregister_ftrace_function(a.ops)
    shop(1)
    fentry.unregister_ftrace_function(b.ops)
    assert a.names() == ["Cart.add"] * 4
    assert b.names().count("Cart.add") == 5 and b.names().count("Cart.total") == 5
    # through the list function, parent_ip is still the caller's call site
    assert all(p.code is shop.__code__ for ip, p, _, _ in b.calls if ip.code is Cart.add.__code__)


def test_callback_exception_never_reaches_the_program():
    def bad(ip, parent_ip, ops, regs):
        raise RuntimeError("callback bug")
    ops = fentry.FtraceOps(bad)
    ops.set_filter("Cart.add")
    fentry.register_ftrace_function(ops)
    cart = shop(3)
    fentry.unregister_ftrace_function(ops)
    assert cart.items == [0, 1, 2]
    assert ops.errors == 3


def test_callback_calling_traced_code_does_not_recurse():
    calls = []

    def cb(ip, parent_ip, ops, regs):
        calls.append(ip.code.co_qualname)
        untraced(1)     # traced by this very ops: must not re-enter
    ops = fentry.FtraceOps(cb)
    ops.set_filter("untraced")
    fentry.register_ftrace_function(ops)
    untraced(0)
    untraced(0)
    fentry.unregister_ftrace_function(ops)
    assert calls == ["untraced", "untraced"]


def test_only_traced_code_gets_local_events():
    r = Recorder()
    r.ops.set_filter("Cart.add")
    fentry.register_ftrace_function(r.ops)
    shop(1)
    untraced(1)
    tool = ftrace._core.monitor.tool_id
    assert sys.monitoring.get_local_events(tool, Cart.add.__code__) != 0
    assert sys.monitoring.get_local_events(tool, untraced.__code__) == 0
    assert sys.monitoring.get_local_events(tool, shop.__code__) == 0
    fentry.unregister_ftrace_function(r.ops)
    assert sys.monitoring.get_local_events(tool, Cart.add.__code__) == 0
    assert sys.monitoring.get_tool(tool) is None


def test_module_imported_after_the_filter_is_traced(tmp_path, monkeypatch):
    (tmp_path / "late_mod.py").write_text("def late(x):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = Recorder()
    r.ops.set_filter("late_mod:late")
    fentry.register_ftrace_function(r.ops)
    late_mod = importlib.import_module("late_mod")
    assert late_mod.late(2) == 4
    late_mod.late(3)
    fentry.unregister_ftrace_function(r.ops)
    sys.modules.pop("late_mod", None)
    assert r.names() == ["late", "late"]


def test_calls_in_other_threads_are_traced():
    r = Recorder()
    r.ops.set_filter("Cart.add")
    fentry.register_ftrace_function(r.ops)
    threads = [threading.Thread(target=shop, args=(5,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fentry.unregister_ftrace_function(r.ops)
    assert len(r.calls) == 20


def test_bad_filter_is_refused_and_the_old_one_stays():
    r = Recorder()
    r.ops.set_filter("Cart.add")
    with pytest.raises(fentry.TraceError) as e:
        r.ops.set_filter("Cart.zero a:b:c")
    assert "Unknown filter command" in str(e.value)
    assert e.value.pos == len("Cart.zero a:")
    fentry.register_ftrace_function(r.ops)
    shop(1)
    fentry.unregister_ftrace_function(r.ops)
    assert r.names() == ["Cart.add"]


def test_registering_twice_is_an_error():
    r = Recorder()
    fentry.register_ftrace_function(r.ops)
    with pytest.raises(ValueError):
        fentry.register_ftrace_function(r.ops)
    fentry.unregister_ftrace_function(r.ops)
    with pytest.raises(ValueError):
        fentry.unregister_ftrace_function(r.ops)
