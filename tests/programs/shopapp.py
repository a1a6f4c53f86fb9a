"""shopapp: a small but realistic program for fentry's end-to-end tests.

It has what a tracer must get right: classes with methods, a staticmethod, a
classmethod and a property, a decorator built with functools.wraps, a closure
and a lambda, a generator, an exception raised in one frame and caught two
frames up, two named threads, a little asyncio and a recursive function.

Its output is deterministic, and it counts its own calls of a few functions
and prints the counts (``calls NAME=N ...``), so a test can compare a trace
with what really ran.

    python shopapp.py [STATUS | raise | osexit | sigterm]

STATUS (a number) is the exit status; ``raise`` ends with an uncaught
exception, ``osexit`` with ``os._exit(4)``, ``sigterm`` by killing itself
with SIGTERM.
"""

import asyncio
import functools
import os
import signal
import sys
import threading

CALLS = {"Cart.add": 0, "Inventory.take": 0, "fib": 0, "ship": 0, "Cart.lines": 0}

PRICES = {"apple": 50, "bread": 325, "cheese": 799, "dates": 1250}


def counted(func):
    """Count each call of ``func`` under its qualified name."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        CALLS[func.__qualname__] += 1
        return func(*args, **kwargs)
    return wrapper


class OutOfStock(Exception):
    pass


class Inventory:
    def __init__(self, stock):
        self.stock = dict(stock)

    def take(self, name, qty):
        CALLS["Inventory.take"] += 1
        if self.stock.get(name, 0) < qty:
            raise OutOfStock(f"{name}: only {self.stock.get(name, 0)} left")
        self.stock[name] -= qty


class Cart:
    TAX_PERCENT = 8

    def __init__(self, owner, inventory):
        self.owner = owner
        self.inventory = inventory
        self.items = []
        self.discount = None

    @classmethod
    def for_owner(cls, owner, inventory):
        return cls(owner, inventory)

    @staticmethod
    def price_of(name):
        return PRICES[name]

    @counted
    def add(self, name, qty=1):
        self._reserve(name, qty)
        self.items.append((name, qty))
        return self

    def _reserve(self, name, qty):
        self.inventory.take(name, qty)

    @property
    def total(self):
        gross = sum(self.price_of(name) * qty for name, qty in self.items)
        if self.discount is not None:
            gross = self.discount(gross)
        return with_tax(gross)

    def lines(self):
        CALLS["Cart.lines"] += 1
        for name, qty in self.items:
            yield f"{qty} x {name:<7}{cents(self.price_of(name) * qty):>8}"


def make_discount(percent):
    def discount(amount):
        return amount - amount * percent // 100
    return discount


with_tax = lambda amount: amount + amount * Cart.TAX_PERCENT // 100  # noqa: E731


def cents(amount):
    return f"{amount // 100}.{amount % 100:02d}"


def fib(n):
    CALLS["fib"] += 1
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def checkout(cart, totals):
    """A thread's work: the cart's total, and a little recursion."""
    totals[cart.owner] = (cart.total, fib(4))


async def ship(owner, number):
    CALLS["ship"] += 1
    await asyncio.sleep(0)
    return f"order {number} for {owner} shipped"


async def ship_all(owners):
    first = await ship(owners[0], 1)
    second = await ship(owners[1], 2)
    return [first, second]


def main(argv):
    stock = Inventory({"apple": 10, "bread": 2, "cheese": 3, "dates": 1})
    alice = Cart.for_owner("alice", stock).add("apple", 6).add("bread")
    bob = Cart("bob", stock).add("cheese", 2).add("dates")
    try:
        bob.add("dates", 5)
    except OutOfStock as exc:
        print(f"bob: out of stock ({exc})")
    alice.discount = make_discount(10)
    for line in alice.lines():
        print(line)
    totals = {}
    threads = [threading.Thread(target=checkout, args=(cart, totals), name=f"checkout-{cart.owner}")
               for cart in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for owner in sorted(totals):
        total, check = totals[owner]
        print(f"{owner}: total {cents(total)} (check {check})")
    for line in asyncio.run(ship_all(sorted(totals))):
        print(line)
    print("calls " + " ".join(f"{name}={n}" for name, n in CALLS.items()))

    how = argv[1] if len(argv) > 1 else "0"
    if how == "raise":
        raise RuntimeError("the shop is closed")
    if how == "osexit":
        sys.stdout.flush()
        os._exit(4)
    if how == "sigterm":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGTERM)
    sys.exit(int(how))


if __name__ == "__main__":
    main(sys.argv)
