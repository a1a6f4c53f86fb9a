/* SIGTERM: the agent must drain the trace before a SIGTERM kills the
 * program, without the program seeing a handler: signal.getsignal() reads
 * Python's own table, so an OS-level handler here stays invisible, and a
 * handler the program installs later simply replaces it.  The handler does
 * two async-signal-safe things: it asks the main thread to run the agent's
 * Python handler for a stand-in signal at its next bytecode
 * (PyErr_SetInterruptEx), as Python does for its own handlers, and it writes
 * a byte to the agent's pipe, for when the main thread is stuck in C.  Either
 * one drains, then dies of SIGTERM. */
#include "util.h"
#include <errno.h>
#include <signal.h>
#include <unistd.h>

static volatile sig_atomic_t sigterm_fd = -1;
static volatile sig_atomic_t sigterm_standin = 0;
static volatile pid_t sigterm_pid = 0;     /* the process that caught SIGTERM */

static void
on_sigterm(int signo)
{
    int saved = errno;
    char c = 'T';
    if (getpid() != sigterm_pid) {
        /* A child forked a moment ago, before its after-fork hooks took this
         * handler back: the pipe is its parent's, and so is everything else.
         * It dies as it would have. */
        signal(SIGTERM, SIG_DFL);
        raise(SIGTERM);
        errno = saved;
        return;
    }
    if (sigterm_standin > 0)
        PyErr_SetInterruptEx(sigterm_standin);
    if (sigterm_fd >= 0)
        (void)!write(sigterm_fd, &c, 1);
    errno = saved;
}

static PyObject *
catch_sigterm(PyObject *m, PyObject *args)
{
    int fd, standin = 0;
    if (!PyArg_ParseTuple(args, "i|i", &fd, &standin))
        return NULL;
    sigterm_standin = standin;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = fd >= 0 ? on_sigterm : SIG_DFL;
    sigterm_fd = fd;
    sigterm_pid = getpid();
    if (sigaction(SIGTERM, &sa, NULL) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

PyMethodDef sigterm_functions[] = {
    {"catch_sigterm", catch_sigterm, METH_VARARGS,
     "catch_sigterm(fd, standin=0): on SIGTERM, write a byte to fd and run the Python handler of\n"
     "signal `standin` in the main thread (fd -1: the default action again)."},
    {NULL}
};
