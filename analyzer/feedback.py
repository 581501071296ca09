"""Analysts' verdicts on alerts, and what retraining must leave out.

An analyst who looked at an alert records a verdict (``benign``, ``malicious`` or
``unsure``) with a note. The verdict is itself an audit event, chained like every other
record: ``event.action = "alert.feedback"``, the analyst in ``user.name``, the alert's
``event.id`` in ``resource.name`` (``resource.type = "alert"``), and the details under
``analyzer.feedback``. The latest verdict on an alert is the one that counts.

Retraining must not learn attacks as normal. :func:`leave_out_alerts` removes from a
training frame the events of every alerted window that was **not cleared**: confirmed
malicious, marked unsure, or never reviewed. An alert is cleared by a ``benign`` verdict, or
by a suppression rule (it was written suppressed, so someone already judged the pattern
benign), unless a later verdict says otherwise.

>>> import pandas as pd
>>> alerts = pd.DataFrame({"alert_id": ["alert-1", "alert-2"], "entity_type": "user",
...     "entity": ["mallory", "bob"], "suppressed": False,
...     "window_start": pd.Timestamp("2025-03-10 02:00", tz="UTC"),
...     "window_end": pd.Timestamp("2025-03-10 03:00", tz="UTC")})
>>> feedback = pd.DataFrame({"alert_id": ["alert-2"], "verdict": ["benign"], "note": [""],
...     "analyst": ["ann"], "timestamp": pd.Timestamp("2025-03-11", tz="UTC")})
>>> training_exclusions(alerts, feedback)[["entity", "why"]].to_dict("records")
[{'entity': 'mallory', 'why': 'not reviewed'}]
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from analyzer.errors import ConfigError, SchemaError, SourceError
from analyzer.features import ENTITY_TYPES
from analyzer.logger import AuditLogger

__all__ = [
    "FEEDBACK_ACTION",
    "VERDICTS",
    "ExclusionResult",
    "in_windows",
    "latest_verdicts",
    "leave_out_alerts",
    "read_alerts",
    "read_feedback",
    "record_feedback",
    "training_exclusions",
]

log = logging.getLogger(__name__)

#: ``event.action`` of a verdict.
FEEDBACK_ACTION = "alert.feedback"
#: The verdicts an analyst can record.
VERDICTS: tuple[str, ...] = ("benign", "malicious", "unsure")

_ALERT_COLUMNS = ["alert_id", "entity_type", "entity", "window_start", "window_end",
                  "risk_score", "suppressed", "timestamp"]
_FEEDBACK_COLUMNS = ["alert_id", "verdict", "note", "analyst", "timestamp", "event_id"]


# -- recording -------------------------------------------------------------------------------

def record_feedback(audit: AuditLogger, alert_id: str, verdict: str, *, note: str = "",
                    analyst: str | None = None,
                    known_alerts: Collection[str] | None = None) -> str:
    """Record an analyst's verdict on an alert as a chained audit event.

    Parameters
    ----------
    audit
        The logger of the trail the alert is in.
    alert_id
        The alert's ``event.id``.
    verdict
        One of :data:`VERDICTS`.
    note
        Why (free text, kept in the event).
    analyst
        Who decided (``user.name`` of the event).
    known_alerts
        The alert ids that exist (default: every alert in ``audit``'s file).

    Returns
    -------
    str
        The ``event.id`` of the feedback event.

    Raises
    ------
    ConfigError
        The verdict is not one of :data:`VERDICTS`, or no alert has this id.
    """
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    alert_id = alert_id.strip()
    if known_alerts is None:
        from analyzer.alerts import existing_alert_ids

        known_alerts = existing_alert_ids(audit.path)  # ids are in clear, even when sealed
    known = known_alerts
    if alert_id not in known:
        raise ConfigError(f"unknown alert id {alert_id!r}: no alert with this event.id in "
                          f"{audit.path}")
    who = analyst or "unknown"
    message = f"{who} marked alert {alert_id} {verdict}" + (f": {note}" if note else "")
    event_id = audit.log(
        FEEDBACK_ACTION, user=analyst or None, outcome="success", level="info",
        message=message, category="intrusion_detection", resource=alert_id,
        resource_type="alert",
        extra={"feedback": {"alert_id": alert_id, "verdict": verdict, "note": note}})
    audit.flush()
    log.info("%s", message)
    return str(event_id)


# -- reading the trail -------------------------------------------------------------------------

Unseal = Callable[[dict], dict]


def _records(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
             needle: bytes, unseal: Unseal | None = None) -> Iterable[dict]:
    from analyzer.sources.jsonl import records_holding

    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    for item in items:
        path = Path(item)
        if not path.exists():
            raise SourceError(f"{path}: audit log not found")
        # a cheap pre-filter (most lines are activity); the callers decide on parsed fields
        for _, doc in records_holding(path, needle):
            if isinstance((doc.get("analyzer") or {}).get("encrypted"), dict):
                if unseal is None:
                    # the alert's entity or the verdict is sealed: reading on without them
                    # would leave attacks in a training set without a word
                    raise SchemaError(
                        f"{path}: alerts and verdicts are encrypted at rest; give the "
                        "encryption key (unseal=, --encryption-key-file)")
                doc = unseal(doc)
            yield doc


def read_alerts(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                unseal: Unseal | None = None) -> pd.DataFrame:
    """Every alert written into audit logs (one row per ``event.id``, the first kept).

    ``unseal`` opens records encrypted at rest (a
    :meth:`~analyzer.crypto.RecordCipher.unseal`); without it a sealed alert is an error.

    Returns
    -------
    pandas.DataFrame
        ``alert_id, entity_type, entity, window_start, window_end, risk_score, suppressed,
        timestamp`` (times UTC).
    """
    from analyzer.alerts import Alert, is_alert_record

    rows = []
    for doc in _records(paths, b'"alert"', unseal):
        if not is_alert_record(doc) or not doc["event"].get("id"):
            continue
        try:
            alert = Alert.from_record(doc)
        except SchemaError as exc:
            log.warning("alert %s left out: %s", doc["event"]["id"], exc)
            continue
        rows.append((alert.id, alert.entity_type, alert.entity, alert.window_start,
                     alert.window_end, alert.risk_score, alert.suppressed,
                     doc.get("@timestamp")))
    frame = pd.DataFrame(rows, columns=_ALERT_COLUMNS)
    for column in ("window_start", "window_end", "timestamp"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce") \
            .astype("datetime64[ns, UTC]")
    frame["risk_score"] = pd.to_numeric(frame["risk_score"], errors="coerce")
    frame["suppressed"] = frame["suppressed"].astype(bool)
    return frame.drop_duplicates("alert_id").reset_index(drop=True)


def read_feedback(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                  unseal: Unseal | None = None) -> pd.DataFrame:
    """Every verdict recorded in audit logs, in the order written (``unseal``: as in
    :func:`read_alerts`).

    Returns
    -------
    pandas.DataFrame
        ``alert_id, verdict, note, analyst, timestamp, event_id``.
    """
    rows = []
    for doc in _records(paths, FEEDBACK_ACTION.encode(), unseal):
        event = doc.get("event") or {}
        details = (doc.get("analyzer") or {}).get("feedback") or {}
        if event.get("action") != FEEDBACK_ACTION or details.get("verdict") not in VERDICTS:
            continue
        rows.append((str(details.get("alert_id", "")), details["verdict"],
                     str(details.get("note", "")), (doc.get("user") or {}).get("name", ""),
                     doc.get("@timestamp"), event.get("id")))
    frame = pd.DataFrame(rows, columns=_FEEDBACK_COLUMNS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce") \
        .astype("datetime64[ns, UTC]")
    return frame


def latest_verdicts(feedback: pd.DataFrame) -> pd.Series:
    """The latest verdict per alert id (a later verdict overrides an earlier one)."""
    if feedback.empty:
        return pd.Series(dtype=object, name="verdict")
    ordered = feedback.reset_index(drop=True).reset_index(names="_order") \
        .sort_values(["timestamp", "_order"], kind="stable")
    return ordered.groupby("alert_id", sort=True)["verdict"].last()


# -- what retraining leaves out ----------------------------------------------------------------

def training_exclusions(alerts: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """The alerted windows retraining must leave out, and why.

    An alert is left out unless cleared: its latest verdict is ``benign``, or it was
    suppressed by a rule and no verdict says otherwise.

    Returns
    -------
    pandas.DataFrame
        ``alert_id, entity_type, entity, window_start, window_end, verdict, why``.
    """
    missing = [c for c in ("alert_id", "entity_type", "entity", "window_start", "window_end")
               if c not in alerts.columns]
    if missing:
        raise SchemaError(f"alerts lack column(s): {', '.join(missing)}")
    verdicts = latest_verdicts(feedback)
    out = alerts.loc[:, ["alert_id", "entity_type", "entity", "window_start",
                         "window_end"]].copy()
    verdict = out["alert_id"].map(verdicts)
    suppressed = alerts["suppressed"].fillna(False).astype(bool) \
        if "suppressed" in alerts.columns else pd.Series(False, index=alerts.index)
    cleared = verdict.eq("benign") | (suppressed & verdict.isna())
    why = np.select([verdict.eq("malicious"), verdict.eq("unsure")],
                    ["confirmed malicious", "marked unsure"], default="not reviewed")
    out["verdict"] = verdict.fillna("")
    out["why"] = why
    return out[~cleared.to_numpy()].reset_index(drop=True)


@dataclasses.dataclass(frozen=True, slots=True)
class ExclusionResult:
    """What :func:`leave_out_alerts` did.

    Attributes
    ----------
    frame
        The training frame without the left-out events.
    windows
        The alerted windows left out (see :func:`training_exclusions`).
    events_removed
        How many events they held.
    """

    frame: pd.DataFrame
    windows: pd.DataFrame
    events_removed: int

    def summary(self) -> str:
        """One line for a person."""
        if self.windows.empty:
            return "no alerted windows to leave out"
        counts = self.windows["why"].value_counts()
        parts = ", ".join(f"{int(n)} {why}" for why, n in counts.items())
        return (f"left out {self.events_removed:,} events of {len(self.windows)} alerted "
                f"window(s) not cleared ({parts})")


def leave_out_alerts(frame: pd.DataFrame, *, alerts: pd.DataFrame,
                     feedback: pd.DataFrame) -> ExclusionResult:
    """Remove from a training frame the events of alerted windows that were not cleared.

    Parameters
    ----------
    frame
        A normalized events frame (the training history).
    alerts
        The trail's alerts (:func:`read_alerts`).
    feedback
        The trail's verdicts (:func:`read_feedback`).

    Returns
    -------
    ExclusionResult
        A new frame (the input is not changed) and what was left out. A user window removes
        that user's events in the window; an address window removes every event from that
        address in the window.
    """
    windows = training_exclusions(alerts, feedback)
    drop = in_windows(frame, windows)
    kept = frame.loc[~drop].reset_index(drop=True)
    result = ExclusionResult(frame=kept, windows=windows, events_removed=int(drop.sum()))
    log.info("%s", result.summary())
    return result


def in_windows(frame: pd.DataFrame, windows: pd.DataFrame) -> np.ndarray:
    """Which events of ``frame`` lie in one of ``windows`` (``entity_type, entity,
    window_start, window_end``, as :func:`training_exclusions` gives them): a user window
    holds that user's events in it, an address window every event from that address.

    Each event is judged on its own, so a log read in chunks loses, chunk by chunk, the
    events a whole read loses.
    """
    missing = [c for c in ("timestamp", "user", "source_ip") if c not in frame.columns]
    if missing:
        raise SchemaError(f"events frame lacks column(s): {', '.join(missing)}")
    drop = np.zeros(len(frame), dtype=bool)
    if not len(windows) or not len(frame):
        return drop
    stamps = pd.to_datetime(frame["timestamp"], utc=True).to_numpy()
    for etype in ENTITY_TYPES:
        mine = windows[windows["entity_type"] == etype]
        if mine.empty:
            continue
        entity = frame[etype].astype(str).to_numpy()
        hit = np.flatnonzero(np.isin(entity, mine["entity"].astype(str).unique()))
        if not len(hit):
            continue
        events = pd.DataFrame({"pos": hit, "entity": entity[hit], "t": stamps[hit]})
        keys = pd.DataFrame({
            "entity": mine["entity"].astype(str).to_numpy(),
            "start": pd.to_datetime(mine["window_start"], utc=True).to_numpy(),
            "end": pd.to_datetime(mine["window_end"], utc=True).to_numpy()})
        pairs = events.merge(keys, on="entity")
        inside = (pairs["t"] >= pairs["start"]) & (pairs["t"] < pairs["end"])
        drop[pairs.loc[inside, "pos"].to_numpy()] = True
    return drop
