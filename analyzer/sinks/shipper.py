"""The shipper: delivers an audit log to a destination from its own cursor in the file.

DESIGN, "the log file is the spool": the application only appends to its local log; a
:class:`Shipper` reads that file from a cursor saved beside it (one per destination), sends
records in batches, and moves the cursor only after the destination has taken them. Delivery
is therefore *at least once*: after a crash or a kill the last batch may be sent again, and
destinations that support an idempotency key (Elasticsearch ``_id``) use ``event.id`` so
that a resend never duplicates a document.

Pieces:

:class:`Cursor`      where a destination stands: written atomically after delivered batches,
                     beside the log (``<log>.ship-<name>.cursor``); it and :class:`LogTail`,
                     which reads complete lines from it on across rotation, are
                     :mod:`analyzer.follow`'s (re-exported here).
:class:`Shipper`     batches (bounded by records and bytes: memory never grows with the
                     backlog), retries with exponential backoff and jitter while the
                     destination is down or throttling, writes records the destination
                     rejects for good to a dead-letter file and reports them as an audit
                     event at ERROR. Nothing is dropped silently.
:class:`Sink`        what a destination implements: ``send(batch) -> SendResult``.

>>> import tempfile, os
>>> from analyzer.logger import AuditLogger
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> with AuditLogger(path) as audit:
...     _ = audit.log("login", user="alice", outcome="success")
>>> class Collect:
...     name = "collect"
...     def __init__(self): self.ids = []
...     def send(self, batch):
...         self.ids += [r.event_id for r in batch]
...         return SendResult()
...     def close(self): pass
>>> sink = Collect()
>>> Shipper(path, sink).run(follow=False).delivered
1
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from analyzer.errors import AnalyzerError, ConfigError, DeliveryError
from analyzer.files import append_side, mode_of

# The cursor and the follower are analyzer.follow's, the file names analyzer.series's; they
# are re-exported here, where the shipper's users have always found them.
from analyzer.follow import (
    LINE_HEAD,
    Cursor,
    LogTail,
    cursor_at_end,
    load_cursor,
    lock_cursor,
    parse_object,
    read_head,
    save_cursor,
)
from analyzer.logger import AuditLogger
from analyzer.series import cursor_path, dead_letter_path

__all__ = [
    "Cursor",
    "DeliveryError",
    "LogTail",
    "Record",
    "SendResult",
    "ShipStats",
    "Shipper",
    "Sink",
    "cursor_at_end",
    "cursor_path",
    "dead_letter_path",
    "is_alert",
    "load_cursor",
    "lock_cursor",
    "read_head",
    "save_cursor",
    "unsealer",
]

_log = logging.getLogger(__name__)


# -- records and the sink protocol ---------------------------------------------------------


class Record:
    """One line of the audit log, as read: its raw bytes (without the newline) and fields.

    ``Record(raw, doc, end)``: ``doc`` is the parsed record, or ``None`` to parse ``raw`` on
    first use. The shipper builds records from the head of the line (``@timestamp``,
    ``event.id``, ``event.kind``, ``event.sequence``) without parsing it, so a destination
    that sends the line as it is (Elasticsearch) never pays for a parse. ``end`` is the
    byte offset just past this line's newline in its file. Treat a record as read-only.
    """

    __slots__ = ("_doc", "_head", "end", "raw")

    def __init__(self, raw: bytes, doc: dict[str, Any] | None = None, end: int = 0, *,
                 head: tuple[bytes, bytes, bytes, bytes] | None = None) -> None:
        self.raw = raw
        self._doc = doc
        self.end = end
        self._head = head  # (timestamp, id, kind, sequence) as bytes, from the pattern

    def __repr__(self) -> str:
        return f"Record({self.raw[:60]!r}..., end={self.end})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and (self.raw, self.end) == (other.raw, other.end)

    __hash__ = None  # type: ignore[assignment]

    @property
    def doc(self) -> dict[str, Any]:
        """The parsed record (``{}`` for a line that is not a JSON object)."""
        if self._doc is None:
            self._doc = parse_object(self.raw) or _NOT_JSON
        return {} if self._doc is _NOT_JSON else self._doc

    @property
    def event_id(self) -> str | None:
        if self._head is not None:
            return self._head[1].decode()
        event = self.doc.get("event")
        return event.get("id") if isinstance(event, dict) else None

    @property
    def sequence(self) -> int | None:
        if self._head is not None:
            return int(self._head[3])
        event = self.doc.get("event")
        return event.get("sequence") if isinstance(event, dict) else None

    @property
    def timestamp(self) -> str | None:
        if self._head is not None:
            return self._head[0].decode()
        value = self.doc.get("@timestamp")
        return value if isinstance(value, str) else None

    @property
    def kind(self) -> str | None:
        """``event.kind`` (``event`` or ``alert``), or ``None`` when absent."""
        if self._head is not None:
            return self._head[2].decode()
        event = self.doc.get("event")
        return event.get("kind") if isinstance(event, dict) else None



@dataclass(frozen=True, slots=True)
class SendResult:
    """What a destination did with a batch it answered.

    ``rejected``: ``(index in batch, reason)`` for records refused for good (they go to
    the dead-letter file); ``retry``: indices to send again later (throttled items, or the
    part of a batch after a failure). Every other record was delivered.
    """

    rejected: tuple[tuple[int, str], ...] = ()
    retry: tuple[int, ...] = ()
    retry_reason: str = ""


class Sink(Protocol):
    """A destination. ``send`` raises :class:`DeliveryError` when nothing was delivered
    and trying again later may work, or :class:`~analyzer.errors.ConfigError` when it
    cannot work without a change (bad credentials, wrong URL)."""

    name: str

    def send(self, batch: Sequence[Record]) -> SendResult: ...

    def close(self) -> None: ...


def unsealer(cipher: Any) -> Callable[[Record], Record]:
    """A ``transform`` that opens records encrypted at rest with a
    :class:`~analyzer.crypto.RecordCipher` (clear records pass unchanged)."""
    from analyzer.crypto import SEALED_MARK

    def unseal(rec: Record) -> Record:
        if SEALED_MARK not in rec.raw:
            return rec
        doc = cipher.unseal(rec.doc)
        return Record(orjson.dumps(doc), doc, rec.end)

    return unseal


def is_alert(record: Record) -> bool:
    """True for analyzer alerts (``event.kind == "alert"``): a filter for alert-only sinks."""
    return record.kind == "alert"


# -- the shipper ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShipStats:
    """Counts since the shipper started, and how far behind it is.

    ``delivered``: records the destination took; ``retried``: record sends that had to be
    repeated (a batch retried three times counts three times its size); ``rejected``:
    records refused for good (in the dead-letter file); ``skipped``: records the filter
    left out; ``lag_bytes``: bytes of the log not yet read; ``lag_seconds``: age of the
    last delivered record when more is waiting (0 when caught up); ``batches``: sends the
    destination took; ``position``: ``(inode, offset)`` just past the last delivered record
    (where the oldest record not yet shipped starts), for :mod:`analyzer.metrics`.
    """

    destination: str
    delivered: int = 0
    retried: int = 0
    rejected: int = 0
    skipped: int = 0
    lag_bytes: int = 0
    lag_seconds: float = 0.0
    last_sequence: int | None = None
    last_error: str = ""
    batches: int = 0
    position: tuple[int, int] | None = None

    def summary(self) -> str:
        text = (f"{self.destination}: {self.delivered:,} delivered, {self.retried:,} retried, "
                f"{self.rejected:,} rejected")
        if self.skipped:
            text += f", {self.skipped:,} skipped"
        text += f"; lag {self.lag_bytes:,} bytes"
        if self.lag_seconds:
            text += f" ({self.lag_seconds:.1f} s)"
        return text


@dataclass(slots=True)
class _Counts:
    delivered: int = 0
    retried: int = 0
    rejected: int = 0
    skipped: int = 0
    last_sequence: int | None = None
    last_timestamp: str | None = None
    last_error: str = ""
    batches: int = 0
    position: tuple[int, int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Shipper:
    """Deliver one audit log to one destination, at least once, from a saved cursor.

    Parameters
    ----------
    log_path
        The audit log (JSON lines) to ship.
    sink
        The destination (see :class:`Sink`); its ``name`` names the cursor file.
    batch_records, batch_bytes
        Upper bounds of one batch; a sink may lower them (``max_batch_records`` /
        ``max_batch_bytes`` attributes). Only one batch is held in memory.
    poll_interval
        Seconds between looks at the log when following and caught up.
    backoff_initial, backoff_max
        Exponential backoff between retries, with full jitter: the n-th retry waits a
        random time up to ``min(backoff_max, backoff_initial * 2**n)``.
    select
        Optional filter: records for which it returns False are not sent (e.g.
        :func:`is_alert` for a webhook that takes alerts only). They still move the cursor.
    transform
        Optional rewrite of each selected record before it is sent (e.g. :func:`unsealer`
        to deliver records encrypted at rest in clear); a record it refuses with the
        project's error goes to the dead-letter file with the reason.
    audit
        An :class:`~analyzer.logger.AuditLogger` that receives an ERROR event when records
        are rejected for good (one event per batch, naming the dead-letter file).
    cursor_file, dead_letter
        Override the default paths beside the log (:func:`cursor_path`,
        :func:`dead_letter_path`).
    cpu_share
        Upper bound of the share of one CPU the shipper uses while the log is growing
        (``None``: no bound). Shipping inside the application shares the interpreter lock
        with it, so each microsecond the shipper computes is one the application waits;
        after each batch the shipper sleeps long enough to stay within the share, which
        keeps ``log()`` throughput at about ``1 - cpu_share`` of no shipping or better. When
        the log stops growing (the application is idle) it catches up at full speed; a
        backlog meanwhile waits in the file, which is the spool.
    """

    def __init__(
        self,
        log_path: str | os.PathLike[str],
        sink: Sink,
        *,
        batch_records: int = 500,
        batch_bytes: int = 4 << 20,
        poll_interval: float = 0.5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        select: Callable[[Record], bool] | None = None,
        transform: Callable[[Record], Record] | None = None,
        audit: AuditLogger | None = None,
        cursor_file: str | os.PathLike[str] | None = None,
        dead_letter: str | os.PathLike[str] | None = None,
        cpu_share: float | None = None,
    ) -> None:
        if batch_records < 1 or batch_bytes < 1:
            raise ConfigError("batch_records and batch_bytes must be positive")
        if poll_interval <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ConfigError("poll_interval and backoff_initial must be positive, "
                              "and backoff_max at least backoff_initial")
        self.log_path = Path(log_path)
        self.sink = sink
        self.batch_records = min(batch_records, getattr(sink, "max_batch_records", batch_records))
        self.batch_bytes = min(batch_bytes, getattr(sink, "max_batch_bytes", batch_bytes))
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.select = select
        self.transform = transform
        self.audit = audit
        self.cursor_file = Path(cursor_file) if cursor_file else cursor_path(log_path, sink.name)
        self.dead_letter = Path(dead_letter) if dead_letter else \
            dead_letter_path(log_path, sink.name)
        if cpu_share is not None and not 0 < cpu_share <= 1:
            raise ConfigError(f"cpu_share must be in (0, 1], not {cpu_share!r}")
        self.cpu_share = cpu_share
        self.raw_lines = bool(getattr(sink, "sends_raw_lines", False))
        self._counts = _Counts()
        self._tail: LogTail | None = None
        self._stop = threading.Event()
        self._unsaved: Cursor | None = None
        self._saved_at = 0.0
        self._cpu_mark = 0.0
        self._log_size = -1

    # -- public --------------------------------------------------------------------------

    def stats(self) -> ShipStats:
        """A snapshot of the counts and the lag."""
        c = self._counts
        tail = self._tail
        lag = tail.lag_bytes() if tail is not None else 0
        with c.lock:
            lag_seconds = 0.0
            if lag and c.last_timestamp:
                try:
                    then = datetime.fromisoformat(c.last_timestamp.replace("Z", "+00:00"))
                    lag_seconds = max(0.0, (datetime.now(UTC) - then).total_seconds())
                except ValueError:
                    pass
            return ShipStats(self.sink.name, c.delivered, c.retried, c.rejected, c.skipped,
                             lag, lag_seconds, c.last_sequence, c.last_error, c.batches,
                             c.position)

    def anchor(self) -> None:
        """Give a destination without a cursor one at the start of the log's current file.

        Where :meth:`run` would start anyway; saved now, so that when :meth:`run` starts
        later (in a thread), a rotation meanwhile is followed from that file instead of
        skipping it, and retention sees a destination that has not shipped it yet.
        """
        if self.cursor_file.exists():
            return
        try:
            inode = os.stat(self.log_path).st_ino
        except FileNotFoundError:
            return
        save_cursor(self.cursor_file, Cursor(0, inode, updated=datetime.now(UTC).isoformat()))

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand (from any thread or a signal)."""
        self._stop.set()

    def run(self, *, follow: bool = False, give_up_after: float | None = None) -> ShipStats:
        """Ship from the cursor to the end of the log (``follow=False``) or forever.

        Returns when the log is drained (without ``follow``) or when :meth:`stop` is
        called. A destination that is down is retried with backoff; ``give_up_after``
        seconds without progress raise :class:`DeliveryError` (default: retry until
        stopped). The cursor only moves past delivered, rejected or skipped records, so
        a stop or a crash at any point loses nothing.

        When following, a read that reaches the end of the log is followed by a pause of
        ``poll_interval``: records gather into full batches meanwhile, and the thread
        leaves the interpreter to the application instead of chasing every append.
        """
        self._stop.clear()
        lock = lock_cursor(self.cursor_file, log=self.log_path)
        try:
            return self._run(follow, give_up_after)
        finally:
            os.close(lock)

    def _run(self, follow: bool, give_up_after: float | None) -> ShipStats:
        cursor = load_cursor(self.cursor_file)
        tail = self._tail = LogTail(self.log_path, cursor)
        with self._counts.lock:  # where shipping stands before the first batch (metrics)
            if self._counts.position is None:
                self._counts.position = tail.position
                self._counts.last_sequence = cursor.sequence if cursor else None
        self._cpu_mark = time.thread_time()
        try:
            while not self._stop.is_set():
                start, data = tail.read_block(self.batch_bytes)
                if not data:
                    if not follow:
                        break
                    self._stop.wait(self.poll_interval)
                    continue
                inode = tail.position[0]
                records = self._records(start, data)
                for first in range(0, len(records), self.batch_records):
                    chunk = records[first:first + self.batch_records]
                    if not self._ship(chunk, inode, give_up_after):
                        return self.stats()  # stopped while retrying: cursor not moved
                    if self.cpu_share is not None:
                        self._keep_to_share()
                self._save_cursor()
                if follow and tail.at_end:
                    self._stop.wait(self.poll_interval)
        finally:
            self._save_cursor()  # what was delivered before a stop or an error
            tail.close()
        return self.stats()

    # -- internals -----------------------------------------------------------------------

    def _records(self, start: int, data: bytes) -> list[Record]:
        """The records of a block of complete lines: fields from each line's head, no parse.

        This is the shipper's only per-line loop, so it does as little as it can: one
        pattern match per line the logger wrote; any other line is read in full.
        """
        records: list[Record] = []
        append = records.append
        match = LINE_HEAD.match
        pos = start
        for line in data.split(b"\n")[:-1]:
            pos += len(line) + 1
            m = match(line)
            if m is not None:
                append(Record(line, None, pos, head=m.groups()))  # type: ignore[arg-type]
            elif line.strip():
                head = read_head(line)
                if head is not None:
                    append(Record(line, None, pos, head=head))
                else:
                    doc = parse_object(line)
                    append(Record(line, _NOT_JSON if doc is None else doc, pos))
        return records

    def _ship(self, chunk: list[Record], inode: int, give_up_after: float | None) -> bool:
        if not self.raw_lines:
            # The destination reads the fields: parse now, so a line that only looks like a
            # record goes to the dead-letter file instead of failing inside send().
            for rec in chunk:
                if rec._doc is None:
                    rec._doc = parse_object(rec.raw) or _NOT_JSON
        bad: list[tuple[Record, str]] = [(r, _MALFORMED) for r in chunk
                                         if r._doc is _NOT_JSON]
        records = [r for r in chunk if r._doc is not _NOT_JSON] if bad else chunk
        if self.select is not None:
            chosen = [r for r in records if self.select(r)]
            skipped = len(records) - len(chosen)
            records = chosen
        else:
            skipped = 0
        stored: dict[int, Record] = {}  # transformed record -> the line as it is in the log
        if self.transform is not None:
            rewritten = []
            for rec in records:
                try:
                    new = self.transform(rec)
                except AnalyzerError as exc:
                    bad.append((rec, str(exc)))
                    continue
                if new is not rec:
                    stored[id(new)] = rec
                rewritten.append(new)
            records = rewritten
        pending: list[Record] = records
        attempt, since = 0, time.monotonic()
        while pending:
            try:
                result = self.sink.send(pending)
            except DeliveryError as exc:
                result = SendResult(retry=tuple(range(len(pending))), retry_reason=str(exc))
            if result.rejected:
                bad.extend((pending[i], reason) for i, reason in result.rejected)
            retry = [pending[i] for i in result.retry]
            delivered = len(pending) - len(retry) - len(result.rejected)
            with self._counts.lock:
                self._counts.delivered += delivered
                self._counts.retried += len(retry)
                self._counts.batches += 1 if delivered else 0
                if retry:
                    self._counts.last_error = result.retry_reason
            if not retry:
                break
            if delivered or result.rejected:
                attempt, since = 0, time.monotonic()  # progress: start backing off afresh
            if give_up_after is not None and time.monotonic() - since > give_up_after:
                raise DeliveryError(f"{self.sink.name}: no delivery for {give_up_after:g} s: "
                                    f"{result.retry_reason or 'destination unavailable'}")
            delay = random.uniform(0, min(self.backoff_max,
                                          self.backoff_initial * 2 ** attempt))
            attempt += 1
            _log.info("%s: %d records not delivered (%s); retrying in %.1f s",
                      self.sink.name, len(retry), result.retry_reason or "unavailable", delay)
            if self._stop.wait(delay):
                return False
            pending = retry
        if bad:
            # A dead letter keeps the record as stored: sealed if it was encrypted at rest,
            # never the decrypted form the destination was sent.
            self._dead_letter([(stored.get(id(rec), rec), reason) for rec, reason in bad])
        last = chunk[-1]
        sequence, event_id, stamp = last.sequence, last.event_id, last.timestamp
        self._unsaved = Cursor(last.end, inode, sequence, event_id)
        if time.monotonic() - self._saved_at >= _CURSOR_EVERY:
            self._save_cursor()
        with self._counts.lock:
            self._counts.skipped += skipped
            self._counts.rejected += len(bad)
            self._counts.last_sequence = sequence
            self._counts.position = (inode, last.end)
            if stamp:
                self._counts.last_timestamp = stamp
            self._counts.last_error = ""
        return True

    def _keep_to_share(self) -> None:
        """Sleep so that this thread's CPU time stays within ``cpu_share`` while the
        application is writing (the log grew since the last look)."""
        used = time.thread_time() - self._cpu_mark
        try:
            size = os.stat(self.log_path).st_size
        except OSError:
            size = -1
        growing, self._log_size = size != self._log_size, size
        if growing and used > 0:
            self._stop.wait(used * (1.0 / self.cpu_share - 1.0))  # type: ignore[operator]
        self._cpu_mark = time.thread_time()

    def _save_cursor(self) -> None:
        """Write the position of the last finished batch, if it moved since the last write.

        Written after every block read and at least every ``_CURSOR_EVERY`` seconds rather
        than after every batch: each write is an fsync, and a crash in between only means
        those batches are sent again (at least once; Elasticsearch dedups by ``_id``).
        """
        cursor, self._unsaved = self._unsaved, None
        if cursor is None:
            return
        save_cursor(self.cursor_file, dataclasses.replace(
            cursor, updated=datetime.now(UTC).isoformat()))
        self._saved_at = time.monotonic()

    def _dead_letter(self, bad: list[tuple[Record, str]]) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        lines = [orjson.dumps({"@timestamp": now, "destination": self.sink.name,
                               "reason": reason, "event_id": rec.event_id,
                               "record": rec.raw.decode("utf-8", "replace")})
                 for rec, reason in bad]
        append_side(self.dead_letter, b"\n".join(lines) + b"\n", mode=mode_of(self.log_path),
                    fsync=True)
        _log.error("%s: %d records rejected for good, written to %s (first: %s)",
                   self.sink.name, len(bad), self.dead_letter, bad[0][1])
        own = [rec for rec, _ in bad if rec.doc.get("event", {}).get("action") == "ship.rejected"]
        if self.audit is None or len(own) == len(bad):
            return  # never report the rejection of a rejection report: it could loop
        try:
            from analyzer.events import Level

            self.audit.log(
                "ship.rejected", level=Level.ERROR, outcome="failure",
                category=("configuration",), resource=str(self.dead_letter),
                resource_type="file",
                message=f"{len(bad)} audit records rejected by {self.sink.name} for good and "
                        f"written to {self.dead_letter.name}: {bad[0][1]}",
                extra={"ship": {"destination": self.sink.name, "rejected": len(bad),
                                "dead_letter": str(self.dead_letter),
                                "event_ids": [r.event_id for r, _ in bad[:50]],
                                "reasons": sorted({reason for _, reason in bad})[:10]}},
            )
        except AnalyzerError as exc:
            _log.error("cannot report rejected records to the audit log: %s", exc)


#: A line that is not a JSON object (the marker ``Record._doc`` holds for it).
_NOT_JSON: dict[str, Any] = {}
_MALFORMED = "not a JSON object (malformed log line)"
#: Seconds between cursor writes while a long backlog is shipped.
_CURSOR_EVERY = 1.0


def iter_batches(records: Sequence[Record], *, max_records: int,
                 max_bytes: int, overhead: int = 0) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` index ranges of ``records`` within both limits (at least one each)."""
    start, size = 0, 0
    for i, rec in enumerate(records):
        n = len(rec.raw) + overhead
        if i > start and (i - start >= max_records or size + n > max_bytes):
            yield start, i
            start, size = i, 0
        size += n
    if start < len(records):
        yield start, len(records)
