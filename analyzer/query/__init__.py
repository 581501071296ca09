"""Query the audit trail: filters, a streaming scan over JSONL trails, and output writers.

:func:`scan` reads one or many JSON-lines trails (files, directories, globs; rotated
generations, gzip-compressed or not) block by block and yields the matching records as Arrow
tables, so memory stays bounded whatever the size of the trail. It reads no more than it must:

* **Literal pre-filter.** When a filter names an exact value (a user, an exact action or
  resource, an IPv4 address, ``kind=alert``, an outcome, a level), only lines that contain that
  value as a JSON string, or any ``\\u`` escape (which could spell it), are looked at: they
  are found with a substring search over the raw bytes, as ``grep`` would, and only those
  lines go through the JSON parser. The parsed record is then checked exactly, so the
  pre-filter only ever saves work, never changes a result. Values that a JSON writer might
  escape (quotes, backslashes, ``/``, non-ASCII) are not used as literals.
* **Time pre-filter.** Lines whose ``@timestamp`` is where the project's logger puts it (first
  key, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``) are compared on their raw bytes, array-wise, before
  parsing; any other line is parsed and checked.
* **Every file is read.** A file's modification time says nothing sure about its records (a
  log restored from a backup, or ingested with its original times, has an old one), so
  ``since``/``until`` are decided on each record's time and no file is skipped by its date.
  Archives in folders and globs (``.zip``, ``.tar``) are not read: they are counted in
  :attr:`ScanStats.archives` and named by the command.
* **Projection.** The JSON parser is given only the fields the normalized columns need.

Malformed lines among those examined are set aside with their line numbers
(:attr:`ScanStats.rejected`), as the readers do; a line the literal pre-filter never looked at
cannot match and is not examined.

Files are read in the order of their first record's time, so ``audit.jsonl.2.gz``,
``audit.jsonl.1`` and ``audit.jsonl`` come out oldest first; within a file, records come in
file order.

>>> import tempfile, os
>>> from analyzer.logger import AuditLogger
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> with AuditLogger(path) as audit:
...     _ = audit.log("login", user="alice", outcome="success")
...     _ = audit.log("permission.change", user="bob", outcome="failure")
>>> tables = [b.table for b in scan(path, Filter(actions=("permission.*",)))]
>>> [t.column("user").to_pylist() for t in tables]
[['bob']]
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import zlib
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa

from analyzer.crypto import SEALED_MARK
from analyzer.errors import ConfigError, SchemaError, SourceError
from analyzer.events import format_timestamp, parse_timestamp
from analyzer.query._filters import ESCAPE, Filter, parse_time
from analyzer.query._match import match_columns
from analyzer.query._output import frame_from_batches, write_csv, write_jsonl, write_table
from analyzer.query._prefilter import raw_bounds
from analyzer.query._records import (
    DEFAULT_COLUMNS,
    PARSER,
    QUERY_COLUMNS,
    RESULT_SCHEMA,
    Batch,
    ScanStats,
    cipher,
    record_columns,
    scan_block,
    sealed_error,
)
from analyzer.sources import Rejected, expand_paths, is_side_file, open_log, read_failed
from analyzer.sources.jsonlines import whole_line_blocks

__all__ = [
    "DEFAULT_COLUMNS",
    "QUERY_COLUMNS",
    "RESULT_SCHEMA",
    "Batch",
    "Filter",
    "ScanStats",
    "frame_from_batches",
    "match_columns",
    "parse_time",
    "record_columns",
    "scan",
    "trail_files",
    "write_csv",
    "write_jsonl",
    "write_table",
]

#: Bytes read per block (whole lines; a block holds at least the longest line).
_BLOCK_BYTES = 16 << 20
_MAX_LINE = PARSER.max_line


def trail_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                archives: list[Path] | None = None) -> list[Path]:
    """Expand paths, globs and directories into trail files, oldest first.

    Files beside a log that are not records (checkpoints, shipping cursors, rejected lines)
    are left out, so ``'logs/audit.jsonl*'`` names a log and its rotated generations;
    archives of folders and globs are left out too and appended to ``archives``. Files are
    ordered by the time of their first record (a file whose first line is not a record goes
    last, by name).
    """
    files = [p for p in expand_paths(paths, archives=archives)
             if not is_side_file(p)]
    if not files:
        raise SourceError("no trail files among the paths given")
    keyed = []
    for file in dict.fromkeys(files):
        keyed.append((_first_timestamp(file), str(file), file))
    keyed.sort(key=lambda item: (item[0] is None, item[0] or "", item[1]))
    return [file for _, _, file in keyed]


def _open(path: Path) -> IO[bytes]:
    return open_log(path)[0]


def _first_timestamp(path: Path) -> str | None:
    try:
        with _open(path) as handle:
            for _ in range(16):
                line = handle.readline(_MAX_LINE)
                if not line:
                    return None
                if line.strip():
                    break
    except (OSError, EOFError, zlib.error):
        return None  # reading it for real names the problem
    try:
        doc = orjson.loads(line)
        value = doc.get("@timestamp") if isinstance(doc, dict) else None
        return format_timestamp(parse_timestamp(value)) if isinstance(value, str) else None
    except (orjson.JSONDecodeError, SchemaError):
        return None  # an unreadable first line just sorts the file last


def scan(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
         flt: Filter | None = None, *, limit: int | None = None,
         stats: ScanStats | None = None, decrypt_keys: tuple[bytes, ...] = (),
         clear_only: bool = False) -> Iterator[Batch]:
    """Stream the records of one or many trails that match ``flt``.

    Parameters
    ----------
    paths
        Files (plain or ``.gz``), directories or globs; or Parquet exports
        (:mod:`analyzer.export`: folders, files, URLs), whose day partitions outside
        ``flt.since``/``flt.until`` are not opened.
    flt
        The filter; everything when ``None``.
    limit
        Stop after this many matches.
    stats
        Filled in as the scan runs: files read and skipped, lines parsed, matches, and the
        malformed lines set aside.
    decrypt_keys
        Keys of records encrypted at rest: their sealed fields are opened, filtered on and
        shown. Without them an encrypted trail is an error naming the key id, unless
        ``clear_only`` (filters on sealed fields then match nothing).

    Yields
    ------
    Batch
        Non-empty tables of matching records, in file order.
    """
    flt = flt or Filter()
    stats = stats if stats is not None else ScanStats()
    if limit is not None and limit <= 0:
        return
    exports = _exports(paths)
    if exports:  # the Parquet analytics copy (analyzer.export): its own, columnar scan
        yield from _scan_exports(exports, flt, limit, stats, clear_only)
        return
    literals, bounds = flt.literals(), raw_bounds(flt)
    for file in trail_files(paths, archives=stats.archives):
        stats.files += 1
        with contextlib.closing(_scan_file(file, flt, literals, bounds, stats, decrypt_keys,
                                           clear_only)) as tables:
            for table in tables:
                table, done = _counted(table, limit, stats)
                yield Batch(str(file), table)
                if done:
                    return


def _scan_file(file: Path, flt: Filter, literals: tuple[bytes, ...],
               bounds: tuple[bytes | None, bytes | None], stats: ScanStats,
               decrypt_keys: tuple[bytes, ...],
               clear_only: bool) -> Generator[pa.Table, None, None]:
    """The non-empty match tables of one trail file, block by block; its malformed lines
    go to ``stats.rejected`` with their line numbers when the file is done (or left)."""
    pending: list[Rejected] = []  # set aside with their byte offsets for now
    handle, seekable = open_log(file)
    try:
        with handle:
            for offset, data, end in whole_line_blocks(handle, seekable=seekable,
                                                       block_bytes=_BLOCK_BYTES):
                stats.bytes_read += end
                # the mark may be spelled with escapes: then the parsed envelope decides
                # (each test is a pass over the block: each is made once)
                marked = SEALED_MARK in data
                if marked and not decrypt_keys and not clear_only:
                    raise sealed_error(file)
                sealed = marked or (b"\\" in data and ESCAPE in data)
                opener = cipher(decrypt_keys) if sealed and decrypt_keys else None
                # sealed fields are not in the raw text: no raw pre-filter for them
                table = scan_block(data, end, offset, str(file), flt,
                                   () if opener else literals, bounds, stats, pending,
                                   opener, refuse_sealed=not clear_only)
                if table is not None and table.num_rows:
                    yield table
    except (OSError, EOFError, zlib.error) as exc:  # a truncated gzip file, an I/O error
        if isinstance(exc, SourceError):
            raise
        raise read_failed(file, exc) from None
    finally:
        if pending:
            try:
                stats.rejected.extend(_numbered(file, pending))
            except (OSError, EOFError, zlib.error):  # the file broke off: keep offsets
                stats.rejected.extend(pending)


def _counted(table: pa.Table, limit: int | None, stats: ScanStats) -> tuple[pa.Table, bool]:
    """``table`` cut to what ``limit`` still allows and counted; and whether the limit is
    reached."""
    if limit is None or stats.matched + table.num_rows < limit:
        stats.matched += table.num_rows
        return table, False
    table = table.slice(0, limit - stats.matched)
    stats.matched += table.num_rows
    return table, True


def _exports(paths: Any) -> list[str]:
    """The paths as Parquet exports (folders, ``.parquet`` files, URLs), or ``[]`` for
    JSONL trails; a mix of both is an error."""
    from analyzer.sources.parquet import is_source

    items = [os.fspath(p) for p in ([paths] if isinstance(paths, str | os.PathLike)
                                    else paths)]
    found = [p for p in items if is_source(p) or p.lower().endswith(".parquet")]
    if found and len(found) != len(items):
        raise ConfigError("give JSONL trails or Parquet exports, not both in one query")
    return found


def _scan_exports(sources: list[str], flt: Filter, limit: int | None, stats: ScanStats,
                  clear_only: bool) -> Iterator[Batch]:
    """:func:`scan` over Parquet exports: day partitions outside ``since``/``until`` are
    not opened; each row group read is filtered with the same :func:`match_columns`."""
    from analyzer.sources import parquet

    names = RESULT_SCHEMA.names
    for source in sources:
        parquet.check_clear(source, parquet.read_manifest(source), clear_only=clear_only)
        days = parquet.open_days(source, flt.since, flt.until)
        for fragment in days.dataset.get_fragments():
            stats.files += 1
            for record_batch in fragment.to_batches(columns=names):
                table = pa.Table.from_batches([record_batch]).cast(RESULT_SCHEMA)
                stats.lines += table.num_rows
                stats.lines_parsed += table.num_rows
                col = {name: table.column(name) for name in names}
                keep = match_columns(flt, col, col["timestamp"], col["outcome"])
                if not keep.any():
                    continue
                table, done = _counted(table.filter(pa.array(keep)), limit, stats)
                yield Batch(source, table)
                if done:
                    return


def _numbered(file: Path, pending: list[Rejected]) -> list[Rejected]:
    """Replace the byte offsets of set-aside lines by line numbers (a second, counting read
    of the file, paid only when it has malformed lines)."""
    pending = sorted(pending, key=lambda r: r.line)
    result = []
    # ``chunk`` holds file[base:base + len(chunk)]; newlines are counted up to base + cur.
    line, base, cur, chunk = 1, 0, 0, b""
    with _open(file) as handle:
        for item in pending:
            target = item.line
            while target > base + len(chunk):
                line += chunk.count(b"\n", cur)
                base, cur = base + len(chunk), 0
                chunk = handle.read(_BLOCK_BYTES)
                if not chunk:
                    break
            stop = max(cur, min(target - base, len(chunk)))
            line += chunk.count(b"\n", cur, stop)
            cur = stop
            result.append(dataclasses.replace(item, line=line))
    return result
