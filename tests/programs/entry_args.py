"""A program for the tests of a return probe's ``$argN``: functions that
rebind, delete or mutate their parameters, recurse, yield, raise, run in
threads, or are running when their probe comes or goes.

``python entry_args.py SCENARIO`` defines the scenario's return probes
through fentry's in-process tracefs, runs it, and prints one JSON line:
``events`` (the trace's event text, after ``EVENT: ``) and ``seen`` (what
the program itself observed, which tracing must not change).
"""

import json
import sys
import threading
import weakref

import fentry

fs = fentry.tracefs()
HERE = __name__


def probe(definition):
    fs.write("kprobe_events", definition, append=True)


def events():
    """The event lines, each as the text after its ``NAME: `` (with the task)."""
    out = []
    for line in fs.read("trace").splitlines():
        if line.startswith("#"):
            continue
        task = line.split()[0].rsplit("-", 1)[0]
        out.append(f"{task} {line.split(': ', 1)[1]}")
    return out


class Box:
    def __init__(self, v):
        self.v = v


# -- rebinding, del, mutation

def bump(x, step):
    x = x + step
    return x


def forget(x):
    del x
    return 0


def fill(box, items):
    box.v = "filled"
    items[0] = "filled"
    return 1


def everything(a, *rest, **kw):
    a = rest = kw = None        # noqa: F841 (rebound: the probe reads them as passed)
    return a


def rebinding():
    probe(f"r:ea/bump {HERE}:bump $arg1 $arg2 x=x $retval")
    probe(f"r:ea/forget {HERE}:forget $arg1 x=x")
    probe(f"r:ea/fill {HERE}:fill $arg1.v $arg2[0] v=box.v")
    probe(f"r:ea/all {HERE}:everything $args")
    fs.write("events/ea/enable", "1")
    seen = [bump(1, 10), bump(5, 1), forget("gone"), fill(Box("empty"), ["empty"]),
            everything(1, 2, 3, k=4)]
    fs.write("events/enable", "0")
    return seen


# -- recursion

def down(n, tag):
    if n:
        down(n - 1, tag + 1)
    n = tag = None
    return n


def recursion():
    probe(f"r:ea/down {HERE}:down $arg1 $arg2")
    fs.write("buffer_size_kb", "64")
    fs.write("events/ea/enable", "1")
    down(499, 0)
    fs.write("events/enable", "0")
    return sys.getrecursionlimit()


def maxactive():
    probe(f"r3:ea/down {HERE}:down $arg1")
    fs.write("events/ea/enable", "1")
    down(9, 0)                          # 10 calls at once, room for 3: the 7 oldest are missed
    fs.write("events/enable", "0")
    return fs.read("kprobe_profile").split()


# -- generators

def counter(n, box):
    for i in range(n):
        yield i
    n = box = None              # noqa: F841 (rebound: the probe reads them as passed)
    return n


def endless(n):
    while True:
        yield n
        n += 1


class Pause:
    def __await__(self):
        yield


async def task(x):
    await Pause()
    x = None
    return x


def drive(coros):
    """Step each coroutine in turn until all are done."""
    while coros:
        for c in list(coros):
            try:
                c.send(None)
            except StopIteration:
                coros.remove(c)


def generators():
    probe(f"r:ea/counter {HERE}:counter $arg1 $arg2.v")
    probe(f"r:ea/endless {HERE}:endless $arg1")
    probe(f"r:ea/task {HERE}:task $arg1")
    fs.write("events/ea/enable", "1")
    drive([task("one"), task("two")])
    a, b = counter(3, Box("a")), counter(2, Box("b"))
    got = []
    for pair in zip(a, b):              # interleaved: b finishes first, then a
        got.append(pair)
    got.extend(a)                       # (zip took a's last value)
    for n in range(5):                  # abandoned, suspended: 3.12 unwinds each, 3.13 says nothing
        for v in endless(100 + n):
            if v == 102 + n:
                break
    fs.write("events/enable", "0")
    return got


# -- exceptions

def boom(x):
    x = "rebound"
    raise ValueError(x)


def catches(x):
    try:
        boom(x * 2)
    except ValueError:
        pass
    x = None
    return x


def exceptions():
    probe(f"r:ea/boom {HERE}:boom $arg1 x=x")
    probe(f"r:ea/catches {HERE}:catches $arg1")
    fs.write("events/ea/enable", "1")
    seen = catches(21)
    fs.write("events/enable", "0")
    return seen


# -- threads

CALLS = 100_000
THREADS = 4


def work(x):
    y = x
    x = -1
    return y


def threads():
    probe(f"r:ea/work {HERE}:work $arg1")
    fs.write("buffer_size_kb", str(CALLS * 40 // 1024 + 64))        # every event kept
    fs.write("events/ea/enable", "1")

    def worker(base):
        for i in range(CALLS):
            work(base + i)
    ts = [threading.Thread(target=worker, args=(k * CALLS,), name=f"w{k}") for k in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    fs.write("events/enable", "0")
    return [THREADS, CALLS]


# -- lifetimes: the argument is never kept alive by the probe

class Thing:
    pass


def lets_go(x):
    """Whether the argument is freed as soon as the function drops it."""
    ref = weakref.ref(x)
    x = None
    return ref() is None


def refcount(x):
    return sys.getrefcount(x)


def in_flight(x, stop):
    stop()
    return x


def lifetimes():
    probe(f"r:ea/lets_go {HERE}:lets_go $arg1")
    probe(f"r:ea/refcount {HERE}:refcount $arg1")
    probe(f"r:ea/in_flight {HERE}:in_flight $arg1")
    probe(f"r:ea/counter {HERE}:counter $arg1")
    thing = Thing()
    before = refcount(thing)
    fs.write("events/ea/enable", "1")
    seen = {"freed at once": lets_go(Thing()), "refcount": refcount(thing) - before}
    suspended = counter(3, thing)
    next(suspended)                     # entered, suspended, probe still on

    def stop():                         # the probes go while in_flight and counter are running
        fs.write("events/enable", "0")
        fs.write("kprobe_events", "")
    ref = weakref.ref(thing)
    in_flight(thing, stop)
    list(suspended)
    del thing, suspended
    seen["freed after"] = ref() is None
    return seen


# -- a function already running when its probe comes (fentry -p PID)

def running(x, arm):
    arm()
    x = "at exit"               # noqa: F841 (what the probe's x reads)
    return 0


def nested(n, arm):
    if n == 2:
        arm()
    if n:
        nested(n - 1, arm)
    return n


def attach():
    probe(f"r:ea/running {HERE}:running $arg1 x=x")
    probe(f"r:ea/nested {HERE}:nested $arg1")

    def arm():
        fs.write("events/ea/enable", "1")
    running("first", arm)               # entered before the probe: no event
    running("second", lambda: None)
    fs.write("events/enable", "0")
    nested(4, arm)                      # 4 3 2 entered before it, 1 0 after
    fs.write("events/enable", "0")
    return None


if __name__ == "__main__":
    seen = globals()[sys.argv[1]]()
    from fentry import hotpath
    print(json.dumps({"impl": hotpath.IMPLEMENTATION, "events": events(), "seen": seen}))
