"""Inputs cut into partitions: the units of work a Dask worker reads on its own.

A partition names what to read, never the bytes: a path or URL, a reader's format and, for
a large JSON-lines file, a byte range; for a Parquet export, row groups of one day's file.
What crosses to a worker is the :class:`Partition` and the reader's options (the format's
mapping, a year, ``clear_only``): never a key (:func:`worker_options` refuses them).

* **A rotated series** (``audit.jsonl*``, a folder, a glob): its files oldest first, in the
  order :func:`analyzer.query.trail_files` gives them (the one place that knows a series).
* **A large JSON-lines file** (local or an fsspec URL such as ``s3://bucket/audit.jsonl``):
  byte ranges of about ``target_bytes``. A range owns the lines that *start* in it: its
  reader skips the end of a line begun before it and reads past its end to finish its last
  line, so every line is read once. Rejected lines are numbered within the range; the
  client adds the lines of the ranges before it (:func:`renumber`). A gzip file cannot be
  cut and is one partition.
* **A Parquet export** (a folder or URL written by ``export --parquet``): one partition per
  row group of each day's file, days outside ``--since``/``--until`` pruned by name.
* **Any other log** (CSV, sshd, CloudTrail ...): one partition per file.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.errors import ConfigError, SourceError
from analyzer.sources import (
    ReadResult,
    Rejected,
    detect_format,
    empty_frame,
    read_events,
    within_period,
)

__all__ = ["DEFAULT_TARGET_BYTES", "Partition", "merge_accounting", "plan_partitions",
           "read_partition", "renumber", "worker_options"]

#: About this many bytes of JSON lines per partition: a worker parses a range in about a
#: second and holds its frame (~10x the bytes' events as arrays) comfortably.
DEFAULT_TARGET_BYTES = 64 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_JSONL_NAMES = (".jsonl", ".json", ".log", ".ndjson")
#: Reader options that carry secrets: they never go to a worker.
_SECRET_OPTIONS = ("decrypt_keys",)


@dataclasses.dataclass(frozen=True, slots=True)
class Partition:
    """One unit of reading. ``kind`` is ``"file"`` (the whole file through its format's
    reader), ``"range"`` (bytes ``[start, stop)`` of a JSON-lines file, by whole lines) or
    ``"row_groups"`` (``row_groups`` of ``file`` in the Parquet export ``source``)."""

    index: int
    kind: str
    source: str
    format: str
    start: int = 0
    stop: int | None = None
    file: str = ""
    row_groups: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.kind == "range":
            return f"{self.source} bytes {self.start:,}-{self.stop:,}"
        if self.kind == "row_groups":
            return f"{self.file} row group(s) {', '.join(map(str, self.row_groups))}"
        return self.source


def _is_url(text: str) -> bool:
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum()


def _is_jsonl_url(text: str) -> bool:
    """A URL of JSON lines (by its name, glob or not); other URLs are Parquet exports."""
    name = text.rstrip("/").rsplit("/", 1)[-1].lower()
    name = name.removesuffix(".gz")
    return any(ch in name for ch in "*?[") or name.endswith(_JSONL_NAMES) or \
        ".jsonl." in name


def plan_partitions(inputs: Sequence[str | os.PathLike[str]], *, format: str | None = None,
                    since: Any = None, until: Any = None,
                    target_bytes: int = DEFAULT_TARGET_BYTES) -> list[Partition]:
    """Cut ``inputs`` (files, folders, globs, Parquet exports, URLs) into partitions, in
    the order their events were written: the series' files oldest first, each file's
    ranges in order."""
    if target_bytes < 1 << 10:
        raise ConfigError(f"target_bytes must be at least 1 KiB, got {target_bytes}")
    from analyzer.query import trail_files
    from analyzer.sources import parquet

    parts: list[Partition] = []
    local: list[str | os.PathLike[str]] = []

    def flush() -> None:
        if local:
            for file in trail_files(list(local)):  # the series, oldest first
                parts.extend(_file_parts(str(file), format, target_bytes, len(parts)))
            local.clear()

    for item in inputs:
        text = os.fspath(item)
        if _is_url(text) and _is_jsonl_url(text) and format in (None, "jsonl"):
            flush()
            for url in _expand_url(text):
                parts.extend(_url_parts(url, target_bytes, len(parts)))
        elif parquet.is_source(text):
            flush()
            _, files = parquet.row_groups(text, since, until)
            for file, count in files:
                for group in range(count):
                    parts.append(Partition(len(parts), "row_groups", text, "parquet",
                                           file=file, row_groups=(group,)))
        else:
            local.append(item)
    flush()
    return parts


def _file_parts(path: str, format: str | None, target_bytes: int,
                first: int) -> list[Partition]:
    name = format or detect_format(path)
    if name == "parquet":  # a single exported file: its row groups
        from analyzer.sources import parquet

        _, files = parquet.row_groups(path)
        return [Partition(first + g, "row_groups", path, "parquet", file=files[0][0],
                          row_groups=(g,)) for g in range(files[0][1])]
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == _GZIP_MAGIC
    if name != "jsonl" or gzipped or size <= target_bytes:
        return [Partition(first, "file", path, name)]
    return [Partition(first + i, "range", path, name, start=start,
                      stop=min(start + target_bytes, size))
            for i, start in enumerate(range(0, size, target_bytes))]


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{url}: reading URLs needs fsspec (pip install "
                          "'audit-analyzer[dask]', and s3fs for s3://)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{url}: cannot open this URL: {exc}") from None


def _expand_url(url: str) -> list[str]:
    filesystem, path = _filesystem(url)
    scheme = url.split("://", 1)[0]
    try:
        found = sorted(filesystem.glob(path)) if any(ch in path for ch in "*?[") else [path]
    except OSError as exc:
        raise SourceError(f"{url}: cannot list: {exc}") from None
    from analyzer.sources import is_side_file

    found = [p for p in found if not is_side_file(Path(p))]
    if not found:
        raise SourceError(f"{url}: no file matches")
    # rotated files carry their UTC stamp in the name: by name is oldest first, the
    # active file (no stamp) last
    found.sort(key=lambda p: (Path(p).name == Path(path).name.split("*")[0], p))
    return [f"{scheme}://{p}" if "://" not in p else p for p in found]


def _url_parts(url: str, target_bytes: int, first: int) -> list[Partition]:
    filesystem, path = _filesystem(url)
    try:
        size = int(filesystem.size(path))
        with filesystem.open(path, "rb") as handle:
            gzipped = handle.read(2) == _GZIP_MAGIC
    except FileNotFoundError:
        raise SourceError(f"{url}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{url}: cannot read: {exc}") from None
    if gzipped or size <= target_bytes:
        return [Partition(first, "file", url, "jsonl", stop=size)]
    return [Partition(first + i, "range", url, "jsonl", start=start,
                      stop=min(start + target_bytes, size))
            for i, start in enumerate(range(0, size, target_bytes))]


# -- reading a partition (on a worker) --------------------------------------------------------

def worker_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The reader options that may cross to a worker; a key among them is a bug, refused."""
    leaked = [name for name in _SECRET_OPTIONS if options.get(name)]
    if leaked:
        raise ConfigError(f"reader option(s) {', '.join(leaked)} carry keys and are never "
                          "sent to a worker")
    return {k: v for k, v in options.items() if k not in _SECRET_OPTIONS}


def read_partition(part: Partition, options: Mapping[str, Any], *, since: Any = None,
                   until: Any = None, rows: int | None = None,
                   pieces: Callable[[pd.DataFrame], None] | None = None
                   ) -> tuple[ReadResult, int]:
    """Read ``part`` into a normalized frame: ``(result, lines in the part)``.

    The line count is that of a byte range (0 for other parts): the client adds it to the
    numbers of the rejected lines of the ranges after it (:func:`renumber`). With
    ``pieces``, the events go to it instead, and the result holds the accounting (``used``
    counts them): a local file (a format without byte ranges, a gzip file) in pieces of
    about ``rows`` events in file order, as :func:`~analyzer.sources.read_events` hands
    them over; another part, or any part without ``rows``, as one frame (none when empty).
    """
    if pieces is not None:
        if rows is not None and part.kind == "file" and not _is_url(part.source):
            return read_events(part.source, format=part.format, since=since, until=until,
                               rows=rows, pieces=pieces, **options), 0
        result, lines = read_partition(part, options, since=since, until=until)
        if len(result.frame):
            pieces(result.frame)
        return dataclasses.replace(result, frame=empty_frame(), used=len(result.frame)), lines
    if part.kind == "row_groups":
        from analyzer.sources import parquet

        result = parquet.read_row_groups(part.source, part.file, part.row_groups,
                                         include_alerts=bool(options.get("include_alerts")))
        return within_period(result, since, until), 0
    if part.kind == "file" and not _is_url(part.source):
        return read_events(part.source, format=part.format, since=since, until=until,
                           **options), 0
    data = _range_bytes(part)
    from analyzer.sources import jsonl

    if data[:2] == _GZIP_MAGIC:
        import gzip

        handle: io.IOBase = gzip.GzipFile(fileobj=io.BytesIO(data))
    else:
        handle = io.BytesIO(data)
    accepted = {k: v for k, v in options.items()
                if k in ("include_alerts", "decrypt_keys", "clear_only")}
    result = next(jsonl.read_handle(handle, part.source, seekable=False,  # type: ignore[arg-type]
                                    **accepted))
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return within_period(result, since, until), lines


def _range_bytes(part: Partition) -> bytes:
    """The whole lines that start in ``[part.start, part.stop)``."""
    if _is_url(part.source):
        filesystem, path = _filesystem(part.source)
        opened = filesystem.open(path, "rb")
    else:
        opened = open(part.source, "rb")  # noqa: SIM115 - closed below
    try:
        with opened as handle:
            start = part.start
            if start > 0:
                handle.seek(start - 1)
                start += len(_line_rest(handle)) - 1  # the line begun before is not ours
            if part.stop is None or part.kind == "file":
                handle.seek(start)
                return bytes(handle.read())
            if start >= part.stop:
                return b""
            handle.seek(start)
            body = handle.read(part.stop - start)
            if body.endswith(b"\n"):
                return bytes(body)
            return bytes(body) + _line_rest(handle)
    except FileNotFoundError:
        raise SourceError(f"{part.source}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{part.source}: cannot read: {exc}") from None


def _line_rest(handle: Any) -> bytes:
    """The rest of the current line, through its newline (or the end of the file)."""
    pieces = []
    while chunk := handle.read(1 << 16):
        cut = chunk.find(b"\n")
        if cut != -1:
            pieces.append(chunk[:cut + 1])
            break
        pieces.append(chunk)
    return b"".join(pieces)


# -- the client's side: one accounting from the partitions' ----------------------------------

def renumber(parts: Sequence[Partition], results: Sequence[tuple[ReadResult, int]]
             ) -> list[tuple[Rejected, ...]]:
    """The rejected lines of each partition numbered within its file: a range's numbers
    move by the lines of the ranges of the same file before it."""
    out = []
    seen: dict[str, int] = {}
    for part, (result, lines) in zip(parts, results, strict=True):
        before = seen.get(part.source, 0) if part.kind == "range" else 0
        out.append(tuple(dataclasses.replace(r, line=r.line + before)
                         for r in result.rejected) if before else result.rejected)
        if part.kind == "range":
            seen[part.source] = before + lines
    return out


def merge_accounting(results: Iterable[ReadResult], used: int) -> ReadResult:
    """One read's accounting (records, rejected, skipped, alert ids, notes) from the
    partitions' results, for ``report_read``: the events themselves stayed on the workers,
    so the frame is empty and ``used`` counts them (as a chunked read's accounting)."""
    from analyzer.sources.chunks import chunked_accounting

    return chunked_accounting(list(results), [], used)
