"""The code the benchmarks trace.

It lives in its own module so filters can name it exactly
(``workloads:leaf``, ``workloads:*``) and nothing of the harness itself
(run.py, timing.py) is ever matched.  Keep these functions plain: no
builtin calls inside the hot loops, so every tracer sees the same Python
calls and little else (row 21's workload, whose point is builtin calls,
exceptions and allocations, apart).
"""

import os


def leaf():
    """The traced function of the per-call rows: does nothing, returns None."""


def g():
    """Row 5: the function whose tracing must not slow down when f gets an ops."""


def f():
    """Row 5: the unrelated function the second ops traces."""


def unrelated():
    """Row 1: the one traced function, called once, outside the measured workload."""


def call_leaf(n):
    for _ in range(n):
        leaf()


def call_g(n):
    for _ in range(n):
        g()


class Box:
    """Rows 7-10: the object argument whose attribute a fetcharg reads (from its ``__dict__``)."""

    def __init__(self, attr):
        self.attr = attr


def probed(x, obj):
    """Rows 7-10: the probed function: an argument, an object argument, a line mid-function."""
    y = x + 1
    y = y * 2           # PROBE_LINE: row 9's line probe is on this line
    return y


def call_probed(n, obj):
    for i in range(n):
        probed(i, obj)


def send(kind, nbytes):
    """Row 18: the probed function, whose arguments a hist is keyed and summed on."""
    return nbytes


def call_send(n):
    for i in range(n):
        send(i & 7, i & 1023)


def exceptions_and_c_calls(n):
    """Row 21: what Python's tracepoints watch, none of it traced: each
    iteration raises and catches an exception (RAISE, EXCEPTION_HANDLED),
    calls C functions (CALL, C_RETURN) and allocates containers (gen-0
    collections); every 1000th opens a file (an audit event)."""
    table = {}
    kept = []
    for i in range(n):
        try:
            raise KeyError(i)
        except KeyError:
            pass
        table[i & 255] = abs(-i) + len(kept)
        kept.append([i, (i, i)])
        if len(kept) > 500:
            kept = []
        if i % 1000 == 0:
            with open(os.devnull) as f:
                f.read(0)
    return len(table)


def fib(n):
    """Recursive: ``fib(n)`` makes ``2 * fib(n + 1) - 1`` calls."""
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def fib_calls(n):
    """How many calls of ``fib`` ``fib(n)`` makes."""
    a, b = 0, 1             # fib(0), fib(1)
    for _ in range(n + 1):
        a, b = b, a + b     # a = fib(n + 1) at the end
    return 2 * a - 1


class Vec:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def add(self, other):
        return Vec(self.x + other.x, self.y + other.y)

    def scale(self, k):
        return Vec(self.x * k, self.y * k)

    def dot(self, other):
        return self.x * other.x + self.y * other.y

    @property
    def norm2(self):
        return self.dot(self)


class Particle:
    def __init__(self, pos, vel):
        self.pos = pos
        self.vel = vel

    def step(self, dt):
        self.pos = self.pos.add(self.vel.scale(dt))
        return self

    def energy(self):
        return 0.5 * self.vel.norm2


class World:
    def __init__(self, n):
        self.particles = [Particle(Vec(i, -i), Vec(1, 0.5)) for i in range(n)]

    def tick(self, dt):
        for p in self.particles:
            p.step(dt)

    def energy(self):
        total = 0.0
        for p in self.particles:
            total += p.energy()
        return total


def methods(ticks, particles=50):
    """Method-heavy: small classes, many short method calls (~10 per particle per tick)."""
    world = World(particles)
    e = 0.0
    for _ in range(ticks):
        world.tick(0.01)
        e += world.energy()
    return e


def mixed():
    """Row 1's workload: recursion plus method calls."""
    fib(18)
    methods(40)
