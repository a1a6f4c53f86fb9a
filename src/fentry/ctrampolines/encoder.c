/* Raw records: Ring.page(encoder) takes every record out of the ring and
 * encodes it in the raw format that raw.py documents (and decodes): the
 * bytes the agent ships to its reader, which formats them in another
 * process.  Objects a record points at (code objects, probe events,
 * exception types) go as small ids, handed out by the Encoder; the Python
 * side describes each new one once (Encoder.take_refs()).  An id never
 * names two objects: the Encoder keeps a new one alive until it is handed
 * out, then holds it weakly, and forgets it (its slot, its cache entry) at
 * its dealloc, before another object can be at its address.  So a program
 * that makes code as it runs leaves fentry nothing of its dead code. */
#include "encoder.h"

enum { RAW_FUNC = 1, RAW_GRAPH = 2, RAW_EVENT = 3, RAW_EVENT_RETURN = 4, RAW_GRAPH_VALUES = 5 };
enum { W_FAULT, W_NONE, W_TRUE, W_FALSE, W_INT, W_UINT, W_BIGINT, W_FLOAT, W_COMPLEX,
       W_STR, W_SHOWN, W_BYTES, W_REF, W_TUPLE, W_TOOBIG };
#define MAX_STRING 4096         /* characters of a string value kept (the kernel's MAX_STRING_SIZE) */
#define MAX_INT_BYTES 1024      /* bytes of an int value kept; a larger one is a fault */
#define MAX_NESTED 4            /* tuple (array) values inside values */

/* The page being encoded: written straight into the bytes object it
 * becomes (no copy at the end), grown as needed, cut to size when done. */
typedef struct { PyObject *bytes; char *p; Py_ssize_t len, cap; } Buf;

static int
buf_grow(Buf *b, Py_ssize_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    if (b->bytes == NULL)
        b->bytes = PyBytes_FromStringAndSize(NULL, cap);
    else if (_PyBytes_Resize(&b->bytes, cap) < 0)
        b->bytes = NULL;
    if (b->bytes == NULL) {
        b->p = NULL;
        b->len = b->cap = 0;
        return -1;
    }
    b->p = PyBytes_AS_STRING(b->bytes);
    b->cap = cap;
    return 0;
}

/* The finished page (b is spent). */
static PyObject *
buf_bytes(Buf *b)
{
    if (b->bytes == NULL)
        return PyBytes_FromStringAndSize("", 0);
    if (_PyBytes_Resize(&b->bytes, b->len) < 0)
        return NULL;
    PyObject *out = b->bytes;
    b->bytes = NULL;
    return out;
}

static inline int
put(Buf *b, const void *data, Py_ssize_t n)
{
    if (buf_grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, data, n);     /* little-endian hosts: the format's byte order */
    b->len += n;
    return 0;
}

static inline int put_u8(Buf *b, uint8_t v) { return put(b, &v, 1); }
static inline int put_u32(Buf *b, uint32_t v) { return put(b, &v, 4); }
static inline int put_i64(Buf *b, int64_t v) { return put(b, &v, 8); }
static inline int put_f64(Buf *b, double v) { return put(b, &v, 8); }

static inline size_t
enc_hash(void *p, Py_ssize_t cap)
{
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 17;
    x *= 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> 16) & (size_t)(cap - 1);
}

static int
enc_rehash(Encoder *e, Py_ssize_t cap)
{
    void **keys = PyMem_Calloc(cap, sizeof(void *));
    uint32_t *ids = PyMem_Calloc(cap, sizeof(uint32_t));
    if (keys == NULL || ids == NULL) {
        PyMem_Free(keys);
        PyMem_Free(ids);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < e->cap; i++) {
        if (e->keys[i] == NULL)
            continue;
        size_t j = enc_hash(e->keys[i], cap);
        while (keys[j] != NULL)
            j = (j + 1) & (cap - 1);
        keys[j] = e->keys[i];
        ids[j] = e->ids[i];
    }
    PyMem_Free(e->keys);
    PyMem_Free(e->ids);
    e->keys = keys;
    e->ids = ids;
    e->cap = cap;
    return 0;
}

/* The id of obj (1, 2, ...), a new one the first time; 0 and an exception on failure. */
static uint32_t
enc_ref(Encoder *e, PyObject *obj)
{
    if (e->cap) {
        size_t j = enc_hash(obj, e->cap);
        while (e->keys[j] != NULL) {
            if (e->keys[j] == (void *)obj)
                return e->ids[j];
            j = (j + 1) & (e->cap - 1);
        }
    }
    if ((e->used + 1) * 2 > e->cap && enc_rehash(e, e->cap ? e->cap * 2 : 256) < 0)
        return 0;
    if (PyList_Append(e->fresh, obj) < 0)
        return 0;
    uint32_t id = e->told + (uint32_t)PyList_GET_SIZE(e->fresh);
    size_t j = enc_hash(obj, e->cap);
    while (e->keys[j] != NULL)
        j = (j + 1) & (e->cap - 1);
    e->keys[j] = obj;
    e->ids[j] = id;
    e->used++;
    return id;
}

/* obj's id is forgotten: out of the table (backward-shift deletion, which
 * leaves every other key findable) and out of the cache.  Returns the id
 * (0: it had none). */
static uint32_t
enc_forget_ptr(Encoder *e, void *obj)
{
    size_t slot = ((uintptr_t)obj >> 4) & (ENC_CACHE - 1);
    if (e->cache_keys[slot] == obj)
        e->cache_keys[slot] = NULL;
    if (e->cap == 0)
        return 0;
    size_t mask = (size_t)e->cap - 1, i = enc_hash(obj, e->cap), j;
    while (e->keys[i] != obj) {
        if (e->keys[i] == NULL)
            return 0;
        i = (i + 1) & mask;
    }
    uint32_t id = e->ids[i];
    for (j = (i + 1) & mask; e->keys[j] != NULL; j = (j + 1) & mask) {
        size_t h = enc_hash(e->keys[j], e->cap);
        /* The key at j stays where it is if its home lies in (i, j], cyclically. */
        if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
            continue;
        e->keys[i] = e->keys[j];
        e->ids[i] = e->ids[j];
        i = j;
    }
    e->keys[i] = NULL;
    e->used--;
    return id;
}

static int
put_ref(Encoder *e, Buf *b, PyObject *obj)
{
    uint32_t id = (obj == NULL || obj == Py_None) ? 0 : enc_ref(e, obj);
    if (id == 0 && PyErr_Occurred())
        return -1;
    return put_u32(b, id);
}

static int
put_text(Buf *b, int tag, PyObject *s)
{
    PyObject *cut = NULL, *data;
    if (PyUnicode_GET_LENGTH(s) > MAX_STRING) {
        cut = PyUnicode_Substring(s, 0, MAX_STRING);
        if (cut == NULL)
            return -1;
        s = cut;
    }
    data = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    Py_XDECREF(cut);
    if (data == NULL)
        return -1;
    int rc = put_u8(b, (uint8_t)tag) || put_u32(b, (uint32_t)PyBytes_GET_SIZE(data))
             || put(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return rc ? -1 : 0;
}

static int
put_bigint(Buf *b, PyObject *v)
{
    int64_t bits = (int64_t)_PyLong_NumBits(v);
    if (bits < 0)
        return -1;
    Py_ssize_t n = (Py_ssize_t)(bits / 8 + 1);        /* room for the sign bit */
    if (n > MAX_INT_BYTES)
        return put_u8(b, W_TOOBIG) || put_i64(b, bits) ? -1 : 0;
    if (put_u8(b, W_BIGINT) < 0 || put_u32(b, (uint32_t)n) < 0 || buf_grow(b, n) < 0)
        return -1;
    if (long_to_bytes(v, (unsigned char *)b->p + b->len, n) < 0)
        return -1;
    b->len += n;
    return 0;
}

static int
put_value(Encoder *e, Buf *b, PyObject *v, int depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (v == e->fault)
        return put_u8(b, W_FAULT);
    if (v == Py_None)
        return put_u8(b, W_NONE);
    if (v == Py_True || v == Py_False)
        return put_u8(b, v == Py_True ? W_TRUE : W_FALSE);
    if (t == &PyLong_Type) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow)
            return put_u8(b, W_INT) || put_i64(b, x) ? -1 : 0;
        return put_bigint(b, v);
    }
    if (t == &PyFloat_Type)
        return put_u8(b, W_FLOAT) || put_f64(b, PyFloat_AS_DOUBLE(v)) ? -1 : 0;
    if (t == &PyUnicode_Type)
        return put_text(b, W_STR, v);
    if ((PyObject *)t == e->shown)
        return put_text(b, W_SHOWN, v);
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        if (n > MAX_STRING)
            n = MAX_STRING;
        return put_u8(b, W_BYTES) || put_u32(b, (uint32_t)n) || put(b, PyBytes_AS_STRING(v), n)
               ? -1 : 0;
    }
    if (t == &PyComplex_Type)
        return put_u8(b, W_COMPLEX) || put_f64(b, PyComplex_RealAsDouble(v))
               || put_f64(b, PyComplex_ImagAsDouble(v)) ? -1 : 0;
    if (t == &PyCode_Type)
        return put_u8(b, W_REF) || put_ref(e, b, v) ? -1 : 0;
    if (t == &PyTuple_Type && depth < MAX_NESTED) {
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        if (put_u8(b, W_TUPLE) < 0 || put_u32(b, (uint32_t)n) < 0)
            return -1;
        for (Py_ssize_t k = 0; k < n; k++)
            if (put_value(e, b, PyTuple_GET_ITEM(v, k), depth + 1) < 0)
                return -1;
        return 0;
    }
    /* Not a kind the ring holds: its safe text, or a fault. */
    PyObject *text = PyObject_CallOneArg(e->fallback, v);
    if (text == NULL || !PyUnicode_Check(text)) {
        Py_XDECREF(text);
        PyErr_Clear();
        return put_u8(b, W_FAULT);
    }
    int rc = put_text(b, W_SHOWN, text);
    Py_DECREF(text);
    return rc;
}

/* A value that could not be encoded is a fault: the record still goes. */
static int
put_value_or_fault(Encoder *e, Buf *b, PyObject *v)
{
    Py_ssize_t mark = b->len;
    if (put_value(e, b, v, 0) == 0)
        return 0;
    if (PyErr_ExceptionMatches(PyExc_MemoryError))
        return -1;
    PyErr_Clear();
    b->len = mark;
    return put_u8(b, W_FAULT);
}

static int
put_cell(Encoder *e, Buf *b, Cell *c, int tag)
{
    switch (tag) {
    case T_INT: return put_u8(b, W_INT) || put_i64(b, c->i) ? -1 : 0;
    case T_UINT: return put_u8(b, W_UINT) || put(b, &c->u, 8) ? -1 : 0;
    case T_FLOAT: return put_u8(b, W_FLOAT) || put_f64(b, c->d) ? -1 : 0;
    default: return put_value_or_fault(e, b, c->obj);
    }
}

static inline int
put_head(Buf *b, int type, int kind, long long ts)
{
    return put_u8(b, (uint8_t)type) || put_u8(b, (uint8_t)kind) || put_i64(b, ts) ? -1 : 0;
}

/* An event's site: (code, offset), or at a return (caller, offset, code, raised). */
static int
put_event_head(Encoder *e, Buf *b, long long ts, PyObject *event, PyObject *site)
{
    if (!PyTuple_Check(site) || (PyTuple_GET_SIZE(site) != 2 && PyTuple_GET_SIZE(site) != 4)) {
        PyErr_SetString(PyExc_ValueError, "bad event site");
        return -1;
    }
    int ret = PyTuple_GET_SIZE(site) == 4;
    if (put_head(b, ret ? RAW_EVENT_RETURN : RAW_EVENT, 0, ts) < 0 || put_ref(e, b, event) < 0)
        return -1;
    long offset = PyLong_AsLong(PyTuple_GET_ITEM(site, 1));
    if (offset == -1 && PyErr_Occurred())
        return -1;
    if (put_ref(e, b, PyTuple_GET_ITEM(site, 0)) < 0 || put_u32(b, (uint32_t)offset) < 0)
        return -1;
    if (ret && (put_ref(e, b, PyTuple_GET_ITEM(site, 2)) < 0
                || put_ref(e, b, PyTuple_GET_ITEM(site, 3)) < 0))
        return -1;
    return 0;
}

/* A record written from Python (ring.record): (code, caller), (kind, code[,
 * exc type]) or (event, site, values), as the Python hot path's tuples. */
static int
put_tuple_record(Encoder *e, Buf *b, long long ts, PyObject *f)
{
    Py_ssize_t n = PyTuple_GET_SIZE(f);
    if (n >= 2 && PyCode_Check(PyTuple_GET_ITEM(f, 0)))
        return put_head(b, RAW_FUNC, 0, ts) || put_ref(e, b, PyTuple_GET_ITEM(f, 0))
               || put_ref(e, b, PyTuple_GET_ITEM(f, 1)) ? -1 : 0;
    if (n == 3 && PyLong_CheckExact(PyTuple_GET_ITEM(f, 0)) && PyTuple_CheckExact(PyTuple_GET_ITEM(f, 2))) {
        /* (kind, code, values): function_graph with its values */
        PyObject *values = PyTuple_GET_ITEM(f, 2);
        Py_ssize_t nv = PyTuple_GET_SIZE(values);
        if (put_head(b, RAW_GRAPH_VALUES, (int)PyLong_AsLong(PyTuple_GET_ITEM(f, 0)), ts) < 0
            || put_ref(e, b, PyTuple_GET_ITEM(f, 1)) < 0 || put_u32(b, (uint32_t)nv) < 0)
            return -1;
        for (Py_ssize_t k = 0; k < nv; k++)
            if (put_value_or_fault(e, b, PyTuple_GET_ITEM(values, k)) < 0)
                return -1;
        return 0;
    }
    if (n >= 2 && PyLong_CheckExact(PyTuple_GET_ITEM(f, 0))) {
        int kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(f, 0));
        if (put_head(b, RAW_GRAPH, kind, ts) < 0 || put_ref(e, b, PyTuple_GET_ITEM(f, 1)) < 0)
            return -1;
        return n > 2 ? put_ref(e, b, PyTuple_GET_ITEM(f, 2)) : 0;
    }
    if (n == 3 && PyTuple_Check(PyTuple_GET_ITEM(f, 2))) {
        PyObject *values = PyTuple_GET_ITEM(f, 2);
        Py_ssize_t nv = PyTuple_GET_SIZE(values);
        if (put_event_head(e, b, ts, PyTuple_GET_ITEM(f, 0), PyTuple_GET_ITEM(f, 1)) < 0
            || put_u32(b, (uint32_t)nv) < 0)
            return -1;
        for (Py_ssize_t k = 0; k < nv; k++)
            if (put_value_or_fault(e, b, PyTuple_GET_ITEM(values, k)) < 0)
                return -1;
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "unknown record shape");
    return -1;
}

/* The id of obj, through the Encoder's small direct-mapped cache: a page
 * is runs of records of the same few code objects.  (An object's entry
 * goes at its dealloc: a cached address always names its object.)
 * 0 for NULL or None. */
static inline uint32_t
ref_cached(Encoder *e, PyObject *obj)
{
    if (obj == NULL || obj == Py_None)
        return 0;
    size_t slot = ((uintptr_t)obj >> 4) & (ENC_CACHE - 1);
    if (e->cache_keys[slot] == obj)
        return e->cache_ids[slot];
    uint32_t id = enc_ref(e, obj);
    if (id != 0) {
        e->cache_keys[slot] = obj;
        e->cache_ids[slot] = id;
    }
    return id;
}

/* A tracer's record (FUNC, GRAPH): fixed layout, written in one go. */
static inline int
put_tracer_record(Encoder *e, Buf *b, Rec *r, long long ts)
{
    if (buf_grow(b, 18) < 0)
        return -1;
    unsigned char *p = (unsigned char *)b->p + b->len;
    uint32_t a = ref_cached(e, r->o1), c = 0;
    if (a == 0 && PyErr_Occurred())
        return -1;
    int two = r->layout != L_GRAPH;
    if (two) {
        c = ref_cached(e, r->o2);
        if (c == 0 && PyErr_Occurred())
            return -1;
    }
    p[0] = r->layout == L_FUNCTION ? RAW_FUNC : RAW_GRAPH;
    p[1] = r->layout == L_FUNCTION ? 0 : (unsigned char)r->kind;
    int64_t ts64 = ts;
    memcpy(p + 2, &ts64, 8);
    memcpy(p + 10, &a, 4);
    if (two)
        memcpy(p + 14, &c, 4);
    b->len += two ? 18 : 14;
    return 0;
}

static int
put_record(Encoder *e, Buf *b, Ring *ring, Py_ssize_t i, ClockPoint now)
{
    Rec *r = &ring->recs[i];
    long long ts = rec_ts(ring, r->ts, now);
    switch (r->layout) {
    case L_FUNCTION:
    case L_GRAPH:
    case L_GRAPH_EXC:
        return put_tracer_record(e, b, r, ts);
    case L_GRAPH_THRESH:            /* code, i64 duration, u32 depth */
        return put_head(b, RAW_GRAPH, r->kind, ts) || put_ref(e, b, r->o1)
               || put_i64(b, r->c0.i) || put_u32(b, (uint32_t)r->c1.i) ? -1 : 0;
    case L_EVENT:
    case L_GRAPH_VALUES: {
        int n = event_n(r);
        if (r->layout == L_EVENT
            ? put_event_head(e, b, ts, PyTuple_GET_ITEM(r->o1, 0), PyTuple_GET_ITEM(r->o1, 1)) < 0
            : put_head(b, RAW_GRAPH_VALUES, r->kind >> 16, ts) < 0 || put_ref(e, b, r->o1) < 0)
            return -1;
        if (put_u32(b, (uint32_t)n) < 0)
            return -1;
        for (int j = 0; j < n; j++) {
            int tag;
            Cell *c = event_cell(ring, i, j, &tag);
            if (put_cell(e, b, c, tag) < 0)
                return -1;
        }
        return 0;
    }
    default:
        return put_tuple_record(e, b, ts, r->o1);
    }
}

/* The stream's messages (tracers/stream.py) that a page holds. */
enum { MSG_RECORDS = 4, MSG_LOST = 5 };

static PyObject *ring_page_unguarded(Ring *ring, Encoder *e);

PyObject *
ring_page(Ring *ring, Encoder *e)
{
    if (ring->paging)           /* a signal handler's drain inside this one: it finishes */
        return PyBytes_FromStringAndSize("", 0);
    ring->paging = 1;
    PyObject *page = ring_page_unguarded(ring, e);
    ring->paging = 0;
    return page;
}

static PyObject *
ring_page_unguarded(Ring *ring, Encoder *e)
{
    Buf b = {NULL, NULL, 0, 0};
    long long lost = ring_lost_since(ring, ring->lost_told);
    long long first = ring->next_seq - ring->nrec;
    Py_ssize_t n = ring->nrec, pos = 0, written = 0;
    if (lost > 0 && (put_u32(&b, 13) < 0 || put_u8(&b, MSG_LOST) < 0
                     || put_u32(&b, ring->key) < 0 || put_i64(&b, lost) < 0))
        goto fail;
    Py_ssize_t head = b.len;
    if (n > 0 && (put_u32(&b, 0) < 0 || put_u8(&b, MSG_RECORDS) < 0 || put_u32(&b, ring->key) < 0
                  || put_i64(&b, first) < 0 || put_u32(&b, 0) < 0))
        goto fail;
    if (buf_grow(&b, n * 16) < 0)
        goto fail;
    ClockPoint now = clock_point();
    /* Each record is encoded, then let go of, in one pass.  Out of memory,
     * the rest are let go of unencoded (and the page is not made). */
    int failed = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t i = ring->head + pos;
        if (i >= ring->cap)
            i -= ring->cap;
        Py_ssize_t mark = b.len;
        if (!failed && put_record(e, &b, ring, i, now) < 0) {
            if (PyErr_ExceptionMatches(PyExc_MemoryError))
                failed = 1;
            else
                PyErr_Clear();      /* a record that cannot be encoded: dropped, not the rest */
            b.len = mark;
        }
        else if (!failed)
            written++;
        Py_ssize_t slots = rec_slots(&ring->recs[i]);
        rec_clear_at(ring, i);
        pos += slots;
    }
    ring->head = ring->len = ring->nrec = 0;
    ring->cal = now;
    ring->seen_seq = -1;               /* a later read's "now" is after cal */
    if (failed) {
        Py_CLEAR(b.bytes);
        return NULL;        /* taken, and counted as lost (never consumed) */
    }
    if (n > 0) {
        uint32_t length = (uint32_t)(b.len - head - 4), count = (uint32_t)written;
        memcpy(b.p + head, &length, 4);
        memcpy(b.p + head + 4 + 1 + 4 + 8, &count, 4);
    }
    PyObject *page = buf_bytes(&b);
    if (page == NULL)
        return NULL;        /* taken, and counted as lost (never consumed) */
    if (lost > 0)
        ring->lost_told += lost;
    ring->consumed += n;
    return page;
fail:
    /* No room for even the page's head: nothing was taken. */
    Py_CLEAR(b.bytes);
    return NULL;
}

/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
static PyObject *
encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *fault, *shown, *fallback;
    if (!PyArg_ParseTuple(args, "OOO", &fault, &shown, &fallback))
        return NULL;
    Encoder *e = (Encoder *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    e->fresh = PyList_New(0);
    e->alive = PyDict_New();
    e->kept = PyList_New(0);
    e->forgotten = PyList_New(0);
    if (e->fresh == NULL || e->alive == NULL || e->kept == NULL || e->forgotten == NULL) {
        Py_DECREF(e);
        return NULL;
    }
    e->fault = Py_NewRef(fault);
    e->shown = Py_NewRef(shown);
    e->fallback = Py_NewRef(fallback);
    return (PyObject *)e;
}

static int
encoder_traverse(Encoder *e, visitproc visit, void *arg)
{
    Py_VISIT(e->fresh);
    Py_VISIT(e->alive);
    Py_VISIT(e->kept);
    Py_VISIT(e->forgotten);
    Py_VISIT(e->fault);
    Py_VISIT(e->shown);
    Py_VISIT(e->fallback);
    return 0;
}

static int
encoder_clear(Encoder *e)
{
    Py_CLEAR(e->fresh);
    Py_CLEAR(e->alive);
    Py_CLEAR(e->kept);
    Py_CLEAR(e->forgotten);
    Py_CLEAR(e->fault);
    Py_CLEAR(e->shown);
    Py_CLEAR(e->fallback);
    return 0;
}

static void
encoder_dealloc(Encoder *e)
{
    PyObject_GC_UnTrack(e);
    encoder_clear(e);
    PyMem_Free(e->keys);
    PyMem_Free(e->ids);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

/* A described object died: its id is forgotten.  The weakref callback, run
 * at the object's dealloc, in any thread, maybe inside a page being made
 * or a lock held: it only edits the Encoder's tables, never raises.  self
 * is (encoder, address). */
static PyObject *
encoder_forget(PyObject *self, PyObject *ref)
{
    Encoder *e = (Encoder *)PyTuple_GET_ITEM(self, 0);
    PyObject *addr = PyTuple_GET_ITEM(self, 1);
    if (e->alive == NULL || PyDict_GetItemWithError(e->alive, addr) != ref) {
        PyErr_Clear();
        Py_RETURN_NONE;             /* not (or no longer) this object's entry */
    }
    uint32_t id = enc_forget_ptr(e, PyLong_AsVoidPtr(addr));
    PyObject *n = id ? PyLong_FromUnsignedLong(id) : NULL;
    if (n == NULL || e->forgotten == NULL || PyList_Append(e->forgotten, n) < 0)
        PyErr_Clear();              /* (then its description stays with the reader: harmless) */
    Py_XDECREF(n);
    Py_INCREF(ref);                 /* (the dict held the only reference) */
    if (PyDict_DelItem(e->alive, addr) < 0)
        PyErr_Clear();
    Py_DECREF(ref);
    Py_RETURN_NONE;
}

static PyMethodDef forget_def = {"forget", encoder_forget, METH_O, "forget a dead object's id"};

/* A described object: held weakly from now on, or kept alive if it cannot
 * be (a str).  Out of memory, its id is forgotten instead: it would be
 * described again, never mistaken. */
static void
encoder_watch(Encoder *e, PyObject *obj)
{
    if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(obj))) {
        if (PyList_Append(e->kept, obj) < 0)
            goto forget;
        return;
    }
    PyObject *addr = PyLong_FromVoidPtr(obj), *self = NULL, *cb = NULL, *ref = NULL;
    int rc = -1;
    if (addr && (self = PyTuple_Pack(2, (PyObject *)e, addr)) && (cb = PyCFunction_New(&forget_def, self))
        && (ref = PyWeakref_NewRef(obj, cb)))
        rc = PyDict_SetItem(e->alive, addr, ref);
    Py_XDECREF(addr); Py_XDECREF(self); Py_XDECREF(cb); Py_XDECREF(ref);
    if (rc == 0)
        return;
forget:
    PyErr_Clear();
    enc_forget_ptr(e, obj);
}

static PyObject *
encoder_take_refs(Encoder *e, PyObject *unused)
{
    PyObject *fresh = e->fresh, *empty = PyList_New(0);
    Py_ssize_t n = PyList_GET_SIZE(fresh);
    PyObject *out = empty ? PyList_New(n) : NULL;
    for (Py_ssize_t k = 0; out && k < n; k++) {
        PyObject *pair = Py_BuildValue("(kO)", (unsigned long)e->told + 1 + k,
                                       PyList_GET_ITEM(fresh, k));
        if (pair == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, k, pair);
    }
    if (out == NULL) {
        Py_XDECREF(empty);
        return NULL;            /* nothing taken */
    }
    e->fresh = empty;
    e->told += (uint32_t)n;
    for (Py_ssize_t k = 0; k < n; k++)
        encoder_watch(e, PyList_GET_ITEM(fresh, k));
    Py_DECREF(fresh);
    return out;
}

static PyObject *
encoder_take_forgotten(Encoder *e, PyObject *unused)
{
    PyObject *empty = PyList_New(0);
    if (empty == NULL)
        return NULL;
    PyObject *out = e->forgotten;
    e->forgotten = empty;
    return out;
}

static PyMethodDef encoder_methods[] = {
    {"take_refs", (PyCFunction)encoder_take_refs, METH_NOARGS,
     "take_refs() -> [(id, object)]: the objects given ids since the last call, in order"},
    {"take_forgotten", (PyCFunction)encoder_take_forgotten, METH_NOARGS,
     "take_forgotten() -> [id]: the ids forgotten since the last call (their objects died)"},
    {NULL}
};

PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.Encoder",
    .tp_doc = "Encoder(fault, shown_type, fallback): ids for what raw records point at.",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = encoder_new,
    .tp_dealloc = (destructor)encoder_dealloc,
    .tp_traverse = (traverseproc)encoder_traverse,
    .tp_clear = (inquiry)encoder_clear,
    .tp_methods = encoder_methods,
};

