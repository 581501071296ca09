"""The detector: sklearn contract, tail surprisal, one-dimensional rarity, explanations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from analyzer.detector import RarityForest, TailTable, explain, format_bytes


@parametrize_with_checks([RarityForest(n_estimators=20, random_state=0)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_tail_table_is_monotone_and_grows_past_the_maximum():
    table = TailTable(np.r_[np.zeros(90), np.arange(1, 11)])
    xs = np.array([-1.0, 0.0, 1.0, 5.0, 10.0, 11.0, 20.0, 1e9])
    s = table.surprisal(xs)
    assert s[0] == 0.0 and s[1] == 0.0
    assert np.all(np.diff(s) >= 0)
    assert s[5] > s[4]  # past the maximum, rarer still
    assert s[-1] - s[4] <= 10.0 + math.log(101)  # capped: one absurd value cannot dominate


def test_one_extreme_feature_among_many_quiet_ones_ranks_first():
    rng = np.random.default_rng(3)
    X = rng.poisson(1.0, size=(3000, 20)).astype(float)
    det = RarityForest(random_state=0).fit(X)
    probe = rng.poisson(1.0, size=(200, 20)).astype(float)
    probe[17, 4] = 9.0  # one feature far out, the rest ordinary
    scores = det.score_samples(probe)
    assert int(np.argmin(scores)) == 17
    surprisal = det.feature_surprisal(probe[17:18])
    assert int(np.argmax(surprisal[0])) == 4


def test_scores_are_deterministic_given_random_state():
    X = np.random.default_rng(5).exponential(size=(400, 5))
    a = RarityForest(random_state=11).fit(X).score_samples(X)
    b = RarityForest(random_state=11).fit(X).score_samples(X)
    np.testing.assert_array_equal(a, b)


def test_contamination_sets_the_training_outlier_share_and_can_change_later():
    X = np.random.default_rng(8).normal(size=(1000, 4))
    det = RarityForest(contamination=0.05, random_state=0).fit(X)
    share = float(np.mean(det.predict(X) == -1))
    assert 0.03 <= share <= 0.07
    strict, loose = det.offset_for(0.01), det.offset_for(0.2)
    assert strict < det.offset_ < loose
    assert np.mean(det.score_samples(X) < loose) > np.mean(det.score_samples(X) < strict)


def test_tail_probability_is_a_calibrated_share():
    X = np.random.default_rng(9).normal(size=(2000, 3))
    det = RarityForest(random_state=0).fit(X)
    p = det.tail_probability(X)
    assert p.min() > 0 and p.max() <= 1
    assert np.mean(p <= 0.1) == pytest.approx(0.1, abs=0.02)


def test_features_that_say_one_thing_count_once_in_the_rarity_score():
    rng = np.random.default_rng(4)
    X = rng.poisson(1.0, size=(2000, 3)).astype(float)
    X4 = np.c_[X, X[:, 0]]  # a fourth feature that repeats the first
    probe = np.array([[7.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    probe4 = np.c_[probe, probe[:, 0]]
    one = RarityForest(random_state=0).fit(X)
    grouped = RarityForest(random_state=0, rarity_groups=[0, 1, 2, 0]).fit(X4)
    plain = RarityForest(random_state=0).fit(X4)
    # grouped, the copy adds nothing to the rarity score; ungrouped, it counts again
    rarity = {name: det._rarity(det.feature_surprisal(p))
              for name, det, p in (("one", one, probe), ("grouped", grouped, probe4),
                                   ("plain", plain, probe4))}
    np.testing.assert_allclose(rarity["grouped"], rarity["one"])
    assert rarity["plain"][0] > rarity["one"][0] + 1.0
    with pytest.raises(ValueError, match="rarity_groups"):
        RarityForest(rarity_groups=[0]).fit(np.zeros((10, 2)))


def test_a_detector_saved_before_rarity_groups_still_scores():
    import pickle

    X = np.random.default_rng(6).poisson(1.0, size=(300, 3)).astype(float)
    det = RarityForest(random_state=0).fit(X)
    expected = det.score_samples(X[:5])
    del det.rarity_groups, det.rarity_groups_  # what an older version pickled
    old = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(old.score_samples(X[:5]), expected)
    assert old.get_params()["rarity_groups"] is None


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="contamination"):
        RarityForest(contamination=0.9).fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="rarity_weights"):
        RarityForest(rarity_weights=[1.0]).fit(np.zeros((10, 2)))


def test_explanations_read_like_a_person_wrote_them():
    windows = pd.DataFrame({
        "entity": ["alice"], "window_start": [pd.Timestamp("2026-01-05 03:00", tz="UTC")],
        "n_failures": [83.0], "n_new_countries": [1.0], "d_new_countries": ["RU"],
        "new_privileged_events": [7.0], "d_new_privileged": ["7 model.download"],
        "hour_rarity": [4.0],
    })
    names = ["n_failures", "n_new_countries", "new_privileged_events", "hour_rarity"]
    surprisal = np.array([[9.0, 8.0, 7.0, 1.0]])
    typical = pd.DataFrame({"n_failures_lo": [0.0], "n_failures_hi": [1.0]})
    (text,) = explain(windows, surprisal, names, typical=typical)
    # what is new or sensitive is named first when rarities are close
    assert text == ("first access from country RU; 83 failed events (typical for alice: 0-1); "
                    "7 privileged actions never done before by alice (7 model.download)")
    (quiet,) = explain(windows, np.array([[0.5, 0.2, 0.1, 0.3]]), names)
    assert quiet.startswith("unusual combination of")


def test_format_bytes():
    assert format_bytes(10) == "10 B"
    assert format_bytes(5 * 1024**3) == "5.0 GB"


def test_reasons_agree_in_number_and_still_translate():
    from analyzer.features import FEATURES, agree, as_template_plural
    from analyzer.report.i18n import get_locale

    assert agree("1 users never seen from this address before (eve)") == \
        "1 user never seen from this address before (eve)"
    assert agree("3 users never seen from this address before (eve)").startswith("3 users")
    for feature in FEATURES:  # every template round-trips, so reports can translate it
        text = feature.reason.format(value="1", typical="typical for x: 0", entity="x",
                                     detail="d", hour="03:00", weekday="Sunday")
        assert as_template_plural(agree(text)) == text
    german = get_locale("de").reason("1 failed event (typical for bob: 0)")
    assert german != "1 failed event (typical for bob: 0)"  # translated, not left in English
