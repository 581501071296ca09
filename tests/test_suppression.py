"""Suppression files: format, rejection with line and reason, expiry, matching, recording."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from analyzer.alerts import alerts_from_scores, write_alerts
from analyzer.errors import SchemaError
from analyzer.logger import AuditLogger
from analyzer.suppression import apply_suppressions, parse_suppressions, read_suppressions

NOW = pd.Timestamp("2025-06-01", tz="UTC")
T = pd.Timestamp("2025-05-20 02:00", tz="UTC")


def scores_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "entity_type": ["user", "user", "source_ip", "user"],
        "entity": ["svc-backup", "alice", "203.0.113.9", "bob"],
        "window_start": T, "window_end": T + pd.Timedelta(hours=1),
        "score": [0.99, 0.98, 0.97, 0.1], "alert": [True, True, True, False],
        "reasons": ["x", "first access from country DE", "many failures", ""],
        "risk_score": [80.0, 70.0, 60.0, 1.0],
        "f_n_new_countries": [0.0, 1.0, 0.0, 1.0],
        "c_n_new_countries": [0.0, 5.0, 0.0, 0.0],
    })


def events_frame() -> pd.DataFrame:
    at = T + pd.Timedelta(minutes=5)
    return pd.DataFrame({
        "timestamp": [at, at, at, at],
        "user": ["svc-backup", "svc-backup", "alice", ""],
        "action": ["dataset.export", "model.export", "login", "login"],
        "outcome": "success",
        "source_ip": ["10.1.2.3", "10.1.2.4", "198.51.100.7", "203.0.113.9"],
        "resource": "",
    })


def test_rules_match_entity_action_source_and_feature_condition():
    rules = parse_suppressions("\n".join([
        "# comment lines and blank lines are ignored",
        "",
        '{"entity": "svc-*", "action": "*.export", "source": "10.1.0.0/16", '
        '"expires": "2025-12-31", "reason": "nightly backup"}',
        '{"entity": "alice", "when": "n_new_countries >= 1", "expires": "2025-12-31", '
        '"reason": "moved to Berlin"}',
        '{"id": "pentest", "source": ["203.0.113.0/24"], "entity_type": "source_ip", '
        '"expires": "2025-06-30T12:00:00Z", "reason": "approved pen test"}',
    ]))
    out = apply_suppressions(scores_frame(), rules, events=events_frame(), now=NOW)
    assert out["suppressed"].tolist() == [True, True, True, False]
    assert out["alert"].tolist() == [False, False, False, False]
    assert out["suppressed_by"].tolist()[:3] == ["<text>:3", "<text>:4", "pentest"]
    assert out["suppression_reason"][1] == "moved to Berlin"


def test_every_action_and_address_of_the_window_must_match():
    rules = parse_suppressions(
        '{"entity": "svc-backup", "action": "dataset.export", "expires": "2025-12-31", '
        '"reason": "backup"}\n'
        '{"entity": "svc-backup", "source": "10.1.2.3", "expires": "2025-12-31", '
        '"reason": "backup host"}')
    # the window also holds model.export from 10.1.2.4: neither rule covers all of it
    out = apply_suppressions(scores_frame(), rules, events=events_frame(), now=NOW)
    assert not out["suppressed"][0] and out["alert"][0]


def test_expired_rules_are_ignored_with_a_note():
    rules = parse_suppressions('{"entity": "alice", "expires": "2025-05-31", '
                               '"reason": "old exception"}')
    assert rules.notes(NOW) == ["suppression rule <text>:1 expired on 2025-06-01 00:00 UTC; "
                                "ignored (reason was: old exception)"]
    out = apply_suppressions(scores_frame(), rules, now=NOW)
    assert not out["suppressed"].any() and out["alert"].sum() == 3
    # the expiry date itself is still covered
    assert rules.active(pd.Timestamp("2025-05-31 23:00", tz="UTC"))


@pytest.mark.parametrize(("line", "reason"), [
    ('{"entity": "alice", "expires": "2025-12-31"}', "needs a non-empty 'reason'"),
    ('{"entity": "alice", "reason": "x"}', "needs 'expires'"),
    ('{"entity": "alice", "expires": "someday", "reason": "x"}', "'expires' is not a date"),
    ('{"expires": "2025-12-31", "reason": "everything"}', "would silence every alert"),
    ('{"entitiy": "alice", "expires": "2025-12-31", "reason": "x"}', "unknown key(s) entitiy"),
    ('{"source": "10.0.0.0/33", "expires": "2025-12-31", "reason": "x"}', "not an address"),
    ('{"when": "new_country >= 1", "expires": "2025-12-31", "reason": "x"}',
     "unknown feature 'new_country'"),
    ('{"when": "n_new_countries about 1", "expires": "2025-12-31", "reason": "x"}',
     "is not '<feature> <op> <number>'"),
    ('{"entity_type": "host", "expires": "2025-12-31", "reason": "x"}', "entity_type"),
    ('{"entity": "alice", "expires": "2025-12-31", "reason": "x"', "not a JSON object"),
    ('["alice"]', "not a JSON object"),
])
def test_a_malformed_file_is_rejected_with_the_line_and_reason(tmp_path, line, reason):
    path = tmp_path / "suppress.jsonl"
    path.write_text('# ok\n{"entity": "bob", "expires": "2025-12-31", "reason": "ok"}\n'
                    + line + "\n")
    with pytest.raises(SchemaError) as caught:
        read_suppressions(path)
    assert f"{path}:3: " in str(caught.value) and reason in str(caught.value)


def test_action_and_source_rules_need_the_events():
    from analyzer.errors import ConfigError

    rules = parse_suppressions('{"action": "login", "expires": "2025-12-31", "reason": "x"}')
    with pytest.raises(ConfigError, match="need the scored events"):
        apply_suppressions(scores_frame(), rules, now=NOW)


def test_suppressed_alerts_are_recorded_at_warning_naming_rule_and_reason(tmp_path):
    rules = parse_suppressions('{"entity": "alice", "expires": "2025-12-31", '
                               '"reason": "moved to Berlin"}')
    out = apply_suppressions(scores_frame(), rules, now=NOW)
    alerts = alerts_from_scores(out)
    assert len(alerts) == 3 and sum(a.suppressed for a in alerts) == 1
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log) as audit:
        write_alerts(alerts, audit, model_id="m", model_version="1")
    records = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    alice = next(r for r in records if r["user"]["name"] == "alice") if any(
        "user" in r for r in records) else None
    assert alice["log"]["level"] == "warning" and alice["event"]["kind"] == "alert"
    assert alice["analyzer"]["alert"]["suppressed"] == {"rule": "<text>:1",
                                                       "reason": "moved to Berlin"}
    assert "moved to Berlin" in alice["message"]
    others = [r for r in records if r is not alice]
    assert all(r["log"]["level"] == "critical" for r in others)


@pytest.mark.parametrize("piece", [1, 3])
def test_facts_gathered_chunk_by_chunk_suppress_what_the_events_do(piece):
    from analyzer.suppression import WindowFacts

    rules = parse_suppressions("\n".join([
        '{"entity": "svc-backup", "action": "dataset.export", "expires": "2025-12-31", '
        '"reason": "backup"}',  # the window also holds model.export: kept
        '{"entity": "svc-*", "action": "*.export", "source": "10.1.0.0/16", '
        '"expires": "2025-12-31", "reason": "nightly backup"}',
        '{"id": "pentest", "source": ["203.0.113.0/24"], "entity_type": "source_ip", '
        '"expires": "2025-12-31", "reason": "approved pen test"}',
        '{"entity": "alice", "source": "10.0.0.0/8", "expires": "2025-12-31", '
        '"reason": "office"}',  # alice came from 198.51.100.7: kept
    ]))
    events = events_frame()
    facts = WindowFacts(rules.rules, step=pd.Timedelta(hours=1).value)
    for start in range(0, len(events), piece):
        facts.add(events.iloc[start:start + piece])
    whole = apply_suppressions(scores_frame(), rules, events=events, now=NOW)
    chunked = apply_suppressions(scores_frame(), rules, facts=facts, now=NOW)
    pd.testing.assert_frame_equal(chunked, whole)
    assert whole["suppressed_by"].tolist() == ["<text>:2", "", "pentest", ""]
