"""Commands of the analyzer: ``demo``, ``train``, ``score``, ``evaluate``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import time
from pathlib import Path
from typing import Any

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
    show_steps,
    signing_key_for_saving,
)
from analyzer.cli._engine import add_engine_options, engine_from_args
from analyzer.errors import ConfigError
from analyzer.events import printable
from analyzer.features import TIME_HISTORY_DAYS
from analyzer.pipeline import DEFAULT_CHUNK_EVENTS, ScoreRun, TrailRead, WriteBack, write_scores
from analyzer.series import checkpoint_path
from analyzer.sources import ReadResult, expand_paths, read_events

__all__ = ["register", "run_demo", "run_score", "run_train", "write_scores"]


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
    p.add_argument("--chunk-events", type=_chunk_size, default=DEFAULT_CHUNK_EVENTS,
                   metavar="N",
                   help="read JSONL and Parquet logs, and --db, in chunks of about N events "
                        "and compute the features chunk by chunk, so that memory holds one "
                        "chunk and the statistics, not the whole trail; the scores and alerts "
                        f"are those of a whole read (default {DEFAULT_CHUNK_EVENTS:,}; 0: read "
                        "the logs whole; other formats are read a file at a time)")
    add_engine_options(p)


def _chunk_size(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a number of events, 0 or more, got {text!r}")
    return value


def _chunking(args: argparse.Namespace) -> int | None:
    """``--chunk-events`` as the pipeline takes it: ``None`` reads the logs whole."""
    return args.chunk_events or None


def _source(args: argparse.Namespace, command: str, *,
            database: bool = True) -> tuple[Any, dict[str, Any]]:
    """What the command reads, and how: its files (read by the pipeline, each opened once)
    with the reader options and period, or the rows of ``--db``.

    ``database``: the command has the ``--db`` and filter options (``evaluate`` reads files
    only)."""
    from analyzer.cli.query import filter_from_args

    flt = filter_from_args(args) if database else None
    if database and args.db:
        if args.inputs:
            raise ConfigError("give log files or --db, not both")
        from analyzer.store import DatabaseEvents

        return DatabaseEvents(args.db, flt), {}
    if not args.inputs:
        raise ConfigError(f"{command} needs log files, folders or globs, or --db URL")
    period = {}
    if flt is not None:
        period = {"since": flt.since, "until": flt.until}
        if dataclasses.replace(flt, since=None, until=None) != type(flt)():
            raise ConfigError("on log files only --since and --until select records; "
                              "the other filters select rows of --db (to cut a log "
                              "file, use 'audit-analyzer query' first)")
    return args.inputs, {"format": args.format,
                         "options": reader_options(args, decrypt=True), **period}


def _read(args: argparse.Namespace, command: str, *, output: Path | None = None,
          database: bool = True) -> ReadResult:
    """Read the command's input (files or ``--db``), set aside its rejected lines beside
    ``output`` (or ``--rejected``) and print the one line of accounting."""
    source, how = _source(args, command, database=database)
    result = read_events(source, **how) if isinstance(source, list) else source.read()
    # one line of accounting at normal verbosity, so nothing is dropped silently
    report_read(command, result, args, output=output)
    return result


def _accounted(command: str, result: ReadResult, args: argparse.Namespace,
               progress: Progress, output: Path | None) -> None:
    """The read's line of accounting (and its rejected lines set aside), once it is read:
    on a line of its own, not on top of the progress line."""
    progress.done()
    report_read(command, result, args, output=output)


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
    from analyzer.persistence import save_model
    from analyzer.pipeline import train_trail

    progress = Progress()
    if (args.model is None) == (args.register is None):
        raise ConfigError("give either --model FILE or --register NAME")
    key = signing_key_for_saving(args.signing_key_file)
    output = args.model if args.model is not None else args.models / args.register
    if args.model is not None:
        check_writable(args.model, "model")
    engine = engine_from_args(args)
    progress("reading...")
    source, how = _source(args, "train")
    exclude = None
    if args.exclude_alerts is not None:
        exclude = expand_paths(args.inputs) if args.exclude_alerts is True \
            else [Path(args.exclude_alerts)]
    try:
        run = train_trail(source, AuditModel(window=args.window, step=args.step,
                                             **_budget(args),
                                             privileged_actions=args.privileged),
                          **how, exclude_alerts=exclude, chunk_events=_chunking(args),
                          engine=engine, progress=show_steps(progress),
                          on_read=lambda result: _accounted("train", result, args, progress,
                                                            output))
    finally:
        if engine is not None:
            engine.close()
    model = run.model
    if args.register is not None:
        from analyzer.registry import ModelRegistry

        entry = ModelRegistry(args.models).register(model, args.register, key=key)
        path, model_id = entry.artifact, entry.model_id
    else:
        path = args.model
        model_id = save_model(model, path, key=key).model_id
    progress.done()
    if run.left_out is not None:
        say(run.left_out.summary())
    meta = model.metadata
    say(f"trained on {meta['n_events']:,} events ({meta['training_start'][:10]} to "
        f"{meta['training_end'][:10]}), {meta['n_windows']:,} windows; "
        f"model {model_id} written to {path} (card: {path.with_suffix('.md')})")
    if args.register is not None:
        say(f"make it current with: audit-analyzer models promote {path.stem} "
            f"--models {args.models} --log AUDIT_LOG")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from analyzer.pipeline import score_trail

    suppressions = None
    if args.suppressions is not None:
        from analyzer.suppression import read_suppressions

        # a malformed file stops the run before anything is read or scored
        suppressions = read_suppressions(args.suppressions)
    _current_model(args)
    if args.scores is not None:
        check_writable(args.scores, "scores")
    progress = Progress()
    engine = engine_from_args(args)  # what the engine does not do is refused first
    try:
        # loaded before the input is read: a refused model stops the run before the work
        model = load_model_from_args(args) if args.model is not None else None
        progress("reading...")
        source, how = _source(args, "score")

        def on_read(result: ReadResult) -> None:
            _accounted("score", result, args, progress, args.scores or args.audit_log)
            if model is None:
                say("no --model given: fitting a model on the input itself "
                    f"({result.n_used:,} events); each window is judged against the events "
                    "before it")

        run = score_trail(source, model, **how, alerts_per_day=args.alerts_per_day,
                          max_alert_share=args.max_alert_share, suppressions=suppressions,
                          scores_path=args.scores, raw_csv=args.raw_csv,
                          write_back=lambda result: _write_back_target(args, result),
                          chunk_events=_chunking(args), engine=engine,
                          progress=show_steps(progress), on_read=on_read,
                          on_scored=lambda scored: _say_scored(scored, progress))
    finally:
        if engine is not None:
            engine.close()
    _say_score_run(run, args)
    return 1 if run.active and args.fail_on_alert else 0


def _current_model(args: argparse.Namespace) -> None:
    """The model ``score`` uses: ``--model``, else the registry's current one (set as
    ``args.model``), else none (fitted on the input itself)."""
    if args.model is None:
        from analyzer.registry import ModelRegistry

        registry = ModelRegistry(args.models)
        if registry.current() is not None:
            # the pointer must name what was last promoted, unchanged since (else refused)
            current = args.model = registry.checked_current()
            say(f"no --model given: using the registry's current model {current}")


def _say_scored(run: ScoreRun, progress: Progress) -> None:
    """What ``score`` says once the windows are scored, before it writes anything."""
    progress.done()
    if run.fitted:
        say(_warm_up_note(run.model))
    for note in run.notes:
        say(f"note: {note}")
    if run.drift is not None and run.drift.stale:
        say(run.drift.warning)


def _say_score_run(run: ScoreRun, args: argparse.Namespace) -> None:
    """What ``score`` prints once the run is done, from what it returned."""
    alerts, silenced = run.active, run.suppressed
    _print_alerts(alerts, len(run.scores))
    if silenced:
        say(f"{len(silenced)} alert(s) suppressed (recorded at WARNING when written back): "
            + "; ".join(f"{a.entity} by {a.suppressed_by} ({a.suppression_reason})"
                        for a in silenced[:5]) + (" ..." if len(silenced) > 5 else ""))
    if run.reading.skipped_alerts:
        say(f"({run.reading.skipped_alerts:,} earlier alert records in the input were not "
            "scored)")
    if run.alerts:
        if run.destination is None:
            say("alerts not written back: the input is not a chained audit log; pass "
                "--audit-log PATH to record them" if not args.no_write_back
                else "alerts not written back (--no-write-back)")
        else:
            dup = len(run.alerts) - len(run.written)
            quiet = sum(a.suppressed for a in run.written)
            say(f"{len(run.written) - quiet} alert(s) written to {run.destination} at CRITICAL"
                + (f", {quiet} suppressed at WARNING" if quiet else "")
                + (f" ({dup} already there)" if dup else ""))
    if args.scores:
        say(f"scores of {len(run.scores):,} windows written to {args.scores}")


def _write_back_target(args: argparse.Namespace, result: ReadResult) -> WriteBack | None:
    """Where ``score`` records its alerts: ``--audit-log``, else the input itself when it
    is one chained audit log (known from its reading: no second look at the file)."""
    if args.no_write_back:
        return None
    destination = args.audit_log
    if destination is None and not args.db:
        paths = expand_paths(args.inputs)
        if len(paths) == 1 and result.formats == ("jsonl",):
            destination = paths[0]
    if destination is None:
        return None
    # alerts name users and addresses: on an encrypted trail they are sealed like the rest
    return WriteBack(Path(destination), key=read_key_file(args.key_file),
                     encryption_key=sealing_key(args))


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
    from analyzer.model import AuditModel
    from analyzer.persistence import save_model
    from analyzer.pipeline import read_trail, score_trail, train_trail

    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "audit.jsonl"
    key = _demo_key(out, log)
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
    reading = read_events(log)
    frame = reading.frame
    train = frame[frame["timestamp"] < org.train_end]
    test = frame[frame["timestamp"] >= org.train_end]
    progress(f"training on {len(train):,} events...")
    model = train_trail(train, AuditModel(**_budget(args))).model
    model_path = out / "model.joblib"
    info = save_model(model, model_path, key=key)
    say(f"2. trained on the first {config.train_days} days ({len(train):,} events); model "
        f"{info.model_id} in {model_path}")

    progress("scoring the last week...")
    # the log was just read: the alerts it holds are known, no second pass to find them
    run = score_trail(dataclasses.replace(reading, frame=test), model, check_drift=False,
                      scores_path=out / "scores.csv",
                      write_back=WriteBack(log, key=key, model_id=info.model_id,
                                           model_version=info.created,
                                           known_ids=reading.alert_ids))
    progress.done()
    say(f"3. scored {len(run.scores):,} windows of the last {config.attack_days} days; "
        f"{len(run.written)} alert(s) written back at CRITICAL:")
    _print_alerts(list(run.alerts), len(run.scores))

    # one pass over the finished trail serves the verdict and the report
    trail = read_trail(log, key=key, verify=True, alert_records=True)
    report = trail.verification
    assert report is not None  # the demo's own log is one chained audit log
    say(f"4. verify: {report.summary()}")

    from analyzer.evaluation import evaluate

    evaluation = evaluate(run.scores, org.labels, alerts_per_day=model.alerts_per_day)
    say("5. against the injected attack scenarios (labels.csv):")
    say(evaluation.to_text())
    _write_reports(out, log, run.scores, model_path, key, trail)
    say(f"done in {time.perf_counter() - started:.0f} s; files in {out}/")
    return 0 if report.ok else 1


def _demo_key(out: Path, log: Path) -> bytes | None:
    """A fresh demo log, and the demo's integrity key (made once, private)."""
    for stale in (log, checkpoint_path(log)):
        stale.unlink(missing_ok=True)
    key_file = out / "audit.key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return read_key_file(key_file)


def _write_reports(out: Path, log: Path, scores: pd.DataFrame, model_path: Path,
                   key: bytes | None, trail: TrailRead) -> None:
    """report.html and report.txt, when the reporting module is present."""
    try:
        from analyzer import report
    except ImportError:
        return
    report.write_reports(log, scores=scores, model_path=model_path, key=key, trail=trail,
                         html_path=out / "report.html", text_path=out / "report.txt")
    say(f"6. reports: {out / 'report.html'} and {out / 'report.txt'}")
