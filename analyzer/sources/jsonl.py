"""Reader for the project's own audit log (ECS JSON lines) -> the normalized frame.

The file is read in blocks of whole lines, each parsed by
:class:`~analyzer.sources._jsonlines.JsonLinesParser` against a projection of the fields the
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
from analyzer.events import OUTCOME_CATEGORIES, duplicate_keys, may_contain
from analyzer.sources._base import (
    MAX_LINE_BYTES,
    ReadResult,
    Rejected,
    arrow_to_frame,
    open_log,
    read_failed,
    within_time_range,
)
from analyzer.sources._jsonlines import (
    JsonLinesParser,
    first_of_lists,
    flatten,
    nested_schema,
    whole_line_blocks,
)

__all__ = ["FORMAT", "read", "read_chunks", "read_handle", "records_holding", "sniff"]

FORMAT = "jsonl"

_S = pa.string()
#: The projection: ECS path -> normalized column, with the type the path must have.
_FIELDS: tuple[tuple[tuple[str, ...], str, pa.DataType], ...] = (
    (("@timestamp",), "timestamp", _S),
    (("user", "name"), "user", _S),
    (("event", "action"), "action", _S),
    (("event", "outcome"), "outcome", _S),
    (("source", "ip"), "source_ip", _S),
    (("resource", "name"), "resource", _S),
    (("log", "level"), "level", _S),
    (("event", "kind"), "kind", _S),
    (("event", "category"), "category", pa.list_(_S)),
    (("source", "geo", "country_iso_code"), "country", _S),
    (("host", "name"), "host", _S),
    (("session", "id"), "session", _S),
    (("resource", "bytes"), "bytes", pa.int64()),
    (("message",), "message", _S),
    (("event", "sequence"), "sequence", pa.int64()),
    (("event", "id"), "event_id", _S),
    (("user", "roles"), "roles", pa.list_(_S)),
    (("analyzer", "encrypted", "kid"), "_enc_kid", _S),
    (("analyzer", "encrypted", "nonce"), "_enc_nonce", _S),
    (("analyzer", "encrypted", "ct"), "_enc_ct", _S),
)
#: Normalized columns whose values live inside the encrypted envelope, and where.
_SEALED: dict[str, tuple[str, ...]] = {
    "user": ("user", "name"), "source_ip": ("source", "ip"),
    "country": ("source", "geo", "country_iso_code"), "resource": ("resource", "name"),
    "bytes": ("resource", "bytes"), "session": ("session", "id"), "message": ("message",),
    "roles": ("user", "roles"),
}


_SCHEMA = nested_schema((path, dtype) for path, _, dtype in _FIELDS)
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
    return next(read_chunks(path, rows=None, include_alerts=include_alerts,
                            decrypt_keys=decrypt_keys, clear_only=clear_only))


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
    tables: list[pa.Table] = []
    line_numbers: list[np.ndarray] = []
    rejected: list[Rejected] = []
    first_line = 1
    records = 0  # non-blank lines: each is a row, a rejected line or a skipped alert

    def piece() -> ReadResult:
        table = pa.concat_tables(tables) if tables else _SCHEMA.empty_table()
        numbers = np.concatenate(line_numbers) if line_numbers else np.empty(0, dtype=np.int64)
        result = _to_result(table, numbers, where, rejected, include_alerts,
                            decrypt_keys=decrypt_keys, clear_only=clear_only)
        return dataclasses.replace(result, records=records)

    for _, block, end in whole_line_blocks(handle, seekable=seekable,
                                           block_bytes=_block_bytes(rows)):
        local: list[Rejected] = []
        table, numbers, n_lines = PARSER.parse(memoryview(block)[:end], where, local)
        rejected.extend(dataclasses.replace(r, line=first_line + r.line) for r in local)
        records += table.num_rows + len(local)
        if table.num_rows:
            tables.append(table)
            line_numbers.append(numbers + first_line)
        first_line += n_lines
        if rows is not None and sum(t.num_rows for t in tables) >= rows:
            yield piece()
            tables, line_numbers, rejected, records = [], [], [], 0
    if rows is None or records or tables:
        yield piece()


def _block_bytes(rows: int | None) -> int:
    # about 400 bytes a record: blocks of about the rows asked for, 1 to 32 MiB
    return 32 << 20 if rows is None else max(1 << 20, min(32 << 20, rows * 512))


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
                if not may_contain(line, literal):
                    continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict) and not duplicate_keys(line.rstrip(b"\r\n"), doc):
                    yield number, doc
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failed(file, exc) from None


def _to_result(table: pa.Table, numbers: np.ndarray, path: str, rejected: list[Rejected],
               include_alerts: bool, *, decrypt_keys: tuple[bytes, ...] = (),
               clear_only: bool = False) -> ReadResult:
    flat = flatten(table)
    columns: dict[str, pa.ChunkedArray] = {}
    for path_parts, column, _ in _FIELDS:
        columns[column] = flat.column(".".join(path_parts))
    keep = np.ones(len(numbers), dtype=bool)
    sealed = columns.pop("_enc_ct")
    nonce, kid = columns.pop("_enc_nonce"), columns.pop("_enc_kid")
    if sealed.null_count < len(sealed) and not clear_only:
        _decrypt(columns, sealed, nonce, kid, decrypt_keys, numbers, keep, path, rejected)
    columns["category"] = first_of_lists(columns["category"])
    columns["roles"] = first_of_lists(columns["roles"])

    # Timestamps: arrow's cast is fast for the normal case; anything it cannot parse is
    # re-parsed by pandas, and what neither can read is set aside with its line number.
    ts_text = columns["timestamp"]
    try:
        timestamps = pd.Series(pc.cast(ts_text, pa.timestamp("us", "UTC")).to_pandas())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        timestamps = pd.to_datetime(pd.Series(ts_text.to_pandas()), format="ISO8601",
                                    utc=True, errors="coerce")
    timestamps = within_time_range(timestamps)
    bad_ts = timestamps.isna().to_numpy()
    outcome = pd.Series(pc.fill_null(columns["outcome"], "unknown").to_pandas())
    bad_outcome = ~outcome.isin(OUTCOME_CATEGORIES).to_numpy()
    action = columns["action"]
    bad_action = pc.fill_null(pc.equal(pc.utf8_length(pc.fill_null(action, "")), 0),
                              True).to_numpy(zero_copy_only=False)
    for mask, describe in (
        (bad_action, lambda i: "event.action: missing"),
        (bad_ts, lambda i: f"@timestamp: unparseable {ts_text[int(i)].as_py()!r:.60}"),
        (bad_outcome, lambda i: f"event.outcome: unknown value {outcome.iloc[i]!r:.40}"),
    ):
        for index in np.flatnonzero(mask & keep):
            rejected.append(Rejected(path, int(numbers[index]), describe(index)))
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


def _decrypt(columns: dict[str, Any], sealed: pa.ChunkedArray, nonce: pa.ChunkedArray,
             kid: pa.ChunkedArray, keys: tuple[bytes, ...], numbers: np.ndarray,
             keep: np.ndarray, path: str, rejected: list[Rejected]) -> None:
    """Open the encrypted envelopes in place of the clear columns (one record at a time:
    each has its own nonce and associated data)."""
    from analyzer.crypto import RecordCipher

    kids = sorted({k for k in kid.to_pylist() if k})
    if not keys:
        raise SchemaError(f"{path}: records are encrypted (key id {', '.join(kids)}); pass the "
                          "encryption key (--encryption-key-file), or read the clear fields "
                          "only (--clear-only)")
    cipher = RecordCipher(keys=keys)
    values = {name: columns[name].to_pylist() for name in _SEALED}
    ids = columns["event_id"].to_pylist()
    for index, (ct, nc, kd) in enumerate(zip(sealed.to_pylist(), nonce.to_pylist(),
                                              kid.to_pylist(), strict=True)):
        if ct is None:
            continue
        try:
            doc = cipher.open({"ct": ct, "nonce": nc, "kid": kd}, str(ids[index]))
        except SchemaError as exc:
            keep[index] = False
            rejected.append(Rejected(path, int(numbers[index]), str(exc)))
            continue
        for name, where in _SEALED.items():
            node: Any = doc
            for key in where:
                node = node.get(key) if isinstance(node, dict) else None
            values[name][index] = node
    for name, column in values.items():
        columns[name] = pa.chunked_array([pa.array(column, type=columns[name].type)])
