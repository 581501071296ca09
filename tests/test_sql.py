"""Tests for analyzer.sql: read-only DuckDB SQL over the trail."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from unittest.mock import patch

import pytest

from analyzer.cli import main
from analyzer.errors import ConfigError
from analyzer.logger import AuditLogger
from analyzer.query import Filter

pytest.importorskip("duckdb", reason="DuckDB is the optional [sql] extra")

from analyzer.sql import check_read_only, run_sql

ROWS = [("alice", "login", "success"), ("bob", "login", "failure"),
        ("alice", "dataset.read", "failure"), ("carol", "permission.change", "failure"),
        ("bob", "login", "failure"), ("alice", "model.download", "success")]


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with AuditLogger(path, service="svc-a") as audit:
        for user, action, outcome in ROWS:
            audit.log(action, user=user, outcome=outcome, source_ip="10.0.0.7")
    return path



def test_group_by_matches_a_python_count(trail: Path) -> None:
    table = run_sql("SELECT user, count(*) AS n FROM events WHERE outcome = 'failure' "
                    "GROUP BY user ORDER BY n DESC, user", trail)
    expected = Counter(u for u, _, o in ROWS if o == "failure")
    assert table.to_pylist() == [{"user": u, "n": n}
                                 for u, n in sorted(expected.items(), key=lambda x: (-x[1], x[0]))]


def test_the_full_record_is_queryable_as_json(trail: Path) -> None:
    table = run_sql("SELECT DISTINCT record->>'$.service.name' AS service, "
                    "typeof(record) AS t FROM events", trail)
    assert table.to_pylist() == [{"service": "svc-a", "t": "JSON"}]


def test_filters_narrow_the_view(trail: Path) -> None:
    table = run_sql("SELECT count(*) AS n FROM events", trail, Filter(users=("alice",)))
    assert table.column("n").to_pylist() == [3]


def test_a_statement_reading_events_twice_still_works(trail: Path) -> None:
    table = run_sql("SELECT count(*) AS n FROM events a JOIN events b USING (user)", trail)
    users = Counter(u for u, _, _ in ROWS)
    assert table.column("n").to_pylist() == [sum(n * n for n in users.values())]


@pytest.mark.parametrize("statement", [
    "DROP TABLE events",
    "DROP VIEW events",
    "INSERT INTO events SELECT * FROM events",
    "DELETE FROM events",
    "UPDATE events SET user = 'x'",
    "CREATE TABLE t AS SELECT * FROM events",
    "SELECT 1; DROP VIEW events",
    "COPY events TO 'out.csv'",
    "ATTACH 'other.db'",
    "SET enable_external_access = true",
    "PRAGMA version",
])
def test_anything_but_one_select_is_refused(trail: Path, statement: str) -> None:
    before = trail.read_bytes()
    with pytest.raises(ConfigError, match="read-only SELECT"):
        run_sql(statement, trail)
    assert trail.read_bytes() == before


def test_a_select_cannot_read_or_write_files(trail: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(ConfigError, match="Permission"):
        run_sql(f"SELECT * FROM read_csv('{secret}')", trail)
    with pytest.raises(ConfigError, match="Permission"):
        run_sql(f"SELECT * FROM read_json('{trail}')", trail)


def test_a_runaway_statement_is_stopped_by_the_time_limit(trail: Path, capsys) -> None:
    # a cross join of the view with a huge range: would run for hours
    statement = "SELECT count(*) FROM events, range(1000000000000) r"
    with pytest.raises(ConfigError, match=r"stopped after 0.5 s \(--sql-timeout\)"):
        run_sql(statement, trail, timeout=0.5)
    assert main(["query", str(trail), "--sql", statement, "--sql-timeout", "0.5"]) == 2
    assert "stopped after 0.5 s" in capsys.readouterr().err


def test_a_statement_that_wants_too_much_memory_is_stopped(trail: Path) -> None:
    statement = "SELECT list(r) FROM events, range(50000000) r"
    with pytest.raises(ConfigError, match=r"needs more than 64MB \(--sql-memory-limit\)"):
        run_sql(statement, trail, memory_limit="64MB")


def test_the_sandbox_has_no_directory_to_spill_to_or_read(trail: Path) -> None:
    table = run_sql("SELECT current_setting('temp_directory') AS t, "
                    "current_setting('allowed_directories') AS a, "
                    "current_setting('memory_limit') AS m FROM events LIMIT 1", trail,
                    memory_limit="256MB")
    (row,) = table.to_pylist()
    assert row["t"] == "" and list(row["a"]) == []
    assert row["m"].startswith(("244", "256"))  # DuckDB reports MiB
    with pytest.raises(ConfigError, match="--sql-memory-limit 'lots'"):
        run_sql("SELECT 1", trail, memory_limit="lots")


def test_check_read_only_accepts_selects() -> None:
    for statement in ("SELECT 1", "WITH x AS (SELECT 1) SELECT * FROM x",
                      "FROM events", "SELECT 1 -- a comment"):
        check_read_only(statement)


def test_missing_duckdb_says_how_to_install(trail: Path) -> None:
    with patch.dict(sys.modules, {"duckdb": None}), \
            pytest.raises(ConfigError, match=r"pip install 'audit-analyzer\[sql\]'"):
        run_sql("SELECT 1", trail)


def test_cli_sql_csv_json_and_refusal(trail: Path, capsys) -> None:
    sql = "SELECT action, count(*) AS n FROM events GROUP BY action ORDER BY action"
    assert main(["query", str(trail), "--sql", sql, "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "action,n"
    assert "login,3" in out
    assert main(["query", str(trail), "--sql", sql, "--format", "json", "--user", "bob"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == \
        [{"action": "login", "n": 2}]
    assert main(["query", str(trail), "--sql", "DROP TABLE events"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only SELECT" in err[0]
