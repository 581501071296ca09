"""Verify a live audit log as it grows, from the last verified record on.

:func:`~analyzer.integrity.verify_log` recomputes a whole file; a long-running ``watch``
cannot afford that every minute. A :class:`ChainMonitor` keeps the last record it verified
(sequence, hash, and the line itself with where it lies) and each :meth:`~ChainMonitor.step`
verifies only what was appended since, after checking that this last record is still in
its place byte for byte, so a rewrite or truncation of the tail is caught too. It follows
rotation (through :class:`~analyzer.follow.LogTail`): the rotated file is read to its
end, and the new file's first record (``audit.rotation``) continues the chain.

The first step verifies the current file from its start (a file rotated in starts from
the sequence and hash its first record names, as ``verify`` does). A change to a record
before the last verified one made *after* it was verified is not seen by later steps: run
``audit-analyzer verify`` for the whole chain, or restart the watch. Once a record does not
hold, the monitor stays broken and says where; ``verify`` tells what happened there.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from analyzer.follow import LogTail
from analyzer.integrity import GENESIS_HASH, ChainHasher, canonical_bytes, previous_of

__all__ = ["ChainMonitor", "ChainStatus"]


@dataclasses.dataclass(frozen=True, slots=True)
class ChainStatus:
    """Where a :class:`ChainMonitor` stands.

    ``intact`` until a record does not hold (then ``problem`` says which and why);
    ``sequence`` is the last verified record's; ``records`` how many were verified since the
    monitor started; ``verified_at`` the Unix time of the last step that found the chain
    intact (``None`` before the first).
    """

    intact: bool = True
    sequence: int = 0
    records: int = 0
    verified_at: float | None = None
    problem: str = ""


class ChainMonitor:
    """Verify ``log_path``'s chain incrementally (see the module docstring).

    Parameters
    ----------
    log_path
        The live audit log.
    key
        Its integrity key (``None`` for an unkeyed log).
    metrics
        Optional :class:`~analyzer.metrics.AuditMetrics`: each step reports the records
        verified (by service, level and outcome), the head sequence and the verdict.
    """

    def __init__(self, log_path: str | os.PathLike[str], *, key: bytes | None = None,
                 metrics: Any = None) -> None:
        self.log_path = Path(log_path)
        self.metrics = metrics
        self._hasher = ChainHasher(key)
        self._tail: LogTail | None = None
        self._seq, self._hash = 0, GENESIS_HASH
        self._anchor: tuple[int, int, bytes] | None = None  # inode, offset, the line
        self.status = ChainStatus()

    def step(self, max_bytes: int = 64 << 20) -> ChainStatus:
        """Verify what was appended since the last step (at most about ``max_bytes``)."""
        if not self.status.intact:
            return self.status
        if self._tail is None:
            self._tail = LogTail(self.log_path)
        problem = self._anchor_problem()
        counts: Counter[tuple[str, str, str]] = Counter()
        read = 0
        while not problem and read < max_bytes:
            inode = self._tail.position[0]
            lines = self._tail.read(4 << 20)
            if not lines:
                break
            for raw, end in lines:
                read += len(raw) + 1
                problem = self._check(raw, end - len(raw) - 1, inode, counts)
                if problem:
                    break
        self._report(counts)
        if problem:
            self.status = dataclasses.replace(self.status, intact=False, problem=problem)
        else:
            self.status = dataclasses.replace(self.status, sequence=self._seq,
                                              verified_at=time.time())
        if self.metrics is not None:
            self.metrics.verified(self._seq, intact=self.status.intact,
                                  at=self.status.verified_at)
        return self.status

    def close(self) -> None:
        if self._tail is not None:
            self._tail.close()
            self._tail = None

    # -- internals -----------------------------------------------------------------------

    def _check(self, raw: bytes, start: int, inode: int,
               counts: Counter[tuple[str, str, str]]) -> str:
        """Verify one line; return why it does not hold ("" when it does)."""
        where = f"{self.log_path.name}, byte {start}"
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        event = doc.get("event") if isinstance(doc, dict) else None
        seq = event.get("sequence") if isinstance(event, dict) else None
        hash_ = event.get("hash") if isinstance(event, dict) else None
        if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(hash_, str):
            return f"{where}: not a chained audit record"
        assert isinstance(doc, dict)
        assert isinstance(event, dict)  # an int sequence was found in it
        if self._anchor is None and self._seq == 0:
            claimed = previous_of(doc)  # a file rotated in: the chain comes from before
            if claimed is not None and seq != 1:
                self._seq, self._hash = claimed["sequence"], claimed["hash"]
        if seq != self._seq + 1 and start == 0 and self._anchor is not None:
            missed = self._missed_files(doc, counts)  # several rotations since the last step
            if missed:
                return missed
        if seq != self._seq + 1:
            return (f"{where}: expected sequence {self._seq + 1}, found {seq} (records "
                    "deleted, inserted or reordered)")
        if self._hasher.link(self._hash, canonical_bytes(doc)) != hash_:
            return f"{where}, sequence {seq}: content or hash does not match the chain"
        self._seq, self._hash = seq, hash_
        self._anchor = (inode, start, raw)
        self.status = dataclasses.replace(self.status, records=self.status.records + 1)
        log = doc.get("log")
        service = doc.get("service")
        counts[(str(service.get("name", "")) if isinstance(service, dict) else "",
                str(log.get("level", "")) if isinstance(log, dict) else "",
                str(event.get("outcome", "")))] += 1
        return ""

    def _missed_files(self, marker: dict[str, Any],
                      counts: Counter[tuple[str, str, str]]) -> str:
        """Verify the rotated files the tail skipped: the marker opening the current file
        names the one before it, whose own marker names the one before, back to the file
        the last step ended in. Returns a problem, or "" once the chain is caught up."""
        chain: list[Path] = []
        claimed = previous_of(marker)
        while claimed is not None and claimed["sequence"] > self._seq and len(chain) < 1000:
            path = self.log_path.with_name(str(claimed.get("file", "")))
            if path.parent != self.log_path.parent or not path.is_file():
                return ""  # not there: reported as a gap by the caller
            chain.append(path)
            with open(path, "rb") as handle:
                first = handle.readline()
            try:
                claimed = previous_of(orjson.loads(first))
            except orjson.JSONDecodeError:
                return ""
        for path in reversed(chain):
            inode = os.stat(path).st_ino
            with open(path, "rb") as handle:
                offset = 0
                for raw in handle:
                    line = raw.rstrip(b"\n")
                    if line.strip():
                        problem = self._check(line, offset, inode, counts)
                        if problem:
                            return f"{path.name}: {problem}"
                    offset += len(raw)
        return ""

    def _anchor_problem(self) -> str:
        """Is the last verified record still where it was, unchanged?"""
        if self._anchor is None:
            return ""
        inode, offset, raw = self._anchor
        try:
            with open(self.log_path, "rb") as handle:
                if os.fstat(handle.fileno()).st_ino != inode:
                    return ""  # rotated away: the tail drains the old file
                handle.seek(offset)
                now = handle.read(len(raw) + 1)
        except OSError:
            return ""  # the log is between rotation steps; the tail notices
        if now != raw + b"\n":
            return (f"{self.log_path.name}, byte {offset}, sequence {self._seq}: the last "
                    "verified record was changed or the log truncated since it was verified")
        return ""

    def _report(self, counts: Counter[tuple[str, str, str]]) -> None:
        if self.metrics is None:
            return
        by_service: dict[str, dict[tuple[str, str], int]] = {}
        for (service, level, outcome), n in counts.items():
            by_service.setdefault(service, {})[level, outcome] = n
        for service, tally in by_service.items():
            self.metrics.written(tally, self._seq, service or None)
        if not counts and self._seq:
            self.metrics.written({}, self._seq)
