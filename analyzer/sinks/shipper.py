"""The shipper: delivers an audit log to a destination from its own cursor in the file.

DESIGN, "the log file is the spool": the application only appends to its local log; a
:class:`Shipper` reads that file from a cursor saved beside it (one per destination), sends
records in batches, and moves the cursor only after the destination has taken them. Delivery
is therefore *at least once*: after a crash or a kill the last batch may be sent again, and
destinations that support an idempotency key (Elasticsearch ``_id``) use ``event.id`` so
that a resend never duplicates a document.

Pieces:

:class:`Cursor`      byte offset, inode, last ``event.sequence`` and ``event.id``; written
                     atomically (temporary file, fsync, rename) after every delivered batch.
:class:`LogTail`     reads complete lines from the cursor on, follows appends and rotation
                     (rename-and-recreate or copy-and-truncate), and on restart finds a
                     rotated file by its inode to finish it first.
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
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from analyzer.errors import AnalyzerError, ConfigError, DeliveryError

if TYPE_CHECKING:
    from analyzer.logger import AuditLogger

__all__ = [
    "Cursor",
    "DeliveryError",
    "LogTail",
    "Record",
    "SendResult",
    "ShipStats",
    "Shipper",
    "Sink",
    "cursor_path",
    "dead_letter_path",
    "is_alert",
    "load_cursor",
    "save_cursor",
]

_log = logging.getLogger(__name__)


# -- records and the sink protocol ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One line of the audit log, as read: its raw bytes (without the newline) and fields."""

    raw: bytes
    doc: dict[str, Any]
    end: int  # byte offset just past this line's newline in its file

    @property
    def event_id(self) -> str | None:
        event = self.doc.get("event")
        return event.get("id") if isinstance(event, dict) else None

    @property
    def sequence(self) -> int | None:
        event = self.doc.get("event")
        return event.get("sequence") if isinstance(event, dict) else None

    @property
    def timestamp(self) -> str | None:
        value = self.doc.get("@timestamp")
        return value if isinstance(value, str) else None


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


def is_alert(record: Record) -> bool:
    """True for analyzer alerts (``event.kind == "alert"``): a filter for alert-only sinks."""
    event = record.doc.get("event")
    return isinstance(event, dict) and event.get("kind") == "alert"


# -- the cursor ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a destination's delivery stands in the log.

    ``offset`` is the byte just past the last delivered line of the file with ``inode``;
    ``sequence`` and ``event_id`` name that line, so a resume can check it is where it
    thinks it is.
    """

    offset: int = 0
    inode: int = 0
    sequence: int | None = None
    event_id: str | None = None
    updated: str = ""


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def cursor_path(log_path: str | os.PathLike[str], destination: str) -> Path:
    """The cursor file of ``destination`` beside the log: ``<log>.ship-<destination>.cursor``."""
    log = Path(log_path)
    return log.with_name(f"{log.name}.ship-{_SAFE_NAME.sub('_', destination)}.cursor")


def dead_letter_path(log_path: str | os.PathLike[str], destination: str) -> Path:
    """The dead-letter file of ``destination``: ``<log>.ship-<destination>.dead.jsonl``."""
    log = Path(log_path)
    return log.with_name(f"{log.name}.ship-{_SAFE_NAME.sub('_', destination)}.dead.jsonl")


def load_cursor(path: str | os.PathLike[str]) -> Cursor | None:
    """The saved cursor, or ``None`` when there is none yet (start at the beginning)."""
    try:
        data = orjson.loads(Path(path).read_bytes())
        return Cursor(**{f.name: data[f.name] for f in dataclasses.fields(Cursor)
                         if f.name in data})
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable shipping cursor ({exc}); move it aside to "
                          "start over from the beginning of the log") from None


def save_cursor(path: str | os.PathLike[str], cursor: Cursor) -> None:
    """Write the cursor atomically: a crash leaves the old one or the new one, never half."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    data = orjson.dumps(dataclasses.asdict(cursor), option=orjson.OPT_INDENT_2)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


# -- reading the log -----------------------------------------------------------------------

# Files beside a log that are not rotated generations of it.
_NOT_ROTATED = (".ship-", ".checkpoints", ".torn-", ".watch", ".tmp")


class LogTail:
    """Complete lines of a growing log, from a cursor on, across rotation.

    ``read(max_bytes)`` returns the next lines (at most about ``max_bytes``; one longer line
    is returned whole); a trailing line without its newline is left for later, because the
    writer may still be appending it. Rotation is noticed when the path names a different
    inode than the open file: the old file is read to its end first. A file that shrank
    under the same inode was truncated (copy-and-truncate rotation): reading restarts at 0.
    """

    def __init__(self, path: str | os.PathLike[str], cursor: Cursor | None = None) -> None:
        self.path = Path(path)
        self._handle: Any = None
        self._inode = 0
        self._offset = 0
        self._start(cursor or Cursor())

    # position of the next unread byte, in the file with this inode
    @property
    def position(self) -> tuple[int, int]:
        return self._inode, self._offset

    def lag_bytes(self) -> int:
        """Bytes written to the log (current file, and a rotated one being drained) not read."""
        lag = 0
        if self._handle is not None:
            try:
                lag = max(0, os.fstat(self._handle.fileno()).st_size - self._offset)
            except OSError:
                lag = 0
            try:
                st = os.stat(self.path)
                if st.st_ino != self._inode:
                    lag += st.st_size
            except FileNotFoundError:
                pass
        return lag

    def read(self, max_bytes: int) -> list[tuple[bytes, int]]:
        """The next complete lines as ``(line without newline, end offset)``; may be empty."""
        if self._handle is None and not self._open_current(0):
            return []
        lines = self._read_lines(max_bytes)
        if lines:
            return lines
        # At the end of the open file: has the log been rotated or truncated meanwhile?
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []  # between a rename and the writer creating the new file
        if st.st_ino != self._inode:
            lines = self._read_lines(max_bytes)  # whatever reached the old file last
            if lines:
                return lines
            _log.info("%s was rotated; continuing with the new file", self.path)
            self._handle.close()
            self._handle = None
            self._open_current(0)
            return self._read_lines(max_bytes) if self._handle is not None else []
        if st.st_size < self._offset:
            _log.warning("%s shrank below the shipped position (%d < %d bytes): it was "
                         "truncated; reading it again from the start", self.path,
                         st.st_size, self._offset)
            self._offset = 0
            return self._read_lines(max_bytes)
        return []

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # -- internals ----------------------------------------------------------------------

    def _start(self, cursor: Cursor) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if cursor.inode and (st is None or st.st_ino != cursor.inode):
            old = self._find_rotated(cursor.inode)
            if old is not None:
                _log.info("%s was rotated since the last run; finishing %s first",
                          self.path, old.name)
                self._open(old, cursor.offset, cursor)
                return
            if cursor.offset:
                _log.warning("%s: the file shipped up to byte %d (inode %d) is gone; "
                             "starting the current file from its beginning",
                             self.path, cursor.offset, cursor.inode)
            self._open_current(0)
            return
        if st is not None:
            offset = cursor.offset if cursor.offset <= st.st_size else 0
            if offset != cursor.offset:
                _log.warning("%s is shorter than the saved cursor (%d bytes): reading it "
                             "again from the start", self.path, cursor.offset)
            self._open(self.path, offset, cursor)

    def _open_current(self, offset: int) -> bool:
        try:
            self._open(self.path, offset, None)
        except FileNotFoundError:
            return False
        return True

    def _open(self, path: Path, offset: int, cursor: Cursor | None) -> None:
        handle = open(path, "rb")  # noqa: SIM115 - kept open while following
        self._handle, self._inode = handle, os.fstat(handle.fileno()).st_ino
        if offset and cursor is not None and cursor.event_id and not self._line_before(
                offset, cursor.event_id):
            _log.warning("%s: the line before byte %d is not event %s as the cursor says; "
                         "reading the file again from the start (at least once)",
                         path, offset, cursor.event_id)
            offset = 0
        self._offset = offset

    def _line_before(self, offset: int, event_id: str) -> bool:
        """Whether the line ending at ``offset`` carries ``event_id``."""
        start = max(0, offset - (1 << 20))
        self._handle.seek(start)
        data = self._handle.read(offset - start)
        if not data.endswith(b"\n"):
            return False
        line = data[data.rfind(b"\n", 0, len(data) - 1) + 1:-1]
        try:
            return orjson.loads(line)["event"]["id"] == event_id
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False

    def _find_rotated(self, inode: int) -> Path | None:
        for candidate in sorted(self.path.parent.glob(f"{glob_escape(self.path.name)}*")):
            if candidate == self.path or any(s in candidate.name for s in _NOT_ROTATED):
                continue
            try:
                if candidate.stat().st_ino == inode:
                    return candidate
            except OSError:
                continue
        return None

    def _read_lines(self, max_bytes: int) -> list[tuple[bytes, int]]:
        self._handle.seek(self._offset)
        data = self._handle.read(max_bytes)
        cut = data.rfind(b"\n")
        if cut == -1:
            if len(data) < max_bytes:
                return []
            # one line longer than max_bytes: read on to its end
            more = [data]
            while True:
                chunk = self._handle.read(max_bytes)
                if not chunk:
                    return []
                more.append(chunk)
                if b"\n" in chunk:
                    data = b"".join(more)
                    cut = data.find(b"\n")
                    break
        data = data[:cut + 1]
        lines, pos = [], self._offset
        for line in data.split(b"\n")[:-1]:
            pos += len(line) + 1
            if line.strip():
                lines.append((line, pos))
        if not lines:  # only blank lines: step over them
            self._offset = pos
            return self._read_lines(max_bytes) if data else []
        self._offset = pos
        return lines


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# -- the shipper ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShipStats:
    """Counts since the shipper started, and how far behind it is.

    ``delivered``: records the destination took; ``retried``: record sends that had to be
    repeated (a batch retried three times counts three times its size); ``rejected``:
    records refused for good (in the dead-letter file); ``skipped``: records the filter
    left out; ``lag_bytes``: bytes of the log not yet read; ``lag_seconds``: age of the
    last delivered record when more is waiting (0 when caught up).
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
    audit
        An :class:`~analyzer.logger.AuditLogger` that receives an ERROR event when records
        are rejected for good (one event per batch, naming the dead-letter file).
    cursor_file, dead_letter
        Override the default paths beside the log (:func:`cursor_path`,
        :func:`dead_letter_path`).
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
        audit: AuditLogger | None = None,
        cursor_file: str | os.PathLike[str] | None = None,
        dead_letter: str | os.PathLike[str] | None = None,
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
        self.audit = audit
        self.cursor_file = Path(cursor_file) if cursor_file else cursor_path(log_path, sink.name)
        self.dead_letter = Path(dead_letter) if dead_letter else \
            dead_letter_path(log_path, sink.name)
        self._counts = _Counts()
        self._tail: LogTail | None = None
        self._stop = threading.Event()

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
                             lag, lag_seconds, c.last_sequence, c.last_error)

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
        """
        self._stop.clear()
        tail = self._tail = LogTail(self.log_path, load_cursor(self.cursor_file))
        try:
            while not self._stop.is_set():
                lines = tail.read(self.batch_bytes)
                if not lines:
                    if not follow:
                        break
                    self._stop.wait(self.poll_interval)
                    continue
                for start in range(0, len(lines), self.batch_records):
                    chunk = lines[start:start + self.batch_records]
                    if not self._ship(chunk, tail.position[0], give_up_after):
                        return self.stats()  # stopped while retrying: cursor not moved
        finally:
            tail.close()
        return self.stats()

    # -- internals -----------------------------------------------------------------------

    def _ship(self, lines: list[tuple[bytes, int]], inode: int,
              give_up_after: float | None) -> bool:
        records, bad = [], []
        for raw, end in lines:
            try:
                doc = orjson.loads(raw)
                if not isinstance(doc, dict):
                    raise TypeError
            except (orjson.JSONDecodeError, TypeError):
                bad.append((Record(raw, {}, end), "not a JSON object (malformed log line)"))
                continue
            records.append(Record(raw, doc, end))
        if self.select is not None:
            chosen = [r for r in records if self.select(r)]
            skipped = len(records) - len(chosen)
            records = chosen
        else:
            skipped = 0
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
            self._dead_letter(bad)
        last_raw, last_end = lines[-1]
        last = _ids(last_raw)
        save_cursor(self.cursor_file, Cursor(last_end, inode, last[0], last[1],
                                             datetime.now(UTC).isoformat()))
        with self._counts.lock:
            self._counts.skipped += skipped
            self._counts.rejected += len(bad)
            self._counts.last_sequence = last[0]
            if last[2]:
                self._counts.last_timestamp = last[2]
            self._counts.last_error = ""
        return True

    def _dead_letter(self, bad: list[tuple[Record, str]]) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        lines = [orjson.dumps({"@timestamp": now, "destination": self.sink.name,
                               "reason": reason, "event_id": rec.event_id,
                               "record": rec.raw.decode("utf-8", "replace")})
                 for rec, reason in bad]
        with open(self.dead_letter, "ab") as handle:
            handle.write(b"\n".join(lines) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
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


def _ids(raw: bytes) -> tuple[int | None, str | None, str | None]:
    try:
        doc = orjson.loads(raw)
        event = doc.get("event") or {}
        return event.get("sequence"), event.get("id"), doc.get("@timestamp")
    except (orjson.JSONDecodeError, AttributeError):
        return None, None, None


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
