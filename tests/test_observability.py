"""The dashboards and alerting rules against a real Prometheus and PostgreSQL.

The integration test starts Debian's ``prometheus`` on a free loopback port (temporary config
and data folder) scraping a running ``watch`` and a running ``ship --to postgres``, writes
events and then tampers with one record, and checks through Prometheus' HTTP API that the
metrics moved, every dashboard query returns data and every rule evaluates. Skipped, with
the reason, where the binaries are missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import services
from services import Prom, free_port, get_json
from test_watch import _fitted_model

from analyzer.logger import AuditLogger

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "dashboards"
RULES = DASHBOARDS / "prometheus" / "audit-analyzer.rules.yml"


def _provisioned() -> dict[str, str]:
    """uid -> type of the provisioned data sources (a small reader for this simple YAML)."""
    text = (DASHBOARDS / "provisioning" / "datasources.yml").read_text()
    uids = re.findall(r"^\s+uid:\s*(\S+)", text, re.M)
    types = re.findall(r"^\s+type:\s*(\S+)", text, re.M)
    assert len(uids) == len(types) == 2
    return dict(zip(uids, types, strict=True))


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def _targets(kind: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, query) of every target of data source type ``kind``."""
    out = []
    for name, dash in _dashboards().items():
        for panel in dash["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == kind:
                    out.append((name, panel["title"],
                                target.get("expr") or target.get("rawSql")))
    return out


# -- static checks -------------------------------------------------------------------------


def test_dashboards_are_valid_and_use_the_provisioned_data_sources():
    sources = _provisioned()
    dashboards = _dashboards()
    assert {d["title"] for d in dashboards.values()} == {"Audit trail health", "Audit alerts"}
    for name, dash in dashboards.items():
        assert dash["schemaVersion"] >= 36, name
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in dash["panels"]:
            refs = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
            for ref in refs:
                assert sources.get(ref["uid"]) == ref["type"], (name, panel["title"], ref)
            assert panel["targets"], (name, panel["title"])
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
    kinds = {t[0] for t in _targets("grafana-postgresql-datasource")}
    assert kinds == {"audit-alerts.json"}  # the alerts dashboard reads the destination's tables


def test_the_renderer_draws_every_panel_of_the_dashboards():
    """``dashboards/render.py`` (the README's pictures; a script, not run here) imports
    without its services and knows how to draw every panel type the dashboards use."""
    spec = importlib.util.spec_from_file_location("render", DASHBOARDS / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    for name, dash in _dashboards().items():
        for panel in dash["panels"]:
            assert panel["type"] in render.KINDS, (name, panel["title"], panel["type"])
            assert (DASHBOARDS / name.replace(".json", ".png")).is_file(), name


def test_no_dashboard_query_groups_by_a_user_or_address():
    for _name, title, query in _targets("prometheus"):
        assert not re.search(r"\b(user|source_ip|entity)\b(?!_type)", query), title


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found; install it with: apt-get install -y prometheus")
    return found


def test_rules_file_is_valid_and_each_alert_fires_on_its_unit_test():
    promtool = _promtool()
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "6 rules found" in checked.stdout
    tests = RULES.with_name("rules.test.yml")
    alerts = set(re.findall(r"^\s+- alert: (\w+)", RULES.read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", tests.read_text()))
    assert alerts == tested, f"alerts without a unit test: {alerts - tested}"
    result = subprocess.run([promtool, "test", "rules", tests.name], capture_output=True,
                            text=True, timeout=120, cwd=tests.parent)
    assert result.returncode == 0, result.stdout + result.stderr


# -- against the real services ---------------------------------------------------------------


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], Prom]]:
    with ExitStack() as stack:
        if shutil.which("prometheus") is None:
            pytest.skip("prometheus not found; install it with: apt-get install -y prometheus")
        yield lambda targets: stack.enter_context(
            services.prometheus(tmp_path / "prometheus", targets, RULES))


def _write_activity(log: Path) -> None:
    """A quiet hour of 60 users from 60 addresses (enough windows to measure drift), then
    a password-guessing burst from one address (an alert)."""
    now = datetime.now(UTC)
    with AuditLogger(log, service="app") as audit:
        for i in range(60):
            for j in range(3):
                audit.log("dataset.read", user=f"user{i}", outcome="success",
                          source_ip=f"10.0.{i // 200}.{i % 200 + 1}", resource=f"datasets/d{j}",
                          timestamp=now - timedelta(seconds=300 - i - j))
        for i in range(300):
            audit.log("login", user=f"admin{i % 25}", outcome="failure",
                      source_ip="198.51.100.77", category="authentication",
                      message="bad password")


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "analyzer", *args],
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _tamper_last_record(log: Path) -> None:
    """Change one character of the last record in place (same length, so readers' offsets
    stay valid): what someone editing the file would do."""
    data = log.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    line = data[start:]
    at = line.index(b'"message":"') + len(b'"message":"')
    forged = line[:at] + (b"X" if line[at:at + 1] != b"X" else b"Y") + line[at + 1:]
    with log.open("r+b") as handle:
        handle.seek(start)
        handle.write(forged)


@pytest.mark.integration
@pytest.mark.slow
def test_metrics_dashboards_and_rules_against_prometheus_and_postgres(
        tmp_path, prometheus, pg_url):
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("prometheus_client")
    model = _fitted_model(tmp_path)
    log = tmp_path / "audit.jsonl"
    _write_activity(log)
    lines = len(log.read_bytes().splitlines())
    watch_port, ship_port = free_port(), free_port()
    watch = _start(["watch", str(log), "--model", str(model), "--signing-key-file",
                    str(tmp_path / "model.key"), "--interval", "1", "--verify-every", "1",
                    "--stats-every", "0", "--metrics-address", f"127.0.0.1:{watch_port}"])
    ship = _start(["ship", str(log), "--to", "postgres", "--dsn", pg_url, "--batch", "100",
                   "--stats-every", "0", "--metrics-address", f"127.0.0.1:{ship_port}"])
    procs = (watch, ship)
    try:
        prom = prometheus([f"127.0.0.1:{watch_port}", f"127.0.0.1:{ship_port}"])
        wait = lambda what, check: services.wait(what, check, procs=procs)  # noqa: E731
        wait("events counted", lambda: (prom.value(
            'sum(audit_analyzer_events_written_total{service="app"})') or 0) >= lines)
        wait("an alert", lambda: (prom.value("sum(audit_analyzer_alerts_total)") or 0) >= 1)
        wait("windows scored", lambda: prom.value("sum(audit_analyzer_windows_scored_total)"))
        assert prom.value("min(audit_analyzer_chain_intact)") == 1
        # the alerts watch wrote are records too: wait until they are verified and shipped
        head = lambda: len(log.read_bytes().splitlines())  # noqa: E731
        wait("the whole chain verified", lambda: prom.value(
            "max(audit_analyzer_chain_verified_sequence)") == head())
        wait("the backlog drained", lambda: prom.value(
            "sum(audit_analyzer_ship_delivered_events_total)") == head()
            and prom.value("sum(audit_analyzer_ship_backlog_events)") == 0)
        assert prom.value("max(audit_analyzer_ship_backlog_seconds)") == 0
        assert prom.value("sum(audit_analyzer_ship_batches_total)") >= lines / 100
        wait("drift measured", lambda: prom.query("audit_analyzer_model_drift_psi"))
        assert prom.value("max(audit_analyzer_model_age_seconds)") > 0

        # every Prometheus panel of the dashboards returns data
        for name, title, expr in _targets("prometheus"):
            wait(f"{name} / {title}: {expr}", lambda expr=expr: prom.query(expr))
        # every SQL panel returns rows from the destination's tables
        with psycopg.connect(pg_url) as con:
            wait("alerts in PostgreSQL", lambda: con.execute(
                "SELECT count(*) FROM audit_events WHERE kind = 'alert'").fetchone()[0])
            for name, title, sql in _targets("grafana-postgresql-datasource"):
                query = re.sub(r"\$__timeFilter\((\w+)\)",
                               r"\1 BETWEEN now() - interval '7 days' AND now()", sql)
                rows = con.execute(query).fetchall()
                assert rows, f"{name} / {title} returned no rows"
                assert all(row[2] for row in rows) if title == "Top entities by alerts" \
                    else all(row[1] for row in rows)  # the entity is filled in

        # every rule of the rules file is loaded and evaluates without error
        groups = get_json(f"{prom.base}/api/v1/rules")["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        assert len(rules) == 6
        wait("every rule evaluated", lambda: all(
            r["health"] == "ok" and r.get("lastEvaluation", "").startswith("20")
            for g in get_json(f"{prom.base}/api/v1/rules")["data"]["groups"] for r in g["rules"]))

        # one tampered record: the chain is no longer intact, and the alert fires
        _tamper_last_record(log)
        wait("chain_intact 0", lambda: prom.value("min(audit_analyzer_chain_intact)") == 0)
        firing = wait("the chain alert", lambda: [
            a for a in get_json(f"{prom.base}/api/v1/alerts")["data"]["alerts"]
            if a["labels"]["alertname"] == "AuditChainNotIntact" and a["state"] == "firing"])
        assert firing[0]["labels"]["severity"] == "critical"
        assert watch.poll() is None  # a broken chain is reported, the watch goes on
    finally:
        for proc in procs:
            _stop(proc)
    assert b"does not hold" in watch.stderr.read()
