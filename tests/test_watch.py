"""watch: following a live log, open windows, alert once (then updates), eviction, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest

from analyzer.logger import AuditLogger
from analyzer.watch import Watcher, records_to_frame, state_path

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def count_scorer(threshold: int = 5):
    """Stub model: a user window alerts at ``threshold`` failures; score = failures / 100."""
    calls = []

    def score(events: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(events))
        failed = events[events["outcome"] == "failure"]
        grouped = (failed.assign(window_start=failed["timestamp"].dt.floor("1h"))
                   .groupby(["user", "window_start"], observed=True).size()
                   .rename("n").reset_index())
        return pd.DataFrame({
            "entity_type": "user", "entity": grouped["user"].astype(str),
            "window_start": grouped["window_start"],
            "window_end": grouped["window_start"] + pd.Timedelta("1h"),
            "score": grouped["n"] / 100.0, "alert": grouped["n"] >= threshold,
            "reasons": "many failures"})

    score.calls = calls
    return score


class Alerts(list):
    def __call__(self, rows: pd.DataFrame) -> None:
        self.extend(rows.to_dict("records"))


def failures(audit: AuditLogger, user: str, n: int, at: datetime) -> None:
    for i in range(n):
        audit.log("login", user=user, outcome="failure", source_ip="203.0.113.9",
                  timestamp=at + timedelta(seconds=i))
    audit.flush()


def test_records_become_the_normalized_frame_without_alerts():
    docs = [{"@timestamp": "2024-05-01T10:00:00Z", "event": {"action": "login", "id": "a",
             "outcome": "failure", "category": ["authentication"], "sequence": 1},
             "user": {"name": "bob", "roles": ["admin"]}, "source": {"ip": "10.0.0.1"}},
            {"@timestamp": "2024-05-01T10:00:01Z", "event": {"action": "x", "kind": "alert"}},
            {"@timestamp": "garbage", "event": {"action": "x"}}]
    frame = records_to_frame(docs, offsets=[0, 10, 20])
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["user"], row["action"], row["outcome"], row["source_ip"]) == \
        ("bob", "login", "failure", "10.0.0.1")
    assert row["category"] == "authentication" and row["sequence"] == 1
    assert row["_offset"] == 0 and str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_alerts_once_per_window_then_updates_only_when_higher(log_path):
    alerts = Alerts()
    watcher = Watcher(log_path, score_windows=count_scorer(), on_alert=alerts,
                      update_margin=0.03)
    with AuditLogger(log_path) as audit:
        failures(audit, "eve", 4, T0)
        watcher.poll()
        watcher.tick()
        assert alerts == []
        failures(audit, "eve", 2, T0 + timedelta(minutes=5))  # 6: crosses
        watcher.poll()
        watcher.tick()
        assert [(a["entity"], a["update"]) for a in alerts] == [("eve", False)]
        failures(audit, "eve", 1, T0 + timedelta(minutes=6))  # 7: higher, below margin
        watcher.poll()
        watcher.tick()
        assert len(alerts) == 1
        failures(audit, "eve", 3, T0 + timedelta(minutes=7))  # 10: an update
        watcher.poll()
        watcher.tick()
        assert [(a["update"], a["score"]) for a in alerts] == [(False, 0.06), (True, 0.10)]
        failures(audit, "eve", 6, T0 + timedelta(hours=1))  # the next window: a new alert
        watcher.poll()
        watcher.tick()
    assert [a["update"] for a in alerts] == [False, True, False]
    assert watcher.stats().alerts == 2 and watcher.stats().updates == 1


def test_only_windows_that_received_events_are_rescored(log_path):
    scorer = count_scorer()
    watcher = Watcher(log_path, score_windows=scorer, on_alert=Alerts(), grace=7200)
    with AuditLogger(log_path) as audit:
        failures(audit, "a", 3, T0)
        failures(audit, "b", 2, T0 + timedelta(hours=1))
        watcher.poll()
        watcher.tick()
        assert scorer.calls == [5]
        watcher.tick()  # nothing new: no scoring
        assert scorer.calls == [5]
        failures(audit, "b", 1, T0 + timedelta(hours=1, minutes=1))
        watcher.poll()
        watcher.tick()
    assert scorer.calls == [5, 3]  # the second hour only


def test_closed_windows_are_evicted_and_late_events_counted(log_path):
    watcher = Watcher(log_path, score_windows=count_scorer(), on_alert=Alerts(), grace=60)
    with AuditLogger(log_path) as audit:
        for hour in range(30):  # more than a day of steady activity
            failures(audit, f"u{hour % 3}", 20, T0 + timedelta(hours=hour))
            watcher.poll()
            watcher.tick()
            assert watcher.stats().open_windows <= 2
        failures(audit, "late", 1, T0)
        watcher.poll()
    stats = watcher.stats()
    assert stats.buffered_events <= 40 and stats.evicted_events >= 28 * 20
    assert stats.late == 1 and stats.events == 30 * 20


def test_a_window_closing_during_catch_up_is_still_scored(log_path):
    with AuditLogger(log_path) as audit:
        failures(audit, "eve", 6, T0)
        failures(audit, "bob", 1, T0 + timedelta(hours=3))
    alerts = Alerts()
    watcher = Watcher(log_path, score_windows=count_scorer(), on_alert=alerts, grace=60)
    watcher.poll()
    watcher.tick()
    assert [a["entity"] for a in alerts] == ["eve"]
    assert watcher.stats().open_windows == 1


def test_memory_stays_bounded_on_a_flood(log_path):
    watcher = Watcher(log_path, score_windows=count_scorer(), on_alert=Alerts(),
                      max_events=100, grace=10 ** 6)
    with AuditLogger(log_path) as audit:
        for hour in range(10):
            failures(audit, "x", 40, T0 + timedelta(hours=hour))
            watcher.poll()
    assert watcher.stats().buffered_events <= 100


def test_resumes_without_missing_or_repeating(log_path):
    alerts = Alerts()
    with AuditLogger(log_path) as audit:
        failures(audit, "eve", 6, T0)
        first = Watcher(log_path, score_windows=count_scorer(), on_alert=alerts)
        first.run(until=lambda: True)
        assert len(alerts) == 1
        failures(audit, "mallory", 3, T0 + timedelta(minutes=10))
    state = orjson.loads(state_path(log_path).read_bytes())
    assert state["offset"] == 0  # the open window starts at the log's first event
    with AuditLogger(log_path) as audit:
        failures(audit, "mallory", 3, T0 + timedelta(minutes=20))  # 6 with the earlier 3
    second = Watcher(log_path, score_windows=count_scorer(), on_alert=alerts)
    second.run(until=lambda: True)
    assert [a["entity"] for a in alerts] == ["eve", "mallory"]


def test_follows_the_log_live_and_across_rotation(log_path):
    alerts = Alerts()
    watcher = Watcher(log_path, score_windows=count_scorer(), on_alert=alerts,
                      interval=0.05, poll_interval=0.01, state_file=False)
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        with AuditLogger(log_path) as audit:
            failures(audit, "eve", 3, T0)
            deadline = time.monotonic() + 10
            while watcher.stats().events < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # the watcher has the file open
            failures(audit, "eve", 1, T0 + timedelta(seconds=30))  # lands just before ...
        log_path.rename(log_path.with_name("audit.jsonl.1"))  # ... the rotation
        with AuditLogger(log_path) as audit:
            failures(audit, "eve", 2, T0 + timedelta(minutes=1))
        while not alerts and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watcher.stop()
        thread.join(5)
    assert [a["entity"] for a in alerts] == ["eve"]


def test_from_end_scores_only_what_is_appended_from_now_on(log_path):
    alerts = Alerts()
    with AuditLogger(log_path) as audit:
        failures(audit, "eve", 6, T0)  # enough to alert, but already there
        with open(log_path, "ab") as handle:
            handle.write(b'{"@timestamp":"2024-05-01T10:00:09Z","event":{"act')  # mid-append
        watcher = Watcher(log_path, score_windows=count_scorer(), on_alert=alerts,
                          from_end=True, state_file=False)
        watcher.run(until=lambda: True)
        assert alerts == [] and watcher.stats().events == 0
    with open(log_path, "ab") as handle:  # the writer finishes its line: not skipped
        handle.write(b'ion":"login","outcome":"failure"},"user":{"name":"bob"}}\n')
        for i in range(4):  # (records of another writer: the chain is not the point here)
            handle.write(b'{"@timestamp":"2024-05-01T10:05:0%dZ","event":{"action":"login",'
                         b'"outcome":"failure"},"user":{"name":"bob"}}\n' % i)
    watcher.run(until=lambda: True)
    assert [a["entity"] for a in alerts] == ["bob"]
    assert watcher.stats().events == 5


def test_a_saved_state_is_resumed_even_from_the_end(log_path):
    alerts = Alerts()
    with AuditLogger(log_path) as audit:
        failures(audit, "eve", 3, T0)
        Watcher(log_path, score_windows=count_scorer(), on_alert=alerts).run(
            until=lambda: True)
        failures(audit, "eve", 3, T0 + timedelta(minutes=1))
    Watcher(log_path, score_windows=count_scorer(), on_alert=alerts, from_end=True).run(
        until=lambda: True)
    assert [a["entity"] for a in alerts] == ["eve"]


def test_stats_are_reported_periodically(log_path):
    reports = []
    with AuditLogger(log_path) as audit:
        failures(audit, "eve", 3, T0)
    watcher = Watcher(log_path, score_windows=count_scorer(), on_alert=Alerts(),
                      interval=0.05, poll_interval=0.01, state_file=False,
                      on_stats=reports.append, stats_every=0.02)
    watcher.run(until=lambda: len(reports) >= 2)
    assert reports[-1].events == 3 and reports[-1].lag_bytes == 0
    assert "3 events" in reports[-1].summary()


def test_a_new_webhook_starts_at_the_end_and_then_resumes(log_path):
    """watch --webhook on a log full of past alerts posts none of them, only new ones;
    once it has a cursor, alerts written while it was stopped are still sent."""
    from analyzer.cli.realtime import start_at_end_if_new
    from analyzer.events import AuditEvent
    from analyzer.sinks.shipper import SendResult, Shipper, is_alert

    def alert(audit, user):
        return audit.log_event(AuditEvent("anomaly.detected", kind="alert", user=user,
                                          level="critical", message="unusual",
                                          timestamp=T0))

    class Hook:
        name = "webhook"

        def __init__(self):
            self.ids = []

        def send(self, batch):
            self.ids += [r.event_id for r in batch]
            return SendResult()

        def close(self):
            pass

    hook = Hook()
    with AuditLogger(log_path) as audit:
        alert(audit, "old")
        failures(audit, "eve", 2, T0)
    assert start_at_end_if_new(log_path, "webhook")
    with AuditLogger(log_path) as audit:
        new = alert(audit, "new")
    Shipper(log_path, hook, select=is_alert).run()
    assert hook.ids == [new]
    with AuditLogger(log_path) as audit:
        later = alert(audit, "later")
    assert not start_at_end_if_new(log_path, "webhook")  # it has a cursor now: resume
    Shipper(log_path, hook, select=is_alert).run()
    assert hook.ids == [new, later]


# -- end to end with the real model ---------------------------------------------------------


def _fitted_model(tmp_path: Path) -> Path:
    from analyzer.model import AuditModel
    from analyzer.persistence import save_model
    from analyzer.synth import SynthConfig, generate

    org = generate(SynthConfig(users=12, days=8, attack_days=1, scenarios=("brute_force",),
                               service_accounts=1))
    model = AuditModel(random_state=0).fit(org.train_events)
    path = tmp_path / "model.joblib"
    key = tmp_path / "model.key"
    key.write_text("model-signing-secret")
    key.chmod(0o600)
    save_model(model, path, key=b"model-signing-secret")
    return path


@pytest.mark.integration
def test_watch_command_writes_a_critical_alert_soon_after_a_brute_force_burst(tmp_path):
    pytest.importorskip("analyzer.model")
    pytest.importorskip("analyzer.persistence")
    model = _fitted_model(tmp_path)
    log = tmp_path / "audit.jsonl"
    now = datetime.now(UTC)
    with AuditLogger(log, service="app") as audit:  # a quiet, ordinary start
        for i in range(5):
            audit.log("dataset.read", user="alice", outcome="success",
                      source_ip="10.0.0.5", resource="datasets/d1",
                      timestamp=now - timedelta(seconds=60 - i))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "analyzer", "watch", str(log), "--model", str(model),
         "--signing-key-file", str(tmp_path / "model.key"), "--interval", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        with AuditLogger(log, service="app", durability="flush") as audit:
            for i in range(300):  # a password-guessing burst from one address
                audit.log("login", user=f"admin{i % 25}", outcome="failure",
                          source_ip="198.51.100.77", category="authentication",
                          message="bad password")
        burst_end = time.monotonic()
        alert = None
        while alert is None and time.monotonic() - burst_end < 60:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode())
            for line in log.read_bytes().splitlines():
                doc = orjson.loads(line)
                if doc["event"].get("kind") == "alert":
                    alert = doc
            time.sleep(0.2)
        latency = time.monotonic() - burst_end
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert alert is not None, f"no alert within 60 s; watch said: {err.decode()[-2000:]}"
    assert latency < 60
    assert alert["log"]["level"] == "critical" and alert["event"]["kind"] == "alert"
    assert "198.51.100.77" in (alert.get("source", {}).get("ip", ""),) or \
        alert.get("user", {}).get("name", "").startswith("admin")
    assert proc.returncode == 0  # SIGTERM stops it cleanly
