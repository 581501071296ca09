"""One ECS table: every reader of audit records gets the same columns from the same fields.

The ECS reader, ``query``, ``watch`` and the database store all read the normalized columns
through :data:`analyzer.events.ECS_COLUMNS`, and the ECS reader, ``query`` and ``watch``
open sealed records into them (:data:`analyzer.crypto.SEALED_COLUMNS`).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
import pytest

from analyzer.events import ECS_COLUMNS, FRAME_COLUMNS, ecs_value
from analyzer.logger import AuditLogger
from analyzer.query import frame_from_batches, scan
from analyzer.sources import jsonl
from analyzer.watch import records_to_frame

ENC = bytes(range(32))

#: One event with every column of the frame filled, and one with only the required ones.
EVENTS = [
    {"action": "dataset.read", "user": "zelda", "outcome": "success",
     "resource": "datasets/payroll", "source_ip": "198.51.100.77", "level": "warning",
     "message": "read the payroll", "category": ["database", "file"], "country": "NO",
     "bytes": 512, "session": "s-42", "roles": ["analyst", "admin"], "host": "db-1",
     "timestamp": "2026-03-04T05:06:07.000008Z"},
    {"action": "login", "user": "yorick", "outcome": "failure", "source_ip": "10.0.0.9",
     "timestamp": "2026-03-04T05:07:00.000000Z"},
]


def _write(path: Path, **options) -> Path:
    with AuditLogger(path, **options) as audit:
        for fields in EVENTS:
            audit.log(**fields)
    return path


def _values(frame: pd.DataFrame, column: str) -> list:
    return [None if pd.isna(v) else v for v in frame[column].astype(object)]


def _docs(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def clear_log(tmp_path: Path) -> Path:
    return _write(tmp_path / "audit.jsonl")


def test_the_table_names_where_the_codec_writes_each_column(clear_log):
    first = _docs(clear_log)[0]
    for column, path in ECS_COLUMNS.items():
        node = first
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        assert node is not None, f"{column}: nothing at {'.'.join(path)}"


def test_reader_query_watch_and_store_give_the_same_columns(clear_log, tmp_path):
    from analyzer.sinks.shipper import Shipper
    from analyzer.sinks.sqlite import SqliteSink
    from analyzer.store import read_db_events

    read = jsonl.read(clear_log).frame
    queried = frame_from_batches(scan(clear_log))
    watched = records_to_frame(_docs(clear_log))
    sink = SqliteSink(tmp_path / "audit.db")
    Shipper(clear_log, sink).run(follow=False)
    sink.close()
    stored = read_db_events(tmp_path / "audit.db").frame

    expected = EVENTS[0]
    row = read.iloc[0]
    assert row["category"] == "database" and row["roles"] == "analyst"
    assert row["timestamp"] == pd.Timestamp(expected["timestamp"])
    for column in ("user", "action", "outcome", "source_ip", "resource", "level", "country",
                   "host", "session", "bytes", "message"):
        assert row[column] == expected[column], column
    written = _docs(clear_log)[0]["event"]
    assert (row["sequence"], row["event_id"]) == (written["sequence"], written["id"])
    for column in FRAME_COLUMNS:
        want = _values(read, column)
        assert _values(queried, column) == want, f"query: {column}"
        assert _values(watched, column) == want, f"watch: {column}"
        assert _values(stored, column) == want, f"store: {column}"
    assert _values(watched, "roles") == _values(read, "roles") == ["analyst", None]


@pytest.mark.parametrize("opener", ["reader", "query", "watch"])
def test_every_sealed_column_is_opened_by_every_path_that_opens_records(clear_log, tmp_path,
                                                                      opener):
    pytest.importorskip("cryptography", reason="encryption needs the cryptography extra")
    from analyzer.crypto import SEALED_COLUMNS, RecordCipher

    sealed = _write(tmp_path / "sealed.jsonl", encryption_key=ENC)
    on_disk = _docs(sealed)[0]
    for column, path in SEALED_COLUMNS.items():  # each of them really is sealed on disk ...
        assert ecs_value(on_disk, path) in (None, ""), column  # "": the clear placeholder
    assert b"zelda" not in sealed.read_bytes()
    want = jsonl.read(clear_log).frame
    if opener == "reader":
        got = jsonl.read(sealed, decrypt_keys=(ENC,)).frame
    elif opener == "query":
        batches = list(scan(sealed, decrypt_keys=(ENC,)))
        got = frame_from_batches(batches)
        # roles are no query column: the record the query shows is opened whole
        records = [orjson.loads(r) for b in batches for r in b.table.column("record").to_pylist()]
        assert records[0]["user"]["roles"] == EVENTS[0]["roles"]
        assert "roles" not in got
        got["roles"] = want["roles"]
    else:
        cipher = RecordCipher(keys=(ENC,))
        got = records_to_frame([cipher.unseal(doc) for doc in _docs(sealed)])
    for column in SEALED_COLUMNS:  # ... and is opened into its column
        assert _values(got, column) == _values(want, column), column
