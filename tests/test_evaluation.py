"""Evaluation against labels: hand-computed figures, label files, the naive baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analyzer.errors import SchemaError
from analyzer.evaluation import evaluate, naive_baseline_scores, read_labels
from analyzer.synth import SynthConfig, generate, write_labels

H = pd.Timedelta(hours=1)


def _t(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture
def scores() -> pd.DataFrame:
    rows = [  # entity_type, entity, window_start, score, alert
        ("user", "a", "2025-03-10 09:00", 0.9, True),
        ("user", "b", "2025-03-10 09:00", 0.5, True),
        ("source_ip", "1.2.3.4", "2025-03-10 10:00", 0.7, False),
        ("user", "a", "2025-03-11 11:00", 0.2, False),
        ("user", "c", "2025-03-11 09:00", 0.8, False),
        ("user", "d", "2025-03-11 10:00", 0.1, False),
    ]
    frame = pd.DataFrame(rows, columns=["entity_type", "entity", "window_start", "score",
                                        "alert"])
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    frame.insert(3, "window_end", frame["window_start"] + H)
    return frame


@pytest.fixture
def labels() -> pd.DataFrame:
    return pd.DataFrame({
        "entity_type": ["user", "source_ip", "user"],
        "entity": ["a", "1.2.3.4", "a"],
        "window_start": [_t("2025-03-10 09:00"), _t("2025-03-10 10:00"),
                         _t("2025-03-11 11:00")],
        "scenario": ["brute_force", "password_spray", "brute_force"],
    })


def test_figures_match_a_hand_computation(scores: pd.DataFrame,
                                          labels: pd.DataFrame) -> None:
    report = evaluate(scores, labels, alerts_per_day=1)
    # two days, one alert a day: the top two windows are a@d1 (labelled) and c (not)
    assert (report.windows, report.positives, report.days_scored) == (6, 3, 2)
    assert report.budget == 2
    assert report.precision_at_budget == pytest.approx(0.5)
    assert report.recall_at_budget == pytest.approx(1 / 3)
    # positives 0.9, 0.7, 0.2 vs negatives 0.8, 0.5, 0.1: 6 of 9 pairs ordered right
    assert report.roc_auc == pytest.approx(6 / 9)
    # positives at ranks 1, 3, 5: precision 1, 2/3, 3/5
    assert report.pr_auc == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    by = {(i.scenario, i.entity): i for i in report.instances}
    assert by["brute_force", "a"].caught and by["brute_force", "a"].windows == 2
    assert by["brute_force", "a"].best_rank == 1
    assert not by["password_spray", "1.2.3.4"].caught
    assert by["password_spray", "1.2.3.4"].best_rank == 3
    assert report.caught == 1
    # the scores' own alerts: a@d1 (right) and b (wrong)
    assert (report.alerts, report.alert_precision) == (2, 0.5)
    assert report.alert_recall == pytest.approx(1 / 3)
    assert report.warnings == ()


def test_a_larger_budget_catches_more(scores: pd.DataFrame, labels: pd.DataFrame) -> None:
    report = evaluate(scores, labels, alerts_per_day=1.5)
    assert report.budget == 3
    assert report.caught == 2
    assert report.recall_at_budget == pytest.approx(2 / 3)


def test_report_renders_as_json_and_text(scores: pd.DataFrame, labels: pd.DataFrame) -> None:
    report = evaluate(scores, labels, alerts_per_day=1)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["instances_caught"] == 1 and data["instances_total"] == 2
    assert {"scenario": "password_spray", "instances": 1, "caught": 0} in data["per_scenario"]
    text = report.to_text()
    assert "1 of 2 within the budget" in text
    assert "password_spray source_ip=1.2.3.4 (best rank 3)" in text


def test_hourly_labels_match_longer_windows(scores: pd.DataFrame,
                                            labels: pd.DataFrame) -> None:
    wide = scores.copy()
    wide["window_start"] -= H
    wide["window_end"] += H
    report = evaluate(wide, labels, alerts_per_day=1)
    assert report.positives == 3


def test_unmatched_labels_are_reported_not_fatal(scores: pd.DataFrame,
                                                 labels: pd.DataFrame) -> None:
    extra = pd.DataFrame({
        "entity_type": ["user", "user", "user"],
        "entity": ["zed", "a", "b"],
        "window_start": [_t("2025-03-10 12:00"), _t("2025-01-01 00:00"),
                         _t("2025-03-10 15:00")],
        "scenario": ["outside_role", "outside_role", "outside_role"],
    })
    report = evaluate(scores, pd.concat([labels, extra]), alerts_per_day=1)
    text = " | ".join(report.warnings)
    assert "unknown entity: user=zed" in text
    assert "outside the scored period: user=a at 2025-01-01T00:00Z" in text
    assert "entity inactive then" in text and "user=b" in text
    assert report.positives == 3


def test_missing_score_columns_are_named(scores: pd.DataFrame, labels: pd.DataFrame) -> None:
    with pytest.raises(SchemaError, match="score"):
        evaluate(scores.drop(columns=["score"]), labels)


def test_labels_round_trip_through_the_file(labels: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    write_labels(labels, path)
    back = read_labels(path)
    pd.testing.assert_frame_equal(
        back.sort_values(["window_start", "entity"]).reset_index(drop=True),
        labels.astype({"window_start": "datetime64[ns, UTC]"})
        .sort_values(["window_start", "entity"]).reset_index(drop=True),
        check_dtype=False)


def test_label_times_without_offset_are_utc_and_offsets_convert(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("scenario,entity_type,entity,window_start\n"
                    "x,user,a,2025-03-10 09:00\n"
                    "x,user,a,2025-03-10T11:00:00+02:00\n"
                    "\n"
                    "x,user,a,2025-03-10T09:00:00Z\n")
    labels = read_labels(path)
    assert labels["window_start"].tolist() == [_t("2025-03-10 09:00")]


def test_bad_label_lines_are_reported_with_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("entity_type,entity,window_start,scenario\n"
                    "user,a,2025-03-10T09:00:00Z,brute_force\n"
                    "user,,2025-03-10T09:00:00Z,brute_force\n"
                    "user,a,yesterday,brute_force\n"
                    "user,a\n")
    with pytest.raises(SchemaError) as err:
        read_labels(path)
    message = str(err.value)
    assert "3 bad label line(s)" in message
    assert "line 3: empty entity" in message
    assert "line 4: window_start is not a timestamp: 'yesterday'" in message
    assert "line 5: expected 4 fields, got 2" in message


def test_a_labels_file_without_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("user,a,2025-03-10T09:00:00Z,brute_force\n")
    with pytest.raises(SchemaError, match="header lacks entity_type, entity"):
        read_labels(path)


def test_naive_baseline_scores_every_test_window() -> None:
    org = generate(SynthConfig(users=12, days=9, attack_days=3, service_accounts=1,
                               scenarios=("brute_force", "outside_role"),
                               instances_per_scenario=1, events_per_user_day=20))
    scores = naive_baseline_scores(org.train_events, org.test_events, alerts_per_day=5)
    assert list(scores.columns[:7]) == ["entity_type", "entity", "window_start",
                                        "window_end", "score", "alert", "reasons"]
    test = org.test_events
    assert (scores["entity_type"] == "user").sum() == \
        test.groupby([test["user"].astype(str), test["timestamp"].dt.floor("h")]).ngroups
    assert scores["alert"].sum() == 5 * scores["window_start"].dt.floor("D").nunique()
    report = evaluate(scores, org.labels, alerts_per_day=5)
    by = {i.scenario: i.caught for i in report.instances if i.entity_type == "source_ip"}
    # raw failure counts do see a brute force; an insider at normal volume is another matter
    assert by["brute_force"]
