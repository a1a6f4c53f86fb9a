/* function_graph's selection: set_graph_function, set_graph_notrace,
 * max_graph_depth and tracing_thresh (the kernel's ftrace_graph_addr,
 * ftrace_graph_notrace_addr, fgraph_max_depth and trace_graph_thresh_return).
 *
 * A gated handler keeps, in its thread's Ring, the activations open in that
 * thread (the kernel's shadow return stack): graph_enter and graph_leave
 * decide from it whether an activation is recorded.  Any graph handler can
 * call them; the plain ones (no selection) never do. */
#ifndef FENTRY_GRAPH_H
#define FENTRY_GRAPH_H

#include "ring.h"

/* Activations kept per thread: deeper ones are counted but not kept, so an
 * exit there is trusted (not matched) and not timed (GraphState.untimed). */
#define GRAPH_STACK 1024

/* raw.py's GRAPH record kinds; THRESH_RETURN: a call that lasted tracing_thresh. */
enum { GRAPH_ENTRY, GRAPH_RESUME, GRAPH_RETURN, GRAPH_YIELD, GRAPH_UNWIND, GRAPH_THROW,
       GRAPH_THRESH_RETURN };

/* A code's role (GraphSel.role). */
enum { G_FUNC = 1,          /* in set_graph_function */
       G_NOTRACE = 2,       /* in set_graph_notrace */
       G_FILTERED = 4 };    /* set_graph_function is set: only its subtrees */

/* What a gated handler was made with. */
typedef struct {
    int role, max_depth;            /* max_depth: 0 unlimited */
    long long thresh_ns;            /* 0: off */
    long long gen;                  /* the selection's generation */
} GraphSel;

struct GraphState {
    long long gen;                  /* the selection this state follows */
    int depth;                      /* activations open (may pass GRAPH_STACK) */
    int gate;                       /* depth of the set_graph_function call we are in; -1 none */
    int notrace;                    /* depth of the set_graph_notrace call we are in; -1 none */
    long long untimed;              /* selected exits beyond GRAPH_STACK, not timed */
    PyObject *code[GRAPH_STACK];    /* borrowed: only compared (a running code is alive) */
    long long start[GRAPH_STACK];   /* CLOCK_MONOTONIC ns at entry (tracing_thresh) */
};

/* The ring's state for selection `gen`: a state of another selection (or of
 * none) starts over, so activations it missed never close a subtree. */
static inline GraphState *
graph_state(Ring *ring, long long gen)
{
    GraphState *s = ring->graph;
    if (s == NULL) {
        s = ring->graph = PyMem_Malloc(sizeof(GraphState));    /* once per thread */
        if (s == NULL)
            return NULL;
        s->gen = gen - 1;
        s->untimed = 0;
    }
    if (s->gen != gen) {
        s->gen = gen;
        s->depth = 0;
        s->gate = s->notrace = -1;
    }
    return s;
}

/* An activation of `code` begins (PY_START, PY_RESUME, PY_THROW): whether
 * it is selected (recorded). */
static inline int
graph_enter(GraphState *s, const GraphSel *sel, PyObject *code, long long now)   /* hot path */
{
    int d = s->depth++;
    if (d < GRAPH_STACK) {
        s->code[d] = code;
        s->start[d] = now;
    }
    if (s->notrace >= 0)
        return 0;
    if (sel->role & G_NOTRACE) {
        s->notrace = d;
        return 0;
    }
    if (s->gate < 0) {
        if (sel->role & G_FUNC)
            s->gate = d;
        else if (sel->role & G_FILTERED)
            return 0;
    }
    return !sel->max_depth || d < sel->max_depth;
}

/* An activation of `code` ends (PY_RETURN, PY_YIELD, PY_UNWIND): whether
 * it was selected, and then its depth and start (-1: not kept).  An exit
 * never seen entering is not; activations above it whose exits were not
 * seen end with it. */
static inline int
graph_leave(GraphState *s, const GraphSel *sel, PyObject *code, int *depth, long long *start)   /* hot path */
{
    int k = s->depth - 1;
    if (k < 0)
        return 0;
    if (k < GRAPH_STACK) {
        while (k >= 0 && s->code[k] != code)
            k--;
        if (k < 0)
            return 0;
        *start = s->start[k];
    }
    else
        *start = -1;
    s->depth = k;
    *depth = k;
    if (s->notrace == k) {
        s->notrace = -1;
        return 0;
    }
    if (s->notrace > k)
        s->notrace = -1;
    if (s->notrace >= 0)
        return 0;
    int in = !(sel->role & G_FILTERED) || (s->gate >= 0 && s->gate <= k);
    if (s->gate >= k)
        s->gate = -1;
    return in && (!sel->max_depth || k < sel->max_depth);
}

/* Write a tracing_thresh record: the call's code, duration and depth. */
static inline void
ring_write_thresh(Ring *ring, PyObject *code, long long ns, int depth)   /* hot path */
{
    Py_ssize_t i = ring_reserve(ring, 1);
    if (i < 0)                          /* full, and dropping new records */
        return;
    Rec *r = &ring->recs[i];
    r->o1 = Py_NewRef(code);
    r->c0.i = ns;
    r->c1.i = depth;
    r->kind = GRAPH_THRESH_RETURN;
    r->layout = L_GRAPH_THRESH;
    if (ring->flush_at && ring->len >= ring->flush_at)
        ring_flush(ring, 0);
}

#endif
