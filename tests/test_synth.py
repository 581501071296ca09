"""The synthetic organisation: deterministic, labelled, attacks at normal volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyzer.errors import ConfigError
from analyzer.synth import (
    SCENARIOS,
    Organisation,
    SynthConfig,
    generate,
    holdout_config,
    write_audit_log,
    write_labels,
)


def _small(**overrides: object) -> SynthConfig:
    options: dict[str, object] = {"users": 30, "days": 14, "attack_days": 7,
                                  "instances_per_scenario": 2}
    options.update(overrides)
    return SynthConfig(**options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def org() -> Organisation:
    return generate(_small())


def _window_counts(events: pd.DataFrame, column: str) -> pd.Series:
    hours = events["timestamp"].dt.floor("h")
    counts = events.groupby([events[column].astype(str), hours], observed=True).size()
    counts.index.names = ["entity", "window_start"]
    return counts


def test_same_seed_same_events_and_labels() -> None:
    a, b = generate(_small(users=12)), generate(_small(users=12))
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    c = generate(_small(users=12, seed=8))
    assert not a.events["user"].astype(str).equals(c.events["user"].astype(str))


def test_events_frame_follows_the_contract(org: Organisation) -> None:
    ev = org.events
    assert str(ev["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert ev["timestamp"].is_monotonic_increasing
    assert set(ev["outcome"].cat.categories) == {"success", "failure", "unknown"}
    assert set(ev["outcome"].unique()) <= {"success", "failure"}
    assert ev["user"].astype(str).str.len().gt(0).all()
    assert {"roles", "city", "country", "session", "bytes"} <= set(ev.columns)
    # every address is an IPv4 string
    assert ev["source_ip"].astype(str).str.fullmatch(r"\d+\.\d+\.\d+\.\d+").all()
    start = org.config.start
    assert ev["timestamp"].min() >= start - pd.Timedelta(hours=12)
    assert ev["timestamp"].max() < start + pd.Timedelta(days=org.config.days, hours=12)


def test_every_scenario_is_labelled_in_the_scored_period_only(org: Organisation) -> None:
    labels = org.labels
    assert list(labels.columns) == ["entity_type", "entity", "window_start", "scenario"]
    assert set(labels["scenario"]) == set(SCENARIOS)
    assert set(labels["entity_type"]) == {"user", "source_ip"}
    assert (labels["window_start"] >= org.train_end).all()
    assert (labels["window_start"] == labels["window_start"].dt.floor("h")).all()
    instances = org.instances.groupby(["scenario", "entity"]).ngroups
    assert instances == labels.groupby(["scenario", "entity"]).ngroups
    assert len(org.instances) >= len(SCENARIOS) * 2


def test_labels_line_up_with_the_injected_events(org: Organisation) -> None:
    ev = org.events
    for entity_type, column in (("user", "user"), ("source_ip", "source_ip")):
        counts = _window_counts(ev, column)
        lab = org.labels[org.labels["entity_type"] == entity_type]
        keys = pd.MultiIndex.from_frame(lab[["entity", "window_start"]])
        assert keys.isin(counts.index).all(), f"a labelled {entity_type} window has no events"


def test_attacks_are_at_normal_volume(org: Organisation) -> None:
    for entity_type, column in (("user", "user"), ("source_ip", "source_ip")):
        counts = _window_counts(org.events, column)
        lab = org.labels[org.labels["entity_type"] == entity_type]
        attack = counts.index.isin(pd.MultiIndex.from_frame(lab[["entity", "window_start"]]))
        normal = counts[~attack]
        # no attack hour is busier than the 99th percentile of normal hours of its kind
        assert counts[attack].max() <= np.quantile(normal, 0.99)
        assert counts[attack].median() <= np.quantile(normal, 0.9)


def test_attackers_use_the_entitys_own_channels(org: Organisation) -> None:
    ev = org.events
    train = ev[ev["timestamp"] < org.train_end]
    # insiders act from an address they also use for their normal work
    for scenario in ("privilege_escalation", "bulk_model_download", "outside_role"):
        for user in org.instances.loc[org.instances["scenario"] == scenario, "entity"]:
            lab = org.labels[(org.labels["entity"] == user)
                             & (org.labels["scenario"] == scenario)]
            hours = ev["timestamp"].dt.floor("h").isin(lab["window_start"])
            mine = ev["user"] == user
            ips = set(ev.loc[mine & ~hours, "source_ip"].astype(str))
            used = set(ev.loc[mine & hours, "source_ip"].astype(str))
            assert used <= ips, (scenario, user, used - ips)
    # service accounts never log in during training, and work from one fixed address
    services = set(org.people.loc[org.people["service"], "user"])
    logins = train.loc[train["action"] == "login", "user"].astype(str)
    assert not services & set(logins)
    machine = train[train["user"].astype(str).isin(services)]
    assert machine.groupby("user", observed=True)["source_ip"].nunique().eq(1).all()
    assert machine["session"].isna().all()


def test_benign_surprises_are_present_and_unlabelled(org: Organisation) -> None:
    surprises = org.surprises
    assert set(surprises["kind"]) == {"travel", "busy_day", "new_joiner"}
    scored = surprises[surprises["start"] >= org.train_end]
    assert not set(scored["user"]) & set(org.labels["entity"])
    ev = org.events
    for row in surprises.itertuples():
        if row.kind == "travel":
            trip = ev[(ev["user"] == row.user) & (ev["timestamp"] >= row.start)
                      & (ev["timestamp"] < row.end)]
            home = org.people.set_index("user").loc[row.user, "country"]
            assert len(trip) and (trip["country"].astype(str) != home).all()
        if row.kind == "new_joiner":
            first = ev.loc[ev["user"] == row.user, "timestamp"].min()
            assert first >= row.start - pd.Timedelta(hours=14)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown scenario"):
        SynthConfig(scenarios=("nope",))
    with pytest.raises(ConfigError, match="attack_days"):
        SynthConfig(days=7, attack_days=7)


def test_holdout_organisation_looks_different() -> None:
    config = holdout_config()
    assert config != SynthConfig()
    org = generate(config)
    assert "roles" not in org.events.columns
    assert org.people["user"].nunique() > SynthConfig().users
    assert set(org.labels["scenario"]) == set(SCENARIOS)


def test_evidence_scenarios_carry_the_columns_their_features_read(org: Organisation) -> None:
    from analyzer.synth import EVIDENCE_SCENARIOS

    assert "url_path" not in org.events.columns  # the default organisation has no web traffic
    evid = generate(_small(scenarios=SCENARIOS + EVIDENCE_SCENARIOS, evidence_routine=1))
    events, labels = evid.events, evid.labels
    assert set(EVIDENCE_SCENARIOS) <= set(labels["scenario"])
    assert not labels["window_start"].lt(evid.train_end).any()
    web = events[events["url_path"] != ""]
    assert web["status"].notna().all() and (web["user_agent"] != "").all()
    assert events.loc[events["url_path"] == "", "status"].isna().all()
    scanners = labels.loc[labels["scenario"] == "web_scanning", "entity"]
    probed = web[web["source_ip"].astype(str).isin(scanners)]
    assert probed["url_path"].isin(["/.env", "/.git/config", "/wp-login.php"]).any()
    assert (probed["url_query"] != "").any()
    # the look-alikes are there all along, training included: replication by the domain
    # controllers, a /health probe, administrators' iam:CreateUser for new joiners
    train = evid.train_events
    assert ((train["user"] == "DC01$") & (train["action"] == "directory.replication")).any()
    assert (train["url_path"] == "/health").any()
    assert (train["action"] == "iam.amazonaws.com:CreateUser").any()
    assert not labels["entity"].isin(["DC01$", "DC02$", "10.0.0.9"]).any()


def test_labels_file_has_the_evaluation_format(org: Organisation, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    assert write_labels(org.labels, path) == len(org.labels)
    lines = path.read_text().splitlines()
    assert lines[0] == "entity_type,entity,window_start,scenario"
    first = org.labels.iloc[0]
    assert lines[1] == (f"{first.entity_type},{first.entity},"
                        f"{first.window_start:%Y-%m-%dT%H:%M:%SZ},{first.scenario}")


def test_audit_log_is_chained_and_reads_back_as_the_same_events(tmp_path: Path) -> None:
    integrity = pytest.importorskip("analyzer.integrity")
    jsonl = pytest.importorskip("analyzer.sources.jsonl")
    org = generate(_small(users=6, days=7, attack_days=2, scenarios=("brute_force",),
                          service_accounts=1, events_per_user_day=10))
    path = tmp_path / "audit.jsonl"
    key = b"synthetic-test-key"
    assert write_audit_log(org.events, path, key=key) == len(org.events)
    report = integrity.verify_log(path, key=key)
    assert report.ok, report.summary()
    back = jsonl.read(path).frame
    for column in ("timestamp", "user", "action", "outcome", "source_ip", "resource",
                   "country", "bytes"):
        left = org.events[column].astype(object).where(org.events[column].notna(), None)
        right = back[column].astype(object).where(back[column].notna(), None)
        assert left.tolist() == right.tolist(), column
