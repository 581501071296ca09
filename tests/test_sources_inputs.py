"""What read_events makes of its inputs: folders, globs, gzip, archives, periods, accounting."""

from __future__ import annotations

import gzip
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analyzer.errors import SourceError
from analyzer.logger import AuditLogger
from analyzer.sources import expand_paths, read_events
from analyzer.sources.generic import read as read_generic
from analyzer.sources.jsonl import read as read_jsonl


def _trail(path: Path, n: int = 12, *, alerts: int = 0, bad: int = 0) -> Path:
    """``n`` events one hour apart from 2026-01-01, then ``alerts`` alert records and
    ``bad`` malformed lines, and a blank line."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with AuditLogger(path) as audit:
        for i in range(n):
            audit.log("login", user=f"u{i % 3}", outcome="success",
                      timestamp=start + timedelta(hours=i))
    alert = (b'{"@timestamp":"2026-01-02T00:00:00.000000Z","event":{"action":"anomaly",'
             b'"kind":"alert","outcome":"unknown","id":"a1"},"user":{"name":"u0"}}\n')
    with path.open("ab") as out:
        out.write(alert * alerts + b"\n" + b"{broken\n" * bad)
    return path


def _adds_up(result) -> bool:
    return result.records == (len(result.frame) + len(result.rejected)
                              + result.skipped_alerts + result.n_skipped)


def test_jsonl_counts_every_record_once(tmp_path) -> None:
    result = read_jsonl(_trail(tmp_path / "a.jsonl", 12, alerts=2, bad=3))
    assert (result.records, len(result.frame), len(result.rejected),
            result.skipped_alerts) == (17, 12, 3, 2)
    assert _adds_up(result)
    assert result.accounting("x.rejected").startswith(
        "17 records read: 12 used, 3 set aside in x.rejected, 2 earlier alerts not scored")


def test_gzip_log_reads_like_the_plain_one(tmp_path) -> None:
    plain = _trail(tmp_path / "a.jsonl", 12, bad=1)
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    one, other = read_events(plain), read_events(packed)
    assert one.frame.equals(other.frame) and other.records == one.records == 13
    assert [r.line for r in other.rejected] == [r.line for r in one.rejected]


def test_truncated_or_fake_gzip_is_one_error_naming_the_file(tmp_path) -> None:
    plain = _trail(tmp_path / "a.jsonl", 40)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(plain.read_bytes())[:-30])
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(plain.read_bytes())
    with pytest.raises(SourceError, match=r"cut\.jsonl\.gz: not a readable gzip file"):
        read_events(cut, format="jsonl")
    with pytest.raises(SourceError, match=r"cut\.jsonl\.gz: not a readable gzip file"):
        read_events(cut)  # while detecting the format
    with pytest.raises(SourceError, match=r"fake\.jsonl\.gz: not a gzip file"):
        read_events(fake)


def test_archives_in_a_folder_are_counted_and_named_not_parsed(tmp_path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    _trail(logs / "a.jsonl", 12)
    with zipfile.ZipFile(logs / "old.zip", "w") as archive:
        archive.writestr("old.jsonl", (logs / "a.jsonl").read_bytes())
    result = read_events(logs)
    assert len(result.frame) == 12 and not result.rejected
    assert result.skipped == {"unreadable archive": {".zip": 1}}
    assert _adds_up(result)
    assert result.notes == (f"{logs / 'old.zip'}: a zip archive, not read; extract it first",)
    assert "1 skipped (unreadable archive: .zip x1)" in result.accounting()
    glob = read_events(str(logs / "*"))
    assert glob.skipped == result.skipped and len(glob.frame) == 12


def test_an_archive_named_directly_is_refused(tmp_path) -> None:
    named = tmp_path / "logs.zip"
    with zipfile.ZipFile(named, "w") as archive:
        archive.writestr("a.jsonl", "{}\n")
    with pytest.raises(SourceError, match=r"logs\.zip: a zip archive; extract it first"):
        read_events(named)
    renamed = tmp_path / "auth.log"  # a zip under a log's name is still not a log
    renamed.write_bytes(named.read_bytes())
    with pytest.raises(SourceError, match=r"auth\.log: a zip archive; extract it first"):
        read_events(renamed)
    only = tmp_path / "only"
    only.mkdir()
    (only / "x.tar.gz").write_bytes(b"")
    with pytest.raises(SourceError, match="only archives"):
        expand_paths(only)


def test_since_until_keep_records_by_their_own_time_and_count_the_rest(tmp_path) -> None:
    log = _trail(tmp_path / "a.jsonl", 12)
    since, until = datetime(2026, 1, 1, 3, tzinfo=UTC), datetime(2026, 1, 1, 8, tzinfo=UTC)
    result = read_events(log, since=since, until=until)
    hours = result.frame["timestamp"].dt.hour.tolist()
    assert hours == [3, 4, 5, 6, 7]
    assert result.skipped == {"outside --since/--until": {
        "before 2026-01-01T03:00:00Z": 3, "at or after 2026-01-01T08:00:00Z": 4}}
    assert _adds_up(result)


def test_generic_reader_counts_matched_and_unmatched_lines(tmp_path) -> None:
    log = tmp_path / "app.log"
    log.write_text("2024-01-02T03:04:05 alice export ok\n\ngarbage\n"
                   "2024-01-02T03:04:06 bob export denied\nnot-a-time carol x ok\n")
    spec = {"pattern": r"^(?P<ts>\S+) (?P<who>\S+) (?P<verb>\S+) (?P<ok>\w+)$",
            "fields": {"timestamp": "ts", "user": "who", "action": "verb", "outcome": "ok"}}
    result = read_generic(log, mapping=spec)
    assert (result.records, len(result.frame), len(result.rejected)) == (4, 2, 2)
    assert _adds_up(result)
