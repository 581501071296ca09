"""One entry point for the analyzer's runs: read a trail, fit, score, suppress, write back.

:func:`score_trail` and :func:`train_trail` are what the ``score``, ``train`` and ``demo``
commands, ``watch`` and the notebooks call; :func:`read_trail` reads a trail once for
everything a report needs (events, recorded alerts, the chain's verdict). They never
print: what a run did comes back as a small result (:class:`ScoreRun`, :class:`TrainRun`,
:class:`TrailRead`), and what it is doing goes to a ``progress`` callback as a
:class:`Step`, which the command line draws on a terminal.

A *source* is what to read: a path, a folder, a glob or several of them; the events of a
database (:class:`analyzer.store.DatabaseEvents`); a :class:`~analyzer.sources.ReadResult` a
caller already holds; or an events frame. Options
are keyword-only: ``chunk_events=N`` reads log files in chunks of about ``N`` events and
computes the features through :mod:`analyzer.streaming` (memory holds one chunk, not the
trail; same scores and alerts), and ``engine=`` runs the read and the features on a Dask
cluster (:class:`analyzer.engine.DaskEngine`, connected by the caller: the library never
reads the environment).

>>> import tempfile, os
>>> from analyzer.logger import AuditLogger
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> with AuditLogger(path) as audit:
...     _ = audit.log("login", user="alice", outcome="success", source_ip="10.0.0.7")
>>> trail = read_trail(path, verify=True)
>>> len(trail.reading.frame), trail.verification.ok
(1, True)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard, cast

import orjson
import pandas as pd

from analyzer.errors import ConfigError, SourceError
from analyzer.events import FORMULA_START, formula_safe
from analyzer.sources import (
    Block,
    Blocks,
    Line,
    ReaderOptions,
    ReadResult,
    block_lines,
    empty_frame,
    expand_paths,
    read_events,
)

if TYPE_CHECKING:
    from analyzer.alerts import Alert
    from analyzer.drift import DriftReport
    from analyzer.engine import DaskEngine, EngineProgress
    from analyzer.feedback import ExclusionResult
    from analyzer.integrity import VerifyReport
    from analyzer.model import AuditModel
    from analyzer.sources.chunks import ChunkedRead
    from analyzer.store import DatabaseEvents
    from analyzer.suppression import Suppressions, WindowFacts

__all__ = ["DEFAULT_CHUNK_EVENTS", "ScoreRun", "Step", "TrailRead", "TrainRun", "WriteBack",
           "read_trail", "score_trail", "train_trail", "write_scores"]

log = logging.getLogger(__name__)

Source: TypeAlias = ("str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | ReadResult"
                     " | pd.DataFrame | DatabaseEvents")

#: The chunk size (events) the command line reads JSONL and Parquet logs in by default: as
#: fast as reading them whole (benchmarks/README.md), with memory bounded by one chunk.
DEFAULT_CHUNK_EVENTS = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """What a run is doing, for a progress display.

    ``stage`` is ``"reading"`` (``done`` records, ``share`` of the input's bytes),
    ``"training"``, ``"scoring"`` or ``"training and scoring"`` (``done`` events),
    ``"windows"`` (read in chunks: ``done`` windows computed in ``elapsed`` seconds, ``share``
    of the blocks), or ``"scored"`` (``done`` windows in ``elapsed`` seconds).
    """

    stage: str
    done: int = 0
    total: int | None = None
    unit: str = "events"
    share: float | None = None
    elapsed: float | None = None


#: ``progress(step)``: told what a run is doing as it goes.
Progress = Callable[[Step], None]


def _quiet(step: Step) -> None:
    """No progress display."""


# -- reading -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TrailRead:
    """A trail read once: its events, and what the same pass found in an audit log.

    Attributes
    ----------
    reading
        The events and the read's accounting.
    verification
        The chain's verdict when asked for and the input is one chained audit log;
        ``None`` otherwise (several files, another format, a log that was never chained).
    chained
        False when the input is a log whose first record carries no chain link.
    alert_records
        The alert records the audit logs hold (parsed, ``event.kind == "alert"``), each
        with the file it is in, when asked.
    """

    reading: ReadResult
    verification: VerifyReport | None = None
    chained: bool = True
    alert_records: tuple[tuple[str, dict[str, Any]], ...] = ()


def read_trail(source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
               format: str | None = None, options: ReaderOptions | None = None,
               since: Any = None, until: Any = None, key: bytes | None = None,
               verify: bool = False, alert_records: bool = False,
               progress: Progress | None = None, chunk_events: int | None = None,
               pieces: Callable[[pd.DataFrame], None] | None = None) -> TrailRead:
    """Read a trail once for events, recorded alerts and the chain's verdict.

    Parameters
    ----------
    source
        Log files, folders or globs (see :func:`analyzer.sources.read_events`).
    format, options, since, until
        As in :func:`~analyzer.sources.read_events`.
    key
        The integrity key, to verify a keyed chain.
    verify
        Verify the chain, in the same pass, when the input is one audit log.
    alert_records
        Keep the audit logs' alerts, as rows of the frame (``kind == "alert"``) and as
        parsed records, in the same pass.
    progress
        Told the records read so far (:class:`Step` ``"reading"``).
    chunk_events, pieces
        Hand the events to ``pieces`` in frames of about ``chunk_events`` as the pass goes
        (see :func:`~analyzer.sources.read_events`), instead of holding them: the read's
        frame is then empty (the report aggregates the pieces in bounded memory).
    """
    files = expand_paths(source)
    found: list[tuple[str, dict[str, Any]]] = []
    verdict: dict[str, Any] = {}

    def tap(path: Path, blocks: Blocks) -> None:
        stream: Iterator[Block] = blocks
        if alert_records:
            stream = _collecting(blocks, found, str(path))
        if verify and len(files) == 1:
            verdict.update(_check_chain(path, blocks.lines(stream), key))
        for _ in stream:  # past where the chain check stopped: the alerts there count too
            pass

    base = ReaderOptions.of(options)
    with_alerts = dataclasses.replace(base, include_alerts=True)
    reading = read_events(files, format=format, since=since, until=until,
                          options=(lambda name: with_alerts if name == "jsonl" else base)
                          if alert_records else base,
                          tap=tap if verify or alert_records else None,
                          progress=_reading_progress(progress), rows=chunk_events,
                          pieces=pieces)
    return TrailRead(reading, verdict.get("report"), verdict.get("chained", True),
                     tuple(found))


def _reading_progress(progress: Progress | None) -> Callable[[int, float | None], None] | None:
    if progress is None:
        return None
    return lambda records, share: progress(Step("reading", records, share=share))


def _collecting(blocks: Iterator[Block], found: list[tuple[str, dict[str, Any]]],
                where: str) -> Iterator[Block]:
    """``blocks`` as they are, keeping the alert records among their lines (decided on the
    parsed ``event.kind``; the bytes only spare looking into the blocks without any)."""
    from analyzer.events import may_contain
    from analyzer.sources.jsonl import record_holding

    literal = b'"alert"'
    for data, end in blocks:
        if may_contain(data, literal):  # (what follows ``end`` is looked at again, no harm)
            for raw in block_lines(data, end):
                doc = record_holding(raw, literal) if raw is not None else None
                event = doc.get("event") if doc is not None else None
                if doc is not None and isinstance(event, dict) and event.get("kind") == "alert":
                    found.append((where, doc))
        yield data, end


def _check_chain(path: Path, lines: Iterator[Line], key: bytes | None) -> dict[str, Any]:
    """The chain's verdict on ``lines``, or that the log was never chained: a JSON log whose
    first record has no chain link (a damaged first line is still a broken chain)."""
    from analyzer.integrity import verify_lines

    blank: list[Line] = []
    for line in lines:
        raw = line[1]
        if raw is not None and not raw.strip():
            blank.append(line)
            continue
        try:
            doc = orjson.loads(raw) if raw is not None else {}
        except orjson.JSONDecodeError:
            doc = {}
        doc = doc if isinstance(doc, dict) else {}
        event = doc.get("event")
        if doc and not (isinstance(event, dict) and "hash" in event):
            return {"chained": False}
        blank.append(line)
        break
    return {"report": verify_lines(path, itertools.chain(blank, lines), key=key)}


def _reading(source: Source, *, format: str | None, options: ReaderOptions | None,
             since: Any, until: Any, progress: Progress) -> ReadResult:
    if isinstance(source, ReadResult):
        return source
    if isinstance(source, pd.DataFrame):
        return ReadResult(source)
    if _database(source):
        return source.read()
    return read_events(_files(source), format=format, since=since, until=until, options=options,
                       progress=_reading_progress(progress))


# -- training ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TrainRun:
    """What :func:`train_trail` did: the read, the alerted windows left out, the model."""

    reading: ReadResult
    model: AuditModel
    left_out: ExclusionResult | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """The events the model was fitted on."""
        return self.left_out.frame if self.left_out is not None else self.reading.frame


def train_trail(source: Source, model: AuditModel | None = None, *,
                format: str | None = None, options: ReaderOptions | None = None,
                since: Any = None, until: Any = None,
                exclude_alerts: Iterable[str | os.PathLike[str]] | None = None,
                chunk_events: int | None = None, engine: DaskEngine | None = None,
                progress: Progress | None = None,
                on_read: Callable[[ReadResult], None] | None = None) -> TrainRun:
    """Read a trail and fit ``model`` (default: an :class:`~analyzer.model.AuditModel` with
    its default parameters) on it.

    Parameters
    ----------
    exclude_alerts
        Trail files whose alerts and feedback say which windows to leave out: those of
        alerts not cleared (see :func:`analyzer.feedback.leave_out_alerts`). Encrypted
        records are opened with ``options.decrypt_keys``. They are read first; the events
        are then left out as they are read (chunk by chunk when read in chunks).
    chunk_events
        Read log files in chunks of about this many events (see the module's
        documentation); ``None``: read them whole. On an ``engine``, a worker reads a file
        it is given whole (a format without byte ranges, a gzip file) in pieces of this size.
    engine
        Read and compute the features on this connected Dask engine (the caller closes it).
    on_read
        Called with the read's result as soon as it is read (before fitting; read in
        chunks, once the last chunk is read).
    """
    from analyzer.model import AuditModel

    progress = progress or _quiet
    model = model if model is not None else AuditModel()
    how = {"format": format, "options": options, "since": since, "until": until}
    if engine is not None:
        if exclude_alerts is not None:
            raise ConfigError("leaving alerted windows out runs locally, not on an engine")
        reading = engine.fit(model, chunk_events=chunk_events,
                             progress=_engine_steps(progress), **_engine_read(source, **how))
        if on_read is not None:
            on_read(reading)
        return TrainRun(reading, model)
    # the alerts to leave out are read first (a pass over their trail that holds the alert
    # and verdict records only), so that the events can go chunk by chunk
    leaving = None if exclude_alerts is None else _LeaveOut(list(exclude_alerts), options)
    if _streams(source, chunk_events):
        assert chunk_events is not None
        chunks = _chunks(source, chunk_events, progress, **how)
        windows = _Windows(progress)
        model.fit_chunks(_announced(chunks, "training", progress, on_read, windows,
                                    leaving), progress=windows)
        assert chunks.result is not None  # set once the chunks are read
        return TrainRun(chunks.result, model,
                        None if leaving is None else leaving.result(empty_frame()))
    reading = _reading(source, **how, progress=progress)
    if on_read is not None:
        on_read(reading)
    left_out = None
    if leaving is not None:
        left_out = leaving.result(leaving(reading.frame))
    frame = left_out.frame if left_out is not None else reading.frame
    progress(Step("training", len(frame)))
    return TrainRun(reading, model.fit(frame), left_out)


def _streams(source: Source, chunk_events: int | None) -> bool:
    """Is ``source`` read in chunks: log files, with a chunk size."""
    if chunk_events is not None and chunk_events < 1:
        raise ConfigError(f"chunk_events must be at least 1, got {chunk_events}")
    return chunk_events is not None and not isinstance(source, ReadResult | pd.DataFrame)


def _database(source: object) -> TypeGuard[DatabaseEvents]:
    """Is ``source`` the events of a database (:class:`analyzer.store.DatabaseEvents`)?"""
    # one exists only once the store is imported: paths never import it
    store = sys.modules.get("analyzer.store")
    return store is not None and isinstance(source, store.DatabaseEvents)


def _files(source: Source) -> str | os.PathLike[str] | Iterable[str | os.PathLike[str]]:
    """``source`` as the log files it names: neither events already read nor a database."""
    assert not isinstance(source, ReadResult | pd.DataFrame)
    assert not _database(source)
    return cast("str | os.PathLike[str] | Iterable[str | os.PathLike[str]]", source)


def _chunks(source: Source, size: int, progress: Progress, *, format: str | None,
            options: ReaderOptions | None, since: Any, until: Any) -> ChunkedRead:
    from analyzer.sources.chunks import read_chunks

    if _database(source):
        return source.chunks(size)
    return read_chunks(_files(source), size=size, format=format, since=since, until=until,
                       options=options, progress=_reading_progress(progress))


class _Windows:
    """Tells ``progress`` the windows computed so far (phase 2 of a read in chunks), with
    their rate since the read ended."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.started = time.monotonic()

    def __call__(self, done: int, share: float) -> None:
        self.progress(Step("windows", done, unit="windows", share=share,
                           elapsed=time.monotonic() - self.started))


def _engine_steps(progress: Progress) -> EngineProgress:
    """The engine's progress as :class:`Step` s: records read (``"reading"``, the share of
    partitions mapped), then windows computed (``"windows"``, their rate from the start of
    phase 2, which the engine tells with 0 windows)."""
    from analyzer.engine import EngineProgress

    class Steps(EngineProgress):
        def __init__(self) -> None:
            self.blocks = _Windows(progress)

        def reading(self, records: int, share: float) -> None:
            progress(Step("reading", records, share=share))

        def windows(self, done: int, share: float) -> None:
            if not done and not share:
                self.blocks.started = time.monotonic()
            self.blocks(done, share)

    return Steps()


def _announced(chunks: ChunkedRead, stage: str, progress: Progress,
               on_read: Callable[[ReadResult], None] | None,
               windows: _Windows, leaving: _LeaveOut | None = None,
               facts: WindowFacts | None = None) -> Iterator[pd.DataFrame]:
    """The frames of ``chunks`` (less what ``leaving`` leaves out; what suppression rules
    need of them gathered into ``facts``); once the last is read, the read's result goes to
    ``on_read`` and the stage that follows to ``progress``."""
    for frame in chunks:
        kept = frame if leaving is None else leaving(frame)
        if facts is not None:
            facts.add(kept)
        if len(kept):
            yield kept
    assert chunks.result is not None
    if on_read is not None:
        on_read(chunks.result)
    left_out = 0 if leaving is None else leaving.removed
    progress(Step(stage, chunks.result.n_used - left_out))
    windows.started = time.monotonic()


def _engine_read(source: Source, *, format: str | None, options: ReaderOptions | None,
                 since: Any, until: Any) -> dict[str, Any]:
    """What an engine reads: the inputs, their format, the period, the reader options and,
    apart, the decryption keys (the engine decides where they may be used)."""
    if isinstance(source, ReadResult | pd.DataFrame) or _database(source):
        raise ConfigError("an engine reads log files, folders and URLs, not events already "
                          "read or a database")
    given = ReaderOptions.of(options).given()
    keys = tuple(given.pop("decrypt_keys", ()))
    files = _files(source)
    inputs = [os.fspath(files)] if isinstance(files, str | os.PathLike) \
        else [os.fspath(s) for s in files]
    return {"inputs": inputs, "format": format, "since": since, "until": until,
            "options": given, "decrypt_keys": keys}


class _LeaveOut:
    """The events of alerted windows not cleared, left out of a training frame or of each
    chunk of one (see :func:`analyzer.feedback.leave_out_alerts`): the windows are read from
    ``trail`` once, and each event is judged on its own, so that chunks lose what a whole
    read loses."""

    def __init__(self, trail: list[str | os.PathLike[str]],
                 options: ReaderOptions | None) -> None:
        from analyzer.feedback import read_alerts, read_feedback, training_exclusions

        unseal = None
        if options is not None and options.decrypt_keys:
            from analyzer.crypto import RecordCipher

            unseal = RecordCipher(keys=options.decrypt_keys).unseal
        self.windows = training_exclusions(read_alerts(trail, unseal=unseal),
                                           read_feedback(trail, unseal=unseal))
        self.removed = 0

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` without the events of the windows (a new frame; counted)."""
        from analyzer.feedback import in_windows

        drop = in_windows(frame, self.windows)
        self.removed += int(drop.sum())
        return frame.loc[~drop].reset_index(drop=True)

    def result(self, kept: pd.DataFrame) -> ExclusionResult:
        """What was left out, with the events kept (an empty frame when read in chunks)."""
        from analyzer.feedback import ExclusionResult

        result = ExclusionResult(frame=kept, windows=self.windows,
                                 events_removed=self.removed)
        log.info("%s", result.summary())
        return result


# -- scoring -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class WriteBack:
    """Where a run's alerts are recorded: an audit log, continuing its chain.

    ``key`` is the log's integrity key; ``encryption_key`` seals the alerts in an encrypted
    trail (they name users and addresses). ``model_id``/``model_version`` name the model in
    each alert (default: from the model's metadata).
    """

    destination: Path
    key: bytes | None = None
    encryption_key: bytes | None = None
    model_id: str | None = None
    model_version: str | None = None
    #: the ids of the alerts the destination holds, when the caller knows them; by default
    #: the read found them when the destination is the one file scored, else it is read
    known_ids: frozenset[str] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ScoreRun:
    """What :func:`score_trail` did.

    Attributes
    ----------
    reading
        The read's result (its accounting, its rejected lines).
    model
        The model that scored (fitted here when ``fitted``).
    fitted
        True when the model was fitted on the input itself (no model was given).
    model_id, model_version
        How the alerts name the model.
    scores
        One row per window (DESIGN contract 6).
    alerts
        Every alert, highest risk first, suppressed ones included (``suppressed``).
    written
        The alerts recorded in the trail (an alert already there is not written again).
    destination
        Where they were written; ``None`` when not written back.
    drift
        The model's drift against these windows (``None`` for a model fitted here).
    notes
        What the suppression rules say about themselves (expired, never matching...).
    """

    reading: ReadResult
    model: AuditModel
    fitted: bool
    model_id: str
    model_version: str
    scores: pd.DataFrame
    alerts: tuple[Alert, ...] = ()
    written: tuple[Alert, ...] = ()
    destination: Path | None = None
    drift: DriftReport | None = None
    notes: tuple[str, ...] = ()

    @property
    def active(self) -> list[Alert]:
        """The alerts no rule suppressed."""
        return [a for a in self.alerts if not a.suppressed]

    @property
    def suppressed(self) -> list[Alert]:
        return [a for a in self.alerts if a.suppressed]


def score_trail(source: Source, model: AuditModel | None = None, *,
                format: str | None = None, options: ReaderOptions | None = None,
                since: Any = None, until: Any = None, alerts_per_day: float | None = None,
                max_alert_share: float | None = None,
                suppressions: Suppressions | None = None,
                scores_path: Path | None = None, raw_csv: bool = False,
                write_back: WriteBack | Callable[[ReadResult], WriteBack | None] | None = None,
                check_drift: bool = True, chunk_events: int | None = None,
                engine: DaskEngine | None = None, progress: Progress | None = None,
                on_read: Callable[[ReadResult], None] | None = None,
                on_scored: Callable[[ScoreRun], None] | None = None) -> ScoreRun:
    """Score a trail's windows, and record its alerts in the trail.

    Parameters
    ----------
    source
        What to read (see the module's documentation).
    model
        A fitted :class:`~analyzer.model.AuditModel`; ``None`` fits one on the input itself,
        each window judged against the events before it.
    format, options, since, until
        How to read ``source`` (see :func:`analyzer.sources.read_events`).
    alerts_per_day, max_alert_share
        This run's alert budget (default: the model's).
    suppressions
        Known-benign patterns; the alerts they match are kept, marked suppressed.
    scores_path, raw_csv
        Write the scores file here (see :func:`write_scores`).
    write_back
        Record the alerts in this audit log; ``None``: only return them. A function of the
        read's result chooses once the input is read (say, the input itself when it turns
        out to be a chained audit log); it is asked only when there are alerts.
    check_drift
        Compare the windows with the model's training data (:func:`analyzer.drift.drift_report`).
    chunk_events
        Read log files in chunks of about this many events (see the module's documentation);
        ``None``: read them whole. Suppression rules that match on actions or addresses
        gather what they need of the events as the chunks go by. On an ``engine``, a
        worker reads a file it is given whole (a format without byte ranges, a gzip file)
        in pieces of this size.
    engine
        Read and compute the features on this connected Dask engine (the caller closes it);
        it needs a fitted ``model``.
    progress
        Told what the run is doing (:class:`Step`).
    on_read
        Called with the read's result as soon as it is read (before scoring; read in
        chunks, once the last chunk is read).
    on_scored
        Called with the run once scored, before anything is written (``written`` empty).
    """
    from analyzer.alerts import alerts_from_scores

    progress = progress or _quiet
    started = time.monotonic()
    reading, model, scores, fitted, events = _read_and_score(
        source, model, {"format": format, "options": options, "since": since, "until": until},
        alerts_per_day=alerts_per_day, max_alert_share=max_alert_share,
        suppressions=suppressions, chunk_events=chunk_events, engine=engine,
        progress=progress, on_read=on_read)
    meta = model.metadata
    model_id = "self-fit" if fitted else str(meta.get("model_id", "unknown"))
    model_version = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) if fitted \
        else str(meta.get("created", ""))
    notes: tuple[str, ...] = ()
    if suppressions is not None:
        from analyzer.suppression import apply_suppressions

        notes = tuple(suppressions.notes())
        scores = apply_suppressions(
            scores, suppressions, events=events if isinstance(events, pd.DataFrame) else None,
            facts=None if isinstance(events, pd.DataFrame) else events)
    progress(Step("scored", len(scores), unit="windows", elapsed=time.monotonic() - started))
    drift = None
    if check_drift and not fitted:
        from analyzer.drift import drift_report

        drift = drift_report(model, scores)
    alerts = tuple(alerts_from_scores(scores))
    if on_scored is not None:
        on_scored(ScoreRun(reading, model, fitted, model_id, model_version, scores, alerts,
                           drift=drift, notes=notes))
    if scores_path is not None:
        write_scores(scores, scores_path, raw=raw_csv)
    target = write_back(reading) if callable(write_back) and alerts else write_back
    written: tuple[Alert, ...] = ()
    if alerts and isinstance(target, WriteBack):
        written = _write_back(alerts, target, model_id, model_version,
                              reading.alert_ids if _is_input(target.destination, source)
                              else None)
    return ScoreRun(reading, model, fitted, model_id, model_version, scores, alerts, written,
                    target.destination if isinstance(target, WriteBack) else None, drift,
                    notes)


def _read_and_score(source: Source, model: AuditModel | None, how: dict[str, Any], *,
                    alerts_per_day: float | None, max_alert_share: float | None,
                    suppressions: Suppressions | None, chunk_events: int | None,
                    engine: DaskEngine | None, progress: Progress,
                    on_read: Callable[[ReadResult], None] | None
                    ) -> tuple[ReadResult, AuditModel, pd.DataFrame, bool,
                               pd.DataFrame | WindowFacts | None]:
    """Read and score ``source`` on the engine, in chunks or whole: the read, the model,
    the scores, whether the model was fitted here, and the events when they were held (read
    in chunks: what ``suppressions`` need of them, gathered as they went by)."""
    if engine is not None:
        if model is None:
            raise ConfigError("an engine scores with a fitted model; fitting on the input "
                              "itself runs locally")
        if suppressions is not None and any(r.needs_events for r in suppressions.rules):
            # refused before the work: the events stay on the workers
            raise ConfigError("suppression rules on 'action' or 'source' look at the "
                              "events, which stay on the Dask workers; run them locally")
        if max_alert_share is not None:
            model.max_alert_share = max_alert_share
        scores, reading = engine.score(model, alerts_per_day=alerts_per_day,
                                       chunk_events=chunk_events,
                                       progress=_engine_steps(progress),
                                       **_engine_read(source, **how))
        if on_read is not None:
            on_read(reading)
        return reading, model, scores, False, None
    if _streams(source, chunk_events):
        assert chunk_events is not None
        chunks = _chunks(source, chunk_events, progress, **how)
        stage = "scoring" if model is not None else "training and scoring"
        windows = _Windows(progress)
        facts = _gathering(suppressions, model)
        model, scores, fitted = _scored(_announced(chunks, stage, progress, on_read, windows,
                                                   facts=facts),
                                        model, alerts_per_day, max_alert_share, progress,
                                        windows)
        assert chunks.result is not None
        return chunks.result, model, scores, fitted, facts
    reading = _reading(source, **how, progress=progress)
    if on_read is not None:
        on_read(reading)
    model, scores, fitted = _scored(reading.frame, model, alerts_per_day, max_alert_share,
                                    progress)
    return reading, model, scores, fitted, reading.frame


def _gathering(suppressions: Suppressions | None, model: AuditModel | None
               ) -> WindowFacts | None:
    """What the suppression rules on actions and addresses will need of the windows
    alerted, to gather as the chunks go by (the alerts are known only once every window is
    scored, and a second read of the trail could find events written since), per step of
    ``model``'s windows (the default model's when it is fitted on the input)."""
    if suppressions is None or not any(r.needs_events for r in suppressions.rules):
        return None
    from analyzer.features import FeatureExtractor
    from analyzer.model import AuditModel
    from analyzer.suppression import WindowFacts

    params = model if model is not None else AuditModel()
    spec = FeatureExtractor(window=params.window, step=params.step).stats_spec(fitting=True)
    return WindowFacts(suppressions.rules, step=spec.step)


def _scored(events: pd.DataFrame | Iterator[pd.DataFrame], model: AuditModel | None,
            alerts_per_day: float | None, max_alert_share: float | None, progress: Progress,
            windows: _Windows | None = None) -> tuple[AuditModel, pd.DataFrame, bool]:
    """Score ``events`` (a frame, or chunks of one) with ``model``, or fit one on them."""
    from analyzer.model import AuditModel

    if model is not None:
        if max_alert_share is not None:
            model.max_alert_share = max_alert_share
        if isinstance(events, pd.DataFrame):
            progress(Step("scoring", len(events)))
            return model, model.score(events, alerts_per_day=alerts_per_day), False
        return model, model.score_chunks(events, alerts_per_day=alerts_per_day,
                                         progress=windows), False
    params: dict[str, Any] = {}  # what the user chose; the model's defaults otherwise
    if alerts_per_day is not None:
        params["alerts_per_day"] = alerts_per_day
    if max_alert_share is not None:
        params["max_alert_share"] = max_alert_share
    model = AuditModel(**params)
    if isinstance(events, pd.DataFrame):
        progress(Step("training and scoring", len(events)))
        return model, model.fit_score(events), True
    return model, model.fit_score_chunks(events, progress=windows), True


def _is_input(destination: Path, source: Source) -> bool:
    """Is ``destination`` the one file ``source`` named?"""
    if isinstance(source, ReadResult | pd.DataFrame) or _database(source):
        return False
    return expand_paths(_files(source)) == [destination]


def _write_back(alerts: tuple[Alert, ...], target: WriteBack, model_id: str,
                model_version: str, read_ids: frozenset[str] | None) -> tuple[Alert, ...]:
    """Record ``alerts`` not already in the target; ``read_ids``: the alert ids the read
    found when the target is the log just read (no second pass over the trail for them)."""
    from analyzer.alerts import write_alerts
    from analyzer.logger import AuditLogger

    known = target.known_ids if target.known_ids is not None else read_ids
    with AuditLogger(target.destination, key=target.key, name="audit.analyzer",
                     service="audit-analyzer", encryption_key=target.encryption_key) as audit:
        return tuple(write_alerts(alerts, audit, model_id=target.model_id or model_id,
                                  model_version=target.model_version or model_version,
                                  skip_ids=None if known is None else set(known)))


def write_scores(scores: pd.DataFrame, path: Path, *, raw: bool = False) -> None:
    """The scores file (DESIGN contract 6): CSV, or Parquet by extension.

    In CSV, text a spreadsheet would run as a formula (an entity named ``=cmd|...``) gets a
    leading ``'`` unless ``raw`` (see :func:`~analyzer.events.formula_safe`).
    """
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".txt", ""):
        raise ConfigError(f"{path}: scores file must end in .csv or .parquet")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix in (".parquet", ".pq"):
            scores.to_parquet(path, index=False)
        else:
            import pyarrow as pa
            import pyarrow.csv as pacsv

            if not raw:
                scores = _formula_safe_text(scores)
            # arrow's writer: six times faster than pandas' on wide float frames
            pacsv.write_csv(pa.Table.from_pandas(scores, preserve_index=False), path)
    except OSError as exc:  # arrow's errors do not carry the path: name it here
        raise SourceError(f"{path}: cannot write the scores: {exc.strerror or exc}") from None


def _formula_safe_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with :func:`formula_safe` applied to its text columns (numbers untouched)."""
    out = frame
    for name in frame.columns:
        column = frame[name]
        if not (column.dtype == object or isinstance(column.dtype, pd.CategoricalDtype |
                                                      pd.StringDtype)):
            continue
        text = column.astype("string")
        risky = text.str.match(FORMULA_START.pattern, na=False)
        if risky.any():
            if out is frame:
                out = frame.copy()
            out[name] = text.where(~risky, text.map(formula_safe, na_action="ignore"))
    return out
