/* What every file of the C hot path shares: CPython (through internals.h),
 * the objects module.c fetches once at import, and the type objects module.c
 * registers.  Each concern's own types and hot helpers are in its header. */
#ifndef FENTRY_UTIL_H
#define FENTRY_UTIL_H

#include "internals.h"
#include <stdint.h>
#include <string.h>

extern PyObject *DISABLE;           /* sys.monitoring.DISABLE */
extern PyObject *getframe;          /* sys._getframe */
extern PyObject *int0, *int1;       /* sys._getframe's arguments, and 1 */
extern PyObject *s_tb, *s_errors, *s_co_qualname, *s_original, *s_hook;   /* interned names */

extern PyTypeObject IpType, CodeTableType, RingType, EncoderType, PageQueueType, SwitchType,
                    ProbeTraceType, TrampType,
                    ProfileStatType, ProfHandlerType, StackMaxType, StackCheckType;

/* The module's functions, each table in the file of its concern. */
extern PyMethodDef dispatch_functions[], quiet_functions[], sigterm_functions[], tool_id_functions[],
                   profile_functions[], stack_functions[], graph_values_functions[],
                   audit_functions[], ccall_functions[], guard_functions[];

/* fentry's own threads (the agent's), whose events are ignored (quiet.c). */
#if defined(__GNUC__)
extern __thread int thread_quiet __attribute__((tls_model("initial-exec")));
#else
extern _Thread_local int thread_quiet;
#endif

static inline int
thread_is_quiet(void)
{
    return thread_quiet;
}

#endif
