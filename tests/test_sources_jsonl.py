from __future__ import annotations

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from analyzer.errors import SourceError
from analyzer.events import REQUIRED_FRAME_COLUMNS, AuditEvent
from analyzer.logger import AuditLogger
from analyzer.sources import read_events, write_rejected
from analyzer.sources.jsonl import read
from tests.test_events import events


def test_frame_has_the_contract_columns_and_dtypes(sample_log):
    frame = read(sample_log).frame
    assert len(frame) == 20
    assert set(REQUIRED_FRAME_COLUMNS) <= set(frame.columns)
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert list(frame["outcome"].cat.categories) == ["success", "failure", "unknown"]
    assert frame["sequence"].tolist() == list(range(1, 21))
    assert frame["user"].iloc[0] == "alice" and frame["category"].iloc[0] == "authentication"


def test_alerts_are_skipped_unless_asked(log_path):
    with AuditLogger(log_path) as audit:
        audit.log("login", user="a")
        audit.critical("anomaly.detected", user="a", category="intrusion_detection")
    with log_path.open("r+b") as f:  # make the second record an alert
        lines = f.read().splitlines()
        doc = orjson.loads(lines[1])
        doc["event"]["kind"] = "alert"
        lines[1] = orjson.dumps(doc)
        f.seek(0)
        f.write(b"\n".join(lines) + b"\n")
    result = read(log_path)
    assert len(result.frame) == 1 and result.skipped_alerts == 1
    assert len(read(log_path, include_alerts=True).frame) == 2


BAD_LINES = {
    "bad JSON": b'{"@timestamp": "2026-01-01T00:00:00Z", "event": {"action": "login"',
    "event.action: expected str": b'{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":5}}',
    "@timestamp: unparseable": b'{"@timestamp":"yesterday","event":{"action":"login"}}',
    "event.outcome: unknown value": b'{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"login","outcome":"meh"}}',
    "not valid UTF-8": b'{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"l\xffogin"}}',
    "bad JSON: ": b'{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"lo\x00gin"}}',
    "line too long": b'{"@timestamp":"2026-01-01T00:00:00Z","message":"' + b"x" * (10 << 20) + b'","event":{"action":"login"}}',
    "event.action: missing": b'{"@timestamp":"2026-01-01T00:00:00Z","event":{}}',
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_each_bad_line_is_set_aside_with_its_number_and_the_rest_is_read(tmp_path, reason):
    good = b'{"@timestamp":"2026-01-01T00:00:0%dZ","event":{"action":"login","outcome":"success"},"user":{"name":"u%d"}}'
    lines = [good % (i, i) for i in range(5)]
    lines.insert(2, BAD_LINES[reason])
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = read(path)
    assert result.frame["user"].tolist() == ["u0", "u1", "u2", "u3", "u4"]
    (rejected,) = result.rejected
    assert rejected.line == 3 and reason in rejected.reason
    assert "3:" in result.summary() and "1 lines rejected" in result.summary()
    out = tmp_path / "x.rejected"
    assert write_rejected(result.rejected, out) == 1
    assert f"{path}:3:".encode() in out.read_bytes()


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b'{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"a"}}\n\n'
                     b'{"@timestamp":"bad","event":{"action":"b"}}\n')
    result = read(path)
    assert len(result.frame) == 1 and result.rejected[0].line == 3


def test_missing_file_or_directory_is_one_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        read_events(tmp_path / "nope.jsonl")
    with pytest.raises(SourceError, match="no file matches"):
        read_events(str(tmp_path / "*.jsonl"))


def test_several_files_and_globs_make_one_sorted_frame(tmp_path):
    for name, hour in (("b.jsonl", 1), ("a.jsonl", 2)):
        with AuditLogger(tmp_path / name) as audit:
            audit.log("login", user=name, timestamp=f"2026-01-01T0{hour}:00:00Z")
    frame = read_events(str(tmp_path / "*.jsonl")).frame
    assert frame["user"].tolist() == ["b.jsonl", "a.jsonl"]
    assert isinstance(frame["user"].dtype, pd.CategoricalDtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events)
def test_event_to_json_to_frame_preserves_every_frame_field(tmp_path, event):
    path = tmp_path / "one.jsonl"
    path.unlink(missing_ok=True)
    with AuditLogger(path) as audit:
        audit.log_event(event)
    row = read(path).frame.iloc[0]
    assert row["timestamp"] == pd.Timestamp(event.timestamp)
    assert row["action"] == event.action and row["outcome"] == event.outcome.value
    assert row["user"] == (event.user or "") and row["resource"] == (event.resource or "")
    assert row["source_ip"] == (event.source_ip or "")
    assert row["level"] == event.level.label and row["kind"] == event.kind.value
    assert row["message"] == event.message
    for column, value in (("country", event.country), ("session", event.session),
                          ("bytes", event.bytes)):
        assert (pd.isna(row[column]) and value is None) or row[column] == value
    assert row["category"] == (event.category[0] if event.category else None) or (
        pd.isna(row["category"]) and not event.category)


def test_reading_is_the_same_when_events_round_trip_through_audit_event(sample_log):
    # the frame and AuditEvent.from_ecs agree on every record
    frame = read(sample_log).frame
    docs = [orjson.loads(x) for x in sample_log.read_bytes().splitlines()]
    for doc, (_, row) in zip(docs, frame.iterrows(), strict=True):
        ev = AuditEvent.from_ecs(doc)
        assert (ev.user, ev.action, ev.resource, ev.source_ip) == (
            row["user"], row["action"], row["resource"], row["source_ip"])


def test_times_the_frame_cannot_hold_are_set_aside_not_fatal(tmp_path):
    path = tmp_path / "far.jsonl"
    path.write_bytes(b'{"@timestamp":"5996-01-01T00:00:00Z","event":{"action":"a"}}\n'
                     b'{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"b"}}\n'
                     b'{"@timestamp":"1066-10-14T09:00:00Z","event":{"action":"c"}}\n')
    result = read(path)
    assert result.frame["action"].tolist() == ["b"]
    assert [r.line for r in result.rejected] == [1, 3]


def test_the_ids_of_skipped_alerts_are_returned(log_path):
    from analyzer.alerts import existing_alert_ids
    from analyzer.events import AuditEvent

    with AuditLogger(log_path) as audit:
        audit.log("login", user="a")
        audit.log_event(AuditEvent("anomaly.detected", timestamp="2026-01-01T00:00:00Z",
                                   kind="alert", id="alert-1", user="a"))
    result = read(log_path)
    assert result.alert_ids == {"alert-1"} == existing_alert_ids(log_path)
