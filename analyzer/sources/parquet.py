"""Reader for the Parquet analytics copy of a trail (``audit-analyzer export --parquet``).

An export is a folder of Parquet files partitioned by the UTC day of each record
(``DIR/dt=YYYY-MM-DD/part-0.parquet``, hive style, so DuckDB, Spark and Athena read it as
it is) with ``DIR/_manifest.json`` saying what it covers (:mod:`analyzer.export` writes
both). This module is the one place that knows the layout: the names, how a folder or URL
is recognised, how ``--since``/``--until`` prune whole day partitions before anything is
opened, and how the rows become the normalized frame.

A source is a local folder, one ``.parquet`` file, or a URL (``file:///data/export``,
``s3://bucket/export``) opened through ``pyarrow.fs`` (or fsspec, when installed, for
schemes pyarrow does not know). Only the columns the frame needs are read: never the
``record`` column, the largest.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from analyzer.errors import SchemaError, SourceError
from analyzer.events import FRAME_COLUMNS
from analyzer.sources._base import ReadResult, arrow_to_frame, empty_frame

__all__ = ["FORMAT", "MANIFEST_NAME", "OPTIONS", "PARTITION", "ROW_GROUP_ROWS", "Days",
           "check_clear", "day_filter", "is_source", "open_days", "read", "read_chunks",
           "read_manifest", "read_row_groups", "row_groups", "sniff"]

FORMAT = "parquet"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset({"include_alerts", "clear_only"})

#: The manifest written beside the partitions (its ``_`` prefix keeps it out of readers'
#: globs: pyarrow, Spark and Athena skip files starting with ``_`` or ``.``).
MANIFEST_NAME = "_manifest.json"
#: The partition column: the record's UTC day, ``YYYY-MM-DD``, as a hive directory.
PARTITION = "dt"
#: Rows per Parquet row group: the unit a distributed reader splits a day into. 128 Ki rows
#: of the export's columns are 10-40 MB uncompressed: big enough for fast scans, small
#: enough that a worker holds a few at a time.
ROW_GROUP_ROWS = 1 << 17
_PARTITIONING = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")
_MAGIC = b"PAR1"


def sniff(head: bytes) -> bool:
    """True for a Parquet file (it starts with ``PAR1``)."""
    return head.startswith(_MAGIC)


def _is_url(text: str) -> bool:
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum()


def is_source(path: str | os.PathLike[str]) -> bool:
    """True for what this reader opens as a whole: an export folder (a ``_manifest.json``
    or ``dt=`` partitions in it) or a URL. A single ``.parquet`` file is found by
    :func:`sniff` like any other log."""
    text = os.fspath(path)
    if _is_url(text):
        return True
    folder = Path(text)
    if not folder.is_dir():
        return False
    if (folder / MANIFEST_NAME).is_file():
        return True
    return any(child.is_dir() and child.name.startswith(f"{PARTITION}=")
               for child in folder.iterdir())


def _unreadable(text: str, exc: Exception) -> SourceError:
    """The one error line for a source that is no readable export; a URL says what the
    local engine reads at a URL (a JSON-lines object there is read by the Dask engine)."""
    hint = (" (the local engine reads a URL as a Parquet export; JSON lines at a URL: "
            "--engine dask)") if _is_url(text) else ""
    return SourceError(f"{text}: not a readable Parquet export{hint}: {exc}")


def _filesystem(text: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a URL; ``(None, text)`` for a local path."""
    if not _is_url(text):
        return None, text
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        try:
            import fsspec
        except ImportError:
            raise SourceError(f"{text}: cannot open this URL ({exc}); for other stores "
                              "install fsspec and its driver (e.g. s3fs)") from None
        filesystem, path = fsspec.core.url_to_fs(text)
        return fs.PyFileSystem(fs.FSSpecHandler(filesystem)), path


def read_manifest(source: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The export's manifest, or ``None`` when the source has none (a single file, or a
    folder of partitions written by another tool)."""
    text = os.fspath(source)
    filesystem, path = _filesystem(text)
    where = f"{path.rstrip('/')}/{MANIFEST_NAME}"
    try:
        if filesystem is None:
            if not Path(text).is_dir():
                return None
            data = Path(where).read_bytes()
        else:
            with filesystem.open_input_file(where) as handle:
                data = handle.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            return None
        raise SourceError(f"{where}: cannot read: {exc}") from None
    try:
        manifest = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"{where}: not a valid manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise SourceError(f"{where}: not a valid manifest (not a JSON object)")
    return manifest


@dataclasses.dataclass(frozen=True, slots=True)
class Days:
    """The part of an export a read opens: its dataset (only the files of the days kept),
    and how many files there are in all."""

    dataset: ds.Dataset
    files: tuple[str, ...]
    total: int

    def note(self, source: str) -> tuple[str, ...]:
        """The notice of a pruned read, for the read's accounting."""
        if len(self.files) == self.total:
            return ()
        return (f"{source}: {len(self.files):,} of {self.total:,} day partitions read (the "
                "others are outside --since/--until)",)


def open_days(source: str | os.PathLike[str], since: Any = None, until: Any = None) -> Days:
    """The files of an export (folder, file or URL) that may hold records in ``[since,
    until)``, as one dataset. Days outside are decided from the ``dt=`` folder names
    alone: their files are listed, never opened."""
    text = os.fspath(source)
    filesystem, path = _filesystem(text)
    try:
        info = (filesystem.get_file_info(path) if filesystem is not None else None)
        is_file = info.is_file if info is not None else Path(path).is_file()
        if is_file:
            files = [path]
            total = 1
        else:
            # a schema given up front: listing the folder opens no file
            listing = ds.dataset(path, format="parquet", partitioning=_PARTITIONING,
                                 filesystem=filesystem, schema=_PARTITIONING.schema)
            total = len(list(listing.get_fragments()))
            files = sorted(f.path for f in listing.get_fragments(
                filter=day_filter(since, until)))
        dataset = ds.dataset(files, format="parquet", filesystem=filesystem)
    except FileNotFoundError:
        raise SourceError(f"{text}: no such file or directory") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(text, exc) from None
    return Days(dataset, tuple(files), total)


def _utc(moment: Any) -> datetime:
    stamp = pd.Timestamp(moment)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else
            stamp.tz_convert("UTC")).to_pydatetime()


def day_filter(since: Any = None, until: Any = None) -> ds.Expression | None:
    """The partition filter keeping the days that may hold records in ``[since, until)``."""
    expression = None
    if since is not None:
        expression = ds.field(PARTITION) >= _utc(since).strftime("%Y-%m-%d")
    if until is not None:
        last = (_utc(until) - timedelta(microseconds=1)).strftime("%Y-%m-%d")
        bound = ds.field(PARTITION) <= last
        expression = bound if expression is None else expression & bound
    return expression


def check_clear(source: str, manifest: dict[str, Any] | None, *,
                clear_only: bool) -> None:
    """Refuse to read a copy exported with sealed fields as if they were clear."""
    if manifest is not None and manifest.get("encryption") == "sealed" and not clear_only:
        raise SchemaError(f"{source}: exported with --clear-only (the encrypted fields are "
                          "sealed in it); read it with --clear-only, or export the trail "
                          "again with its encryption key")


def _open_export(path: str | os.PathLike[str], since: Any, until: Any, *, clear_only: bool
                 ) -> tuple[str, Days, list[str]]:
    """The export's name, the days a read of ``[since, until)`` opens and the frame's columns
    it holds; refuses a sealed copy without ``clear_only`` and a folder that is no export."""
    text = os.fspath(path)
    check_clear(text, read_manifest(text), clear_only=clear_only)
    days = open_days(text, since, until)
    columns = [c for c in FRAME_COLUMNS if c in days.dataset.schema.names]
    missing = [c for c in ("timestamp", "action", "outcome", "kind", "event_id")
               if c not in columns]
    if days.files and missing:
        raise SchemaError(f"{text}: not an audit-analyzer export: missing column(s) "
                          f"{', '.join(missing)}")
    return text, days, columns


def read(path: str | os.PathLike[str], *, include_alerts: bool = False, since: Any = None,
         until: Any = None, clear_only: bool = False) -> ReadResult:
    """Read an export (folder, file or URL) into the normalized frame.

    Parameters
    ----------
    path
        An export folder, one of its ``.parquet`` files, or a URL of either.
    include_alerts
        Keep ``kind == "alert"`` rows (skipped and counted by default, as for the JSONL
        trail: the analyzer never scores its own alerts as activity).
    since, until
        Day partitions entirely outside ``[since, until)`` are not opened; the records of
        the days read are filtered exactly by :func:`analyzer.sources.read_events`.
    clear_only
        Accept an export made with ``--clear-only`` (its encrypted fields are empty here).
    """
    text, days, columns = _open_export(path, since, until, clear_only=clear_only)
    try:
        table = days.dataset.to_table(columns=columns) if days.files else None
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(text, exc) from None
    if table is None:
        return ReadResult(empty_frame(), records=0, notes=days.note(text))
    return _to_result(table, include_alerts, days.note(text))


def read_chunks(path: str | os.PathLike[str], *, rows: int, include_alerts: bool = False,
                since: Any = None, until: Any = None, clear_only: bool = False
                ) -> Iterator[ReadResult]:
    """:func:`read` in pieces of about ``rows`` records, in the export's order (day
    partitions, then row groups); each piece has its own accounting, the notice of pruned
    days comes with the first."""
    text, days, columns = _open_export(path, since, until, clear_only=clear_only)
    notes = days.note(text)
    if not days.files:
        yield ReadResult(empty_frame(), records=0, notes=notes)
        return
    pending: list[pa.RecordBatch] = []
    held = 0
    try:
        for batch in days.dataset.to_batches(columns=columns, batch_size=max(rows, 1)):
            pending.append(batch)
            held += batch.num_rows
            if held >= rows:
                yield _to_result(pa.Table.from_batches(pending), include_alerts, notes)
                pending, notes, held = [], (), 0
        if pending or notes:
            table = pa.Table.from_batches(pending) if pending else \
                days.dataset.schema.empty_table().select(columns)
            yield _to_result(table, include_alerts, notes)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(text, exc) from None


def _to_result(table: pa.Table, include_alerts: bool, notes: tuple[str, ...]) -> ReadResult:
    records = table.num_rows
    kind = pc.fill_null(table.column("kind"), "event")
    alerts = pc.equal(kind, "alert")
    skipped_alerts = 0
    alert_ids: frozenset[str] = frozenset()
    if not include_alerts and pc.any(alerts).as_py():
        alert_ids = frozenset(table.column("event_id").filter(alerts).to_pylist())
        skipped_alerts = pc.sum(alerts).as_py()
        table = table.filter(pc.invert(alerts))
    stamps = pd.Series(table.column("timestamp").to_pandas())
    frame = arrow_to_frame({c: table.column(c) for c in table.column_names
                            if c != "timestamp"}, timestamps=stamps)
    return ReadResult(frame, (), skipped_alerts, alert_ids, records=records, notes=notes)



# -- parts of an export, for a distributed reader (analyzer.engine) ----------------------------

def row_groups(source: str | os.PathLike[str], since: Any = None, until: Any = None
               ) -> tuple[Days, list[tuple[str, int]]]:
    """The days of ``source`` that a read of ``[since, until)`` opens, and for each of their
    files its number of row groups (read from the files' footers only)."""
    text = os.fspath(source)
    days = open_days(text, since, until)
    filesystem, _ = _filesystem(text)
    counts = []
    try:
        for file in days.files:
            counts.append((file, pq.ParquetFile(file, filesystem=filesystem).num_row_groups))
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(text, exc) from None
    return days, counts


def read_row_groups(source: str | os.PathLike[str], file: str, groups: tuple[int, ...], *,
                    include_alerts: bool = False) -> ReadResult:
    """Read row groups ``groups`` of ``file`` (a path from :func:`row_groups`) of the export
    ``source`` into the normalized frame, as :func:`read` does for the whole export. The
    manifest's ``--clear-only`` check is the caller's, once (:func:`check_clear`)."""
    text = os.fspath(source)
    filesystem, _ = _filesystem(text)
    try:
        parquet = pq.ParquetFile(file, filesystem=filesystem)
        columns = [c for c in FRAME_COLUMNS if c in parquet.schema_arrow.names]
        table = parquet.read_row_groups(list(groups), columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{file}: not a readable Parquet file: {exc}") from None
    missing = [c for c in ("timestamp", "action", "outcome", "kind", "event_id")
               if c not in columns]
    if missing:
        raise SchemaError(f"{file}: not an audit-analyzer export: missing column(s) "
                          f"{', '.join(missing)}")
    return _to_result(table, include_alerts, ())
