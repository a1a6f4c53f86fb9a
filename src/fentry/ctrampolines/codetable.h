/* CodeTable: a dispatch table, id(code) -> handler (codetable.c).  Its
 * lookup is here, inline, for the dispatchers. */
#ifndef FENTRY_CODETABLE_H
#define FENTRY_CODETABLE_H

#include "util.h"

typedef struct { void *key; PyObject *value; } Slot;   /* key NULL: empty; DUMMY: deleted */

typedef struct {
    PyObject_HEAD
    Slot *slots;
    Py_ssize_t mask;      /* capacity - 1 (a power of two) */
    Py_ssize_t used;      /* live entries */
    Py_ssize_t fill;      /* live + deleted */
} CodeTable;

static inline size_t
ptr_hash(void *p)
{
    size_t h = (size_t)p >> 4;
    return h ^ (h >> 16);
}

/* key's slot, or NULL. */
static inline Slot *
table_find(CodeTable *t, void *key)
{
    size_t i = ptr_hash(key) & t->mask;
    for (;;) {
        Slot *s = &t->slots[i];
        if (s->key == key)
            return s;
        if (s->key == NULL)
            return NULL;
        i = (i + 1) & t->mask;
    }
}

static inline PyObject *
table_get(CodeTable *t, void *key)     /* hot path: borrowed, or NULL */
{
    Slot *s = table_find(t, key);
    return s == NULL ? NULL : s->value;
}

#endif
