"""A tiny shop: the example program traced by `make demo`.

It is small but exercises what a tracer must handle: classes and a dataclass,
a decorator built with functools.wraps, a closure, a generator, an exception
raised and caught, a thread pool with two named threads, and a little asyncio.
Output is deterministic. Run it with `python examples/demo.py`.
"""

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

CALLS = []  # filled by @logged


def logged(func):
    """Record every call of func (by qualified name) in CALLS."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        CALLS.append(func.__qualname__)
        return func(*args, **kwargs)
    return wrapper


def make_discount(percent):
    """A closure: a function taking cents and returning the discounted cents."""
    def discount(cents):
        return cents - cents * percent // 100
    return discount


COUPONS = {"TEN": make_discount(10), "HALF": make_discount(50)}


@dataclass(frozen=True)
class Item:
    name: str
    price: int  # cents
    qty: int = 1

    @property
    def subtotal(self):
        return self.price * self.qty


class Cart:
    def __init__(self, owner):
        self.owner = owner
        self.items = []
        self.discount = None

    @logged
    def add(self, name, price, qty=1):
        self.items.append(Item(name, price, qty))
        return self

    @logged
    def apply_coupon(self, code):
        if code not in COUPONS:
            raise ValueError(f"unknown coupon {code!r}")
        self.discount = COUPONS[code]

    def lines(self):
        """A generator of receipt lines."""
        for item in self.items:
            yield f"{item.qty} x {item.name:<8} {cents(item.subtotal):>8}"

    @logged
    def total(self):
        gross = sum(item.subtotal for item in self.items)
        return self.discount(gross) if self.discount else gross


def cents(amount):
    return f"{amount // 100}.{amount % 100:02d}"


CHECKOUT_BARRIER = threading.Barrier(2)  # both checkout threads run at once


def checkout(cart):
    """Runs in a worker thread: returns (owner, total)."""
    CHECKOUT_BARRIER.wait(timeout=10)
    return cart.owner, cart.total()


async def ship(owner, order_no):
    await asyncio.sleep(0)
    return f"order {order_no} for {owner} shipped"


async def ship_all(owners):
    return await asyncio.gather(*(ship(o, n) for n, o in enumerate(owners, 1)))


def main():
    alice = Cart("alice").add("apple", 50, 6).add("bread", 325)
    bob = Cart("bob").add("cheese", 799, 2).add("dates", 1250)
    for cart, code in ((alice, "TEN"), (bob, "FREE")):
        try:
            cart.apply_coupon(code)
        except ValueError as exc:
            print(f"{cart.owner}: {exc}")
    print(*alice.lines(), sep="\n")
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="checkout") as pool:
        totals = list(pool.map(checkout, [alice, bob]))
    for owner, total in totals:
        print(f"{owner}: total {cents(total)}")
    for line in asyncio.run(ship_all([owner for owner, _ in totals])):
        print(line)
    print(f"{len(CALLS)} logged calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
