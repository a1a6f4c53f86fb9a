"""``fentry report --format chrome``: Chrome's trace-event JSON.

The JSON object format (``{"traceEvents": [...]}``) that chrome://tracing,
Perfetto's UI, speedscope and most trace viewers open, written as it is
read, event by event: nothing is held but each thread's open calls.

- a function_graph call is a complete event (``"ph": "X"``, start ``ts``
  and ``dur``), named by its qualified name, its module as ``cat``; a call
  that was not an ordinary call and return says how in ``args``: a
  generator or coroutine resumed (``"entry": "resume"``/``"throw"``), left
  at a yield (``"exit": "yield"``), by an exception (``"raised": "KeyError"``),
  closed with a lower frame because its exit was lost (``"exit": "exit not
  seen"``), or still open when the trace ended (``"exit": "unfinished"``,
  ended at the thread's last timestamp);
- a function tracer entry (no duration) and a probe event are thread
  instants (``"ph": "i"``, ``"s": "t"``); an event's fields are its ``args``;
- lost records are an instant ``lost N events`` where they were lost;
- ``M`` events name each process (``process_name``) and thread (``thread_name``).

Timestamps are CLOCK_MONOTONIC, in microseconds with three decimals (the
recorded nanoseconds); ``pid`` and ``tid`` are the process's and thread's.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from ..raw import ENTRY, RETURN, UNWIND
from ..tracers.rename import TASK_RENAME
from .calls import BEGIN_WORDS, CALL, END, END_WORDS, EVENT, LOST, CallSink, Op, ThreadCalls, process_name
from .decode import ProcessStream

_FRACTION = tuple(f"{i:03d}" for i in range(1000))     # ns % 1000, as µs decimals
_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class _Names(dict[Any, str]):
    """A code's name and category, as JSON members: made when first asked for."""

    def __missing__(self, code: Any) -> str:
        text = self[code] = f'"name":{_dumps(code.co_qualname)},"cat":{_dumps(code.module or "?")}'
        return text


class ChromeReport(CallSink):
    """Writes the trace-event JSON to ``out`` (binary), drain by drain."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(out)
        self.write(b'{"traceEvents":[\n')
        self.empty = True           # no event written yet (each after the first starts ",\n")
        self.names = _Names()                   # code -> '"name":...,"cat":...'
        self.processes: dict[int, tuple[int, str]] = {}

    def process(self, stream: ProcessStream) -> None:
        self.processes[stream.number] = (stream.pid, process_name(stream))

    def new_thread(self, st: ThreadCalls) -> None:
        t = st.thread
        pid = st.stream.pid
        tid = t.tid or t.key
        st.data = (f',\n{{"ph":"X","pid":{pid},"tid":{tid},',
                   f',\n{{"ph":"i","s":"t","pid":{pid},"tid":{tid},')

    def thread_ops(self, st: ThreadCalls, ops: list[Op]) -> None:
        complete, instant = st.data
        names = self.names
        # Viewers order events by their timestamps: the plain calls (most of
        # them) first, in one pass, then the rest.
        frac = _FRACTION
        parts = [f'{complete}"ts":{o[4] // 1000}.{frac[o[4] % 1000]},"dur":{(o[1] - o[4]) // 1000}.'
                 f'{frac[(o[1] - o[4]) % 1000]},{names[o[2]]}}}'
                 for o in ops if o[0] == END and o[5] == RETURN and o[7] == ENTRY]
        app = parts.append
        for op in ops:
            if op[0] == END:
                if op[5] == RETURN and op[7] == ENTRY:
                    continue
                start = op[4]
                dur = op[1] - start
                args: dict[str, object] = {}
                if op[7] != ENTRY:
                    args["entry"] = BEGIN_WORDS[op[7]]
                if op[5] == UNWIND:
                    args["raised"] = op[6]
                elif op[5] != RETURN:
                    args["exit"] = END_WORDS[op[5]]
                app('%s"ts":%d.%03d,"dur":%d.%03d,%s,"args":%s}'
                    % (complete, start // 1000, start % 1000, dur // 1000, dur % 1000,
                       names[op[2]], _dumps(args)))
            elif op[0] == CALL:
                ts, code, caller = op[1], op[2], op[3]
                app('%s"ts":%d.%03d,%s,"args":{"caller":%s}}'
                    % (instant, ts // 1000, ts % 1000, names[code],
                       _dumps(caller.co_qualname if caller is not None else "<top>")))
            elif op[0] == EVENT and op[2] is TASK_RENAME:     # (thread_name is its last)
                ts, values = op[1], op[4]
                app('%s"ts":%d.%03d,"name":"task_rename","cat":"task","args":%s}'
                    % (instant, ts // 1000, ts % 1000,
                       _dumps({"oldcomm": values[1], "newcomm": values[2]})))
            elif op[0] == EVENT:
                ts, event = op[1], op[2]
                args = {"site": self.site_text(event, op[3])}
                for name, value, _ in self.event_fields(event, op[3], op[4]):
                    args[name] = value
                app('%s"ts":%d.%03d,"name":%s,"cat":"probe","args":%s}'
                    % (instant, ts // 1000, ts % 1000, _dumps(getattr(event, "name", "?")),
                       _dumps(args)))
            elif op[0] == LOST:
                ts, count = op[1], op[2]
                app('%s"ts":%d.%03d,"name":"lost %d events","cat":"fentry","args":{"lost":%d}}'
                    % (instant, ts // 1000, ts % 1000, count, count))
        if parts:
            self._emit("".join(parts))

    def _emit(self, text: str) -> None:
        if self.empty:
            text, self.empty = text[2:], False
        self.write(text.encode("utf-8", "surrogatepass"))

    def close(self) -> None:
        meta = []
        for pid, name in self.processes.values():
            meta.append(',\n{"ph":"M","pid":%d,"tid":0,"name":"process_name","args":{"name":%s}}'
                        % (pid, _dumps(f"{name} ({pid})")))
        for st in self.threads.values():
            t = st.thread
            pid, tid = st.stream.pid, t.tid or t.key
            meta.append(',\n{"ph":"M","pid":%d,"tid":%d,"name":"thread_name","args":{"name":%s}}'
                        % (pid, tid, _dumps(t.name)))
            if st.lost_total:
                meta.append(',\n{"ph":"M","pid":%d,"tid":%d,"name":"thread_lost_events",'
                            '"args":{"lost":%d}}' % (pid, tid, st.lost_total))
        if meta:
            self._emit("".join(meta))
        self.write(b'\n],"displayTimeUnit":"ns","otherData":{"exporter":"fentry",'
                   b'"clock":"CLOCK_MONOTONIC"}}\n')
        self.flush_out()
