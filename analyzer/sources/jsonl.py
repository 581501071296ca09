"""Reader for the project's own audit log (ECS JSON lines) -> the normalized frame.

The file is read in blocks of whole lines. Each block goes through pyarrow's JSON parser with
an explicit schema that projects only the fields the frame needs, so most of the work is C++.
A block that pyarrow refuses (a malformed line, a wrong type, an over-long line, a blank
line) is re-read line by line: the bad lines are set aside with their numbers and reasons, and
the good ones go back through pyarrow. A clean log therefore never pays for a Python loop.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from analyzer.errors import SchemaError, SourceError
from analyzer.events import OUTCOME_CATEGORIES
from analyzer.sources._base import MAX_LINE_BYTES, ReadResult, Rejected, arrow_to_frame

__all__ = ["FORMAT", "read", "sniff"]

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


def _schema() -> pa.Schema:
    tree: dict[str, Any] = {}
    for path, _, dtype in _FIELDS:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = dtype

    def build(node: dict[str, Any]) -> list[pa.Field]:
        return [pa.field(k, pa.struct(build(v)) if isinstance(v, dict) else v)
                for k, v in node.items()]

    return pa.schema(build(tree))


_SCHEMA = _schema()
_PARSE = pj.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore")
_BLOCK_BYTES = 32 << 20
_PY_TYPES = {_S: str, pa.int64(): int}


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
    file = Path(path)
    if not file.exists():
        raise SourceError(f"{file}: no such file")
    if file.is_dir():
        raise SourceError(f"{file}: is a directory, expected a log file")
    tables: list[pa.Table] = []
    line_numbers: list[np.ndarray] = []
    rejected: list[Rejected] = []
    with file.open("rb") as handle:
        for first_line, block, end in _blocks(handle):
            table, numbers = _parse_block(block, end, first_line, str(file), rejected)
            if table.num_rows:
                tables.append(table)
                line_numbers.append(numbers)
    table = pa.concat_tables(tables) if tables else _SCHEMA.empty_table()
    numbers = np.concatenate(line_numbers) if line_numbers else np.empty(0, dtype=np.int64)
    return _to_result(table, numbers, str(file), rejected, include_alerts,
                      decrypt_keys=decrypt_keys, clear_only=clear_only)


def _blocks(handle: io.BufferedReader) -> Iterator[tuple[int, bytes, int]]:
    """Yield (number of the block's first line, buffer, length of its whole lines).

    The buffer is handed to pyarrow as it is (no copy); the part after the last newline is
    read again at the start of the next block.
    """
    line = 1
    while True:
        start = handle.tell()
        data = handle.read(_BLOCK_BYTES)
        if not data:
            return
        cut = data.rfind(b"\n")
        while cut == -1:  # a line longer than a block: read on to its end (or the file's)
            more = handle.read(_BLOCK_BYTES)
            if not more:
                yield line, data + b"\n", len(data) + 1
                return
            data += more
            cut = data.rfind(b"\n")
        end = cut + 1
        handle.seek(start + end)
        yield line, data, end
        line += data.count(b"\n", 0, end)


def _parse_block(data: bytes, end: int, first_line: int, path: str,
                 rejected: list[Rejected]) -> tuple[pa.Table, np.ndarray]:
    n_lines = data.count(b"\n", 0, end)
    try:
        table = pj.read_json(pa.BufferReader(pa.py_buffer(memoryview(data)[:end])),
                             read_options=_read_options(end), parse_options=_PARSE)
        table.validate(full=True)  # pyarrow does not check UTF-8 on its own
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    else:
        # pyarrow skips blank lines; then rows no longer match line numbers, so re-read.
        if table.num_rows == n_lines:
            return table, np.arange(first_line, first_line + n_lines, dtype=np.int64)
    return _parse_lines(data[:end], first_line, path, rejected)


def _read_options(size: int) -> pj.ReadOptions:
    # pyarrow parses its blocks in parallel; a block must hold the longest line, and longer
    # lines are rejected anyway, so twice the line limit is always enough.
    return pj.ReadOptions(block_size=min(max(size + 1, 1 << 16), 2 * MAX_LINE_BYTES + 1),
                          use_threads=True)


def _parse_lines(block: bytes, first_line: int, path: str,
                 rejected: list[Rejected]) -> tuple[pa.Table, np.ndarray]:
    """The slow path for a block pyarrow refused: check each line, keep the good ones."""
    good: list[bytes] = []
    numbers: list[int] = []
    for offset, raw in enumerate(block.split(b"\n")[:-1]):
        number = first_line + offset
        line = raw.rstrip(b"\r")
        if not line.strip():
            continue  # a blank line carries no record; nothing is lost by skipping it
        reason = _check_line(line)
        if reason:
            rejected.append(Rejected(path, number, reason, line[:4096]))
        else:
            good.append(line)
            numbers.append(number)
    if not good:
        return _SCHEMA.empty_table(), np.empty(0, dtype=np.int64)
    data = b"\n".join(good) + b"\n"
    table = pj.read_json(io.BytesIO(data), read_options=_read_options(len(data)),
                         parse_options=_PARSE)
    return table, np.asarray(numbers, dtype=np.int64)


def _check_line(line: bytes) -> str | None:
    """Why ``line`` cannot be read, or ``None`` if it conforms to the projection."""
    if len(line) > MAX_LINE_BYTES:
        return f"line too long ({len(line):,} bytes; limit {MAX_LINE_BYTES:,})"
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "utf-8" in msg.lower() or "surrogate" in msg.lower():
            return "not valid UTF-8"
        return f"bad JSON: {msg.split(':', 1)[0]}"
    if not isinstance(doc, dict):
        return "bad JSON: not an object"
    for path, _, dtype in _FIELDS:
        node: Any = doc
        for depth, key in enumerate(path):
            if not isinstance(node, dict):
                return f"{'.'.join(path[:depth])}: expected an object"
            node = node.get(key)
            if node is None:
                break
        if node is None:
            continue
        name = ".".join(path)
        if pa.types.is_list(dtype):
            if not isinstance(node, list) or not all(isinstance(v, str) for v in node):
                return f"{name}: expected a list of strings, got {node!r:.60}"
        elif not isinstance(node, _PY_TYPES[dtype]) or isinstance(node, bool):
            return f"{name}: expected {_PY_TYPES[dtype].__name__}, got {node!r:.60}"
        elif dtype == pa.int64() and not -(2**63) <= node < 2**63:
            return f"{name}: integer out of range"
    return None


def _to_result(table: pa.Table, numbers: np.ndarray, path: str, rejected: list[Rejected],
               include_alerts: bool, *, decrypt_keys: tuple[bytes, ...] = (),
               clear_only: bool = False) -> ReadResult:
    flat = table
    while any(pa.types.is_struct(f.type) for f in flat.schema):
        flat = flat.flatten()
    columns: dict[str, pa.ChunkedArray] = {}
    for path_parts, column, _ in _FIELDS:
        columns[column] = flat.column(".".join(path_parts))
    keep = np.ones(len(numbers), dtype=bool)
    sealed = columns.pop("_enc_ct")
    nonce, kid = columns.pop("_enc_nonce"), columns.pop("_enc_kid")
    if sealed.null_count < len(sealed) and not clear_only:
        _decrypt(columns, sealed, nonce, kid, decrypt_keys, numbers, keep, path, rejected)
    columns["category"] = _first_of_lists(columns["category"])
    columns["roles"] = _first_of_lists(columns["roles"])

    # Timestamps: arrow's cast is fast for the normal case; anything it cannot parse is
    # re-parsed by pandas, and what neither can read is set aside with its line number.
    ts_text = columns["timestamp"]
    try:
        timestamps = pd.Series(pc.cast(ts_text, pa.timestamp("us", "UTC")).to_pandas())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        timestamps = pd.to_datetime(pd.Series(ts_text.to_pandas()), format="ISO8601",
                                    utc=True, errors="coerce")
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
    if not include_alerts:
        keep &= ~alerts

    rejected.sort(key=lambda r: r.line)
    frame = arrow_to_frame({name: columns[name] for name in columns if name != "timestamp"},
                           timestamps=timestamps, keep=keep)
    return ReadResult(frame, tuple(rejected), skipped_alerts)


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


def _first_of_lists(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """First element of each list (ECS arrays such as ``event.category``), null if empty.

    Works on the list offsets directly: arrow's ``list_element`` refuses empty lists, and
    filling them first costs more than the whole lookup.
    """
    chunks = []
    for chunk in column.chunks:
        offsets = chunk.offsets.to_numpy()
        lengths = np.diff(offsets)
        if chunk.null_count:
            lengths = np.where(chunk.is_null().to_numpy(zero_copy_only=False), 0, lengths)
        index = pa.array(offsets[:-1] - offsets[0], mask=lengths == 0)
        values = chunk.values.slice(offsets[0], offsets[-1] - offsets[0])
        chunks.append(values.take(index))
    return pa.chunked_array(chunks, type=column.type.value_type)
