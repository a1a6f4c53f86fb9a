/* The function profiler (the kernel's function_profile_call and
 * profile_graph_entry / profile_graph_return): per thread, per traced
 * function, hits and times, counted in place.  Nothing is written to a ring
 * buffer and nothing is allocated per call.
 *
 * ProfileStat is one thread's table: an entry per function it ran (found by
 * the code object's address, open addressing), and the stack of its
 * activations under way.  Times are raw clock readings (clock.h), turned
 * into nanoseconds when read.  ProfHandler is the handler of one traced code
 * object: it keeps the thread and the entry it saw last, so a call in the
 * same thread as the last one looks nothing up.
 *
 * The same interface and behaviour as pytrampolines.py's ProfileStat and
 * profile_event (see there, and tracers/profile.py, for what a call is). */
#include "util.h"
#include "clock.h"

enum { P_START, P_RESUME, P_EXIT,       /* profile_event's kinds */
       G_START, G_YIELD, G_EXIT };      /* a generator's or coroutine's, with sleep-time */

/* How many generator or coroutine calls under way (suspended or running) a
 * thread follows with sleep-time: one closed while suspended fires no event
 * (3.13), so its record is never freed; when the table is full the oldest
 * call is dropped, and its later activations count as with nosleep-time. */
#define PROF_CALLS 64

typedef struct {
    PyObject *code;                     /* owned */
    long long hits;
    unsigned long long time, self;      /* raw clock ticks */
    unsigned __int128 time_sq, self_sq;
} ProfEntry;

typedef struct {
    Py_ssize_t entry;
    long long start;
    unsigned long long sub;             /* the time of the profiled calls it made */
} ProfFrame;

typedef struct {
    const void *frame;                  /* its frame's address (no reference); NULL: free */
    Py_ssize_t entry;
    long long start;                    /* its first PY_START */
    unsigned long long sub;             /* the time of the profiled calls its activations made */
    uint64_t seq;                       /* when it began: the oldest goes first */
} ProfCall;

typedef struct {
    PyObject_HEAD
    ProfEntry *entries;
    Py_ssize_t n, cap;
    Py_ssize_t *slots;                  /* entry index + 1; 0: empty */
    Py_ssize_t nslots;                  /* a power of two, more than 2n */
    ProfFrame *stack;
    Py_ssize_t depth, stack_cap;
    ClockPoint born;                    /* both clocks when it was made: the tick's length */
    ProfCall calls[PROF_CALLS];         /* generator calls under way, with sleep-time */
    uint64_t call_seq;
} ProfileStat;

static inline Py_ssize_t
slot_of(ProfileStat *s, PyObject *code)
{
    uint64_t h = ((uintptr_t)code >> 4) * 0x9E3779B97F4A7C15ULL;
    return (Py_ssize_t)(h >> 32) & (s->nslots - 1);
}

/* The entry of `code` (-1: none yet). */
static inline Py_ssize_t
stat_find(ProfileStat *s, PyObject *code)   /* hot path */
{
    if (s->nslots == 0)
        return -1;
    for (Py_ssize_t i = slot_of(s, code);; i = (i + 1) & (s->nslots - 1)) {
        Py_ssize_t k = s->slots[i];
        if (k == 0)
            return -1;
        if (s->entries[k - 1].code == code)
            return k - 1;
    }
}

static int
stat_rehash(ProfileStat *s, Py_ssize_t nslots)
{
    Py_ssize_t *slots = PyMem_Calloc(nslots, sizeof(Py_ssize_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(s->slots);
    s->slots = slots;
    s->nslots = nslots;
    for (Py_ssize_t k = 0; k < s->n; k++) {
        Py_ssize_t i = slot_of(s, s->entries[k].code);
        while (slots[i] != 0)
            i = (i + 1) & (nslots - 1);
        slots[i] = k + 1;
    }
    return 0;
}

/* The entry of `code`, made on its first call in this thread (-1: no memory). */
static Py_ssize_t
stat_add(ProfileStat *s, PyObject *code)
{
    Py_ssize_t k = stat_find(s, code);
    if (k >= 0)
        return k;
    if (s->n == s->cap) {
        Py_ssize_t cap = s->cap ? 2 * s->cap : 16;
        ProfEntry *e = PyMem_Realloc(s->entries, cap * sizeof(ProfEntry));
        if (e == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->entries = e;
        s->cap = cap;
    }
    if (2 * (s->n + 1) >= s->nslots && stat_rehash(s, s->nslots ? 2 * s->nslots : 64) < 0)
        return -1;
    k = s->n++;
    memset(&s->entries[k], 0, sizeof(ProfEntry));
    s->entries[k].code = Py_NewRef(code);
    Py_ssize_t i = slot_of(s, code);
    while (s->slots[i] != 0)
        i = (i + 1) & (s->nslots - 1);
    s->slots[i] = k + 1;
    return k;
}

static inline int
stat_push(ProfileStat *s, Py_ssize_t entry)   /* hot path */
{
    if (s->depth == s->stack_cap) {
        Py_ssize_t cap = s->stack_cap ? 2 * s->stack_cap : 64;
        ProfFrame *f = PyMem_Realloc(s->stack, cap * sizeof(ProfFrame));
        if (f == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->stack = f;
        s->stack_cap = cap;
    }
    ProfFrame *f = &s->stack[s->depth++];
    f->entry = entry;
    f->sub = 0;
    f->start = raw_clock();     /* last: the time of this handler is not the call's */
    return 0;
}

/* One activation's or one call's numbers go into entry `entry`. */
static inline void
entry_add(ProfileStat *s, Py_ssize_t entry, unsigned long long dt, unsigned long long sub)
{
    unsigned long long self = dt > sub ? dt - sub : 0;
    ProfEntry *e = &s->entries[entry];
    e->time += dt;
    e->time_sq += (unsigned __int128)dt * dt;
    e->self += self;
    e->self_sq += (unsigned __int128)self * self;
}

/* The generator call running in `frame` (NULL: none followed). */
static inline ProfCall *
call_find(ProfileStat *s, const void *frame, Py_ssize_t entry)
{
    for (int i = 0; i < PROF_CALLS; i++)
        if (s->calls[i].frame == frame && s->calls[i].entry == entry)
            return &s->calls[i];
    return NULL;
}

/* A generator call begins in `frame` at `start`: a free record, a stale one
 * of the same frame (a generator closed suspended whose frame was reused),
 * or the oldest. */
static inline void
call_begin(ProfileStat *s, const void *frame, Py_ssize_t entry, long long start)
{
    ProfCall *c = &s->calls[0];
    for (int i = 0; i < PROF_CALLS; i++) {
        ProfCall *x = &s->calls[i];
        if (x->frame == NULL || x->frame == frame) {
            c = x;
            break;
        }
        if (x->seq < c->seq)
            c = x;
    }
    c->frame = frame;
    c->entry = entry;
    c->start = start;
    c->sub = 0;
    c->seq = ++s->call_seq;
}

/* An activation of entry `entry` ends at `now`.  An exit whose activation
 * was not seen (under way when profiling began) counts nothing; activations
 * above it whose exits were not seen (their code stopped being profiled)
 * are dropped with it.  `frame` (sleep-time; else NULL): a generator's or
 * coroutine's, whose activation is part of its call, counted when the call
 * ends (`final`) from its first start, the time it was suspended in. */
static inline void
stat_pop(ProfileStat *s, Py_ssize_t entry, long long now, const void *frame, int final)   /* hot path */
{
    Py_ssize_t d = s->depth;
    while (d > 0 && s->stack[d - 1].entry != entry)
        d--;
    if (d == 0)
        return;
    ProfFrame *f = &s->stack[d - 1];
    s->depth = d - 1;
    unsigned long long dt = now > f->start ? (unsigned long long)(now - f->start) : 0;
    ProfCall *c = frame != NULL ? call_find(s, frame, entry) : NULL;
    if (c == NULL)
        entry_add(s, entry, dt, f->sub);
    else if (!final)
        c->sub += f->sub;
    else {
        entry_add(s, entry, now > c->start ? (unsigned long long)(now - c->start) : 0, c->sub + f->sub);
        c->frame = NULL;
    }
    if (d > 1)
        s->stack[d - 2].sub += dt;      /* the caller's: this activation only */
}

/* ------------------------------------------------------------------ reading */

static PyObject *
stat_stats(ProfileStat *s, PyObject *unused)
{
    double ns_per_tick = 1.0;
    if (use_tsc) {
        ClockPoint now = clock_point();
        if (now.raw > s->born.raw)
            ns_per_tick = (double)(now.ns - s->born.ns) / (double)(now.raw - s->born.raw);
    }
    double sq = ns_per_tick * ns_per_tick;
    PyObject *out = PyList_New(0);
    for (Py_ssize_t k = 0; out != NULL && k < s->n; k++) {
        ProfEntry *e = &s->entries[k];
        if (e->hits == 0 && e->time == 0)
            continue;
        PyObject *t = Py_BuildValue("(OLNNNN)", e->code, e->hits,
                                    PyLong_FromDouble((double)e->time * ns_per_tick),
                                    PyLong_FromDouble((double)e->time_sq * sq),
                                    PyLong_FromDouble((double)e->self * ns_per_tick),
                                    PyLong_FromDouble((double)e->self_sq * sq));
        if (t == NULL || PyList_Append(out, t) < 0)
            Py_CLEAR(out);
        Py_XDECREF(t);
    }
    return out;
}

static PyObject *
stat_get_depth(ProfileStat *s, void *closure)
{
    return PyLong_FromSsize_t(s->depth);
}

/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
static PyObject *
stat_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "ProfileStat() takes no arguments");
        return NULL;
    }
    ProfileStat *s = (ProfileStat *)type->tp_alloc(type, 0);
    if (s != NULL)
        s->born = clock_point();
    return (PyObject *)s;
}

static int
stat_traverse(ProfileStat *s, visitproc visit, void *arg)
{
    for (Py_ssize_t k = 0; k < s->n; k++)
        Py_VISIT(s->entries[k].code);
    return 0;
}

static int
stat_clear(ProfileStat *s)
{
    for (Py_ssize_t k = 0; k < s->n; k++)
        Py_CLEAR(s->entries[k].code);
    s->n = s->depth = 0;
    memset(s->calls, 0, sizeof(s->calls));
    if (s->slots != NULL)
        memset(s->slots, 0, s->nslots * sizeof(Py_ssize_t));
    return 0;
}

static void
stat_dealloc(ProfileStat *s)
{
    PyObject_GC_UnTrack(s);
    stat_clear(s);
    PyMem_Free(s->entries);
    PyMem_Free(s->slots);
    PyMem_Free(s->stack);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef stat_methods[] = {
    {"stats", (PyCFunction)stat_stats, METH_NOARGS,
     "[(code, hits, time, time_sq, self, self_sq)]: per function called, in nanoseconds."},
    {NULL}
};

static PyGetSetDef stat_getset[] = {
    {"depth", (getter)stat_get_depth, NULL, "Activations under way.", NULL},
    {NULL}
};

PyTypeObject ProfileStatType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.ProfileStat",
    .tp_doc = "One thread's function profile.",
    .tp_basicsize = sizeof(ProfileStat),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = stat_new,
    .tp_traverse = (traverseproc)stat_traverse,
    .tp_clear = (inquiry)stat_clear,
    .tp_dealloc = (destructor)stat_dealloc,
    .tp_methods = stat_methods,
    .tp_getset = stat_getset,
};

/* ------------------------------------------------------------------ the handlers */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    uint64_t thread;            /* the thread `stat` is of (this_thread) */
    ProfileStat *stat;          /* owned, or NULL */
    Py_ssize_t entry;           /* this handler's code in `stat` (-1: none yet) */
    PyObject *local, *attach;   /* owned: where a thread's ProfileStat is kept, what makes it */
    int kind;
} ProfHandler;

static PyObject *s_ps;          /* "ps": the thread's ProfileStat, on `local` */

/* A number for the calling thread, never reused (counted under the GIL): a
 * handler's cache key.  Read from a thread-local of our own, as quiet.c's,
 * at the cost of a load; PyThreadState_Get() goes through __tls_get_addr. */
#if defined(__GNUC__)
static __thread uint64_t thread_serial __attribute__((tls_model("initial-exec")));
#else
static _Thread_local uint64_t thread_serial;
#endif
static uint64_t serials;

static inline uint64_t
this_thread(void)
{
    if (thread_serial == 0)
        thread_serial = ++serials;
    return thread_serial;
}

/* The calling thread's ProfileStat (borrowed, cached on h), made by
 * `attach` at its first call if `make`; NULL (no error) when there is none. */
static ProfileStat *
thread_stat(ProfHandler *h, PyObject *code, int make)
{
    uint64_t id = this_thread();
    if (h->stat != NULL && h->thread == id)
        return h->stat;
    PyObject *ps = PyObject_GetAttr(h->local, s_ps);
    if (ps == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        if (!make)
            return NULL;
        ps = PyObject_CallNoArgs(h->attach);
    }
    if (ps == NULL)
        return NULL;
    if (!PyObject_TypeCheck(ps, &ProfileStatType)) {
        PyErr_SetString(PyExc_TypeError, "fentry: a thread's profile is not a ProfileStat");
        Py_DECREF(ps);
        return NULL;
    }
    Py_XSETREF(h->stat, (ProfileStat *)ps);
    h->thread = id;
    h->entry = make ? stat_add(h->stat, code) : stat_find(h->stat, code);
    if (h->entry < 0 && make)
        return NULL;
    return h->stat;
}

static PyObject *
profile_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    ProfHandler *h = (ProfHandler *)self;
    long long now = raw_clock();        /* first: the time of this handler is not the call's */
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a profile handler takes (code, offset[, arg])");
        return NULL;
    }
    PyObject *code = args[0];
    ProfileStat *s = thread_stat(h, code, h->kind != P_EXIT);
    if (s == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    switch (h->kind) {
    case P_EXIT:
    case G_YIELD:
    case G_EXIT:
        if (h->entry < 0 && (h->entry = stat_find(s, code)) < 0)
            Py_RETURN_NONE;     /* never entered in this thread */
        if (h->kind == P_EXIT)
            stat_pop(s, h->entry, now, NULL, 0);    /* (no generator: no frame looked up) */
        else    /* the traced frame: a handler adds no Python frame */
            stat_pop(s, h->entry, now, PyEval_GetFrame(), h->kind == G_EXIT);
        Py_RETURN_NONE;
    case G_START:
        call_begin(s, PyEval_GetFrame(), h->entry, now);
        /* fall through */
    case P_START:
        s->entries[h->entry].hits++;
        break;
    }
    if (stat_push(s, h->entry) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
handler_traverse(ProfHandler *h, visitproc visit, void *arg)
{
    Py_VISIT(h->stat);
    Py_VISIT(h->local);
    Py_VISIT(h->attach);
    return 0;
}

static int
handler_clear(ProfHandler *h)
{
    Py_CLEAR(h->stat);
    Py_CLEAR(h->local);
    Py_CLEAR(h->attach);
    return 0;
}

static void
handler_dealloc(ProfHandler *h)
{
    PyObject_GC_UnTrack(h);
    handler_clear(h);
    PyObject_GC_Del(h);
}

static PyObject *
handler_repr(ProfHandler *h)
{
    static const char *names[] = {"start", "resume", "exit", "generator start",
                                  "generator yield", "generator exit"};
    return PyUnicode_FromFormat("<fentry C profile handler (%s)>", names[h->kind]);
}

PyTypeObject ProfHandlerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fentry._ctrampolines.ProfileHandler",
    .tp_basicsize = sizeof(ProfHandler),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(ProfHandler, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)handler_traverse,
    .tp_clear = (inquiry)handler_clear,
    .tp_dealloc = (destructor)handler_dealloc,
    .tp_repr = (reprfunc)handler_repr,
};

static PyObject *
profile_event(PyObject *m, PyObject *args)
{
    PyObject *local, *attach;
    int kind, nargs, depth = 0;     /* (the pure-Python twin needs the event's arity and the
                                       traced frame's depth; this takes either) */
    if (!PyArg_ParseTuple(args, "OOii|i", &local, &attach, &kind, &nargs, &depth))
        return NULL;
    if (kind < P_START || kind > G_EXIT) {
        PyErr_Format(PyExc_ValueError, "profile_event: no kind %d", kind);
        return NULL;
    }
    if (s_ps == NULL && (s_ps = PyUnicode_InternFromString("ps")) == NULL)
        return NULL;
    ProfHandler *h = PyObject_GC_New(ProfHandler, &ProfHandlerType);
    if (h == NULL)
        return NULL;
    h->vectorcall = profile_call;
    h->thread = 0;
    h->stat = NULL;
    h->entry = -1;
    h->local = Py_NewRef(local);
    h->attach = Py_NewRef(attach);
    h->kind = kind;
    PyObject_GC_Track(h);
    return (PyObject *)h;
}

PyMethodDef profile_functions[] = {
    {"profile_event", profile_event, METH_VARARGS, "A function profiler's handler."},
    {NULL}
};
