"""The model's scoring maths has one home; the report computes what the model writes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analyzer.report import _normalise_scores
from analyzer.report.viewmodel import threshold_risk
from analyzer.scoring_math import alert_threshold, risk_from_p


def test_risk_is_twenty_points_a_decade_capped_rounded_and_never_negative_zero():
    risk = risk_from_p(np.array([1.0, 0.5, 1e-3, 1e-6, 0.0, 1.5]))
    assert risk.tolist() == [0.0, 6.0, 60.0, 100.0, 100.0, 0.0]
    assert all(math.copysign(1.0, r) == 1.0 for r in risk)  # no -0.0 to show as "-0"
    assert risk_from_p(0.5, decimals=None).item() == -math.log10(0.5) * 20


def test_a_scores_file_without_risk_gets_the_models_risk():
    scores = pd.DataFrame({"entity_type": "user", "entity": ["a", "b", "c"],
                           "window_start": "2026-01-01T00:00:00Z",
                           "window_end": "2026-01-01T01:00:00Z",
                           "score": [0.0, 0.999, np.nan], "alert": [False, True, False]})
    got = _normalise_scores(scores)["risk_score"].tolist()
    assert got == risk_from_p(1.0 - np.array([0.0, 0.999, 0.0])).tolist() == [0.0, 60.0, 0.0]


def test_the_reports_threshold_line_is_the_models_threshold_in_risk_points():
    assert alert_threshold(5, 1000) == 0.005
    assert alert_threshold(50, 10) == 1.0  # a budget above the windows: every window
    assert threshold_risk(1e-3) == 60.0
    assert threshold_risk(1.0) == 0.0 and math.copysign(1.0, threshold_risk(1.0)) == 1.0
    assert threshold_risk(0.0) is None
