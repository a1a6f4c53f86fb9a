"""errors: one table of messages, one way to raise a positioned error.

As the kernel's ``trace_probe.h`` ERRORS table: every message lives here
once, and a parser raises ``TraceError(CODE, command, pos)``; the caret line
comes for free from the position.
"""

from __future__ import annotations

import errno
import os
import time

ERRORS: dict[str, str] = {
    # set_ftrace_filter / set_ftrace_notrace
    "BAD_FILTER_CMD": "Unknown filter command (expected GLOB:mod:MODGLOB)",
    "BAD_GLOB": "Invalid glob pattern",
    "EMPTY_GLOB": "Empty glob pattern",
    # the kernel's bare -EINVAL (ftrace filter writes have no error_log), said
    "NO_MATCH": "Invalid argument: no function matches it",
    # FUNC:WORD where FUNC is a function and WORD no command (ftrace_process_regex's -EINVAL)
    "NO_SUCH_COMMAND": "Invalid argument: no such command",
    # set_ftrace_filter commands (FUNC:COMMAND[:PARAM]): ftrace.c, trace_functions.c, trace_events.c
    "FILTER_CMD_NOTRACE": "Invalid argument: commands only work with set_ftrace_filter",
    "BAD_CMD_COUNT": "Invalid argument: the count must be a number",
    "BAD_CMD_PARAM": "Invalid argument: too many parameters for the command",
    "CMD_NEEDS_EVENT": "Invalid argument: expected SYSTEM:EVENT",
    "CMD_NO_EVENT": "Invalid argument: no such event",
    "CMD_NOT_SET": "No such device: no such command is set on those functions",
    # events/GRP/EVENT/trigger (trace_events_trigger.c): the kernel's bare -EINVAL and -EEXIST, said;
    # with CMD_NEEDS_EVENT, CMD_NO_EVENT and BAD_CMD_COUNT above
    "NO_SUCH_TRIGGER": "Invalid argument: no such trigger command",
    "TRIGGER_EXISTS": "File exists: the event has a trigger of that kind already",
    "TRIGGER_NEEDS_IF": "Invalid argument: expected a count, or if FILTER",
    "TRIGGER_NO_FILTER": "Invalid argument: no filter after if",
    # tracefs files
    "NO_SUCH_FILE": "No such file",
    "NOT_WRITABLE": "File is not writable",
    "NOT_READABLE": "File is not readable",
    "BAD_TRACER": "No such tracer",
    "BAD_BOOL": "Value must be 0 or 1",
    "BAD_OPTION": "Unknown trace option",
    "BAD_SIZE": "Buffer size must be a positive number of KB",
    # max_graph_depth, tracing_thresh, command counts: the kernel's kstrtoul -EINVAL and -ERANGE
    "BAD_NUMBER": "Invalid argument: expected a number",
    "NUMBER_RANGE": "Numerical result out of range",
    "NO_MEMORY": "Cannot allocate memory",
    "INSTANCE_EXISTS": "File exists: there is an instance of that name already",
    "BAD_INSTANCE_NAME": "Invalid instance name (letters, digits and _ . - only)",
    "INSTANCE_BUSY": "Device or resource busy: the instance's trace is being read",
    "MARKERS_OFF": "Invalid argument: the markers option is off",
    "RAW_MARKER_SIZE": "Invalid argument: a raw marker is a 4-byte id and at most 4060 bytes",
    "TRACING_OFF": "Bad file descriptor: tracing is off (tracing_on is 0)",
    "BAD_CLOCK": "Invalid argument: no such trace clock",
    # set_event: the kernel's bare -EINVAL (no error_log entry), said
    "SET_EVENT_NO_MATCH": "Invalid argument: no event matches it",
    # set_ftrace_pid and the other pid lists: the kernel's bare -EINVAL, said
    "PID_RANGE": "Operation not permitted: a pid is below 1073741824 (the kernel's pid lists)",
    "BAD_PID": "Invalid argument: a pid is a native thread id, in decimal",
    # the agent's control socket
    "PEER_REFUSED": "Connection refused: only the same user or root may connect",
    "NO_CONTROL_SOCKET": "Cannot open the control socket",
    "AGENT_FAILED": "fentry's agent failed (a bug in fentry: please report it)",
    # sys.monitoring
    "TOOL_ID_BUSY": "No free sys.monitoring tool id",
    "TOOL_ID_TAKEN": "The program asked for fentry's sys.monitoring tool id, and no other is free",
    # kprobes
    "BLACKLISTED": "This symbol is in fentry's kprobe blacklist (fentry itself cannot be probed)",
    # -- kprobe_events: the kernel's trace_probe.h ERRORS that apply to Python
    # (those of uprobes, BTF, refcounts and the like have no case here), then fentry's own
    "BAD_MAXACT_TYPE": "Maxactive is only for function exit",
    "BAD_MAXACT": "Invalid maxactive number",
    "MAXACT_TOO_BIG": "Maxactive is too big",
    "BAD_PROBE_ADDR": "Invalid probed address or symbol",
    "NON_UNIQ_SYMBOL": "The symbol is not unique",
    "BAD_RETPROBE": "Retprobe address must be an function entry",
    "BAD_ADDR_SUFFIX": "Invalid probed address suffix",
    "NO_GROUP_NAME": "Group name is not specified",
    "GROUP_TOO_LONG": "Group name is too long",
    "BAD_GROUP_NAME": "Group name must follow the same rules as C identifiers",
    "NO_EVENT_NAME": "Event name is not specified",
    "EVENT_TOO_LONG": "Event name is too long",
    "BAD_EVENT_NAME": "Event name must follow the same rules as C identifiers",
    "EVENT_EXIST": "Given group/event name is already used by another event",
    "RETVAL_ON_PROBE": "$retval is not available on probe",
    "BAD_STACK_NUM": "Invalid stack number",
    "BAD_ARG_NUM": "Invalid argument number",
    "BAD_VAR": "Invalid $-variable specified",
    "BAD_REG_NAME": "Invalid register name",
    "BAD_MEM_ADDR": "Invalid memory address",
    "BAD_IMM": "Invalid immediate value",
    "IMMSTR_NO_CLOSE": "String is not closed with '\"'",
    "FILE_ON_KPROBE": "File offset is not available with kprobe",
    "TOO_MANY_OPS": "Dereference is too much nested",
    "BAD_DEREF_OFFS": "Invalid dereference offset",
    "DEREF_OPEN_BRACE": "Dereference brace is not closed",
    "COMM_CANT_DEREF": "$comm can not be dereferenced",
    "BAD_FETCH_ARG": "Invalid fetch argument",
    "ARRAY_NO_CLOSE": "Array is not closed",
    "BAD_ARRAY_SUFFIX": "Array has wrong suffix",
    "BAD_ARRAY_NUM": "Invalid array size",
    "ARRAY_TOO_BIG": "Array number is too big",
    "BAD_TYPE": "Unknown type is specified",
    "BAD_STRING": "String accepts only memory argument",
    "BAD_BITFIELD": "Invalid bitfield",
    "ARG_NAME_TOO_LONG": "Argument name is too long",
    "NO_ARG_NAME": "Argument name is not specified",
    "BAD_ARG_NAME": "Argument name must follow the same rules as C identifiers",
    "USED_ARG_NAME": "This argument name is already used",
    "ARG_TOO_LONG": "Argument expression is too long",
    "NO_ARG_BODY": "No argument expression",
    "BAD_INSN_BNDRY": "Probe point is not an instruction boundary",
    "BAD_VAR_ARGS": "$arg* must be an independent parameter without name etc.",
    "DOUBLE_ARGS": "$arg* can be used only once in the parameters",
    "NEED_STRING_TYPE": "$comm and immediate-string only accepts string type",
    "TOO_MANY_ARGS": "Too many arguments are specified",
    # fentry's own, in the same style
    "BAD_PROBE_TYPE": "Unknown probe type (expected p, r or -)",
    "NO_PROBE_POINT": "Probe point is not specified",
    "BAD_LINE_NUM": "Invalid line number",
    "BAD_GLOBAL": "Invalid module global (expected @MOD:NAME)",
    "KERNEL_DEREF": "Offset dereference is not available; use attributes and items (item.sku, lines[0])",
    "BAD_REMOVE": "Removal takes -:[GRP/]EVENT or -:GRP/, then what to match: [POINT [FETCHARGS]]",
    "BUSY": "Device or resource busy: the event is enabled (disable it first)",
    "NO_SUCH_EVENT": "No such event",
    "NOT_C_FUNCTION": "Not a function: a probe takes a Python function, a C function or a C type's method",
    "C_OFFSET": "A C function has no offsets: probe its call (p) or its return (r)",
    "C_RETVAL": ("$retval of a C function is not available (sys.monitoring's C_RETURN does not give it);"
                 " a return probe says whether it raised, funcgraph-c how long it took"),
    "C_ARG_NUM": "Only $arg1 of a C function can be fetched (sys.monitoring's CALL gives the first argument only)",
    "C_NO_FRAME": "A C function has no frame: fetch $arg1, $comm, @MOD:NAME or an immediate",
    "NO_MODULE_YET": "Module not found yet; the probe is pending until it is imported",   # info
    # -- (end of kprobe_events)
    # -- dynamic_events: trace_dynevent.c, trace_eprobe.c (trace_probe.h's messages), trace_fprobe.c
    "NO_EVENT_INFO": "This requires both group and event name to attach",
    "BAD_ATTACH_EVENT": "Attached event does not exist",
    "BAD_ATTACH_ARG": "Attached event does not have this field",
    "NO_EP_FILTER": "No filter rule after 'if'",
    "NOSUP_BTFARG": "BTF is not available or not supported",
    "NO_BTFARG": "This variable is not found at this probe point",
    "NO_TRACEPOINT": "Tracepoint is not found",
    "BAD_TP_NAME": "Invalid character in tracepoint name",
    # an unknown first letter: the kernel's bare -EINVAL (create_dyn_event), said
    "BAD_DYN_EVENT": "Invalid argument: unknown event type (expected p, r, f, t, e, s or -)",
    # removing an event an eprobe is attached to: the kernel's -EBUSY of a referenced event
    "EVENT_IN_USE": "Device or resource busy: an eprobe is attached to the event (remove it first)",
    # -- (end of dynamic_events)
    # -- synthetic_events and s: in dynamic_events: the kernel's trace_events_synth.c SYNTH_ERR_*
    "SYNTH_ERR_BAD_NAME": "Illegal name",
    "SYNTH_ERR_INVALID_CMD": "Command must be of the form: <name> field[;field] ...",
    "SYNTH_ERR_INVALID_DYN_CMD": "Command must be of the form: s or -:[synthetic/]<name> field[;field] ...",
    "SYNTH_ERR_EVENT_EXISTS": "Event already exists",
    "SYNTH_ERR_TOO_MANY_FIELDS": "Too many fields",
    "SYNTH_ERR_INCOMPLETE_TYPE": "Incomplete type",
    "SYNTH_ERR_INVALID_TYPE": "Invalid type",
    "SYNTH_ERR_INVALID_FIELD": "Invalid field",
    "SYNTH_ERR_INVALID_ARRAY_SPEC": "Invalid array specification",
    # removing one a hist trigger's action names: the kernel's -EBUSY (se->ref), not logged
    "SYNTH_IN_USE": "Device or resource busy: a hist trigger's action uses the synthetic event",
    # -- (end of synthetic events)
    # -- event filters: the kernel's trace_events_filter.c messages
    "FILT_ERR_INVALID_OP": "Invalid operator",
    "FILT_ERR_TOO_MANY_OPEN": "Too many '('",
    "FILT_ERR_TOO_MANY_CLOSE": "Too few '('",
    "FILT_ERR_MISSING_QUOTE": "Missing matching quote",
    "FILT_ERR_OPERAND_TOO_LONG": "Operand too long",
    "FILT_ERR_EXPECT_STRING": "Expecting string field",
    "FILT_ERR_EXPECT_DIGIT": "Expecting numeric field",
    "FILT_ERR_ILLEGAL_FIELD_OP": "Illegal operation for field type",
    "FILT_ERR_FIELD_NOT_FOUND": "Field not found",
    "FILT_ERR_ILLEGAL_INTVAL": "Illegal integer value",
    "FILT_ERR_TOO_MANY_PREDS": "Too many terms in predicate expression",
    "FILT_ERR_INVALID_VALUE": "Invalid value (did you forget quotes)?",
    "FILT_ERR_NO_FILTER": "No filter found",
    # no field name where a term starts: the kernel's bare -EINVAL (FILT_ERR_ERRNO), caret at 0
    "FILT_ERR_EXPECT_FIELD": "Error",
    # -- (end of event filters)
    # -- the kernel's tracefs (kernel/mount.py): where it is, mounting it
    "TRACEFS_NOT_ROOT": "Permission denied: the kernel's tracefs is root's (run fentry as root)",
    "NO_TRACEFS": "No such device: this kernel has no tracefs",
    "NO_TRACEFS_MOUNT": "No such file or directory: tracefs is not mounted",
    "TRACEFS_MOUNT": "Cannot mount tracefs",
    # --to-kernel (kernel/to_kernel.py)
    "NO_KERNEL_INSTANCE": "No such file or directory: no such instance in the kernel's tracefs",
    "NO_KERNEL_MARKER": "Cannot write the kernel's trace_marker",
    # -- -K: the kernel's events in fentry's trace (kernel/instance.py)
    "KEVENT_SYNTAX": "Invalid argument: expected SUBSYS:EVENT or SUBSYS (as events/SUBSYS/EVENT)",
    "KFILTER_SYNTAX": "Invalid argument: expected SUBSYS:EVENT:FILTER",
    "NO_KEVENT": "No such file or directory: no such kernel event",
    "KFILTER_NOT_ENABLED": "Invalid argument: the event is not one -K enables",
    "KFILTER": "Invalid argument: the kernel refused the filter",
    "KINSTANCE": "Cannot make the kernel tracing instance",
    # -- (end of the kernel's tracefs)
    # -- hist triggers: the kernel's trace_events_hist.c HIST_ERR_* messages
    "HIST_ERR_NAMED_MISMATCH": "Named hist trigger doesn't match existing named trigger (includes variables)",
    "HIST_ERR_TRIGGER_EEXIST": "Hist trigger already exists",
    "HIST_ERR_TRIGGER_ENOENT_CLEAR": "Can't clear or continue a nonexistent hist trigger",
    "HIST_ERR_SET_CLOCK_FAIL": "Couldn't set trace_clock",
    "HIST_ERR_BAD_FIELD_MODIFIER": "Invalid field modifier",
    "HIST_ERR_FIELD_NOT_FOUND": "Couldn't find field",
    "HIST_ERR_EMPTY_ASSIGNMENT": "Empty assignment",
    "HIST_ERR_INVALID_SORT_MODIFIER": "Invalid sort modifier",
    "HIST_ERR_EMPTY_SORT_FIELD": "Empty sort field",
    "HIST_ERR_TOO_MANY_SORT_FIELDS": "Too many sort fields (Max = 2)",
    "HIST_ERR_INVALID_SORT_FIELD": "Sort field must be a key or a val",
    "HIST_ERR_NEED_NOHC_VAL": "Non-hitcount value is required for 'nohitcount'",
    # the kernel's bare -EINVAL of a hist command (not logged: it logs none), said
    "HIST_EINVAL": "Invalid argument: hist:keys=KEYS[:vals=...][:sort=...][:size=N][:name=NAME]"
                   "[:pause][:cont][:clear] [if FILTER], at most 3 keys and 2 values",
    "HIST_BAD_SIZE": "Invalid argument: size= is from 128 to 131072 (rounded up to a power of two)",
    # variables, expressions and actions (trace_events_hist.c's, in its order)
    "HIST_ERR_DUPLICATE_VAR": "Variable already defined",
    "HIST_ERR_VAR_NOT_UNIQUE": "Variable name not unique, need to use fully qualified name "
                               "(subsys.event.var) for variable",
    "HIST_ERR_TOO_MANY_VARS": "Too many variables defined",
    "HIST_ERR_MALFORMED_ASSIGNMENT": "Malformed assignment",
    "HIST_ERR_TOO_MANY_SUBEXPR": "Too many subexpressions (3 max)",
    "HIST_ERR_TIMESTAMP_MISMATCH": "Timestamp units in expression don't match",
    "HIST_ERR_SYNTH_EVENT_NOT_FOUND": "Couldn't find synthetic event",
    "HIST_ERR_SYNTH_TYPE_MISMATCH": "Param type doesn't match synthetic event field type",
    "HIST_ERR_SYNTH_COUNT_MISMATCH": "Param count doesn't match synthetic event field count",
    "HIST_ERR_FIELD_VAR_PARSE_FAIL": "Couldn't parse field variable",
    "HIST_ERR_ONX_NOT_VAR": "For onmax(x) or onchange(x), x must be a variable",
    "HIST_ERR_ONX_VAR_NOT_FOUND": "Couldn't find onmax or onchange variable",
    "HIST_ERR_FIELD_VAR_CREATE_FAIL": "Couldn't create field variable",
    "HIST_ERR_PARAM_NOT_FOUND": "Couldn't find param",
    "HIST_ERR_INVALID_PARAM": "Invalid action param",
    "HIST_ERR_ACTION_NOT_FOUND": "No action found",
    "HIST_ERR_TOO_MANY_SAVE_ACTIONS": "Can't have more than one save() action per hist",
    "HIST_ERR_ACTION_MISMATCH": "Handler doesn't support action",
    "HIST_ERR_NO_CLOSING_PAREN": "No closing paren found",
    "HIST_ERR_SUBSYS_NOT_FOUND": "Missing subsystem",
    "HIST_ERR_INVALID_SUBSYS_EVENT": "Invalid subsystem or event name",
    "HIST_ERR_INVALID_REF_KEY": "Using variable references in keys not supported",
    "HIST_ERR_VAR_NOT_FOUND": "Couldn't find variable",
    "HIST_ERR_INVALID_STR_OPERAND": "String type can not be an operand in expression",
    "HIST_ERR_EXPECT_NUMBER": "Expecting numeric literal",
    "HIST_ERR_UNARY_MINUS_SUBEXPR": "Unary minus not supported in sub-expressions",
    "HIST_ERR_DIVISION_BY_ZERO": "Division by zero",
    # the kernel's bare -EBUSY of removing a hist whose variables another hist reads, said
    "HIST_EBUSY": "Device or resource busy: another hist trigger reads a variable of this one",
    "HIST_BAD_OPTION": "Expected [GRP:]EVENT:keys=KEYS[:vals=...][:sort=...][:size=N]... (a hist trigger on EVENT)",
    "HIST_NO_EVENT": "No such event for the hist trigger",
    # -- (end of hist triggers)
}


# errno texts as the C library words them, longest first (a text may start another)
_ERRNO_TEXTS = sorted(((n, os.strerror(n)) for n in errno.errorcode), key=lambda nt: -len(nt[1]))


class TraceError(ValueError):
    """A rejected command: what was wrong, and where in the command."""

    def __init__(self, code: str, command: str = "", pos: int = 0,
                 subsystem: str = "ftrace", detail: str = "", level: str = "error") -> None:
        self.code = code
        self.level = level          # "info": logged for a command that was applied
        self.message = ERRORS[code] + (f": {detail}" if detail else "")
        self.subsystem = subsystem
        self.timestamp = time.monotonic()
        self.place(command, pos)
        super().__init__(code, command, self.pos)

    def place(self, command: str, pos: int) -> None:
        """The command the error is in, and where: a layer that knows the
        whole command (the line written) places an error raised below it."""
        self.command = command
        # The kernel may point one past the end (a value missing at the end).
        self.pos = max(0, min(pos, len(command) + 1))

    def __str__(self) -> str:
        # Rendered when shown, not when raised: the command, its caret and the
        # subsystem may be set after (by ``place``), and str() must agree with error_log.
        return self.render()

    @property
    def errno(self) -> int:
        """The errno the kernel's write would fail with: the one whose text
        the message starts with ("Device or resource busy": EBUSY), else
        EINVAL, the kernel's for a command it cannot parse."""
        for number, text in _ERRNO_TEXTS:
            if self.message.startswith(text):
                return number
        return errno.EINVAL

    def caret(self) -> str:
        return " " * self.pos + "^"

    def render(self) -> str:
        """The error_log entry, as the kernel writes it."""
        lines = [f"[{self.timestamp:12.6f}] {self.subsystem}: {self.level}: {self.message}"]
        if self.command:
            lines.append(f"  Command: {self.command}")
            lines.append("           " + self.caret())
        return "\n".join(lines)
