"""A function that waits on the kernel: it reads from a pipe and sleeps
(the kernel's events of `fentry run -K` land inside its frame).  Prints its
pid, and, with an argument, sleeps that many seconds first (to be
interrupted)."""

import os
import sys
import time


def reader(fd):
    data = os.read(fd, 100)
    time.sleep(0.02)
    return data


def main():
    print(os.getpid(), flush=True)
    if len(sys.argv) > 1:
        time.sleep(float(sys.argv[1]))
    r, w = os.pipe()
    os.write(w, b"hello")
    reader(r)


main()
