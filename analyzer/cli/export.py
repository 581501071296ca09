"""The ``export`` command: the trail's Parquet analytics copy (:mod:`analyzer.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from analyzer.cli._common import (
    Progress,
    add_command,
    add_encryption_options,
    add_key_option,
    add_rejected_option,
    read_encryption_keys,
    read_key_file,
    rejected_destination,
    say,
    warn,
)
from analyzer.errors import IntegrityError

__all__ = ["register", "run_export"]

_EXAMPLE = """\
audit-analyzer export 'logs/audit.jsonl*' --parquet export/ --key-file audit.key
audit-analyzer train export/ --model models/acme.joblib
audit-analyzer query export/ --sql "SELECT user, count(*) FROM events GROUP BY user"
duckdb -c "SELECT count(*) FROM read_parquet('export/**/*.parquet', hive_partitioning=1)\""""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", help="verify a trail and write it as Parquet partitioned "
                                        "by day (dt=YYYY-MM-DD), with a manifest of what it "
                                        "covers", example=_EXAMPLE)
    p.add_argument("inputs", nargs="+", metavar="LOG",
                   help="the trail: a log, or the files of a rotated series (folder, glob)")
    p.add_argument("--parquet", required=True, type=Path, metavar="DIR",
                   help="folder to write (new, empty, or an earlier export: the days this "
                        "export covers are replaced, the others kept)")
    p.add_argument("--force", action="store_true",
                   help="export even when the chain does not verify (the manifest then "
                        "says \"verified\": false)")
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="checkpoints kept elsewhere the chain must match (default: the "
                        "log's own .checkpoints files)")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="do not use the log's own checkpoint files")
    add_key_option(p)
    add_encryption_options(p, reading=True)
    add_rejected_option(p)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from analyzer import __version__
    from analyzer.cli.trail import _checkpoints, _own_checkpoint_files
    from analyzer.export import export_parquet
    from analyzer.query import trail_files
    from analyzer.sources import write_rejected

    key = read_key_file(args.key_file)
    keys = read_encryption_keys(args.encryption_key_file)
    if args.checkpoint is not None:
        checkpoints = _checkpoints([args.checkpoint])
    elif args.no_checkpoint:
        checkpoints = []
    else:
        checkpoints = _checkpoints(_own_checkpoint_files(trail_files(args.inputs)))
    progress = Progress()
    progress("verifying the chain...")
    try:
        report = export_parquet(
            args.inputs, args.parquet, key=key, checkpoint=checkpoints, decrypt_keys=keys,
            clear_only=args.clear_only, force=args.force, tool_version=__version__,
            progress=lambda done, share: progress.count("exporting", done, share=share))
    except IntegrityError as exc:
        progress.done()
        say(str(exc))
        warn("export", "not exported: the chain does not verify (export it anyway, marked "
                       "as not intact, with --force)")
        return 1
    progress.done()
    if report.rejected:
        destination = rejected_destination(args, args.parquet)
        if destination is not None:
            write_rejected(report.rejected, destination)
        warn("export", f"{len(report.rejected):,} malformed record(s) not exported, set "
                       f"aside in {destination}; first: {report.rejected[0].describe()}")
    if not report.verify.ok:
        warn("export", f"exported although the chain does not verify (--force): "
                       f"{report.verify.summary()}")
    if report.manifest["encryption"] == "decrypted":
        warn("export", f"{args.parquet} holds the encrypted fields DECRYPTED, in clear: "
                       "protect it like the key")
    if report.left_for_next:
        warn("export", f"{report.left_for_next:,} record(s) appended during the export, after "
                       "the verified head, are left for the next export")
    say(report.summary())
    return 0
