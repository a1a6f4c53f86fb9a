"""Event filters: the kernel's grammar (trace_events_filter.c), messages and carets."""

from __future__ import annotations

import enum
import operator
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fentry import symbols
from fentry.errors import ERRORS, TraceError
from fentry.events.filter import Filter, compile_filter, glob_regex, kstrtoll

FIELDS = {"count": "num", "flags": "num", "name": "str", "path": "str"}


def match(text: str, **values: object) -> bool:
    return compile_filter(text, FIELDS).matches(values)


# -- the example of the brief, and the Filter itself --------------------------

def test_example_filter():
    f = compile_filter('count > 3 && (name ~ "ab*" || !(flags & 4)) && comm == "MainThread"',
                       FIELDS)
    event = {"count": 5, "name": "abc", "flags": 4, "comm": "MainThread"}
    assert f.matches(event)
    assert not f.matches({**event, "name": "xyz"})
    assert f.matches({**event, "name": "xyz", "flags": 3})
    assert not f.matches({**event, "count": 3})
    assert not f.matches({**event, "comm": "Thread-1"})


def test_text_is_the_filter_as_written():
    f = compile_filter('  count == 1 \n', FIELDS)
    assert f.text == "  count == 1"     # trailing blanks go (strstrip), leading stay
    assert not f.empty


@pytest.mark.parametrize("text", ["", "   ", "\n", "0", " 0\n"])
def test_empty_and_zero_clear_the_filter(text):
    f = compile_filter(text, FIELDS)
    assert f.text == "none"
    assert f.empty
    assert f.matches({}) and f.matches({"count": 1})


def test_matches_is_the_compiled_function_and_is_never_traced():
    f = compile_filter("count == 1", FIELDS)
    code = f.matches.__code__
    assert symbols.is_fentry_code(code)
    assert isinstance(f, Filter)


# -- numbers -------------------------------------------------------------------

NUM_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
           ">": operator.gt, ">=": operator.ge, "&": lambda a, b: (a & b) != 0}


@pytest.mark.parametrize("op", NUM_OPS)
@pytest.mark.parametrize("value", [-5, 0, 3, 4, 10])
def test_numeric_operators(op, value):
    assert match(f"count {op} 4", count=value) is NUM_OPS[op](value, 4)


@pytest.mark.parametrize("literal, value", [
    ("10", 10), ("0x1f", 31), ("0X1F", 31), ("010", 8), ("0", 0), ("-7", -7),
    ("-0x10", -16), ("9223372036854775807", 2**63 - 1), ("-9223372036854775808", -2**63),
])
def test_integer_literals_as_kstrtoll(literal, value):
    assert kstrtoll(literal) == value
    assert match(f"count == {literal}", count=value)
    assert not match(f"count == {literal}", count=value + 1)


def test_bitwise_and():
    assert match("flags & 4", flags=6)
    assert not match("flags & 4", flags=3)
    assert match("flags & 0x30", flags=0x10)


# -- strings and globs -----------------------------------------------------------

@pytest.mark.parametrize("text, value, expected", [
    ('name == "abc"', "abc", True),
    ('name == "abc"', "abcd", False),
    ("name == 'abc'", "abc", True),
    ('name != "abc"', "abc", False),
    ('name != "abc"', "abd", True),
    ('name == "a*"', "a*", True),         # == is not a glob
    ('name == "a*"', "ab", False),
    ('name == ""', "", True),
    ('name == "a b\t(c)&&||"', "a b\t(c)&&||", True),
])
def test_string_equality(text, value, expected):
    assert match(text, name=value) is expected


@pytest.mark.parametrize("pattern, matching, not_matching", [
    ("ab*", ["ab", "abc"], ["a", "xab"]),                  # MATCH_FRONT_ONLY
    ("*ab", ["ab", "xab"], ["abx"]),                       # MATCH_END_ONLY
    ("*ab*", ["ab", "xaby"], ["a b"]),                     # MATCH_MIDDLE_ONLY
    ("*", ["", "anything"], []),
    ("ab", ["ab"], ["abc"]),                               # MATCH_FULL
    ("a*c", ["ac", "abbc"], ["acb"]),                      # MATCH_GLOB from here on
    ("a?c", ["abc"], ["ac", "abbc"]),
    ("[ab]x", ["ax", "bx"], ["cx"]),
    ("[a-c]", ["b"], ["d", "ab"]),
    ("[!a-c]", ["d"], ["b", ""]),
    ("[]x]", ["]", "x"], ["y"]),                            # first span may be ']'
    ("[c-a]", [], ["a", "b", "c"]),                         # reversed range: nothing
    ("[ab", ["[ab"], ["a"]),                                # malformed: '[' is literal
    ("a\\*", ["a*"], ["ab"]),                               # escaped star
    ("a\\", ["a"], ["a\\"]),                                # trailing '\' ends it
    ("*a*a*b", ["aab", "xaxayb"], ["ab", "aaa"]),
    ("!ab*", ["xy", "a"], ["abc"]),                         # leading '!' negates
])
def test_glob(pattern, matching, not_matching):
    for s in matching:
        assert match(f'name ~ "{pattern}"', name=s), (pattern, s)
    for s in not_matching:
        assert not match(f'name ~ "{pattern}"', name=s), (pattern, s)


def test_glob_does_not_backtrack_exponentially():
    # glob.c's single-level backtracking bound: a naive ".*" regex would not
    # finish this one.
    f = compile_filter('name ~ "' + "*a" * 20 + '*b"', FIELDS)
    assert f.matches({"name": "a" * 40 + "b"})
    assert not f.matches({"name": "a" * 3000})


# -- logic: precedence, parentheses, '!' ----------------------------------------

def test_and_binds_tighter_than_or():
    # a || b && c  is  a || (b && c)
    assert match("count == 1 || count == 2 && flags == 9", count=1, flags=0)
    assert not match("(count == 1 || count == 2) && flags == 9", count=1, flags=0)
    # a && b || c  is  (a && b) || c
    assert match("count == 1 && flags == 9 || name == 'x'", count=2, flags=0, name="x")


def test_parentheses_and_not():
    assert match("!(count == 1 || count == 2)", count=3)
    assert not match("!(count == 1 || count == 2)", count=2)
    assert match("!(count == 1 && !(flags & 1))", count=1, flags=1)
    assert match("!!(count == 1)", count=1)
    assert match("((((count == 1))))", count=1)
    assert match("!count == 1", count=2)


def test_no_spaces_needed():
    assert match("count>3&&name~'a*'||flags&1", count=4, name="ab", flags=0)
    assert match("count==-1", count=-1)


def test_deep_nesting_compiles_and_evaluates():
    depth = 300
    # (count == 0 || flags != 0 && (count == 1 || flags != 1 && (... name == 'x')))
    text = "".join("(count == %d || flags != %d && " % (i, i) for i in range(depth))
    text += "name == 'x'" + ")" * depth
    f = compile_filter(text, FIELDS)
    assert f.matches({"count": 150, "flags": -1, "name": "y"})
    assert not f.matches({"count": 150, "flags": 100, "name": "y"})
    assert f.matches({"count": -1, "flags": -1, "name": "x"})
    assert not f.matches({"count": -1, "flags": -1, "name": "y"})


def test_trailing_operator_is_ignored_as_the_kernel_does():
    # predicate_parse() stops at the end of the string wherever it is.
    assert match("count == 1 &&", count=1)
    assert match("count == 1 ||", count=1)
    assert not match("count == 1 || !", count=2)


# -- common fields ---------------------------------------------------------------

def test_common_fields_always_exist():
    assert compile_filter("common_pid == 42 && comm ~ 'Main*'", {}).matches(
        {"common_pid": 42, "comm": "MainThread"})


def test_event_field_wins_over_common_field():
    f = compile_filter("comm == 3", {"comm": "num"})
    assert f.matches({"comm": 3})


# -- values of the wrong type or missing: the comparison is False ------------------

@pytest.mark.parametrize("value", [None, "4", 4.0, [4], object()])
def test_wrong_type_for_number_is_false(value):
    for op in NUM_OPS:
        assert not match(f"count {op} 4", count=value)


@pytest.mark.parametrize("value", [None, 4, b"abc", ["abc"]])
def test_wrong_type_for_string_is_false(value):
    for text in ['name == "abc"', 'name != "abc"', 'name ~ "*"', 'name ~ "!x"']:
        assert not match(text, name=value)


def test_missing_field_is_false_and_not_makes_it_true():
    assert not match("count == 1")
    assert not match("count != 1")
    assert match("!(count == 1)")


def test_values_that_are_not_a_mapping_never_raise():
    f = compile_filter("count == 1", FIELDS)
    assert f.matches(None) is False     # type: ignore[arg-type]
    assert f.matches(42) is False       # type: ignore[arg-type]


class Flags(enum.IntFlag):
    A = 1
    B = 4


class Sneaky(str):
    calls = 0

    def __eq__(self, other):           # must never run: filters call no user code
        Sneaky.calls += 1
        return True

    __hash__ = str.__hash__

    def startswith(self, *a):
        Sneaky.calls += 1
        return True


class SneakyInt(int):
    def __gt__(self, other):
        raise AssertionError("user code ran")


def test_int_and_str_subclasses_use_the_builtin_comparisons():
    assert match("flags & 4", flags=Flags.B)
    assert match("count == 1", count=True)
    assert not match("count > 5", count=SneakyInt(3))
    assert match("count > 2", count=SneakyInt(3))
    assert not match('name == "abc"', name=Sneaky("xyz"))
    assert not match('name ~ "ab*"', name=Sneaky("xyz"))
    assert match('name ~ "xy*"', name=Sneaky("xyz"))
    assert Sneaky.calls == 0


# -- errors: the kernel's messages and caret positions -------------------------------
# Written as the kernel's ftrace_errlog_check: '^' marks where the caret goes.

ERROR_CASES = [
    # tools/testing/selftests/ftrace/test.d/ftrace/tracing-error-log.tc
    ("FILT_ERR_FIELD_NOT_FOUND", "((sig >= 10 && sig < 15) || dsig ^== 17) && comm != bash"),
    ("FILT_ERR_FIELD_NOT_FOUND", "nosuch ^== 1"),
    ("FILT_ERR_FIELD_NOT_FOUND", "nosuch=^=1"),
    ("FILT_ERR_FIELD_NOT_FOUND", "  nosuch ^== 1"),
    # as Linux 6.18 puts it (events/sched/sched_switch/filter): one past the name
    ("FILT_ERR_FIELD_NOT_FOUND", "x ^> 1"),
    ("FILT_ERR_FIELD_NOT_FOUND", "x>^1"),
    ("FILT_ERR_FIELD_NOT_FOUND", "count == 1 && (bogus ^< 2)"),
    ("FILT_ERR_INVALID_OP", "count =^ 3"),
    ("FILT_ERR_INVALID_OP", "name !^~ 'a'"),
    ("FILT_ERR_INVALID_OP", "count ^"),      # one past the end, as the kernel
    ("FILT_ERR_TOO_MANY_OPEN", "^(count == 1"),
    ("FILT_ERR_TOO_MANY_OPEN", "count == 1 && ^(count == 2"),
    ("FILT_ERR_TOO_MANY_OPEN", "(count == 1) && ^((count == 2)"),
    ("FILT_ERR_TOO_MANY_CLOSE", "count == 1^)"),
    ("FILT_ERR_TOO_MANY_CLOSE", "(count == 1)^) && (count == 2"),
    ("FILT_ERR_MISSING_QUOTE", 'name == ^"abc'),
    ("FILT_ERR_MISSING_QUOTE", "name == \"a\" || name == ^'b"),
    ("FILT_ERR_OPERAND_TOO_LONG", 'name == "' + "x" * 256 + '"^'),
    ("FILT_ERR_OPERAND_TOO_LONG", "count == 123456789012345678901234 ^&& count == 1"),
    ("FILT_ERR_EXPECT_STRING", "name == 3^3"),
    ("FILT_ERR_EXPECT_STRING", "comm == -^1"),
    ("FILT_ERR_EXPECT_DIGIT", 'count == "^x"'),
    ("FILT_ERR_EXPECT_DIGIT", "common_pid ~ '^1'"),
    ("FILT_ERR_ILLEGAL_FIELD_OP", 'name < "^x"'),
    ("FILT_ERR_ILLEGAL_FIELD_OP", 'count < "^x"'),
    ("FILT_ERR_ILLEGAL_FIELD_OP", "count ~ 3^3"),
    ("FILT_ERR_ILLEGAL_INTVAL", "count == 0^8"),
    ("FILT_ERR_ILLEGAL_INTVAL", "count == 1^2abc"),
    ("FILT_ERR_ILLEGAL_INTVAL", "count == 0^x"),
    ("FILT_ERR_ILLEGAL_INTVAL", "count == 9^223372036854775808"),
    ("FILT_ERR_ILLEGAL_INTVAL", "count == -^ && count == 1"),
    ("FILT_ERR_INVALID_VALUE", "name == a^bc"),
    ("FILT_ERR_INVALID_VALUE", "comm != b^ash"),
    ("FILT_ERR_INVALID_VALUE", "count == ^"),
    ("FILT_ERR_INVALID_VALUE", "count == ^   "),      # trailing blanks are stripped
    ("FILT_ERR_TOO_MANY_PREDS", 'count == 1 ^name == "x"'),
    ("FILT_ERR_TOO_MANY_PREDS", "count == 1 ^& count == 2"),
    ("FILT_ERR_TOO_MANY_PREDS", "count == 1 ^| count == 2"),
    ("FILT_ERR_TOO_MANY_PREDS", "(count == 1) ^(count == 2)"),
    ("FILT_ERR_NO_FILTER", "!^"),
    ("FILT_ERR_NO_FILTER", "!!^"),
    ("FILT_ERR_NO_FILTER", "^()"),
    ("FILT_ERR_NO_FILTER", "^( () )"),
    ("FILT_ERR_EXPECT_FIELD", "^&& ||"),
    ("FILT_ERR_EXPECT_FIELD", "^== 3"),
    ("FILT_ERR_EXPECT_FIELD", "^!= 3"),
    ("FILT_ERR_EXPECT_FIELD", "^count == 1 && && count == 2"),
    ("FILT_ERR_EXPECT_FIELD", "^(count == 1 || )"),
    ("FILT_ERR_EXPECT_FIELD", "^count == 1 && ()"),
]


@pytest.mark.parametrize("code, marked", ERROR_CASES, ids=[c[1] for c in ERROR_CASES])
def test_error_message_and_caret(code, marked):
    pos = marked.index("^")
    command = marked.replace("^", "", 1)
    with pytest.raises(TraceError) as info:
        compile_filter(command, {**FIELDS, "sig": "num"})
    e = info.value
    assert (e.code, e.pos) == (code, pos), e.render()
    assert e.message.startswith(ERRORS[code])
    assert e.subsystem == "event filter parse error"
    lines = e.render().splitlines()
    assert lines[0].endswith(f"] event filter parse error: error: {e.message}")
    assert lines[1] == "  Command: " + command.rstrip()
    assert lines[2] == " " * (len("  Command: ") + pos) + "^"


def test_field_not_found_names_the_field_and_those_there_are():
    with pytest.raises(TraceError) as info:
        compile_filter("price > 1 && prize > 100", {"name": "str", "price": "num", "comm": "str"})
    assert info.value.message == "Field not found: 'prize' (fields: name, price, comm, common_pid)"


def test_every_filter_message_is_tested():
    codes = {c for c in ERRORS if c.startswith("FILT_ERR_")}
    assert codes == {c for c, _ in ERROR_CASES}


def test_kernel_messages_word_for_word():
    # (test_probe_parser.py pins its own section of the table alike)
    assert ERRORS["FILT_ERR_FIELD_NOT_FOUND"] == "Field not found"
    assert ERRORS["FILT_ERR_TOO_MANY_OPEN"] == "Too many '('"
    assert ERRORS["FILT_ERR_TOO_MANY_CLOSE"] == "Too few '('"
    assert ERRORS["FILT_ERR_MISSING_QUOTE"] == "Missing matching quote"
    assert ERRORS["FILT_ERR_INVALID_VALUE"] == "Invalid value (did you forget quotes)?"


def test_bad_field_kind_is_a_programming_error():
    with pytest.raises(ValueError):
        compile_filter("x == 1", {"x": "float"})


# -- property-based: random filters never raise anything but a positioned TraceError ----

TOKENS = ["count", "flags", "name", "comm", "common_pid", "nosuch", "(", ")", "!", "&&",
          "||", "&", "|", "==", "!=", "<", "<=", ">", ">=", "~", "=", "!~", "3", "-1",
          "0x1f", "08", "0x", "-", '"ab*"', "'x'", '"', "'", " ", "\t", "abc", "09z",
          '"[a-"', '"\\"', "0", "\n"]


def check_compile(text: str) -> None:
    try:
        f = compile_filter(text, FIELDS)
    except TraceError as e:
        assert 0 <= e.pos <= len(e.command) + 1
        assert e.message.startswith(ERRORS[e.code])
        assert e.code.startswith("FILT_ERR_")
        assert e.command == text.rstrip(" \t\n\v\f\r")
    else:
        for values in ({}, {"count": 3, "flags": -1, "name": "abx", "comm": "x"},
                       {"count": "3", "name": 3, "comm": None}):
            assert f.matches(values) in (True, False)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=14))
def test_random_token_filters(tokens):
    check_compile(" ".join(tokens) if len(tokens) % 2 else "".join(tokens))


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=40))
def test_random_text_filters(text):
    check_compile(text)


# An independent evaluator for generated valid filters: an AST, its rendering,
# and a plain-Python reading of its meaning (glob.c ported as written: its two
# backtracking steps, alike, stay two, as in lib/glob.c).

def glob_match(pat: str, s: str) -> bool:
    """lib/glob.c glob_match(), line by line; '\\0' marks the ends."""
    P, S = pat + "\0\0", s + "\0"
    p = i = 0
    back_p: int | None = None
    back_i = 0
    while True:
        c, d = S[i], P[p]
        i += 1
        p += 1
        literal = False
        if d == "?":
            if c == "\0":
                return False
            continue
        if d == "*":
            if P[p] == "\0":
                return True
            back_p, i = p, i - 1
            back_i = i
            continue
        if d == "[":
            if c == "\0":
                return False
            inverted = P[p] == "!"
            k = p + inverted
            a = P[k]
            k += 1
            matched = False
            while True:
                b = a
                if a == "\0":
                    literal = True
                    break
                if P[k] == "-" and P[k + 1] != "]":
                    b = P[k + 1]
                    if b == "\0":
                        literal = True
                        break
                    k += 2
                matched |= a <= c <= b
                a = P[k]
                k += 1
                if a == "]":
                    break
            if not literal:
                if matched != inverted:
                    p = k
                    continue
                # backtrack
                if c == "\0" or back_p is None:
                    return False
                p = back_p
                back_i += 1
                i = back_i
                continue
        elif d == "\\":
            d = P[p]
            p += 1
        if c == d:
            if d == "\0":
                return True
            continue
        if c == "\0" or back_p is None:
            return False
        p = back_p
        back_i += 1
        i = back_i


GLOB_CHARS = "ab*?[]!-\\"


@pytest.mark.slow
@settings(max_examples=2000, deadline=None)
@given(st.text(GLOB_CHARS, max_size=8), st.text("ab[]!-*?\\", max_size=8))
def test_glob_regex_is_glob_c(pattern, s):
    assert (glob_regex(pattern).fullmatch(s) is not None) == glob_match(pattern, s)


NUM_FIELDS = ["count", "flags", "common_pid"]
STR_FIELDS = ["name", "path", "comm"]
SEP = st.sampled_from(["", " ", "  ", "\t"])


def render_number(v: int, form: str) -> tuple[str, int]:
    sign = "-" if v < 0 else ""
    if form == "hex":
        return f"{sign}0x{abs(v):x}", v
    if form == "oct" and v:
        return f"{sign}0{abs(v):o}", v
    return str(v), v


def render_num_pred(name, op, number, sep1, sep2):
    lit, v = number
    return f"{name}{sep1}{op}{sep2}{lit}", ("num", name, op, v)


def render_str_pred(name, op, body, q, sep1, sep2):
    return f"{name}{sep1}{op}{sep2}{q}{body}{q}", ("str", name, op, body)


# Strategies are built once (building them inside draws is what makes
# hypothesis slow).
NUMBER = st.tuples(st.integers(-300, 300), st.sampled_from(["dec", "hex", "oct"])).map(
    lambda t: render_number(*t))
PREDICATE = st.one_of(
    st.tuples(st.sampled_from(NUM_FIELDS), st.sampled_from(list(NUM_OPS)), NUMBER, SEP, SEP
              ).map(lambda t: render_num_pred(*t)),
    st.tuples(st.sampled_from(STR_FIELDS), st.sampled_from(["==", "!=", "~"]),
              st.text("ab*?[]!-\\ ", max_size=6), st.sampled_from(['"', "'"]), SEP, SEP
              ).map(lambda t: render_str_pred(*t)))


def render_unary(nots, atom, sep):
    text, node = atom
    return ("!" * nots + sep + text if nots else text), (nots, node)


def render_expression(ors, sep_and, sep_or):
    text = (sep_or + "||" + sep_or).join(
        (sep_and + "&&" + sep_and).join(t for t, _ in ands) for ands in ors)
    return text, [[n for _, n in ands] for ands in ors]


def expression(depth: int):
    """Or[And[(nots, atom)]] -- rendered with '&&'/'||' and no extra parentheses,
    so the kernel's precedence decides the grouping."""
    atom = PREDICATE if depth <= 0 else st.one_of(
        PREDICATE, expression(depth - 1).map(lambda e: (f"({e[0]})", ("group", e[1]))))
    unary = st.tuples(st.integers(0, 2), atom, SEP).map(lambda t: render_unary(*t))
    return st.tuples(st.lists(st.lists(unary, min_size=1, max_size=3), min_size=1, max_size=2),
                     SEP, SEP).map(lambda t: render_expression(*t))


def evaluate(tree, values) -> bool:
    return any(all(evaluate_unary(u, values) for u in ands) for ands in tree)


def evaluate_unary(unary, values) -> bool:
    nots, node = unary
    result = evaluate(node[1], values) if node[0] == "group" else evaluate_pred(node, values)
    return result if nots % 2 == 0 else not result


def evaluate_pred(node, values) -> bool:
    kind, name, op, operand = node
    v = values.get(name)
    if kind == "num":
        if not isinstance(v, int):
            return False
        return NUM_OPS[op](int(v), operand)
    if not isinstance(v, str):
        return False
    if op == "==":
        return v == operand
    if op == "!=":
        return v != operand
    if operand.startswith("!"):
        return not glob_match(operand[1:], v)
    return glob_match(operand, v)


VALUE = st.one_of(st.none(), st.integers(-300, 300), st.booleans(),
                  st.text("ab*?[]!- ", max_size=5), st.floats(allow_nan=False))


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression(2), st.fixed_dictionaries({}, optional=dict.fromkeys(NUM_FIELDS + STR_FIELDS, VALUE)))
def test_generated_valid_filters_match_an_independent_evaluation(expr, values):
    text, tree = expr
    f = compile_filter(text, FIELDS)
    assert f.matches(values) is evaluate(tree, values), text


def test_compiling_is_all_or_nothing():
    # A mistake in the last term: no filter comes back, only the error.
    with pytest.raises(TraceError):
        compile_filter('count == 1 && name == "a" && flags ^ 2', FIELDS)


def test_matches_is_cheap_relative_to_a_plain_lambda():
    # Not a benchmark (ratios live in bench/); a guard against matches()
    # growing a wrapper or a per-call parse: within 3x of the hand-written check.
    f = compile_filter('count > 3 && name == "abc"', FIELDS)
    hand = lambda v: (type(x := v.get("count")) is int and x > 3) and v.get("name") == "abc"  # noqa: E731
    values = {"count": 5, "name": "abc"}

    def best(fn) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(20000):
                fn(values)
            times.append(time.perf_counter() - t)
        return min(times)

    assert best(f.matches) < 3 * best(hand)
