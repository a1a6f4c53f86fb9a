/* function_graph's values: the handlers GraphOps picks instead of
 * graph_event (dispatch.c) when funcgraph-retval (PY_RETURN) or
 * funcgraph-args (PY_START) is on and no selection is set.  They record the
 * event with its values in one L_GRAPH_VALUES record, as the kernel's graph
 * entry and return records carry args and retval; the cells are made as
 * graph_values.h makes them (the gated handler, dispatch.c, makes them
 * alike).  Same behaviour as pytrampolines.py's graph_retval_event and
 * graph_args_event. */
#include "tramp.h"
#include "graph_values.h"

/* Write the record in the calling thread's Ring. */
static PyObject *
tramp_write_values(Tramp *t, PyObject *code, Cell *cells, int *tags, int n, int failed)   /* hot path */
{
    Ring *ring = thread_ring(t);
    if (ring == NULL) {
        drop_cells(cells, tags, n);
        if (failed) {           /* (the ring's error wins; kept_cell's is dropped) */
            PyObject *exc = PyErr_GetRaisedException();
            Py_XDECREF(exc);
        }
        return NULL;
    }
    int r = write_values(ring, t->graphval.rkind, code, cells, tags, n, failed);
    Py_DECREF(ring);
    if (r < 0)
        return NULL;
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
    int tag;
    int failed = retval_cell(t->o.graphval.shown, t->o.graphval.fault, args, nargs, &cell, &tag);
    return tramp_write_values(t, args[0], &cell, &tag, 1, failed);
}

static PyObject *
graph_args_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    if (tramp_nargs(nargsf, kwnames) < 0)
        return NULL;
    Cell cells[GRAPH_MAX_ARGS];
    int tags[GRAPH_MAX_ARGS], failed;
    int n = arg_cells(t->o.graphval.shown, t->o.graphval.fault, args[0], t->graphval.count,
                      cells, tags, &failed);
    return tramp_write_values(t, args[0], cells, tags, n, failed);
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
