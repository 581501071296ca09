"""Real-time commands: ``ship`` (deliver the log to a destination), ``watch`` (alert live)
and ``retention`` (delete old rotated files once every destination has shipped them).

``ship`` and ``watch`` live in their own modules (:mod:`analyzer.cli.ship`,
:mod:`analyzer.cli.watch`) with what they share in :mod:`analyzer.cli._live`; this module
registers the three, in the order ``--help`` lists them, and runs ``retention``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analyzer.cli import ship, watch
from analyzer.cli._common import (
    add_command,
    add_encryption_options,
    add_key_option,
    read_key_file,
    say,
    sealing_key,
)
from analyzer.cli._live import (
    ENV_ES_API_KEY,
    ENV_ES_PASSWORD,
    ENV_SPLUNK_TOKEN,
    ENV_WEBHOOK_TOKEN,
    add_metrics_option,
    start_metrics,
)
from analyzer.cli.ship import build_sink, run_ship
from analyzer.cli.watch import run_watch, start_at_end_if_new, start_verifying
from analyzer.errors import ConfigError

__all__ = ["ENV_ES_API_KEY", "ENV_ES_PASSWORD", "ENV_SPLUNK_TOKEN", "ENV_WEBHOOK_TOKEN",
           "add_metrics_option", "build_sink", "register", "run_retention", "run_ship",
           "run_watch", "start_at_end_if_new", "start_metrics", "start_verifying"]


def register(sub: argparse._SubParsersAction) -> None:
    ship.register(sub)
    watch.register(sub)
    _register_retention(sub)


def _register_retention(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "retention", help="delete old rotated files of an audit log once every "
                               "destination has shipped them, recording each deletion in "
                               "the log (with the file's final hash and sequence)",
        example="audit-analyzer retention audit.jsonl --keep-days 30 "
                "--destination elasticsearch --destination syslog --key-file audit.key\n"
                "audit-analyzer retention audit.jsonl --keep-files 10 --dry-run")
    p.add_argument("log", type=Path, help="the active audit log (rotated files beside it)")
    p.add_argument("--keep-days", type=float, metavar="DAYS",
                   help="keep files rotated less than this many days ago")
    p.add_argument("--keep-files", type=int, metavar="N",
                   help="keep at least the newest N rotated files")
    p.add_argument("--destination", action="append", metavar="NAME",
                   help="a destination (ship --to/--name) that must have shipped a file "
                        "before it is deleted; repeatable (default: every destination with "
                        "a cursor beside the log)")
    p.add_argument("--not-shipped", action="store_true",
                   help="the log is not shipped anywhere: ignore shipping cursors")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be deleted; delete and record nothing")
    add_key_option(p)
    add_encryption_options(p, reading=False)
    p.set_defaults(func=run_retention)


def run_retention(args: argparse.Namespace) -> int:
    from analyzer.logger import AuditLogger
    from analyzer.retention import apply_retention

    if not args.log.exists():
        raise FileNotFoundError(2, "no such file", str(args.log))
    if args.keep_days is None and args.keep_files is None:
        raise ConfigError("give --keep-days or --keep-files (or both)")
    if args.not_shipped and args.destination:
        raise ConfigError("--not-shipped and --destination exclude each other")
    destinations = () if args.not_shipped else args.destination
    # Deletions are recorded in the log itself, continuing its chain (hence its key).
    with AuditLogger(args.log, key=read_key_file(args.key_file),
                     name="audit-analyzer.retention",
                     encryption_key=sealing_key(args)) as audit:
        report = apply_retention(args.log, audit=audit, keep_days=args.keep_days,
                                 keep_files=args.keep_files, destinations=destinations,
                                 dry_run=args.dry_run)
    verb = "would delete" if report.dry_run else "deleted"
    for gone in report.deleted:
        say(f"{verb} {gone.name}: sequences {gone.first_sequence}-{gone.last_sequence}, "
            f"final hash {gone.last_hash}")
    for name, why in report.kept:
        say(f"kept {name}: {why}")
    say(report.summary())
    return 0
