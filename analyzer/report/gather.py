"""The report's passes over the events: counted chunk by chunk, never held whole.

:class:`Gathering` takes the events as the read hands them over (the whole log as one frame,
or chunks of about ``size`` events) into the report's counts
(:class:`~analyzer.report.tally.Tally`) and, for the alerts known before the read (a scores
file), their entities' rows (:class:`~analyzer.report.context.AlertRows`), so that one
pass serves the chain's verdict, the recorded alerts, the counts and the alerts' sections.

A model's scores come from the same pass: each chunk also goes to the model's phase 1
(:attr:`Gathering.also`, a :class:`~analyzer.streaming.WindowStream`). What is known only
after that pass needs the events again: the scores of the log against itself (whether it
has recorded alerts, which spare them, is known at the pass's end), and the rows of alerts
found by the pass (recorded in the trail) or scored after it. While the events read fit in
one chunk (fewer than its size), that chunk is kept and serves again; a larger trail is read
again, in chunks (:meth:`Gathering.again`): once to score it against itself, once more for
the alerts' rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pandas as pd

from analyzer.report.context import AlertRows, gather_rows
from analyzer.report.tally import Tally

__all__ = ["Gathering", "events_only"]


def events_only(frame: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """``frame`` without the alert records a trail holds (``kind == "alert"``), and
    whether there were any."""
    if "kind" in frame.columns and len(frame):
        is_alert = (frame["kind"].astype("string") == "alert").fillna(False).to_numpy()
        if is_alert.any():
            return frame[~is_alert].reset_index(drop=True), True
    return frame, False


class Gathering:
    """The report's counts and alerts' rows, from the events handed to it (see the module).

    Parameters
    ----------
    privileged
        The glob patterns of privileged actions.
    size
        Count the events in chunks of at most this many (``None``: as handed over).
    alerts
        The alerts whose rows to gather in the same pass, when known before it.
    """

    def __init__(self, privileged: Sequence[str], size: int | None,
                 alerts: Sequence[Any] | None = None) -> None:
        self.tally = Tally(privileged)
        self.size = size
        self.rows: list[AlertRows] | None = None if alerts is None else \
            [AlertRows(a) for a in alerts]
        self.order = 0  # events counted so far: the place of the next one in the read
        self.chunks = 0
        self.kept: pd.DataFrame | None = None  # the events, while they are one chunk
        self.had_alerts = False  # the read held alert records (set aside)
        #: also given each chunk of events as it is counted (a model's phase 1, so that
        #: scoring needs no second read)
        self.also: Callable[[pd.DataFrame], None] | None = None
        self._again: Callable[[], Iterable[pd.DataFrame]] | None = None

    def __call__(self, frame: pd.DataFrame) -> None:
        """Count the events of ``frame`` (a piece of the read, alert records included)."""
        frame, had_alerts = events_only(frame)
        self.had_alerts |= had_alerts
        if not len(frame):
            self.tally.add(frame, self.order)  # its columns still count
            return
        step = self.size or len(frame)
        for start in range(0, len(frame), step):
            part = frame.iloc[start:start + step]
            self.tally.add(part, self.order)
            if self.also is not None:
                self.also(part)
            if self.rows is not None:
                gather_rows(self.rows, part, self.order)
            self.order += len(part)
            self.chunks += 1
            # a first chunk short of the size may be all there is: kept until another comes
            # (a full one is not, lest the next be read beside it)
            whole = self.size is None or len(part) < self.size
            self.kept = part if self.chunks == 1 and whole else None

    def reading_again(self, again: Callable[[], Iterable[pd.DataFrame]]) -> None:
        """How to read the events again, in chunks, when they were more than one."""
        self._again = again

    def again(self) -> pd.DataFrame | Iterator[pd.DataFrame]:
        """The events once more: the one chunk read, sorted by time as a whole read is, or
        the trail read again in chunks (its alert records set aside)."""
        if self.kept is not None or not self.chunks:
            kept = self.kept if self.kept is not None else pd.DataFrame()
            if len(kept) and not kept["timestamp"].is_monotonic_increasing:
                kept = kept.sort_values("timestamp", kind="stable", ignore_index=True)
            return kept
        if self._again is None:
            raise RuntimeError("the events were read in chunks and cannot be read again")
        return (events_only(chunk)[0] for chunk in self._again())

    def gather_alerts(self, alerts: Sequence[Any]) -> list[AlertRows]:
        """The rows of ``alerts`` (found or scored after the pass), from the events again."""
        if self.rows is not None:
            return self.rows
        self.rows = [AlertRows(a) for a in alerts]
        if not alerts:
            return self.rows
        events = self.again()
        order = 0
        for chunk in [events] if isinstance(events, pd.DataFrame) else events:
            step = self.size or max(len(chunk), 1)
            for start in range(0, len(chunk), step):
                part = chunk.iloc[start:start + step]
                gather_rows(self.rows, part, order)
                order += len(part)
        return self.rows
