"""Read-only SQL over the trail, through DuckDB (the optional ``[sql]`` extra).

:func:`run_sql` runs one ``SELECT`` over a view ``events`` whose rows are the records a
:class:`~analyzer.query.Filter` keeps (all of them by default), read from JSONL trails or
from a database the shipper fills. The view has the normalized columns and the chain fields
(:data:`EVENTS_COLUMNS`) and ``record``, the full event as DuckDB ``JSON``, so any field is
reachable: ``record->>'$.host.name'``.

Writes are impossible on this path, by two independent locks:

* the statement must be exactly one ``SELECT`` (DuckDB's own parser says what it is, so
  ``DROP``, ``INSERT``, ``COPY``, ``ATTACH``, ``PRAGMA``, ``SET`` and a second statement
  smuggled after ``;`` are refused before anything runs);
* the connection is an in-memory DuckDB with external access disabled and its configuration
  locked, and the records reach it as an Arrow stream, not as a file: the statement can read
  no file, write none, load no extension and attach no database.

A statement is also bounded in what it may spend: ``timeout`` seconds (DuckDB has no
statement timeout of its own, so a timer interrupts the connection) and ``memory_limit``
(DuckDB's own limit, with spilling to disk turned off: no temporary directory, and no
directory the statement could name is allowed). A query over a hostile or huge trail stops
with one line instead of taking the machine.

The records stream into DuckDB, so a query that reads ``events`` once (filters, aggregates,
``GROUP BY``) runs in bounded memory over any size of trail. A statement that reads it more
than once (a self-join, a CTE used twice) is run again over the records loaded into memory;
narrow it with the query's filters (``--since``, ``--user``...) on large trails.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from analyzer.errors import ConfigError
from analyzer.query import RESULT_SCHEMA, Batch, Filter, scan

__all__ = ["DEFAULT_MEMORY_LIMIT", "DEFAULT_TIMEOUT", "EVENTS_COLUMNS", "check_read_only",
           "run_sql"]

_log = logging.getLogger(__name__)

#: Columns of the ``events`` view (``record`` is the whole event as JSON).
EVENTS_COLUMNS: tuple[str, ...] = (
    "timestamp", "level", "kind", "user", "action", "outcome", "source_ip", "resource",
    "message", "category", "country", "host", "session", "bytes", "sequence", "event_id",
    "hash", "record",
)
_INSTALL = ("--sql needs DuckDB, an optional extra: pip install 'audit-analyzer[sql]' "
            "(or: pip install duckdb)")
_SOURCE = "_audit_records"
#: Defaults of the statement's budget; the CLI's --sql-timeout / --sql-memory-limit.
DEFAULT_TIMEOUT = 120.0
DEFAULT_MEMORY_LIMIT = "1GB"
_CONFIG = {
    "enable_external_access": False,
    "temp_directory": "",  # no spilling: the memory limit is the limit
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise ConfigError(_INSTALL) from None
    return duckdb


def check_read_only(statement: str) -> None:
    """Raise :class:`ConfigError` unless ``statement`` is exactly one ``SELECT``.

    >>> check_read_only("SELECT user, count(*) FROM events GROUP BY user")
    >>> check_read_only("DROP TABLE events")
    Traceback (most recent call last):
    ...
    analyzer.errors.ConfigError: --sql runs one read-only SELECT, not DROP
    """
    duckdb = _duckdb()
    try:
        statements = duckdb.extract_statements(statement)
    except duckdb.Error as exc:
        raise ConfigError(f"--sql: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise ConfigError(f"--sql runs one read-only SELECT; got {len(statements)} statements")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ConfigError(f"--sql runs one read-only SELECT, not "
                          f"{kind.name.replace('_', ' ')}")


def run_sql(statement: str,
            source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
            flt: Filter | None = None, *, db: str | os.PathLike[str] | None = None,
            timeout: float | None = DEFAULT_TIMEOUT,
            memory_limit: str = DEFAULT_MEMORY_LIMIT) -> pa.Table:
    """Run one read-only ``SELECT`` over the view ``events``; returns the result as Arrow.

    Parameters
    ----------
    statement
        One SQL ``SELECT`` (DuckDB dialect) that reads the view ``events``.
    source
        Trail files, directories or globs.
    flt
        Which records the view holds; everything when ``None``.
    db
        Instead of files, a database the shipper fills: a ``.db`` path, ``sqlite:///...``
        or ``postgresql://...``.
    timeout
        Seconds the statement may run (``None``: no limit).
    memory_limit
        DuckDB's memory limit for the statement (``"1GB"``, ``"500MB"``).

    Examples
    --------
    >>> import tempfile, os
    >>> from analyzer.logger import AuditLogger
    >>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
    >>> with AuditLogger(path) as audit:
    ...     for user in ("alice", "bob", "alice"):
    ...         _ = audit.log("login", user=user, outcome="failure")
    >>> run_sql("SELECT user, count(*) AS n FROM events GROUP BY user ORDER BY n DESC",
    ...         path).to_pylist()
    [{'user': 'alice', 'n': 2}, {'user': 'bob', 'n': 1}]
    """
    duckdb = _duckdb()
    check_read_only(statement)
    if (source is None) == (db is None):
        raise ConfigError("give trail files or a database, not both or neither")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--sql-timeout must be a positive number of seconds, got {timeout}")
    budget = _Budget(timeout, memory_limit)
    batches = _batch_source(source, db, flt)
    try:
        return _execute(duckdb, statement, lambda: _reader(batches()), budget)
    except duckdb.InvalidInputException as exc:
        if "already been consumed" not in str(exc):
            raise ConfigError(f"--sql: {_first_line(exc)}") from None
    _log.info("the statement reads 'events' more than once; loading the records into memory")
    table = _reader(batches()).read_all()
    return _execute(duckdb, statement, lambda: table, budget)


@dataclasses.dataclass(frozen=True, slots=True)
class _Budget:
    timeout: float | None
    memory_limit: str


def _connect(duckdb: Any, budget: _Budget) -> Any:
    try:
        return duckdb.connect(":memory:", config={**_CONFIG,
                                                  "memory_limit": budget.memory_limit})
    except duckdb.Error as exc:
        raise ConfigError(f"--sql-memory-limit {budget.memory_limit!r}: "
                          f"{_first_line(exc)}") from None


def _execute(duckdb: Any, statement: str, make_source: Callable[[], Any],
             budget: _Budget) -> pa.Table:
    con = _connect(duckdb, budget)
    timer = None
    if budget.timeout is not None:
        timer = threading.Timer(budget.timeout, con.interrupt)
        timer.daemon = True
        timer.start()
    try:
        con.register(_SOURCE, make_source())
        names = ", ".join(f'"{c}"' for c in EVENTS_COLUMNS if c != "record")
        con.execute(f"CREATE VIEW events AS SELECT {names}, "  # noqa: S608 - fixed names
                    f"CAST(record AS JSON) AS record FROM {_SOURCE}")
        try:
            relation = con.sql(statement)
            # DuckDB 2 names it to_arrow_table; 1.x arrow
            fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
            return fetch()
        except duckdb.InvalidInputException:
            raise
        except duckdb.InterruptException:
            raise ConfigError(f"--sql: stopped after {budget.timeout:g} s (--sql-timeout); "
                              "narrow the records with the query's filters") from None
        except duckdb.OutOfMemoryException:
            raise ConfigError(f"--sql: the statement needs more than {budget.memory_limit} "
                              "(--sql-memory-limit); narrow the records with the query's "
                              "filters") from None
        except duckdb.Error as exc:
            raise ConfigError(f"--sql: {_first_line(exc)}") from None
    finally:
        if timer is not None:
            timer.cancel()
        con.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _batch_source(source: Any, db: Any, flt: Filter | None) -> Callable[[], Iterator[Batch]]:
    if db is not None:
        from analyzer.store import query_db

        return lambda: query_db(db, flt)
    return lambda: scan(source, flt)


def _view_schema() -> pa.Schema:
    return pa.schema([RESULT_SCHEMA.field(c) for c in EVENTS_COLUMNS])


def _reader(batches: Iterator[Batch]) -> pa.RecordBatchReader:
    schema = _view_schema()

    def record_batches() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield from batch.table.select(list(EVENTS_COLUMNS)).to_batches()

    return pa.RecordBatchReader.from_batches(schema, record_batches())
