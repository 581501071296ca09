"""Commands of the analyzer: ``demo``, ``train``, ``score``, ``evaluate``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analyzer.cli._common import (
    Progress,
    add_command,
    add_key_option,
    add_model_options,
    add_reader_options,
    check_writable,
    load_model_from_args,
    read_key_file,
    reader_options,
    report_read,
    say,
    sealing_key,
    signing_key_for_saving,
)
from analyzer.cli._engine import (
    add_engine_options,
    engine_from_args,
    fit_on_engine,
    score_on_engine,
)
from analyzer.errors import ConfigError, SourceError
from analyzer.events import FORMULA_START, formula_safe, printable
from analyzer.features import TIME_HISTORY_DAYS
from analyzer.sources import ReadResult, expand_paths, read_events

if TYPE_CHECKING:
    from analyzer.model import AuditModel


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", help="run everything end to end on a generated AI platform: "
                                      "log, train, score, alert, verify",
                    example="audit-analyzer demo --out demo/")
    p.add_argument("--out", type=Path, default=Path("demo"), help="folder for the demo's files")
    p.add_argument("--days", type=int, default=21, help="days of activity (the last 7 scored)")
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--alerts-per-day", type=float, default=None)
    p.set_defaults(func=run_demo)

    p = add_command(sub, "train", help="fit a model on a history of audit events",
                    example="audit-analyzer train history.jsonl --model models/acme.joblib "
                            "--signing-key-file model.key\n"
                            "audit-analyzer train audit.jsonl --register acme --exclude-alerts")
    _add_input_options(p)
    p.add_argument("--model", type=Path, help="model file to write (.joblib)")
    p.add_argument("--register", metavar="NAME",
                   help="write the model into the registry as the next version of NAME "
                        "(models/NAME-<version>.joblib; promote it with 'models promote')")
    p.add_argument("--models", type=Path, default=Path("models"), metavar="DIR",
                   help="registry folder for --register (default: models)")
    p.add_argument("--exclude-alerts", nargs="?", const=True, default=None, metavar="TRAIL",
                   help="leave out windows of alerts not cleared (confirmed malicious, "
                        "unsure or never reviewed), read with their feedback from TRAIL "
                        "(default: the input logs)")
    p.add_argument("--window", default="1h", help="window length (default 1h)")
    p.add_argument("--step", default=None, help="sliding-window step (default: tumbling)")
    p.add_argument("--alerts-per-day", type=float, default=None,
                   help="alert budget: about this many alerts on a typical day (default 10)")
    p.add_argument("--privileged", action="append", metavar="GLOB",
                   help="privileged action pattern, e.g. 'iam.*' (repeatable; replaces the "
                        "defaults)")
    p.add_argument("--signing-key-file", type=Path, metavar="FILE",
                   help="sign the model file: a shared secret (HMAC-SHA256) or an Ed25519 "
                        "private key (PEM); score, watch and report check it (default: your "
                        "own signing key, created on first use in ~/.config/audit-analyzer)")
    p.set_defaults(func=run_train)

    p = add_command(sub, "score", help="score windows of audit events and write alerts back "
                                       "into the trail at CRITICAL",
                    example="audit-analyzer score today.jsonl --model models/acme.joblib "
                            "--signing-key-file model.key --scores scores.csv\n"
                            "audit-analyzer score access.csv --model models/default.joblib "
                            "--signing-key-file models/default.pub --audit-log audit.jsonl\n"
                            "audit-analyzer score today.jsonl   # fits on the input itself")
    _add_input_options(p)
    add_model_options(p, required=False)
    p.add_argument("--models", type=Path, default=Path("models"), metavar="DIR",
                   help="registry whose current model is used when --model is omitted "
                        "(default: models)")
    p.add_argument("--suppressions", type=Path, metavar="FILE",
                   help="known-benign patterns to suppress (JSON lines; see "
                        "analyzer/suppression.py); suppressed alerts are written at WARNING")
    p.add_argument("--scores", type=Path, help="write one row per window (.csv or .parquet)")
    p.add_argument("--raw-csv", action="store_true",
                   help="write the scores CSV's text exactly as logged; by default a value a "
                        "spreadsheet would run as a formula (=, +, -, @ ...) gets a leading '")
    p.add_argument("--alerts-per-day", type=float, default=None,
                   help="alert budget for this run: incidents per active day (default: the "
                        "model's, 10)")
    p.add_argument("--max-alert-share", type=_share_value, default=None, metavar="SHARE",
                   help="at most this share of the scored windows are alerts (default 0.02)")
    p.add_argument("--audit-log", type=Path,
                   help="audit log to write alerts into (default: the scored log, when it is "
                        "this project's own chained log)")
    p.add_argument("--no-write-back", action="store_true", help="only report alerts")
    p.add_argument("--fail-on-alert", action="store_true", help="exit 1 when there are alerts")
    add_key_option(p)
    p.set_defaults(func=run_score)


def _share_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a share in (0, 1], e.g. 0.02, got {text!r}")
    return value


def _add_input_options(p: argparse.ArgumentParser) -> None:
    from analyzer.cli.query import add_filter_options

    p.add_argument("inputs", nargs="*", help="log files, directories or globs (or --db)")
    p.add_argument("--db", metavar="URL",
                   help="read events from a database the shipper fills (sqlite:///audit.db, "
                        "postgresql://audit@db/audit), selected with the filters below")
    add_filter_options(p)
    add_reader_options(p, decrypt=True)
    add_engine_options(p)


def _read(args: argparse.Namespace, command: str, *,
          output: Path | None = None) -> ReadResult:
    """Read the command's input (files or ``--db``), set aside its rejected lines beside
    ``output`` (or ``--rejected``) and print the one line of accounting."""
    from analyzer.cli.query import filter_from_args

    # commands that share this reader without the database options (evaluate) read files
    flt = filter_from_args(args) if hasattr(args, "db") else None
    if getattr(args, "db", None):
        if args.inputs:
            raise ConfigError("give log files or --db, not both")
        from analyzer.store import read_db_events

        result = read_db_events(args.db, flt)
    else:
        if not args.inputs:
            raise ConfigError(f"{command} needs log files, folders or globs, or --db URL")
        period = {}
        if flt is not None:
            period = {"since": flt.since, "until": flt.until}
            if dataclasses.replace(flt, since=None, until=None) != type(flt)():
                raise ConfigError("on log files only --since and --until select records; "
                                  "the other filters select rows of --db (to cut a log "
                                  "file, use 'audit-analyzer query' first)")
        result = read_events(args.inputs, format=args.format, **period,
                             **reader_options(args))
    # one line of accounting at normal verbosity, so nothing is dropped silently
    report_read(command, result, args, output=output)
    return result


def _share(args: argparse.Namespace) -> dict[str, float]:
    share = getattr(args, "max_alert_share", None)
    return {} if share is None else {"max_alert_share": share}


def _warm_up_note(model: object) -> str:
    meta = model.metadata  # type: ignore[attr-defined]
    until = pd.Timestamp(meta["warm_up_until"])
    return (f"warm-up: windows before {until:%Y-%m-%d %H:%M} UTC "
            f"({meta['n_windows_warm_up']:,} of {meta['n_windows']:,}) build history and "
            "count no new address, resource or action (a first sensitive action, such as "
            "DeleteTrail or DCSync, still counts); time-of-day reasons wait for "
            f"{TIME_HISTORY_DAYS} days of history")


def _budget(args: argparse.Namespace) -> dict[str, float]:
    """The alert budget the user chose, or nothing so that the model's default applies."""
    return {} if args.alerts_per_day is None else {"alerts_per_day": args.alerts_per_day}


def run_train(args: argparse.Namespace) -> int:
    from analyzer.model import AuditModel

    progress = Progress()
    if (args.model is None) == (args.register is None):
        raise ConfigError("give either --model FILE or --register NAME")
    key = signing_key_for_saving(args.signing_key_file)
    output = args.model if args.model is not None else args.models / args.register
    if args.model is not None:
        check_writable(args.model, "model")
    engine = engine_from_args(args)
    progress("reading...")
    if engine is not None:  # read and fit on a Dask cluster (analyzer.engine)
        model = fit_on_engine(engine, AuditModel(window=args.window, step=args.step,
                                                 **_budget(args),
                                                 privileged_actions=args.privileged),
                              args, output=output)
        return _saved(model, args, key, progress)
    result = _read(args, "train", output=output)
    frame = result.frame
    if args.exclude_alerts is not None:
        from analyzer.feedback import leave_out_alerts, read_alerts, read_feedback

        trail = expand_paths(args.inputs) if args.exclude_alerts is True \
            else [Path(args.exclude_alerts)]
        keys = reader_options(args).get("decrypt_keys")
        unseal = None
        if keys:
            from analyzer.crypto import RecordCipher

            unseal = RecordCipher(keys=keys).unseal
        left = leave_out_alerts(frame, alerts=read_alerts(trail, unseal=unseal),
                                feedback=read_feedback(trail, unseal=unseal))
        frame = left.frame
        say(left.summary())
    progress(f"training on {len(frame):,} events...")
    model = AuditModel(window=args.window, step=args.step, **_budget(args),
                       privileged_actions=args.privileged).fit(frame)
    return _saved(model, args, key, progress)


def _saved(model: AuditModel, args: argparse.Namespace, key: bytes | None,
           progress: Progress) -> int:
    """Save (or register) the model ``train`` fitted and say where it went."""
    from analyzer.persistence import save_model

    if args.register is not None:
        from analyzer.registry import ModelRegistry

        entry = ModelRegistry(args.models).register(model, args.register, key=key)
        path, model_id = entry.artifact, entry.model_id
    else:
        path = args.model
        model_id = save_model(model, path, key=key).model_id
    progress.done()
    meta = model.metadata
    say(f"trained on {meta['n_events']:,} events ({meta['training_start'][:10]} to "
        f"{meta['training_end'][:10]}), {meta['n_windows']:,} windows; "
        f"model {model_id} written to {path} (card: {path.with_suffix('.md')})")
    if args.register is not None:
        say(f"make it current with: audit-analyzer models promote {path.stem} "
            f"--models {args.models} --log AUDIT_LOG")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from analyzer.model import AuditModel

    suppressions = None
    if args.suppressions is not None:
        from analyzer.suppression import read_suppressions

        # a malformed file stops the run before anything is read or scored
        suppressions = read_suppressions(args.suppressions)
    if args.model is None:
        from analyzer.registry import ModelRegistry

        registry = ModelRegistry(args.models)
        if registry.current() is not None:
            # the pointer must name what was last promoted, unchanged since (else refused)
            current = args.model = registry.checked_current()
            say(f"no --model given: using the registry's current model {current}")
    if args.scores is not None:
        check_writable(args.scores, "scores")
    progress = Progress()
    engine = engine_from_args(args)
    progress("reading...")
    # the Dask engine reads on the cluster as it scores: nothing is read here
    result = _read(args, "score", output=args.scores or args.audit_log) if engine is None \
        else None
    frame = None if result is None else result.frame
    fitted_here = args.model is None
    if args.model is not None:
        model = load_model_from_args(args)
        model_id = model.metadata.get("model_id", "unknown")
        model_version = model.metadata.get("created", "")
        progress("scoring...")
        if args.max_alert_share is not None:
            model.max_alert_share = args.max_alert_share
        if engine is not None:
            scores, result = score_on_engine(engine, model, args,
                                             output=args.scores or args.audit_log)
        else:
            scores = model.score(frame, alerts_per_day=args.alerts_per_day)
    else:
        say(f"no --model given: fitting a model on the input itself ({len(frame):,} events); "
            "each window is judged against the events before it")
        progress("training and scoring...")
        model = AuditModel(**_budget(args), **_share(args))
        scores = model.fit_score(frame)
        model_id, model_version = "self-fit", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        say(_warm_up_note(model))
    if suppressions is not None:
        from analyzer.suppression import apply_suppressions

        for note in suppressions.notes():
            say(f"note: {note}")
        scores = apply_suppressions(scores, suppressions, events=frame)
    progress.done()
    if not fitted_here:
        from analyzer.drift import drift_report

        drift = drift_report(model, scores)
        if drift.stale:
            say(drift.warning)
    if args.scores:
        write_scores(scores, args.scores, raw=args.raw_csv)
    recorded = _alerts_of(scores)
    alerts = [a for a in recorded if not a.suppressed]
    silenced = [a for a in recorded if a.suppressed]
    destination = _write_back_target(args)
    written = []
    if recorded and destination is not None:
        # when the alerts go back into the scored log, its reading already found the ids of
        # the alerts it holds: no second pass over the trail
        known = set(result.alert_ids) if [destination] == _input_files(args) else None
        written = _write_back(recorded, destination, args, model_id, model_version, known)
    _print_alerts(alerts, len(scores))
    if silenced:
        say(f"{len(silenced)} alert(s) suppressed (recorded at WARNING when written back): "
            + "; ".join(f"{a.entity} by {a.suppressed_by} ({a.suppression_reason})"
                        for a in silenced[:5]) + (" ..." if len(silenced) > 5 else ""))
    if result.skipped_alerts:
        say(f"({result.skipped_alerts:,} earlier alert records in the input were not scored)")
    if recorded:
        if destination is None:
            say("alerts not written back: the input is not a chained audit log; pass "
                "--audit-log PATH to record them" if not args.no_write_back
                else "alerts not written back (--no-write-back)")
        else:
            dup = len(recorded) - len(written)
            quiet = sum(a.suppressed for a in written)
            say(f"{len(written) - quiet} alert(s) written to {destination} at CRITICAL"
                + (f", {quiet} suppressed at WARNING" if quiet else "")
                + (f" ({dup} already there)" if dup else ""))
    if args.scores:
        say(f"scores of {len(scores):,} windows written to {args.scores}")
    return 1 if alerts and args.fail_on_alert else 0


def _alerts_of(scores: pd.DataFrame) -> list:
    from analyzer.alerts import alerts_from_scores

    return alerts_from_scores(scores)


def _write_back_target(args: argparse.Namespace) -> Path | None:
    if args.no_write_back:
        return None
    if args.audit_log is not None:
        return args.audit_log
    if args.db:
        return None
    paths = expand_paths(args.inputs)
    if len(paths) == 1 and (args.format or "") in ("", "jsonl"):
        from analyzer.sources import detect_format

        if detect_format(paths[0]) == "jsonl":
            return paths[0]
    return None


def _input_files(args: argparse.Namespace) -> list[Path]:
    return [] if getattr(args, "db", None) else expand_paths(args.inputs)


def _write_back(alerts: list, destination: Path, args: argparse.Namespace, model_id: str,
                model_version: str, known: set[str] | None) -> list:
    from analyzer.alerts import write_alerts
    from analyzer.logger import AuditLogger

    key = read_key_file(args.key_file)
    # alerts name users and addresses: on an encrypted trail they are sealed like the rest
    with AuditLogger(destination, key=key, name="audit.analyzer", service="audit-analyzer",
                     encryption_key=sealing_key(args)) as audit:
        return write_alerts(alerts, audit, model_id=model_id, model_version=model_version,
                            skip_ids=known)


def write_scores(scores: pd.DataFrame, path: Path, *, raw: bool = False) -> None:
    """The scores file (DESIGN contract 6): CSV, or Parquet by extension.

    In CSV, text a spreadsheet would run as a formula (an entity named ``=cmd|...``) gets a
    leading ``'`` unless ``raw`` (see :func:`~analyzer.events.formula_safe`).
    """
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".txt", ""):
        raise ConfigError(f"{path}: scores file must end in .csv or .parquet")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix in (".parquet", ".pq"):
            scores.to_parquet(path, index=False)
        else:
            import pyarrow as pa
            import pyarrow.csv as pacsv

            if not raw:
                scores = _formula_safe_text(scores)
            # arrow's writer: six times faster than pandas' on wide float frames
            pacsv.write_csv(pa.Table.from_pandas(scores, preserve_index=False), path)
    except OSError as exc:  # arrow's errors do not carry the path: name it here
        raise SourceError(f"{path}: cannot write the scores: {exc.strerror or exc}") from None


def _formula_safe_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with :func:`formula_safe` applied to its text columns (numbers untouched)."""
    out = frame
    for name in frame.columns:
        column = frame[name]
        if not (column.dtype == object or isinstance(column.dtype, pd.CategoricalDtype |
                                                      pd.StringDtype)):
            continue
        text = column.astype("string")
        risky = text.str.match(FORMULA_START.pattern, na=False)
        if risky.any():
            if out is frame:
                out = frame.copy()
            out[name] = text.where(~risky, text.map(formula_safe, na_action="ignore"))
    return out


def _print_alerts(alerts: list, n_windows: int) -> None:
    if not alerts:
        say(f"no alerts in {n_windows:,} windows")
        return
    from analyzer.alerts import incidents_of

    incidents = incidents_of(alerts)
    say(f"{len(alerts)} alert(s) in {len(incidents)} incident(s), {n_windows:,} windows:")
    for incident in incidents:
        if len(incident.alerts) > 1:
            say(f"  {printable(incident.summary)}")
    names = [printable(a.entity) for a in alerts]  # names come from the log: escape them
    width = min(28, max(len(name) for name in names))
    say(f"  {'risk':>4}  {'window (UTC)':16}  {'entity':{width}}  reasons")
    for a, name in zip(alerts, names, strict=True):
        entity = name if len(name) <= width else name[:width - 1] + "…"
        reasons = printable("; ".join(a.reasons)) or "unusual combination"
        say(f"  {a.risk_score:4.0f}  {a.window_start:%Y-%m-%d %H:%M}  {entity:{width}}  "
            f"{reasons}")


def run_demo(args: argparse.Namespace) -> int:
    from analyzer import synth
    from analyzer.alerts import write_alerts
    from analyzer.integrity import verify_log
    from analyzer.logger import AuditLogger
    from analyzer.model import AuditModel
    from analyzer.persistence import save_model

    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "audit.jsonl"
    for stale in (log, log.with_name(log.name + ".checkpoints")):
        stale.unlink(missing_ok=True)
    key_file = out / "audit.key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    key = read_key_file(key_file)
    progress = Progress()

    progress("generating the organisation...")
    config = synth.SynthConfig(seed=args.seed, days=args.days, users=args.users)
    org = synth.generate(config)
    progress(f"writing {len(org.events):,} events through the audit logger...")
    synth.write_audit_log(org.events, log, key=key)
    synth.write_labels(org.labels, out / "labels.csv")
    say(f"1. wrote {len(org.events):,} chained events for {args.users} people and service "
        f"accounts over {args.days} days to {log}")

    progress("reading the trail back...")
    frame = read_events(log).frame
    train = frame[frame["timestamp"] < org.train_end]
    test = frame[frame["timestamp"] >= org.train_end]
    progress(f"training on {len(train):,} events...")
    model = AuditModel(**_budget(args)).fit(train)
    model_path = out / "model.joblib"
    info = save_model(model, model_path, key=key)
    say(f"2. trained on the first {config.train_days} days ({len(train):,} events); model "
        f"{info.model_id} in {model_path}")

    progress("scoring the last week...")
    scores = model.score(test)
    write_scores(scores, out / "scores.csv")
    alerts = _alerts_of(scores)
    with AuditLogger(log, key=key, name="audit.analyzer", service="audit-analyzer") as audit:
        written = write_alerts(alerts, audit, model_id=info.model_id,
                               model_version=info.created)
    progress.done()
    say(f"3. scored {len(scores):,} windows of the last {config.attack_days} days; "
        f"{len(written)} alert(s) written back at CRITICAL:")
    _print_alerts(alerts, len(scores))

    report = verify_log(log, key=key)
    say(f"4. verify: {report.summary()}")

    from analyzer.evaluation import evaluate

    evaluation = evaluate(scores, org.labels, alerts_per_day=model.alerts_per_day)
    say("5. against the injected attack scenarios (labels.csv):")
    say(evaluation.to_text())
    _write_reports(out, log, scores, model_path, key)
    say(f"done in {time.perf_counter() - started:.0f} s; files in {out}/")
    return 0 if report.ok else 1


def _write_reports(out: Path, log: Path, scores: pd.DataFrame, model_path: Path,
                   key: bytes | None) -> None:
    """report.html and report.txt, when the reporting module is present."""
    try:
        from analyzer import report
    except ImportError:
        return
    report.write_reports(log, scores=scores, model_path=model_path, key=key,
                         html_path=out / "report.html", text_path=out / "report.txt")
    say(f"6. reports: {out / 'report.html'} and {out / 'report.txt'}")
