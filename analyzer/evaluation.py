"""Evaluation of window scores against labelled attacks, and the naive baseline.

Labels are a CSV ``entity_type,entity,window_start,scenario``: one row per labelled window;
every scored window without a label is normal. :func:`evaluate` reports, over windows, the
ROC-AUC and the precision-recall AUC, the precision and recall of the top windows within an
alert budget (``alerts_per_day`` x days scored), and per attack instance whether it was caught
within that budget. The budget counts what an analyst reviews: when the scores carry the
model's ``candidate_incident`` (or ``incident``) column, the windows of one incident count
once, at their best window's place (as the model's own alert budget does). An instance is
one ``(scenario, entity)`` group of labelled windows; it is caught when any of its windows is
within the budget.

:func:`naive_baseline_scores` is the honest yardstick DESIGN asks to keep: an IsolationForest
on raw per-hour counts (events, failures, distinct resources, distinct actions), fitted on
training windows and scoring the test windows. A detector worth shipping beats it clearly.

>>> import pandas as pd
>>> t = pd.Timestamp("2025-03-10 09:00", tz="UTC")
>>> scores = pd.DataFrame({"entity_type": "user", "entity": ["a", "b", "c", "d"],
...                        "window_start": t, "window_end": t + pd.Timedelta(hours=1),
...                        "score": [0.9, 0.8, 0.1, 0.2]})
>>> labels = pd.DataFrame({"entity_type": ["user"], "entity": ["b"], "window_start": [t],
...                        "scenario": ["brute_force"]})
>>> report = evaluate(scores, labels, alerts_per_day=2)
>>> report.budget, report.precision_at_budget, report.recall_at_budget, report.caught
(2, 0.5, 1.0, 1)
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyzer.errors import SchemaError, SourceError

__all__ = [
    "LABEL_COLUMNS",
    "NAIVE_FEATURES",
    "EvaluationReport",
    "InstanceResult",
    "budget_table",
    "choose_budget",
    "compare_models",
    "entity_timeline",
    "evaluate",
    "holdout_split",
    "naive_baseline_scores",
    "read_labels",
]

log = logging.getLogger(__name__)

#: The columns of a labels file, in order.
LABEL_COLUMNS: tuple[str, ...] = ("entity_type", "entity", "window_start", "scenario")
_SCORE_COLUMNS = ("entity_type", "entity", "window_start", "score")
_MAX_REPORTED = 20


# -- labels --------------------------------------------------------------------------------

def read_labels(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a labels CSV.

    Parameters
    ----------
    path
        A CSV with the header ``entity_type,entity,window_start,scenario`` (other columns
        are ignored). ``window_start`` is ISO 8601; a time without an offset is UTC.

    Returns
    -------
    pandas.DataFrame
        The four columns, ``window_start`` as ``datetime64[ns, UTC]``, duplicates removed.

    Raises
    ------
    SourceError
        The file cannot be read.
    SchemaError
        The header lacks a column, or rows are malformed; the message names every bad line
        (up to twenty) and why.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read labels: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: labels are not UTF-8 text ({exc.reason})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise SchemaError(f"{path}: empty labels file; expected the header "
                          f"{','.join(LABEL_COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in LABEL_COLUMNS if c not in header]
    if missing:
        raise SchemaError(f"{path}:1: labels header lacks {', '.join(missing)}; expected "
                          f"{','.join(LABEL_COLUMNS)}")
    where = [header.index(c) for c in LABEL_COLUMNS]
    rows: list[tuple[str, str, pd.Timestamp, str]] = []
    problems: list[str] = []
    for number, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue  # blank lines carry nothing
        if len(fields) < len(header):
            problems.append(f"line {number}: expected {len(header)} fields, got {len(fields)}")
            continue
        entity_type, entity, start, scenario = (fields[i].strip() for i in where)
        empty = [c for c, v in zip(LABEL_COLUMNS, (entity_type, entity, start, scenario),
                                   strict=True) if not v]
        if empty:
            problems.append(f"line {number}: empty {', '.join(empty)}")
            continue
        try:
            stamp = pd.Timestamp(start)
        except (ValueError, TypeError):
            problems.append(f"line {number}: window_start is not a timestamp: {start!r}")
            continue
        if stamp is pd.NaT:
            problems.append(f"line {number}: window_start is not a timestamp: {start!r}")
            continue
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        rows.append((entity_type, entity, stamp, scenario))
    if problems:
        more = len(problems) - _MAX_REPORTED
        listed = "; ".join(problems[:_MAX_REPORTED]) + (f"; and {more} more" if more > 0 else "")
        raise SchemaError(f"{path}: {len(problems)} bad label line(s): {listed}")
    labels = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    labels["window_start"] = pd.to_datetime(labels["window_start"], utc=True) \
        .astype("datetime64[ns, UTC]")
    before = len(labels)
    labels = labels.drop_duplicates().reset_index(drop=True)
    if len(labels) < before:
        log.info("%s: %d duplicate label rows ignored", path, before - len(labels))
    return labels


# -- the report ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class InstanceResult:
    """One attack instance: a ``(scenario, entity)`` group of labelled windows."""

    scenario: str
    entity_type: str
    entity: str
    windows: int
    scored_windows: int
    caught: bool
    best_rank: int | None
    first_window: pd.Timestamp
    alerted: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "entity_type": self.entity_type,
                "entity": self.entity, "windows": self.windows,
                "scored_windows": self.scored_windows, "caught": self.caught,
                "best_rank": self.best_rank,
                "first_window": self.first_window.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "alerted": self.alerted}


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluationReport:
    """What :func:`evaluate` found.

    Attributes
    ----------
    windows, positives
        Scored windows, and how many of them are labelled.
    days_scored
        Distinct UTC days with scored windows (the budget is per day).
    alerts_per_day, budget
        The alert budget per day, and the number of top windows it allows in all.
    roc_auc, pr_auc
        Over windows; ``None`` when only one class is present. ``pr_auc`` is the average
        precision (the area under the precision-recall step curve).
    precision_at_budget, recall_at_budget
        Of the top ``budget`` windows by score.
    instances
        Every attack instance, caught within the budget or not.
    alerts, alert_precision, alert_recall
        For the scores' own ``alert`` column when present (``None`` otherwise).
    warnings
        Labels that could not be matched (unknown entity, outside the scored period, ...).
    """

    windows: int
    positives: int
    days_scored: int
    alerts_per_day: float
    budget: int
    roc_auc: float | None
    pr_auc: float | None
    precision_at_budget: float
    recall_at_budget: float
    instances: tuple[InstanceResult, ...]
    alerts: int | None = None
    alert_precision: float | None = None
    alert_recall: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def caught(self) -> int:
        """Attack instances with a window within the budget."""
        return sum(i.caught for i in self.instances)

    @property
    def per_scenario(self) -> pd.DataFrame:
        """Instances and caught, per scenario (sorted by scenario)."""
        rows = pd.DataFrame([(i.scenario, i.caught) for i in self.instances],
                            columns=["scenario", "caught"])
        if rows.empty:
            return pd.DataFrame(columns=["scenario", "instances", "caught"])
        table = rows.groupby("scenario").agg(instances=("caught", "size"),
                                             caught=("caught", "sum"))
        return table.reset_index()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "windows": self.windows, "positives": self.positives,
            "days_scored": self.days_scored, "alerts_per_day": self.alerts_per_day,
            "budget": self.budget, "roc_auc": self.roc_auc, "pr_auc": self.pr_auc,
            "precision_at_budget": self.precision_at_budget,
            "recall_at_budget": self.recall_at_budget,
            "instances_caught": self.caught, "instances_total": len(self.instances),
            "alerts": self.alerts, "alert_precision": self.alert_precision,
            "alert_recall": self.alert_recall,
            "per_scenario": [
                {"scenario": r.scenario, "instances": int(r.instances), "caught": int(r.caught)}
                for r in self.per_scenario.itertuples()],
            "instances": [i.to_dict() for i in self.instances],
            "warnings": list(self.warnings),
        }

    def to_text(self) -> str:
        """A short table for a person."""

        def num(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        lines = [
            f"windows scored     {self.windows:,} ({self.positives:,} labelled) over "
            f"{self.days_scored} day(s)",
            f"alert budget       {self.alerts_per_day:g}/day = {self.budget:,} alerts "
            "(an incident's windows count once)",
            f"ROC-AUC            {num(self.roc_auc)}",
            f"PR-AUC             {num(self.pr_auc)}",
            f"precision@budget   {num(self.precision_at_budget)}",
            f"recall@budget      {num(self.recall_at_budget)}",
            f"instances caught   {self.caught} of {len(self.instances)} within the budget",
        ]
        if self.alerts is not None:
            lines.append(f"model's alerts     {self.alerts:,}: precision "
                         f"{num(self.alert_precision)}, recall {num(self.alert_recall)}")
        table = self.per_scenario
        if len(table):
            width = max(8, *(len(s) for s in table["scenario"]))
            lines += ["", f"{'scenario':<{width}}  caught", f"{'-' * width}  ------"]
            lines += [f"{r.scenario:<{width}}  {int(r.caught)}/{int(r.instances)}"
                      for r in table.itertuples()]
        missed = [i for i in self.instances if not i.caught]
        if missed:
            lines += ["", "missed:"]
            lines += [f"  {i.scenario} {i.entity_type}={i.entity} "
                      f"(best rank {i.best_rank if i.best_rank is not None else 'not scored'})"
                      for i in missed]
        if self.warnings:
            lines += ["", "warnings:"] + [f"  {w}" for w in self.warnings]
        return "\n".join(lines)


# -- evaluation ----------------------------------------------------------------------------

def evaluate(scores: pd.DataFrame, labels: pd.DataFrame, *,
             alerts_per_day: float = 10) -> EvaluationReport:
    """Compare window scores with labels.

    Parameters
    ----------
    scores
        One row per window (DESIGN contract 6): ``entity_type``, ``entity``,
        ``window_start``, ``score`` (higher is more unusual); ``window_end`` and ``alert``
        are used when present. A window is positive when a label of the same entity falls in
        ``[window_start, window_end)`` (exactly at ``window_start`` without ``window_end``),
        so labels per hour also work with longer or sliding windows.
    labels
        As returned by :func:`read_labels`.
    alerts_per_day
        The alert budget: the top ``alerts_per_day`` x days scored windows count as alerts
        (the windows of one incident, when ``scores`` has a ``candidate_incident`` or
        ``incident`` column, as one).

    Returns
    -------
    EvaluationReport
    """
    _check_inputs(scores, labels, alerts_per_day)
    from sklearn.metrics import average_precision_score, roc_auc_score

    frame, score = _scored_windows(scores)
    n = len(frame)
    labels = _label_table(labels)
    matches = _match(frame, labels)
    positive = np.zeros(n, dtype=bool)
    positive[matches["row"].to_numpy()] = True
    rank, days, budget = _ranks(scores, frame, score, alerts_per_day)
    in_budget = rank <= budget

    both = 0 < positive.sum() < n
    finite = np.where(np.isfinite(score), score, np.nanmin(score[np.isfinite(score)])
                      - 1 if np.isfinite(score).any() else 0.0)
    roc = float(roc_auc_score(positive, finite)) if both else None
    pr = float(average_precision_score(positive, finite)) if both else None
    hits = int((positive & in_budget).sum())
    precision = hits / int(in_budget.sum()) if in_budget.any() else 0.0
    recall = hits / int(positive.sum()) if positive.any() else 0.0

    alert_col = None
    if "alert" in scores.columns:
        alert_col = scores["alert"].fillna(False).astype(bool).to_numpy()
    instances = _instances(labels, matches, rank, budget, alert_col)
    warnings = _label_warnings(frame, labels, matches)
    alerts = alert_precision = alert_recall = None
    if alert_col is not None:
        alerts = int(alert_col.sum())
        alert_precision = float((positive & alert_col).sum() / alerts) if alerts else 0.0
        alert_recall = float((positive & alert_col).sum() / positive.sum()) \
            if positive.any() else 0.0
    return EvaluationReport(
        windows=n, positives=int(positive.sum()), days_scored=days,
        alerts_per_day=float(alerts_per_day), budget=budget, roc_auc=roc, pr_auc=pr,
        precision_at_budget=precision, recall_at_budget=recall, instances=instances,
        alerts=alerts, alert_precision=alert_precision, alert_recall=alert_recall,
        warnings=warnings)


def _check_inputs(scores: pd.DataFrame, labels: pd.DataFrame, alerts_per_day: float) -> None:
    missing = [c for c in _SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise SchemaError(f"scores lack column(s): {', '.join(missing)}")
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise SchemaError(f"labels lack column(s): {', '.join(missing)}")
    if not alerts_per_day > 0:
        raise SchemaError("alerts_per_day must be positive")


def _scored_windows(scores: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The windows (entity type, entity, UTC start and end) and their scores, an unscored
    window (NaN) at ``-inf`` so that it ranks last rather than breaking the metrics."""
    frame = pd.DataFrame({
        "entity_type": scores["entity_type"].astype(str).to_numpy(),
        "entity": scores["entity"].astype(str).to_numpy(),
        "window_start": _utc(scores["window_start"]),
    })
    frame["window_end"] = _utc(scores["window_end"]) if "window_end" in scores.columns \
        else frame["window_start"]
    score = pd.to_numeric(scores["score"], errors="coerce").to_numpy(dtype=float)
    return frame, np.where(np.isfinite(score), score, -np.inf)


def _label_table(labels: pd.DataFrame) -> pd.DataFrame:
    """The distinct labels with UTC times and a ``label_id`` each."""
    labels = labels.loc[:, list(LABEL_COLUMNS)].reset_index(drop=True)
    labels["entity_type"] = labels["entity_type"].astype(str)
    labels["entity"] = labels["entity"].astype(str)
    labels["window_start"] = _utc(labels["window_start"])
    labels = labels.drop_duplicates().reset_index(drop=True)
    labels["label_id"] = np.arange(len(labels))
    return labels


def _ranks(scores: pd.DataFrame, frame: pd.DataFrame, score: np.ndarray,
           alerts_per_day: float) -> tuple[np.ndarray, int, int]:
    """Every window's review rank, the days scored and the alert budget in ranks.

    Ranks: 1 = highest score; ties broken by order, so the budget is exactly the budget.
    The budget counts what an analyst reviews: the windows of one incident (scores'
    ``incident`` column, as the model groups them) count once, at their best window's
    place, so a loud incident of twenty windows does not use up twenty alerts.
    """
    n = len(frame)
    order = np.argsort(-score, kind="stable")
    units = _review_units(scores, n)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = pd.factorize(units[order])[0] + 1
    days = int(frame["window_start"].dt.floor("D").nunique()) if n else 0
    budget = min(int(rank.max()) if n else 0, math.ceil(alerts_per_day * max(days, 1)))
    return rank, days, budget


def _review_units(scores: pd.DataFrame, n: int) -> np.ndarray:
    """What one alert of the budget covers, per window: its incident, else the window.

    The model's ``candidate_incident`` (every candidate window's incident, alerted or not)
    when the scores have it, so that a storm of hundreds of address windows, one incident
    to the model, is one unit here too; else ``incident`` (alert windows only).
    """
    own = np.array([f"window {i}" for i in range(n)], dtype=object)
    column = next((c for c in ("candidate_incident", "incident") if c in scores.columns), None)
    if column is None:
        return own
    incident = scores[column].astype("string").fillna("").to_numpy(dtype=object)
    return np.where(incident != "", "incident " + incident.astype(str), own)


def _utc(values: pd.Series) -> pd.Series:
    out = pd.to_datetime(values, utc=True)
    return pd.Series(out, index=None).reset_index(drop=True).astype("datetime64[ns, UTC]")


def _match(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Pairs (score row, label id) where the label falls in the window."""
    keyed = frame.reset_index(names="row")
    pairs = labels.merge(keyed, on=["entity_type", "entity"], suffixes=("_label", ""))
    start, end = pairs["window_start"], pairs["window_end"]
    at = pairs["window_start_label"]
    inside = (at >= start) & ((at < end) | ((end <= start) & (at == start)))
    return pairs.loc[inside, ["row", "label_id"]].reset_index(drop=True)


def _instances(labels: pd.DataFrame, matches: pd.DataFrame, rank: np.ndarray, budget: int,
               alert: np.ndarray | None) -> tuple[InstanceResult, ...]:
    out: list[InstanceResult] = []
    by_label = matches.groupby("label_id")["row"].apply(list).to_dict()
    for (scenario, entity_type, entity), group in labels.groupby(
            ["scenario", "entity_type", "entity"], sort=True):
        rows = sorted({r for lid in group["label_id"] for r in by_label.get(lid, [])})
        best = int(rank[rows].min()) if rows else None
        out.append(InstanceResult(
            scenario=str(scenario), entity_type=str(entity_type), entity=str(entity),
            windows=len(group), scored_windows=len(rows),
            caught=best is not None and best <= budget, best_rank=best,
            first_window=group["window_start"].min(),
            alerted=None if alert is None else bool(rows and alert[rows].any())))
    return tuple(out)


def _label_warnings(frame: pd.DataFrame, labels: pd.DataFrame,
                    matches: pd.DataFrame) -> tuple[str, ...]:
    unmatched = labels[~labels["label_id"].isin(matches["label_id"])]
    if unmatched.empty:
        return ()
    known = set(zip(frame["entity_type"], frame["entity"], strict=True))
    lo = frame["window_start"].min() if len(frame) else None
    hi = frame["window_end"].max() if len(frame) else None
    if hi is not None and len(frame) and (frame["window_end"] <= frame["window_start"]).all():
        hi = frame["window_start"].max()
    reasons: dict[str, list[str]] = {}
    for row in unmatched.itertuples():
        what = f"{row.entity_type}={row.entity} at {row.window_start:%Y-%m-%dT%H:%MZ}"
        if lo is None or row.window_start < lo or row.window_start >= hi:
            reasons.setdefault("outside the scored period", []).append(what)
        elif (row.entity_type, row.entity) not in known:
            reasons.setdefault("unknown entity", []).append(what)
        else:
            reasons.setdefault("no scored window (entity inactive then)", []).append(what)
    out = []
    for reason, items in reasons.items():
        shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
        out.append(f"{len(items)} label(s) {reason}: {shown}")
    for text in out:
        log.warning(text)
    return tuple(out)


# -- the naive baseline --------------------------------------------------------------------

#: the raw per-hour counts the baseline sees
NAIVE_FEATURES: tuple[str, ...] = ("events", "failures", "resources", "actions")


def _naive_windows(frame: pd.DataFrame, *, window: str = "1h") -> pd.DataFrame:
    """Raw counts per (entity type, entity, window)."""
    missing = [c for c in ("timestamp", "user", "source_ip", "outcome", "resource", "action")
               if c not in frame.columns]
    if missing:
        raise SchemaError(f"events frame lacks column(s): {', '.join(missing)}")
    if "kind" in frame.columns:
        frame = frame[frame["kind"].astype(str) != "alert"]
    start = frame["timestamp"].dt.floor(window)
    failed = (frame["outcome"].astype(str) == "failure").astype(np.int64)
    parts = []
    for entity_type, column in (("user", "user"), ("source_ip", "source_ip")):
        entity = frame[column].astype(str)
        keep = entity.ne("").to_numpy()
        sub = pd.DataFrame({"entity": entity[keep].to_numpy(),
                            "window_start": start[keep].to_numpy(),
                            "failed": failed[keep].to_numpy(),
                            "resource": frame["resource"].astype(str)[keep].to_numpy(),
                            "action": frame["action"].astype(str)[keep].to_numpy()})
        grouped = sub.groupby(["entity", "window_start"], sort=True)
        counts = pd.DataFrame({
            "events": grouped.size(),
            "failures": grouped["failed"].sum(),
            "resources": grouped["resource"].nunique(),
            "actions": grouped["action"].nunique(),
        }).reset_index()
        counts.insert(0, "entity_type", entity_type)
        parts.append(counts)
    out = pd.concat(parts, ignore_index=True)
    out["window_start"] = pd.to_datetime(out["window_start"], utc=True)
    out["window_end"] = out["window_start"] + pd.Timedelta(window)
    return out


def naive_baseline_scores(train_frame: pd.DataFrame, test_frame: pd.DataFrame, *,
                          random_state: int = 0, alerts_per_day: float = 10,
                          window: str = "1h") -> pd.DataFrame:
    """Score ``test_frame`` with an IsolationForest fitted on raw counts of ``train_frame``.

    One forest per entity type over :data:`NAIVE_FEATURES` per window, no profiles, no
    calibration: the baseline a real detector must beat. Alerts are the top
    ``alerts_per_day`` windows per day scored.

    Returns
    -------
    pandas.DataFrame
        The scores-file columns (DESIGN contract 6): ``entity_type, entity, window_start,
        window_end, score, alert, reasons`` followed by the counts.
    """
    from sklearn.ensemble import IsolationForest

    train = _naive_windows(train_frame, window=window)
    test = _naive_windows(test_frame, window=window)
    test["score"] = np.nan
    features = list(NAIVE_FEATURES)
    for entity_type in ("user", "source_ip"):
        fit_rows = train["entity_type"] == entity_type
        rows = test["entity_type"] == entity_type
        if not rows.any():
            continue
        if not fit_rows.any():
            test.loc[rows, "score"] = 0.0
            continue
        forest = IsolationForest(n_estimators=200, random_state=random_state)
        forest.fit(train.loc[fit_rows, features].to_numpy(dtype=float))
        test.loc[rows, "score"] = -forest.score_samples(
            test.loc[rows, features].to_numpy(dtype=float))
    days = max(1, test["window_start"].dt.floor("D").nunique())
    budget = math.ceil(alerts_per_day * days)
    order = np.argsort(-test["score"].to_numpy(), kind="stable")
    alert = np.zeros(len(test), dtype=bool)
    alert[order[:budget]] = True
    test["alert"] = alert
    test["reasons"] = ""
    columns = ["entity_type", "entity", "window_start", "window_end", "score", "alert",
               "reasons", *features]
    return test[columns].reset_index(drop=True)



# -- comparing models and choosing a budget (no labels needed) ------------------------------

_WINDOW_KEY = ["entity_type", "entity", "window_start", "window_end"]


def holdout_split(frame: pd.DataFrame, *, days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split an events frame into its history and its last ``days`` days.

    The cut is at a UTC midnight, so whole days are held out: the recent part is what a
    retrained model is checked on (budget, evaluation, comparison with the current model)
    and never trained on.

    >>> frame = pd.DataFrame({"timestamp": pd.date_range("2025-03-01", periods=10, freq="12h",
    ...                                                  tz="UTC")})
    >>> history, recent = holdout_split(frame, days=2)
    >>> len(history), len(recent), str(recent["timestamp"].min().date())
    (6, 4, '2025-03-04')
    """
    if "timestamp" not in frame.columns:
        raise SchemaError("events frame lacks column(s): timestamp")
    if not days > 0:
        raise SchemaError("days must be positive")
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    if stamps.empty:
        return frame.iloc[:0].copy(), frame.iloc[:0].copy()
    cut = (stamps.max() - pd.Timedelta(days=days)).ceil("D")
    recent = (stamps >= cut).to_numpy()
    return (frame.loc[~recent].reset_index(drop=True), frame.loc[recent].reset_index(drop=True))


def compare_models(current: Any, candidate: Any, frame: pd.DataFrame, *,
                   alerts_per_day: float | None = None) -> pd.DataFrame:
    """Score the same data with two models and list the alerts gained, lost and kept.

    Parameters
    ----------
    current, candidate
        Fitted models with ``score(frame, alerts_per_day=...)`` (the current one and the
        retrained one).
    frame
        Recent events both are scored on.
    alerts_per_day
        Budget for both (default: each model's own).

    Returns
    -------
    pandas.DataFrame
        One row per window either model alerts on: ``change`` (``gained``: only the
        candidate alerts; ``lost``: only the current one; ``kept``: both), the window,
        ``current_score``, ``candidate_score``, ``current_risk``, ``candidate_risk`` and
        ``reasons`` (the candidate's, or the current model's for a lost alert). Gained first,
        then lost, then kept; within each, highest risk first.
    """
    columns = [*_WINDOW_KEY, "score", "risk_score", "alert", "reasons"]
    old = current.score(frame, alerts_per_day=alerts_per_day)[columns]
    new = candidate.score(frame, alerts_per_day=alerts_per_day)[columns]
    both = old.merge(new, on=_WINDOW_KEY, how="outer", suffixes=("_current", "_candidate"))
    a_old = both["alert_current"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    a_new = both["alert_candidate"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    keep = a_old | a_new
    both = both[keep].reset_index(drop=True)
    a_old, a_new = a_old[keep], a_new[keep]
    change = np.select([a_new & ~a_old, a_old & ~a_new], ["gained", "lost"], default="kept")
    reasons = np.where(change == "lost", both["reasons_current"].fillna("").astype(str),
                       both["reasons_candidate"].fillna("").astype(str))
    out = pd.DataFrame({
        "change": change,
        **{c: both[c] for c in _WINDOW_KEY},
        "current_score": both["score_current"], "candidate_score": both["score_candidate"],
        "current_risk": both["risk_score_current"],
        "candidate_risk": both["risk_score_candidate"],
        "reasons": reasons,
    })
    out["_order"] = out["change"].map({"gained": 0, "lost": 1, "kept": 2})
    out["_risk"] = out[["current_risk", "candidate_risk"]].max(axis=1)
    out = out.sort_values(["_order", "_risk"], ascending=[True, False], kind="stable")
    return out.drop(columns=["_order", "_risk"]).reset_index(drop=True)


def budget_table(model: Any, scores: pd.DataFrame,
                 budgets: tuple[float, ...] = (1, 2, 3, 5, 10, 20)) -> pd.DataFrame:
    """How many windows each alert budget would flag on ``scores``, before the daily cap.

    Parameters
    ----------
    model
        The fitted model that produced ``scores`` (its calibration gives the thresholds).
    scores
        ``model.score(...)`` of recent data (``score`` is ``1 - p``).
    budgets
        Candidate alert budgets (alerts per day).

    Returns
    -------
    pandas.DataFrame
        ``budget, threshold, windows_over, per_day_mean, per_day_max, alerts``: the tail
        probability threshold, the windows at or under it, their mean and largest count per
        UTC day, and the alerts once the daily cap applies.
    """
    p = 1.0 - pd.to_numeric(scores["score"], errors="coerce").to_numpy(dtype=float)
    day = pd.to_datetime(scores["window_start"], utc=True).dt.floor("D")
    n_days = max(1, int(day.nunique()))
    rows = []
    for budget in budgets:
        threshold = model.threshold(budget)
        over = p <= threshold
        per_day = pd.Series(over).groupby(day.to_numpy()).sum()
        capped = int(np.minimum(per_day.to_numpy(), math.ceil(budget)).sum())
        rows.append((float(budget), threshold, int(over.sum()),
                     float(over.sum()) / n_days, int(per_day.max()) if len(per_day) else 0,
                     capped))
    return pd.DataFrame(rows, columns=["budget", "threshold", "windows_over", "per_day_mean",
                                       "per_day_max", "alerts"])


def choose_budget(table: pd.DataFrame, *, capacity: float) -> float:
    """The largest budget whose typical day stays within what analysts can review.

    Chosen from the score distribution alone (no labels, so the figures reported against
    labels stay honest): the largest ``budget`` of :func:`budget_table` whose
    ``per_day_mean`` (windows over its threshold on an average day, before the daily cap) is
    at most ``capacity``; the smallest budget when none qualifies. Busier days are then
    trimmed by the daily cap to the highest scores.

    >>> table = pd.DataFrame({"budget": [1.0, 5.0, 10.0], "per_day_mean": [2.0, 6.0, 14.0]})
    >>> choose_budget(table, capacity=8)
    5.0
    """
    if not capacity > 0:
        raise SchemaError("capacity must be positive")
    fits = table[table["per_day_mean"] <= capacity]
    if fits.empty:
        return float(table["budget"].min())
    return float(fits["budget"].max())


def entity_timeline(model: Any, scores: pd.DataFrame, entity: str, *,
                    entity_type: str = "user") -> pd.DataFrame:
    """One entity's windows against its own profile.

    Returns
    -------
    pandas.DataFrame
        Per window of the entity (by time): ``window_start, score, alert, risk_score,
        n_events``, the value of each profiled feature (``f_<feature>``) and the entity's
        typical range from training (``<feature>_lo``, ``<feature>_hi``: its 10th and 90th
        percentiles; empty for an entity never seen in training).
    """
    mine = scores[(scores["entity_type"].astype(str) == entity_type)
                  & (scores["entity"].astype(str) == str(entity))]
    mine = mine.sort_values("window_start", kind="stable").reset_index(drop=True)
    typical = getattr(model, "typical_", None)
    base = [c for c in ("window_start", "score", "alert", "risk_score", "n_events")
            if c in mine.columns]
    out = mine[base].copy()
    if typical is None:
        return out
    names = sorted({c[:-3] for c in typical.columns if c.endswith("_lo")})
    try:
        ranges = typical.loc[(entity_type, str(entity))]
    except KeyError:
        ranges = None
    for name in names:
        if "f_" + name in mine.columns:
            out["f_" + name] = mine["f_" + name].to_numpy()
        out[name + "_lo"] = np.nan if ranges is None else float(ranges[name + "_lo"])
        out[name + "_hi"] = np.nan if ranges is None else float(ranges[name + "_hi"])
    return out
