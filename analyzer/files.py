"""How the project creates files: side files that never follow links, atomic replacement.

Every file the analyzer writes on its own account (checkpoints, torn tails, rejected lines,
cursors, dead letters, watch state, model artifacts, registry pointers) is created here, so
that one place decides how:

- **no links followed**: a side file's name is predictable (``<log>.checkpoints``,
  ``<input>.rejected``), so whoever can write the folder could plant a symlink there and
  have the next append land in ``~/.ssh/authorized_keys``. Side files are opened with
  ``O_NOFOLLOW``; a symlink in their place is an error naming the path.
- **an explicit mode**: ``0600`` unless the caller passes the mode of the file it belongs
  to (:func:`mode_of`, e.g. the log's ``0640`` for its checkpoints), never the umask's
  ``0644``.
- **atomic replacement**: :func:`atomic_write` writes a temporary file with a random name
  created with ``O_EXCL`` (never an existing file or link), fsyncs it where durability
  matters and renames it over the target, so a reader sees the old or the new content,
  never half.

>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> target = os.path.join(folder, "state.json")
>>> atomic_write(target, b"{}")
>>> oct(os.stat(target).st_mode & 0o777), open(target).read()
('0o600', '{}')
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from analyzer.errors import ConfigError, SourceError

__all__ = ["PRIVATE", "USER_OUTPUT", "append_side", "atomic_write", "check_private",
           "first_line", "last_line", "mode_of", "open_append", "open_exclusive", "read_secret"]

#: The mode of a side file that belongs to no other file.
PRIVATE = 0o600
#: The mode of an output the user asked for (a report): the umask decides, as for any file
#: they create with their tools.
USER_OUTPUT = 0o666
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 16


def mode_of(path: str | os.PathLike[str], default: int = PRIVATE) -> int:
    """The permission bits a side file of ``path`` gets: ``path``'s own (without execute
    bits), or ``default`` when it does not exist yet."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o666
    except OSError:
        return default


def _refusal(path: str | os.PathLike[str], exc: OSError) -> OSError:
    # ELOOP from O_NOFOLLOW: the last component is a symbolic link. A SourceError is an
    # OSError too, so a writer that survives a failed side file (checkpoints) survives it.
    if os.path.islink(path):
        return SourceError(f"{path}: is a symbolic link; refusing to write through it "
                           "(remove it, or point the tool at the real file)")
    return exc


def open_append(path: str | os.PathLike[str], mode: int = PRIVATE, *,
                readable: bool = False) -> int:
    """A descriptor appending to ``path`` (created with ``mode``), refusing a symlink.

    ``readable``: also open it for reading (the logger reads the head of its log through
    the descriptor it appends with, so that a rotation between the two cannot fool it).
    """
    access = os.O_RDWR if readable else os.O_WRONLY
    try:
        return os.open(path, access | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        raise _refusal(path, exc) from None


def open_exclusive(path: str | os.PathLike[str], mode: int = PRIVATE) -> int:
    """A descriptor on a new file at ``path``: fails if anything (file or link) is there."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_and_close(fd: int, data: bytes, *, fsync: bool) -> None:
    try:
        _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def append_side(path: str | os.PathLike[str], data: bytes, *, mode: int = PRIVATE,
                fsync: bool = False) -> None:
    """Append ``data`` to the side file ``path`` (see the module docstring)."""
    _write_and_close(open_append(path, mode), data, fsync=fsync)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = PRIVATE,
                 fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (see the module docstring).

    The temporary file is ``.<name>.<random>.tmp`` in the same folder (a rename is atomic
    only within one file system) and is removed if anything fails before the rename.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = open_exclusive(tmp, mode)
    try:
        _write_and_close(fd, data, fsync=fsync)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def first_line(fd: int) -> bytes:
    """The first line of the open file ``fd`` (read with pread: no offset is moved)."""
    buf, pos = b"", 0
    while True:
        chunk = os.pread(fd, _CHUNK, pos)
        cut = chunk.find(b"\n")
        if cut != -1:
            return buf + chunk[:cut + 1]
        buf += chunk
        pos += len(chunk)
        if not chunk or len(buf) > (16 << 20):  # bounded: a line this long is no record
            return buf


def last_line(fd: int, size: int) -> tuple[bytes, int]:
    """The last line of the first ``size`` bytes of ``fd`` (with its newline, if any) and its
    offset.

    Reads backwards in chunks, so reopening a large log costs one line, not the file.
    """
    pos, buf = size, b""
    while True:
        step = min(_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)  # a newline in the last byte ends the line
        if cut != -1:
            return buf[cut + 1:], pos + cut + 1
        if pos == 0:
            return buf, 0


def check_private(path: str | os.PathLike[str], what: str = "key file") -> None:
    """Refuse a secret file (key, credential) that others could read or replace.

    The file must not be readable or writable by group or others, and its folder must not
    be writable by them (without the sticky bit): whoever can write the folder can swap the
    file for one holding a key they know.

    Raises
    ------
    SourceError
        The file does not exist.
    ConfigError
        The file or its folder is too open; the message says the ``chmod`` that fixes it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SourceError(f"{path}: {what} not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: {what} is accessible by group or others; "
                          f"run: chmod 600 {path}")
    folder = os.path.dirname(os.path.abspath(path))
    folder_mode = os.stat(folder).st_mode
    if folder_mode & (stat.S_IWGRP | stat.S_IWOTH) and not folder_mode & stat.S_ISVTX:
        raise ConfigError(f"{path}: {what} is in a folder others can write ({folder}), so "
                          f"it could be replaced; run: chmod go-w {folder}, or move it")


def read_secret(path: str | os.PathLike[str]) -> str:
    """A credential from a file (first line, surrounding whitespace removed).

    The file is checked as key files are (:func:`analyzer.files.check_private`): not
    readable by group or others, in a folder they cannot write.
    """
    try:
        check_private(path, "credential file")
    except SourceError:
        raise ConfigError(f"{path}: credential file not found") from None
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{path}: credential file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read credential file: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{path}: credential file is empty")
    return text.splitlines()[0].strip()
