"""The :mod:`logging` bridge and the original two-function API, over :class:`AuditLogger`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analyzer.errors import AnalyzerError
from analyzer.events import AuditEvent, Level
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
            self.audit.log_event(self._event(record))
        except Exception:
            self.handleError(record)

    def _event(self, record: logging.LogRecord) -> AuditEvent:
        """The audit event for ``record``; a record is never lost for a bad field.

        Error records with tracebacks are the ones an audit trail must keep, so a message
        whose ``%``-arguments do not fit, or an ``extra=`` field of the wrong type, is
        written as text (the field under ``analyzer.details``) rather than dropped.
        """
        fields = {f: getattr(record, f) for f in _HANDLER_FIELDS
                  if getattr(record, f, None) is not None}
        action = getattr(record, "action", None) or f"log.{record.name}"
        details = getattr(record, "details", None)
        common = {
            "timestamp": datetime.fromtimestamp(record.created, UTC),
            "level": Level.parse(record.levelno),
            "message": _message(record),
            "logger": record.name,
            "origin_file": record.filename,
            "origin_line": record.lineno,
            "origin_function": record.funcName,
            "pid": record.process,
        }
        try:
            return AuditEvent(str(action), **common, **fields,
                              analyzer={"details": details} if details else None)
        except (AnalyzerError, TypeError, ValueError) as exc:
            kept = {"details": details} if details else {}
            kept["fields"] = {k: repr(v) for k, v in fields.items()}
            kept["field_error"] = str(exc)
            return AuditEvent(str(action), **common, analyzer=kept)

    def flush(self) -> None:
        self.audit.flush()

    def close(self) -> None:
        try:
            self.audit.close()
        finally:
            super().close()


#: Formats tracebacks the way ``logging`` does; a Handler has no ``formatException`` of its
#: own (only a Formatter does), and the handler's formatter may be unset.
_TRACEBACKS = logging.Formatter()


def _message(record: logging.LogRecord) -> str:
    """The record's text with its traceback and stack, as a log file would show them."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # "%d" with a string, too few arguments...
        message = f"{record.msg!s} (arguments that did not fit: {record.args!r})"
    if record.exc_info:
        message = f"{message}\n{_TRACEBACKS.formatException(record.exc_info)}"
    elif record.exc_text:
        message = f"{message}\n{record.exc_text}"
    if record.stack_info:
        message = f"{message}\n{_TRACEBACKS.formatStack(record.stack_info)}"
    return message


# -- the original two-function API ---------------------------------------------------------

#: The seed's details keys that name standard fields; anything else is kept under
#: ``analyzer.details``.
#: Event types of the original examples that are level names set that level.
_LEVEL_EVENT_TYPES = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
                      "WARN": logging.WARNING, "ERROR": logging.ERROR,
                      "CRITICAL": logging.CRITICAL, "FATAL": logging.CRITICAL}

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
                    details: Mapping[str, Any] | str | object | None = None, *,
                    level: int | None = None) -> None:
    """Log one audit event through a logger from :func:`setup_audit_logger` (original API).

    As in the original, ``details`` may be a message (``"User logged into the AI
    dashboard."``), a dict of fields, or anything printable. A dict's keys ``user``,
    ``ip``/``source_ip``, ``resource``, ``outcome``/``status`` and ``country`` fill the
    standard fields; the rest are kept under ``analyzer.details``. An ``event_type`` that
    names a level (``ERROR``, ``WARNING``, ``CRITICAL``, ``DEBUG``) sets the record's level,
    unless ``level`` is given.
    """
    if level is None:
        level = _LEVEL_EVENT_TYPES.get(str(event_type).strip().upper(), logging.INFO)
    extra: dict[str, Any] = {"action": event_type}
    if not isinstance(details, Mapping):
        text = "" if details is None else str(details)
        message = f"{event_type}: {text}" if text else str(event_type)
        logger.log(level, "%s", message, extra=extra, stacklevel=2)
        return
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
    logger.log(level, "%s", message, extra=extra, stacklevel=2)
