"""export --parquet: the verified, day-partitioned analytics copy, and reading it back."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analyzer.cli import main
from analyzer.cli._common import Progress
from analyzer.errors import SourceError
from analyzer.events import AuditEvent, Kind, Level, Outcome
from analyzer.integrity import key_id, verify_log
from analyzer.logger import AuditLogger
from analyzer.query import RESULT_SCHEMA, Filter, scan
from analyzer.sources import detect_format, read_events
from analyzer.synth import SynthConfig, generate, write_audit_log

SPLIT = "2025-03-08T00:00:00Z"


@pytest.fixture(scope="module")
def org():
    return generate(SynthConfig(users=12, days=8, attack_days=2, seed=11))


@pytest.fixture
def trail(tmp_path, org, key):
    log = tmp_path / "audit.jsonl"
    write_audit_log(org.events, log, key=key)
    return log


def _export(log: Path, out: Path, *extra: str) -> int:
    return main(["export", str(log), "--parquet", str(out), *extra])


def _days(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("dt="))


def _train_and_score(tmp_path: Path, name: str, history: Path, today: Path,
                     *period: str) -> bytes:
    model = tmp_path / f"{name}.joblib"
    assert main(["train", str(history), *period[:2], "--model", str(model)]) == 0
    scores = tmp_path / f"{name}.csv"
    assert main(["score", str(today), *period[2:], "--model", str(model), "--scores",
                 str(scores), "--no-write-back"]) == 0
    assert len(pd.read_csv(scores)) > 50
    return scores.read_bytes()


def test_train_and_score_from_exports_give_the_same_scores_as_from_the_logs(
        tmp_path, org, key, key_file, capsys):
    history, today = tmp_path / "history.jsonl", tmp_path / "today.jsonl"
    write_audit_log(org.train_events, history, key=key)
    write_audit_log(org.test_events, today, key=key)
    for log in (history, today):
        assert _export(log, tmp_path / f"{log.stem}-pq", "--key-file", str(key_file)) == 0
    assert "chain intact" in capsys.readouterr().out
    want = _train_and_score(tmp_path, "jsonl", history, today)
    assert _train_and_score(tmp_path, "parquet", tmp_path / "history-pq",
                            tmp_path / "today-pq") == want
    # self-fit (no model) on a copy read through a file:// URL: the same again
    for name, source in (("jsonl", str(today)), ("url", (tmp_path / "today-pq").as_uri())):
        assert main(["score", source, "--scores", str(tmp_path / f"self-{name}.csv"),
                     "--no-write-back"]) in (0, 1)
    assert (tmp_path / "self-jsonl.csv").read_bytes() == (tmp_path / "self-url.csv").read_bytes()


def test_one_export_split_by_since_until_scores_like_the_log(tmp_path, trail, key_file):
    # a JSONL read lists the categories of the whole file (in order of first appearance),
    # a pruned Parquet read those of the days it opened: the features must not care
    out = tmp_path / "export"
    assert _export(trail, out, "--key-file", str(key_file)) == 0
    want = _train_and_score(tmp_path, "jsonl", trail, trail, "--until", SPLIT, "--since",
                            SPLIT)
    assert _train_and_score(tmp_path, "parquet", out, out, "--until", SPLIT, "--since",
                            SPLIT) == want


def test_the_manifest_says_what_the_export_covers(tmp_path, trail, key, key_file, org):
    out = tmp_path / "export"
    assert _export(trail, out, "--key-file", str(key_file)) == 0
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    report = verify_log(trail, key=key)
    n = len(org.events)
    assert manifest["verified"] is True
    assert manifest["records"] == report.records == n
    assert (manifest["head_sequence"], manifest["head_hash"]) == (report.head_sequence,
                                                                  report.head_hash)
    assert (manifest["first_sequence"], manifest["last_sequence"]) == (1, n)
    assert manifest["key_id"] == key_id(key) and manifest["encryption"] == "none"
    assert manifest["sources"] == [str(trail)]
    assert [c["name"] for c in manifest["schema"]] == RESULT_SCHEMA.names
    days = sorted(org.events["timestamp"].dt.strftime("%Y-%m-%d").unique())
    assert _days(out) == [f"dt={d}" for d in days] and list(manifest["partitions"]) == days
    per_day = org.events["timestamp"].dt.strftime("%Y-%m-%d").value_counts()
    assert {d: e["rows"] for d, e in manifest["partitions"].items()} == per_day.to_dict()
    # each day is one file, sorted by time, in row groups of the documented size at most
    part = pq.ParquetFile(out / f"dt={days[0]}" / "part-0.parquet")
    assert part.metadata.row_group(0).num_rows <= manifest["row_group_rows"]
    stamps = part.read(columns=["timestamp"]).column("timestamp").to_pandas()
    assert stamps.is_monotonic_increasing
    assert oct((out / "_manifest.json").stat().st_mode & 0o777) == "0o644"
    # nothing of the staging folder is left beside the export
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_tampered_log_is_refused_unless_forced(tmp_path, trail, key_file, capsys):
    lines = trail.read_bytes().splitlines(keepends=True)
    lines[10] = lines[10].replace(b'"outcome":"failure"', b'"outcome":"success"') \
        if b'"outcome":"failure"' in lines[10] else lines[10].replace(b'"success"', b'"failure"')
    trail.write_bytes(b"".join(lines))
    out = tmp_path / "export"
    assert _export(trail, out, "--key-file", str(key_file)) == 1
    captured = capsys.readouterr()
    assert "BROKEN at line 11" in captured.out and "--force" in captured.err
    assert not out.exists() or _days(out) == []
    assert _export(trail, out, "--key-file", str(key_file), "--force") == 0
    assert "does not verify (--force)" in capsys.readouterr().err
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert manifest["verified"] is False and "BROKEN" in manifest["verify_summary"]
    assert all(not p["verified"] for p in manifest["partitions"].values())


def test_duckdb_reads_the_folder_as_a_user_would(tmp_path, trail, key_file, org):
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "export"
    assert _export(trail, out, "--key-file", str(key_file)) == 0
    con = duckdb.connect()
    glob = f"{out}/**/*.parquet"
    rows = con.execute(f"SELECT dt, count(*) FROM read_parquet('{glob}', "
                       "hive_partitioning=1) GROUP BY dt ORDER BY dt").fetchall()
    per_day = org.events["timestamp"].dt.strftime("%Y-%m-%d").value_counts().sort_index()
    assert [(str(d), n) for d, n in rows] == list(per_day.items())
    # the record column is the line as written: its chain link still checks out
    first = con.execute(f"SELECT record, hash FROM read_parquet('{glob}', "
                        "hive_partitioning=1) WHERE sequence = 1").fetchone()
    assert orjson.loads(first[0]) == orjson.loads(trail.read_bytes().splitlines()[0])
    assert orjson.loads(first[0])["event"]["hash"] == first[1]


def test_since_opens_only_the_day_partitions_it_needs(tmp_path, trail, key_file, capsys):
    out = tmp_path / "export"
    assert _export(trail, out, "--key-file", str(key_file)) == 0
    capsys.readouterr()
    days = _days(out)
    for name in days[:3]:  # the first days are damaged: a read that opened them would fail
        (out / name / "part-0.parquet").write_bytes(b"not parquet")
    since = datetime.fromisoformat(days[3][3:]).replace(tzinfo=UTC) + timedelta(hours=6)
    result = read_events(out, since=since)
    assert len(result.frame) and result.frame["timestamp"].min() >= since
    assert f"{len(days) - 3:,} of {len(days):,} day partitions read" in result.notes[0]
    assert result.records == len(result.frame) + result.n_skipped  # the 4th day's morning
    with pytest.raises(SourceError):
        read_events(out)
    # query and --sql prune the same way
    assert main(["query", str(out), "--since", since.isoformat(), "--count"]) == 0
    assert int(capsys.readouterr().out) == len(result.frame)
    pytest.importorskip("duckdb")
    assert main(["query", str(out), "--since", since.isoformat(), "--format", "csv",
                 "--sql", "SELECT count(*) AS n FROM events"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", str(len(result.frame))]


def test_query_over_the_export_matches_the_log(tmp_path, trail, key_file):
    out = tmp_path / "export"
    assert _export(trail, out, "--key-file", str(key_file)) == 0
    flt = Filter(outcomes=("failure",), actions=("login*",))
    want = [b.table for b in scan(trail, flt)]
    got = [b.table for b in scan(out.resolve().as_uri(), flt)]
    as_list = [r for t in want for r in t.to_pylist()]
    assert as_list and [r for t in got for r in t.to_pylist()] == as_list


def test_reexport_replaces_the_days_it_covers_and_keeps_the_others(tmp_path):
    log, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with AuditLogger(log) as audit:
        for i in range(30):  # 2026-01-01 .. 2026-01-03
            audit.log("login", user="alice", outcome="success", timestamp=start + timedelta(
                hours=2.4 * i))
    out = tmp_path / "export"
    assert _export(log, out) == 0
    assert _days(out) == ["dt=2026-01-01", "dt=2026-01-02", "dt=2026-01-03"]
    with AuditLogger(log) as audit:  # the trail grows into the third and fourth days
        for i in range(10):
            audit.log("logout", user="bob", outcome="success",
                      timestamp=start + timedelta(days=2, hours=12 + 2.4 * i))
    assert _export(log, out) == 0
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert manifest["records"] == 40 and manifest["head_sequence"] == 40
    assert _days(out) == ["dt=2026-01-01", "dt=2026-01-02", "dt=2026-01-03", "dt=2026-01-04"]
    # another trail covering later days: the earlier days stay, with their own entries
    with AuditLogger(other) as audit:
        audit.log("login", user="carol", outcome="success", timestamp=start + timedelta(days=9))
    assert _export(other, out) == 0
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert manifest["written"] == ["2026-01-10"] and len(manifest["partitions"]) == 5
    assert len(read_events(out).frame) == 41
    # a folder that is not an export is never written into
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_bytes(b"...")
    assert _export(log, stranger) == 2


def test_the_reader_counts_alerts_and_detects_files(tmp_path):
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log) as audit:
        audit.log("login", user="alice", outcome="success")
        audit.log_event(AuditEvent("anomaly", timestamp=datetime.now(UTC), kind=Kind.ALERT,
                                   level=Level.CRITICAL,
                                   user="alice", outcome=Outcome.UNKNOWN))
        audit.log("login", user="bob", outcome="failure")
    out = tmp_path / "export"
    assert _export(log, out) == 0
    result = read_events(out)
    assert list(result.frame["user"]) == ["alice", "bob"] and result.skipped_alerts == 1
    assert result.records == len(result.frame) + result.skipped_alerts + result.n_skipped == 3
    part = next(out.glob("dt=*/part-0.parquet"))
    assert detect_format(out) == detect_format(part) == "parquet"
    assert len(read_events(part, include_alerts=True).frame) == 3


def test_an_encrypted_trail_needs_its_key_or_clear_only(tmp_path, capsys):
    pytest.importorskip("cryptography")
    enc = tmp_path / "enc.key"
    enc.write_text("ab" * 32)
    enc.chmod(0o600)
    log = tmp_path / "audit.jsonl"
    with AuditLogger(log, encryption_key=bytes.fromhex("ab" * 32)) as audit:
        audit.log("login", user="alice", outcome="success", source_ip="10.0.0.1")
    out = tmp_path / "export"
    assert _export(log, out) == 2
    assert "--clear-only" in capsys.readouterr().err
    assert _export(log, out, "--clear-only") == 0
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert manifest["encryption"] == "sealed"
    assert b"alice" not in b"".join(p.read_bytes() for p in out.glob("dt=*/*.parquet"))
    with pytest.raises(Exception, match="--clear-only"):
        read_events(out)
    assert list(read_events(out, clear_only=True).frame["user"]) == [""]
    clear = tmp_path / "clear"
    assert _export(log, clear, "--encryption-key-file", str(enc)) == 0
    assert "DECRYPTED" in capsys.readouterr().err
    assert {oct(p.stat().st_mode & 0o777) for p in [*clear.glob("dt=*/*.parquet"),
                                                    clear / "_manifest.json"]} == {"0o600"}
    assert list(read_events(clear).frame["user"]) == ["alice"]


def test_progress_shows_counts_rate_and_time_left(capsys):
    assert Progress.describe("exporting", 250, 1000, elapsed=5.0) == \
        "exporting: 250 of 1,000 events (50/s, ETA 0:15)"
    assert Progress.describe("scoring", 30, unit="windows", share=0.5, elapsed=90.0) == \
        "scoring: 30 windows (0.3/s, ETA 1:30)"
    assert Progress.describe("reading", 0) == "reading: 0 events"
    now = [0.0]
    progress = Progress(enabled=True, clock=lambda: now[0])
    progress.count("exporting", 10, 100)
    now[0] = 0.05
    progress.count("exporting", 20, 100)  # too soon after the last: not redrawn
    now[0] = 2.0
    progress.count("exporting", 50, 100)
    err = capsys.readouterr().err
    assert "20 of" not in err and "50 of 100 events (25/s, ETA 0:02)" in err
    Progress(enabled=False).count("exporting", 1, 2)
    assert capsys.readouterr().err == ""


def test_export_leaves_a_copy_readable_by_pandas_with_its_days(tmp_path, trail, key_file):
    out = tmp_path / "export"
    assert _export(trail, out, "--key-file", str(key_file)) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == len(read_events(trail, include_alerts=True).frame)
    assert set(frame["dt"].astype(str)) == {d[3:] for d in _days(out)}
    assert os.path.exists(out / "_manifest.json")
