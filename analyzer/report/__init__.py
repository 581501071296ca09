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

import contextlib
import dataclasses
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
from analyzer.report.gather import Gathering
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
                     until: Any = None, trail: TrailRead | None = None,
                     chunk_events: int | None = None) -> ReportData:
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
        of ``paths``; its chain is verified from the rows. Every read of it (and the
        verification) sees the rows as they were when the first began
        (:func:`analyzer.store.snapshot`).
    since, until
        Report on the records at or after ``since`` and before ``until`` only (decided on
        each record's time; the chain is still verified whole).
    trail
        The log as a command already read it with :func:`analyzer.pipeline.read_trail`
        (``verify=True, alert_records=True``); by default it is read here, once: one pass
        over the file serves the events, the recorded alerts and the chain's verdict.
    chunk_events
        Count the log's events (or the database's rows) in chunks of about this many as the
        pass reads them, never holding them all (:mod:`analyzer.report.gather`); the report
        is the same. ``None``: read the log whole.
    """
    from analyzer.features import DEFAULT_PRIVILEGED_ACTIONS
    from analyzer.report.alertview import ordered_alerts
    from analyzer.report.viewmodel import MAX_ALERTS

    if chunk_events is not None and chunk_events < 1:
        raise ConfigError(f"chunk_events must be at least 1, got {chunk_events}")
    meta, threshold, privileged = _model_meta(model, model_path)
    if scores is not None:
        scores = _normalise_scores(scores)
    gathering = Gathering(  # (a trail already read is one chunk)
        privileged or DEFAULT_PRIVILEGED_ACTIONS,
        chunk_events if trail is None else None,
        None if scores is None else ordered_alerts(scores, ())[:MAX_ALERTS])
    with contextlib.ExitStack() as held:  # a database's snapshot, until its last read
        stream = _scoring_in_the_pass(model, scores, gathering, held)
        files, result, integrity, recorded = _read_source(
            paths, db=db, trail=trail, format=format, read_options=read_options, key=key,
            since=since, until=until, gathering=gathering, held=held)
        drift, self_fit = "", ""
        if model is not None and scores is None:
            if stream is not None and gathering.kept is None and gathering.chunks:
                scores = model.score_table(stream.windows())  # no second read
            else:
                events = gathering.again()
                scores = model.score(events) if isinstance(events, pd.DataFrame) else \
                    model.score_chunks(events)
            drift = _drift_warning(model, scores)
        if scores is None and model is None and model_path is None and not recorded and \
                gathering.tally.n:
            scores, self_fit = _self_fit(gathering.again())
        if scores is not None:
            scores = _normalise_scores(scores)
        rows = gathering.gather_alerts(ordered_alerts(scores, recorded)[:MAX_ALERTS])
    from analyzer import __version__

    return ReportData(
        frame=None, tally=gathering.tally, alert_rows=tuple(rows),
        source=db if db is not None else ", ".join(str(f) for f in files),
        integrity=integrity,
        scores=scores, recorded_alerts=tuple(recorded), model=meta, threshold=threshold,
        drift=drift,
        privileged=tuple(privileged) if privileged else None, rejected=len(result.rejected),
        reading=result, self_fit=self_fit,
        generated=generated or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
    )


def _scoring_in_the_pass(model: Any, scores: pd.DataFrame | None, gathering: Gathering,
                         held: contextlib.ExitStack) -> Any:
    """With a fitted model to score a trail read in chunks: the window stream (held open in
    ``held``) that the pass feeds each chunk to, as :meth:`~analyzer.model.AuditModel.
    score_chunks` would after a second read (the same windows: the features do not depend
    on where chunks are cut). ``None`` otherwise."""
    extractor = getattr(model, "extractor_", None)
    if model is None or scores is not None or gathering.size is None or extractor is None:
        return None
    from analyzer.streaming import WindowStream

    stream = held.enter_context(WindowStream(extractor, fitting=False, details=True))
    gathering.also = stream.add
    return stream


def _read_source(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 db: str | None, trail: TrailRead | None, format: str | None,
                 read_options: Any, key: bytes | None, since: Any, until: Any,
                 gathering: Gathering, held: contextlib.ExitStack
                 ) -> tuple[list[Any], Any, Integrity, list[Any]]:
    """The files, the read result, the chain's verdict and the alerts recorded of what the
    report is about: the log(s) at ``paths`` or the database ``db`` (its snapshot open in
    ``held``), their events handed to ``gathering`` as they are read."""
    from analyzer.sources import expand_paths

    if db is not None:
        return [], *_read_database(db, key=key, since=since, until=until,
                                   gathering=gathering, held=held)
    files = expand_paths(paths)
    chunked = trail is None and gathering.size is not None
    if trail is None:
        trail = _read_once(files, format=format, read_options=read_options, key=key,
                           since=since, until=until,
                           chunk_events=gathering.size if chunked else None,
                           pieces=gathering if chunked else None)
    if chunked:
        if not gathering.chunks:  # nothing handed over: the columns of an empty read
            gathering(trail.reading.frame)
        gathering.reading_again(lambda: _read_chunks(
            files, size=gathering.size or 1, format=format, read_options=read_options,
            since=since, until=until))
    else:
        gathering(trail.reading.frame)
    return (files, trail.reading, _integrity_of(trail, files, key),
            _recorded(gathering, files, trail.alert_records))


def _read_database(db: str, *, key: bytes | None, since: Any, until: Any,
                   gathering: Gathering, held: contextlib.ExitStack
                   ) -> tuple[Any, Integrity, list[Any]]:
    """The read result, the chain's verdict and the alerts recorded of the database ``db``,
    its rows handed to ``gathering`` page by page (or whole, without a chunk size). Every
    read, and the verification, goes through one snapshot, open in ``held`` until the
    report's last read: rows shipped meanwhile are in none of them, so that the counts, the
    scores and the evidence agree."""
    from analyzer.query import Filter
    from analyzer.store import DatabaseEvents, query_db, snapshot, verify_db

    view = held.enter_context(snapshot(db))
    period = Filter(since=since, until=until)
    rows = DatabaseEvents(db, period, include_alerts=True, snapshot=view)
    if gathering.size is None:
        result = rows.read()
        gathering(result.frame)
    else:
        chunks = rows.chunks(gathering.size)
        for frame in chunks:
            gathering(frame)
        result = chunks.result
        if not gathering.chunks:  # no rows: the columns of an empty read
            gathering(result.frame)
        again = dataclasses.replace(rows, include_alerts=False)
        gathering.reading_again(lambda: again.chunks(gathering.size or 1))
    recorded: list[Any] = []
    if gathering.had_alerts:  # their records, as a file's pass keeps them
        recorded = alerts_of_records(
            orjson.loads(record) for batch in query_db(
                db, dataclasses.replace(period, kinds=("alert",)), snapshot=view)
            for record in batch.table.column("record").to_pylist())
    return result, _verdict(verify_db(db, key=key, snapshot=view), keyed=bool(key)), recorded


def _read_chunks(files: list[Any], *, size: int, format: str | None, read_options: Any,
                 since: Any, until: Any) -> Iterable[pd.DataFrame]:
    """The events once more, in chunks (an audit log's alert records left out)."""
    from analyzer.sources import ReaderOptions
    from analyzer.sources.chunks import read_chunks

    return read_chunks(files, size=size, format=format, since=since, until=until,
                       options=ReaderOptions.of(read_options))


def _recorded(gathering: Gathering, files: list[Any],
              records: Iterable[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The alerts the log already holds (of the files read, in their order), when the read
    found alert records among its events."""
    recorded: list[Any] = []
    if gathering.had_alerts:
        for file in files:
            recorded.extend(alerts_of_records(
                doc for path, doc in records if path == str(file)))
    return recorded


def _model_meta(model: Any, model_path: str | os.PathLike[str] | None
                ) -> tuple[dict[str, Any] | None, float | None, Any]:
    """What the model says in the report: its metadata, alert threshold and privileged
    actions."""
    meta: dict[str, Any] | None = None
    threshold = None
    privileged = None
    if model is not None:
        meta = dict(getattr(model, "metadata", {}) or {})
        try:
            threshold = float(model.threshold())
        except Exception:  # an unfitted or foreign model: no threshold line, not a failure
            logger.debug("model has no threshold", exc_info=True)
        privileged = (meta.get("params") or {}).get("privileged_actions")
    if model_path is not None and meta is None:
        from analyzer.persistence import read_model_header

        meta = dict(read_model_header(model_path)[0].get("metadata") or {})
        privileged = (meta.get("params") or {}).get("privileged_actions")
    if meta and threshold is None:
        budget = (meta.get("params") or {}).get("alerts_per_day")
        per_day = meta.get("windows_per_day")
        if budget and per_day:
            threshold = alert_threshold(budget, per_day)
    return meta, threshold, privileged


def _read_once(files: list[Any], *, format: str | None, read_options: Any, key: bytes | None,
               since: Any, until: Any, chunk_events: int | None = None,
               pieces: Gathering | None = None) -> TrailRead:
    """The report's one pass over its log(s): events with the alerts of audit logs kept
    (handed to ``pieces`` in chunks of ``chunk_events``, when given), their alert records,
    and the chain's verdict of a single log."""
    from analyzer.pipeline import read_trail
    from analyzer.sources import ReaderOptions

    return read_trail(files, format=format, since=since, until=until, key=key,
                      options=ReaderOptions.of(read_options), verify=len(files) == 1,
                      alert_records=True, chunk_events=chunk_events, pieces=pieces)


def _integrity_of(trail: TrailRead, files: list[Any], key: bytes | None) -> Integrity:
    """The verdict on the chain of the one log read (several files: not judged here)."""
    if len(files) != 1 or trail.reading.formats[:1] != ("jsonl",) or not trail.chained:
        return Integrity("not_chained")
    if trail.verification is None:  # a read made without verifying: verify it now
        return check_integrity(Path(files[0]), key=key)
    return _verdict(trail.verification, keyed=bool(key))


def _self_fit(events: pd.DataFrame | Iterable[pd.DataFrame]) -> tuple[pd.DataFrame | None, str]:
    """Score a log against its own earlier events, as ``score`` does without ``--model``
    (the events as one frame, or chunks of them)."""
    from analyzer.errors import AnalyzerError
    from analyzer.model import AuditModel

    model = AuditModel()
    try:
        scores = model.fit_score(events) if isinstance(events, pd.DataFrame) else \
            model.fit_score_chunks(events)
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
                  model: Any = None, top: int = 10, trail: TrailRead | None = None,
                  chunk_events: int | None = None) -> ReportView:
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
    chunk_events
        Count the events in chunks of about this many (see :func:`load_report_data`).
    """
    get_locale(lang)  # an unknown language is an error before any work
    if top < 1:
        raise ConfigError(f"top must be at least 1, got {top}")
    data = load_report_data(log, scores=scores, model=model, model_path=model_path, key=key,
                            trail=trail, chunk_events=chunk_events)
    view = build_view(data, top=top, lang=lang)
    for path, render in ((html_path, render_html), (text_path, render_text)):
        if path is None:
            continue
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, render(view).encode("utf-8"), mode=USER_OUTPUT, fsync=False)
    return view
