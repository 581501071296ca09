"""One open, one pass: an audit log read into the frame while others look at its bytes.

:func:`~analyzer.sources.read_events` opens each file once: the first bytes name its format,
and an audit log (``jsonl``) is then read from the same handle, block by block. A *tap*
(``tap(path, blocks)``) sees the same blocks of whole lines in the same pass, each after the
frame's reader has parsed it (:class:`Blocks`): it pulls as many as it needs, as lines
where it must (the report's chain check, which stops at the first record that does not
hold), and the rest are read for the frame regardless. A block nobody looks into costs
nothing more. Lines are ``(number, bytes without the newline, or None for one over the
line limit, complete?)``: what :func:`analyzer.integrity.verify_lines` takes.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, cast

from analyzer.sources._base import ReadResult, overlong, read_failed, whole_line_blocks

__all__ = ["Block", "Blocks", "Line", "LineTap", "ReadProgress", "block_lines",
           "read_jsonl_once"]

#: One line of a log: number (from 1), its bytes without the newline (``None`` when it is
#: over the line limit: never held), and whether it ended with a newline.
Line = tuple[int, bytes | None, bool]
#: A block of whole lines: the buffer, and the length of its whole lines (each ends in
#: ``\n``; what follows ``end`` is not part of it).
Block = tuple[bytes, int]
#: Called once per audit log read, with the file and its :class:`Blocks`.
LineTap = Callable[[Path, "Blocks"], None]
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
                    progress: ReadProgress | None = None, rows: int | None = None,
                    on_piece: Callable[[ReadResult], None] | None = None) -> ReadResult:
    """Read the audit log open in ``handle`` (at its start) into a result; ``tap`` sees its
    blocks in the same pass. The handle is closed at the end.

    With ``rows`` and ``on_piece``, each time about ``rows`` records are parsed they go to
    ``on_piece`` as a result of their own (the tap drives the pass, so the pieces are handed
    over, not yielded); the result returned is then the last piece."""
    from analyzer.sources.jsonl import Reading, _block_bytes

    reading = Reading(file, **options)
    size = os.fstat(handle.fileno()).st_size if seekable else 0
    tracked = _Tracked(handle)

    handed = 0  # records of the pieces already handed over

    def fed() -> Iterator[Block]:
        nonlocal handed
        for offset, block, end in whole_line_blocks(
                cast(IO[bytes], tracked), seekable=seekable,
                block_bytes=_block_bytes(rows if on_piece is not None else None)):
            reading.feed(memoryview(block)[:end])
            if progress is not None:
                progress(handed + reading.records, (offset + end) / size if size else None)
            if on_piece is not None and rows is not None and reading.rows >= rows:
                handed += reading.records
                on_piece(reading.result())
            yield block, end

    try:
        with handle:
            blocks = Blocks(fed(), tracked)
            if tap is not None:
                tap(file, blocks)
            for _ in blocks:  # what the tap did not need is still read for the frame
                pass
    except (OSError, EOFError, zlib.error) as exc:  # a truncated gzip file, an I/O error
        raise read_failed(file, exc) from None
    return reading.result()


class Blocks:
    """The blocks of whole lines of one audit log, in order, as the read goes."""

    def __init__(self, blocks: Iterator[Block], tracked: _Tracked) -> None:
        self._blocks = blocks
        self._tracked = tracked

    def __iter__(self) -> Iterator[Block]:
        return self

    def __next__(self) -> Block:
        return next(self._blocks)

    def lines(self, blocks: Iterable[Block] | None = None) -> Iterator[Line]:
        """The lines of ``blocks`` (default: the blocks still to come), numbered from 1;
        the very last is complete only if the file ended in a newline."""
        number = 0
        pending: bytes | None = None
        for data, end in self if blocks is None else blocks:
            for line in block_lines(data, end):
                if pending is not None:
                    number += 1
                    yield number, pending, True
                pending = line
        if pending is not None:
            number += 1
            yield number, pending, self._tracked.last == b"\n"


def block_lines(data: bytes, end: int) -> Iterator[bytes | None]:
    """The lines of one block, without their newlines; ``None`` for one over the line limit
    (or the blocks' stand-in for one). One at a time: the block is never copied whole."""
    start = 0
    while start < end:
        newline = data.index(b"\n", start, end)
        line = data[start:newline]
        yield None if overlong(line) is not None else line
        start = newline + 1
