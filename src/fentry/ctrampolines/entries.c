/* A return probe's entry store: see entries.h.  Linear probing over a
 * power-of-2 table, deleted slots marked and swept by the next resize.
 * Nothing here runs Python code but the releases of stored values, which
 * are fetched values (immutable, or their text): no user code. */
#include "entries.h"

static const char gone;
#define ENTRY_GONE ((const void *)&gone)

static inline size_t
slot_hash(const void *frame)
{
    uintptr_t h = (uintptr_t)frame >> 4;        /* frames are 16-byte aligned */
    return (size_t)(h * 0x9E3779B97F4A7C15ULL >> 16);
}

static void
release(Entries *e, Py_ssize_t i)
{
    EntrySlot *s = &e->slots[i];
    if (s->values != NULL) {
        Py_CLEAR(s->values);
        return;
    }
    for (int k = 0; k < e->nvalues; k++)
        if (e->tags[i * e->nvalues + k] == T_OBJ)
            Py_DECREF(e->cells[i * e->nvalues + k].obj);
}

/* The slot of frame, or -1. */
static Py_ssize_t
find(Entries *e, const void *frame)
{
    if (e->cap == 0)
        return -1;
    size_t mask = (size_t)e->cap - 1;
    for (size_t i = slot_hash(frame) & mask;; i = (i + 1) & mask) {
        const void *f = e->slots[i].frame;
        if (f == frame)
            return (Py_ssize_t)i;
        if (f == NULL)
            return -1;
    }
}

/* A table of cap slots holding the live entries of e. */
static int
resize(Entries *e, Py_ssize_t cap)
{
    EntrySlot *slots = PyMem_Calloc(cap, sizeof(EntrySlot));
    Cell *cells = PyMem_Calloc(cap * (e->nvalues ? e->nvalues : 1), sizeof(Cell));
    unsigned char *tags = PyMem_Calloc(cap * (e->nvalues ? e->nvalues : 1), 1);
    if (slots == NULL || cells == NULL || tags == NULL) {
        PyMem_Free(slots);
        PyMem_Free(cells);
        PyMem_Free(tags);
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = (size_t)cap - 1;
    int n = e->nvalues;
    for (Py_ssize_t j = 0; j < e->cap; j++) {
        const void *f = e->slots[j].frame;
        if (f == NULL || f == ENTRY_GONE)
            continue;
        size_t i = slot_hash(f) & mask;
        while (slots[i].frame != NULL)
            i = (i + 1) & mask;
        slots[i] = e->slots[j];
        memcpy(&cells[i * n], &e->cells[j * n], n * sizeof(Cell));
        memcpy(&tags[i * n], &e->tags[j * n], n);
    }
    PyMem_Free(e->slots);
    PyMem_Free(e->cells);
    PyMem_Free(e->tags);
    e->slots = slots;
    e->cells = cells;
    e->tags = tags;
    e->cap = cap;
    e->filled = e->used;
    return 0;
}

/* The oldest entry goes (only when the table is full: a scan). */
static void
drop_oldest(Entries *e)
{
    Py_ssize_t oldest = -1;
    for (Py_ssize_t i = 0; i < e->cap; i++) {
        const void *f = e->slots[i].frame;
        if (f != NULL && f != ENTRY_GONE && (oldest < 0 || e->slots[i].seq < e->slots[oldest].seq))
            oldest = i;
    }
    if (oldest < 0)
        return;
    release(e, oldest);
    e->slots[oldest].frame = ENTRY_GONE;
    e->used--;
}

int
entries_put(Entries *e, const void *frame, PyObject *values, Cell *cells, int *tags)
{
    int n = e->nvalues, missed = 0;
    Py_ssize_t i = find(e, frame);
    if (i >= 0) {                                   /* its frame again: a stale entry */
        release(e, i);
    } else {
        if (e->used >= e->max) {
            drop_oldest(e);
            missed = 1;
        }
        if ((e->filled + 1) * 2 > e->cap) {         /* at most half full, deleted slots included */
            Py_ssize_t cap = 16;
            while (cap < (e->used + 1) * 4)
                cap *= 2;
            if (resize(e, cap) < 0)
                goto fail;
        }
        size_t mask = (size_t)e->cap - 1;
        for (i = slot_hash(frame) & mask; e->slots[i].frame != NULL && e->slots[i].frame != ENTRY_GONE;
             i = (i + 1) & mask)
            ;
        if (e->slots[i].frame == NULL)
            e->filled++;
        e->used++;
    }
    EntrySlot *s = &e->slots[i];
    s->frame = frame;
    s->seq = e->seq++;
    s->values = values;
    for (int k = 0; values == NULL && k < n; k++) {
        e->cells[i * n + k] = cells[k];
        e->tags[i * n + k] = (unsigned char)tags[k];
    }
    return missed;
fail:
    if (values != NULL)
        Py_DECREF(values);
    for (int k = 0; values == NULL && k < n; k++)
        if (tags[k] == T_OBJ)
            Py_DECREF(cells[k].obj);
    return -1;
}

int
entries_take(Entries *e, const void *frame, PyObject **values, Cell *cells, int *tags)
{
    Py_ssize_t i = find(e, frame);
    if (i < 0)
        return 0;
    int n = e->nvalues;
    *values = e->slots[i].values;                   /* its reference, now the caller's */
    for (int k = 0; *values == NULL && k < n; k++) {
        cells[k] = e->cells[i * n + k];
        tags[k] = e->tags[i * n + k];
    }
    e->slots[i].values = NULL;
    e->slots[i].frame = ENTRY_GONE;
    e->used--;
    return 1;
}

void
entries_clear(Entries *e)
{
    Py_ssize_t cap = e->cap;
    EntrySlot *slots = e->slots;
    for (Py_ssize_t i = 0; i < cap; i++)
        if (slots[i].frame != NULL && slots[i].frame != ENTRY_GONE) {
            slots[i].frame = ENTRY_GONE;
            release(e, i);
        }
    e->cap = e->used = e->filled = 0;
    e->slots = NULL;
    PyMem_Free(slots);
    PyMem_Free(e->cells);
    PyMem_Free(e->tags);
    e->cells = NULL;
    e->tags = NULL;
}

int
entries_traverse(Entries *e, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < e->cap; i++) {
        const void *f = e->slots[i].frame;
        if (f == NULL || f == ENTRY_GONE)
            continue;
        Py_VISIT(e->slots[i].values);
        for (int k = 0; e->slots[i].values == NULL && k < e->nvalues; k++)
            if (e->tags[i * e->nvalues + k] == T_OBJ)
                Py_VISIT(e->cells[i * e->nvalues + k].obj);
    }
    return 0;
}
