"""Reading logs in chunks of events, for the bounded-memory path (:mod:`analyzer.streaming`).

:class:`ChunkedRead` yields normalized frames of about ``size`` events, file after file:
the project's own JSONL trail (a rotated series, globs, single large files) in blocks of lines,
Parquet exports in row groups, and CSV, sshd/syslog, web access, Windows and Kubernetes
(JSON lines) files through their readers' ``read_chunks``, so that memory holds one chunk;
CloudTrail files (single documents) are read whole, one chunk per file. A database's pieces
come the same way
(``pieces=``, :class:`analyzer.store.DatabaseEvents`). After the iteration,
:attr:`ChunkedRead.result` holds the same accounting as :func:`analyzer.sources.read_events`
of the same paths (records read, used, set aside, skipped), with an empty frame.

Chunks come in file order and, within a file, in line (row) order; they are not sorted by
time across files (the features do not need it: a block of windows reads every chunk that
holds events of its hours).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.sources import (
    ReaderOptions,
    ReadProgress,
    archive_accounting,
    expand_paths,
    read_pieces,
)
from analyzer.sources._base import ReadResult, empty_frame, merge_skipped

__all__ = ["ChunkedRead", "chunked_accounting", "read_chunks"]


class ChunkedRead:
    """An iterable of normalized frames of about ``size`` events (read once when iterated),
    and, once iterated, the read's accounting in :attr:`result`."""

    def __init__(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 size: int, format: str | None = None, since: Any = None, until: Any = None,
                 options: ReaderOptions | None = None, progress: ReadProgress | None = None,
                 pieces: Callable[[], Iterable[ReadResult]] | None = None,
                 **more: Any) -> None:
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        self.paths = paths
        #: what is read instead of the files at ``paths``: pieces of about ``size`` events
        #: each with its own accounting (a database's: :class:`analyzer.store.DatabaseEvents`)
        self.pieces = pieces
        self.size = size
        self.format = format
        self.since, self.until = since, until
        self.options = ReaderOptions.of(options, **more)
        self.progress = progress
        self.result: ReadResult | None = None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        archives: list[Path] = []
        pieces: list[ReadResult] = []
        used = 0
        if self.pieces is not None:
            read: Iterable[ReadResult] = self.pieces()
        else:
            read = read_pieces(expand_paths(self.paths, archives=archives), rows=self.size,
                               format=self.format, since=self.since, until=self.until,
                               options=self.options, progress=self.progress)
        for piece in read:
            used += len(piece.frame)
            pieces.append(dataclasses.replace(piece, frame=empty_frame()))
            if len(piece.frame):
                yield piece.frame
        self.result = chunked_accounting(pieces, archives, used)


def read_chunks(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                size: int = 500_000, format: str | None = None, since: Any = None,
                until: Any = None, **options: Any) -> ChunkedRead:
    """The logs at ``paths`` as chunks of about ``size`` events (see :class:`ChunkedRead`);
    the arguments are :func:`analyzer.sources.read_events`'."""
    return ChunkedRead(paths, size=size, format=format, since=since, until=until, **options)


def chunked_accounting(pieces: list[ReadResult], archives: list[Path], used: int
                       ) -> ReadResult:
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
                      skipped=skipped, notes=notes, used=used,
                      formats=tuple(f for p in pieces for f in p.formats))
