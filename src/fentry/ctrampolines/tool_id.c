/* use_tool_id: sys.monitoring.use_tool_id while fentry holds a tool id
 * (arch.Monitor): hook(*args) first -- fentry moves off the id asked for, if
 * it is its own and another is free -- then the function it replaced.  A
 * builtin whose __self__ is a module named sys.monitoring, as the original's
 * is: the same name, repr, signature and __module__, and no frame of
 * fentry's in the traceback of the original's ValueError.  Its state lives
 * in the dict of that module of its own, so that wrappers of wrappers never
 * mix. */
#include "util.h"

static PyObject *
use_tool_id_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *d = PyModule_GetDict(self);
    PyObject *original = PyDict_GetItemWithError(d, s_original);
    if (original == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "use_tool_id: lost the function it wraps");
        return NULL;
    }
    Py_INCREF(original);
    PyObject *hook = PyDict_GetItemWithError(d, s_hook);
    if (hook != NULL) {
        Py_INCREF(hook);
        PyObject *r = PyObject_Vectorcall(hook, args, nargs, NULL);
        Py_DECREF(hook);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {     /* KeyboardInterrupt: the program's */
                Py_DECREF(original);
                return NULL;
            }
            PyErr_Clear();
        }
        Py_XDECREF(r);
    }
    else if (PyErr_Occurred()) {
        Py_DECREF(original);
        return NULL;
    }
    PyObject *r = PyObject_Vectorcall(original, args, nargs, NULL);
    Py_DECREF(original);
    return r;
}

static PyMethodDef use_tool_id_def = {
    "use_tool_id", (PyCFunction)(void (*)(void))use_tool_id_call, METH_FASTCALL,
    "use_tool_id($module, tool_id, name, /)\n--\n\n",
};

static PyObject *
use_tool_id_wrapper(PyObject *m, PyObject *args)
{
    PyObject *monitoring, *original, *hook;
    if (!PyArg_ParseTuple(args, "OOO", &monitoring, &original, &hook))
        return NULL;
    PyObject *name = PyModule_Check(monitoring) ? PyModule_GetNameObject(monitoring)
                                                : PyUnicode_FromString("sys.monitoring");
    if (name == NULL)
        return NULL;
    PyObject *self = PyModule_NewObject(name), *f = NULL;
    if (self != NULL && PyDict_SetItem(PyModule_GetDict(self), s_original, original) == 0
        && PyDict_SetItem(PyModule_GetDict(self), s_hook, hook) == 0)
        f = PyCFunction_NewEx(&use_tool_id_def, self, name);
    Py_XDECREF(self);
    Py_DECREF(name);
    return f;
}

PyMethodDef tool_id_functions[] = {
    {"use_tool_id_wrapper", use_tool_id_wrapper, METH_VARARGS,
     "use_tool_id_wrapper(monitoring, original, hook): sys.monitoring.use_tool_id calling hook first."},
    {NULL}
};
