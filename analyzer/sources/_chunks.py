"""Reading logs in chunks of events, for the bounded-memory path (:mod:`analyzer.streaming`).

:class:`ChunkedRead` yields normalized frames of about ``size`` events, file after file:
the project's own JSONL trail (a rotated series, globs, single large files) in blocks of lines
and Parquet exports in row groups, so that memory holds one chunk; the other formats are read
whole, one chunk per file. After the iteration, :attr:`ChunkedRead.result` holds the same
accounting as :func:`analyzer.sources.read_events` of the same paths (records read, used,
set aside, skipped), with an empty frame.

Chunks come in file order and, within a file, in line (row) order; they are not sorted by
time across files (the features do not need it: a block of windows reads every chunk that
holds events of its hours).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.sources import archive_accounting, detect_format, expand_paths, read_events
from analyzer.sources._base import ReadResult, empty_frame, merge_skipped, within_period

__all__ = ["ChunkedRead", "read_chunks"]

# the options each chunked reader takes (the others are for other formats)
_JSONL_OPTIONS = ("include_alerts", "decrypt_keys", "clear_only")
_PARQUET_OPTIONS = ("include_alerts", "clear_only")


class ChunkedRead:
    """An iterable of normalized frames of about ``size`` events (read once when iterated),
    and, once iterated, the read's accounting in :attr:`result`."""

    def __init__(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 size: int, format: str | None = None, since: Any = None, until: Any = None,
                 **options: Any) -> None:
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        self.paths = paths
        self.size = size
        self.format = format
        self.since, self.until = since, until
        self.options = options
        self.result: ReadResult | None = None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        archives: list[Path] = []
        pieces: list[ReadResult] = []
        used = 0
        for path in expand_paths(self.paths, archives=archives):
            for piece in self._pieces(path):
                piece = within_period(piece, self.since, self.until)
                used += len(piece.frame)
                pieces.append(dataclasses.replace(piece, frame=empty_frame()))
                if len(piece.frame):
                    yield piece.frame
        self.result = _accounting(pieces, archives, used)

    def _pieces(self, path: Path | str) -> Iterator[ReadResult]:
        name = self.format or detect_format(path)
        if name == "jsonl":
            from analyzer.sources import jsonl

            yield from jsonl.read_chunks(path, rows=self.size, **_only(self.options,
                                                                       _JSONL_OPTIONS))
        elif name == "parquet":
            from analyzer.sources import parquet

            yield from parquet.read_chunks(path, rows=self.size, since=self.since,
                                           until=self.until,
                                           **_only(self.options, _PARQUET_OPTIONS))
        else:  # formats without a chunked reader: the file is one chunk
            yield read_events(path, format=name, **self.options)


def read_chunks(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                size: int = 500_000, format: str | None = None, since: Any = None,
                until: Any = None, **options: Any) -> ChunkedRead:
    """The logs at ``paths`` as chunks of about ``size`` events (see :class:`ChunkedRead`);
    the arguments are :func:`analyzer.sources.read_events`'."""
    return ChunkedRead(paths, size=size, format=format, since=since, until=until, **options)


def _only(options: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in names}


def _accounting(pieces: list[ReadResult], archives: list[Path], used: int) -> ReadResult:
    counted = all(p.records is not None for p in pieces)
    records = sum(p.records or 0 for p in pieces) if counted else None
    skipped = merge_skipped(*(p.skipped for p in pieces))
    notes = tuple(n for p in pieces for n in p.notes)
    if archives:
        more, archive_notes = archive_accounting(archives)
        records = None if records is None else records + len(archives)
        skipped = merge_skipped(skipped, more)
        notes += archive_notes
    return ReadResult(empty_frame(), tuple(r for p in pieces for r in p.rejected),
                      sum(p.skipped_alerts for p in pieces),
                      frozenset().union(*(p.alert_ids for p in pieces)), records=records,
                      skipped=skipped, notes=notes, used=used)
