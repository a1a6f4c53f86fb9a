/* Tramp: the C trampolines, event dispatchers and handlers (dispatch.c; the
 * probe event handlers are in probe.c).  Each is a vectorcall callable that
 * sys.monitoring calls directly, through the function of its kind. */
#ifndef FENTRY_TRAMP_H
#define FENTRY_TRAMP_H

#include "graph.h"

enum kind { K_ENTRY_DISPATCH, K_DISPATCH, K_LIST, K_OPS_ENTRY, K_FUNCTION, K_GRAPH,
            K_OFFSET_DISPATCH, K_PROBE, K_PROBE_EXIT, K_PROBE_START, K_NOP, K_GRAPH_GATED,
            K_GRAPH_VALUES, K_CALL_DISPATCH, K_GRAPH_C };

#define TRAMP_REFS 5

/* The objects a trampoline holds, named by kind; all owned, all visited
 * and cleared as refs[]. */
typedef union {
    PyObject *refs[TRAMP_REFS];
    struct {                    /* the dispatchers (K_*DISPATCH) */
        PyObject *table;        /* a CodeTable: id(code) -> handler */
        PyObject *discover;     /* K_ENTRY_DISPATCH: discover(code) -> handler or None;
                                 * K_CALL_DISPATCH: the C probes' CodeTable, id(callable) -> handler */
        PyObject *fault;        /* fault(code): a handler raised */
    } dispatch;
    struct {                    /* K_LIST */
        PyObject *pairs;        /* [(ops, handler)] */
    } list;
    struct {                    /* K_OPS_ENTRY: func(ip, parent_ip, ops, regs) */
        PyObject *func, *ops, *ip;     /* ip: a spare Ip, of None between calls */
    } ops;
    struct {                    /* the recorders (K_FUNCTION, K_GRAPH) */
        PyObject *local;        /* where the thread's ThreadBuffer is kept ... */
        PyObject *attach;       /* ... and what makes it, at its first event */
    } rec;
    struct {                    /* K_GRAPH_VALUES (graph_values.c), and K_GRAPH_GATED
                                 * with values: rec's two, then */
        PyObject *local, *attach;
        PyObject *shown;        /* shown(value): the safe text a record keeps */
        PyObject *fault;        /* the value of an unbound argument */
    } graphval;
    struct {                    /* K_GRAPH_C (ccall.c): rec's two, then */
        PyObject *local, *attach;
        PyObject *standin;      /* standin(callable): the code object that names it */
        PyObject *cache;        /* a CodeTable: PyMethodDef address -> its stand-in */
        PyObject *exc;          /* at C_RAISE: what the record says was raised; else NULL */
    } graphc;
    struct {                    /* K_PROBE, K_PROBE_EXIT, K_PROBE_START */
        PyObject *trace;        /* the ProbeTrace */
        PyObject *head;         /* K_PROBE: the record's (event, site), made once */
    } probe;
} TrampRefs;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    RingCache ring;             /* recorders: the calling thread's Ring (first: read on every event) */
    int kind;
    union {                     /* what it does, by kind */
        int disable;            /* K_DISPATCH: DISABLE on a miss */
        int save_regs;          /* K_OPS_ENTRY: regs is the traced frame */
        struct {
            int rkind;          /* K_GRAPH: the record's kind */
            int exc;            /* ... and whether it records the exception's type */
            GraphSel sel;       /* K_GRAPH_GATED: the selection (graph.h) */
            int values;         /* ... whether a recorded ENTRY (RETURN) carries its
                                 * arguments (value returned), as K_GRAPH_VALUES */
            int count;          /* ... and at an entry, the parameters to keep */
        } graph;
        int raised;             /* K_PROBE_EXIT: at PY_UNWIND */
        struct {
            int rkind;          /* K_GRAPH_VALUES: the record's kind */
            int count;          /* ... and at an entry, the parameters to keep */
        } graphval;
    };
    TrampRefs o;
    int *slots;                 /* probes: per fetcharg, the fast-locals index it starts from */
} Tramp;

/* A trampoline of `kind`, called through `call`, holding nothing yet: the
 * caller fills in its fields by name. */
Tramp *tramp_new(int kind, vectorcallfunc call);

/* The number of arguments sys.monitoring called a trampoline with (2 or 3,
 * positional; 4 for CALL, C_RETURN and C_RAISE), or -1 with an exception set. */
static inline Py_ssize_t
tramp_nargs(size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "fentry trampolines take no keyword arguments");
        return -1;
    }
    if (nargs < 2 || nargs > 4) {
        PyErr_Format(PyExc_TypeError, "fentry trampoline takes 2 to 4 arguments (%zd given)", nargs);
        return -1;
    }
    return nargs;
}

/* The handlers of a probe event (probe.c): its hit, and a return probe's
 * entry and return when it stores $argN at entry; and one that does nothing
 * (dispatch.c). */
PyObject *probe_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);
PyObject *probe_start_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);
PyObject *probe_exit_entered_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);
PyObject *nop_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

/* A handler raised: Exception is reported to `fault(code)` and None
 * returned; anything else goes on (NULL). */
PyObject *handler_failed(PyObject *fault, PyObject *code);

/* The calling thread's Ring, for a recorder (K_FUNCTION, K_GRAPH, K_GRAPH_VALUES). */
static inline Ring *
thread_ring(Tramp *t)
{
    return cached_ring(&t->ring, t->o.rec.local, t->o.rec.attach, PyThreadState_Get()->id);
}

#endif
