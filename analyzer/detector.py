"""The detector: an IsolationForest over per-feature rarity, with a rarity score beside it.

Raw counts mislead an IsolationForest: its splits are drawn uniformly between a feature's
minimum and maximum, so heavy tails and many weak features drown a window that is extreme in
one dimension only. :class:`RarityForest` therefore

1. turns every feature into its upper-tail surprisal learned at fit, ``-log P(X >= x)`` over
   the training windows (the idea behind ECOD and HBOS), extended smoothly past the training
   maximum, so all features speak one language: "how rare";
2. fits an :class:`~sklearn.ensemble.IsolationForest` on those surprisals (it finds unusual
   combinations);
3. keeps a per-feature rarity score beside it (the largest few surprisals), which catches the
   one-dimensional cases and explains itself;
4. combines the two by rank: each becomes a tail surprisal of its own training distribution,
   and the score is their sum.

It honours the scikit-learn contract: parameters in ``__init__``, learned attributes ending in
``_``, ``fit`` returns ``self``, ``score_samples`` is lower for more abnormal samples,
``decision_function`` is negative for outliers at the learned ``offset_``.

:func:`explain` turns per-feature surprisals into reasons a person can read
(:class:`analyzer.reasons.Reason` objects, phrased when shown).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.poisson(2.0, size=(500, 3)).astype(float)
>>> det = RarityForest(random_state=0).fit(X)
>>> bool(det.score_samples([[30.0, 2.0, 2.0]])[0] < det.score_samples([[2.0, 2.0, 2.0]])[0])
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.ensemble import IsolationForest
from sklearn.utils.validation import check_is_fitted, validate_data

from analyzer.features import FEATURES, describe_hour
from analyzer.reasons import Reason, ReasonText, format_bytes

__all__ = ["RarityForest", "TailTable", "explain", "format_bytes"]

# Past the training maximum, surprisal keeps growing, but by at most this much, so one absurd
# value cannot outweigh everything else.
_EXTENSION_CAP = 10.0


class TailTable:
    """Upper-tail surprisal of a one-dimensional training sample.

    ``surprisal(x) = -log((#{train >= x} + 1) / (n + 1))``: 0 at or below the minimum,
    ``log(n + 1)`` just past the maximum, and beyond it growing linearly with the distance
    measured in the sample's own tail scale (an exponential tail), capped.

    >>> table = TailTable([0, 0, 0, 1, 2])
    >>> [round(float(s), 2) for s in table.surprisal(np.array([0.0, 2.0, 3.0]))]
    [0.0, 1.1, 2.79]
    """

    __slots__ = ("at_least", "n", "scale", "values")

    def __init__(self, sample: Sequence[float] | np.ndarray, *, min_scale: float = 0.0) -> None:
        data = np.sort(np.asarray(sample, dtype=np.float64))
        self.n = len(data)
        values, counts = np.unique(data, return_counts=True)
        self.values = values
        self.at_least = np.cumsum(counts[::-1])[::-1].astype(np.float64)
        scale = 0.0
        if self.n >= 2:
            m = max(1, min(self.n // 20, 200))
            threshold = data[self.n - m - 1] if self.n > m else data[0]
            scale = float(np.mean(data[self.n - m:] - threshold))
            if scale <= 0:
                scale = float(np.std(data))
        scale = max(scale, min_scale)
        self.scale = scale if scale > 0 else 1.0

    def __getstate__(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def surprisal(self, x: np.ndarray, *, cap: float = _EXTENSION_CAP) -> np.ndarray:
        """``-log`` of the smoothed share of training values at least as large as ``x``.

        Past the training maximum it grows by one per tail scale, by at most ``cap``.
        """
        x = np.asarray(x, dtype=np.float64)
        if not self.n:
            return np.zeros_like(x)
        pos = np.searchsorted(self.values, x, side="left")
        inside = pos < len(self.values)
        count = np.where(inside, self.at_least[np.minimum(pos, len(self.values) - 1)], 0.0)
        out = np.log((self.n + 1.0) / (count + 1.0))
        top = self.values[-1]
        beyond = x > top
        if beyond.any():
            out = out + np.where(beyond, np.minimum((x - top) / self.scale, cap), 0.0)
        return out


class RarityForest(OutlierMixin, BaseEstimator):
    """IsolationForest on upper-tail surprisals, combined by rank with a rarity score.

    Every feature is read as "larger is more unusual"; give the detector features oriented
    that way (the feature extractor does).

    Parameters
    ----------
    n_estimators : int, default 100
        Trees in the inner IsolationForest.
    max_samples : "auto", int or float, default "auto"
        Samples drawn per tree, as in IsolationForest.
    contamination : float, default 0.01
        Share of training samples treated as outliers; sets ``offset_``. Change it later
        with :meth:`offset_for` without refitting.
    rarity_weights : array-like of shape (n_features,) or None, default None
        Weight of each feature in the rarity score (0 leaves it to the forest only).
    rarity_top : int, default 3
        How many of a sample's largest surprisals make its rarity score (weights 1, 1/2,
        1/4, ...), so that one or two very rare features are enough.
    rarity_groups : array-like of shape (n_features,) or None, default None
        A group label per feature: features with the same label say the same thing (one
        bounds the other), so only the largest of them counts in the rarity score. None:
        every feature on its own. The forest still sees all of them.
    prior_zeros : array-like of shape (n_features,) or None, default None
        Per feature, a number of pseudo-samples at 0 added to its training sample: what is
        known before the data (a catalogued attack action is absent from ordinary windows)
        still counts when the sample is too short to say it. None: no prior.
    combine : {"sum", "max"}, default "sum"
        How the forest's and the rarity score's tail surprisals are combined.
    min_tail_scale : float, default 0.0
        Smallest tail scale of a feature: past its training maximum, a feature's surprisal
        grows by at most one nat per ``min_tail_scale``. For count features 1.0 says "one
        more than ever seen is one nat rarer", instead of a jump set by tiny noise.
    random_state : int, RandomState or None, default None
        Seeds the forest.
    n_jobs : int or None, default None
        Parallel jobs of the forest.

    Attributes
    ----------
    tails_ : list of TailTable
        Per-feature training distributions.
    forest_ : IsolationForest
        The inner forest, fitted on surprisals.
    score_tail_ : TailTable
        Training distribution of the combined score (for calibration).
    offset_ : float
        ``decision_function = score_samples - offset_``.
    n_features_in_ : int
    feature_names_in_ : ndarray, when fitted on a DataFrame

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(1).normal(size=(200, 2))
    >>> RarityForest(random_state=0).fit(X).predict([[8.0, 8.0]]).tolist()
    [-1]
    """

    def __init__(self, *, n_estimators: int = 100, max_samples: str | int | float = "auto",
                 contamination: float = 0.01, rarity_weights: Sequence[float] | None = None,
                 rarity_top: int = 3, combine: str = "sum", min_tail_scale: float = 0.0,
                 random_state: int | None = None, n_jobs: int | None = None,
                 rarity_groups: Sequence[int] | None = None,
                 prior_zeros: Sequence[int] | None = None) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.rarity_weights = rarity_weights
        self.rarity_top = rarity_top
        self.rarity_groups = rarity_groups
        self.prior_zeros = prior_zeros
        self.combine = combine
        self.min_tail_scale = min_tail_scale
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __setstate__(self, state: dict[str, object]) -> None:
        # detectors saved before rarity groups existed: every feature on its own
        state.setdefault("rarity_groups", None)
        state.setdefault("prior_zeros", None)
        if "tails_" in state:
            state.setdefault("rarity_groups_", [])
        super().__setstate__(state)

    def _check_params(self) -> None:
        if not isinstance(self.contamination, Real) or not 0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {self.contamination!r}")
        if not isinstance(self.rarity_top, Integral) or self.rarity_top < 1:
            raise ValueError(f"rarity_top must be a positive integer, got {self.rarity_top!r}")
        if self.combine not in ("sum", "max"):
            raise ValueError(f"combine must be 'sum' or 'max', got {self.combine!r}")

    def fit(self, X, y=None):
        """Learn per-feature tails, the forest and the calibration; returns ``self``."""
        self._check_params()
        X = validate_data(self, X, dtype=np.float64)
        n_features = X.shape[1]
        if self.rarity_weights is None:
            weights = np.ones(n_features)
        else:
            weights = np.asarray(self.rarity_weights, dtype=np.float64)
            if weights.shape != (n_features,):
                raise ValueError(f"rarity_weights has {weights.size} values for "
                                 f"{n_features} features")
        self.rarity_weights_ = weights
        if self.rarity_groups is None:
            groups = np.arange(n_features)
        else:
            groups = np.asarray(self.rarity_groups)
            if groups.shape != (n_features,):
                raise ValueError(f"rarity_groups has {groups.size} values for "
                                 f"{n_features} features")
        # columns of each group with more than one member: only their largest counts
        self.rarity_groups_ = [np.flatnonzero(groups == g) for g in np.unique(groups)
                               if (groups == g).sum() > 1]
        prior = np.zeros(n_features, dtype=np.int64)
        if self.prior_zeros is not None:
            prior = np.asarray(self.prior_zeros, dtype=np.int64)
            if prior.shape != (n_features,) or (prior < 0).any():
                raise ValueError(f"prior_zeros needs {n_features} counts >= 0")
        self.tails_ = [TailTable(np.r_[X[:, j], np.zeros(prior[j])],
                                 min_scale=self.min_tail_scale) for j in range(n_features)]
        surprisal = self._surprisal(X)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators, max_samples=self.max_samples,
            random_state=self.random_state, n_jobs=self.n_jobs).fit(surprisal)
        forest = -self.forest_.score_samples(surprisal)
        rarity = self._rarity(surprisal)
        self.forest_tail_ = TailTable(forest)
        self.rarity_tail_ = TailTable(rarity)
        combined = self._combine(forest, rarity)
        self.score_tail_ = TailTable(combined)
        self.offset_ = float(np.percentile(-combined, 100.0 * self.contamination))
        return self

    # -- pieces ------------------------------------------------------------------------

    def _surprisal(self, X: np.ndarray) -> np.ndarray:
        out = np.empty_like(X, dtype=np.float64)
        for j, table in enumerate(self.tails_):  # one pass per feature
            out[:, j] = table.surprisal(X[:, j])
        return out

    def _rarity(self, surprisal: np.ndarray) -> np.ndarray:
        weighted = surprisal * self.rarity_weights_
        for members in self.rarity_groups_:  # one pass per group of dependent features
            largest = weighted[:, members].max(axis=1)
            weighted[:, members] = 0.0
            weighted[:, members[0]] = largest
        k = min(self.rarity_top, weighted.shape[1])
        # largest first, sorted in place: two fewer copies of a large table (issue 17)
        np.negative(weighted, out=weighted)
        weighted.sort(axis=1)
        top = -weighted[:, :k]
        return top @ (0.5 ** np.arange(k))

    def _combine(self, forest: np.ndarray, rarity: np.ndarray) -> np.ndarray:
        a = self.forest_tail_.surprisal(forest)
        b = self.rarity_tail_.surprisal(rarity)
        return a + b if self.combine == "sum" else np.maximum(a, b)

    def _combined(self, X) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        surprisal = self._surprisal(X)
        forest = -self.forest_.score_samples(surprisal)
        return self._combine(forest, self._rarity(surprisal)), surprisal

    # -- public scoring ----------------------------------------------------------------

    def score_samples(self, X):
        """Opposite of the combined rarity: the lower, the more abnormal."""
        return -self._combined(X)[0]

    def decision_function(self, X):
        """``score_samples - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """-1 for outliers, 1 for inliers, at the learned ``offset_``."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def feature_surprisal(self, X):
        """Per-feature upper-tail surprisal, the contribution of each feature (n, d)."""
        return self._combined(X)[1]

    def score_and_explain(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated tail probability and per-feature surprisals in one pass.

        The probability is the smoothed share of training samples whose combined score is
        at least as high, extended past the training maximum: a percentile of the detector's
        own training distribution, comparable across detectors fitted on different data.
        """
        combined, surprisal = self._combined(X)
        return np.exp(-self.score_tail_.surprisal(combined)), surprisal

    def score_details(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated tail probability, per-feature surprisals and the rarity behind them.

        Unlike :meth:`score_and_explain`, the calibration is not capped past the training
        maximum, so windows rarer than anything seen in training keep their order instead
        of sharing one saturated probability. The third array is the combined (uncalibrated)
        score: it breaks ties between windows of equal probability.
        """
        combined, surprisal = self._combined(X)
        p = np.exp(-self.score_tail_.surprisal(combined, cap=math.inf))
        return p, surprisal, combined

    def tail_probability(self, X):
        """Calibrated tail probability of each sample (see :meth:`score_and_explain`)."""
        return self.score_and_explain(X)[0]

    def offset_for(self, contamination: float) -> float:
        """The ``offset_`` another contamination would give, without refitting."""
        check_is_fitted(self)
        if not 0 < contamination <= 1:
            raise ValueError(f"contamination must be in (0, 1], got {contamination!r}")
        surprisal = -math.log(contamination)
        # invert the calibration: the combined score whose training tail share is c
        values, at_least, n = (self.score_tail_.values, self.score_tail_.at_least,
                               self.score_tail_.n)
        share = (at_least + 1.0) / (n + 1.0)
        idx = np.searchsorted(-np.log(share), surprisal, side="left")
        return -float(values[min(idx, len(values) - 1)])


# -- explanations -------------------------------------------------------------------------------

_FEATURE_INFO = {f.name: f for f in FEATURES}
# A reason that says the same thing as a stronger one already chosen is left out.
_OVERLAPS = (
    ("n_new_actions", "new_privileged_events", "n_outside_peer_actions"),
    ("n_new_resources", "n_outside_peer_resources"),
    ("n_users", "n_users_failed"),
    ("failure_ratio", "n_failures", "fail_then_success"),
    ("n_ips", "n_new_ips"),
    ("n_countries", "n_new_countries"),
    # a first DeleteTrail is also a privileged action never done before, and a sensitive one
    ("n_new_sensitive", "new_privileged_events", "n_sensitive"),
    ("n_scanner_requests", "n_scripted_requests"),
    ("n_ips", "credential_addresses"),
    # "second address A while active from B" names the new address and the credential's
    # two places: the slot goes to something else (a new country)
    ("second_address_events", "n_new_ips", "credential_addresses"),
)
_IMPLIED_BY = {name: tuple(dict.fromkeys(o for group in _OVERLAPS if name in group
                                         for o in group if o != name))
               for group in _OVERLAPS for name in group}
# When rarities are close, name what is new or sensitive before raw diversity or volume:
# "first access from country RU" tells an analyst more than "2 countries in one window".
_SPECIFIC_BONUS = 1.5
_SPECIFIC_FAMILIES = ("novelty", "sensitivity", "sequence", "web")
# Ahead of any surprisal (they are capped near 10 nats past the training maximum).
_EVIDENCE_FIRST = 100.0
# "X never seen before" names nothing X did: what it did, when as rare, is said first.
_BARE_FLAGS = ("new_entity",)
# How long an entity had been stable qualifies the new thing it did: said after every other
# reason (when a slot is left), never instead of one.
_QUALIFIERS = ("stable_days_before_novelty",)


def explain(windows: pd.DataFrame, surprisal: np.ndarray, names: Sequence[str], *,
            typical: pd.DataFrame | None = None, top: int = 3,
            min_surprisal: float = math.log(20)) -> list[ReasonText]:
    """Readable reasons for each row of ``windows``: its rarest features, as objects.

    Parameters
    ----------
    windows : DataFrame
        Rows from :class:`~analyzer.features.FeatureExtractor` (``entity``,
        ``window_start``, feature columns and ``d_*`` detail columns).
    surprisal : ndarray of shape (len(windows), len(names))
        Per-feature surprisal of those rows (:meth:`RarityForest.feature_surprisal`).
    names : sequence of str
        The feature names, the columns of ``surprisal``.
    typical : DataFrame or None
        Per-row typical range for the entity, columns ``<feature>_lo`` / ``<feature>_hi``
        aligned with ``windows`` (NaN when the entity has no history).
    top : int
        At most this many reasons per row.
    min_surprisal : float
        Features rarer than this (in nats; log 20 means "in fewer than 1 window in 20") are
        reasons; when none is, the two rarest are named as an unusual combination.

    Returns
    -------
    list of ReasonText
        One per row: the English text, reasons joined with "; " (a ``str``), carrying the
        :class:`~analyzer.reasons.Reason` objects in ``.reasons``.
    """
    names = list(names)
    if not len(windows):
        return []
    order, stop = _ranked(windows, surprisal, names, min_surprisal)
    hours, days = describe_hour(windows["window_start"])
    entities = windows["entity"].astype(str).to_numpy()
    columns = _Columns(windows)
    ranges = _Columns(typical) if typical is not None else None
    out: list[ReasonText] = []
    # one loop per explained window (alerts and near misses), never per event; a row is
    # read from arrays taken once per column, never as a pandas row
    for i in range(len(windows)):
        chosen: list[str] = []
        reasons: list[Reason] = []
        for j in order[i][:stop[i]]:
            if len(reasons) >= top:
                break
            name = names[j]
            if any(other in chosen for other in _IMPLIED_BY.get(name, ())):
                continue
            reason = _reason(name, columns, i, entities[i], hours[i], days[i], ranges)
            if reason is not None:
                chosen.append(name)
                reasons.append(reason)
        if not reasons:
            reasons = [Reason.combination([names[j] for j in order[i][:2]])]
        out.append(ReasonText(reasons))
    return out


def _ranked(windows: pd.DataFrame, surprisal: np.ndarray, names: list[str],
            min_surprisal: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the features in the order to name them, and how many of them may be named."""
    bonus = np.array([_SPECIFIC_BONUS if name in _FEATURE_INFO and name not in _BARE_FLAGS
                      and _FEATURE_INFO[name].family in _SPECIFIC_FAMILIES else 0.0
                      for name in names])
    # Evidence (a catalogued action, an attack tool) is named first whenever it is there at
    # all: on a short log nothing is statistically rare, yet "first DeleteTrail by alice"
    # is what the analyst needs, not "active at 11:00 UTC".
    evidence = _evidence_present(windows, names, surprisal)
    rank = surprisal + bonus * (surprisal >= min_surprisal) + _EVIDENCE_FIRST * evidence
    qualifier = np.isin(names, _QUALIFIERS)
    rank[:, qualifier] = np.minimum(rank[:, qualifier], min_surprisal)
    order = np.argsort(-rank, axis=1, kind="stable")
    # the features each row may name, best first: what is rare enough or is evidence
    named = np.take_along_axis((surprisal >= min_surprisal) | evidence, order, axis=1)
    stop = np.where(named.all(axis=1), len(names), np.argmin(named, axis=1))
    return order, stop


def _evidence_present(windows: pd.DataFrame, names: Sequence[str],
                      surprisal: np.ndarray) -> np.ndarray:
    """(rows, features): an evidence feature with a value that is rarer than the least."""
    out = np.zeros(surprisal.shape, dtype=bool)
    for j, name in enumerate(names):  # one pass per feature
        info = _FEATURE_INFO.get(name)
        if info is not None and info.evidence and name in windows.columns:
            value = pd.to_numeric(windows[name], errors="coerce").fillna(0).to_numpy()
            out[:, j] = (value > 0) & (surprisal[:, j] > 0)
    return out


class _Columns:
    """A frame's columns as arrays, each taken once, when a reason first needs it."""

    __slots__ = ("_arrays", "_frame")

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame
        self._arrays: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._frame.columns

    def __getitem__(self, name: str) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None:
            array = self._arrays[name] = self._frame[name].to_numpy()
        return array


def _reason(name: str, columns: _Columns, i: int, entity: str, hour: str, day: str,
            typical: _Columns | None) -> Reason | None:
    """The reason of feature ``name`` for row ``i`` of the explained windows, if it has one."""
    info = _FEATURE_INFO.get(name)
    if info is None:
        return Reason(name)
    value = float(columns[name][i])
    if info.unit in ("count", "share", "rate", "bytes") and value <= 0:
        return None  # nothing happened: not a reason, however rare "nothing" is
    detail = str(columns[info.detail][i]) if info.detail and info.detail in columns else ""
    span = None
    if typical is not None and f"{name}_lo" in typical:
        lo, hi = typical[f"{name}_lo"][i], typical[f"{name}_hi"][i]
        if pd.notna(lo) and pd.notna(hi):
            span = (float(lo), float(hi))
    return Reason.of(name, value, typical=span, detail=detail, entity=entity, hour=hour,
                     weekday=day)
