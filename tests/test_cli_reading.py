"""How every reading command reports a read: one accounting line, rejected lines set aside
beside the output (never in an input folder), archives named, --since/--until on files."""

from __future__ import annotations

import gzip
import os
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from analyzer.cli import main
from analyzer.logger import AuditLogger
from analyzer.synth import SynthConfig, generate, write_audit_log


def _accounting(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines()
            if line.startswith(f"audit-analyzer {command}: ") and " records read" in line]


@pytest.fixture
def inbox(tmp_path) -> Path:
    """An input folder holding a log with two malformed lines, a gzip generation and a zip."""
    folder = tmp_path / "in"
    folder.mkdir()
    log = folder / "auth.jsonl"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with AuditLogger(log) as audit:
        for i in range(48):
            audit.log("login", user=f"u{i % 4}", outcome="success", source_ip="10.0.0.1",
                      timestamp=start + timedelta(hours=i))
    with log.open("ab") as out:
        out.write(b"{not json\n[1, 2]\n")
    return log


def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    return old


def test_score_prints_one_accounting_line_and_sets_rejected_beside_the_scores(
        tmp_path, inbox, capsys) -> None:
    scores = tmp_path / "out" / "scores.csv"
    assert main(["score", str(inbox), "--scores", str(scores), "--no-write-back"]) == 0
    lines = _accounting(capsys.readouterr().err, "score")
    rejected = scores.with_name("scores.csv.rejected")
    assert lines == [f"audit-analyzer score: 50 records read: 48 used, 2 set aside in "
                     f"{rejected}; first: {inbox}:49: bad JSON: unexpected character, "
                     "expected a string key"]
    assert sum(line.startswith(b"# ") for line in rejected.read_bytes().splitlines()) == 2
    assert b"{not json" in rejected.read_bytes()
    assert not list(inbox.parent.glob("*.rejected"))


def test_without_an_output_file_rejected_lines_go_to_the_current_folder(
        tmp_path, inbox, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    old = _cwd(work)
    try:
        assert main(["score", str(inbox.parent), "--no-write-back"]) == 0
    finally:
        os.chdir(old)
    lines = _accounting(capsys.readouterr().err, "score")
    assert len(lines) == 1 and "2 set aside in in.rejected" in lines[0]
    assert (work / "in.rejected").exists()
    assert not list(inbox.parent.glob("*.rejected"))


def test_rejected_option_and_an_unwritable_destination_warn_without_stopping(
        tmp_path, inbox, capsys) -> None:
    chosen = tmp_path / "bad-lines.txt"
    assert main(["train", str(inbox), "--model", str(tmp_path / "m.joblib"),
                 "--rejected", str(chosen)]) == 0
    assert len(_accounting(capsys.readouterr().err, "train")) == 1
    assert b"{not json" in chosen.read_bytes()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    nowhere = blocker / "x.rejected"  # its folder is a file: cannot be written
    assert main(["score", str(inbox), "--rejected", str(nowhere), "--no-write-back"]) == 0
    err = capsys.readouterr().err
    assert f"audit-analyzer score: {nowhere}: cannot write the rejected lines" in err
    lines = _accounting(err, "score")
    assert len(lines) == 1 and "50 records read: 48 used, 2 set aside;" in lines[0]


def test_scores_in_a_folder_that_cannot_be_written_stop_before_the_work(
        tmp_path, inbox, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "scores.csv"
    assert main(["score", str(inbox), "--scores", str(target), "--no-write-back"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"audit-analyzer score: error: {target}: cannot write "
                                        f"the scores: {blocker} is not a folder"]


def test_permission_denied_on_rejected_lines_warns_and_on_scores_stops(
        tmp_path, inbox, capsys, monkeypatch) -> None:
    # what a read-only /var/log does to a non-root analyst, simulated (root is never denied)
    import analyzer.sources

    locked = tmp_path / "locked"
    locked.mkdir()

    def denied(rejected, destination):
        raise PermissionError(13, "Permission denied", str(destination))

    real_access = os.access
    monkeypatch.setattr(analyzer.sources, "write_rejected", denied)
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked
                        else real_access(path, mode))
    target = tmp_path / "out" / "s.csv"
    assert main(["score", str(inbox), "--scores", str(target), "--no-write-back"]) == 0
    err = capsys.readouterr().err
    assert f"audit-analyzer score: {target}.rejected: cannot write the rejected lines: " \
           "Permission denied; they are not kept" in err
    assert target.exists() and len(_accounting(err, "score")) == 1
    assert main(["score", str(inbox), "--scores", str(locked / "s.csv")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"audit-analyzer score: error: {locked / 's.csv'}: permission denied (cannot write "
        f"the scores in {locked})")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permissions do not bind root")
def test_read_only_input_folder_and_scores_folder(tmp_path, inbox, capsys) -> None:
    inbox.parent.chmod(0o555)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        work = tmp_path / "work"
        work.mkdir()
        old = _cwd(work)
        try:
            assert main(["score", str(inbox), "--no-write-back"]) == 0
        finally:
            os.chdir(old)
        assert (work / "auth.jsonl.rejected").exists()
        capsys.readouterr()
        assert main(["score", str(inbox), "--scores", str(locked / "s.csv")]) == 2
        assert f"{locked / 's.csv'}: permission denied" in capsys.readouterr().err
    finally:
        inbox.parent.chmod(0o755)
        locked.chmod(0o755)


def test_ingest_report_and_evaluate_print_one_accounting_line(tmp_path, inbox, capsys) -> None:
    trail = tmp_path / "trail.jsonl"
    assert main(["ingest", str(inbox), "--log", str(trail)]) == 0
    lines = _accounting(capsys.readouterr().err, "ingest")
    assert lines == [f"audit-analyzer ingest: 50 records read: 48 used, 2 set aside in "
                     f"{trail}.rejected; first: {inbox}:49: bad JSON: unexpected character, "
                     "expected a string key"]
    html = tmp_path / "r" / "report.html"
    # exit 1: the malformed lines appended to the chained log break its chain
    assert main(["report", str(inbox), "--html", str(html)]) == 1
    lines = _accounting(capsys.readouterr().err, "report")
    assert len(lines) == 1 and f"2 set aside in {html}.rejected" in lines[0]
    model = tmp_path / "m.joblib"
    assert main(["train", str(inbox), "--model", str(model)]) == 0
    labels = tmp_path / "labels.csv"
    labels.write_text("entity_type,entity,window_start,scenario\n"
                      "user,u1,2026-01-01T05:00:00Z,x\n")
    capsys.readouterr()
    assert main(["evaluate", str(inbox), "--model", str(model), "--trust-unsigned-model",
                 "--labels", str(labels), "--rejected", str(tmp_path / "ev.rejected")]) == 0
    lines = _accounting(capsys.readouterr().err, "evaluate")
    assert len(lines) == 1 and f"in {tmp_path / 'ev.rejected'}" in lines[0]


def test_a_folder_with_gzip_and_zip_reads_the_gzip_and_names_the_zip(
        tmp_path, inbox, capsys) -> None:
    folder = inbox.parent
    (folder / "auth.jsonl.1.gz").write_bytes(gzip.compress(inbox.read_bytes()))
    with zipfile.ZipFile(folder / "old.zip", "w") as archive:
        archive.writestr("old.jsonl", inbox.read_bytes())
    assert main(["score", str(folder), "--scores", str(tmp_path / "s.csv"),
                 "--no-write-back"]) == 0
    err = capsys.readouterr().err
    lines = _accounting(err, "score")
    assert len(lines) == 1
    assert lines[0].startswith("audit-analyzer score: 101 records read: 96 used, 4 set aside")
    assert "1 skipped (unreadable archive: .zip x1)" in lines[0]
    assert f"audit-analyzer score: {folder / 'old.zip'}: a zip archive, not read; " \
           "extract it first" in err
    assert main(["score", str(folder / "old.zip"), "--no-write-back"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"audit-analyzer score: error: {folder / 'old.zip'}: a zip archive; extract it first")


def test_since_until_on_files_for_train_score_and_report(tmp_path, inbox, capsys) -> None:
    scores = tmp_path / "s.csv"
    assert main(["score", str(inbox), "--since", "2026-01-02", "--until", "2026-01-02T12:00Z",
                 "--scores", str(scores), "--no-write-back"]) == 0
    line = _accounting(capsys.readouterr().err, "score")[0]
    assert "12 used" in line and "36 skipped (outside --since/--until: before " \
                                 "2026-01-02T00:00:00Z x24, at or after " \
                                 "2026-01-02T12:00:00Z x12)" in line
    starts = pd.to_datetime(pd.read_csv(scores)["window_start"], utc=True)
    assert starts.min() >= pd.Timestamp("2026-01-02", tz="UTC")
    assert starts.max() < pd.Timestamp("2026-01-02T12:00", tz="UTC")
    assert main(["train", str(inbox), "--model", str(tmp_path / "m.joblib"),
                 "--until", "2026-01-02"]) == 0
    assert "24 used" in _accounting(capsys.readouterr().err, "train")[0]
    assert main(["report", str(inbox), "--since", "2026-01-02T20:00Z", "--text",
                 str(tmp_path / "r.txt")]) == 1  # the appended lines break the chain
    assert "4 used" in _accounting(capsys.readouterr().err, "report")[0]
    assert main(["score", str(inbox), "--user", "u1", "--no-write-back"]) == 2
    assert "only --since and --until" in capsys.readouterr().err


def test_query_since_reads_a_restored_file_and_accounts_for_the_folder(
        tmp_path, inbox, capsys) -> None:
    long_ago = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    os.utime(inbox, (long_ago, long_ago))  # restored from a backup: an old mtime
    with zipfile.ZipFile(inbox.parent / "old.zip", "w") as archive:
        archive.writestr("old.jsonl", "{}")
    assert main(["query", str(inbox.parent), "--since", "2026-01-02T20:00Z", "--count"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "4"
    assert _accounting(err, "query") == [
        "audit-analyzer query: 50 records read in 1 file(s): 4 matched, 2 malformed skipped "
        f"(first: {inbox}:49: bad JSON: unexpected character, expected a string key), "
        f"1 file(s) not read (archives: {inbox.parent / 'old.zip'}; extract them first)"]


def test_query_on_a_truncated_gzip_is_one_error_line(tmp_path, capsys) -> None:
    org = generate(SynthConfig(users=6, days=2, attack_days=1, seed=5))
    log = tmp_path / "a.jsonl"
    write_audit_log(org.events, log)
    cut = tmp_path / "a.jsonl.1.gz"
    cut.write_bytes(gzip.compress(log.read_bytes())[:-100])
    assert main(["query", str(cut), "--count"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"audit-analyzer query: error: {cut}: not a readable gzip file (truncated "
                   "or damaged): Compressed file ended before the end-of-stream marker was "
                   "reached"]


def test_verify_names_an_archive_it_leaves_out_of_a_folder(tmp_path, capsys) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    with AuditLogger(folder / "audit.jsonl") as audit:
        audit.log("login", user="alice", outcome="success")
    with zipfile.ZipFile(folder / "old.zip", "w") as archive:
        archive.writestr("old.jsonl", "{}")
    assert main(["verify", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "OK, 1 records" in out
    assert err.strip() == (f"audit-analyzer verify: {folder / 'old.zip'}: a zip archive, "
                           "not read; extract it first")
