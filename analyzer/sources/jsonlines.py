"""JSON lines into a projected Arrow table: what the JSON readers (and ``query``) share.

The projection of audit records is built from the one ECS table
(:data:`~analyzer.events.ECS_COLUMNS`, :func:`ecs_schema`), and sealed records are opened
into the same columns (:func:`open_sealed`), so the ECS reader and ``query`` read the same
fields from the same places.

pyarrow's JSON parser reads a buffer of lines with an explicit schema that projects only the
fields a reader needs, so most of the work is C++. When it refuses the buffer (a malformed
line, a wrong type, an over-long or blank line), the lines are checked one by one: the bad
ones are set aside with their index and reason, and the good ones go back through pyarrow.
A clean file therefore never pays for a Python loop per line.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from analyzer.crypto import ENVELOPE_KEYS, ENVELOPE_PATH, SEALED_COLUMNS
from analyzer.events import (
    ECS_COLUMNS,
    INTEGER_COLUMNS,
    LIST_COLUMNS,
    OUTCOME_CATEGORIES,
    duplicate_keys,
)
from analyzer.sources._base import MAX_LINE_BYTES, Rejected, overlong, whole_line_blocks

__all__ = ["ENVELOPE_COLUMN", "JsonLinesParser", "check_fields", "ecs_columns", "ecs_schema",
           "ecs_type", "first_of_lists", "flatten", "nested_schema", "open_sealed",
           "parse_stamps", "read_all", "refusals", "whole_line_blocks"]

BLOCK_BYTES = 32 << 20


def nested_schema(fields: Iterable[tuple[tuple[str, ...], pa.DataType]]) -> pa.Schema:
    """The nested schema of dotted paths: ``(("user", "name"), string)`` -> user: struct."""
    tree: dict[str, Any] = {}
    for path, dtype in fields:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = dtype

    def build(node: dict[str, Any]) -> list[pa.Field]:
        return [pa.field(k, pa.struct(build(v)) if isinstance(v, dict) else v)
                for k, v in node.items()]

    return pa.schema(build(tree))


def ecs_type(column: str) -> pa.DataType:
    """The Arrow type a column of :data:`~analyzer.events.ECS_COLUMNS` is parsed as."""
    if column in LIST_COLUMNS:
        return pa.list_(pa.string())
    return pa.int64() if column in INTEGER_COLUMNS else pa.string()


def ecs_schema(columns: Iterable[str]) -> pa.Schema:
    """The projection of audit records that reads ``columns`` (names of
    :data:`~analyzer.events.ECS_COLUMNS`) and the envelope of sealed records."""
    return nested_schema([*((ECS_COLUMNS[c], ecs_type(c)) for c in columns),
                          *(((*ENVELOPE_PATH, key), pa.string()) for key in ENVELOPE_KEYS)])


#: The flattened column of the envelope field ``key`` (``kid``, ``nonce``, ``ct``).
ENVELOPE_COLUMN = {key: ".".join((*ENVELOPE_PATH, key)) for key in ENVELOPE_KEYS}


def ecs_columns(flat: pa.Table, columns: Iterable[str]) -> dict[str, pa.ChunkedArray]:
    """``columns`` of a table parsed with :func:`ecs_schema` and flattened, by name."""
    return {c: flat.column(".".join(ECS_COLUMNS[c])) for c in columns}


def open_sealed(flat: pa.Table, columns: dict[str, pa.ChunkedArray],
                cipher: Any) -> tuple[set[int], list[tuple[int, str]]]:
    """Open the sealed records of ``flat`` (parsed with :func:`ecs_schema`, flattened) into
    ``columns`` in place of their clear values, through
    :meth:`~analyzer.crypto.RecordCipher.open_columns`; returns the rows opened and the
    rows that fail with the reason. ``columns`` must hold ``event_id``."""
    envelopes = zip(*(flat.column(ENVELOPE_COLUMN[key]).to_pylist() for key in ENVELOPE_KEYS),
                    strict=True)
    values = {name: columns[name].to_pylist() for name in SEALED_COLUMNS if name in columns}
    opened, failed = cipher.open_columns(envelopes, columns["event_id"].to_pylist(), values)
    for name, column in values.items():
        columns[name] = pa.chunked_array([pa.array(column, type=columns[name].type)])
    return opened, failed


def parse_stamps(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """``@timestamp`` strings as UTC times, null where unreadable: arrow's cast to
    microseconds for the normal case; when it refuses one of them, pandas' ISO 8601 parser,
    which keeps nanoseconds."""
    try:
        return pc.cast(text, pa.timestamp("us", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = pd.to_datetime(pd.Series(text.to_pandas(), dtype=object), format="ISO8601",
                                utc=True, errors="coerce")
        return pa.chunked_array([pa.array(parsed, type=pa.timestamp("ns", "UTC"))])


def refusals(action: pa.ChunkedArray, stamps_text: pa.ChunkedArray, bad_stamps: np.ndarray,
             outcome: pa.ChunkedArray) -> list[tuple[np.ndarray, Callable[[int], str]]]:
    """Why a parsed audit record is refused by every reader, in order of precedence: no
    action, an unreadable time (``bad_stamps``), an unknown outcome (``outcome`` with nulls
    filled as ``unknown``). Each is the rows it holds for and the reason of a row."""
    no_action = pc.fill_null(pc.equal(pc.utf8_length(pc.fill_null(action, "")), 0), True)
    bad_outcome = pc.invert(pc.is_in(outcome, value_set=pa.array(OUTCOME_CATEGORIES)))
    return [
        (_bools(no_action), lambda i: "event.action: missing"),
        (bad_stamps, lambda i: f"@timestamp: unparseable {stamps_text[int(i)].as_py()!r:.60}"),
        (_bools(bad_outcome),
         lambda i: f"event.outcome: unknown value {outcome[int(i)].as_py()!r:.40}"),
    ]


def _bools(array: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def flatten(table: pa.Table) -> pa.Table:
    """Flatten every level of struct columns (``user.name``, ``source.geo.city_name``)."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table


def first_of_lists(column: pa.ChunkedArray) -> pa.ChunkedArray:
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


class JsonLinesParser:
    """Parse buffers of JSON lines against one projection schema.

    Parameters
    ----------
    schema
        The fields to read (nested structs, strings, integers, floats, lists); other fields
        of a record are ignored. A value of another type than the schema's rejects its line.
    max_line
        Longest line accepted; longer ones are set aside unparsed.
    """

    def __init__(self, schema: pa.Schema, *, max_line: int = MAX_LINE_BYTES) -> None:
        self.schema = schema
        self.max_line = max_line
        self._parse_options = pj.ParseOptions(explicit_schema=schema,
                                              unexpected_field_behavior="ignore")

    def parse(self, buffer: bytes | memoryview, where: str,
              rejected: list[Rejected]) -> tuple[pa.Table, np.ndarray, int]:
        """Parse the lines of ``buffer`` (each ending in a newline).

        Returns the table, the 0-based index among the buffer's lines of each of its rows,
        and the number of lines. Lines set aside are appended to ``rejected`` with their
        0-based index as ``line``: the caller knows how that maps to the file.
        """
        n_lines = int(np.count_nonzero(np.frombuffer(buffer, dtype=np.uint8) == 10))
        try:
            table = self._read(buffer)
            table.validate(full=True)  # pyarrow does not check UTF-8 on its own
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        else:
            # pyarrow skips blank lines; then rows no longer match lines, so check each.
            if table.num_rows == n_lines:
                return table, np.arange(n_lines, dtype=np.int64), n_lines
        good: list[bytes] = []
        rows: list[int] = []
        for index, raw in enumerate(bytes(buffer).split(b"\n")[:-1]):
            line = raw.rstrip(b"\r")
            if not line.strip():
                continue  # a blank line carries no record; nothing is lost by skipping it
            reason = self.check_line(line)
            if reason:
                rejected.append(Rejected(where, index, reason, line[:4096]))
            else:
                good.append(line)
                rows.append(index)
        if not good:
            return self.schema.empty_table(), np.empty(0, dtype=np.int64), n_lines
        try:
            table = self._read(b"\n".join(good) + b"\n")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # what the checks above let through and pyarrow still refuses: one by one, so
            # that it is set aside with its reason instead of stopping the read
            table, rows = self._one_by_one(good, rows, where, rejected)
        return table, np.asarray(rows, dtype=np.int64), n_lines

    def _one_by_one(self, lines: list[bytes], rows: list[int], where: str,
                    rejected: list[Rejected]) -> tuple[pa.Table, list[int]]:
        tables, kept = [], []
        for line, row in zip(lines, rows, strict=True):
            try:
                tables.append(self._read(line + b"\n"))
                kept.append(row)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                reason = str(exc).removeprefix("JSON parse error: ")
                rejected.append(Rejected(where, row, f"bad JSON: {reason:.120}", line[:4096]))
        return (pa.concat_tables(tables) if tables else self.schema.empty_table()), kept

    def _read(self, buffer: bytes | memoryview) -> pa.Table:
        # pyarrow parses its blocks in parallel; a block must hold the longest line, and
        # longer lines are rejected anyway, so twice the line limit is always enough.
        size = len(buffer)
        options = pj.ReadOptions(block_size=min(max(size + 1, 1 << 16), 2 * self.max_line + 1),
                                 use_threads=True)
        return pj.read_json(pa.BufferReader(pa.py_buffer(buffer)), read_options=options,
                            parse_options=self._parse_options)

    def check_line(self, line: bytes) -> str | None:
        """Why ``line`` cannot be read, or ``None`` if it fits the projection."""
        if len(line) > self.max_line:
            return f"line too long ({len(line):,} bytes; limit {self.max_line:,})"
        if line[:1] == b"\x00" and (reason := overlong(line)):
            return reason  # the stand-in of a line too long to be read
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            msg = str(exc)
            if "utf-8" in msg.lower() or "surrogate" in msg.lower():
                return "not valid UTF-8"
            return f"bad JSON: {msg.split(':', 1)[0]}"
        if not isinstance(doc, dict):
            return "bad JSON: not an object"
        reason = check_fields(doc, self.schema, "")
        if reason is None:
            # pyarrow refuses a repeated key of the projection and ignores the others: set
            # aside what it refuses (which value is meant is ambiguous), keep the rest
            repeated = [k for k in duplicate_keys(line, doc) if _projected(k, self.schema)]
            if repeated:
                reason = f"duplicate key {repeated[0]}"
        return reason


def _projected(path: str, schema: pa.Schema | pa.StructType) -> bool:
    """Whether dotted ``path`` names a field of the projection (through lists of structs)."""
    kind: Any = pa.struct(list(schema)) if isinstance(schema, pa.Schema) else schema
    for name in path.split("."):
        while pa.types.is_list(kind):
            kind = kind.value_type
        if not pa.types.is_struct(kind):
            return False
        index = kind.get_field_index(name)
        if index < 0:
            return False
        kind = kind.field(index).type
    return True


def check_fields(node: dict[str, Any], schema: pa.Schema | pa.StructType,
                 prefix: str) -> str | None:
    """The first field of ``node`` whose value does not have the schema's type, phrased."""
    for field in schema:
        value = node.get(field.name)
        if value is None:
            continue
        name = prefix + field.name
        reason = _check_value(value, field.type, name)
        if reason:
            return reason
    return None


def _check_value(value: Any, kind: pa.DataType, name: str) -> str | None:
    if pa.types.is_struct(kind):
        if not isinstance(value, dict):
            return f"{name}: expected an object, got {value!r:.60}"
        return check_fields(value, kind, name + ".")
    if pa.types.is_list(kind):
        if not isinstance(value, list):
            return f"{name}: expected a list, got {value!r:.60}"
        return next((r for v in value if v is not None
                     and (r := _check_value(v, kind.value_type, name + "[]"))), None)
    if pa.types.is_integer(kind):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}: expected int, got {value!r:.60}"
        if not -(2**63) <= value < 2**63:
            return f"{name}: integer out of range"
        return None
    if pa.types.is_floating(kind):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{name}: expected a number, got {value!r:.60}"
    if pa.types.is_boolean(kind):
        return None if isinstance(value, bool) else f"{name}: expected a boolean"
    return None if isinstance(value, str) else f"{name}: expected str, got {value!r:.60}"


def read_all(data: bytes, parser: JsonLinesParser, where: str,
             rejected: list[Rejected]) -> tuple[pa.Table, np.ndarray]:
    """Parse a whole in-memory file; rows are numbered by their 1-based line."""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    tables, numbers = [], []
    first_line = 1
    for _, block, end in whole_line_blocks(io.BytesIO(data), max_line=parser.max_line):
        local: list[Rejected] = []
        table, rows, n_lines = parser.parse(memoryview(block)[:end], where, local)
        rejected.extend(Rejected(r.path, first_line + r.line, r.reason, r.raw) for r in local)
        if table.num_rows:
            tables.append(table)
            numbers.append(rows + first_line)
        first_line += n_lines
    if not tables:
        return parser.schema.empty_table(), np.empty(0, dtype=np.int64)
    return pa.concat_tables(tables), np.concatenate(numbers)
