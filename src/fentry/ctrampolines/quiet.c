/* Quiet threads: fentry's own threads (the agent's), whose events are
 * ignored: whatever they run, stdlib code included, is never traced (the
 * kernel's per-task recursion bit).  A flag per OS thread: any number of
 * them, nothing to forget when a thread ends, and one load on every event
 * (thread_is_quiet, util.h).  initial-exec makes that load a plain
 * %fs-relative one instead of a __tls_get_addr call (one int fits glibc's
 * static TLS surplus for dlopened modules). */
#include "util.h"

#include <sys/prctl.h>

#if defined(__GNUC__)
__thread int thread_quiet __attribute__((tls_model("initial-exec")));
#else
_Thread_local int thread_quiet;
#endif

static PyObject *
quiet_thread(PyObject *m, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    int was = thread_quiet;
    thread_quiet = on;
    return PyBool_FromLong(was);
}

/* The main thread of a program started by fentry run is quiet from fentry's
 * start until the interpreter starts the program: what it does in between
 * (the end of site's imports, loading the script) is not the program's.  The
 * audit events say when: cpython.run_file or run_command, then the exec of
 * the program's code; cpython.run_module (runpy's work is the start of a -m
 * program); any other cpython.run_* (stdin, the interactive hook).  A C
 * audit hook: once armed, a string compare or two per audit event until
 * then, nothing after. */
enum { NOT_AWAITING, AWAITING_RUN, AWAITING_EXEC };
static int awaiting_program = NOT_AWAITING;
static PyObject *program_file;      /* AWAITING_EXEC: the file name of the program's code */

static int
program_start_hook(const char *event, PyObject *args, void *data)
{
    if (awaiting_program == NOT_AWAITING)
        return 0;
    if (awaiting_program == AWAITING_RUN && strncmp(event, "cpython.run_", 12) == 0
            && (strcmp(event + 12, "file") == 0 || strcmp(event + 12, "command") == 0
                || strcmp(event + 12, "module") == 0)) {
        /* The program's code: the file's, -c's (<string>), or for -m the
         * module runpy runs as __main__ (its file is not known yet: the
         * exec made by runpy's _run_code, Py_None here). */
        PyObject *file = strcmp(event + 12, "file") == 0 && PyTuple_Check(args)
                         && PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
        program_file = file != NULL ? Py_NewRef(file)
                       : strcmp(event + 12, "module") == 0 ? Py_NewRef(Py_None)
                       : PyUnicode_FromString("<string>");
        awaiting_program = program_file != NULL ? AWAITING_EXEC : NOT_AWAITING;
        PyErr_Clear();
        return 0;
    }
    /* The exec of the program's code (not of a module its loading imports). */
    int exec_of_program = 0;
    if (awaiting_program == AWAITING_EXEC && strcmp(event, "exec") == 0 && PyTuple_Check(args)
            && PyTuple_GET_SIZE(args) > 0 && PyCode_Check(PyTuple_GET_ITEM(args, 0))) {
        if (program_file == Py_None) {
            PyFrameObject *caller = PyEval_GetFrame();      /* borrowed */
            PyCodeObject *code = caller != NULL ? PyFrame_GetCode(caller) : NULL;
            exec_of_program = code != NULL && PyUnicode_CompareWithASCIIString(code->co_name,
                                                                                "_run_code") == 0;
            Py_XDECREF(code);
        }
        else {
            PyObject *name = ((PyCodeObject *)PyTuple_GET_ITEM(args, 0))->co_filename;
            exec_of_program = PyUnicode_Check(program_file)
                              && PyUnicode_Compare(name, program_file) == 0;
        }
        PyErr_Clear();
    }
    if (exec_of_program
            || (awaiting_program == AWAITING_RUN && strncmp(event, "cpython.run_", 12) == 0)) {
        Py_CLEAR(program_file);
        awaiting_program = NOT_AWAITING;
        PyObject *r = quiet_thread(NULL, Py_False);
        Py_XDECREF(r);
        if (r == NULL)
            PyErr_Clear();
    }
    return 0;
}

static PyObject *
quiet_until_program(PyObject *m, PyObject *unused)
{
    static int hooked = 0;
    if (!hooked) {
        if (PySys_AddAuditHook(program_start_hook, NULL) < 0)
            return NULL;
        hooked = 1;
    }
    awaiting_program = AWAITING_RUN;
    return quiet_thread(m, Py_True);
}

/* name_thread("fentry-agent"): the calling thread's kernel name (comm), by
 * prctl: no descriptor is opened (writing /proc/self/task/TID/comm takes
 * the lowest free number for a moment, and the program's open() in another
 * thread would get the next one). */
static PyObject *
name_thread(PyObject *m, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL)
        return NULL;
    if (prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

PyMethodDef quiet_functions[] = {
    {"quiet_thread", quiet_thread, METH_O, "quiet_thread(True): ignore the calling thread's events."},
    {"quiet_until_program", quiet_until_program, METH_NOARGS,
     "quiet_until_program(): the calling thread is quiet until the interpreter starts the program."},
    {"name_thread", name_thread, METH_O,
     "name_thread(name): the calling thread's kernel name (comm, 15 bytes at most), with no descriptor."},
    {NULL}
};
