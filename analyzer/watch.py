"""Watch a live audit log: score open windows as events arrive and alert within seconds.

:class:`Watcher` follows the log (appends and rotation, through the shipper's
:class:`~analyzer.follow.LogTail`), keeps the events of the windows that are still
open, and every ``interval`` seconds re-scores the time windows that received events since
the last tick. A window whose row comes back with ``alert`` set is reported once through
``on_alert``; if a later tick scores it higher by at least ``update_margin`` it is reported
again as an *update* (column ``update`` True), never as a repeat.

Windows are tumbling spans of ``window`` aligned to UTC. Event time drives them: a window is
closed once an event at least ``grace`` past its end has been seen; its events and its alert
state are then dropped, so memory holds the open windows only, however long the watch runs.
Events that arrive for a closed window are counted as ``late`` and not scored.

Scoring and alerting are injected (``score_windows(events) -> scores``, ``on_alert(rows)``),
so the machinery does not depend on a particular model; :func:`model_scorer` and
:func:`alert_writer` adapt an :class:`~analyzer.model.AuditModel` and an
:class:`~analyzer.logger.AuditLogger`.

Resuming: the state file beside the log (``<log>.watch-state``) holds the position of the
first event of the oldest open window and the windows already alerted. A restart re-reads
the open windows from there, so nothing is missed and nothing is alerted twice. Without a
saved state the watch starts at the beginning of the log, or with ``from_end`` at its end
(only what is appended from now on is scored).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from analyzer.durations import parse_duration
from analyzer.errors import AnalyzerError, ConfigError
from analyzer.events import FRAME_COLUMNS, column_value
from analyzer.files import atomic_write, mode_of
from analyzer.follow import Cursor, LogTail, cursor_at_end
from analyzer.series import watch_state_path as state_path

if TYPE_CHECKING:
    from analyzer.logger import AuditLogger

__all__ = ["WatchStats", "Watcher", "alert_writer", "model_scorer", "records_to_frame",
           "state_path"]

_log = logging.getLogger(__name__)

ScoreFn = Callable[[pd.DataFrame], pd.DataFrame]
AlertFn = Callable[[pd.DataFrame], None]

_KEY = ["entity_type", "entity", "window_start"]


@dataclass(frozen=True, slots=True)
class WatchStats:
    """Counts since the watcher started."""

    events: int = 0
    late: int = 0
    ticks: int = 0
    windows_scored: int = 0
    alerts: int = 0
    updates: int = 0
    open_windows: int = 0
    buffered_events: int = 0
    evicted_events: int = 0
    lag_bytes: int = 0

    def summary(self) -> str:
        """One line for a person (the CLI prints it periodically)."""
        text = (f"{self.events:,} events, {self.alerts} alerts, {self.updates} updates, "
                f"{self.open_windows} open windows ({self.buffered_events:,} events "
                f"buffered), {self.ticks} scorings")
        if self.late:
            text += f", {self.late:,} late"
        return text + f"; lag {self.lag_bytes:,} bytes"


# -- records -> the normalized frame -------------------------------------------------------

#: The frame's columns read from each record (``timestamp`` is parsed on its own).
_COLUMNS = (*(c for c in FRAME_COLUMNS if c != "timestamp"), "roles")


def records_to_frame(docs: list[dict[str, Any]], *,
                     offsets: list[int] | None = None) -> pd.DataFrame:
    """Audit records (parsed JSON) -> the normalized events frame (DESIGN contract 3).

    Alerts (``event.kind == "alert"``) are left out: the analyzer never scores its own
    alerts as activity. Records without a readable ``@timestamp`` or action are skipped.
    ``offsets`` (one per record) become an ``_offset`` column of the rows kept.
    """
    from analyzer.sources import build_frame

    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    stamps: list[str] = []
    kept: list[int] = []
    for n, doc in enumerate(docs):
        event = doc.get("event")
        if not isinstance(event, dict) or event.get("kind") == "alert" \
                or not event.get("action") or not isinstance(doc.get("@timestamp"), str):
            continue
        kept.append(n)
        stamps.append(doc["@timestamp"])
        for name, values in columns.items():
            values.append(column_value(doc, name))
    timestamps = pd.to_datetime(pd.Series(stamps, dtype="object"), utc=True,
                                format="ISO8601", errors="coerce")
    roles = columns.pop("roles")
    frame = build_frame({**columns, "timestamp": timestamps}, length=len(stamps))
    frame["roles"] = pd.Series(roles, dtype="object").astype("category")
    if offsets is not None:
        frame["_offset"] = np.asarray([offsets[n] for n in kept], dtype="int64")
    return frame[frame["timestamp"].notna().to_numpy()].reset_index(drop=True)


# -- the watcher ---------------------------------------------------------------------------


class Watcher:
    """Follow a live audit log, re-score open windows, alert once per entity and window.

    Parameters
    ----------
    log_path
        The audit log to follow.
    score_windows
        ``events frame -> scores frame`` with at least ``entity_type, entity,
        window_start, window_end, score, alert`` (DESIGN contract 6).
    on_alert
        Called with the scores rows to report (plus ``update``: False the first time a
        window alerts, True when a later tick scored it higher).
    interval
        Seconds between re-scorings (default 15).
    window
        Window length, as the model uses (pandas offset, default ``"1h"``).
    grace
        How long past a window's end (in event time) late events are still accepted.
    update_margin
        A window already alerted is reported again only when its score rose by this much.
    poll_interval
        Seconds between looks at the log.
    max_events
        Upper bound of buffered events; beyond it the oldest windows are evicted early
        (with a warning), so memory stays bounded even on a flood.
    state_file
        Where the resume state is kept (default :func:`state_path`); ``False`` for none.
    from_end
        Without a saved state, start at the end of the log instead of its beginning: only
        events appended from now on are scored (windows already open start empty). A saved
        state is always resumed, so a restart misses nothing.
    on_stats, stats_every
        ``on_stats(WatchStats)`` is called from the watching thread every ``stats_every``
        seconds (e.g. to print progress).
    """

    def __init__(self, log_path: str | os.PathLike[str], *, score_windows: ScoreFn,
                 on_alert: AlertFn, interval: float = 15.0, window: str = "1h",
                 grace: float = 300.0, update_margin: float = 0.05,
                 poll_interval: float = 1.0, max_events: int = 2_000_000,
                 state_file: str | os.PathLike[str] | bool | None = None,
                 from_end: bool = False,
                 unseal: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 on_stats: Callable[[WatchStats], None] | None = None,
                 stats_every: float = 60.0) -> None:
        if interval <= 0 or poll_interval <= 0 or grace < 0:
            raise ConfigError("interval and poll_interval must be positive, grace not negative")
        if on_stats is not None and stats_every <= 0:
            raise ConfigError("stats_every must be positive")
        self._window = pd.Timedelta(parse_duration(window, name="window"))
        if self._window <= pd.Timedelta(0):
            raise ConfigError("window must be positive")
        self.log_path = Path(log_path)
        self.score_windows = score_windows
        self.on_alert = on_alert
        self.interval = interval
        self.grace = pd.Timedelta(seconds=grace)
        self.update_margin = update_margin
        self.poll_interval = min(poll_interval, interval)
        self.max_events = max_events
        # opens records encrypted at rest (RecordCipher.unseal); None reads the clear fields
        self.unseal = unseal
        self.state_file: Path | None = None if state_file is False else (
            state_path(log_path) if state_file is None or state_file is True
            else Path(state_file))
        self._stop = threading.Event()
        self._events: list[pd.DataFrame] = []  # chunks; "_inode", "_offset" columns: where
        self._touched: set[pd.Timestamp] = set()
        self._alerted: dict[tuple[str, str, pd.Timestamp], float] = {}
        self._watermark: pd.Timestamp | None = None
        self._counts = {f.name: 0 for f in dataclasses.fields(WatchStats)
                        if f.name not in ("open_windows", "buffered_events", "lag_bytes")}
        self.from_end = from_end
        self.on_stats = on_stats
        self.stats_every = stats_every
        self._tail: LogTail | None = None
        self._resume: Cursor | None = None
        self._last_tick = time.monotonic()

    # -- public ----------------------------------------------------------------------------

    def stats(self) -> WatchStats:
        buffered = sum(len(c) for c in self._events)
        open_windows = len({s for c in self._events for s in c["_window"].unique()})
        lag = self._tail.lag_bytes() if self._tail is not None else 0
        return WatchStats(**self._counts, open_windows=open_windows, buffered_events=buffered,
                          lag_bytes=lag)

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(self, *, until: Callable[[], bool] | None = None) -> WatchStats:
        """Follow the log until :meth:`stop` (or ``until()`` returns True); return the counts.

        Before returning it scores what has arrived since the last tick and saves the
        resume state.
        """
        self._stop.clear()
        self._open()
        reported = time.monotonic()
        try:
            while not self._stop.is_set() and not (until is not None and until()):
                self.poll()
                if self.on_stats is not None and \
                        time.monotonic() - reported >= self.stats_every:
                    reported = time.monotonic()
                    self.on_stats(self.stats())
                if time.monotonic() - self._last_tick >= self.interval:
                    self.tick()
                    continue
                self._stop.wait(self.poll_interval)
            self.poll()
            self.tick()
        finally:
            self._close()
        return self.stats()

    def poll(self) -> int:
        """Read what was appended to the log; returns the number of new events buffered.

        Windows that close while reading (a backlog after a restart) are scored before
        they are evicted, so a catch-up misses nothing.
        """
        if self._tail is None:
            self._open()
        assert self._tail is not None
        added = 0
        while True:
            inode = self._tail.position[0]
            lines = self._tail.read(4 << 20)
            if not lines:
                return added
            docs, offsets = [], []
            for raw, end in lines:
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict):
                    if self.unseal is not None:
                        try:
                            doc = self.unseal(doc)
                        except AnalyzerError as exc:
                            _log.warning("%s: %s", self.log_path, exc)
                            continue
                    docs.append(doc)
                    offsets.append(end - len(raw) - 1)  # where the line starts
            frame = records_to_frame(docs, offsets=offsets)
            if frame.empty:
                continue
            frame["_inode"] = inode
            added += self._add(frame)
            if any(w < self._closed_before() for w in self._touched):
                self.tick()

    def tick(self) -> pd.DataFrame:
        """Re-score the windows that received events; report new alerts and updates."""
        self._last_tick = time.monotonic()
        self._counts["ticks"] += 1
        reported = pd.DataFrame()
        if self._touched and self._events:
            events = pd.concat(self._events, ignore_index=True)
            chosen = events[events["_window"].isin(list(self._touched))]
            self._touched = set()
            if not chosen.empty:
                scores = self.score_windows(chosen.drop(columns=["_window", "_offset",
                                                                 "_inode"]))
                self._counts["windows_scored"] += len(scores)
                reported = self._select(scores)
                if not reported.empty:
                    self.on_alert(reported)
                    n_updates = int(reported["update"].sum())
                    self._counts["updates"] += n_updates
                    self._counts["alerts"] += len(reported) - n_updates
        self._evict()
        self._save_state()
        return reported

    # -- internals ---------------------------------------------------------------------

    def _add(self, frame: pd.DataFrame) -> int:
        frame["_window"] = frame["timestamp"].dt.floor(self._window)
        # Late means: for a window already closed before this read. Windows that close
        # within it are scored by poll() before they are evicted.
        late = frame["_window"] < self._closed_before()
        latest = frame["timestamp"].max()
        if self._watermark is None or latest > self._watermark:
            self._watermark = latest
        if late.any():
            self._counts["late"] += int(late.sum())
            _log.debug("%d late events for closed windows ignored", int(late.sum()))
            frame = frame[~late]
        if frame.empty:
            return 0
        self._events.append(frame)
        self._touched.update(frame["_window"].unique())
        self._counts["events"] += len(frame)
        if sum(len(c) for c in self._events) > self.max_events:
            self._evict(force=True)
        return len(frame)

    def _closed_before(self) -> pd.Timestamp:
        """Windows starting before this are closed (their end + grace <= the watermark)."""
        if self._watermark is None:
            return pd.Timestamp("1970-01-01", tz="UTC")
        return (self._watermark - self.grace - self._window).floor(self._window) + self._window

    def _select(self, scores: pd.DataFrame) -> pd.DataFrame:
        if scores.empty:
            return scores.iloc[0:0].assign(update=pd.Series(dtype=bool))
        hits = scores[scores["alert"].astype(bool)]
        rows, updates = [], []
        for i, (etype, entity, start, score) in enumerate(zip(
                hits["entity_type"].astype(str), hits["entity"].astype(str),
                pd.to_datetime(hits["window_start"], utc=True), hits["score"], strict=True)):
            key = (etype, _entity_digest(entity), start)
            previous = self._alerted.get(key)
            if previous is None:
                rows.append(i)
                updates.append(False)
            elif score >= previous + self.update_margin:
                rows.append(i)
                updates.append(True)
            else:
                continue
            self._alerted[key] = float(score)
        out = hits.iloc[rows].copy()
        out["update"] = np.array(updates, dtype=bool)
        return out.reset_index(drop=True)

    def _evict(self, force: bool = False) -> None:
        if not self._events:
            return
        cut = self._closed_before()
        if force:
            windows = sorted({s for c in self._events for s in c["_window"].unique()})
            total = sum(len(c) for c in self._events)
            for w in windows:
                if total <= self.max_events * 0.9:
                    break
                cut = max(cut, w + self._window)
                total -= sum(int((c["_window"] == w).sum()) for c in self._events)
            _log.warning("more than %d events buffered: evicting windows before %s early",
                         self.max_events, cut)
        kept = []
        for chunk in self._events:
            keep = chunk["_window"] >= cut
            self._counts["evicted_events"] += int((~keep).sum())
            if keep.all():
                kept.append(chunk)
            elif keep.any():
                kept.append(chunk[keep])
        self._events = kept
        self._touched = {w for w in self._touched if w >= cut}
        self._alerted = {k: v for k, v in self._alerted.items() if k[2] >= cut}

    # -- resume state ---------------------------------------------------------------------

    def _open(self) -> None:
        if self._resume is not None:  # run() again on this watcher: go on where it was
            self._tail = LogTail(self.log_path, self._resume)
            return
        cursor = None
        if self.state_file is not None and self.state_file.exists():
            try:
                state = orjson.loads(self.state_file.read_bytes())
                cursor = Cursor(offset=int(state["offset"]), inode=int(state["inode"]))
                self._alerted = {(e, n, pd.Timestamp(s)): float(v)
                                 for e, n, s, v in state.get("alerted", [])}
                if state.get("watermark"):
                    self._watermark = pd.Timestamp(state["watermark"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{self.state_file}: unreadable watch state ({exc}); move "
                                  "it aside to start from the beginning of the log") from None
        if cursor is None and self.from_end:
            cursor = cursor_at_end(self.log_path)
            _log.info("%s: starting at its end (byte %d)", self.log_path, cursor.offset)
        self._tail = LogTail(self.log_path, cursor)

    def _close(self) -> None:
        if self._tail is not None:
            inode, offset = self._tail.position
            self._resume = Cursor(offset=offset, inode=inode)
            self._tail.close()
            self._tail = None

    def _save_state(self) -> None:
        if self.state_file is None or self._tail is None:
            return
        # Resume from the first buffered event in file order (chunks are kept in reading
        # order): re-reading from there rebuilds every open window.
        first = next((c for c in self._events if len(c)), None)
        if first is not None:
            inode, offset = int(first["_inode"].iloc[0]), int(first["_offset"].iloc[0])
        else:
            inode, offset = self._tail.position
        state = {"inode": inode, "offset": offset,
                 "watermark": None if self._watermark is None else self._watermark.isoformat(),
                 "alerted": [[e, n, s.isoformat(), v] for (e, n, s), v in self._alerted.items()]}
        atomic_write(self.state_file, orjson.dumps(state), mode=mode_of(self.log_path),
                     fsync=False)


def _entity_digest(entity: str) -> str:
    """How an alerted entity is remembered (and saved in the watch state): by digest, so
    the state file beside an encrypted trail names no user or address in clear."""
    return hashlib.sha256(entity.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# -- adapters for the real model and logger -----------------------------------------------


def model_scorer(model: Any, *, alerts_per_day: float | None = None) -> ScoreFn:
    """``score_windows`` for a fitted :class:`~analyzer.model.AuditModel`: the one scoring
    entry point (:func:`analyzer.pipeline.score_trail`) over the events of the open windows;
    the watcher writes the alerts itself (first alerts and updates)."""
    from analyzer.pipeline import score_trail

    def score(events: pd.DataFrame) -> pd.DataFrame:
        return score_trail(events, model, alerts_per_day=alerts_per_day,
                           check_drift=False).scores
    return score


def alert_writer(audit: AuditLogger, *, model_id: str, model_version: str = "") -> AlertFn:
    """``on_alert`` that writes alerts (and updates) to the trail at CRITICAL.

    A window's first alert is written by :func:`analyzer.alerts.write_alerts` with its
    stable id (so ``score`` and ``watch`` never write the same alert twice). An update
    (the window scored higher later) is written as ``anomaly.updated`` with id
    ``<alert id>-u<n>`` and ``analyzer.alert.updates`` naming the first alert.
    """
    from analyzer.alerts import alerts_from_scores, existing_alert_ids, write_alerts

    known = existing_alert_ids(audit.path)
    revisions: dict[str, int] = {}

    def write(rows: pd.DataFrame) -> None:
        first = rows[~rows["update"]]
        if not first.empty:
            write_alerts(alerts_from_scores(first), audit, model_id=model_id,
                         model_version=model_version, skip_ids=known)
        for alert in alerts_from_scores(rows[rows["update"]]):
            n = revisions[alert.id] = revisions.get(alert.id, 0) + 1
            event = alert.to_event(model_id=model_id, model_version=model_version)
            details = dict(event.analyzer or {})
            details["alert"] = {**details.get("alert", {}), "updates": alert.id}
            audit.log_event(dataclasses.replace(event, id=f"{alert.id}-u{n}",
                                                action="anomaly.updated", analyzer=details))
        audit.flush()

    return write
