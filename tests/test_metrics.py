"""Prometheus metrics: what the logger, the chain monitor, scoring and shipping report."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from analyzer.chain_monitor import ChainMonitor
from analyzer.errors import ConfigError
from analyzer.logger import AuditLogger
from analyzer.sinks.shipper import SendResult, Shipper

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="prometheus-client is the optional [observability] extra")

from analyzer.metrics import AuditMetrics, observed_scorer, parse_address  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def value(metrics: AuditMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def exposition(metrics: AuditMetrics) -> str:
    return prometheus_client.generate_latest(metrics.registry).decode()


def test_the_logger_counts_written_events_by_level_and_outcome(log_path):
    metrics = AuditMetrics()
    with AuditLogger(log_path, service="api", metrics=metrics) as audit:
        for i in range(9):
            audit.log("login", user="alice", source_ip="203.0.113.9",
                      outcome="failure" if i % 3 == 0 else "success")
        audit.error("model.delete", user="bob")
    total = "audit_analyzer_events_written_total"
    assert value(metrics, total, service="api", level="info", outcome="failure") == 3
    assert value(metrics, total, service="api", level="info", outcome="success") == 6
    assert value(metrics, total, service="api", level="error", outcome="unknown") == 1
    assert value(metrics, "audit_analyzer_chain_head_sequence") == 10
    text = exposition(metrics)
    assert "alice" not in text and "203.0.113.9" not in text  # no user or address labels
    # a logger that only writes reports no verification verdict (no false "not intact")
    assert "audit_analyzer_chain_intact" not in text


def test_queued_records_are_counted_once_written(log_path):
    metrics = AuditMetrics()
    audit = AuditLogger(log_path, service="api", metrics=metrics, batch_records=100,
                        batch_ms=60_000)
    audit.log("login", outcome="success")
    assert value(metrics, "audit_analyzer_events_written_total", service="api",
                 level="info", outcome="success") is None  # queued, not yet in the file
    audit.flush()
    assert value(metrics, "audit_analyzer_events_written_total", service="api",
                 level="info", outcome="success") == 1
    audit.close()


def test_the_logger_never_imports_prometheus_client(tmp_path):
    code = ("import sys; from analyzer.logger import AuditLogger\n"
            f"AuditLogger({str(tmp_path / 'a.jsonl')!r}).log('login')\n"
            "assert 'prometheus_client' not in sys.modules, 'imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


def test_service_labels_are_bounded_and_never_addresses():
    metrics = AuditMetrics()
    for n in range(100):
        metrics.written({("info", "success"): 1}, n, f"svc{n}")
    metrics.written({("info", "success"): 1}, 101, "10.1.2.3")
    metrics.written({("info", "success"): 1}, 102, "bad label\n{x}")
    text = exposition(metrics)
    assert 'service="svc0"' in text and 'service="svc63"' in text
    assert 'service="svc64"' not in text and "10.1.2.3" not in text
    assert value(metrics, "audit_analyzer_events_written_total", service="other",
                 level="info", outcome="success") == 36 + 2


# -- the chain monitor ----------------------------------------------------------------------


def write(log: Path, n: int, *, key: bytes | None = None, **options) -> None:
    with AuditLogger(log, key=key, service="api", **options) as audit:
        for i in range(n):
            audit.log("dataset.read", user=f"u{i % 3}", outcome="success")


def test_monitor_verifies_incrementally_and_reports_it(log_path, key):
    metrics = AuditMetrics()
    write(log_path, 5, key=key)
    monitor = ChainMonitor(log_path, key=key, metrics=metrics)
    first = monitor.step()
    assert first.intact and first.sequence == 5 and first.records == 5
    write(log_path, 3, key=key)
    second = monitor.step()
    assert second.intact and second.sequence == 8 and second.records == 8  # 3 more read
    assert value(metrics, "audit_analyzer_chain_intact") == 1
    assert value(metrics, "audit_analyzer_chain_verified_sequence") == 8
    assert abs(value(metrics, "audit_analyzer_chain_last_verification_timestamp_seconds")
               - time.time()) < 60
    assert value(metrics, "audit_analyzer_events_written_total", service="api",
                 level="info", outcome="success") == 8
    monitor.close()


def test_monitor_catches_a_forged_record_appended(log_path, key):
    metrics = AuditMetrics()
    write(log_path, 4, key=key)
    monitor = ChainMonitor(log_path, key=key, metrics=metrics)
    assert monitor.step().intact
    lines = log_path.read_bytes().splitlines()
    forged = lines[-1].replace(b'"sequence":4', b'"sequence":5').replace(b'"u0"', b'"eve"')
    with log_path.open("ab") as handle:
        handle.write(forged + b"\n")
    status = monitor.step()
    assert not status.intact and "sequence 5" in status.problem
    assert value(metrics, "audit_analyzer_chain_intact") == 0
    assert value(metrics, "audit_analyzer_chain_verified_sequence") == 4
    assert not monitor.step().intact  # stays broken


def test_monitor_catches_a_change_to_the_last_verified_record(log_path, key):
    write(log_path, 4, key=key)
    monitor = ChainMonitor(log_path, key=key)
    assert monitor.step().intact
    data = log_path.read_bytes()
    cut = data.rstrip(b"\n").rfind(b"\n") + 1
    log_path.write_bytes(data[:cut] + data[cut:].replace(b'"u0"', b'"u9"'))
    status = monitor.step()
    assert not status.intact and "changed or the log truncated" in status.problem


def test_monitor_catches_a_wrong_key(log_path, key):
    write(log_path, 2, key=key)
    status = ChainMonitor(log_path, key=b"another key").step()
    assert not status.intact and "does not match the chain" in status.problem


def test_monitor_follows_rotation(log_path, key):
    monitor = ChainMonitor(log_path, key=key)
    write(log_path, 3, key=key, rotate_bytes=800, durability="flush")
    assert monitor.step().intact
    write(log_path, 6, key=key, rotate_bytes=800, durability="flush")
    assert len(list(log_path.parent.glob(f"{log_path.name}.*"))) >= 1  # it did rotate
    status = monitor.step()
    assert status.intact, status.problem
    assert status.sequence > 9  # the rotation markers are chained records too


def test_monitor_starts_from_a_rotated_in_file(log_path, key):
    write(log_path, 8, key=key, rotate_bytes=800, durability="flush")
    status = ChainMonitor(log_path, key=key).step()
    assert status.intact, status.problem
    assert status.records < status.sequence  # verified from the marker's claimed head


# -- scoring --------------------------------------------------------------------------------


def scores_frame(risks, etypes) -> pd.DataFrame:
    start = pd.Timestamp("2025-01-01", tz="UTC")
    return pd.DataFrame({"entity_type": etypes, "entity": [f"e{i}" for i in range(len(risks))],
                         "window_start": start, "window_end": start + pd.Timedelta("1h"),
                         "score": risks, "alert": [r > 60 for r in risks],
                         "risk_score": risks})


def test_scorings_feed_windows_scored_and_the_risk_histogram():
    metrics = AuditMetrics()
    frame = scores_frame([5.0, 55.0, 95.0], ["user", "user", "source_ip"])
    score = observed_scorer(lambda events: frame, metrics)
    score(pd.DataFrame())
    assert value(metrics, "audit_analyzer_windows_scored_total", entity_type="user") == 2
    assert value(metrics, "audit_analyzer_windows_scored_total", entity_type="source_ip") == 1
    assert value(metrics, "audit_analyzer_window_risk_score_bucket", entity_type="user",
                 le="10.0") == 1
    assert value(metrics, "audit_analyzer_window_risk_score_bucket", entity_type="user",
                 le="60.0") == 2
    assert value(metrics, "audit_analyzer_window_risk_score_sum", entity_type="source_ip") == 95


def test_alerts_count_first_alerts_by_entity_type_not_updates():
    metrics = AuditMetrics()
    rows = scores_frame([70.0, 80.0, 90.0], ["user", "source_ip", "user"])
    rows["update"] = [False, False, True]
    metrics.alerted(rows)
    assert value(metrics, "audit_analyzer_alerts_total", entity_type="user") == 1
    assert value(metrics, "audit_analyzer_alerts_total", entity_type="source_ip") == 1
    assert "e0" not in exposition(metrics)


def test_model_age_and_drift_per_family():
    metrics = AuditMetrics()
    end = datetime.now(UTC) - timedelta(days=2)
    metrics.set_model({"training_end": end.isoformat()})
    assert value(metrics, "audit_analyzer_model_age_seconds") == pytest.approx(
        2 * 86400, abs=60)
    metrics.set_drift(pd.DataFrame({
        "entity_type": ["user", "user", "user", "source_ip"],
        "feature": ["n_events", "n_failures", "hour_rarity", "n_users"],
        "psi": [0.05, 0.4, float("nan"), 0.1]}))
    assert value(metrics, "audit_analyzer_model_drift_psi", entity_type="user",
                 family="volume") == pytest.approx(0.4)
    assert value(metrics, "audit_analyzer_model_drift_psi", entity_type="source_ip",
                 family="diversity") == pytest.approx(0.1)
    assert value(metrics, "audit_analyzer_model_drift_psi", entity_type="user",
                 family="time") is None  # no PSI: no value rather than a made-up one


# -- shipping -------------------------------------------------------------------------------


class Picky:
    """Takes every record but the ones whose action is ``bad``; down for the first send."""

    name = "picky"

    def __init__(self) -> None:
        self.calls = 0

    def send(self, batch):
        self.calls += 1
        if self.calls == 1:
            return SendResult(retry=tuple(range(len(batch))), retry_reason="down")
        return SendResult(rejected=tuple((i, "refused") for i, r in enumerate(batch)
                                         if r.doc["event"]["action"] == "bad"))

    def close(self) -> None:
        pass


def test_shipper_backlog_batches_retries_and_dead_letters(log_path):
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with AuditLogger(log_path) as audit:
        for i in range(10):
            audit.log("bad" if i == 4 else "login", outcome="success",
                      timestamp=hour_ago + timedelta(seconds=i))
    metrics = AuditMetrics()
    shipper = Shipper(log_path, Picky(), batch_records=4, backoff_initial=0.01,
                      backoff_max=0.01)
    metrics.watch_shipper(shipper)
    assert value(metrics, "audit_analyzer_ship_backlog_events", destination="picky") == 0
    shipper.run()  # nothing read yet above: the collector knows the start once it runs
    labels = {"destination": "picky"}
    assert value(metrics, "audit_analyzer_ship_backlog_events", **labels) == 0
    assert value(metrics, "audit_analyzer_ship_backlog_seconds", **labels) == 0
    assert value(metrics, "audit_analyzer_ship_batches_total", **labels) == 3
    assert value(metrics, "audit_analyzer_ship_retried_events_total", **labels) == 4
    assert value(metrics, "audit_analyzer_ship_dead_letters_total", **labels) == 1
    assert value(metrics, "audit_analyzer_ship_delivered_events_total", **labels) == 9
    with AuditLogger(log_path) as audit:  # more arrives: an hour-old backlog of 5
        for i in range(5):
            audit.log("login", outcome="success", timestamp=hour_ago + timedelta(minutes=i))
    assert value(metrics, "audit_analyzer_ship_backlog_events", **labels) == 5
    assert value(metrics, "audit_analyzer_ship_backlog_seconds", **labels) == pytest.approx(
        3600, abs=120)


def test_a_destination_that_is_down_leaves_the_whole_log_as_backlog(log_path):
    write(log_path, 6)
    metrics = AuditMetrics()
    sink = Picky()
    shipper = Shipper(log_path, sink, backoff_initial=30, backoff_max=30)
    metrics.watch_shipper(shipper)
    thread = threading.Thread(target=shipper.run, kwargs={"follow": True})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while sink.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert value(metrics, "audit_analyzer_ship_backlog_events", destination="picky") == 6
        assert value(metrics, "audit_analyzer_ship_backlog_seconds",
                     destination="picky") >= 0
        assert value(metrics, "audit_analyzer_ship_retried_events_total",
                     destination="picky") == 6
    finally:
        shipper.stop()
        thread.join(timeout=30)


# -- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("9464", ("127.0.0.1", 9464)), ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("[::1]:9464", ("::1", 9464)), ("0.0.0.0:9464", ("0.0.0.0", 9464))])
def test_metrics_address_forms(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "127.0.0.1:99999", "x:y"])
def test_bad_metrics_addresses_are_refused(text):
    with pytest.raises(ConfigError, match="--metrics-address"):
        parse_address(text)


def test_metrics_without_the_extra_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from analyzer.cli import main

    write(tmp_path / "a.jsonl", 2)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    code = main(["ship", str(tmp_path / "a.jsonl"), "--to", "sqlite", "--db",
                 str(tmp_path / "a.db"), "--once", "--metrics-address", "127.0.0.1:9464"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "pip install 'audit-analyzer[observability]'" in err
