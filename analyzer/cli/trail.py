"""Commands on the trail itself: ``log``, ``ingest``, ``verify``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.cli._common import (
    Progress,
    add_command,
    add_encryption_options,
    add_key_option,
    add_reader_options,
    read_encryption_keys,
    read_key_file,
    reader_options,
    report_read,
    say,
    warn,
)
from analyzer.errors import ConfigError, SourceError
from analyzer.events import printable
from analyzer.integrity import (
    Checkpoint,
    Problem,
    checkpoint_path,
    read_checkpoints,
    verify_log,
    verify_series,
)
from analyzer.logger import AuditLogger
from analyzer.series import split_rotated
from analyzer.sources import (
    FORMATS,
    archive_accounting,
    detect_format,
    expand_paths,
    read_events,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "log", help="append one audit event to a chained log",
                    example="audit-analyzer log --action login --user alice --outcome success "
                            "--source-ip 10.0.0.7 --log audit.jsonl")
    p.add_argument("--log", required=True, type=Path, help="the audit log to append to")
    p.add_argument("--action", required=True, help="what happened, e.g. login, model.download")
    p.add_argument("--user")
    p.add_argument("--outcome", default="unknown", help="success, failure or unknown")
    p.add_argument("--source-ip")
    p.add_argument("--resource")
    p.add_argument("--level", default="info", help="debug, info, warning, error, critical")
    p.add_argument("--message", default="")
    p.add_argument("--category", help="ECS event.category (inferred from the action if omitted)")
    p.add_argument("--country", help="ISO country code of the source")
    p.add_argument("--service", help="service.name")
    add_key_option(p)
    add_encryption_options(p, reading=False)
    p.set_defaults(func=run_log)

    p = add_command(sub, "ingest", help="import existing records into a chained audit log, "
                                        "keeping their timestamps",
                    example="audit-analyzer ingest old_access.csv --log audit.jsonl\n"
                            "audit-analyzer ingest export.csv --map src_addr=source_ip "
                            "--log audit.jsonl")
    p.add_argument("inputs", nargs="+", help="files, directories or globs to import")
    p.add_argument("--log", required=True, type=Path, help="the audit log to append to")
    add_reader_options(p, decrypt=False)  # its --encryption-key-file encrypts what it writes
    p.add_argument("--service", help="service.name of the imported records")
    add_key_option(p)
    add_encryption_options(p, reading=False)
    p.set_defaults(func=run_ingest)

    p = add_command(sub, "verify", help="recompute a log's hash chain and name the first record "
                                        "that does not hold",
                    example="audit-analyzer verify audit.jsonl --key-file audit.key\n"
                            "audit-analyzer verify audit.jsonl --checkpoint offsite.checkpoints\n"
                            "audit-analyzer verify 'logs/audit.jsonl*'   # a rotated series\n"
                            "audit-analyzer verify --db sqlite:///audit.db")
    p.add_argument("log", nargs="?",
                   help="a log file, or a folder or glob of rotated files (one chain)")
    p.add_argument("--db", metavar="URL",
                   help="verify the chain stored in a database (sqlite:///path or "
                        "postgresql://...) instead of a file")
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="checkpoints kept elsewhere (default: the log's own .checkpoints "
                        "files, when present, the active file's for a series); every one is "
                        "compared, and the newest catches deletion of records from the end")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="do not use the log's own checkpoint files")
    add_key_option(p)
    p.set_defaults(func=run_verify)


def run_log(args: argparse.Namespace) -> int:
    key = read_key_file(args.key_file)
    encryption = read_encryption_keys(args.encryption_key_file)
    with AuditLogger(args.log, key=key, service=args.service, durability="flush",
                     encryption_key=encryption[0] if encryption else None) as audit:
        event_id = audit.log(
            args.action, user=args.user, outcome=args.outcome, source_ip=args.source_ip,
            resource=args.resource, level=args.level, message=args.message,
            category=args.category, country=args.country,
        )
    say(f"logged {printable(args.action)} as {event_id} to {args.log}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    key = read_key_file(args.key_file)
    options = reader_options(args, decrypt=False)
    progress = Progress()
    progress("reading...")
    result = read_events(args.inputs, format=args.format, options=options)
    frame = result.frame
    if not len(frame) and result.rejected and len(result.rejected) == result.records:
        # nothing at all could be read: the wrong format, not a few bad lines
        tried = args.format or detect_format(expand_paths(args.inputs)[0])
        raise SourceError(f"no line could be read as {tried} (first: "
                          f"{result.rejected[0].describe()}); is --format right? "
                          f"Known: {', '.join(FORMATS)}")
    encryption = read_encryption_keys(args.encryption_key_file)
    with AuditLogger(args.log, key=key, service=args.service, name="audit.ingest",
                     encryption_key=encryption[0] if encryption else None) as audit:
        written = _import(frame, audit, progress)
    progress.done()
    say(f"ingested {written:,} events into {args.log}")
    report_read("ingest", result, args, output=args.log)
    return 0


def _import(frame: pd.DataFrame, audit: AuditLogger, progress: Progress) -> int:
    """Write each row of a normalized frame through the logger, keeping its time and host."""
    columns = [c for c in ("user", "source_ip", "resource", "country", "host", "session",
                           "message", "bytes", "level", "category") if c in frame.columns]
    written = 0
    for values in frame[["timestamp", "action", "outcome", *columns]].itertuples(
            index=False, name=None):
        timestamp, action, outcome, *rest = values
        fields: dict[str, Any] = {}  # the frame's optional columns, as log() names them
        for name, value in zip(columns, rest, strict=True):
            if value is None or value is pd.NA or value == "" or (
                    isinstance(value, float) and value != value):
                continue
            fields[name] = int(value) if name == "bytes" else value
        audit.log(str(action), timestamp=timestamp.to_pydatetime(), outcome=outcome, **fields)
        written += 1
        if written % 1_000 == 0:
            progress.count("ingesting", written, len(frame))
    return written


def run_verify(args: argparse.Namespace) -> int:
    key = read_key_file(args.key_file)
    if args.db:
        from analyzer.store import verify_db

        checkpoint = _latest_checkpoint(args.checkpoint) if args.checkpoint else None
        report = verify_db(args.db, key=key, checkpoint=checkpoint)
        say(report.summary())
        return 0 if report.ok else 1
    if not args.log:
        raise ConfigError("verify needs a log file, folder or glob, or --db URL")
    archives: list[Path] = []
    files: list[Path] = []
    for found in expand_paths(args.log, archives=archives):
        # readers take URLs; the chain is verified from local bytes only
        if not isinstance(found, Path):
            raise ConfigError(f"{found}: verify reads local files only: copy the log here "
                              f"(with its rotated files and checkpoint) and verify the copy")
        files.append(found)
    for note in archive_accounting(archives)[1]:  # a folder's zip is named, not verified
        warn("verify", note)
    if args.checkpoint is not None:
        checkpoints = _checkpoints([args.checkpoint])
    elif args.no_checkpoint:
        checkpoints = []
    else:
        checkpoints = _checkpoints(_own_checkpoint_files(files))
    if len(files) == 1:
        report = verify_log(files[0], key=key, checkpoint=checkpoints)
    else:
        report = verify_series(files, key=key, checkpoint=checkpoints)
    if report.problem is Problem.KEY_NEEDED:
        raise ConfigError(f"{report.path}: {report.detail}: pass --key-file")
    say(report.summary())
    for note in report.notes:
        say(f"note: {note}")
    if report.ok and len(files) == 1 and _starts_mid_chain(files[0]):
        say("note: this file continues a rotated chain; verify the whole series "
            f"('{files[0]}*') to check the files before it")
    return 0 if report.ok else 1


def _own_checkpoint_files(files: list[Path]) -> list[Path]:
    """The checkpoint files beside the logs, the active file's for rotated ones included:
    rotated files have none of their own, their checkpoints are the active file's."""
    found: dict[Path, None] = {}
    for file in files:
        candidates = [checkpoint_path(file)]
        rotated = split_rotated(file.name)
        if rotated is not None:
            candidates.append(checkpoint_path(file.with_name(rotated[0])))
        for candidate in candidates:
            if candidate.exists():
                found[candidate] = None
    return list(found)


def _checkpoints(sources: list[Path]) -> list[Checkpoint]:
    result: list[Checkpoint] = []
    for source in sources:
        malformed: list[str] = []
        result += read_checkpoints(source, malformed=malformed)
        if malformed:  # reported, not fatal: the good checkpoints still hold the log to account
            more = f" (and {len(malformed) - 1} more)" if len(malformed) > 1 else ""
            warn("verify", f"{malformed[0]}{more}; ignored, the other checkpoints are used")
    return result


def _latest_checkpoint(source: Path) -> Checkpoint | None:
    checkpoints = _checkpoints([source])
    return max(checkpoints, key=lambda c: c.sequence) if checkpoints else None


def _starts_mid_chain(path: Path) -> bool:
    with path.open("rb") as handle:
        return b'"action":"audit.rotation"' in handle.readline()
