"""Reader for CSV access records -> the normalized frame.

The file has a header row. Required columns: ``timestamp, user, action, resource, outcome,
source_ip``; optional: ``bytes, country, host, session, level, message, category``. Other
header names can be mapped onto these (``mapping={"src_addr": "source_ip"}``), a key can be
taken out of a column holding dict text (``{"User ID.principalId": "user"}``), and a column
the file lacks can be given one value for every row (``constants={"outcome": "success"}``).
Timestamps are ISO 8601 with any offset (or ``Z``) or epoch seconds.

Rows are split by Python's :mod:`csv` (quoting rules are subtle, and a line-oriented split
would get them wrong); the values are then checked and converted column by column, so a bad
value costs one rejected row, never the file. A quote that never closes costs its own line:
the lines the parser ran on into are read again. ``pyarrow.csv`` was tried for the split and
does not do this (it swallows the rest of the file into the open field, and numbers invalid
rows by record, not by line). A field over :func:`csv.field_size_limit` (128 KiB unless the
application sets it) is rejected as bad CSV; the limit is process-wide, so the reader leaves
it alone.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import ipaddress
import os
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from analyzer.errors import ConfigError, SchemaError, SourceError
from analyzer.events import ECS_CATEGORIES, Level, Outcome
from analyzer.sources._base import (
    ReadResult,
    Rejected,
    bounded_lines,
    build_frame,
    overlong,
    within_time_range,
)
from analyzer.sources.generic import dig

__all__ = ["FORMAT", "OPTIONAL_COLUMNS", "OPTIONS", "REQUIRED_COLUMNS", "read", "read_chunks",
           "sniff"]

FORMAT = "csv"
#: The :class:`~analyzer.sources.options.ReaderOptions` :func:`read` takes.
OPTIONS: frozenset[str] = frozenset({"mapping", "constants", "delimiter"})
REQUIRED_COLUMNS = ("timestamp", "user", "action", "resource", "outcome", "source_ip")
OPTIONAL_COLUMNS = ("bytes", "country", "host", "session", "level", "message", "category")
_KNOWN = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
#: Columns a file may lack and take one value for every row instead (``--set``).
_CONSTANT_COLUMNS = _KNOWN - {"timestamp", "bytes"}


def sniff(head: bytes) -> bool:
    """True if the first line looks like a CSV header naming a timestamp and an action."""
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").lower()
    names = {c.strip().strip('"') for c in first.split(",")}
    return "timestamp" in names and "action" in names


def read(path: str | os.PathLike[str], *, mapping: Mapping[str, str] | None = None,
         constants: Mapping[str, str] | None = None, delimiter: str = ",") -> ReadResult:
    """Read a CSV file of access records.

    Parameters
    ----------
    path
        The CSV file; its first line is the header.
    mapping
        Header renames, source name -> normalized column (``{"src_addr": "source_ip"}``). A
        source ``"Header.key"`` (``"User ID.principalId"``) takes ``key`` out of a column
        that holds a dict as text (JSON or a Python literal); dotted keys go deeper.
    constants
        Values for columns the file lacks (``{"outcome": "success"}``), one per row.
    delimiter
        Field separator.

    Returns
    -------
    ReadResult
        One row per record. A record that cannot be split into the header's fields, or
        holds a value that does not convert, is rejected with the line it starts on.
    """
    # run to the end (one piece): the file closes there, not when the generator is collected
    (result,) = read_chunks(path, rows=None, mapping=mapping, constants=constants,
                            delimiter=delimiter)
    return result


def read_chunks(path: str | os.PathLike[str], *, rows: int | None,
                mapping: Mapping[str, str] | None = None,
                constants: Mapping[str, str] | None = None, delimiter: str = ","
                ) -> Iterator[ReadResult]:
    """:func:`read` in pieces of about ``rows`` records (``None``: one piece, the whole
    file), in the file's order, each with its own accounting: a record is judged on its own,
    so the pieces hold what a whole read holds, and the rejected lines by line number."""
    file = Path(path)
    if not file.exists():
        raise SourceError(f"{file}: no such file")
    if file.is_dir():
        raise SourceError(f"{file}: is a directory, expected a CSV file")
    mapping = dict(mapping or {})
    bad_targets = sorted(set(mapping.values()) - _KNOWN)
    if bad_targets:
        raise SchemaError(f"--map names unknown column(s): {', '.join(bad_targets)}; "
                          f"known: {', '.join(sorted(_KNOWN))}")
    constants = _check_constants(constants or {})
    rejected: list[Rejected] = []
    with file.open("rb") as handle:
        lines = _Lines(_decoded_lines(handle, str(file), rejected))
        header = _header(lines, file, delimiter)
        plain, dotted = _resolve(header, mapping)
        _check_columns(file, header, plain, dotted, constants)
        wanted = {**plain, **{n: index for n, (index, _) in dotted.items()}}
        for columns, numbers, last in _split_rows(lines, wanted, len(header), str(file),
                                                  delimiter, rejected, rows):
            # lines set aside past this piece's last record (read ahead by a quote that
            # never closed) belong to the next piece, as a whole read orders them
            mine = [r for r in rejected if last is None or r.line <= last]
            rejected[:] = [r for r in rejected if last is not None and r.line > last]
            yield _piece(columns, numbers, header, dotted, constants, str(file), mine)


def _check_columns(file: Path, header: list[str], plain: Mapping[str, int],
                   dotted: Mapping[str, tuple[int, str]], constants: Mapping[str, str]) -> None:
    names = set(plain) | set(dotted) | set(constants)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise SchemaError(f"{file}: missing required column(s): {', '.join(missing)} "
                          f"(header: {', '.join(header)}; map others with --map SRC=DEST "
                          f"or give a constant with --set COLUMN=VALUE)")
    both = sorted(set(constants) & (set(plain) | set(dotted)))
    if both:
        raise ConfigError(f"{file}: --set {both[0]}: the file has a {both[0]} column "
                          f"already")


def _piece(columns: dict[str, list[str]], numbers: list[int], header: list[str],
           dotted: Mapping[str, tuple[int, str]], constants: Mapping[str, str], path: str,
           rejected: list[Rejected]) -> ReadResult:
    """The records split from some lines of the file, converted."""
    records = len(numbers) + len(rejected)
    numbers_array = np.asarray(numbers, dtype=np.int64)
    problems = pd.Series("", index=range(len(numbers)), dtype="object")
    for name, (index, keys) in dotted.items():
        values, bad = _from_dicts(columns[name], keys)
        fresh = bad & (problems == "")
        problems[fresh] = f"{header[index].strip()}: not a dict with {keys!r} " \
            "(for --map " + header[index].strip() + "." + keys + f"={name})"
        columns[name] = values
    for name, value in constants.items():
        columns[name] = [value] * len(numbers)
    result = _convert(columns, numbers_array, path, rejected, problems)
    return dataclasses.replace(result, records=records)


def _check_constants(constants: Mapping[str, str]) -> dict[str, str]:
    """Constants for absent columns, each checked: a wrong one is a :class:`ConfigError`."""
    checked = {}
    for name, value in constants.items():
        column = str(name).strip().lower()
        if column not in _CONSTANT_COLUMNS:
            raise ConfigError(f"--set {name}: not a column that takes a constant; use one "
                              f"of {', '.join(sorted(_CONSTANT_COLUMNS))}")
        text = str(value).strip()
        try:
            if column == "outcome":
                text = Outcome.parse(text).value
            elif column == "level":
                text = Level.parse(text).label
            elif column == "source_ip":
                text = _normal_ip(text)
        except (SchemaError, ValueError):
            raise ConfigError(f"--set {column}={value}: not a valid {column}") from None
        if column == "category" and text.lower() not in ECS_CATEGORIES:
            raise ConfigError(f"--set category={value}: not an ECS category")
        checked[column] = text
    return checked


class _Lines:
    """The file's decoded physical lines with their numbers; lines can be read again.

    ``taken`` holds the lines the CSV parser pulled for the record it is on, so that a
    record gone wrong can be traced back to its lines and all but its first re-read.
    """

    def __init__(self, source: Iterator[tuple[int, str]]) -> None:
        self._source = source
        self._again: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []

        self.given = 0  # the number of the last line given out

    @property
    def last(self) -> int:
        """The number of the last line given out for good: the line before the first one
        to be read again, else the last given out."""
        return self._again[0][0] - 1 if self._again else self.given

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        item = self._again.popleft() if self._again else next(self._source)
        self.taken.append(item)
        self.given = item[0]
        return item[1]

    def read_again(self, items: list[tuple[int, str]]) -> None:
        self._again.extendleft(reversed(items))


def _header(lines: _Lines, file: Path, delimiter: str) -> list[str]:
    try:
        header = next(csv.reader(lines, delimiter=delimiter))
    except StopIteration:
        raise SchemaError(f"{file}: empty file, expected a CSV header") from None
    except csv.Error as exc:
        raise SchemaError(f"{file}:1: cannot read the CSV header: {exc}") from None
    lines.taken.clear()
    return header


def _resolve(header: list[str], mapping: Mapping[str, str]
             ) -> tuple[dict[str, int], dict[str, tuple[int, str]]]:
    """Normalized column -> header index, and -> (header index, key) for dotted sources."""
    stripped = [h.strip() for h in header]
    plain: dict[str, int] = {}
    for index, name in enumerate(stripped):
        target = mapping.get(name, name).lower()
        if target in _KNOWN:
            plain.setdefault(target, index)
    dotted: dict[str, tuple[int, str]] = {}
    for source, target in mapping.items():
        if source in stripped:
            continue
        # the longest header that is a prefix before a dot: header names may hold dots
        owners = [i for i, h in enumerate(stripped) if source.startswith(h + ".")]
        if owners:
            index = max(owners, key=lambda i: len(stripped[i]))
            dotted[target] = (index, source[len(stripped[index]) + 1:])
            plain.pop(target, None)
    return plain, dotted


def _split_rows(lines: _Lines, wanted: Mapping[str, int], width: int, path: str,
                delimiter: str, rejected: list[Rejected], rows: int | None
                ) -> Iterator[tuple[dict[str, list[str]], list[int], int | None]]:
    """The wanted fields of each record and the line each record starts on, by ``rows``
    records (``None``: all of them at once), with the last line read for them (``None``
    at the end of the file).

    A record the parser could only close by running over several lines, and that then
    has the wrong number of fields (or hits the end of the file or the field size limit),
    is a quote that never closed: its first line is rejected and the lines after it are
    read again as records of their own, as a person reading the file would.
    """
    columns: dict[str, list[str]] = {n: [] for n in wanted}
    numbers: list[int] = []
    reader = csv.reader(lines, delimiter=delimiter)
    while True:
        if rows is not None and len(numbers) >= rows:
            yield columns, numbers, lines.last
            columns, numbers = {n: [] for n in wanted}, []
        error = None
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row, error = [], str(exc)
        taken, lines.taken = lines.taken, []
        if not taken:
            break
        number, text = taken[0]
        if (error is not None or len(row) != width) and len(taken) > 1:
            rejected.append(Rejected(path, number, f"unterminated quote: the record does not "
                                     f"end on this line ({error or f'{len(row)} fields'})",
                                     text.rstrip("\r\n").encode()[:4096]))
            lines.read_again(taken[1:])
            reader = csv.reader(lines, delimiter=delimiter)
            continue
        if error is not None:
            rejected.append(Rejected(path, number, f"bad CSV: {error}",
                                     text.rstrip("\r\n").encode()[:4096]))
            reader = csv.reader(lines, delimiter=delimiter)
            continue
        if not row or row == [""]:
            continue
        if len(row) != width:
            rejected.append(Rejected(path, number, f"expected {width} fields, got {len(row)}",
                                     delimiter.join(row).encode()[:4096]))
            continue
        for name, index in wanted.items():
            columns[name].append(row[index])
        numbers.append(number)
    yield columns, numbers, None


def _from_dicts(cells: list[str], keys: str) -> tuple[list[str], pd.Series]:
    """``keys`` (dotted) out of each cell holding a dict as text; and which cells do not.

    An empty cell gives an empty value; a cell that is not a dict is a problem for its
    row, because a wrong ``--map`` must show, not quietly empty a column.
    """
    values = pd.Series(cells, dtype="object")
    parsed = {}
    for text in pd.unique(values):
        if not text.strip():
            parsed[text] = ("", False)
            continue
        doc = _dict_text(text)
        found = dig(doc, keys) if doc is not None else None
        parsed[text] = (_as_text(found), doc is None)
    pairs = values.map(parsed)
    return [p[0] for p in pairs], pd.Series([p[1] for p in pairs], dtype=bool)


def _dict_text(text: str) -> dict | None:
    """A dict written as JSON or as a Python literal (``{'type': 'IAMUser'}``), else None.

    The Python form is parsed as a literal only (``ast``): nothing in a cell is evaluated.
    """
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            tree = ast.parse(text, mode="eval")
            doc = ast.literal_eval(tree) if isinstance(tree.body, ast.Dict) else None
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            return None
    return doc if isinstance(doc, dict) else None


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def _decoded_lines(handle: object, path: str, rejected: list[Rejected]
                   ) -> Iterator[tuple[int, str]]:
    """Each physical line with its number, decoded; the ones that cannot be text are set
    aside."""
    # never more than the line limit held, however long a hostile line is
    for number, raw in enumerate(bounded_lines(handle), 1):  # type: ignore[arg-type]
        reason = overlong(raw)
        if reason is not None:
            pass
        elif b"\x00" in raw:
            reason = "contains a NUL byte"
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                reason = "not valid UTF-8"
        if reason:
            rejected.append(Rejected(path, number, reason, raw[:4096]))
            continue
        yield number, text.lstrip("\ufeff") if number == 1 else text


def _convert(columns: dict[str, list[str]], numbers: np.ndarray, path: str,
             rejected: list[Rejected], problems: pd.Series) -> ReadResult:
    frame = pd.DataFrame({k: pd.Series(v, dtype="object") for k, v in columns.items()})
    frame = frame.apply(lambda s: s.str.strip()) if len(frame) else frame
    bad = problems.reindex(frame.index, fill_value="")

    def flag(mask: pd.Series, reason: pd.Series | str) -> None:
        fresh = mask & (bad == "")
        bad[fresh] = reason if isinstance(reason, str) else reason[fresh]

    # timestamps: epoch seconds where numeric, ISO 8601 otherwise
    text = frame.get("timestamp", pd.Series(dtype="object"))
    epoch = pd.to_numeric(text, errors="coerce")
    stamps = pd.to_datetime(text.where(epoch.isna()), format="ISO8601", utc=True,
                            errors="coerce")
    from_epoch = pd.to_datetime(epoch, unit="s", utc=True, errors="coerce")
    stamps = within_time_range(stamps.where(epoch.isna(), from_epoch))
    flag(stamps.isna(), "timestamp: unparseable " + text.str.slice(0, 40).map(repr))

    flag(frame["action"] == "", "action: empty")
    outcome = _map_unique(frame["outcome"], lambda v: Outcome.parse(v).value)
    flag(outcome.isna(), "outcome: unknown value " + frame["outcome"].str.slice(0, 40).map(repr))
    ip = _map_unique(frame["source_ip"], _normal_ip)
    flag(ip.isna(), "source_ip: not an IP address " + frame["source_ip"].str.slice(0, 40)
         .map(repr))
    if "bytes" in frame:
        size = pd.to_numeric(frame["bytes"].replace("", None), errors="coerce")
        wrong = frame["bytes"].ne("") & (size.isna() | (size % 1 != 0) | (size < 0))
        flag(wrong, "bytes: not a non-negative integer " + frame["bytes"].str.slice(0, 40)
             .map(repr))
        frame["bytes"] = size.where(~wrong).astype("Int64")
    if "level" in frame:
        level = _map_unique(frame["level"], lambda v: Level.parse(v or "info").label)
        flag(level.isna(), "level: unknown value " + frame["level"].str.slice(0, 40).map(repr))
        frame["level"] = level
    if "category" in frame:
        cat = frame["category"].str.lower()
        flag(cat.ne("") & ~cat.isin(ECS_CATEGORIES),
             "category: not an ECS category " + frame["category"].str.slice(0, 40).map(repr))
        frame["category"] = cat.replace("", None)

    keep = (bad == "").to_numpy()
    names = list(columns)
    for index in np.flatnonzero(~keep):
        # Keep the row's values (as CSV under the normalized header) so it can be fixed.
        buffer = io.StringIO()
        csv.writer(buffer).writerow(columns[n][index] for n in names)
        rejected.append(Rejected(path, int(numbers[index]), bad.iloc[index],
                                 buffer.getvalue().rstrip("\r\n").encode()))
    rejected.sort(key=lambda r: r.line)
    frame["timestamp"] = stamps
    frame["outcome"] = outcome
    frame["source_ip"] = ip
    for optional in ("country", "host", "session", "message"):
        if optional in frame:
            frame[optional] = frame[optional].replace("", None)
    kept = frame[keep]
    return ReadResult(build_frame({c: kept[c].to_numpy() for c in kept.columns},
                                  length=len(kept)), tuple(rejected))


def _map_unique(values: pd.Series, convert: object) -> pd.Series:
    """Apply ``convert`` once per distinct value; a value it rejects becomes NaN."""
    out = {}
    for value in pd.unique(values):
        try:
            out[value] = convert(value)  # type: ignore[operator]
        except (SchemaError, ValueError):
            out[value] = np.nan
    return values.map(out)


def _normal_ip(value: str) -> str:
    return str(ipaddress.ip_address(value)) if value else ""
