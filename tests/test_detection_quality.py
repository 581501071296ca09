"""Detection quality on the default synthetic organisation (issue: "Detection quality").

Trained on the organisation's training weeks, scored on its last days with the default
:class:`~analyzer.model.AuditModel`: every kind of injected attack is within the default
alert budget, benign surprises (travel, a busy day, a new joiner) do not fill it, and the
detector beats a naive IsolationForest on raw counts.
"""

from __future__ import annotations

import pandas as pd
import pytest

from analyzer.evaluation import evaluate, naive_baseline_scores
from analyzer.model import DEFAULT_ALERTS_PER_DAY, AuditModel
from analyzer.synth import SynthConfig, generate

# At most this share of the budget may go to windows of benign surprises.
_MAX_SURPRISE_SHARE = 0.10


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig())


@pytest.fixture(scope="module")
def scores(org):
    return AuditModel().fit(org.train_events).score(org.test_events)


@pytest.fixture(scope="module")
def report(scores, org):
    return evaluate(scores, org.labels, alerts_per_day=DEFAULT_ALERTS_PER_DAY)


def _caught_by_scenario(report) -> pd.Series:
    return report.per_scenario.set_index("scenario")["caught"]


def test_every_attack_kind_is_caught_within_the_default_budget(report, org):
    caught = _caught_by_scenario(report)
    assert set(caught.index) == set(org.labels["scenario"])
    missed = sorted(caught.index[caught < 1])
    assert not missed, f"no instance caught within the budget for {missed}"


def test_off_hours_export_sprees_are_caught_within_the_default_budget(report):
    # the kind that was hardest: a dozen exports at 3 a.m. by someone who never works at
    # night competes with many windows of long-running address incidents for the budget
    assert _caught_by_scenario(report)["offhours_export"] >= 1


def test_benign_surprises_do_not_dominate_the_top(scores, org, report):
    top = scores.sort_values("score", ascending=False, kind="stable").head(report.budget)
    start = pd.to_datetime(top["window_start"], utc=True)
    in_surprise = pd.Series(False, index=top.index)
    for s in org.surprises.itertuples():
        in_surprise |= ((top["entity_type"] == "user") & (top["entity"] == s.user)
                        & (start >= s.start) & (start < s.end))
    assert org.surprises["kind"].nunique() >= 3  # travel, busy day and new joiner are there
    assert in_surprise.sum() <= _MAX_SURPRISE_SHARE * report.budget, \
        top.loc[in_surprise, ["entity", "window_start", "reasons"]].to_string()


def test_detector_beats_the_naive_baseline(org, report):
    naive = naive_baseline_scores(org.train_events, org.test_events)
    baseline = evaluate(naive, org.labels, alerts_per_day=DEFAULT_ALERTS_PER_DAY)
    assert report.budget == baseline.budget
    assert report.caught > baseline.caught
    assert report.pr_auc > baseline.pr_auc


# Instances caught per kind on main before the quiet families (5c35359): issue 13 asks for no
# regression on the existing scenarios at the default budget.
_CAUGHT_BEFORE_QUIET = {"account_takeover": 6, "brute_force": 6, "bulk_model_download": 3,
                        "offhours_export": 1, "outside_role": 2, "password_spray": 3,
                        "privilege_escalation": 2, "service_account_interactive": 3,
                        "slow_password_spray": 3}


def test_no_existing_kind_catches_fewer_than_before_the_quiet_families(report):
    caught = _caught_by_scenario(report)
    fewer = {k: (int(caught[k]), v) for k, v in _CAUGHT_BEFORE_QUIET.items() if caught[k] < v}
    assert not fewer, f"(now, before) per kind: {fewer}"


def test_a_brute_force_and_the_account_it_hammered_are_one_incident(scores, org):
    labels = org.labels[org.labels["scenario"] == "brute_force"].copy()
    labels["window_start"] = pd.to_datetime(labels["window_start"], utc=True)
    # the first hour of each brute force (where the address first fails against the account)
    first = labels.groupby("entity")["window_start"].transform("min") == labels["window_start"]
    start = pd.to_datetime(scores["window_start"], utc=True)
    checked = 0
    for at, hit in labels[first].groupby("window_start"):
        windows = {t: scores[(scores["entity_type"] == t) & (start == at)
                             & scores["entity"].isin(hit.loc[hit["entity_type"] == t, "entity"])]
                   for t in ("source_ip", "user")}
        address, user = windows["source_ip"], windows["user"]
        if len(address) != 1 or len(user) != 1 or not address["alert"].iat[0]:
            continue
        assert user["candidate_incident"].iat[0] == address["candidate_incident"].iat[0]
        checked += 1
    assert checked >= 3  # one per brute force at least


# -- the attacks per-entity hourly counts cannot see (issue 13 item 4) ------------------------
# Measured on quiet_attacks_config() (seed 7); the families were tuned on seed 11 only.
# session_hijack is left out on purpose: it is caught on one seed of four (README, "Detection,
# measured"), so claiming it here would be claiming what the detector does not do.
_QUIET_CAUGHT = ("credential_stuffing", "dormant_account", "stable_entity_novelty",
                 "low_and_slow_collection")


@pytest.fixture(scope="module")
def quiet_org():
    from analyzer.synth import quiet_attacks_config

    return generate(quiet_attacks_config())


@pytest.fixture(scope="module")
def quiet_scores(quiet_org):
    return AuditModel().fit(quiet_org.train_events).score(quiet_org.test_events)


@pytest.fixture(scope="module")
def quiet_report(quiet_scores, quiet_org):
    return evaluate(quiet_scores, quiet_org.labels, alerts_per_day=DEFAULT_ALERTS_PER_DAY)


@pytest.mark.parametrize("scenario", _QUIET_CAUGHT)
def test_quiet_attack_kinds_are_caught_within_the_default_budget(quiet_report, scenario):
    caught = _caught_by_scenario(quiet_report)
    assert caught[scenario] >= 1, quiet_report.per_scenario.to_string()


def test_a_credential_stuffing_storm_is_one_incident_named_by_the_success(quiet_scores,
                                                                          quiet_org):
    hits = quiet_org.labels[(quiet_org.labels["scenario"] == "credential_stuffing")
                            & (quiet_org.labels["entity_type"] == "source_ip")]
    for address in hits["entity"]:
        (row,) = quiet_scores.index[(quiet_scores["entity"] == address)
                                    & (quiet_scores["f_storm_new_source_success"] > 0)]
        incident = quiet_scores.at[row, "candidate_incident"]
        members = quiet_scores[quiet_scores["candidate_incident"] == incident]
        # hundreds of addresses with a failure or two each, one incident to review
        assert (members["entity_type"] == "source_ip").sum() >= 100
        lead = members.sort_values("score", ascending=False, kind="stable").iloc[0]
        assert lead["alert"]
        assert lead["reasons"].startswith("success from never-seen address"), lead["reasons"]
        assert "during a failure storm" in lead["reasons"]


def test_a_dormant_account_says_how_long_it_slept(quiet_scores, quiet_org):
    woken = quiet_org.labels.loc[quiet_org.labels["scenario"] == "dormant_account", "entity"]
    rows = quiet_scores[quiet_scores["entity"].isin(woken) & quiet_scores["alert"]]
    assert len(rows) and rows["reasons"].str.contains(r"first activity in \d+ days").all()


def test_quiet_lookalikes_do_not_dominate_the_top(quiet_scores, quiet_org, quiet_report):
    # a team onboarding, a VPN change and a weekend release beside the quiet attacks
    assert {"team_onboarding", "vpn_change", "weekend_release"} <= set(
        quiet_org.surprises["kind"])
    top = quiet_scores.sort_values("score", ascending=False, kind="stable").head(
        quiet_report.budget)
    start = pd.to_datetime(top["window_start"], utc=True)
    in_surprise = pd.Series(False, index=top.index)
    for s in quiet_org.surprises.itertuples():
        in_surprise |= ((top["entity_type"] == "user") & (top["entity"] == s.user)
                        & (start >= s.start) & (start < s.end))
    assert in_surprise.sum() <= _MAX_SURPRISE_SHARE * quiet_report.budget, \
        top.loc[in_surprise, ["entity", "window_start", "reasons"]].to_string()


# -- attacks the events' own evidence names (issue 13 item 4, last three families) ------------
# Measured on evidence_attacks_config() (seed 7); nothing was tuned for these scenarios.


@pytest.fixture(scope="module")
def evidence_org():
    from analyzer.synth import evidence_attacks_config

    return generate(evidence_attacks_config())


@pytest.fixture(scope="module")
def evidence_scores(evidence_org):
    return AuditModel().fit(evidence_org.train_events).score(evidence_org.test_events)


@pytest.fixture(scope="module")
def evidence_report(evidence_scores, evidence_org):
    return evaluate(evidence_scores, evidence_org.labels, alerts_per_day=DEFAULT_ALERTS_PER_DAY)


# what the alerted window of each kind must say: the attack's own events, not only the hour
_EVIDENCE_NAMED = {"web_scanning": r"probes of sensitive paths|scanner user agent",
                   "cloud_control_plane_abuse": r"first (?:cloudtrail|iam|ec2):",
                   "windows_credential_access": r"first directory\.replication .*DCSync"}


@pytest.mark.parametrize("scenario", sorted(_EVIDENCE_NAMED))
def test_evidence_attack_kinds_are_caught_and_named(evidence_report, evidence_scores,
                                                    evidence_org, scenario):
    assert _caught_by_scenario(evidence_report)[scenario] >= 1, \
        evidence_report.per_scenario.to_string()
    hit = evidence_org.labels[evidence_org.labels["scenario"] == scenario]
    start = pd.to_datetime(evidence_scores["window_start"], utc=True)
    rows = evidence_scores[evidence_scores["entity"].isin(hit["entity"])
                           & start.isin(pd.to_datetime(hit["window_start"], utc=True))
                           & evidence_scores["alert"]]
    assert rows["reasons"].str.contains(_EVIDENCE_NAMED[scenario]).any(), \
        rows["reasons"].to_string()


def test_routine_evidence_lookalikes_stay_out_of_the_top(evidence_scores, evidence_org,
                                                         evidence_report):
    # domain controllers replicate, a monitor polls /health with curl, admins create accounts
    # for new joiners: evidence-shaped, and none of it an incident
    top = evidence_scores.sort_values("score", ascending=False, kind="stable").head(
        evidence_report.budget)
    assert not top["entity"].isin(["DC01$", "DC02$", "10.0.0.9"]).any()
    routine = evidence_org.surprises[evidence_org.surprises["kind"] == "evidence_routine"]
    assert len(routine)
    start = pd.to_datetime(top["window_start"], utc=True)
    hits = pd.Series(False, index=top.index)
    for s in routine.itertuples():
        hits |= (top["entity"] == s.user) & (start >= s.start) & (start < s.end)
    assert not hits.any(), top.loc[hits, ["entity", "reasons"]].to_string()
