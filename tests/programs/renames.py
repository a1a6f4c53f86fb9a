"""Threads renamed while traced: each calls ``step(name)`` under each of its
names, so every line can be checked against the name it had then."""
import sys
import threading
import warnings


def step(name):
    return name


def work(names, go, done):
    me = threading.current_thread()
    for k, name in enumerate(names):
        if k == 1:
            me.setName(name)            # (deprecated, but still a rename)
        elif k:
            me.name = name
        for _ in range(3):
            step(name)
    done.set()
    go.wait()                       # renamed by the main thread, then one more step
    step(me.name)


def main(n):
    warnings.simplefilter("ignore", DeprecationWarning)
    threads = []
    for i in range(n):
        go, done = threading.Event(), threading.Event()
        names = [f"w{i}", f"w{i}-b", f"w{i}-c"]
        t = threading.Thread(target=work, args=(names, go, done), name=names[0])
        t.start()
        threads.append((t, go, done))
    for i, (t, go, done) in enumerate(threads):
        done.wait()
        t.name = f"w{i}-main"
        go.set()
    for t, _, _ in threads:
        t.join()
    print(type(threading.Thread.__dict__["name"]).__name__, threading.Thread.name.__doc__ is not None)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
