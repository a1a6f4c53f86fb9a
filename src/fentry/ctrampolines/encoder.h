/* The raw stream: the Encoder, which turns a ring's records into a page of
 * bytes (encoder.c), and the PageQueue that carries pages to a reader
 * (pagequeue.c). */
#ifndef FENTRY_ENCODER_H
#define FENTRY_ENCODER_H

#include "ring.h"

#define ENC_CACHE 64            /* entries of the Encoder's id cache (a power of 2) */

typedef struct {
    PyObject_HEAD
    void **keys;                /* open addressing: object pointer -> ids[slot], while it lives */
    uint32_t *ids;
    Py_ssize_t cap, used;
    PyObject *fresh;            /* list: the objects of ids told + 1, ..., not described yet */
    uint32_t told;              /* ids handed out by take_refs */
    PyObject *alive;            /* dict: address -> weakref whose callback forgets it */
    PyObject *kept;             /* list: described objects with no weak references */
    PyObject *forgotten;        /* list: ids whose objects died since take_forgotten */
    PyObject *cache_keys[ENC_CACHE];    /* a direct-mapped cache of enc_ref */
    uint32_t cache_ids[ENC_CACHE];
    PyObject *fault;            /* fetch.FAULT: a value that could not be fetched */
    PyObject *shown;            /* fetch.Shown: a value kept as its safe text */
    PyObject *fallback;         /* fallback(value) -> str: any other kind of value */
} Encoder;

typedef struct {
    PyObject_HEAD
    PyObject *pages;            /* list of bytes */
    Py_ssize_t bytes, cap;
    Encoder *encoder;
    int wake_fd;                /* a byte is written here when a page comes (-1: none) */
    int stalled;                /* a writer waited in vain: none waits again till a take */
} PageQueue;

/* Every record of the ring, taken and encoded as a page: a LOST message
 * if records were overwritten since the last page, then a RECORDS message.
 * b"" when there is nothing to say; NULL on failure (memory): then nothing
 * was taken. */
PyObject *ring_page(Ring *ring, Encoder *e);

#endif
