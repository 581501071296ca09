"""train / score / demo from the command line, end to end on small data."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from analyzer.cli import main
from analyzer.integrity import verify_log
from analyzer.synth import SynthConfig, generate, write_audit_log
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=16, days=9, attack_days=3, seed=3))


@pytest.fixture
def trail(tmp_path, org, key):
    history, today = tmp_path / "history.jsonl", tmp_path / "today.jsonl"
    write_audit_log(org.train_events, history, key=key)
    write_audit_log(org.test_events, today, key=key)
    return history, today


@pytest.fixture
def model_key(tmp_path):
    path = tmp_path / "model.key"
    path.write_text("model-signing-secret\n")
    path.chmod(0o600)
    return path


def test_train_then_score_writes_scores_and_chained_alerts_once(tmp_path, trail, key, key_file,
                                                                model_key, capsys):
    history, today = trail
    model = tmp_path / "models" / "acme.joblib"
    assert main(["train", str(history), "--model", str(model),
                 "--signing-key-file", str(model_key)]) == 0
    assert model.exists() and model.with_suffix(".md").exists()
    scores = tmp_path / "scores.csv"
    argv = ["score", str(today), "--model", str(model), "--signing-key-file", str(model_key),
            "--scores", str(scores), "--key-file", str(key_file)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    frame = pd.read_csv(scores)
    assert list(frame.columns[:7]) == ["entity_type", "entity", "window_start", "window_end",
                                       "score", "alert", "reasons"]
    n_alerts = int(frame["alert"].sum())
    assert n_alerts > 0 and f"{n_alerts} alert(s) written to {today}" in out
    records = [orjson.loads(x) for x in today.read_bytes().splitlines()]
    alerts = [r for r in records if r["event"]["kind"] == "alert"]
    assert len(alerts) == n_alerts
    assert all(a["log"]["level"] == "critical" and a["message"] for a in alerts)
    assert verify_log(today, key=key).ok
    # scoring the same log again: the same alerts, none written twice
    assert main(argv) == 0
    assert f"({n_alerts} already there)" in capsys.readouterr().out
    again = [orjson.loads(x) for x in today.read_bytes().splitlines()]
    assert sum(r["event"]["kind"] == "alert" for r in again) == n_alerts
    # --fail-on-alert turns alerts into exit 1 for pipelines
    assert main([*argv, "--no-write-back", "--fail-on-alert"]) == 1


def test_score_without_a_model_fits_on_the_input_and_says_so(trail, capsys):
    _, today = trail
    assert main(["score", str(today), "--no-write-back"]) == 0
    assert "no --model given: fitting a model on the input itself" in capsys.readouterr().out


def test_score_a_csv_writes_alerts_into_the_named_audit_log(tmp_path, org, capsys):
    csv = tmp_path / "access.csv"
    events = org.events
    pd.DataFrame({
        "timestamp": events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "user": events["user"], "action": events["action"], "resource": events["resource"],
        "outcome": events["outcome"], "source_ip": events["source_ip"],
    }).to_csv(csv, index=False)
    audit = tmp_path / "alerts.jsonl"
    assert main(["score", str(csv)]) == 0
    assert "pass --audit-log" in capsys.readouterr().out
    assert main(["score", str(csv), "--audit-log", str(audit)]) == 0
    assert verify_log(audit).ok and audit.read_bytes().count(b'"kind":"alert"') >= 1


def test_openssh_sample_ranks_the_busiest_brute_force_sources_first(tmp_path, capsys):
    sample = shared_data("loghub", "OpenSSH_2k.log")
    scores = tmp_path / "scores.csv"
    assert main(["score", str(sample), "--format", "sshd", "--scores", str(scores),
                 "--no-write-back"]) == 0
    frame = pd.read_csv(scores)
    ips = frame[frame["entity_type"] == "source_ip"]
    per_source = ips.groupby("entity")["f_n_failures"].sum().sort_values(ascending=False)
    busiest = set(per_source.index[:3])
    top = ips.sort_values("score", ascending=False).drop_duplicates("entity")
    assert busiest <= set(top["entity"].iloc[:6]), (busiest, top["entity"].iloc[:6].tolist())


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--users", "16", "--days", "9"]) == 0
    text = capsys.readouterr().out
    for name in ("audit.jsonl", "model.joblib", "model.md", "scores.csv", "labels.csv"):
        assert (out / name).exists(), name
    assert "verify:" in text and "chain intact" in text
    assert "instances caught" in text


def test_the_documented_default_budget_is_the_models():
    from analyzer.cli import build_parser
    from analyzer.model import DEFAULT_ALERTS_PER_DAY, AuditModel

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert f"(default {DEFAULT_ALERTS_PER_DAY:g})" in sub.choices["train"].format_help()
    assert AuditModel().alerts_per_day == DEFAULT_ALERTS_PER_DAY


def test_train_and_score_read_from_a_database(tmp_path, trail, capsys):
    from analyzer.sinks.shipper import Shipper
    from analyzer.sinks.sqlite import SqliteSink

    history, today = trail
    db = tmp_path / "audit.db"
    for log in (history, today):
        sink = SqliteSink(db)
        Shipper(log, sink).run(follow=False)
        sink.close()
    url = f"sqlite:///{db}"
    model = tmp_path / "m.joblib"
    assert main(["train", "--db", url, "--until", "2025-03-09T00:00:00Z", "--model", str(model)]) == 0
    assert "trained on" in capsys.readouterr().out
    scores = tmp_path / "scores.csv"
    assert main(["score", "--db", url, "--since", "2025-03-09T00:00:00Z", "--model", str(model),
                 "--trust-unsigned-model", "--scores", str(scores)]) == 0
    frame = pd.read_csv(scores, parse_dates=["window_start"])
    assert len(frame) and frame["window_start"].min() >= pd.Timestamp("2025-03-09", tz="UTC")
    assert main(["score", str(today), "--user", "alice"]) == 2
    assert "filters select rows of --db" in capsys.readouterr().err


def test_self_fit_states_its_warm_up_caps_alerts_and_writes_incident_ids(tmp_path, trail,
                                                                       key_file, capsys):
    _, today = trail
    scores = tmp_path / "scores.csv"
    assert main(["score", str(today), "--max-alert-share", "0.01", "--scores",
                 str(scores), "--key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "warm-up: windows before" in out and "judged against the events before it" in out
    records = [orjson.loads(x) for x in today.read_bytes().splitlines()]
    alerts = [r for r in records if r["event"]["kind"] == "alert"]
    frame = pd.read_csv(scores, keep_default_na=False)
    assert alerts and len(alerts) <= max(1, int(0.01 * len(frame)))
    assert set(frame.loc[frame["alert"], "incident"]) == {
        r["analyzer"]["alert"]["incident"] for r in alerts}
    assert all(r["analyzer"]["alert"]["incident"].startswith("inc-") for r in alerts)
    with pytest.raises(SystemExit) as bad:
        main(["score", str(today), "--max-alert-share", "0", "--no-write-back"])
    assert bad.value.code == 2 and "max-alert-share" in capsys.readouterr().err
