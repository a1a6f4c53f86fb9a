"""The kernel's ring-buffer pages, as ``per_cpu/cpuN/trace_pipe_raw`` gives
them, split into events: ``(timestamp, payload)``.

The layout is the kernel's (``kernel/trace/ring_buffer.c``, its
``events/header_page``, and libtraceevent's ``kbuffer-parse.c``)::

    u64 timestamp          the page's first time (the instance's trace_clock)
    local_t commit         bytes of data; bit 31: events were lost before
                           this page; bit 30: how many is stored after the data
    data                   events, each a u32 header: type_len (5 bits),
                           time_delta (27 bits), then by type_len:
        0                  u32 length (of itself and the payload), payload
        1..28              payload of type_len * 4 bytes
        29  PADDING        time_delta 0: the rest of the page is empty;
                           else a discarded event of u32 length, skipped
        30  TIME_EXTEND    u32 high bits of a delta too large for 27 bits
        31  TIME_STAMP     u32 high bits of an absolute time (its top bits
                           are the page's)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

_PAGE_HEAD = struct.Struct("<Qq")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
COMMIT_MASK = (1 << 27) - 1
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
PADDING, TIME_EXTEND, TIME_STAMP = 29, 30, 31
_TS_MSB = ~((1 << 59) - 1)      # an absolute stamp's bits kept from the page's time


def page_events(page: bytes, data_offset: int = 16) -> tuple[int, list[tuple[int, bytes]]]:
    """``(lost, events)`` of one page: ``lost`` is the number of events the
    kernel lost before it (-1: some, how many not known; 0: none), events
    are ``(timestamp, payload)`` in order."""
    ts, commit = _PAGE_HEAD.unpack_from(page, 0)
    size = commit & COMMIT_MASK
    lost = 0
    if commit & MISSED_EVENTS:
        lost = -1
        if commit & MISSED_STORED and data_offset + size + 8 <= len(page):
            lost = _U64.unpack_from(page, data_offset + size)[0]
    events: list[tuple[int, bytes]] = []
    pos, end = data_offset, min(data_offset + size, len(page))
    while pos + 4 <= end:
        head = _U32.unpack_from(page, pos)[0]
        type_len, delta = head & 0x1f, head >> 5
        pos += 4
        if type_len == PADDING:
            if delta == 0:
                break
            pos += _U32.unpack_from(page, pos)[0]
            ts += delta
        elif type_len == TIME_EXTEND:
            ts += delta + (_U32.unpack_from(page, pos)[0] << 27)
            pos += 4
        elif type_len == TIME_STAMP:
            ts = ((_U32.unpack_from(page, pos)[0] << 27) | delta) | (ts & _TS_MSB)
            pos += 4
        elif type_len == 0:
            length = _U32.unpack_from(page, pos)[0]
            ts += delta
            events.append((ts, page[pos + 4:pos + length]))
            pos += length
        else:
            ts += delta
            events.append((ts, page[pos:pos + type_len * 4]))
            pos += type_len * 4
    return lost, events


def iter_pages(data: bytes, page_size: int) -> Iterator[bytes]:
    """The pages of what was read from trace_pipe_raw, one at a time."""
    for start in range(0, len(data), page_size):
        yield data[start:start + page_size]
