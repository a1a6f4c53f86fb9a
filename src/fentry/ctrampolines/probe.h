/* ProbeTrace: one probe event's hit, compiled (probe.c does a hit,
 * probe_compile.c builds one). */
#ifndef FENTRY_PROBE_H
#define FENTRY_PROBE_H

#include "tramp.h"
#include "entries.h"

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
    RingCache ring;             /* as a recorder Tramp's */
    PyObject *event, *local, *attach, *onoff, *snapshot, *fault, *slow;
    PyObject *specs;            /* as given; None: every hit takes the Python path */
    PyObject *filter_slow;      /* the Python filter, matches(values); None: no filter */
    PyObject *filter_spec;      /* as given (holds the predicates' strings) */
    /* Soft mode (the event has triggers; see probe_triggered): None, or
     * triggers(values) and post_triggers(post). */
    PyObject *triggers, *post_triggers;
    int nargs;
    Fetch *fetch;
    int npreds, nprog;
    Pred *preds;
    int *prog;                  /* NULL: the filter is the Python one */
    /* A return probe's entry store (see probe_start_call): entry(frame) is
     * the Python fetch of its $argN fetchargs, entries each activation's
     * values (nentry cells: the R_ARG fetchargs' in C). */
    PyObject *entry;            /* None: nothing is fetched at entry */
    Entries entries;
    int nentry;
    long long nhit, nmissed;
} ProbeTrace;

#endif
