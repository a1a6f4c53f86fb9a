/* Calls of C functions: sys.monitoring's CALL, C_RETURN and C_RAISE, each
 * called (code, offset, callable, arg0).  The dispatcher of the three
 * events (the C probes' and funcgraph-c's), and funcgraph-c's handler.
 * The same interface and behaviour as pytrampolines.py's call_dispatcher
 * and graph_c_event. */
#include "tramp.h"
#include "codetable.h"

/* Call `h`; a raise goes to fault(code), as the dispatchers'. 0, or -1
 * with an exception set (one that is not an Exception). */
static int
call_handler(Tramp *t, PyObject *h, PyObject *const *args)   /* hot path */
{
    Py_INCREF(h);
    PyObject *r = PyObject_Vectorcall(h, args, 4, NULL);
    Py_DECREF(h);
    if (r == NULL) {
        r = handler_failed(t->o.dispatch.fault, args[0]);
        if (r == NULL)
            return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The code's handler (funcgraph-c), then the callable's (C probes: by its
 * address, else, bound to an object, its type's).  Never DISABLE: a call
 * site's callable varies. */
static PyObject *
dispatch_c_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    if (nargs != 4 || thread_is_quiet())
        Py_RETURN_NONE;
    PyObject *h = table_get((CodeTable *)t->o.dispatch.table, args[0]);
    if (h != NULL && call_handler(t, h, args) < 0)
        return NULL;
    CodeTable *probes = (CodeTable *)t->o.dispatch.discover;
    PyObject *c = args[2], *self_;
    h = table_get(probes, c);
    /* a C method bound beforehand: by its type (a module's function is never bound so) */
    if (h == NULL && PyCFunction_CheckExact(c) && (self_ = PyCFunction_GET_SELF(c)) != NULL
            && !PyModule_CheckExact(self_))
        h = table_get(probes, (void *)Py_TYPE(c));
    if (h != NULL && call_handler(t, h, args) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The stand-in code object of C function `c` (a new reference), from the
 * cache by its PyMethodDef (static: one per C function, bound or not), or
 * made by standin(c) once; NULL and no error when `c` is no C function. */
static PyObject *
standin_of(Tramp *t, PyObject *c)   /* hot path */
{
    PyMethodDef *def;
    if (PyCFunction_CheckExact(c))
        def = ((PyCFunctionObject *)c)->m_ml;
    else if (Py_IS_TYPE(c, &PyMethodDescr_Type))
        def = ((PyMethodDescrObject *)c)->d_method;
    else
        return NULL;
    PyObject *s = table_get((CodeTable *)t->o.graphc.cache, def);
    if (s != NULL)
        return Py_NewRef(s);
    s = PyObject_CallOneArg(t->o.graphc.standin, c);
    PyObject *key = s == NULL ? NULL : PyLong_FromVoidPtr(def);
    if (key == NULL || PyObject_SetItem(t->o.graphc.cache, key, s) < 0)
        Py_CLEAR(s);
    Py_XDECREF(key);
    return s;
}

static PyObject *
graph_c_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    if (nargs != 4)
        Py_RETURN_NONE;
    PyObject *s = standin_of(t, args[2]);
    if (s == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    Ring *ring = thread_ring(t);
    if (ring == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    if (ring->skip & RING_SKIP_FUNCTION) {       /* set_ftrace_pid left this thread out */
        Py_DECREF(s);
        Py_DECREF(ring);
        Py_RETURN_NONE;
    }
    if (t->o.graphc.exc != NULL)
        ring_write(ring, L_GRAPH_EXC, t->graph.rkind, s, Py_NewRef(t->o.graphc.exc));
    else
        ring_write(ring, L_GRAPH, t->graph.rkind, s, NULL);
    Py_DECREF(ring);
    Py_RETURN_NONE;
}

static PyObject *
call_dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *probes, *fault;
    if (!PyArg_ParseTuple(args, "O!O!O", &CodeTableType, &table, &CodeTableType, &probes, &fault))
        return NULL;
    Tramp *t = tramp_new(K_CALL_DISPATCH, dispatch_c_call);
    if (t == NULL)
        return NULL;
    t->o.dispatch.table = Py_NewRef(table);
    t->o.dispatch.discover = Py_NewRef(probes);
    t->o.dispatch.fault = Py_NewRef(fault);
    return (PyObject *)t;
}

static PyObject *
graph_c_event(PyObject *m, PyObject *args)
{
    PyObject *local, *attach, *standin, *cache, *exc = Py_None;
    int kind;
    if (!PyArg_ParseTuple(args, "OOiOO!|O", &local, &attach, &kind, &standin,
                          &CodeTableType, &cache, &exc))
        return NULL;
    Tramp *t = tramp_new(K_GRAPH_C, graph_c_call);
    if (t == NULL)
        return NULL;
    t->o.graphc.local = Py_NewRef(local);
    t->o.graphc.attach = Py_NewRef(attach);
    t->o.graphc.standin = Py_NewRef(standin);
    t->o.graphc.cache = Py_NewRef(cache);
    t->o.graphc.exc = exc == Py_None ? NULL : Py_NewRef(exc);
    t->graph.rkind = kind;
    return (PyObject *)t;
}

PyMethodDef ccall_functions[] = {
    {"call_dispatcher", call_dispatcher, METH_VARARGS,
     "CALL, C_RETURN and C_RAISE dispatcher: the code's handler, then the callable's."},
    {"graph_c_event", graph_c_event, METH_VARARGS, "funcgraph-c: a C function's call as a graph leaf."},
    {NULL}
};
