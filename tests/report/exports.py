"""What the export tests share: recording real programs, reading the text
trace's calls, and reading each export back (checking its nesting)."""

from __future__ import annotations

import collections
import json
import os
import re
import struct
import zlib

from helpers import PROGRAMS, fentry

FAMILY = os.path.join(PROGRAMS, "family.py")
BUSY = os.path.join(PROGRAMS, "busy.py")

# function_graph's text: "   MainThread-123  | + 1.234 us   |    name() {" (or "name();")
GRAPH_LINE = re.compile(r"^\s*(?P<task>\S.*?)-(?P<tid>\d+)\s+\|(?P<dur>[^|]*)\|  (?P<body>.*)$")
CALL = re.compile(r"^(?P<indent> *)(?P<name>\S+)\(\)(?: \{|;)")
CLOSE = re.compile(r"^(?P<indent> *)\}")
# function's text: "   MainThread-123   [000] .....  12.345678: name <-caller"
FUNCTION_LINE = re.compile(r"^\s*(?P<task>\S.*?)-(?P<tid>\d+)\s+\[000\] \.{5}\s+[\d.]+: (?P<name>\S+) <-")


def record(tmp_path, name: str, *args: str) -> str:
    """``fentry record ARGS`` into tmp_path/NAME; its path."""
    dat = str(tmp_path / name)
    got = fentry("record", "-o", dat, *args)
    assert f"bytes of raw trace in {dat}" in got.stderr, got.stderr
    return dat


def report(dat: str, *args: str) -> str:
    got = fentry("report", "-i", dat, *args)
    assert got.returncode == 0, got.stderr
    return got.stdout


def export(dat: str, fmt: str, out: str, *args: str) -> str:
    got = fentry("report", "-i", dat, "--format", fmt, "-o", out, *args)
    assert got.returncode == 0 and got.stdout == "", got.stderr
    return got.stderr


def text_calls(text: str) -> dict[int, collections.Counter]:
    """Per thread id, how many times each function was entered: its
    ``name() {`` and ``name();`` lines (function_graph), or its lines
    (function)."""
    calls: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in text.splitlines():
        m = GRAPH_LINE.match(line)
        if m:
            c = CALL.match(m["body"])
            if c:
                calls[int(m["tid"])][c["name"]] += 1
            continue
        m = FUNCTION_LINE.match(line)
        if m:
            calls[int(m["tid"])][m["name"]] += 1
    return dict(calls)


def text_names(text: str) -> dict[int, str]:
    names = {}
    for line in text.splitlines():
        m = GRAPH_LINE.match(line) or FUNCTION_LINE.match(line)
        if m:
            names[int(m["tid"])] = m["task"]
    return names


def text_traced_ns(text: str) -> int:
    """The traced time: the durations of the outermost calls (a line at
    depth 0 that ends a call: ``name();`` or ``}``), in ns."""
    total = 0
    for line in text.splitlines():
        m = GRAPH_LINE.match(line)
        if not m:
            continue
        body = m["body"]
        if (CALL.match(body) and body.split("/*")[0].rstrip().endswith(";")) or CLOSE.match(body):
            if body.startswith(" "):
                continue
            usecs = m["dur"].strip(" +!#*@$").removesuffix("us").strip()
            total += round(float(usecs) * 1000)
    return total


def nested(intervals: list[tuple[int, int, str]]) -> list[str]:
    """Problems with intervals ``(start, end, name)`` that should nest
    as calls on one thread do (no two overlapping without one containing
    the other): [] if they do."""
    problems = []
    stack: list[tuple[int, int, str]] = []
    for start, end, name in sorted(intervals, key=lambda i: (i[0], -i[1])):
        if end < start:
            problems.append(f"{name} ends before it starts")
        while stack and stack[-1][1] <= start:
            stack.pop()
        if stack and end > stack[-1][1]:
            problems.append(f"{name} [{start}, {end}] overlaps {stack[-1][2]} {stack[-1][:2]}")
        stack.append((start, end, name))
    return problems


# ---------------------------------------------------------------- readers of the exports

def chrome_threads(path: str) -> dict:
    """tid -> {"name", "slices": [(start_ns, end_ns, name, args)], "instants": [...]}"""
    with open(path) as f:
        data = json.load(f)
    threads: dict[int, dict] = collections.defaultdict(
        lambda: {"name": None, "slices": [], "instants": [], "pid": None})
    for ev in data["traceEvents"]:
        t = threads[ev["tid"]] if ev.get("tid") else None
        if ev["ph"] == "M" and ev["name"] == "thread_name":
            t["name"] = ev["args"]["name"]
            t["pid"] = ev["pid"]
        elif ev["ph"] == "X":
            start = round(ev["ts"] * 1000)
            t["slices"].append((start, start + round(ev["dur"] * 1000), ev["name"],
                                ev.get("args", {})))
        elif ev["ph"] == "i":
            t["instants"].append((round(ev["ts"] * 1000), ev["name"], ev.get("args", {})))
    return {tid: t for tid, t in threads.items() if tid}


def perfetto_threads(path: str) -> dict:
    """Reads a Perfetto trace back with Perfetto's protos; checks, per packet
    sequence, that interned names are defined before use and that slices
    begin and end in a balanced way, in time order.  tid ->
    {"name", "pid", "slices": [(start, end, name, annotations)], "instants": [...]}"""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
        BUILTIN_CLOCK_MONOTONIC,
        Trace,
        TracePacket,
        TrackEvent,
    )
    with open(path, "rb") as f:
        trace = Trace.FromString(f.read())
    packets = list(trace.packet)
    assert packets[0].HasField("clock_snapshot")
    assert packets[0].clock_snapshot.primary_trace_clock == BUILTIN_CLOCK_MONOTONIC
    processes = {}
    tracks = {}
    sequences: dict[int, dict] = {}
    for p in packets:
        seq = p.trusted_packet_sequence_id
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            if d.HasField("process"):
                processes[d.uuid] = d.process
            elif d.HasField("thread"):
                assert d.parent_uuid in processes, "a thread track before its process's"
                assert d.thread.pid == processes[d.parent_uuid].pid
                tracks[d.uuid] = d.thread
        if p.sequence_flags & TracePacket.SEQ_INCREMENTAL_STATE_CLEARED:
            assert p.first_packet_on_sequence and seq not in sequences
            track = p.trace_packet_defaults.track_event_defaults.track_uuid
            assert p.trace_packet_defaults.timestamp_clock_id == BUILTIN_CLOCK_MONOTONIC
            sequences[seq] = {"track": track, "names": {}, "stack": [], "slices": [],
                              "instants": [], "last": 0}
        if not p.HasField("track_event"):
            continue
        assert p.sequence_flags & TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
        s = sequences[seq]
        for n in p.interned_data.event_names:
            assert n.iid not in s["names"]
            s["names"][n.iid] = n.name
        ev = p.track_event
        assert p.timestamp >= s["last"], "events of a sequence out of time order"
        s["last"] = p.timestamp
        notes = {a.name: a.WhichOneof("value") and getattr(a, a.WhichOneof("value"))
                 for a in ev.debug_annotations}
        name = s["names"][ev.name_iid] if ev.HasField("name_iid") else ev.name
        if ev.type == TrackEvent.TYPE_SLICE_BEGIN:
            s["stack"].append((p.timestamp, name, notes))
        elif ev.type == TrackEvent.TYPE_SLICE_END:
            assert s["stack"], "a slice ends that never began"
            start, bname, bnotes = s["stack"].pop()
            s["slices"].append((start, p.timestamp, bname, {**bnotes, **notes}))
        elif ev.type == TrackEvent.TYPE_INSTANT:
            s["instants"].append((p.timestamp, name, notes))
    threads = {}
    for s in sequences.values():
        assert not s["stack"], f"slices never ended: {s['stack']}"
        t = tracks[s["track"]]
        threads[t.tid] = {"name": t.thread_name, "pid": t.pid, "slices": s["slices"],
                          "instants": s["instants"]}
    return threads


def speedscope_profiles(path: str) -> dict:
    """Checks each evented profile's O/C events nest and are in time order
    within [startValue, endValue]; tid -> {"name", "slices": [(start, end, name)]}"""
    with open(path) as f:
        data = json.load(f)
    frames = data["shared"]["frames"]
    out = {}
    for prof in data["profiles"]:
        assert prof["type"] == "evented" and prof["unit"] == "nanoseconds"
        stack, slices, last = [], [], prof["startValue"]
        for ev in prof["events"]:
            assert prof["startValue"] <= last <= ev["at"] <= prof["endValue"]
            last = ev["at"]
            if ev["type"] == "O":
                stack.append((ev["frame"], ev["at"]))
            else:
                assert stack and stack[-1][0] == ev["frame"], "a frame closed that is not on top"
                frame, start = stack.pop()
                slices.append((start, ev["at"], frames[frame]["name"]))
        assert not stack
        # "NAME-TID", after "PROCESS [PID] " when there are several, before " (N events lost)"
        tid = int(re.search(r"-(\d+)(?: \(\d+ events lost\))?$", prof["name"])[1])
        out[tid] = {"name": prof["name"], "slices": slices}
    return out


def counts(slices) -> collections.Counter:
    return collections.Counter(s[2] for s in slices)


# ---------------------------------------------------------------- PNG (a screenshot)

def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(
            v for j in range(0, stride, 4) for v in line[j:j + 3]))
        prev = line
    return width, height, rows
