"""Reports: a self-contained HTML dashboard and a plain-text summary of an audit log.

The pipeline is ``load_report_data`` (read the log, verify its chain, recorded alerts, the
model's metadata, scores) -> :func:`~analyzer.report.viewmodel.build_view` (every figure and
text, as frozen dataclasses) -> :func:`render_html` / :func:`render_text` (layout only).
:func:`write_reports` runs all of it for the command line and the demo.

>>> import tempfile, os
>>> from analyzer.logger import AuditLogger
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> with AuditLogger(path) as audit:
...     _ = audit.log("login", user="alice", outcome="success", source_ip="10.0.0.7")
>>> text = render_text(build_view(load_report_data(path)))
>>> "Verified" in text and "alice" in text
True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pandas as pd

from analyzer.errors import ConfigError, SourceError
from analyzer.files import USER_OUTPUT, atomic_write
from analyzer.report.html import render_html
from analyzer.report.i18n import LANGUAGES, get_locale
from analyzer.report.text import render_text
from analyzer.report.viewmodel import Integrity, ReportData, ReportView, build_view
from analyzer.scoring_math import alert_threshold, risk_from_p

__all__ = [
    "LANGUAGES",
    "Integrity",
    "ReportData",
    "ReportView",
    "build_view",
    "load_report_data",
    "read_recorded_alerts",
    "render_html",
    "render_text",
    "write_reports",
]

if TYPE_CHECKING:
    from analyzer.pipeline import TrailRead
    from analyzer.sources import ReaderOptions

logger = logging.getLogger(__name__)


def _first_record(path: Path) -> dict[str, Any] | None:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    return {}
                return doc if isinstance(doc, dict) else {}
    return None


def check_integrity(path: Path, *, key: bytes | None = None, fmt: str = "jsonl") -> Integrity:
    """The verdict on ``path``'s hash chain: verified, broken (where and why) or not chained."""
    from analyzer.integrity import verify_log

    if fmt != "jsonl":
        return Integrity("not_chained")
    first = _first_record(path)
    event = (first or {}).get("event")
    # a JSON log whose first record has no chain link was never chained; a damaged first
    # line ({}) is still a broken chain, which verify reports
    if first and not (isinstance(event, dict) and "hash" in event):
        return Integrity("not_chained")
    return _verdict(verify_log(path, key=key), keyed=bool(key))


def _verdict(report: Any, *, keyed: bool) -> Integrity:
    if report.ok:
        return Integrity("verified", records=report.records, keyed=keyed)
    return Integrity("broken", records=report.records, line=report.line,
                     sequence=report.sequence, problem=str(report.problem or ""),
                     detail=report.detail, keyed=keyed)


def read_recorded_alerts(path: str | os.PathLike[str]) -> list[Any]:
    """The alerts already written into an audit log, as :class:`analyzer.alerts.Alert`.

    Only lines that may hold ``"alert"`` are parsed, so the cost is one scan of the file;
    an alert is a record whose parsed ``event.kind`` is ``alert``, however it is spelled.
    """
    from analyzer.sources.jsonl import records_holding

    return alerts_of_records(doc for _, doc in records_holding(path, b'"alert"'))


def alerts_of_records(records: Iterable[dict[str, Any]]) -> list[Any]:
    """The :class:`analyzer.alerts.Alert` of each alert record among ``records`` (parsed
    log records), one per ``event.id`` (the last written wins, in the order first seen)."""
    from analyzer.alerts import Alert, is_alert_record
    from analyzer.errors import SchemaError

    found: dict[str, Alert] = {}
    for doc in records:
        if not is_alert_record(doc):
            continue
        try:
            alert = Alert.from_record(doc)
        except SchemaError:
            continue  # verify reports damaged records; here they are simply not alerts
        found[alert.id] = alert
    return list(found.values())


def _normalise_scores(scores: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("entity_type", "entity", "window_start", "window_end", "score",
                           "alert") if c not in scores.columns]
    if missing:
        from analyzer.errors import SchemaError

        raise SchemaError(f"scores: missing column(s) {', '.join(missing)}")
    out = scores.copy()
    for column in ("window_start", "window_end"):
        out[column] = pd.to_datetime(out[column], utc=True, format="ISO8601")
    alert = out["alert"]
    if alert.dtype == object:
        alert = alert.astype(str).str.lower().isin(("true", "1", "yes"))
    out["alert"] = alert.astype(bool)
    if "reasons" not in out.columns:
        out["reasons"] = ""
    reasons = out["reasons"].fillna("")
    # the model's cells are text carrying their Reason objects (analyzer.reasons): kept
    out["reasons"] = reasons if pd.api.types.infer_dtype(reasons) == "string" \
        else reasons.astype(str)
    if "risk_score" not in out.columns:
        p = 1.0 - pd.to_numeric(out["score"], errors="coerce").fillna(0).to_numpy()
        out["risk_score"] = risk_from_p(p)
    return out


def read_scores(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A scores file (DESIGN contract 6: CSV, or Parquet by extension)."""
    source = Path(path)
    if not source.exists():
        raise SourceError(f"{source}: no such scores file")
    try:
        if source.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(source)
        else:
            frame = pd.read_csv(source)
    except (ValueError, OSError) as exc:
        raise SourceError(f"{source}: cannot read scores: {exc}") from None
    return _normalise_scores(frame)


def _drift_warning(model: Any, scores: pd.DataFrame) -> str:
    """The model's staleness warning against the scored windows, or "" (never a failure)."""
    from analyzer.drift import drift_report

    try:
        return drift_report(model, scores).warning
    except Exception:  # drift is advice: a model without the tables it needs gets none
        logger.debug("no drift check for this model", exc_info=True)
        return ""


def load_report_data(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                     scores: pd.DataFrame | None = None, model: Any = None,
                     model_path: str | os.PathLike[str] | None = None,
                     key: bytes | None = None, format: str | None = None,
                     generated: str | None = None,
                     read_options: ReaderOptions | dict[str, Any] | None = None,
                     db: str | None = None, since: Any = None,
                     until: Any = None, trail: TrailRead | None = None) -> ReportData:
    """Read everything a report needs from the log(s) and the model or scores.

    Parameters
    ----------
    paths
        The audit log (or several logs, a directory, a glob).
    scores
        A scores frame (:meth:`analyzer.model.AuditModel.score` or a scores file); when
        ``None`` and ``model`` is given, the log's events are scored with it.
    model
        A fitted :class:`~analyzer.model.AuditModel` (its metadata names it in the report).
    model_path
        The model file, to name the model (its header is read; nothing is unpickled).
    key
        The log's integrity key, to verify a keyed chain.
    format
        Input format, detected when ``None``.
    generated
        The "generated at" stamp (default: now, UTC).
    read_options
        Reader options (decryption keys, ``mapping=``, ``year=`` ...).
    db
        Read the events from this database (``sqlite:///...``, ``postgresql://...``) instead
        of ``paths``; its chain is verified from the rows.
    since, until
        Report on the records at or after ``since`` and before ``until`` only (decided on
        each record's time; the chain is still verified whole).
    trail
        The log as a command already read it with :func:`analyzer.pipeline.read_trail`
        (``verify=True, alert_records=True``); by default it is read here, once: one pass
        over the file serves the events, the recorded alerts and the chain's verdict.
    """
    files, result, integrity, trail = _read_source(
        paths, db=db, trail=trail, format=format, read_options=read_options, key=key,
        since=since, until=until)
    frame, recorded = _set_alerts_aside(
        result.frame, files, trail.alert_records if trail is not None else ())
    meta, threshold, privileged, drift, scores = _model_facts(model, model_path, scores, frame)
    self_fit = ""
    if scores is None and model is None and model_path is None and not recorded and len(frame):
        scores, self_fit = _self_fit(frame)
    if scores is not None:
        scores = _normalise_scores(scores)
    from analyzer import __version__

    return ReportData(
        frame=frame, source=db if db is not None else ", ".join(str(f) for f in files),
        integrity=integrity,
        scores=scores, recorded_alerts=tuple(recorded), model=meta, threshold=threshold,
        drift=drift,
        privileged=tuple(privileged) if privileged else None, rejected=len(result.rejected),
        reading=result, self_fit=self_fit,
        generated=generated or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
    )


def _read_source(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 db: str | None, trail: TrailRead | None, format: str | None,
                 read_options: Any, key: bytes | None, since: Any, until: Any
                 ) -> tuple[list[Any], Any, Integrity, TrailRead | None]:
    """The files, the read result, the chain's verdict and the trail read (``None`` for a
    database) of what the report is about: the log(s) at ``paths`` or the database ``db``."""
    from analyzer.sources import expand_paths

    if db is not None:
        from analyzer.query import Filter
        from analyzer.store import read_db_events, verify_db

        files: list[Any] = []
        result = read_db_events(db, Filter(since=since, until=until), include_alerts=True)
        integrity = _verdict(verify_db(db, key=key), keyed=bool(key))
    else:
        files = expand_paths(paths)
        if trail is None:
            trail = _read_once(files, format=format, read_options=read_options, key=key,
                               since=since, until=until)
        result = trail.reading
        integrity = _integrity_of(trail, files, key)
    return files, result, integrity, trail


def _set_alerts_aside(frame: pd.DataFrame, files: list[Any],
                      records: Iterable[tuple[str, dict[str, Any]]]
                      ) -> tuple[pd.DataFrame, list[Any]]:
    """The frame without the alert records the log already holds, and those alerts (of the
    files read, in their order)."""
    recorded: list[Any] = []
    if "kind" in frame.columns and len(frame):
        is_alert = (frame["kind"].astype("string") == "alert").fillna(False).to_numpy()
        if is_alert.any():
            frame = frame[~is_alert].reset_index(drop=True)
            for file in files:
                recorded.extend(alerts_of_records(
                    doc for path, doc in records if path == str(file)))
    return frame, recorded


def _model_facts(model: Any, model_path: str | os.PathLike[str] | None,
                 scores: pd.DataFrame | None, frame: pd.DataFrame
                 ) -> tuple[dict[str, Any] | None, float | None, Any, str, pd.DataFrame | None]:
    """What the model says in the report: its metadata, alert threshold, privileged actions
    and staleness warning, and the scores (the frame scored with ``model`` when not given)."""
    meta: dict[str, Any] | None = None
    threshold = None
    privileged = None
    drift = ""
    if model is not None:
        meta = dict(getattr(model, "metadata", {}) or {})
        try:
            threshold = float(model.threshold())
        except Exception:  # an unfitted or foreign model: no threshold line, not a failure
            logger.debug("model has no threshold", exc_info=True)
        privileged = (meta.get("params") or {}).get("privileged_actions")
        if scores is None:
            scores = model.score(frame)
        drift = _drift_warning(model, scores)
    if model_path is not None and meta is None:
        from analyzer.persistence import read_model_header

        meta = dict(read_model_header(model_path)[0].get("metadata") or {})
        privileged = (meta.get("params") or {}).get("privileged_actions")
    if meta and threshold is None:
        budget = (meta.get("params") or {}).get("alerts_per_day")
        per_day = meta.get("windows_per_day")
        if budget and per_day:
            threshold = alert_threshold(budget, per_day)
    return meta, threshold, privileged, drift, scores


def _read_once(files: list[Any], *, format: str | None, read_options: Any, key: bytes | None,
               since: Any, until: Any) -> TrailRead:
    """The report's one pass over its log(s): events with the alerts of audit logs kept,
    their alert records, and the chain's verdict of a single log."""
    from analyzer.pipeline import read_trail
    from analyzer.sources import ReaderOptions

    return read_trail(files, format=format, since=since, until=until, key=key,
                      options=ReaderOptions.of(read_options), verify=len(files) == 1,
                      alert_records=True)


def _integrity_of(trail: TrailRead, files: list[Any], key: bytes | None) -> Integrity:
    """The verdict on the chain of the one log read (several files: not judged here)."""
    if len(files) != 1 or trail.reading.formats[:1] != ("jsonl",) or not trail.chained:
        return Integrity("not_chained")
    if trail.verification is None:  # a read made without verifying: verify it now
        return check_integrity(Path(files[0]), key=key)
    return _verdict(trail.verification, keyed=bool(key))


def _self_fit(frame: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    """Score a log against its own earlier events, as ``score`` does without ``--model``."""
    from analyzer.errors import AnalyzerError
    from analyzer.model import AuditModel

    model = AuditModel()
    try:
        scores = model.fit_score(frame)
    except (AnalyzerError, ValueError):  # too few windows of any kind to learn from
        logger.info("the log is too small to score against itself", exc_info=True)
        return None, "too_little"
    meta = model.metadata
    if meta["n_windows"] - meta["n_windows_warm_up"] < _MIN_SELF_FIT_WINDOWS:
        return None, "too_little"  # all warm-up: every window would be "as usual"
    return scores, "fitted"


#: Windows past the warm-up a log needs before scoring it against itself means anything.
_MIN_SELF_FIT_WINDOWS = 2


def write_reports(log: str | os.PathLike[str], *, scores: pd.DataFrame | None = None,
                  model_path: str | os.PathLike[str] | None = None, key: bytes | None = None,
                  html_path: str | os.PathLike[str] | None = None,
                  text_path: str | os.PathLike[str] | None = None, lang: str = "en",
                  model: Any = None, top: int = 10, trail: TrailRead | None = None
                  ) -> ReportView:
    """Write the HTML and/or text report of ``log``; return the view they were made from.

    Parameters
    ----------
    log
        The audit log.
    scores
        Scores of the log's windows; ``None`` to score with ``model``, or to show the alerts
        recorded in the trail.
    model_path
        The model file the scores came from (named in the report; only its header is read).
    key
        The log's integrity key.
    html_path, text_path
        Where to write each report (``None``: not written).
    lang
        Report language, one of :data:`LANGUAGES`.
    model
        A loaded model, to score the log when no scores are given.
    top
        Rows in the "top" tables.
    trail
        ``log`` as already read (see :func:`load_report_data`): not read again.
    """
    get_locale(lang)  # an unknown language is an error before any work
    if top < 1:
        raise ConfigError(f"top must be at least 1, got {top}")
    data = load_report_data(log, scores=scores, model=model, model_path=model_path, key=key,
                            trail=trail)
    view = build_view(data, top=top, lang=lang)
    for path, render in ((html_path, render_html), (text_path, render_text)):
        if path is None:
            continue
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, render(view).encode("utf-8"), mode=USER_OUTPUT, fsync=False)
    return view
