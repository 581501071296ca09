"""What every reader shares: the result type, rejected lines, and the frame builder.

A reader turns one file into a :class:`ReadResult`: the normalized events frame (DESIGN
contract 3) plus the lines it could not use, each with its line number and reason. Rejected
lines are never silently dropped: the caller reports the count and writes them to a
``*.rejected`` file beside its output with :func:`write_rejected`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.events import FRAME_COLUMNS, OUTCOME_CATEGORIES, REQUIRED_FRAME_COLUMNS
from analyzer.files import open_append

__all__ = [
    "ReadResult",
    "Rejected",
    "arrow_to_frame",
    "build_frame",
    "empty_frame",
    "merge_skipped",
    "within_time_range",
    "write_rejected",
]

#: Longest line a reader accepts; longer ones are set aside rather than parsed.
MAX_LINE_BYTES = 1 << 20


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
        used = len(self.frame)
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


def merge_skipped(*counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Add up ``skipped`` tables of several reads (or of several chunks of one)."""
    merged: dict[str, dict[str, int]] = {}
    for table in counts:
        for kind, details in table.items():
            into = merged.setdefault(kind, {})
            for name, count in details.items():
                into[name] = into.get(name, 0) + count
    return merged


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
