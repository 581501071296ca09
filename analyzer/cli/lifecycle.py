"""Commands of the model's life: ``evaluate``, ``feedback``, ``models``."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

import pandas as pd

from analyzer.cli._common import (
    add_command,
    add_encryption_options,
    add_key_option,
    add_model_options,
    add_reader_options,
    load_model_from_args,
    read_key_file,
    say,
    sealing_key,
    warn,
)
from analyzer.errors import ConfigError, SchemaError, SourceError

DEFAULT_REGISTRY = Path("models")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "evaluate", help="compare window scores with labelled attacks: "
                                          "ROC/PR-AUC, precision and recall at the alert "
                                          "budget, instances caught per scenario",
                    example="audit-analyzer evaluate scores.csv --labels labels.csv\n"
                            "audit-analyzer evaluate week.jsonl --model models/acme-3.joblib "
                            "--signing-key-file model.key --labels labels.csv --json")
    p.add_argument("input", type=Path, help="a scores file (.csv or .parquet) from 'score', "
                                            "or, with --model, a log to score")
    p.add_argument("--labels", type=Path, required=True,
                   help="CSV entity_type,entity,window_start,scenario")
    add_model_options(p, required=False)
    add_reader_options(p, decrypt=True)  # how to read a log given with --model
    p.add_argument("--alerts-per-day", type=float, default=None,
                   help="alert budget (default: the model's, or 10 for a scores file)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_evaluate)

    p = add_command(sub, "feedback", help="record an analyst's verdict on an alert as a "
                                          "chained audit event",
                    example='audit-analyzer feedback alert-3f2a... --verdict benign '
                            '--note "approved pen test" --log audit.jsonl')
    p.add_argument("alert_id", help="the alert's event.id")
    p.add_argument("--verdict", required=True, choices=("benign", "malicious", "unsure"))
    p.add_argument("--note", default="", help="why (kept in the event)")
    p.add_argument("--log", type=Path, required=True,
                   help="the audit log the alert is in (the verdict is appended to it)")
    p.add_argument("--analyst", help="who decided (default: the login name)")
    add_key_option(p)
    add_encryption_options(p, reading=False)
    p.set_defaults(func=run_feedback)

    p = add_command(sub, "models", help="the model registry: list versions, promote one "
                                        "to current, roll back (audited)",
                    example="audit-analyzer models list\n"
                            "audit-analyzer models promote acme-3 --log audit.jsonl "
                            "--reason 'retrained after the reorg'\n"
                            "audit-analyzer models rollback --log audit.jsonl")
    actions = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = actions.add_parser("list", help="every version, its training period and whether it "
                                        "is current")
    _registry_option(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=run_models_list)
    for name, helptext in (("promote", "make a version the current model"),
                           ("rollback", "return to the model current before this one")):
        q = actions.add_parser(name, help=helptext)
        if name == "promote":
            q.add_argument("name", help="acme-3, acme-3.joblib, or acme (its latest version)")
        _registry_option(q)
        q.add_argument("--log", type=Path, required=True,
                       help="audit log that records the change")
        q.add_argument("--reason", default="", help="why (kept in the audit event)")
        q.add_argument("--actor", help="who did it (default: the login name)")
        add_key_option(q)
        add_encryption_options(q, reading=False)
        q.set_defaults(func=run_models_change)


def _registry_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=Path, default=DEFAULT_REGISTRY, metavar="DIR",
                   help="registry folder (default: models)")


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or password database
        return None


# -- evaluate ---------------------------------------------------------------------------------

def run_evaluate(args: argparse.Namespace) -> int:
    from analyzer.evaluation import evaluate, read_labels

    labels = read_labels(args.labels)
    if args.model is not None:
        from analyzer.cli.analysis import _read

        args.inputs = [str(args.input)]
        from analyzer.pipeline import score_trail

        reading = _read(args, "evaluate", database=False)
        model = load_model_from_args(args)
        scores = score_trail(reading, model, alerts_per_day=args.alerts_per_day,
                             check_drift=False).scores
        budget = args.alerts_per_day or model.alerts_per_day
    else:
        scores = _read_scores(args.input)
        budget = args.alerts_per_day or 10.0
    report = evaluate(scores, labels, alerts_per_day=budget)
    if args.json:
        say(json.dumps(report.to_dict(), indent=2))
    else:
        say(report.to_text())
    return 0


def _read_scores(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise SchemaError(f"{path}: not a scores file (.csv or .parquet from 'score'); to "
                          "evaluate a log, pass --model")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            scores = pd.read_parquet(path)
        else:
            scores = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read scores: {exc}") from None
    missing = [c for c in ("entity_type", "entity", "window_start", "score")
               if c not in scores.columns]
    if missing:
        raise SchemaError(f"{path}: not a scores file (lacks {', '.join(missing)}); to "
                          "evaluate a log, pass --model")
    return scores


# -- feedback ---------------------------------------------------------------------------------

def run_feedback(args: argparse.Namespace) -> int:
    from analyzer.feedback import record_feedback
    from analyzer.logger import AuditLogger

    if not args.log.exists():
        raise SourceError(f"{args.log}: audit log not found")
    key = read_key_file(args.key_file)
    analyst = args.analyst or _login()
    with AuditLogger(args.log, key=key, name="audit.analyzer", service="audit-analyzer",
                     encryption_key=sealing_key(args)) as audit:
        event_id = record_feedback(audit, args.alert_id, args.verdict, note=args.note,
                                   analyst=analyst)
    say(f"recorded: {analyst or 'unknown'} marked {args.alert_id} {args.verdict} "
        f"(event {event_id} in {args.log})")
    return 0


# -- models -----------------------------------------------------------------------------------

def run_models_list(args: argparse.Namespace) -> int:
    from analyzer.registry import ModelRegistry

    registry = ModelRegistry(args.models)
    entries = registry.entries()
    if args.json:
        say(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        say(f"no models in {args.models}/ (train one with: audit-analyzer train LOG "
            "--register NAME)")
        return 0
    width = max(8, *(len(e.label) for e in entries))
    say(f"  {'model':<{width}}  {'id':12}  {'created':20}  {'trained on':23}  signed")
    for e in entries:
        period = f"{e.training_start[:10]} to {e.training_end[:10]}"
        say(f"{'*' if e.current else ' '} {e.label:<{width}}  {e.model_id:12}  "
            f"{e.created:20}  {period:23}  {'yes' if e.signed else 'no'}")
    if not any(e.current for e in entries):
        say("(no current model: promote one with: audit-analyzer models promote NAME "
            "--log audit.jsonl)")
    return 0


def run_models_change(args: argparse.Namespace) -> int:
    from analyzer.logger import AuditLogger
    from analyzer.registry import ModelRegistry

    registry = ModelRegistry(args.models)
    if not registry.root.is_dir():
        raise ConfigError(f"{registry.root}: no model registry here (pass --models DIR)")
    key = read_key_file(args.key_file)
    actor = args.actor or _login()
    with AuditLogger(args.log, key=key, name="audit.analyzer", service="audit-analyzer",
                     encryption_key=sealing_key(args)) as audit:
        if args.models_command == "promote":
            entry = registry.promote(args.name, audit=audit, actor=actor, reason=args.reason)
            verb = "promoted"
        else:
            entry = registry.rollback(audit=audit, actor=actor, reason=args.reason)
            verb = "rolled back to"
    if not entry.signed:
        warn("models", f"{entry.label} is not signed; 'score' will need "
                       "--trust-unsigned-model to use it")
    say(f"{verb} {entry.label} ({entry.model_id}); {registry.current_path} now names "
        f"{entry.artifact.name}; recorded in {args.log}")
    return 0
