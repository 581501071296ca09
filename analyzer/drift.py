"""Drift: does a fitted model still describe the data it is asked to score?

A detector learned what normal looked like during its training period. Teams, systems and
working patterns change, and a model that is never retrained goes stale: it alerts on the
new normal, or misses what changed. :func:`drift_report` compares recent windows with the
model's training windows and says how far apart they are:

- the **population stability index** (PSI) of every feature, per entity type, between the
  training windows and the recent ones. ``PSI = sum((r - t) * ln(r / t))`` over bins cut at
  the training deciles (``t`` and ``r`` the training and recent shares per bin). Under 0.1
  is stable, 0.1-0.25 a moderate shift, over 0.25 a significant one (the usual reading);
- the model's **age**: how long after the end of its training data the scored data ends,
  and its training period;
- **entities never seen in training**: accounts and addresses with no profile, which are
  judged only against their peers.

The model looks **stale** (:attr:`DriftReport.stale`) when its training data ended more than
``max_age`` before the scored data, when at least ``min_drifted`` features moved by more than
``psi_threshold`` (features that depend on the weekdays scored only over a week or more),
or when more than ``max_new_share`` of the recent windows of an entity
type come from entities never seen in training. :attr:`DriftReport.warning` is then one line
for the ``score`` output and the report.

Which training windows: the detector keeps the exact distribution of every feature it was
fitted on, so no training data is needed at score time. Some features are computed "as seen
so far" while fitting (the time of day against the hours seen *until then*, the volume
against the typical volume *until then*) and against the whole profile when scoring; their
fitted distributions are not comparable with scoring-time values. Without the training frame
they are left out (:data:`AS_SEEN_FEATURES`); given the training frame (``reference=``, as the
notebooks do), they are compared with the training windows transformed like the recent ones.

>>> from analyzer.synth import SynthConfig, generate
>>> from analyzer.model import AuditModel
>>> org = generate(SynthConfig(users=8, days=8, attack_days=2, scenarios=("brute_force",)))
>>> model = AuditModel(n_estimators=20).fit(org.train_events)
>>> report = drift_report(model, model.score(org.test_events))
>>> report.age_days < 3, report.stale
(True, False)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analyzer.errors import ConfigError, SchemaError
from analyzer.features import ENTITY_TYPES, FEATURES, detector_features, feature_names

__all__ = [
    "AS_SEEN_FEATURES",
    "DriftReport",
    "drift_report",
    "population_stability_index",
]

log = logging.getLogger(__name__)

#: Features whose fitted values are computed against the profile "as seen so far", so their
#: fitted distribution is not comparable with scoring-time values (see the module docstring).
AS_SEEN_FEATURES: frozenset[str] = frozenset({
    "hour_rarity", "weekday_rarity", "privileged_off_hours", "events_vs_typical",
    "bytes_vs_typical",
})
# Novelty is zero for every training window once the whole profile is known, so its
# reference is always the fitted ("as seen so far") distribution: the normal rate of novelty.
_NOVELTY_FEATURES = frozenset(
    f.name for f in FEATURES if f.family == "novelty" or f.name == "new_privileged_events")
# Their distribution depends on which days are scored (a Sunday is all "weekend"): compared
# only over a recent period of at least a week.
_CALENDAR_FEATURES = frozenset({"weekday_rarity", "off_hours_share"})
_DEFAULT_NEW_SHARE = {"user": 0.2, "source_ip": 0.5}


def population_stability_index(reference: np.ndarray | pd.Series, recent: np.ndarray | pd.Series,
                               *, reference_counts: np.ndarray | None = None,
                               bins: int = 10) -> float:
    """PSI between a reference sample and a recent one, over the reference's quantile bins.

    Parameters
    ----------
    reference
        Reference values (or distinct values, with ``reference_counts``).
    recent
        Recent values.
    reference_counts
        How often each value of ``reference`` occurs (default: once each).
    bins
        Bins cut at the reference's quantiles; tied quantiles merge, so a feature that is
        mostly zero gets few bins.

    Returns
    -------
    float
        ``sum((r - t) * ln(r / t))``; shares are smoothed by half a count per bin, so an
        empty bin does not make the index infinite. ``nan`` when either sample is empty.

    >>> round(population_stability_index(np.arange(100.0), np.arange(100.0)), 3)
    0.0
    >>> population_stability_index(np.zeros(100), np.ones(100)) > 1
    True
    """
    if bins < 2:
        raise ConfigError(f"bins must be at least 2, got {bins}")
    values = np.asarray(reference, dtype=np.float64)
    counts = np.ones(len(values)) if reference_counts is None \
        else np.asarray(reference_counts, dtype=np.float64)
    actual = np.asarray(recent, dtype=np.float64)
    actual = actual[np.isfinite(actual)]
    keep = np.isfinite(values) & (counts > 0)
    values, counts = values[keep], counts[keep]
    if not len(values) or not len(actual):
        return math.nan
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    n = counts.sum()
    cdf = np.cumsum(counts) / n
    cut = np.searchsorted(cdf, np.arange(1, bins) / bins, side="left")
    edges = np.unique(values[np.minimum(cut, len(values) - 1)])
    width = len(edges) + 1
    # bin i holds edges[i-1] < x <= edges[i]: a point mass at an edge stays in one bin
    ref = np.bincount(np.searchsorted(edges, values, side="left"), weights=counts,
                      minlength=width)
    now = np.bincount(np.searchsorted(edges, actual, side="left"), minlength=width)
    t = (ref + 0.5) / (n + 0.5 * width)
    r = (now + 0.5) / (len(actual) + 0.5 * width)
    return float(np.sum((r - t) * np.log(r / t)))


@dataclasses.dataclass(frozen=True, slots=True)
class DriftReport:
    """What :func:`drift_report` found.

    Attributes
    ----------
    model_id, created
        The model's id and creation time (empty when unknown).
    training_start, training_end
        The model's training period.
    scored_start, scored_end
        The period of the recent windows.
    features
        One row per (entity type, feature): ``entity_type, feature, psi, reference_windows,
        recent_windows, drifted``; sorted by PSI, largest first. ``psi`` is ``nan`` when a
        side has too few windows to compare.
    new_entities
        Per entity type, the recent entities never seen in training (sorted).
    new_window_share
        Per entity type, the share of recent windows that come from those entities.
    skipped
        Features left out, and why.
    psi_threshold, min_drifted, max_age_days, max_new_share
        The thresholds the verdict used.
    """

    model_id: str
    created: str
    training_start: pd.Timestamp | None
    training_end: pd.Timestamp | None
    scored_start: pd.Timestamp | None
    scored_end: pd.Timestamp | None
    features: pd.DataFrame
    new_entities: Mapping[str, tuple[str, ...]]
    new_window_share: Mapping[str, float]
    skipped: tuple[str, ...]
    psi_threshold: float
    min_drifted: int
    max_age_days: float
    max_new_share: Mapping[str, float]

    @property
    def age_days(self) -> float:
        """Days from the end of the training data to the end of the scored data."""
        if self.training_end is None or self.scored_end is None:
            return math.nan
        return (self.scored_end - self.training_end) / pd.Timedelta(days=1)

    @property
    def drifted(self) -> pd.DataFrame:
        """The rows of :attr:`features` over the PSI threshold."""
        return self.features[self.features["drifted"]].reset_index(drop=True)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the model looks stale (empty when it does not)."""
        out = []
        if self.age_days > self.max_age_days:
            out.append(f"trained on data up to {self.training_end:%Y-%m-%d}, "
                       f"{self.age_days:.0f} days before the scored data")
        drifted = self.drifted
        if len(drifted) >= self.min_drifted:
            top = ", ".join(f"{r.feature} ({r.entity_type}, PSI {r.psi:.2f})"
                            for r in drifted.head(3).itertuples())
            out.append(f"{len(drifted)} feature(s) shifted: {top}")
        for etype, share in self.new_window_share.items():
            limit = self.max_new_share.get(etype, 1.0)
            if share > limit:
                out.append(f"{share:.0%} of {etype} windows come from "
                           f"{len(self.new_entities[etype])} entities never seen in training")
        return tuple(out)

    @property
    def stale(self) -> bool:
        """Whether the model looks stale and should be retrained."""
        return bool(self.reasons)

    @property
    def warning(self) -> str:
        """One line for the ``score`` output and the report; empty when not stale."""
        if not self.stale:
            return ""
        return ("warning: the model looks stale: " + "; ".join(self.reasons)
                + ". Retrain it (notebooks/retrain.ipynb or 'audit-analyzer train').")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""

        def stamp(value: pd.Timestamp | None) -> str | None:
            return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")

        features = [
            {"entity_type": r.entity_type, "feature": r.feature,
             "psi": None if math.isnan(r.psi) else round(float(r.psi), 4),
             "reference_windows": int(r.reference_windows),
             "recent_windows": int(r.recent_windows), "drifted": bool(r.drifted)}
            for r in self.features.itertuples()]
        return {
            "model_id": self.model_id, "created": self.created,
            "training_start": stamp(self.training_start),
            "training_end": stamp(self.training_end),
            "scored_start": stamp(self.scored_start), "scored_end": stamp(self.scored_end),
            "age_days": None if math.isnan(self.age_days) else round(self.age_days, 2),
            "stale": self.stale, "reasons": list(self.reasons), "features": features,
            "new_entities": {k: list(v) for k, v in self.new_entities.items()},
            "new_window_share": dict(self.new_window_share),
            "skipped": list(self.skipped),
        }

    def to_text(self, *, top: int = 10) -> str:
        """A short summary for a person."""

        def day(value: pd.Timestamp | None) -> str:
            return "?" if value is None else f"{value:%Y-%m-%d}"

        lines = [
            f"model              {self.model_id or '(unsaved)'}"
            + (f", created {self.created}" if self.created else ""),
            f"trained on         {day(self.training_start)} to {day(self.training_end)}",
            f"scored data        {day(self.scored_start)} to {day(self.scored_end)} "
            f"({self.age_days:.1f} days after the training data)",
        ]
        for etype, names in self.new_entities.items():
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more"
                                             if len(names) > 5 else "")
            lines.append(f"new {etype:<14} {len(names)} never seen in training "
                         f"({self.new_window_share[etype]:.0%} of windows)"
                         + (f": {shown}" if names else ""))
        lines += ["", f"{'feature':<26} {'type':<9} {'PSI':>6}"]
        for r in self.features.head(top).itertuples():
            psi = "n/a" if math.isnan(r.psi) else f"{r.psi:.3f}"
            lines.append(f"{r.feature:<26} {r.entity_type:<9} {psi:>6}"
                         + ("  shifted" if r.drifted else ""))
        lines += ["", self.warning or "the model does not look stale"]
        return "\n".join(lines)


def drift_report(model: Any, recent: pd.DataFrame, *, reference: pd.DataFrame | None = None,
                 psi_threshold: float = 0.25, min_drifted: int = 5,
                 max_age_days: float = 30.0,
                 max_new_share: Mapping[str, float] | None = None, bins: int = 10,
                 min_windows: int = 50) -> DriftReport:
    """Compare recent windows with a fitted model's training windows.

    Parameters
    ----------
    model
        A fitted :class:`~analyzer.model.AuditModel` (loaded or fresh).
    recent
        The recent data: a scores frame from ``model.score`` (``f_<feature>`` columns), a
        windows frame from its feature extractor, or a normalized events frame (windowed
        here with the model's extractor).
    reference
        The training events frame, when at hand: then every feature is compared, including
        :data:`AS_SEEN_FEATURES`.
    psi_threshold
        A feature has shifted when its PSI exceeds this.
    min_drifted
        The model looks stale when at least this many (entity type, feature) pairs shifted.
    max_age_days
        The model looks stale when its training data ended more than this many days before
        the end of the recent data.
    max_new_share
        Per entity type, the largest share of recent windows from never-seen entities that
        is still normal (default: 0.2 for users, 0.5 for addresses, which come and go).
    bins
        PSI bins (at the training deciles by default).
    min_windows
        Fewer recent or training windows than this for an entity type: no PSI (``nan``),
        because a handful of windows says nothing about a distribution.

    Returns
    -------
    DriftReport
    """
    if not hasattr(model, "detectors_"):
        raise ConfigError("drift needs a fitted model")
    windows = _recent_windows(model, recent)
    metadata = dict(getattr(model, "metadata", {}) or {})
    train_start, train_end = (_stamp(metadata.get("training_start")),
                              _stamp(metadata.get("training_end")))
    ref_windows = None
    if reference is not None:
        ref_windows = model.extractor_.transform(reference, details=False)
    starts = pd.to_datetime(windows["window_start"], utc=True) if len(windows) else None
    ends = pd.to_datetime(windows["window_end"], utc=True) if len(windows) else None
    short = starts is None or ends.max() - starts.min() < pd.Timedelta(days=7)
    rows, skipped, calendar = _feature_shifts(model, windows, ref_windows, short=short,
                                              bins=bins, min_windows=min_windows)
    features = pd.DataFrame(rows, columns=["entity_type", "feature", "psi",
                                           "reference_windows", "recent_windows"])
    features["drifted"] = features["psi"].fillna(0.0) > psi_threshold
    features = features.sort_values("psi", ascending=False, na_position="last",
                                    kind="stable").reset_index(drop=True)
    new_entities, share = _new_entities(model, windows)
    report = DriftReport(
        model_id=str(metadata.get("model_id", "")), created=str(metadata.get("created", "")),
        training_start=train_start, training_end=train_end,
        scored_start=None if starts is None else starts.min(),
        scored_end=None if ends is None else ends.max(),
        features=features, new_entities=new_entities, new_window_share=share,
        skipped=tuple(f"{name}: fitted 'as seen so far'; pass the training frame to "
                      "compare it" for name in dict.fromkeys(skipped))
        + tuple(f"{name}: depends on the weekdays scored; compared over a week or more"
                for name in dict.fromkeys(calendar)), psi_threshold=psi_threshold,
        min_drifted=min_drifted, max_age_days=max_age_days,
        max_new_share=dict(_DEFAULT_NEW_SHARE if max_new_share is None else max_new_share))
    if report.stale:
        log.info("%s", report.warning)
    return report


def _feature_shifts(model: Any, windows: pd.DataFrame, ref_windows: pd.DataFrame | None, *,
                    short: bool, bins: int, min_windows: int
                    ) -> tuple[list[tuple[str, str, float, int, int]], list[str], list[str]]:
    """The PSI of every feature the recent ``windows`` can be compared on.

    Returns the rows ``(entity type, feature, psi, reference windows, recent windows)``, the
    features left out because they were fitted "as seen so far" and no training frame was
    given, and those left out because they depend on the weekdays of a ``short`` period.
    """
    etypes = windows["entity_type"].astype(str).to_numpy()
    rows: list[tuple[str, str, float, int, int]] = []
    skipped: list[str] = []
    calendar: list[str] = []
    for etype in ENTITY_TYPES:
        detector = model.detectors_.get(etype)
        mine = windows[etypes == etype]
        names = detector_features(etype) if detector is not None else []
        tails = dict(zip(names, detector.tails_, strict=True)) if detector is not None else {}
        ref_mine = None
        if ref_windows is not None:
            names = [n for n in feature_names(etype) if n in ref_windows.columns]
            ref_mine = ref_windows[ref_windows["entity_type"].astype(str) == etype]
        for name in names:
            column = _column(mine, name)
            if column is None:
                continue
            if short and name in _CALENDAR_FEATURES:
                calendar.append(name)
                continue
            if name in _NOVELTY_FEATURES or ref_mine is None:
                if name not in tails:
                    continue
                if ref_mine is None and name in AS_SEEN_FEATURES:
                    skipped.append(name)
                    continue
                # the detector's fitted distribution: its distinct values and their counts
                table = tails[name]
                values = table.values
                counts = -np.diff(np.append(table.at_least, 0.0))
                n_ref = int(table.n)
            else:
                values = ref_mine[name].to_numpy(dtype=np.float64)
                counts = None
                n_ref = len(values)
            recent_values = column.to_numpy(dtype=np.float64)
            if n_ref < min_windows or len(recent_values) < min_windows:
                psi = math.nan
            else:
                psi = population_stability_index(values, recent_values,
                                                  reference_counts=counts, bins=bins)
            rows.append((etype, name, psi, n_ref, len(recent_values)))
    return rows, skipped, calendar


def _recent_windows(model: Any, recent: pd.DataFrame) -> pd.DataFrame:
    if "entity_type" in recent.columns and "window_start" in recent.columns:
        return recent
    if "timestamp" in recent.columns:
        return model.extractor_.transform(recent, details=False)
    raise SchemaError("drift needs scores, windows or events: the frame has neither "
                      "entity_type/window_start nor timestamp columns")


def _column(frame: pd.DataFrame, name: str) -> pd.Series | None:
    for column in ("f_" + name, name):
        if column in frame.columns:
            return pd.to_numeric(frame[column], errors="coerce")
    return None


def _new_entities(model: Any, windows: pd.DataFrame
                  ) -> tuple[dict[str, tuple[str, ...]], dict[str, float]]:
    vocab = getattr(model.extractor_, "vocab_", {})
    names: dict[str, tuple[str, ...]] = {}
    share: dict[str, float] = {}
    etypes = windows["entity_type"].astype(str)
    for etype in ENTITY_TYPES:
        mine = windows.loc[etypes == etype, "entity"].astype(str)
        if mine.empty:
            continue
        known = pd.Index(np.asarray(vocab.get(etype, []), dtype=object).astype(str))
        unseen = ~mine.isin(known)
        names[etype] = tuple(sorted(mine[unseen].unique()))
        share[etype] = float(unseen.mean())
    return names, share


def _stamp(value: Any) -> pd.Timestamp | None:
    if value in (None, ""):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
