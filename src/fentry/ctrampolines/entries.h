/* A return probe's entry store (entries.c): per activation, keyed by its
 * interpreter frame, the values its $argN fetchargs had at entry -- the
 * kernel's kretprobe instances with their entry data.  An open-addressing
 * table of fixed slots, so that storing and taking cost no allocation. */
#ifndef FENTRY_ENTRIES_H
#define FENTRY_ENTRIES_H

#include "ring.h"

typedef struct {
    const void *frame;          /* NULL: free; ENTRY_GONE: deleted */
    unsigned long long seq;     /* when it was stored: the oldest goes first */
    PyObject *values;           /* owned: what the Python path fetched, or NULL: the cells */
} EntrySlot;

typedef struct {
    EntrySlot *slots;
    Cell *cells;                /* nvalues per slot, the slot's index * nvalues on */
    unsigned char *tags;
    Py_ssize_t cap;             /* slots: 0, or a power of 2 */
    Py_ssize_t used, filled;    /* live slots; live and deleted ones */
    Py_ssize_t max;             /* live slots at most (maxactive) */
    int nvalues;
    unsigned long long seq;
} Entries;

/* Store frame's values: `values` (a tuple, stolen) or, when NULL, nvalues
 * cells (their references stolen).  Returns 1 when the oldest entry had to
 * go (a miss), 0, or -1 on failure (nothing stolen kept). */
int entries_put(Entries *e, const void *frame, PyObject *values, Cell *cells, int *tags);
/* Take frame's values out: 1 and *values (the Python path's, a reference
 * now the caller's) or, when that is NULL, nvalues cells (their references
 * now the caller's); 0 when it has none. */
int entries_take(Entries *e, const void *frame, PyObject **values, Cell *cells, int *tags);
/* Release every value and the table (it can be used again). */
void entries_clear(Entries *e);
int entries_traverse(Entries *e, visitproc visit, void *arg);

#endif
