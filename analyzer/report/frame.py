"""The events frame as arrays, shared by every section of one report, and cell formatting.

Aggregation is group-by and array code over these columns, so a million-event log costs a few
passes over them; only the shown rows (top N, alerts and their evidence) become Python objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analyzer.report.i18n import Locale
from analyzer.report.views import Cell

__all__ = ["LEVELS", "NS", "OUTCOMES", "EventColumns", "and_more", "clip", "fmt_time", "iso",
           "time_cells"]

LEVELS = ("debug", "info", "warning", "error", "critical")
OUTCOMES = ("success", "failure", "unknown")
NS = 1_000_000_000
_MAX_CELL = 160


class EventColumns:
    """The frame's columns as arrays, shared by every aggregation of one report."""

    def __init__(self, frame: pd.DataFrame, loc: Locale, top: int) -> None:
        self.frame = frame
        self.loc = loc
        self.top = max(1, int(top))
        self.n = len(frame)
        ts = frame["timestamp"] if self.n else pd.Series([], dtype="datetime64[ns, UTC]")
        self.ts_ns = ts.to_numpy(dtype="datetime64[ns]").view("int64") if self.n else \
            np.empty(0, dtype=np.int64)
        self.failed = (frame["outcome"].astype(str) == "failure").to_numpy() if self.n else \
            np.empty(0, dtype=bool)

    def distinct(self, column: str) -> int:
        """How many distinct non-empty values ``column`` holds."""
        if column not in self.frame.columns or not self.n:
            return 0
        values = self.frame[column].dropna().astype(str)
        return int(values[values != ""].nunique())

    def limit(self) -> int:
        """Rows of the longer tables (compliance): twice the top-N."""
        return self.top * 2

    def num_cells(self, *values: int) -> tuple[Cell, ...]:
        return tuple(Cell(self.loc.number(int(v)), str(int(v)), True) for v in values)


def time_cells(*stamps: int) -> tuple[Cell, ...]:
    return tuple(Cell(fmt_time(pd.Timestamp(int(s), tz="UTC")),
                      iso(pd.Timestamp(int(s), tz="UTC"))) for s in stamps)


def and_more(loc: Locale, n: int, singular: str, plural: str) -> str:
    """The "and N more" line of a cut list, "" when nothing was cut."""
    if n <= 0:
        return ""
    return loc.ngettext(singular, plural, n).format(n=loc.number(n))


def fmt_time(ts: Any) -> str:
    if ts is None or pd.isna(ts):
        return "–"
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%d %H:%M")


def iso(ts: Any) -> str:
    if ts is None or pd.isna(ts):
        return ""
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S")


def clip(text: Any, limit: int = _MAX_CELL) -> str:
    value = "" if text is None or (not isinstance(text, str) and pd.isna(text)) else str(text)
    return value if len(value) <= limit else value[:limit - 1] + "…"
