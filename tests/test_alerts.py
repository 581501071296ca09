from __future__ import annotations

import orjson
import pandas as pd
import pytest

from analyzer.alerts import alert_id, alerts_from_scores, existing_alert_ids, write_alerts
from analyzer.integrity import verify_log
from analyzer.logger import AuditLogger
from analyzer.sources import read_events


@pytest.fixture
def scores():
    start = pd.Timestamp("2026-02-03T10:00:00Z")
    return pd.DataFrame({
        "entity_type": ["user", "source_ip", "user"],
        "entity": ["alice", "203.0.113.9", "bob"],
        "window_start": [start] * 3,
        "window_end": [start + pd.Timedelta(hours=1)] * 3,
        "score": [0.9999, 0.9990, 0.2],
        "alert": [True, True, False],
        "reasons": ["first access from country RU; 3 privileged actions never done before",
                    "41 failed logins over 12 users", ""],
        "risk_score": [92.0, 70.0, 1.0],
        "first_sequence": [10, 4, 1],
        "last_sequence": [20, 40, 3],
        "n_events": [11, 41, 3],
        "f_new_country": [1.0, 0.0, 0.0],
        "c_new_country": [6.2, 0.0, 0.0],
        "f_failures": [0.0, 41.0, 0.0],
        "c_failures": [0.0, 8.1, 0.0],
    })


def test_alert_objects_carry_reasons_evidence_and_a_stable_id(scores):
    first, second = alerts_from_scores(scores)
    assert first.entity == "alice" and first.risk_score == 92.0
    assert first.reasons == ("first access from country RU",
                             "3 privileged actions never done before")
    assert first.contributions == {"new_country": 6.2} and first.features == {"new_country": 1.0}
    assert (first.first_sequence, first.last_sequence) == (10, 20)
    assert first.id == alert_id("user", "alice", scores.window_start[0], scores.window_end[0])
    assert "alice" in first.message and "first access from country RU" in first.message
    assert second.entity == "203.0.113.9"


def test_write_back_is_critical_chained_and_never_duplicated(tmp_path, key, scores):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, key=key) as audit:
        audit.log("login", user="alice", source_ip="203.0.113.9", outcome="success")
        written = write_alerts(alerts_from_scores(scores), audit, model_id="m1",
                               model_version="2026-01-01")
        assert len(written) == 2
        again = write_alerts(alerts_from_scores(scores), audit, model_id="m1",
                             model_version="2026-01-01")
        assert again == []
    assert verify_log(log, key=key).ok
    records = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    alerts = [r for r in records if r["event"]["kind"] == "alert"]
    assert len(alerts) == 2
    user_alert = next(a for a in alerts if "user" in a)
    assert user_alert["log"]["level"] == "critical"
    assert user_alert["user"]["name"] == "alice"
    assert user_alert["event"]["risk_score"] == 92.0
    assert user_alert["event"]["start"] == "2026-02-03T10:00:00.000000Z"
    assert user_alert["rule"] == {"id": "m1", "name": user_alert["rule"]["name"],
                                  "version": "2026-01-01"}
    assert user_alert["analyzer"]["alert"]["evidence"]["first_sequence"] == 10
    ip_alert = next(a for a in alerts if "source" in a)
    assert ip_alert["source"]["ip"] == "203.0.113.9"
    assert existing_alert_ids(log) == {a["event"]["id"] for a in alerts}
    # the analyzer never scores its own alerts
    result = read_events(log)
    assert len(result.frame) == 1 and result.skipped_alerts == 2


def test_incidents_combine_their_windows_span_entities_and_reasons(scores):
    from analyzer.alerts import incidents_of

    later = scores.iloc[[0]].assign(
        window_start=scores["window_start"].iloc[0] + pd.Timedelta(hours=1),
        window_end=scores["window_end"].iloc[0] + pd.Timedelta(hours=1),
        reasons="12 resources never touched before by alice (payroll)", risk_score=80.0)
    frame = pd.concat([scores, later], ignore_index=True)
    frame["incident"] = ["inc-a", "inc-b", "", "inc-a"]
    alerts = alerts_from_scores(frame)
    assert {a.incident for a in alerts} == {"inc-a", "inc-b"}
    first, second = incidents_of(alerts)
    assert first.id == "inc-a" and len(first.alerts) == 2
    assert first.start == pd.Timestamp("2026-02-03T10:00:00Z")
    assert first.end == pd.Timestamp("2026-02-03T12:00:00Z")
    assert first.entities == ("alice",) and first.risk_score == 92.0
    assert first.reasons == ("first access from country RU",
                             "3 privileged actions never done before",
                             "12 resources never touched before by alice (payroll)")
    assert "2 window(s) 2026-02-03 10:00-12:00 UTC, alice" in first.summary
    assert second.entities == ("203.0.113.9",)


def _record(alert, *, model_id="m1", model_version="v1"):
    """The parsed line the logger writes for ``alert`` (through the ECS codec)."""
    return orjson.loads(orjson.dumps(
        alert.to_event(model_id=model_id, model_version=model_version).to_ecs()))


def test_an_alert_record_decodes_back_to_the_same_alert(scores):
    import dataclasses

    from analyzer.alerts import Alert

    first, second = alerts_from_scores(scores)
    suppressed = dataclasses.replace(second, suppressed_by="scanner",
                                     suppression_reason="known scanner", incident="inc-7")
    for alert in (first, second, suppressed):
        assert Alert.from_record(_record(alert)) == alert
    # a source known by host name only keeps its entity (source.ip must be an address)
    named = dataclasses.replace(second, entity="build-host")
    assert Alert.from_record(_record(named)) == named


def test_alerts_written_to_the_trail_are_read_back_by_report_and_feedback(tmp_path, scores):
    from analyzer.feedback import read_alerts
    from analyzer.report import read_recorded_alerts

    path = tmp_path / "audit.jsonl"
    with AuditLogger(path) as audit:
        written = write_alerts(alerts_from_scores(scores), audit, model_id="m",
                               model_version="1")
    assert sorted(read_recorded_alerts(path), key=lambda a: a.id) == \
        sorted(written, key=lambda a: a.id)
    rows = read_alerts(path).set_index("alert_id")
    for alert in written:
        assert rows.loc[alert.id, "entity"] == alert.entity
        assert rows.loc[alert.id, "window_start"] == alert.window_start
        assert rows.loc[alert.id, "risk_score"] == alert.risk_score


def test_a_malformed_alert_record_is_named_and_skipped_by_its_readers(tmp_path, scores,
                                                                       caplog):
    from analyzer.alerts import Alert
    from analyzer.errors import SchemaError
    from analyzer.feedback import read_alerts
    from analyzer.report import read_recorded_alerts

    good, bad = (_record(a) for a in alerts_from_scores(scores))
    bad["event"]["start"] = "not a time"
    with pytest.raises(SchemaError, match="event.start: not a time"):
        Alert.from_record(bad)
    with pytest.raises(SchemaError, match="not an alert"):
        Alert.from_record({"event": {"kind": "event", "action": "login"}})
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in (good, bad)))
    assert [a.id for a in read_recorded_alerts(path)] == [good["event"]["id"]]
    with caplog.at_level("WARNING", logger="analyzer.feedback"):
        assert read_alerts(path)["alert_id"].tolist() == [good["event"]["id"]]
    assert f"alert {bad['event']['id']} left out: event.start: not a time" in caplog.text
