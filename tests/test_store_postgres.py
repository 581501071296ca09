"""PostgreSQL destination and source against a real server started for the tests.

The fixture runs Debian's PostgreSQL binaries (``apt-get install postgresql``): ``initdb`` in
a temporary folder, a server on a free loopback port, stopped and removed afterwards. The
server refuses to run as root, so as root it runs as the ``postgres`` account (or
``nobody``). Skipped, with the reason, when the binaries or psycopg are missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from analyzer.events import AuditEvent
from analyzer.logger import AuditLogger
from analyzer.query import Filter, scan
from analyzer.sinks.shipper import Shipper
from analyzer.store import TABLE, query_db, read_db_events, verify_db

pytestmark = pytest.mark.integration

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is the optional [postgres] extra")


@pytest.fixture
def db(pg_url: str) -> Iterator[str]:
    yield pg_url
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f"DROP TABLE IF EXISTS {TABLE}")


USERS = ["alice", "bob", "x' OR '1'='1"]


def write_trail(path: Path, n: int = 30) -> None:
    with AuditLogger(path) as audit:
        for i in range(n):
            audit.log_event(AuditEvent(
                ["login", "permission.change", "dataset.read"][i % 3],
                timestamp=f"2025-03-0{1 + i % 4}T{i % 24:02d}:00:00.{i:06d}Z",
                user=USERS[i % 3], outcome="failure" if i % 4 == 0 else "success",
                source_ip=f"10.0.{i % 2}.{i}", resource=f"datasets/d{i % 3}",
                message=f"event {i} «ü»", bytes=i * 1000,
            ))


def ship(log: Path, url: str) -> int:
    from analyzer.sinks.postgres import PostgresSink

    sink = PostgresSink(url)
    try:
        return Shipper(log, sink).run(follow=False).delivered
    finally:
        sink.close()


def count(url: str) -> int:
    with psycopg.connect(url) as con:
        return con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]


def docs(batches) -> list[dict]:
    return sorted((orjson.loads(r) for b in batches
                   for r in b.table.column("record").to_pylist()),
                  key=lambda d: d["event"]["sequence"])


def test_ship_reship_query_verify_and_tamper(db: str, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_trail(log)
    assert ship(log, db) == 30
    for cursor in tmp_path.glob("*.cursor"):
        cursor.unlink()
    assert ship(log, db) == 30  # sent again in full...
    assert count(db) == 30  # ...and nothing duplicated

    for flt in [Filter(), Filter(users=("alice",)), Filter(actions=("permission.*",)),
                Filter(outcomes=("failure",), since="2025-03-02", until="2025-03-04"),
                Filter(source_ips=("10.0.1.0/24",)), Filter(text="EVENT 1")]:
        assert docs(query_db(db, flt)) == docs(scan(log, flt)), flt

    frame = read_db_events(db).frame
    assert len(frame) == 30 and str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["timestamp"].is_monotonic_increasing

    report = verify_db(db)
    assert report.ok and report.records == 30, report.summary()

    with psycopg.connect(db) as con:
        con.execute(f"UPDATE {TABLE} SET record = jsonb_set(record, '{{message}}', "
                    f"'\"nothing happened\"') WHERE sequence = 12")
    report = verify_db(db)
    assert not report.ok and report.sequence == 12 and report.problem == "changed"
    assert report.records == 11


def test_typed_column_change_is_caught(db: str, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_trail(log, 10)
    ship(log, db)
    with psycopg.connect(db) as con:
        con.execute(f"UPDATE {TABLE} SET source_ip = '192.0.2.1' WHERE sequence = 4")
    report = verify_db(db)
    assert not report.ok and report.sequence == 4 and "source_ip" in report.detail


def test_filter_values_are_bound_parameters(db: str, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_trail(log, 12)
    ship(log, db)
    got = docs(query_db(db, Filter(users=("x' OR '1'='1",))))
    assert len(got) == 4 and {d["user"]["name"] for d in got} == {"x' OR '1'='1"}
    assert docs(query_db(db, Filter(users=("nobody' OR '1'='1",)))) == []
    assert docs(query_db(db, Filter(actions=("'; DROP TABLE audit_events; --",)))) == []
    assert count(db) == 12


def test_read_only_connection_for_queries(db: str, tmp_path: Path) -> None:
    from analyzer.store import connect

    log = tmp_path / "audit.jsonl"
    write_trail(log, 3)
    ship(log, db)
    con = connect(db)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            con.execute(f"DELETE FROM {TABLE}")
    finally:
        con.close()
    assert count(db) == 3


def test_sql_over_postgres(db: str, tmp_path: Path) -> None:
    pytest.importorskip("duckdb", reason="DuckDB is the optional [sql] extra")
    from analyzer.errors import ConfigError
    from analyzer.sql import run_sql

    log = tmp_path / "audit.jsonl"
    write_trail(log, 12)
    ship(log, db)
    table = run_sql("SELECT user, count(*) AS n FROM events GROUP BY user ORDER BY user",
                    db=db)
    assert table.to_pylist() == [{"user": u, "n": 4} for u in sorted(USERS)]
    with pytest.raises(ConfigError, match="read-only SELECT"):
        run_sql("DROP TABLE events", db=db)
    assert count(db) == 12
