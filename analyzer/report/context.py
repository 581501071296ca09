"""The events each alert of a report shows, gathered chunk by chunk.

An alert's section draws its entity's activity around the window (events and failures per
bucket, and the entity's usual activity at that time of day from its events outside that
range) and lists its evidence records (the entity's events in the window). For each alert,
:class:`AlertRows` keeps the buckets' counts, an hour-of-day count of the rest, and the
first :data:`MAX_EVIDENCE` records of the window with their number: its memory follows the
number of alerts shown, not the events read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.report.frame import NS
from analyzer.report.tally import event_times, failed_of

__all__ = ["CONTEXT_BUCKETS", "MAX_EVIDENCE", "AlertRows", "gather_rows"]

MAX_EVIDENCE = 25
CONTEXT_BUCKETS = 12
_HOUR = 3600 * NS


class AlertRows:
    """What one alert's section shows of its entity's events (see the module)."""

    def __init__(self, alert: Any) -> None:
        self.alert = alert
        self.column = "user" if alert.entity_type == "user" else "source_ip"
        self.start = pd.Timestamp(alert.window_start).tz_convert("UTC")
        self.end = pd.Timestamp(alert.window_end).tz_convert("UTC")
        width = max(int((self.end - self.start).value), 300 * NS)
        self.width = min(width, 86400 * NS)
        self.first = self.start.value - CONTEXT_BUCKETS * self.width
        self.n_win = max(1, math.ceil((self.end.value - self.start.value) / self.width))
        self.count = 2 * CONTEXT_BUCKETS + self.n_win
        self.last = self.first + self.count * self.width
        self.seen = 0  # the entity's events
        self.actual = np.zeros(self.count, dtype=np.int64)
        self.failed = np.zeros(self.count, dtype=np.int64)
        self.outside_hours = np.zeros(24, dtype=np.int64)
        self.outside = 0
        self.in_window = 0
        self.evidence: pd.DataFrame | None = None

    def add(self, frame: pd.DataFrame, rows: np.ndarray, ts: np.ndarray, failed: np.ndarray,
            order: int) -> None:
        """Take the entity's ``rows`` of ``frame`` (whose first row is ``order`` in the
        read), with the frame's times and failures."""
        if not len(rows):
            return
        self.seen += len(rows)
        at = ts[rows]
        inside = (at >= self.first) & (at < self.last)
        index = (at[inside] - self.first) // self.width
        self.actual += np.bincount(index, minlength=self.count)
        self.failed += np.bincount(index[failed[rows][inside]], minlength=self.count)
        outside = at[~inside]
        self.outside += len(outside)
        self.outside_hours += np.bincount((outside // _HOUR) % 24, minlength=24)
        self._add_evidence(frame, rows[(at >= self.start.value) & (at < self.end.value)], ts,
                           order)

    def _add_evidence(self, frame: pd.DataFrame, keep: np.ndarray, ts: np.ndarray,
                      order: int) -> None:
        alert = self.alert
        if len(keep) and "sequence" in frame.columns and \
                alert.first_sequence is not None and alert.last_sequence is not None:
            seq = frame["sequence"].to_numpy(dtype="float64", na_value=np.nan)[keep]
            in_range = (seq >= alert.first_sequence) & (seq <= alert.last_sequence)
            keep = keep[in_range | np.isnan(seq)]
        if not len(keep):
            return
        self.in_window += len(keep)
        # the first records by time, then by place in the read (as the whole read sorts)
        first = keep[np.lexsort((keep, ts[keep]))][:MAX_EVIDENCE]
        rows = frame.iloc[first].reset_index(drop=True)
        rows["_order"] = first + order
        both = rows if self.evidence is None else pd.concat([self.evidence, rows],
                                                            ignore_index=True)
        self.evidence = both.sort_values(["timestamp", "_order"], kind="stable",
                                         ignore_index=True).head(MAX_EVIDENCE)

    def evidence_records(self) -> list[dict[Any, Any]]:
        """The evidence records shown, first in time first."""
        if self.evidence is None:
            return []
        return self.evidence.drop(columns="_order").to_dict("records")


def gather_rows(gathered: Sequence[AlertRows], frame: pd.DataFrame, order: int) -> None:
    """Give each alert the rows of its entity in ``frame`` (its first row ``order``-th in
    the read)."""
    if not gathered or not len(frame):
        return
    ts, failed = event_times(frame), failed_of(frame)
    codes: dict[str, tuple[np.ndarray, pd.Index] | None] = {}
    for item in gathered:
        if item.column not in codes:
            codes[item.column] = _entity_codes(frame, item.column)
        found = codes[item.column]
        if found is None:
            continue
        values, categories = found
        try:
            code = categories.get_loc(item.alert.entity)
        except KeyError:
            continue
        item.add(frame, np.flatnonzero(values == code), ts, failed, order)


def _entity_codes(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, pd.Index] | None:
    """The entity of each row as a code into the entities' names (``None``: no column)."""
    if column not in frame.columns:
        return None
    values = frame[column]
    if column == "source_ip":
        from analyzer.features import source_entities

        values = source_entities(frame)  # a source named by host name too
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(str).astype("category")
    return values.cat.codes.to_numpy(), values.cat.categories
