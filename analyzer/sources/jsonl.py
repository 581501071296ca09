"""Reader for the project's own audit log (ECS JSON lines) -> the normalized frame.

The file is read in blocks of whole lines, each parsed by
:class:`~analyzer.sources.jsonlines.JsonLinesParser` against a projection of the fields the
frame needs (pyarrow first; line by line only for a block it refuses, setting bad lines aside
with their numbers and reasons). Encrypted records are opened here, one by one.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import SchemaError
from analyzer.events import FRAME_COLUMNS, duplicate_keys, may_contain
from analyzer.sources._base import (
    MAX_LINE_BYTES,
    ReadResult,
    Rejected,
    arrow_to_frame,
    open_log,
    read_failed,
    within_time_range,
)
from analyzer.sources.jsonlines import (
    ENVELOPE_COLUMN,
    JsonLinesParser,
    ecs_columns,
    ecs_schema,
    first_of_lists,
    flatten,
    open_sealed,
    parse_stamps,
    refusals,
    whole_line_blocks,
)

__all__ = ["FORMAT", "OPTIONS", "Reading", "read", "read_chunks", "read_handle",
           "record_holding", "records_holding", "sniff"]

FORMAT = "jsonl"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset({"include_alerts", "decrypt_keys", "clear_only"})

#: The columns read: the normalized frame's, and the first role (an extra column).
COLUMNS: tuple[str, ...] = (*FRAME_COLUMNS, "roles")
_SCHEMA = ecs_schema(COLUMNS)
PARSER = JsonLinesParser(_SCHEMA)


def sniff(head: bytes) -> bool:
    """True if the first line of ``head`` is an ECS audit record (``@timestamp`` + ``event``)."""
    first = head.lstrip().split(b"\n", 1)[0]
    try:
        doc = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and "@timestamp" in doc and isinstance(doc.get("event"), dict)


def read(path: str | os.PathLike[str], *, include_alerts: bool = False,
         decrypt_keys: tuple[bytes, ...] = (), clear_only: bool = False) -> ReadResult:
    """Read an audit log into the normalized frame.

    Parameters
    ----------
    path
        A JSON-lines audit log written by :class:`analyzer.logger.AuditLogger` (or any ECS
        JSON lines with the same fields).
    include_alerts
        Keep ``event.kind == "alert"`` records. Off by default: the analyzer never scores
        its own alerts as activity. Skipped alerts are counted in the result.
    decrypt_keys
        Keys for records encrypted at rest (:mod:`analyzer.crypto`). Without the right one an
        encrypted log is an error naming the key id, unless ``clear_only``.
    clear_only
        Read encrypted records' clear fields only (time, action, outcome, level, ...).
    """
    # one piece; unpacking runs the generator to its end, which closes the file
    (result,) = read_chunks(path, rows=None, include_alerts=include_alerts,
                            decrypt_keys=decrypt_keys, clear_only=clear_only)
    return result


def read_chunks(path: str | os.PathLike[str], *, rows: int | None,
                include_alerts: bool = False, decrypt_keys: tuple[bytes, ...] = (),
                clear_only: bool = False) -> Iterator[ReadResult]:
    """:func:`read` in pieces of about ``rows`` records (whole blocks of lines; ``None``: one
    piece), each with its own accounting; line numbers count from the file's start."""
    file = Path(path)
    handle, seekable = open_log(file)
    try:
        with handle:
            yield from read_handle(handle, str(file), seekable=seekable, rows=rows,
                                   include_alerts=include_alerts, decrypt_keys=decrypt_keys,
                                   clear_only=clear_only)
    except (OSError, EOFError, zlib.error) as exc:  # a truncated gzip file, an I/O error
        raise read_failed(file, exc) from None


def read_handle(handle: IO[bytes], where: str, *, seekable: bool = False,
                rows: int | None = None, include_alerts: bool = False,
                decrypt_keys: tuple[bytes, ...] = (), clear_only: bool = False
                ) -> Iterator[ReadResult]:
    """:func:`read_chunks` of an open binary stream: ``where`` names the source in rejected
    lines, numbered from 1 at the stream's start (a caller reading part of a file, as the
    Dask engine's byte ranges, shifts them)."""
    reading = Reading(where, include_alerts=include_alerts, decrypt_keys=decrypt_keys,
                      clear_only=clear_only)
    for _, block, end in whole_line_blocks(handle, seekable=seekable,
                                           block_bytes=_block_bytes(rows)):
        reading.feed(memoryview(block)[:end])
        if rows is not None and reading.rows >= rows:
            yield reading.result()
    if rows is None or reading.records:
        yield reading.result()


def _block_bytes(rows: int | None) -> int:
    # about 400 bytes a record: blocks of about the rows asked for, 1 to 32 MiB
    return 32 << 20 if rows is None else max(1 << 20, min(32 << 20, rows * 512))


class Reading:
    """An audit log parsed block by block as its bytes arrive: what :func:`read` does.

    A caller that reads the file's bytes for another purpose as well (verifying the chain
    and finding the recorded alerts in the same pass, as the report does) feeds the blocks
    here instead of opening the file a second time. Options as in :func:`read`.
    """

    def __init__(self, path: str | os.PathLike[str], *, include_alerts: bool = False,
                 decrypt_keys: tuple[bytes, ...] = (), clear_only: bool = False) -> None:
        self.path = os.fspath(path)
        self._include_alerts = include_alerts
        self._decrypt_keys = decrypt_keys
        self._clear_only = clear_only
        self._first_line = 1
        self._start()

    def _start(self) -> None:
        self._tables: list[pa.Table] = []
        self._line_numbers: list[np.ndarray] = []
        self._rejected: list[Rejected] = []
        self.records = 0  # non-blank lines: each is a row, a rejected line or a skipped alert
        self.rows = 0  # of them, rows parsed (alerts included until the result leaves them)

    def feed(self, block: memoryview) -> None:
        """Parse one block of whole lines (the lines that follow the last block fed)."""
        local: list[Rejected] = []
        table, rows, n_lines = PARSER.parse(block, self.path, local)
        self._rejected.extend(dataclasses.replace(r, line=self._first_line + r.line)
                              for r in local)
        self.records += table.num_rows + len(local)
        self.rows += table.num_rows
        if table.num_rows:
            self._tables.append(table)
            self._line_numbers.append(rows + self._first_line)
        self._first_line += n_lines

    def result(self) -> ReadResult:
        """The frame of the blocks fed since the last result, with the lines set aside and
        the alerts skipped; line numbers keep counting from the stream's start."""
        table = pa.concat_tables(self._tables) if self._tables else _SCHEMA.empty_table()
        numbers = np.concatenate(self._line_numbers) if self._line_numbers else \
            np.empty(0, dtype=np.int64)
        result = _to_result(table, numbers, self.path, self._rejected, self._include_alerts,
                            decrypt_keys=self._decrypt_keys, clear_only=self._clear_only)
        result = dataclasses.replace(result, records=self.records)
        self._start()
        return result


def records_holding(path: str | os.PathLike[str], literal: bytes
                    ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, record)`` for the records of an audit log that may hold
    ``literal`` (say ``b'"alert"'``): a cheap scan for the few records a command looks for.

    Only lines holding ``literal`` or an escape that could spell it are parsed
    (:func:`~analyzer.events.may_contain`); the caller decides on the parsed fields
    (``event.kind == "alert"``), never on the bytes. Lines that are not a JSON object,
    repeat a key (which value counts is ambiguous) or exceed the line limit are passed
    over: ``verify`` and the readers report them. Memory stays bounded by the line limit.
    """
    file = Path(path)
    handle, _ = open_log(file)
    limit = MAX_LINE_BYTES + 1
    try:
        with handle:
            number = 0
            while line := handle.readline(limit):
                number += 1
                if len(line) == limit and not line.endswith(b"\n"):
                    while (rest := handle.readline(1 << 16)) and not rest.endswith(b"\n"):
                        pass  # an over-long line: read past it, never hold it
                    continue
                doc = record_holding(line, literal)
                if doc is not None:
                    yield number, doc
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failed(file, exc) from None


def record_holding(line: bytes, literal: bytes) -> dict[str, Any] | None:
    """The record of one line (within the line limit) if it may hold ``literal``: the test
    :func:`records_holding` applies to each line, for a caller that has the lines."""
    if not may_contain(line, literal):
        return None
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and not duplicate_keys(line.rstrip(b"\r\n"), doc):
        return doc
    return None


def _to_result(table: pa.Table, numbers: np.ndarray, path: str, rejected: list[Rejected],
               include_alerts: bool, *, decrypt_keys: tuple[bytes, ...] = (),
               clear_only: bool = False) -> ReadResult:
    flat = flatten(table)
    columns = ecs_columns(flat, COLUMNS)
    keep = np.ones(len(numbers), dtype=bool)
    sealed = flat.column(ENVELOPE_COLUMN["ct"])
    if sealed.null_count < len(sealed) and not clear_only:
        _decrypt(flat, columns, decrypt_keys, numbers, keep, path, rejected)
    columns["category"] = first_of_lists(columns["category"])
    columns["roles"] = first_of_lists(columns["roles"])

    # What neither arrow nor pandas can read, or the frame cannot hold, is set aside with
    # its line number.
    ts_text = columns["timestamp"]
    timestamps = within_time_range(pd.Series(parse_stamps(ts_text).to_pandas()))
    outcome = pc.fill_null(columns["outcome"], "unknown")
    for mask, describe in refusals(columns["action"], ts_text, timestamps.isna().to_numpy(),
                                   outcome):
        for index in np.flatnonzero(mask & keep):
            rejected.append(Rejected(path, int(numbers[index]), describe(int(index))))
        keep &= ~mask

    kind = pd.Series(pc.fill_null(columns["kind"], "event").to_pandas())
    alerts = (kind == "alert").to_numpy() & keep
    skipped_alerts = 0 if include_alerts else int(alerts.sum())
    alert_ids: frozenset[str] = frozenset()
    if not include_alerts:
        keep &= ~alerts
        if skipped_alerts:
            alert_ids = frozenset(columns["event_id"].filter(pa.array(alerts)).to_pylist())

    rejected.sort(key=lambda r: r.line)
    frame = arrow_to_frame({name: columns[name] for name in columns if name != "timestamp"},
                           timestamps=timestamps, keep=keep)
    return ReadResult(frame, tuple(rejected), skipped_alerts, alert_ids)


def _decrypt(flat: pa.Table, columns: dict[str, Any], keys: tuple[bytes, ...],
             numbers: np.ndarray, keep: np.ndarray, path: str, rejected: list[Rejected]) -> None:
    """Open the encrypted envelopes in place of the clear columns; a record that does not
    open is set aside with its line number."""
    from analyzer.crypto import RecordCipher

    kids = sorted({k for k in flat.column(ENVELOPE_COLUMN["kid"]).to_pylist() if k})
    if not keys:
        raise SchemaError(f"{path}: records are encrypted (key id {', '.join(kids)}); pass the "
                          "encryption key (--encryption-key-file), or read the clear fields "
                          "only (--clear-only)")
    _, failed = open_sealed(flat, columns, RecordCipher(keys=keys))
    for index, reason in failed:
        keep[index] = False
        rejected.append(Rejected(path, int(numbers[index]), reason))
