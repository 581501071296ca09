"""Generic reader: a small declarative mapping turns any line format into the normalized frame.

This module also holds the few text helpers the other adapters share (open a file, gzip or
not; split it into lines as one arrow array; pick IP addresses out of a column).

The generic mapping is filled in below; see :func:`read`.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import SourceError
from analyzer.sources._base import MAX_LINE_BYTES, Rejected

__all__ = ["FORMAT", "dig", "ip_or_empty", "json_records", "read_bytes", "split_lines"]

FORMAT = "generic"

_GZIP_MAGIC = b"\x1f\x8b"
#: Loose shape of an IPv4 or IPv6 address: enough to tell an address from a host name.
_IP_SHAPE = r"^(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:%\w+)?)$"


def read_bytes(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """The whole content of ``path``, gunzipped if it is gzip, and the path as text.

    Raises :class:`SourceError` naming the path when it is missing, a directory, unreadable
    or a broken gzip file.
    """
    file = Path(path)
    if not file.exists():
        raise SourceError(f"{file}: no such file")
    if file.is_dir():
        raise SourceError(f"{file}: is a directory, expected a log file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise SourceError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"{file}: not a readable gzip file: {exc}") from exc
    return str(file), data


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
    lines are skipped. In a JSON array document the "line" is the 1-based array position.
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
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) > MAX_LINE_BYTES:
            rejected.append(Rejected(where, number, f"line too long ({len(line):,} bytes)",
                                     line[:4096]))
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            rejected.append(Rejected(where, number, f"bad JSON: {str(exc).split(':', 1)[0]}",
                                     line[:4096]))
            continue
        if not isinstance(doc, dict):
            rejected.append(Rejected(where, number, "not a JSON object", line[:4096]))
            continue
        yield number, doc


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
