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
import fcntl
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
from analyzer.files import append_side, atomic_write, mode_of, open_append
from analyzer.integrity import ROTATED_STAMP

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


# The head of a record as the logger writes it (canonical JSON, sorted keys): the fields the
# shipper needs on every line are read from here without parsing the whole record. Values
# before "id" and between "kind" and "sequence" are flat (strings without escapes, numbers,
# lists of plain strings); anything else falls back to a full parse.
_TS = rb'\{"@timestamp":"([^"\\]*)",'
_VALUE = rb'(?:"[^"\\]*"|\[[^\[\]{}"]*(?:"[^"\\]*"[^\[\]{}"]*)*\]|[-+.0-9eE]+)'
_EVENT = (rb'"ecs":\{"version":"[^"\\]*"\},"event":\{(?:"[a-z_]+":' + _VALUE + rb',)*?'
          rb'"id":"([^"\\]*)","kind":"([^"\\]*)",(?:"[a-z_]+":' + _VALUE + rb',)*?'
          rb'"sequence":(\d+),"hash":"')
#: the logger's everyday shape (no ``analyzer`` object before ``ecs``), tried first
_HEAD = re.compile(_TS + _EVENT)
_TS_ONLY = re.compile(_TS)
_EVENT_ONLY = re.compile(_EVENT)
# After the top-level "event" object the logger writes only fixed-shape objects (host, log,
# process, resource, rule, service, session, source, user), so the last unescaped occurrence
# of this key on a line is the top-level one, even when "analyzer" holds nested documents.
_ECS_KEY = b'"ecs":{"version":"'


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
            self._doc = _parse_object(self.raw) or _NOT_JSON
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


def _parse_object(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def read_head(raw: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """``(@timestamp, event.id, event.kind, event.sequence)`` of a line the logger wrote,
    read without parsing it; ``None`` when the line does not have the logger's shape."""
    match = _HEAD.match(raw)
    if match is not None:
        return match.groups()  # type: ignore[return-value]
    at = raw.rfind(_ECS_KEY)
    if at > 0:
        stamp = _TS_ONLY.match(raw)
        match = _EVENT_ONLY.match(raw, at) if stamp is not None else None
        if match is not None:
            return (stamp.group(1), *match.groups())  # type: ignore[union-attr,return-value]
    return None


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
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        cursor = Cursor(**{f.name: data[f.name] for f in dataclasses.fields(Cursor)
                           if f.name in data})
        # the file is input like any other: a position must be a byte offset in the log
        for name in ("offset", "inode"):
            value = getattr(cursor, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TypeError(f"{name} must be a non-negative integer, not {value!r}")
        if cursor.sequence is not None and (isinstance(cursor.sequence, bool)
                                            or not isinstance(cursor.sequence, int)):
            raise TypeError(f"sequence must be an integer, not {cursor.sequence!r}")
        return cursor
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable shipping cursor ({exc}); move it aside to "
                          "start over from the beginning of the log") from None


def save_cursor(path: str | os.PathLike[str], cursor: Cursor) -> None:
    """Write the cursor atomically: a crash leaves the old one or the new one, never half."""
    data = orjson.dumps(dataclasses.asdict(cursor), option=orjson.OPT_INDENT_2)
    atomic_write(path, data, mode=mode_of(path))


def lock_cursor(path: str | os.PathLike[str], *, log: str | os.PathLike[str] = "") -> int:
    """Take the lock of the cursor at ``path`` (``<cursor>.lock``); return its descriptor.

    Two shippers on one cursor would each send every record (and move the cursor past each
    other's batches): the second one is refused with :class:`ConfigError`. The lock is an
    advisory ``flock`` on a stable file (the cursor itself is replaced at every save), held
    until the descriptor is closed, which the system does if the process dies.
    """
    lock = Path(f"{os.fspath(path)}.lock")
    fd = open_append(lock, mode_of(path))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"{log or path}: another shipper is delivering to this destination "
                          f"(its cursor {Path(path).name} is locked); stop it first, or ship "
                          "to another destination with --name") from None
    return fd


def cursor_at_end(log_path: str | os.PathLike[str]) -> Cursor:
    """A cursor just past the last complete line of the log as it is now.

    For a reader that must not go over what is already there (``watch --from-end``, an
    alert webhook added to a log full of past alerts). An empty or missing log gives the
    start of the current file.
    """
    path = Path(log_path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return Cursor()
    with handle:
        st = os.fstat(handle.fileno())
        pos, buf = st.st_size, b""
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            handle.seek(pos)
            buf = handle.read(step) + buf
            end = buf.rfind(b"\n")
            if end == -1:
                continue
            start = buf.rfind(b"\n", 0, end) + 1
            if start == 0 and pos > 0:
                continue  # the last complete line starts further back
            line = buf[start:end]
            head = read_head(line)
            sequence: int | None
            event_id: str | None
            if head is not None:
                sequence, event_id = int(head[3]), head[1].decode()
            else:
                doc = _parse_object(line) or {}
                found = doc.get("event")
                event = found if isinstance(found, dict) else {}
                seq, ident = event.get("sequence"), event.get("id")
                # a line that is not the logger's may carry anything there
                sequence = seq if type(seq) is int else None
                event_id = ident if isinstance(ident, str) else None
            return Cursor(pos + end + 1, st.st_ino, sequence, event_id,
                          datetime.now(UTC).isoformat())
        return Cursor(0, st.st_ino)


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
        #: whether the last read reached the end of the file (nothing more was waiting)
        self.at_end = True
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
        while True:
            start, data = self.read_block(max_bytes)
            if not data:
                return []
            lines, pos = [], start
            for line in data.split(b"\n")[:-1]:
                pos += len(line) + 1
                if line.strip():
                    lines.append((line, pos))
            if lines:
                return lines  # else only blank lines: read on

    def read_block(self, max_bytes: int) -> tuple[int, bytes]:
        """The next complete lines as one block: ``(offset of its first byte, bytes)``.

        The block ends with a newline (at most about ``max_bytes``; one longer line is
        returned whole) and may hold blank lines; ``b""`` when nothing complete is waiting.
        One read and no per-line work: the shipper splits it.
        """
        if self._handle is None and not self._open_current(0):
            return 0, b""
        block = self._read_block(max_bytes)
        if block[1]:
            return block
        # At the end of the open file: has the log been rotated or truncated meanwhile?
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return 0, b""  # between a rename and the writer creating the new file
        if st.st_ino != self._inode:
            block = self._read_block(max_bytes)  # whatever reached the old file last
            if block[1]:
                return block
            # Several rotations may have happened since: the next file is the generation
            # rotated right after ours, not the active file (that would skip whole files).
            following = self._rotated_after(self._inode)
            _log.info("%s was rotated; continuing with %s", self.path,
                      following.name if following is not None else "the new file")
            self._handle.close()
            self._handle = None
            if following is not None:
                try:
                    self._open(following, 0, None)
                except FileNotFoundError:  # removed meanwhile: retention keeps unshipped
                    self._open_current(0)  # files, so this one was shipped already
            else:
                self._open_current(0)
            return self._read_block(max_bytes) if self._handle is not None else (0, b"")
        if st.st_size < self._offset:
            _log.warning("%s shrank below the shipped position (%d < %d bytes): it was "
                         "truncated; reading it again from the start", self.path,
                         st.st_size, self._offset)
            self._offset = 0
            return self._read_block(max_bytes)
        return 0, b""

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

    def _rotated_after(self, inode: int) -> Path | None:
        """The generation rotated right after the file with ``inode`` (``LOG.<stamp>``
        names sort in rotation order), or ``None`` when that file was the last rotated."""
        prefix = self.path.name + "."
        series = sorted(p for p in self.path.parent.glob(f"{glob_escape(self.path.name)}.*")
                        if ROTATED_STAMP.fullmatch(p.name[len(prefix):]))
        for index, candidate in enumerate(series):
            try:
                if candidate.stat().st_ino == inode:
                    return series[index + 1] if index + 1 < len(series) else None
            except OSError:
                continue
        return None

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

    def _read_block(self, max_bytes: int) -> tuple[int, bytes]:
        start = self._offset
        self._handle.seek(start)
        data = self._handle.read(max_bytes)
        self.at_end = len(data) < max_bytes
        cut = data.rfind(b"\n")
        if cut == -1:
            if len(data) < max_bytes:
                return start, b""
            # one line longer than max_bytes: read on to its end
            more = [data]
            while True:
                chunk = self._handle.read(max_bytes)
                if not chunk:
                    return start, b""
                more.append(chunk)
                if b"\n" in chunk:
                    data = b"".join(more)
                    cut = data.find(b"\n")
                    break
        data = data[:cut + 1]
        self._offset = start + len(data)
        return start, data


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
        match = _HEAD.match
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
                    doc = _parse_object(line)
                    append(Record(line, _NOT_JSON if doc is None else doc, pos))
        return records

    def _ship(self, chunk: list[Record], inode: int, give_up_after: float | None) -> bool:
        if not self.raw_lines:
            # The destination reads the fields: parse now, so a line that only looks like a
            # record goes to the dead-letter file instead of failing inside send().
            for rec in chunk:
                if rec._doc is None:
                    rec._doc = _parse_object(rec.raw) or _NOT_JSON
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
