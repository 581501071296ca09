"""The ``query`` command: filter the trail, or run read-only SQL over it."""

from __future__ import annotations

import argparse
import sys

from analyzer.cli._common import (
    add_command,
    add_encryption_options,
    read_encryption_keys,
    warn,
)
from analyzer.errors import ConfigError
from analyzer.events import formula_safe, printable
from analyzer.query import (
    DEFAULT_COLUMNS,
    QUERY_COLUMNS,
    Filter,
    ScanStats,
    parse_time,
    scan,
    write_csv,
    write_jsonl,
    write_table,
)

__all__ = ["add_filter_options", "filter_from_args", "register", "run_query"]

_EXAMPLE = """\
audit-analyzer query audit.jsonl --user alice --since 7d
audit-analyzer query 'logs/audit.jsonl*' --action 'permission.*' --outcome failure \\
    --format csv > failed.csv
audit-analyzer query audit.jsonl --kind alert --since 30d --format json
audit-analyzer query audit.jsonl --sql "SELECT user, count(*) AS n FROM events \\
    WHERE outcome='failure' GROUP BY user ORDER BY n DESC LIMIT 10"
audit-analyzer query --db audit.db --user alice --since 1d"""


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """The record filters, shared by every command that reads the trail through a query."""
    group = parser.add_argument_group("filters (AND across options, OR within a repeated one)")
    group.add_argument("--user", action="append", default=[], metavar="NAME",
                       help="exact user.name (repeatable)")
    group.add_argument("--action", action="append", default=[], metavar="GLOB",
                       help="event.action, a glob such as 'permission.*' (repeatable)")
    group.add_argument("--outcome", action="append", default=[],
                       choices=("success", "failure", "unknown"), help="(repeatable)")
    group.add_argument("--level", metavar="LEVEL",
                       help="this log level or more severe (debug, info, warning, error, "
                            "critical)")
    group.add_argument("--kind", choices=("event", "alert"),
                       help="activity (event) or the analyzer's detections (alert)")
    group.add_argument("--source-ip", action="append", default=[], metavar="ADDR|CIDR",
                       help="source address or network, e.g. 10.0.0.0/8 (repeatable)")
    group.add_argument("--resource", action="append", default=[], metavar="GLOB",
                       help="resource.name glob (repeatable)")
    group.add_argument("--since", metavar="TIME",
                       help="from this time on: ISO 8601 (2026-01-02, 2026-01-02T10:00Z) or "
                            "a span back from now (30m, 12h, 7d, 2w)")
    group.add_argument("--until", metavar="TIME", help="before this time (same forms)")
    group.add_argument("--text", metavar="TEXT",
                       help="case-insensitive text in the message")


def filter_from_args(args: argparse.Namespace) -> Filter:
    """Build the :class:`~analyzer.query.Filter` from :func:`add_filter_options`' options."""
    return Filter(
        users=tuple(args.user), actions=tuple(args.action), outcomes=tuple(args.outcome),
        levels=Filter.at_least(args.level) if args.level else (),
        kinds=(args.kind,) if args.kind else (), source_ips=tuple(args.source_ip),
        resources=tuple(args.resource),
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        text=args.text,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "query", help="find records in one or many trails (or a database): "
                                       "filters, or read-only SQL", example=_EXAMPLE)
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="trail files (plain or .gz), directories or globs; quote globs "
                        "such as 'logs/audit.jsonl*' to include rotated files")
    p.add_argument("--db", metavar="URL",
                   help="read from a database the shipper fills instead of files: "
                        "sqlite:///path/audit.db (or a .db path) or postgresql://...")
    add_encryption_options(p, reading=True)
    add_filter_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--format", choices=("table", "json", "csv"),
                     help="table (default on a terminal), json (one original record per "
                          "line; default when piped) or csv")
    out.add_argument("--columns", metavar="A,B,...",
                     help=f"columns for table and csv (default {','.join(DEFAULT_COLUMNS)}; "
                          f"known: {','.join(QUERY_COLUMNS)})")
    out.add_argument("--count", action="store_true", help="print only the number of matches")
    out.add_argument("--limit", type=int, metavar="N", help="stop after N matches")
    out.add_argument("--sql", metavar="SELECT",
                     help="run one read-only SQL statement over a view 'events' (the "
                          "filtered records; needs the [sql] extra: pip install "
                          "'audit-analyzer[sql]')")
    p.add_argument("--raw-csv", action="store_true",
                   help="write CSV values exactly as logged; by default a value a spreadsheet "
                        "would run as a formula (=, +, -, @ ...) gets a leading '")
    p.add_argument("--sql-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop a --sql statement after this long (default 120)")
    p.add_argument("--sql-memory-limit", default=None, metavar="SIZE",
                   help="memory a --sql statement may use, e.g. 500MB (default 1GB; it "
                        "never spills to disk)")
    p.set_defaults(func=run_query)


def run_query(args: argparse.Namespace) -> int:
    if not args.paths and not args.db:
        raise ConfigError("give one or more trail files, or --db URL")
    if args.paths and args.db:
        raise ConfigError("give trail files or --db, not both")
    if args.limit is not None and args.limit < 0:
        raise ConfigError("--limit must not be negative")
    flt = filter_from_args(args)
    columns = tuple(c.strip() for c in args.columns.split(",")) if args.columns \
        else DEFAULT_COLUMNS
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")

    if args.sql:
        from analyzer.sql import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT, run_sql

        result = run_sql(args.sql, args.paths or None, flt, db=args.db,
                         timeout=args.sql_timeout or DEFAULT_TIMEOUT,
                         memory_limit=args.sql_memory_limit or DEFAULT_MEMORY_LIMIT)
        _write_sql_result(result, fmt, raw=args.raw_csv)
        return 0

    stats = ScanStats()
    if args.db:
        from analyzer.store import query_db

        batches = query_db(args.db, flt, limit=args.limit, stats=stats)
    else:
        batches = scan(args.paths, flt, limit=args.limit, stats=stats,
                       decrypt_keys=read_encryption_keys(args.encryption_key_file),
                       clear_only=args.clear_only)
    if args.count:
        total = sum(b.table.num_rows for b in batches)
        print(total)
    else:
        _write(batches, fmt, columns, raw=args.raw_csv)
    _report_rejected(stats, db=bool(args.db))
    return 0


def _write(batches, fmt: str, columns: tuple[str, ...], *, raw: bool = False) -> None:
    batches = _flushing(batches)
    if fmt == "json":
        write_jsonl(batches, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    elif fmt == "csv":
        write_csv(batches, sys.stdout, columns, raw=raw)
    else:
        write_table(batches, sys.stdout, columns)


def _flushing(batches):
    """Flush text output between batches so that a reader sees results as they come."""
    for batch in batches:
        yield batch
        sys.stdout.flush()


def _report_rejected(stats: ScanStats, *, db: bool) -> None:
    # One line of accounting, as every read gives. A query only reads: the malformed lines
    # are named, not written anywhere.
    if db:
        if stats.rejected:
            warn("query", f"{len(stats.rejected):,} malformed rows skipped "
                          f"(first: {stats.rejected[0].describe()})")
        return
    warn("query", stats.summary())


def _write_sql_result(result, fmt: str, *, raw: bool = False) -> None:
    """Print an Arrow table from ``--sql`` as a table, JSON lines or CSV."""
    import orjson
    import pyarrow as pa

    table: pa.Table = result
    columns = table.column_names
    if fmt == "json":
        out = sys.stdout.buffer
        for row in table.to_pylist():
            out.write(orjson.dumps(row, default=str, option=orjson.OPT_NAIVE_UTC
                                   | orjson.OPT_UTC_Z) + b"\n")
        out.flush()
        return
    text = {name: ["" if v is None else str(v) for v in table.column(name).to_pylist()]
            for name in columns}
    if fmt == "table":  # for a terminal: values from the log cannot drive it
        text = {name: [printable(v) for v in values] for name, values in text.items()}
    rows = list(zip(*(text[c] for c in columns), strict=True)) if columns else []
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows if raw else ([formula_safe(v) for v in row] for row in rows))
        return
    widths = [min(60, max([len(c), *(len(r[k]) for r in rows)])) for k, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join((v if len(v) <= w else v[:w - 1] + "…").ljust(w)
                        for v, w in zip(row, widths, strict=True)).rstrip())

