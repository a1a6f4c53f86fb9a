/* The recursion guard: a Python callback of fentry's that sys.monitoring
 * or the gc calls at the program's recursion limit cannot push its frame,
 * and the RecursionError would replace the program's own exception (or be
 * printed as unraisable).  recursion_guard(owner, func) is a callable that
 * checks, in C and without a frame, that func has room to run; without it,
 * the hit is counted in owner.nmissed (never silently lost) and the
 * program's event goes on untouched. */
#include "util.h"

/* Frames a callback may use: its own, the record path's and a trigger's
 * (hist, filter), with room to spare. */
#define GUARD_FRAMES 64

static PyObject *s_nmissed, *partial, *guarded;

static PyObject *
recursion_guarded(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "recursion_guarded(owner, func, *args)");
        return NULL;
    }
    if (python_frames_left() < GUARD_FRAMES) {
        PyObject *n = PyObject_GetAttr(args[0], s_nmissed);
        PyObject *n1 = n != NULL ? PyNumber_Add(n, int1) : NULL;
        if (n1 == NULL || PyObject_SetAttr(args[0], s_nmissed, n1) < 0)
            PyErr_Clear();
        Py_XDECREF(n);
        Py_XDECREF(n1);
        Py_RETURN_NONE;
    }
    return PyObject_Vectorcall(args[1], args + 2, nargs - 2, NULL);
}

static PyMethodDef guarded_def = {
    "recursion_guarded", (PyCFunction)(void (*)(void))recursion_guarded, METH_FASTCALL,
    "recursion_guarded(owner, func, *args): func(*args) if it has frames to run in, "
    "else owner.nmissed += 1",
};

static PyObject *
recursion_guard(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recursion_guard(owner, func)");
        return NULL;
    }
    if (partial == NULL) {
        PyObject *functools = PyImport_ImportModule("functools");
        if (functools == NULL)
            return NULL;
        partial = PyObject_GetAttrString(functools, "partial");
        Py_DECREF(functools);
        if (partial == NULL)
            return NULL;
    }
    if (guarded == NULL && (guarded = PyCFunction_New(&guarded_def, NULL)) == NULL)
        return NULL;
    if (s_nmissed == NULL && (s_nmissed = PyUnicode_InternFromString("nmissed")) == NULL)
        return NULL;
    /* functools.partial: C, so calling it adds no frame either. */
    return PyObject_CallFunctionObjArgs(partial, guarded, args[0], args[1], NULL);
}

PyMethodDef guard_functions[] = {
    {"recursion_guard", (PyCFunction)(void (*)(void))recursion_guard, METH_FASTCALL,
     "recursion_guard(owner, func): func, called only where it has frames to run in "
     "(else owner.nmissed += 1)"},
    {NULL, NULL, 0, NULL},
};
