/* Ip: a site in Python code, (code, bytecode offset): the kernel's ip and
 * parent_ip, as FtraceOps callbacks receive them. */
#include "util.h"
#include "ip.h"

PyObject *
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

/* The type's slots: CPython's boilerplate, alike in every type of this folder. */
static PyMemberDef ip_members[] = {
    {"code", Py_T_OBJECT_EX, offsetof(IpObject, code), Py_READONLY, "the code object"},
    {"offset", Py_T_OBJECT_EX, offsetof(IpObject, offset), Py_READONLY, "the bytecode offset"},
    {NULL}
};

PyTypeObject IpType = {
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

