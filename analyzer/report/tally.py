"""The report's counts over the events, added up chunk by chunk.

A :class:`Tally` takes the events as frames (a log read whole is one, a log read in chunks
many) and keeps only what the report's sections count: events per minute by level and
outcome, events and failures per value of the top columns, the distinct users, addresses and
hosts, and the compliance tables' groups. Their size follows the trail's entities, values and
minutes, not its events, and every count is exact: the report of a log read in chunks is the
report of the log read whole. Among equal times, rows keep the whole read's order (by time,
then by their place in the read: ``order``), which decides a group's "first" and "last".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analyzer.report.frame import LEVELS, NS, OUTCOMES
from analyzer.report.i18n import Locale
from analyzer.report.views import Cell

__all__ = ["DISTINCT", "TOP_COLUMNS", "Counted", "Tally", "event_times", "failed_of", "text_of"]

#: Columns counted by value (events and failures): the categories and the top tables.
TOP_COLUMNS = ("category", "user", "action", "resource", "source_ip", "country")
#: Columns whose distinct values the header counts.
DISTINCT = ("user", "source_ip", "host")
#: Per-minute counts: events, failures, warnings and worse, each level and outcome.
_MINUTE_COLUMNS = ("total", "failed", "severe", *(f"level {n}" for n in LEVELS),
                   *(f"outcome {n}" for n in OUTCOMES))
_MINUTE = 60 * NS
_SEVERE = ("warning", "error", "critical")


def event_times(frame: pd.DataFrame) -> np.ndarray:
    """The events' times as int64 nanoseconds (UTC)."""
    if not len(frame):
        return np.empty(0, dtype=np.int64)
    return frame["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64")


def failed_of(frame: pd.DataFrame) -> np.ndarray:
    """Which events failed."""
    return (frame["outcome"].astype(str) == "failure").to_numpy() if len(frame) else \
        np.empty(0, dtype=bool)


def text_of(frame: pd.DataFrame, column: str) -> np.ndarray:
    """``column`` as text, a missing value as "" (an absent column: all "")."""
    if column not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    return frame[column].astype("string").fillna("").to_numpy(dtype=object)


class Tally:
    """The report's counts over every event added (see the module's documentation).

    ``privileged`` are the glob patterns of the privileged actions table.
    """

    def __init__(self, privileged: Sequence[str]) -> None:
        self.patterns = tuple(privileged)
        self.n = 0
        self.lo: int | None = None
        self.hi: int | None = None
        self.failures = 0
        self.columns: set[str] = set()
        self.distinct: dict[str, set[str]] = {c: set() for c in DISTINCT}
        self.minutes = pd.DataFrame(columns=list(_MINUTE_COLUMNS), dtype=np.int64)
        self.values: dict[str, pd.DataFrame] = {}
        # the compliance tables' groups (None: no such events yet)
        self.privileged: pd.DataFrame | None = None
        self.privileged_resources: pd.DataFrame | None = None
        self.failed: pd.DataFrame | None = None
        self.failed_actions: pd.DataFrame | None = None
        self.pairs: pd.DataFrame | None = None
        self.user_first: pd.Series | None = None  # each user's first time (new places)

    def add(self, frame: pd.DataFrame, order: int) -> None:
        """Count the events of ``frame``; ``order`` is the place of its first row in the
        read (its rows follow in order)."""
        self.columns.update(str(c) for c in frame.columns)
        if not len(frame):
            return
        ts = event_times(frame)
        failed = failed_of(frame)
        self.n += len(frame)
        self.lo = int(ts.min()) if self.lo is None else min(self.lo, int(ts.min()))
        self.hi = int(ts.max()) if self.hi is None else max(self.hi, int(ts.max()))
        self.failures += int(failed.sum())
        for column in DISTINCT:
            if column in frame.columns:
                self.distinct[column].update(
                    v for v in (str(x) for x in frame[column].dropna().unique()) if v != "")
        self._add_minutes(frame, ts, failed)
        for column in TOP_COLUMNS:
            self._add_values(frame, column, failed)
        rows = np.arange(order, order + len(frame), dtype=np.int64)
        self._add_privileged(frame, ts, failed)
        self._add_failed(frame, ts, failed, rows)
        self._add_pairs(frame, ts, failed, rows)

    # -- activity ------------------------------------------------------------------------

    def _add_minutes(self, frame: pd.DataFrame, ts: np.ndarray, failed: np.ndarray) -> None:
        minute, index = np.unique(ts // _MINUTE, return_inverse=True)
        level = frame["level"].astype("string").str.lower().fillna("").to_numpy() \
            if "level" in frame.columns else np.full(len(frame), "", dtype=object)
        outcome = frame["outcome"].astype(str).to_numpy()
        masks = [np.ones(len(frame), dtype=bool), failed, np.isin(level, _SEVERE),
                 *(level == n for n in LEVELS), *(outcome == n for n in OUTCOMES)]
        counts = pd.DataFrame(
            {name: np.bincount(index[mask], minlength=len(minute))
             for name, mask in zip(_MINUTE_COLUMNS, masks, strict=True)}, index=minute)
        self.minutes = counts if not len(self.minutes) else \
            self.minutes.add(counts, fill_value=0).astype(np.int64)

    def per_bucket(self, size: int, start: int, count: int) -> dict[str, np.ndarray]:
        """The per-minute counts summed into ``count`` buckets of ``size`` ns from
        ``start`` (every bucket size is a whole number of minutes, aligned to one)."""
        index = (self.minutes.index.to_numpy(dtype=np.int64) * _MINUTE - start) // size
        return {name: np.bincount(index, weights=self.minutes[name].to_numpy(np.float64),
                                  minlength=count).round().astype(np.int64)
                for name in _MINUTE_COLUMNS}

    # -- values --------------------------------------------------------------------------

    def _add_values(self, frame: pd.DataFrame, column: str, failed: np.ndarray) -> None:
        if column == "category":  # a missing category counts, as "uncategorized"
            values = frame[column].astype("string").fillna("").to_numpy(dtype=object) \
                if column in frame.columns else np.full(len(frame), "", dtype=object)
        elif column in frame.columns:
            values = frame[column]
        else:
            return
        grouped = pd.DataFrame({"key": values, "failed": failed}).groupby(
            "key", observed=True, sort=False)["failed"].agg(["size", "sum"])
        grouped.index = grouped.index.astype(str)
        grouped.columns = ["events", "failures"]
        grouped = grouped.groupby(level=0, sort=False).sum()  # values of the same text
        before = self.values.get(column)
        self.values[column] = grouped if before is None else \
            before.add(grouped, fill_value=0).astype(np.int64)

    def counts(self, column: str, *, fill: str | None = None) -> pd.DataFrame:
        """Events and failures per value of ``column``, most events first (``fill``: the
        name of a missing value, counted; otherwise missing values are not)."""
        counts = self.values.get(column)
        if counts is None:
            return pd.DataFrame({"key": pd.Series([], dtype=object),
                                 "events": pd.Series([], dtype=np.int64),
                                 "failures": pd.Series([], dtype=np.int64)})
        if fill is not None and "" in counts.index:
            counts = counts.rename(index={"": fill}).groupby(level=0, sort=False).sum()
        counts = counts[counts.index != ""]
        out = pd.DataFrame({"key": counts.index.to_numpy(dtype=object),
                            "events": counts["events"].to_numpy(np.int64),
                            "failures": counts["failures"].to_numpy(np.int64)})
        return out.sort_values(["events", "key"], ascending=[False, True], kind="stable",
                               ignore_index=True)

    # -- compliance ----------------------------------------------------------------------

    def _add_privileged(self, frame: pd.DataFrame, ts: np.ndarray,
                        failed: np.ndarray) -> None:
        from analyzer.features import privileged_mask

        action = frame["action"].astype("category")
        names = np.asarray(action.cat.categories.astype(str), dtype=object)
        flags = privileged_mask(names, self.patterns) if len(names) else \
            np.zeros(0, dtype=bool)
        codes = action.cat.codes.to_numpy()
        mask = np.zeros(len(frame), dtype=bool)
        mask[codes >= 0] = flags[codes[codes >= 0]]
        if not mask.any():
            return
        sub = pd.DataFrame({
            "user": frame["user"].astype(str).to_numpy()[mask], "action": names[codes[mask]],
            "resource": frame["resource"].astype(str).to_numpy()[mask],
            "ts": ts[mask], "failed": failed[mask]})
        grouped = sub.groupby(["user", "action"], sort=False).agg(
            events=("ts", "size"), failures=("failed", "sum"), first=("ts", "min"),
            last=("ts", "max")).reset_index()
        self.privileged = _merged(self.privileged, grouped, ["user", "action"], {
            "events": "sum", "failures": "sum", "first": "min", "last": "max"})
        self.privileged_resources = _distinct(self.privileged_resources,
                                              sub[["user", "action", "resource"]])

    def privileged_groups(self) -> pd.DataFrame | None:
        """Privileged actions by user and action: events, failures, resources, first,
        last; most events first."""
        if self.privileged is None or self.privileged_resources is None:
            return None
        resources = self.privileged_resources.groupby(["user", "action"], sort=False).size()
        out = self.privileged.join(resources.rename("resources"), on=["user", "action"])
        return out.sort_values(["events", "user", "action"], ascending=[False, True, True],
                               kind="stable")

    def _add_failed(self, frame: pd.DataFrame, ts: np.ndarray, failed: np.ndarray,
                    rows: np.ndarray) -> None:
        if not failed.any():
            return
        country = text_of(frame, "country")
        sub = pd.DataFrame({
            "user": frame["user"].astype(str).to_numpy()[failed],
            "ip": frame["source_ip"].astype(str).to_numpy()[failed],
            "country": country[failed], "action": frame["action"].astype(str).to_numpy()[failed],
            "ts": ts[failed], "order": rows[failed]}).sort_values(["ts", "order"],
                                                                  kind="stable")
        grouped = sub.groupby(["user", "ip"], sort=False).agg(
            country=("country", "first"), failures=("ts", "size"), first=("ts", "min"),
            first_order=("order", "first"), last=("ts", "max")).reset_index()
        self.failed = _merged(self.failed, grouped, ["user", "ip"], {
            "country": "first", "failures": "sum", "first": "min", "first_order": "first",
            "last": "max"}, by=["first", "first_order"])
        self.failed_actions = _distinct(self.failed_actions, sub[["user", "ip", "action"]])

    def failed_groups(self) -> pd.DataFrame | None:
        """Failed events by user and source address: country (of the first), failures,
        actions, first, last; most failures first."""
        if self.failed is None or self.failed_actions is None:
            return None
        actions = self.failed_actions.groupby(["user", "ip"], sort=False).size()
        out = self.failed.join(actions.rename("actions"), on=["user", "ip"])
        return out.sort_values(["failures", "user", "ip"], ascending=[False, True, True],
                               kind="stable")

    def _add_pairs(self, frame: pd.DataFrame, ts: np.ndarray, failed: np.ndarray,
                   rows: np.ndarray) -> None:
        user = frame["user"].astype(str).to_numpy()
        ip = frame["source_ip"].astype(str).to_numpy()
        valid = (user != "") & (ip != "")
        if not valid.any():
            return
        sub = pd.DataFrame({"user": user[valid], "ip": ip[valid],
                            "country": text_of(frame, "country")[valid], "ts": ts[valid],
                            "order": rows[valid], "failed": failed[valid]}
                           ).sort_values(["ts", "order"], kind="stable")
        pairs = sub.groupby(["user", "ip"], sort=False).agg(
            country=("country", "last"), first=("ts", "min"), events=("ts", "size"),
            failures=("failed", "sum"), last=("ts", "last"),
            last_order=("order", "last")).reset_index()
        self.pairs = _merged(self.pairs, pairs, ["user", "ip"], {
            "country": "last", "first": "min", "events": "sum", "failures": "sum",
            "last": "last", "last_order": "last"}, by=["last", "last_order"])
        first = sub.groupby("user", sort=False)["ts"].min()
        self.user_first = first if self.user_first is None else \
            pd.concat([self.user_first, first]).groupby(level=0, sort=False).min()


def _merged(before: pd.DataFrame | None, new: pd.DataFrame, keys: list[str],
            how: dict[str, str], by: list[str] | None = None) -> pd.DataFrame:
    """``new`` groups merged into ``before``'s; ``by``: the order "first" and "last"
    follow (the rows' time and place in the read)."""
    if before is None:
        return new
    both = pd.concat([before, new], ignore_index=True)
    if by is not None:
        both = both.sort_values(by, kind="stable")
    return both.groupby(keys, sort=False).agg(how).reset_index()


def _distinct(before: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    new = new.drop_duplicates()
    return new if before is None else \
        pd.concat([before, new], ignore_index=True).drop_duplicates(ignore_index=True)


class Counted:
    """The events' counts with the report's language and top-N, shared by every section."""

    def __init__(self, tally: Tally, loc: Locale, top: int) -> None:
        self.tally = tally
        self.loc = loc
        self.top = max(1, int(top))
        self.n = tally.n

    def distinct(self, column: str) -> int:
        """How many distinct non-empty values ``column`` holds."""
        return len(self.tally.distinct.get(column, ()))

    def limit(self) -> int:
        """Rows of the longer tables (compliance): twice the top-N."""
        return self.top * 2

    def num_cells(self, *values: int) -> tuple[Cell, ...]:
        return tuple(Cell(self.loc.number(int(v)), str(int(v)), True) for v in values)
