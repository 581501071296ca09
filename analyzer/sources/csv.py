"""Reader for CSV access records -> the normalized frame.

The file has a header row. Required columns: ``timestamp, user, action, resource, outcome,
source_ip``; optional: ``bytes, country, host, session, level, message, category``. Other
header names can be mapped onto these (``mapping={"src_addr": "source_ip"}``). Timestamps are
ISO 8601 with any offset (or ``Z``) or epoch seconds.

Rows are split by Python's :mod:`csv` (quoting rules are subtle, and a line-oriented split
would get them wrong); the values are then checked and converted column by column, so a bad
value costs one rejected row, never the file.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from analyzer.errors import SchemaError, SourceError
from analyzer.events import ECS_CATEGORIES, Level, Outcome
from analyzer.sources._base import (
    MAX_LINE_BYTES,
    ReadResult,
    Rejected,
    build_frame,
    within_time_range,
)

__all__ = ["FORMAT", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "read", "sniff"]

FORMAT = "csv"
REQUIRED_COLUMNS = ("timestamp", "user", "action", "resource", "outcome", "source_ip")
OPTIONAL_COLUMNS = ("bytes", "country", "host", "session", "level", "message", "category")
_KNOWN = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
csv.field_size_limit(MAX_LINE_BYTES)


def sniff(head: bytes) -> bool:
    """True if the first line looks like a CSV header naming a timestamp and an action."""
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").lower()
    names = {c.strip().strip('"') for c in first.split(",")}
    return "timestamp" in names and "action" in names


def read(path: str | os.PathLike[str], *, mapping: Mapping[str, str] | None = None,
         delimiter: str = ",") -> ReadResult:
    """Read a CSV file of access records.

    Parameters
    ----------
    path
        The CSV file; its first line is the header.
    mapping
        Header renames, source name -> normalized column (``{"src_addr": "source_ip"}``).
    delimiter
        Field separator.
    """
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
    rejected: list[Rejected] = []
    physical: list[int] = []
    with file.open("rb") as handle:
        reader = csv.reader(_decoded_lines(handle, str(file), rejected, physical),
                            delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise SchemaError(f"{file}: empty file, expected a CSV header") from None
        except csv.Error as exc:
            raise SchemaError(f"{file}:1: cannot read the CSV header: {exc}") from None
        names = [mapping.get(h.strip(), h.strip()).lower() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise SchemaError(f"{file}: missing required column(s): {', '.join(missing)} "
                              f"(header: {', '.join(header)}; map others with --map SRC=DEST)")
        wanted = {n: i for i, n in enumerate(names) if n in _KNOWN}
        columns: dict[str, list[str]] = {n: [] for n in wanted}
        numbers: list[int] = []
        width = len(names)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rejected.append(Rejected(str(file), physical[-1], f"bad CSV: {exc}"))
                continue
            number = physical[reader.line_num - 1]
            if not row or row == [""]:
                continue
            if len(row) != width:
                rejected.append(Rejected(str(file), number,
                                         f"expected {width} fields, got {len(row)}",
                                         delimiter.join(row).encode()[:4096]))
                continue
            for name, index in wanted.items():
                columns[name].append(row[index])
            numbers.append(number)
    return _convert(columns, np.asarray(numbers, dtype=np.int64), str(file), rejected)


def _decoded_lines(handle: object, path: str, rejected: list[Rejected],
                   physical: list[int]) -> Iterator[str]:
    """Decode each physical line, setting aside the ones that cannot be text."""
    for number, raw in enumerate(handle, 1):  # type: ignore[call-overload]
        reason = None
        if len(raw) > MAX_LINE_BYTES:
            reason = f"line too long ({len(raw):,} bytes; limit {MAX_LINE_BYTES:,})"
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
        physical.append(number)
        yield text.lstrip("\ufeff") if number == 1 else text


def _convert(columns: dict[str, list[str]], numbers: np.ndarray, path: str,
             rejected: list[Rejected]) -> ReadResult:
    frame = pd.DataFrame({k: pd.Series(v, dtype="object") for k, v in columns.items()})
    frame = frame.apply(lambda s: s.str.strip()) if len(frame) else frame
    bad = pd.Series("", index=frame.index, dtype="object")

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
