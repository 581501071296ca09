"""The audit model: features, one detector per entity type, calibration and the alert budget.

:class:`AuditModel` is what the command line, the notebooks and :mod:`analyzer.persistence`
work with. ``fit`` learns entity profiles (:class:`~analyzer.features.FeatureExtractor`) and
one :class:`~analyzer.detector.RarityForest` per entity type; ``score`` returns one row per
window in the scores-file layout (DESIGN contract 6).

Calibration: user windows and address windows score on different scales, so each window's
combined score becomes a tail probability ``p`` against its own type's training windows.
Windows of equal ``p`` are ordered by the detector's underlying rarity, never by input order.

Alerts (defaults documented in the README's analysis section):

- a window is a candidate when ``p <= alerts_per_day / W`` (``W``: training windows per
  *active* day) and its risk is at least ``min_risk`` (default 20; a log too short to reach
  it uses half the risk its rarest window could have);
- candidates form **incidents**: one entity's windows at most one window apart, address
  windows of the same hour with the same rarest feature (a campaign), the windows of a
  failure storm (the addresses failing in it and the accounts entered during it), and a
  candidate address with the windows of the few accounts it failed against in that hour
  (a brute force and its victim; the victim's window alerts only if a candidate itself);
- the budget counts incidents: at most ``alerts_per_day`` per UTC day, each incident's rarest
  window first; and at most ``max_alert_share`` (default 2%) of the scored windows alert.

A log larger than memory is given as chunks of events: :meth:`AuditModel.fit_chunks`,
:meth:`AuditModel.score_chunks` and :meth:`AuditModel.fit_score_chunks` hold one chunk at a
time (:mod:`analyzer.streaming`) and give the same model, scores and alerts as the methods
on the whole frame.

:meth:`AuditModel.fit_score` scores a log against itself prequentially: history features come
only from earlier events, the first window (or the burn-in) is a warm-up that counts nothing
as new, "typical" ranges come from the entity's earlier windows only, and time-of-day
(weekday) features wait for 3 (7) days of the organisation's history.

Columns of :meth:`AuditModel.score`, in order:

- ``entity_type, entity, window_start, window_end, score, alert, reasons`` (contract 6);
  ``score = 1 - p`` is in [0, 1], higher for more unusual windows;
- ``incident``: the incident id of alert windows ("" for others);
- ``candidate_incident``: the incident of every candidate window, alert or not (windows of
  an alerted incident past the window cap, near misses, a brute force's victim windows;
  "" for the others): what
  :func:`~analyzer.evaluation.evaluate` counts its budget in;
- ``risk_score``: 0-100, ``20 * -log10(p)`` capped (60: one window in 1,000; 100: one in
  100,000 or rarer), never ``-0.0``;
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

import hashlib
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
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
from analyzer.scoring_math import MIN_P, RISK_PER_DECADE, alert_threshold, risk_from_p

__all__ = ["DEFAULT_ALERTS_PER_DAY", "DEFAULT_MAX_ALERT_SHARE", "DEFAULT_MIN_RISK",
           "SCORE_COLUMNS", "AuditModel", "risk_from_p"]

#: The default alert budget (incidents per active day across users and addresses).
DEFAULT_ALERTS_PER_DAY = 10.0
#: At most this share of the scored windows are alerts, whatever the daily budget says.
DEFAULT_MAX_ALERT_SHARE = 0.02
#: No alert below this risk (20: a window rarer than one in ten of its kind).
DEFAULT_MIN_RISK = 20.0

logger = logging.getLogger(__name__)

#: How :meth:`AuditModel.fit_table` fits its detectors: ``(detector, rows)`` pairs in, the
#: fitted detectors out, in the same order.
FitAll = Callable[[Iterable[tuple[RarityForest, pd.DataFrame]]], list[RarityForest]]

#: The first columns of every scores frame, in order (DESIGN contract 6).
SCORE_COLUMNS: tuple[str, ...] = (
    "entity_type", "entity", "window_start", "window_end", "score", "alert", "reasons",
)
_EXTRA_COLUMNS = ("risk_score", "first_sequence", "last_sequence", "n_events")
# Smallest tail probability reported, so that score = 1 - p stays distinguishable from 1.
# Reasons are written for alerts and for windows this many times over the alert threshold.
_REASON_MARGIN = 5.0
# An entity type with fewer entities than this is calibrated against all windows.
_FEW_ENTITIES = 3
# A feature rarer than 1 window in 20 is a reason (see analyzer.detector.explain).
_REASON_SURPRISAL = math.log(20.0)
_TYPICAL_FEATURES = tuple(f.name for f in FEATURES if "{typical}" in f.reason)
# Features that compare a window with the past: zero in the warm-up of a log.
_HISTORY_FEATURES = tuple(f.name for f in FEATURES if f.family == "novelty"
                          or f.name == "new_privileged_events")
# Features that say one thing, so the rarity score counts only the largest of them: users
# failed and users new to the address are among the users tried from it. Without this, a
# spray's every hour counted "several accounts" three times and crowded out of the budget
# windows rare in independent ways (a dozen exports at 3 a.m.). The forest sees all three.
# Evidence (a catalogued attack action, an injection) is absent from ordinary windows: each
# evidence feature's tail counts this many pseudo-windows without it, so that on a log of a
# handful of windows evidence is still rarer than 1 in 20 (the reason threshold), while on a
# log of thousands of windows the data decide.
_EVIDENCE_PRIOR = 20
_RARITY_GROUPS: tuple[tuple[str, ...], ...] = (
    ("n_users", "n_users_failed", "n_new_users"),
    # a dormant account's first new thing comes after as many stable days as it slept, and
    # a long weekend lengthens both: they are one story, counted once
    ("days_dormant", "stable_days_before_novelty"),
)


class AuditModel(BaseEstimator):
    """Fit on a history of audit events, then score windows of new events.

    Parameters
    ----------
    window : str, default "1h"
        Window length (a pandas duration); hour windows are aligned to UTC hours.
    step : str or None, default None
        Sliding-window step; ``None`` for tumbling windows.
    alerts_per_day : float, default 10.0
        Alert budget: about this many incidents on a typical active day, never more on any
        day. Ten is what one analyst can read with care each day; attacks at normal volume
        rank within it.
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
    max_alert_share : float, default 0.02
        At most this share of the scored windows alert (at least one).
    min_risk : float, default 20.0
        No alert below this risk (20: rarer than one window in ten of its kind).
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
                 max_alert_share: float = DEFAULT_MAX_ALERT_SHARE,
                 min_risk: float = DEFAULT_MIN_RISK,
                 random_state: int | None = 0) -> None:
        self.window = window
        self.step = step
        self.alerts_per_day = alerts_per_day
        self.privileged_actions = privileged_actions
        self.n_peers = n_peers
        self.burn_in = burn_in
        self.n_estimators = n_estimators
        self.max_alerts_per_day = max_alerts_per_day
        self.max_alert_share = max_alert_share
        self.min_risk = min_risk
        self.random_state = random_state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # models saved before the share cap and the minimum risk existed get the defaults
        state.setdefault("max_alert_share", DEFAULT_MAX_ALERT_SHARE)
        state.setdefault("min_risk", DEFAULT_MIN_RISK)
        self.__dict__.update(state)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "window", "step", "alerts_per_day", "privileged_actions", "n_peers", "burn_in",
            "n_estimators", "max_alerts_per_day", "max_alert_share", "min_risk",
            "random_state")}

    def __repr__(self) -> str:
        return "AuditModel(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) \
            + ")"

    # -- fitting ------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> AuditModel:
        """Learn profiles and detectors from ``frame`` (a normalized events frame)."""
        self._fit_windows(frame, details=False)
        return self

    def fit_score(self, frame: pd.DataFrame, *, alerts_per_day: float | None = None
                  ) -> pd.DataFrame:
        """Fit on ``frame`` and score it against itself, prequentially.

        Each window is compared only with what came before it (as in training, "as seen so
        far"): a new address is new in the window where it first appears, a reason's
        "typical" range comes from the entity's earlier windows, never the window itself,
        and windows in the warm-up (``metadata["warm_up_until"]``) count no novelty, because
        at the start of a log everything is new. Returns the columns of :meth:`score`.
        """
        windows = self._fit_windows(frame, details=True)
        budget = self.alerts_per_day if alerts_per_day is None else alerts_per_day
        return self._score_windows(windows, budget, _past_typical)

    def fit_chunks(self, chunks: Iterable[pd.DataFrame], *,
                   spill_dir: str | os.PathLike[str] | None = None,
                   progress: Callable[[int, float], None] | None = None) -> AuditModel:
        """:meth:`fit` on a log given as time-ordered chunks of events, holding one chunk at a
        time (see :mod:`analyzer.streaming`, which tells ``progress`` the windows computed);
        the same model as :meth:`fit` on their concatenation."""
        from analyzer.streaming import stream_windows

        extractor = self.new_extractor()
        self.fit_table(stream_windows(extractor, chunks, fitting=True, details=False,
                                       spill_dir=spill_dir, progress=progress))
        return self

    def fit_score_chunks(self, chunks: Iterable[pd.DataFrame], *,
                         alerts_per_day: float | None = None,
                         spill_dir: str | os.PathLike[str] | None = None,
                         progress: Callable[[int, float], None] | None = None
                         ) -> pd.DataFrame:
        """:meth:`fit_score` on a log given as time-ordered chunks of events."""
        from analyzer.streaming import stream_windows

        extractor = self.new_extractor()
        windows = self.fit_table(stream_windows(extractor, chunks, fitting=True,
                                                 details=True, spill_dir=spill_dir,
                                                 progress=progress))
        budget = self.alerts_per_day if alerts_per_day is None else alerts_per_day
        return self._score_windows(windows, budget, _past_typical)

    def score_chunks(self, chunks: Iterable[pd.DataFrame], *,
                     alerts_per_day: float | None = None,
                     spill_dir: str | os.PathLike[str] | None = None,
                     progress: Callable[[int, float], None] | None = None) -> pd.DataFrame:
        """:meth:`score` of a log given as time-ordered chunks of events."""
        from analyzer.streaming import stream_windows

        self._check_fitted()
        windows = stream_windows(self.extractor_, chunks, fitting=False, details=True,
                                 spill_dir=spill_dir, progress=progress)
        return self.score_table(windows, alerts_per_day=alerts_per_day)

    def score_table(self, windows: pd.DataFrame, *, alerts_per_day: float | None = None,
                    rarity: tuple[np.ndarray, ...] | None = None) -> pd.DataFrame:
        """:meth:`score` of a window table (``extractor_.transform``'s, or built in chunks);
        ``rarity``: :meth:`window_rarity` of it when computed elsewhere (in parts, by the
        Dask engine's workers)."""
        self._check_fitted()
        budget = self.alerts_per_day if alerts_per_day is None else alerts_per_day
        return self._score_windows(windows, budget, self._typical_rows, rarity)

    def new_extractor(self) -> FeatureExtractor:
        """The (unfitted) feature extractor this model fits, set as ``extractor_``; with
        :meth:`fit_table` and :meth:`score_table`, how another engine (a Dask cluster) fits
        and scores from window tables it computed itself."""
        _check_budget(self.alerts_per_day)
        _check_share(self.max_alert_share)
        self.extractor_ = FeatureExtractor(window=self.window, step=self.step,
                                           privileged_actions=self.privileged_actions,
                                           n_peers=self.n_peers)
        return self.extractor_

    def _fit_windows(self, frame: pd.DataFrame, *, details: bool) -> pd.DataFrame:
        train = self.new_extractor().fit_transform(frame, details=details)
        return self.fit_table(train)

    def fit_table(self, train: pd.DataFrame, *, fit_all: FitAll | None = None
                  ) -> pd.DataFrame:
        """Detectors, calibration and metadata from the training windows (the extractor is
        fitted); returns the windows with the warm-up's history features zeroed.
        ``fit_all(jobs)`` fits the ``(detector, rows)`` pairs (one per entity type, each
        independent of the others) and returns the fitted detectors in order; the default
        fits them here, one after the other (the Dask engine fits them on its workers)."""
        if not len(train):
            raise SchemaError("nothing to train on: the frame has no events with a user or a "
                              "source address")
        start, end = self.extractor_.period_
        cut = self._warm_up_end(start, end)
        warm = (train["window_start"] < cut).to_numpy()
        # at the start of a log everything is new: no "first time" counts in the warm-up
        train.loc[warm, list(_HISTORY_FEATURES)] = 0.0
        n_fit, days = self._fit_detectors(train, ~warm, fit_all or _fit_each)
        self.windows_per_day_ = n_fit / days
        self.typical_ = _typical_ranges(train)
        self.metadata = {
            "feature_names": {e: feature_names(e) for e in ENTITY_TYPES},
            "entity_types": list(self.detectors_),
            "training_start": start.isoformat(),
            "training_end": end.isoformat(),
            "burn_in_until": max(cut, start).isoformat(),
            "warm_up_until": max(cut, start).isoformat(),
            "n_events": int(self.extractor_.n_events_),
            "n_windows": len(train),
            "n_windows_fitted": n_fit,
            "n_windows_warm_up": int(warm.sum()),
            "windows_per_day": self.windows_per_day_,
            "n_entities": {e: len(self.extractor_.vocab_[e]) for e in ENTITY_TYPES},
            "params": self.get_params(),
        }
        logger.info("trained on %d events, %d windows (%d fitted)", self.extractor_.n_events_,
                    len(train), n_fit)
        return train

    def _fit_detectors(self, train: pd.DataFrame, use: np.ndarray, fit_all: FitAll
                       ) -> tuple[int, float]:
        """One detector per entity type; returns windows fitted and their active days."""
        specs: list[tuple[str, RarityForest, np.ndarray, list[str]]] = []
        fitted = np.zeros(len(train), dtype=bool)
        etypes = train["entity_type"].astype(str).to_numpy()
        entities = train["entity"].astype(str).to_numpy()
        for etype in ENTITY_TYPES:
            own = of_type = etypes == etype
            if not of_type.any():
                continue
            if len(np.unique(entities[own])) < _FEW_ENTITIES:
                # a population of one compared only with itself finds nothing: its windows
                # are calibrated against every window of the organisation instead
                of_type = np.ones(len(train), dtype=bool)
            rows = of_type & use
            if rows.sum() < 16:  # too few after the warm-up: use all of this type
                rows = of_type
            names = detector_features(etype)
            weights = [f.rarity for f in FEATURES if f.name in names]
            groups = _rarity_groups(names)
            prior = [_EVIDENCE_PRIOR if f.evidence else 0 for f in FEATURES if f.name in names]
            # features are counts, log-ratios and surprisals: one unit is a meaningful step
            detector = RarityForest(n_estimators=self.n_estimators, rarity_weights=weights,
                                    rarity_groups=groups, prior_zeros=prior,
                                    min_tail_scale=1.0,
                                    random_state=self.random_state)
            specs.append((etype, detector, rows, names))
            fitted |= rows & own
        # each type's rows are copied when fit_all takes them (here: one copy at a time)
        done = fit_all((detector, train.loc[rows, names]) for _, detector, rows, names in specs)
        self.detectors_: dict[str, RarityForest] = dict(
            zip((spec[0] for spec in specs), done, strict=True))
        # the budget is per active day: a sparse or multi-year log has few of them
        days = pd.to_datetime(train.loc[fitted, "window_start"], utc=True).dt.floor("D")
        return int(fitted.sum()), float(max(days.nunique(), 1))

    def _warm_up_end(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.Timestamp:
        """The burn-in, and at least the log's first window."""
        first = start.floor(pd.Timedelta(self.window)) + pd.Timedelta(self.window)
        return max(self._burn_in_end(start, end), first)

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
        return alert_threshold(budget, self.windows_per_day_)

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
        return self.score_table(self.extractor_.transform(frame), alerts_per_day=budget)

    def window_rarity(self, windows: pd.DataFrame) -> tuple[np.ndarray, ...]:
        """Each window's detector output: tail probability, combined rarity, minimum risk
        and per-feature contributions (one row each, independent of the other rows, so a
        table may be scored in parts: the Dask engine maps this over its workers)."""
        n = len(windows)
        all_names = [f.name for f in FEATURES]
        p = np.ones(n)
        min_risk = np.full(n, float(self.min_risk))
        rarity = np.zeros(n)
        contrib = np.zeros((n, len(all_names)))
        col = {name: j for j, name in enumerate(all_names)}
        etypes = windows["entity_type"].astype(str).to_numpy()
        for etype, detector in self.detectors_.items():
            rows = np.flatnonzero(etypes == etype)
            if not len(rows):
                continue
            names = detector_features(etype)
            prob, surprisal, combined = detector.score_details(windows[names].iloc[rows])
            p[rows] = prob
            rarity[rows] = combined
            min_risk[rows] = _min_risk_for(self.min_risk, detector.score_tail_.n)
            contrib[np.ix_(rows, [col[x] for x in names])] = surprisal
        return p, rarity, min_risk, contrib

    def _score_windows(self, windows: pd.DataFrame, budget: float, typical_of: Any,
                       rarity_of: tuple[np.ndarray, ...] | None = None) -> pd.DataFrame:
        limit = self.threshold(budget)
        n = len(windows)
        all_names = [f.name for f in FEATURES]
        col = {name: j for j, name in enumerate(all_names)}
        etypes = windows["entity_type"].astype(str).to_numpy()
        p, rarity, min_risk, contrib = rarity_of or self.window_rarity(windows)
        p = _break_ties(np.clip(p, MIN_P, 1.0), rarity, contrib.sum(axis=1))
        risk = risk_from_p(p)
        candidate = (p <= limit) & (risk >= min_risk)
        lead = np.where(contrib.max(axis=1) > 0, contrib.argmax(axis=1), -1)
        incident = _incidents(windows, candidate, lead, self.extractor_.window_ns_)
        # an attacked account's window is in its attacker's incident, but alerts only when
        # it is a candidate itself (never below the minimum risk)
        alert = _within_budget(windows["window_start"], p, np.where(candidate, incident, ""),
                               budget=budget,
                               daily=self.max_alerts_per_day,
                               max_windows=max(1, int(self.max_alert_share * n)))
        candidate_incident, incident = incident, np.where(alert, incident, "")
        reasons = np.full(n, "", dtype=object)
        # windows carrying evidence (a catalogued action, an attack tool) are explained too,
        # alert or not: a risk-20 window that deleted a trail should say so
        evidence = [col[f.name] for f in FEATURES if f.evidence]
        has_evidence = ((windows[[all_names[j] for j in evidence]].to_numpy() > 0)
                        & (contrib[:, evidence] > 0)).any(axis=1)
        explain_rows = np.flatnonzero(alert | (candidate & (p <= limit * _REASON_MARGIN))
                                      | has_evidence)
        for etype, detector in self.detectors_.items():
            rows = explain_rows[etypes[explain_rows] == etype]
            if not len(rows):
                continue
            # a short log cannot hold a window rarer than 1 in 20: its rarest features are
            # still the reasons, not "an unusual combination"
            floor = min(_REASON_SURPRISAL, math.log((detector.score_tail_.n + 1) / 2.0))
            reasons[rows] = explain(windows.iloc[rows], contrib[rows], all_names,
                                    typical=typical_of(windows, rows),
                                    min_surprisal=max(floor, 0.5))
        out = pd.DataFrame({
            "entity_type": windows["entity_type"],
            "entity": windows["entity"].astype(str),
            "window_start": windows["window_start"],
            "window_end": windows["window_end"],
            "score": 1.0 - p,
            "alert": alert,
            # object, not str: a cell is a ReasonText carrying its Reason objects
            "reasons": pd.Series(reasons, index=windows.index, dtype=object) if n
            else pd.Series([], dtype=str),
            "incident": incident.astype(str) if n else pd.Series([], dtype=str),
            "candidate_incident": candidate_incident.astype(str) if n
            else pd.Series([], dtype=str),
            "risk_score": risk,
            "first_sequence": windows["first_sequence"],
            "last_sequence": windows["last_sequence"],
            "n_events": windows["n_events"].astype("int64"),
        })
        # rows in the file's order, taken once: sorting the joined frame instead would copy
        # the features and contributions twice more (memory of a large table, issue 17)
        out = out.reset_index(drop=True)
        keys = ["window_start", "entity_type", "entity"]
        order = out[keys].sort_values(keys, kind="stable").index.to_numpy()
        block = _ordered_block(contrib.T, order)
        del contrib  # (the caller's, when given: then it stays)
        contributions = pd.DataFrame(np.round(block, 4, out=block).T,
                                     columns=["c_" + x for x in all_names], copy=False)
        if all(windows[x].dtype == np.float64 for x in all_names):
            features = pd.DataFrame(_ordered_block([windows[x].to_numpy() for x in all_names],
                                                   order).T,
                                    columns=["f_" + x for x in all_names], copy=False)
        else:  # a common dtype other than float64: as pandas interleaves it
            features = pd.DataFrame(windows[all_names].to_numpy()[order],
                                    columns=["f_" + x for x in all_names])
        return pd.concat([out.take(order).reset_index(drop=True), features, contributions],
                         axis=1)

    def _typical_rows(self, windows: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
        return self._typical_for(windows.iloc[rows])

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


def _fit_each(jobs: Iterable[tuple[RarityForest, pd.DataFrame]]) -> list[RarityForest]:
    """Fit each detector on its rows, here (:meth:`AuditModel.fit_table`'s default)."""
    return [detector.fit(rows) for detector, rows in jobs]


def _ordered_block(columns: Iterable[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Float columns as one (column, row) array, rows taken in ``order``: the layout of a
    frame's block, so ``pd.DataFrame(block.T, copy=False)`` holds it without a copy."""
    arrays = list(columns)
    block = np.empty((len(arrays), len(order)))
    for j, values in enumerate(arrays):
        block[j] = values[order]
    return block


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


def _check_share(value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise ConfigError(f"max_alert_share must be a share in (0, 1], got {value!r}")


def _min_risk_for(min_risk: float, n: int) -> float:
    """The minimum risk for windows calibrated on ``n`` windows.

    Among ``n`` windows the rarest has a tail probability of about ``2 / (n + 1)``, so a log
    of a few dozen windows cannot reach risk 20 at all; there the floor is half the risk its
    rarest window could have, which still keeps the bottom of the log from alerting.

    >>> _min_risk_for(20.0, 10_000), _min_risk_for(60.0, 10_000), _min_risk_for(20.0, 16)
    (20.0, 60.0, 9.3)
    """
    reachable = RISK_PER_DECADE * math.log10(max(n + 1, 2) / 2.0)
    return float(min_risk) if reachable >= min_risk else round(reachable / 2.0, 1)


def _break_ties(p: np.ndarray, rarity: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``p`` nudged so that windows of equal probability are ordered by their rarity.

    Windows with the same calibrated probability (saturated past the training maximum, or
    equal by construction) are ordered by the detector's combined score, then by the sum of
    their feature surprisals, never by input order. Each nudge is smaller than the gap to the
    next distinct probability, so no window passes one that was rarer.
    """
    n = len(p)
    if n < 2:
        return p
    s = -np.log(p)
    order = np.lexsort((-total, -rarity, -s))  # most unusual first
    ss, rr, tt = s[order], rarity[order], total[order]
    new_level = np.r_[True, ss[1:] != ss[:-1]]
    level = np.cumsum(new_level) - 1
    distinct = np.r_[True, new_level[1:] | (rr[1:] != rr[:-1]) | (tt[1:] != tt[:-1])]
    dense = np.cumsum(distinct)
    first = np.flatnonzero(new_level)
    rank_in_level = dense - dense[first][level]
    n_distinct = np.bincount(level, distinct & ~new_level)[level] + 1
    level_s = ss[first]
    gap = np.r_[np.inf, level_s[:-1] - level_s[1:]][level]  # to the rarer level above
    step = np.minimum(1e-3, gap / (2.0 * n_distinct))
    bumped = ss + np.where(ss > 0, (n_distinct - 1 - rank_in_level) * step, 0.0)
    out = np.empty(n)
    out[order] = np.exp(-bumped)
    return out


def _incidents(windows: pd.DataFrame, candidate: np.ndarray, lead: np.ndarray,
               window_ns: int) -> np.ndarray:
    """An incident id per candidate window and per window a candidate address attacked
    ("" for the others).

    Windows of one entity at most one window apart are one incident; address windows at
    the same time whose rarest feature is the same (a campaign's many addresses) are one;
    an address and the accounts it failed against in the window are one
    (:func:`_victim_links`).
    """
    out = np.full(len(windows), "", dtype=object)
    links = _victim_links(windows, candidate)
    members = candidate.copy()
    members[[j for _, j in links]] = True
    rows = np.flatnonzero(members)
    if not len(rows):
        return out
    at = np.full(len(windows), -1)
    at[rows] = np.arange(len(rows))
    etype = windows["entity_type"].astype(str).to_numpy()[rows]
    entity = windows["entity"].astype(str).to_numpy()[rows]
    start = pd.DatetimeIndex(windows["window_start"]).as_unit("ns").asi8[rows]
    end = pd.DatetimeIndex(windows["window_end"]).as_unit("ns").asi8[rows]
    parent = np.arange(len(rows))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[root(i)] = root(j)

    # one pass per candidate (alerts and near misses), never per event
    order = np.lexsort((start, entity, etype))
    for a, b in itertools.pairwise(order):
        if etype[a] == etype[b] and entity[a] == entity[b] and start[b] - end[a] <= window_ns:
            join(a, b)
    campaign: dict[tuple[int, int], int] = {}
    for i in np.flatnonzero(etype == "source_ip"):
        key = (int(start[i]), int(lead[rows[i]]))
        if key[1] >= 0:
            join(i, campaign.setdefault(key, i))
    for i, j in links:
        join(int(at[i]), int(at[j]))
    storm = np.flatnonzero(_in_storm(windows)[rows])
    if len(storm):
        # a failure storm is one campaign: every address that failed in it, every account
        # it got into, across the consecutive windows it lasted
        by_start = storm[np.argsort(start[storm], kind="stable")]
        for a, b in itertools.pairwise(by_start):
            if start[b] - start[a] <= window_ns:
                join(b, a)
    roots = np.array([root(i) for i in range(len(rows))])
    ids: dict[int, str] = {}
    for i in np.lexsort((entity, start)):  # the incident is named by its first window
        r = int(roots[i])
        if r not in ids:
            key = f"{etype[i]}\x1f{entity[i]}\x1f{start[i]}".encode()
            ids[r] = "inc-" + hashlib.sha256(key).hexdigest()[:12]
    out[rows] = [ids[int(r)] for r in roots]
    return out


def _victim_links(windows: pd.DataFrame, candidate: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (address candidate, user window) of one attack: in the same window the address
    failed against the account, which it had never been seen with before. A brute force is
    one incident to an analyst, the address and the account it hammered, whether or not the
    account's window is rare on its own (thirty failures are rarer for a new address than
    for a person who mistypes now and then).

    Only addresses that failed against a few accounts (``d_new_failed_users`` names them
    all) and are not in a failure storm: a spray's or a storm's targets are its victims, and their
    other windows must not chain into it. Positions are rows of ``windows``.
    """
    if "d_new_failed_users" not in windows.columns:  # scored without details
        return []
    etype = windows["entity_type"].astype(str).to_numpy()
    named = windows["d_new_failed_users"].astype(str).to_numpy()
    start = pd.DatetimeIndex(windows["window_start"]).as_unit("ns").asi8
    entity = windows["entity"].astype(str).to_numpy()
    attackers = np.flatnonzero(candidate & (etype == "source_ip") & ~_in_storm(windows)
                               & (named != ""))
    if not len(attackers):
        return []
    users = {(entity[j], int(start[j])): int(j) for j in np.flatnonzero(etype == "user")}
    links = []
    for i in attackers:  # one pass per candidate address, never per event
        if named[i].endswith(" more"):
            continue
        for user in named[i].split(", "):
            j = users.get((user, int(start[i])))
            if j is not None:
                links.append((int(i), j))
    return links


def _in_storm(windows: pd.DataFrame) -> np.ndarray:
    """Windows taking part in a failure storm: addresses failing in it, and any window that
    got in from a never-seen address during it (the accounts it targeted are its victims,
    not its members: their other windows must not chain into it)."""
    def column(name: str) -> np.ndarray:
        if name not in windows.columns:  # a model saved before storms were features
            return np.zeros(len(windows))
        return windows[name].to_numpy(dtype=float)

    address = (windows["entity_type"].astype(str) == "source_ip").to_numpy()
    return (column("storm_addresses") > 0) & (
        (address & (column("n_failures") > 0)) | (column("storm_new_source_success") > 0))


def _within_budget(starts: pd.Series, p: np.ndarray, incident: np.ndarray, *, budget: float,
                   daily: bool, max_windows: int) -> np.ndarray:
    """Which candidate windows alert: the budget counts incidents, the share cap windows.

    Incidents are taken most unusual first (by their rarest window), at most ``budget`` of
    them per UTC day (the day of their rarest window); each gets its rarest window before
    any incident gets a second one, so one loud incident does not crowd out the others.
    """
    alert = np.zeros(len(p), dtype=bool)
    rows = np.flatnonzero(incident != "")
    if not len(rows):
        return alert
    rows = rows[np.argsort(p[rows], kind="stable")]
    # as datetime64, not an object array of Timestamps (seconds on a large table)
    day = pd.to_datetime(starts, utc=True).dt.floor("D").to_numpy(dtype="datetime64[ns]")
    cap = max(1, math.ceil(budget))
    kept: dict[str, int] = {}
    per_day: dict[Any, int] = {}
    for i in rows:  # the first row of each incident is its rarest window
        inc = incident[i]
        if inc in kept:
            continue
        if daily and per_day.get(day[i], 0) >= cap:
            kept[inc] = -1
            continue
        per_day[day[i]] = per_day.get(day[i], 0) + 1
        kept[inc] = int(i)
    leads = [i for i in kept.values() if i >= 0][:max_windows]
    alert[leads] = True
    room = max_windows - len(leads)
    for i in rows:
        if room <= 0:
            break
        if not alert[i] and kept.get(incident[i], -1) >= 0:
            alert[i] = True
            room -= 1
    return alert


def _past_typical(windows: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """For each row, its entity's typical range over earlier windows only (never itself)."""
    names = list(_TYPICAL_FEATURES)
    values = windows[names].to_numpy(dtype=float)
    start = pd.to_datetime(windows["window_start"], utc=True).to_numpy()
    groups = windows.groupby([windows["entity_type"].astype(str),
                              windows["entity"].astype(str)], sort=False).indices
    etype = windows["entity_type"].astype(str).to_numpy()
    entity = windows["entity"].astype(str).to_numpy()
    lo = np.full((len(rows), len(names)), np.nan)
    hi = np.full((len(rows), len(names)), np.nan)
    for k, i in enumerate(rows):  # one pass per explained window
        pos = groups[(etype[i], entity[i])]
        earlier = pos[start[pos] < start[i]]
        if len(earlier):
            lo[k] = np.quantile(values[earlier], 0.1, axis=0)
            hi[k] = np.quantile(values[earlier], 0.9, axis=0)
    return pd.DataFrame(np.hstack([lo, hi]),
                        columns=[f"{x}_lo" for x in names] + [f"{x}_hi" for x in names])


def _typical_ranges(train: pd.DataFrame) -> pd.DataFrame:
    """Per entity, the 10th-90th percentile of each count-like feature over its windows."""
    keys = [train["entity_type"].astype(str), train["entity"].astype(str)]
    grouped = train[list(_TYPICAL_FEATURES)].groupby(keys, sort=True)
    lo = grouped.quantile(0.1).add_suffix("_lo")
    hi = grouped.quantile(0.9).add_suffix("_hi")
    out = pd.concat([lo, hi], axis=1)
    out.index = out.index.set_names(["entity_type", "entity"])
    return out
