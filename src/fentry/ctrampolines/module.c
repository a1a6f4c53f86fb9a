/* The module fentry._ctrampolines: fentry's hot path in C, one file a
 * concern (see README's layout).  Here: the objects every file shares,
 * fetched once, the module's functions and types, registered.
 *
 * The same interface and behaviour as pytrampolines.py; hotpath.py picks
 * this one when it is built. */
#include "util.h"
#include "clock.h"
#include "probe.h"
#include "graph.h"

PyObject *DISABLE, *getframe, *int0, *int1;
PyObject *s_tb, *s_errors, *s_co_qualname, *s_original, *s_hook;

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ctrampolines", "fentry's hot path in C.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__ctrampolines(void)
{
    PyObject *m = NULL, *sys = NULL, *mon = NULL;
    clock_init();
    if (PyType_Ready(&TrampType) < 0 || PyType_Ready(&IpType) < 0
        || PyType_Ready(&CodeTableType) < 0 || PyType_Ready(&RingType) < 0
        || PyType_Ready(&SwitchType) < 0 || PyType_Ready(&ProbeTraceType) < 0
        || PyType_Ready(&EncoderType) < 0 || PyType_Ready(&PageQueueType) < 0
        || PyType_Ready(&ProfileStatType) < 0 || PyType_Ready(&ProfHandlerType) < 0
        || PyType_Ready(&StackMaxType) < 0 || PyType_Ready(&StackCheckType) < 0)
        return NULL;
    if (!(sys = PyImport_ImportModule("sys")) || !(getframe = PyObject_GetAttrString(sys, "_getframe"))
        || !(mon = PyObject_GetAttrString(sys, "monitoring"))
        || !(DISABLE = PyObject_GetAttrString(mon, "DISABLE")))
        goto fail;
    int0 = PyLong_FromLong(0);
    int1 = PyLong_FromLong(1);
    s_tb = PyUnicode_InternFromString("tb");
    s_errors = PyUnicode_InternFromString("errors");
    s_co_qualname = PyUnicode_InternFromString("co_qualname");
    s_original = PyUnicode_InternFromString("_fentry_wraps");
    s_hook = PyUnicode_InternFromString("_fentry_hook");
    if (!(m = PyModule_Create(&module)))
        goto fail;
    if (PyModule_AddFunctions(m, dispatch_functions) < 0 || PyModule_AddFunctions(m, quiet_functions) < 0
        || PyModule_AddFunctions(m, sigterm_functions) < 0
        || PyModule_AddFunctions(m, tool_id_functions) < 0
        || PyModule_AddFunctions(m, profile_functions) < 0
        || PyModule_AddFunctions(m, stack_functions) < 0
        || PyModule_AddFunctions(m, graph_values_functions) < 0
        || PyModule_AddFunctions(m, audit_functions) < 0
        || PyModule_AddFunctions(m, ccall_functions) < 0
        || PyModule_AddFunctions(m, guard_functions) < 0)
        goto fail;
    if (PyModule_AddObjectRef(m, "Ip", (PyObject *)&IpType) < 0
        || PyModule_AddObjectRef(m, "CodeTable", (PyObject *)&CodeTableType) < 0
        || PyModule_AddObjectRef(m, "Ring", (PyObject *)&RingType) < 0
        || PyModule_AddObjectRef(m, "Switch", (PyObject *)&SwitchType) < 0
        || PyModule_AddObjectRef(m, "ProbeTrace", (PyObject *)&ProbeTraceType) < 0
        || PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0
        || PyModule_AddObjectRef(m, "PageQueue", (PyObject *)&PageQueueType) < 0
        || PyModule_AddObjectRef(m, "ProfileStat", (PyObject *)&ProfileStatType) < 0
        || PyModule_AddObjectRef(m, "StackMax", (PyObject *)&StackMaxType) < 0
        || PyModule_AddIntConstant(m, "PROBE_MAX_ARGS", PROBE_MAX_ARGS) < 0)
        goto fail;
    /* A Python handler called by a C dispatcher (or C list function) finds
     * the traced frame one up: no C callable adds a frame. */
    if (PyModule_AddIntConstant(m, "RECORD_BYTES", (long)sizeof(Rec)) < 0
        || PyModule_AddIntConstant(m, "DIRECT", 1) < 0 || PyModule_AddIntConstant(m, "LISTED", 1) < 0
        || PyModule_AddIntConstant(m, "GRAPH_STACK", GRAPH_STACK) < 0
        || PyModule_AddIntConstant(m, "G_FUNC", G_FUNC) < 0
        || PyModule_AddIntConstant(m, "G_NOTRACE", G_NOTRACE) < 0
        || PyModule_AddIntConstant(m, "G_FILTERED", G_FILTERED) < 0)
        goto fail;
    PyObject *all = Py_BuildValue("[ssssssssssssssssssssssssssssssssssssssss]", "Ip", "CodeTable", "Ring", "Encoder",
                                  "PageQueue",
                                  "RECORD_BYTES", "GRAPH_STACK", "G_FUNC", "G_NOTRACE", "G_FILTERED",
                                  "Switch", "ProbeTrace", "PROBE_MAX_ARGS",
                                  "DIRECT", "LISTED", "offset_dispatcher", "catch_sigterm",
                                  "quiet_thread", "quiet_until_program", "name_thread", "use_tool_id_wrapper",
                                  "audit_dispatch", "audit_hook_armed",
                                  "entry_dispatcher",
                                  "dispatcher", "list_func", "ops_entry", "function_entry",
                                  "graph_event", "graph_exc_event", "graph_gated_event", "graph_retval_event",
                                  "graph_args_event", "ProfileStat", "profile_event", "StackMax", "stack_check",
                                  "call_dispatcher", "graph_c_event", "recursion_guard");
    if (all == NULL || PyModule_AddObject(m, "__all__", all) < 0)
        goto fail;
    Py_DECREF(sys);
    Py_DECREF(mon);
    return m;
fail:
    Py_XDECREF(sys); Py_XDECREF(mon); Py_XDECREF(m);
    return NULL;
}
