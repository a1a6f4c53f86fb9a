"""The ``README`` file: a mini-HOWTO in the kernel's style, made from the file
table when it is read, so every file tracefs has is in it (a file with no
line in HELP yet is listed by name alone)."""

from __future__ import annotations

from collections.abc import Iterable

HEAD = """tracing mini-HOWTO (fentry: ftrace for Python programs):

In process: fentry.tracefs().read(FILE), .write(FILE, TEXT), .ls(DIR).
From outside: fentry -p PID read FILE, fentry -p PID write FILE TEXT.

# echo 0 > tracing_on : quick way to disable tracing
# echo 1 > tracing_on : quick way to re-enable tracing

 Important files:
"""

# name -> what it is, in the kernel's words where the file is the kernel's;
# continuation lines are indented under the first.
HELP: dict[str, str] = {
    "trace": "The static contents of the buffer\n"
             "To clear the buffer write into this file: echo > trace",
    "trace_pipe": "A consuming read to see the contents of the buffer",
    "current_tracer": "function and function_graph tracers (nop: none)",
    "available_tracers": "list of configured tracers for current_tracer",
    "error_log": "error log for failed commands (that support it)",
    "buffer_size_kb": "view and modify size of per thread buffer",
    "buffer_total_size_kb": "view total size of all thread buffers",
    "free_buffer": "write anything: shrink the buffer to its least\n"
                   "(with options/disable_on_free, tracing is turned off too)",
    "trace_clock": "change the clock used to order events\n"
                   "     local:   CLOCK_MONOTONIC (the default; from the TSC where the kernel uses it)\n"
                   "    global:   the same clock as local (one clock for all threads already)\n"
                   "   counter:   Not a clock, but just an increment\n"
                   "    uptime:   Jiffy clock from boot (CLOCK_MONOTONIC_COARSE)\n"
                   "      mono:   CLOCK_MONOTONIC, read with clock_gettime\n"
                   "  mono_raw:   CLOCK_MONOTONIC_RAW\n"
                   "      boot:   CLOCK_BOOTTIME\n"
                   "       tai:   CLOCK_TAI",
    "trace_marker": "Writes into this file writes into the trace buffer",
    "trace_marker_raw": "Writes into this file writes binary data into the trace buffer",
    "snapshot": "Like 'trace' but shows the content of the static\n"
                "snapshot buffer. Read the contents for more\n"
                "information",
    "instances": "Make sub-buffers with: mkdir instances/foo\n"
                 "Remove sub-buffer with rmdir",
    "trace_options": "Set format or modify how tracing happens\n"
                     "Disable an option by prefixing 'no' to the\n"
                     "option name",
    "options": "One 0/1 file per trace_options word",
    "tracing_on": "0 stops writing into the buffer, 1 starts again",
    "saved_cmdlines": "TID and name of every thread with a buffer",
    "available_filter_functions": "list of functions that can be filtered on",
    "enabled_functions": "the functions being traced now, and by what",
    "set_ftrace_filter": "echo function name in here to only trace these\n"
                         "functions\n"
                         "  accepts: func_full_name or glob-matching-pattern\n"
                         "  modules: Can select a group via module\n"
                         "   Format: :mod:<module-name>\n"
                         " triggers: a command to perform when function is hit\n"
                         "   Format: <function>:<trigger>[:count]\n"
                         "  trigger: traceon, traceoff\n"
                         "           enable_event:<system>:<event>\n"
                         "           disable_event:<system>:<event>\n"
                         "           stacktrace\n"
                         "           snapshot\n"
                         "           dump\n"
                         "           cpudump\n"
                         "  example: echo do_fault:traceoff > set_ftrace_filter\n"
                         "           echo do_trap:traceoff:3 > set_ftrace_filter\n"
                         "  To remove trigger: echo '!<function>:<trigger>' >> set_ftrace_filter",
    "set_ftrace_notrace": "echo function name in here to never trace.\n"
                          "  accepts: func_full_name, *func_end, func_begin*, *func_middle*",
    "set_ftrace_pid": "Write native thread id(s) to only function trace those threads\n"
                      "(function, function_graph)",
    "set_ftrace_notrace_pid": "Write native thread id(s) to not function trace those threads\n"
                              "(function, function_graph)",
    "set_event": "Enables events by name written into it\n"
                 "(GRP:EVENT, GRP:*, *:EVENT, !GRP:EVENT to disable)",
    "available_events": "list of all events: python:*, gc:*, audit:*, probe events",
    "set_event_pid": "Write native thread id(s) to only record events of those threads",
    "set_event_notrace_pid": "Write native thread id(s) to not record events of those threads",
    "set_graph_function": "Trace the nested calls of a function (function_graph)",
    "set_graph_notrace": "Do not trace the nested calls of a function (function_graph)",
    "max_graph_depth": "Trace a limited depth of nested calls (0 is unlimited)",
    "tracing_thresh": "function_graph: record only calls that take at least this many usecs\n"
                      "(0 records all)",
    "stack_tracer_enabled": "1 turns the stack tracer on (the kernel's\n"
                            "/proc/sys/kernel/stack_tracer_enabled)",
    "stack_trace": "Shows the max stack trace when active",
    "stack_max_size": "Shows current max stack size that was traced, in frames\n"
                      "Write into this file to reset the max size (trigger a\n"
                      "new trace)",
    "stack_trace_filter": "Like set_ftrace_filter but limits what stack_trace\n"
                          "traces",
    "kprobe_events": "Create/append/remove/show the Python dynamic events\n"
                     "  accepts: event-definitions (one definition per line)\n"
                     "   Format: p[:[<group>/][<event>]] <place> [<args>]\n"
                     "           r[maxactive][:[<group>/][<event>]] <place> [<args>]\n"
                     "           -:[<group>/][<event>]\n"
                     "    place: [<module>:]<qualname>[+<offset>][%return], <path>:<line>\n"
                     "           <module>:<cfunc>, <module>:<ctype>.<method> (a C function's call)",
    "dynamic_events": "Create/append/remove/show the generic dynamic events\n"
                      "  accepts: event-definitions (one definition per line)\n"
                      "   Format: p[:[<group>/][<event>]] <place> [<args>]\n"
                      "           r[maxactive][:[<group>/][<event>]] <place> [<args>]\n"
                      "           f[:[<group>/][<event>]] <func>[%return] [<args>]\n"
                      "           t[:[<group>/][<event>]] <tracepoint> [<args>]\n"
                      "           e[:[<group>/][<event>]] <attached-group>.<attached-event> [<args>] [if <filter>]\n"
                      "           s:[synthetic/]<event> <field>[;<field>]\n"
                      "           -:[<group>/][<event>]\n"
                      "     args: <name>=fetcharg[:type]; for 'f', $arg* and parameter names;\n"
                      "           for 't', $arg* and the tracepoint's field names;\n"
                      "           for 'e', $<field> of the attached event\n"
                      "    field: <stype> <name>;\n"
                      "    stype: u8/u16/u32/u64, s8/s16/s32/s64, pid_t,\n"
                      "           [unsigned] char/int/long",
    "synthetic_events": "Create/append/remove/show synthetic events\n"
                        "  Write into this file to define/undefine new synthetic events.\n"
                        "     example: echo 'myevent u64 lat; char name[]; long[] stack' >> synthetic_events",
    "kprobe_profile": "hits and misses of every probe event",
    "function_profile_enabled": "1 counts calls and time per function, in trace_stat/",
    "trace_stat": "trace_stat/function<TID>: one thread's function profile",
    "events": "Directory containing all trace event subsystems:\n"
              "    enable  - Write 0/1 to enable/disable tracing of all events\n"
              "events/<system>/<event>/trigger:\n"
              "    If set, a command to perform when event is hit\n"
              "    Format: <trigger>[:count][if <filter>]\n"
              "   trigger: traceon, traceoff, snapshot, stacktrace\n"
              "            enable_event:<system>:<event>\n"
              "            disable_event:<system>:<event>\n"
              "            enable_hist:<system>:<event>\n"
              "            disable_hist:<system>:<event>\n"
              "   example: echo 'traceoff:1 if x > 5' > events/kprobes/f/trigger\n"
              "   To remove a trigger: echo '!<trigger>' >> <system>/<event>/trigger\n"
              "   Filters and counts can be ignored when removing a trigger.\n"
              "      hist trigger\t- If set, event hits are aggregated into a hash table\n"
              "    Format: hist:keys=<field1[,field2,...]>\n"
              "            [:<var1>=<field|var_ref|numeric_literal>[,<var2>=...]]\n"
              "            [:values=<field1[,field2,...]>]\n"
              "            [:sort=<field1[,field2,...]>]\n"
              "            [:size=#entries]\n"
              "            [:pause][:continue][:clear]\n"
              "            [:name=histname1]\n"
              "            [:nohitcount]\n"
              "            [:<handler>.<action>]\n"
              "            [if <filter>]\n"
              "    A hist trigger variable can be:\n"
              "        - a reference to a field e.g. x=common_timestamp,\n"
              "        - a reference to another variable e.g. y=$x,\n"
              "        - a numeric literal: e.g. ms_per_sec=1000,\n"
              "        - an arithmetic expression: e.g. time_secs=common_timestamp/1000\n"
              "    hist trigger arithmetic expressions support addition(+), subtraction(-),\n"
              "    multiplication(*) and division(/) operators. An operand can be either a\n"
              "    variable reference, field or numeric literal.\n"
              "    Valid handlers are:\n"
              "        onmatch(matching.event)  - invoke on addition or update\n"
              "        onmax(var)               - invoke if var exceeds current max\n"
              "        onchange(var)            - invoke action if var changes\n"
              "    Valid actions are:\n"
              "        trace(<synthetic_event>,param list)  - generate synthetic event\n"
              "        save(field,...)                      - save current event fields\n"
              "        snapshot()                           - snapshot the trace buffer\n"
              "    The available modifiers are:\n"
              "            .hex        display a number as a hex value\n"
              "            .sym        display an address as a symbol\n"
              "            .sym-offset display an address as a symbol and offset\n"
              "            .execname   display a common_pid as a program name\n"
              "            .log2       display log2 value rather than raw number\n"
              "            .buckets=size  display values in groups of size rather than raw number\n"
              "            .usecs      display a common_timestamp in microseconds\n"
              "            .percent    display a number of percentage value\n"
              "            .graph      display a bar-graph of a value\n"
              "    events/<system>/<event>/hist shows the table, as the kernel's.",
    "README": "this file",
}


def readme_text(*tables: Iterable[str]) -> str:
    """The README: the files of ``tables`` (names, ``dir/name`` for a file
    under a directory, which stands for the directory), HELP's order first."""
    names: set[str] = {"instances", "trace_stat"}
    for table in tables:
        names |= {name.split("/", 1)[0] for name in table}
    order = [n for n in HELP if n in names] + sorted(names - HELP.keys())
    lines = [HEAD]
    for name in order:
        first, *rest = HELP.get(name, "").split("\n")
        lines.append(f"  {name}{_tabs(name)}- {first}\n" if first else f"  {name}\n")
        lines.extend(f"\t\t\t  {line}\n" for line in rest)
    return "".join(lines)


def _tabs(name: str) -> str:
    """The kernel's alignment: tabs to the fourth stop, at least one."""
    return "\t" * max(1, 3 - (len(name) + 2) // 8)
