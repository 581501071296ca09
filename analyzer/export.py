"""The trail's analytics copy: a verified export to Parquet, partitioned by day.

:func:`export_parquet` verifies the chain of a trail (one file or a rotated series), then
writes its records to ``DIR/dt=YYYY-MM-DD/part-0.parquet`` (hive partitions by the UTC day
of ``@timestamp``) with ``DIR/_manifest.json`` saying what it covers: the source files, the
records, the chain's head sequence and hash, whether the chain was intact, the integrity
key's id, and the schema. DuckDB, Spark, Athena and pandas read the files as they are;
``train``, ``score`` and ``query`` read the folder through the ``parquet`` reader
(:mod:`analyzer.sources.parquet`, which also owns the layout's names).

The rows have the columns of a query result (:data:`analyzer.query.RESULT_SCHEMA`): the
normalized fields, the chain fields (``sequence``, ``event_id``, ``hash``) and ``record``,
the whole event as JSON text, so nothing of the trail is lost. Each day's rows are sorted by
time (then sequence) and written in row groups of
:data:`~analyzer.sources.parquet.ROW_GROUP_ROWS`.

What is written, and how:

* **Nothing unverified by default.** A broken chain is an :class:`IntegrityError` with the
  verify summary; with ``force`` the copy is written and its manifest says
  ``"verified": false``. Records appended after the verify (beyond the head it checked)
  are left for the next export.
* **Encrypted trails** need their key (the copy then holds the sealed fields decrypted, and
  the manifest says ``"encryption": "decrypted"``), or ``clear_only`` (sealed fields stay
  sealed in ``record`` and empty in the columns: ``"encryption": "sealed"``).
* **Re-exports replace the days they cover.** Records are first written to a staging folder
  beside ``DIR``; each finished day then replaces its ``dt=`` folder by two renames, and the
  manifest is replaced atomically last. Days an earlier export wrote and this one does not
  cover are kept, with their own entry in the manifest (so a copy can outlive the trail's
  retention). A reader never sees a half-written file; during the swap of one day it may
  miss that day, never read it twice.
* **Bounded memory.** Records stream from the trail into the staging folder; only one day
  is held at a time, to sort it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from analyzer.errors import ConfigError, IntegrityError, SourceError
from analyzer.files import atomic_write
from analyzer.integrity import Problem, VerifyReport, key_id, verify_log, verify_series
from analyzer.query import RESULT_SCHEMA, ScanStats, scan, trail_files
from analyzer.sources import Rejected
from analyzer.sources.parquet import MANIFEST_NAME, PARTITION, ROW_GROUP_ROWS, read_manifest

__all__ = ["MANIFEST_VERSION", "ExportReport", "export_parquet"]

#: Version of the manifest's layout (bumped when a field changes meaning).
MANIFEST_VERSION = 1
_PART = "part-0.parquet"
_STAGE_SCHEMA = RESULT_SCHEMA.append(pa.field(PARTITION, pa.string()))
_HIVE = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")

#: progress(records exported so far, share of the input bytes read (0..1))
ProgressFn = Callable[[int, float], None]


@dataclasses.dataclass(frozen=True, slots=True)
class ExportReport:
    """What :func:`export_parquet` wrote."""

    directory: str
    manifest: dict[str, Any]
    verify: VerifyReport
    rejected: tuple[Rejected, ...] = ()
    #: records beyond the verified head (appended during the export), left for the next one
    left_for_next: int = 0

    @property
    def records(self) -> int:
        return int(self.manifest["records"])

    def summary(self) -> str:
        """One line for a person."""
        days = sorted(self.manifest["written"])
        span = f"{days[0]} .. {days[-1]}" if days else "no day"
        state = "chain intact" if self.verify.ok else "chain NOT intact (--force)"
        return (f"exported {self.records:,} records ({len(days)} day(s), {span}) to "
                f"{self.directory}; {state}, head sequence {self.manifest['head_sequence']}")


def export_parquet(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                   directory: str | os.PathLike[str], *, key: bytes | None = None,
                   checkpoint: Any = None, decrypt_keys: tuple[bytes, ...] = (),
                   clear_only: bool = False, force: bool = False,
                   progress: ProgressFn | None = None,
                   tool_version: str = "") -> ExportReport:
    """Verify a trail and write it to ``directory`` as Parquet partitioned by day.

    Parameters
    ----------
    paths
        The trail: one log, or the files of a rotated series (folders and globs too).
    directory
        A local folder: new, empty, or an earlier export (its days covered here are replaced).
    key
        The integrity key the chain was written with (``None`` for an unkeyed chain).
    checkpoint
        Checkpoints the chain must match (as :func:`analyzer.integrity.verify_log` takes).
    decrypt_keys, clear_only
        For a trail encrypted at rest: decrypt its sealed fields into the copy, or keep them
        sealed. One of them is required for such a trail.
    force
        Export a chain that does not verify (the manifest records it).
    progress
        Called as records are written, with the count and the share of input read.

    Raises
    ------
    IntegrityError
        The chain does not verify (and not ``force``); the message is the verify summary.
    """
    target = Path(directory)
    _check_target(target)
    files = trail_files(paths)
    report = _verify(files, key, checkpoint)
    if not report.ok and not force:
        raise IntegrityError(report.summary())
    encryption = _encryption(files, decrypt_keys, clear_only)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stage = target.parent / f".{target.name}.export-{secrets.token_hex(6)}"
    stage.mkdir(parents=True, mode=0o700)
    try:
        stats = ScanStats()
        total = sum(_size(f) for f in files) or 1
        batches = scan(files, stats=stats, decrypt_keys=decrypt_keys, clear_only=clear_only)
        head = report.head_sequence if report.ok else None
        left = _Counter()
        staged = _stage(_limited(batches, head, left, stats, total, progress), stage / "in")
        # a decrypted copy holds what the trail sealed: its files are the owner's only
        private = encryption == "decrypted"
        days = _write_days(stage / "in", stage / "out", private=private) if staged else {}
        manifest = _manifest(target, files, report, days, key=key, encryption=encryption,
                             created=created, tool_version=tool_version,
                             rejected=len(stats.rejected))
        _swap(stage / "out", target, stage / "old", days)
        atomic_write(target / MANIFEST_NAME, orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
                     + b"\n", mode=0o600 if private else 0o644)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ExportReport(str(target), manifest, report, tuple(stats.rejected), left.value)


def _check_target(target: Path) -> None:
    if "://" in str(target):
        raise ConfigError(f"{target}: export writes to a local folder; copy the folder to "
                          "object storage afterwards (readers take the URL)")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target}: exists and is not a folder")
    if target.is_dir() and not (target / MANIFEST_NAME).exists() and any(target.iterdir()):
        raise ConfigError(f"{target}: not empty and not an export (no {MANIFEST_NAME}); "
                          "give a new or empty folder")
    target.mkdir(parents=True, exist_ok=True)


def _verify(files: list[Path], key: bytes | None, checkpoint: Any) -> VerifyReport:
    report = (verify_log(files[0], key=key, checkpoint=checkpoint) if len(files) == 1
              else verify_series(files, key=key, checkpoint=checkpoint))
    if report.problem is Problem.KEY_NEEDED:
        raise ConfigError(f"{report.path}: {report.detail}: pass --key-file")
    return report


def _encryption(files: list[Path], decrypt_keys: tuple[bytes, ...], clear_only: bool) -> str:
    from analyzer.crypto import trail_is_sealed

    if not any(trail_is_sealed(f) for f in files):
        return "none"
    if decrypt_keys:
        return "decrypted"
    if clear_only:
        return "sealed"
    raise ConfigError(f"{files[0]}: records are encrypted; pass the encryption key "
                      "(--encryption-key-file: the copy then holds them decrypted) or "
                      "--clear-only (sealed fields stay sealed)")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclasses.dataclass(slots=True)
class _Counter:
    value: int = 0


def _limited(batches: Iterator[Any], head: int | None, left: _Counter, stats: ScanStats,
             total: int, progress: ProgressFn | None) -> Iterator[pa.RecordBatch]:
    """The scan's tables up to the verified head, with their day, as record batches."""
    written = 0
    for batch in batches:
        table = batch.table
        if head is not None:
            beyond = pc.fill_null(pc.greater(table.column("sequence"), head), False)
            n_beyond = pc.sum(beyond).as_py() or 0
            if n_beyond:
                left.value += n_beyond
                table = table.filter(pc.invert(beyond))
        day = pc.strftime(table.column("timestamp"), format="%Y-%m-%d")
        table = table.append_column(PARTITION, day)
        written += table.num_rows
        if progress is not None:
            progress(written, min(stats.bytes_read / total, 1.0))
        yield from table.to_batches()


def _stage(batches: Iterator[pa.RecordBatch], folder: Path) -> bool:
    """Stream the batches into day partitions (unsorted); whether any row was written."""
    seen = False

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal seen
        for batch in batches:
            if batch.num_rows:
                seen = True
                yield batch

    reader = pa.RecordBatchReader.from_batches(_STAGE_SCHEMA, counted())
    ds.write_dataset(reader, folder, format="parquet", partitioning=_HIVE,
                     existing_data_behavior="error", max_partitions=1 << 16)
    return seen


def _write_days(staged: Path, out: Path, *, private: bool) -> dict[str, dict[str, Any]]:
    """Sort each staged day by time and sequence and write it as the day's one file."""
    days: dict[str, dict[str, Any]] = {}
    for folder in sorted(p for p in staged.iterdir() if p.name.startswith(f"{PARTITION}=")):
        day = folder.name.partition("=")[2]
        table = ds.dataset(folder, format="parquet", schema=RESULT_SCHEMA).to_table()
        table = table.sort_by([("timestamp", "ascending"), ("sequence", "ascending")])
        (out / folder.name).mkdir(parents=True)
        part = out / folder.name / _PART
        pq.write_table(table, part, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        if private:
            os.chmod(part, 0o600)
        bounds = pc.min_max(table.column("sequence")).as_py()
        days[day] = {"rows": table.num_rows, "first_sequence": bounds["min"],
                     "last_sequence": bounds["max"]}
        del table
    return days


def _swap(out: Path, target: Path, old: Path, days: dict[str, Any]) -> None:
    """Put each new day in place of the old one (two renames per day)."""
    old.mkdir()
    for day in days:
        name = f"{PARTITION}={day}"
        if (target / name).exists():
            os.replace(target / name, old / name)
        os.replace(out / name, target / name)


def _manifest(target: Path, files: list[Path], report: VerifyReport,
              days: dict[str, dict[str, Any]], *, key: bytes | None, encryption: str,
              created: str, tool_version: str, rejected: int) -> dict[str, Any]:
    previous = _previous_manifest(target)
    partitions = {d: p for d, p in previous.get("partitions", {}).items() if d not in days}
    for day, entry in days.items():
        partitions[day] = {**entry, "exported": created, "verified": report.ok}
    sequences = [(e["first_sequence"], e["last_sequence"]) for e in days.values()
                 if e["first_sequence"] is not None]
    return {
        "format": "audit-analyzer parquet export",
        "manifest_version": MANIFEST_VERSION,
        "tool": f"audit-analyzer {tool_version}".strip(),
        "created": created,
        "sources": [str(f) for f in files],
        "records": sum(e["rows"] for e in days.values()),
        "set_aside": rejected,
        "first_sequence": min((s[0] for s in sequences), default=None),
        "last_sequence": max((s[1] for s in sequences), default=None),
        "head_sequence": report.head_sequence,
        "head_hash": report.head_hash,
        "verified": report.ok,
        "verify_summary": report.summary(),
        "checkpoint_checked": report.checkpoint_checked,
        "key_id": key_id(key) if key else None,
        "encryption": encryption,
        "written": sorted(days),
        "partitioning": f"hive: {PARTITION}=YYYY-MM-DD, the UTC day of timestamp",
        "row_group_rows": ROW_GROUP_ROWS,
        "schema": [{"name": f.name, "type": str(f.type)} for f in RESULT_SCHEMA],
        "partitions": dict(sorted(partitions.items())),
    }


def _previous_manifest(target: Path) -> dict[str, Any]:
    with contextlib.suppress(SourceError):
        found = read_manifest(target)
        if found is not None and isinstance(found.get("partitions"), dict):
            return found
    return {}
