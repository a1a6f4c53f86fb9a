/* Building a ProbeTrace: its fetchargs and filter compiled from what the
 * Python side parsed (events/), the handlers it makes per probed code, and
 * the type.  probe.c does a hit. */
#include "probe.h"

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
    p->nargs = p->npreds = p->nprog = p->nentry = 0;
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
        p->nentry += fs->root == R_ARG;
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
                             "slow", "entry", "maxactive", NULL};
    PyObject *event, *specs, *local, *attach, *onoff, *snapshot, *fault, *slow, *entry = Py_None;
    Py_ssize_t maxactive = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO!OOO|On", kwlist, &event, &specs, &local,
                                     &attach, &SwitchType, &onoff, &snapshot, &fault, &slow,
                                     &entry, &maxactive))
        return NULL;
    if (entry != Py_None && maxactive < 1) {
        PyErr_SetString(PyExc_ValueError, "ProbeTrace: an entry store needs maxactive >= 1");
        return NULL;
    }
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
    p->triggers = Py_NewRef(Py_None);
    p->post_triggers = Py_NewRef(Py_None);
    p->entry = Py_NewRef(entry);
    if (probe_compile(p, specs) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    p->entries.max = maxactive;
    p->entries.nvalues = p->nentry;
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
    Tramp *t = tramp_new(kind, kind == K_PROBE_START ? probe_start_call
                               : kind == K_PROBE_EXIT && p->entry != Py_None ? probe_exit_entered_call
                               : probe_call);
    if (t == NULL)
        return NULL;
    t->o.probe.trace = Py_NewRef(p);
    t->o.probe.head = Py_XNewRef(head);
    t->raised = raised;
    if (p->specs == Py_None)
        return (PyObject *)t;
    PyCodeObject *co = (PyCodeObject *)code;
    if (!(co->co_flags & CO_OPTIMIZED))
        return (PyObject *)t;
    int *slots = PyMem_Calloc(p->nargs ? p->nargs : 1, sizeof(int));
    if (slots == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    int nparams = co->co_argcount + co->co_kwonlyargcount
                  + !!(co->co_flags & CO_VARARGS) + !!(co->co_flags & CO_VARKEYWORDS);
    for (int i = 0; i < p->nargs; i++) {
        Fetch *fs = &p->fetch[i];
        int j = -1;
        if (fs->root == R_ARG) {
            j = fs->argn >= 1 && fs->argn <= nparams ? fs->argn - 1 : -1;
        } else if (fs->root == R_LOCAL) {
            j = fast_local_index(co, fs->name);
        } else {
            slots[i] = -1;
            continue;
        }
        if (j < 0 || !is_plain_local(co, j)) {
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

/* start(code, depth): a return probe's PY_START handler: with an entry
 * store, what stores its $argN values (probe.c's probe_start_call); else
 * nothing to do (the return does it all), but it keeps the code known to
 * ftrace. */
static PyObject *
probe_start(ProbeTrace *p, PyObject *args)
{
    PyObject *code;
    int depth;
    if (!PyArg_ParseTuple(args, "O!i", &PyCode_Type, &code, &depth))
        return NULL;
    if (p->entry == Py_None)
        return (PyObject *)tramp_new(K_NOP, nop_call);
    return probe_handler(p, code, K_PROBE_START, 0, NULL);
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

/* set_triggers(triggers, post): the event's triggers, in soft mode (None:
 * none, every hit as before); see probe_triggered. */
static PyObject *
probe_set_triggers(ProbeTrace *p, PyObject *args)
{
    PyObject *triggers, *post;
    if (!PyArg_ParseTuple(args, "OO", &triggers, &post))
        return NULL;
    Py_SETREF(p->triggers, Py_NewRef(triggers));
    Py_SETREF(p->post_triggers, Py_NewRef(post));
    Py_RETURN_NONE;
}

/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
static int
probe_traverse(ProbeTrace *p, visitproc visit, void *arg)
{
    Py_VISIT(p->ring.ring); Py_VISIT(p->event); Py_VISIT(p->local); Py_VISIT(p->attach);
    Py_VISIT(p->onoff); Py_VISIT(p->snapshot); Py_VISIT(p->fault); Py_VISIT(p->slow);
    Py_VISIT(p->specs); Py_VISIT(p->filter_slow); Py_VISIT(p->filter_spec);
    Py_VISIT(p->triggers); Py_VISIT(p->post_triggers); Py_VISIT(p->entry);
    return entries_traverse(&p->entries, visit, arg);
}

static int
probe_clear(ProbeTrace *p)
{
    entries_clear(&p->entries);
    probe_free_compiled(p);     /* they borrow from specs and filter_spec */
    Py_CLEAR(p->ring.ring); Py_CLEAR(p->event); Py_CLEAR(p->local); Py_CLEAR(p->attach);
    Py_CLEAR(p->onoff); Py_CLEAR(p->snapshot); Py_CLEAR(p->fault); Py_CLEAR(p->slow);
    Py_CLEAR(p->specs); Py_CLEAR(p->filter_slow); Py_CLEAR(p->filter_spec);
    Py_CLEAR(p->triggers); Py_CLEAR(p->post_triggers); Py_CLEAR(p->entry);
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
     "start(code, depth): a return probe's PY_START handler (its entry store, if any)"},
    {"set_filter", (PyCFunction)probe_set_filter, METH_VARARGS,
     "set_filter(program, matches): the event's filter"},
    {"set_triggers", (PyCFunction)probe_set_triggers, METH_VARARGS,
     "set_triggers(triggers, post): the event's triggers, in soft mode (None: none)"},
    {NULL}
};

PyTypeObject ProbeTraceType = {
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

