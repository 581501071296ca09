"""The project's exceptions.

Every error the library raises on purpose derives from :class:`AnalyzerError`, so the
command line can turn any of them into one readable line. Each subclass also inherits
the builtin a caller would naturally catch::

    AnalyzerError
     +-- SchemaError(ValueError)          input does not have the fields or columns required
     +-- IntegrityError                   a chain, checkpoint or digest does not hold
     +-- ModelLoadError(OSError)          a model artifact cannot be trusted or read
     +-- SourceError(OSError)             an input file or directory cannot be read
     +-- LogWriteError(OSError)           the audit log cannot be written
     +-- DeliveryError(OSError)           a destination cannot take records now (retry later)
     +-- ConfigError(ValueError)          an option or a configuration value is invalid
     +-- NotFittedError                   (re-exported from scikit-learn where relevant)

Messages carry the context a person needs to act: the path, the line, the field.
"""

from __future__ import annotations

__all__ = [
    "AnalyzerError",
    "ConfigError",
    "DeliveryError",
    "IntegrityError",
    "LogWriteError",
    "ModelLoadError",
    "SchemaError",
    "SourceError",
]


class AnalyzerError(Exception):
    """Base class of every error the analyzer raises on purpose."""


class SchemaError(AnalyzerError, ValueError):
    """Input lacks required fields or columns, or has values of the wrong type."""


class IntegrityError(AnalyzerError):
    """A hash chain, checkpoint or digest does not hold."""


class ModelLoadError(AnalyzerError, OSError):
    """A model artifact is missing, modified, unsigned or otherwise untrustworthy."""


class SourceError(AnalyzerError, OSError):
    """An input file or directory is missing or unreadable."""


class LogWriteError(AnalyzerError, OSError):
    """The audit log could not be written (disk full, permissions, ...)."""


class DeliveryError(AnalyzerError, OSError):
    """A destination cannot take records now (unreachable, throttling, 5xx): retry later.

    Messages name the destination and the status, never a credential.
    """


class ConfigError(AnalyzerError, ValueError):
    """An option or configuration value is invalid."""
