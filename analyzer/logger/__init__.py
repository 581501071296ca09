"""The audit logger: an append-only, hash-chained JSON-lines writer, and its bridges.

:class:`AuditLogger` writes to the file it is given; the package keeps no global configuration
(only bounded caches of encoded strings, and a weak registry of loggers to reopen after a fork).
The writer is :mod:`._writer`, the record encoding :mod:`._encoding`, the bridges :mod:`._bridge`.
The logger only writes: what acts on its files from a later stage (shipping, retention)
attaches to it as an :class:`Attachment` and is told of rotations and of close
(:class:`analyzer.trail.AuditTrail` puts them together).
``log()`` builds the ECS document and queues it; records are chained (sequence and hash)
and appended when the queue is flushed, under an exclusive lock on a stable lock file beside
the log (``<log>.lock``, not the log itself, which rotation renames), so that several threads
or processes appending to and rotating one log never fork its chain. The durability policy says
when that happens:

``flush``   every record is written (and flushed to the OS) before ``log()`` returns;
``batch``   (default) at least every ``batch_records`` records or ``batch_ms`` milliseconds,
            and on close: a crash loses at most that window;
``fsync``   every record is written and fsynced before ``log()`` returns.

:class:`AuditHandler` lets code that uses :mod:`logging` write audit events, and
:func:`setup_audit_logger` / :func:`log_audit_event` keep the original two-function API.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> with AuditLogger(path, service="inference-api", key=b"an-integrity-key-0123") as audit:
...     _ = audit.log("model.download", user="bob", resource="models/llm-7b",
...                   outcome="success", source_ip="10.1.2.3")
>>> from analyzer.integrity import verify_log
>>> verify_log(path, key=b"an-integrity-key-0123").ok
True
"""

from analyzer.logger._bridge import AuditHandler, log_audit_event, setup_audit_logger
from analyzer.logger._writer import Attachment, AuditLogger, Durability

__all__ = [
    "Attachment",
    "AuditHandler",
    "AuditLogger",
    "Durability",
    "log_audit_event",
    "setup_audit_logger",
]

