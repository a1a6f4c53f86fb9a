"""A long-running shop: the example program for `fentry attach`.

It takes an order every few milliseconds, forever (or for --seconds), with
the classes of examples/shop.py, and prints a summary line every second.
Start it with plain python, then attach to it:

    python3.12 examples/shop_server.py &
    fentry attach $! -e 'p:shop/add shop:Cart.add name qty'
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import shop  # noqa: E402

MENU = [("apple", 120), ("bread", 250), ("cheese", 475), ("dates", 330)]


def take_order(n):
    cart = shop.Cart(f"customer-{n}")
    for i in range(n % 3 + 1):
        name, price = MENU[(n + i) % len(MENU)]
        cart.add(name, price, qty=i + 1)
    if n % 5 == 0:
        cart.apply_coupon("TEN")
    return cart.total()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=None, help="stop after SECONDS (default: never)")
    ap.add_argument("--interval", type=float, default=0.005, help="seconds between orders")
    opts = ap.parse_args(argv)
    start = last = time.monotonic()
    orders = revenue = 0
    while opts.seconds is None or time.monotonic() - start < opts.seconds:
        revenue += take_order(orders)
        orders += 1
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            print(f"{orders} orders, revenue {shop.cents(revenue)}", flush=True)
        time.sleep(opts.interval)
    print(f"done: {orders} orders, revenue {shop.cents(revenue)}", flush=True)


if __name__ == "__main__":
    main()
