"""A real program for end-to-end tests: classes, decorators, closures,
generators, exceptions, threads and asyncio.  Deterministic output; its own
call counts are printed so tests can compare them with the trace."""

import asyncio
import functools
import sys
import threading

COUNTS = {"Job.run": 0, "square": 0, "numbers": 0}


def counted(name):
    def deco(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            COUNTS[name] += 1
            return func(*args, **kwargs)
        return wrapper
    return deco


class Job:
    def __init__(self, n):
        self.n = n

    @counted("Job.run")
    def run(self):
        return sum(square(x) for x in numbers(self.n))

    @staticmethod
    def fail():
        raise ValueError("bad job")

    @property
    def label(self):
        return f"job{self.n}"


def square(x):
    COUNTS["square"] += 1
    return x * x


def numbers(n):
    COUNTS["numbers"] += 1
    for i in range(n):
        yield i


def make_adder(k):
    return lambda v: v + k


def worker(jobs, out):
    for job in jobs:
        out.append(job.run())


async def fetch(i):
    await asyncio.sleep(0)
    return square(i)


async def gather():
    return await asyncio.gather(fetch(2), fetch(3))


def main(argv):
    jobs = [Job(n) for n in range(1, 5)]
    out = []
    threads = [threading.Thread(target=worker, args=(jobs[i::2], out), name=f"pool-{i}")
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        Job.fail()
    except ValueError as e:
        print("caught", e)
    add3 = make_adder(3)
    print("results", sorted(out), add3(4), jobs[0].label)
    print("async", asyncio.run(gather()))
    print("counts", COUNTS["Job.run"], COUNTS["square"], COUNTS["numbers"])
    status = int(argv[1]) if len(argv) > 1 else 0
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main(sys.argv)
