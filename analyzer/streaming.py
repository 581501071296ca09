"""Bounded memory on one machine: features of a log read in chunks (issue #17).

:func:`stream_windows` computes the same window table as
:meth:`~analyzer.features.FeatureExtractor.fit_transform` (or ``transform``) of the whole log,
reading each chunk of events once and holding at most one block of events at a time:

1. phase 1 (:func:`~analyzer.features._stats.chunk_stats`): each chunk's statistics are merged
   into the organisation-wide ones, and its compact integer arrays (about 60 bytes per event,
   not the pandas frame) are spilled to a temporary directory;
2. the statistics are finalized (the profile is fitted when training);
3. phase 2: the arrays are read back block by block (a block ends where a chunk starts, on a
   window-slot boundary, so no window is cut), each block's windows computed from its events,
   the window look-back (sliding windows) and the failures of the day before it (kept in a
   small rolling buffer);
4. the window table is finished (typical volumes, dormancy, trailing week).

Memory is one chunk (phase 1) or one block (phase 2) of events, plus the statistics (entities,
values, hours with activity) and the window table; not the number of events.
:meth:`~analyzer.model.AuditModel.fit_chunks`, ``score_chunks`` and ``fit_score_chunks`` use it.

Chunks come from :func:`frame_chunks` (a frame cut in pieces, for tests) or any iterable of
normalized frames in time order (chunks may overlap in time: a block reads every chunk that
holds events of its slots, so the result stays exact, only memory grows).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from analyzer.events import REQUIRED_FRAME_COLUMNS
from analyzer.features import (
    Block,
    EventArrays,
    Failures,
    FeatureExtractor,
    PartialStats,
    WindowContext,
    chunk_stats,
    merge_stats,
)

__all__ = ["WindowStream", "block_events", "failures_before", "frame_chunks", "look_back",
           "stream_windows"]

logger = logging.getLogger(__name__)

_NS_PER_DAY = 86_400 * 10**9


@dataclasses.dataclass(slots=True)
class _Spilled:
    """One chunk's arrays on disk and the range of window slots its events fall in."""

    path: Path
    n: int
    lo: int
    hi: int


def frame_chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    """``frame`` in consecutive pieces of ``size`` rows (the last one shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    for lo in range(0, max(len(frame), 1), size):
        yield frame.iloc[lo:lo + size]


def stream_windows(extractor: FeatureExtractor, chunks: Iterable[pd.DataFrame], *,
                   fitting: bool, details: bool,
                   spill_dir: str | os.PathLike[str] | None = None,
                   progress: Callable[[int, float], None] | None = None) -> pd.DataFrame:
    """The window table of the log made of ``chunks`` (normalized frames in time order).

    With ``fitting``, ``extractor`` is fitted on the log and the windows are "as seen so far"
    (:meth:`~analyzer.features.FeatureExtractor.fit_transform`); otherwise they are scored
    against its fitted profile (``transform``). ``spill_dir``: where the temporary arrays go
    (default: the system's temporary directory); they are deleted on return.
    ``progress(windows, share)`` is told the windows computed so far after each block of
    phase 2, and the share of the blocks done.
    """
    with WindowStream(extractor, fitting=fitting, details=details,
                      spill_dir=spill_dir) as stream:
        for frame in chunks:  # phase 1: one chunk in memory at a time
            stream.add(frame)
            del frame
        return stream.windows(progress=progress)


class WindowStream:
    """:func:`stream_windows` for a caller that is handed the chunks rather than pulling
    them (the report's pass over a trail): :meth:`add` each chunk as it comes (phase 1),
    then :meth:`windows` once. Close it (or use it as a context manager) to delete its
    temporary arrays."""

    def __init__(self, extractor: FeatureExtractor, *, fitting: bool, details: bool,
                 spill_dir: str | os.PathLike[str] | None = None) -> None:
        self.extractor, self.fitting, self.details = extractor, fitting, details
        self._spec = extractor.stats_spec(fitting=fitting)
        self._tmp = tempfile.TemporaryDirectory(prefix="audit-analyzer-", dir=spill_dir)
        self._total: PartialStats | None = None
        self._spilled: list[_Spilled] = []
        self._added = 0

    def add(self, frame: pd.DataFrame) -> None:
        """Phase 1 of one chunk: its statistics merged, its arrays spilled."""
        part, events = chunk_stats(frame, self._spec)
        self._total = part if self._total is None else merge_stats(self._total, part)
        if events.n:
            self._spilled.append(_spill(events, Path(self._tmp.name) / f"{self._added}.pkl",
                                        self._spec.step))
        self._added += 1

    def windows(self, *, progress: Callable[[int, float], None] | None = None
                ) -> pd.DataFrame:
        """The window table of the chunks added (phases 2 and 3)."""
        total = self._total
        if total is None:  # no chunks at all: the statistics of no events
            total = chunk_stats(_no_events(), self._spec)[0]
        ctx = self.extractor.finalize_stats(total, fitting=self.fitting)
        blocks: list[Block] = []
        n_blocks, n_windows = len(_bounds(self._spilled)), 0
        for block in _blocks(ctx, self._spilled, details=self.details):
            blocks.append(block)
            n_windows += sum(len(w) for w in block.windows.values())
            if progress is not None:
                progress(n_windows, len(blocks) / max(n_blocks, 1))
        logger.debug("windows of %d events in %d chunks, %d blocks", total.n,
                     len(self._spilled), len(blocks))
        return self.extractor.finish_windows(ctx, blocks, details=self.details)

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> WindowStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _spill(events: EventArrays, path: Path, step: int) -> _Spilled:
    slots = events.t // step
    with open(path, "wb") as fh:
        pickle.dump(events, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return _Spilled(path, events.n, int(slots.min()), int(slots.max()))


def _no_events() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in REQUIRED_FRAME_COLUMNS})
    frame["timestamp"] = pd.Series([], dtype="datetime64[ns, UTC]")
    return frame


def _load(chunk: _Spilled, ctx: WindowContext) -> EventArrays:
    with open(chunk.path, "rb") as fh:
        events = pickle.load(fh)  # noqa: S301 - our own file, written above in this run
    return ctx.encode([events])


def _bounds(spilled: list[_Spilled]) -> list[tuple[int | None, int | None]]:
    """Blocks of window slots: one per chunk, starting at the chunk's first slot (so a
    window is never cut); the first and last are open."""
    starts = sorted({c.lo for c in spilled})[1:]
    edges: list[int | None] = [None, *starts, None]
    return list(itertools.pairwise(edges))


def look_back(ctx: WindowContext) -> int:
    """How far before its first slot (ns) a block reads: the failures of the trailing day
    before its first windows (which reach ``window - step`` back)."""
    return (ctx.window // ctx.step - 1) * ctx.step + _NS_PER_DAY + ctx.window


def block_events(ctx: WindowContext, arrays: Iterable[EventArrays], lo: int | None,
                 hi: int | None) -> EventArrays | None:
    """The events a block owning the windows with last slot in ``[lo, hi)`` holds: those of
    the slots ``[lo - (window/step - 1), hi)`` from ``arrays`` (partitions in log order, in
    any codes), in the context's codes; None when there are none. The rows keep the
    partitions' order (ties in time then keep the log's order, as a whole read's stable sort
    does)."""
    first = None if lo is None else lo - (ctx.window // ctx.step - 1)
    parts = []
    for ev in arrays:
        slot = ev.t // ctx.step
        keep = np.ones(ev.n, dtype=bool)
        if first is not None:
            keep &= slot >= first
        if hi is not None:
            keep &= slot < hi
        if keep.any():
            parts.append(ev if keep.all() else ev.take(np.flatnonzero(keep)))
    return ctx.encode(parts) if parts else None


def failures_before(ctx: WindowContext, arrays: Iterable[EventArrays], lo: int | None
                    ) -> Failures:
    """The failed events (with an address and a user) of slots before ``lo`` within
    :func:`look_back` of it, in the context's codes: what a block needs for the trailing
    day (``arrays``: the partitions that may hold them; more is harmless)."""
    if lo is None:
        return Failures.none()
    since = lo * ctx.step - look_back(ctx)
    out = Failures.none()
    for ev in arrays:
        own = (ev.t // ctx.step < lo) & (ev.t >= since)
        if own.any():
            out = _with_failures(out, ctx.encode([ev.take(np.flatnonzero(own))]),
                                 np.ones(int(own.sum()), dtype=bool))
    return out


def _blocks(ctx: WindowContext, spilled: list[_Spilled], *, details: bool
            ) -> Iterator[Block]:
    """Phase 2 over the spilled chunks, block by block in time order."""
    k = ctx.window // ctx.step
    cache: dict[int, EventArrays] = {}
    failures = Failures.none()
    for lo, hi in _bounds(spilled):
        first = None if lo is None else lo - (k - 1)
        wanted = [i for i, c in enumerate(spilled)
                  if (first is None or c.hi >= first) and (hi is None or c.lo < hi)]
        for i in list(cache):
            if i not in wanted:
                del cache[i]
        for i in wanted:
            if i not in cache:
                cache[i] = _load(spilled[i], ctx)
        events = block_events(ctx, [cache[i] for i in wanted], lo, hi)
        if events is None:
            continue
        if lo is not None:  # the rolling buffer holds what failures_before would find
            failures = _recent(failures, lo * ctx.step - look_back(ctx))
        yield ctx.profile.window_block(ctx, events, lo=lo, hi=hi, failures=failures,
                                       details=details)
        own = np.ones(events.n, dtype=bool) if lo is None else events.t // ctx.step >= lo
        failures = _with_failures(failures, events, own)
        del events
        if hi is not None:
            _keep_from(cache, ctx, hi - (k - 1))


def _keep_from(cache: dict[int, EventArrays], ctx: WindowContext, first: int) -> None:
    """Only the events of slots from ``first`` on stay cached: the next block reads no
    earlier ones, and a chunk whose last slot is shared with the next chunk would otherwise
    stay whole beside it (two chunks of events held, not one)."""
    for i, ev in list(cache.items()):
        keep = ev.t // ctx.step >= first
        if not keep.any():
            del cache[i]
        elif not keep.all():
            cache[i] = ev.take(np.flatnonzero(keep))


def _recent(failures: Failures, since: int) -> Failures:
    keep = failures.t >= since
    return Failures(failures.t[keep], failures.source[keep], failures.user[keep])


def _with_failures(failures: Failures, events: EventArrays, own: np.ndarray) -> Failures:
    """The rolling buffer of failed events (with an address and a user) for the trailing
    day of later blocks."""
    sel = own & events.fail & (events.codes["source_ip"] >= 0) & (events.codes["user"] >= 0)
    return Failures(np.r_[failures.t, events.t[sel]],
                    np.r_[failures.source, events.codes["source_ip"][sel]],
                    np.r_[failures.user, events.codes["user"][sel]])
