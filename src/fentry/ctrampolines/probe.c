/* A probe event's hit (ProbeTrace, compiled by probe_compile.c; the kernel's
 * kprobe_trace_func behind kprobe_dispatcher): fetch each fetcharg straight from the frame's
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
#include "probe.h"

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
        || cache->index < 0 || type_shared_keys(t) != cache->keys
        || (descr != NULL && (Py_TYPE(descr)->tp_descr_get != NULL
                              || Py_TYPE(descr)->tp_descr_set != NULL)))
        return NULL;
    return inline_value(obj, cache->index);
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
        if ((v = fetch_attr_cached(obj, cache)) != NULL) {
            *out = Py_NewRef(v);                         /* the instance's own: it wins */
            return FETCH_OK;
        }
    } else {
        descr = _PyType_Lookup(t, name);                 /* borrowed: the MRO walk */
        cache->type = t;
        cache->version = type_version(t);
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
        v = frame_local(f, slot);
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

/* The Python path does the whole hit, counting included: slow(frame) at an
 * entry, offset or line; slow(frame, value, raised) at a return (PY_RETURN's
 * value, or PY_UNWIND's exception), and slow(frame, value, raised, entered)
 * when the return probe fetched values at entry.  `entered` is released. */
static PyObject *
probe_slow(ProbeTrace *p, Tramp *t, PyObject *value, PyObject *entered)
{
    PyObject *frame = (PyObject *)PyEval_GetFrame();     /* borrowed: the probed frame */
    if (frame == NULL) {
        Py_XDECREF(entered);
        Py_RETURN_NONE;
    }
    if (t->kind == K_PROBE)
        return PyObject_CallOneArg(p->slow, frame);
    PyObject *argv[4] = {frame, value, t->raised ? Py_True : Py_False, entered};
    PyObject *r = PyObject_Vectorcall(p->slow, argv, entered != NULL ? 4 : 3, NULL);
    Py_XDECREF(entered);
    return r;
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
        PyObject *v = cell_object(&cells[i], tags[i]);
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

/* -- a return probe's entry store (the kernel's kretprobe instance with its
 * entry data, store_trace_entry_data): at PY_START the values of the $argN
 * fetchargs, fetched whole (events/fetch.py's AT_ENTRY says why), kept
 * under the interpreter frame's address until the PY_RETURN or PY_UNWIND
 * of that activation takes them -- exactly the events that fire the return
 * probe.  A frame's address is its own while it runs (a generator's is
 * inside the generator), so recursion and threads each find their own, and
 * an activation that was running before the probe (attached mid-call) finds
 * none: no event, as the kernel has no instance for it.  At most maxactive
 * are kept (a generator CPython 3.13 closes with no event leaves its values
 * behind): the oldest one goes, and its return is a miss. */

/* A stored value back into a cell, as convert() made it. */
static inline void
stored_cell(PyObject *v, Cell *cell, int *tag)
{
    if (PyLong_CheckExact(v) && PyUnstable_Long_IsCompact((PyLongObject *)v)) {
        cell->i = (long long)PyUnstable_Long_CompactValue((PyLongObject *)v);
        *tag = T_INT;
    } else if (PyFloat_CheckExact(v)) {
        cell->d = PyFloat_AS_DOUBLE(v);
        *tag = T_FLOAT;
    } else {
        cell->obj = Py_NewRef(v);
        *tag = T_OBJ;
    }
}

/* The R_ARG fetchargs' values, fetched in C into cells; FETCH_BAIL (nothing
 * kept): the Python path must fetch them. */
static int
entry_cells(ProbeTrace *p, Tramp *t, _PyInterpreterFrame *f, Cell *cells, int *tags)
{
    for (int i = 0, k = 0; i < p->nargs; i++) {
        Fetch *fs = &p->fetch[i];
        if (fs->root != R_ARG)
            continue;
        int r = fetch_arg(p, fs, t->slots[i], f, NULL, &cells[k], &tags[k]);
        if (r == FETCH_BAIL) {
            drop(cells, tags, k);
            return FETCH_BAIL;
        }
        if (r == FETCH_FAULT) {
            cells[k].obj = Py_NewRef(p->fault);
            tags[k] = T_OBJ;
        }
        k++;
    }
    return FETCH_OK;
}

PyObject *
probe_start_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    if (tramp_nargs(nargsf, kwnames) < 0)
        return NULL;
    ProbeTrace *p = (ProbeTrace *)t->o.probe.trace;
    _PyInterpreterFrame *f = current_frame(PyThreadState_Get());
    if (f == NULL || p->entry == Py_None)
        Py_RETURN_NONE;
    Cell cells[PROBE_MAX_ARGS];
    int tags[PROBE_MAX_ARGS];
    PyObject *values = NULL;
    if (t->slots == NULL || frame_code(f) != args[0]
        || entry_cells(p, t, f, cells, tags) == FETCH_BAIL) {
        PyObject *frame = (PyObject *)PyEval_GetFrame();     /* borrowed: the probed frame */
        if (frame == NULL || (values = PyObject_CallOneArg(p->entry, frame)) == NULL)
            return NULL;
    }
    int r = entries_put(&p->entries, f, values, cells, tags);
    if (r < 0)
        return NULL;
    p->nmissed += r;                        /* the oldest activation's entry went */
    Py_RETURN_NONE;
}

/* probe_slow at a return, with its entry values as the Python path takes
 * them: a tuple, made of C's cells if it stored those. */
static PyObject *
probe_slow_entered(ProbeTrace *p, Tramp *t, PyObject *value, PyObject *entered,
                   Cell *ecells, int *etags)
{
    if (entered == NULL) {
        entered = values_tuple(ecells, etags, p->nentry);
        drop(ecells, etags, p->nentry);
        if (entered == NULL)
            return NULL;
    }
    return probe_slow(p, t, value, entered);
}
/* Every fetcharg into cells: FETCH_OK, or FETCH_BAIL (the cells dropped):
 * the Python path must do the hit.  With has_entry (a constant at each call
 * site, so the copy that entry probes run has none of it), a return probe's
 * R_ARG values are the ones stored at its entry: `entered`, the Python
 * path's tuple, or else C's cells ecells (left to the caller). */
static Py_ALWAYS_INLINE inline int
fetch_cells(ProbeTrace *p, Tramp *t, _PyInterpreterFrame *f, PyObject *retval, Cell *cells,
            int *tags, int *faulted, const int has_entry, PyObject *entered, Cell *ecells, int *etags)
{
    for (int i = 0, k = 0; i < p->nargs; i++) {
        Fetch *fs = &p->fetch[i];
        if (has_entry && fs->root == R_ARG) {           /* fetched at entry */
            if (entered != NULL) {
                stored_cell(PyTuple_GET_ITEM(entered, k), &cells[i], &tags[i]);
            } else {
                cells[i] = ecells[k];
                tags[i] = etags[k];
                if (tags[i] == T_OBJ)
                    Py_INCREF(cells[i].obj);
            }
            *faulted |= tags[i] == T_OBJ && cells[i].obj == p->fault;
            k++;
            continue;
        }
        if (fs->shape != S_OTHER) {             /* x, or x.attr from inline values */
            PyObject *v = frame_local(f, t->slots[i]);
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
            return FETCH_BAIL;
        }
        if (r == FETCH_FAULT) {
            cells[i].obj = Py_NewRef(p->fault);
            tags[i] = T_OBJ;
            *faulted = 1;
        }
    }
    return FETCH_OK;
}

/* The fetched cells: filter, record (they are released). */
static Py_ALWAYS_INLINE inline PyObject *
probe_commit(ProbeTrace *p, Tramp *t, PyThreadState *ts, PyObject *code, PyObject *value,
             Cell *cells, int *tags)
{
    int n = p->nargs;
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
    PyObject *head = t->kind == K_PROBE ? Py_NewRef(t->o.probe.head)
                                        : exit_head(p, code, t->raised ? value : NULL);
    Ring *ring = head != NULL ? cached_ring(&p->ring, p->local, p->attach, ts->id) : NULL;
    if (ring == NULL) {
        Py_XDECREF(head);
        return drop(cells, tags, n), NULL;
    }
    if (ring->skip & RING_SKIP_EVENT) {             /* set_event_pid left this thread out */
        Py_DECREF(head);
        drop(cells, tags, n);
    }
    else
        ring_write_event(ring, head, cells, tags, n);
    Py_DECREF(ring);
    Py_RETURN_NONE;
}

/* A hit in soft mode (events/trigger.py): triggers(values) runs the
 * event's triggers, whatever tracing_on and the event's filter say, and
 * answers whether to record -- True, False, or (record, post) -- and
 * post_triggers(post) runs after the record, as the kernel's post triggers.
 * Both find the probed frame as their caller's. */
static PyObject *
probe_triggered(ProbeTrace *p, Tramp *t, PyThreadState *ts, PyObject *code, PyObject *value,
                Cell *cells, int *tags)
{
    int n = p->nargs;
    PyObject *values = values_tuple(cells, tags, n);
    PyObject *r = values != NULL ? PyObject_CallOneArg(p->triggers, values) : NULL;
    Py_XDECREF(values);
    if (r == NULL)
        return drop(cells, tags, n), NULL;
    PyObject *post = NULL;
    int record;
    if (PyTuple_CheckExact(r) && PyTuple_GET_SIZE(r) == 2) {
        record = PyObject_IsTrue(PyTuple_GET_ITEM(r, 0));
        post = Py_NewRef(PyTuple_GET_ITEM(r, 1));
    }
    else
        record = PyObject_IsTrue(r);
    Py_DECREF(r);
    PyObject *res;
    if (record > 0)
        res = probe_commit(p, t, ts, code, value, cells, tags);
    else {
        drop(cells, tags, n);
        res = record < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (post != NULL) {
        if (res != NULL) {
            PyObject *pr = PyObject_CallOneArg(p->post_triggers, post);
            if (pr == NULL)
                Py_CLEAR(res);
            Py_XDECREF(pr);
        }
        Py_DECREF(post);
    }
    return res;
}

/* The fetched cells: count, then the record (or the triggers first, in soft mode). */
static Py_ALWAYS_INLINE inline PyObject *
probe_record(ProbeTrace *p, Tramp *t, PyThreadState *ts, PyObject *code, PyObject *value,
             Cell *cells, int *tags, int faulted)
{
    p->nhit++;
    p->nmissed += faulted;
    if (p->triggers != Py_None)
        return probe_triggered(p, t, ts, code, value, cells, tags);
    return probe_commit(p, t, ts, code, value, cells, tags);
}

PyObject *
probe_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    /* fetch, count, filter, record */
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    ProbeTrace *p = (ProbeTrace *)t->o.probe.trace;
    PyObject *code = args[0];
    /* a return: PY_RETURN's value, or PY_UNWIND's exception ($retval a fault) */
    PyObject *value = t->kind == K_PROBE_EXIT && nargs > 2 ? args[2] : NULL;
    PyObject *retval = t->raised ? NULL : value;
    PyThreadState *ts = PyThreadState_Get();
    _PyInterpreterFrame *f = current_frame(ts);
    if (t->slots == NULL || f == NULL || frame_code(f) != code)
        return probe_slow(p, t, value, NULL);
    Cell cells[PROBE_MAX_ARGS];
    int tags[PROBE_MAX_ARGS], faulted = 0;
    if (fetch_cells(p, t, f, retval, cells, tags, &faulted, 0, NULL, NULL, NULL) == FETCH_BAIL)
        return probe_slow(p, t, value, NULL);
    return probe_record(p, t, ts, code, value, cells, tags, faulted);
}

/* A return probe's return with an entry store: probe_call, its R_ARG values
 * taken from what its entry stored. */
PyObject *
probe_exit_entered_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)   /* hot path */
{
    Tramp *t = (Tramp *)self;
    Py_ssize_t nargs = tramp_nargs(nargsf, kwnames);
    if (nargs < 0)
        return NULL;
    ProbeTrace *p = (ProbeTrace *)t->o.probe.trace;
    PyObject *code = args[0];
    PyObject *value = nargs > 2 ? args[2] : NULL;
    PyObject *retval = t->raised ? NULL : value;
    PyThreadState *ts = PyThreadState_Get();
    _PyInterpreterFrame *f = current_frame(ts);
    /* the entry's values: the Python path's (a tuple), or C's cells */
    PyObject *entered = NULL;
    Cell ecells[PROBE_MAX_ARGS];
    int etags[PROBE_MAX_ARGS];
    if (f == NULL || !entries_take(&p->entries, f, &entered, ecells, etags))
        Py_RETURN_NONE;                     /* not seen entering: no instance, no event */
    Cell cells[PROBE_MAX_ARGS];
    int tags[PROBE_MAX_ARGS], faulted = 0;
    if (t->slots == NULL || frame_code(f) != code
        || (entered != NULL && (!PyTuple_CheckExact(entered) || PyTuple_GET_SIZE(entered) != p->nentry))
        || fetch_cells(p, t, f, retval, cells, tags, &faulted, 1, entered, ecells, etags) == FETCH_BAIL)
        return probe_slow_entered(p, t, value, entered, ecells, etags);
    if (entered != NULL)                    /* the entry values are in the cells now */
        Py_DECREF(entered);
    else
        drop(ecells, etags, p->nentry);
    return probe_record(p, t, ts, code, value, cells, tags, faulted);
}
