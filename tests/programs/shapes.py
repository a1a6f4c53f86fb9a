"""A program for the probe hot path's tests: one function called with values
of every shape a fetcharg may meet (numbers of every size, strings, bytes,
containers, slots, class attributes, descriptors, objects that hook
attribute access), printing what it computed so tests can check the program
is unchanged by tracing."""

import enum
import sys

LIMIT = 7                       # a module global, for @shapes:LIMIT


class Color(enum.IntEnum):
    RED = 1
    BLUE = 300


class Label(str):
    """A str subclass: the filter compares its text, fetches copy it."""


class Plain:
    kind = "plain"              # a plain class attribute
    missing_on_class = None     # a class attribute that is None

    def __init__(self, n):
        self.n = n
        self.big = n * 10**20   # beyond 64 bits
        self.neg = -n
        self.ratio = n / 3
        self.name = f"item{n}"
        self.blob = bytes([65 + n % 26]) * 3
        self.items = [n, n + 1, n + 2]
        self.pair = (n, str(n))
        self.table = {"a": n, 1: "one"}
        self.nothing = None
        self.flag = n % 2 == 0
        self.color = Color.BLUE if n % 2 else Color.RED
        self.label = Label(f"lab{n}")

    def method(self):
        return self.n

    @property
    def prop(self):
        print("PROPERTY RAN")
        return 1


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a):
        self.a = a              # b stays unset: a fault


class Hooked:
    """Attribute access runs user code: a fetch must not."""

    def __init__(self):
        self.stored = 5

    def __getattr__(self, name):
        print("GETATTR RAN")
        return 2


def work(n, obj, slotted, hooked, *rest, **kw):
    local = n * 2
    text = obj.name
    if n > 100:
        unbound = 1             # noqa: F841 (never assigned when probed: a fault)
    return local + len(text) + len(rest) + len(kw)


def risky(x):
    """Left by an exception for some x: a return probe says so."""
    if x % 3 == 0:
        raise ValueError(x)
    return x * 2


def gen(n):
    """A generator: its return probe fires once, at its final return."""
    yield n
    yield n + 1
    return n * 2


def main():
    total = 0
    for n in range(6):
        total += work(n, Plain(n), Slotted(n), Hooked(), n, n + 1, key=n)
        try:
            total += risky(n)
        except ValueError:
            total -= 1
        g = gen(n)
        total += next(g) + next(g)
        try:
            next(g)
        except StopIteration as stop:
            total += stop.value
    print("total", total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
