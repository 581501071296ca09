"""Shipping from inside the application: one background thread per destination.

The threads read the log *file* from their cursors (DESIGN: the log file is the spool), so
``AuditLogger.log()`` never waits for them and no in-memory queue grows while a destination
is down: the backlog is the file itself, and each thread holds one batch at most.

>>> import tempfile, os
>>> from analyzer.logger import AuditLogger
>>> from analyzer.sinks.shipper import SendResult
>>> class Null:
...     name = "null"
...     def send(self, batch): return SendResult()
...     def close(self): pass
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> audit = AuditLogger(path)
>>> shipping = BackgroundShipper(path, [Null()], audit=audit, poll_interval=0.05)
>>> shipping.start()
>>> _ = audit.log("login", user="alice")
>>> audit.flush()
>>> shipping.stop(timeout=5)
True
>>> audit.close()
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from analyzer.errors import AnalyzerError, ConfigError
from analyzer.logger import AuditLogger
from analyzer.sinks.shipper import Record, Shipper, ShipStats, Sink

__all__ = ["BackgroundShipper"]

_log = logging.getLogger(__name__)


class BackgroundShipper:
    """Ship one log to several destinations from daemon threads.

    Parameters
    ----------
    log_path
        The audit log the application writes.
    sinks
        Destinations; each gets its own thread, cursor and dead-letter file, so a slow one
        never holds back the others. Names must differ.
    audit
        The application's :class:`~analyzer.logger.AuditLogger`: rejected records and a
        destination that stops for good (bad credentials) are reported through it at ERROR.
    poll_interval
        Seconds between looks at the log when caught up. With the logger's default batch
        durability (records reach the file within 200 ms) 0.5 s keeps shipping within a
        second of ``log()``.
    select
        Optional record filter for every destination (e.g. alerts only).
    cpu_share
        Share of one CPU each shipping thread may use while the application is writing
        (see :class:`~analyzer.sinks.shipper.Shipper`): the threads share the interpreter
        lock with the application, and the default 0.1 keeps ``log()`` throughput within
        about 10 % of no shipping even at full speed. An idle application lets them
        catch up at full speed.
    shipper_options
        Passed to each :class:`~analyzer.sinks.shipper.Shipper` (batch sizes, backoff).
    """

    def __init__(self, log_path: str | os.PathLike[str], sinks: Sequence[Sink], *,
                 audit: AuditLogger | None = None, poll_interval: float = 0.5,
                 select: Callable[[Record], bool] | None = None,
                 cpu_share: float | None = 0.1, **shipper_options: Any) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ConfigError(f"destinations must have distinct names, got {names}")
        self.audit = audit
        share = None if cpu_share is None else cpu_share / max(1, len(sinks))
        self._shippers = [Shipper(log_path, sink, audit=audit, poll_interval=poll_interval,
                                  select=select, cpu_share=share, **shipper_options)
                          for sink in sinks]
        self._threads: list[threading.Thread] = []

    def attach(self, audit: AuditLogger) -> None:
        """Start shipping when attached to the application's logger
        (:meth:`AuditLogger.attach <analyzer.logger.AuditLogger.attach>`), reporting through
        it unless another logger was given."""
        if self.audit is None:
            self.audit = audit
            for shipper in self._shippers:
                shipper.audit = audit
        self.start()

    def rotated(self, audit: AuditLogger) -> None:
        """Nothing to do: the threads follow the rotation from their cursors."""

    def detach(self, audit: AuditLogger) -> None:
        """Stop when the logger closes (what is not delivered waits in the file)."""
        self.stop(timeout=5)

    def start(self) -> None:
        """Start the threads (daemon: they never keep the process alive)."""
        if self._threads:
            return
        for shipper in self._shippers:
            shipper.anchor()  # a rotation before the thread first reads is then followed
        for shipper in self._shippers:
            thread = threading.Thread(target=self._run, args=(shipper,), daemon=True,
                                      name=f"audit-ship:{shipper.sink.name}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the threads, letting them finish the batch in hand; True if all stopped.

        What is not delivered stays in the log and is shipped by the next start (or by
        ``audit-analyzer ship``): the cursors only move past delivered records. Call it
        without holding the logger's lock (a thread may be reporting through it).
        """
        for shipper in self._shippers:
            shipper.stop()
        stopped = True
        for thread in self._threads:
            thread.join(timeout / max(1, len(self._threads)))
            stopped &= not thread.is_alive()
        if stopped:
            for shipper in self._shippers:
                _close(shipper.sink)
            self._threads = []
        return stopped

    def stats(self) -> list[ShipStats]:
        """Counts and lag per destination."""
        return [s.stats() for s in self._shippers]

    def _run(self, shipper: Shipper) -> None:
        try:
            shipper.run(follow=True)
        except AnalyzerError as exc:
            # Retrying cannot fix this (credentials, URL); the events stay in the log.
            _log.error("shipping to %s stopped: %s", shipper.sink.name, exc)
            if self.audit is not None:
                with contextlib.suppress(AnalyzerError):
                    self.audit.log("ship.stopped", level="error", outcome="failure",
                                   category=("configuration",),
                                   message=f"shipping to {shipper.sink.name} stopped: {exc}",
                                   extra={"ship": {"destination": shipper.sink.name}})
        except Exception:
            _log.exception("shipping to %s stopped unexpectedly", shipper.sink.name)


def _close(sink: Sink) -> None:
    try:
        sink.close()
    except Exception:
        _log.exception("closing %s failed", sink.name)
