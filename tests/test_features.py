"""Windows and features: shapes, edge cases, novelty semantics, and windowing invariants."""

from __future__ import annotations

import io

import joblib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.errors import ConfigError, SchemaError
from analyzer.features import (
    DEFAULT_PRIVILEGED_ACTIONS,
    FEATURES,
    FeatureExtractor,
    feature_names,
    privileged_mask,
)
from tests.conftest import events_frame

frame = events_frame


def user_rows(windows: pd.DataFrame, user: str = "alice") -> pd.DataFrame:
    return windows[(windows["entity_type"] == "user") & (windows["entity"] == user)] \
        .reset_index(drop=True)


def test_feature_table_is_documented_and_consistent():
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names))
    for f in FEATURES:
        assert f.meaning and f.why and f.reason
        assert set(f.entity_types) <= {"user", "source_ip"}
    assert "n_users_failed" in feature_names("source_ip")
    assert "n_users_failed" not in feature_names("user")
    assert "n_new_countries" in feature_names("user")


def test_one_event_gives_a_user_window_and_an_address_window_on_the_hour():
    out = FeatureExtractor().fit_transform(frame([{"timestamp": "2026-01-05 09:41:07"}]))
    assert list(out["entity_type"].astype(str)) == ["user", "source_ip"]
    assert (out["window_start"] == pd.Timestamp("2026-01-05 09:00", tz="UTC")).all()
    assert (out["window_end"] == pd.Timestamp("2026-01-05 10:00", tz="UTC")).all()
    assert out["n_events"].tolist() == [1.0, 1.0]
    assert out["new_entity"].tolist() == [1.0, 1.0]


def test_empty_frame_gives_empty_windows_with_all_columns():
    empty = frame([{"timestamp": "2026-01-05 09:00"}]).iloc[:0]
    fx = FeatureExtractor()
    out = fx.fit_transform(empty)
    assert len(out) == 0
    assert {f.name for f in FEATURES} <= set(out.columns)
    assert len(fx.transform(empty)) == 0


def test_unauthenticated_events_only_make_address_windows():
    out = FeatureExtractor().fit_transform(frame([
        {"timestamp": "2026-01-05 09:00", "user": "", "outcome": "failure"},
        {"timestamp": "2026-01-05 09:01", "user": "", "source_ip": ""},
    ]))
    assert list(out["entity_type"].astype(str)) == ["source_ip"]
    assert out["n_failures"].tolist() == [1.0]


def test_missing_required_column_is_named():
    data = frame([{"timestamp": "2026-01-05 09:00"}]).drop(columns=["outcome"])
    with pytest.raises(SchemaError, match="outcome"):
        FeatureExtractor().fit(data)


def test_optional_columns_may_be_missing_or_present():
    rows = [{"timestamp": "2026-01-05 09:00", "country": "DE", "bytes": 100, "sequence": 7},
            {"timestamp": "2026-01-05 09:30", "country": "DE", "bytes": None, "sequence": 9}]
    rich = FeatureExtractor().fit_transform(frame(rows))
    alice = user_rows(rich)
    assert alice["bytes_total"].tolist() == [100.0]
    assert alice["first_sequence"].tolist() == [7]
    assert alice["last_sequence"].tolist() == [9]
    bare = FeatureExtractor().fit_transform(frame(rows).drop(columns=["country", "bytes",
                                                                       "sequence"]))
    assert user_rows(bare)["n_countries"].tolist() == [0.0]
    assert user_rows(bare)["first_sequence"].isna().all()


def test_alert_records_are_not_scored_as_activity():
    rows = [{"timestamp": "2026-01-05 09:00", "kind": "event"},
            {"timestamp": "2026-01-05 09:05", "kind": "alert", "user": "mallory"}]
    out = FeatureExtractor().fit_transform(frame(rows))
    assert "mallory" not in set(out["entity"])
    assert user_rows(out)["n_events"].tolist() == [1.0]


def test_volume_and_burst_features():
    rows = [{"timestamp": f"2026-01-05 09:10:{s:02d}", "outcome": "failure"} for s in range(6)]
    rows += [{"timestamp": "2026-01-05 09:40"}]
    alice = user_rows(FeatureExtractor().fit_transform(frame(rows)))
    assert alice["n_failures"].tolist() == [6.0]
    ip = FeatureExtractor().fit_transform(frame(rows)).query("entity_type == 'source_ip'")
    assert ip["failure_ratio"].iloc[0] == pytest.approx(6 / 7)
    assert alice["max_burst"].tolist() == [6.0]
    assert alice["events_per_minute"].iloc[0] == pytest.approx(3.5)
    assert alice["fail_then_success"].tolist() == [6.0]


def test_address_windows_count_users_tried_and_failed():
    rows = [{"timestamp": "2026-01-05 09:00", "user": u, "outcome": "failure",
             "source_ip": "203.0.113.9"} for u in ("a", "b", "c")]
    rows += [{"timestamp": "2026-01-05 09:05", "user": "d", "source_ip": "203.0.113.9"}]
    ip = FeatureExtractor().fit_transform(frame(rows)).query("entity_type == 'source_ip'")
    assert ip["n_users"].tolist() == [4.0]
    assert ip["n_users_failed"].tolist() == [3.0]
    assert ip["fail_then_success"].tolist() == [3.0]


def test_training_novelty_is_as_seen_so_far():
    rows = [{"timestamp": "2026-01-05 09:00", "source_ip": "10.0.0.1"},
            {"timestamp": "2026-01-05 10:00", "source_ip": "10.0.0.1"},
            {"timestamp": "2026-01-05 11:00", "source_ip": "10.0.0.2"}]
    alice = user_rows(FeatureExtractor().fit_transform(frame(rows)))
    # the first window is the account's first: new_entity says it, not n_new_ips again
    assert alice["n_new_ips"].tolist() == [0.0, 0.0, 1.0]
    assert alice["new_entity"].tolist() == [1.0, 0.0, 0.0]


def test_a_new_account_is_news_once_not_once_per_novelty_feature():
    rows = [{"timestamp": "2026-01-05 09:00", "user": "bob", "source_ip": "10.0.0.1",
             "country": "DE", "resource": "dataset/a", "action": "dataset.export"},
            {"timestamp": "2026-01-05 10:00", "user": "bob", "source_ip": "10.0.0.2",
             "country": "FR", "resource": "dataset/b", "action": "role.grant"}]
    windows = FeatureExtractor().fit_transform(frame(rows))
    bob = user_rows(windows, "bob")
    own = ["n_new_ips", "n_new_countries", "n_new_resources", "n_new_actions",
           "new_privileged_events"]
    assert bob["new_entity"].tolist() == [1.0, 0.0]
    assert bob[own].iloc[0].tolist() == [0.0] * len(own)
    assert bob[own].iloc[1].tolist() == [1.0] * len(own)
    # an address's first window keeps its counts: an attacker's address is new too
    first_ip = windows.query("entity_type == 'source_ip' and entity == '10.0.0.1'")
    assert first_ip["n_new_actions"].tolist() == [1.0]


def test_scoring_novelty_is_against_the_profile_and_earlier_windows():
    train = frame([{"timestamp": "2026-01-05 09:00", "country": "DE",
                    "resource": "dataset/a"}])
    fx = FeatureExtractor().fit(train)
    later = frame([
        {"timestamp": "2026-01-06 09:00", "country": "DE", "resource": "dataset/a"},
        {"timestamp": "2026-01-06 10:00", "country": "RU", "source_ip": "198.51.100.7",
         "resource": "dataset/secret"},
        {"timestamp": "2026-01-06 11:00", "country": "RU", "source_ip": "198.51.100.7",
         "resource": "dataset/secret"},
    ])
    alice = user_rows(fx.transform(later))
    assert alice["n_new_countries"].tolist() == [0.0, 1.0, 0.0]
    assert alice["n_new_ips"].tolist() == [0.0, 1.0, 0.0]
    assert alice["n_new_resources"].tolist() == [0.0, 1.0, 0.0]
    assert alice["d_new_countries"].iloc[1] == "RU"
    assert alice["d_new_ips"].iloc[1] == "198.51.100.7"
    assert alice["new_entity"].tolist() == [0.0, 0.0, 0.0]


def test_never_seen_user_is_new_only_in_its_first_window():
    fx = FeatureExtractor().fit(frame([{"timestamp": "2026-01-05 09:00"}]))
    out = user_rows(fx.transform(frame([{"timestamp": "2026-01-06 09:00", "user": "zed"},
                                        {"timestamp": "2026-01-06 10:00", "user": "zed"}])),
                    "zed")
    assert out["new_entity"].tolist() == [1.0, 0.0]


def _teams(days: int = 3) -> pd.DataFrame:
    rows = []
    for day in range(days):
        for team, users in (("x", ("ann", "amy", "ada")), ("y", ("bea", "bob", "bud"))):
            for i, user in enumerate(users):
                for r in range(3):
                    rows.append({"timestamp": f"2026-01-0{5 + day} {9 + i}:{10 * r:02d}",
                                 "user": user, "resource": f"{team}/r{r}"})
    return frame(rows)


def test_peer_groups_come_from_co_access():
    fx = FeatureExtractor(n_peers=2).fit(_teams())
    peers = {fx.vocab_["user"][i]: {fx.vocab_["user"][j] for j in row if j >= 0}
             for i, row in enumerate(fx.peers_)}
    assert peers["ann"] == {"amy", "ada"}
    assert peers["bob"] == {"bea", "bud"}
    # ann reads team y's resource: outside her peers; a team-x resource she never read is not
    later = frame([{"timestamp": "2026-02-01 09:00", "user": "ann", "resource": "y/r0"},
                   {"timestamp": "2026-02-01 09:05", "user": "ann", "resource": "x/r1"}])
    ann = user_rows(fx.transform(later), "ann")
    assert ann["n_outside_peer_resources"].tolist() == [1.0]
    assert ann["d_outside_peer_resources"].tolist() == ["y/r0"]


def test_privileged_actions_are_configurable():
    assert privileged_mask(["role.assign", "dataset.read", "Model.Download"]).tolist() == \
        [True, False, True]
    assert privileged_mask(["dataset.read"], ["dataset.*"]).tolist() == [True]
    rows = [{"timestamp": "2026-01-05 08:00", "action": "model.predict"},
            {"timestamp": "2026-01-05 09:00", "action": "permission.change"},
            {"timestamp": "2026-01-05 09:01", "action": "dataset.read"}]
    alice = user_rows(FeatureExtractor().fit_transform(frame(rows)))
    assert alice["n_privileged"].tolist() == [0.0, 1.0]
    assert alice["new_privileged_events"].tolist() == [0.0, 1.0]
    custom = FeatureExtractor(privileged_actions=["dataset.*"]).fit_transform(frame(rows))
    assert user_rows(custom)["n_privileged"].tolist() == [0.0, 1.0]
    assert "*export*" in DEFAULT_PRIVILEGED_ACTIONS


def test_unusual_hour_is_rarer_than_usual_hour():
    rows = [{"timestamp": f"2026-01-{d:02d} 10:15"} for d in range(5, 25)]
    fx = FeatureExtractor().fit(frame(rows))
    later = frame([{"timestamp": "2026-02-02 10:15"}, {"timestamp": "2026-02-03 03:15"}])
    alice = user_rows(fx.transform(later))
    assert alice["hour_rarity"].iloc[1] > alice["hour_rarity"].iloc[0] + 1.0
    assert alice["off_hours_share"].tolist() == [0.0, 1.0]


def test_hour_next_to_working_hours_is_less_unusual_than_the_night():
    # a short history of 09:00-16:00 days: an evening hour never seen is still nearer the
    # habit than 03:00, so only the night counts as a time the user is normally inactive
    rows = [{"timestamp": f"2026-01-{d:02d} {h:02d}:15"} for d in range(5, 10)
            for h in range(9, 17)]
    fx = FeatureExtractor().fit(frame(rows))
    later = frame([{"timestamp": "2026-02-02 17:15", "action": "dataset.export"},
                   {"timestamp": "2026-02-03 03:15", "action": "dataset.export"}])
    alice = user_rows(fx.transform(later))
    assert alice["hour_rarity"].iloc[1] > alice["hour_rarity"].iloc[0] + 2.0
    assert alice["privileged_off_hours"].tolist() == [0.0, 1.0]


def address_rows(windows: pd.DataFrame, address: str) -> pd.DataFrame:
    return windows[(windows["entity_type"] == "source_ip") & (windows["entity"] == address)] \
        .reset_index(drop=True)


def test_address_window_shows_what_users_new_to_it_did_for_the_first_time():
    rows = [{"timestamp": f"2026-01-{d:02d} 10:15", "resource": "ds/own"} for d in range(5, 15)]
    fx = FeatureExtractor().fit(frame(rows))
    later = frame([
        # a stolen password used from a new place, reading what alice never read
        {"timestamp": "2026-02-02 03:10", "source_ip": "203.0.113.9", "resource": "ds/own"},
        {"timestamp": "2026-02-02 03:20", "source_ip": "203.0.113.9", "resource": "ds/pii"},
        {"timestamp": "2026-02-02 03:30", "source_ip": "203.0.113.9", "resource": "ds/hr"},
        # travel: a new place, the usual data
        {"timestamp": "2026-02-03 08:10", "source_ip": "198.51.100.4", "resource": "ds/own"},
        # at her usual desk something new: the user window's business, not the address's
        {"timestamp": "2026-02-04 10:10", "resource": "ds/other"},
    ])
    out = fx.transform(later)
    intruder = address_rows(out, "203.0.113.9")
    assert intruder["n_users_new_resources"].tolist() == [2.0]
    assert intruder["d_new_resources"].tolist() == ["ds/hr, ds/pii"]
    assert address_rows(out, "198.51.100.4")["n_users_new_resources"].tolist() == [0.0]
    assert address_rows(out, "10.0.0.1")["n_users_new_resources"].tolist() == [0.0]
    assert user_rows(out)["n_new_resources"].tolist() == [2.0, 0.0, 1.0]


def test_address_counts_accounts_failed_over_the_last_day():
    spray = "198.51.100.7"
    rows = [{"timestamp": ts, "user": who, "source_ip": spray, "outcome": "failure"}
            for ts, who in (("2026-01-05 01:10", "bob"), ("2026-01-05 05:10", "carol"),
                            ("2026-01-05 20:10", "dave"), ("2026-01-05 20:20", "dave"),
                            ("2026-01-06 04:30", "erin"))]
    out = address_rows(FeatureExtractor().fit_transform(frame(rows)), spray)
    # each hour sees one or two accounts; the day up to each window's end sees the spray
    assert out["n_users_failed"].tolist() == [1.0, 1.0, 1.0, 1.0]
    # 04:00 on the 6th looks back to 05:00 on the 5th: bob's attempt is older than that
    assert out["n_users_failed_day"].tolist() == [1.0, 2.0, 3.0, 3.0]


def test_bytes_against_typical_volume():
    rows = [{"timestamp": f"2026-01-{d:02d} 10:15", "bytes": 1000} for d in range(5, 15)]
    fx = FeatureExtractor().fit(frame(rows))
    later = frame([{"timestamp": "2026-02-02 10:15", "bytes": 1000},
                   {"timestamp": "2026-02-02 11:15", "bytes": 1_000_000}])
    alice = user_rows(fx.transform(later))
    assert alice["bytes_vs_typical"].iloc[0] == pytest.approx(0.0)
    assert alice["bytes_vs_typical"].iloc[1] == pytest.approx(np.log1p(1e6) - np.log1p(1e3))


def test_sliding_windows():
    rows = [{"timestamp": "2026-01-05 09:20"}]
    out = user_rows(FeatureExtractor(window="1h", step="15min").fit_transform(frame(rows)))
    assert len(out) == 4
    assert out["window_start"].min() == pd.Timestamp("2026-01-05 08:30", tz="UTC")
    assert (out["window_end"] - out["window_start"] == pd.Timedelta("1h")).all()


@pytest.mark.parametrize(("window", "step"), [("1h", "25min"), ("nonsense", None),
                                              ("10s", None)])
def test_bad_windows_are_refused(window, step):
    with pytest.raises(ConfigError):
        FeatureExtractor(window=window, step=step).fit(frame([{"timestamp": "2026-01-05"}]))


def test_extractor_survives_joblib_round_trip():
    fx = FeatureExtractor().fit(_teams())
    buffer = io.BytesIO()
    joblib.dump(fx, buffer)
    buffer.seek(0)
    again = joblib.load(buffer)
    later = frame([{"timestamp": "2026-02-01 09:00", "user": "ann", "resource": "y/r0"}])
    pd.testing.assert_frame_equal(fx.transform(later), again.transform(later))


def test_transform_before_fit_is_an_error():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        FeatureExtractor().transform(frame([{"timestamp": "2026-01-05"}]))


@settings(max_examples=40, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=3 * 86_400), min_size=1, max_size=40),
    users=st.lists(st.sampled_from(["", "a", "b"]), min_size=40, max_size=40),
    k=st.sampled_from([1, 2, 4]),
)
def test_every_event_lands_in_exactly_k_windows_per_entity(offsets, users, k):
    times = pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(offsets, unit="s")
    data = frame([{"timestamp": t, "user": users[i]} for i, t in enumerate(times)])
    step = f"{60 // k}min"
    out = FeatureExtractor(window="1h", step=step).fit_transform(data)
    with_user = sum(1 for i in range(len(offsets)) if users[i])
    by_type = out.groupby(out["entity_type"].astype(str))["n_events"].sum()
    assert by_type.get("user", 0) == with_user * k
    assert by_type["source_ip"] == len(offsets) * k
    assert (out["window_start"].dt.minute % (60 // k) == 0).all()
    assert not out.duplicated(["entity_type", "entity", "window_start"]).any()
