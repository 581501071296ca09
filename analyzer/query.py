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

import csv
import dataclasses
import fnmatch
import ipaddress
import logging
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.crypto import SEALED_MARK
from analyzer.errors import ConfigError, SchemaError, SourceError
from analyzer.events import (
    FRAME_COLUMNS,
    OUTCOME_CATEGORIES,
    Kind,
    Level,
    format_timestamp,
    formula_safe,
    parse_timestamp,
    printable,
)
from analyzer.sources import expand_paths, is_side_file
from analyzer.sources._base import Rejected, open_log, read_failed
from analyzer.sources.jsonlines import (
    ENVELOPE_COLUMN,
    JsonLinesParser,
    ecs_columns,
    ecs_schema,
    ecs_type,
    first_of_lists,
    flatten,
    open_sealed,
    whole_line_blocks,
)

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

_log = logging.getLogger(__name__)

_S = pa.string()
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
    [pa.field("timestamp", pa.timestamp("us", "UTC"))]
    + [pa.field(c, _S if c == "category" else ecs_type(c)) for c in QUERY_COLUMNS[1:-1]]
    + [pa.field("record", _S)])


_BLOCK_BYTES = 16 << 20
PARSER = JsonLinesParser(ecs_schema(_PARSED))
_MAX_LINE = PARSER.max_line
#: What any line that spells a character as an escape holds (see :meth:`Filter.literals`).
ESCAPE = b"\\u"
_TS_PREFIX = b'{"@timestamp":"'
_TS_LEN = 27  # 2026-01-02T03:04:05.000000Z
# Literal pre-filter: only text a JSON writer does not escape is searched for as it is. Left
# out: quotes, backslashes, control and non-ASCII characters (all may be escaped), "/"
# (often written "\/") and "<", ">", "&" (escaped by Go's encoder and other HTML-safe ones).


# -- filters -------------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str | datetime, *, now: datetime | None = None) -> datetime:
    """A point in time from ISO 8601 (a date, or a date and time) or a span back from now.

    Relative spans are a number and a unit: ``s``, ``m`` (minutes), ``h``, ``d``, ``w``.
    A naive date or time is UTC.

    >>> now = datetime(2026, 1, 10, 12, tzinfo=UTC)
    >>> parse_time("7d", now=now).isoformat()
    '2026-01-03T12:00:00+00:00'
    >>> parse_time("2026-01-02", now=now).isoformat()
    '2026-01-02T00:00:00+00:00'
    """
    if isinstance(value, datetime):
        return parse_timestamp(value)
    text = value.strip()
    match = _RELATIVE.fullmatch(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z")
                                        else text)
    except ValueError:
        raise ConfigError(f"not a time: {value!r}; give ISO 8601 (2026-01-02 or "
                          f"2026-01-02T10:00:00Z) or a span back from now (30m, 12h, 7d, 2w)"
                          ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Which records a query keeps. Fields are combined with AND, values of one field with OR.

    Parameters
    ----------
    users
        Exact ``user.name`` values.
    actions, resources
        Shell-style globs (``permission.*``, ``datasets/*``) on ``event.action`` and
        ``resource.name``; case-sensitive, ``*`` also crosses dots and slashes.
    outcomes
        ``success``, ``failure``, ``unknown`` (a record without an outcome is ``unknown``).
    levels
        Exact ``log.level`` labels (:meth:`at_least` builds "this level or more severe").
    kinds
        ``event`` or ``alert`` (a record without ``event.kind`` is an ``event``).
    source_ips
        Addresses or networks in CIDR notation (``10.0.0.0/8``, ``2001:db8::/32``).
    since, until
        ``since <= @timestamp < until``.
    text
        A case-insensitive substring of ``message``.
    """

    users: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    source_ips: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("users", "actions", "outcomes", "levels", "kinds", "source_ips",
                     "resources"):
            set_(self, name, _as_tuple(getattr(self, name)))
        for value in self.outcomes:
            if value not in OUTCOME_CATEGORIES:
                raise ConfigError(f"unknown outcome {value!r}; expected success, failure or "
                                  f"unknown")
        set_(self, "levels", tuple(Level.parse(v).label for v in self.levels))
        for value in self.kinds:
            if value not in {k.value for k in Kind}:
                raise ConfigError(f"unknown kind {value!r}; expected event or alert")
        for value in self.source_ips:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ConfigError(f"not an IP address or network: {value!r}") from None
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, parse_time(value))
        if self.text == "":
            set_(self, "text", None)

    @staticmethod
    def at_least(level: str | Level) -> tuple[str, ...]:
        """The labels of ``level`` and every more severe level.

        >>> Filter.at_least("warning")
        ('warning', 'error', 'critical')
        """
        floor = Level.parse(level)
        return tuple(lvl.label for lvl in Level if lvl >= floor)

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in dataclasses.fields(self))

    def literals(self) -> tuple[bytes, ...]:
        """JSON string literals of which every matching line contains at least one.

        Empty when no filter allows it; the scan then looks at every line. The value
        literals come with ``\\u``: a line may spell the value with escapes
        (``"\\u0061lert"``), and is then looked at too (:func:`~analyzer.events.may_contain`).
        """
        exact = [
            self.users,
            self.source_ips if all(_is_ipv4_address(ip) for ip in self.source_ips) else (),
            self.kinds if self.kinds == ("alert",) else (),
            self.outcomes if "unknown" not in self.outcomes else (),
            self.levels,
        ]
        fields = [(exact[0], False), (self.resources, True), (self.actions, True),
                  *((values, False) for values in exact[1:])]
        for values, glob in fields:
            found = [_glob_literal(v, glob=glob) for v in values]
            if found and all(found):
                return (*dict.fromkeys(f for f in found if f), ESCAPE)
        return ()


def _glob_literal(pattern: str, *, glob: bool = True) -> bytes | None:
    """The longest text the raw JSON of every value matching ``pattern`` holds, or None.

    Runs of characters a writer may escape split the pattern like wildcards do. A run at
    the start of the pattern takes the string's opening quote, a run at its end the closing
    quote. With brackets (character classes) only the part before the first one is used.
    """
    if glob and ("[" in pattern or "]" in pattern):
        cut = min(pattern.index(ch) for ch in "*?[]" if ch in pattern)
        return _glob_literal(pattern[:cut] + "*") if cut else None
    unsafe = re.compile(r"[*?]+|[^A-Za-z0-9 !#$%'()+,.:;=@^_`{|}~\[\]-]+" if glob
                        else r"[^A-Za-z0-9 !#$%'()*+,.:;=?@^_`{|}~\[\]-]+")
    best = b""
    position = 0
    for piece in [*unsafe.finditer(pattern), None]:
        start = piece.start() if piece else len(pattern)
        run = pattern[position:start]
        if run:
            text = run.encode("ascii")
            if position == 0:
                text = b'"' + text
            if start == len(pattern):
                text += b'"'
            if len(text) > len(best):
                best = text
        if piece:
            position = piece.end()
    return best if len(best.strip(b'"')) else None


def _is_ipv4_address(value: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address)
    except ValueError:
        return False


# -- the scan ------------------------------------------------------------------------------

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
    literals = flt.literals()
    bounds = _raw_bounds(flt)
    for file in trail_files(paths, archives=stats.archives):
        stats.files += 1
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
                        raise _sealed_error(file)
                    sealed = marked or (b"\\" in data and ESCAPE in data)
                    opener = _cipher(decrypt_keys) if sealed and decrypt_keys else None
                    # sealed fields are not in the raw text: no raw pre-filter for them
                    table = _scan_block(data, end, offset, str(file), flt,
                                        () if opener else literals, bounds, stats, pending,
                                        opener, refuse_sealed=not clear_only)
                    if table is None or not table.num_rows:
                        continue
                    if limit is not None and stats.matched + table.num_rows >= limit:
                        table = table.slice(0, limit - stats.matched)
                        stats.matched += table.num_rows
                        yield Batch(str(file), table)
                        return
                    stats.matched += table.num_rows
                    yield Batch(str(file), table)
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


def _sealed_error(file: Path | str) -> SchemaError:
    return SchemaError(f"{file}: records are encrypted; pass the encryption key "
                       "(--encryption-key-file) or --clear-only")


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
                table = table.filter(pa.array(keep))
                if limit is not None and stats.matched + table.num_rows >= limit:
                    table = table.slice(0, limit - stats.matched)
                    stats.matched += table.num_rows
                    yield Batch(source, table)
                    return
                stats.matched += table.num_rows
                yield Batch(source, table)


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


def _raw_bounds(flt: Filter) -> tuple[bytes | None, bytes | None]:
    def fmt(moment: datetime | None) -> bytes | None:
        return None if moment is None else format_timestamp(moment).encode("ascii")
    return fmt(flt.since), fmt(flt.until)


def _line_spans(block: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every line of ``block[:size]`` (``end`` at its newline)."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8, count=size) == 10)
    starts = np.empty_like(ends)
    starts[0:1] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends


def _literal_spans(block: bytes, size: int,
                   literals: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of the lines of ``block[:size]`` holding any of ``literals``, in order,
    each once."""
    starts: list[int] = []
    ends: list[int] = []
    find, rfind = block.find, block.rfind
    for literal in literals:
        if literal == ESCAPE:  # a two-byte pattern bytes.find is slow on: numpy finds it
            if block.find(b"\\", 0, size) == -1:  # one fast memchr, the common case
                continue
            raw = np.frombuffer(block, dtype=np.uint8, count=size)
            at = np.flatnonzero((raw[:-1] == 92) & (raw[1:] == 117))
            if len(at):
                line_ends = np.flatnonzero(raw == 10)
                index = np.unique(np.searchsorted(line_ends, at))
                starts.extend((np.where(index > 0, line_ends[index - 1] + 1, 0)).tolist())
                ends.extend(line_ends[index].tolist())
            continue
        pos = find(literal, 0, size)
        while pos != -1:
            start = rfind(b"\n", 0, pos) + 1
            end = find(b"\n", pos)
            starts.append(start)
            ends.append(end)
            pos = find(literal, end, size)
    start_arr = np.asarray(starts, dtype=np.int64)
    end_arr = np.asarray(ends, dtype=np.int64)
    if len(literals) > 1 and len(start_arr):
        start_arr, index = np.unique(start_arr, return_index=True)
        end_arr = end_arr[index]
    return start_arr, end_arr


def _time_keep(block: bytes, starts: np.ndarray, ends: np.ndarray,
               bounds: tuple[bytes | None, bytes | None]) -> np.ndarray:
    """False for lines whose raw ``@timestamp`` is certainly outside the bounds."""
    since, until = bounds
    keep = np.ones(len(starts), dtype=bool)
    if not len(starts):
        return keep
    buf = np.frombuffer(block, dtype=np.uint8)
    width = len(_TS_PREFIX) + _TS_LEN + 1  # prefix, the stamp and its closing quote
    usable = (ends - starts) >= width
    idx = starts[usable]
    if not len(idx):
        return keep
    head = buf[idx[:, None] + np.arange(width)]
    shaped = (head[:, :len(_TS_PREFIX)] == np.frombuffer(_TS_PREFIX, np.uint8)).all(axis=1)
    stamp = head[:, len(_TS_PREFIX):len(_TS_PREFIX) + _TS_LEN]
    shaped &= (stamp[:, 26] == ord("Z")) & (stamp[:, 19] == ord(".")) \
        & (stamp[:, 10] == ord("T")) & (head[:, -1] == ord('"'))
    digits = stamp[:, [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, *range(20, 26)]]
    shaped &= ((digits >= ord("0")) & (digits <= ord("9"))).all(axis=1)
    text = np.ascontiguousarray(stamp).view(f"S{_TS_LEN}").ravel()
    outside = np.zeros(len(idx), dtype=bool)
    if since is not None:
        outside |= text < np.bytes_(since)
    if until is not None:
        outside |= text >= np.bytes_(until)
    sub = keep[usable]
    sub &= ~(shaped & outside)
    keep[usable] = sub
    return keep


def _scan_block(block: bytes, size: int, offset: int, path: str, flt: Filter,
                literals: tuple[bytes, ...], bounds: tuple[bytes | None, bytes | None],
                stats: ScanStats, pending: list[Rejected],
                opener: Any = None, *, refuse_sealed: bool = False) -> pa.Table | None:
    """The matches among the lines of ``block[:size]``, which starts at ``offset`` in its
    file; malformed lines go to ``pending`` with their byte offsets."""
    starts = ends = None
    if literals:
        starts, ends = _literal_spans(block, size, literals)
        stats.lines_counted = False  # only lines holding a literal were found: no count
        if not len(starts):
            return None
    if bounds != (None, None):
        if starts is None:
            starts, ends = _line_spans(block, size)
            stats.lines += len(starts)
        keep = _time_keep(block, starts, ends, bounds)
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
        starts, ends = _line_spans(block, size)
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
        raise _sealed_error(path)
    col = ecs_columns(flat, _PARSED)
    opened: set[int] = set()
    failed: list[int] = []
    if opener is not None:
        opened, failures = open_sealed(flat, col, opener)
        for index, reason in failures:
            rejected.append(Rejected(path, int(rows[index]), reason))
            failed.append(index)

    # Records every reader refuses: no action, an unreadable time, an unknown outcome.
    ts_text = col["timestamp"]
    try:
        stamps = pc.cast(ts_text, pa.timestamp("us", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = pd.to_datetime(pd.Series(ts_text.to_pandas(), dtype=object), format="ISO8601",
                                utc=True, errors="coerce")
        stamps = pa.chunked_array([pa.array(parsed.astype("datetime64[us, UTC]"),
                                            type=pa.timestamp("us", "UTC"))])
    outcome = pc.fill_null(col["outcome"], "unknown")
    action = col["action"]
    bad_action = _np(pc.fill_null(pc.equal(pc.utf8_length(action), 0), True))
    bad_ts = _np(pc.is_null(stamps))
    bad_outcome = ~_np(pc.is_in(outcome, value_set=pa.array(OUTCOME_CATEGORIES)))
    bad = bad_action | bad_ts | bad_outcome
    if bad.any():
        for index in np.flatnonzero(bad):
            if bad_action[index]:
                reason = "event.action: missing"
            elif bad_ts[index]:
                reason = f"@timestamp: unparseable {ts_text[int(index)].as_py()!r:.60}"
            else:
                reason = f"event.outcome: unknown value {outcome[int(index)].as_py()!r:.40}"
            rejected.append(Rejected(path, int(rows[index]), reason))
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


def _cipher(keys: tuple[bytes, ...]) -> Any:
    from analyzer.crypto import RecordCipher  # the cryptography extra, only when needed

    return RecordCipher(keys=keys)


def _np(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def match_columns(flt: Filter, col: dict[str, pa.ChunkedArray], stamps: pa.ChunkedArray,
                  outcome: pa.ChunkedArray) -> np.ndarray:
    """Which rows ``flt`` keeps, given the record columns as Arrow arrays (one source of
    truth for the filter semantics of files and databases)."""
    n = len(stamps)
    keep = np.ones(n, dtype=bool)
    if flt.users:
        keep &= _np(pc.fill_null(pc.is_in(col["user"], value_set=pa.array(flt.users)), False))
    if flt.actions:
        keep &= _values_where(col["action"], lambda v: any(
            fnmatch.fnmatchcase(v, p) for p in flt.actions))
    if flt.resources:
        keep &= _values_where(col["resource"], lambda v: any(
            fnmatch.fnmatchcase(v, p) for p in flt.resources))
    if flt.outcomes:
        keep &= _np(pc.is_in(outcome, value_set=pa.array(flt.outcomes)))
    if flt.levels:
        keep &= _np(pc.fill_null(pc.is_in(col["level"], value_set=pa.array(flt.levels)),
                                 False))
    if flt.kinds:
        kind = pc.fill_null(col["kind"], "event")
        keep &= _np(pc.is_in(kind, value_set=pa.array(flt.kinds)))
    if flt.source_ips:
        networks = [ipaddress.ip_network(v, strict=False) for v in flt.source_ips]
        keep &= _values_where(col["source_ip"], lambda v: _in_networks(v, networks))
    if flt.since is not None:
        keep &= _np(pc.fill_null(pc.greater_equal(stamps, pa.scalar(
            flt.since, pa.timestamp("us", "UTC"))), False))
    if flt.until is not None:
        keep &= _np(pc.fill_null(pc.less(stamps, pa.scalar(
            flt.until, pa.timestamp("us", "UTC"))), False))
    if flt.text:
        keep &= _np(pc.fill_null(pc.match_substring(col["message"], flt.text,
                                                    ignore_case=True), False))
    return keep


def _in_networks(value: str, networks: list[Any]) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(address.version == net.version and address in net for net in networks)


def _values_where(column: pa.ChunkedArray, test: Any) -> np.ndarray:
    """Rows whose value passes ``test``, testing each distinct value once."""
    encoded = column.combine_chunks().dictionary_encode()
    dictionary = encoded.dictionary.to_pylist()
    passing = np.fromiter((test(v) for v in dictionary), dtype=bool, count=len(dictionary))
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    valid = ~_np(encoded.is_null()) if encoded.null_count else np.ones(len(encoded), bool)
    result = np.zeros(len(encoded), dtype=bool)
    if len(dictionary):
        result[valid] = passing[indices[valid].astype(np.int64)]
    return result


# -- output --------------------------------------------------------------------------------

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
    from analyzer.sources._base import arrow_to_frame, empty_frame

    tables = [b.table for b in batches]
    if not tables:
        return empty_frame()
    table = pa.concat_tables(tables)
    columns = {name: table.column(name) for name in FRAME_COLUMNS if name != "timestamp"}
    stamps = pd.Series(table.column("timestamp").to_pandas())
    return arrow_to_frame(columns, timestamps=stamps)
