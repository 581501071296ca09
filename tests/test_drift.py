"""Drift: PSI, model age, never-seen entities, and the stale verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analyzer.drift import drift_report, population_stability_index
from analyzer.model import AuditModel
from analyzer.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=14, days=10, attack_days=3, seed=11,
                                scenarios=("brute_force",)))


@pytest.fixture(scope="module")
def model(org):
    return AuditModel(n_estimators=30).fit(org.train_events)


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(size=5000)
    assert population_stability_index(base, rng.normal(size=5000)) < 0.02
    assert population_stability_index(base, rng.normal(loc=1.5, size=5000)) > 0.5
    # weighted distinct values give the same answer as the expanded sample
    values, counts = np.unique(rng.integers(0, 4, 1000), return_counts=True)
    recent = rng.integers(0, 6, 500)
    assert population_stability_index(values, recent, reference_counts=counts) == \
        pytest.approx(population_stability_index(np.repeat(values, counts), recent))
    assert math.isnan(population_stability_index(base, np.array([])))


def test_the_same_organisation_a_few_days_later_is_not_stale(org, model):
    report = drift_report(model, model.score(org.test_events))
    assert not report.stale and report.warning == ""
    assert 2.5 < report.age_days < 3.5
    assert report.training_end is not None and report.training_end < report.scored_start
    assert len(report.features) > 10 and report.features["psi"].notna().any()
    # weekday-dependent features are not judged over three days
    assert any("weekdays" in s for s in report.skipped)


def test_an_old_model_is_stale_and_says_why(org, model):
    later = org.test_events.copy()
    later["timestamp"] = later["timestamp"] + pd.Timedelta(days=91)
    report = drift_report(model, later)  # an events frame is windowed with the model's
    assert report.stale
    assert "days before the scored data" in report.warning
    assert report.warning.startswith("warning: the model looks stale")
    assert "\n" not in report.warning


def test_another_organisation_is_new_entities_and_shifted_features(org, model):
    other = generate(SynthConfig(users=14, days=10, attack_days=3, seed=99, work_start=15.0,
                                 offices=("sg-sin", "au-syd"), scenarios=("brute_force",)))
    report = drift_report(model, model.score(other.test_events), reference=org.train_events)
    assert report.stale
    assert report.new_window_share["user"] > 0.2 and report.new_entities["user"]
    assert len(report.drifted) >= 5
    as_dict = report.to_dict()
    assert as_dict["stale"] and as_dict["reasons"] and as_dict["features"][0]["psi"] > 0.25
    assert "never seen in training" in report.to_text()


def test_drift_needs_a_fitted_model(org):
    from analyzer.errors import ConfigError

    with pytest.raises(ConfigError):
        drift_report(AuditModel(), org.test_events)
