"""Raw-byte pre-filters of the scan: find the lines worth parsing without parsing them.

Each only ever saves work: a line it lets through is still parsed and checked exactly, and it
never drops a line that could match (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from analyzer.events import format_timestamp
from analyzer.query._filters import ESCAPE, Filter

__all__ = ["line_spans", "literal_spans", "raw_bounds", "time_keep"]

_TS_PREFIX = b'{"@timestamp":"'
_TS_LEN = 27  # 2026-01-02T03:04:05.000000Z


def raw_bounds(flt: Filter) -> tuple[bytes | None, bytes | None]:
    """``since`` and ``until`` as the logger writes ``@timestamp``, for :func:`time_keep`."""
    def fmt(moment: datetime | None) -> bytes | None:
        return None if moment is None else format_timestamp(moment).encode("ascii")
    return fmt(flt.since), fmt(flt.until)


def line_spans(block: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every line of ``block[:size]`` (``end`` at its newline)."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8, count=size) == 10)
    starts = np.empty_like(ends)
    starts[0:1] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends


def literal_spans(block: bytes, size: int,
                  literals: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of the lines of ``block[:size]`` holding any of ``literals``, in order,
    each once."""
    starts: list[int] = []
    ends: list[int] = []
    find, rfind = block.find, block.rfind
    for literal in literals:
        if literal == ESCAPE:  # a two-byte pattern bytes.find is slow on: numpy finds it
            if block.find(b"\\", 0, size) == -1:  # one fast memchr, the common case
                continue
            raw = np.frombuffer(block, dtype=np.uint8, count=size)
            at = np.flatnonzero((raw[:-1] == 92) & (raw[1:] == 117))
            if len(at):
                line_ends = np.flatnonzero(raw == 10)
                index = np.unique(np.searchsorted(line_ends, at))
                starts.extend((np.where(index > 0, line_ends[index - 1] + 1, 0)).tolist())
                ends.extend(line_ends[index].tolist())
            continue
        pos = find(literal, 0, size)
        while pos != -1:
            start = rfind(b"\n", 0, pos) + 1
            end = find(b"\n", pos)
            starts.append(start)
            ends.append(end)
            pos = find(literal, end, size)
    start_arr = np.asarray(starts, dtype=np.int64)
    end_arr = np.asarray(ends, dtype=np.int64)
    if len(literals) > 1 and len(start_arr):
        start_arr, index = np.unique(start_arr, return_index=True)
        end_arr = end_arr[index]
    return start_arr, end_arr


def time_keep(block: bytes, starts: np.ndarray, ends: np.ndarray,
              bounds: tuple[bytes | None, bytes | None]) -> np.ndarray:
    """False for lines whose raw ``@timestamp`` is certainly outside the bounds."""
    since, until = bounds
    keep = np.ones(len(starts), dtype=bool)
    if not len(starts):
        return keep
    buf = np.frombuffer(block, dtype=np.uint8)
    width = len(_TS_PREFIX) + _TS_LEN + 1  # prefix, the stamp and its closing quote
    usable = (ends - starts) >= width
    idx = starts[usable]
    if not len(idx):
        return keep
    head = buf[idx[:, None] + np.arange(width)]
    shaped = (head[:, :len(_TS_PREFIX)] == np.frombuffer(_TS_PREFIX, np.uint8)).all(axis=1)
    stamp = head[:, len(_TS_PREFIX):len(_TS_PREFIX) + _TS_LEN]
    shaped &= (stamp[:, 26] == ord("Z")) & (stamp[:, 19] == ord(".")) \
        & (stamp[:, 10] == ord("T")) & (head[:, -1] == ord('"'))
    digits = stamp[:, [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, *range(20, 26)]]
    shaped &= ((digits >= ord("0")) & (digits <= ord("9"))).all(axis=1)
    text = np.ascontiguousarray(stamp).view(f"S{_TS_LEN}").ravel()
    outside = np.zeros(len(idx), dtype=bool)
    if since is not None:
        outside |= text < np.bytes_(since)
    if until is not None:
        outside |= text >= np.bytes_(until)
    sub = keep[usable]
    sub &= ~(shaped & outside)
    keep[usable] = sub
    return keep
