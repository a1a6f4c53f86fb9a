"""ftrace: FtraceOps, its callback's four arguments, the filter grammar, dispatch."""

from __future__ import annotations

import _thread
import asyncio
import dis
import fnmatch
import importlib
import sys
import textwrap
import threading

import pytest
from helpers import Recorder
from hypothesis import HealthCheck, given, settings, strategies as st

import fentry
import fentry.symbols
from fentry import TraceError

CALL_OPS = {"CALL", "CALL_KW", "CALL_FUNCTION_EX"}


# ---------------------------------------------------------------- the traced code

def target(a, b=0, *rest, **kw):
    return a + b


class Holder:
    def meth(self, x):
        return target(x)


def call_plain():
    return target(1)


def call_keywords():
    return target(1, b=2)


def call_star():
    args = (1, 2, 3)
    return target(*args, c=4)


def call_method():
    return Holder().meth(5)


def call_through_c():
    return list(map(target, [1, 2]))


def call_in_comprehension():
    return [target(i) for i in range(2)]


def traced_twice():
    return target(1) + target(2)


def call_in_generator():
    yield target(1)
    yield target(2)


async def call_in_coroutine():
    await asyncio.sleep(0)
    return target(3)


def call_as_key():
    return sorted([3, 1, 2], key=target)


def call_in_class_body():
    class Body:
        value = target(4)
    return Body


HERE = __name__


def names(ops):
    return ops.names()


# ---------------------------------------------------------------- the callback's arguments

def test_callback_gets_ip_parent_ip_ops_and_regs(register):
    ops = register(Recorder(f"{HERE}:target"))
    call_plain()
    [call] = ops.calls
    assert call.ip.code is target.__code__
    assert call.ip.offset == 0
    assert call.parent_ip.code is call_plain.__code__
    assert call.ops is ops
    assert call.regs is None


def test_callback_is_called_with_four_positional_arguments(register):
    got = []
    ops = fentry.FtraceOps(lambda *args: got.append(args))
    ops.set_filter(f"{HERE}:target")
    register(ops)
    target(1)
    assert len(got) == 1 and len(got[0]) == 4 and got[0][2] is ops


@pytest.mark.parametrize("caller,run", [
    (call_plain, None),
    (call_keywords, None),
    (call_star, None),
    (call_through_c, None),
    (call_in_comprehension, None),
    (call_as_key, None),
    (call_in_generator, list),
    (call_in_coroutine, asyncio.run),
], ids=lambda v: getattr(v, "__name__", None))
def test_parent_ip_is_the_call_instruction_in_the_caller(register, caller, run):
    ops = register(Recorder(f"{HERE}:target"))
    (run or (lambda x: x))(caller())
    assert ops.calls
    for call in ops.calls:
        assert call.parent_ip.code is caller.__code__
        [ins] = [i for i in dis.get_instructions(caller.__code__) if i.offset == call.parent_ip.offset]
        assert ins.opname in CALL_OPS


def test_parent_ip_of_a_call_in_a_class_body_is_the_class_body(register):
    ops = register(Recorder(f"{HERE}:target"))
    call_in_class_body()
    [call] = ops.calls
    body = call.parent_ip.code
    assert body.co_qualname == "call_in_class_body.<locals>.Body"
    assert body in call_in_class_body.__code__.co_consts
    [ins] = [i for i in dis.get_instructions(body) if i.offset == call.parent_ip.offset]
    assert ins.opname in CALL_OPS


def test_parent_ip_of_a_method_call_is_in_the_calling_method(register):
    ops = register(Recorder(f"{HERE}:Holder.meth {HERE}:target"))
    call_method()
    meth, tgt = ops.calls
    assert meth.parent_ip.code is call_method.__code__
    assert tgt.parent_ip.code is Holder.meth.__code__
    [ins] = [i for i in dis.get_instructions(Holder.meth) if i.offset == tgt.parent_ip.offset]
    assert ins.opname in CALL_OPS


def test_two_call_sites_give_two_parent_offsets(register):
    ops = register(Recorder(f"{HERE}:target"))
    traced_twice()
    first, second = ops.calls
    assert first.parent_ip.code is second.parent_ip.code is traced_twice.__code__
    assert first.parent_ip.offset < second.parent_ip.offset


def test_parent_ip_is_none_without_a_python_caller(register):
    ops = register(Recorder(f"{HERE}:target"))
    done = threading.Event()

    def run():
        try:
            target(7)       # a Python caller: the parent is run()
        finally:
            done.set()
    _thread.start_new_thread(target, (6,))   # no Python frame below target
    _thread.start_new_thread(run, ())
    assert done.wait(5)
    for _ in range(100):
        if len(ops.calls) == 2:
            break
        threading.Event().wait(0.01)
    parents = sorted((c.parent_ip is None, c.parent_ip and c.parent_ip.code.co_qualname) for c in ops.calls)
    assert parents == [(False, "test_parent_ip_is_none_without_a_python_caller.<locals>.run"),
                       (True, None)]


def test_save_regs_passes_the_frame_with_the_arguments(register):
    ops = register(Recorder(f"{HERE}:target", flags=fentry.FTRACE_OPS_FL_SAVE_REGS))
    call_keywords()
    [call] = ops.calls
    assert call.regs is not None
    assert call.regs.f_code is target.__code__
    assert call.args == {"a": 1, "b": 2, "rest": (), "kw": {}}


def test_without_save_regs_regs_is_none(register):
    plain = register(Recorder(f"{HERE}:target"))
    regs = register(Recorder(f"{HERE}:target", flags=fentry.FTRACE_OPS_FL_SAVE_REGS))
    call_star()
    assert [c.regs for c in plain.calls] == [None]
    assert [c.args for c in regs.calls] == [{"a": 1, "b": 2, "rest": (3,), "kw": {"c": 4}}]


def test_calls_in_other_threads_are_traced(register):
    ops = register(Recorder(f"{HERE}:target"))
    threads = [threading.Thread(target=call_plain, name=f"t{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert names(ops) == ["target"] * 3


# ---------------------------------------------------------------- the filter grammar

SHOP = '''
class Cart:
    def add(self):
        return 1

    def total(self):
        return 2

    def reset(self):
        return 3

    @property
    def size(self):
        return 4

    @size.setter
    def size(self, value):
        pass

def helper():
    return 5
'''

BANK = '''
class Cart:
    def add(self):
        return 6

def audit():
    return 7
'''


class Modules:
    """Two modules with overlapping names: {A}:Cart.add and {B}:Cart.add."""

    def __init__(self, tmp_path_factory) -> None:
        d = tmp_path_factory.mktemp("grammar")
        self.a, self.b = f"gshop_{d.name}", f"gbank_{d.name}"
        (d / f"{self.a}.py").write_text(textwrap.dedent(SHOP))
        (d / f"{self.b}.py").write_text(textwrap.dedent(BANK))
        sys.path.insert(0, str(d))
        importlib.invalidate_caches()
        try:
            self.A = importlib.import_module(self.a)
            self.B = importlib.import_module(self.b)
        finally:
            sys.path.remove(str(d))
        A, B = self.A, self.B
        # name -> (code, how to call it)
        self.functions = {
            "A:Cart.add": (A.Cart.add.__code__, lambda: A.Cart().add()),
            "A:Cart.total": (A.Cart.total.__code__, lambda: A.Cart().total()),
            "A:Cart.reset": (A.Cart.reset.__code__, lambda: A.Cart().reset()),
            "A:helper": (A.helper.__code__, A.helper),
            "B:Cart.add": (B.Cart.add.__code__, lambda: B.Cart().add()),
            "B:audit": (B.audit.__code__, B.audit),
        }

    def fmt(self, text: str) -> str:
        return text.replace("{A}", self.a).replace("{B}", self.b)

    def run_all(self, ops) -> set[str]:
        """Call each function once; the names of those the ops saw (each exactly once)."""
        before = len(ops.calls)
        for _, call in self.functions.values():
            call()
        by_code = {code: name for name, (code, _) in self.functions.items()}
        seen = [by_code[c] for c in ops.codes()[before:] if c in by_code]
        assert len(seen) == len(set(seen)), seen
        return set(seen)


@pytest.fixture(scope="module")
def mods(tmp_path_factory):
    m = Modules(tmp_path_factory)
    yield m
    sys.modules.pop(m.a, None)
    sys.modules.pop(m.b, None)


ALL = {"A:Cart.add", "A:Cart.total", "A:Cart.reset", "A:helper", "B:Cart.add", "B:audit"}


@pytest.mark.parametrize("filter_,notrace,expected", [
    ("Cart.*", "", {"A:Cart.add", "A:Cart.total", "A:Cart.reset", "B:Cart.add"}),
    ("Cart.?dd", "", {"A:Cart.add", "B:Cart.add"}),
    ("Cart.[at]*", "", {"A:Cart.add", "A:Cart.total", "B:Cart.add"}),
    ("helper audit", "", {"A:helper", "B:audit"}),
    ("Cart.* !Cart.total", "", {"A:Cart.add", "A:Cart.reset", "B:Cart.add"}),
    ("Cart.* !Cart.*:mod:{B}", "", {"A:Cart.add", "A:Cart.total", "A:Cart.reset"}),
    ("Cart.*:mod:{A}", "", {"A:Cart.add", "A:Cart.total", "A:Cart.reset"}),
    ("Cart.add:mod:g*", "", {"A:Cart.add", "B:Cart.add"}),
    ("*:mod:{B}", "", {"B:Cart.add", "B:audit"}),
    ("{B}:*", "", {"B:Cart.add", "B:audit"}),
    ("{A}:Cart.add", "", {"A:Cart.add"}),
    ("{A}.helper", "", {"A:helper"}),                  # MODULE.QUALNAME, as a bare glob
    ("Cart.add:mod:no_such_module", "", set()),
    ("gshop_*:*e*", "", {"A:Cart.reset", "A:helper"}),
    ("", "", ALL),
    ("", "Cart.*", {"A:helper", "B:audit"}),
    ("Cart.*", "Cart.add", {"A:Cart.total", "A:Cart.reset"}),
    ("Cart.add", "{A}:*", {"B:Cart.add"}),
    ("Cart.add", "Cart.add", set()),
], ids=lambda v: repr(v) if isinstance(v, str) else None)
def test_filter_grammar(register, mods, filter_, notrace, expected):
    ops = Recorder()
    ops.set_filter(mods.fmt(filter_))
    ops.set_notrace(mods.fmt(notrace))
    register(ops)
    assert mods.run_all(ops) == expected


def test_filter_takes_a_list_of_words(register, mods):
    ops = Recorder()
    ops.set_filter(["helper", mods.fmt("{B}:audit")])
    register(ops)
    assert mods.run_all(ops) == {"A:helper", "B:audit"}


def test_filter_append_adds_and_plain_set_replaces(register, mods):
    ops = register(Recorder("helper"))
    ops.set_filter("audit", reset=False)
    assert mods.run_all(ops) == {"A:helper", "B:audit"}
    ops.set_filter("Cart.total")
    assert mods.run_all(ops) == {"A:Cart.total"}


def test_filter_change_of_a_registered_ops_takes_effect_at_once(register, mods):
    ops = register(Recorder("helper"))
    assert mods.run_all(ops) == {"A:helper"}
    ops.set_filter("audit")
    assert mods.run_all(ops) == {"B:audit"}
    ops.set_notrace("audit")
    assert mods.run_all(ops) == set()
    ops.set_notrace("")
    ops.set_filter("")
    assert mods.run_all(ops) == ALL


def test_set_filter_ip_traces_exactly_that_code(register, mods):
    getter = mods.A.Cart.size.fget.__code__
    by_ip = Recorder()
    by_ip.set_filter_ip(fentry.Ip(getter, 0))
    by_glob = Recorder(mods.fmt("{A}:Cart.size"))
    register(by_ip)
    register(by_glob)
    cart = mods.A.Cart()
    cart.size = cart.size       # the getter and the setter share the qualname Cart.size
    assert by_ip.codes() == [getter]
    assert by_glob.codes() == [getter, mods.A.Cart.size.fset.__code__]
    assert mods.run_all(by_ip) == set()


def test_set_filter_ip_adds_to_the_glob_filter(register, mods):
    ops = Recorder("audit")
    ops.set_filter_ip(fentry.Ip(mods.A.helper.__code__, 0))
    register(ops)
    assert mods.run_all(ops) == {"A:helper", "B:audit"}


@st.composite
def globs(draw):
    parts = draw(st.lists(st.sampled_from(["Cart", ".", "a", "d", "t", "o", "e", "l", "r",
                                           "help", "audit", "add", "*", "?", "[at]", "[!a]"]),
                          min_size=1, max_size=6))
    return "".join(parts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(glob=globs())
def test_a_bare_glob_selects_what_fnmatch_matches(mods, glob):
    module = {"A": mods.a, "B": mods.b}
    expected = {name for name in ALL
                if fnmatch.fnmatchcase(name[2:], glob)
                or fnmatch.fnmatchcase(f"{module[name[0]]}.{name[2:]}", glob)}
    try:
        ops = Recorder(glob)
    except TraceError as e:
        # refused only when it selects no function loaded, the kernel's -EINVAL
        assert e.code == "NO_MATCH" and not expected
        assert not any(fnmatch.fnmatchcase(s.qualname, glob)
                       or fnmatch.fnmatchcase(f"{s.module}.{s.qualname}", glob)
                       for s in fentry.symbols.SYMBOLS.symbols())
        return
    fentry.register_ftrace_function(ops)
    try:
        seen = mods.run_all(ops)
    finally:
        fentry.unregister_ftrace_function(ops)
    assert seen == expected


# ---------------------------------------------------------------- bad filters

@pytest.mark.parametrize("bad,where", [
    ("Cart.[add", "["),
    ("helper Cart.[add", "["),
    ("Cart.add:mod:", None),
    (":helper", None),
    ("a:b:c", "b"),
    ("Cart.add:mode:shop", None),
])
def test_bad_filter_raises_and_the_previous_filter_stays(register, mods, bad, where):
    ops = register(Recorder("helper"))
    before = ops.filter.text()
    with pytest.raises(TraceError) as err:
        ops.set_filter(bad)
    assert err.value.message
    assert bad in str(err.value)
    if where is not None:
        # the caret stands under the offending character of the command
        assert err.value.pos == bad.index(where)
        lines = str(err.value).splitlines()
        command = next(line for line in lines if "Command:" in line)
        caret = lines[lines.index(command) + 1]
        assert caret.index("^") == command.index(bad) + bad.index(where)
    assert ops.filter.text() == before
    assert mods.run_all(ops) == {"A:helper"}


def test_bad_filter_appended_changes_nothing(register, mods):
    ops = register(Recorder("helper"))
    with pytest.raises(TraceError):
        ops.set_filter("audit Cart.[", reset=False)
    assert mods.run_all(ops) == {"A:helper"}


def test_bad_notrace_raises_and_the_previous_one_stays(register, mods):
    ops = register(Recorder("", notrace="Cart.*"))
    with pytest.raises(TraceError):
        ops.set_notrace("[")
    assert mods.run_all(ops) == {"A:helper", "B:audit"}


# ---------------------------------------------------------------- dispatch

def test_two_ops_on_one_function_each_called_once_per_call(register, mods):
    a = register(Recorder("helper audit"))
    b = register(Recorder("helper"))
    for _ in range(3):
        mods.A.helper()
    mods.B.audit()
    assert a.names() == ["helper"] * 3 + ["audit"]
    assert b.names() == ["helper"] * 3
    # through the list function too, parent_ip is the caller's call site
    here = sys._getframe().f_code
    assert {c.parent_ip.code for c in a.calls + b.calls} == {here}


def test_unregistering_one_of_two_ops_leaves_the_other_called(register, mods):
    a = register(Recorder("helper"))
    b = register(Recorder("helper"))
    mods.A.helper()
    fentry.unregister_ftrace_function(a)
    mods.A.helper()
    assert len(a.calls) == 1 and len(b.calls) == 2


def test_exception_in_callback_never_reaches_the_program_and_is_counted(register, mods):
    def bad(ip, parent_ip, ops, regs):
        raise RuntimeError("callback bug")
    ops = fentry.FtraceOps(bad)
    ops.set_filter("helper")
    register(ops)
    assert [mods.A.helper() for _ in range(4)] == [5] * 4
    assert ops.errors == 4


def test_exception_in_one_of_two_callbacks_is_counted_on_its_ops(register, mods):
    def bad(ip, parent_ip, ops, regs):
        raise KeyError("oops")
    failing = fentry.FtraceOps(bad, flags=fentry.FTRACE_OPS_FL_SAVE_REGS)
    failing.set_filter("helper")
    register(failing)
    good = register(Recorder("helper"))
    assert mods.A.helper() == 5 and mods.A.helper() == 5
    assert failing.errors == 2
    assert good.errors == 0 and good.names() == ["helper", "helper"]


def test_callback_calling_a_traced_function_does_not_reenter(register, mods):
    results = []

    def cb(ip, parent_ip, ops, regs):
        results.append(mods.A.helper())     # helper is traced by this very ops
    ops = fentry.FtraceOps(cb)
    ops.set_filter("helper")
    register(ops)
    mods.A.helper()
    mods.A.helper()
    assert results == [5, 5]


def test_ops_registered_while_the_function_runs_in_another_thread(register):
    stop = threading.Event()
    done = []

    def spin():
        n = 0
        while not stop.is_set():
            n += target(1)
        done.append(n)
    t = threading.Thread(target=spin, name="spinner")
    t.start()
    try:
        ops = register(Recorder(f"{HERE}:target"))
        for _ in range(500):
            if len(ops.calls) >= 10:
                break
            threading.Event().wait(0.01)
        ops.set_filter(f"{HERE}:call_plain")     # one the spinner never calls
        threading.Event().wait(0.02)        # a callback already running may finish
        seen = len(ops.calls)
        threading.Event().wait(0.05)
        after = len(ops.calls)
        fentry.unregister_ftrace_function(ops)
    finally:
        stop.set()
        t.join(5)
    assert done and done[0] > 0           # the program went on and finished normally
    assert seen >= 10 and after == seen    # the new filter holds in the other thread too


def test_registering_twice_is_refused(register):
    ops = register(Recorder(f"{HERE}:target"))
    with pytest.raises(ValueError):
        fentry.register_ftrace_function(ops)
    target(1)
    assert len(ops.calls) == 1


def test_unregistering_an_unregistered_ops_is_refused():
    with pytest.raises(ValueError):
        fentry.unregister_ftrace_function(Recorder("x"))


def test_recursion_flag_is_accepted(register):
    ops = register(Recorder(f"{HERE}:target", flags=fentry.FTRACE_OPS_FL_RECURSION))
    target(1)
    assert len(ops.calls) == 1
