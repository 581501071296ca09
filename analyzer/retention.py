"""Retention: delete old rotated audit files, only once every destination has shipped them.

A log rotated by :class:`~analyzer.logger.AuditLogger` is a series: the active file
``audit.jsonl`` and rotated files ``audit.jsonl.<YYYYmmddTHHMMSSffffffZ>`` (the UTC time of
the rotation, so names sort in series order). Each file after the first opens with an
``audit.rotation`` record naming the file before it, its last sequence and hash, so the
remaining series still verifies after the oldest files are gone
(:func:`~analyzer.integrity.verify_series` continues from that record).

:func:`apply_retention` deletes a rotated file only when all of these hold:

- it is past retention: older than ``keep_days`` (by its rotation time) and not among the
  newest ``keep_files`` rotated files (each limit given is a minimum that is kept);
- it is the oldest file left: files are deleted from the start of the series only, never
  from the middle (that would be a gap ``verify`` reports as missing records);
- **every destination has shipped it.** A destination's cursor (``<log>.ship-<name>.cursor``,
  see :mod:`analyzer.sinks.shipper`) has moved past the file: the cursor's inode is that of
  a later file of the series (a later rotated file or the active file). The shipper reads
  the files in order and moves its cursor into the next file only after delivering the
  previous one to its end, so a cursor in a later file means every record of this one was
  delivered. A cursor whose inode matches no file of the series (the log was copied or
  restored) counts when its ``sequence`` is at least the file's last sequence, because
  records are delivered in sequence order. No cursor means nothing was shipped;
- the next file's ``audit.rotation`` record names this file with its last sequence and
  hash: the chain that will vouch for the deletion is intact.

Each deletion is written to the audit log first, as an ``audit.retention.delete`` event at
WARNING carrying the file's name, first and last sequence, final hash and size, and flushed
to disk; then the file is removed. So a deletion is itself on the record, chained, and the
final hash it names is the one the next file's rotation record carries. The name and
sequences are also under ``analyzer.chain.deleted``, which stays in clear in an encrypted
trail, so that :func:`~analyzer.integrity.verify_series` can tell a series that starts where
retention deleted from one whose oldest files were removed off the record.

The active file is never deleted. Call it from the command line (``audit-analyzer
retention``), a scheduled job, or after a rotation (outside the logger's lock: it logs).

>>> import tempfile, os
>>> from analyzer.logger import AuditLogger
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> with AuditLogger(path) as audit:
...     _ = audit.log("login", user="alice")
...     apply_retention(path, keep_files=0, destinations=(), audit=audit).deleted
()
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from analyzer.errors import ConfigError, IntegrityError, LogWriteError
from analyzer.events import AuditEvent, Level, Outcome
from analyzer.files import first_line, last_line
from analyzer.follow import Cursor, load_cursor
from analyzer.integrity import chained_record, previous_of
from analyzer.logger import AuditLogger
from analyzer.series import (
    cursor_path,
    rotated_files,
    rotation_time,
    shipped_destinations,
    split_rotated,
)

__all__ = [
    "DeletedFile",
    "RetentionPolicy",
    "RetentionReport",
    "apply_retention",
    "rotated_files",
    "shipped_by",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What an :class:`~analyzer.logger.AuditLogger` keeps of its rotated files.

    Given as ``AuditLogger(..., retention=RetentionPolicy(keep_days=90))`` (or attached with
    ``audit.attach(policy)``: it is an :class:`~analyzer.logger.Attachment`), it is applied
    after every rotation, with the same rules as :func:`apply_retention`.
    """

    keep_days: float | None = None
    keep_files: int | None = None
    destinations: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.keep_days is None and self.keep_files is None:
            raise ConfigError("a retention policy needs keep_days or keep_files (or both)")

    def attach(self, audit: AuditLogger) -> None:
        """Nothing to start: the policy acts after rotations only."""

    def rotated(self, audit: AuditLogger) -> None:
        """Apply the policy to the log ``audit`` writes (it records the deletions)."""
        apply_retention(audit.path, audit=audit, keep_days=self.keep_days,
                        keep_files=self.keep_files, destinations=self.destinations)

    def detach(self, audit: AuditLogger) -> None:
        """Nothing to stop."""


@dataclass(frozen=True, slots=True)
class DeletedFile:
    """A rotated file retention deleted (or, in a dry run, would delete)."""

    name: str
    first_sequence: int
    last_sequence: int
    last_hash: str
    bytes: int
    rotated: str  # ISO 8601 UTC time of the rotation, from the name


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What :func:`apply_retention` did: files deleted, and why the others were kept.

    ``kept`` holds ``(file name, reason)`` for each rotated file kept, oldest first.
    """

    deleted: tuple[DeletedFile, ...]
    kept: tuple[tuple[str, str], ...]
    destinations: tuple[str, ...]
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = f"{verb} {len(self.deleted)} rotated file(s), kept {len(self.kept)}"
        if self.destinations:
            text += f" (shipped to: {', '.join(self.destinations)})"
        return text


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    inode: int
    size: int
    rotated: datetime


def shipped_by(cursor: Cursor | None, file: Path, *, later: Sequence[Path],
               last_sequence: int) -> bool:
    """Whether a destination with ``cursor`` has shipped all of ``file``.

    ``later`` are the files after it in the series (later rotated files and the active
    file). See the module docstring for the rule.
    """
    if cursor is None or not cursor.inode:
        return False
    inodes = {}
    for path in [file, *later]:
        try:
            inodes[os.stat(path).st_ino] = path
        except FileNotFoundError:
            continue
    at = inodes.get(cursor.inode)
    if at is not None:
        return at != file
    return cursor.sequence is not None and cursor.sequence >= last_sequence


def apply_retention(
    log_path: str | os.PathLike[str],
    *,
    audit: AuditLogger,
    keep_days: float | None = None,
    keep_files: int | None = None,
    destinations: Sequence[str] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RetentionReport:
    """Delete rotated files of ``log_path`` past retention that every destination shipped.

    Parameters
    ----------
    log_path
        The active audit log; its rotated files are ``<name>.<UTC time>`` beside it.
    audit
        The log's own :class:`~analyzer.logger.AuditLogger` (same file and integrity key):
        each deletion is recorded through it, at WARNING, before the file is removed.
    keep_days
        Keep files rotated less than this many days ago.
    keep_files
        Keep at least the newest this many rotated files. At least one of the two limits
        is required; with both, a file is deleted only when it is past both.
    destinations
        Names of the destinations that must have shipped a file (their cursor files beside
        the log, as ``ship --name`` or each sink's ``name`` made them). ``None`` (default):
        every destination that has a cursor beside the log. ``()``: the log is not shipped.
    dry_run
        Report what would be deleted; delete and record nothing.
    now
        The time retention is judged at (default: now).

    Returns
    -------
    RetentionReport
        The files deleted and, for each file kept, why.
    """
    if keep_days is None and keep_files is None:
        raise ConfigError("retention needs keep_days or keep_files (or both)")
    if keep_days is not None and keep_days < 0:
        raise ConfigError(f"keep_days must not be negative, got {keep_days}")
    if keep_files is not None and keep_files < 0:
        raise ConfigError(f"keep_files must not be negative, got {keep_files}")
    log = Path(log_path)
    if Path(audit.path).resolve() != log.resolve():
        raise ConfigError(f"the audit logger writes {audit.path}, not {log}: retention "
                          "must record deletions in the log it deletes from")
    names = shipped_destinations(log) if destinations is None else tuple(destinations)
    cursors = {name: load_cursor(cursor_path(log, name)) for name in names}
    moment = now or datetime.now(UTC)
    files = [_describe(p) for p in rotated_files(log)]
    newest_kept = len(files) - (keep_files or 0)
    deleted: list[DeletedFile] = []
    kept: list[tuple[str, str]] = []
    held = ""  # the first file kept: everything after it is kept too (no gaps)
    for index, file in enumerate(files):
        name = file.path.name
        age = moment - file.rotated
        if keep_files is not None and index >= newest_kept:
            reason = f"among the newest {keep_files} rotated files"
        elif keep_days is not None and age < timedelta(days=keep_days):
            reason = f"rotated {age.days} days ago, within {keep_days:g} days"
        elif held:
            reason = f"an older file ({held}) is kept, and files go oldest first"
        else:
            later = [f.path for f in files[index + 1:]] + [log]
            reason, gone = _deletable(file, later, cursors)
        if reason:
            kept.append((name, reason))
            held = held or name
            continue
        if not dry_run:
            _delete(audit, file.path, gone, names)
        deleted.append(gone)
    return RetentionReport(tuple(deleted), tuple(kept), names, dry_run)


def _deletable(file: _File, later: list[Path], cursors: dict[str, Cursor | None]
               ) -> tuple[str, DeletedFile]:
    """Why the oldest file left, past retention, must still be kept ("" if it need not),
    and what deleting it removes. ``later`` are the files after it, the active file last."""
    first, last, last_hash = _sequences(file.path)
    gone = DeletedFile(file.path.name, first, last, last_hash, file.size,
                       file.rotated.isoformat().replace("+00:00", "Z"))
    waiting = [d for d, c in cursors.items()
               if not shipped_by(c, file.path, later=later, last_sequence=last)]
    if waiting:
        return f"not yet shipped to {', '.join(waiting)}", gone
    return _next_does_not_continue(later[0], file.path.name, last, last_hash), gone


def _delete(audit: AuditLogger, path: Path, gone: DeletedFile,
            destinations: tuple[str, ...]) -> None:
    """Record the deletion (durably), then delete: never a deletion off the record."""
    shipped = f"; shipped to {', '.join(destinations)}" if destinations else ""
    audit.log_event(AuditEvent(
        "audit.retention.delete", timestamp=datetime.now(UTC), level=Level.WARNING,
        outcome=Outcome.SUCCESS, category=("file",), resource=gone.name,
        resource_type="file", bytes=gone.bytes, logger=audit.name,
        message=f"retention deleted {gone.name} (sequences {gone.first_sequence}-"
                f"{gone.last_sequence}, final hash {gone.last_hash}){shipped}",
        analyzer={"retention": {"file": gone.name, "first_sequence": gone.first_sequence,
                                "last_sequence": gone.last_sequence,
                                "last_hash": gone.last_hash, "bytes": gone.bytes,
                                "rotated": gone.rotated, "destinations": list(destinations)},
                  "chain": {"deleted": {"file": gone.name,
                                        "first_sequence": gone.first_sequence,
                                        "last_sequence": gone.last_sequence}}}))
    audit.flush(fsync=True)
    try:
        path.unlink()
    except FileNotFoundError:
        _log.warning("%s was already gone when retention deleted it", path)
    except OSError as exc:
        audit.log("audit.retention.failed", level=Level.ERROR, outcome="failure",
                  category=("file",), resource=gone.name, resource_type="file",
                  message=f"retention could not delete {gone.name}: {exc.strerror}")
        audit.flush(fsync=True)
        raise LogWriteError(f"{path}: cannot delete: {exc.strerror}") from None
    _log.info("retention deleted %s (last sequence %d)", path, gone.last_sequence)


def _describe(path: Path) -> _File:
    st = path.stat()
    _, stamp = split_rotated(path.name) or ("", "")
    return _File(path, st.st_ino, st.st_size, rotation_time(stamp))


def _record_fields(line: bytes, path: Path, where: str) -> tuple[int, str]:
    found = chained_record(line)
    if found is None:
        raise IntegrityError(f"{path}: its {where} line is not a chained audit record; "
                             "retention stops here (run verify)")
    return found


def _sequences(path: Path) -> tuple[int, int, str]:
    """(first sequence, last sequence, last hash) of a rotated file."""
    with path.open("rb") as handle:
        fd = handle.fileno()
        head, (tail, _) = first_line(fd), last_line(fd, os.fstat(fd).st_size)
    first, _ = _record_fields(head, path, "first")
    last, last_hash = _record_fields(tail, path, "last")
    return first, last, last_hash


def _next_does_not_continue(next_path: Path, name: str, last: int, last_hash: str) -> str:
    """Why the file after ``name`` does not vouch for it ("" when it does)."""
    try:
        with next_path.open("rb") as handle:
            line = handle.readline()
    except FileNotFoundError:
        return f"{next_path.name}, which follows it, is missing"
    if not line.endswith(b"\n"):
        return f"{next_path.name} has no complete first record yet"
    try:
        previous = previous_of(orjson.loads(line))
    except orjson.JSONDecodeError:
        previous = None
    if previous is None:
        return f"{next_path.name} does not open with a rotation record naming it"
    if (previous.get("file"), previous["sequence"], previous["hash"]) != (name, last, last_hash):
        return (f"{next_path.name}'s rotation record does not name its last sequence and "
                f"hash (the chain between them does not hold: run verify)")
    return ""

