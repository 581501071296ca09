"""The file series of an audit log: every name the trail gives a file, in one place.

A log ``audit.jsonl`` is a series of files in one folder, and the tools keep side files
beside it. Their names are a contract (users' scripts, cron jobs and ``.gitignore`` files
name them), so they are spelled here only:

- ``audit.jsonl``: the active file the logger appends to;
- ``audit.jsonl.<YYYYmmddTHHMMSSffffffZ>``: a rotated file (:data:`ROTATED_STAMP`, the UTC
  time of the rotation, so that names sort in series order);
- ``audit.jsonl.lock``: the stable lock writers take turns on (:func:`lock_path`);
- ``audit.jsonl.checkpoints``: checkpoints, one per line (:func:`checkpoint_path`);
- ``audit.jsonl.torn-<stamp>``: an incomplete last line set aside (:func:`torn_path`);
- ``audit.jsonl.ship-<name>.cursor``: a destination's shipping cursor (:func:`cursor_path`),
  and ``...cursor.lock``, the lock its shipper holds (:func:`cursor_lock_path`);
- ``audit.jsonl.ship-<name>.dead.jsonl``: records a destination refused
  (:func:`dead_letter_path`);
- ``audit.jsonl.watch-state``: where ``watch`` resumes (:func:`watch_state_path`);
- ``<input>.rejected``: lines a read set aside (:func:`rejected_path`);
- ``.<name>.<random>.tmp``: a file being replaced (:func:`analyzer.files.atomic_write`).

:func:`is_side_file` tells those apart from logs (readers skip them in folders and globs),
:func:`rotated_files` and :func:`rotated_series` list a log's generations oldest first
(a name that holds ``*``, ``?`` or ``[`` is matched as it is: :func:`glob.escape`). How
the files are *created* (no links followed, explicit modes, atomic replacement) is
:mod:`analyzer.files`; this module only names them, and imports nothing of the project.

>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> log = os.path.join(folder, "audit.jsonl")
>>> for name in ("audit.jsonl", "audit.jsonl.20260102T000000000000Z", "audit.jsonl.lock",
...              "audit.jsonl.20260101T000000000000Z", "audit.jsonl.checkpoints"):
...     open(os.path.join(folder, name), "w").close()
>>> [p.name for p in rotated_series(log)]
['audit.jsonl.20260101T000000000000Z', 'audit.jsonl.20260102T000000000000Z', 'audit.jsonl']
>>> cursor_path(log, "es/prod").name
'audit.jsonl.ship-es_prod.cursor'
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from glob import escape as glob_escape  # a log's name may hold *, ? or [
from pathlib import Path

__all__ = [
    "ROTATED_STAMP",
    "SIDE_FILE_MARKERS",
    "SIDE_FILE_SUFFIXES",
    "checkpoint_path",
    "cursor_lock_path",
    "cursor_path",
    "dead_letter_path",
    "is_side_file",
    "lock_path",
    "rejected_path",
    "rotated_files",
    "rotated_name",
    "rotated_series",
    "rotation_stamp",
    "rotation_time",
    "shipped_destinations",
    "split_rotated",
    "torn_path",
    "watch_state_path",
]

PathLike = str | os.PathLike[str]

#: The UTC time a rotated file's name ends with (``audit.jsonl.20260101T000000000000Z``),
#: so that names sort in series order.
ROTATED_STAMP = re.compile(r"\d{8}T\d{12}Z")
_STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"

#: Files the tools keep beside a log, never logs themselves (skipped in folders and globs):
#: rejected lines, checkpoints, torn tails, shipper cursors and dead letters, watch state.
SIDE_FILE_MARKERS = (".rejected", ".checkpoints", ".torn-", ".ship-", ".watch-state", ".cursor")
#: ... and by how their names end: temporary files, keys and model cards beside a log, and
#: the writers' lock file (``.lock`` is a suffix: a marker would also match ``x.lockdown``).
SIDE_FILE_SUFFIXES = (".tmp", ".key", ".pub", ".md", ".lock")

_CHECKPOINTS = ".checkpoints"
_LOCK = ".lock"
_SHIP = ".ship-"
_CURSOR = ".cursor"
_DEAD = ".dead.jsonl"
_WATCH_STATE = ".watch-state"
_REJECTED = ".rejected"
# A destination's name as it may appear in a file name.
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _beside(log: PathLike, suffix: str) -> Path:
    path = Path(log)
    return path.with_name(path.name + suffix)


# -- rotation ----------------------------------------------------------------------------------

def rotation_stamp(when: datetime) -> str:
    """The stamp a file rotated at ``when`` (UTC) is named with."""
    return f"{when:{_STAMP_FORMAT}}"


def rotated_name(log: PathLike, when: datetime) -> Path:
    """The name ``log`` gets when it is rotated at ``when`` (UTC): ``<log>.<stamp>``."""
    return _beside(log, "." + rotation_stamp(when))


def rotation_time(stamp: str) -> datetime:
    """The UTC time a rotation stamp names (the inverse of :func:`rotation_stamp`)."""
    return datetime.strptime(stamp, _STAMP_FORMAT).replace(tzinfo=UTC)


def split_rotated(name: str) -> tuple[str, str] | None:
    """``(active file name, rotation stamp)`` of a rotated file's name (a ``.gz`` copy
    too), or ``None`` for a name that is not a rotated file's."""
    base, _, stamp = name.removesuffix(".gz").rpartition(".")
    if not base or not ROTATED_STAMP.fullmatch(stamp):
        return None
    return base, stamp


def rotated_files(log: PathLike) -> list[Path]:
    """The rotated files of ``log``, oldest first (not the active file)."""
    path = Path(log)
    found = [p for p in path.parent.glob(f"{glob_escape(path.name)}.*")
             if ROTATED_STAMP.fullmatch(p.name[len(path.name) + 1:]) and p.is_file()]
    return sorted(found, key=lambda p: p.name)


def rotated_series(log: PathLike) -> list[Path]:
    """The whole series of ``log`` in chain order: its rotated files, oldest first, then the
    active file (when it exists)."""
    path = Path(log)
    return [*rotated_files(path), *([path] if path.is_file() else [])]


# -- side files --------------------------------------------------------------------------------

def lock_path(log: PathLike) -> Path:
    """The stable file writers of ``log`` lock to take turns: beside it, ``.lock``."""
    return _beside(log, _LOCK)


def checkpoint_path(log: PathLike) -> Path:
    """Where the logger writes checkpoints for ``log``: beside it, ``.checkpoints``."""
    return _beside(log, _CHECKPOINTS)


def torn_path(log: PathLike, when: datetime) -> Path:
    """Where an incomplete last line of ``log`` found at ``when`` is set aside."""
    return _beside(log, f".torn-{rotation_stamp(when)}")


def cursor_path(log: PathLike, destination: str) -> Path:
    """The cursor file of ``destination`` beside the log: ``<log>.ship-<destination>.cursor``."""
    return _beside(log, f"{_SHIP}{_UNSAFE_NAME.sub('_', destination)}{_CURSOR}")


def cursor_lock_path(cursor: PathLike) -> Path:
    """The lock a shipper holds on its cursor (the cursor itself is replaced at each save)."""
    return _beside(cursor, _LOCK)


def dead_letter_path(log: PathLike, destination: str) -> Path:
    """The dead-letter file of ``destination``: ``<log>.ship-<destination>.dead.jsonl``."""
    return _beside(log, f"{_SHIP}{_UNSAFE_NAME.sub('_', destination)}{_DEAD}")


def shipped_destinations(log: PathLike) -> tuple[str, ...]:
    """The destinations (as their cursor files name them) that have a cursor beside ``log``."""
    path = Path(log)
    prefix = path.name + _SHIP
    return tuple(sorted(p.name[len(prefix):-len(_CURSOR)] for p in
                        path.parent.glob(f"{glob_escape(prefix)}*{_CURSOR}")))


def watch_state_path(log: PathLike) -> Path:
    """Where ``watch`` keeps its resume state for ``log``: ``<log>.watch-state``."""
    return _beside(log, _WATCH_STATE)


def rejected_path(output: PathLike) -> Path:
    """Where the lines a read set aside go beside ``output``: ``<output>.rejected``."""
    return _beside(output, _REJECTED)


def is_side_file(path: Path) -> bool:
    """True for the files the tools keep beside a log (see the module docstring)."""
    return (any(marker in path.name for marker in SIDE_FILE_MARKERS)
            or path.name.endswith(SIDE_FILE_SUFFIXES))
