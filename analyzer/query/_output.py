"""What a query writes: the original JSON lines, CSV, an aligned text table, or the
normalized events frame."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import ConfigError
from analyzer.events import FRAME_COLUMNS, formula_safe, printable
from analyzer.query._records import DEFAULT_COLUMNS, QUERY_COLUMNS, Batch

__all__ = ["frame_from_batches", "write_csv", "write_jsonl", "write_table"]

_S = pa.string()


def write_jsonl(batches: Iterable[Batch], out: IO[bytes]) -> int:
    """Write each matching record as its original JSON line; returns the count."""
    count = 0
    for batch in batches:
        lines = batch.table.column("record").to_pylist()
        out.write("\n".join(lines).encode("utf-8") + b"\n")
        count += len(lines)
    return count


def _text_columns(table: pa.Table, columns: Sequence[str]) -> list[list[str]]:
    """The chosen columns as lists of display strings (empty for null)."""
    result = []
    for name in columns:
        column = table.column(name)
        if name == "timestamp":
            column = pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ")
        elif not pa.types.is_string(column.type):
            column = pc.cast(column, _S)
        result.append(["" if v is None else v for v in column.to_pylist()])
    return result


def _check_columns(columns: Sequence[str]) -> None:
    unknown = [c for c in columns if c not in QUERY_COLUMNS]
    if unknown:
        raise ConfigError(f"unknown column(s): {', '.join(unknown)}; "
                          f"known: {', '.join(QUERY_COLUMNS)}")


def write_csv(batches: Iterable[Batch], out: IO[str],
              columns: Sequence[str] = DEFAULT_COLUMNS, *, raw: bool = False) -> int:
    """Write matching records as CSV with a header row; returns the count.

    Values a spreadsheet would run as formulas get a leading ``'``
    (:func:`~analyzer.events.formula_safe`) unless ``raw``.
    """
    _check_columns(columns)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for batch in batches:
        values = _text_columns(batch.table, columns)
        if not raw:
            values = [[formula_safe(v) for v in column] for column in values]
        writer.writerows(zip(*values, strict=True))
        count += batch.table.num_rows
    return count


def write_table(batches: Iterable[Batch], out: IO[str],
                columns: Sequence[str] = DEFAULT_COLUMNS, *, max_width: int = 60,
                page: int = 1000) -> int:
    """Write matching records as an aligned text table; returns the count.

    Column widths are taken from the first ``page`` rows (and the headers), so the table
    streams: a later, longer value is cut with ``…`` rather than holding every row back.
    Cells never exceed ``max_width`` characters; control characters are shown escaped.
    """
    _check_columns(columns)
    widths: list[int] | None = None
    pending: list[tuple[str, ...]] = []
    count = 0

    def emit(rows: list[tuple[str, ...]]) -> None:
        assert widths is not None
        for row in rows:
            cells = [_cell(v, w).ljust(w) for v, w in zip(row, widths, strict=True)]
            out.write("  ".join(cells).rstrip() + "\n")

    for batch in batches:
        values = _text_columns(batch.table, columns)
        rows = [tuple(_clean(v) for v in row) for row in zip(*values, strict=True)]
        count += len(rows)
        if widths is None:
            pending.extend(rows)
            if len(pending) < page:
                continue
            widths = _widths(columns, pending, max_width)
            out.write(_header(columns, widths))
            emit(pending)
            pending = []
        else:
            emit(rows)
    if widths is None:
        widths = _widths(columns, pending, max_width)
        out.write(_header(columns, widths))
        emit(pending)
    return count


def _clean(value: str) -> str:
    return printable(value)


def _cell(value: str, width: int) -> str:
    return value if len(value) <= width else value[:max(width - 1, 0)] + "…"


def _widths(columns: Sequence[str], rows: list[tuple[str, ...]], max_width: int) -> list[int]:
    widths = [len(c) for c in columns]
    for row in rows:
        for k, value in enumerate(row):
            if len(value) > widths[k]:
                widths[k] = len(value)
    return [min(w, max_width) for w in widths]


def _header(columns: Sequence[str], widths: list[int]) -> str:
    head = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return f"{head}\n{rule}\n"


def frame_from_batches(batches: Iterable[Batch]) -> pd.DataFrame:
    """The normalized events frame (DESIGN contract 3) of a scan's matches, in scan order."""
    from analyzer.sources import arrow_to_frame, empty_frame

    tables = [b.table for b in batches]
    if not tables:
        return empty_frame()
    table = pa.concat_tables(tables)
    columns = {name: table.column(name) for name in FRAME_COLUMNS if name != "timestamp"}
    stamps = pd.Series(table.column("timestamp").to_pandas())
    return arrow_to_frame(columns, timestamps=stamps)
