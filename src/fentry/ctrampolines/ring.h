/* Ring: one thread's ring of raw records (ring.c).  What writes a record is
 * here, inline, for the recorders (dispatch.c) and probe events (probe.c).
 *
 * Fixed slots, no object made per record (the kernel's ring buffer); read
 * back as the same tuples the Python Ring holds: (seq, ts, code, caller),
 * (seq, ts, kind, code[, exc_type]), (seq, ts, *fields), or for a probe
 * event (seq, ts, event, site, values).  A probe event's values are kept in
 * the ring itself, ints and floats unboxed (as the kernel copies fetched
 * bytes): the first two in its first slot, then CELLS more per continuation
 * slot.  Recording an event allocates nothing; the tuple of values is made
 * when the record is read.  Records are contiguous in sequence (a record
 * that cannot fit at all drops them all), so a record's seq is not stored:
 * the oldest is next_seq - nrec. */
#ifndef FENTRY_RING_H
#define FENTRY_RING_H

#include "util.h"
#include "clock.h"

/* L_GRAPH_THRESH: a tracing_thresh return (graph.h): o1 the code, c0.i its
 * duration in ns, c1.i its depth.  L_EVENT and after hold value cells
 * (event_cell): a probe event's, and a function_graph record's values
 * (L_GRAPH_VALUES: o1 the code, the graph kind in kind's bits 16 and up). */
enum layout { L_FUNCTION, L_GRAPH, L_GRAPH_EXC, L_TUPLE, L_GRAPH_THRESH, L_EVENT, L_GRAPH_VALUES };
enum { T_OBJ, T_INT, T_UINT, T_FLOAT };  /* what a value cell holds */
#define CELLS 4                         /* value cells in a continuation slot */
#define HEAD_CELLS 2                    /* value cells in an event's first slot */

typedef union {
    PyObject *obj;                      /* owned */
    long long i;
    unsigned long long u;
    double d;
} Cell;

typedef union {
    struct {                            /* a record's first slot */
        long long ts;
        PyObject *o1;                   /* owned.  L_EVENT: (event, site) */
        union {
            PyObject *o2;               /* owned, may be NULL */
            Cell c0;                    /* L_EVENT: value 0 */
        };
        Cell c1;                        /* L_EVENT: value 1 */
        int kind, layout;               /* L_EVENT: kind is n | tag0 << 8 | tag1 << 10 */
    };
    struct {                            /* an L_EVENT's continuation slot */
        Cell cell[CELLS];
        unsigned char tag[CELLS];
    };
} Rec;

typedef struct GraphState GraphState;     /* graph.h */

typedef struct {
    PyObject_HEAD
    Rec *recs;
    Py_ssize_t cap, head, len;          /* in slots; head: the oldest record's first slot */
    Py_ssize_t nrec;                    /* records */
    long long next_seq, consumed;
    long long lost_told;                /* lost records a consuming reader has been told of */
    /* With a raw reader (set_queue): when len reaches flush_at, the writer
     * itself moves the records out, encoded, into the queue (ring_flush). */
    PyObject *queue;                    /* a PageQueue, or NULL */
    unsigned int key;                   /* this ring's thread, in the raw stream */
    Py_ssize_t flush_at;                /* slots; 0: never */
    int paging;                         /* ring_page is under way (it may call Python) */
    ClockPoint cal;                     /* both clocks, when its records were last taken */
    /* The other end of the interpolation for the last read, and next_seq
     * then: read again with nothing written since, the records convert to
     * the same timestamps (a fresh "now" would move them by rounding). */
    ClockPoint seen;
    long long seen_seq;                 /* -1: no read to reuse */
    /* The overwrite option off: when full, a new record is dropped (and
     * counted in dropped, with the lost ones) instead of the oldest. */
    int drop_new;
    long long dropped;
    int clock;                          /* CLOCK_LOCAL, CLOCK_COUNTER or a clock_gettime id */
    PyObject *shared;                   /* the counter clock's Switch (owned), or NULL */
    /* The pid filters' verdict on this ring's thread (RING_SKIP_*), set by
     * the ring buffer when the thread attaches and when the lists change:
     * the recorders test it, no list is looked at per event. */
    int skip;
    GraphState *graph;                  /* function_graph's selection state, or NULL */
} Ring;

enum { RING_SKIP_FUNCTION = 1, RING_SKIP_EVENT = 2 };

/* A ring buffer's shared state the hot path reads without a Python call
 * (switch.c): tracing_on, and the count of its counter clock. */
typedef struct {
    PyObject_HEAD
    int on;
    long long count;                    /* the counter clock's last value */
} Switch;

/* Ring.clock: the default clock (raw_clock: TSC or CLOCK_MONOTONIC, turned
 * into nanoseconds when read), the counter, or a clock_gettime id as is. */
#define CLOCK_LOCAL (-1)
#define CLOCK_COUNTER (-2)

/* Records lost: overwritten or dropped, and not yet told to a consuming reader
 * (lost_told); or since the last clear (told 0). */
static inline long long
ring_lost_since(Ring *ring, long long told)
{
    return ring->next_seq - ring->consumed - ring->nrec + ring->dropped - told;
}

/* Move the ring's records into its queue, as a page (pagequeue.c). */
void ring_flush(Ring *ring, int force);

static inline int
event_n(Rec *r)
{
    return r->kind & 0xff;
}

static inline Py_ssize_t
event_slots(int n)
{
    return n <= HEAD_CELLS ? 1 : 1 + (n - HEAD_CELLS + CELLS - 1) / CELLS;
}

static inline Py_ssize_t
rec_slots(Rec *r)
{
    return r->layout >= L_EVENT ? event_slots(event_n(r)) : 1;
}

/* Slot index i + k (k <= cap), wrapped: no division in the hot path. */
static inline Py_ssize_t
wrap(Ring *ring, Py_ssize_t i, Py_ssize_t k)
{
    i += k;
    return i >= ring->cap ? i - ring->cap : i;
}

/* Value j of the event record whose first slot is i: its cell and tag. */
static inline Cell *
event_cell(Ring *ring, Py_ssize_t i, int j, int *tag)
{
    Rec *r = &ring->recs[i];
    if (j < HEAD_CELLS) {
        *tag = (r->kind >> (8 + 2 * j)) & 3;
        return j == 0 ? &r->c0 : &r->c1;
    }
    j -= HEAD_CELLS;
    Rec *c = &ring->recs[wrap(ring, i, 1 + j / CELLS)];
    *tag = c->tag[j % CELLS];
    return &c->cell[j % CELLS];
}

static inline void
event_set(Ring *ring, Py_ssize_t i, int j, Cell value, int tag)
{
    Rec *r = &ring->recs[i];
    if (j < HEAD_CELLS) {
        r->kind |= tag << (8 + 2 * j);
        if (j == 0)
            r->c0 = value;
        else
            r->c1 = value;
        return;
    }
    j -= HEAD_CELLS;
    Rec *c = &ring->recs[wrap(ring, i, 1 + j / CELLS)];
    c->tag[j % CELLS] = (unsigned char)tag;
    c->cell[j % CELLS] = value;
}

static inline void
rec_clear_at(Ring *ring, Py_ssize_t i)
{
    Rec *r = &ring->recs[i];
    if (r->layout >= L_EVENT) {
        for (int j = 0; j < event_n(r); j++) {
            int tag;
            Cell *c = event_cell(ring, i, j, &tag);
            if (tag == T_OBJ)
                Py_CLEAR(c->obj);
        }
        r->kind = 0;
        r->layout = L_TUPLE;
        r->o2 = NULL;
    }
    else if (r->layout == L_GRAPH_THRESH) {
        r->layout = L_GRAPH;
        r->o2 = NULL;           /* (c0: a number) */
    }
    Py_CLEAR(r->o1);
    Py_CLEAR(r->o2);
}

/* Overwrite the oldest record. */
static inline void
ring_pop_oldest(Ring *ring)
{
    Py_ssize_t k = rec_slots(&ring->recs[ring->head]);
    rec_clear_at(ring, ring->head);
    ring->head = wrap(ring, ring->head, k);
    ring->len -= k;
    ring->nrec--;
}

/* A record's timestamp as read: the default clock's in nanoseconds (see
 * clock.h; `now` is the other end of the interpolation), any other as is. */
static inline long long
rec_ts(Ring *ring, long long raw, ClockPoint now)
{
    return ring->clock == CLOCK_LOCAL ? to_ns(raw, ring->cal, now) : raw;
}

/* The ring's clock when it is not the default one. */
static inline long long
other_clock(Ring *ring)
{
    if (ring->clock == CLOCK_COUNTER)   /* shared by the threads: atomic */
        return __atomic_add_fetch(&((Switch *)ring->shared)->count, 1, __ATOMIC_RELAXED);
    struct timespec ts;
    clock_gettime((clockid_t)ring->clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Room for a record of k slots at the tail, the oldest records overwritten
 * as needed: its first slot, with ts set; -1 if it cannot fit at all (then
 * it and every record before it count as lost), or if the ring is full and
 * drops new records (it alone counts as lost: it takes no sequence number). */
static inline Py_ssize_t
ring_reserve(Ring *ring, Py_ssize_t k)   /* hot path */
{
    if (ring->drop_new && ring->cap - ring->len < k) {
        ring->dropped++;
        return -1;
    }
    ring->next_seq++;
    if (k > ring->cap) {
        while (ring->nrec > 0)
            ring_pop_oldest(ring);
        return -1;
    }
    while (ring->cap - ring->len < k)
        ring_pop_oldest(ring);
    Py_ssize_t i = wrap(ring, ring->head, ring->len);
    ring->len += k;
    ring->nrec++;
    ring->recs[i].ts = ring->clock == CLOCK_LOCAL ? raw_clock() : other_clock(ring);
    return i;
}

/* Write one single-slot record.  Steals o1 and o2. */
static inline void
ring_write(Ring *ring, int layout, int kind, PyObject *o1, PyObject *o2)   /* hot path */
{
    Py_ssize_t i = ring_reserve(ring, 1);
    if (i < 0) {                        /* full, and dropping new records */
        Py_DECREF(o1);
        Py_XDECREF(o2);
        return;
    }
    Rec *r = &ring->recs[i];
    r->o1 = o1;
    r->o2 = o2;
    r->kind = kind;
    r->layout = layout;
    if (ring->flush_at && ring->len >= ring->flush_at)
        ring_flush(ring, 0);
}

/* Write a record of n values, as cells: a probe event's (L_EVENT, head its
 * (event, site)) or function_graph's (L_GRAPH_VALUES, head its code, kind
 * the graph kind).  The references in the cells, and head, are stolen. */
static inline void
ring_write_cells(Ring *ring, int layout, int kind, PyObject *head, Cell *cells, int *tags, int n)   /* hot path */
{
    Py_ssize_t i = ring_reserve(ring, event_slots(n));
    if (i < 0) {
        Py_DECREF(head);
        for (int j = 0; j < n; j++)
            if (tags[j] == T_OBJ)
                Py_DECREF(cells[j].obj);
        return;
    }
    Rec *r = &ring->recs[i];
    r->o1 = head;
    r->kind = n | kind << 16;
    r->layout = layout;
    for (int j = 0; j < n; j++)
        event_set(ring, i, j, cells[j], tags[j]);
    if (ring->flush_at && ring->len >= ring->flush_at)
        ring_flush(ring, 0);
}

static inline void
ring_write_event(Ring *ring, PyObject *head, Cell *cells, int *tags, int n)   /* hot path */
{
    ring_write_cells(ring, L_EVENT, 0, head, cells, tags, n);
}

/* A value cell as an object (a new reference). */
static inline PyObject *
cell_object(Cell *cell, int tag)
{
    switch (tag) {
    case T_INT: return PyLong_FromLongLong(cell->i);
    case T_UINT: return PyLong_FromUnsignedLongLong(cell->u);
    case T_FLOAT: return PyFloat_FromDouble(cell->d);
    default: return Py_NewRef(cell->obj);
    }
}

/* Where a recorder keeps the calling thread's Ring: cached with its thread
 * state's id, which CPython never reuses. */
typedef struct {
    uint64_t tstate;
    PyObject *ring;             /* owned, or NULL */
} RingCache;

Ring *ring_cache_fill(RingCache *c, PyObject *local, PyObject *attach, uint64_t tstate);

/* The calling thread's Ring (a new reference), NULL on failure.  Its
 * ThreadBuffer is found from `local` (or made by `attach`) on a miss. */
static inline Ring *
cached_ring(RingCache *c, PyObject *local, PyObject *attach, uint64_t tstate)
{
    if (c->ring != NULL && c->tstate == tstate)
        return (Ring *)Py_NewRef(c->ring);
    return ring_cache_fill(c, local, attach, tstate);
}

#endif
