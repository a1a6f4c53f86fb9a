/* Switch: an on/off flag the hot path reads without a Python call: a ring
 * buffer's tracing_on (the kernel's ring_buffer_record_on/off). */
#include "ring.h"

static PyObject *
switch_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"on", NULL};
    int on = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p", kwlist, &on))
        return NULL;
    Switch *s = (Switch *)type->tp_alloc(type, 0);
    if (s != NULL)
        s->on = on;
    return (PyObject *)s;
}

static PyObject *
switch_get(Switch *s, void *closure)
{
    return PyBool_FromLong(s->on);
}

static int
switch_set(Switch *s, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete 'on'");
        return -1;
    }
    int on = PyObject_IsTrue(value);
    if (on < 0)
        return -1;
    s->on = on;
    return 0;
}

/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
static PyGetSetDef switch_getset[] = {
    {"on", (getter)switch_get, (setter)switch_set, "True: records are written", NULL},
    {NULL}
};

PyTypeObject SwitchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.Switch",
    .tp_doc = "An on/off flag the hot path reads (a ring buffer's tracing_on).",
    .tp_basicsize = sizeof(Switch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = switch_new,
    .tp_getset = switch_getset,
};

