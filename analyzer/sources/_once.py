"""One open, one pass: an audit log read into the frame while others look at its lines.

:func:`~analyzer.sources.read_events` opens each file once: the first bytes name its format,
and an audit log (``jsonl``) is then read from the same handle, block by block. A *tap*
(``tap(path, lines)``) sees the same bytes as lines, in the same pass: it pulls as many
as it needs (the report's chain check stops at the first record that does not hold) and
the rest are read for the frame regardless. Lines are ``(number, bytes without the
newline, or None for one over the line limit, complete?)``: what
:func:`analyzer.integrity.verify_lines` takes.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast

from analyzer.sources._base import ReadResult, overlong, read_failed, whole_line_blocks

__all__ = ["Line", "LineTap", "ReadProgress", "read_jsonl_once"]

#: One line of a log: number (from 1), its bytes without the newline (``None`` when it is
#: over the line limit: never held), and whether it ended with a newline.
Line = tuple[int, bytes | None, bool]
#: Called once per audit log read, with the file and an iterator of its lines.
LineTap = Callable[[Path, Iterator[Line]], None]
#: Called as a read goes: records read so far, and the share of the input done (0..1;
#: ``None`` when unknown, as in a gzip file).
ReadProgress = Callable[[int, float | None], None]


class _Tracked:
    """A handle that remembers the last byte it gave: whether the file ended in a newline
    (the blocks complete a last line that lacks one; a torn write must still show)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.last = b""

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if data:
            self.last = data[-1:]
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)


def read_jsonl_once(file: Path, handle: IO[bytes], seekable: bool, *,
                    options: dict, tap: LineTap | None = None,
                    progress: ReadProgress | None = None) -> ReadResult:
    """Read the audit log open in ``handle`` (at its start) into a result; ``tap`` sees its
    lines in the same pass. The handle is closed at the end."""
    from analyzer.sources.jsonl import Reading

    reading = Reading(file, **options)
    size = os.fstat(handle.fileno()).st_size if seekable else 0
    tracked = _Tracked(handle)

    def fed() -> Iterator[tuple[int, memoryview]]:
        for offset, block, end in whole_line_blocks(cast(IO[bytes], tracked),
                                                     seekable=seekable):
            view = memoryview(block)[:end]
            reading.feed(view)
            if progress is not None:
                progress(reading.records, (offset + end) / size if size else None)
            yield offset, view

    try:
        with handle:
            if tap is None:
                for _ in fed():
                    pass
            else:
                lines = _lines(fed(), tracked)
                tap(file, lines)
                for _ in lines:  # what the tap did not need is still read for the frame
                    pass
    except (OSError, EOFError, zlib.error) as exc:  # a truncated gzip file, an I/O error
        raise read_failed(file, exc) from None
    return reading.result()


def _lines(blocks: Iterator[tuple[int, memoryview]], tracked: _Tracked) -> Iterator[Line]:
    """The lines of ``blocks``; the very last is complete only if the file ended in one."""
    number = 0
    pending: bytes | None = None
    for _, view in blocks:
        parts = bytes(view).split(b"\n")
        parts.pop()  # a block ends with a newline: nothing follows it
        for part in parts:
            if pending is not None:
                number += 1
                yield number, _held(pending), True
            pending = part
    if pending is not None:
        number += 1
        yield number, _held(pending), tracked.last == b"\n"


def _held(line: bytes) -> bytes | None:
    """``None`` for a line over the limit (or the blocks' stand-in for one)."""
    return None if overlong(line) is not None else line
