from __future__ import annotations

import subprocess
import sys

import pytest

from analyzer.cli import main
from analyzer.integrity import verify_log


def test_log_ingest_verify_round_trip(tmp_path, key_file, capsys):
    log = tmp_path / "audit.jsonl"
    assert main(["log", "--action", "login", "--user", "alice", "--outcome", "success",
                 "--source-ip", "10.0.0.7", "--log", str(log), "--key-file", str(key_file)]) == 0
    csv = tmp_path / "old.csv"
    csv.write_text("timestamp,user,action,resource,outcome,source_ip\n"
                   "2025-12-01T10:00:00Z,bob,dataset.read,ds/1,success,10.0.0.8\n"
                   "garbage,bob,dataset.read,ds/1,success,10.0.0.8\n")
    assert main(["ingest", str(csv), "--log", str(log), "--key-file", str(key_file)]) == 0
    out = capsys.readouterr()
    assert "ingested 1 events" in out.out
    assert f"1 set aside in {tmp_path / 'audit.jsonl.rejected'}" in out.err
    assert "old.csv:3" in out.err
    assert (tmp_path / "audit.jsonl.rejected").read_text().count("old.csv:3") == 1
    assert main(["verify", str(log), "--key-file", str(key_file)]) == 0
    assert "OK, 2 records" in capsys.readouterr().out


def test_verify_names_the_broken_record_and_exits_1(tmp_path, key_file, capsys):
    log = tmp_path / "audit.jsonl"
    for user in ("a", "b", "c"):
        main(["log", "--action", "login", "--user", user, "--log", str(log),
              "--key-file", str(key_file)])
    log.write_text(log.read_text().replace('"name":"b"', '"name":"z"'))
    capsys.readouterr()
    assert main(["verify", str(log), "--key-file", str(key_file)]) == 1
    assert "BROKEN at line 2, sequence 2: changed" in capsys.readouterr().out


def test_verify_uses_the_checkpoint_to_catch_truncation(tmp_path, capsys):
    log = tmp_path / "audit.jsonl"
    for user in ("a", "b", "c"):
        main(["log", "--action", "login", "--user", user, "--log", str(log)])
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))
    capsys.readouterr()
    assert main(["verify", str(log)]) == 1
    assert "truncated" in capsys.readouterr().out
    assert main(["verify", str(log), "--no-checkpoint"]) == 0


@pytest.mark.parametrize("argv", [
    ["verify", "missing.jsonl"],
    ["ingest", "missing.csv", "--log", "x.jsonl"],
    ["log", "--action", "login", "--source-ip", "not-an-ip", "--log", "x.jsonl"],
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err


def test_key_file_readable_by_others_is_refused(tmp_path, capsys):
    key = tmp_path / "k"
    key.write_text("secret")
    key.chmod(0o644)
    assert main(["log", "--action", "a", "--log", str(tmp_path / "l.jsonl"),
                 "--key-file", str(key)]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_every_command_has_help_with_an_example():
    from analyzer.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert "example:" in command.format_help(), name


def test_console_script_runs_as_a_process(tmp_path, key_file):
    log = tmp_path / "audit.jsonl"
    cmd = [sys.executable, "-m", "analyzer.cli", "log", "--action", "login", "--user", "x",
           "--log", str(log), "--key-file", str(key_file)]
    assert subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    assert verify_log(log, key=key_file.read_bytes().strip()).ok


def test_verify_db_from_the_command_line(tmp_path, capsys):
    import sqlite3

    from analyzer.sinks.shipper import Shipper
    from analyzer.sinks.sqlite import SqliteSink
    from tests.conftest import write_sample_log

    log = write_sample_log(tmp_path / "audit.jsonl", key=None)
    db = tmp_path / "audit.db"
    sink = SqliteSink(db)
    Shipper(log, sink).run(follow=False)
    sink.close()
    url = f"sqlite:///{db}"
    assert main(["verify", "--db", url]) == 0
    assert "OK, 20 records" in capsys.readouterr().out
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM audit_events WHERE sequence = 7")
    assert main(["verify", "--db", url]) == 1
    assert "missing" in capsys.readouterr().out


def test_ship_to_sqlite_is_idempotent_and_verifiable(tmp_path, capsys):
    import sqlite3

    from tests.conftest import write_sample_log

    log = write_sample_log(tmp_path / "audit.jsonl", key=None)
    db = tmp_path / "audit.db"
    assert main(["ship", str(log), "--to", "sqlite", "--db", str(db), "--once"]) == 0
    (tmp_path / "audit.jsonl.ship-sqlite.cursor").unlink()  # forget the cursor: ship again
    assert main(["ship", str(log), "--to", "sqlite", "--db", str(db), "--once"]) == 0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 20
    assert main(["verify", "--db", f"sqlite:///{db}"]) == 0
    assert main(["ship", str(log), "--to", "postgres", "--dsn",
                 "postgresql://audit:secret@db/audit"]) == 2
    assert "password" in capsys.readouterr().err


def test_every_documented_command_is_there():
    from analyzer.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"demo", "log", "ingest", "verify", "export", "train", "score",
                                "watch",
                                "report", "ship", "evaluate", "retention", "query", "feedback",
                                "models"}


def test_ingest_takes_the_same_reader_options_as_score(tmp_path, capsys):
    import orjson

    auth = tmp_path / "auth.log"
    auth.write_text("Dec 10 06:55:46 bastion sshd[24200]: Failed password for root from "
                    "173.234.31.186 port 38926 ssh2\n")
    log = tmp_path / "audit.jsonl"
    assert main(["ingest", str(auth), "--format", "sshd", "--year", "2019", "--log",
                 str(log)]) == 0
    (record,) = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    assert record["@timestamp"].startswith("2019-12-10T06:55:46")
    assert record["source"]["ip"] == "173.234.31.186"
