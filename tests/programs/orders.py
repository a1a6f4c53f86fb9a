"""A program for probe-event tests: prints what it computed, so tests can
compare the trace's fetched values with the program's own."""

import sys


class Item:
    def __init__(self, sku, price, qty):
        self.sku = sku
        self.price = price
        self.qty = qty


class Sneaky:
    """Reading it the ordinary way runs user code: a fetch must not."""

    @property
    def secret(self):
        print("PROPERTY RAN")
        return 1

    def __getattr__(self, name):
        print("GETATTR RAN")
        return 2

    def __getitem__(self, key):
        print("GETITEM RAN")
        return 3

    def __repr__(self):
        print("REPR RAN")
        return "Sneaky()"


def line_total(item):
    subtotal = item.price * item.qty
    discounted = subtotal - subtotal // 10
    return discounted


def order_total(items, sneaky):
    total = 0
    for item in items:
        total += line_total(item)
    return total


def main():
    items = [Item("apple", 120, 3), Item("bread", 250, 1), Item("cheese", 499, 2), Item("dates", 75, 4)]
    grand = order_total(items, Sneaky())
    print("lines", sum(line_total(i) for i in items), "grand", grand)
    return 0


if __name__ == "__main__":
    sys.exit(main())
