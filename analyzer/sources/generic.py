"""Generic reader: a small declarative mapping turns any line format into the normalized frame.

A user adds a format without writing code by giving a mapping (a dict, or a JSON file)::

    {
      "pattern": "^(?P<ts>\\S+) (?P<who>\\S+) (?P<verb>\\S+) (?P<what>\\S+) (?P<ok>\\w+)$",
      "fields": {"timestamp": "ts", "user": "who", "action": "verb", "resource": "what",
                 "outcome": "ok"},
      "constants": {"category": "api"},
      "outcome_values": {"success": ["ok"], "failure": ["denied", "error"]},
      "time_format": "%Y-%m-%dT%H:%M:%S",
      "tz": "UTC"
    }

``pattern`` is a regular expression with named groups, matched against each line; or, for
JSON lines, ``"json": true`` and ``fields`` name dotted paths (``"user.name"``) instead of
groups. ``fields`` maps normalized columns (``timestamp`` is required) to groups or paths;
``constants`` gives fixed values; ``outcome_values`` lists the raw values meaning success and
failure (common words such as ``ok``, ``failed``, ``denied`` are understood without it);
``time_format`` is a ``strftime`` format (ISO 8601 or epoch seconds when absent); ``tz`` the
zone of times that carry none. Lines that do not match, or whose time cannot be read, are
rejected with their line numbers.

This module also holds the few text helpers the other adapters share (open a file, gzip or
not; split it into lines as one arrow array; pick IP addresses out of a column; walk JSON).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import ConfigError
from analyzer.events import FRAME_COLUMNS, duplicate_key
from analyzer.sources._base import (
    MAX_DOCUMENT_BYTES,
    MAX_LINE_BYTES,
    ReadResult,
    Rejected,
    build_frame,
    open_log,
    overlong,
    read_failed,
    whole_line_blocks,
    within_time_range,
)

__all__ = ["FORMAT", "OPTIONS", "dig", "ip_or_empty", "json_records", "json_stream", "line_pieces",
           "load_mapping", "read", "read_bytes", "rows_to_frame", "sniff", "split_lines"]

FORMAT = "generic"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset({"mapping"})

#: Loose shape of an IPv4 or IPv6 address: enough to tell an address from a host name.
_IP_SHAPE = r"^(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:%\w+)?)$"


def read_bytes(path: str | os.PathLike[str], *,
               max_line: int | None = None) -> tuple[str, bytes]:
    """The whole content of ``path``, gunzipped if it is gzip, and the path as text.

    With ``max_line``, a line longer than that is never held: it stands as a short line
    that :func:`~analyzer.sources._base.overlong` recognises (line formats; JSON documents
    may be one long line and are read whole).

    Raises :class:`SourceError` naming the path when it is missing, a directory, a FIFO or
    device, unreadable, an archive (zip, tar) or a broken gzip file.
    """
    file = Path(path)
    handle, seekable = open_log(file)
    try:
        with handle:
            if max_line is None:
                data = handle.read()
            else:
                data = b"".join(bytes(memoryview(block)[:end]) for _, block, end in
                                whole_line_blocks(handle, seekable=seekable,
                                                  max_line=max_line))
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failed(file, exc) from exc
    return str(file), data


def line_pieces(path: str | os.PathLike[str], *, rows: int | None,
                max_line: int = MAX_LINE_BYTES) -> Generator[pa.Array, None, None]:
    """The lines of ``path`` as :func:`split_lines` splits them, in arrays of ``rows`` lines
    (the last may be shorter; ``None``: one array, the whole file, as :func:`read_bytes`
    reads it). At least one array is yielded, empty for an empty file.

    In pieces, the file is read in blocks of whole lines sized to the pieces, so memory
    holds about one piece whatever the file's size; the line numbers, the over-long lines'
    stand-ins and the replacement of bytes that are not UTF-8 are those of a whole read (a
    block ends on a newline, which no multi-byte character contains).
    """
    if rows is None:
        yield split_lines(read_bytes(path, max_line=max_line)[1])
        return
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    file = Path(path)
    handle, seekable = open_log(file)
    held: list[pa.Array] = []  # lines read and not yet handed out, fewer than ``rows``
    count = 0
    given = False
    try:
        with handle:
            # about 256 bytes a line: a piece of short lines is one block or two
            blocks = whole_line_blocks(handle, seekable=seekable, max_line=max_line,
                                       block_bytes=min(32 << 20, max(64 << 10, rows << 8)))
            for _, block, end in blocks:
                lines = _block_lines(str(memoryview(block)[:end], "utf-8", "replace"))
                held.append(lines)
                count += len(lines)
                while count >= rows:
                    joined = pa.concat_arrays(held) if len(held) > 1 else held[0]
                    yield joined.slice(0, rows)
                    given = True
                    held, count = [joined.slice(rows)], count - rows
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failed(file, exc) from exc
    if count or not given:
        yield pa.concat_arrays(held) if held else pa.array([], type=pa.string())


def _block_lines(text: str) -> pa.Array:
    """The lines of a block of whole lines (ending with a newline), without line ends."""
    body = text[:-1] if text.endswith("\n") else text
    lines = pc.list_flatten(pc.split_pattern(pa.array([body], type=pa.large_string()), "\n"))
    if "\r" in body:
        lines = pc.utf8_rtrim(lines, "\r")
    return lines.cast(pa.string())


def split_lines(data: bytes) -> pa.Array:
    """Split text into one arrow string array, one element per line, without line ends.

    Bytes that are not UTF-8 become U+FFFD rather than failing the file: log lines with a
    stray Latin-1 user name are still worth reading. A final newline does not make an extra
    empty line.
    """
    text = data.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        return pa.array([], type=pa.string())
    # One split in C++ over the whole text; a Python split would build a million str objects.
    whole = pa.array([text], type=pa.large_string())
    lines = pc.list_flatten(pc.split_pattern(whole, "\n"))
    if "\r" in text:
        lines = pc.utf8_rtrim(lines, "\r")
    return lines.cast(pa.string()) if len(text) < (1 << 31) - 1 else lines


def ip_or_empty(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Keep values shaped like an IP address; anything else (host names, ``-``) becomes ``""``.

    ``source_ip`` holds addresses only, because alerts written back carry it as ECS
    ``source.ip``, which must be an IP.
    """
    values = pc.fill_null(values, "")
    shaped = pc.match_substring_regex(values, _IP_SHAPE)
    return pc.if_else(shaped, values, "")


def line_numbers(count: int) -> np.ndarray:
    """1-based line numbers for ``count`` lines."""
    return np.arange(1, count + 1, dtype=np.int64)


def json_records(where: str, data: bytes, rejected: list[Rejected]
                 ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each JSON object in JSON-lines text or in a JSON array.

    A line that is not a JSON object is set aside in ``rejected`` with its number; blank
    lines are skipped. An object written over several lines (pretty-printed, as ``jq .`` or
    ``ConvertTo-Json`` write it) is read whole, numbered by its first line. In a JSON array
    document the "line" is the 1-based array position.
    """
    if data.lstrip()[:1] == b"[":
        try:
            items = orjson.loads(data)
        except orjson.JSONDecodeError:
            items = None  # not one array after all: read as lines and report bad ones
        if isinstance(items, list):
            for number, item in enumerate(items, start=1):
                if isinstance(item, dict):
                    yield number, item
                else:
                    rejected.append(Rejected(where, number, "not a JSON object",
                                             orjson.dumps(item)[:4096]))
            return
    yield from _line_records(where, data.split(b"\n"), 0, rejected)


def json_stream(path: str | os.PathLike[str], rejected: list[Rejected], *,
                rows: int = 1 << 12) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`json_records` of the file at ``path`` without holding it: JSON lines (and
    objects pretty-printed over lines) are read in blocks of whole lines sized for about
    ``rows`` records, an object that a block cuts is carried into the next, and the records
    and rejects are those of a whole read. A JSON array document is read whole (it is one
    value)."""
    file = Path(path)
    if _starts_an_array(file):
        yield from json_records(str(file), read_bytes(file, max_line=MAX_DOCUMENT_BYTES)[1],
                                rejected)
        return
    handle, seekable = open_log(file)
    carry: list[bytes] = []  # lines of an object not closed in the blocks read so far
    first = 0  # lines before ``carry``
    try:
        with handle:
            for _, block, end in whole_line_blocks(
                    handle, seekable=seekable, max_line=MAX_DOCUMENT_BYTES,
                    block_bytes=min(32 << 20, max(64 << 10, rows << 10))):
                lines = carry + bytes(memoryview(block)[:end - 1]).split(b"\n")
                done = yield from _line_records(str(file), lines, first, rejected,
                                                final=False)
                carry, first = lines[done:], first + done
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failed(file, exc) from exc
    yield from _line_records(str(file), carry, first, rejected)


def _starts_an_array(file: Path) -> bool:
    """Whether the file's first character that is not white space is ``[``."""
    handle, _ = open_log(file)
    try:
        with handle:
            while block := handle.read(64 << 10):
                if block.strip():
                    return block.lstrip()[:1] == b"["
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failed(file, exc) from exc
    return False


def _line_records(where: str, lines: list[bytes], first: int, rejected: list[Rejected], *,
                  final: bool = True) -> Generator[tuple[int, dict[str, Any]], None, int]:
    """The records of ``lines``, the first of which is line ``first + 1``; returns how many
    lines were read: all, unless (not ``final``) an object runs past the last line, which
    is then read again with the lines after it."""
    index = 0
    while index < len(lines):
        raw = lines[index]
        index += 1
        number = first + index
        line = raw.strip()
        if not line:
            continue
        if (reason := overlong(line)) is not None:  # over the limit, or its stand-in
            rejected.append(Rejected(where, number, reason, line[:4096]))
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            doc, used = _object_over_lines(lines, index - 1)
            if used < 0 and not final:
                return index - 1
            if doc is None:
                rejected.append(Rejected(where, number,
                                         f"bad JSON: {str(exc).split(':', 1)[0]}", line[:4096]))
                continue
            text = b"\n".join(lines[index - 1:index - 1 + used])
            if (repeated := _repeated_key(text, doc)) is None:
                yield number, doc
            else:
                rejected.append(Rejected(where, number, f"duplicate key {repeated}",
                                         text[:4096]))
            index += used - 1
            continue
        if not isinstance(doc, dict):
            rejected.append(Rejected(where, number, "not a JSON object", line[:4096]))
            continue
        if (repeated := _repeated_key(line, doc)) is not None:
            rejected.append(Rejected(where, number, f"duplicate key {repeated}", line[:4096]))
            continue
        yield number, doc
    return index


#: A key in JSON text: a closing quote, then the colon (strings holding ``":`` match too,
#: which only costs the exact check below).
_KEY_TEXT = re.compile(rb'"\s*:')


def _repeated_key(text: bytes, doc: dict[str, Any]) -> str | None:
    """The key ``text`` repeats, if any (parsers disagree on which value a repeat holds).

    Cheap screen first: the text cannot repeat a key when it shows no more ``"key":``
    than the parsed object has keys; only then the exact walk of :func:`duplicate_key`.
    """
    if len(_KEY_TEXT.findall(text)) <= _count_keys(doc):
        return None
    return duplicate_key(text, doc)


def _count_keys(node: Any) -> int:
    if isinstance(node, dict):
        return len(node) + sum(_count_keys(v) for v in node.values())
    if isinstance(node, list):
        return sum(_count_keys(v) for v in node)
    return 0


#: The most lines one pretty-printed object may span (a Kubernetes RequestResponse event
#: with a large object runs to some thousands).
_MAX_OBJECT_LINES = 100_000


def _object_over_lines(lines: list[bytes], start: int) -> tuple[dict[str, Any] | None, int]:
    """The JSON object that begins at ``lines[start]`` and closes on a later line.

    Returns the object and how many lines it took, or ``(None, 0)`` when no object starts
    there or it does not close: then only the first line is rejected and reading resumes
    with the next one; ``(None, -1)`` when ``lines`` end before it is decided (a file read
    in blocks: the next block may close it). The object is taken to close where a ``}``
    stands at the indentation of its opening brace (what every pretty-printer writes), so
    it is parsed once, not at every nested brace; a line at that indentation that opens a
    new record ends the search.
    """
    opening = lines[start].rstrip(b"\r")
    indent = opening[:len(opening) - len(opening.lstrip())]
    if not opening.lstrip().startswith(b"{"):
        return None, 0
    size = len(opening)
    for end in range(start + 1, min(len(lines), start + _MAX_OBJECT_LINES)):
        line = lines[end].rstrip()
        size += len(line)
        if size > 32 * MAX_LINE_BYTES or not line.startswith(indent):
            break
        margin = line[len(indent):len(indent) + 1]
        if margin == b"{":
            break  # a new record at the same indentation: this one never closed
        if margin != b"}":
            continue
        try:
            doc = orjson.loads(b"\n".join(lines[start:end + 1]))
        except orjson.JSONDecodeError:
            break
        return (doc, end + 1 - start) if isinstance(doc, dict) else (None, 0)
    else:
        if len(lines) < start + _MAX_OBJECT_LINES:
            return None, -1
    return None, 0


def dig(doc: Mapping[str, Any], path: str | Sequence[str]) -> Any:
    """The value at a dotted ``path`` in nested objects (``"user.name"``), or ``None``.

    A key that itself contains dots (``{"user.name": ...}``, as flattened exports write) is
    found too.
    """
    if isinstance(path, str):
        if path in doc:
            return doc[path]
        path = path.split(".")
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
        if node is None:
            return None
    return node


# -- the declarative reader ------------------------------------------------------------------

_SPEC_KEYS = frozenset({"pattern", "json", "fields", "constants", "outcome_values",
                        "time_format", "tz", "name"})
_SUCCESS_WORDS = frozenset({"success", "succeeded", "successful", "ok", "true", "accepted",
                            "allow", "allowed", "pass", "passed", "granted"})
_FAILURE_WORDS = frozenset({"failure", "failed", "fail", "false", "denied", "deny", "error",
                            "rejected", "refused", "invalid", "forbidden", "unauthorized"})


def sniff(head: bytes) -> bool:
    """Always False: a generic mapping is chosen by the user, never detected."""
    del head
    return False


def load_mapping(mapping: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """Check a mapping (or read it from a JSON file) and return it as a plain dict.

    Raises :class:`ConfigError` naming the key that is wrong.
    """
    if not isinstance(mapping, Mapping):
        file = Path(mapping)
        try:
            mapping = orjson.loads(file.read_bytes())
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the mapping: {exc.strerror or exc}") \
                from exc
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{file}: the mapping is not valid JSON: {exc}") from exc
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{file}: the mapping must be a JSON object")
    spec = dict(mapping)
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ConfigError(f"mapping: unknown key(s) {', '.join(sorted(unknown))}; expected "
                          f"{', '.join(sorted(_SPEC_KEYS))}")
    if bool(spec.get("pattern")) == bool(spec.get("json")):
        raise ConfigError('mapping: give either "pattern" (a regular expression) or '
                          '"json": true')
    fields = spec.get("fields")
    if not isinstance(fields, Mapping) or "timestamp" not in fields:
        raise ConfigError('mapping: "fields" must map "timestamp" (and other columns) to '
                          'groups or paths')
    constants = spec.setdefault("constants", {})
    for key in ("fields", "constants"):
        bad = set(spec[key]) - set(FRAME_COLUMNS)
        if bad:
            raise ConfigError(f"mapping.{key}: not a frame column: {', '.join(sorted(bad))}")
    if "action" not in fields and "action" not in constants:
        raise ConfigError('mapping: "action" must come from "fields" or "constants"')
    if spec.get("pattern"):
        try:
            groups = set(re.compile(spec["pattern"]).groupindex)
        except re.error as exc:
            raise ConfigError(f"mapping.pattern: not a regular expression: {exc}") from exc
        missing = {str(g) for g in fields.values()} - groups
        if missing:
            raise ConfigError(f"mapping.pattern: no group(s) named {', '.join(sorted(missing))}")
    return spec


def read(path: str | os.PathLike[str], *,
         mapping: Mapping[str, Any] | str | os.PathLike[str] | None = None) -> ReadResult:
    """Read any line or JSON-lines format through a declarative ``mapping``.

    Parameters
    ----------
    path
        The log, plain or gzip.
    mapping
        The mapping as a dict or the path of a JSON file holding it (see the module
        docstring). It is checked first; a wrong mapping raises :class:`ConfigError`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "app.log"
    >>> _ = log.write_text("2024-01-02T03:04:05 alice export reports/q1 denied\\n")
    >>> spec = {"pattern": r"^(?P<ts>\\S+) (?P<who>\\S+) (?P<verb>\\S+) (?P<what>\\S+) "
    ...                    r"(?P<ok>\\w+)$",
    ...         "fields": {"timestamp": "ts", "user": "who", "action": "verb",
    ...                    "resource": "what", "outcome": "ok"}}
    >>> read(log, mapping=spec).frame.loc[0, ["user", "action", "outcome"]].tolist()
    ['alice', 'export', 'failure']
    """
    if mapping is None:
        raise ConfigError("--format generic reads through a declarative mapping: give it with "
                          "--mapping FILE (see docs/formats.md)")
    spec = load_mapping(mapping)
    where, data = read_bytes(path, max_line=MAX_DOCUMENT_BYTES)
    rejected: list[Rejected] = []
    fields: Mapping[str, str] = spec["fields"]
    if spec.get("pattern"):
        numbers, values = _match_lines(data, spec["pattern"], fields, where, rejected)
    else:
        numbers, values = [], {column: [] for column in fields}
        for number, doc in json_records(where, data, rejected):
            numbers.append(number)
            for column, field_path in fields.items():
                value = dig(doc, str(field_path))
                values[column].append(None if value is None else
                                      value if isinstance(value, str | int | float) and
                                      not isinstance(value, bool) else str(value))
    records = len(numbers) + len(rejected)  # lines read: matched, or set aside as unmatched
    stamps = within_time_range(_times(values.pop("timestamp"), spec))
    bad = stamps.isna().to_numpy()
    for i in np.flatnonzero(bad):
        rejected.append(Rejected(where, int(numbers[i]), "unreadable time"))
    keep = ~bad
    columns: dict[str, Any] = {"timestamp": stamps[keep].reset_index(drop=True)}
    length = int(keep.sum())
    for column, raw in values.items():
        series = pd.Series(raw, dtype="object")[keep].reset_index(drop=True)
        if column == "outcome":
            series = series.map(lambda v: _outcome(v, spec.get("outcome_values") or {}))
        elif column in ("bytes", "sequence"):
            series = pd.to_numeric(series, errors="coerce").astype("Int64")
        else:
            series = series.map(lambda v: None if v is None else str(v))
        columns[column] = series
    for column, value in spec["constants"].items():
        columns.setdefault(column, [value] * length)
    if "source_ip" in columns and "source_ip" in fields:
        ips = pa.array(columns["source_ip"], type=pa.string())
        columns["source_ip"] = ip_or_empty(ips).to_pylist()
    frame = build_frame(columns, length=length)
    # every non-blank line (or array item) is a row or a rejected line: none is skipped
    return ReadResult(frame, tuple(sorted(rejected, key=lambda r: r.line)),
                      records=records)


def _match_lines(data: bytes, pattern: str, fields: Mapping[str, str], where: str,
                 rejected: list[Rejected]) -> tuple[np.ndarray, dict[str, list[Any]]]:
    lines = split_lines(data)
    try:
        found = pc.extract_regex(lines, pattern)  # RE2, column-wise
    except pa.ArrowInvalid:
        # Python-only syntax (look-arounds, back-references): fall back to re, line by line
        compiled = re.compile(pattern)
        matches = [compiled.match(line) for line in lines.to_pylist()]
        ok = np.array([m is not None for m in matches], dtype=bool)
        groups = {c: [m.group(str(g)) for m in matches if m is not None]
                  for c, g in fields.items()}
    else:
        ok = found.is_valid().to_numpy(zero_copy_only=False)
        kept = found.filter(pa.array(ok))
        groups = {c: kept.field(str(g)).to_pylist() for c, g in fields.items()}
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0) \
        .to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(~ok & ~blank):
        rejected.append(Rejected(where, int(i) + 1, "does not match the mapping's pattern",
                                 lines[int(i)].as_py().encode("utf-8", "replace")[:4096]))
    return np.flatnonzero(ok) + 1, groups


def _times(raw: list[Any], spec: Mapping[str, Any]) -> pd.Series:
    """UTC times from text in ``time_format`` (ISO 8601 by default) or epoch seconds."""
    values = pd.Series(raw, dtype="object")
    zone = spec.get("tz") or "UTC"
    fmt = spec.get("time_format")
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    numeric = pd.to_numeric(values, errors="coerce")
    epoch = numeric.notna() if fmt is None else pd.Series(False, index=values.index)
    if epoch.any():
        out[epoch] = pd.to_datetime(numeric[epoch], unit="s", utc=True)
    text = values[~epoch].map(lambda v: None if v is None else str(v))
    if len(text):
        stamps = [_to_utc(pd.to_datetime(v, format=fmt or "ISO8601", errors="coerce"), zone)
                  for v in text]
        out[~epoch] = pd.Series(stamps, index=text.index, dtype="datetime64[ns, UTC]")
    return out


def _to_utc(stamp: Any, zone: str) -> pd.Timestamp:
    if stamp is None or pd.isna(stamp):
        return pd.NaT
    stamp = pd.Timestamp(stamp)
    if stamp.tzinfo is None:
        try:
            stamp = stamp.tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"mapping.tz: unknown time zone {zone!r}") from exc
    return stamp.tz_convert("UTC")


def _outcome(value: Any, table: Mapping[str, Sequence[Any]]) -> str:
    if value is None:
        return "unknown"
    text = str(value).strip()
    for outcome in ("success", "failure"):
        if text in {str(v) for v in table.get(outcome, ())}:
            return outcome
    word = text.lower()
    if word in _SUCCESS_WORDS:
        return "success"
    if word in _FAILURE_WORDS:
        return "failure"
    return "unknown"


def rows_to_frame(rows: list[dict[str, Any]], columns: Sequence[str], where: str,
                  rejected: list[Rejected], *, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The normalized frame of records already picked out one by one (JSON adapters).

    Each row carries ``timestamp`` (ISO 8601 text) and ``line``; a row whose time cannot be
    read, or lies outside what the frame holds, is set aside with its line. ``extra`` names
    further row keys kept as categorical columns beyond the contract.
    """
    stamps = within_time_range(pd.to_datetime(
        pd.Series([r["timestamp"] for r in rows], dtype="object"), format="ISO8601", utc=True,
        errors="coerce"))
    bad = stamps.isna().to_numpy()
    for i in bad.nonzero()[0]:
        rejected.append(Rejected(where, rows[i]["line"],
                                 f"unreadable time {rows[i]['timestamp']!r:.60}"))
    rows = [r for r, b in zip(rows, bad, strict=True) if not b]
    data: dict[str, Any] = {name: [r[name] for r in rows] for name in columns}
    data["timestamp"] = list(stamps[~bad])
    data["kind"] = ["event"] * len(rows)
    frame = build_frame(data, length=len(rows))
    for name in extra:
        frame[name] = pd.Series([r[name] for r in rows], dtype="object").astype("category")
    return frame
