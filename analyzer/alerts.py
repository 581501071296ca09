"""Alerts: scored windows above the threshold, written back into the audit trail.

An alert is an ordinary audit event (DESIGN contract 1) with ``event.kind = "alert"``,
``log.level = "critical"``, the entity in ``user.name`` or ``source.ip``, the window in
``event.start`` / ``event.end``, ``event.risk_score``, ``rule.*`` naming the model, a readable
``message`` with the reasons, and the feature values, contributions, evidence (the
``event.sequence`` range of the window's events), incident id and the reasons as objects
(``analyzer.alert.reason_details``, see :class:`analyzer.reasons.Reason`) under
``analyzer.alert.*``.
Consecutive and related alert windows (one entity's run of hours, a campaign's addresses)
share one ``analyzer.alert.incident``. Writing it through the
:class:`~analyzer.logger.AuditLogger` chains it like any other record.

A suppressed alert (a window a suppression rule of :mod:`analyzer.suppression` matched) is still
written, at WARNING instead of CRITICAL, with ``analyzer.alert.suppressed`` naming the rule and
its reason: known-benign patterns are recorded, never silently dropped.

An alert's ``event.id`` is derived from its entity and window, so scoring the same log twice
never writes the same alert twice: :func:`write_alerts` skips ids already in the trail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.errors import SchemaError
from analyzer.events import AuditEvent, Kind, Level, Outcome
from analyzer.logger import AuditLogger
from analyzer.reasons import Reason, reasons_from_json

__all__ = ["ALERT_ACTION", "Alert", "Incident", "alert_id", "alerts_from_scores",
           "existing_alert_ids", "incidents_of", "is_alert_record", "write_alerts"]

ALERT_ACTION = "anomaly.detected"
RULE_NAME = "audit-analyzer: unusual activity for this entity"
_TOP_FEATURES = 6


def alert_id(entity_type: str, entity: str, window_start: Any, window_end: Any) -> str:
    """A stable id for the alert of one entity and window (the deduplication key)."""
    start = pd.Timestamp(window_start).isoformat()
    end = pd.Timestamp(window_end).isoformat()
    key = f"{entity_type}\x1f{entity}\x1f{start}\x1f{end}".encode()
    return "alert-" + hashlib.sha256(key).hexdigest()[:32]


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One alerted window, ready to be written as an audit event."""

    id: str
    entity_type: str
    entity: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    score: float
    risk_score: float
    reasons: tuple[str, ...]
    features: dict[str, float]
    contributions: dict[str, float]
    first_sequence: int | None = None
    last_sequence: int | None = None
    n_events: int = 0
    suppressed_by: str | None = None
    suppression_reason: str | None = None
    #: the incident this window belongs to (consecutive and related alert windows share it)
    incident: str | None = None
    #: ``reasons`` as objects, for phrasing in another language (empty for an alert
    #: recorded before reasons were objects: its English ``reasons`` are all there is)
    reason_details: tuple[Reason, ...] = ()

    @property
    def suppressed(self) -> bool:
        """Whether a suppression rule matched (written at WARNING, not CRITICAL)."""
        return self.suppressed_by is not None

    @property
    def message(self) -> str:
        window = (f"{self.window_start:%Y-%m-%d %H:%M}-{self.window_end:%H:%M} UTC")
        who = "user" if self.entity_type == "user" else "source"
        because = "; ".join(self.reasons) if self.reasons else "unusual combination of features"
        text = (f"Unusual activity by {who} {self.entity} in {window} "
                f"(risk {self.risk_score:.0f}/100): {because}")
        if self.suppressed:
            text = (f"Suppressed by rule {self.suppressed_by} "
                    f"({self.suppression_reason}): {text}")
        return text

    def to_event(self, *, model_id: str, model_version: str) -> AuditEvent:
        who: dict[str, Any] = ({"user": self.entity} if self.entity_type == "user"
                               else {"source_ip": self.entity} if _is_address(self.entity)
                               # a source known by host name only: ECS source.ip must be
                               # an address, so the name is in analyzer.alert.entity
                               else {})
        details = {
            "entity_type": self.entity_type,
            "entity": self.entity,
            "score": self.score,
            "reasons": list(self.reasons),
            "features": self.features,
            "contributions": self.contributions,
            "evidence": {"first_sequence": self.first_sequence,
                         "last_sequence": self.last_sequence, "events": self.n_events},
        }
        if self.incident:
            details["incident"] = self.incident
        if self.reason_details:
            details["reason_details"] = [r.to_json() for r in self.reason_details]
        if self.suppressed:
            details["suppressed"] = {"rule": self.suppressed_by,
                                     "reason": self.suppression_reason}
        return AuditEvent(
            ALERT_ACTION, timestamp=pd.Timestamp.now(tz="UTC").to_pydatetime(), id=self.id,
            kind=Kind.ALERT, level=Level.WARNING if self.suppressed else Level.CRITICAL,
            outcome=Outcome.UNKNOWN,
            category=("intrusion_detection",), message=self.message,
            start=self.window_start.to_pydatetime(), end=self.window_end.to_pydatetime(),
            risk_score=self.risk_score, rule_name=RULE_NAME, rule_id=model_id,
            rule_version=model_version, analyzer={"alert": details}, **who,
        )

    @classmethod
    def from_record(cls, doc: Mapping[str, Any]) -> Alert:
        """The alert an audit record holds (the parsed, unsealed form of :meth:`to_event`).

        The one decoder of alert records: the report and the feedback review read alerts
        through it. Records written by other versions are read leniently (the
        entity falls back to ``user.name`` or ``source.ip``, the window to ``@timestamp``,
        the id to :func:`alert_id`); what cannot be read raises :class:`SchemaError` naming
        the field, and a record that is not an alert says so.
        """
        if not is_alert_record(doc):
            raise SchemaError("event.kind: not an alert record")
        event = doc["event"]
        found = doc.get("analyzer")
        details = found.get("alert") if isinstance(found, Mapping) else None
        details = details if isinstance(details, Mapping) else {}
        user, source = _node(doc, "user").get("name"), _node(doc, "source").get("ip")
        entity_type = str(details.get("entity_type") or ("user" if user else "source_ip"))
        entity = str(details.get("entity") or user or source or "")
        start = _time(event.get("start") or doc.get("@timestamp"), "event.start")
        end = _time(event.get("end"), "event.end") if event.get("end") else start
        evidence = _node(details, "evidence")
        suppressed = _node(details, "suppressed") if details.get("suppressed") else None
        return cls(
            id=str(event.get("id") or alert_id(entity_type, entity, start, end)),
            entity_type=entity_type, entity=entity, window_start=start, window_end=end,
            score=_number(details.get("score"), "analyzer.alert.score"),
            risk_score=_number(event.get("risk_score"), "event.risk_score"),
            reasons=tuple(str(r) for r in details.get("reasons") or ()),
            features=_numbers(details.get("features")),
            contributions=_numbers(details.get("contributions")),
            first_sequence=_int_or_none(evidence.get("first_sequence")),
            last_sequence=_int_or_none(evidence.get("last_sequence")),
            n_events=_int_or_none(evidence.get("events")) or 0,
            suppressed_by=None if suppressed is None else str(suppressed.get("rule") or "rule"),
            suppression_reason=None if suppressed is None else
            str(suppressed.get("reason") or ""),
            incident=_text(details.get("incident")),
            reason_details=reasons_from_json(details.get("reason_details")),
        )


def is_alert_record(doc: Mapping[str, Any]) -> bool:
    """Whether a parsed record is an alert: its ``event.kind`` is ``alert`` (decided on the
    parsed field, however the line spells it)."""
    event = doc.get("event")
    return isinstance(event, Mapping) and event.get("kind") == "alert"


def _node(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    found = doc.get(key)
    return found if isinstance(found, Mapping) else {}


def _time(value: Any, field: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise SchemaError(f"{field}: not a time: {value!r:.60}") from None
    if pd.isna(stamp):
        raise SchemaError(f"{field}: missing")
    return stamp if stamp.tzinfo is not None else stamp.tz_localize("UTC")


def _number(value: Any, field: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(f"{field}: expected a number, got {value!r:.60}")
    return float(value)


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping):
        return {}
    return {str(k): v for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value) or None


def alerts_from_scores(scores: pd.DataFrame) -> list[Alert]:
    """The :class:`Alert` objects of a scores frame's alerted rows, highest risk first.

    Rows a suppression rule matched (a true ``suppressed`` column) are included, marked
    suppressed, so that they are recorded at a lower level rather than dropped.
    """
    flagged = scores["alert"].astype(bool)
    if "suppressed" in scores.columns:
        flagged = flagged | scores["suppressed"].fillna(False).astype(bool)
    rows = scores[flagged]
    if rows.empty:
        return []
    rows = rows.sort_values(["risk_score", "score"], ascending=False, kind="stable")
    c_cols = [c for c in rows.columns if c.startswith("c_")]
    alerts = []
    for record in rows.to_dict("records"):
        contributions = {c[2:]: _finite(record[c]) for c in c_cols}
        top = sorted((k for k, v in contributions.items() if v), key=lambda k: -contributions[k])
        top = top[:_TOP_FEATURES]
        features = {k: _finite(record.get("f_" + k)) for k in top}
        reasons = tuple(r.strip() for r in str(record.get("reasons") or "").split(";")
                        if r.strip())
        first, last = record.get("first_sequence"), record.get("last_sequence")
        suppressed = bool(record.get("suppressed", False))
        alerts.append(Alert(
            id=alert_id(record["entity_type"], record["entity"], record["window_start"],
                        record["window_end"]),
            entity_type=str(record["entity_type"]), entity=str(record["entity"]),
            window_start=pd.Timestamp(record["window_start"]),
            window_end=pd.Timestamp(record["window_end"]),
            score=float(record["score"]), risk_score=float(record.get("risk_score", 0.0)),
            reasons=reasons, features=features,
            contributions={k: contributions[k] for k in top},
            first_sequence=None if pd.isna(first) else int(first),
            last_sequence=None if pd.isna(last) else int(last),
            n_events=int(record.get("n_events", 0) or 0),
            suppressed_by=str(record.get("suppressed_by") or "rule") if suppressed else None,
            suppression_reason=str(record.get("suppression_reason") or "")
            if suppressed else None,
            incident=_text(record.get("incident")),
            # the model's text carries its Reason objects; a scores file's does not
            reason_details=getattr(record.get("reasons"), "reasons", ()),
        ))
    return alerts


@dataclasses.dataclass(frozen=True, slots=True)
class Incident:
    """Alert windows that belong together: their time span, entities and combined reasons."""

    id: str
    start: pd.Timestamp
    end: pd.Timestamp
    entities: tuple[str, ...]
    reasons: tuple[str, ...]
    risk_score: float
    alerts: tuple[Alert, ...]

    @property
    def summary(self) -> str:
        span = f"{self.start:%Y-%m-%d %H:%M}-{self.end:%H:%M} UTC"
        who = ", ".join(self.entities[:3]) + (
            f" and {len(self.entities) - 3} more" if len(self.entities) > 3 else "")
        because = "; ".join(self.reasons[:3]) or "unusual combination of features"
        return (f"incident {self.id}: {len(self.alerts)} window(s) {span}, {who} "
                f"(risk {self.risk_score:.0f}/100): {because}")


def incidents_of(alerts: Iterable[Alert]) -> list[Incident]:
    """Alerts grouped by incident (an alert without one is its own), riskiest first.

    Reasons are combined in order of the alerts' risk, each said once.
    """
    groups: dict[str, list[Alert]] = {}
    for alert in alerts:
        groups.setdefault(alert.incident or alert.id, []).append(alert)
    out = []
    for key, members in groups.items():
        members.sort(key=lambda a: (-a.risk_score, -a.score, a.window_start, a.entity))
        reasons = tuple(dict.fromkeys(r for a in members for r in a.reasons))
        out.append(Incident(
            id=key, start=min(a.window_start for a in members),
            end=max(a.window_end for a in members),
            entities=tuple(dict.fromkeys(a.entity for a in members)), reasons=reasons,
            risk_score=members[0].risk_score, alerts=tuple(members)))
    out.sort(key=lambda i: (-i.risk_score, i.start, i.id))
    return out


def existing_alert_ids(path: str | os.PathLike[str]) -> set[str]:
    """``event.id`` of every alert already in an audit log (a scan of alert lines only)."""
    from analyzer.sources.jsonl import records_holding

    found: set[str] = set()
    if not Path(path).exists():
        return found
    for _, doc in records_holding(path, b'"alert"'):
        # only the id counts here: a damaged alert still holds its window's place
        if is_alert_record(doc) and doc["event"].get("id"):
            found.add(str(doc["event"]["id"]))
    return found


def write_alerts(alerts: Iterable[Alert], audit: AuditLogger, *, model_id: str,
                 model_version: str, skip_ids: set[str] | None = None) -> list[Alert]:
    """Write each alert not already in the trail; return those written.

    Alerts are written at CRITICAL, suppressed ones at WARNING.
    """
    skip = existing_alert_ids(audit.path) if skip_ids is None else skip_ids
    written = []
    for alert in alerts:
        if alert.id in skip:
            continue
        audit.log_event(alert.to_event(model_id=model_id, model_version=model_version))
        skip.add(alert.id)
        written.append(alert)
    audit.flush()
    return written


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
