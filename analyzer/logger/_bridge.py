"""The :mod:`logging` bridge and the original two-function API, over :class:`AuditLogger`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analyzer.events import (
    AuditEvent,
    Level,
)
from analyzer.logger._writer import AuditLogger

# -- the stdlib logging bridge -------------------------------------------------------------

#: LogRecord attributes (set through ``extra=``) that map onto audit event fields.
_HANDLER_FIELDS = ("user", "outcome", "resource", "source_ip", "category", "country", "city",
                   "resource_type", "bytes", "session", "roles")


class AuditHandler(logging.Handler):
    """A :class:`logging.Handler` that writes each record as a chained audit event.

    ``logger.warning("blocked", extra={"action": "login", "user": "eve", "outcome":
    "failure"})`` becomes an event with that action and those fields; the level, message,
    logger name and the caller's file, line and function come from the LogRecord. Records
    without an ``action`` get ``log.<logger name>``.
    """

    def __init__(self, audit: AuditLogger, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.audit = audit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {f: getattr(record, f) for f in _HANDLER_FIELDS if hasattr(record, f)}
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{self.formatException(record.exc_info)}"
            action = getattr(record, "action", None) or f"log.{record.name}"
            details = getattr(record, "details", None)
            event = AuditEvent(
                action,
                timestamp=datetime.fromtimestamp(record.created, UTC),
                level=Level.parse(record.levelno),
                message=message,
                logger=record.name,
                origin_file=record.filename,
                origin_line=record.lineno,
                origin_function=record.funcName,
                pid=record.process,
                analyzer={"details": details} if details else None,
                **{k: v for k, v in fields.items() if v is not None},
            )
            self.audit.log_event(event)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.audit.flush()

    def close(self) -> None:
        try:
            self.audit.close()
        finally:
            super().close()


# -- the original two-function API ---------------------------------------------------------

#: The seed's details keys that name standard fields; anything else is kept under
#: ``analyzer.details``.
_SEED_KEYS = {"user": "user", "username": "user", "user_id": "user", "ip": "source_ip",
              "source_ip": "source_ip", "resource": "resource", "outcome": "outcome",
              "status": "outcome", "country": "country"}


def setup_audit_logger(log_file: str | os.PathLike[str] = "audit.log", *,
                       key: bytes | str | os.PathLike[str] | None = None,
                       service: str | None = None,
                       level: int = logging.INFO) -> logging.Logger:
    """Return a :class:`logging.Logger` that writes chained audit events to ``log_file``.

    Kept from the original API. Calling it again for the same file returns the same logger
    without adding a second handler.
    """
    path = Path(log_file).resolve()
    logger = logging.getLogger(f"audit.{path}")
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, AuditHandler) for h in logger.handlers):
        logger.addHandler(AuditHandler(AuditLogger(path, key=key, service=service,
                                                   name="audit")))
    return logger


def log_audit_event(logger: logging.Logger, event_type: str,
                    details: Mapping[str, Any] | None = None, *,
                    level: int = logging.INFO) -> None:
    """Log one audit event through a logger from :func:`setup_audit_logger` (original API).

    ``details`` keys ``user``, ``ip``/``source_ip``, ``resource``, ``outcome``/``status`` and
    ``country`` fill the standard fields; the rest are kept under ``analyzer.details``.
    """
    details = dict(details or {})
    extra: dict[str, Any] = {"action": event_type}
    rest = {}
    for key, value in details.items():
        target = _SEED_KEYS.get(key)
        if target and target not in extra and value is not None:
            extra[target] = str(value) if target != "outcome" else value
        else:
            rest[key] = value
    if rest:
        extra["details"] = rest
    message = f"{event_type}: " + ", ".join(f"{k}={v}" for k, v in details.items())
    logger.log(level, message, extra=extra, stacklevel=2)
