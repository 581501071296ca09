"""The report's constants and cell formatting (times, clipped text, "and N more")."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analyzer.report.i18n import Locale
from analyzer.report.views import Cell

__all__ = ["LEVELS", "NS", "OUTCOMES", "and_more", "clip", "fmt_time", "iso",
           "time_cells"]

LEVELS = ("debug", "info", "warning", "error", "critical")
OUTCOMES = ("success", "failure", "unknown")
NS = 1_000_000_000
_MAX_CELL = 160


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
