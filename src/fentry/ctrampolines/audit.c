/* The audit tracepoints' hook (events/audit.py): a C audit hook, added once
 * per process at the first enable (an audit hook cannot be removed), that
 * calls the dispatcher while one is set.  Off (NULL), it costs one pointer
 * test per audited operation and holds nothing of fentry's. */
#include "util.h"

static PyObject *audit_dispatcher;      /* the dispatcher while armed; NULL: off */
static int audit_hook_added;

static int
audit_hook(const char *event, PyObject *args, void *data)
{
    PyObject *dispatch = audit_dispatcher;
    if (dispatch == NULL)
        return 0;
    /* The interpreter's finalization (which clears the hooks with an event
     * of its own) is no time to run Python code: 3.12 crashes there. */
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_IsFinalizing())
#else
    if (_Py_IsFinalizing())
#endif
        return 0;
    if (strcmp(event, "cpython._PySys_ClearAuditHooks") == 0)
        return 0;
    /* A reference of our own: the dispatcher may clear the pointer. */
    Py_INCREF(dispatch);
    PyObject *name = PyUnicode_FromString(event);
    PyObject *r = name != NULL ? PyObject_CallFunctionObjArgs(dispatch, name, args, NULL) : NULL;
    Py_XDECREF(name);
    Py_DECREF(dispatch);
    if (r == NULL)
        PyErr_Clear();      /* a hook that fails aborts the operation: never */
    Py_XDECREF(r);
    return 0;
}

static PyObject *
audit_dispatch(PyObject *m, PyObject *dispatch)
{
    if (dispatch != Py_None && !PyCallable_Check(dispatch)) {
        PyErr_SetString(PyExc_TypeError, "audit_dispatch() takes a callable or None");
        return NULL;
    }
    if (dispatch != Py_None && !audit_hook_added) {
        if (PySys_AddAuditHook(audit_hook, NULL) < 0)
            return NULL;
        audit_hook_added = 1;
    }
    Py_XSETREF(audit_dispatcher, dispatch == Py_None ? NULL : Py_NewRef(dispatch));
    Py_RETURN_NONE;
}

static PyObject *
audit_hook_armed(PyObject *m, PyObject *unused)
{
    return PyBool_FromLong(audit_dispatcher != NULL);
}

PyMethodDef audit_functions[] = {
    {"audit_dispatch", audit_dispatch, METH_O,
     "audit_dispatch(func): func(event, args) on every audit event (the process's one hook, "
     "added at the first call); None: off, nothing held."},
    {"audit_hook_armed", audit_hook_armed, METH_NOARGS,
     "audit_hook_armed(): whether the audit hook calls a dispatcher now."},
    {NULL}
};
