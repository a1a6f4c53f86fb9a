/* The hot path in C: event dispatchers and handlers (trampolines).
 *
 * The same interface and behaviour as pytrampolines.py (see there for what
 * each one does); hotpath.py picks this one when it is built.  Every object
 * here is a vectorcall callable that sys.monitoring calls directly, so a
 * dispatcher calling a handler adds no Python frame: the traced function is
 * always frame 0 (sys._getframe(0)) and its caller frame 1, whatever `depth`
 * the Python side passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <time.h>

static PyObject *DISABLE;          /* sys.monitoring.DISABLE */
static PyObject *getframe;         /* sys._getframe */
static PyObject *int0, *int1;
static PyObject *s_tb, *s_seq, *s_append, *s_errors, *s_co_qualname;

enum kind { K_ENTRY_DISPATCH, K_DISPATCH, K_LIST, K_OPS_ENTRY, K_FUNCTION, K_GRAPH };

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;
    int nargs;          /* dispatcher / list: arguments of the event (2 or 3) */
    int flag;           /* dispatcher: DISABLE on a miss; ops: save regs; graph: record exc type */
    PyObject *a, *b, *c, *d;
} Tramp;

static PyTypeObject TrampType;

/* ------------------------------------------------------------------ helpers */

static inline PyObject *
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* time.perf_counter_ns's clock on Linux */
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

/* sys._getframe(depth), or NULL with no error set when the stack is not that deep. */
static inline PyObject *
frame_at(PyObject *depth)
{
    PyObject *f = PyObject_Vectorcall(getframe, &depth, 1, NULL);
    if (f == NULL && PyErr_ExceptionMatches(PyExc_ValueError))
        PyErr_Clear();
    return f;
}

/* The calling thread's ThreadBuffer.  The Python side keeps it in `local.tb`;
 * here it is cached in the thread state's dict under the `local` object
 * itself, which is cheaper to reach than a threading.local attribute. */
static inline PyObject *
thread_buffer(PyObject *local, PyObject *attach)
{
    PyObject *tsd = PyThreadState_GetDict();
    if (tsd == NULL)
        return PyObject_CallNoArgs(attach);
    PyObject *tb = PyDict_GetItemWithError(tsd, local);
    if (tb != NULL)
        return Py_NewRef(tb);
    if (PyErr_Occurred())
        return NULL;
    tb = PyObject_GetAttr(local, s_tb);
    if (tb == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        tb = PyObject_CallNoArgs(attach);       /* the thread's first event */
    }
    if (tb != NULL && PyDict_SetItem(tsd, local, tb) < 0)
        Py_CLEAR(tb);
    return tb;
}

/* tb.append(record) where record = (tb.seq(), now, *fields): steals the fields. */
static int
record(PyObject *tb, PyObject *f1, PyObject *f2, PyObject *f3)
{
    int n = f3 ? 5 : 4, rc = -1;
    PyObject *seqf = NULL, *seq = NULL, *ts = NULL, *rec = NULL, *append = NULL, *r = NULL;
    /* tb.seq is an itertools.count: next() it without a Python-level call. */
    if (!(seqf = PyObject_GetAttr(tb, s_seq)))
        goto done;
    if (!(seq = Py_TYPE(seqf)->tp_iternext ? Py_TYPE(seqf)->tp_iternext(seqf) : PyIter_Next(seqf))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "fentry: thread buffer sequence exhausted");
        goto done;
    }
    if (!(ts = now_ns()) || !(rec = PyTuple_New(n)))
        goto done;
    PyTuple_SET_ITEM(rec, 0, seq); seq = NULL;
    PyTuple_SET_ITEM(rec, 1, ts); ts = NULL;
    PyTuple_SET_ITEM(rec, 2, f1); f1 = NULL;
    PyTuple_SET_ITEM(rec, 3, f2); f2 = NULL;
    if (f3) { PyTuple_SET_ITEM(rec, 4, f3); f3 = NULL; }
    /* A record holds ints, code objects, None and types: it can never be part
     * of a cycle, so keep it out of the collector's way (CPython would untrack
     * it at its first collection anyway). */
    PyObject_GC_UnTrack(rec);
    if (!(append = PyObject_GetAttr(tb, s_append)) || !(r = PyObject_CallOneArg(append, rec)))
        goto done;
    rc = 0;
done:
    Py_XDECREF(seqf); Py_XDECREF(seq); Py_XDECREF(ts); Py_XDECREF(rec);
    Py_XDECREF(append); Py_XDECREF(r);
    Py_XDECREF(f1); Py_XDECREF(f2); Py_XDECREF(f3);
    return rc;
}

/* A handler raised: Exception is caught and reported to `fault(code)`;
 * anything else (KeyboardInterrupt, SystemExit) goes on. */
static PyObject *
handler_failed(PyObject *fault, PyObject *code)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyErr_Clear();
    PyObject *r = PyObject_CallOneArg(fault, code);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_RETURN_NONE;
}

static inline PyObject *
lookup(PyObject *table, PyObject *code)
{
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL)
        return NULL;
    PyObject *h = PyDict_GetItemWithError(table, key);
    Py_DECREF(key);
    Py_XINCREF(h);
    return h;
}

/* ------------------------------------------------------------------ Ip */

typedef struct {
    PyObject_HEAD
    PyObject *code;
    PyObject *offset;
} IpObject;

static PyTypeObject IpType;

static PyObject *
ip_make(PyObject *code, PyObject *offset)
{
    IpObject *ip = PyObject_New(IpObject, &IpType);
    if (ip == NULL)
        return NULL;
    ip->code = Py_NewRef(code);
    ip->offset = Py_NewRef(offset);
    return (PyObject *)ip;
}

static PyObject *
ip_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"code", "offset", NULL};
    PyObject *code, *offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO", kwlist, &code, &offset))
        return NULL;
    return ip_make(code, offset);
}

static void
ip_dealloc(IpObject *ip)
{
    Py_XDECREF(ip->code);
    Py_XDECREF(ip->offset);
    PyObject_Free(ip);
}

static PyObject *
ip_repr(IpObject *ip)
{
    PyObject *qual = PyObject_GetAttr(ip->code, s_co_qualname);
    if (qual == NULL)
        return NULL;
    long off = PyLong_AsLong(ip->offset);
    PyObject *r = PyUnicode_FromFormat("%U+0x%lx", qual, off);
    Py_DECREF(qual);
    return r;
}

static Py_hash_t
ip_hash(IpObject *ip)
{
    PyObject *t = Py_BuildValue("(NO)", PyLong_FromVoidPtr(ip->code), ip->offset);
    if (t == NULL)
        return -1;
    Py_hash_t h = PyObject_Hash(t);
    Py_DECREF(t);
    return h;
}

static PyObject *
ip_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, &IpType) || !PyObject_TypeCheck(a, &IpType))
        Py_RETURN_NOTIMPLEMENTED;
    IpObject *x = (IpObject *)a, *y = (IpObject *)b;
    int eq = x->code == y->code;
    if (eq) {
        eq = PyObject_RichCompareBool(x->offset, y->offset, Py_EQ);
        if (eq < 0)
            return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyMemberDef ip_members[] = {
    {"code", Py_T_OBJECT_EX, offsetof(IpObject, code), Py_READONLY, "the code object"},
    {"offset", Py_T_OBJECT_EX, offsetof(IpObject, offset), Py_READONLY, "the bytecode offset"},
    {NULL}
};

static PyTypeObject IpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry.Ip",
    .tp_doc = "A site in Python code: code and bytecode offset (ip, parent_ip).",
    .tp_basicsize = sizeof(IpObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = ip_new,
    .tp_dealloc = (destructor)ip_dealloc,
    .tp_repr = (reprfunc)ip_repr,
    .tp_hash = (hashfunc)ip_hash,
    .tp_richcompare = ip_richcompare,
    .tp_members = ip_members,
};

/* ------------------------------------------------------------------ the calls */

static PyObject *
dispatch(Tramp *t, PyObject *const *args, Py_ssize_t nargs)   /* hot path */
{
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "fentry dispatcher: too few arguments");
        return NULL;
    }
    PyObject *code = args[0];
    PyObject *h = lookup(t->a, code);
    if (h == NULL) {
        if (PyErr_Occurred())
            return NULL;
        if (t->kind == K_DISPATCH)
            return Py_NewRef(t->flag ? DISABLE : Py_None);
        h = PyObject_CallOneArg(t->b, code);        /* discover(code), once per code */
        if (h == NULL)
            return NULL;
        if (h == Py_None) {
            Py_DECREF(h);
            return Py_NewRef(DISABLE);
        }
    }
    PyObject *r = PyObject_Vectorcall(h, args, nargs, NULL);
    Py_DECREF(h);
    if (r == NULL)
        return handler_failed(t->c, code);
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
list_call(Tramp *t, PyObject *const *args, Py_ssize_t nargs)   /* hot path */
{
    PyObject *pairs = t->a;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        PyObject *ops = PyTuple_GET_ITEM(pair, 0), *h = PyTuple_GET_ITEM(pair, 1);
        Py_INCREF(pair);
        PyObject *r = PyObject_Vectorcall(h, args, nargs, NULL);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                Py_DECREF(pair);
                return NULL;
            }
            PyErr_Clear();
            PyObject *e = PyObject_GetAttr(ops, s_errors), *e1 = NULL;
            if (e != NULL && (e1 = PyNumber_Add(e, int1)) != NULL)
                PyObject_SetAttr(ops, s_errors, e1);
            Py_XDECREF(e); Py_XDECREF(e1);
            PyErr_Clear();
        }
        Py_XDECREF(r);
        Py_DECREF(pair);
    }
    Py_RETURN_NONE;
}

/* The caller's Ip (parent_ip), None when there is no Python caller. */
static PyObject *
caller_ip(PyObject *caller)
{
    if (caller == NULL)
        return Py_NewRef(Py_None);
    PyObject *code = (PyObject *)PyFrame_GetCode((PyFrameObject *)caller);
    PyObject *off = PyLong_FromLong(PyFrame_GetLasti((PyFrameObject *)caller));
    PyObject *ip = (code && off) ? ip_make(code, off) : NULL;
    Py_XDECREF(code); Py_XDECREF(off);
    return ip;
}

static PyObject *
ops_entry_call(Tramp *t)   /* hot path: func(ip, parent_ip, ops, regs) */
{
    PyObject *frame = NULL, *caller, *parent, *r;
    if (t->flag) {
        if (!(frame = frame_at(int0)))
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        caller = (PyObject *)PyFrame_GetBack((PyFrameObject *)frame);
    } else {
        caller = frame_at(int1);
        if (caller == NULL && PyErr_Occurred())
            return NULL;
    }
    parent = caller_ip(caller);
    Py_XDECREF(caller);
    if (parent == NULL) {
        Py_XDECREF(frame);
        return NULL;
    }
    PyObject *argv[4] = {t->b, parent, t->c, frame ? frame : Py_None};
    r = PyObject_Vectorcall(t->a, argv, 4, NULL);
    Py_DECREF(parent);
    Py_XDECREF(frame);
    return r;
}

static PyObject *
function_call(Tramp *t, PyObject *code)   /* hot path: (seq, ts, code, caller code) */
{
    PyObject *caller = frame_at(int1), *ccode;
    if (caller == NULL) {
        if (PyErr_Occurred())
            return NULL;
        ccode = Py_NewRef(Py_None);
    } else {
        ccode = (PyObject *)PyFrame_GetCode((PyFrameObject *)caller);
        Py_DECREF(caller);
    }
    PyObject *tb = thread_buffer(t->a, t->b);
    if (tb == NULL) {
        Py_DECREF(ccode);
        return NULL;
    }
    int rc = record(tb, Py_NewRef(code), ccode, NULL);
    Py_DECREF(tb);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
graph_call(Tramp *t, PyObject *const *args, Py_ssize_t nargs)   /* hot path */
{
    PyObject *tb = thread_buffer(t->a, t->b);
    if (tb == NULL)
        return NULL;
    PyObject *exc_type = NULL;
    if (t->flag)
        exc_type = Py_NewRef(nargs > 2 ? (PyObject *)Py_TYPE(args[2]) : Py_None);
    int rc = record(tb, Py_NewRef(t->d), Py_NewRef(args[0]), exc_type);
    Py_DECREF(tb);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
tramp_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "fentry trampolines take no keyword arguments");
        return NULL;
    }
    if (nargs < 2 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "fentry trampoline takes 2 or 3 arguments (%zd given)", nargs);
        return NULL;
    }
    switch (t->kind) {
    case K_ENTRY_DISPATCH:
    case K_DISPATCH: return dispatch(t, args, nargs);
    case K_LIST: return list_call(t, args, nargs);
    case K_OPS_ENTRY: return ops_entry_call(t);
    case K_FUNCTION: return function_call(t, args[0]);
    case K_GRAPH: return graph_call(t, args, nargs);
    }
    Py_RETURN_NONE;
}

static int
tramp_traverse(Tramp *t, visitproc visit, void *arg)
{
    Py_VISIT(t->a); Py_VISIT(t->b); Py_VISIT(t->c); Py_VISIT(t->d);
    return 0;
}

static int
tramp_clear(Tramp *t)
{
    Py_CLEAR(t->a); Py_CLEAR(t->b); Py_CLEAR(t->c); Py_CLEAR(t->d);
    return 0;
}

static void
tramp_dealloc(Tramp *t)
{
    PyObject_GC_UnTrack(t);
    tramp_clear(t);
    PyObject_GC_Del(t);
}

static PyObject *
tramp_repr(Tramp *t)
{
    static const char *names[] = {"entry_dispatcher", "dispatcher", "list_func", "ops_entry",
                                  "function_entry", "graph_event"};
    return PyUnicode_FromFormat("<fentry C trampoline %s>", names[t->kind]);
}

static PyTypeObject TrampType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.Trampoline",
    .tp_basicsize = sizeof(Tramp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Tramp, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)tramp_traverse,
    .tp_clear = (inquiry)tramp_clear,
    .tp_dealloc = (destructor)tramp_dealloc,
    .tp_repr = (reprfunc)tramp_repr,
};

static PyObject *
make(int kind, int nargs, int flag, PyObject *a, PyObject *b, PyObject *c, PyObject *d)
{
    Tramp *t = PyObject_GC_New(Tramp, &TrampType);
    if (t == NULL)
        return NULL;
    t->vectorcall = tramp_vectorcall;
    t->kind = kind;
    t->nargs = nargs;
    t->flag = flag;
    t->a = Py_XNewRef(a); t->b = Py_XNewRef(b); t->c = Py_XNewRef(c); t->d = Py_XNewRef(d);
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

/* ------------------------------------------------------------------ factories */

static PyObject *
entry_dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *discover, *fault;
    if (!PyArg_ParseTuple(args, "O!OO", &PyDict_Type, &table, &discover, &fault))
        return NULL;
    return make(K_ENTRY_DISPATCH, 2, 1, table, discover, fault, NULL);
}

static PyObject *
dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *fault;
    int nargs, disable;
    if (!PyArg_ParseTuple(args, "O!Oip", &PyDict_Type, &table, &fault, &nargs, &disable))
        return NULL;
    return make(K_DISPATCH, nargs, disable, table, NULL, fault, NULL);
}

static PyObject *
list_func(PyObject *m, PyObject *args)
{
    PyObject *pairs;
    int nargs;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &pairs, &nargs))
        return NULL;
    PyObject *copy = PyList_New(0);
    if (copy == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *p = PySequence_Tuple(PyList_GET_ITEM(pairs, i));
        if (p == NULL || PyTuple_GET_SIZE(p) != 2 || PyList_Append(copy, p) < 0) {
            if (p && PyTuple_GET_SIZE(p) != 2)
                PyErr_SetString(PyExc_ValueError, "list_func: pairs must be (ops, handler)");
            Py_XDECREF(p);
            Py_DECREF(copy);
            return NULL;
        }
        Py_DECREF(p);
    }
    PyObject *r = make(K_LIST, nargs, 0, copy, NULL, NULL, NULL);
    Py_DECREF(copy);
    return r;
}

static PyObject *
ops_entry(PyObject *m, PyObject *args)
{
    PyObject *func, *ip, *ops;
    int save_regs, depth;
    if (!PyArg_ParseTuple(args, "OOOpi", &func, &ip, &ops, &save_regs, &depth))
        return NULL;
    return make(K_OPS_ENTRY, 2, save_regs, func, ip, ops, NULL);
}

static PyObject *
function_entry(PyObject *m, PyObject *args)
{
    PyObject *local, *attach;
    int depth;
    if (!PyArg_ParseTuple(args, "OOi", &local, &attach, &depth))
        return NULL;
    return make(K_FUNCTION, 2, 0, local, attach, NULL, NULL);
}

static PyObject *
graph_event(PyObject *m, PyObject *args)
{
    PyObject *local, *attach, *kind;
    if (!PyArg_ParseTuple(args, "OOO", &local, &attach, &kind))
        return NULL;
    return make(K_GRAPH, 3, 0, local, attach, NULL, kind);
}

static PyObject *
graph_exc_event(PyObject *m, PyObject *args)
{
    PyObject *local, *attach, *kind;
    if (!PyArg_ParseTuple(args, "OOO", &local, &attach, &kind))
        return NULL;
    return make(K_GRAPH, 3, 1, local, attach, NULL, kind);
}

static PyMethodDef methods[] = {
    {"entry_dispatcher", entry_dispatcher, METH_VARARGS, "PY_START dispatcher: handler or discovery."},
    {"dispatcher", dispatcher, METH_VARARGS, "Dispatcher for any other event."},
    {"list_func", list_func, METH_VARARGS, "Calls each (ops, handler) in turn."},
    {"ops_entry", ops_entry, METH_VARARGS, "An FtraceOps entry handler."},
    {"function_entry", function_entry, METH_VARARGS, "The function tracer's entry handler."},
    {"graph_event", graph_event, METH_VARARGS, "The function_graph tracer's handler."},
    {"graph_exc_event", graph_exc_event, METH_VARARGS, "The function_graph tracer's unwind handler."},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ctrampolines", "fentry's hot path in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__ctrampolines(void)
{
    PyObject *m = NULL, *sys = NULL, *mon = NULL;
    if (PyType_Ready(&TrampType) < 0 || PyType_Ready(&IpType) < 0)
        return NULL;
    if (!(sys = PyImport_ImportModule("sys")) || !(getframe = PyObject_GetAttrString(sys, "_getframe"))
        || !(mon = PyObject_GetAttrString(sys, "monitoring"))
        || !(DISABLE = PyObject_GetAttrString(mon, "DISABLE")))
        goto fail;
    int0 = PyLong_FromLong(0);
    int1 = PyLong_FromLong(1);
    s_tb = PyUnicode_InternFromString("tb");
    s_seq = PyUnicode_InternFromString("seq");
    s_append = PyUnicode_InternFromString("append");
    s_errors = PyUnicode_InternFromString("errors");
    s_co_qualname = PyUnicode_InternFromString("co_qualname");
    if (!(m = PyModule_Create(&module)))
        goto fail;
    if (PyModule_AddObjectRef(m, "Ip", (PyObject *)&IpType) < 0)
        goto fail;
    PyObject *all = Py_BuildValue("[ssssssss]", "Ip", "entry_dispatcher", "dispatcher", "list_func",
                                  "ops_entry", "function_entry", "graph_event", "graph_exc_event");
    if (all == NULL || PyModule_AddObject(m, "__all__", all) < 0)
        goto fail;
    Py_DECREF(sys);
    Py_DECREF(mon);
    return m;
fail:
    Py_XDECREF(sys); Py_XDECREF(mon); Py_XDECREF(m);
    return NULL;
}
