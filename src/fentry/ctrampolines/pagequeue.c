/* PageQueue: pages on their way to a raw reader: filled by writers whose
 * ring reached its flush mark (in the hot path: the reader's thread cannot
 * run while a busy thread holds the GIL, so the writer moves its records
 * out itself, as a page, and never overwrites them), taken by the reader's
 * drain.  At most `cap` bytes wait: beyond that a ring overwrites its oldest
 * records, counted, as it does with no reader. */
#include "encoder.h"
#include <time.h>
#include <unistd.h>

#define QUEUE_WAIT_STEP_NS 100000   /* a full queue: the writer lets the reader run... */
#define QUEUE_WAIT_STEPS 2000       /* ... for at most 200 ms (a loaded machine) */

/* Move the ring's records into its queue, as a page.  From the hot path
 * (once per flush_at records) only while the queue has room: when it is
 * full the ring overwrites, as with no reader.  A reader's drain forces it:
 * every page goes through the queue, so a thread's pages stay in order. */
void
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


/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
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

PyTypeObject PageQueueType = {
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

