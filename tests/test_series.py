"""analyzer.series: one place names every file of a log's series, and readers skip exactly the
side files the tools write."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from analyzer import series
from analyzer.files import atomic_write
from analyzer.logger import AuditLogger
from analyzer.sinks.shipper import SendResult, Shipper
from analyzer.sources import expand_paths


def test_the_names_on_disk_are_the_documented_ones(tmp_path) -> None:
    log = tmp_path / "audit.jsonl"
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert series.rotated_name(log, when).name == "audit.jsonl.20260102T030405678901Z"
    assert series.lock_path(log).name == "audit.jsonl.lock"
    assert series.checkpoint_path(log).name == "audit.jsonl.checkpoints"
    assert series.torn_path(log, when).name == "audit.jsonl.torn-20260102T030405678901Z"
    assert series.cursor_path(log, "es prod/1").name == "audit.jsonl.ship-es_prod_1.cursor"
    assert series.cursor_lock_path(series.cursor_path(log, "es")).name == \
        "audit.jsonl.ship-es.cursor.lock"
    assert series.dead_letter_path(log, "es").name == "audit.jsonl.ship-es.dead.jsonl"
    assert series.watch_state_path(log).name == "audit.jsonl.watch-state"
    assert series.rejected_path(tmp_path / "auth.log").name == "auth.log.rejected"
    assert series.split_rotated("audit.jsonl.20260102T030405678901Z.gz") == (
        "audit.jsonl", "20260102T030405678901Z")
    assert series.rotation_time("20260102T030405678901Z") == when
    assert series.split_rotated("audit.jsonl.checkpoints") is None


def test_every_side_file_is_one_and_no_generation_of_the_log_is(tmp_path) -> None:
    log = tmp_path / "audit.jsonl"
    when = datetime(2026, 1, 2, tzinfo=UTC)
    side = [series.lock_path(log), series.checkpoint_path(log), series.torn_path(log, when),
            series.cursor_path(log, "es"), series.cursor_lock_path(series.cursor_path(log, "es")),
            series.dead_letter_path(log, "es"), series.watch_state_path(log),
            series.rejected_path(log)]
    assert all(series.is_side_file(p) for p in side), [p.name for p in side
                                                       if not series.is_side_file(p)]
    generations = [log, series.rotated_name(log, when), tmp_path / "audit.jsonl.1",
                   tmp_path / "audit.jsonl.2.gz"]
    assert not [p for p in generations if series.is_side_file(p)]


def test_what_the_tools_write_beside_a_log_is_skipped_and_the_series_is_kept(tmp_path) -> None:
    """The lists of side files once disagreed; here the tools write their files for real."""
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, durability="flush", rotate_bytes=2000, checkpoint_every=5) as audit:
        for i in range(40):
            audit.log("dataset.read", user=f"u{i}", resource="d", message="x" * 30)

    class Refusing:
        name = "siem"

        def send(self, batch):
            return SendResult(rejected=((0, "no"),))

        def close(self):
            pass

    Shipper(log, Refusing()).run()  # a cursor, its lock and a dead letter
    atomic_write(series.watch_state_path(log), b"{}")
    on_disk = sorted(p for p in tmp_path.iterdir())
    kept = series.rotated_series(log)
    assert len(kept) >= 3 and kept[-1] == log
    assert sorted(p for p in on_disk if not series.is_side_file(p)) == sorted(kept)
    assert sorted(p for p in expand_paths(str(tmp_path / "audit.jsonl*"))) == sorted(kept)
    assert series.shipped_destinations(log) == ("siem",)


def test_rotated_series_is_in_chain_order_whatever_the_name(tmp_path) -> None:
    log = tmp_path / "audit[1].jsonl"  # a glob character in the name
    with AuditLogger(log, durability="flush", rotate_bytes=1500) as audit:
        for i in range(30):
            audit.log("login", user=f"u{i}", message="y" * 30)
    files = series.rotated_series(log)
    assert len(files) >= 3 and files[-1] == log
    sequences = [orjson.loads(f.read_bytes().splitlines()[0])["event"]["sequence"]
                 for f in files]
    assert sequences == sorted(sequences)
    assert series.rotated_files(log) == files[:-1]


@pytest.mark.parametrize(("name", "destination"), [
    ("a*b.jsonl", "a_b"), ("a?b.jsonl", "a_b"), ("a[b].jsonl", "a_b_")])
def test_a_glob_character_in_the_name_matches_only_that_log(tmp_path, name,
                                                          destination) -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    for log in (tmp_path / name, tmp_path / "aXb.jsonl", tmp_path / "ab.jsonl"):
        log.write_text("")
        series.rotated_name(log, when).write_text("")
        series.cursor_path(log, log.stem).write_text("{}")
    assert series.rotated_files(tmp_path / name) == [series.rotated_name(tmp_path / name, when)]
    assert series.shipped_destinations(tmp_path / name) == (destination,)
