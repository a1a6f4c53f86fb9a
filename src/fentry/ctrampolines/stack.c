/* The stack tracer's hot path (the kernel's trace_stack.c check_stack): on
 * entry of a function it watches, the depth of the calling thread's Python
 * stack, in frames, against the deepest seen; only a new maximum pays for
 * copying the stack (its frames' code and offset).
 *
 * The depth is O(1): CPython counts the Python frames of a thread for its
 * recursion limit (py_depth in internals.h), one per frame entered,
 * generators' resumptions and frames run from C included.  The pure-Python
 * twin walks f_back, which gives the same number (the tests check it). */
#include "util.h"

typedef struct {
    PyObject_HEAD
    Py_ssize_t max;             /* stack_max_size: the deepest stack seen, in frames */
    Py_ssize_t n;               /* frames kept of it */
    PyObject **codes;           /* owned: innermost first */
    int *offsets;               /* each frame's instruction (0: the entered function) */
    unsigned long tid;          /* its thread's native id */
    PyObject *thread;           /* owned: its Thread, or NULL (not one of threading's) */
} StackMax;

static PyObject *s_threading, *s_active;

/* Keep the calling thread's stack, `depth` frames deep, as the new maximum.
 * The new frames go in new arrays, swapped in whole before the old ones are
 * released: a release may run Python code (a Thread's finalizer, any
 * __del__), and so let another thread in here. */
static int
stack_keep(StackMax *s, PyThreadState *ts, Py_ssize_t depth)
{
    Py_ssize_t n = 0;
    for (_PyInterpreterFrame *f = innermost_frame(ts); f != NULL; f = older_frame(f))
        n++;
    PyObject **codes = PyMem_Malloc((n ? n : 1) * sizeof(PyObject *));
    int *offsets = PyMem_Malloc((n ? n : 1) * sizeof(int));
    PyObject *key = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (codes == NULL || offsets == NULL || key == NULL) {
        PyMem_Free(codes);
        PyMem_Free(offsets);
        Py_XDECREF(key);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    /* Its Thread, for its name once it has ended, in the program's
     * threading._active if it has imported threading (fentry does not:
     * pythreads.py): dict lookups, no Python code. */
    PyObject *thread = NULL, *threads = NULL;
    PyObject *threading = PyImport_GetModule(s_threading);
    if (threading != NULL) {
        threads = PyObject_GetAttr(threading, s_active);
        Py_DECREF(threading);
        if (threads == NULL)
            PyErr_Clear();      /* (threading's import is running: not there yet) */
    }
    if (threads != NULL && PyDict_Check(threads))
        thread = PyDict_GetItemWithError(threads, key);     /* borrowed: kept below while threads is */
    Py_DECREF(key);
    if (PyErr_Occurred()) {
        Py_XDECREF(threads);
        PyMem_Free(codes);
        PyMem_Free(offsets);
        return -1;
    }
    Py_ssize_t i = 0;
    for (_PyInterpreterFrame *f = innermost_frame(ts); f != NULL && i < n; f = older_frame(f), i++) {
        PyObject *code = frame_code(f);
        codes[i] = Py_NewRef(code);
        offsets[i] = i == 0 ? 0 : call_site(code, PyUnstable_InterpreterFrame_GetLasti(f));
    }
    PyObject **old = s->codes, *old_thread = s->thread;
    Py_ssize_t old_n = s->n;
    PyMem_Free(s->offsets);
    s->codes = codes;
    s->offsets = offsets;
    s->n = i;
    s->max = depth;
    s->tid = PyThread_get_thread_native_id();
    s->thread = Py_XNewRef(thread);
    Py_XDECREF(threads);
    for (Py_ssize_t k = 0; k < old_n; k++)
        Py_DECREF(old[k]);
    PyMem_Free(old);
    Py_XDECREF(old_thread);
    return 0;
}

static PyObject *
stack_max_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (!PyArg_ParseTuple(args, ":StackMax"))
        return NULL;
    if (s_threading == NULL && (s_threading = PyUnicode_InternFromString("threading")) == NULL)
        return NULL;
    if (s_active == NULL && (s_active = PyUnicode_InternFromString("_active")) == NULL)
        return NULL;
    return type->tp_alloc(type, 0);
}

static int
stack_max_traverse(StackMax *s, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < s->n; i++)
        Py_VISIT(s->codes[i]);
    Py_VISIT(s->thread);
    return 0;
}

static int
stack_max_clear(StackMax *s)
{
    Py_ssize_t n = s->n;
    s->n = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(s->codes[i]);
    Py_CLEAR(s->thread);
    return 0;
}

static void
stack_max_dealloc(StackMax *s)
{
    PyObject_GC_UnTrack(s);
    stack_max_clear(s);
    PyMem_Free(s->codes);
    PyMem_Free(s->offsets);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *
stack_max_frames(StackMax *s, PyObject *unused)
{
    PyObject *list = PyList_New(s->n);
    for (Py_ssize_t i = 0; list != NULL && i < s->n; i++) {
        PyObject *item = Py_BuildValue("(Oi)", s->codes[i], s->offsets[i]);
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *
stack_max_get_max(StackMax *s, void *closure)
{
    return PyLong_FromSsize_t(s->max);
}

static int
stack_max_set_max(StackMax *s, PyObject *value, void *closure)
{
    Py_ssize_t v = value ? PyLong_AsSsize_t(value) : -1;
    if (v == -1 && (value == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "max cannot be deleted");
        return -1;
    }
    s->max = v;
    return 0;
}

static PyObject *
stack_max_get_tid(StackMax *s, void *closure)
{
    return PyLong_FromUnsignedLong(s->tid);
}

static PyObject *
stack_max_get_thread(StackMax *s, void *closure)
{
    return Py_NewRef(s->thread != NULL ? s->thread : Py_None);
}

/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
static PyMethodDef stack_max_methods[] = {
    {"frames", (PyCFunction)stack_max_frames, METH_NOARGS,
     "[(code, offset)] of the deepest stack, innermost first"},
    {NULL}
};

static PyGetSetDef stack_max_getset[] = {
    {"max", (getter)stack_max_get_max, (setter)stack_max_set_max,
     "the deepest stack seen, in frames (stack_max_size)", NULL},
    {"tid", (getter)stack_max_get_tid, NULL, "its thread's native id", NULL},
    {"thread", (getter)stack_max_get_thread, NULL, "its Thread, or None", NULL},
    {NULL}
};

PyTypeObject StackMaxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.StackMax",
    .tp_doc = "The deepest Python stack seen, and its frames (the stack tracer's).",
    .tp_basicsize = sizeof(StackMax),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = stack_max_new,
    .tp_traverse = (traverseproc)stack_max_traverse,
    .tp_clear = (inquiry)stack_max_clear,
    .tp_dealloc = (destructor)stack_max_dealloc,
    .tp_methods = stack_max_methods,
    .tp_getset = stack_max_getset,
};

/* ------------------------------------------------------------------ the handler */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    StackMax *stack;            /* owned */
} StackCheck;

static PyObject *
stack_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "the stack tracer's handler takes (code, offset)");
        return NULL;
    }
    StackMax *s = ((StackCheck *)self)->stack;
    PyThreadState *ts = PyThreadState_Get();
    Py_ssize_t depth = py_depth(ts);
    if (depth <= s->max)
        Py_RETURN_NONE;
    if (stack_keep(s, ts, depth) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
check_traverse(StackCheck *h, visitproc visit, void *arg)
{
    Py_VISIT(h->stack);
    return 0;
}

static int
check_clear(StackCheck *h)
{
    Py_CLEAR(h->stack);
    return 0;
}

static void
check_dealloc(StackCheck *h)
{
    PyObject_GC_UnTrack(h);
    check_clear(h);
    PyObject_GC_Del(h);
}

PyTypeObject StackCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.StackCheck",
    .tp_basicsize = sizeof(StackCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(StackCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)check_traverse,
    .tp_clear = (inquiry)check_clear,
    .tp_dealloc = (destructor)check_dealloc,
};

static PyObject *
stack_check(PyObject *m, PyObject *args)
{
    PyObject *stack;
    int depth;          /* (the pure-Python twin finds the frame by it; this reads the thread's) */
    if (!PyArg_ParseTuple(args, "O!i", &StackMaxType, &stack, &depth))
        return NULL;
    StackCheck *h = PyObject_GC_New(StackCheck, &StackCheckType);
    if (h == NULL)
        return NULL;
    h->vectorcall = stack_call;
    h->stack = (StackMax *)Py_NewRef(stack);
    PyObject_GC_Track(h);
    return (PyObject *)h;
}

PyMethodDef stack_functions[] = {
    {"stack_check", stack_check, METH_VARARGS, "The stack tracer's PY_START handler."},
    {NULL}
};
