"""The audit model: features, one detector per entity type, calibration and the alert budget.

:class:`AuditModel` is what the command line, the notebooks and :mod:`analyzer.persistence`
work with. ``fit`` learns entity profiles (:class:`~analyzer.features.FeatureExtractor`) and
one :class:`~analyzer.detector.RarityForest` per entity type; ``score`` returns one row per
window in the scores-file layout (DESIGN contract 6).

Calibration: user windows and address windows score on different scales, so each window's
combined score becomes a tail probability ``p`` against its own type's training windows.
One **alert budget** then applies across both: with ``W`` training windows per day, windows
with ``p <= alerts_per_day / W`` are alerts (on a typical day, about ``alerts_per_day`` of
them), and no UTC day gets more than ``alerts_per_day`` alerts (the highest scores win). The
budget can change at score time without refitting.

Columns of :meth:`AuditModel.score`, in order:

- ``entity_type, entity, window_start, window_end, score, alert, reasons`` (contract 6);
  ``score = 1 - p`` is in [0, 1], higher for more unusual windows;
- ``risk_score``: 0-100, ``20 * -log10(p)`` capped (60: one window in 1,000; 100: one in
  100,000 or rarer);
- ``first_sequence, last_sequence``: ``event.sequence`` range of the evidence (when known);
- ``n_events``;
- ``f_<feature>``: the feature values; ``c_<feature>``: each feature's contribution, its
  upper-tail surprisal in nats (``c = 3`` means rarer than 1 window in 20).

>>> from analyzer.synth import SynthConfig, generate
>>> org = generate(SynthConfig(users=10, days=10, attack_days=3, scenarios=("brute_force",)))
>>> model = AuditModel(random_state=0).fit(org.train_events)
>>> scores = model.score(org.test_events)
>>> list(scores.columns[:7])
['entity_type', 'entity', 'window_start', 'window_end', 'score', 'alert', 'reasons']
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

from analyzer.detector import RarityForest, explain
from analyzer.errors import ConfigError, SchemaError
from analyzer.features import (
    ENTITY_TYPES,
    FEATURES,
    FeatureExtractor,
    detector_features,
    feature_names,
)

__all__ = ["DEFAULT_ALERTS_PER_DAY", "SCORE_COLUMNS", "AuditModel"]

#: The default alert budget (alerts per day across users and addresses).
DEFAULT_ALERTS_PER_DAY = 10.0

logger = logging.getLogger(__name__)

#: The first columns of every scores frame, in order (DESIGN contract 6).
SCORE_COLUMNS: tuple[str, ...] = (
    "entity_type", "entity", "window_start", "window_end", "score", "alert", "reasons",
)
_EXTRA_COLUMNS = ("risk_score", "first_sequence", "last_sequence", "n_events")
_RISK_PER_DECADE = 20.0
# Smallest tail probability reported, so that score = 1 - p stays distinguishable from 1.
_MIN_P = 1e-12
# Reasons are written for alerts and for windows this many times over the alert threshold.
_REASON_MARGIN = 5.0
_TYPICAL_FEATURES = tuple(f.name for f in FEATURES if "{typical}" in f.reason)
# Features that say one thing, so the rarity score counts only the largest of them: users
# failed and users new to the address are among the users tried from it. Without this, a
# spray's every hour counted "several accounts" three times and crowded out of the budget
# windows rare in independent ways (a dozen exports at 3 a.m.). The forest sees all three.
_RARITY_GROUPS: tuple[tuple[str, ...], ...] = (
    ("n_users", "n_users_failed", "n_new_users"),
)


class AuditModel:
    """Fit on a history of audit events, then score windows of new events.

    Parameters
    ----------
    window : str, default "1h"
        Window length (a pandas duration); hour windows are aligned to UTC hours.
    step : str or None, default None
        Sliding-window step; ``None`` for tumbling windows.
    alerts_per_day : float, default 10.0
        Alert budget: about this many alerts on a typical day, never more on any day. Ten is
        what one analyst can read with care each day; attacks at normal volume rank within it.
    privileged_actions : sequence of str or None, default None
        Glob patterns of privileged actions (None: the documented defaults).
    n_peers : int, default 5
        Peer-group size for "outside the peers" features.
    burn_in : "auto", float or None, default "auto"
        Share of the training period used only to build profiles, not to fit the detector,
        because at the start of a log everything is new. "auto": a quarter of the period,
        at most 7 days, none under 2 days.
    n_estimators : int, default 100
        Trees per IsolationForest.
    max_alerts_per_day : bool, default True
        Whether the budget also caps every UTC day (otherwise only the threshold applies).
    random_state : int or None, default 0
        Seed of the forests; a fixed seed makes scores reproducible.

    Attributes
    ----------
    extractor_ : FeatureExtractor
    detectors_ : dict of str to RarityForest
        One per entity type seen in training.
    windows_per_day_ : float
        Training windows per day (both types), the base of the alert budget.
    metadata : dict
        Feature names, training period, event and window counts, parameters.
    """

    def __init__(self, *, window: str = "1h", step: str | None = None,
                 alerts_per_day: float = DEFAULT_ALERTS_PER_DAY,
                 privileged_actions: Sequence[str] | None = None,
                 n_peers: int = 5, burn_in: str | float | None = "auto",
                 n_estimators: int = 100, max_alerts_per_day: bool = True,
                 random_state: int | None = 0) -> None:
        self.window = window
        self.step = step
        self.alerts_per_day = alerts_per_day
        self.privileged_actions = privileged_actions
        self.n_peers = n_peers
        self.burn_in = burn_in
        self.n_estimators = n_estimators
        self.max_alerts_per_day = max_alerts_per_day
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "window", "step", "alerts_per_day", "privileged_actions", "n_peers", "burn_in",
            "n_estimators", "max_alerts_per_day", "random_state")}

    def __repr__(self) -> str:
        return "AuditModel(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) \
            + ")"

    # -- fitting ------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> AuditModel:
        """Learn profiles and detectors from ``frame`` (a normalized events frame)."""
        _check_budget(self.alerts_per_day)
        self.extractor_ = FeatureExtractor(window=self.window, step=self.step,
                                           privileged_actions=self.privileged_actions,
                                           n_peers=self.n_peers)
        train = self.extractor_.fit_transform(frame)
        if not len(train):
            raise SchemaError("nothing to train on: the frame has no events with a user or a "
                              "source address")
        start, end = self.extractor_.period_
        cut = self._burn_in_end(start, end)
        use = (train["window_start"] >= cut).to_numpy()
        self.detectors_: dict[str, RarityForest] = {}
        n_fit = 0
        for etype in ENTITY_TYPES:
            of_type = (train["entity_type"] == etype).to_numpy()
            rows = of_type & use
            if rows.sum() < 16:  # too few after burn-in: use all of this type
                rows = of_type
            if not rows.any():
                continue
            names = detector_features(etype)
            weights = [f.rarity for f in FEATURES if f.name in names]
            groups = _rarity_groups(names)
            # features are counts, log-ratios and surprisals: one unit is a meaningful step
            detector = RarityForest(n_estimators=self.n_estimators, rarity_weights=weights,
                                    rarity_groups=groups, min_tail_scale=1.0,
                                    random_state=self.random_state)
            self.detectors_[etype] = detector.fit(train.loc[rows, names])
            n_fit += int(rows.sum())
        fit_start = max(cut, start)
        days = max((end - fit_start) / pd.Timedelta(days=1),
                   self.extractor_.window_ns_ / 86_400e9)
        self.windows_per_day_ = n_fit / days
        self.typical_ = _typical_ranges(train)
        self.metadata = {
            "feature_names": {e: feature_names(e) for e in ENTITY_TYPES},
            "entity_types": list(self.detectors_),
            "training_start": start.isoformat(),
            "training_end": end.isoformat(),
            "burn_in_until": fit_start.isoformat(),
            "n_events": int(self.extractor_.n_events_),
            "n_windows": len(train),
            "n_windows_fitted": n_fit,
            "windows_per_day": self.windows_per_day_,
            "n_entities": {e: len(self.extractor_.vocab_[e]) for e in ENTITY_TYPES},
            "params": self.get_params(),
        }
        logger.info("trained on %d events, %d windows (%d fitted)", self.extractor_.n_events_,
                    len(train), n_fit)
        return self

    def _burn_in_end(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.Timestamp:
        span = end - start
        if self.burn_in is None:
            return start
        if self.burn_in == "auto":
            if span < pd.Timedelta(days=2):
                return start
            return start + min(span / 4, pd.Timedelta(days=7))
        share = float(self.burn_in)
        if not 0 <= share < 1:
            raise ConfigError(f"burn_in must be 'auto', None or a share in [0, 1), got "
                              f"{self.burn_in!r}")
        return start + span * share

    # -- scoring ------------------------------------------------------------------------

    def threshold(self, alerts_per_day: float | None = None) -> float:
        """The tail probability at or below which a window is an alert, for a budget."""
        self._check_fitted()
        budget = self.alerts_per_day if alerts_per_day is None else alerts_per_day
        _check_budget(budget)
        return min(1.0, budget / max(self.windows_per_day_, 1e-9))

    def score(self, frame: pd.DataFrame, *, alerts_per_day: float | None = None
              ) -> pd.DataFrame:
        """Score every window of ``frame``; see the module docstring for the columns.

        Parameters
        ----------
        frame : DataFrame
            A normalized events frame; ``event.kind = alert`` rows are ignored.
        alerts_per_day : float or None
            Alert budget for this call (default: the model's).
        """
        self._check_fitted()
        budget = self.alerts_per_day if alerts_per_day is None else alerts_per_day
        limit = self.threshold(budget)
        windows = self.extractor_.transform(frame)
        n = len(windows)
        all_names = [f.name for f in FEATURES]
        p = np.ones(n)
        contrib = np.zeros((n, len(all_names)))
        col = {name: j for j, name in enumerate(all_names)}
        etypes = windows["entity_type"].astype(str).to_numpy()
        for etype, detector in self.detectors_.items():
            rows = np.flatnonzero(etypes == etype)
            if not len(rows):
                continue
            names = detector_features(etype)
            prob, surprisal = detector.score_and_explain(windows.iloc[rows][names])
            p[rows] = prob
            contrib[np.ix_(rows, [col[x] for x in names])] = surprisal
        p = np.clip(p, _MIN_P, 1.0)
        alert = p <= limit
        if self.max_alerts_per_day and alert.any():
            alert &= _within_daily_cap(windows["window_start"], p, budget)
        reasons = np.full(n, "", dtype=object)
        # windows carrying evidence (a catalogued action, an attack tool) are explained too,
        # alert or not: a risk-20 window that deleted a trail should say so
        evidence = [col[f.name] for f in FEATURES if f.evidence]
        has_evidence = ((windows[[all_names[j] for j in evidence]].to_numpy() > 0)
                        & (contrib[:, evidence] > 0)).any(axis=1)
        explain_rows = np.flatnonzero(alert | (p <= limit * _REASON_MARGIN) | has_evidence)
        if len(explain_rows):
            subset = windows.iloc[explain_rows]
            typical = self._typical_for(subset)
            reasons[explain_rows] = explain(subset, contrib[explain_rows], all_names,
                                            typical=typical)
        out = pd.DataFrame({
            "entity_type": windows["entity_type"],
            "entity": windows["entity"].astype(str),
            "window_start": windows["window_start"],
            "window_end": windows["window_end"],
            "score": 1.0 - p,
            "alert": alert,
            "reasons": reasons.astype(str) if n else pd.Series([], dtype=str),
            "risk_score": np.minimum(100.0, -np.log10(p) * _RISK_PER_DECADE).round(1),
            "first_sequence": windows["first_sequence"],
            "last_sequence": windows["last_sequence"],
            "n_events": windows["n_events"].astype("int64"),
        })
        features = pd.DataFrame(windows[all_names].to_numpy(), columns=[
            "f_" + x for x in all_names])
        contributions = pd.DataFrame(contrib.round(4), columns=["c_" + x for x in all_names])
        out = pd.concat([out.reset_index(drop=True), features, contributions], axis=1)
        out = out.sort_values(["window_start", "entity_type", "entity"], kind="stable")
        return out.reset_index(drop=True)

    def _typical_for(self, windows: pd.DataFrame) -> pd.DataFrame:
        keys = pd.MultiIndex.from_arrays([windows["entity_type"].astype(str),
                                          windows["entity"].astype(str)])
        return self.typical_.reindex(keys).reset_index(drop=True)

    def _check_fitted(self) -> None:
        if not hasattr(self, "detectors_"):
            raise NotFittedError("this AuditModel is not fitted yet; call fit first")

    @property
    def feature_names_(self) -> dict[str, list[str]]:
        """Feature names per entity type."""
        return {e: feature_names(e) for e in ENTITY_TYPES}


def _check_budget(value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0 \
            or math.isinf(value):
        raise ConfigError(f"alerts_per_day must be a positive number, got {value!r}")


def _rarity_groups(names: Sequence[str]) -> list[int]:
    """A group label per feature name: dependent features share their group's label."""
    label = {name: j for j, name in enumerate(names)}
    for group in _RARITY_GROUPS:
        present = [name for name in group if name in label]
        for name in present:
            label[name] = label[present[0]]
    return [label[name] for name in names]


def _within_daily_cap(starts: pd.Series, p: np.ndarray, budget: float) -> np.ndarray:
    """True for windows among the ``budget`` most unusual of their UTC day."""
    cap = max(1, math.ceil(budget))
    day = pd.to_datetime(starts, utc=True).dt.floor("D").to_numpy()
    frame = pd.DataFrame({"day": day, "p": p})
    rank = frame.groupby("day", sort=False)["p"].rank(method="first").to_numpy()
    return rank <= cap


def _typical_ranges(train: pd.DataFrame) -> pd.DataFrame:
    """Per entity, the 10th-90th percentile of each count-like feature over its windows."""
    keys = [train["entity_type"].astype(str), train["entity"].astype(str)]
    grouped = train[list(_TYPICAL_FEATURES)].groupby(keys, sort=True)
    lo = grouped.quantile(0.1).add_suffix("_lo")
    hi = grouped.quantile(0.9).add_suffix("_hi")
    out = pd.concat([lo, hi], axis=1)
    out.index = out.index.set_names(["entity_type", "entity"])
    return out
