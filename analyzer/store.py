"""The audit trail in a database: schema, writing (for the shipper), reading and verifying.

The log file stays the source of truth; the shipper copies it into a database so that teams
can query it where they already work. Two engines: SQLite (embedded, the default for one
machine) and PostgreSQL (for teams; needs the ``[postgres]`` extra, psycopg 3).

Schema
------
One table, ``audit_events``, one row per record::

    column      SQLite   PostgreSQL    from the record
    event_id    TEXT     text          event.id            PRIMARY KEY: re-shipping is a no-op
    sequence    INTEGER  bigint        event.sequence      indexed (verification order)
    time        TEXT     timestamptz   @timestamp          indexed; SQLite: ISO 8601 UTC,
                                                           microseconds and Z (sorts as time)
    level       TEXT     text          log.level
    kind        TEXT     text          event.kind          (event when absent)
    user_name   TEXT     text          user.name           indexed
    action      TEXT     text          event.action        indexed
    outcome     TEXT     text          event.outcome       (unknown when absent)
    source_ip   TEXT     inet          source.ip
    resource    TEXT     text          resource.name
    hash        TEXT     text          event.hash
    record      TEXT     jsonb         the whole record: SQLite keeps the line byte for byte

The typed columns are copies for indexing; ``record`` is the event. :func:`verify_db`
recomputes the hash chain from ``record`` in ``sequence`` order, exactly as
:func:`~analyzer.integrity.verify_log` does on the file, and also checks that every typed
column still says what its record says, so a row changed in the database is caught either way.
One table holds one chain (one log and its rotations); give other logs their own database.

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a plain path
ending in ``.db``, ``.sqlite`` or ``.sqlite3``; ``postgresql://user@host:5432/dbname``
(libpq's own ``PGPASSWORD`` and ``~/.pgpass`` supply passwords; keep them out of URLs).

Filter values always travel as bound parameters, never inside SQL text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import itertools
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from analyzer.errors import ConfigError, SchemaError, SourceError
from analyzer.events import (
    ECS_COLUMNS,
    OUTCOME_CATEGORIES,
    column_value,
    ecs_value,
    format_timestamp,
    parse_timestamp,
)
from analyzer.integrity import (
    GENESIS_HASH,
    ChainHasher,
    Checkpoint,
    Problem,
    VerifyReport,
    canonical_bytes,
)
from analyzer.query import (
    RESULT_SCHEMA,
    Batch,
    Filter,
    ScanStats,
    match_columns,
    record_columns,
)

__all__ = [
    "COLUMNS",
    "POSTGRES_SCHEMA",
    "SQLITE_SCHEMA",
    "TABLE",
    "DatabaseEvents",
    "DatabaseURL",
    "Snapshot",
    "parse_url",
    "query_db",
    "read_db_events",
    "redact_dsn",
    "row_from_record",
    "snapshot",
    "verify_db",
]

if TYPE_CHECKING:
    from analyzer.sources import ReadResult
    from analyzer.sources.chunks import ChunkedRead

_log = logging.getLogger(__name__)

TABLE = "audit_events"
#: Columns of :data:`TABLE`, in order.
COLUMNS: tuple[str, ...] = ("event_id", "sequence", "time", "level", "kind", "user_name",
                            "action", "outcome", "source_ip", "resource", "hash", "record")

SQLITE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    event_id  TEXT PRIMARY KEY,
    sequence  INTEGER,
    time      TEXT NOT NULL,
    level     TEXT,
    kind      TEXT NOT NULL,
    user_name TEXT,
    action    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    source_ip TEXT,
    resource  TEXT,
    hash      TEXT,
    record    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE} (time);
CREATE INDEX IF NOT EXISTS {TABLE}_user ON {TABLE} (user_name, time);
CREATE INDEX IF NOT EXISTS {TABLE}_action ON {TABLE} (action, time);
CREATE INDEX IF NOT EXISTS {TABLE}_sequence ON {TABLE} (sequence);
"""

POSTGRES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    event_id  text PRIMARY KEY,
    sequence  bigint,
    time      timestamptz NOT NULL,
    level     text,
    kind      text NOT NULL,
    user_name text,
    action    text NOT NULL,
    outcome   text NOT NULL,
    source_ip inet,
    resource  text,
    hash      text,
    record    jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE} (time);
CREATE INDEX IF NOT EXISTS {TABLE}_user ON {TABLE} (user_name, time);
CREATE INDEX IF NOT EXISTS {TABLE}_action ON {TABLE} (action, time);
CREATE INDEX IF NOT EXISTS {TABLE}_sequence ON {TABLE} (sequence);
"""

_CHUNK = 50_000
_INSTALL_PG = ("PostgreSQL needs psycopg 3, an optional extra: "
               "pip install 'audit-analyzer[postgres]' (or: pip install 'psycopg[binary]')")


# -- URLs ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database location: ``engine`` is ``sqlite`` or ``postgresql``."""

    engine: str
    target: str  # the SQLite file, or the libpq connection string

    def display(self) -> str:
        """The location without a password, for messages."""
        return self.target if self.engine == "sqlite" else redact_dsn(self.target)

    def __repr__(self) -> str:
        return f"DatabaseURL(engine={self.engine!r}, target={self.display()!r})"


# a password in a URL's user info, or as a parameter (?password=, &sslpassword=, or the
# key=value form: password='a b'), up to its end
_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^@/\s]*@")
_PARAM_PASSWORD = re.compile(r"(?i)(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)")


def redact_dsn(text: str) -> str:
    """``text`` with every password of a connection string replaced by ``***``.

    >>> redact_dsn("postgresql://audit:s3cret@db/audit?sslmode=require&password=x")
    'postgresql://audit:***@db/audit?sslmode=require&password=***'
    >>> redact_dsn("host=db user=audit password='a b' dbname=audit")
    'host=db user=audit password=*** dbname=audit'
    """
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def parse_url(url: str | os.PathLike[str]) -> DatabaseURL:
    """Tell SQLite from PostgreSQL.

    >>> parse_url("sqlite:///audit.db"), parse_url("/var/lib/audit.sqlite").target
    (DatabaseURL(engine='sqlite', target='audit.db'), '/var/lib/audit.sqlite')
    >>> parse_url("postgresql://audit@db/audit").engine
    'postgresql'
    """
    text = os.fspath(url)
    if text.startswith(("postgresql://", "postgres://")):
        return DatabaseURL("postgresql", text)
    if text.startswith("sqlite:///"):
        return DatabaseURL("sqlite", text[len("sqlite:///"):])
    if text.startswith("sqlite:"):
        raise ConfigError(f"{text}: write sqlite:///relative.db or sqlite:////absolute.db")
    if "://" not in text and text.lower().endswith((".db", ".sqlite", ".sqlite3")):
        return DatabaseURL("sqlite", text)
    raise ConfigError(f"{redact_dsn(text)}: not a database URL; use a .db path, "
                      "sqlite:///path.db or postgresql://user@host/dbname")


# -- rows from records ---------------------------------------------------------------------

def row_from_record(doc: dict[str, Any], raw: bytes | str | None = None) -> tuple[Any, ...]:
    """The row (:data:`COLUMNS`) for one record; :class:`SchemaError` names what is wrong.

    ``raw`` is the record's line as written (stored as is in SQLite); encoded from ``doc``
    when not given.
    """
    if not isinstance(doc, dict):
        raise SchemaError("record: not a JSON object")
    if not isinstance(doc.get("event"), dict):
        raise SchemaError("event: missing")
    event_id = ecs_value(doc, ECS_COLUMNS["event_id"])
    if not isinstance(event_id, str) or not event_id:
        raise SchemaError("event.id: missing; the database needs it as the primary key")
    action = ecs_value(doc, ECS_COLUMNS["action"])
    if not isinstance(action, str) or not action:
        raise SchemaError("event.action: missing")
    outcome = ecs_value(doc, ECS_COLUMNS["outcome"], "unknown")
    if outcome not in OUTCOME_CATEGORIES:
        raise SchemaError(f"event.outcome: unknown value {outcome!r:.40}")
    sequence = ecs_value(doc, ECS_COLUMNS["sequence"])
    if sequence is not None and (isinstance(sequence, bool) or not isinstance(sequence, int)):
        raise SchemaError("event.sequence: expected an integer")
    stamp = ecs_value(doc, ECS_COLUMNS["timestamp"])
    if not isinstance(stamp, str):
        raise SchemaError("@timestamp: missing")
    time = format_timestamp(parse_timestamp(stamp))
    ip = ecs_value(doc, ECS_COLUMNS["source_ip"])
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise SchemaError(f"source.ip: not an IP address: {ip!r:.60}") from None
    if raw is None:
        raw = orjson.dumps(doc)
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return (event_id, sequence, time, _text(doc, "level"),
            _text(doc, "kind", "event"), _text(doc, "user"), action, outcome, ip,
            _text(doc, "resource"), _text(doc, "hash"), text)


def _text(doc: dict[str, Any], column: str, default: str | None = None) -> str | None:
    """The record's string for ``column`` (of :data:`~analyzer.events.ECS_COLUMNS`)."""
    value = ecs_value(doc, ECS_COLUMNS[column], default)
    if value is None or isinstance(value, str):
        return value
    raise SchemaError(f"{'.'.join(ECS_COLUMNS[column])}: expected a string, got {value!r:.40}")


# -- connections ---------------------------------------------------------------------------

def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(_INSTALL_PG) from None
    return psycopg


def connect(url: str | os.PathLike[str] | DatabaseURL, *, write: bool = False) -> Any:
    """A DB-API connection; read-only unless ``write``. Creates the schema when writing."""
    db = url if isinstance(url, DatabaseURL) else parse_url(url)
    if db.engine == "sqlite":
        path = Path(db.target)
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(path, timeout=30)
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SQLITE_SCHEMA)
            return con
        if not path.exists():
            raise SourceError(f"{path}: no such database")
        # DuckDB pulls a streamed --sql source from its own worker threads, one at a time.
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                               check_same_thread=False)
    psycopg = _psycopg()
    try:
        con = psycopg.connect(db.target, connect_timeout=10,
                              options=None if write else "-c default_transaction_read_only=on")
    except psycopg.OperationalError as exc:
        raise SourceError(f"{db.display()}: cannot connect: "
                          f"{redact_dsn(str(exc).strip().splitlines()[-1])}") from None
    if write:
        with con.transaction():
            con.execute(POSTGRES_SCHEMA)
    return con


class Snapshot:
    """One read-only view of a database that several reads share: its rows as they were when
    the first read began, whatever is written meanwhile (from :func:`snapshot`).

    A report reads a trail up to three times (to count it, to score it, for the alerts'
    evidence) and verifies its chain; with one snapshot each read sees the same rows. It is
    one connection in one transaction: PostgreSQL's ``REPEATABLE READ`` (read only, so it
    never fails to serialise), SQLite's read transaction (in WAL mode, which the shipper
    sets, writers go on meanwhile; in a rollback journal they would wait for its end). It
    holds back PostgreSQL's vacuum, and SQLite's checkpoint of the WAL, of what is written
    meanwhile until it closes. Reads through it run one after the other.
    """

    def __init__(self, url: str | os.PathLike[str] | DatabaseURL) -> None:
        self.db = url if isinstance(url, DatabaseURL) else parse_url(url)
        self.con: Any = None
        self._names = itertools.count(1)

    def __enter__(self) -> Snapshot:
        self.con = connect(self.db)
        if self.db.engine == "postgresql":
            self.con.isolation_level = _psycopg().IsolationLevel.REPEATABLE_READ
        else:
            # Python's sqlite3 opens no transaction for a SELECT: without one, each read
            # would see the database as it is then
            self.con.execute("BEGIN")
        return self

    def __exit__(self, *exc: object) -> None:
        con, self.con = self.con, None
        if con is not None:
            con.close()  # which ends the transaction: it wrote nothing, only held the view

    def cursor(self, name: str) -> Any:
        """A cursor on the snapshot: PostgreSQL's on the server, so that the rows come page
        by page (each with a name of its own)."""
        if self.con is None:
            raise RuntimeError("the snapshot is not open (use it in a with block)")
        if self.db.engine == "postgresql":
            return self.con.cursor(name=f"{name}_{next(self._names)}")
        return self.con.cursor()


def snapshot(url: str | os.PathLike[str]) -> Snapshot:
    """A :class:`Snapshot` of the database at ``url``, to use in a ``with`` block.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "audit.db")
    >>> connect(path, write=True).close()
    >>> with snapshot(path) as view:
    ...     verify_db(path, snapshot=view).ok
    True
    """
    return Snapshot(url)


@contextlib.contextmanager
def _reading(db: DatabaseURL, view: Snapshot | None, name: str) -> Iterator[Any]:
    """A cursor of ``view`` (closed after), or of a connection of its own (closed after)."""
    if view is not None:
        cursor = view.cursor(name)
        try:
            yield cursor
        finally:
            cursor.close()
        return
    con = connect(db)
    try:
        yield con.cursor(name=name) if db.engine == "postgresql" else con.cursor()
    finally:
        con.close()


# -- reading -------------------------------------------------------------------------------

def _where(flt: Filter, engine: str) -> tuple[str, list[Any]]:
    """A WHERE clause that keeps a superset of what ``flt`` keeps, with bound parameters.

    Exact conditions (users, outcomes, kinds, levels, time, exact actions and resources) are
    pushed down; globs become a LIKE on their literal prefix; networks and text are checked
    on the rows read, with the same code as the file scan.
    """
    mark = "?" if engine == "sqlite" else "%s"
    clauses: list[str] = []
    params: list[Any] = []

    def any_of(column: str, values: Sequence[str]) -> None:
        clauses.append(f"{column} IN ({', '.join([mark] * len(values))})")
        params.extend(values)

    if flt.users:
        any_of("user_name", flt.users)
    if flt.outcomes:
        any_of("outcome", flt.outcomes)
    if flt.kinds:
        any_of("kind", flt.kinds)
    if flt.levels:
        any_of("level", flt.levels)
    for column, patterns in (("action", flt.actions), ("resource", flt.resources)):
        if not patterns:
            continue
        if not any(ch in p for p in patterns for ch in "*?["):
            any_of(column, patterns)
            continue
        prefixes = [_glob_prefix(p) for p in patterns]
        if all(prefixes):
            escape = " ESCAPE '\\'"
            clauses.append("(" + " OR ".join(f"{column} LIKE {mark}{escape}"
                                             for _ in prefixes) + ")")
            params.extend(_like_escape(p) + "%" for p in prefixes)
    for bound, op in ((flt.since, ">="), (flt.until, "<")):
        if bound is not None:
            clauses.append(f"time {op} {mark}")
            params.append(format_timestamp(bound) if engine == "sqlite" else bound)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _glob_prefix(pattern: str) -> str:
    for index, ch in enumerate(pattern):
        if ch in "*?[":
            return pattern[:index]
    return pattern


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Fixed names only; filter values are always bound parameters.
_SELECT = ("SELECT time, level, kind, user_name, action, outcome, source_ip, resource, "  # noqa: S608
           "sequence, event_id, hash, record FROM " + TABLE)


def query_db(url: str | os.PathLike[str], flt: Filter | None = None, *,
             limit: int | None = None, stats: ScanStats | None = None,
             chunk_rows: int = _CHUNK, snapshot: Snapshot | None = None) -> Iterator[Batch]:
    """Stream the records of a database that match ``flt``, in time order, in chunks.

    Yields the same :class:`~analyzer.query.Batch` tables as :func:`analyzer.query.scan`,
    so every output and the SQL view work on either source. ``snapshot``: read through
    this open :class:`Snapshot` of the database (default: a connection of its own).
    """
    flt = flt or Filter()
    stats = stats if stats is not None else ScanStats()
    db = snapshot.db if snapshot is not None else parse_url(url)
    if limit is not None and limit <= 0:
        return
    where, params = _where(flt, db.engine)
    sql = f"{_SELECT}{where} ORDER BY time, sequence, event_id"
    if db.engine == "postgresql":
        sql = sql.replace("SELECT time,", "SELECT to_char(time AT TIME ZONE 'UTC', "
                          "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),", 1) \
            .replace("source_ip, resource", "host(source_ip), resource", 1) \
            .replace(", record FROM", ", record::text FROM", 1)
    with _reading(db, snapshot, "audit_query") as cursor:
        stats.files += 1
        if db.engine == "postgresql":
            cursor.itersize = chunk_rows
        cursor.execute(sql, params)
        while True:
            rows = cursor.fetchmany(chunk_rows)
            if not rows:
                break
            table = _rows_to_table(rows, flt)
            stats.lines_parsed += len(rows)
            if not table.num_rows:
                continue
            if limit is not None and stats.matched + table.num_rows >= limit:
                table = table.slice(0, limit - stats.matched)
                stats.matched += table.num_rows
                yield Batch(db.display(), table)
                return
            stats.matched += table.num_rows
            yield Batch(db.display(), table)


def _rows_to_table(rows: list[tuple[Any, ...]], flt: Filter) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    names = ("timestamp", "level", "kind", "user", "action", "outcome", "source_ip",
             "resource", "sequence", "event_id", "hash", "record")
    col: dict[str, pa.ChunkedArray] = {}
    for name, values in zip(names, columns, strict=True):
        dtype = pa.int64() if name == "sequence" else pa.string()
        col[name] = pa.chunked_array([pa.array(values, type=dtype)])
    stamps = col["timestamp"].cast(pa.timestamp("us", "UTC"))
    # Fields without a typed column come from the records themselves.
    parsed = record_columns(col["record"])
    extra = ("message", "category", "country", "host", "session", "bytes")
    if parsed is not None:
        col.update({name: parsed[name] for name in extra})
    else:
        docs = [orjson.loads(r) for r in col["record"].to_pylist()]
        for name in extra:
            dtype = RESULT_SCHEMA.field(name).type
            found = [column_value(d, name) for d in docs]
            col[name] = pa.chunked_array([pa.array(
                [v if _fits(v, dtype) else None for v in found], type=dtype)])
    keep = match_columns(flt, col, stamps, col["outcome"])
    if not keep.all():
        mask = pa.array(keep)
        col = {k: v.filter(mask) for k, v in col.items()}
        stamps = stamps.filter(mask)
    col["timestamp"] = stamps
    return pa.table([col[f.name] for f in RESULT_SCHEMA], schema=RESULT_SCHEMA)


def _fits(value: Any, dtype: pa.DataType) -> bool:
    if value is None:
        return True
    if pa.types.is_integer(dtype):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


def read_db_events(url: str | os.PathLike[str], flt: Filter | None = None, *,
                   include_alerts: bool = False,
                   snapshot: Snapshot | None = None) -> ReadResult:
    """The normalized events frame (DESIGN contract 3) from a database, read in chunks.

    What ``train``, ``score`` and ``report`` call for ``--db URL``: returns a
    :class:`~analyzer.sources.ReadResult` like :func:`~analyzer.sources.read_events`.
    Alerts are left out (and counted) unless ``include_alerts``, as the readers do.
    ``snapshot``: read through this open :class:`Snapshot`.
    """
    return next(_db_pieces(url, flt, rows=None, include_alerts=include_alerts,
                           snapshot=snapshot))


def _db_pieces(url: str | os.PathLike[str], flt: Filter | None, *, rows: int | None,
               include_alerts: bool, snapshot: Snapshot | None = None
               ) -> Iterator[ReadResult]:
    """The rows ``flt`` selects, in time order, as results of about ``rows`` events each
    with its own accounting (``rows`` None: one result, the whole read). The cursor reads
    pages of its own size; a page is cut where a piece is full."""
    from analyzer.query import frame_from_batches
    from analyzer.sources import ReadResult

    flt = flt or Filter()
    tables: list[Batch] = []
    skipped = records = 0  # records: rows the filter selected, of this piece
    for page in query_db(url, flt, snapshot=snapshot):
        table = page.table
        while table.num_rows:
            take = table.num_rows if rows is None else min(table.num_rows, rows - records)
            part, table = table.slice(0, take), table.slice(take)
            records += take
            kind = part.column("kind").to_numpy(zero_copy_only=False)
            alerts = np.asarray(kind == "alert", dtype=bool)
            if not include_alerts and alerts.any():
                skipped += int(alerts.sum())
                part = part.filter(pa.array(~alerts))
            tables.append(Batch(page.path, part))
            if rows is not None and records >= rows:
                yield ReadResult(frame_from_batches(tables), (), skipped, records=records)
                tables, skipped, records = [], 0, 0
    if rows is None or records:
        yield ReadResult(frame_from_batches(tables), (), skipped, records=records)


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseEvents:
    """The events of a database as what a run reads (:func:`analyzer.pipeline.score_trail`,
    ``train_trail``): whole (:func:`read_db_events`), or in chunks of about ``size`` events
    through the query's cursor, so that memory holds one chunk (the same events in the same
    order, the same accounting).

    ``url`` and ``filter`` as in :func:`query_db`; alerts are left out and counted unless
    ``include_alerts``. Each read is one query, so one consistent view of the rows; reads
    that must agree with each other share an open ``snapshot`` (:func:`snapshot`).
    """

    url: str
    filter: Filter | None = None
    include_alerts: bool = False
    snapshot: Snapshot | None = None

    def read(self) -> ReadResult:
        """All the events at once."""
        return read_db_events(self.url, self.filter, include_alerts=self.include_alerts,
                              snapshot=self.snapshot)

    def chunks(self, size: int) -> ChunkedRead:
        """The events in chunks of about ``size``; the read's accounting in its ``result``
        once iterated."""
        from analyzer.sources.chunks import ChunkedRead

        return ChunkedRead((), size=size, pieces=lambda: _db_pieces(
            self.url, self.filter, rows=size, include_alerts=self.include_alerts,
            snapshot=self.snapshot))


# -- verification --------------------------------------------------------------------------

def verify_db(url: str | os.PathLike[str], *, key: bytes | None = None,
              checkpoint: Checkpoint | None = None,
              snapshot: Snapshot | None = None) -> VerifyReport:
    """Recompute the hash chain from the database rows in ``sequence`` order.

    The same chain as :func:`~analyzer.integrity.verify_log` (contract 2), computed over
    each row's ``record``; a typed column that no longer says what its record says is a
    changed row too. ``line`` in the report is the row's position in sequence order.
    ``snapshot``: verify the rows of this open :class:`Snapshot`.
    """
    db = snapshot.db if snapshot is not None else parse_url(url)
    record = "record::text" if db.engine == "postgresql" else "record"
    sql = (f"SELECT event_id, sequence, {_cols_for_check(db.engine)}, "  # noqa: S608 - fixed
           f"{record} FROM {TABLE} ORDER BY sequence, event_id")
    with _reading(db, snapshot, "audit_verify") as cursor:
        cursor.execute(sql)
        return _verify_rows(_iter_rows(cursor), db.display(), ChainHasher(key), checkpoint)


def _cols_for_check(engine: str) -> str:
    if engine == "postgresql":
        return ("to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), level, "
                "kind, user_name, action, outcome, host(source_ip), resource, hash")
    return "time, level, kind, user_name, action, outcome, source_ip, resource, hash"


def _iter_rows(cursor: Any) -> Iterator[tuple[Any, ...]]:
    while True:
        rows = cursor.fetchmany(_CHUNK)
        if not rows:
            return
        yield from rows


def _verify_rows(rows: Iterable[tuple[Any, ...]], where: str, hasher: ChainHasher,
                 checkpoint: Checkpoint | None) -> VerifyReport:
    prev_hash, prev_seq, records, checked = GENESIS_HASH, 0, 0, False
    iterator = iter(rows)
    pending: list[tuple[Any, ...]] = []

    def next_row() -> tuple[Any, ...] | None:
        if pending:
            return pending.pop()
        return next(iterator, None)

    def broken(problem: Problem, position: int, seq: int | None, detail: str) -> VerifyReport:
        return VerifyReport(where, records, prev_seq, prev_hash, False, problem, position,
                            seq, detail, checked)

    position = 0
    while (row := next_row()) is not None:
        position += 1
        event_id, seq, *typed, raw = row
        expected = prev_seq + 1
        link, problem = _link(hasher, prev_hash, event_id, seq, typed, raw)
        if problem:
            return broken(Problem.CHANGED, position, seq,
                          f"row {event_id!r}: {problem}")
        if seq == expected and link is not None:
            prev_hash, prev_seq = link, seq
            records += 1
            if checkpoint is not None and seq == checkpoint.sequence:
                if prev_hash != checkpoint.hash:
                    return broken(Problem.CHANGED, position, seq,
                                  "chain is consistent but does not match the checkpoint")
                checked = True
            continue
        if seq is None:
            return broken(Problem.BAD_JSON, position, None,
                          f"row {event_id!r} has no sequence")
        if seq < expected:
            return broken(Problem.INSERTED, position, seq,
                          f"row {event_id!r} repeats sequence {seq}, which is not part of "
                          f"the chain")
        if seq > expected:
            gap = seq - expected
            span = f"{expected}" if gap == 1 else f"{expected}-{seq - 1}"
            return broken(Problem.MISSING, position, seq, f"record(s) {span} deleted "
                                                          f"({gap} missing)")
        following = next_row()
        if following is not None:
            pending.append(following)
            f_id, f_seq, *f_typed, f_raw = following
            f_link, _ = _link(hasher, prev_hash, f_id, f_seq, f_typed, f_raw)
            if f_seq == expected and f_link is not None:
                return broken(Problem.INSERTED, position, seq,
                              f"row {event_id!r} claims sequence {seq} but is not part of the "
                              f"chain")
        return broken(Problem.CHANGED, position, seq,
                      f"row {event_id!r}: content or hash does not match the chain")
    if checkpoint is not None and not checked and checkpoint.sequence > prev_seq:
        return VerifyReport(where, records, prev_seq, prev_hash, False, Problem.TRUNCATED,
                            None, prev_seq + 1,
                            f"the table ends at sequence {prev_seq} but the checkpoint of "
                            f"{checkpoint.time or 'unknown time'} records sequence "
                            f"{checkpoint.sequence}")
    return VerifyReport(where, records, prev_seq, prev_hash, True, checkpoint_checked=checked)


def _link(hasher: ChainHasher, prev_hash: str, event_id: str, seq: int | None,
          typed: list[Any], raw: str) -> tuple[str | None, str | None]:
    """(the row's hash if its record links to ``prev_hash``, or None; a column mismatch)."""
    try:
        doc = orjson.loads(raw)
        expected = row_from_record(doc, raw)
    except (orjson.JSONDecodeError, SchemaError) as exc:
        return None, f"record is not a valid audit record ({exc})"
    if expected[0] != event_id or expected[1] != seq:
        return None, "event_id or sequence column does not match its record"
    names = ("time", "level", "kind", "user_name", "action", "outcome", "source_ip",
             "resource", "hash")
    for name, have, want in zip(names, typed, expected[2:11], strict=True):
        if have != want:
            return None, f"column {name} says {have!r:.40} but the record says {want!r:.40}"
    record_hash = expected[10]
    if record_hash is None or hasher.link(prev_hash, canonical_bytes(doc)) != record_hash:
        return None, None
    return record_hash, None
