/* function_graph's values: the handlers GraphOps picks instead of
 * graph_event (dispatch.c) when funcgraph-retval (PY_RETURN) or
 * funcgraph-args (PY_START) is on.  They record the event with its values
 * in one L_GRAPH_VALUES record, as the kernel's graph entry and return
 * records carry args and retval.
 *
 * A record never keeps the traced program's object alive: an int that fits
 * in 64 bits and a float go unboxed, None and the bools are immortal, and
 * anything else is kept as its safe text, `shown(value)` (events/fetch.py:
 * bounded, running no user code).  Same behaviour as pytrampolines.py's
 * graph_retval_event and graph_args_event. */
#include "tramp.h"

#define GRAPH_MAX_ARGS 32       /* parameters kept of one call (function_graph.py's) */

/* v into a cell, as a record keeps it.  0, or -1 with an exception set
 * that is not an Exception (the cell then holds `fault`). */
static inline int
kept_cell(Tramp *t, PyObject *v, Cell *cell, int *tag)   /* hot path */
{
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        cell->i = PyUnstable_Long_IsCompact((PyLongObject *)v)
                  ? (long long)PyUnstable_Long_CompactValue((PyLongObject *)v)
                  : PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow) {
            *tag = T_INT;
            return 0;
        }
    }
    else if (PyFloat_CheckExact(v)) {
        cell->d = PyFloat_AS_DOUBLE(v);
        *tag = T_FLOAT;
        return 0;
    }
    *tag = T_OBJ;
    if (v == Py_None || v == Py_True || v == Py_False || v == t->o.graphval.fault) {
        cell->obj = Py_NewRef(v);
        return 0;
    }
    PyObject *text = PyObject_CallOneArg(t->o.graphval.shown, v);
    if (text != NULL) {
        cell->obj = text;
        return 0;
    }
    cell->obj = Py_NewRef(t->o.graphval.fault);
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return 0;
    }
    return -1;              /* (KeyboardInterrupt in shown: the program gets it) */
}

/* Write the record; a pending exception of kept_cell waits meanwhile (a
 * ring's flush may call Python). */
static PyObject *
write_values(Tramp *t, PyObject *code, Cell *cells, int *tags, int n, int failed)   /* hot path */
{
    PyObject *exc = failed ? PyErr_GetRaisedException() : NULL;
    Ring *ring = thread_ring(t);
    if (ring == NULL) {
        for (int j = 0; j < n; j++)
            if (tags[j] == T_OBJ)
                Py_DECREF(cells[j].obj);
        Py_XDECREF(exc);
        return NULL;
    }
    ring_write_cells(ring, L_GRAPH_VALUES, t->graphval.rkind, Py_NewRef(code), cells, tags, n);
    Py_DECREF(ring);
    if (exc != NULL) {
        PyErr_SetRaisedException(exc);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
graph_retval_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    Cell cell;
    int tag, failed = 0;
    if (nargs > 2)
        failed = kept_cell(t, args[2], &cell, &tag) < 0;
    else {
        cell.obj = Py_NewRef(t->o.graphval.fault);
        tag = T_OBJ;
    }
    return write_values(t, args[0], &cell, &tag, 1, failed);
}

static PyObject *
graph_args_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    if (tramp_nargs(nargsf, kwnames) < 0)
        return NULL;
    Cell cells[GRAPH_MAX_ARGS];
    int tags[GRAPH_MAX_ARGS], n = 0, failed = 0;
    _PyInterpreterFrame *f = current_frame(PyThreadState_Get());
    /* Frame 0 is the traced function's (no Python frame sits between it and
     * this callback); a frame of another code records no values. */
    if (f != NULL && frame_code(f) == args[0]) {
        PyCodeObject *co = (PyCodeObject *)args[0];
        for (; n < t->graphval.count && !failed; n++) {
            PyObject *v = frame_param(f, co, n);
            if (v == NULL) {
                cells[n].obj = Py_NewRef(t->o.graphval.fault);
                tags[n] = T_OBJ;
            }
            else
                failed = kept_cell(t, v, &cells[n], &tags[n]) < 0;
        }
    }
    return write_values(t, args[0], cells, tags, n, failed);
}

static PyObject *
graph_values_new(vectorcallfunc call, PyObject *local, PyObject *attach, int kind, PyObject *shown,
                 PyObject *fault, int count)
{
    Tramp *t = tramp_new(K_GRAPH_VALUES, call);
    if (t == NULL)
        return NULL;
    t->o.graphval.local = Py_NewRef(local);
    t->o.graphval.attach = Py_NewRef(attach);
    t->o.graphval.shown = Py_NewRef(shown);
    t->o.graphval.fault = Py_NewRef(fault);
    t->graphval.rkind = kind;
    t->graphval.count = count < 0 ? 0 : count > GRAPH_MAX_ARGS ? GRAPH_MAX_ARGS : count;
    return (PyObject *)t;
}

static PyObject *
graph_retval_event(PyObject *m, PyObject *args)
{
    PyObject *local, *attach, *shown, *fault;
    int kind;
    if (!PyArg_ParseTuple(args, "OOiOO", &local, &attach, &kind, &shown, &fault))
        return NULL;
    return graph_values_new(graph_retval_call, local, attach, kind, shown, fault, 1);
}

static PyObject *
graph_args_event(PyObject *m, PyObject *args)
{
    PyObject *local, *attach, *shown, *fault;
    int kind, count, depth;     /* (the pure-Python twin needs the frame's depth; this knows it) */
    if (!PyArg_ParseTuple(args, "OOiOOii", &local, &attach, &kind, &shown, &fault, &count, &depth))
        return NULL;
    return graph_values_new(graph_args_call, local, attach, kind, shown, fault, count);
}

PyMethodDef graph_values_functions[] = {
    {"graph_retval_event", graph_retval_event, METH_VARARGS,
     "function_graph at PY_RETURN, with the returned value (funcgraph-retval)."},
    {"graph_args_event", graph_args_event, METH_VARARGS,
     "function_graph at PY_START, with the arguments (funcgraph-args)."},
    {NULL}
};
