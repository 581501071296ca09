"""Prometheus metrics: the trail's health, shipping and the analyzer's alerts.

:class:`AuditMetrics` holds the project's metrics in one Prometheus registry. The long-running
commands serve it (``watch`` and ``ship`` with ``--metrics-address``); an application that
already exposes ``/metrics`` passes its own registry and gives the object to its logger::

    metrics = AuditMetrics(registry=prometheus_client.REGISTRY)
    audit = AuditLogger("audit.jsonl", service="api", metrics=metrics)

``prometheus-client`` is the optional ``observability`` extra, imported when an
:class:`AuditMetrics` is made: the logger and the rest of the library never import it.

Names follow Prometheus' conventions (``audit_analyzer_`` prefix, ``_total`` counters, base
units, ``_seconds``). Labels carry only low-cardinality values the project controls: level,
outcome, service, entity *type*, destination, feature family. No label carries a user name or
an address: entity names stay in the trail. Values read from the log (service names) are
bounded, so a forged record cannot blow up the series count.

=========================================================  =============================
metric                                                     labels
=========================================================  =============================
``audit_analyzer_events_written_total``                    service, level, outcome
``audit_analyzer_chain_head_sequence``                     (none)
``audit_analyzer_chain_verified_sequence``                 (none)
``audit_analyzer_chain_intact``                            (none)
``audit_analyzer_chain_last_verification_timestamp_seconds``  (none)
``audit_analyzer_windows_scored_total``                    entity_type
``audit_analyzer_window_risk_score``  (histogram, 0-100)   entity_type
``audit_analyzer_alerts_total``                            entity_type
``audit_analyzer_model_age_seconds``                       (none)
``audit_analyzer_model_drift_psi``                         entity_type, family
``audit_analyzer_ship_backlog_events``                     destination
``audit_analyzer_ship_backlog_seconds``                    destination
``audit_analyzer_ship_backlog_bytes``                      destination
``audit_analyzer_ship_delivered_events_total``             destination
``audit_analyzer_ship_batches_total``                      destination
``audit_analyzer_ship_retried_events_total``               destination
``audit_analyzer_ship_dead_letters_total``                 destination
=========================================================  =============================
"""

from __future__ import annotations

import glob
import ipaddress
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyzer.errors import ConfigError
from analyzer.files import last_line
from analyzer.series import is_side_file

if TYPE_CHECKING:
    import pandas as pd

    from analyzer.sinks.shipper import Shipper

__all__ = ["DEFAULT_ADDRESS", "AuditMetrics", "observed_scorer", "parse_address", "serve"]

#: Where ``--metrics-address`` binds when only a port (or nothing) is given: loopback.
DEFAULT_ADDRESS = ("127.0.0.1", 9464)

INSTALL_HINT = ("Prometheus metrics need prometheus-client, an optional extra: "
                "pip install 'audit-analyzer[observability]'")

_log = logging.getLogger(__name__)

_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
_OUTCOMES = frozenset({"success", "failure", "unknown"})
_ENTITY_TYPES = frozenset({"user", "source_ip"})
#: At most this many distinct services get their own series; later ones count as "other".
MAX_SERVICES = 64
_SERVICE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
#: Risk score (0-100) buckets of the window score histogram.
RISK_BUCKETS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return prometheus_client


class AuditMetrics:
    """The project's Prometheus metrics, in ``registry`` (a new one by default).

    Feed it from the writer (``AuditLogger(metrics=...)`` calls :meth:`written`), from a
    live verification (:class:`~analyzer.chain_monitor.ChainMonitor` with ``metrics=``),
    from scoring (:meth:`scored`, :meth:`alerted`, :meth:`set_drift`, :meth:`set_model`)
    and from shippers (:meth:`watch_shipper`, read at scrape time).
    """

    def __init__(self, registry: Any = None) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        reg = self.registry
        self.events_written = prom.Counter(
            "audit_analyzer_events_written", "Audit events written to the trail, by the "
            "writing service, level and outcome.", ["service", "level", "outcome"],
            registry=reg)
        self.chain_head = prom.Gauge(
            "audit_analyzer_chain_head_sequence",
            "Sequence number of the last record of the audit chain.", registry=reg)
        # Verification and model gauges appear with their first value: an application
        # that only writes must not report a chain that is "not intact" or a model's age.
        self._prom = prom
        self._verification: tuple[Any, Any, Any] | None = None
        self.windows_scored = prom.Counter(
            "audit_analyzer_windows_scored", "Window scorings by entity type (an open window "
            "is re-scored as its events arrive).", ["entity_type"], registry=reg)
        self.risk = prom.Histogram(
            "audit_analyzer_window_risk_score", "Risk score (0-100) of scored windows, by "
            "entity type.", ["entity_type"], buckets=RISK_BUCKETS, registry=reg)
        self.alerts = prom.Counter(
            "audit_analyzer_alerts", "Alerts the analyzer raised (first alert of a window; "
            "updates not counted), by entity type.", ["entity_type"], registry=reg)
        self.drift = prom.Gauge(
            "audit_analyzer_model_drift_psi", "Largest population stability index of the "
            "features of a family, recent windows against the training windows (over 0.25: "
            "a significant shift).", ["entity_type", "family"], registry=reg)
        self._services: set[str] = set()
        self._lock = threading.Lock()
        self._training_end: float | None = None
        self._model_age_gauge: Any = None

    # -- the trail -------------------------------------------------------------------------

    def written(self, counts: Mapping[tuple[Any, Any], int], sequence: int,
                service: str | None = None) -> None:
        """Records written, by ``(level, outcome)``, and the chain head after them.

        The logger's hook (see :class:`~analyzer.logger.AuditLogger`); levels may be
        :class:`~analyzer.events.Level` members or ECS strings.
        """
        name = self._service_label(service)
        for (level, outcome), n in counts.items():
            level = str(getattr(level, "label", level))
            outcome = str(outcome)
            self.events_written.labels(
                name, level if level in _LEVELS else "other",
                outcome if outcome in _OUTCOMES else "other").inc(n)
        self.chain_head.set(sequence)

    def verified(self, sequence: int, *, intact: bool, at: float | None = None) -> None:
        """The outcome of a verification up to ``sequence``."""
        with self._lock:
            if self._verification is None:
                gauge, reg = self._prom.Gauge, self.registry
                self._verification = (
                    gauge("audit_analyzer_chain_verified_sequence", "Sequence number of the "
                          "last record whose chain link was verified.", registry=reg),
                    gauge("audit_analyzer_chain_intact", "1 while every verified record "
                          "holds in the hash chain, 0 once one does not.", registry=reg),
                    gauge("audit_analyzer_chain_last_verification_timestamp_seconds",
                          "Unix time of the last successful verification of the chain.",
                          registry=reg))
        verified, intact_gauge, verified_at = self._verification
        verified.set(sequence)
        intact_gauge.set(1 if intact else 0)
        if intact:
            verified_at.set(time.time() if at is None else at)

    def _service_label(self, service: str | None) -> str:
        if not service:
            return "none"
        if service in self._services:
            return service
        if not _SERVICE.fullmatch(service) or _looks_like_address(service):
            return "other"
        with self._lock:
            if len(self._services) >= MAX_SERVICES:
                return "other"
            self._services.add(service)
        return service

    # -- the analyzer ----------------------------------------------------------------------

    def scored(self, scores: pd.DataFrame) -> None:
        """A scores frame (DESIGN contract 6): windows scored, and their risk scores."""
        if scores.empty:
            return
        etypes = scores["entity_type"].astype(str)
        for etype, n in etypes.value_counts().items():
            self.windows_scored.labels(_entity_type(etype)).inc(int(n))
        if "risk_score" in scores.columns:
            risk = scores["risk_score"].astype(float).to_numpy()
            for etype, value in zip(etypes, risk, strict=True):
                if not math.isnan(value):
                    self.risk.labels(_entity_type(etype)).observe(float(value))

    def alerted(self, rows: pd.DataFrame) -> None:
        """Alert rows as ``Watcher`` reports them (``update`` True rows are not counted)."""
        if rows.empty:
            return
        first = rows[~rows["update"].astype(bool)] if "update" in rows.columns else rows
        for etype, n in first["entity_type"].astype(str).value_counts().items():
            self.alerts.labels(_entity_type(etype)).inc(int(n))

    def set_model(self, metadata: Mapping[str, Any]) -> None:
        """The scoring model's metadata: its age is measured from ``training_end``."""
        end = metadata.get("training_end")
        try:
            stamp = datetime.fromisoformat(str(end).replace("Z", "+00:00")) if end else None
        except ValueError:
            stamp = None
        if stamp is not None and stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        self._training_end = None if stamp is None else stamp.timestamp()
        with self._lock:
            if self._training_end is not None and self._model_age_gauge is None:
                self._model_age_gauge = self._prom.Gauge(
                    "audit_analyzer_model_age_seconds",
                    "Seconds since the end of the scoring model's training data.",
                    registry=self.registry)
                self._model_age_gauge.set_function(self._model_age)

    def _model_age(self) -> float:
        if self._training_end is None:
            return math.nan
        return max(0.0, time.time() - self._training_end)

    def set_drift(self, features: pd.DataFrame) -> None:
        """The features table of a :class:`~analyzer.drift.DriftReport`: the largest PSI of
        each (entity type, feature family); families without a PSI are left as they were."""
        from analyzer.features import FEATURES

        family = {f.name: f.family for f in FEATURES}
        rows = features.dropna(subset=["psi"])
        if rows.empty:
            return
        rows = rows.assign(family=rows["feature"].map(family).fillna("other"))
        for (etype, fam), psi in rows.groupby(["entity_type", "family"])["psi"].max().items():
            self.drift.labels(_entity_type(str(etype)), str(fam)).set(float(psi))

    # -- shipping --------------------------------------------------------------------------

    def watch_shipper(self, shipper: Shipper) -> None:
        """Report a :class:`~analyzer.sinks.shipper.Shipper`'s counts and backlog, read
        from it at each scrape."""
        self.registry.register(_ShipperCollector(shipper))


def _entity_type(value: str) -> str:
    return value if value in _ENTITY_TYPES else "other"


def _looks_like_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class _ShipperCollector:
    """Shipping metrics of one shipper, computed when Prometheus scrapes."""

    def __init__(self, shipper: Shipper) -> None:
        self.shipper = shipper

    def describe(self) -> list[Any]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.shipper.stats()
        name = stats.destination
        events, seconds = backlog(self.shipper.log_path, stats.last_sequence, stats.position)
        for metric, text, value in (
                ("audit_analyzer_ship_backlog_events", "Records in the log not yet shipped "
                 "to the destination.", events),
                ("audit_analyzer_ship_backlog_seconds", "Age of the oldest record not yet "
                 "shipped to the destination (0 when caught up).", seconds),
                ("audit_analyzer_ship_backlog_bytes", "Bytes of the log not yet read by the "
                 "shipper.", stats.lag_bytes)):
            family = GaugeMetricFamily(metric, text, labels=["destination"])
            family.add_metric([name], value)
            yield family
        for metric, text, value in (
                ("audit_analyzer_ship_delivered_events", "Records the destination took.",
                 stats.delivered),
                ("audit_analyzer_ship_batches", "Batches the destination took.",
                 stats.batches),
                ("audit_analyzer_ship_retried_events", "Record sends that had to be "
                 "repeated (the destination was down or throttling).", stats.retried),
                ("audit_analyzer_ship_dead_letters", "Records the destination refused for "
                 "good, set aside in the dead-letter file.", stats.rejected)):
            family = CounterMetricFamily(metric, text, labels=["destination"])
            family.add_metric([name], value)
            yield family


def backlog(log_path: Path, last_shipped: int | None,
            position: tuple[int, int] | None) -> tuple[int, float]:
    """``(records, seconds)`` not yet shipped: the chain's head sequence less the last
    shipped one, and the age of the record at ``position`` (``(inode, offset)`` just past
    the last delivered record, in the log or a rotated file being drained).

    Two short reads whatever the backlog, so a scrape stays cheap.
    """
    try:
        with open(log_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            last = last_line(handle.fileno(), size)[0] if size else b""
    except OSError:
        return 0, 0.0
    head = read_sequence(last)
    if head is None or position is None:
        return 0, 0.0
    events = max(0, head - (last_shipped or 0))
    if not events:
        return 0, 0.0
    first = _line_at(log_path, *position)
    stamp = _timestamp(first) if first.endswith(b"\n") else None
    return events, 0.0 if stamp is None else max(0.0, time.time() - stamp)


def read_sequence(line: bytes) -> int | None:
    """``event.sequence`` of one record line (``None`` if it has none)."""
    import orjson

    from analyzer.follow import read_head

    head = read_head(line)
    try:
        if head is not None and head[3]:
            return int(head[3])
        return int(orjson.loads(line)["event"]["sequence"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _line_at(log_path: Path, inode: int, offset: int) -> bytes:
    """The line starting at ``offset`` of the file with ``inode``: the log, or one of its
    rotated files (``<name>.<time>``) while the shipper drains it."""
    older = log_path.parent.glob(f"{glob.escape(log_path.name)}.*")
    candidates = [log_path, *(p for p in sorted(older, reverse=True) if not is_side_file(p))]
    for path in candidates:
        try:
            with open(path, "rb") as handle:
                if os.fstat(handle.fileno()).st_ino != inode:
                    continue
                handle.seek(offset)
                return handle.readline(1 << 20)
        except OSError:
            continue
    return b""


def _timestamp(line: bytes) -> float | None:
    import orjson

    try:
        stamp = orjson.loads(line).get("@timestamp")
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return None


# -- scoring -------------------------------------------------------------------------------


def observed_scorer(score: Callable[[pd.DataFrame], pd.DataFrame], metrics: AuditMetrics, *,
                    model: Any = None, drift_every: float = 300.0,
                    keep_windows: int = 20_000) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Wrap a ``score_windows`` function (:class:`~analyzer.watch.Watcher`) so that every
    scoring feeds ``metrics``: windows scored and their risk, and, with the fitted
    ``model``, its age and, every ``drift_every`` seconds, the drift of the latest score of
    each of the last ``keep_windows`` windows against the training windows."""
    import pandas as pd

    if model is not None:
        metrics.set_model(dict(getattr(model, "metadata", {}) or {}))
    recent: list[pd.DataFrame] = []
    due = [time.monotonic()]  # the first scoring measures drift

    def scored(events: pd.DataFrame) -> pd.DataFrame:
        scores = score(events)
        metrics.scored(scores)
        if model is None or not hasattr(model, "detectors_"):
            return scores
        recent.append(scores)
        if time.monotonic() >= due[0]:
            due[0] = time.monotonic() + drift_every
            windows = pd.concat(recent, ignore_index=True).drop_duplicates(
                ["entity_type", "entity", "window_start"], keep="last").tail(keep_windows)
            recent[:] = [windows]
            _measure_drift(metrics, model, windows)
        return scores

    return scored


def _measure_drift(metrics: AuditMetrics, model: Any, windows: pd.DataFrame) -> None:
    from analyzer.drift import drift_report
    from analyzer.errors import AnalyzerError

    try:
        report = drift_report(model, windows)
    except (AnalyzerError, KeyError, ValueError) as exc:  # drift is a gauge, never fatal
        _log.warning("drift not measured: %s", exc)
        return
    metrics.set_drift(report.features)


# -- serving -------------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (on 127.0.0.1) -> ``(host, port)``."""
    host, port = DEFAULT_ADDRESS[0], text.strip()
    if port.startswith("["):
        host, _, port = port[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in port:
        host, _, port = port.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError(f"--metrics-address: expected HOST:PORT or PORT, not {text!r}")
    return host, int(port)


def serve(metrics: AuditMetrics, address: tuple[str, int]) -> Callable[[], None]:
    """Serve ``/metrics`` on ``address`` from a background thread; returns what stops it."""
    prom = _prometheus()
    try:
        server, thread = prom.start_http_server(address[1], addr=address[0],
                                                registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-address {address[0]}:{address[1]}: cannot listen: "
                          f"{exc.strerror or exc}") from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
