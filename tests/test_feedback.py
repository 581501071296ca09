"""Feedback: verdicts as chained audit events, and what retraining leaves out."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from analyzer.alerts import Alert, write_alerts
from analyzer.errors import ConfigError
from analyzer.feedback import (
    leave_out_alerts,
    read_alerts,
    read_feedback,
    record_feedback,
    training_exclusions,
)
from analyzer.integrity import verify_log
from analyzer.logger import AuditLogger

T = pd.Timestamp("2025-03-10 02:00", tz="UTC")


def alert(entity: str, entity_type: str = "user", hour: int = 0, *,
          suppressed: bool = False) -> Alert:
    start = T + pd.Timedelta(hours=hour)
    from analyzer.alerts import alert_id

    return Alert(id=alert_id(entity_type, entity, start, start + pd.Timedelta(hours=1)),
                 entity_type=entity_type, entity=entity, window_start=start,
                 window_end=start + pd.Timedelta(hours=1), score=0.99, risk_score=80.0,
                 reasons=("something new",), features={}, contributions={},
                 suppressed_by="r1" if suppressed else None,
                 suppression_reason="known" if suppressed else None)


@pytest.fixture
def trail(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    with AuditLogger(path, key=key) as audit:
        audit.log("login", user="mallory", source_ip="10.0.0.1")
        write_alerts([alert("mallory"), alert("bob"), alert("carol"), alert("dave"),
                      alert("203.0.113.5", "source_ip"), alert("erin", suppressed=True)],
                     audit, model_id="m", model_version="1")
    return path


def test_a_verdict_is_a_chained_audit_event(trail, key):
    ids = read_alerts(trail).set_index("entity")["alert_id"]
    with AuditLogger(trail, key=key) as audit:
        event_id = record_feedback(audit, ids["bob"], "benign", note="approved pen test",
                                   analyst="ann")
    last = orjson.loads(trail.read_bytes().splitlines()[-1])
    assert last["event"]["id"] == event_id and last["event"]["action"] == "alert.feedback"
    assert last["user"]["name"] == "ann" and last["resource"]["name"] == ids["bob"]
    assert last["analyzer"]["feedback"] == {"alert_id": ids["bob"], "verdict": "benign",
                                            "note": "approved pen test"}
    assert verify_log(trail, key=key).ok
    feedback = read_feedback(trail)
    assert feedback[["alert_id", "verdict", "analyst"]].values.tolist() == [
        [ids["bob"], "benign", "ann"]]


def test_unknown_alert_id_and_bad_verdict_are_errors_naming_them(trail, key):
    before = trail.read_bytes()
    with AuditLogger(trail, key=key) as audit:
        with pytest.raises(ConfigError, match="unknown alert id 'alert-nope'"):
            record_feedback(audit, "alert-nope", "benign")
        with pytest.raises(ConfigError, match="verdict must be one of"):
            record_feedback(audit, "alert-nope", "fine")
    assert trail.read_bytes() == before  # nothing written for a refused verdict


def test_retraining_leaves_out_windows_not_cleared(trail, key):
    alerts = read_alerts(trail)
    ids = alerts.set_index("entity")["alert_id"]
    with AuditLogger(trail, key=key) as audit:
        record_feedback(audit, ids["bob"], "benign", analyst="ann")
        record_feedback(audit, ids["carol"], "malicious", analyst="ann")
        record_feedback(audit, ids["dave"], "benign", analyst="ann")
        record_feedback(audit, ids["dave"], "unsure", analyst="bo")  # the later one counts
    out = training_exclusions(alerts, read_feedback(trail)).set_index("entity")["why"]
    assert out.to_dict() == {"mallory": "not reviewed", "carol": "confirmed malicious",
                             "dave": "marked unsure", "203.0.113.5": "not reviewed"}

    at = T + pd.Timedelta(minutes=10)
    frame = pd.DataFrame({
        "timestamp": [at, at, at + pd.Timedelta(hours=2), at, at],
        "user": ["mallory", "bob", "mallory", "erin", "zoe"],
        "source_ip": ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3", "203.0.113.5"],
        "action": "login", "outcome": "success", "resource": ""})
    result = leave_out_alerts(frame, alerts=alerts, feedback=read_feedback(trail))
    # mallory's alerted hour and everything from the alerted address go; her later hour,
    # bob (cleared) and erin (suppressed) stay
    assert result.frame["user"].tolist() == ["bob", "mallory", "erin"]
    assert result.events_removed == 2
    assert "left out 2 events of 4 alerted window(s)" in result.summary()
    assert len(frame) == 5  # the input is not changed
