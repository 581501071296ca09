"""Readers: audit logs and other formats -> the normalized events frame.

Each format is a module with ``FORMAT`` (its name), ``sniff(head) -> bool`` and
``read(path, **options) -> ReadResult``. :func:`read_events` picks the module by name or by
sniffing the first bytes of the file, reads every path and concatenates the frames.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from analyzer.errors import ConfigError, SourceError

# Which files beside a log are not logs is analyzer.series's (re-exported: readers skip them).
from analyzer.series import is_side_file
from analyzer.sources._base import (
    ARCHIVES,
    ReadResult,
    Rejected,
    archive_kind,
    arrow_to_frame,
    build_frame,
    empty_frame,
    merge_skipped,
    open_log,
    read_failed,
    within_period,
    write_rejected,
)
from analyzer.sources._once import (
    Block,
    Blocks,
    Line,
    LineTap,
    ReadProgress,
    block_lines,
    read_jsonl_once,
)
from analyzer.sources.options import ReaderOptions

__all__ = [
    "FORMATS",
    "Block",
    "Blocks",
    "Line",
    "LineTap",
    "ReadProgress",
    "ReadResult",
    "ReaderOptions",
    "Rejected",
    "archive_accounting",
    "arrow_to_frame",
    "block_lines",
    "build_frame",
    "detect_format",
    "empty_frame",
    "expand_paths",
    "is_side_file",
    "read_events",
    "read_pieces",
    "reader_options_of",
    "within_period",
    "write_rejected",
]

#: format name -> module. Order matters for detection: the most specific formats first.
FORMATS: dict[str, str] = {
    "parquet": "analyzer.sources.parquet",
    "jsonl": "analyzer.sources.jsonl",
    "cloudtrail": "analyzer.sources.cloudtrail",
    "windows": "analyzer.sources.windows",
    "k8s": "analyzer.sources.k8s",
    "csv": "analyzer.sources.csv",
    "weblog": "analyzer.sources.weblog",
    "sshd": "analyzer.sources.sshd",
    "generic": "analyzer.sources.generic",
}
_NOT_SNIFFED = {"generic"}  # needs a mapping from the user; never guessed
_HEAD_BYTES = 64 << 10


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(FORMATS[name])
    except KeyError:
        raise ConfigError(f"unknown format {name!r}; known: {', '.join(FORMATS)}") from None
    except ModuleNotFoundError as exc:  # an adapter not shipped in this build
        raise ConfigError(f"format {name!r} is not available: {exc}") from None


def _head(path: Path) -> bytes:
    handle, _ = open_log(path)
    try:
        with handle:
            return handle.read(_HEAD_BYTES)
    except (OSError, EOFError) as exc:  # a truncated or damaged gzip file
        raise read_failed(path, exc) from None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the format of ``path`` from its first bytes (and its extension as a hint)."""
    if _parquet_source(path):  # an export folder or a URL: read whole, never sniffed
        return "parquet"
    file = Path(path)
    _check_path(file)
    return _format_of(file, _head(file))


def _check_path(file: Path) -> None:
    if not file.exists():
        raise SourceError(f"{file}: no such file")
    if file.is_dir():
        raise SourceError(f"{file}: is a directory, expected a log file")


def _format_of(file: Path, head: bytes) -> str:
    """The format of ``file`` whose first bytes are ``head``."""
    if not head.strip():
        return "jsonl" if file.suffix in (".jsonl", ".json", ".log", "") else "csv"
    if file.suffix.lower() == ".csv":
        return "csv"
    for name in FORMATS:
        if name in _NOT_SNIFFED:
            continue
        try:
            module = _module(name)
        except ConfigError:
            continue
        if module.sniff(head):
            return name
    raise SourceError(f"{file}: cannot tell the format; name it with --format "
                      f"({', '.join(FORMATS)})")


def _parquet_source(path: str | os.PathLike[str]) -> bool:
    from analyzer.sources.parquet import is_source

    return is_source(path)


def expand_paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 archives: list[Path] | None = None) -> list[Path | str]:
    """Expand globs and directories (their files, sorted) into a list of files.

    A Parquet export (a folder with ``_manifest.json`` or ``dt=`` partitions) stays one
    path, read whole by the ``parquet`` reader; a URL (``s3://...``, ``file://...``) is kept
    as its text.

    A path that matches nothing is an error naming it, never an empty read. Archives no
    reader opens (``.zip``, ``.tar``, ``.7z``: :data:`~analyzer.sources._base.ARCHIVES`) are
    left out of folders and globs, and appended to ``archives`` when it is given, so that
    the caller can say so; one named directly is an error ("x.zip: a zip archive; extract
    it first"). ``.gz`` files are logs and are kept.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    result: list[Path | str] = []
    for item in paths:
        text = os.fspath(item)
        if _parquet_source(text):
            result.append(text if "://" in text else Path(text))
            continue
        if any(ch in text for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(text))
                       if not is_side_file(Path(m)) and not Path(m).is_dir()]
            if not matches:
                raise SourceError(f"{text}: no file matches")
            result.extend(_without_archives(text, matches, archives))
            continue
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not
                           p.name.startswith(".") and not is_side_file(p))
            if not files:
                raise SourceError(f"{path}: directory has no files")
            result.extend(_without_archives(str(path), files, archives))
        elif not path.exists():
            raise SourceError(f"{path}: no such file or directory")
        elif (kind := archive_kind(path)) is not None:
            raise SourceError(f"{path}: {ARCHIVES[kind]}; extract it first")
        else:
            result.append(path)
    return result


def _without_archives(where: str, files: list[Path], archives: list[Path] | None
                      ) -> list[Path]:
    kept = [f for f in files if archive_kind(f) is None]
    left_out = [f for f in files if archive_kind(f) is not None]
    if not kept:
        raise SourceError(f"{where}: no logs, only archives ({', '.join(map(str, left_out[:3]))}"
                          f"{' ...' if len(left_out) > 3 else ''}); extract them first")
    if archives is not None:
        archives.extend(left_out)
    return kept


def archive_accounting(archives: list[Path]) -> tuple[dict[str, dict[str, int]],
                                                      tuple[str, ...]]:
    """The ``skipped`` table and the notes for archives left out of folders and globs:
    ``{"unreadable archive": {".zip": 2}}`` and one line naming each file."""
    counts: dict[str, int] = {}
    notes = []
    for path in archives:
        kind = archive_kind(path) or path.suffix
        counts[kind] = counts.get(kind, 0) + 1
        notes.append(f"{path}: {ARCHIVES.get(kind, 'an archive')}, not read; extract it first")
    return ({"unreadable archive": counts} if counts else {}), tuple(notes)


def reader_options_of(name: str) -> frozenset[str]:
    """The :class:`ReaderOptions` the reader of format ``name`` declares it takes."""
    return frozenset(getattr(_module(name), "OPTIONS", frozenset()))


def _takers(option: str) -> list[str]:
    """The formats whose reader declares ``option`` (imported on demand)."""
    out = []
    for name in FORMATS:
        try:
            if option in reader_options_of(name):
                out.append(name)
        except ConfigError:  # an adapter not shipped in this build
            continue
    return out


def read_events(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                format: str | None = None, since: Any = None, until: Any = None,
                options: ReaderOptions | Mapping[str, Any] | Callable[[str], ReaderOptions]
                | None = None,
                tap: LineTap | None = None,
                progress: ReadProgress | None = None, rows: int | None = None,
                pieces: Callable[[pd.DataFrame], None] | None = None,
                **more: Any) -> ReadResult:
    """Read one or more logs into one normalized frame, sorted by time.

    Each file is opened once: its first bytes name its format, and an audit log is read
    from the same handle.

    Parameters
    ----------
    paths
        A file, a directory, a glob, or several of them.
    format
        A name from :data:`FORMATS`, or ``None`` to detect each file's format.
    since, until
        Keep only records at or after ``since`` and before ``until`` (datetimes; naive means
        UTC), judged on each record's own time; the others are counted as skipped.
        Archives in folders and globs are not read and are counted as skipped too.
    options
        :class:`ReaderOptions` for the formats' readers (``mapping=`` for CSV, ``year=``
        for sshd ...); each reader gets those it declares. An option that none of the files
        read takes is a :class:`~analyzer.errors.ConfigError`. A function of the format's
        name gives each format its own (the report keeps the alerts of audit logs only).
    tap
        ``tap(path, blocks)``, called for each audit log (``jsonl``) with its blocks of
        whole lines, in the same pass as the read (see :class:`Blocks`).
    progress
        ``progress(records, share)`` as the read goes (per block of an audit log, per file
        of other formats).
    rows, pieces
        Hand the events to ``pieces`` as frames of about ``rows`` events (audit logs, and
        the formats read in pieces: :data:`_IN_PIECES`) or one per file (CloudTrail,
        generic), within the period, in file and line order (not sorted by time), as the
        read goes, even while a ``tap`` drives it; the result then holds the read's
        accounting with an empty frame (``used`` counts the events handed).
    **more
        Options by keyword, as in :class:`ReaderOptions` (checked by name).

    Examples
    --------
    >>> import tempfile, os
    >>> from analyzer.logger import AuditLogger
    >>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
    >>> with AuditLogger(path) as audit:
    ...     _ = audit.log("login", user="alice", outcome="success", source_ip="10.0.0.7")
    >>> result = read_events(path)
    >>> result.frame[["user", "action", "outcome"]].to_dict("records")
    [{'user': 'alice', 'action': 'login', 'outcome': 'success'}]
    """
    pick = _options_by_format(options, more)
    archives: list[Path] = []
    files = expand_paths(paths, archives=archives)
    checked = _Checked(pick, len(files))
    results: list[ReadResult] = []
    handed: list[ReadResult] = []  # the file's pieces (handed to ``pieces``: their accounting)
    records = 0  # in the files read so far
    for number, path in enumerate(files):
        def step(count: int, share: float | None, index: int = number,
                 before: int = records) -> None:
            if progress is not None:  # the share of the whole input, by files
                progress(before + count, None if share is None else
                         (index + share) / len(files))

        hand = None if pieces is None else \
            (rows, lambda piece: handed.append(_hand_over(piece, pieces, since, until)))
        result = next(_path_pieces(path, format, since, until, checked, tap, step, hand=hand))
        if hand is None:
            handed.append(result)
        else:
            hand[1](result)  # the last piece, handed over as the others were
        for piece in handed:  # (one: the file's result, unless handed over in pieces)
            records += piece.records if piece.records is not None else len(piece.frame)
        results.extend(handed)
        handed.clear()
        step(0, 1.0, before=records)
    result = _combine(results)
    if pieces is not None:
        result = dataclasses.replace(result, used=sum(r.used or 0 for r in results))
    if archives:
        skipped, notes = archive_accounting(archives)
        result = dataclasses.replace(
            result, records=None if result.records is None else result.records + len(archives),
            skipped=merge_skipped(result.skipped, skipped), notes=result.notes + notes)
    return within_period(result, since, until)


def _hand_over(piece: ReadResult, pieces: Callable[[pd.DataFrame], None], since: Any,
               until: Any) -> ReadResult:
    """Give ``piece``'s events within the period to ``pieces``; keep its accounting."""
    piece = within_period(piece, since, until)
    if len(piece.frame):
        pieces(piece.frame)
    return dataclasses.replace(piece, frame=empty_frame(), used=len(piece.frame))


def read_pieces(files: Iterable[str | os.PathLike[str]], *, rows: int,
                format: str | None = None, since: Any = None, until: Any = None,
                options: ReaderOptions | Mapping[str, Any] | None = None,
                progress: ReadProgress | None = None) -> Iterator[ReadResult]:
    """:func:`read_events` of ``files`` (already expanded: :func:`expand_paths`) in pieces
    of about ``rows`` records, for a caller that holds one piece at a time
    (:mod:`analyzer.streaming`): audit logs in blocks of whole lines, Parquet exports in
    row groups, the formats of :data:`_IN_PIECES` through their ``read_chunks``, the
    others one piece per file. Each file is opened once, as in
    :func:`read_events`, and the options are checked alike. Each piece carries its own
    accounting (rejected lines numbered from the file's start); the first piece of a file
    names its format (so that the pieces' ``formats`` add up to one per file, as in
    :func:`read_events`). The pieces are within the period and in file order, not sorted
    by time."""
    files = list(files)
    checked = _Checked(_options_by_format(options, {}), len(files))
    records = 0  # in the files read so far
    for index, path in enumerate(files):
        def step(count: int, share: float | None, index: int = index,
                 before: int = records) -> None:
            if progress is not None:  # the share of the whole input, by files
                progress(before + count, None if share is None else
                         (index + share) / len(files))

        pieces = _path_pieces(os.fspath(path), format, since, until, checked, None, step,
                              rows=rows)
        for i, piece in enumerate(pieces):
            records += piece.records if piece.records is not None else len(piece.frame)
            yield within_period(piece if i == 0 else dataclasses.replace(piece, formats=()),
                                since, until)
        step(0, 1.0, before=records)


class _Checked:
    """The options for a file of a format; once every file's format is known (before the
    last is read), an option none of them takes is refused."""

    def __init__(self, pick: Callable[[str], ReaderOptions], n_files: int) -> None:
        self.pick = pick
        self.n_files = n_files
        self.declared: dict[str, frozenset[str]] = {}
        self.seen = 0

    def __call__(self, name: str) -> dict[str, Any]:
        self.declared.setdefault(name, reader_options_of(name))
        self.seen += 1
        if self.seen == self.n_files:
            for seen in self.declared:
                self.pick(seen).check_applies(self.declared, _takers)
        return self.pick(name).for_reader(self.declared[name])


def _options_by_format(options: ReaderOptions | Mapping[str, Any] | Callable[[str], ReaderOptions]
                       | None, more: dict[str, Any]) -> Callable[[str], ReaderOptions]:
    if callable(options) and not isinstance(options, ReaderOptions):
        by_format = options
        return lambda name: ReaderOptions.of(by_format(name), **more)
    chosen = ReaderOptions.of(options, **more)
    return lambda name: chosen


def _path_pieces(path: Path | str, format: str | None, since: Any, until: Any,
                 checked: Any, tap: LineTap | None, progress: ReadProgress | None, *,
                 rows: int | None = None,
                 hand: tuple[int | None, Callable[[ReadResult], None]] | None = None
                 ) -> Iterator[ReadResult]:
    """One file (or Parquet export), opened once, as one result (``rows`` None) or in
    pieces of about ``rows`` records; each names its format. ``hand``: an audit log read
    whole hands its pieces of about ``hand[0]`` records to ``hand[1]`` as it goes (see
    :func:`read_jsonl_once`), and its one result is the last piece."""
    # since/until go to readers that can prune by them (parquet's day partitions); the
    # records are filtered on their own time in read_events either way
    period = {"since": since, "until": until}
    if format not in (None, "jsonl") or _parquet_source(path):
        name = format or "parquet"
        module = _module(name)
        accepts = {"since", "until"} if name == "parquet" else set()
        pruning = {k: v for k, v in period.items() if k in accepts}
        if rows is not None and name in _IN_PIECES:
            yield from _reader_pieces(module, name, path, rows, checked(name), pruning,
                                      progress)
            return
        if hand is not None and hand[0] is not None and name in _IN_PIECES:
            yield _handed_over(module, name, path, hand, checked(name), pruning, progress)
            return
        yield dataclasses.replace(module.read(path, **checked(name), **pruning),
                                  formats=(name,))
        return
    file = Path(path)
    _check_path(file)
    handle, seekable = open_log(file)  # the one open of this file
    try:
        head = handle.read(_HEAD_BYTES)
        handle.seek(0)
    except (OSError, EOFError) as exc:  # a truncated or damaged gzip file
        handle.close()
        raise read_failed(file, exc) from None
    try:
        name = format or _format_of(file, head)
        options = checked(name)
    except BaseException:
        handle.close()
        raise
    if name != "jsonl":
        handle.close()  # the other readers open their file themselves
        if rows is not None and name in _IN_PIECES:
            yield from _reader_pieces(_module(name), name, file, rows, options, {}, progress)
            return
        if hand is not None and hand[0] is not None and name in _IN_PIECES:
            yield _handed_over(_module(name), name, file, hand, options, {}, progress)
            return
        yield dataclasses.replace(_module(name).read(file, **options), formats=(name,))
        return
    if rows is None:
        result = read_jsonl_once(file, handle, seekable, options=options, tap=tap,
                                 progress=progress, rows=hand[0] if hand else None,
                                 on_piece=hand[1] if hand else None)
        yield dataclasses.replace(result, formats=(name,))
        return
    from analyzer.sources.jsonl import read_handle

    try:
        with handle:
            size = os.fstat(handle.fileno()).st_size if seekable else 0
            done = 0
            for piece in read_handle(handle, str(file), seekable=seekable, rows=rows,
                                     **options):
                done += piece.records or 0
                if progress is not None:  # the share of the file's bytes read so far
                    progress(done, min(handle.tell() / size, 1.0) if size else None)
                yield dataclasses.replace(piece, formats=(name,))
    except (OSError, EOFError, zlib.error) as exc:  # a truncated gzip file, an I/O error
        raise read_failed(file, exc) from None


#: Formats other than the audit log whose reader reads a file in pieces (``read_chunks``),
#: carrying what crosses a cut (sshd/syslog: the year steps, and from a first column-wise
#: scan the inferred year and the processes' own verdicts that PAM lines echo; Kubernetes:
#: from a first scan, the last row of each streaming request open at a cut; web logs: the
#: clients named by host). Windows and Kubernetes JSON lines stream; their JSON array
#: form, one value, is read whole and then cut. CloudTrail is one JSON document per file
#: (delivered as many small files): read a file at a time. docs/formats.md, "In pieces".
_IN_PIECES = frozenset({"parquet", "csv", "sshd", "weblog", "windows", "k8s"})


def _reader_pieces(module: ModuleType, name: str, path: Path | str, rows: int,
                   options: dict[str, Any], pruning: dict[str, Any],
                   progress: ReadProgress | None) -> Iterator[ReadResult]:
    """A file (or export) in pieces of about ``rows`` records, from its reader's
    ``read_chunks``; each piece names the format."""
    done = 0
    for piece in module.read_chunks(path, rows=rows, **options, **pruning):
        done += piece.records or 0
        if progress is not None:
            progress(done, None)
        yield dataclasses.replace(piece, formats=(name,))


def _handed_over(module: ModuleType, name: str, path: Path | str,
                 hand: tuple[int | None, Callable[[ReadResult], None]],
                 options: dict[str, Any], pruning: dict[str, Any],
                 progress: ReadProgress | None) -> ReadResult:
    """A file (or export) of a format read in pieces, read whole, that hands its pieces of
    about ``hand[0]`` records to ``hand[1]`` as it goes (see :func:`read_jsonl_once`): the
    last piece is the result."""
    assert hand[0] is not None  # (the caller hands over only with a size)
    last = None
    for piece in _reader_pieces(module, name, path, hand[0], options, pruning, progress):
        if last is not None:
            hand[1](last)
        last = piece
    if last is None:
        return dataclasses.replace(module.read(path, **options, **pruning), formats=(name,))
    return last


def _combine(results: list[ReadResult]) -> ReadResult:
    """One result from the files' results: frames concatenated and sorted by time."""
    if len(results) == 1:
        result = results[0]
        if result.frame["timestamp"].is_monotonic_increasing:
            return result
        frame = result.frame.sort_values("timestamp", kind="stable", ignore_index=True)
        return dataclasses.replace(result, frame=frame)
    frames = [r.frame for r in results if len(r.frame)]
    frame = (pd.concat(frames, ignore_index=True) if frames else empty_frame())
    if len(frames) > 1:
        for column in frame.columns:  # a reader's extra columns are not in every frame
            if any(isinstance(f[column].dtype, pd.CategoricalDtype) for f in frames
                   if column in f.columns):
                frame[column] = frame[column].astype("category")
        frame["outcome"] = frame["outcome"].cat.set_categories(["success", "failure",
                                                                "unknown"])
        frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    rejected = tuple(r for res in results for r in res.rejected)
    counted = all(r.records is not None for r in results)
    return ReadResult(frame, rejected, sum(r.skipped_alerts for r in results),
                      frozenset().union(*(r.alert_ids for r in results)),
                      records=sum(r.records or 0 for r in results) if counted else None,
                      skipped=merge_skipped(*(r.skipped for r in results)),
                      notes=tuple(n for r in results for n in r.notes),
                      formats=tuple(f for r in results for f in r.formats))
