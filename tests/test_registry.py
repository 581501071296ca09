"""The model registry: versions, cards, the current pointer, audited promote and rollback;
comparing a candidate with the current model and choosing its budget."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from analyzer.errors import ConfigError, IntegrityError, ModelLoadError
from analyzer.evaluation import budget_table, choose_budget, compare_models, entity_timeline
from analyzer.integrity import verify_log
from analyzer.logger import AuditLogger
from analyzer.model import AuditModel
from analyzer.registry import ModelRegistry
from analyzer.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=10, days=8, attack_days=2, seed=4))


@pytest.fixture(scope="module")
def models(org):
    train = org.train_events
    older = train[train["timestamp"] < org.train_end - pd.Timedelta(days=2)]
    return (AuditModel(n_estimators=20).fit(older), AuditModel(n_estimators=20).fit(train))


def test_versions_cards_promote_and_rollback_are_audited(tmp_path, models, key):
    registry = ModelRegistry(tmp_path / "models")
    first = registry.register(models[0], "acme", key=b"registry-signing-key")
    second = registry.register(models[1], "acme", evaluation={"roc_auc": 0.93, "junk": 1})
    assert (first.label, second.label) == ("acme-1", "acme-2")
    assert first.signed and not second.signed
    card = second.card.read_text()
    assert "roc_auc: 0.93" in card and "Training data" in card and "junk" not in card
    assert registry.current() is None
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, key=key) as audit:
        registry.promote("acme-1", audit=audit, actor="ann", reason="first")
        with pytest.raises(ConfigError, match="already the current model"):
            registry.promote("acme-1.joblib", audit=audit)
        registry.promote("acme", audit=audit, actor="ann")  # the latest version
        assert registry.current().name == "acme-2.joblib"
        back = registry.rollback(audit=audit, actor="bo", reason="too many alerts")
        assert back.label == "acme-1" and back.current
        with pytest.raises(ConfigError, match="nothing to roll back to"):
            registry.rollback(audit=audit)
        with pytest.raises(ConfigError, match=r"no model 'zeta'.*acme-1, acme-2"):
            registry.promote("zeta", audit=audit)
    records = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    assert [r["event"]["action"] for r in records] == ["model.promote", "model.promote",
                                                       "model.rollback"]
    last = records[-1]
    assert last["user"]["name"] == "bo" and last["resource"] == {"name": "acme-1.joblib",
                                                                 "type": "model"}
    assert last["analyzer"]["model"]["previous"] == "acme-2.joblib"
    assert "too many alerts" in last["message"]
    assert verify_log(log, key=key).ok
    assert registry.load_current(key=b"registry-signing-key").metadata["model_id"] == first.model_id


def test_a_modified_artifact_is_never_made_current(tmp_path, models):
    registry = ModelRegistry(tmp_path)
    entry = registry.register(models[0], "acme")
    data = bytearray(entry.artifact.read_bytes())
    data[-10] ^= 0xFF
    entry.artifact.write_bytes(bytes(data))
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log) as audit, pytest.raises(IntegrityError, match="was modified"):
        registry.promote("acme-1", audit=audit)
    assert registry.current() is None
    assert not log.exists() or log.read_bytes() == b""  # nothing recorded for a refusal


def test_the_pointer_must_name_an_artifact_of_the_registry(tmp_path, models):
    registry = ModelRegistry(tmp_path)
    registry.register(models[0], "acme")
    registry.current_path.write_text("../elsewhere/evil.joblib\n")
    with pytest.raises(ModelLoadError, match="not a path"):
        registry.current()
    registry.current_path.write_text("acme-9.joblib\n")
    with pytest.raises(ModelLoadError, match="not in"):
        registry.current()
    with pytest.raises(ConfigError, match="model name"):
        registry.register(models[0], "../x")


def test_compare_models_lists_alerts_gained_lost_and_kept(org, models):
    table = compare_models(*models, org.test_events)
    assert len(table) and set(table["change"]) <= {"gained", "lost", "kept"}
    order = table["change"].map({"gained": 0, "lost": 1, "kept": 2})
    assert order.is_monotonic_increasing
    lost = table[table["change"] == "lost"]
    assert lost["current_score"].notna().all()
    assert (table["reasons"] != "").all()


def test_budget_table_grows_with_the_budget_and_choose_respects_capacity(org, models):
    model = models[1]
    table = budget_table(model, model.score(org.test_events), budgets=(1, 5, 20))
    assert table["windows_over"].is_monotonic_increasing
    assert (table["alerts"] <= table["windows_over"]).all()
    chosen = choose_budget(table, capacity=float(table["per_day_mean"].iloc[1]))
    assert chosen == 5.0
    assert choose_budget(table, capacity=1e-9) == 1.0


def test_entity_timeline_sets_windows_against_the_profile(org, models):
    model = models[1]
    scores = model.score(org.test_events)
    user = scores.loc[scores["entity_type"] == "user", "entity"].iloc[0]
    timeline = entity_timeline(model, scores, user)
    assert len(timeline) == ((scores["entity"] == user)
                             & (scores["entity_type"] == "user")).sum()
    assert timeline["window_start"].is_monotonic_increasing
    assert {"f_n_events", "n_events_lo", "n_events_hi"} <= set(timeline.columns)
    assert timeline["n_events_lo"].notna().all()


def test_a_hand_edited_pointer_or_a_replaced_artifact_is_refused(tmp_path, models, key):
    """Issue 14 item 12: an older model signed with the same key cannot become current
    without an audit record, neither by editing ``current`` nor by copying it over."""
    registry = ModelRegistry(tmp_path / "models")
    sign = b"registry-signing-key"
    older = registry.register(models[0], "acme", key=sign)
    newer = registry.register(models[1], "acme", key=sign)
    with AuditLogger(tmp_path / "audit.jsonl", key=key) as audit:
        registry.promote("acme-2", audit=audit)
    assert registry.load_current(key=sign).metadata["model_id"] == newer.model_id
    with pytest.raises(ModelLoadError, match="is signed, but no key was given"):
        registry.load_current()  # never unpickled unchecked by default
    registry.current_path.write_text("acme-1.joblib\n")  # edited by hand
    with pytest.raises(ModelLoadError, match="changed outside the registry"):
        registry.load_current(key=sign)
    registry.current_path.write_text("acme-2.joblib\n")
    newer.artifact.write_bytes(older.artifact.read_bytes())  # still validly signed
    with pytest.raises(ModelLoadError, match="digest changed since the promotion"):
        registry.load_current(key=sign)
