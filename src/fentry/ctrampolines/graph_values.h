/* function_graph's values as a record keeps them: the cells of an entry's
 * arguments (funcgraph-args) and of a return's value (funcgraph-retval), and
 * the L_GRAPH_VALUES record they make.  Shared by the plain value handlers
 * (graph_values.c) and the gated one (dispatch.c's graph_gated_call), so a
 * selected entry or return carries exactly what it would without a selection.
 *
 * A record never keeps the traced program's object alive: an int that fits
 * in 64 bits and a float go unboxed, None and the bools are immortal, and
 * anything else is kept as its safe text, `shown(value)` (events/fetch.py:
 * bounded, running no user code). */
#ifndef FENTRY_GRAPH_VALUES_H
#define FENTRY_GRAPH_VALUES_H

#include "ring.h"

#define GRAPH_MAX_ARGS 32       /* parameters kept of one call (function_graph.py's) */

/* v into a cell, as a record keeps it.  0, or -1 with an exception set
 * that is not an Exception (the cell then holds `fault`). */
static inline int
kept_cell(PyObject *shown, PyObject *fault, PyObject *v, Cell *cell, int *tag)   /* hot path */
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
    if (v == Py_None || v == Py_True || v == Py_False || v == fault) {
        cell->obj = Py_NewRef(v);
        return 0;
    }
    PyObject *text = PyObject_CallOneArg(shown, v);
    if (text != NULL) {
        cell->obj = text;
        return 0;
    }
    cell->obj = Py_NewRef(fault);
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return 0;
    }
    return -1;              /* (KeyboardInterrupt in shown: the program gets it) */
}

/* A return's cell: the value returned (args[2]), `fault` if the event gave
 * none.  Whether kept_cell failed. */
static inline int
retval_cell(PyObject *shown, PyObject *fault, PyObject *const *args, Py_ssize_t nargs,
            Cell *cell, int *tag)   /* hot path */
{
    if (nargs > 2)
        return kept_cell(shown, fault, args[2], cell, tag) < 0;
    cell->obj = Py_NewRef(fault);
    *tag = T_OBJ;
    return 0;
}

/* An entry's cells: the first `count` (<= GRAPH_MAX_ARGS) parameters of the
 * traced frame, `fault` for an unbound one.  Frame 0 is the traced
 * function's (no Python frame sits between it and the handler); a frame of
 * another code gives none.  The number of cells; *failed: whether kept_cell
 * failed (the cells stop there). */
static inline int
arg_cells(PyObject *shown, PyObject *fault, PyObject *code, int count, Cell *cells, int *tags,
          int *failed)   /* hot path */
{
    int n = 0;
    *failed = 0;
    _PyInterpreterFrame *f = current_frame(PyThreadState_Get());
    if (f == NULL || frame_code(f) != code)
        return 0;
    PyCodeObject *co = (PyCodeObject *)code;
    for (; n < count && !*failed; n++) {
        PyObject *v = frame_param(f, co, n);
        if (v == NULL) {
            cells[n].obj = Py_NewRef(fault);
            tags[n] = T_OBJ;
        }
        else
            *failed = kept_cell(shown, fault, v, &cells[n], &tags[n]) < 0;
    }
    return n;
}

/* The cells' objects, released (no record took them). */
static inline void
drop_cells(Cell *cells, int *tags, int n)
{
    for (int j = 0; j < n; j++)
        if (tags[j] == T_OBJ)
            Py_DECREF(cells[j].obj);
}

/* Write the L_GRAPH_VALUES record of `kind` (it takes the cells); a pending
 * exception of kept_cell (`failed`) waits meanwhile, as a ring's flush may
 * call Python.  0, or -1 with that exception set again. */
static inline int
write_values(Ring *ring, int kind, PyObject *code, Cell *cells, int *tags, int n, int failed)   /* hot path */
{
    PyObject *exc = failed ? PyErr_GetRaisedException() : NULL;
    ring_write_cells(ring, L_GRAPH_VALUES, kind, Py_NewRef(code), cells, tags, n);
    if (exc != NULL) {
        PyErr_SetRaisedException(exc);
        return -1;
    }
    return 0;
}

#endif
