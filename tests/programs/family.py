"""A program that starts Python processes every way there is: os.fork,
subprocess, multiprocessing (spawn and fork).  Each process prints
``ROLE PID CALLS`` -- how many times it called ``leaf`` -- so a trace can be
checked per process.

    family.py [child]
"""

import multiprocessing
import os
import subprocess
import sys


def leaf(x):
    return x * 2


def work(n):
    return sum(leaf(i) for i in range(n))


def report(role, n):
    work(n)
    print(f"{role} {os.getpid()} {n}", flush=True)
    return n


def pool_task(n):
    return report(f"pool-{multiprocessing.current_process().name.split('-')[0]}", n)


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        report("subprocess", 4)
        sys.exit(0)
    report("parent", 3)
    pid = os.fork()
    if pid == 0:
        report("forked", 5)
        os._exit(0)
    os.waitpid(pid, 0)
    subprocess.run([sys.executable, __file__, "child"], check=True)
    for method in ("spawn", "fork"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            pool.map(pool_task, [6 if method == "spawn" else 7])
    print("done", flush=True)
