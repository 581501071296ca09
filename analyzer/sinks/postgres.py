"""PostgreSQL destination: the audit trail in a team's database (:mod:`analyzer.store` schema).

Needs the ``[postgres]`` extra (psycopg 3). Each batch is one transaction of
``INSERT ... ON CONFLICT (event_id) DO NOTHING`` sent in pipeline mode, so a batch the
shipper sends again adds nothing: ``event.id`` is the primary key. The whole event lands in
a ``jsonb`` column beside typed, indexed columns (time, user, action, ...).

A server that is down or restarting, a lost connection or a serialization failure raise
:class:`~analyzer.sinks.shipper.DeliveryError` (the shipper retries with backoff); a refused
login or a missing database raise :class:`~analyzer.errors.ConfigError`, since retrying cannot
fix them. A record the table cannot take goes to the dead-letter file. Passwords come from
libpq's ``PGPASSWORD`` or ``~/.pgpass``, never from messages: they name the server without one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from analyzer.errors import ConfigError, SchemaError, SourceError
from analyzer.sinks.shipper import DeliveryError, Record, SendResult
from analyzer.store import COLUMNS, TABLE, DatabaseURL, connect, parse_url, row_from_record

__all__ = ["PostgresSink"]

_log = logging.getLogger(__name__)

_PLACEHOLDERS = ", ".join("%s::jsonb" if c == "record" else "%s" for c in COLUMNS)
_INSERT = (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed names
           f"VALUES ({_PLACEHOLDERS}) ON CONFLICT (event_id) DO NOTHING")
# SQLSTATE classes that mean "not now" rather than "never": connection, resources,
# operator intervention (shutdown), serialization failures and deadlocks.
_TRANSIENT = ("08", "53", "57", "40")


class PostgresSink:
    """Write audit records into PostgreSQL (the table and indexes are created if missing).

    Parameters
    ----------
    dsn
        ``postgresql://user@host:5432/dbname`` (or any libpq connection URI).
    name
        Names the shipper's cursor and dead-letter files.
    """

    def __init__(self, dsn: str, *, name: str = "postgres") -> None:
        self.db: DatabaseURL = parse_url(dsn)
        if self.db.engine != "postgresql":
            raise ConfigError(f"{dsn}: not a postgresql:// URL")
        self.name = name
        self._con: Any = None

    def _connection(self) -> Any:
        if self._con is None or self._con.closed:
            try:
                self._con = connect(self.db, write=True)
            except SourceError as exc:
                text = str(exc)
                if "password authentication failed" in text or "does not exist" in text \
                        or "no password supplied" in text:
                    raise ConfigError(text) from None
                raise DeliveryError(text) from None
        return self._con

    def send(self, batch: Sequence[Record]) -> SendResult:
        import psycopg

        rows, rejected = [], []
        for index, record in enumerate(batch):
            try:
                row = row_from_record(record.doc, record.raw)
            except (SchemaError, UnicodeDecodeError) as exc:
                rejected.append((index, str(exc)))
                continue
            if "\\u0000" in row[-1]:  # jsonb cannot hold NUL characters
                rejected.append((index, "record holds a NUL character (\\u0000), which "
                                        "PostgreSQL jsonb cannot store"))
                continue
            rows.append(row)
        if not rows:
            return SendResult(rejected=tuple(rejected))
        con = self._connection()
        try:
            with con.transaction(), con.cursor() as cursor:
                cursor.executemany(_INSERT, rows)
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None) or ""
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, psycopg.OperationalError) or state[:2] in _TRANSIENT:
                self.close()
                raise DeliveryError(f"postgresql {self.db.display()}: {first}") from None
            # One bad row fails the whole batch: find it by sending rows one by one.
            return self._one_by_one(batch, rejected)
        return SendResult(rejected=tuple(rejected))

    def _one_by_one(self, batch: Sequence[Record],
                    rejected: list[tuple[int, str]]) -> SendResult:
        import psycopg

        done = {index for index, _ in rejected}
        con = self._connection()
        for index, record in enumerate(batch):
            if index in done:
                continue
            try:
                with con.transaction():
                    con.execute(_INSERT, row_from_record(record.doc, record.raw))
            except psycopg.OperationalError as exc:
                self.close()
                raise DeliveryError(f"postgresql {self.db.display()}: {exc}") from None
            except psycopg.Error as exc:
                rejected.append((index, str(exc).strip().splitlines()[0]))
        return SendResult(rejected=tuple(sorted(rejected)))

    def count(self) -> int:
        """Rows in the table (for tests and status lines)."""
        with self._connection().cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {TABLE}")  # noqa: S608 - fixed name
            return int(cursor.fetchone()[0])

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None
