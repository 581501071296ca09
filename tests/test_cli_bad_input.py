"""Bad input is one line and exit 2, never a traceback (issue #15 item 6)."""

from __future__ import annotations

import gzip
import shutil

import pytest

from analyzer.cli import main
from tests.conftest import write_sample_log


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_generic_format_without_a_mapping_says_what_it_needs(tmp_path, capsys):
    source = tmp_path / "app.json"
    source.write_text('{"a": 1}\n')
    assert main(["ingest", str(source), "--format", "generic",
                 "--log", str(tmp_path / "a.jsonl")]) == 2
    assert "--mapping FILE" in _one_error_line(capsys)


def test_a_wrong_format_that_rejects_every_line_is_an_error_naming_it(tmp_path, capsys):
    source = tmp_path / "auth.txt"
    source.write_text("hello world\nfoo bar\n")
    log = tmp_path / "a.jsonl"
    assert main(["ingest", str(source), "--format", "cloudtrail", "--log", str(log)]) == 2
    line = _one_error_line(capsys)
    assert "no line could be read as cloudtrail" in line and "auth.txt:1" in line
    assert not log.exists()


def test_verify_reads_a_compressed_rotated_generation(tmp_path, key, key_file, capsys):
    log = write_sample_log(tmp_path / "audit.jsonl", key=key, n=5)
    gz = tmp_path / "audit.jsonl.1.gz"
    with log.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert main(["verify", str(gz), "--key-file", str(key_file)]) == 0
    assert "OK, 5 records" in capsys.readouterr().out
    gz.write_bytes(gz.read_bytes()[:60])  # truncated in transit
    assert main(["verify", str(gz), "--key-file", str(key_file)]) == 2
    assert "cannot read it as gzip" in _one_error_line(capsys)


def test_one_garbage_checkpoint_line_is_reported_not_fatal(tmp_path, key, key_file, capsys):
    log = write_sample_log(tmp_path / "audit.jsonl", key=key, n=5)
    checkpoints = log.with_name(log.name + ".checkpoints")
    assert checkpoints.exists()
    with checkpoints.open("ab") as out:
        out.write(b"garbage{\n")
    assert main(["verify", str(log), "--key-file", str(key_file)]) == 0
    captured = capsys.readouterr()
    assert "matches the checkpoint" in captured.out
    assert "not a checkpoint record; ignored" in captured.err


@pytest.mark.parametrize("content", [b'{"offset": -5, "inode": 1}', b'[1, 2]',
                                     b'{"offset": "12"}', b'{"offset": 3, "sequence": "x"}'])
def test_a_cursor_with_an_impossible_position_is_a_clear_error(tmp_path, content, capsys):
    from analyzer.sinks.shipper import cursor_path

    log = write_sample_log(tmp_path / "audit.jsonl", key=None, n=3)
    cursor_path(log, "sqlite").write_bytes(content)
    assert main(["ship", str(log), "--to", "sqlite", "--db", str(tmp_path / "a.db"),
                 "--once"]) == 2
    assert "unreadable shipping cursor" in _one_error_line(capsys)


@pytest.mark.parametrize("url", ["s3://bucket/audit.jsonl", "https://example.invalid/a.jsonl"])
def test_verify_of_a_url_says_it_reads_local_files(url, capsys):
    # expand_paths keeps URLs for the readers; verify once crashed on them (found by mypy)
    assert main(["verify", url]) == 2
    line = _one_error_line(capsys)
    assert url in line and "local files" in line
