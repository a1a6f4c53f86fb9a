/* Ring: one thread's ring of raw records (see ring.h, which writes them):
 * reading them back, as tuples or as raw pages, and the type. */
#include "graph.h"
#include "encoder.h"

/* The calling thread's ThreadBuffer.  The Python side keeps it in `local.tb`;
 * here it is cached in the thread state's dict under the `local` object
 * itself, which is cheaper to reach than a threading.local attribute. */
static PyObject *
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

Ring *
ring_cache_fill(RingCache *c, PyObject *local, PyObject *attach, uint64_t tstate)
{
    PyObject *tb = thread_buffer(local, attach);
    if (tb != NULL && !PyObject_TypeCheck(tb, &RingType)) {
        PyErr_SetString(PyExc_TypeError, "fentry: thread buffer is not a Ring");
        Py_CLEAR(tb);
    }
    if (tb != NULL) {
        Py_XSETREF(c->ring, Py_NewRef(tb));
        c->tstate = tstate;
    }
    return (Ring *)tb;
}

static PyObject *
event_values(Ring *ring, Py_ssize_t i)
{
    int n = event_n(&ring->recs[i]);
    PyObject *values = PyTuple_New(n);
    for (int j = 0; values && j < n; j++) {
        int tag;
        Cell *cell = event_cell(ring, i, j, &tag);
        PyObject *v = cell_object(cell, tag);
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
    long long ts = rec_ts(ring, r->ts, now);
    switch (r->layout) {
    case L_FUNCTION:
        return Py_BuildValue("(LLOO)", seq, ts, r->o1, r->o2 ? r->o2 : Py_None);
    case L_GRAPH:
        return Py_BuildValue("(LLiO)", seq, ts, r->kind, r->o1);
    case L_GRAPH_EXC:
        return Py_BuildValue("(LLiOO)", seq, ts, r->kind, r->o1, r->o2);
    case L_GRAPH_THRESH:
        return Py_BuildValue("(LLiOLi)", seq, ts, r->kind, r->o1, r->c0.i, (int)r->c1.i);
    case L_EVENT: {
        PyObject *values = event_values(ring, i);
        if (values == NULL)
            return NULL;
        return Py_BuildValue("(LLOON)", seq, ts, PyTuple_GET_ITEM(r->o1, 0),
                             PyTuple_GET_ITEM(r->o1, 1), values);
    }
    case L_GRAPH_VALUES: {
        PyObject *values = event_values(ring, i);
        if (values == NULL)
            return NULL;
        return Py_BuildValue("(LLiON)", seq, ts, r->kind >> 16, r->o1, values);
    }
    default: {    /* L_TUPLE: recorded from Python; o1 holds the fields after ts */
        PyObject *head = Py_BuildValue("(LL)", seq, ts);
        PyObject *t = head ? PySequence_Concat(head, r->o1) : NULL;
        Py_XDECREF(head);
        return t;
    }
    }
}

/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
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
    ring->seen_seq = -1;
    ring->clock = CLOCK_LOCAL;
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
    Py_VISIT(ring->shared);
    Py_ssize_t pos = 0;
    for (Py_ssize_t k = 0; k < ring->nrec; k++) {
        Py_ssize_t i = (ring->head + pos) % ring->cap;
        Rec *r = &ring->recs[i];
        Py_VISIT(r->o1);
        if (r->layout < L_EVENT && r->layout != L_GRAPH_THRESH) {     /* (a thresh record holds a number there) */
            Py_VISIT(r->o2);
        }
        for (int j = 0; r->layout >= L_EVENT && j < event_n(r); j++) {
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
    Py_CLEAR(ring->shared);
    return 0;
}

static void
ring_dealloc(Ring *ring)
{
    PyObject_GC_UnTrack(ring);
    ring_drop(ring);
    Py_CLEAR(ring->queue);
    Py_CLEAR(ring->shared);
    PyMem_Free(ring->recs);
    PyMem_Free(ring->graph);
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
    ClockPoint now = ring->seen_seq == ring->next_seq ? ring->seen : clock_point();
    ring->seen = now;
    ring->seen_seq = ring->next_seq;
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
        ring->seen_seq = -1;
    }
    return list;
}

/* Two methods for the Python side, one function (as graph_event's pair). */
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
    ring->next_seq = ring->consumed = ring->lost_told = ring->dropped = 0;
    ring->cal = clock_point();
    ring->seen_seq = -1;
    if (ring->graph)
        ring->graph->untimed = 0;       /* (counted with the records: a count of the trace's) */
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
    return PyLong_FromLongLong(ring_lost_since(ring, 0));
}

static PyObject *
ring_set_clock(Ring *ring, PyObject *args)
{
    int clock;
    PyObject *shared;
    if (!PyArg_ParseTuple(args, "iO!", &clock, &SwitchType, &shared))
        return NULL;
    if (clock < CLOCK_COUNTER) {
        PyErr_SetString(PyExc_ValueError, "set_clock() takes -1, -2 or a clock id");
        return NULL;
    }
    ring->clock = clock;
    Py_XSETREF(ring->shared, Py_NewRef(shared));
    ring->cal = clock_point();          /* (the default clock's records start from here) */
    ring->seen_seq = -1;
    Py_RETURN_NONE;
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
ring_get_overwrite(Ring *ring, void *closure)
{
    return PyBool_FromLong(!ring->drop_new);
}

static int
ring_set_overwrite(Ring *ring, PyObject *value, void *closure)
{
    int on = value ? PyObject_IsTrue(value) : -1;
    if (on < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "overwrite cannot be deleted");
        return -1;
    }
    ring->drop_new = !on;
    return 0;
}

static PyObject *
ring_get_skip(Ring *ring, void *closure)
{
    return PyLong_FromLong(ring->skip);
}

static int
ring_set_skip(Ring *ring, PyObject *value, void *closure)
{
    long v = value ? PyLong_AsLong(value) : -1;
    if (v == -1 && (value == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "skip cannot be deleted");
        return -1;
    }
    ring->skip = (int)v;
    return 0;
}

static PyObject *
ring_get_key(Ring *ring, void *closure)
{
    return PyLong_FromUnsignedLong(ring->key);
}
static PyObject *
ring_maxlen(Ring *ring, void *closure)
{
    return PyLong_FromSsize_t(ring->cap);
}

static PyObject *
ring_graph_untimed(Ring *ring, void *closure)
{
    return PyLong_FromLongLong(ring->graph ? ring->graph->untimed : 0);
}

static PyMethodDef ring_methods[] = {
    {"snapshot", (PyCFunction)ring_snapshot, METH_NOARGS, "the records, not consumed"},
    {"consume", (PyCFunction)ring_consume, METH_NOARGS, "take the records"},
    {"clear", (PyCFunction)ring_clear_method, METH_NOARGS, "empty the ring, counts too"},
    {"written", (PyCFunction)ring_written, METH_NOARGS, "records written since the last clear"},
    {"lost", (PyCFunction)ring_lost, METH_NOARGS,
     "records overwritten (or dropped) before anyone read them"},
    {"set_clock", (PyCFunction)ring_set_clock, METH_VARARGS,
     "set_clock(clock, shared): -1 the default clock, -2 shared's counter, else a clock_gettime id"},
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
    {"overwrite", (getter)ring_get_overwrite, (setter)ring_set_overwrite,
     "full: True overwrites the oldest record, False drops the new one", NULL},
    {"skip", (getter)ring_get_skip, (setter)ring_set_skip,
     "the pid filters' verdict on this ring's thread: 1 function tracers, 2 events", NULL},
    {"graph_untimed", (getter)ring_graph_untimed, NULL,
     "function_graph exits under tracing_thresh deeper than GRAPH_STACK: not timed", NULL},
    {NULL}
};

static PySequenceMethods ring_as_sequence = {
    .sq_length = (lenfunc)ring_len,
};

PyTypeObject RingType = {
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
