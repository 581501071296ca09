"""Tests for analyzer.store and the SQLite destination: ship, re-ship, query, verify."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from analyzer.cli import main
from analyzer.errors import ConfigError
from analyzer.events import AuditEvent
from analyzer.logger import AuditLogger
from analyzer.query import Filter, scan
from analyzer.sinks.shipper import Record, Shipper
from analyzer.sinks.sqlite import SqliteSink
from analyzer.store import TABLE, parse_url, query_db, read_db_events, verify_db

USERS = ["alice", "bob", "x' OR '1'='1", "carol"]


def write_trail(path: Path, n: int = 40) -> None:
    with AuditLogger(path) as audit:
        for i in range(n):
            audit.log_event(AuditEvent(
                ["login", "permission.change", "dataset.read", "model.download"][i % 4],
                timestamp=f"2025-03-0{1 + i % 5}T{i % 24:02d}:00:00Z",
                user=USERS[i % 3] if i % 7 else None,
                outcome="failure" if i % 5 == 0 else "success",
                source_ip=f"10.0.{i % 3}.{i}" if i % 6 else "2001:db8::1",
                resource=f"datasets/d{i % 4}" if i % 2 else None,
                message=f"event number {i}",
                kind="alert" if i == 13 else "event",
            ))


@pytest.fixture
def shipped(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "audit.jsonl"
    write_trail(log)
    db = tmp_path / "audit.db"
    sink = SqliteSink(db)
    stats = Shipper(log, sink).run(follow=False)
    sink.close()
    assert stats.delivered == 40
    return log, db



def rows(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]


def records(batches) -> list[dict]:
    return [orjson.loads(r) for b in batches for r in b.table.column("record").to_pylist()]


def test_reshipping_adds_no_duplicates(shipped, tmp_path: Path) -> None:
    log, db = shipped
    # a shipper that lost its cursor sends everything again
    for cursor in tmp_path.glob("*.cursor"):
        cursor.unlink()
    sink = SqliteSink(db)
    assert Shipper(log, sink).run(follow=False).delivered == 40
    sink.close()
    assert rows(db) == 40


def test_database_query_equals_file_query(shipped) -> None:
    log, db = shipped
    for flt in [Filter(), Filter(users=("alice",)), Filter(actions=("permission.*",)),
                Filter(outcomes=("failure",), since="2025-03-01T05:00", until="2025-03-01T20:00"),
                Filter(source_ips=("10.0.1.0/24",)), Filter(resources=("datasets/d1",)),
                Filter(kinds=("alert",)), Filter(text="NUMBER 1"),
                Filter(actions=("*.read", "log?n"), users=("bob", "alice"))]:
        from_file = sorted(records(scan(log, flt)), key=lambda d: d["event"]["sequence"])
        from_db = sorted(records(query_db(db, flt)), key=lambda d: d["event"]["sequence"])
        assert from_db == from_file, flt
        assert from_db, flt


def test_filter_values_are_bound_parameters(shipped) -> None:
    _, db = shipped
    injected = Filter(users=("x' OR '1'='1",))
    got = records(query_db(db, injected))
    assert got and {d["user"]["name"] for d in got} == {"x' OR '1'='1"}
    assert records(query_db(db, Filter(users=("nobody' OR '1'='1",)))) == []
    assert records(query_db(db, Filter(actions=("%",)))) == []
    assert records(query_db(db, Filter(actions=("_ogin",)))) == []
    assert rows(db) == 40


def test_verify_db_intact_and_tampering_caught(shipped) -> None:
    _, db = shipped
    report = verify_db(db)
    assert report.ok and report.records == 40 and report.head_sequence == 40
    with sqlite3.connect(db) as con:
        con.execute(f"UPDATE {TABLE} SET user_name = 'mallory' WHERE sequence = 9")
    report = verify_db(db)
    assert not report.ok and report.sequence == 9 and "user_name" in report.detail
    with sqlite3.connect(db) as con:
        record = con.execute(f"SELECT record FROM {TABLE} WHERE sequence = 9").fetchone()[0]
        doc = orjson.loads(record)
        con.execute(f"UPDATE {TABLE} SET user_name = ? WHERE sequence = 9",
                    (doc["user"]["name"],))
        doc["message"] = "nothing to see"
        con.execute(f"UPDATE {TABLE} SET record = ? WHERE sequence = 9",
                    (orjson.dumps(doc).decode(),))
    report = verify_db(db)
    assert not report.ok and report.sequence == 9 and report.problem == "changed"
    assert report.records == 8


def test_verify_db_catches_deleted_and_inserted_rows(shipped) -> None:
    _, db = shipped
    with sqlite3.connect(db) as con:
        row = con.execute(f"SELECT * FROM {TABLE} WHERE sequence = 20").fetchone()
        con.execute(f"DELETE FROM {TABLE} WHERE sequence = 20")
    report = verify_db(db)
    assert not report.ok and report.problem == "missing" and report.sequence == 21
    with sqlite3.connect(db) as con:
        con.execute(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * 12)})", row)
        forged = orjson.loads(row[-1])
        forged["event"]["id"] = "forged"
        con.execute(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * 12)})",
                    ("forged", *row[1:-1], orjson.dumps(forged).decode()))
    report = verify_db(db)
    assert not report.ok and report.problem == "inserted" and report.sequence == 20


def test_read_db_events_is_the_normalized_frame(shipped) -> None:
    log, db = shipped
    result = read_db_events(f"sqlite:///{db}", Filter(users=("alice", "bob")))
    assert result.skipped_alerts == 1
    # the rows the filter selected, each either used or a skipped alert
    assert result.records == len(result.frame) + 1 and not result.rejected
    frame = result.frame
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert set(frame["user"]) == {"alice", "bob"}
    assert frame["timestamp"].is_monotonic_increasing
    from analyzer.sources import read_events

    expected = read_events(log).frame
    expected = expected[expected["user"].isin(["alice", "bob"])]
    assert sorted(frame["message"]) == sorted(expected["message"])


def test_records_the_table_cannot_take_are_rejected(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "a.db")
    good = {"@timestamp": "2025-01-01T00:00:00Z", "event": {"id": "1", "action": "login"}}
    no_id = {"@timestamp": "2025-01-01T00:00:00Z", "event": {"action": "login"}}
    bad_time = {"@timestamp": "soon", "event": {"id": "2", "action": "login"}}
    result = sink.send([Record(orjson.dumps(d), d, 0) for d in (good, no_id, bad_time)])
    assert [i for i, _ in result.rejected] == [1, 2]
    assert "event.id" in result.rejected[0][1]
    assert sink.count() == 1
    sink.close()


def test_urls() -> None:
    assert parse_url("audit.db").target == "audit.db"
    assert parse_url("sqlite:////var/audit.db").target == "/var/audit.db"
    assert parse_url("postgresql://a:secret@db/x").display() == "postgresql://a:***@db/x"
    with pytest.raises(ConfigError):
        parse_url("mysql://db/x")


def test_cli_query_and_sql_over_the_database(shipped, capsys) -> None:
    _, db = shipped
    assert main(["query", "--db", str(db), "--user", "alice", "--count"]) == 0
    alice = int(capsys.readouterr().out)
    assert alice == len(records(query_db(db, Filter(users=("alice",)))))
    pytest.importorskip("duckdb")
    assert main(["query", "--db", str(db), "--format", "csv", "--sql",
                 "SELECT count(*) AS n FROM events WHERE user = 'alice'"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", str(alice)]
    assert main(["query", "--db", str(db), "--sql", "DELETE FROM events"]) == 2
    assert rows(db) == 40


@pytest.mark.parametrize("dsn", [
    "postgresql://audit:pw-s3cret@db/audit",
    "postgresql://audit@db/audit?password=pw-s3cret",
    "postgresql://audit@db/audit?sslmode=require&sslpassword=pw-s3cret",
    "host=db user=audit password='pw-s3cret' dbname=audit",
])
def test_a_dsn_password_is_redacted_in_every_form(dsn, tmp_path, capsys):
    """Issue 14 item 11: only the user:password@ form was redacted."""
    from analyzer.cli import main
    from analyzer.errors import ConfigError
    from analyzer.store import parse_url, redact_dsn

    assert "pw-s3cret" not in redact_dsn(dsn)
    if dsn.startswith("postgresql://"):
        assert "pw-s3cret" not in repr(parse_url(dsn)) + parse_url(dsn).display()
    else:  # the key=value form is not a URL: the error names it, redacted
        with pytest.raises(ConfigError, match=r"password=\*\*\*"):
            parse_url(dsn)
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    assert main(["ship", str(log), "--to", "postgres", "--dsn", dsn]) == 2
    err = capsys.readouterr().err
    assert "must not carry a password" in err and "pw-s3cret" not in err
