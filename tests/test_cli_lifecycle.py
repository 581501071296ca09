"""evaluate, feedback, models and the score/train hooks, from the command line."""

from __future__ import annotations

import json

import orjson
import pandas as pd
import pytest

from analyzer.cli import main
from analyzer.feedback import read_alerts, read_feedback
from analyzer.integrity import verify_log
from analyzer.synth import SynthConfig, generate, write_audit_log, write_labels


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=12, days=8, attack_days=2, seed=5))


@pytest.fixture
def trail(tmp_path, org, key):
    history, today = tmp_path / "history.jsonl", tmp_path / "today.jsonl"
    write_audit_log(org.train_events, history, key=key)
    write_audit_log(org.test_events, today, key=key)
    labels = tmp_path / "labels.csv"
    write_labels(org.labels, labels)
    return history, today, labels


def _records(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_evaluate_a_scores_file_and_a_log_with_a_model(tmp_path, trail, capsys):
    history, today, labels = trail
    model = tmp_path / "m.joblib"
    assert main(["train", str(history), "--model", str(model)]) == 0
    scores = tmp_path / "scores.csv"
    assert main(["score", str(today), "--model", str(model), "--trust-unsigned-model",
                 "--scores", str(scores), "--no-write-back"]) == 0
    # a label for an unknown entity is reported, not fatal
    with labels.open("a") as handle:
        handle.write("user,nobody.here,2025-03-09T10:00:00Z,brute_force\n")
    capsys.readouterr()
    assert main(["evaluate", str(scores), "--labels", str(labels)]) == 0
    text = capsys.readouterr().out
    assert "ROC-AUC" in text and "instances caught" in text
    assert "unknown entity: user=nobody.here" in text
    assert main(["evaluate", str(today), "--model", str(model), "--trust-unsigned-model",
                 "--labels", str(labels), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["windows"] > 0 and 0 <= figures["roc_auc"] <= 1
    assert figures["instances_total"] >= 1 and figures["warnings"]
    # a log given without --model is not mistaken for scores
    assert main(["evaluate", str(today), "--labels", str(labels)]) == 2
    assert "not a scores file" in capsys.readouterr().err


def test_feedback_is_chained_and_an_unknown_alert_is_an_error(tmp_path, trail, key, key_file,
                                                             capsys):
    _, today, _ = trail
    assert main(["score", str(today), "--key-file", str(key_file)]) == 0  # self-fit
    alerts = read_alerts(today)
    assert len(alerts)
    alert = alerts["alert_id"][0]
    assert main(["feedback", alert, "--verdict", "benign", "--note", "approved pen test",
                 "--log", str(today), "--key-file", str(key_file), "--analyst", "ann"]) == 0
    assert f"ann marked {alert} benign" in capsys.readouterr().out
    feedback = read_feedback(today)
    assert feedback[["alert_id", "verdict", "note"]].values.tolist() == [
        [alert, "benign", "approved pen test"]]
    assert verify_log(today, key=key).ok
    size = today.stat().st_size
    assert main(["feedback", "alert-0000", "--verdict", "malicious", "--log", str(today),
                 "--key-file", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert "unknown alert id 'alert-0000'" in err and "Traceback" not in err
    assert today.stat().st_size == size


def test_registry_train_promote_score_rollback(tmp_path, trail, key_file, monkeypatch,
                                               capsys):
    history, today, _ = trail
    monkeypatch.chdir(tmp_path)
    audit = tmp_path / "ops.jsonl"
    assert main(["train", str(history), "--register", "acme"]) == 0
    assert main(["train", str(history), "--register", "acme", "--exclude-alerts"]) == 0
    out = capsys.readouterr().out
    assert "models/acme-2.joblib" in out and "no alerted windows to leave out" in out
    assert (tmp_path / "models" / "acme-1.md").exists()
    assert main(["models", "list"]) == 0
    assert "no current model" in capsys.readouterr().out
    for name in ("acme-1", "acme"):  # "acme" is its latest version
        assert main(["models", "promote", name, "--log", str(audit), "--key-file",
                     str(key_file), "--reason", "first"]) == 0
    assert (tmp_path / "models" / "current").read_text().strip() == "acme-2.joblib"
    capsys.readouterr()
    # score without --model uses the current one, under the signature policy: train signed
    # it with the user's own key, which score checks it with
    assert main(["score", str(today), "--no-write-back"]) == 0
    assert "using the registry's current model models/acme-2.joblib" in \
        capsys.readouterr().out
    assert main(["models", "rollback", "--log", str(audit), "--key-file", str(key_file)]) == 0
    assert (tmp_path / "models" / "current").read_text().strip() == "acme-1.joblib"
    assert "rolled back to acme-1" in capsys.readouterr().out
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["artifact"], e["current"]) for e in listed] == [("acme-1.joblib", True),
                                                               ("acme-2.joblib", False)]
    actions = [r["event"]["action"] for r in _records(audit)]
    assert actions == ["model.promote", "model.promote", "model.rollback"]
    assert main(["models", "rollback", "--log", str(audit), "--key-file", str(key_file)]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err


def test_score_with_suppressions_records_them_at_warning(tmp_path, trail, key_file, capsys):
    history, today, _ = trail
    model = tmp_path / "m.joblib"
    assert main(["train", str(history), "--model", str(model)]) == 0
    scores = tmp_path / "scores.csv"
    argv = ["score", str(today), "--model", str(model), "--trust-unsigned-model",
            "--key-file", str(key_file), "--scores", str(scores)]
    rules = tmp_path / "suppress.jsonl"
    rules.write_text('{"entity": "nobody", "expires": "2999-01-01", "reason": "x"}\n'
                     '{"entity": "x", "expires": "2001-01-01", "reason": "old"}\n'
                     '{"entity": "y", "expires": "2999-01-01"}\n')
    before = today.read_bytes()
    assert main([*argv, "--suppressions", str(rules)]) == 2
    err = capsys.readouterr().err
    assert f"{rules}:3: a rule needs a non-empty 'reason'" in err
    assert today.read_bytes() == before and not scores.exists()  # nothing scored

    # suppress the top alert's entity
    assert main([*argv, "--no-write-back"]) == 0
    frame = pd.read_csv(scores)
    top = frame[frame["alert"]].sort_values("risk_score").iloc[-1]
    rules.write_text(f'{{"entity": "{top.entity}", "entity_type": "{top.entity_type}", '
                     '"expires": "2999-01-01", "reason": "known scanner"}\n'
                     '{"entity": "x", "expires": "2001-01-01", "reason": "old"}\n')
    capsys.readouterr()
    assert main([*argv, "--suppressions", str(rules)]) == 0
    out = capsys.readouterr().out
    assert "note: suppression rule suppress.jsonl:2 expired" in out
    assert f"{top.entity} by suppress.jsonl:1 (known scanner)" in out
    records = [r for r in _records(today) if r["event"]["kind"] == "alert"]
    quiet = [r for r in records if r["log"]["level"] == "warning"]
    assert quiet and all(r["analyzer"]["alert"]["suppressed"]["reason"] == "known scanner"
                         for r in quiet)
    assert len(records) == int(frame["alert"].sum())  # none dropped
    written = pd.read_csv(scores)
    assert written["suppressed"].sum() == len(quiet) and "suppressed_by" in written


def test_score_warns_when_the_model_looks_stale(tmp_path, org, trail, capsys):
    history, _, _ = trail
    model = tmp_path / "m.joblib"
    assert main(["train", str(history), "--model", str(model)]) == 0
    later = org.test_events.copy()
    later["timestamp"] = later["timestamp"] + pd.Timedelta(days=120)
    log = tmp_path / "later.jsonl"
    write_audit_log(later, log)
    capsys.readouterr()
    assert main(["score", str(log), "--model", str(model), "--trust-unsigned-model",
                 "--no-write-back"]) == 0
    out = capsys.readouterr().out
    assert "warning: the model looks stale: trained on data up to" in out


@pytest.mark.parametrize("command", ["evaluate", "feedback", "models"])
def test_help_ends_with_an_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "example:\n  audit-analyzer " + command in capsys.readouterr().out
