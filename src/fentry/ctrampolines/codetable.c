/* CodeTable: a dispatch table, id(code) -> handler, as the Python side's
 * dict, but looked up by the code object's address (open addressing, linear
 * probing), with no int object made per lookup.  Python code uses it like a
 * dict. */
#include "codetable.h"

static char dummy_key;
#define DUMMY ((void *)&dummy_key)

static int
table_resize(CodeTable *t, Py_ssize_t cap)
{
    Slot *old = t->slots;
    Py_ssize_t oldcap = t->mask + 1;
    Slot *slots = PyMem_Calloc(cap, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->slots = slots;
    t->mask = cap - 1;
    t->fill = t->used;
    for (Py_ssize_t j = 0; j < oldcap; j++) {
        if (old[j].key == NULL || old[j].key == DUMMY)
            continue;
        size_t i = ptr_hash(old[j].key) & t->mask;
        while (slots[i].key != NULL)
            i = (i + 1) & t->mask;
        slots[i] = old[j];
    }
    PyMem_Free(old);
    return 0;
}

static int
key_of(PyObject *k, void **key)
{
    *key = PyLong_AsVoidPtr(k);
    if (*key == NULL && PyErr_Occurred())
        return -1;
    if (*key == NULL || *key == DUMMY) {
        PyErr_SetString(PyExc_KeyError, "not a code object id");
        return -1;
    }
    return 0;
}

static int
table_set(CodeTable *t, void *key, PyObject *value)
{
    Slot *s = table_find(t, key);
    if (s != NULL) {
        Py_SETREF(s->value, Py_NewRef(value));
        return 0;
    }
    if ((t->fill + 1) * 3 >= (t->mask + 1) * 2) {
        Py_ssize_t cap = t->mask + 1;
        while ((t->used + 1) * 3 >= cap)
            cap *= 2;
        if (table_resize(t, cap) < 0)
            return -1;
    }
    size_t i = ptr_hash(key) & t->mask;
    while (t->slots[i].key != NULL && t->slots[i].key != DUMMY)
        i = (i + 1) & t->mask;
    if (t->slots[i].key == NULL)
        t->fill++;
    t->slots[i].key = key;
    t->slots[i].value = Py_NewRef(value);
    t->used++;
    return 0;
}

/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
static PyObject *
table_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    CodeTable *t = (CodeTable *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->mask = 7;
    t->slots = PyMem_Calloc(8, sizeof(Slot));
    if (t->slots == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    return (PyObject *)t;
}

static int
table_clear(CodeTable *t)
{
    if (t->slots == NULL)
        return 0;
    for (Py_ssize_t j = 0; j <= t->mask; j++) {
        if (t->slots[j].key != NULL && t->slots[j].key != DUMMY)
            Py_CLEAR(t->slots[j].value);
        t->slots[j].key = NULL;
    }
    t->used = t->fill = 0;
    return 0;
}

static int
table_traverse(CodeTable *t, visitproc visit, void *arg)
{
    for (Py_ssize_t j = 0; t->slots && j <= t->mask; j++)
        if (t->slots[j].key != NULL && t->slots[j].key != DUMMY)
            Py_VISIT(t->slots[j].value);
    return 0;
}

static void
table_dealloc(CodeTable *t)
{
    PyObject_GC_UnTrack(t);
    table_clear(t);
    PyMem_Free(t->slots);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static Py_ssize_t
table_len(CodeTable *t)
{
    return t->used;
}

static PyObject *
table_subscript(CodeTable *t, PyObject *k)
{
    void *key;
    if (key_of(k, &key) < 0)
        return NULL;
    PyObject *v = table_get(t, key);
    if (v == NULL) {
        PyErr_SetObject(PyExc_KeyError, k);
        return NULL;
    }
    return Py_NewRef(v);
}

static int
table_ass_subscript(CodeTable *t, PyObject *k, PyObject *v)
{
    void *key;
    if (key_of(k, &key) < 0)
        return -1;
    if (v != NULL)
        return table_set(t, key, v);
    Slot *s = table_find(t, key);
    if (s == NULL) {
        PyErr_SetObject(PyExc_KeyError, k);
        return -1;
    }
    s->key = DUMMY;
    Py_CLEAR(s->value);
    t->used--;
    return 0;
}

static int
table_contains(CodeTable *t, PyObject *k)
{
    void *key;
    if (key_of(k, &key) < 0) {
        PyErr_Clear();
        return 0;
    }
    return table_get(t, key) != NULL;
}

/* get and pop parse alike: dict's signatures. */
static PyObject *
table_get_method(CodeTable *t, PyObject *args)
{
    PyObject *k, *dflt = Py_None;
    void *key;
    if (!PyArg_ParseTuple(args, "O|O", &k, &dflt))
        return NULL;
    if (key_of(k, &key) < 0) {
        PyErr_Clear();
        return Py_NewRef(dflt);
    }
    PyObject *v = table_get(t, key);
    return Py_NewRef(v ? v : dflt);
}

static PyObject *
table_pop(CodeTable *t, PyObject *args)
{
    PyObject *k, *dflt = NULL;
    void *key;
    if (!PyArg_ParseTuple(args, "O|O", &k, &dflt))
        return NULL;
    Slot *s = key_of(k, &key) < 0 ? NULL : table_find(t, key);
    if (s == NULL) {
        if (dflt == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, k);
            return NULL;
        }
        PyErr_Clear();
        return Py_NewRef(dflt);
    }
    PyObject *v = s->value;
    s->key = DUMMY;
    s->value = NULL;
    t->used--;
    return v;
}

static PyObject *
table_clear_method(CodeTable *t, PyObject *unused)
{
    table_clear(t);
    Py_RETURN_NONE;
}

static PyObject *
table_keys(CodeTable *t, PyObject *unused)
{
    PyObject *list = PyList_New(0);
    for (Py_ssize_t j = 0; list && j <= t->mask; j++) {
        if (t->slots[j].key == NULL || t->slots[j].key == DUMMY)
            continue;
        PyObject *k = PyLong_FromVoidPtr(t->slots[j].key);
        if (k == NULL || PyList_Append(list, k) < 0)
            Py_CLEAR(list);
        Py_XDECREF(k);
    }
    return list;
}

static PyMethodDef table_methods[] = {
    {"get", (PyCFunction)table_get_method, METH_VARARGS, "get(id, default=None)"},
    {"pop", (PyCFunction)table_pop, METH_VARARGS, "pop(id[, default])"},
    {"clear", (PyCFunction)table_clear_method, METH_NOARGS, "remove every entry"},
    {"keys", (PyCFunction)table_keys, METH_NOARGS, "the ids in the table"},
    {NULL}
};

static PyMappingMethods table_as_mapping = {
    (lenfunc)table_len, (binaryfunc)table_subscript, (objobjargproc)table_ass_subscript,
};

static PySequenceMethods table_as_sequence = {
    .sq_contains = (objobjproc)table_contains,
};

PyTypeObject CodeTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.CodeTable",
    .tp_doc = "id(code) -> handler, looked up by address.",
    .tp_basicsize = sizeof(CodeTable),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = table_new,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_traverse = (traverseproc)table_traverse,
    .tp_clear = (inquiry)table_clear,
    .tp_as_mapping = &table_as_mapping,
    .tp_as_sequence = &table_as_sequence,
    .tp_methods = table_methods,
};
