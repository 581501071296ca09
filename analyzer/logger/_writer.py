"""The append-only, hash-chained writer: :class:`AuditLogger` (see :mod:`analyzer.logger`)."""

from __future__ import annotations

import atexit
import enum
import fcntl
import functools
import itertools
import logging
import os
import secrets
import socket
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from analyzer.durations import parse_duration
from analyzer.errors import (
    ConfigError,
    IntegrityError,
    LogWriteError,
    SchemaError,
)
from analyzer.events import (
    CANONICAL,
    ECS_CATEGORIES,
    MAX_RECORD_BYTES,
    AuditEvent,
    Level,
    Outcome,
    infer_category,
    json_default,
    parse_timestamp,
)
from analyzer.files import first_line, last_line, mode_of, open_append, open_exclusive
from analyzer.integrity import (
    GENESIS_HASH,
    ChainHasher,
    chain_declaration,
    chained_record,
    declaration_problem,
    load_key,
    now_checkpoint,
    write_checkpoint,
)
from analyzer.logger._encoding import (
    CATEGORY_PARTS,
    ECS,
    ECS_PART,
    JSON_STRINGS,
    LEVEL_PART,
    ORIGINS,
    OUTCOME_PART,
    OUTCOMES,
    Timestamps,
    categories_part,
    jstr,
    origin_json,
    stamp,
    valid_ip,
)
from analyzer.series import checkpoint_path, lock_path, rotated_files, rotated_name, torn_path

if TYPE_CHECKING:
    from analyzer.crypto import RecordCipher  # imported when a logger encrypts, not before

_log = logging.getLogger(__name__)

GeoLookup = Callable[[str], "tuple[str | None, str | None] | None"]


class Attachment(Protocol):
    """What rides on a logger from a later stage: shipping threads, a retention policy.

    The logger only writes; what acts on its files attaches itself
    (:meth:`AuditLogger.attach`) and is told three things, always outside the logger's lock
    (an attachment may write through the logger): that it is attached, that the file was
    rotated, and that the logger is closing (after a flush, before the final checkpoint).
    :class:`analyzer.retention.RetentionPolicy` and
    :class:`analyzer.sinks.background.BackgroundShipper` are attachments;
    :class:`analyzer.trail.AuditTrail` puts a logger and its attachments together.
    """

    def attach(self, audit: AuditLogger) -> None: ...

    def rotated(self, audit: AuditLogger) -> None: ...

    def detach(self, audit: AuditLogger) -> None: ...


class Durability(enum.StrEnum):
    """When queued records reach the file; see the module docstring."""

    FLUSH = "flush"
    BATCH = "batch"
    FSYNC = "fsync"


# Read and append: the head is read from the descriptor that is written, never by path.
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


class AuditLogger:
    """Append-only, hash-chained audit log writer.

    Parameters
    ----------
    path
        The JSON-lines file to append to. Reopening an existing log continues its chain.
    service
        ``service.name`` of every record.
    key
        Integrity key (bytes, or a path to a key file). With a key the chain is HMAC-SHA256,
        without one plain SHA-256 (tamper-evident against accidents, not against an attacker
        who can rewrite the file). The chain's first record declares which (and the key's id);
        continuing a keyed chain without its key, with another key, or an unkeyed chain with
        a key raises :class:`~analyzer.errors.IntegrityError`.
    min_level
        Records below this level are not written.
    durability
        ``"flush"``, ``"batch"`` (default) or ``"fsync"``.
    batch_records, batch_ms
        The batch window: queued records are written when this many are waiting, or this many
        milliseconds after the first of them, whichever comes first.
    checkpoint_every
        Write a checkpoint (sequence, head hash, time) beside the log after this many
        records, and always on close. ``0`` writes one on close only.
    rotate_bytes, rotate_every
        Rotate the file before a record would take it past this size (a batch is cut
        there, the rest opening the next file), or when its first record is this old
        (``"1d"``, ``"6h"``, any :func:`~analyzer.durations.parse_duration` form, or a
        timedelta). A file never exceeds ``rotate_bytes`` but by its first record (after
        the rotation record that opens it), which is written whatever its size (a record
        larger than the limit is alone in its file), and by what an attachment logs when
        told of the rotation that opened it (retention's deletions). The rotated file is
        renamed ``<name>.<UTC time>`` and the chain continues in a fresh file, whose first
        record (``audit.rotation``) names the previous file, its last sequence and hash.
    name
        ``log.logger`` of records written through :meth:`log`.
    host
        ``host.name``; defaults to this machine's host name.
    encryption_key
        Encrypt each record's sensitive fields at rest with AES-256-GCM (32 bytes, or a key
        file); see :mod:`analyzer.crypto`. The chain covers the ciphertext.
    geo
        Optional callable ``ip -> (country_iso_code, city_name)`` used when a record has a
        source IP but no country (no GeoIP database is bundled).
    retention
        A :class:`~analyzer.retention.RetentionPolicy`: after each rotation, rotated files
        past it that every destination has shipped are deleted, each deletion recorded in
        the trail first. It is attached like any :class:`Attachment`.
    attach
        :class:`Attachment` objects to attach once the log is open (e.g. a
        :class:`~analyzer.sinks.background.BackgroundShipper`). To ship the log from
        background threads, use :class:`analyzer.trail.AuditTrail` (``ship=[...]``).
    metrics
        An object with ``written(counts, sequence, service)``, e.g.
        :class:`analyzer.metrics.AuditMetrics`: after each write to the file it gets the
        records written by ``(level, outcome)`` and the chain's head sequence. It is called
        with the logger's lock held, so it must not log; the logger imports nothing for it.
    """

    # the chain's head, set when the file is opened (:meth:`_read_head`)
    _seq: int
    _head: str

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        service: str | None = None,
        key: bytes | str | os.PathLike[str] | None = None,
        min_level: Level | str | int = Level.DEBUG,
        durability: Durability | str = Durability.BATCH,
        batch_records: int = 512,
        batch_ms: float = 200.0,
        checkpoint_every: int = 10_000,
        rotate_bytes: int | None = None,
        rotate_every: str | timedelta | None = None,
        name: str = "audit",
        host: str | None = None,
        encryption_key: bytes | str | os.PathLike[str] | None = None,
        geo: GeoLookup | None = None,
        retention: Attachment | None = None,
        attach: Sequence[Attachment] = (),
        metrics: Any = None,
    ) -> None:
        self.durability = _durability(durability, batch_records, batch_ms)
        self.path = Path(path)
        self.service = service
        self.name = name
        self.min_level = Level.parse(min_level)
        self.host = host if host is not None else socket.gethostname()
        self._geo = functools.lru_cache(maxsize=4096)(geo) if geo else None
        self._hasher = ChainHasher(load_key(key))
        self._batch_records = batch_records if self.durability is Durability.BATCH else 1
        self._batch_seconds = batch_ms / 1000.0
        self._checkpoint_every = checkpoint_every
        self._rotate_bytes, self._rotate_ns = _rotation(rotate_bytes, rotate_every)
        self._file_started_ns: int | None = None
        self._needs_marker: str | None = None
        self._timestamps = Timestamps()
        # constant parts of every record, encoded once
        self._host_json, self._name_json = orjson.dumps(self.host), orjson.dumps(name)
        self._service_json = b',"service":{"name":%s}' % orjson.dumps(service) if service else b""
        self._cipher = None
        if encryption_key is not None:
            from analyzer.crypto import RecordCipher, load_encryption_key

            self._cipher = RecordCipher(load_encryption_key(encryption_key))
        # whether every record takes the general path of log() (sealing, a geo lookup)
        self._general = self._cipher is not None or self._geo is not None
        self._pid = os.getpid()
        self._process_json = b',"process":{"pid":%d}' % self._pid
        self._forked = False
        _watch_forks(self)
        self._id_prefix = secrets.token_hex(6)
        self._ids = itertools.count(1)
        # queued records: canonical JSON split around the sequence number the chain assigns
        self._pending: list[tuple[bytes, bytes]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()
        self._since_checkpoint = 0
        self._metrics = metrics
        # (level, outcome) of each record since the last write, for metrics: an append per
        # record, counted once per write (half the cost of a dict update per record)
        self._tally: list[tuple[Level, Outcome]] = []
        self.recovered_torn: Path | None = None
        self._declared_ino = -1  # the file whose chain declaration was checked
        self._open()
        self._attached: list[Attachment] = []
        self._rotated_due = False  # attachments are told outside the lock
        self._telling = threading.Lock()
        self._teller: int | None = None  # the thread telling the attachments, while it does
        for item in (*attach, *([retention] if retention is not None else [])):
            self.attach(item)
        atexit.register(self.close)
        if self.recovered_torn is not None:
            self.log("audit.recovery", level=Level.WARNING, outcome=Outcome.SUCCESS,
                     category=("configuration",), stacklevel=2,
                     message=f"an incomplete last line (torn write) was moved aside to "
                             f"{self.recovered_torn.name}; the chain continues from sequence "
                             f"{self._seq}")

    # -- public API ----------------------------------------------------------------------

    @property
    def head(self) -> tuple[int, str]:
        """``(sequence, hash)`` of the last record written (``(0, GENESIS_HASH)`` if none)."""
        with self._lock:
            self._flush_locked()
            return self._seq, self._head

    def log(
        self,
        action: str,
        *,
        user: str | None = None,
        outcome: Outcome | str | bool | None = Outcome.UNKNOWN,
        resource: str | None = None,
        source_ip: str | None = None,
        level: Level | str | int = Level.INFO,
        message: str = "",
        category: str | Iterable[str] | None = None,
        country: str | None = None,
        city: str | None = None,
        resource_type: str | None = None,
        bytes: int | None = None,
        session: str | None = None,
        roles: Iterable[str] | None = None,
        timestamp: datetime | str | None = None,
        host: str | None = None,
        extra: Mapping[str, Any] | None = None,
        stacklevel: int = 1,
    ) -> str | None:
        """Write one audit event; return its ``event.id`` (``None`` if below ``min_level``).

        ``timestamp`` and ``host`` default to now and this machine; imports pass the
        original record's. ``extra`` is a mapping of additional fields under this project's
        ``analyzer`` namespace (free-form details); it never overrides the ECS fields.

        Only what every reader reads back is written; anything else raises
        :class:`~analyzer.errors.SchemaError` naming the field: text fields must be strings,
        ``roles`` strings, ``bytes`` an integer from 0 to 2**63-1, ``timestamp`` within the
        span the events frame holds (1677-2262), and the whole record (after encryption) at
        most :data:`~analyzer.events.MAX_RECORD_BYTES` (512 KiB), below the readers' 1 MiB
        line limit.
        """
        lvl = level if type(level) is Level else Level.parse(level)
        if lvl < self.min_level:
            return None
        if not action or type(action) is not str:
            raise SchemaError("event.action: must be a non-empty string")
        if type(message) is not str:
            raise SchemaError(f"message: expected a string, got {message!r:.60}")
        # the common case, a string, from a table; anything else parsed
        out = (OUTCOMES.get(outcome) if type(outcome) is str else None) or Outcome.parse(outcome)
        category_part = (CATEGORY_PARTS.get(action) if category is None
                         else _given_categories(category))
        if category_part is None:
            category_part = categories_part(action, infer_category(action))
        frame = sys._getframe(stacklevel)
        if self._forked:
            self._after_fork()
        event_id = f"{self._id_prefix}-{next(self._ids):x}"
        try:  # canonical JSON assembled directly (see _field_parts): no dict per record
            if (extra or session or resource_type or roles or country or city or self._general
                    or bytes is not None or (user and type(user) is not str)):
                analyzer_part, resource_part, session_part, source_part, user_part, message = \
                    self._field_parts(extra, resource, resource_type, bytes, session, source_ip,
                                      country, city, user, roles, message, event_id)
            else:  # the common case, inline (a call costs 5 % here): a name, an address, a user
                analyzer_part = session_part = b""
                resource_part = b',"resource":{"name":%s}' % (
                    JSON_STRINGS.get(resource) or jstr(resource)) if resource else b""
                source_part = b',"source":{"ip":"%s"}' % valid_ip(source_ip).encode() \
                    if source_ip else b""
                user_part = b',"user":{"name":%s}' % (
                    JSON_STRINGS.get(user) or jstr(user)) if user else b""
            origin = ORIGINS.get((frame.f_code, frame.f_lineno)) or origin_json(
                frame.f_code, frame.f_lineno)
            prefix = b'{"@timestamp":"%s"%s%s%s%s%s,"id":"%s%s' % (
                self._timestamps.now() if timestamp is None else stamp(timestamp).encode(),
                b"," if analyzer_part else b"", analyzer_part, ECS_PART,
                JSON_STRINGS.get(action) or jstr(action), category_part, event_id.encode(),
                OUTCOME_PART[out])
            suffix = b'},"host":{"name":%s%s%s%s%s%s%s%s%s%s%s}' % (
                self._host_json if not host else jstr(host), LEVEL_PART[lvl],
                self._name_json, origin, orjson.dumps(message), self._process_json,
                resource_part, self._service_json, session_part, source_part, user_part)
        except (TypeError, SchemaError) as exc:  # a value of the wrong type, lone surrogates
            raise SchemaError(_bad_field(exc, _named(
                user, resource, resource_type, session, source_ip, host, country, city,
                extra))) from None
        if len(prefix) + len(suffix) > _MAX_PARTS:
            raise SchemaError(_too_large(len(prefix) + len(suffix), {
                "message": message, "analyzer": extra, "resource.name": resource,
                "user.name": user, "event.action": action, "analyzer.encrypted":
                    analyzer_part if self._cipher is not None else None}))
        self._enqueue((prefix, suffix), lvl, out)
        return event_id

    def _field_parts(self, extra: Mapping[str, Any] | None, resource: str | None,
                     resource_type: str | None, bytes: int | None, session: str | None,
                     source_ip: str | None, country: str | None, city: str | None,
                     user: str | None, roles: Iterable[str] | None, message: str,
                     event_id: str) -> tuple[bytes, bytes, bytes, bytes, bytes, str]:
        """The fragments of the fields that are encrypted at rest when a cipher is configured:
        ``analyzer`` (without a leading comma), then ``resource``, ``session``, ``source`` and
        ``user`` (each with its separating comma, or empty), and the message; with a cipher,
        the sealed ``analyzer`` fragment, empty ones and an empty message.

        The record is assembled as canonical JSON directly, keys in sorted order at every
        level (DESIGN contract 2), from pre-encoded constant parts: no dict per record and one
        pass. verify() re-derives the canonical form with orjson, and the tests check that the
        two agree on arbitrary values.
        """
        strings = JSON_STRINGS
        analyzer_part = (b'"analyzer":' + orjson.dumps(
            dict(extra), default=json_default, option=CANONICAL)) if extra else b""
        resource_part = session_part = source_part = user_part = b""
        if resource and not resource_type and bytes is None:  # the common case
            resource_part = b',"resource":{"name":%s}' % (
                strings.get(resource) or jstr(resource))
        elif resource or resource_type or bytes is not None:
            resource_part = _resource_part(resource, resource_type, bytes)
        if session:
            session_part = b',"session":{"id":%s}' % jstr(session)
        if source_ip:
            ip = valid_ip(source_ip)
            if country is None and self._geo is not None:
                country, city = self._geo(ip) or (None, None)
            if country or city:
                source_part = _source_part(ip, country, city)
            else:
                source_part = b',"source":{"ip":"%s"}' % ip.encode()
        if user:
            if type(user) is not str:
                raise SchemaError(f"user.name: expected a string, got {user!r}")
            user_part = b',"user":{"name":%s%s}' % (
                strings.get(user) or jstr(user),
                b',"roles":' + _roles_json(roles) if roles else b"")
        if self._cipher is not None:
            analyzer_part = _sealed(self._cipher, event_id, message, analyzer_part,
                                    resource_part + session_part + source_part + user_part)
            return analyzer_part, b"", b"", b"", b"", ""
        return analyzer_part, resource_part, session_part, source_part, user_part, message


    def debug(self, action: str, **fields: Any) -> str | None:
        return self.log(action, level=Level.DEBUG, stacklevel=2, **fields)

    def info(self, action: str, **fields: Any) -> str | None:
        return self.log(action, level=Level.INFO, stacklevel=2, **fields)

    def warning(self, action: str, **fields: Any) -> str | None:
        return self.log(action, level=Level.WARNING, stacklevel=2, **fields)

    def error(self, action: str, **fields: Any) -> str | None:
        return self.log(action, level=Level.ERROR, stacklevel=2, **fields)

    def critical(self, action: str, **fields: Any) -> str | None:
        return self.log(action, level=Level.CRITICAL, stacklevel=2, **fields)

    def log_event(self, event: AuditEvent) -> str | None:
        """Write a pre-built :class:`AuditEvent`, keeping its timestamp and fields.

        Used for imports and for the analyzer's alerts. Its ``id`` is kept when set (so that
        re-importing is idempotent downstream); sequence and hash are always the chain's own.
        Location metadata the event lacks is filled from this logger.
        """
        if event.level < self.min_level:
            return None
        prefix, suffix, event_id = self._encode_event(event)
        self._enqueue((prefix, suffix), event.level, event.outcome)
        return event_id

    def _encode_event(self, event: AuditEvent) -> tuple[bytes, bytes, str]:
        """Canonical JSON of an AuditEvent, split around the sequence number."""
        if self._forked:
            self._after_fork()
        doc = event.to_ecs()
        doc["ecs"] = ECS
        ev = doc["event"]
        ev.pop("hash", None)
        ev.setdefault("id", f"{self._id_prefix}-{next(self._ids):x}")
        if self._cipher is not None:
            # the chain's own metadata (rotation, declaration, deletions) stays in clear:
            # verify reads it without the encryption key
            details, chain = doc.get("analyzer"), None
            if isinstance(details, Mapping) and "chain" in details:
                chain = details["chain"]
                details = {k: v for k, v in details.items() if k != "chain"}
                if details:
                    doc["analyzer"] = details
                else:
                    del doc["analyzer"]
            self._cipher.split(doc)
            doc["message"] = ""
            if chain is not None:
                doc.setdefault("analyzer", {})["chain"] = chain
        ev["sequence"] = -1  # a placeholder the chain fills in at flush time
        doc.setdefault("host", {"name": self.host})
        doc.setdefault("process", {"pid": self._pid})
        doc["log"].setdefault("logger", self.name)
        if self.service:
            doc.setdefault("service", {"name": self.service})
        try:
            canonical = orjson.dumps(doc, default=json_default, option=CANONICAL)
        except TypeError as exc:
            raise SchemaError(f"cannot encode the record: {exc.__cause__ or exc}") from None
        if len(canonical) > _MAX_PARTS:
            raise SchemaError(_too_large(len(canonical), {
                "message": event.message, "analyzer": event.analyzer}))
        # Only event.sequence has this spelling: keys after "event" at the top level are
        # written by this module and contain no "sequence"; a quote inside a string is escaped.
        cut = canonical.rfind(b'"sequence":-1')
        return canonical[:cut + 11], canonical[cut + 13:], ev["id"]

    def attach(self, item: Attachment) -> None:
        """Attach ``item`` (see :class:`Attachment`): it is told of rotations and of close."""
        item.attach(self)
        with self._lock:
            self._attached.append(item)

    def flush(self, *, fsync: bool = False) -> None:
        """Write every queued record now (and fsync the file if asked)."""
        with self._lock:
            self._flush_locked(fsync=fsync)
            if fsync:
                os.fsync(self._fd)
        if self._rotated_due:
            self._tell_rotated()

    def close(self) -> None:
        """Flush, detach what is attached, write a final checkpoint and close the file.
        Idempotent."""
        if self._attached and not self._closed:
            with self._lock:
                self._flush_locked()
            # Outside the lock: a shipping thread may be logging a rejection report. What it
            # has not delivered yet waits in the file for the next start, from its cursor.
            for item in reversed(self._attached):
                item.detach(self)
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
                if self._seq:
                    self._checkpoint()
            finally:
                self._closed = True
                self._wake.set()
                os.close(self._fd)
                os.close(self._lock_fd)
                atexit.unregister(self.close)
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)

    def __enter__(self) -> AuditLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLogger({str(self.path)!r}, durability={self.durability.value!r})"

    # -- writing -------------------------------------------------------------------------

    def _open(self) -> None:
        """Open the lock file and the log, and continue the chain that is on disk."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _open_lock(self.path)
            self._fd = open_append(self.path, 0o640, readable=True)
        except OSError as exc:
            raise LogWriteError(
                f"{self.path}: cannot open audit log: {exc.strerror or exc}") from None
        self._end = -1  # unknown until read under the lock
        try:
            with self._file_lock():
                self._sync_locked()
            if self._cipher is None and self._end:
                self._refuse_clear_into_sealed()
        except BaseException:
            os.close(self._fd)
            os.close(self._lock_fd)
            raise

    def _refuse_clear_into_sealed(self) -> None:
        """An encrypted trail gets no record in clear: without its key, refuse to write."""
        from analyzer.crypto import trail_is_sealed

        if trail_is_sealed(self.path):  # the caller closes the descriptors
            raise ConfigError(f"{self.path}: records are encrypted at rest; give the "
                              "encryption key (encryption_key=, --encryption-key-file) to "
                              "write to it, so that nothing is added in clear")

    def _after_fork(self) -> None:
        """In a forked child: own file descriptor and lock, no inherited queue or thread.

        flock() locks belong to the open file description, which a fork shares; without a
        fresh descriptor, parent and child would not exclude each other and could fork the
        chain. Records queued in the parent are the parent's to write.
        """
        self._pid = os.getpid()
        self._process_json = b',"process":{"pid":%d}' % self._pid
        self._forked = False
        self._lock = threading.Lock()
        self._pending = []
        self._tally = []
        self._flusher = None
        self._wake = threading.Event()
        os.close(self._lock_fd)  # shared with the parent: closing our copy does not unlock it
        self._lock_fd = _open_lock(self.path)
        self._fd = open_append(self.path, 0o640, readable=True)
        self._end = -1
        with self._file_lock():
            self._sync_locked()

    def _enqueue(self, record: tuple[bytes, bytes], level: Level, outcome: Outcome) -> None:
        with self._lock:
            if self._closed:
                raise LogWriteError(f"{self.path}: audit logger is closed")
            if self._teller == threading.get_ident():
                self._opening_record(record, level, outcome)
                return
            self._pending.append(record)
            if self._metrics is not None:  # counted under the lock: no update is lost
                self._tally.append((level, outcome))
            if len(self._pending) >= self._batch_records:
                fsync = self.durability is Durability.FSYNC
                self._flush_locked(fsync=fsync)
                if fsync:
                    os.fsync(self._fd)
            elif self._flusher is None:
                self._start_flusher()
        if self._rotated_due:
            self._tell_rotated()

    def _opening_record(self, record: tuple[bytes, bytes], level: Level,
                        outcome: Outcome) -> None:
        """Write now, after what is queued, a record an attachment logs when told of a
        rotation (lock held): it goes into the file that rotation opened whatever its size,
        for a rotation it caused would be told again, and so on without end."""
        fsync = self.durability is Durability.FSYNC
        self._flush_locked(fsync=fsync)
        self._pending.append(record)
        if self._metrics is not None:
            self._tally.append((level, outcome))
        self._flush_locked(fsync=fsync, opening=True)
        if fsync:
            os.fsync(self._fd)

    def _tell_rotated(self) -> None:
        """Tell the attachments of a rotation; without the lock (they write audit events).

        One thread at a time, and never from inside an attachment: retention logs its
        deletions, which may rotate the file again, and a nested run would delete under the
        feet of the one in progress. A rotation meanwhile is told by the loop.
        """
        if not self._telling.acquire(blocking=False):
            return  # the flag stays set: the run in progress, or the next write, sees it
        self._teller = threading.get_ident()
        try:
            while self._rotated_due:
                self._rotated_due = False
                for item in list(self._attached):
                    try:
                        item.rotated(self)
                    except Exception:  # e.g. retention: never stops the application logging
                        _log.exception("after the rotation of %s, %r failed", self.path, item)
        finally:
            self._teller = None
            self._telling.release()

    def _start_flusher(self) -> None:
        # A daemon thread bounds how long a record can wait in memory under "batch".
        self._flusher = threading.Thread(target=self._flush_periodically,
                                         name=f"audit-flush:{self.path.name}", daemon=True)
        self._flusher.start()

    def _flush_periodically(self) -> None:
        while not self._closed:
            self._wake.wait(self._batch_seconds)
            if self._closed:
                return
            with self._lock:
                if self._pending and not self._closed:
                    try:
                        self._flush_locked()
                    except LogWriteError:
                        _log.exception("background flush of %s failed", self.path)
            if self._rotated_due and not self._closed:
                self._tell_rotated()

    def _flush_locked(self, *, fsync: bool = False, opening: bool = False) -> None:
        """Write the queued records (lock held), rotating first when due, and again before a
        record that would take the file past ``rotate_bytes``: a batch may end in the next
        file. ``fsync``: the caller syncs the file after; a file rotated away meanwhile is
        synced here, so that its share of the batch is on disk as well. ``opening``: the
        records go into the file as it is (see :meth:`_opening_record`)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        with self._file_lock():
            try:
                self._sync_locked()
                if not opening and self._rotation_due():
                    self._rotate()
            except BaseException:  # e.g. a chain declared with another key: keep the records
                self._pending = pending + self._pending
                raise
            while pending := self._write_part(pending, opening=opening):
                try:
                    if fsync:
                        os.fsync(self._fd)
                    self._rotate()
                except BaseException:  # the records not written yet stay queued
                    self._pending = pending + self._pending
                    raise
        if self._checkpoint_every and self._since_checkpoint >= self._checkpoint_every:
            self._checkpoint()

    def _write_part(self, pending: list[tuple[bytes, bytes]], *, opening: bool = False
                    ) -> list[tuple[bytes, bytes]]:
        """Chain and write the first of ``pending`` that fit in the file (lock held), all of
        them when ``opening``; the rest, to write after a rotation.

        A record fits while the file stays within ``rotate_bytes``; the file's first record
        (after the rotation record that opens it) is written whatever its size, so that a
        record larger than the limit is alone in its file.
        """
        queued, marker = pending, self._needs_marker
        records = list(pending)
        first = 0  # where the records of ``pending`` begin
        if marker is not None:
            records.insert(0, self._marker(marker))
            self._needs_marker = None
            first = 1
        if self._seq == 0:
            records[0] = self._declare(records[0])  # the chain's first record says how
        seq, link = self._seq, self._hasher.link_parts
        tip = self._head.encode("ascii")
        limit, size = None if opening else self._rotate_bytes, self._end
        lines: list[bytes] = []
        for index, (prefix, suffix) in enumerate(records):
            number = b"%d" % (seq + 1)
            after = link(tip, prefix, number, suffix)
            line = b'%s%s,"hash":"%s"%s\n' % (prefix, number, after, suffix)
            if limit is not None and size + len(line) > limit and \
                    (index > first or (not first and self._end > 0)):
                break  # the file holds a record already: this one opens the next file
            seq, tip = seq + 1, after
            lines.append(line)
            size += len(line)
        done = len(lines) - first  # records of ``pending`` written
        blob = b"".join(lines)
        try:
            written = os.write(self._fd, blob) if blob else 0
            while written < len(blob):
                written += os.write(self._fd, blob[written:])
        except OSError as exc:
            self._undo_write(queued, marker)
            raise LogWriteError(
                f"{self.path}: cannot write audit log: {exc.strerror}") from None
        if self._end == 0 and blob:
            self._file_started_ns = time.time_ns()
        self._end += len(blob)
        self._since_checkpoint += seq - self._seq
        self._seq, self._head = seq, tip.decode("ascii")
        if self._metrics is not None and blob:
            tally, self._tally = self._tally[:done], self._tally[done:]
            self._metrics.written(Counter(tally), seq, self.service)
        return pending[done:]

    def _undo_write(self, queued: list[tuple[bytes, bytes]], marker: str | None) -> None:
        """After a failed or short write (lock held): cut the file back to its last good end
        and requeue the records as they were before this attempt, so the retry chains them
        afresh and no fragment, or whole record written before the failure, stays behind."""
        self._pending = queued + self._pending
        self._needs_marker = marker
        try:
            os.ftruncate(self._fd, self._end)
        except OSError as exc:
            # The next write re-reads the head and sets an incomplete tail aside; complete
            # records written before the failure would then be chained twice (as copies).
            _log.error("%s: cannot cut a failed write back to byte %d: %s",
                       self.path, self._end, exc.strerror)
            self._end = -1

    def _sync_locked(self) -> None:
        """Make the descriptor, head and end current (file lock held).

        Another process may have rotated the file (our descriptor is then the old file) or
        appended to it since we last wrote: continue from what is on disk now.
        """
        if self._rotated_elsewhere():
            os.close(self._fd)
            self._fd = open_append(self.path, 0o640, readable=True)
            self._file_started_ns = None
            self._end = -1
        if self._end != os.fstat(self._fd).st_size:
            self._end, self._seq, self._head = self._read_head()

    def _declare(self, record: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
        """The first record of a chain, with ``analyzer.chain`` naming algorithm and key id.

        Once per chain, so a parse and a re-encoding cost nothing that matters; the
        declaration sits beside an encrypted envelope, in clear.
        """
        prefix, suffix = record
        doc = orjson.loads(prefix + b"-1" + suffix)
        analyzer = doc.setdefault("analyzer", {})
        chain = analyzer.get("chain")
        analyzer["chain"] = {**(chain if isinstance(chain, dict) else {}),
                             **self._hasher.declaration()}
        canonical = orjson.dumps(doc, option=CANONICAL)
        cut = canonical.rfind(b'"sequence":-1')
        return canonical[:cut + 11], canonical[cut + 13:]

    def _check_declaration(self, first_line: bytes, where: Path) -> None:
        """Refuse to continue a chain declared with another key, or without one."""
        try:
            doc = orjson.loads(first_line)
        except orjson.JSONDecodeError:
            return  # not ours to judge here: verify names a damaged record
        if not (_is_rotation(doc) or (isinstance(doc, dict) and isinstance(
                doc.get("event"), dict) and doc["event"].get("sequence") == 1)):
            return  # the file starts mid-chain without a rotation record: legacy or damaged
        refused = declaration_problem(chain_declaration(doc), self._hasher)
        if refused is None:
            return
        kind, why = refused
        advice = ("pass its key (--key-file)" if kind == "key needed"
                  else "use the key it was written with, or start a new log")
        raise IntegrityError(f"{where}: {why}; refusing to append: {advice}")

    # -- rotation ------------------------------------------------------------------------

    def _rotation_due(self) -> bool:
        if self._end == 0:
            return False
        if self._rotate_bytes is not None and self._end >= self._rotate_bytes:
            return True
        if self._rotate_ns is not None:
            if self._file_started_ns is None:
                self._file_started_ns = self._first_record_ns()
            return time.time_ns() - self._file_started_ns >= self._rotate_ns
        return False

    def _rotate(self) -> None:
        """Rename the full file aside and continue the chain in a fresh one (lock held).

        The lock is on the stable ``.lock`` file, not on the file renamed here, so writers
        that still hold the old descriptor wait for us and then find it is no longer the log.
        """
        now = datetime.now(UTC)
        rotated = rotated_name(self.path, now)
        while rotated.exists():  # a clock stepped back: never replace an earlier file
            now += timedelta(microseconds=1)
            rotated = rotated_name(self.path, now)
        os.replace(self.path, rotated)
        os.close(self._fd)
        self._fd = open_append(self.path, 0o640, readable=True)
        self._end = 0
        self._file_started_ns = None
        self._needs_marker = rotated.name
        self._declared_ino = os.fstat(self._fd).st_ino  # we write its declaration
        self._rotated_due = bool(self._attached)
        _log.info("rotated %s to %s at sequence %d", self.path, rotated.name, self._seq)

    def _rotated_elsewhere(self) -> bool:
        # Another process renamed the file we hold: our descriptor points at the old one.
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return True

    def _marker(self, previous: str) -> tuple[bytes, bytes]:
        """The first record of a rotated-in file: where the chain comes from, and how."""
        event = AuditEvent(
            "audit.rotation", timestamp=datetime.now(UTC), level=Level.INFO,
            outcome=Outcome.SUCCESS, category=("configuration",), logger=self.name,
            message=f"the chain continues from {previous} (sequence {self._seq})",
            analyzer={"chain": {"previous": {"file": previous, "sequence": self._seq,
                                             "hash": self._head},
                                **self._hasher.declaration()}})
        prefix, suffix, _ = self._encode_event(event)
        return prefix, suffix

    def _first_record_ns(self) -> int:
        try:
            doc = orjson.loads(first_line(self._fd))
            return int(parse_timestamp(doc["@timestamp"]).timestamp() * 1e9)
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, SchemaError):
            return time.time_ns()

    def _checkpoint(self) -> None:
        self._since_checkpoint = 0
        try:
            write_checkpoint(checkpoint_path(self.path),
                             now_checkpoint(self._seq, self._head, self.path.name),
                             mode=mode_of(self.path))
        except OSError as exc:
            _log.warning("cannot write checkpoint beside %s: %s", self.path, exc)

    def _file_lock(self) -> _FileLock:
        return _FileLock(self)

    def _read_head(self) -> tuple[int, int, str]:
        """(file size, last sequence, last hash) of the log, read from our descriptor (lock
        held): a valid last record that lost its newline is completed, a torn one set aside."""
        fd = self._fd
        size = os.fstat(fd).st_size
        if size == 0:
            return self._head_of_rotated()
        ino = os.fstat(fd).st_ino
        if ino != self._declared_ino:
            self._check_declaration(first_line(fd), self.path)
            self._declared_ino = ino
        last, start = last_line(fd, size)
        if not last.endswith(b"\n"):
            if chained_record(last) is not None:
                os.write(fd, b"\n")  # complete, not set aside: it is a valid record
                size += 1
                last += b"\n"
                _log.warning("%s: completed a last record that lacked its newline", self.path)
            else:
                size = self._set_aside_torn(start, size)
                if size == 0:
                    return 0, 0, GENESIS_HASH
                last, start = last_line(fd, size)
        head = chained_record(last)
        if head is None:
            raise IntegrityError(
                f"{self.path}: the last record (byte {start}) is not a chained audit record; "
                "refusing to continue a chain that cannot be verified (run verify)")
        return size, head[0], head[1]

    def _head_of_rotated(self) -> tuple[int, int, str]:
        """An empty log whose earlier files were rotated away continues their chain."""
        siblings = rotated_files(self.path)
        if not siblings:
            return 0, 0, GENESIS_HASH
        newest = siblings[-1]
        with newest.open("rb") as handle:
            fd = handle.fileno()
            self._check_declaration(first_line(fd), newest)
            last, _ = last_line(fd, os.fstat(fd).st_size)
        head = chained_record(last)
        if head is None:
            raise IntegrityError(f"{newest}: its last record is not a chained audit record; "
                                 "refusing to continue the chain (run verify)")
        self._needs_marker = newest.name
        return 0, head[0], head[1]

    def _set_aside_torn(self, start: int, size: int) -> int:
        torn = os.pread(self._fd, size - start, start)
        aside = torn_path(self.path, datetime.now(UTC))
        fd = open_exclusive(aside, mode_of(self.path))
        try:
            os.write(fd, torn)
        finally:
            os.close(fd)
        os.ftruncate(self._fd, start)
        self.recovered_torn = aside
        _log.warning("%s: moved an incomplete last line (%d bytes) aside to %s",
                     self.path, len(torn), aside)
        return start


_LIVE: weakref.WeakSet[AuditLogger] = weakref.WeakSet()
_FORK_HOOK: list[bool] = []


#: The longest a record may be before its sequence number and hash are added (at most 20
#: digits and ``,"hash":"`` + 64 hex + ``"``: 94 bytes), so that the line stays within
#: MAX_RECORD_BYTES.
_MAX_PARTS = MAX_RECORD_BYTES - 94


def _sealed(cipher: RecordCipher, event_id: str, message: str, analyzer_part: bytes,
            parts: bytes) -> bytes:
    """The ``analyzer`` fragment holding the message and the ``parts`` sealed (their leading
    commas separate them inside the sealed object; the message leads)."""
    secret = b'{"message":%s%s%s%s}' % (
        orjson.dumps(message), b"," if analyzer_part else b"", analyzer_part, parts)
    return b'"analyzer":{"encrypted":%s}' % cipher.seal_envelope(secret, event_id)


def _given_categories(category: str | Iterable[str]) -> bytes:
    """The ``category`` fragment of categories given to :meth:`AuditLogger.log`."""
    cats = [category] if isinstance(category, str) else list(category)
    bad = [c for c in cats if c not in ECS_CATEGORIES]
    if bad:
        raise SchemaError(f"event.category: not an ECS category: {', '.join(bad)}")
    return b',"category":' + orjson.dumps(cats) if cats else b""


def _resource_part(resource: str | None, resource_type: str | None,
                   size: int | None) -> bytes:
    """The ``resource`` fragment beyond the common case of a name alone."""
    parts = []
    if size is not None:
        if type(size) is not int or not 0 <= size < 1 << 63:
            # a larger integer reads back as a float and breaks the chain
            raise SchemaError(f"resource.bytes: expected an integer from 0 to "
                              f"2**63-1, got {size!r:.60}")
        parts.append(b'"bytes":%d' % size)
    if resource:
        parts.append(b'"name":' + (JSON_STRINGS.get(resource) or jstr(resource)))
    if resource_type:
        parts.append(b'"type":' + jstr(resource_type))
    return b',"resource":{%s}' % b",".join(parts)


def _source_part(ip: str, country: str | None, city: str | None) -> bytes:
    """The ``source`` fragment of an address with a place (keys in canonical order)."""
    geo = []
    if city:
        geo.append(b'"city_name":' + jstr(city))
    if country:
        geo.append(b'"country_iso_code":' + jstr(country))
    return b',"source":{"geo":{%s},"ip":"%s"}' % (b",".join(geo), ip.encode())


def _roles_json(roles: Iterable[str] | str) -> bytes:
    values = [roles] if isinstance(roles, str) else list(roles)
    bad = next((r for r in values if type(r) is not str), None)
    if bad is not None:
        raise SchemaError(f"user.roles: expected strings, got {bad!r:.60}")
    return orjson.dumps(values)


def _named(user: object, resource: object, resource_type: object, session: object,
           source_ip: object, host: object, country: object, city: object,
           extra: object) -> dict[str, Any]:
    """The fields :meth:`AuditLogger.log` was given, by their ECS names (for its errors)."""
    return {"user.name": user, "resource.name": resource, "resource.type": resource_type,
            "session.id": session, "source.ip": source_ip, "host.name": host,
            "source.geo.country_iso_code": country, "source.geo.city_name": city,
            "analyzer": extra}


def _bad_field(exc: BaseException, fields: Mapping[str, Any]) -> str:
    """The error for a record that could not be encoded, naming the field when one is not
    what it should be (the happy path checks nothing; this runs only after a failure)."""
    if isinstance(exc, SchemaError) and ":" in str(exc).split(" ", 1)[0]:
        return str(exc)  # already names its field
    for name, value in fields.items():
        if value is not None and name != "analyzer" and type(value) is not str:
            return f"{name}: expected a string, got {value!r:.60}"
    return f"cannot encode the record: {getattr(exc, '__cause__', None) or exc}"


def _too_large(size: int, fields: Mapping[str, Any]) -> str:
    """Name the biggest field of a record over the size limit."""
    sizes = {name: len(orjson.dumps(value, default=str)) for name, value in fields.items()
             if value is not None}
    biggest = max(sizes, key=sizes.__getitem__, default="record")
    return (f"{biggest}: the record would be {size:,} bytes, over the limit of "
            f"{MAX_RECORD_BYTES:,} (analyzer.events.MAX_RECORD_BYTES); readers set longer "
            f"lines aside")


def _watch_forks(audit: AuditLogger) -> None:
    """Mark loggers as forked in a child process, so that each reopens its file there.

    The hook is registered once, when the first logger is made (not at import), and holds
    the loggers weakly; checking a flag costs less per event than asking for the pid.
    """
    _LIVE.add(audit)
    if not _FORK_HOOK:
        os.register_at_fork(after_in_child=_mark_forked)
        _FORK_HOOK.append(True)


def _mark_forked() -> None:
    for audit in list(_LIVE):
        audit._forked = True


def _durability(durability: Durability | str, batch_records: int, batch_ms: float
                ) -> Durability:
    if batch_records < 1 or batch_ms <= 0:
        raise ConfigError("batch_records and batch_ms must be positive")
    try:
        return Durability(durability)
    except ValueError:
        raise ConfigError(
            f"durability must be flush, batch or fsync, not {durability!r}") from None


def _rotation(size: int | None, every: str | timedelta | None
              ) -> tuple[int | None, int | None]:
    """``(bytes, nanoseconds)`` a file is rotated at (``None``: not by that measure)."""
    if size is not None and size < 1:
        raise ConfigError("rotate_bytes must be positive")
    if every is None:
        return size, None
    span = parse_duration(every, name="rotate_every")
    if span <= timedelta(0):
        raise ConfigError("rotate_every must be positive")
    return size, int(span.total_seconds() * 1e9)


def _open_lock(log: Path) -> int:
    """The stable lock file writers take turns on (``<log>.lock``, 0600, never a link).

    Not the log itself: rotation renames the log, and a lock on a renamed inode excludes
    nobody who opened the new file.
    """
    return os.open(lock_path(log), _LOCK_FLAGS, 0o600)


def _is_rotation(doc: Any) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("event"), dict)
            and doc["event"].get("action") == "audit.rotation")


class _FileLock:
    """An exclusive advisory lock on the log's stable lock file, so writers take turns."""

    __slots__ = ("_owner",)

    def __init__(self, owner: AuditLogger) -> None:
        self._owner = owner

    def __enter__(self) -> None:
        fcntl.flock(self._owner._lock_fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._owner._lock_fd, fcntl.LOCK_UN)
