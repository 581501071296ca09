"""The audit trail as an application holds it: a logger with its wing attached.

:class:`~analyzer.logger.AuditLogger` only writes. Shipping the log to other services
(:mod:`analyzer.sinks`) and deleting old rotated files (:mod:`analyzer.retention`) act on
its files from a later stage and attach to it through the logger's
:class:`~analyzer.logger.Attachment` protocol. :class:`AuditTrail` puts the three together
for an application, so that it does not wire them itself:

>>> import tempfile, os
>>> from analyzer.sinks.shipper import SendResult
>>> class Collect:
...     name = "collect"
...     def __init__(self): self.ids = []
...     def send(self, batch):
...         self.ids += [r.event_id for r in batch]
...         return SendResult()
...     def close(self): pass
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> with AuditTrail(path, ship=[Collect()]) as audit:
...     _ = audit.log("login", user="alice", outcome="success")
...     type(audit.shipping).__name__
'BackgroundShipper'

The destination gets every record from its cursor, in the background while the application
runs, and from where it stopped at the next start.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from analyzer.logger import AuditLogger
from analyzer.retention import RetentionPolicy
from analyzer.series import shipped_destinations
from analyzer.sinks.background import BackgroundShipper
from analyzer.sinks.shipper import Sink

__all__ = ["AuditTrail"]


class AuditTrail(AuditLogger):
    """An :class:`~analyzer.logger.AuditLogger` that ships its log and applies retention.

    Parameters
    ----------
    path
        The audit log, as for :class:`~analyzer.logger.AuditLogger`.
    ship
        Destinations (:mod:`analyzer.sinks`) to ship the log to from background threads
        (a :class:`~analyzer.sinks.background.BackgroundShipper`, attached to the logger).
        They read the file from their own cursors, so ``log()`` never waits for them, a
        destination that is down costs no memory, and nothing is lost: it catches up.
        Rejected records and a destination that stops for good are reported in the trail.
    retention
        A :class:`~analyzer.retention.RetentionPolicy` applied after each rotation. Without
        its own ``destinations``, the destinations of ``ship`` must have shipped a file
        before it is deleted, as must every other destination with a cursor beside the log.
    ship_options
        Passed to the :class:`~analyzer.sinks.background.BackgroundShipper`
        (``poll_interval``, ``select``, ``cpu_share``, batch sizes).
    **options
        Everything else :class:`~analyzer.logger.AuditLogger` takes (``key``,
        ``rotate_bytes``, ``durability``...).
    """

    def __init__(self, path: str | os.PathLike[str], *, ship: Sequence[Sink] = (),
                 retention: RetentionPolicy | None = None,
                 ship_options: Mapping[str, Any] | None = None, **options: Any) -> None:
        # Built first: destinations with the same name are refused before the log is opened.
        self.shipping = (BackgroundShipper(path, list(ship), **(ship_options or {}))
                         if ship else None)
        if retention is not None and ship and retention.destinations is None:
            # A destination shipped from here has no cursor until its first delivery, and
            # "every destination with a cursor" would then be none: name ours, so that
            # retention never deletes a file before they have it.
            names = {*(sink.name for sink in ship), *shipped_destinations(path)}
            retention = dataclasses.replace(retention, destinations=tuple(sorted(names)))
        attach = [*options.pop("attach", ()), *([self.shipping] if self.shipping else [])]
        super().__init__(path, retention=retention, attach=attach, **options)
