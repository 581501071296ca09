"""Audit analyzer: a tamper-evident audit trail for AI systems, and an analyzer that reads it.

The logger side (:class:`AuditLogger`, :func:`verify_log`, the :mod:`logging` bridge) imports
only the standard library and orjson, so applications pay nothing for the analyzer. The
analysis side (readers, features, the detector, the model) is imported on first use.

>>> import analyzer
>>> sorted(analyzer.__all__) == analyzer.__all__
True
"""

from __future__ import annotations

import importlib
from typing import Any

from analyzer.errors import (
    AnalyzerError,
    ConfigError,
    DeliveryError,
    IntegrityError,
    LogWriteError,
    ModelLoadError,
    SchemaError,
    SourceError,
)
from analyzer.events import AuditEvent, Kind, Level, Outcome
from analyzer.integrity import Checkpoint, VerifyReport, verify_log, verify_series
from analyzer.logger import (
    AuditHandler,
    AuditLogger,
    Durability,
    log_audit_event,
    setup_audit_logger,
)

__version__: str  # resolved on first access (see __getattr__)

# Names whose modules pull in pandas / scikit-learn: resolved on first access.
_LAZY = {
    "AuditModel": "analyzer.model",
    "AuditTrail": "analyzer.trail",
    "DriftReport": "analyzer.drift",
    "Filter": "analyzer.query",
    "ModelRegistry": "analyzer.registry",
    "ReadResult": "analyzer.sources",
    "ReaderOptions": "analyzer.sources",
    "apply_retention": "analyzer.retention",
    "apply_suppressions": "analyzer.suppression",
    "drift_report": "analyzer.drift",
    "evaluate": "analyzer.evaluation",
    "load_model": "analyzer.persistence",
    "read_events": "analyzer.sources",
    "read_suppressions": "analyzer.suppression",
    "record_feedback": "analyzer.feedback",
    "save_model": "analyzer.persistence",
    "scan": "analyzer.query",
    "score_trail": "analyzer.pipeline",
    "train_trail": "analyzer.pipeline",
    "write_reports": "analyzer.report",
}

__all__ = [
    "AnalyzerError",
    "AuditEvent",
    "AuditHandler",
    "AuditLogger",
    "AuditModel",
    "AuditTrail",
    "Checkpoint",
    "ConfigError",
    "DeliveryError",
    "DriftReport",
    "Durability",
    "Filter",
    "IntegrityError",
    "Kind",
    "Level",
    "LogWriteError",
    "ModelLoadError",
    "ModelRegistry",
    "Outcome",
    "ReadResult",
    "ReaderOptions",
    "SchemaError",
    "SourceError",
    "VerifyReport",
    "apply_retention",
    "apply_suppressions",
    "drift_report",
    "evaluate",
    "load_model",
    "log_audit_event",
    "read_events",
    "read_suppressions",
    "record_feedback",
    "save_model",
    "scan",
    "score_trail",
    "setup_audit_logger",
    "train_trail",
    "verify_log",
    "verify_series",
    "write_reports",
]


def _version() -> str:
    """The installed distribution's version: it is written once, in pyproject.toml."""
    # importlib.metadata is slow to import, and the logger side is imported by applications
    # at start-up: read on first use of __version__ only
    from importlib import metadata

    try:
        return metadata.version("audit-analyzer")
    except metadata.PackageNotFoundError:  # the source folder on sys.path, never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = version = _version()
        return version
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'analyzer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
