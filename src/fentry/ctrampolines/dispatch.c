/* The dispatchers and the handlers of the tracers: what sys.monitoring
 * calls for a traced code object (the kernel's ftrace_ops_list_func and
 * per-ops trampolines), and the Trampoline type they all are.
 *
 * The same interface and behaviour as pytrampolines.py (see there for what
 * each one does); hotpath.py picks this one when it is built.  A dispatcher
 * calling a handler adds no Python frame: the traced function is always
 * frame 0 (sys._getframe(0)) and its caller frame 1, whatever `depth` the
 * Python side passes. */
#include "tramp.h"
#include "codetable.h"
#include "graph_values.h"
#include "ip.h"

/* sys._getframe(depth), or NULL with no error set when the stack is not that deep. */
static inline PyObject *
frame_at(PyObject *depth)
{
    PyObject *f = PyObject_Vectorcall(getframe, &depth, 1, NULL);
    if (f == NULL && PyErr_ExceptionMatches(PyExc_ValueError))
        PyErr_Clear();
    return f;
}

/* A handler raised: Exception is caught and reported to `fault(code)`;
 * anything else (KeyboardInterrupt, SystemExit) goes on. */
PyObject *
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

/* Each kind's function starts alike (tramp_nargs): sys.monitoring calls it
 * directly, with no shared entry to check the arguments once. */
static PyObject *
dispatch_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    if (thread_is_quiet())
        Py_RETURN_NONE;
    PyObject *code = args[0];
    PyObject *h = table_get((CodeTable *)t->o.dispatch.table, code);
    if (h != NULL && t->kind == K_OFFSET_DISPATCH) {
        /* INSTRUCTION: a dict of probed offsets; DISABLE every other one */
        h = PyDict_Check(h) ? PyDict_GetItemWithError(h, args[1]) : NULL;
        if (h == NULL) {
            if (PyErr_Occurred())
                return NULL;
            return Py_NewRef(DISABLE);
        }
    }
    Py_XINCREF(h);
    if (h == NULL) {
        if (t->kind == K_OFFSET_DISPATCH)
            return Py_NewRef(DISABLE);
        if (t->kind == K_DISPATCH)
            return Py_NewRef(t->disable ? DISABLE : Py_None);
        h = PyObject_CallOneArg(t->o.dispatch.discover, code);     /* once per code */
        if (h == NULL) {
            /* Discovery is Python code on the program's stack: at its
             * recursion limit it fails.  The program must not see that;
             * the code is decided at a later call (no DISABLE). */
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return NULL;
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (h == Py_None) {
            Py_DECREF(h);
            return Py_NewRef(DISABLE);
        }
    }
    PyObject *r = PyObject_Vectorcall(h, args, nargs, NULL);
    Py_DECREF(h);
    if (r == NULL)
        return handler_failed(t->o.dispatch.fault, code);
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
list_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    PyObject *pairs = t->o.list.pairs;
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
caller_ip(void)
{
    _PyInterpreterFrame *f = caller_frame();
    if (f == NULL)
        return Py_NewRef(Py_None);
    PyObject *code = PyUnstable_InterpreterFrame_GetCode(f);
    PyObject *off = PyLong_FromLong(call_site(code, PyUnstable_InterpreterFrame_GetLasti(f)));
    PyObject *ip = (code && off) ? ip_make(code, off) : NULL;
    Py_XDECREF(code); Py_XDECREF(off);
    return ip;
}

static PyObject *
ops_entry_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    if (tramp_nargs(nargsf, kwnames) < 0)
        return NULL;
    PyObject *frame = NULL, *parent, *ip, *r;
    if (t->save_regs && !(frame = frame_at(int0)))       /* regs: the traced frame */
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (!(parent = caller_ip())) {
        Py_XDECREF(frame);
        return NULL;
    }
    /* A handler kept in a table must not keep its code alive: ip names the
     * code only during the call.  The tramp keeps one spare Ip, of None,
     * that no one else holds: for the call it borrows the code (the running
     * frame holds it); after it, it is None again, unless func kept it,
     * which then gets its own reference to the code.  No Ip is made per
     * call, no reference count moves. */
    IpObject *spare = (IpObject *)t->o.ops.ip;
    if (spare != NULL && Py_REFCNT(spare) == 1) {
        t->o.ops.ip = NULL;         /* ours during the call (a nested call makes its own) */
        spare->code = args[0];
        ip = (PyObject *)spare;
    }
    else if (!(ip = ip_make(args[0], int0))) {
        Py_DECREF(parent);
        Py_XDECREF(frame);
        return NULL;
    }
    else
        spare = NULL;
    PyObject *argv[4] = {ip, parent, t->o.ops.ops, frame ? frame : Py_None};
    r = PyObject_Vectorcall(t->o.ops.func, argv, 4, NULL);
    if (spare != NULL) {
        if (Py_REFCNT(spare) == 1 && t->o.ops.ip == NULL) {
            spare->code = Py_None;  /* (immortal: no reference to own) */
            t->o.ops.ip = ip;
            ip = NULL;
        }
        else if (Py_REFCNT(spare) == 1)
            spare->code = Py_None;  /* (a nested call's spare went back first) */
        else
            Py_INCREF(args[0]);     /* func kept it: the code reference becomes its own */
    }
    Py_XDECREF(ip);
    Py_DECREF(parent);
    Py_XDECREF(frame);
    return r;
}


static PyObject *
function_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    /* the record: (seq, ts, code, caller code) */
    Tramp *t = (Tramp *)self;
    if (tramp_nargs(nargsf, kwnames) < 0)
        return NULL;
    Ring *ring = thread_ring(t);
    if (ring == NULL)
        return NULL;
    if (ring->skip & RING_SKIP_FUNCTION) {       /* set_ftrace_pid left this thread out */
        Py_DECREF(ring);
        Py_RETURN_NONE;
    }
    _PyInterpreterFrame *f = caller_frame();
    PyObject *ccode = f == NULL ? Py_NewRef(Py_None) : PyUnstable_InterpreterFrame_GetCode(f);
    ring_write(ring, L_FUNCTION, 0, Py_NewRef(args[0]), ccode);
    Py_DECREF(ring);
    Py_RETURN_NONE;
}

static PyObject *
graph_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    Ring *ring = thread_ring(t);
    if (ring == NULL)
        return NULL;
    if (ring->skip & RING_SKIP_FUNCTION) {
        Py_DECREF(ring);
        Py_RETURN_NONE;
    }
    if (t->graph.exc)
        ring_write(ring, L_GRAPH_EXC, t->graph.rkind, Py_NewRef(args[0]),
                   Py_NewRef(nargs > 2 ? (PyObject *)Py_TYPE(args[2]) : Py_None));
    else
        ring_write(ring, L_GRAPH, t->graph.rkind, Py_NewRef(args[0]), NULL);
    Py_DECREF(ring);
    Py_RETURN_NONE;
}

/* A selected ENTRY's (RETURN's) record with its values (graph_values.h),
 * as the value handlers write it without a selection.  0, or -1 with an
 * exception set (kept_cell's: the record is written first). */
static int
gated_values(Tramp *t, Ring *ring, int kind, PyObject *const *args, Py_ssize_t nargs)   /* hot path */
{
    Cell cells[GRAPH_MAX_ARGS];
    int tags[GRAPH_MAX_ARGS], n = 1, failed;
    PyObject *shown = t->o.graphval.shown, *fault = t->o.graphval.fault;
    if (kind == GRAPH_ENTRY)
        n = arg_cells(shown, fault, args[0], t->graph.count, cells, tags, &failed);
    else
        failed = retval_cell(shown, fault, args, nargs, cells, tags);
    return write_values(ring, kind, args[0], cells, tags, n, failed);
}

/* graph_call under a selection (graph.h): an entry or an exit, recorded
 * only when selected, with its values when made with them; with
 * tracing_thresh, only a long call's exit, alone (no values). */
static PyObject *
graph_gated_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    Ring *ring = thread_ring(t);
    if (ring == NULL)
        return NULL;
    if (ring->skip & RING_SKIP_FUNCTION) {       /* set_ftrace_pid left this thread out */
        Py_DECREF(ring);
        Py_RETURN_NONE;
    }
    const GraphSel *sel = &t->graph.sel;
    GraphState *s = graph_state(ring, sel->gen);
    if (s == NULL) {
        Py_DECREF(ring);
        return PyErr_NoMemory();
    }
    PyObject *code = args[0];
    int kind = t->graph.rkind, depth, r = 0;
    long long now = sel->thresh_ns ? mono_ns() : 0, start;
    if (kind == GRAPH_ENTRY || kind == GRAPH_RESUME || kind == GRAPH_THROW) {
        if (graph_enter(s, sel, code, now) && !sel->thresh_ns) {
            if (t->graph.values)
                r = gated_values(t, ring, kind, args, nargs);
            else
                ring_write(ring, L_GRAPH, kind, Py_NewRef(code), NULL);
        }
    }
    else if (graph_leave(s, sel, code, &depth, &start)) {
        if (sel->thresh_ns) {
            if (start < 0)
                s->untimed++;       /* beyond GRAPH_STACK: not timed */
            else if (now - start >= sel->thresh_ns)
                ring_write_thresh(ring, code, now - start, depth);
        }
        else if (t->graph.values)
            r = gated_values(t, ring, kind, args, nargs);
        else {
            PyObject *exc = !t->graph.exc ? NULL
                            : Py_NewRef(nargs > 2 ? (PyObject *)Py_TYPE(args[2]) : Py_None);
            ring_write(ring, t->graph.exc ? L_GRAPH_EXC : L_GRAPH, kind, Py_NewRef(code), exc);
        }
    }
    Py_DECREF(ring);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyObject *
nop_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (tramp_nargs(nargsf, kwnames) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ the type
 * Its slots: CPython's boilerplate, alike in every type of this folder. */

static int
tramp_traverse(Tramp *t, visitproc visit, void *arg)
{
    for (int i = 0; i < TRAMP_REFS; i++)
        Py_VISIT(t->o.refs[i]);
    Py_VISIT(t->ring.ring);
    return 0;
}

static int
tramp_clear(Tramp *t)
{
    for (int i = 0; i < TRAMP_REFS; i++)
        Py_CLEAR(t->o.refs[i]);
    Py_CLEAR(t->ring.ring);
    return 0;
}

static void
tramp_dealloc(Tramp *t)
{
    PyObject_GC_UnTrack(t);
    tramp_clear(t);
    PyMem_Free(t->slots);
    PyObject_GC_Del(t);
}

static PyObject *
tramp_repr(Tramp *t)
{
    static const char *names[] = {"entry_dispatcher", "dispatcher", "list_func", "ops_entry",
                                  "function_entry", "graph_event", "offset_dispatcher",
                                  "probe", "probe_exit", "probe_start", "nop", "graph_gated_event",
                                  "graph_values", "call_dispatcher", "graph_c_event"};
    return PyUnicode_FromFormat("<fentry C trampoline %s>", names[t->kind]);
}

PyTypeObject TrampType = {
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

_Static_assert(sizeof(TrampRefs) == TRAMP_REFS * sizeof(PyObject *),
               "every object a Tramp holds is in refs[]");

Tramp *
tramp_new(int kind, vectorcallfunc call)
{
    Tramp *t = PyObject_GC_New(Tramp, &TrampType);
    if (t == NULL)
        return NULL;
    memset((char *)t + offsetof(Tramp, vectorcall), 0, sizeof(Tramp) - offsetof(Tramp, vectorcall));
    t->vectorcall = call;
    t->kind = kind;
    PyObject_GC_Track(t);
    return t;
}

/* ------------------------------------------------------------------ factories */

static PyObject *
dispatcher_new(int kind, PyObject *table, PyObject *discover, PyObject *fault, int disable)
{
    Tramp *t = tramp_new(kind, dispatch_call);
    if (t == NULL)
        return NULL;
    t->o.dispatch.table = Py_NewRef(table);
    t->o.dispatch.discover = Py_XNewRef(discover);
    t->o.dispatch.fault = Py_NewRef(fault);
    t->disable = disable;
    return (PyObject *)t;
}

static PyObject *
entry_dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *discover, *fault;
    if (!PyArg_ParseTuple(args, "O!OO", &CodeTableType, &table, &discover, &fault))
        return NULL;
    return dispatcher_new(K_ENTRY_DISPATCH, table, discover, fault, 1);
}

static PyObject *
dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *fault;
    int nargs, disable;     /* (the pure-Python twin needs the event's arity; this takes either) */
    if (!PyArg_ParseTuple(args, "O!Oip", &CodeTableType, &table, &fault, &nargs, &disable))
        return NULL;
    return dispatcher_new(K_DISPATCH, table, NULL, fault, disable);
}

static PyObject *
offset_dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *fault;
    if (!PyArg_ParseTuple(args, "O!O", &CodeTableType, &table, &fault))
        return NULL;
    return dispatcher_new(K_OFFSET_DISPATCH, table, NULL, fault, 1);
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
    Tramp *t = tramp_new(K_LIST, list_call);
    if (t == NULL) {
        Py_DECREF(copy);
        return NULL;
    }
    t->o.list.pairs = copy;
    return (PyObject *)t;
}

static PyObject *
ops_entry(PyObject *m, PyObject *args)
{
    PyObject *func, *ops;
    int save_regs, depth;
    if (!PyArg_ParseTuple(args, "OOpi", &func, &ops, &save_regs, &depth))
        return NULL;
    Tramp *t = tramp_new(K_OPS_ENTRY, ops_entry_call);
    if (t == NULL)
        return NULL;
    t->o.ops.func = Py_NewRef(func);
    t->o.ops.ops = Py_NewRef(ops);
    t->o.ops.ip = ip_make(Py_None, int0);       /* the spare (NULL: one is made at each call) */
    PyErr_Clear();
    t->save_regs = save_regs;
    return (PyObject *)t;
}

static PyObject *
recorder_new(int kind, vectorcallfunc call, PyObject *local, PyObject *attach)
{
    Tramp *t = tramp_new(kind, call);
    if (t == NULL)
        return NULL;
    t->o.rec.local = Py_NewRef(local);
    t->o.rec.attach = Py_NewRef(attach);
    return (PyObject *)t;
}

static PyObject *
function_entry(PyObject *m, PyObject *args)
{
    PyObject *local, *attach;
    int depth;
    if (!PyArg_ParseTuple(args, "OOi", &local, &attach, &depth))
        return NULL;
    return recorder_new(K_FUNCTION, function_call, local, attach);
}

static PyObject *
graph_make(PyObject *args, int exc)
{
    PyObject *local, *attach;
    int kind, nargs = 3;    /* (the pure-Python twin needs the event's arity; this takes either) */
    if (!PyArg_ParseTuple(args, "OOi|i", &local, &attach, &kind, &nargs))
        return NULL;
    Tramp *t = (Tramp *)recorder_new(K_GRAPH, graph_call, local, attach);
    if (t != NULL) {
        t->graph.rkind = kind;
        t->graph.exc = exc;
    }
    return (PyObject *)t;
}

/* Two names for the Python side, as pytrampolines.py's (as Ring's snapshot and consume). */
static PyObject *
graph_event(PyObject *m, PyObject *args)
{
    return graph_make(args, 0);
}

static PyObject *
graph_exc_event(PyObject *m, PyObject *args)
{
    return graph_make(args, 1);
}

/* graph_gated_event(local, attach, kind, role, max_depth, thresh_ns, gen
 * [, nargs, shown, fault, count, depth]): with shown (not None), at ENTRY
 * or RETURN, the values as graph_args_event and graph_retval_event take them. */
static PyObject *
graph_gated_event(PyObject *m, PyObject *args)
{
    PyObject *local, *attach, *shown = Py_None, *fault = Py_None;
    int kind, nargs = 3, count = 0, depth = 0;     /* (nargs, depth: as graph_event's, graph_args_event's) */
    GraphSel sel;
    if (!PyArg_ParseTuple(args, "OOiiiLL|iOOii", &local, &attach, &kind, &sel.role, &sel.max_depth,
                          &sel.thresh_ns, &sel.gen, &nargs, &shown, &fault, &count, &depth))
        return NULL;
    Tramp *t = (Tramp *)recorder_new(K_GRAPH_GATED, graph_gated_call, local, attach);
    if (t != NULL) {
        t->graph.rkind = kind;
        t->graph.exc = kind == GRAPH_UNWIND;
        t->graph.sel = sel;
        if (shown != Py_None && (kind == GRAPH_ENTRY || kind == GRAPH_RETURN)) {
            t->graph.values = 1;
            t->graph.count = count < 0 ? 0 : count > GRAPH_MAX_ARGS ? GRAPH_MAX_ARGS : count;
            t->o.graphval.shown = Py_NewRef(shown);
            t->o.graphval.fault = Py_NewRef(fault);
        }
    }
    return (PyObject *)t;
}

PyMethodDef dispatch_functions[] = {
    {"entry_dispatcher", entry_dispatcher, METH_VARARGS, "PY_START dispatcher: handler or discovery."},
    {"offset_dispatcher", offset_dispatcher, METH_VARARGS, "INSTRUCTION dispatcher: probed offsets only."},
    {"dispatcher", dispatcher, METH_VARARGS, "Dispatcher for any other event."},
    {"list_func", list_func, METH_VARARGS, "Calls each (ops, handler) in turn."},
    {"ops_entry", ops_entry, METH_VARARGS, "An FtraceOps entry handler."},
    {"function_entry", function_entry, METH_VARARGS, "The function tracer's entry handler."},
    {"graph_event", graph_event, METH_VARARGS, "The function_graph tracer's handler."},
    {"graph_exc_event", graph_exc_event, METH_VARARGS, "The function_graph tracer's unwind handler."},
    {"graph_gated_event", graph_gated_event, METH_VARARGS,
     "The function_graph tracer's handler under a selection (set_graph_function ...)."},
    {NULL}
};
