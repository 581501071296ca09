"""The Dask engine: the pipeline's two feature phases and the detectors' fit on a cluster,
the rest of the model on the client.

dask and distributed are imported inside the functions that need them, so this module (and
the package) import without the extra.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import operator
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.engine.partitions import (
    DEFAULT_TARGET_BYTES,
    Partition,
    merge_accounting,
    plan_partitions,
    read_partition,
    renumber,
    worker_options,
)
from analyzer.errors import ConfigError
from analyzer.sources import ReadResult, empty_frame
from analyzer.streaming import look_back

__all__ = ["DaskEngine", "EngineProgress"]

logger = logging.getLogger(__name__)

#: Seconds to wait for a scheduler to answer before giving up with one line.
CONNECT_TIMEOUT = 20
#: At most this many events in one block of phase 2 (a worker holds them with their
#: look-back as compact arrays, ~60 bytes an event).
BLOCK_EVENTS = 2_000_000
#: Windows are scored in parts of at least this many rows (smaller ones cost more to send
#: than to score).
SCORE_ROWS_MIN = 20_000
#: Phase 1 gives each worker at least this many byte ranges of a large file to read.
RANGES_PER_WORKER = 4
#: Settings of the workers of a ``LocalCluster`` this engine starts (a remote cluster's are
#: its operator's). distributed sets ``MALLOC_TRIM_THRESHOLD_`` in its workers, which keeps
#: glibc from reusing freed memory for the next large array: every numpy temporary is then
#: mapped and faulted in anew (measured: the feature code took 35 % more CPU, a third of it
#: then in the kernel). The statistical profiler samples every thread's stack 100 times a
#: second, which costs CPU in GIL-bound pandas code. Measures: benchmarks/README.md, "Dask
#: engine: where the time goes".
_LOCAL_CONFIG: dict[str, Any] = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}


class EngineProgress:
    """What a run on the engine tells as it goes (the default tells nothing):
    :meth:`reading` the records read so far and the share of partitions mapped,
    :meth:`windows` the windows computed so far and the share of blocks done."""

    def reading(self, records: int, share: float) -> None:
        """Called as each partition of phase 1 is mapped."""

    def windows(self, done: int, share: float) -> None:
        """Called once as phase 2 begins (0 windows), then as each block is computed."""


class DaskEngine:
    """A connection to a Dask cluster, and the pipeline run on it.

    Build it with :meth:`connect`; close it (or use it as a context manager) to release a
    cluster it started.
    """

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client = client
        self._cluster = cluster

    @classmethod
    def connect(cls, address: str | None = None, *, n_workers: int | None = None,
                threads_per_worker: int = 1) -> DaskEngine:
        """Connect to the scheduler at ``address`` (``tcp://host:8786``), or start a
        ``LocalCluster`` of ``n_workers`` processes (default: one per core of this machine,
        one thread each: the feature code is numpy and pandas, which hold the GIL often)."""
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("the Dask engine needs the dask extra: pip install "
                              "'audit-analyzer[dask]'") from None
        if address:
            try:
                client = Client(address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {address}: "
                                  f"{exc}") from None
            return cls(client)
        import dask

        workers = n_workers or max(1, os.cpu_count() or 1)
        with dask.config.set(_LOCAL_CONFIG):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                                   processes=True, silence_logs=logging.WARNING)
        return cls(Client(cluster), cluster)

    @property
    def dashboard_link(self) -> str | None:
        """The cluster's dashboard, for the command line to print."""
        link = getattr(self.client, "dashboard_link", None)
        return str(link) if link else None

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    # -- train and score ------------------------------------------------------------------

    def fit(self, model: Any, *, inputs: Sequence[str], format: str | None = None,
            since: Any = None, until: Any = None, options: dict[str, Any] | None = None,
            decrypt_keys: tuple[bytes, ...] = (), chunk_events: int | None = None,
            progress: EngineProgress | None = None) -> ReadResult:
        """Fit ``model`` (an unfitted :class:`~analyzer.model.AuditModel`) on ``inputs``:
        the features and the detectors on the cluster, the rest of the model here. Returns
        the read's accounting. ``chunk_events``: a worker reads a whole-file partition (a
        format without byte ranges, a gzip file) in pieces of about this many events, as
        the local engine reads a file in chunks (``None``: whole). ``progress`` is told
        the records read as each partition is mapped, then the windows as each block is
        computed."""
        clock = time.perf_counter()
        fx = model.new_extractor()
        windows, result = self._windows(fx, inputs, fitting=True, format=format, since=since,
                                        until=until, options=options or {},
                                        decrypt_keys=decrypt_keys, rows=chunk_events,
                                        progress=progress)
        # the same code as the local engine's fit; the detectors (one per entity type,
        # independent) fitted side by side on the workers
        model.fit_table(windows, fit_all=self._fit_all)
        logger.info("model fitted at %.1f s", time.perf_counter() - clock)
        return result

    def _fit_all(self, jobs: Iterable[tuple[Any, pd.DataFrame]]) -> list[Any]:
        client = self.client
        futures = [client.submit(_fit_detector, detector, client.scatter(rows, hash=False),
                                 pure=False)
                   for detector, rows in jobs]
        return client.gather(futures)

    def score(self, model: Any, *, inputs: Sequence[str], format: str | None = None,
              since: Any = None, until: Any = None, options: dict[str, Any] | None = None,
              decrypt_keys: tuple[bytes, ...] = (), alerts_per_day: float | None = None,
              chunk_events: int | None = None, progress: EngineProgress | None = None
              ) -> tuple[pd.DataFrame, ReadResult]:
        """Score ``inputs`` with a fitted ``model``: the scores frame (the columns of
        :meth:`~analyzer.model.AuditModel.score`) and the read's accounting;
        ``chunk_events`` and ``progress`` as in :meth:`fit`."""
        clock = time.perf_counter()
        windows, result = self._windows(model.extractor_, inputs, fitting=False,
                                        format=format, since=since, until=until,
                                        options=options or {}, decrypt_keys=decrypt_keys,
                                        rows=chunk_events, progress=progress)
        rarity = self._map_rarity(model, windows)
        logger.info("detectors' output for the windows at %.1f s", time.perf_counter() - clock)
        scores = model.score_table(windows, alerts_per_day=alerts_per_day, rarity=rarity)
        logger.info("windows scored at %.1f s", time.perf_counter() - clock)
        return scores, result

    def _map_rarity(self, model: Any, windows: pd.DataFrame) -> tuple[np.ndarray, ...]:
        """The detectors' output for every window, computed by the workers over parts of
        the window table (each row's output depends on that row alone)."""
        from analyzer.features import FEATURES

        client = self.client
        columns = ["entity_type", *(f.name for f in FEATURES)]
        size = max(SCORE_ROWS_MIN, -(-len(windows) // (2 * max(self.n_workers, 1))))
        shared = client.scatter(model, broadcast=True, hash=False)
        # scattered, not put in the tasks: the scheduler never holds the table's parts
        pieces = client.scatter([windows[columns].iloc[lo:lo + size]
                                 for lo in range(0, len(windows), size)], hash=False)
        parts = [client.submit(_window_rarity, shared, piece, pure=False)
                 for piece in pieces]
        done = client.gather(parts)
        if not done:
            return model.window_rarity(windows)
        return tuple(np.concatenate([d[j] for d in done]) for j in range(len(done[0])))

    def _windows(self, fx: Any, inputs: Sequence[str], *, fitting: bool, format: str | None,
                 since: Any, until: Any, options: dict[str, Any],
                 decrypt_keys: tuple[bytes, ...], rows: int | None,
                 progress: EngineProgress | None = None) -> tuple[pd.DataFrame, ReadResult]:
        """The window table of ``inputs`` (phase 1 and 2 on the workers, the table pass
        here) and the read's accounting; ``rows``: the pieces of a whole-file partition."""
        if rows is not None and rows < 1:
            raise ConfigError(f"chunk_events must be at least 1, got {rows}")
        client = self.client
        tell = progress or EngineProgress()
        clock = time.perf_counter()
        parts = _plan(inputs, format=format, since=since, until=until,
                      workers=max(self.n_workers, 1))
        spec = fx.stats_spec(fitting=fitting)
        reads, mapped = self._map_partitions(parts, spec, options=options, since=since,
                                             until=until, decrypt_keys=decrypt_keys,
                                             rows=rows, tell=tell)
        stats = [client.submit(operator.getitem, f, 1) for f in mapped]
        events = [client.submit(operator.getitem, f, 2) for f in mapped]
        failed = [client.submit(operator.getitem, f, 3) for f in mapped]
        del mapped
        result = self._accounting(parts, reads)
        logger.info("phase 1: %d partitions read and mapped in %.1f s", len(parts),
                    time.perf_counter() - clock)
        ctx = fx.finalize_stats(_merge_tree(client, stats).result(), fitting=fitting)
        del stats
        logger.info("statistics merged and finalized at %.1f s", time.perf_counter() - clock)
        shared = client.scatter(ctx, broadcast=True, hash=False)
        target = min(BLOCK_EVENTS, max(1, (result.used or 0) // (4 * max(self.n_workers, 1))))
        blocks = []
        for lo, hi in _blocks(reads, spec.step, target):
            full, arrays = _block_inputs(ctx, reads, events, failed, lo, hi)
            blocks.append(client.submit(_phase2, shared, lo, hi, not fitting, full, *arrays,
                                        pure=False))
        done = _phase2_done(blocks, tell)
        del blocks, events, failed
        logger.info("phase 2: %d blocks at %.1f s", len(done), time.perf_counter() - clock)
        windows = fx.finish_windows(ctx, done, details=not fitting)
        logger.info("window table (%d windows) at %.1f s", len(windows),
                    time.perf_counter() - clock)
        return windows, result

    def _map_partitions(self, parts: list[Partition], spec: Any, *,
                        options: dict[str, Any], since: Any, until: Any,
                        decrypt_keys: tuple[bytes, ...], rows: int | None,
                        tell: EngineProgress) -> tuple[list[_Read], list[Any]]:
        """Phase 1 sent to the workers: the partitions' reads (gathered, in order, told to
        ``tell`` as they come) and the futures of their whole results."""
        client = self.client
        sent = worker_options(options)
        mapped = []
        for part in parts:
            if decrypt_keys:  # --decrypt-on-workers: read here, send the decrypted columns
                read = read_partition(part, {**options, "decrypt_keys": decrypt_keys},
                                      since=since, until=until)
                source = client.scatter(read, hash=False)
            else:
                source = part
            mapped.append(client.submit(_phase1, source, sent, since, until, spec, rows,
                                        pure=False))
        read_so_far = 0

        def mapped_one(n: int, read: _Read) -> None:
            nonlocal read_so_far
            read_so_far += read.accounting.records or read.accounting.used or 0
            tell.reading(read_so_far, n / len(parts))

        reads = _gather([client.submit(operator.getitem, f, 0) for f in mapped], mapped_one)
        return reads, mapped

    @staticmethod
    def _accounting(parts: list[Partition], reads: list[_Read]) -> ReadResult:
        """One accounting for the read, rejected lines numbered within their files."""
        pairs = [(r.accounting, r.lines) for r in reads]
        rejected = renumber(parts, pairs)
        accountings = [dataclasses.replace(r.accounting, rejected=rej)
                       for r, rej in zip(reads, rejected, strict=True)]
        return merge_accounting(accountings, sum(r.accounting.used or 0 for r in reads))

    def close(self) -> None:
        """Disconnect; stop the local cluster this engine started (never a remote one)."""
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the pipeline on the cluster --------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class _Read:
    """What phase 1 tells the client of a partition: its read's accounting (the frame's
    rows counted, not held), its lines (byte ranges) and its events per window slot."""

    accounting: ReadResult
    lines: int
    slots: np.ndarray
    counts: np.ndarray


def _phase1(source: Partition | tuple[ReadResult, int], options: dict[str, Any],
            since: Any, until: Any, spec: Any, rows: int | None
            ) -> tuple[_Read, Any, list[Any], list[Any]]:
    """On a worker: read a partition (or take what the client read), and map it to its
    partial statistics, its compact event arrays and, apart, those of its failed events
    (all that a later block's day of look-back needs of it). With ``rows``, a whole file
    (an sshd log, a Windows export, a gzip file...) is read in pieces of about that many
    events, as the local engine reads it in chunks, so that a worker holds one piece of
    it, not the file: its arrays are then one per piece."""
    from analyzer.features import chunk_stats, merge_stats

    stats: Any = None
    events: list[Any] = []

    def add(frame: pd.DataFrame) -> None:
        nonlocal stats
        part, arrays = chunk_stats(frame, spec)
        stats = part if stats is None else merge_stats(stats, part)
        if arrays.n:
            events.append(arrays)

    if isinstance(source, Partition):
        result, lines = read_partition(source, options, since=since, until=until,
                                       rows=rows, pieces=add)
    else:  # read by the client (--decrypt-on-workers)
        result, lines = source
        add(result.frame)
        result = dataclasses.replace(result, used=len(result.frame))
    if stats is None:  # no events: the statistics of none
        add(empty_frame())
    slots, counts = np.unique(np.concatenate(
        [ev.t // spec.step for ev in events] or [np.empty(0, np.int64)]), return_counts=True)
    accounting = dataclasses.replace(result, frame=empty_frame())
    failed = [ev.take(np.flatnonzero(ev.fail)) for ev in events]
    return _Read(accounting, lines, slots, counts), stats, events, failed


def _phase2(ctx: Any, lo: int | None, hi: int | None, details: bool,
            full: tuple[bool, ...], *arrays: Any) -> Any | None:
    """On a worker: the windows of the block of slots ``[lo, hi)`` (``None``: open), from
    the event arrays of the partitions that hold its events (``full``) and the failed
    events of those of its look-back only, in log order (what a block reads:
    :mod:`analyzer.streaming`'s one rule, shared with the local driver)."""
    from analyzer.streaming import block_events, failures_before

    # each partition's arrays are a list (one per piece of a file read in pieces)
    events = block_events(ctx, [a for part, f in zip(arrays, full, strict=True) if f
                                for a in part], lo, hi)
    if events is None:  # no event of the block's own slots (its look-back only)
        return None
    return ctx.profile.window_block(
        ctx, events, lo=lo, hi=hi,
        failures=failures_before(ctx, [a for part in arrays for a in part], lo),
        details=details)


def _fit_detector(detector: Any, rows: pd.DataFrame) -> Any:
    return detector.fit(rows)


def _window_rarity(model: Any, windows: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return model.window_rarity(windows.reset_index(drop=True))


def _block_inputs(ctx: Any, reads: list[_Read], events: list[Any], failed: list[Any],
                  lo: int | None, hi: int | None) -> tuple[tuple[bool, ...], list[Any]]:
    """What the block ``[lo, hi)`` is sent, in log order: the events of the partitions
    holding its windows' slots (flagged ``True``), and only the failed events of those
    holding its day of look-back and no slot of its windows (:func:`failures_before` reads
    nothing else of them): a block no longer fetches whole partitions for a day of
    failures."""
    own = None if lo is None else lo - (ctx.window // ctx.step - 1)
    back = None if lo is None else (lo * ctx.step - look_back(ctx)) // ctx.step
    full: list[bool] = []
    arrays: list[Any] = []
    for read, ev, fail in zip(reads, events, failed, strict=True):
        if _holds(read, own, hi):
            full.append(True)
            arrays.append(ev)
        elif _holds(read, back, hi):
            full.append(False)
            arrays.append(fail)
    return tuple(full), arrays


def _plan(inputs: Sequence[str], *, format: str | None, since: Any, until: Any,
          workers: int, target_bytes: int = DEFAULT_TARGET_BYTES) -> list[Partition]:
    """The partitions of ``inputs``, the byte ranges of files larger than
    ``target_bytes`` cut so that their count is a multiple of the workers (at least
    :data:`RANGES_PER_WORKER` each, none larger than ``target_bytes``): no worker waits
    idle through phase 1's last round."""
    parts = plan_partitions(inputs, format=format, since=since, until=until,
                            target_bytes=target_bytes)
    ranged = sum((p.stop or p.start) - p.start for p in parts if p.kind == "range")
    if not ranged:
        return parts
    rounds = max(RANGES_PER_WORKER, -(-ranged // (target_bytes * workers)))
    target = max(1 << 10, -(-ranged // (rounds * workers)))
    return plan_partitions(inputs, format=format, since=since, until=until,
                           target_bytes=target)


def _holds(read: _Read, lo: int | None, hi: int | None) -> bool:
    """Whether the partition has events in the slots ``[lo, hi)`` (``None``: open)."""
    slots = read.slots
    i = 0 if lo is None else int(np.searchsorted(slots, lo))
    return i < len(slots) and (hi is None or int(slots[i]) < hi)


def _gather(futures: list[Any], each: Callable[[int, Any], None]) -> list[Any]:
    """The results of ``futures`` in their order, telling ``each(n, result)`` as the n-th
    one completes (in any order): a progress display sees the work as the workers do it."""
    from distributed import as_completed

    place = {future.key: i for i, future in enumerate(futures)}
    out: list[Any] = [None] * len(futures)
    for n, (future, result) in enumerate(as_completed(futures, with_results=True), 1):
        out[place[future.key]] = result
        each(n, result)
    return out


def _phase2_done(blocks: list[Any], tell: EngineProgress) -> list[Any]:
    """The blocks' windows, in order, told to ``tell`` as each is computed (from 0, as
    phase 2 begins: the windows' rate counts from there)."""
    so_far = 0
    tell.windows(0, 0.0)

    def computed(n: int, block: Any) -> None:
        nonlocal so_far
        if block is not None:
            so_far += sum(len(w) for w in block.windows.values())
        tell.windows(so_far, n / len(blocks))

    return [b for b in _gather(blocks, computed) if b is not None]


def _merge_tree(client: Any, futures: list[Any]) -> Any:
    """Reduce partial statistics on the workers, neighbours first, so that a merge's left
    side is always the earlier partitions (the merge is associative, not commutative)."""
    from analyzer.features import merge_stats

    level = futures
    while len(level) > 1:
        merged = [client.submit(merge_stats, a, b, pure=False)
                  for a, b in zip(level[::2], level[1::2], strict=False)]
        if len(level) % 2:
            merged.append(level[-1])
        level = merged
    return level[0]


def _blocks(reads: list[_Read], step: int, target: int) -> list[tuple[int | None, int | None]]:
    """Blocks of window slots ``[lo, hi)``, cut on slot boundaries, of about ``target``
    events each (the unit of phase 2); the first and the last are open, as in
    :mod:`analyzer.streaming`, so that no window is left out at either end."""
    if not any(len(r.slots) for r in reads):
        return []
    slots = np.concatenate([r.slots for r in reads])
    counts = np.concatenate([r.counts for r in reads])
    order = np.argsort(slots, kind="stable")
    slots, counts = slots[order], counts[order]
    starts = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
    slots, counts = slots[starts], np.add.reduceat(counts, starts)
    cuts: list[int | None] = [None]
    acc = 0
    for slot, count in zip(slots.tolist(), counts.tolist(), strict=True):
        # one step per slot with events (an hour), not per event
        if acc and acc + count > target:
            cuts.append(slot)
            acc = 0
        acc += count
    return list(itertools.pairwise([*cuts, None]))
