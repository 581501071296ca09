"""The records of one block of a trail: parse the lines worth parsing against the result's
projection, open sealed records, check each record exactly, and build the result table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import SchemaError
from analyzer.query._filters import Filter
from analyzer.query._match import as_bool, match_columns
from analyzer.query._prefilter import line_spans, literal_spans, time_keep
from analyzer.sources import Rejected
from analyzer.sources.jsonlines import (
    ENVELOPE_COLUMN,
    JsonLinesParser,
    ecs_columns,
    ecs_schema,
    ecs_type,
    first_of_lists,
    flatten,
    open_sealed,
    parse_stamps,
    refusals,
)

__all__ = ["DEFAULT_COLUMNS", "PARSER", "QUERY_COLUMNS", "RESULT_SCHEMA", "Batch", "ScanStats",
           "cipher", "record_columns", "scan_block", "sealed_error"]

_S = pa.string()
_STAMP = pa.timestamp("us", "UTC")
#: Columns of every result table, in order: the normalized columns, the chain fields and
#: ``record``, the full JSON line as it is in the file.
QUERY_COLUMNS: tuple[str, ...] = (
    "timestamp", "level", "kind", "user", "action", "outcome", "source_ip", "resource",
    "message", "category", "country", "host", "session", "bytes", "sequence", "event_id",
    "hash", "record")
#: What the table and CSV outputs show unless told otherwise.
DEFAULT_COLUMNS: tuple[str, ...] = ("timestamp", "level", "kind", "user", "action", "outcome",
                                    "source_ip", "resource", "message")
#: The record columns parsed (from :data:`~analyzer.events.ECS_COLUMNS`): the result's, and
#: ``roles``, which sealed records open like the others.
_PARSED = (*QUERY_COLUMNS[:-1], "roles")

#: The Arrow schema of every result table (:attr:`Batch.table`).
RESULT_SCHEMA = pa.schema(
    [pa.field("timestamp", _STAMP)]
    + [pa.field(c, _S if c == "category" else ecs_type(c)) for c in QUERY_COLUMNS[1:-1]]
    + [pa.field("record", _S)])


PARSER = JsonLinesParser(ecs_schema(_PARSED))


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """Matching records from one block of one file.

    ``table`` has :data:`QUERY_COLUMNS`: ``timestamp`` as ``timestamp[us, UTC]``, ``sequence``
    and ``bytes`` as integers, ``category`` the first of ``event.category``, ``record`` the
    JSON line exactly as in the file; everything else strings (null when absent).
    """

    path: str
    table: pa.Table


@dataclasses.dataclass(slots=True)
class ScanStats:
    """What a scan read and skipped; filled in while the scan runs."""

    files: int = 0
    bytes_read: int = 0
    #: lines of the files read (records, blank or not), when every block was split into
    #: lines anyway (``lines_counted``); the literal pre-filter finds lines without a count,
    #: and counting them would cost a fifth of the scan
    lines: int = 0
    lines_counted: bool = True
    lines_parsed: int = 0
    matched: int = 0
    rejected: list[Rejected] = dataclasses.field(default_factory=list)
    #: archives left out of folders and globs (no reader opens them)
    archives: list[Path] = dataclasses.field(default_factory=list)

    @property
    def files_skipped(self) -> int:
        return len(self.archives)

    def summary(self) -> str:
        """The one line of accounting for a scan: lines read, matched, set aside, files
        not read and why."""
        read = f"{self.lines:,} records" if self.lines_counted else \
            f"{self.bytes_read / 1e6:,.1f} MB"
        text = f"{read} read in {self.files:,} file(s): {self.matched:,} matched"
        if self.rejected:
            text += f", {len(self.rejected):,} malformed skipped " \
                    f"(first: {self.rejected[0].describe()})"
        if self.archives:
            names = ", ".join(str(p) for p in self.archives[:3])
            more = f" and {len(self.archives) - 3:,} more" if len(self.archives) > 3 else ""
            text += f", {len(self.archives):,} file(s) not read (archives: {names}{more}; " \
                    "extract them first)"
        return text


def sealed_error(file: Path | str) -> SchemaError:
    """The error for a sealed trail read without its key (or ``clear_only``)."""
    return SchemaError(f"{file}: records are encrypted; pass the encryption key "
                       "(--encryption-key-file) or --clear-only")


def scan_block(block: bytes, size: int, offset: int, path: str, flt: Filter,
               literals: tuple[bytes, ...], bounds: tuple[bytes | None, bytes | None],
               stats: ScanStats, pending: list[Rejected],
               opener: Any = None, *, refuse_sealed: bool = False) -> pa.Table | None:
    """The matches among the lines of ``block[:size]``, which starts at ``offset`` in its
    file; malformed lines go to ``pending`` with their byte offsets."""
    starts = ends = None
    if literals:
        starts, ends = literal_spans(block, size, literals)
        stats.lines_counted = False  # only lines holding a literal were found: no count
        if not len(starts):
            return None
    if bounds != (None, None):
        if starts is None:
            starts, ends = line_spans(block, size)
            stats.lines += len(starts)
        keep = time_keep(block, starts, ends, bounds)
        if not keep.all():
            starts, ends = starts[keep], ends[keep]
            if not len(starts):
                return None
    if starts is None:
        buffer: bytes | memoryview = memoryview(block)[:size]  # every line, as it is
    else:
        buffer = b"\n".join([block[s:e] for s, e in zip(starts.tolist(), ends.tolist(),
                                                        strict=True)]) + b"\n"
    rejected: list[Rejected] = []
    table, rows, lines = _parse(buffer, path, rejected)
    stats.lines_parsed += lines
    if starts is None:
        starts, ends = line_spans(block, size)
        stats.lines += len(starts)
    result = None if table is None else \
        _select(table, rows, block, starts, ends, path, flt, rejected, opener,
                refuse_sealed=refuse_sealed)
    pending.extend(dataclasses.replace(item, line=offset + int(starts[item.line]))
                   for item in rejected)
    return result


def _parse(buffer: bytes | memoryview, path: str,
           rejected: list[Rejected]) -> tuple[pa.Table | None, np.ndarray, int]:
    """Parse lines; returns the table, each row's index among the buffer's lines, and the
    number of lines. Lines set aside carry their index among the lines as ``line`` (the
    caller turns it into a position)."""
    table, rows, n_lines = PARSER.parse(buffer, path, rejected)
    return (table if table.num_rows else None), rows, n_lines


def record_columns(records: pa.ChunkedArray) -> dict[str, pa.ChunkedArray] | None:
    """The result columns parsed from JSON records (one per element), by pyarrow.

    ``None`` when pyarrow refuses one of them (a field of an unexpected type); the caller
    then reads them one by one.
    """
    data = ("\n".join(records.to_pylist()) + "\n").encode("utf-8")
    rejected: list[Rejected] = []
    table, _, _ = PARSER.parse(data, "", rejected)
    if rejected or table.num_rows != len(records):
        return None
    columns = ecs_columns(flatten(table), QUERY_COLUMNS[:-1])
    columns["category"] = first_of_lists(columns["category"])
    return columns


def _select(table: pa.Table, rows: np.ndarray, block: bytes, starts: np.ndarray,
            ends: np.ndarray, path: str, flt: Filter, rejected: list[Rejected],
            opener: Any = None, *, refuse_sealed: bool = False) -> pa.Table | None:
    """Check the records a parse produced against the filter, exactly, and build the result."""
    flat = flatten(table)
    if opener is None and refuse_sealed and \
            flat.column(ENVELOPE_COLUMN["ct"]).null_count < flat.num_rows:
        raise sealed_error(path)
    col = ecs_columns(flat, _PARSED)
    opened: set[int] = set()
    failed: list[int] = []
    if opener is not None:
        opened, failures = open_sealed(flat, col, opener)
        for index, reason in failures:
            rejected.append(Rejected(path, int(rows[index]), reason))
            failed.append(index)

    # Records every reader refuses, set aside with the reader's reasons.
    stamps = parse_stamps(col["timestamp"])
    if stamps.type != _STAMP:  # the result's times are microseconds (the logger's own)
        stamps = pc.cast(stamps, _STAMP, safe=False)
    outcome = pc.fill_null(col["outcome"], "unknown")
    bad = np.zeros(flat.num_rows, dtype=bool)
    for mask, describe in refusals(col["action"], col["timestamp"],
                                   as_bool(pc.is_null(stamps)), outcome):
        for index in np.flatnonzero(mask & ~bad):
            rejected.append(Rejected(path, int(rows[index]), describe(int(index))))
        bad |= mask
    bad[failed] = True  # sealed records that do not open were set aside above
    keep = ~bad & match_columns(flt, col, stamps, outcome)
    if not keep.any():
        return None
    picked = rows[keep]
    mask = pa.array(keep)
    lines = [block[s:e] for s, e in zip(starts[picked].tolist(), ends[picked].tolist(),
                                        strict=True)]
    if opened:  # show the record as it was before sealing
        for position, index in enumerate(np.flatnonzero(keep).tolist()):
            if index in opened:
                lines[position] = orjson.dumps(opener.unseal(orjson.loads(lines[position])))
    records = pa.array(lines, type=pa.binary()).cast(_S)
    category = first_of_lists(col["category"].filter(mask))
    data = {"timestamp": stamps.filter(mask), "category": category, "record": records}
    for column in QUERY_COLUMNS:
        if column not in data:
            data[column] = col[column].filter(mask)
    data["outcome"] = outcome.filter(mask)
    return pa.table([data[f.name] for f in RESULT_SCHEMA], schema=RESULT_SCHEMA)


def cipher(keys: tuple[bytes, ...]) -> Any:
    from analyzer.crypto import RecordCipher  # the cryptography extra, only when needed

    return RecordCipher(keys=keys)
