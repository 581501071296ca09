"""What every reader shares: the result type, rejected lines, and the frame builder.

A reader turns one file into a :class:`ReadResult`: the normalized events frame (DESIGN
contract 3) plus the lines it could not use, each with its line number and reason. Rejected
lines are never silently dropped: the caller reports the count and writes them to a
``*.rejected`` file beside its output with :func:`write_rejected`.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import SourceError
from analyzer.events import (
    FRAME_COLUMNS,
    MAX_LINE_BYTES,
    OUTCOME_CATEGORIES,
    REQUIRED_FRAME_COLUMNS,
)
from analyzer.files import open_append

__all__ = [
    "ReadResult",
    "Rejected",
    "archive_kind",
    "arrow_to_frame",
    "build_frame",
    "empty_frame",
    "merge_skipped",
    "open_log",
    "overlong",
    "read_failed",
    "whole_line_blocks",
    "within_period",
    "within_time_range",
    "write_rejected",
]

# MAX_LINE_BYTES (from analyzer.events): the longest line a reader accepts; longer ones are
# set aside rather than parsed, and never held whole in memory (see whole_line_blocks).


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """One input line a reader could not use."""

    path: str
    line: int
    reason: str
    raw: bytes = b""

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclasses.dataclass(frozen=True, slots=True)
class ReadResult:
    """The normalized frame from one or more inputs, and what was set aside or skipped.

    Nothing is dropped without trace: every input record is either a row of ``frame``, a
    :class:`Rejected` line (malformed: set aside with its line number), an earlier alert
    (``skipped_alerts``) or counted in ``skipped`` under the kind of record it was and why
    it was not used (``{"unmapped event id": {"4658": 768, ...}}``).
    """

    frame: pd.DataFrame
    rejected: tuple[Rejected, ...] = ()
    skipped_alerts: int = 0
    #: ``event.id`` of the alert records skipped: what is already in the trail, so that
    #: writing alerts back needs no second read of it
    alert_ids: frozenset[str] = frozenset()
    #: records seen in the input (lines, JSON objects, rows), whatever became of them;
    #: ``None`` when a reader does not count them (then the frame's length stands in)
    records: int | None = None
    #: records read but not used, by why -> detail -> count (a detail is an event id, a
    #: stage, a program name...: what a person would look up to decide whether it matters)
    skipped: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    #: one-line notices a person should see (an inferred year, host names as clients)
    notes: tuple[str, ...] = ()
    #: the format of each file read, in order (set by :func:`analyzer.sources.read_events`)
    formats: tuple[str, ...] = ()
    #: records used, when ``frame`` does not hold them (a log read in chunks:
    #: :func:`analyzer.sources.chunks.read_chunks`); ``None``: the frame's length
    used: int | None = None

    @property
    def n_used(self) -> int:
        """Records used: the frame's rows, or ``used`` when the frame does not hold them."""
        return len(self.frame) if self.used is None else self.used

    @property
    def n_skipped(self) -> int:
        return sum(sum(details.values()) for details in self.skipped.values())

    def summary(self) -> str:
        """One line for a person: how many events were read and rejected, and where."""
        text = f"{len(self.frame):,} events read"
        if self.rejected:
            first = self.rejected[:3]
            where = "; ".join(r.describe() for r in first)
            more = f" (and {len(self.rejected) - 3:,} more)" if len(self.rejected) > 3 else ""
            text += f", {len(self.rejected):,} lines rejected: {where}{more}"
        return text

    def accounting(self, rejected_to: str | os.PathLike[str] | None = None, *,
                   top: int = 5) -> str:
        """The one line of accounting for a read: records read, used, set aside, skipped.

        ``"50,940 records read: 1,204 used, 1 set aside in x.rejected, 2 earlier alerts not
        scored, 49,735 skipped (unmapped event id: 4658 x768, 4690 x384, ... 31 more)"``
        """
        used = self.n_used
        records = self.records if self.records is not None else (
            used + len(self.rejected) + self.skipped_alerts + self.n_skipped)
        parts = [f"{used:,} used"]
        if self.rejected:
            where = f" in {os.fspath(rejected_to)}" if rejected_to is not None else ""
            parts.append(f"{len(self.rejected):,} set aside{where}")
        if self.skipped_alerts:
            parts.append(f"{self.skipped_alerts:,} earlier alerts not scored")
        if self.skipped:
            kinds = []
            for kind, details in sorted(self.skipped.items(), key=lambda kv: -sum(
                    kv[1].values())):
                ranked = sorted(details.items(), key=lambda kv: (-kv[1], kv[0]))
                shown = ", ".join(f"{name} x{count:,}" if name else f"x{count:,}"
                                  for name, count in ranked[:top])
                more = f", {len(ranked) - top:,} more" if len(ranked) > top else ""
                kinds.append(f"{kind}: {shown}{more}")
            parts.append(f"{self.n_skipped:,} skipped ({'; '.join(kinds)})")
        return f"{records:,} records read: " + ", ".join(parts)


#: The kind under which records outside ``--since``/``--until`` are counted as skipped.
OUTSIDE_PERIOD = "outside --since/--until"


def within_period(result: ReadResult, since: Any = None, until: Any = None) -> ReadResult:
    """``result`` with only the records at or after ``since`` and before ``until``.

    Decided on each record's own time (never on a file's modification time); the others are
    counted in ``skipped`` as ``"before <since>"`` / ``"at or after <until>"``, so the
    accounting still adds up. ``since``/``until`` are datetimes (naive means UTC) or ``None``.
    """
    if since is None and until is None:
        return result
    stamps = result.frame["timestamp"]
    keep = np.ones(len(stamps), dtype=bool)
    counts: dict[str, int] = {}
    for bound, label, outside in (
            (since, "before", lambda t: (stamps < t).to_numpy()),
            (until, "at or after", lambda t: (stamps >= t).to_numpy())):
        if bound is None:
            continue
        moment = pd.Timestamp(bound)
        moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
        mask = outside(moment) & keep
        if mask.any():
            counts[f"{label} {moment.isoformat().replace('+00:00', 'Z')}"] = int(mask.sum())
        keep &= ~mask
    if keep.all():
        return result
    frame = result.frame[keep].reset_index(drop=True)
    return dataclasses.replace(result, frame=frame, skipped=merge_skipped(
        result.skipped, {OUTSIDE_PERIOD: counts}))


def merge_skipped(*counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Add up ``skipped`` tables of several reads (or of several chunks of one)."""
    merged: dict[str, dict[str, int]] = {}
    for table in counts:
        for kind, details in table.items():
            into = merged.setdefault(kind, {})
            for name, count in details.items():
                into[name] = into.get(name, 0) + count
    return merged


#: Archives and compressed files no reader opens, by suffix (the longest suffix wins).
ARCHIVES: dict[str, str] = {
    ".zip": "a zip archive", ".tar": "a tar archive", ".tar.gz": "a tar archive",
    ".tgz": "a tar archive", ".tar.bz2": "a tar archive", ".tar.xz": "a tar archive",
    ".7z": "a 7-Zip archive", ".rar": "a RAR archive", ".bz2": "a bzip2 file",
    ".xz": "an xz file", ".zst": "a zstd file",
}
#: The same, by their first bytes: an archive renamed ``.log`` is still not a log.
_ARCHIVE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", ".zip"), (b"7z\xbc\xaf\x27\x1c", ".7z"), (b"Rar!\x1a\x07", ".rar"),
    (b"BZh", ".bz2"), (b"\xfd7zXZ\x00", ".xz"), (b"\x28\xb5\x2f\xfd", ".zst"),
)
_GZIP_MAGIC = b"\x1f\x8b"


def archive_kind(path: str | os.PathLike[str]) -> str | None:
    """The archive suffix of ``path`` (``".zip"``, ``".tar.gz"``), or ``None`` for a log.

    Only the name is looked at: this is what decides, without opening anything, which
    files of a folder or glob are left out. A ``.gz`` log (one gzip stream) is a log.
    """
    name = Path(path).name.lower()
    for suffix in sorted(ARCHIVES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _archive_error(path: Path, suffix: str) -> SourceError:
    return SourceError(f"{path}: {ARCHIVES[suffix]}; extract it first")


def read_failed(path: str | os.PathLike[str], exc: BaseException) -> SourceError:
    """The one-line error for a file that failed while being read (a truncated gzip file,
    an I/O error): readers raise it instead of letting the low-level error through."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError | gzip.BadGzipFile) or "gzip" in text.lower() or \
            "decompress" in text.lower():
        return SourceError(f"{path}: not a readable gzip file (truncated or damaged): {text}")
    if isinstance(exc, PermissionError):
        return SourceError(f"{path}: permission denied")
    return SourceError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or text}")


class _Gunzip(gzip.GzipFile):
    """A gzip stream over the file already open: closing it closes the file (a gzip log is
    opened once, like any other)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def open_log(path: str | os.PathLike[str]) -> tuple[IO[bytes], bool]:
    """Open a log for reading in binary, gunzipping a gzip file; and whether it can seek.

    A gzip file is known by its first bytes (``audit.jsonl.1`` may be compressed too); a
    ``.gz`` name without them, an archive (zip, tar, 7z) or a missing, unreadable file is a
    :class:`SourceError` naming the path, never a parse of the raw bytes.
    """
    file = Path(path)
    suffix = archive_kind(file)
    if suffix is not None:
        raise _archive_error(file, suffix)
    try:
        check_regular(file)
        handle = file.open("rb")
        try:  # checked again on what was opened: the path may have been swapped meanwhile
            check_regular(file, os.fstat(handle.fileno()).st_mode)
            head = handle.peek(8)[:8] if hasattr(handle, "peek") else b""
        except BaseException:
            handle.close()
            raise
    except SourceError:
        raise
    except FileNotFoundError:
        raise SourceError(f"{file}: no such file") from None
    except OSError as exc:
        raise read_failed(file, exc) from None
    if head.startswith(_GZIP_MAGIC):
        return _Gunzip(handle), False
    if file.suffix.lower() == ".gz":
        handle.close()
        raise SourceError(f"{file}: not a gzip file (a .gz name without gzip content)")
    for magic, kind in _ARCHIVE_MAGIC:
        if head.startswith(magic):
            handle.close()
            raise _archive_error(file, kind)
    return handle, True


def check_regular(path: Path, mode: int | None = None) -> None:
    """Refuse what is not a regular file (a directory, a FIFO, a device, a socket) with one
    line naming it: reading ``/dev/zero`` or a pipe nobody writes to never ends."""
    if mode is None:
        mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise SourceError(f"{path}: is a directory, expected a log file")
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "not a regular file")
    raise SourceError(f"{path}: is {kind}; give a log file (copy a stream to a file first)")


#: Longest single line a reader of JSON documents holds: a file that is one JSON document
#: (CloudTrail's ``{"Records": [...]}``, an array of Windows events) may be one long line, so
#: those readers allow more than :data:`MAX_LINE_BYTES`, but not without bound: a longer
#: line is read past, never held, and set aside (a hostile 2 GB line costs no 2 GB).
MAX_DOCUMENT_BYTES = 64 << 20

#: How an over-long line stands in the blocks :func:`whole_line_blocks` yields: a NUL
#: (which no text line starts with) and its length; :func:`overlong` reads it back.
_OVERLONG = b"\x00line too long: %d bytes"


def overlong(line: bytes) -> str | None:
    """The reason to set aside ``line``: over the limit, or the stand-in of a line that was
    (``None`` when it is neither)."""
    if line[:1] == b"\x00" and line.startswith(_OVERLONG[:16]):
        size = line[16:].split(b" ", 1)[0]
        return f"line too long ({int(size):,} bytes; limit {MAX_LINE_BYTES:,})"
    if len(line) > MAX_LINE_BYTES:
        return f"line too long ({len(line):,} bytes; limit {MAX_LINE_BYTES:,})"
    return None


def bounded_lines(handle: IO[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of ``handle`` (with their newlines), none held longer than ``max_line``.

    A longer line is read past to its newline and yields its :func:`overlong` stand-in
    instead, so a reader that iterates lines (the CSV reader) keeps its line numbers and
    bounded memory on a hostile file. A last line without a newline is yielded as it is.
    """
    pending = b""  # the start of a line whose newline has not been read yet
    skipped = 0  # > 0: bytes of an over-long line read past so far
    while chunk := handle.read(1 << 20):
        if skipped:
            newline = chunk.find(b"\n")
            if newline == -1:
                skipped += len(chunk)
                continue
            yield _OVERLONG % (skipped + newline) + b"\n"
            skipped, chunk = 0, chunk[newline + 1:]
        data, start = pending + chunk, 0
        while (newline := data.find(b"\n", start)) != -1:
            yield data[start:newline + 1]
            start = newline + 1
        pending = data[start:]
        if len(pending) > max_line:
            skipped, pending = len(pending), b""
    if skipped:
        yield _OVERLONG % skipped + b"\n"
    elif pending:
        yield pending


def whole_line_blocks(handle: IO[bytes], *, seekable: bool = True,
                      block_bytes: int = 32 << 20,
                      max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes, int]]:
    """Yield (byte offset, buffer, length of its whole lines) for consecutive blocks.

    The buffer is used as read (no copy): what follows its last newline is read again at
    the start of the next block, by seeking back on a plain file, or carried over on a
    stream that cannot seek back cheaply (gzip). A last line without a newline is completed.

    Memory stays bounded by ``block_bytes + max_line``: a line longer than ``max_line`` that
    does not end within a block is read past to its newline (or the end of the file), never
    held, and yielded alone as a short stand-in line that :func:`overlong` recognises, so
    that line numbers still count it and the reader sets it aside.
    """
    offset = 0  # in the file as read, of the first byte of the next buffer
    carry = b""
    while True:
        data = handle.read(block_bytes)
        if carry:
            data = carry + data
            carry = b""
        if not data:
            return
        cut = data.rfind(b"\n")
        read_past = len(data)
        if cut == -1 and len(data) <= max_line:  # a line longer than a block
            joined, read_past = _gather_line(handle, data, block_bytes, max_line)
            data = joined if joined is not None else b""
            cut = data.rfind(b"\n")
        if cut == -1:  # over the limit and no newline yet: read past it, hold none of it
            size, carry = _skip_to_newline(handle, read_past, block_bytes)
            stand_in = _OVERLONG % size + b"\n"
            yield offset, stand_in, len(stand_in)
            offset += size + 1
            continue
        end = cut + 1
        if end < len(data):
            if seekable:
                handle.seek(offset + end)
            else:
                carry = data[end:]
        yield offset, data, end
        offset += end


def _gather_line(handle: IO[bytes], first: bytes, block_bytes: int,
                 max_line: int) -> tuple[bytes | None, int]:
    """Read on until the line ``first`` starts has its newline (one is added at the end of
    the file): ``(the bytes, how many were read)``, or ``(None, how many)`` once they are
    over ``max_line``. Gathered in parts and joined once: growing one bytes object would
    hold two copies at each step."""
    parts, size = [first], len(first)
    while size <= max_line:
        more = handle.read(block_bytes)
        if not more:
            parts.append(b"\n")
            return b"".join(parts), size
        parts.append(more)
        size += len(more)
        if b"\n" in more:
            return b"".join(parts), size
    return None, size


def _skip_to_newline(handle: IO[bytes], size: int, block_bytes: int) -> tuple[int, bytes]:
    """Read past the rest of a line of which ``size`` bytes are read; return its length
    and what was read after its newline (empty at the end of the file)."""
    while more := handle.read(min(block_bytes, 1 << 20)):
        newline = more.find(b"\n")
        if newline != -1:
            return size + newline, more[newline + 1:]
        size += len(more)
    return size, b""


#: The span the frame's nanosecond timestamps can hold (about 1677 to 2262).
TIME_MIN = pd.Timestamp.min.tz_localize("UTC")
TIME_MAX = pd.Timestamp.max.tz_localize("UTC")


def within_time_range(stamps: pd.Series) -> pd.Series:
    """``stamps`` with times the frame cannot hold (year 5996, 1066) made NaT.

    Every reader sets NaT rows aside with their line numbers, so a record from outside the
    representable span is rejected like an unreadable time, instead of crashing the frame.
    """
    if not len(stamps):
        return stamps
    values = pd.Series(stamps)
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        values = pd.to_datetime(values, utc=True, errors="coerce")
    unit_min = TIME_MIN.as_unit(values.dt.unit)
    unit_max = TIME_MAX.as_unit(values.dt.unit)
    outside = (values < unit_min) | (values > unit_max)
    return values.mask(outside) if outside.any() else values


def empty_frame() -> pd.DataFrame:
    """A frame with every normalized column and no rows."""
    return build_frame({})


def build_frame(columns: dict[str, Sequence | np.ndarray | pd.Series], *,
                length: int | None = None) -> pd.DataFrame:
    """Assemble a normalized frame from column arrays, with the contract's dtypes.

    Missing optional columns are filled with nulls; missing required string columns with
    empty strings; ``outcome`` is a category with exactly success/failure/unknown. Timestamps
    must already be ``datetime64[ns, UTC]``-convertible.
    """
    if length is None:
        length = next((len(v) for v in columns.values()), 0)
    data: dict[str, pd.Series] = {}
    for name, dtype in FRAME_COLUMNS.items():
        values = columns.get(name)
        if name == "timestamp":
            series = pd.Series(values if values is not None else [], dtype="object")
            series = pd.to_datetime(series, utc=True).astype("datetime64[ns, UTC]")
        elif name == "outcome":
            raw = pd.Series(values if values is not None else ["unknown"] * length, dtype="object")
            series = pd.Series(pd.Categorical(raw, categories=OUTCOME_CATEGORIES))
        elif dtype == "category":
            if values is None:
                values = [""] * length if name in REQUIRED_FRAME_COLUMNS else [None] * length
            series = pd.Series(values, dtype="object")
            if name in REQUIRED_FRAME_COLUMNS:
                series = series.fillna("")
            series = series.astype("category")
        else:
            series = pd.Series(values if values is not None else [None] * length,
                               dtype="object").astype(dtype)
        data[name] = series.reset_index(drop=True)
    return pd.DataFrame(data)


def arrow_to_frame(columns: Mapping[str, pa.Array | pa.ChunkedArray], *,
                   timestamps: pd.Series, keep: np.ndarray | None = None) -> pd.DataFrame:
    """Build the normalized frame from arrow columns without a trip through Python objects.

    String columns become pandas categoricals through arrow's dictionary encoding, which is
    what keeps a million-row frame small and fast to group by. ``keep`` selects rows.
    """
    if keep is not None and not keep.all():
        mask = pa.array(keep)
        columns = {k: v.filter(mask) for k, v in columns.items()}
        timestamps = timestamps[keep]
    length = len(timestamps)
    data: dict[str, Any] = {"timestamp": timestamps.astype("datetime64[ns, UTC]")
                            .reset_index(drop=True)}
    for name, dtype in FRAME_COLUMNS.items():
        if name == "timestamp":
            continue
        column = columns.get(name)
        if column is None:
            data[name] = build_frame({}, length=length)[name] if length == 0 else \
                _null_column(name, dtype, length)
            continue
        if name == "outcome":
            column = pc.fill_null(column, "unknown")
        elif name in REQUIRED_FRAME_COLUMNS:
            column = pc.fill_null(column, "")
        if dtype == "category":
            values = column.dictionary_encode().to_pandas()
            if name == "outcome":
                values = values.cat.set_categories(OUTCOME_CATEGORIES)
            data[name] = values
        elif dtype == "Int64":
            data[name] = pd.Series(column.to_pandas(), dtype="Int64")
        else:
            data[name] = pd.Series(column.to_pandas(), dtype=dtype)
    for name, column in columns.items():
        if name not in data:  # extras a reader provides beyond the contract (e.g. roles)
            data[name] = column.dictionary_encode().to_pandas() \
                if pa.types.is_string(column.type) else column.to_pandas()
    frame = pd.DataFrame({k: pd.Series(v).reset_index(drop=True) for k, v in data.items()})
    return frame


def _null_column(name: str, dtype: str, length: int) -> pd.Series:
    if name in REQUIRED_FRAME_COLUMNS:
        fill: object = "unknown" if name == "outcome" else ""
        series = pd.Series([fill] * length, dtype="object")
    else:
        series = pd.Series([None] * length, dtype="object")
    if name == "outcome":
        return pd.Series(pd.Categorical(series, categories=OUTCOME_CATEGORIES))
    return series.astype(dtype)


def write_rejected(rejected: Iterable[Rejected], destination: str | os.PathLike[str]) -> int:
    """Append rejected lines to ``destination`` as ``path:line: reason`` plus the raw bytes.

    Returns how many were written. The raw line is kept (truncated to 4 KiB) so that a person
    can fix and re-import it; nothing rejected is lost without trace.
    """
    count = 0
    # a side file beside the user's input: created 0600, never through a planted symlink
    with os.fdopen(open_append(destination), "ab") as out:
        for item in rejected:
            raw = item.raw[:4096].replace(b"\n", b"\\n")
            out.write(f"# {item.describe()}\n".encode("utf-8", "backslashreplace"))
            out.write(raw + b"\n")
            count += 1
    return count
