"""SQLite destination: the audit trail in an embedded database (:mod:`analyzer.store` schema).

The default database for one machine: no server, one file, queried with ``audit-analyzer
query --db audit.db`` or any SQLite client. Each batch is one transaction of
``INSERT ... ON CONFLICT (event_id) DO NOTHING``, so a batch the shipper sends again after a
crash adds nothing: ``event.id`` is the primary key. A record the table cannot take (no
``event.id``, an unreadable time) is rejected for good, into the shipper's dead-letter file.

>>> import tempfile, os
>>> from analyzer.sinks.shipper import Record
>>> sink = SqliteSink(os.path.join(tempfile.mkdtemp(), "audit.db"))
>>> doc = {"@timestamp": "2024-05-01T10:00:00.000000Z",
...        "event": {"id": "e1", "action": "login", "sequence": 1}}
>>> sink.send([Record(b"{}", doc, 0)]).rejected, sink.send([Record(b"{}", doc, 0)]).rejected
((), ())
>>> sink.count()
1
>>> sink.close()
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from analyzer.errors import SchemaError
from analyzer.sinks.shipper import DeliveryError, Record, SendResult
from analyzer.store import COLUMNS, TABLE, DatabaseURL, connect, row_from_record

__all__ = ["SqliteSink"]

_log = logging.getLogger(__name__)

_INSERT = (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed names
           f"VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT (event_id) DO NOTHING")


class SqliteSink:
    """Write audit records into a SQLite database file (created with its schema if new).

    Parameters
    ----------
    path
        The database file.
    name
        Names the shipper's cursor and dead-letter files.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str = "sqlite") -> None:
        self.path = Path(path)
        self.name = name
        self._con: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            try:
                self._con = connect(DatabaseURL("sqlite", str(self.path)), write=True)
            except sqlite3.Error as exc:
                raise DeliveryError(f"sqlite {self.path}: {exc}") from None
        return self._con

    def send(self, batch: Sequence[Record]) -> SendResult:
        rows, rejected = [], []
        for index, record in enumerate(batch):
            try:
                rows.append(row_from_record(record.doc, record.raw))
            except (SchemaError, UnicodeDecodeError) as exc:
                rejected.append((index, str(exc)))
        if rows:
            con = self._connection()
            try:
                with con:  # one transaction per batch
                    con.executemany(_INSERT, rows)
            except sqlite3.OperationalError as exc:  # locked, disk full: try again later
                raise DeliveryError(f"sqlite {self.path}: {exc}") from None
        return SendResult(rejected=tuple(rejected))

    def count(self) -> int:
        """Rows in the table (for tests and status lines)."""
        return int(self._connection().execute(
            f"SELECT count(*) FROM {TABLE}").fetchone()[0])  # noqa: S608 - fixed name

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
