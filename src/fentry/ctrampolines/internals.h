/* Every use of CPython's internals in the C hot path, in one place.
 *
 * The hot path reads the interpreter frame layout, to find the traced
 * function's caller as sys._getframe(1) does without making frame objects,
 * and to read fetchargs from a frame's fast locals; and the dict layout, to
 * read an instance attribute from the object's inline values as CPython's
 * LOAD_ATTR_INSTANCE_VALUE does.  Those layouts change between versions, so
 * this file is written for 3.12 and 3.13 only and refuses to build for any
 * other: the extension is optional, and fentry then runs its pure-Python hot
 * path (hotpath.WHY says so).  Nothing outside this file includes an internal
 * header, branches on PY_VERSION_HEX or reads an internal struct.
 */
#ifndef FENTRY_INTERNALS_H
#define FENTRY_INTERNALS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030C0000 || PY_VERSION_HEX >= 0x030E0000
#error "fentry's C hot path is written for CPython 3.12 and 3.13 only; fentry will use its pure-Python hot path"
#else

#define Py_BUILD_CORE 1
#undef _PyGC_FINALIZED      /* 3.12: cpython/objimpl.h's, which pycore_gc.h redefines */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "internal/pycore_frame.h"
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include "internal/pycore_dict.h"
#pragma GCC diagnostic pop
#undef Py_BUILD_CORE

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

/* The interpreter frame of the traced function's caller (what sys._getframe(1)
 * finds from here, since no Python frame sits between us and the traced
 * function), or NULL when there is no Python caller. */
static inline _PyInterpreterFrame *
caller_frame(void)
{
    _PyInterpreterFrame *f = current_frame(PyThreadState_Get());
    return f == NULL ? NULL : _PyFrame_GetFirstComplete(f->previous);
}

/* The thread's innermost complete frame, or NULL (sys._getframe(0)'s). */
static inline _PyInterpreterFrame *
innermost_frame(PyThreadState *ts)
{
    return _PyFrame_GetFirstComplete(current_frame(ts));
}

/* The next older complete frame of f, or NULL (f_back's). */
static inline _PyInterpreterFrame *
older_frame(_PyInterpreterFrame *f)
{
    return _PyFrame_GetFirstComplete(f->previous);
}

/* The Python frames on the thread's stack: CPython counts them down for
 * the recursion limit, one per frame it enters (a generator's at each
 * resumption) and up as each leaves; sys.setrecursionlimit keeps the
 * difference. */
static inline Py_ssize_t
py_depth(PyThreadState *ts)
{
    return (Py_ssize_t)ts->py_recursion_limit - ts->py_recursion_remaining;
}

/* A frame's code object (borrowed). */
static inline PyObject *
frame_code(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030D0000
    return f->f_executable;
#else
    return (PyObject *)f->f_code;
#endif
}

/* Fast local i of a frame (borrowed; NULL: unbound). */
static inline PyObject *
frame_local(_PyInterpreterFrame *f, int i)
{
    return f->localsplus[i];
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
#else
    (void)code;
#endif
    return lasti;
}

/* How many more Python frames the calling thread may push before
 * RecursionError (3.12 and 3.13 keep the count in the thread state). */
static inline int
python_frames_left(void)
{
    return PyThreadState_GET()->py_recursion_remaining;
}

/* t's version tag, 0 when it has none (nothing may be cached against it). */
static inline unsigned int
type_version(PyTypeObject *t)
{
#if PY_VERSION_HEX >= 0x030D0000
    return t->tp_version_tag;                   /* 0: none (3.13 has no flag for it) */
#else
    return t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG ? t->tp_version_tag : 0;
#endif
}

/* The shared keys of t's instances, or NULL. */
static inline PyDictKeysObject *
type_shared_keys(PyTypeObject *t)
{
    return ((PyHeapTypeObject *)t)->ht_cached_keys;
}

/* The index of `name` in the shared keys of instances of t (-1: none). */
static inline Py_ssize_t
shared_index(PyTypeObject *t, PyObject *name, PyDictKeysObject **keys)
{
    *keys = NULL;
    if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || !(t->tp_flags & Py_TPFLAGS_MANAGED_DICT))
        return -1;
#if PY_VERSION_HEX >= 0x030D0000
    if (!(t->tp_flags & Py_TPFLAGS_INLINE_VALUES))
        return -1;
#endif
    PyDictKeysObject *k = type_shared_keys(t);
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
inline_value(PyObject *obj, Py_ssize_t index)
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

/* The index of `name` in co's fast locals (frame_local's i), -1 when it has
 * none of that name. */
static inline int
fast_local_index(PyCodeObject *co, PyObject *name)
{
    for (int k = 0; k < co->co_nlocalsplus; k++)
        if (PyUnicode_Compare(PyTuple_GET_ITEM(co->co_localsplusnames, k), name) == 0)
            return k;
    return -1;
}

/* Whether fast local j of co is a plain local (not a cell, free or hidden one). */
static inline int
is_plain_local(PyCodeObject *co, int j)
{
    return (PyBytes_AS_STRING(co->co_localspluskinds)[j] & 0xff) == CO_FAST_LOCAL;
}

/* Parameter i of the running frame f of code co (borrowed; NULL: unbound):
 * fast local i, through its cell when a closure captured it (MAKE_CELL
 * has run by PY_START). */
static inline PyObject *
frame_param(_PyInterpreterFrame *f, PyCodeObject *co, int i)
{
    PyObject *v = f->localsplus[i];
    if (v != NULL && (PyBytes_AS_STRING(co->co_localspluskinds)[i] & CO_FAST_CELL) && PyCell_Check(v))
        v = PyCell_GET(v);
    return v;
}

/* v as n bytes of little-endian two's complement; -1 and an exception on failure. */
static inline int
long_to_bytes(PyObject *v, unsigned char *out, Py_ssize_t n)
{
    return _PyLong_AsByteArray((PyLongObject *)v, out, n, 1, 1
#if PY_VERSION_HEX >= 0x030D0000
                               , 1
#endif
                               );
}

#endif   /* a Python it was written for */

#endif
