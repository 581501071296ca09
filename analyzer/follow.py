"""Following a growing audit log: the cursor that says where a reader stands, and the tail.

A reader of a live log (the shipper, ``watch``, the chain monitor, retention's judgement of
what was shipped) keeps its place as a :class:`Cursor`: byte offset and inode of the file,
and the sequence and id of the last line it took, so that a resume can check it is where it
thinks it is. :class:`LogTail` reads complete lines from a cursor on, follows appends and
rotation (rename-and-recreate or copy-and-truncate), and on restart finds a rotated file by
its inode to finish it first. The file names are :mod:`analyzer.series`'s.

:func:`read_head` reads ``@timestamp``, ``event.id``, ``event.kind`` and ``event.sequence``
from the head of a line the logger wrote, without parsing the line.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> with open(path, "wb") as f:
...     _ = f.write(b'{"a": 1}\\n{"b": 2}\\n{"c"')
>>> tail = LogTail(path)
>>> [line for line, _ in tail.read(1 << 16)]
[b'{"a": 1}', b'{"b": 2}']
>>> tail.close()
>>> cursor_at_end(path).offset
18
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from analyzer.errors import ConfigError
from analyzer.files import atomic_write, last_line, mode_of, open_append
from analyzer.series import cursor_lock_path, is_side_file, rotated_files

__all__ = [
    "LINE_HEAD",
    "Cursor",
    "LogTail",
    "cursor_at_end",
    "load_cursor",
    "lock_cursor",
    "parse_object",
    "read_head",
    "save_cursor",
]

_log = logging.getLogger(__name__)


# -- the head of a line ----------------------------------------------------------------------

# The head of a record as the logger writes it (canonical JSON, sorted keys): the fields a
# follower needs on every line are read from here without parsing the whole record. Values
# before "id" and between "kind" and "sequence" are flat (strings without escapes, numbers,
# lists of plain strings); anything else falls back to a full parse.
_TS = rb'\{"@timestamp":"([^"\\]*)",'
_VALUE = rb'(?:"[^"\\]*"|\[[^\[\]{}"]*(?:"[^"\\]*"[^\[\]{}"]*)*\]|[-+.0-9eE]+)'
_EVENT = (rb'"ecs":\{"version":"[^"\\]*"\},"event":\{(?:"[a-z_]+":' + _VALUE + rb',)*?'
          rb'"id":"([^"\\]*)","kind":"([^"\\]*)",(?:"[a-z_]+":' + _VALUE + rb',)*?'
          rb'"sequence":(\d+),"hash":"')
#: the logger's everyday shape (no ``analyzer`` object before ``ecs``), tried first
LINE_HEAD = re.compile(_TS + _EVENT)
_TS_ONLY = re.compile(_TS)
_EVENT_ONLY = re.compile(_EVENT)
# After the top-level "event" object the logger writes only fixed-shape objects (host, log,
# process, resource, rule, service, session, source, user), so the last unescaped occurrence
# of this key on a line is the top-level one, even when "analyzer" holds nested documents.
_ECS_KEY = b'"ecs":{"version":"'


def parse_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on a line, or ``None`` when the line is not one."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def read_head(raw: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """``(@timestamp, event.id, event.kind, event.sequence)`` of a line the logger wrote,
    read without parsing it; ``None`` when the line does not have the logger's shape."""
    match = LINE_HEAD.match(raw)
    if match is not None:
        return match.groups()  # type: ignore[return-value]
    at = raw.rfind(_ECS_KEY)
    if at > 0:
        stamp = _TS_ONLY.match(raw)
        match = _EVENT_ONLY.match(raw, at) if stamp is not None else None
        if match is not None:
            return (stamp.group(1), *match.groups())  # type: ignore[union-attr,return-value]
    return None



# -- the cursor ------------------------------------------------------------------------------


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
    lock = cursor_lock_path(path)
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
        fd = handle.fileno()
        st = os.fstat(fd)
        line, start = last_line(fd, st.st_size) if st.st_size else (b"", 0)
        if not line.endswith(b"\n"):  # still being written: the line before it
            if start == 0:
                return Cursor(0, st.st_ino)
            line, start = last_line(fd, start)
    sequence, event_id = _line_names(line[:-1])
    return Cursor(start + len(line), st.st_ino, sequence, event_id,
                  datetime.now(UTC).isoformat())


def _line_names(line: bytes) -> tuple[int | None, str | None]:
    """``(event.sequence, event.id)`` of a line (``None`` for what it does not carry)."""
    head = read_head(line)
    if head is not None:
        return int(head[3]), head[1].decode()
    doc = parse_object(line) or {}
    found = doc.get("event")
    event = found if isinstance(found, dict) else {}
    seq, ident = event.get("sequence"), event.get("id")
    # a line that is not the logger's may carry anything there
    return (seq if type(seq) is int else None), (ident if isinstance(ident, str) else None)


# -- following the log -----------------------------------------------------------------------


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
            return bool(orjson.loads(line)["event"]["id"] == event_id)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False

    def _rotated_after(self, inode: int) -> Path | None:
        """The generation rotated right after the file with ``inode`` (``LOG.<stamp>``
        names sort in rotation order), or ``None`` when that file was the last rotated."""
        series = rotated_files(self.path)
        for index, candidate in enumerate(series):
            try:
                if candidate.stat().st_ino == inode:
                    return series[index + 1] if index + 1 < len(series) else None
            except OSError:
                continue
        return None

    def _find_rotated(self, inode: int) -> Path | None:
        for candidate in sorted(self.path.parent.glob(f"{glob.escape(self.path.name)}*")):
            if candidate == self.path or is_side_file(candidate):
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
