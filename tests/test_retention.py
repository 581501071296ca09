"""Retention: only shipped rotated files go, oldest first, each deletion on the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from analyzer.cli import main
from analyzer.errors import ConfigError
from analyzer.integrity import verify_series
from analyzer.logger import AuditLogger
from analyzer.retention import apply_retention, rotated_files
from analyzer.sinks.shipper import SendResult, Shipper

KEY = b"retention-test-key"


class Memory:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ids: list[str] = []

    def send(self, batch):
        self.ids += [r.event_id for r in batch]
        return SendResult()

    def close(self):
        pass


def write(path: Path, n: int, start: int = 0) -> None:
    """n records, rotating about every 5 records (each flushed on its own)."""
    with AuditLogger(path, key=KEY, durability="flush", rotate_bytes=2500) as audit:
        for i in range(start, start + n):
            audit.log("dataset.read", user=f"u{i}", resource=f"data/{i}", outcome="success")


def ship(path: Path, name: str) -> None:
    Shipper(path, Memory(name)).run()


def records(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def series(path: Path) -> list[Path]:
    return [*rotated_files(path), path]


@pytest.fixture
def rotated_log(tmp_path) -> Path:
    path = tmp_path / "audit.jsonl"
    write(path, 20)
    assert len(rotated_files(path)) >= 3
    return path


def test_unshipped_files_are_never_deleted(rotated_log):
    before = rotated_files(rotated_log)
    with AuditLogger(rotated_log, key=KEY) as audit:
        report = apply_retention(rotated_log, keep_files=0, destinations=["es"], audit=audit)
    assert report.deleted == () and rotated_files(rotated_log) == before
    assert all("not yet shipped to es" in why or "older file" in why for _, why in report.kept)
    assert b"audit.retention.delete" not in rotated_log.read_bytes()


def test_every_destination_must_have_shipped(rotated_log):
    before = rotated_files(rotated_log)
    ship(rotated_log, "es")
    with AuditLogger(rotated_log, key=KEY) as audit:
        report = apply_retention(rotated_log, keep_files=0, destinations=["es", "siem"],
                                 audit=audit)
    assert report.deleted == () and rotated_files(rotated_log) == before
    assert "siem" in report.kept[0][1] and "es" not in report.kept[0][1].split("to ")[1]


def test_shipped_files_are_deleted_on_the_record_and_the_rest_verifies(rotated_log):
    ship(rotated_log, "es")  # the cursor is now in the active file: all rotated are shipped
    write(rotated_log, 12, start=20)  # more rotations; the newest of them are not shipped
    files = rotated_files(rotated_log)
    with AuditLogger(rotated_log, key=KEY) as audit:
        report = apply_retention(rotated_log, keep_files=0, audit=audit)  # es found beside
    assert report.destinations == ("es",)
    gone = [d.name for d in report.deleted]
    left = rotated_files(rotated_log)
    assert gone and left and gone == [f.name for f in files[:len(gone)]]  # oldest first
    assert [f.name for f in left] == [f.name for f in files[len(gone):]]
    assert "not yet shipped to es" in report.kept[0][1]

    # Each deletion is an audit event at WARNING naming the file, its last sequence and
    # final hash; the last one names the hash the next file's rotation record carries.
    events = [r for path in series(rotated_log) for r in records(path)
              if r["event"]["action"] == "audit.retention.delete"]
    assert [e["analyzer"]["retention"]["file"] for e in events] == gone
    assert all(e["log"]["level"] == "warning" for e in events)
    marker = records(left[0])[0]
    assert marker["event"]["action"] == "audit.rotation"
    previous = marker["analyzer"]["chain"]["previous"]
    last = events[-1]["analyzer"]["retention"]
    assert (previous["file"], previous["sequence"], previous["hash"]) == (
        last["file"], last["last_sequence"], last["last_hash"])
    assert report.deleted[-1].last_hash == previous["hash"]

    result = verify_series(series(rotated_log), key=KEY)
    assert result.ok, result.summary()


def test_keep_days_and_keep_files_are_minimums(rotated_log):
    ship(rotated_log, "es")
    count = len(rotated_files(rotated_log))
    with AuditLogger(rotated_log, key=KEY) as audit:
        young = apply_retention(rotated_log, keep_days=30, audit=audit)
        assert young.deleted == () and "within 30 days" in young.kept[0][1]
        later = datetime.now(UTC) + timedelta(days=31)
        both = apply_retention(rotated_log, keep_days=30, keep_files=2, audit=audit,
                               now=later)
    assert len(both.deleted) == count - 2 and len(rotated_files(rotated_log)) == 2
    assert verify_series(series(rotated_log), key=KEY).ok


def test_dry_run_deletes_and_records_nothing(rotated_log):
    ship(rotated_log, "es")
    before, size = rotated_files(rotated_log), rotated_log.stat().st_size
    with AuditLogger(rotated_log, key=KEY) as audit:
        report = apply_retention(rotated_log, keep_files=0, audit=audit, dry_run=True)
    assert len(report.deleted) == len(before) and report.dry_run
    assert rotated_files(rotated_log) == before and rotated_log.stat().st_size == size


def test_a_limit_is_required_and_the_logger_must_write_this_log(rotated_log, tmp_path):
    with AuditLogger(rotated_log, key=KEY) as audit, \
            pytest.raises(ConfigError, match="keep_days or keep_files"):
        apply_retention(rotated_log, audit=audit)
    with AuditLogger(tmp_path / "other.jsonl") as other, \
            pytest.raises(ConfigError, match="record deletions"):
        apply_retention(rotated_log, keep_files=0, audit=other)


def test_cli_retention(rotated_log, tmp_path, capsys):
    key_file = tmp_path / "k"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    ship(rotated_log, "elasticsearch")
    n = len(rotated_files(rotated_log))
    code = main(["retention", str(rotated_log), "--keep-files", "1", "--destination",
                 "elasticsearch", "--key-file", str(key_file)])
    out = capsys.readouterr().out
    assert code == 0 and f"deleted {n - 1} rotated file(s)" in out
    assert len(rotated_files(rotated_log)) == 1
    assert verify_series(series(rotated_log), key=KEY).ok
    code = main(["retention", str(rotated_log), "--keep-files", "0", "--destination",
                 "siem", "--key-file", str(key_file)])
    assert code == 0 and "not yet shipped to siem" in capsys.readouterr().out


def test_the_logger_applies_its_retention_policy_after_each_rotation(tmp_path):
    import orjson

    from analyzer.integrity import verify_series
    from analyzer.logger import AuditLogger
    from analyzer.retention import RetentionPolicy

    log = tmp_path / "audit.jsonl"
    policy = RetentionPolicy(keep_files=2, destinations=())  # this log is not shipped
    with AuditLogger(log, durability="flush", rotate_bytes=3000, retention=policy) as audit:
        for i in range(120):
            audit.log("dataset.read", user=f"u{i % 7}", resource="d", message="x" * 40)
    rotated = sorted(tmp_path.glob("audit.jsonl.*T*"))
    assert len(rotated) == 2
    records = [orjson.loads(x) for f in [*rotated, log] for x in f.read_bytes().splitlines()]
    deletions = [r for r in records if r["event"]["action"] == "audit.retention.delete"]
    assert deletions and all(r["log"]["level"] == "warning" for r in deletions)
    assert verify_series([*rotated, log]).ok
