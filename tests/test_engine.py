"""The Dask engine: partitions of the inputs (no dask needed), and train + score on a
``LocalCluster`` giving what the local engine gives (needs the ``dask`` extra)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analyzer.engine.partitions import (
    merge_accounting,
    plan_partitions,
    read_partition,
    renumber,
    worker_options,
)
from analyzer.errors import ConfigError
from analyzer.sources import is_side_file, read_events
from analyzer.synth import SynthConfig, generate, write_audit_log


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=12, days=8, attack_days=2, seed=5))


@pytest.fixture(scope="module")
def series(org, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trail of a few thousand events rotated into several files."""
    folder = tmp_path_factory.mktemp("series")
    log = folder / "audit.jsonl"
    write_audit_log(org.events, log, rotate_bytes=1 << 20)
    return log


def _files(log: Path) -> list[Path]:
    return [p for p in sorted(log.parent.glob(log.name + "*")) if not is_side_file(p)]


def _read_all(parts, options=None):
    results = [read_partition(p, options or {}) for p in parts]
    frames = [r.frame for r, _ in results if len(r.frame)]
    return pd.concat(frames, ignore_index=True), results


def test_a_rotated_series_is_its_files_oldest_first(series: Path) -> None:
    files = _files(series)
    assert len(files) >= 3, "the fixture should rotate"
    parts = plan_partitions([str(series) + "*"])
    assert [p.kind for p in parts] == ["file"] * len(files)
    assert parts[-1].source == str(series)  # the active file holds the newest records
    frame, _ = _read_all(parts)
    # each file's events by time, the files oldest first: one stable sort by time gives the
    # local read (the rotation records carry the time they were written, so files overlap)
    assert frame["sequence"].iloc[:100].is_monotonic_increasing
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    local = read_events(str(series) + "*").frame
    for column in ("timestamp", "user", "action", "sequence"):
        assert frame[column].astype(str).tolist() == local[column].astype(str).tolist()


def test_byte_ranges_read_every_line_once_and_number_rejects_in_the_file(
        series: Path, tmp_path: Path) -> None:
    lines = b"".join(f.read_bytes() for f in _files(series)).splitlines(keepends=True)
    broken = tmp_path / "audit.jsonl"
    lines[100] = b'{"@timestamp": "not json\n'
    lines[2500] = b"garbage\n"
    broken.write_bytes(b"".join(lines))
    parts = plan_partitions([broken], target_bytes=256 << 10)
    assert len(parts) > 10 and {p.kind for p in parts} == {"range"}
    frame, results = _read_all(parts)
    local = read_events(broken)
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    assert frame["event_id"].tolist() == local.frame["event_id"].tolist()
    rejected = [r for group in renumber(parts, results) for r in group]
    assert [r.line for r in rejected] == [r.line for r in local.rejected] == [101, 2501]
    merged = merge_accounting([r for r, _ in results], len(frame))
    assert merged.records == local.records
    assert len(merged.frame) == len(local.frame)


def test_a_parquet_export_is_cut_by_day(series: Path, tmp_path: Path) -> None:
    from analyzer.export import export_parquet

    out = tmp_path / "export"
    export_parquet(_files(series), out)
    parts = plan_partitions([out])
    days = sorted(p.name for p in out.iterdir() if p.name.startswith("dt="))
    assert len(parts) == len(days) >= 8
    assert all(p.kind == "row_groups" for p in parts)
    frame, _ = _read_all(parts)
    local = read_events(out).frame
    assert frame["event_id"].tolist() == local["event_id"].tolist()


def test_keys_never_go_to_a_worker() -> None:
    with pytest.raises(ConfigError, match="never sent to a worker"):
        worker_options({"decrypt_keys": (b"k" * 32,), "clear_only": False})
    assert worker_options({"clear_only": True, "decrypt_keys": ()}) == {"clear_only": True}
