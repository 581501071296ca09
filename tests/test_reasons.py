"""Reasons as objects: phrased in English exactly as before, translated from their fields.

``tests/data/reason_goldens.json`` holds the inputs of :func:`analyzer.detector.explain` and
what it said, frozen from the code before reasons became objects (when the report still
parsed the English text back with regular expressions to translate it): windows of the
synthetic organisation, of public logs, and one constructed window per feature and unit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyzer.detector import explain

GOLDENS = json.loads((Path(__file__).parent / "data" / "reason_goldens.json")
                     .read_text(encoding="utf-8"))
CASES = GOLDENS["cases"]


def _inputs(case: dict) -> tuple[pd.DataFrame, np.ndarray, list[str], pd.DataFrame | None]:
    names = GOLDENS["names"][case["names"]]
    row = {name: 0.0 for name in names}
    row.update(case["window"])
    windows = pd.DataFrame([row])
    windows["window_start"] = pd.to_datetime(windows["window_start"], utc=True)
    surprisal = np.array([[case["surprisal"].get(name, 0.0) for name in names]])
    typical = None
    if case["typical"] is not None:
        typical = pd.DataFrame([case["typical"]]) if case["typical"] else \
            pd.DataFrame(index=[0])
    return windows, surprisal, names, typical


def _explain(case: dict) -> str:
    windows, surprisal, names, typical = _inputs(case)
    (text,) = explain(windows, surprisal, names, typical=typical,
                      min_surprisal=case["min_surprisal"])
    return text


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['source']}")
def test_english_reasons_are_unchanged(case):
    assert _explain(case) == case["english"]
