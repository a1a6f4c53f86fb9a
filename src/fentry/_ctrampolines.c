/* The hot path in C: event dispatchers and handlers (trampolines).
 *
 * The same interface and behaviour as pytrampolines.py (see there for what
 * each one does); hotpath.py picks this one when it is built.  Every object
 * here is a vectorcall callable that sys.monitoring calls directly, so a
 * dispatcher calling a handler adds no Python frame: the traced function is
 * always frame 0 (sys._getframe(0)) and its caller frame 1, whatever `depth`
 * the Python side passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif
/* Read-only use of the interpreter frame layout, to find the traced
 * function's caller as sys._getframe(1) does, without making frame objects,
 * and to read fetchargs from its fast locals; and of the dict layout, to read
 * an instance attribute from the object's inline values as CPython's
 * LOAD_ATTR_INSTANCE_VALUE does.  Built against the headers of the Python it
 * runs on (3.12, 3.13). */
#define Py_BUILD_CORE 1
#undef _PyGC_FINALIZED      /* 3.12: cpython/objimpl.h's, which pycore_gc.h redefines */
#include "internal/pycore_frame.h"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include "internal/pycore_dict.h"
#pragma GCC diagnostic pop
#undef Py_BUILD_CORE

static PyObject *DISABLE;          /* sys.monitoring.DISABLE */
static PyObject *getframe;         /* sys._getframe */
static PyObject *int0, *int1;   /* sys._getframe's arguments, and 1 */
static PyObject *s_tb, *s_seq, *s_append, *s_errors, *s_co_qualname;

enum kind { K_ENTRY_DISPATCH, K_DISPATCH, K_LIST, K_OPS_ENTRY, K_FUNCTION, K_GRAPH,
            K_OFFSET_DISPATCH, K_PROBE, K_PROBE_EXIT, K_NOP };

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    uint64_t ring_tstate;   /* recorders: the thread state id whose ring is cached */
    PyObject *ring;         /* ... and that ring */
    int kind;
    int nargs;          /* dispatcher / list: arguments of the event (2 or 3) */
    int rkind;          /* graph: the record's kind */
    int flag;           /* dispatcher: DISABLE on a miss; ops: save regs; graph: record exc type */
    PyObject *a, *b, *c, *d;
    int *slots;         /* probe: per fetcharg, the fast-locals index it starts from */
} Tramp;

static PyTypeObject TrampType;

/* ------------------------------------------------------------------ helpers */

/* The clock.  Records carry CLOCK_MONOTONIC nanoseconds (time.perf_counter_ns's
 * clock, the pure-Python twin's).  Where the kernel's own clocksource is the
 * TSC (it found it constant and synchronized across CPUs), the hot path
 * reads the TSC instead, a few nanoseconds against twenty, and a record's
 * reading is turned into CLOCK_MONOTONIC when it is read, by interpolation
 * between two readings of both clocks taken together (clock_point): the
 * ring's last read and now. */
static int use_tsc = 0;

static inline long long
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline long long
raw_clock(void)   /* hot path */
{
#if defined(__x86_64__)
    if (use_tsc)
        return (long long)__rdtsc();
#endif
    return mono_ns();
}

typedef struct { long long raw, ns; } ClockPoint;

static inline ClockPoint
clock_point(void)
{
    ClockPoint p;
    p.raw = raw_clock();
    p.ns = use_tsc ? mono_ns() : p.raw;
    return p;
}

/* A raw reading made between a and b, in CLOCK_MONOTONIC nanoseconds. */
static inline long long
to_ns(long long raw, ClockPoint a, ClockPoint b)
{
    if (!use_tsc)
        return raw;
    if (b.raw == a.raw)
        return a.ns;
    return a.ns + (long long)((__int128)(raw - a.raw) * (b.ns - a.ns) / (b.raw - a.raw));
}

static void
clock_init(void)
{
#if defined(__x86_64__)
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    char name[32] = {0};
    if (f != NULL) {
        if (fgets(name, sizeof name, f) != NULL)
            use_tsc = strcmp(name, "tsc\n") == 0;
        fclose(f);
    }
#endif
}

/* sys._getframe(depth), or NULL with no error set when the stack is not that deep. */
static inline PyObject *
frame_at(PyObject *depth)
{
    PyObject *f = PyObject_Vectorcall(getframe, &depth, 1, NULL);
    if (f == NULL && PyErr_ExceptionMatches(PyExc_ValueError))
        PyErr_Clear();
    return f;
}

/* The calling thread's ThreadBuffer.  The Python side keeps it in `local.tb`;
 * here it is cached in the thread state's dict under the `local` object
 * itself, which is cheaper to reach than a threading.local attribute. */
static inline PyObject *
thread_buffer(PyObject *local, PyObject *attach)
{
    PyObject *tsd = PyThreadState_GetDict();
    if (tsd == NULL)
        return PyObject_CallNoArgs(attach);
    PyObject *tb = PyDict_GetItemWithError(tsd, local);
    if (tb != NULL)
        return Py_NewRef(tb);
    if (PyErr_Occurred())
        return NULL;
    tb = PyObject_GetAttr(local, s_tb);
    if (tb == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        tb = PyObject_CallNoArgs(attach);       /* the thread's first event */
    }
    if (tb != NULL && PyDict_SetItem(tsd, local, tb) < 0)
        Py_CLEAR(tb);
    return tb;
}

/* A handler raised: Exception is caught and reported to `fault(code)`;
 * anything else (KeyboardInterrupt, SystemExit) goes on. */
static PyObject *
handler_failed(PyObject *fault, PyObject *code)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyErr_Clear();
    PyObject *r = PyObject_CallOneArg(fault, code);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_RETURN_NONE;
}


/* ------------------------------------------------------------------ Ip */

typedef struct {
    PyObject_HEAD
    PyObject *code;
    PyObject *offset;
} IpObject;

static PyTypeObject IpType;

static PyObject *
ip_make(PyObject *code, PyObject *offset)
{
    IpObject *ip = PyObject_New(IpObject, &IpType);
    if (ip == NULL)
        return NULL;
    ip->code = Py_NewRef(code);
    ip->offset = Py_NewRef(offset);
    return (PyObject *)ip;
}

static PyObject *
ip_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"code", "offset", NULL};
    PyObject *code, *offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO", kwlist, &code, &offset))
        return NULL;
    return ip_make(code, offset);
}

static void
ip_dealloc(IpObject *ip)
{
    Py_XDECREF(ip->code);
    Py_XDECREF(ip->offset);
    PyObject_Free(ip);
}

static PyObject *
ip_repr(IpObject *ip)
{
    PyObject *qual = PyObject_GetAttr(ip->code, s_co_qualname);
    if (qual == NULL)
        return NULL;
    long off = PyLong_AsLong(ip->offset);
    PyObject *r = PyUnicode_FromFormat("%U+0x%lx", qual, off);
    Py_DECREF(qual);
    return r;
}

static Py_hash_t
ip_hash(IpObject *ip)
{
    PyObject *t = Py_BuildValue("(NO)", PyLong_FromVoidPtr(ip->code), ip->offset);
    if (t == NULL)
        return -1;
    Py_hash_t h = PyObject_Hash(t);
    Py_DECREF(t);
    return h;
}

static PyObject *
ip_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, &IpType) || !PyObject_TypeCheck(a, &IpType))
        Py_RETURN_NOTIMPLEMENTED;
    IpObject *x = (IpObject *)a, *y = (IpObject *)b;
    int eq = x->code == y->code;
    if (eq) {
        eq = PyObject_RichCompareBool(x->offset, y->offset, Py_EQ);
        if (eq < 0)
            return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyMemberDef ip_members[] = {
    {"code", Py_T_OBJECT_EX, offsetof(IpObject, code), Py_READONLY, "the code object"},
    {"offset", Py_T_OBJECT_EX, offsetof(IpObject, offset), Py_READONLY, "the bytecode offset"},
    {NULL}
};

static PyTypeObject IpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry.Ip",
    .tp_doc = "A site in Python code: code and bytecode offset (ip, parent_ip).",
    .tp_basicsize = sizeof(IpObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = ip_new,
    .tp_dealloc = (destructor)ip_dealloc,
    .tp_repr = (reprfunc)ip_repr,
    .tp_hash = (hashfunc)ip_hash,
    .tp_richcompare = ip_richcompare,
    .tp_members = ip_members,
};


/* ------------------------------------------------------------------ CodeTable
 * A dispatch table: id(code) -> handler, as the Python side's dict, but looked
 * up by the code object's address (open addressing, linear probing), with no
 * int object made per lookup.  Python code uses it like a dict. */

typedef struct { void *key; PyObject *value; } Slot;   /* key NULL: empty; DUMMY: deleted */
static char dummy_key;
#define DUMMY ((void *)&dummy_key)

typedef struct {
    PyObject_HEAD
    Slot *slots;
    Py_ssize_t mask;      /* capacity - 1 (a power of two) */
    Py_ssize_t used;      /* live entries */
    Py_ssize_t fill;      /* live + deleted */
} CodeTable;

static PyTypeObject CodeTableType;

static inline size_t
ptr_hash(void *p)
{
    size_t h = (size_t)p >> 4;
    return h ^ (h >> 16);
}

static inline PyObject *
table_get(CodeTable *t, void *key)     /* hot path: borrowed, or NULL */
{
    size_t i = ptr_hash(key) & t->mask;
    for (;;) {
        Slot *s = &t->slots[i];
        if (s->key == key)
            return s->value;
        if (s->key == NULL)
            return NULL;
        i = (i + 1) & t->mask;
    }
}

static int
table_resize(CodeTable *t, Py_ssize_t cap)
{
    Slot *old = t->slots;
    Py_ssize_t oldcap = t->mask + 1;
    Slot *slots = PyMem_Calloc(cap, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->slots = slots;
    t->mask = cap - 1;
    t->fill = t->used;
    for (Py_ssize_t j = 0; j < oldcap; j++) {
        if (old[j].key == NULL || old[j].key == DUMMY)
            continue;
        size_t i = ptr_hash(old[j].key) & t->mask;
        while (slots[i].key != NULL)
            i = (i + 1) & t->mask;
        slots[i] = old[j];
    }
    PyMem_Free(old);
    return 0;
}

static int
key_of(PyObject *k, void **key)
{
    *key = PyLong_AsVoidPtr(k);
    if (*key == NULL && PyErr_Occurred())
        return -1;
    if (*key == NULL || *key == DUMMY) {
        PyErr_SetString(PyExc_KeyError, "not a code object id");
        return -1;
    }
    return 0;
}

static Slot *
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

static int
table_set(CodeTable *t, void *key, PyObject *value)
{
    Slot *s = table_find(t, key);
    if (s != NULL) {
        Py_SETREF(s->value, Py_NewRef(value));
        return 0;
    }
    if ((t->fill + 1) * 3 >= (t->mask + 1) * 2) {
        Py_ssize_t cap = t->mask + 1;
        while ((t->used + 1) * 3 >= cap)
            cap *= 2;
        if (table_resize(t, cap) < 0)
            return -1;
    }
    size_t i = ptr_hash(key) & t->mask;
    while (t->slots[i].key != NULL && t->slots[i].key != DUMMY)
        i = (i + 1) & t->mask;
    if (t->slots[i].key == NULL)
        t->fill++;
    t->slots[i].key = key;
    t->slots[i].value = Py_NewRef(value);
    t->used++;
    return 0;
}

static PyObject *
table_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    CodeTable *t = (CodeTable *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->mask = 7;
    t->slots = PyMem_Calloc(8, sizeof(Slot));
    if (t->slots == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    return (PyObject *)t;
}

static int
table_clear(CodeTable *t)
{
    if (t->slots == NULL)
        return 0;
    for (Py_ssize_t j = 0; j <= t->mask; j++) {
        if (t->slots[j].key != NULL && t->slots[j].key != DUMMY)
            Py_CLEAR(t->slots[j].value);
        t->slots[j].key = NULL;
    }
    t->used = t->fill = 0;
    return 0;
}

static int
table_traverse(CodeTable *t, visitproc visit, void *arg)
{
    for (Py_ssize_t j = 0; t->slots && j <= t->mask; j++)
        if (t->slots[j].key != NULL && t->slots[j].key != DUMMY)
            Py_VISIT(t->slots[j].value);
    return 0;
}

static void
table_dealloc(CodeTable *t)
{
    PyObject_GC_UnTrack(t);
    table_clear(t);
    PyMem_Free(t->slots);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static Py_ssize_t
table_len(CodeTable *t)
{
    return t->used;
}

static PyObject *
table_subscript(CodeTable *t, PyObject *k)
{
    void *key;
    if (key_of(k, &key) < 0)
        return NULL;
    PyObject *v = table_get(t, key);
    if (v == NULL) {
        PyErr_SetObject(PyExc_KeyError, k);
        return NULL;
    }
    return Py_NewRef(v);
}

static int
table_ass_subscript(CodeTable *t, PyObject *k, PyObject *v)
{
    void *key;
    if (key_of(k, &key) < 0)
        return -1;
    if (v != NULL)
        return table_set(t, key, v);
    Slot *s = table_find(t, key);
    if (s == NULL) {
        PyErr_SetObject(PyExc_KeyError, k);
        return -1;
    }
    s->key = DUMMY;
    Py_CLEAR(s->value);
    t->used--;
    return 0;
}

static int
table_contains(CodeTable *t, PyObject *k)
{
    void *key;
    if (key_of(k, &key) < 0) {
        PyErr_Clear();
        return 0;
    }
    return table_get(t, key) != NULL;
}

static PyObject *
table_get_method(CodeTable *t, PyObject *args)
{
    PyObject *k, *dflt = Py_None;
    void *key;
    if (!PyArg_ParseTuple(args, "O|O", &k, &dflt))
        return NULL;
    if (key_of(k, &key) < 0) {
        PyErr_Clear();
        return Py_NewRef(dflt);
    }
    PyObject *v = table_get(t, key);
    return Py_NewRef(v ? v : dflt);
}

static PyObject *
table_pop(CodeTable *t, PyObject *args)
{
    PyObject *k, *dflt = NULL;
    void *key;
    if (!PyArg_ParseTuple(args, "O|O", &k, &dflt))
        return NULL;
    Slot *s = key_of(k, &key) < 0 ? NULL : table_find(t, key);
    if (s == NULL) {
        if (dflt == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, k);
            return NULL;
        }
        PyErr_Clear();
        return Py_NewRef(dflt);
    }
    PyObject *v = s->value;
    s->key = DUMMY;
    s->value = NULL;
    t->used--;
    return v;
}

static PyObject *
table_clear_method(CodeTable *t, PyObject *unused)
{
    table_clear(t);
    Py_RETURN_NONE;
}

static PyObject *
table_keys(CodeTable *t, PyObject *unused)
{
    PyObject *list = PyList_New(0);
    for (Py_ssize_t j = 0; list && j <= t->mask; j++) {
        if (t->slots[j].key == NULL || t->slots[j].key == DUMMY)
            continue;
        PyObject *k = PyLong_FromVoidPtr(t->slots[j].key);
        if (k == NULL || PyList_Append(list, k) < 0)
            Py_CLEAR(list);
        Py_XDECREF(k);
    }
    return list;
}

static PyMethodDef table_methods[] = {
    {"get", (PyCFunction)table_get_method, METH_VARARGS, "get(id, default=None)"},
    {"pop", (PyCFunction)table_pop, METH_VARARGS, "pop(id[, default])"},
    {"clear", (PyCFunction)table_clear_method, METH_NOARGS, "remove every entry"},
    {"keys", (PyCFunction)table_keys, METH_NOARGS, "the ids in the table"},
    {NULL}
};

static PyMappingMethods table_as_mapping = {
    (lenfunc)table_len, (binaryfunc)table_subscript, (objobjargproc)table_ass_subscript,
};

static PySequenceMethods table_as_sequence = {
    .sq_contains = (objobjproc)table_contains,
};

static PyTypeObject CodeTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.CodeTable",
    .tp_doc = "id(code) -> handler, looked up by address.",
    .tp_basicsize = sizeof(CodeTable),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = table_new,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_traverse = (traverseproc)table_traverse,
    .tp_clear = (inquiry)table_clear,
    .tp_as_mapping = &table_as_mapping,
    .tp_as_sequence = &table_as_sequence,
    .tp_methods = table_methods,
};

/* ------------------------------------------------------------------ Ring
 * One thread's ring of raw records: fixed slots, no object made per record
 * (the kernel's ring buffer); read back as the same tuples the Python Ring
 * holds: (seq, ts, code, caller), (seq, ts, kind, code[, exc_type]),
 * (seq, ts, *fields), or for a probe event (seq, ts, event, site, values).
 * A probe event's values are kept in the ring itself, ints and floats
 * unboxed (as the kernel copies fetched bytes): the first two in its first
 * slot, then CELLS more per continuation slot.  Recording an event allocates
 * nothing; the tuple of values is made when the record is read.
 * Records are contiguous in sequence (a record that cannot fit at all drops
 * them all), so a record's seq is not stored: the oldest is next_seq - nrec. */

enum layout { L_FUNCTION, L_GRAPH, L_GRAPH_EXC, L_TUPLE, L_EVENT };
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
} Ring;

static PyTypeObject RingType;
static void ring_flush(Ring *ring, int force);

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
    return r->layout == L_EVENT ? event_slots(event_n(r)) : 1;
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

static void
rec_clear_at(Ring *ring, Py_ssize_t i)
{
    Rec *r = &ring->recs[i];
    if (r->layout == L_EVENT) {
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
    Py_CLEAR(r->o1);
    Py_CLEAR(r->o2);
}

/* Overwrite the oldest record. */
static void
ring_pop_oldest(Ring *ring)
{
    Py_ssize_t k = rec_slots(&ring->recs[ring->head]);
    rec_clear_at(ring, ring->head);
    ring->head = wrap(ring, ring->head, k);
    ring->len -= k;
    ring->nrec--;
}

/* Room for a record of k slots at the tail, the oldest records overwritten
 * as needed: its first slot, with ts set; -1 if it cannot fit at all (then
 * it and every record before it count as lost). */
static inline Py_ssize_t
ring_reserve(Ring *ring, Py_ssize_t k)   /* hot path */
{
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
    ring->recs[i].ts = raw_clock();
    return i;
}

/* Write one single-slot record.  Steals o1 and o2. */
static inline void
ring_write(Ring *ring, int layout, int kind, PyObject *o1, PyObject *o2)   /* hot path */
{
    Rec *r = &ring->recs[ring_reserve(ring, 1)];      /* cap >= 1: always fits */
    r->o1 = o1;
    r->o2 = o2;
    r->kind = kind;
    r->layout = layout;
    if (ring->flush_at && ring->len >= ring->flush_at)
        ring_flush(ring, 0);
}

/* Write a probe event's record: head (event, site) and n values, as cells
 * (the references in them, and head, are stolen). */
static inline void
ring_write_event(Ring *ring, PyObject *head, Cell *cells, int *tags, int n)   /* hot path */
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
    r->kind = n;
    r->layout = L_EVENT;
    for (int j = 0; j < n; j++)
        event_set(ring, i, j, cells[j], tags[j]);
    if (ring->flush_at && ring->len >= ring->flush_at)
        ring_flush(ring, 0);
}
static PyObject *
event_values(Ring *ring, Py_ssize_t i)
{
    int n = event_n(&ring->recs[i]);
    PyObject *values = PyTuple_New(n);
    for (int j = 0; values && j < n; j++) {
        int tag;
        Cell *cell = event_cell(ring, i, j, &tag);
        PyObject *v;
        switch (tag) {
        case T_INT: v = PyLong_FromLongLong(cell->i); break;
        case T_UINT: v = PyLong_FromUnsignedLongLong(cell->u); break;
        case T_FLOAT: v = PyFloat_FromDouble(cell->d); break;
        default: v = Py_NewRef(cell->obj);
        }
        if (v == NULL)
            Py_CLEAR(values);
        else
            PyTuple_SET_ITEM(values, j, v);
    }
    return values;
}

/* The record whose first slot is i, sequence number seq, as a tuple. */
static PyObject *
rec_tuple(Ring *ring, Py_ssize_t i, long long seq, ClockPoint now)
{
    Rec *r = &ring->recs[i];
    long long ts = to_ns(r->ts, ring->cal, now);
    switch (r->layout) {
    case L_FUNCTION:
        return Py_BuildValue("(LLOO)", seq, ts, r->o1, r->o2 ? r->o2 : Py_None);
    case L_GRAPH:
        return Py_BuildValue("(LLiO)", seq, ts, r->kind, r->o1);
    case L_GRAPH_EXC:
        return Py_BuildValue("(LLiOO)", seq, ts, r->kind, r->o1, r->o2);
    case L_EVENT: {
        PyObject *values = event_values(ring, i);
        if (values == NULL)
            return NULL;
        return Py_BuildValue("(LLOON)", seq, ts, PyTuple_GET_ITEM(r->o1, 0),
                             PyTuple_GET_ITEM(r->o1, 1), values);
    }
    default: {    /* L_TUPLE: recorded from Python; o1 holds the fields after ts */
        PyObject *head = Py_BuildValue("(LL)", seq, ts);
        PyObject *t = head ? PySequence_Concat(head, r->o1) : NULL;
        Py_XDECREF(head);
        return t;
    }
    }
}

static PyObject *
ring_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t maxlen;
    if (!PyArg_ParseTuple(args, "n", &maxlen))
        return NULL;
    if (maxlen < 1) {
        PyErr_SetString(PyExc_ValueError, "maxlen must be positive");
        return NULL;
    }
    Ring *ring = (Ring *)type->tp_alloc(type, 0);
    if (ring == NULL)
        return NULL;
    ring->recs = PyMem_Calloc(maxlen, sizeof(Rec));
    if (ring->recs == NULL) {
        Py_DECREF(ring);
        return PyErr_NoMemory();
    }
    ring->cap = maxlen;
    ring->cal = clock_point();
    return (PyObject *)ring;
}

static int
ring_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    return 0;     /* all done in tp_new; subclasses call super().__init__(maxlen) */
}

static void
ring_drop(Ring *ring)
{
    while (ring->nrec > 0)
        ring_pop_oldest(ring);
    ring->head = ring->len = 0;
}

static int
ring_traverse(Ring *ring, visitproc visit, void *arg)
{
    Py_VISIT(ring->queue);
    Py_ssize_t pos = 0;
    for (Py_ssize_t k = 0; k < ring->nrec; k++) {
        Py_ssize_t i = (ring->head + pos) % ring->cap;
        Rec *r = &ring->recs[i];
        Py_VISIT(r->o1);
        if (r->layout != L_EVENT) {
            Py_VISIT(r->o2);
        }
        for (int j = 0; r->layout == L_EVENT && j < event_n(r); j++) {
            int tag;
            Cell *c = event_cell(ring, i, j, &tag);
            if (tag == T_OBJ)
                Py_VISIT(c->obj);
        }
        pos += rec_slots(r);
    }
    return 0;
}

static int
ring_gc_clear(Ring *ring)
{
    ring_drop(ring);
    Py_CLEAR(ring->queue);
    return 0;
}

static void
ring_dealloc(Ring *ring)
{
    PyObject_GC_UnTrack(ring);
    ring_drop(ring);
    Py_CLEAR(ring->queue);
    PyMem_Free(ring->recs);
    Py_TYPE(ring)->tp_free((PyObject *)ring);
}

static Py_ssize_t
ring_len(Ring *ring)
{
    return ring->nrec;
}

static PyObject *
ring_list(Ring *ring, int take)
{
    PyObject *list = PyList_New(ring->nrec);
    if (list == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    long long seq = ring->next_seq - ring->nrec;
    ClockPoint now = clock_point();
    for (Py_ssize_t k = 0; k < ring->nrec; k++) {
        Py_ssize_t i = (ring->head + pos) % ring->cap;
        PyObject *t = rec_tuple(ring, i, seq + k, now);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, t);
        pos += rec_slots(&ring->recs[i]);
    }
    if (take) {
        ring->consumed += ring->nrec;
        ring_drop(ring);
        ring->cal = now;
    }
    return list;
}

static PyObject *
ring_snapshot(Ring *ring, PyObject *unused)
{
    return ring_list(ring, 0);
}

static PyObject *
ring_consume(Ring *ring, PyObject *unused)
{
    return ring_list(ring, 1);
}

static PyObject *
ring_clear_method(Ring *ring, PyObject *unused)
{
    ring_drop(ring);
    ring->next_seq = ring->consumed = ring->lost_told = 0;
    ring->cal = clock_point();
    Py_RETURN_NONE;
}

static PyObject *
ring_written(Ring *ring, PyObject *unused)
{
    return PyLong_FromLongLong(ring->next_seq);
}

static PyObject *
ring_lost(Ring *ring, PyObject *unused)
{
    return PyLong_FromLongLong(ring->next_seq - ring->consumed - ring->nrec);
}

static PyObject *
ring_resize(Ring *ring, PyObject *arg)
{
    Py_ssize_t maxlen = PyLong_AsSsize_t(arg);
    if (maxlen == -1 && PyErr_Occurred())
        return NULL;
    if (maxlen < 1) {
        PyErr_SetString(PyExc_ValueError, "maxlen must be positive");
        return NULL;
    }
    if (maxlen == ring->cap)            /* the same size: nothing to do (the kernel's too) */
        Py_RETURN_NONE;
    Rec *recs = PyMem_Calloc(maxlen, sizeof(Rec));
    if (recs == NULL)
        return PyErr_NoMemory();
    while (ring->len > maxlen)                          /* keep the newest records that fit */
        ring_pop_oldest(ring);
    for (Py_ssize_t i = 0; i < ring->len; i++)
        recs[i] = ring->recs[(ring->head + i) % ring->cap];
    PyMem_Free(ring->recs);
    ring->recs = recs;
    ring->cap = maxlen;
    ring->head = 0;
    Py_RETURN_NONE;
}

static PyObject *
ring_record(Ring *ring, PyObject *fields)
{
    /* From Python (the tracers' four-argument callbacks): the record is
     * (seq, ts, *fields), seq and ts made here. */
    if (!PyTuple_Check(fields)) {
        PyErr_SetString(PyExc_TypeError, "record() takes a tuple of fields");
        return NULL;
    }
    ring_write(ring, L_TUPLE, 0, Py_NewRef(fields), NULL);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ raw records
 * Ring.take_raw(encoder) takes every record out of the ring and encodes it
 * in the raw format that tracers/raw.py documents (and decodes): the bytes
 * the agent ships to its reader, which formats them in another process.
 * Objects a record points at (code objects, probe events, exception types)
 * go as small ids, handed out by the Encoder; the Python side describes
 * each new one once (Encoder.new_refs()).  The Encoder keeps them alive, so
 * an id never names two objects. */

enum { RAW_FUNC = 1, RAW_GRAPH = 2, RAW_EVENT = 3, RAW_EVENT_RETURN = 4 };
enum { W_FAULT, W_NONE, W_TRUE, W_FALSE, W_INT, W_UINT, W_BIGINT, W_FLOAT, W_COMPLEX,
       W_STR, W_SHOWN, W_BYTES, W_REF, W_TUPLE, W_TOOBIG };
#define MAX_STRING 4096         /* characters of a string value kept (the kernel's MAX_STRING_SIZE) */
#define MAX_INT_BYTES 1024      /* bytes of an int value kept; a larger one is a fault */
#define MAX_NESTED 4            /* tuple (array) values inside values */
#define ENC_CACHE 64            /* entries of the Encoder's id cache (a power of 2) */

typedef struct {
    PyObject_HEAD
    void **keys;                /* open addressing: object pointer -> ids[slot] */
    uint32_t *ids;
    Py_ssize_t cap, used;
    PyObject *objs;             /* list: objs[id - 1] is the object of id */
    PyObject *cache_keys[ENC_CACHE];    /* a direct-mapped cache of enc_ref */
    uint32_t cache_ids[ENC_CACHE];
    PyObject *fault;            /* fetch.FAULT: a value that could not be fetched */
    PyObject *shown;            /* fetch.Shown: a value kept as its safe text */
    PyObject *fallback;         /* fallback(value) -> str: any other kind of value */
} Encoder;

static PyTypeObject EncoderType;

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
    if (PyList_Append(e->objs, obj) < 0)
        return 0;
    uint32_t id = (uint32_t)PyList_GET_SIZE(e->objs);
    size_t j = enc_hash(obj, e->cap);
    while (e->keys[j] != NULL)
        j = (j + 1) & (e->cap - 1);
    e->keys[j] = obj;
    e->ids[j] = id;
    e->used++;
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
    if (_PyLong_AsByteArray((PyLongObject *)v, (unsigned char *)b->p + b->len, n, 1, 1
#if PY_VERSION_HEX >= 0x030D0000
                            , 1
#endif
                            ) < 0)
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
 * is runs of records of the same few code objects.  (What has an id is
 * kept alive by the Encoder: a cached address always names its object.)
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
    long long ts = to_ns(r->ts, ring->cal, now);
    switch (r->layout) {
    case L_FUNCTION:
    case L_GRAPH:
    case L_GRAPH_EXC:
        return put_tracer_record(e, b, r, ts);
    case L_EVENT: {
        int n = event_n(r);
        if (put_event_head(e, b, ts, PyTuple_GET_ITEM(r->o1, 0), PyTuple_GET_ITEM(r->o1, 1)) < 0
            || put_u32(b, (uint32_t)n) < 0)
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

/* Every record of the ring, taken and encoded as a page: a LOST message
 * if records were overwritten since the last page, then a RECORDS message.
 * b"" when there is nothing to say; NULL on failure (memory): then nothing
 * was taken. */
static PyObject *
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
    long long lost = ring->next_seq - ring->consumed - ring->nrec - ring->lost_told;
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

/* ------------------------------------------------------------------ PageQueue
 * Pages on their way to a raw reader: filled by writers whose ring reached
 * its flush mark (in the hot path: the reader's thread cannot run while a
 * busy thread holds the GIL, so the writer moves its records out itself,
 * as a page, and never overwrites them), taken by the reader's drain.  At
 * most `cap` bytes wait: beyond that a ring overwrites its oldest records,
 * counted, as it does with no reader. */

typedef struct {
    PyObject_HEAD
    PyObject *pages;            /* list of bytes */
    Py_ssize_t bytes, cap;
    Encoder *encoder;
    int wake_fd;                /* a byte is written here when a page comes (-1: none) */
    int stalled;                /* a writer waited in vain: none waits again till a take */
} PageQueue;

#define QUEUE_WAIT_STEP_NS 100000   /* a full queue: the writer lets the reader run... */
#define QUEUE_WAIT_STEPS 2000       /* ... for at most 200 ms (a loaded machine) */

static PyTypeObject PageQueueType;

/* Move the ring's records into its queue, as a page.  From the hot path
 * (once per flush_at records) only while the queue has room: when it is
 * full the ring overwrites, as with no reader.  A reader's drain forces it:
 * every page goes through the queue, so a thread's pages stay in order. */
static void
ring_flush(Ring *ring, int force)
{
    PageQueue *q = (PageQueue *)ring->queue;
    if (q == NULL || (ring->nrec == 0 && !force))
        return;
    if (q->bytes >= q->cap && !force) {
        /* The reader's thread needs the GIL to take the pages, and a busy
         * thread holds it for a switch interval at a time: give it up, a
         * little at a time, until the reader has taken them.  A reader that
         * does not come (it waits on a reader of its own that does not
         * read) is not waited for again until it takes: then, as the kernel,
         * the ring overwrites its oldest records and counts them. */
        for (int i = 0; i < QUEUE_WAIT_STEPS && q->bytes >= q->cap && !q->stalled; i++) {
            struct timespec step = {0, QUEUE_WAIT_STEP_NS};
            Py_BEGIN_ALLOW_THREADS
            nanosleep(&step, NULL);
            Py_END_ALLOW_THREADS
        }
        if (q->bytes >= q->cap) {
            q->stalled = 1;
            return;
        }
    }
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *page = ring_page(ring, q->encoder);
    if (page != NULL && PyBytes_GET_SIZE(page) > 0) {
        if (PyList_Append(q->pages, page) == 0) {
            q->bytes += PyBytes_GET_SIZE(page);
            if (q->wake_fd >= 0) {
                char c = 1;
                ssize_t unused = write(q->wake_fd, &c, 1);   /* non-blocking; full is fine */
                (void)unused;
            }
        }
    }
    Py_XDECREF(page);
    PyErr_Clear();
    PyErr_SetRaisedException(exc);
}

static PyObject *
ring_page_method(Ring *ring, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &EncoderType)) {
        PyErr_SetString(PyExc_TypeError, "page() takes an Encoder");
        return NULL;
    }
    return ring_page(ring, (Encoder *)arg);
}

static PyObject *
ring_after_fork(Ring *ring, PyObject *unused)
{
    ring->paging = 0;       /* (always 0 here: paging is one C call under the GIL) */
    Py_RETURN_NONE;
}

static PyObject *
ring_flush_method(Ring *ring, PyObject *unused)
{
    ring_flush(ring, 1);
    Py_RETURN_NONE;
}

static PyObject *
ring_set_queue(Ring *ring, PyObject *args)
{
    PyObject *queue;
    unsigned int key;
    Py_ssize_t flush_at;
    if (!PyArg_ParseTuple(args, "OIn", &queue, &key, &flush_at))
        return NULL;
    if (queue != Py_None && !PyObject_TypeCheck(queue, &PageQueueType)) {
        PyErr_SetString(PyExc_TypeError, "set_queue() takes a PageQueue or None");
        return NULL;
    }
    Py_XSETREF(ring->queue, queue == Py_None ? NULL : Py_NewRef(queue));
    ring->key = key;
    ring->flush_at = ring->queue == NULL ? 0 : (flush_at < 1 ? 1 : flush_at);
    Py_RETURN_NONE;
}

static PyObject *
ring_get_lost_told(Ring *ring, void *closure)
{
    return PyLong_FromLongLong(ring->lost_told);
}

static int
ring_set_lost_told(Ring *ring, PyObject *value, void *closure)
{
    long long v = value ? PyLong_AsLongLong(value) : -1;
    if (v == -1 && (value == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "lost_told cannot be deleted");
        return -1;
    }
    ring->lost_told = v;
    return 0;
}

static PyObject *
ring_get_key(Ring *ring, void *closure)
{
    return PyLong_FromUnsignedLong(ring->key);
}

static PyObject *
pagequeue_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *encoder;
    Py_ssize_t cap;
    int wake_fd;
    if (!PyArg_ParseTuple(args, "Oni", &encoder, &cap, &wake_fd))
        return NULL;
    if (!PyObject_TypeCheck(encoder, &EncoderType)) {
        PyErr_SetString(PyExc_TypeError, "PageQueue() takes an Encoder");
        return NULL;
    }
    PageQueue *q = (PageQueue *)type->tp_alloc(type, 0);
    if (q == NULL)
        return NULL;
    q->pages = PyList_New(0);
    if (q->pages == NULL) {
        Py_DECREF(q);
        return NULL;
    }
    q->encoder = (Encoder *)Py_NewRef(encoder);
    q->cap = cap;
    q->wake_fd = wake_fd;
    return (PyObject *)q;
}

static int
pagequeue_traverse(PageQueue *q, visitproc visit, void *arg)
{
    Py_VISIT(q->pages);
    Py_VISIT(q->encoder);
    return 0;
}

static int
pagequeue_clear(PageQueue *q)
{
    Py_CLEAR(q->pages);
    Py_CLEAR(q->encoder);
    return 0;
}

static void
pagequeue_dealloc(PageQueue *q)
{
    PyObject_GC_UnTrack(q);
    pagequeue_clear(q);
    Py_TYPE(q)->tp_free((PyObject *)q);
}

static PyObject *
pagequeue_take(PageQueue *q, PyObject *unused)
{
    PyObject *pages = q->pages, *fresh = PyList_New(0);
    if (fresh == NULL)
        return NULL;
    q->pages = fresh;
    q->bytes = 0;
    q->stalled = 0;
    return pages;
}

static PyObject *
pagequeue_get_bytes(PageQueue *q, void *closure)
{
    return PyLong_FromSsize_t(q->bytes);
}

static PyObject *
pagequeue_get_cap(PageQueue *q, void *closure)
{
    return PyLong_FromSsize_t(q->cap);
}

static int
pagequeue_set_cap(PageQueue *q, PyObject *value, void *closure)
{
    Py_ssize_t v = value ? PyLong_AsSsize_t(value) : -1;
    if (v == -1 && (value == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cap cannot be deleted");
        return -1;
    }
    q->cap = v;
    return 0;
}

static PyObject *
pagequeue_get_encoder(PageQueue *q, void *closure)
{
    return Py_NewRef((PyObject *)q->encoder);
}

static PyMethodDef pagequeue_methods[] = {
    {"take", (PyCFunction)pagequeue_take, METH_NOARGS, "every page waiting, in order; the queue empties"},
    {NULL}
};

static PyGetSetDef pagequeue_getset[] = {
    {"bytes", (getter)pagequeue_get_bytes, NULL, "bytes waiting", NULL},
    {"cap", (getter)pagequeue_get_cap, (setter)pagequeue_set_cap, "bytes that may wait", NULL},
    {"encoder", (getter)pagequeue_get_encoder, NULL, "the Encoder of its pages", NULL},
    {NULL}
};

static PyTypeObject PageQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.PageQueue",
    .tp_doc = "PageQueue(encoder, cap, wake_fd): pages of raw records on their way to a reader.",
    .tp_basicsize = sizeof(PageQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = pagequeue_new,
    .tp_dealloc = (destructor)pagequeue_dealloc,
    .tp_traverse = (traverseproc)pagequeue_traverse,
    .tp_clear = (inquiry)pagequeue_clear,
    .tp_methods = pagequeue_methods,
    .tp_getset = pagequeue_getset,
};

static PyObject *
encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *fault, *shown, *fallback;
    if (!PyArg_ParseTuple(args, "OOO", &fault, &shown, &fallback))
        return NULL;
    Encoder *e = (Encoder *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    e->objs = PyList_New(0);
    if (e->objs == NULL) {
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
    Py_VISIT(e->objs);
    Py_VISIT(e->fault);
    Py_VISIT(e->shown);
    Py_VISIT(e->fallback);
    return 0;
}

static int
encoder_clear(Encoder *e)
{
    Py_CLEAR(e->objs);
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

static PyObject *
encoder_refs(Encoder *e, PyObject *arg)
{
    Py_ssize_t start = PyLong_AsSsize_t(arg);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(e->objs);
    if (start < 0)
        start = 0;
    if (start > n)
        start = n;
    PyObject *out = PyList_New(n - start);
    for (Py_ssize_t k = start; out && k < n; k++) {
        PyObject *pair = Py_BuildValue("(nO)", k + 1, PyList_GET_ITEM(e->objs, k));
        if (pair == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, k - start, pair);
    }
    return out;
}

static PyMethodDef encoder_methods[] = {
    {"refs", (PyCFunction)encoder_refs, METH_O,
     "refs(start) -> [(id, object)]: what ids start+1, start+2, ... name"},
    {NULL}
};

static PyTypeObject EncoderType = {
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

static PyObject *
ring_maxlen(Ring *ring, void *closure)
{
    return PyLong_FromSsize_t(ring->cap);
}

static PyMethodDef ring_methods[] = {
    {"snapshot", (PyCFunction)ring_snapshot, METH_NOARGS, "the records, not consumed"},
    {"consume", (PyCFunction)ring_consume, METH_NOARGS, "take the records"},
    {"clear", (PyCFunction)ring_clear_method, METH_NOARGS, "empty the ring, counts too"},
    {"written", (PyCFunction)ring_written, METH_NOARGS, "records written since the last clear"},
    {"lost", (PyCFunction)ring_lost, METH_NOARGS, "records overwritten before anyone read them"},
    {"resize", (PyCFunction)ring_resize, METH_O, "keep the newest records that fit"},
    {"record", (PyCFunction)ring_record, METH_O, "write a record: (seq, ts, *fields)"},
    {"page", (PyCFunction)ring_page_method, METH_O,
     "page(encoder) -> bytes: every record, taken, as raw stream messages"},
    {"after_fork", (PyCFunction)ring_after_fork, METH_NOARGS,
     "in a forked child: no paging is under way"},
    {"flush", (PyCFunction)ring_flush_method, METH_NOARGS,
     "move every record (and what was lost) into the queue, as a page"},
    {"set_queue", (PyCFunction)ring_set_queue, METH_VARARGS,
     "set_queue(queue, key, flush_at): the writer moves its records into queue at flush_at slots"},
    {NULL}
};

static PyGetSetDef ring_getset[] = {
    {"maxlen", (getter)ring_maxlen, NULL, "capacity in records", NULL},
    {"lost_told", (getter)ring_get_lost_told, (setter)ring_set_lost_told,
     "lost records a consuming reader has been told of", NULL},
    {"key", (getter)ring_get_key, NULL, "this ring's thread, in the raw stream", NULL},
    {NULL}
};

static PySequenceMethods ring_as_sequence = {
    .sq_length = (lenfunc)ring_len,
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.Ring",
    .tp_doc = "One thread's ring of raw records, the oldest overwritten when full.",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_new = ring_new,
    .tp_init = ring_init,
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_traverse = (traverseproc)ring_traverse,
    .tp_clear = (inquiry)ring_gc_clear,
    .tp_methods = ring_methods,
    .tp_getset = ring_getset,
    .tp_as_sequence = &ring_as_sequence,
};

/* ------------------------------------------------------------------ the calls */

/* fentry's own threads (the agent's), whose events are ignored: whatever
 * they run, stdlib code included, is never traced (the kernel's per-task
 * recursion bit).  A flag per OS thread: any number of them, nothing to
 * forget when a thread ends, and one load on every event.  initial-exec
 * makes that load a plain %fs-relative one instead of a __tls_get_addr
 * call (one int fits glibc's static TLS surplus for dlopened modules). */
#if defined(__GNUC__)
static __thread int thread_quiet __attribute__((tls_model("initial-exec")));
#else
static _Thread_local int thread_quiet;
#endif

static inline int
thread_is_quiet(void)
{
    return thread_quiet;
}

static PyObject *
quiet_thread(PyObject *m, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    thread_quiet = on;
    Py_RETURN_NONE;
}

/* The main thread of a program started by fentry run is quiet from fentry's
 * start until the interpreter starts the program: what it does in between
 * (the end of site's imports, loading the script) is not the program's.  The
 * audit events say when: cpython.run_file or run_command, then the exec of
 * the program's code; cpython.run_module (runpy's work is the start of a -m
 * program); any other cpython.run_* (stdin, the interactive hook).  A C
 * audit hook: once armed, a string compare or two per audit event until
 * then, nothing after. */
enum { NOT_AWAITING, AWAITING_RUN, AWAITING_EXEC };
static int awaiting_program = NOT_AWAITING;
static PyObject *program_file;      /* AWAITING_EXEC: the file name of the program's code */

static int
program_start_hook(const char *event, PyObject *args, void *data)
{
    if (awaiting_program == NOT_AWAITING)
        return 0;
    if (awaiting_program == AWAITING_RUN && strncmp(event, "cpython.run_", 12) == 0
            && (strcmp(event + 12, "file") == 0 || strcmp(event + 12, "command") == 0
                || strcmp(event + 12, "module") == 0)) {
        /* The program's code: the file's, -c's (<string>), or for -m the
         * module runpy runs as __main__ (its file is not known yet: the
         * exec made by runpy's _run_code, Py_None here). */
        PyObject *file = strcmp(event + 12, "file") == 0 && PyTuple_Check(args)
                         && PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
        program_file = file != NULL ? Py_NewRef(file)
                       : strcmp(event + 12, "module") == 0 ? Py_NewRef(Py_None)
                       : PyUnicode_FromString("<string>");
        awaiting_program = program_file != NULL ? AWAITING_EXEC : NOT_AWAITING;
        PyErr_Clear();
        return 0;
    }
    /* The exec of the program's code (not of a module its loading imports). */
    int exec_of_program = 0;
    if (awaiting_program == AWAITING_EXEC && strcmp(event, "exec") == 0 && PyTuple_Check(args)
            && PyTuple_GET_SIZE(args) > 0 && PyCode_Check(PyTuple_GET_ITEM(args, 0))) {
        if (program_file == Py_None) {
            PyFrameObject *caller = PyEval_GetFrame();      /* borrowed */
            PyCodeObject *code = caller != NULL ? PyFrame_GetCode(caller) : NULL;
            exec_of_program = code != NULL && PyUnicode_CompareWithASCIIString(code->co_name,
                                                                                "_run_code") == 0;
            Py_XDECREF(code);
        }
        else {
            PyObject *name = ((PyCodeObject *)PyTuple_GET_ITEM(args, 0))->co_filename;
            exec_of_program = PyUnicode_Check(program_file)
                              && PyUnicode_Compare(name, program_file) == 0;
        }
        PyErr_Clear();
    }
    if (exec_of_program
            || (awaiting_program == AWAITING_RUN && strncmp(event, "cpython.run_", 12) == 0)) {
        Py_CLEAR(program_file);
        awaiting_program = NOT_AWAITING;
        PyObject *r = quiet_thread(NULL, Py_False);
        Py_XDECREF(r);
        if (r == NULL)
            PyErr_Clear();
    }
    return 0;
}

static PyObject *
quiet_until_program(PyObject *m, PyObject *unused)
{
    static int hooked = 0;
    if (!hooked) {
        if (PySys_AddAuditHook(program_start_hook, NULL) < 0)
            return NULL;
        hooked = 1;
    }
    awaiting_program = AWAITING_RUN;
    return quiet_thread(m, Py_True);
}

/* ------------------------------------------------------------------ SIGTERM
 * The agent must drain the trace before a SIGTERM kills the program, without
 * the program seeing a handler: signal.getsignal() reads Python's own table,
 * so an OS-level handler here stays invisible, and a handler the program
 * installs later simply replaces it.  The handler does two async-signal-safe
 * things: it asks the main thread to run the agent's Python handler for a
 * stand-in signal at its next bytecode (PyErr_SetInterruptEx), as Python does
 * for its own handlers, and it writes a byte to the agent's pipe, for when the
 * main thread is stuck in C.  Either one drains, then dies of SIGTERM. */

static volatile sig_atomic_t sigterm_fd = -1;
static volatile sig_atomic_t sigterm_standin = 0;
static volatile pid_t sigterm_pid = 0;     /* the process that caught SIGTERM */

static void
on_sigterm(int signo)
{
    int saved = errno;
    char c = 'T';
    if (getpid() != sigterm_pid) {
        /* A child forked a moment ago, before its after-fork hooks took this
         * handler back: the pipe is its parent's, and so is everything else.
         * It dies as it would have. */
        signal(SIGTERM, SIG_DFL);
        raise(SIGTERM);
        errno = saved;
        return;
    }
    if (sigterm_standin > 0)
        PyErr_SetInterruptEx(sigterm_standin);
    if (sigterm_fd >= 0)
        (void)!write(sigterm_fd, &c, 1);
    errno = saved;
}

static PyObject *
catch_sigterm(PyObject *m, PyObject *args)
{
    int fd, standin = 0;
    if (!PyArg_ParseTuple(args, "i|i", &fd, &standin))
        return NULL;
    sigterm_standin = standin;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = fd >= 0 ? on_sigterm : SIG_DFL;
    sigterm_fd = fd;
    sigterm_pid = getpid();
    if (sigaction(SIGTERM, &sa, NULL) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *
dispatch(Tramp *t, PyObject *const *args, Py_ssize_t nargs)   /* hot path */
{
    if (thread_is_quiet())
        Py_RETURN_NONE;
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "fentry dispatcher: too few arguments");
        return NULL;
    }
    PyObject *code = args[0];
    PyObject *h = table_get((CodeTable *)t->a, code);
    if (h != NULL && t->kind == K_OFFSET_DISPATCH) {
        /* INSTRUCTION: a dict of probed offsets; DISABLE every other one */
        h = PyDict_Check(h) ? PyDict_GetItemWithError(h, args[1]) : NULL;
        if (h == NULL) {
            if (PyErr_Occurred())
                return NULL;
            return Py_NewRef(DISABLE);
        }
    }
    Py_XINCREF(h);
    if (h == NULL) {
        if (t->kind == K_OFFSET_DISPATCH)
            return Py_NewRef(DISABLE);
        if (t->kind == K_DISPATCH)
            return Py_NewRef(t->flag ? DISABLE : Py_None);
        h = PyObject_CallOneArg(t->b, code);        /* discover(code), once per code */
        if (h == NULL) {
            /* Discovery is Python code on the program's stack: at its
             * recursion limit it fails.  The program must not see that;
             * the code is decided at a later call (no DISABLE). */
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return NULL;
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (h == Py_None) {
            Py_DECREF(h);
            return Py_NewRef(DISABLE);
        }
    }
    PyObject *r = PyObject_Vectorcall(h, args, nargs, NULL);
    Py_DECREF(h);
    if (r == NULL)
        return handler_failed(t->c, code);
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
list_call(Tramp *t, PyObject *const *args, Py_ssize_t nargs)   /* hot path */
{
    PyObject *pairs = t->a;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        PyObject *ops = PyTuple_GET_ITEM(pair, 0), *h = PyTuple_GET_ITEM(pair, 1);
        Py_INCREF(pair);
        PyObject *r = PyObject_Vectorcall(h, args, nargs, NULL);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                Py_DECREF(pair);
                return NULL;
            }
            PyErr_Clear();
            PyObject *e = PyObject_GetAttr(ops, s_errors), *e1 = NULL;
            if (e != NULL && (e1 = PyNumber_Add(e, int1)) != NULL)
                PyObject_SetAttr(ops, s_errors, e1);
            Py_XDECREF(e); Py_XDECREF(e1);
            PyErr_Clear();
        }
        Py_XDECREF(r);
        Py_DECREF(pair);
    }
    Py_RETURN_NONE;
}

/* The interpreter frame of the traced function's caller (what sys._getframe(1)
 * finds from here, since no Python frame sits between us and the traced
 * function), or NULL when there is no Python caller. */
static inline _PyInterpreterFrame *
caller_frame(void)
{
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *f = ts->current_frame;
#else
    _PyInterpreterFrame *f = ts->cframe->current_frame;
#endif
    return f == NULL ? NULL : _PyFrame_GetFirstComplete(f->previous);
}

/* The offset of the instruction a caller is in.  3.12's f_lasti points at
 * the last inline CACHE entry of a CALL; step back to the CALL itself
 * (CACHE is opcode 0, and no instruction is), as 3.13 reports it. */
static inline int
call_site(PyObject *code, int lasti)
{
#if PY_VERSION_HEX < 0x030D0000
    PyObject *co = PyCode_GetCode((PyCodeObject *)code);    /* cached by CPython */
    if (co == NULL) {
        PyErr_Clear();
        return lasti;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(co);
    while (lasti > 0 && lasti < PyBytes_GET_SIZE(co) && b[lasti] == 0)
        lasti -= 2;
    Py_DECREF(co);
#endif
    return lasti;
}

/* The caller's Ip (parent_ip), None when there is no Python caller. */
static PyObject *
caller_ip(void)
{
    _PyInterpreterFrame *f = caller_frame();
    if (f == NULL)
        return Py_NewRef(Py_None);
    PyObject *code = PyUnstable_InterpreterFrame_GetCode(f);
    PyObject *off = PyLong_FromLong(call_site(code, PyUnstable_InterpreterFrame_GetLasti(f)));
    PyObject *ip = (code && off) ? ip_make(code, off) : NULL;
    Py_XDECREF(code); Py_XDECREF(off);
    return ip;
}

static PyObject *
ops_entry_call(Tramp *t)   /* hot path: func(ip, parent_ip, ops, regs) */
{
    PyObject *frame = NULL, *parent, *r;
    if (t->flag && !(frame = frame_at(int0)))       /* regs: the traced frame */
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (!(parent = caller_ip())) {
        Py_XDECREF(frame);
        return NULL;
    }
    PyObject *argv[4] = {t->b, parent, t->c, frame ? frame : Py_None};
    r = PyObject_Vectorcall(t->a, argv, 4, NULL);
    Py_DECREF(parent);
    Py_XDECREF(frame);
    return r;
}

/* The calling thread's Ring (a ThreadBuffer).  Each recorder caches the last
 * one it used with its thread state's id, which CPython never reuses. */
static inline Ring *
thread_ring(Tramp *t)
{
    uint64_t id = PyThreadState_Get()->id;
    if (t->ring != NULL && t->ring_tstate == id)
        return (Ring *)Py_NewRef(t->ring);
    PyObject *tb = thread_buffer(t->a, t->b);
    if (tb != NULL && !PyObject_TypeCheck(tb, &RingType)) {
        PyErr_SetString(PyExc_TypeError, "fentry: thread buffer is not a Ring");
        Py_CLEAR(tb);
    }
    if (tb != NULL) {
        Py_XSETREF(t->ring, Py_NewRef(tb));
        t->ring_tstate = id;
    }
    return (Ring *)tb;
}

static PyObject *
function_call(Tramp *t, PyObject *code)   /* hot path: (seq, ts, code, caller code) */
{
    _PyInterpreterFrame *f = caller_frame();
    Ring *ring = thread_ring(t);
    if (ring == NULL)
        return NULL;
    PyObject *ccode = f == NULL ? Py_NewRef(Py_None) : PyUnstable_InterpreterFrame_GetCode(f);
    ring_write(ring, L_FUNCTION, 0, Py_NewRef(code), ccode);
    Py_DECREF(ring);
    Py_RETURN_NONE;
}

static PyObject *
graph_call(Tramp *t, PyObject *const *args, Py_ssize_t nargs)   /* hot path */
{
    Ring *ring = thread_ring(t);
    if (ring == NULL)
        return NULL;
    if (t->flag)
        ring_write(ring, L_GRAPH_EXC, t->rkind, Py_NewRef(args[0]),
                   Py_NewRef(nargs > 2 ? (PyObject *)Py_TYPE(args[2]) : Py_None));
    else
        ring_write(ring, L_GRAPH, t->rkind, Py_NewRef(args[0]), NULL);
    Py_DECREF(ring);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ Switch
 * An on/off flag the hot path reads without a Python call: a ring buffer's
 * tracing_on (the kernel's ring_buffer_record_on/off). */

typedef struct {
    PyObject_HEAD
    int on;
} Switch;

static PyTypeObject SwitchType;

static PyObject *
switch_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"on", NULL};
    int on = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p", kwlist, &on))
        return NULL;
    Switch *s = (Switch *)type->tp_alloc(type, 0);
    if (s != NULL)
        s->on = on;
    return (PyObject *)s;
}

static PyObject *
switch_get(Switch *s, void *closure)
{
    return PyBool_FromLong(s->on);
}

static int
switch_set(Switch *s, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete 'on'");
        return -1;
    }
    int on = PyObject_IsTrue(value);
    if (on < 0)
        return -1;
    s->on = on;
    return 0;
}

static PyGetSetDef switch_getset[] = {
    {"on", (getter)switch_get, (setter)switch_set, "True: records are written", NULL},
    {NULL}
};

static PyTypeObject SwitchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.Switch",
    .tp_doc = "An on/off flag the hot path reads (a ring buffer's tracing_on).",
    .tp_basicsize = sizeof(Switch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = switch_new,
    .tp_getset = switch_getset,
};

/* ------------------------------------------------------------------ probe events
 * ProbeTrace: one probe event's hit, compiled (the kernel's kprobe_trace_func
 * behind kprobe_dispatcher): fetch each fetcharg straight from the frame's
 * fast locals, convert it, count the hit (and a miss when a fetch faulted),
 * apply the filter, record (event, site, values) -- no Python call on the way.
 *
 * It reads exactly what events/fetch.py reads, with the same results and the
 * same faults, and never runs user code: attributes come from the instance's
 * storage (inline values, dict or slots) or a plain class attribute, looked
 * up with _PyType_Lookup; items from builtin containers.  Whatever it does
 * not know (an object whose type hooks attribute access, a method found on
 * the class, a cell variable, more than PROBE_MAX_ARGS fetchargs, ...) is not
 * guessed at: the whole hit goes to the Python path (`slow(frame)`), which
 * does it as before.  Nothing is counted or recorded before that decision,
 * so a hit is counted once.
 *
 * Values are converted straight into ring cells (Cell, tag: exact ints and
 * floats unboxed, anything else a reference), one per fetcharg; the event
 * knows their names.  The filter runs here when it is comparisons of fields
 * with constants (&& || ! and parentheses, no regex glob): a value it cannot
 * compare exactly (an int beyond 64 bits) hands the decision to the Python
 * filter, `filter_slow(values)`.  A filtered-out event writes nothing.
 *
 * Hot path: probe_call and what it calls are flat, allocate nothing for
 * ints, floats, strs and the like, and make no Python call; keep them so. */

#define PROBE_MAX_ARGS 16       /* more fetchargs than this: the Python path */
#define FILTER_MAX_STACK 64

enum { R_LOCAL, R_ARG, R_IMM, R_GLOBAL, R_RETVAL };  /* where a fetcharg starts */
enum { V_RAW, V_INT, V_STRING };                      /* its conversion */
enum { FETCH_OK, FETCH_FAULT, FETCH_BAIL };           /* what a fetch gave */
enum { P_EQ, P_NE, P_LT, P_LE, P_GT, P_GE, P_AND,    /* numeric predicates */
       S_EQ, S_PREFIX, S_SUFFIX, S_IN };              /* string predicates */
enum { I_NOT = -1, I_AND = -2, I_OR = -3 };           /* filter program, postfix */

/* Per attribute step: the class attribute _PyType_Lookup found for the last
 * type seen, valid while that type's version tag holds (any change to the
 * type or its bases gives it a new one; tags are never reused). */
typedef struct {
    PyTypeObject *type;         /* not a reference: compared only */
    unsigned int version;       /* 0: nothing cached */
    PyObject *descr;            /* borrowed from the type's MRO dicts, or NULL */
    PyDictKeysObject *keys;     /* the type's shared keys ... */
    Py_ssize_t index;           /* ... and the name's index in them; -1: none */
} AttrCache;

/* The index of `name` in the shared keys of instances of t (-1: none). */
static Py_ssize_t
shared_index(PyTypeObject *t, PyObject *name, PyDictKeysObject **keys)
{
    *keys = NULL;
    if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || !(t->tp_flags & Py_TPFLAGS_MANAGED_DICT))
        return -1;
#if PY_VERSION_HEX >= 0x030D0000
    if (!(t->tp_flags & Py_TPFLAGS_INLINE_VALUES))
        return -1;
#endif
    PyDictKeysObject *k = ((PyHeapTypeObject *)t)->ht_cached_keys;
    if (k == NULL || k->dk_kind != DICT_KEYS_SPLIT)
        return -1;
    PyDictUnicodeEntry *entries = DK_UNICODE_ENTRIES(k);
    for (Py_ssize_t i = 0; i < k->dk_nentries; i++) {
        PyObject *key = entries[i].me_key;
        if (key == name || (key != NULL && PyUnicode_Compare(key, name) == 0)) {
            *keys = k;
            return i;
        }
    }
    PyErr_Clear();
    return -1;
}

/* The instance attribute at `index` of obj's inline values: a borrowed
 * reference, or NULL when the values are not where it is (a dict took them
 * over) or it is not set.  LOAD_ATTR_INSTANCE_VALUE's reads and guards. */
static inline PyObject *
inline_value(PyObject *obj, PyTypeObject *t, Py_ssize_t index)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyDictValues *values = _PyObject_InlineValues(obj);
    if (!values->valid || index >= values->capacity)
        return NULL;
    return values->values[index];
#else
    char *dv = ((char **)obj)[-3];          /* _PyObject_DictOrValuesPointer */
    if (!((uintptr_t)dv & 1))               /* a dict, not values */
        return NULL;
    return ((PyDictValues *)(dv + 1))->values[index];
#endif
}

typedef struct {
    int is_item;                /* [key], else .key */
    PyObject *key;              /* borrowed from the specs */
    AttrCache cache;
} Step;

typedef struct {
    int root;                   /* R_* */
    int argn;                   /* R_ARG: 1-based */
    PyObject *name;             /* R_LOCAL: the local; R_GLOBAL: the global */
    PyObject *module;           /* R_GLOBAL: its module's name */
    PyObject *imm;              /* R_IMM: the value */
    int nsteps;
    Step *steps;
    int conv, bits, is_signed;
    int shape;                  /* S_*: the common cases, taken inline */
} Fetch;

enum { S_OTHER, S_LOCAL, S_LOCAL_ATTR };    /* a raw local; a raw local's attribute */

typedef struct {
    int field, op, negate;
    long long num;
    PyObject *str;
} Pred;

typedef struct {
    PyObject_HEAD
    uint64_t ring_tstate;       /* as a recorder Tramp: the thread whose ring is cached */
    PyObject *ring;
    PyObject *event, *local, *attach, *onoff, *snapshot, *fault, *slow;
    PyObject *specs;            /* as given; None: every hit takes the Python path */
    PyObject *filter_slow;      /* the Python filter, matches(values); None: no filter */
    PyObject *filter_spec;      /* as given (holds the predicates' strings) */
    int nargs;
    Fetch *fetch;
    int npreds, nprog;
    Pred *preds;
    int *prog;                  /* NULL: the filter is the Python one */
    long long nhit, nmissed;
} ProbeTrace;

static PyTypeObject ProbeTraceType;
static PyObject *make(int, int, int, PyObject *, PyObject *, PyObject *, PyObject *);

/* -- the hot path */

/* The running function's interpreter frame (frame 0: no Python frame sits
 * between a sys.monitoring callback and the function it reports on). */
static inline _PyInterpreterFrame *
current_frame(PyThreadState *ts)
{
#if PY_VERSION_HEX >= 0x030D0000
    return ts->current_frame;
#else
    return ts->cframe->current_frame;
#endif
}

static inline PyObject *
frame_code(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030D0000
    return f->f_executable;
#else
    return (PyObject *)f->f_code;
#endif
}

/* The common case of fetch_attr, inlined in the hot path: an instance
 * attribute of a type seen before, read from the object's inline values.
 * NULL when it is not that case (fetch_attr then does the rest).  A cache
 * entry exists only for a type whose attribute access is the generic one,
 * and any change to the type gives it a new version tag. */
static Py_ALWAYS_INLINE inline PyObject *
fetch_attr_cached(PyObject *obj, AttrCache *cache)
{
    PyTypeObject *t = Py_TYPE(obj);
    PyObject *descr = cache->descr;
    if (cache->type != t || cache->version == 0 || cache->version != t->tp_version_tag
        || cache->index < 0 || ((PyHeapTypeObject *)t)->ht_cached_keys != cache->keys
        || (descr != NULL && (Py_TYPE(descr)->tp_descr_get != NULL
                              || Py_TYPE(descr)->tp_descr_set != NULL)))
        return NULL;
    return inline_value(obj, t, cache->index);
}

/* fetch.get_attr: `obj.name` from storage only.  Types that hook attribute
 * access, and non-data descriptors on the class (methods), go to Python. */
static inline int
fetch_attr(PyObject *obj, PyObject *name, AttrCache *cache, PyObject **out)
{
    PyTypeObject *t = Py_TYPE(obj);
    PyObject *v, *descr;
    if (t == &PyModule_Type) {
        PyObject *d = PyModule_GetDict(obj);
        v = d ? PyDict_GetItemWithError(d, name) : NULL;
        if (v == NULL) {
            PyErr_Clear();
            return FETCH_FAULT;
        }
        *out = Py_NewRef(v);
        return FETCH_OK;
    }
    if (t->tp_getattro != PyObject_GenericGetAttr)
        return FETCH_BAIL;
    if (cache->type == t && cache->version != 0 && cache->version == t->tp_version_tag) {
        descr = cache->descr;
        if (cache->index >= 0 && ((PyHeapTypeObject *)t)->ht_cached_keys == cache->keys
            && (descr == NULL || (Py_TYPE(descr)->tp_descr_get == NULL
                                  && Py_TYPE(descr)->tp_descr_set == NULL))
            && (v = inline_value(obj, t, cache->index)) != NULL) {
            *out = Py_NewRef(v);                         /* the instance's own: it wins */
            return FETCH_OK;
        }
    } else {
        descr = _PyType_Lookup(t, name);                 /* borrowed: the MRO walk */
        cache->type = t;
#if PY_VERSION_HEX >= 0x030D0000
        cache->version = t->tp_version_tag;             /* 0: none (3.13 has no flag for it) */
#else
        cache->version = t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG ? t->tp_version_tag : 0;
#endif
        cache->descr = descr;
        cache->index = shared_index(t, name, &cache->keys);
    }
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {   /* a slot */
        v = PyMemberDescr_Type.tp_descr_get(descr, obj, (PyObject *)t);
        if (v == NULL) {
            PyErr_Clear();
            return FETCH_FAULT;
        }
        *out = v;
        return FETCH_OK;
    }
    if (descr != NULL && Py_TYPE(descr)->tp_descr_set != NULL) {     /* a data descriptor */
        if (Py_TYPE(descr)->tp_descr_get != NULL)
            return FETCH_FAULT;                          /* a property: user code */
        *out = Py_NewRef(descr);
        return FETCH_OK;
    }
    if (descr != NULL && Py_TYPE(descr)->tp_descr_get != NULL)
        return FETCH_BAIL;                               /* a method: only the instance dict counts */
    /* No descriptor: the instance dict (not materialised), else the plain class attribute. */
    v = _PyObject_GenericGetAttrWithDict(obj, name, NULL, 1);
    if (v == NULL) {
        PyErr_Clear();
        return FETCH_FAULT;
    }
    *out = v;
    return FETCH_OK;
}

/* fetch.get_item: `obj[key]` for builtin containers (their own storage). */
static int
fetch_item(PyObject *obj, PyObject *key, PyObject **out)
{
    PyObject *v;
    if (PyDict_Check(obj)) {
        v = PyDict_GetItemWithError(obj, key);
        if (v == NULL) {
            PyErr_Clear();
            return FETCH_FAULT;
        }
        *out = Py_NewRef(v);
        return FETCH_OK;
    }
    if (!PyLong_CheckExact(key))
        return FETCH_FAULT;
    Py_ssize_t i = PyLong_AsSsize_t(key), n;
    if (i == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return FETCH_FAULT;                              /* IndexError, as in Python */
    }
    if (PyList_Check(obj))
        n = PyList_GET_SIZE(obj);
    else if (PyTuple_Check(obj))
        n = PyTuple_GET_SIZE(obj);
    else if (PyUnicode_Check(obj))
        n = PyUnicode_GET_LENGTH(obj);
    else if (PyBytes_Check(obj))
        n = PyBytes_GET_SIZE(obj);
    else
        return FETCH_FAULT;
    if (i < 0)
        i += n;
    if (i < 0 || i >= n)
        return FETCH_FAULT;
    if (PyList_Check(obj))
        v = Py_NewRef(PyList_GET_ITEM(obj, i));
    else if (PyTuple_Check(obj))
        v = Py_NewRef(PyTuple_GET_ITEM(obj, i));
    else if (PyUnicode_Check(obj))
        v = PyUnicode_FromOrdinal(PyUnicode_READ_CHAR(obj, i));
    else
        v = PyLong_FromLong((unsigned char)PyBytes_AS_STRING(obj)[i]);
    if (v == NULL) {
        PyErr_Clear();
        return FETCH_FAULT;
    }
    *out = v;
    return FETCH_OK;
}

/* fetch.snapshot's immutable types: stored as they are. */
static inline int
is_raw(PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    return t == &PyLong_Type || t == &PyUnicode_Type || t == &PyFloat_Type || v == Py_None
        || t == &PyBool_Type || t == &PyBytes_Type || t == &PyComplex_Type || t == &PyCode_Type;
}

/* fetch.convert / fetch.snapshot of v, into a cell: exact ints that fit and
 * floats unboxed, anything else a new reference.  v is released if owned. */
static inline int
convert(ProbeTrace *p, Fetch *fs, PyObject *v, int owned, Cell *cell, int *tag)
{
    PyObject *r = NULL;
    int result = FETCH_OK;
    switch (fs->conv) {
    case V_RAW:
        if (PyLong_CheckExact(v)) {
            int overflow = 0;
            cell->i = PyUnstable_Long_IsCompact((PyLongObject *)v)
                      ? (long long)PyUnstable_Long_CompactValue((PyLongObject *)v)
                      : PyLong_AsLongLongAndOverflow(v, &overflow);
            *tag = T_INT;
            if (overflow)
                r = Py_NewRef(v);
        } else if (PyFloat_CheckExact(v)) {
            cell->d = PyFloat_AS_DOUBLE(v);
            *tag = T_FLOAT;
        } else if (is_raw(v)) {
            r = Py_NewRef(v);
        } else {
            r = PyObject_CallOneArg(p->snapshot, v);    /* the bounded safe repr: no user code */
            if (r == NULL)
                result = FETCH_FAULT;
        }
        break;
    case V_INT: {
        if (!PyLong_Check(v)) {
            result = FETCH_FAULT;
            break;
        }
        unsigned long long u = PyLong_AsUnsignedLongLongMask(v);    /* two's complement, mod 2**64 */
        if (fs->bits < 64)
            u &= (1ULL << fs->bits) - 1;
        if (fs->is_signed && fs->bits < 64 && (u >> (fs->bits - 1))) {
            cell->i = (long long)u - (long long)(1ULL << fs->bits);
            *tag = T_INT;
        } else if (fs->is_signed) {
            cell->i = (long long)u;
            *tag = T_INT;
        } else {
            cell->u = u;
            *tag = T_UINT;
        }
        break;
    }
    default:        /* V_STRING */
        if (PyBytes_CheckExact(v))
            r = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), "backslashreplace");
        else if (PyUnicode_CheckExact(v))
            r = Py_NewRef(v);
        else if (PyUnicode_Check(v))
            r = PyUnicode_FromObject(v);            /* str.__str__: a plain copy */
        else
            result = FETCH_FAULT;
        if (r == NULL && result == FETCH_OK)
            result = FETCH_FAULT;
    }
    if (owned)
        Py_DECREF(v);
    if (r != NULL) {
        cell->obj = r;
        *tag = T_OBJ;
    }
    if (result != FETCH_OK)
        PyErr_Clear();
    return result;
}
static inline int
fetch_arg(ProbeTrace *p, Fetch *fs, int slot, _PyInterpreterFrame *f, PyObject *retval,
          Cell *cell, int *tag)
{
    PyObject *v;
    int r, owned = 1;
    if (fs->root == R_LOCAL || fs->root == R_ARG) {
        v = f->localsplus[slot];
        if (v == NULL)
            return FETCH_FAULT;                          /* unbound */
        owned = 0;          /* borrowed from the frame: nothing here runs Python code */
    } else if (fs->root == R_IMM) {
        v = fs->imm;
        owned = 0;
    } else if (fs->root == R_RETVAL) {
        if (retval == NULL)
            return FETCH_FAULT;                          /* left by an exception */
        v = retval;
        owned = 0;
    } else {                                             /* R_GLOBAL: sys.modules[MOD].NAME */
        PyObject *mods = PySys_GetObject("modules");
        if (mods == NULL || !PyDict_Check(mods))
            return FETCH_BAIL;
        PyObject *m = PyDict_GetItemWithError(mods, fs->module);
        if (m == NULL || m == Py_None) {
            PyErr_Clear();
            return FETCH_FAULT;
        }
        AttrCache none = {NULL, 0, NULL};
        if ((r = fetch_attr(m, fs->name, &none, &v)) != FETCH_OK)
            return r;
    }
    for (int i = 0; i < fs->nsteps; i++) {
        Step *step = &fs->steps[i];
        PyObject *next = NULL;
        if (!step->is_item && (next = fetch_attr_cached(v, &step->cache)) != NULL) {
            Py_INCREF(next);
            r = FETCH_OK;
        } else {
            r = step->is_item ? fetch_item(v, step->key, &next)
                              : fetch_attr(v, step->key, &step->cache, &next);
        }
        if (owned)
            Py_DECREF(v);
        if (r != FETCH_OK)
            return r;
        v = next;
        owned = 1;
    }
    return convert(p, fs, v, owned, cell, tag);
}

/* One predicate on one value: 1 or 0, or -1 when the Python filter must say. */
static inline int
pred_eval(Pred *pr, Cell *cell, int tag)
{
    int r;
    if (pr->op <= P_AND) {
        long long x;
        if (tag == T_INT) {
            x = cell->i;
        } else if (tag == T_UINT) {
            if (cell->u > (unsigned long long)LLONG_MAX)
                return -1;
            x = (long long)cell->u;
        } else if (tag == T_OBJ && PyLong_Check(cell->obj)) {
            int overflow;
            x = PyLong_AsLongLongAndOverflow(cell->obj, &overflow);
            if (overflow)
                return -1;
        } else {
            return 0;                                    /* a number field needs an int */
        }
        switch (pr->op) {
        case P_EQ: return x == pr->num;
        case P_NE: return x != pr->num;
        case P_LT: return x < pr->num;
        case P_LE: return x <= pr->num;
        case P_GT: return x > pr->num;
        case P_GE: return x >= pr->num;
        default: return (x & pr->num) != 0;
        }
    }
    if (tag != T_OBJ || !PyUnicode_Check(cell->obj))  /* a string field needs a str */
        return 0;
    PyObject *v = cell->obj;
    switch (pr->op) {
    case S_EQ: r = PyUnicode_Compare(v, pr->str) == 0; break;
    case S_PREFIX: r = PyUnicode_Tailmatch(v, pr->str, 0, PY_SSIZE_T_MAX, -1); break;
    case S_SUFFIX: r = PyUnicode_Tailmatch(v, pr->str, 0, PY_SSIZE_T_MAX, 1); break;
    default: r = PyUnicode_Contains(v, pr->str);
    }
    if (r < 0 || PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return pr->negate ? !r : r;
}
static int
filter_eval(ProbeTrace *p, Cell *cells, int *tags)
{
    char stack[FILTER_MAX_STACK];
    int sp = 0;
    for (int k = 0; k < p->nprog; k++) {
        int c = p->prog[k];
        if (c >= 0) {
            int field = p->preds[c].field;
            int r = pred_eval(&p->preds[c], &cells[field], tags[field]);
            if (r < 0)
                return -1;
            stack[sp++] = (char)r;
        } else if (c == I_NOT) {
            stack[sp - 1] = !stack[sp - 1];
        } else {
            sp--;
            stack[sp - 1] = c == I_AND ? (stack[sp - 1] && stack[sp]) : (stack[sp - 1] || stack[sp]);
        }
    }
    return stack[0];
}

/* The calling thread's Ring, cached with its thread state's id. */
static inline Ring *
probe_ring(ProbeTrace *p, PyThreadState *ts)
{
    uint64_t id = ts->id;
    if (p->ring != NULL && p->ring_tstate == id)
        return (Ring *)Py_NewRef(p->ring);
    PyObject *tb = thread_buffer(p->local, p->attach);
    if (tb != NULL && !PyObject_TypeCheck(tb, &RingType)) {
        PyErr_SetString(PyExc_TypeError, "fentry: thread buffer is not a Ring");
        Py_CLEAR(tb);
    }
    if (tb != NULL) {
        Py_XSETREF(p->ring, Py_NewRef(tb));
        p->ring_tstate = id;
    }
    return (Ring *)tb;
}

/* The Python path does the whole hit, counting included: slow(frame) at an
 * entry, offset or line; slow(frame, value, raised) at a return (PY_RETURN's
 * value, or PY_UNWIND's exception). */
static PyObject *
probe_slow(ProbeTrace *p, Tramp *t, PyObject *value)
{
    PyObject *frame = (PyObject *)PyEval_GetFrame();     /* borrowed: the probed frame */
    if (frame == NULL)
        Py_RETURN_NONE;
    if (t->kind == K_PROBE)
        return PyObject_CallOneArg(p->slow, frame);
    PyObject *argv[3] = {frame, value, t->flag ? Py_True : Py_False};
    return PyObject_Vectorcall(p->slow, argv, 3, NULL);
}

/* A return's (event, site): site is (caller code, call offset, code, the
 * exception's type name or None), or (None, 0, code, ...) with no caller. */
static PyObject *
exit_head(ProbeTrace *p, PyObject *code, PyObject *exc)
{
    _PyInterpreterFrame *cf = caller_frame();
    PyObject *ccode = NULL, *off = NULL, *raised = NULL, *site = NULL, *head = NULL;
    if (cf != NULL) {
        ccode = PyUnstable_InterpreterFrame_GetCode(cf);
        off = PyLong_FromLong(call_site(ccode, PyUnstable_InterpreterFrame_GetLasti(cf)));
    } else {
        ccode = Py_NewRef(Py_None);
        off = PyLong_FromLong(0);
    }
    raised = exc != NULL ? PyType_GetName(Py_TYPE(exc)) : Py_NewRef(Py_None);
    if (ccode && off && raised)
        site = PyTuple_Pack(4, ccode, off, code, raised);
    if (site)
        head = PyTuple_Pack(2, p->event, site);
    Py_XDECREF(ccode); Py_XDECREF(off); Py_XDECREF(raised); Py_XDECREF(site);
    return head;
}
/* A tuple of the values, for the Python filter. */
static PyObject *
values_tuple(Cell *cells, int *tags, int n)
{
    PyObject *values = PyTuple_New(n);
    for (int i = 0; values && i < n; i++) {
        PyObject *v;
        switch (tags[i]) {
        case T_INT: v = PyLong_FromLongLong(cells[i].i); break;
        case T_UINT: v = PyLong_FromUnsignedLongLong(cells[i].u); break;
        case T_FLOAT: v = PyFloat_FromDouble(cells[i].d); break;
        default: v = Py_NewRef(cells[i].obj);
        }
        if (v == NULL)
            Py_CLEAR(values);
        else
            PyTuple_SET_ITEM(values, i, v);
    }
    return values;
}
static inline void
drop(Cell *cells, int *tags, int n)
{
    for (int i = 0; i < n; i++)
        if (tags[i] == T_OBJ)
            Py_DECREF(cells[i].obj);
}
static PyObject *
probe_call(Tramp *t, PyObject *const *args, Py_ssize_t nargs)   /* hot path: fetch, count, filter, record */
{
    ProbeTrace *p = (ProbeTrace *)t->a;
    PyObject *code = args[0];
    /* a return: PY_RETURN's value, or PY_UNWIND's exception ($retval a fault) */
    PyObject *value = t->kind == K_PROBE_EXIT && nargs > 2 ? args[2] : NULL;
    PyObject *retval = t->flag ? NULL : value;
    PyThreadState *ts = PyThreadState_Get();
    _PyInterpreterFrame *f = current_frame(ts);
    if (t->slots == NULL || f == NULL || frame_code(f) != code)
        return probe_slow(p, t, value);
    Cell cells[PROBE_MAX_ARGS];
    int tags[PROBE_MAX_ARGS];
    int n = p->nargs, faulted = 0;
    for (int i = 0; i < n; i++) {
        Fetch *fs = &p->fetch[i];
        if (fs->shape != S_OTHER) {             /* x, or x.attr from inline values */
            PyObject *v = f->localsplus[t->slots[i]];
            if (v != NULL && fs->shape == S_LOCAL_ATTR)
                v = fetch_attr_cached(v, &fs->steps[0].cache);
            if (v != NULL && PyLong_CheckExact(v) && PyUnstable_Long_IsCompact((PyLongObject *)v)) {
                cells[i].i = (long long)PyUnstable_Long_CompactValue((PyLongObject *)v);
                tags[i] = T_INT;
                continue;
            }
        }
        int r = fetch_arg(p, fs, t->slots[i], f, retval, &cells[i], &tags[i]);
        if (r == FETCH_BAIL) {
            drop(cells, tags, i);
            return probe_slow(p, t, value);
        }
        if (r == FETCH_FAULT) {
            cells[i].obj = Py_NewRef(p->fault);
            tags[i] = T_OBJ;
            faulted = 1;
        }
    }
    p->nhit++;
    p->nmissed += faulted;
    if (!((Switch *)p->onoff)->on) {                     /* tracing_on 0 */
        drop(cells, tags, n);
        Py_RETURN_NONE;
    }
    if (p->filter_slow != Py_None) {
        int keep = p->prog != NULL ? filter_eval(p, cells, tags) : -1;
        if (keep < 0) {                                  /* the Python filter decides */
            PyObject *values = values_tuple(cells, tags, n), *r = NULL;
            if (values != NULL)
                r = PyObject_CallOneArg(p->filter_slow, values);
            keep = r == NULL ? -1 : PyObject_IsTrue(r);
            Py_XDECREF(r);
            Py_XDECREF(values);
            if (keep < 0)
                return drop(cells, tags, n), NULL;
        }
        if (!keep) {                                     /* filtered out: nothing written */
            drop(cells, tags, n);
            Py_RETURN_NONE;
        }
    }
    /* An entry's (event, site) is made once per code; a return's per hit. */
    PyObject *head = t->kind == K_PROBE ? Py_NewRef(t->b) : exit_head(p, code, t->flag ? value : NULL);
    Ring *ring = head != NULL ? probe_ring(p, ts) : NULL;
    if (ring == NULL) {
        Py_XDECREF(head);
        return drop(cells, tags, n), NULL;
    }
    ring_write_event(ring, head, cells, tags, n);
    Py_DECREF(ring);
    Py_RETURN_NONE;
}

/* -- building one */

static void
probe_free_compiled(ProbeTrace *p)
{
    for (int i = 0; p->fetch != NULL && i < p->nargs; i++)
        PyMem_Free(p->fetch[i].steps);
    PyMem_Free(p->fetch);
    PyMem_Free(p->preds);
    PyMem_Free(p->prog);
    p->fetch = NULL;
    p->preds = NULL;
    p->prog = NULL;
    p->nargs = p->npreds = p->nprog = 0;
}

/* specs: per fetcharg (kind, root, path, type), kind "local" (root: name),
 * "arg" (root: N), "imm" (root: the value) or "global" (root: (MOD, NAME));
 * path: ((op, key), ...), op "attr" or "item"; type None, "u8".."x64" or "string". */
static int
probe_compile(ProbeTrace *p, PyObject *specs)
{
    if (specs == Py_None)
        return 0;
    if (!PyTuple_Check(specs) || PyTuple_GET_SIZE(specs) > PROBE_MAX_ARGS) {
        PyErr_SetString(PyExc_ValueError, "ProbeTrace: specs must be a tuple of at most PROBE_MAX_ARGS");
        return -1;
    }
    int n = (int)PyTuple_GET_SIZE(specs);
    p->fetch = PyMem_Calloc(n ? n : 1, sizeof(Fetch));
    if (p->fetch == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->nargs = n;
    for (int i = 0; i < n; i++) {
        Fetch *fs = &p->fetch[i];
        const char *kind, *type = NULL;
        PyObject *root, *path, *typeobj;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(specs, i), "sOO!O", &kind, &root, &PyTuple_Type, &path, &typeobj))
            return -1;
        if (typeobj != Py_None && !(type = PyUnicode_AsUTF8(typeobj)))
            return -1;
        if (strcmp(kind, "local") == 0 && PyUnicode_Check(root)) {
            fs->root = R_LOCAL;
            fs->name = root;
        } else if (strcmp(kind, "arg") == 0 && PyLong_Check(root)) {
            fs->root = R_ARG;
            fs->argn = (int)PyLong_AsLong(root);
        } else if (strcmp(kind, "imm") == 0) {
            fs->root = R_IMM;
            fs->imm = root;
        } else if (strcmp(kind, "retval") == 0) {
            fs->root = R_RETVAL;
        } else if (strcmp(kind, "global") == 0 && PyTuple_Check(root) && PyTuple_GET_SIZE(root) == 2) {
            fs->root = R_GLOBAL;
            fs->module = PyTuple_GET_ITEM(root, 0);
            fs->name = PyTuple_GET_ITEM(root, 1);
        } else {
            PyErr_Format(PyExc_ValueError, "ProbeTrace: fetcharg kind %s not known here", kind);
            return -1;
        }
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(path); j++) {
            PyObject *step = PyTuple_GET_ITEM(path, j);
            if (!PyTuple_Check(step) || PyTuple_GET_SIZE(step) != 2
                || (PyTuple_GET_ITEM(step, 0) != Py_True && PyTuple_GET_ITEM(step, 0) != Py_False)) {
                PyErr_SetString(PyExc_ValueError, "ProbeTrace: a path step is (is_item, key)");
                return -1;
            }
            if (PyTuple_GET_ITEM(step, 0) == Py_False && !PyUnicode_CheckExact(PyTuple_GET_ITEM(step, 1))) {
                PyErr_SetString(PyExc_ValueError, "ProbeTrace: an attribute name is a str");
                return -1;
            }
        }
        fs->nsteps = (int)PyTuple_GET_SIZE(path);
        if (!(fs->steps = PyMem_Calloc(fs->nsteps + 1, sizeof(Step)))) {
            PyErr_NoMemory();
            return -1;
        }
        for (int j = 0; j < fs->nsteps; j++) {      /* held by specs */
            fs->steps[j].is_item = PyTuple_GET_ITEM(PyTuple_GET_ITEM(path, j), 0) == Py_True;
            fs->steps[j].key = PyTuple_GET_ITEM(PyTuple_GET_ITEM(path, j), 1);
        }
        if (type == NULL) {
            fs->conv = V_RAW;
        } else if (strcmp(type, "string") == 0) {
            fs->conv = V_STRING;
        } else if (strchr("usx", type[0]) && (fs->bits = atoi(type + 1)) > 0 && fs->bits <= 64
                   && (fs->bits & (fs->bits - 1)) == 0 && fs->bits >= 8) {
            fs->conv = V_INT;
            fs->is_signed = type[0] == 's';
        } else {
            PyErr_Format(PyExc_ValueError, "ProbeTrace: type %s not known here", type);
            return -1;
        }
        if ((fs->root == R_LOCAL || fs->root == R_ARG) && fs->conv == V_RAW)
            fs->shape = fs->nsteps == 0 ? S_LOCAL
                      : fs->nsteps == 1 && !fs->steps[0].is_item ? S_LOCAL_ATTR : S_OTHER;
    }
    return 0;
}

static PyObject *
probe_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"event", "specs", "local", "attach", "switch", "snapshot", "fault",
                             "slow", NULL};
    PyObject *event, *specs, *local, *attach, *onoff, *snapshot, *fault, *slow;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO!OOO", kwlist, &event, &specs, &local,
                                     &attach, &SwitchType, &onoff, &snapshot, &fault, &slow))
        return NULL;
    ProbeTrace *p = (ProbeTrace *)type->tp_alloc(type, 0);
    if (p == NULL)
        return NULL;
    p->event = Py_NewRef(event);
    p->specs = Py_NewRef(specs);
    p->local = Py_NewRef(local);
    p->attach = Py_NewRef(attach);
    p->onoff = Py_NewRef(onoff);
    p->snapshot = Py_NewRef(snapshot);
    p->fault = Py_NewRef(fault);
    p->slow = Py_NewRef(slow);
    p->filter_slow = Py_NewRef(Py_None);
    p->filter_spec = Py_NewRef(Py_None);
    if (probe_compile(p, specs) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    return (PyObject *)p;
}

/* set_filter(program, matches): matches(values) is the Python filter (None:
 * no filter); program, when not None, the same filter for the C path:
 * (preds, code), preds ((field index, op, operand, negate), ...) with op one
 * of == != < <= > >= & (an int operand) or eq prefix suffix in (a str one),
 * code the postfix program: a pred's index, -1 not, -2 and, -3 or. */
static PyObject *
probe_set_filter(ProbeTrace *p, PyObject *args)
{
    static const char *ops[] = {"==", "!=", "<", "<=", ">", ">=", "&", "eq", "prefix", "suffix", "in"};
    PyObject *program, *matches;
    if (!PyArg_ParseTuple(args, "OO", &program, &matches))
        return NULL;
    PyMem_Free(p->preds);
    PyMem_Free(p->prog);
    p->preds = NULL;
    p->prog = NULL;
    p->npreds = p->nprog = 0;
    Py_SETREF(p->filter_slow, Py_NewRef(matches));
    Py_SETREF(p->filter_spec, Py_NewRef(program));
    if (program == Py_None || matches == Py_None)
        Py_RETURN_NONE;
    PyObject *preds, *code;
    if (!PyArg_ParseTuple(program, "O!O!", &PyTuple_Type, &preds, &PyTuple_Type, &code))
        return NULL;
    int np = (int)PyTuple_GET_SIZE(preds), nc = (int)PyTuple_GET_SIZE(code);
    Pred *pv = PyMem_Calloc(np ? np : 1, sizeof(Pred));
    int *prog = PyMem_Calloc(nc ? nc : 1, sizeof(int));
    if (pv == NULL || prog == NULL)
        goto nomem;
    for (int i = 0; i < np; i++) {
        const char *op;
        PyObject *operand;
        int field, negate;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(preds, i), "isOp", &field, &op, &operand, &negate))
            goto fail;
        int k = 0;
        while (k < 11 && strcmp(op, ops[k]) != 0)
            k++;
        if (k == 11 || field < 0 || field >= p->nargs
            || (k <= P_AND ? !PyLong_CheckExact(operand) : !PyUnicode_CheckExact(operand))) {
            PyErr_Format(PyExc_ValueError, "ProbeTrace: bad filter predicate %d", i);
            goto fail;
        }
        pv[i].field = field;
        pv[i].op = k;
        pv[i].negate = negate;
        if (k <= P_AND) {
            pv[i].num = PyLong_AsLongLong(operand);
            if (pv[i].num == -1 && PyErr_Occurred())
                goto fail;
        } else {
            pv[i].str = operand;        /* held by filter_spec */
        }
    }
    int depth = 0;
    for (int i = 0; i < nc; i++) {
        int c = (int)PyLong_AsLong(PyTuple_GET_ITEM(code, i));
        if (c == -1 && PyErr_Occurred())
            goto fail;
        if (c >= np || c < I_OR || (c >= 0 ? depth >= FILTER_MAX_STACK : depth < (c == I_NOT ? 1 : 2))) {
            /* too deep for the C stack (or malformed): the Python filter does it */
            PyErr_Clear();
            PyMem_Free(pv);
            PyMem_Free(prog);
            Py_RETURN_NONE;
        }
        depth += c >= 0 ? 1 : c == I_NOT ? 0 : -1;
        prog[i] = c;
    }
    if (depth != 1) {
        PyMem_Free(pv);
        PyMem_Free(prog);
        Py_RETURN_NONE;
    }
    p->preds = pv;
    p->npreds = np;
    p->prog = prog;
    p->nprog = nc;
    Py_RETURN_NONE;
nomem:
    PyErr_NoMemory();
fail:
    PyMem_Free(pv);
    PyMem_Free(prog);
    return NULL;
}

/* entry(code, offset, depth): the handler of this probe at (code, offset),
 * for PY_START (offset 0) or INSTRUCTION.  Each fetcharg's fast-locals index
 * is found here, once per code; a code whose locals the C path cannot read
 * as frame.f_locals does (a cell or free variable, a hidden comprehension
 * local, a name it does not have, not a function) takes the Python path. */
static PyObject *
probe_handler(ProbeTrace *p, PyObject *code, int kind, int raised, PyObject *head)
{
    Tramp *t = (Tramp *)make(kind, kind == K_PROBE ? 2 : 3, raised, (PyObject *)p, head, NULL, NULL);
    if (t == NULL || p->specs == Py_None)
        return (PyObject *)t;
    PyCodeObject *co = (PyCodeObject *)code;
    if (!(co->co_flags & CO_OPTIMIZED))
        return (PyObject *)t;
    int *slots = PyMem_Calloc(p->nargs ? p->nargs : 1, sizeof(int));
    if (slots == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    PyObject *names = co->co_localsplusnames;
    const char *kinds = PyBytes_AS_STRING(co->co_localspluskinds);
    int nparams = co->co_argcount + co->co_kwonlyargcount
                  + !!(co->co_flags & CO_VARARGS) + !!(co->co_flags & CO_VARKEYWORDS);
    for (int i = 0; i < p->nargs; i++) {
        Fetch *fs = &p->fetch[i];
        int j = -1;
        if (fs->root == R_ARG) {
            j = fs->argn >= 1 && fs->argn <= nparams ? fs->argn - 1 : -1;
        } else if (fs->root == R_LOCAL) {
            for (int k = 0; k < co->co_nlocalsplus; k++) {
                int eq = PyUnicode_Compare(PyTuple_GET_ITEM(names, k), fs->name) == 0;
                if (eq) {
                    j = k;
                    break;
                }
            }
        } else {
            slots[i] = -1;
            continue;
        }
        if (j < 0 || (kinds[j] & 0xff) != 0x20 /* CO_FAST_LOCAL only */) {
            PyMem_Free(slots);
            PyErr_Clear();
            return (PyObject *)t;
        }
        slots[i] = j;
    }
    t->slots = slots;
    return (PyObject *)t;
}

static PyObject *
probe_entry(ProbeTrace *p, PyObject *args)
{
    PyObject *code, *offset;
    int depth;
    if (!PyArg_ParseTuple(args, "O!Oi", &PyCode_Type, &code, &offset, &depth))
        return NULL;
    PyObject *site = PyTuple_Pack(2, code, offset);
    PyObject *head = site ? PyTuple_Pack(2, p->event, site) : NULL;
    Py_XDECREF(site);
    if (head == NULL)
        return NULL;
    PyObject *h = probe_handler(p, code, K_PROBE, 0, head);
    Py_DECREF(head);
    return h;
}

/* exit(code, depth, raised): the handler of this return probe on code, for
 * PY_RETURN (raised false) or PY_UNWIND (raised true). */
static PyObject *
probe_exit(ProbeTrace *p, PyObject *args)
{
    PyObject *code;
    int depth, raised;
    if (!PyArg_ParseTuple(args, "O!ip", &PyCode_Type, &code, &depth, &raised))
        return NULL;
    return probe_handler(p, code, K_PROBE_EXIT, raised, NULL);
}

/* start(code, depth): a return probe's PY_START handler, which has nothing
 * to do (the return does it all) but keeps the code known to ftrace. */
static PyObject *
probe_start(ProbeTrace *p, PyObject *args)
{
    return make(K_NOP, 2, 0, NULL, NULL, NULL, NULL);
}

/* As a pre_handler(kp, regs): the Python path. */
static PyObject *
probe_tp_call(ProbeTrace *p, PyObject *args, PyObject *kwds)
{
    PyObject *kp, *regs;
    if (!PyArg_ParseTuple(args, "OO", &kp, &regs))
        return NULL;
    return PyObject_CallOneArg(p->slow, regs);
}

static int
probe_traverse(ProbeTrace *p, visitproc visit, void *arg)
{
    Py_VISIT(p->ring); Py_VISIT(p->event); Py_VISIT(p->local); Py_VISIT(p->attach);
    Py_VISIT(p->onoff); Py_VISIT(p->snapshot); Py_VISIT(p->fault); Py_VISIT(p->slow);
    Py_VISIT(p->specs); Py_VISIT(p->filter_slow); Py_VISIT(p->filter_spec);
    return 0;
}

static int
probe_clear(ProbeTrace *p)
{
    probe_free_compiled(p);     /* they borrow from specs and filter_spec */
    Py_CLEAR(p->ring); Py_CLEAR(p->event); Py_CLEAR(p->local); Py_CLEAR(p->attach);
    Py_CLEAR(p->onoff); Py_CLEAR(p->snapshot); Py_CLEAR(p->fault); Py_CLEAR(p->slow);
    Py_CLEAR(p->specs); Py_CLEAR(p->filter_slow); Py_CLEAR(p->filter_spec);
    return 0;
}

static void
probe_dealloc(ProbeTrace *p)
{
    PyObject_GC_UnTrack(p);
    probe_clear(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyMemberDef probe_members[] = {
    {"nhit", Py_T_LONGLONG, offsetof(ProbeTrace, nhit), Py_READONLY, "hits taken in C"},
    {"nmissed", Py_T_LONGLONG, offsetof(ProbeTrace, nmissed), Py_READONLY,
     "hits taken in C where a fetch faulted"},
    {"event", Py_T_OBJECT_EX, offsetof(ProbeTrace, event), Py_READONLY, "the probe event"},
    {NULL}
};

static PyMethodDef probe_methods[] = {
    {"entry", (PyCFunction)probe_entry, METH_VARARGS,
     "entry(code, offset, depth): the handler of the probe at (code, offset)"},
    {"exit", (PyCFunction)probe_exit, METH_VARARGS,
     "exit(code, depth, raised): the handler of the return probe on code (PY_RETURN / PY_UNWIND)"},
    {"start", (PyCFunction)probe_start, METH_VARARGS,
     "start(code, depth): a return probe's PY_START handler: nothing to do"},
    {"set_filter", (PyCFunction)probe_set_filter, METH_VARARGS,
     "set_filter(program, matches): the event's filter"},
    {NULL}
};

static PyTypeObject ProbeTraceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.ProbeTrace",
    .tp_doc = "One probe event's hit, compiled: fetch, count, filter, record.",
    .tp_basicsize = sizeof(ProbeTrace),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = probe_new,
    .tp_call = (ternaryfunc)probe_tp_call,
    .tp_traverse = (traverseproc)probe_traverse,
    .tp_clear = (inquiry)probe_clear,
    .tp_dealloc = (destructor)probe_dealloc,
    .tp_members = probe_members,
    .tp_methods = probe_methods,
};


static PyObject *
tramp_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "fentry trampolines take no keyword arguments");
        return NULL;
    }
    if (nargs < 2 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "fentry trampoline takes 2 or 3 arguments (%zd given)", nargs);
        return NULL;
    }
    switch (t->kind) {
    case K_ENTRY_DISPATCH:
    case K_OFFSET_DISPATCH:
    case K_DISPATCH: return dispatch(t, args, nargs);
    case K_LIST: return list_call(t, args, nargs);
    case K_OPS_ENTRY: return ops_entry_call(t);
    case K_FUNCTION: return function_call(t, args[0]);
    case K_GRAPH: return graph_call(t, args, nargs);
    case K_PROBE:
    case K_PROBE_EXIT: return probe_call(t, args, nargs);
    case K_NOP: Py_RETURN_NONE;
    }
    Py_RETURN_NONE;
}

static int
tramp_traverse(Tramp *t, visitproc visit, void *arg)
{
    Py_VISIT(t->a); Py_VISIT(t->b); Py_VISIT(t->c); Py_VISIT(t->d); Py_VISIT(t->ring);
    return 0;
}

static int
tramp_clear(Tramp *t)
{
    Py_CLEAR(t->a); Py_CLEAR(t->b); Py_CLEAR(t->c); Py_CLEAR(t->d); Py_CLEAR(t->ring);
    return 0;
}

static void
tramp_dealloc(Tramp *t)
{
    PyObject_GC_UnTrack(t);
    tramp_clear(t);
    PyMem_Free(t->slots);
    PyObject_GC_Del(t);
}

static PyObject *
tramp_repr(Tramp *t)
{
    static const char *names[] = {"entry_dispatcher", "dispatcher", "list_func", "ops_entry",
                                  "function_entry", "graph_event", "offset_dispatcher",
                                  "probe", "probe_exit", "nop"};
    return PyUnicode_FromFormat("<fentry C trampoline %s>", names[t->kind]);
}

static PyTypeObject TrampType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.Trampoline",
    .tp_basicsize = sizeof(Tramp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Tramp, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)tramp_traverse,
    .tp_clear = (inquiry)tramp_clear,
    .tp_dealloc = (destructor)tramp_dealloc,
    .tp_repr = (reprfunc)tramp_repr,
};

static PyObject *
make(int kind, int nargs, int flag, PyObject *a, PyObject *b, PyObject *c, PyObject *d)
{
    Tramp *t = PyObject_GC_New(Tramp, &TrampType);
    if (t == NULL)
        return NULL;
    t->vectorcall = tramp_vectorcall;
    t->kind = kind;
    t->rkind = 0;
    t->ring = NULL;
    t->ring_tstate = 0;
    t->nargs = nargs;
    t->flag = flag;
    t->slots = NULL;
    t->a = Py_XNewRef(a); t->b = Py_XNewRef(b); t->c = Py_XNewRef(c); t->d = Py_XNewRef(d);
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

/* ------------------------------------------------------------------ factories */

static PyObject *
entry_dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *discover, *fault;
    if (!PyArg_ParseTuple(args, "O!OO", &CodeTableType, &table, &discover, &fault))
        return NULL;
    return make(K_ENTRY_DISPATCH, 2, 1, table, discover, fault, NULL);
}

static PyObject *
dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *fault;
    int nargs, disable;
    if (!PyArg_ParseTuple(args, "O!Oip", &CodeTableType, &table, &fault, &nargs, &disable))
        return NULL;
    return make(K_DISPATCH, nargs, disable, table, NULL, fault, NULL);
}

static PyObject *
offset_dispatcher(PyObject *m, PyObject *args)
{
    PyObject *table, *fault;
    if (!PyArg_ParseTuple(args, "O!O", &CodeTableType, &table, &fault))
        return NULL;
    return make(K_OFFSET_DISPATCH, 2, 1, table, NULL, fault, NULL);
}

static PyObject *
list_func(PyObject *m, PyObject *args)
{
    PyObject *pairs;
    int nargs;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &pairs, &nargs))
        return NULL;
    PyObject *copy = PyList_New(0);
    if (copy == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *p = PySequence_Tuple(PyList_GET_ITEM(pairs, i));
        if (p == NULL || PyTuple_GET_SIZE(p) != 2 || PyList_Append(copy, p) < 0) {
            if (p && PyTuple_GET_SIZE(p) != 2)
                PyErr_SetString(PyExc_ValueError, "list_func: pairs must be (ops, handler)");
            Py_XDECREF(p);
            Py_DECREF(copy);
            return NULL;
        }
        Py_DECREF(p);
    }
    PyObject *r = make(K_LIST, nargs, 0, copy, NULL, NULL, NULL);
    Py_DECREF(copy);
    return r;
}

static PyObject *
ops_entry(PyObject *m, PyObject *args)
{
    PyObject *func, *ip, *ops;
    int save_regs, depth;
    if (!PyArg_ParseTuple(args, "OOOpi", &func, &ip, &ops, &save_regs, &depth))
        return NULL;
    return make(K_OPS_ENTRY, 2, save_regs, func, ip, ops, NULL);
}

static PyObject *
function_entry(PyObject *m, PyObject *args)
{
    PyObject *local, *attach;
    int depth;
    if (!PyArg_ParseTuple(args, "OOi", &local, &attach, &depth))
        return NULL;
    return make(K_FUNCTION, 2, 0, local, attach, NULL, NULL);
}

static PyObject *
graph_make(PyObject *args, int exc)
{
    PyObject *local, *attach;
    int kind, nargs = 3;    /* (the pure-Python twin needs the event's arity; this takes either) */
    if (!PyArg_ParseTuple(args, "OOi|i", &local, &attach, &kind, &nargs))
        return NULL;
    Tramp *t = (Tramp *)make(K_GRAPH, 3, exc, local, attach, NULL, NULL);
    if (t != NULL)
        t->rkind = kind;
    return (PyObject *)t;
}

static PyObject *
graph_event(PyObject *m, PyObject *args)
{
    return graph_make(args, 0);
}

static PyObject *
graph_exc_event(PyObject *m, PyObject *args)
{
    return graph_make(args, 1);
}

/* ------------------------------------------------------------------ use_tool_id
 * sys.monitoring.use_tool_id while fentry holds a tool id (arch.Monitor):
 * hook(*args) first -- fentry moves off the id asked for, if it is its own
 * and another is free -- then the function it replaced.  A builtin whose
 * __self__ is a module named sys.monitoring, as the original's is: the same
 * name, repr, signature and __module__, and no frame of fentry's in the
 * traceback of the original's ValueError.  Its state lives in the dict of
 * that module of its own, so that wrappers of wrappers never mix. */

static PyObject *s_original, *s_hook;

static PyObject *
use_tool_id_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *d = PyModule_GetDict(self);
    PyObject *original = PyDict_GetItemWithError(d, s_original);
    if (original == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "use_tool_id: lost the function it wraps");
        return NULL;
    }
    Py_INCREF(original);
    PyObject *hook = PyDict_GetItemWithError(d, s_hook);
    if (hook != NULL) {
        Py_INCREF(hook);
        PyObject *r = PyObject_Vectorcall(hook, args, nargs, NULL);
        Py_DECREF(hook);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {     /* KeyboardInterrupt: the program's */
                Py_DECREF(original);
                return NULL;
            }
            PyErr_Clear();
        }
        Py_XDECREF(r);
    }
    else if (PyErr_Occurred()) {
        Py_DECREF(original);
        return NULL;
    }
    PyObject *r = PyObject_Vectorcall(original, args, nargs, NULL);
    Py_DECREF(original);
    return r;
}

static PyMethodDef use_tool_id_def = {
    "use_tool_id", (PyCFunction)(void (*)(void))use_tool_id_call, METH_FASTCALL,
    "use_tool_id($module, tool_id, name, /)\n--\n\n",
};

static PyObject *
use_tool_id_wrapper(PyObject *m, PyObject *args)
{
    PyObject *monitoring, *original, *hook;
    if (!PyArg_ParseTuple(args, "OOO", &monitoring, &original, &hook))
        return NULL;
    PyObject *name = PyModule_Check(monitoring) ? PyModule_GetNameObject(monitoring)
                                                : PyUnicode_FromString("sys.monitoring");
    if (name == NULL)
        return NULL;
    PyObject *self = PyModule_NewObject(name), *f = NULL;
    if (self != NULL && PyDict_SetItem(PyModule_GetDict(self), s_original, original) == 0
        && PyDict_SetItem(PyModule_GetDict(self), s_hook, hook) == 0)
        f = PyCFunction_NewEx(&use_tool_id_def, self, name);
    Py_XDECREF(self);
    Py_DECREF(name);
    return f;
}

static PyMethodDef methods[] = {
    {"quiet_thread", quiet_thread, METH_O, "quiet_thread(True): ignore the calling thread's events."},
    {"quiet_until_program", quiet_until_program, METH_NOARGS,
     "quiet_until_program(): the calling thread is quiet until the interpreter starts the program."},
    {"catch_sigterm", catch_sigterm, METH_VARARGS,
     "catch_sigterm(fd, standin=0): on SIGTERM, write a byte to fd and run the Python handler of\n"
     "signal `standin` in the main thread (fd -1: the default action again)."},
    {"entry_dispatcher", entry_dispatcher, METH_VARARGS, "PY_START dispatcher: handler or discovery."},
    {"offset_dispatcher", offset_dispatcher, METH_VARARGS, "INSTRUCTION dispatcher: probed offsets only."},
    {"dispatcher", dispatcher, METH_VARARGS, "Dispatcher for any other event."},
    {"list_func", list_func, METH_VARARGS, "Calls each (ops, handler) in turn."},
    {"ops_entry", ops_entry, METH_VARARGS, "An FtraceOps entry handler."},
    {"function_entry", function_entry, METH_VARARGS, "The function tracer's entry handler."},
    {"graph_event", graph_event, METH_VARARGS, "The function_graph tracer's handler."},
    {"graph_exc_event", graph_exc_event, METH_VARARGS, "The function_graph tracer's unwind handler."},
    {"use_tool_id_wrapper", use_tool_id_wrapper, METH_VARARGS,
     "use_tool_id_wrapper(monitoring, original, hook): sys.monitoring.use_tool_id calling hook first."},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ctrampolines", "fentry's hot path in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__ctrampolines(void)
{
    PyObject *m = NULL, *sys = NULL, *mon = NULL;
    clock_init();
    if (PyType_Ready(&TrampType) < 0 || PyType_Ready(&IpType) < 0
        || PyType_Ready(&CodeTableType) < 0 || PyType_Ready(&RingType) < 0
        || PyType_Ready(&SwitchType) < 0 || PyType_Ready(&ProbeTraceType) < 0
        || PyType_Ready(&EncoderType) < 0 || PyType_Ready(&PageQueueType) < 0)
        return NULL;
    if (!(sys = PyImport_ImportModule("sys")) || !(getframe = PyObject_GetAttrString(sys, "_getframe"))
        || !(mon = PyObject_GetAttrString(sys, "monitoring"))
        || !(DISABLE = PyObject_GetAttrString(mon, "DISABLE")))
        goto fail;
    int0 = PyLong_FromLong(0);
    int1 = PyLong_FromLong(1);
    s_tb = PyUnicode_InternFromString("tb");
    s_seq = PyUnicode_InternFromString("seq");
    s_append = PyUnicode_InternFromString("append");
    s_errors = PyUnicode_InternFromString("errors");
    s_co_qualname = PyUnicode_InternFromString("co_qualname");
    s_original = PyUnicode_InternFromString("_fentry_wraps");
    s_hook = PyUnicode_InternFromString("_fentry_hook");
    if (!(m = PyModule_Create(&module)))
        goto fail;
    if (PyModule_AddObjectRef(m, "Ip", (PyObject *)&IpType) < 0
        || PyModule_AddObjectRef(m, "CodeTable", (PyObject *)&CodeTableType) < 0
        || PyModule_AddObjectRef(m, "Ring", (PyObject *)&RingType) < 0
        || PyModule_AddObjectRef(m, "Switch", (PyObject *)&SwitchType) < 0
        || PyModule_AddObjectRef(m, "ProbeTrace", (PyObject *)&ProbeTraceType) < 0
        || PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0
        || PyModule_AddObjectRef(m, "PageQueue", (PyObject *)&PageQueueType) < 0
        || PyModule_AddIntConstant(m, "PROBE_MAX_ARGS", PROBE_MAX_ARGS) < 0)
        goto fail;
    /* A Python handler called by a C dispatcher (or C list function) finds
     * the traced frame one up: no C callable adds a frame. */
    if (PyModule_AddIntConstant(m, "RECORD_BYTES", (long)sizeof(Rec)) < 0
        || PyModule_AddIntConstant(m, "DIRECT", 1) < 0 || PyModule_AddIntConstant(m, "LISTED", 1) < 0)
        goto fail;
    PyObject *all = Py_BuildValue("[sssssssssssssssssssssss]", "Ip", "CodeTable", "Ring", "Encoder",
                                  "PageQueue",
                                  "RECORD_BYTES",
                                  "Switch", "ProbeTrace", "PROBE_MAX_ARGS",
                                  "DIRECT", "LISTED", "offset_dispatcher", "catch_sigterm",
                                  "quiet_thread", "quiet_until_program", "use_tool_id_wrapper",
                                  "entry_dispatcher",
                                  "dispatcher", "list_func", "ops_entry", "function_entry",
                                  "graph_event", "graph_exc_event");
    if (all == NULL || PyModule_AddObject(m, "__all__", all) < 0)
        goto fail;
    Py_DECREF(sys);
    Py_DECREF(mon);
    return m;
fail:
    Py_XDECREF(sys); Py_XDECREF(mon); Py_XDECREF(m);
    return NULL;
}
