"""``report --db``: a trail stored in SQLite or PostgreSQL is counted page by page through
the query's cursor, and its report is the report of the rows read whole, byte for byte
(issue 17, item 1), and the report of the log they were shipped from but for the source it
names, in each mode: scores given, alerts recorded among the rows, a model, and the rows
scored against themselves.

Every read of one report (the count, the scoring, the alerts' evidence) and the verification
of the chain go through one snapshot of the database: rows shipped while the report runs are
in none of them. PostgreSQL runs from Debian's binaries (``tests/services.py``); without them
or psycopg, its cases skip saying why.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import orjson
import pandas as pd
import pytest

from analyzer.model import AuditModel
from analyzer.report import read_scores
from analyzer.report.gather import Gathering
from analyzer.sinks.shipper import Shipper
from analyzer.sources import read_events
from analyzer.store import TABLE, row_from_record
from tests.test_cli_chunks import run_printed
from tests.test_report_chunks import assert_same_in_chunks, reports, trails  # noqa: F401

ENGINES = ["sqlite", "postgresql"]
#: the chunk sizes of each engine: small and odd, so that minutes, windows and groups fall
#: across pages (PostgreSQL's server costs more per case: one size)
SIZES = {"sqlite": (997, 4096), "postgresql": (997,)}


def _ship(log: Path, engine: str, name: str, folder: Path, server: str | None) -> str:
    """``log`` shipped into a new database ``name`` of ``engine``; its URL."""
    if engine == "sqlite":
        from analyzer.sinks.sqlite import SqliteSink

        db = folder / f"{name}.db"
        sink: object = SqliteSink(db)
        url = f"sqlite:///{db}"
    else:
        import psycopg

        from analyzer.sinks.postgres import PostgresSink

        assert server is not None
        with psycopg.connect(server.rsplit("/", 1)[0] + "/postgres", autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        url = server.rsplit("/", 1)[0] + f"/{name}"
        sink = PostgresSink(url)
    # a cursor of its own: the same log goes to several databases
    Shipper(log, sink, cursor_file=folder / f"{name}.cursor").run(  # type: ignore[arg-type]
        follow=False)
    sink.close()  # type: ignore[attr-defined]
    return url


@pytest.fixture(scope="module", params=ENGINES)
def databases(request: pytest.FixtureRequest, trails,  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The organisation's trail shipped plain, and with its alerts written back, into
    databases of each engine."""
    engine = request.param
    server = request.getfixturevalue("pg_url") if engine == "postgresql" else None
    folder = tmp_path_factory.mktemp(f"db-{engine}")
    return {"engine": engine,
            **{name: _ship(trails[name], engine, name, folder, server)
               for name in ("plain", "recorded")}}


# -- byte for byte ----------------------------------------------------------------------

def assert_the_logs_report(databases, trails, name: str, **options) -> str:  # noqa: F811
    """The report of the database ``name`` in chunks is its whole read's, and that is the
    report of the log it was shipped from, but for the source it names; returns its text."""
    url = databases[name]
    text = assert_same_in_chunks(None, SIZES[databases["engine"]], db=url, **options)
    html = reports(None, None, db=url, **options)[1]
    log = str(trails[name])
    assert (text.replace(url, log), html.replace(url, log)) == \
        reports(trails[name], None, **options)
    return text


def test_scores_given_for_a_database_in_chunks(databases, trails):  # noqa: F811
    text = assert_the_logs_report(databases, trails, "plain",
                                  scores=read_scores(trails["scores"]))
    assert "scored windows" in text and "Evidence records" in text and "Verified" in text


def test_alerts_recorded_among_the_rows_in_chunks(databases, trails):  # noqa: F811
    text = assert_the_logs_report(databases, trails, "recorded")
    assert "recorded in the audit trail" in text and "Evidence records" in text


def test_model_given_for_a_database_in_chunks(databases, trails):  # noqa: F811
    frame = read_events(trails["plain"]).frame
    first_days = frame[frame["timestamp"] < frame["timestamp"].min() + pd.Timedelta(days=3)]
    model = AuditModel(alerts_per_day=5).fit(first_days)
    text = assert_the_logs_report(databases, trails, "plain", model=model)
    assert "No alerts." not in text  # the attack days alert: their rows are gathered


def test_self_fit_of_a_database_in_chunks(databases, trails):  # noqa: F811
    text = assert_the_logs_report(databases, trails, "plain",
                                  since=pd.Timestamp("2025-03-04", tz="UTC"))
    assert "scored against the log's own earlier activity" in " ".join(text.split())
    assert "Period:            2025-03-04" in text


def test_report_db_on_the_command_line_in_chunks(databases, tmp_path, capsys):
    printed = {size: re.sub(r"generated .+? UTC", "generated (now)", run_printed(
        ["report", "--db", databases["recorded"], "--text", "--chunk-events", size], capsys,
        tmp_path)) for size in ("0", "500")}
    assert printed["500"] == printed["0"]  # the accounting line (stderr) and the report
    assert re.match(r"audit-analyzer report: [\d,]+ records read", printed["0"])


# -- one snapshot, one chunk at a time --------------------------------------------------

def _insert_later_row(url: str) -> None:
    """Ship one more row: the last record again, an hour later, under a new id and the next
    sequence (not linked to the chain, which a verification would see)."""
    if url.startswith("sqlite:///"):
        con: object = sqlite3.connect(url[len("sqlite:///"):])
    else:
        import psycopg

        con = psycopg.connect(url)
    record = "record::text" if not url.startswith("sqlite") else "record"
    last = con.execute(  # type: ignore[attr-defined]
        f"SELECT {record} FROM {TABLE} ORDER BY sequence DESC LIMIT 1").fetchone()[0]
    doc = orjson.loads(last)
    doc["@timestamp"] = (pd.Timestamp(doc["@timestamp"]) + pd.Timedelta(hours=1)) \
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc["event"]["id"] += "-late"
    doc["event"]["sequence"] += 1
    row = row_from_record(doc)
    mark = "?" if url.startswith("sqlite") else "%s"
    con.execute(f"INSERT INTO {TABLE} VALUES ({', '.join([mark] * len(row))})",  # type: ignore[attr-defined]
                row)
    con.commit()  # type: ignore[attr-defined]
    con.close()  # type: ignore[attr-defined]


@pytest.fixture(params=ENGINES)
def live(request: pytest.FixtureRequest, trails, tmp_path: Path) -> str:  # noqa: F811
    """A database of the plain trail that a test may write to."""
    engine = request.param
    server = request.getfixturevalue("pg_url") if engine == "postgresql" else None
    return _ship(trails["plain"], engine, "live", tmp_path, server)


def test_rows_shipped_during_a_report_are_in_none_of_its_reads(live, monkeypatch):
    before = reports(None, 997, db=live)
    read_again = Gathering.again
    shipped = []

    def ship_then_read_again(self: Gathering):
        if not shipped:  # between the count and the scoring, as a live shipper would
            _insert_later_row(live)
            shipped.append(True)
        return read_again(self)

    monkeypatch.setattr(Gathering, "again", ship_then_read_again)
    during = reports(None, 997, db=live)
    assert shipped, "the report should read the rows again (self-fit, several chunks)"
    assert during == before  # counted, scored and verified on the same rows
    monkeypatch.undo()
    after = reports(None, 997, db=live)
    assert after != before and "broken" in after[0].lower()  # the row is there now


def test_a_database_in_chunks_is_never_held_whole(databases, monkeypatch):
    size = 997
    handed: list[int] = []
    count, read_again = Gathering.__call__, Gathering.again

    def counted(self: Gathering, frame: pd.DataFrame) -> None:
        handed.append(len(frame))
        count(self, frame)

    def read_again_counted(self: Gathering):
        for chunk in read_again(self):
            handed.append(len(chunk))
            yield chunk

    monkeypatch.setattr(Gathering, "__call__", counted)
    monkeypatch.setattr(Gathering, "again", read_again_counted)
    text = reports(None, size, db=databases["plain"])[0]
    events = int(text.split("Events:")[1].split()[0].replace(",", ""))
    assert max(handed) <= size
    assert sum(handed) == 3 * events  # counted, scored against itself, gathered for evidence
