"""Real-time commands: ``ship`` (deliver the log to a destination), ``watch`` (alert live)
and ``retention`` (delete old rotated files once every destination has shipped them).

Credentials come from files (``--*-file``) or, when no file is given, from the environment
variables named in each option's help; this module is the only place that reads them.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analyzer.cli._common import (
    add_command,
    add_encryption_options,
    add_key_option,
    add_model_options,
    load_model_from_args,
    read_encryption_keys,
    read_key_file,
    say,
    sealing_key,
    warn,
)
from analyzer.errors import ConfigError
from analyzer.events import printable

_DESTINATIONS = ("elasticsearch", "cloudwatch", "syslog", "splunk", "webhook", "sqlite",
                 "postgres")

#: environment variables read when the matching credential file is not given
ENV_ES_API_KEY = "AUDIT_ES_API_KEY"
ENV_ES_PASSWORD = "AUDIT_ES_PASSWORD"  # noqa: S105 - a variable name, not a password
ENV_SPLUNK_TOKEN = "AUDIT_SPLUNK_TOKEN"  # noqa: S105
ENV_WEBHOOK_TOKEN = "AUDIT_WEBHOOK_TOKEN"  # noqa: S105


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "ship", help="deliver an audit log to Elasticsearch, CloudWatch Logs, syslog, "
                          "Splunk, a webhook, SQLite or PostgreSQL, at least once, from a "
                          "cursor kept beside it",
        example="audit-analyzer ship audit.jsonl --to elasticsearch --url https://es:9200 "
                "--index 'audit-{yyyy.MM.dd}' --api-key-file es.key\n"
                "audit-analyzer ship audit.jsonl --to cloudwatch --group /ai/audit "
                "--stream api-1 --region eu-west-1 --once\n"
                "audit-analyzer ship audit.jsonl --to syslog --address tcp://siem:6514 --tls "
                "--ca-file siem-ca.pem\n"
                "audit-analyzer ship audit.jsonl --to webhook --url https://hooks.example/a "
                "--only alerts\n"
                "audit-analyzer ship audit.jsonl --to sqlite --db audit.db --once\n"
                "audit-analyzer ship audit.jsonl --to postgres --dsn postgresql://audit@db/audit")
    p.add_argument("log", type=Path, help="the audit log to ship")
    p.add_argument("--to", required=True, choices=_DESTINATIONS, help="destination type")
    p.add_argument("--once", action="store_true",
                   help="ship what is in the log now and exit (default: follow it)")
    p.add_argument("--only", choices=("all", "alerts"), default="all",
                   help="ship every event (default) or analyzer alerts only")
    p.add_argument("--name", help="names the cursor and dead-letter files beside the log "
                                  "(default: the destination type); one per destination")
    p.add_argument("--batch", type=int, default=500, metavar="N", help="records per batch")
    p.add_argument("--give-up-after", type=float, metavar="SECONDS",
                   help="fail when nothing could be delivered for this long (default: keep "
                        "retrying until interrupted)")
    p.add_argument("--stats-every", type=float, default=60.0, metavar="SECONDS",
                   help="when following, print counts this often (0: only at the end)")
    add_encryption_options(p, reading=True)
    http = p.add_argument_group("HTTP destinations (elasticsearch, splunk, webhook)")
    http.add_argument("--url", help="base URL, e.g. https://es:9200")
    http.add_argument("--ca-file", type=Path, help="CA bundle to verify the server with")
    http.add_argument("--insecure", action="store_true",
                      help="do not verify the server's TLS certificate (not for production)")
    es = p.add_argument_group("elasticsearch")
    es.add_argument("--index", default="audit-{yyyy.MM.dd}",
                    help="index name or template with date tokens from each event's "
                         "@timestamp (default: audit-{yyyy.MM.dd})")
    es.add_argument("--api-key-file", type=Path,
                    help=f"API key (id:key or base64) file; else ${ENV_ES_API_KEY}")
    es.add_argument("--username", help="basic auth user (with --password-file)")
    es.add_argument("--password-file", type=Path,
                    help=f"basic auth password file; else ${ENV_ES_PASSWORD}")
    es.add_argument("--op-type", choices=("create", "index"), default="create",
                    help="create (default: a resend is a no-op) or index (overwrite)")
    cw = p.add_argument_group("cloudwatch (credentials: boto3's chain)")
    cw.add_argument("--group", help="log group, created if missing")
    cw.add_argument("--stream", help="log stream, created if missing")
    cw.add_argument("--region")
    cw.add_argument("--profile", help="AWS profile of the shared config")
    cw.add_argument("--endpoint-url", help="CloudWatch Logs endpoint (VPC endpoint, tests)")
    sl = p.add_argument_group("syslog")
    sl.add_argument("--address", help="udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")
    sl.add_argument("--tls", action="store_true", help="TLS (RFC 5425) on a tcp:// address")
    sl.add_argument("--cert-file", type=Path, help="client certificate for mutual TLS")
    sl.add_argument("--client-key-file", type=Path, help="its private key")
    sl.add_argument("--facility", type=int, default=13, help="syslog facility (13: log audit)")
    sl.add_argument("--sd-id", default="audit@32473",
                    help="structured-data ID, name@<your private enterprise number>")
    db = p.add_argument_group("sqlite, postgres (the file stays the source of truth)")
    db.add_argument("--db", type=Path, metavar="PATH", help="SQLite database file")
    db.add_argument("--dsn", metavar="URL",
                    help="PostgreSQL connection (password from PGPASSWORD or ~/.pgpass, never "
                         "in the URL)")
    tok = p.add_argument_group("splunk, webhook")
    tok.add_argument("--token-file", type=Path,
                     help=f"Splunk HEC token or webhook bearer token file; else "
                          f"${ENV_SPLUNK_TOKEN} / ${ENV_WEBHOOK_TOKEN}")
    tok.add_argument("--splunk-index", help="Splunk index")
    add_metrics_option(p)
    add_key_option(p)
    p.set_defaults(func=run_ship)

    p = add_command(
        sub, "watch", help="follow a live audit log, re-score open windows every few seconds "
                           "and write alerts back at CRITICAL as soon as a window crosses the "
                           "threshold",
        example="audit-analyzer watch audit.jsonl --model models/acme.joblib "
                "--signing-key-file model.key\n"
                "audit-analyzer watch audit.jsonl --model models/acme.joblib "
                "--signing-key-file model.key --webhook https://hooks.example/alerts "
                "--interval 5")
    p.add_argument("log", type=Path, help="the audit log to follow (alerts are written to it)")
    add_model_options(p, required=True)
    add_encryption_options(p, reading=True)
    p.add_argument("--interval", type=float, default=15.0, metavar="SECONDS",
                   help="re-score windows that received events this often (default 15)")
    p.add_argument("--grace", type=float, default=300.0, metavar="SECONDS",
                   help="accept late events this long after a window ends (default 300)")
    p.add_argument("--alerts-per-day", type=float, help="alert budget (default: the model's)")
    p.add_argument("--from-end", action="store_true",
                   help="start at the end of the log: score only what is appended from now "
                        "on (a saved watch state is still resumed)")
    p.add_argument("--stats-every", type=float, default=60.0, metavar="SECONDS",
                   help="print counts and lag on stderr this often (0: never; default 60)")
    p.add_argument("--webhook", metavar="URL",
                   help="also POST each alert to this URL (alerts already in the log when "
                        "the webhook is first used are not sent)")
    p.add_argument("--webhook-token-file", type=Path,
                   help=f"bearer token for the webhook; else ${ENV_WEBHOOK_TOKEN}")
    p.add_argument("--ca-file", type=Path, help="CA bundle for the webhook's TLS")
    add_metrics_option(p)
    p.add_argument("--verify-every", type=float, metavar="SECONDS",
                   help="verify the chain of what was appended since the last check this "
                        "often, and warn when a record does not hold (default: 60 with "
                        "--metrics-address, else never; 0: never)")
    add_key_option(p)
    p.set_defaults(func=run_watch)

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


# -- metrics -------------------------------------------------------------------------------


def add_metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-address", metavar="[HOST:]PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (needs the "
             "'observability' extra; HOST defaults to 127.0.0.1; any other address exposes "
             "them to the network: protect it)")


def start_metrics(args: argparse.Namespace) -> tuple[Any, Callable[[], None]]:
    """``(AuditMetrics, stop)`` when ``--metrics-address`` is given, else ``(None, noop)``."""
    if not args.metrics_address:
        return None, lambda: None
    from analyzer.metrics import AuditMetrics, parse_address, serve

    address = parse_address(args.metrics_address)
    metrics = AuditMetrics()
    stop = serve(metrics, address)
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    warn(args.command, f"metrics on http://{host}:{address[1]}/metrics")
    return metrics, stop


def start_verifying(args: argparse.Namespace, metrics: Any, key: bytes | None,
                    done: threading.Event) -> threading.Thread | None:
    """Verify the log's chain incrementally every ``--verify-every`` seconds, in a thread
    that ends when ``done`` is set; warn once when a record does not hold."""
    from analyzer.chain_monitor import ChainMonitor

    every = args.verify_every if args.verify_every is not None else \
        (60.0 if metrics is not None else 0.0)
    if every <= 0:
        return None
    monitor = ChainMonitor(args.log, key=key, metrics=metrics)

    def loop() -> None:
        try:
            while True:
                status = monitor.step()
                if not status.intact:
                    warn("watch", f"the audit chain does not hold: {status.problem}; run "
                                  "'audit-analyzer verify' for the details")
                    return
                if done.wait(every):
                    return
        finally:
            monitor.close()

    thread = threading.Thread(target=loop, name="audit-verify", daemon=True)
    thread.start()
    return thread


# -- ship ----------------------------------------------------------------------------------


def _secret_from_env(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise ConfigError(f"--to {args.to} needs {', '.join(missing)}")


def _unsealing(args: argparse.Namespace, *, command: str) -> Any:
    """How ``ship`` or ``watch`` reads records encrypted at rest: the cipher that opens them
    (with keys); ``None`` to take them as stored (``--clear-only``, or a clear log); without
    either, an encrypted log is refused, naming what to pass."""
    from analyzer.crypto import RecordCipher, starts_sealed

    keys = read_encryption_keys(args.encryption_key_file)
    if keys:
        return RecordCipher(keys=keys)
    if not args.clear_only and starts_sealed(args.log):
        raise ConfigError(f"{args.log}: records are encrypted at rest; pass the encryption "
                          f"key (--encryption-key-file), or --clear-only to {command} them "
                          "as stored (clear fields only)")
    return None


def _record_unsealer(cipher: Any) -> Any:
    from analyzer.sinks.shipper import unsealer

    return None if cipher is None else unsealer(cipher)


def build_sink(args: argparse.Namespace) -> Any:
    """The destination the options describe (credentials from files or the environment)."""
    from analyzer.sinks._http import read_secret

    name = args.name or args.to
    verify = not args.insecure
    if args.to == "sqlite":
        from analyzer.sinks.sqlite import SqliteSink

        _need(args, "db")
        return SqliteSink(args.db, name=name)
    if args.to == "postgres":
        from analyzer.sinks.postgres import PostgresSink
        from analyzer.store import redact_dsn

        _need(args, "dsn")
        if redact_dsn(args.dsn) != args.dsn:  # user:pw@, ?password=, password=... alike
            raise ConfigError("--dsn must not carry a password; use PGPASSWORD or ~/.pgpass")
        return PostgresSink(args.dsn, name=name)
    if args.to == "elasticsearch":
        from analyzer.sinks.elasticsearch import ElasticsearchSink

        _need(args, "url")
        api_key = read_secret(args.api_key_file) if args.api_key_file else None
        password = read_secret(args.password_file) if args.password_file else None
        if api_key is None and args.username is None:
            api_key = _secret_from_env(ENV_ES_API_KEY)
        if args.username is not None and password is None:
            password = _secret_from_env(ENV_ES_PASSWORD)
            if password is None:
                raise ConfigError(f"--username needs --password-file (or ${ENV_ES_PASSWORD})")
        _warn_plain_http(args.url, api_key or password, "ship")
        return ElasticsearchSink(args.url, index=args.index, api_key=api_key,
                                 username=args.username, password=password,
                                 ca_file=args.ca_file, verify=verify, op_type=args.op_type,
                                 name=name)
    if args.to == "cloudwatch":
        from analyzer.sinks.cloudwatch import CloudWatchSink

        _need(args, "group", "stream")
        return CloudWatchSink(args.group, args.stream, region=args.region,
                              endpoint_url=args.endpoint_url, profile=args.profile, name=name)
    if args.to == "syslog":
        from analyzer.sinks.syslog import SyslogSink

        _need(args, "address")
        return SyslogSink(args.address, tls=args.tls, ca_file=args.ca_file, verify=verify,
                          cert_file=args.cert_file, key_file=args.client_key_file,
                          facility=args.facility, sd_id=args.sd_id, name=name)
    if args.to == "splunk":
        from analyzer.sinks.http import SplunkHecSink

        _need(args, "url")
        token = read_secret(args.token_file) if args.token_file else \
            _secret_from_env(ENV_SPLUNK_TOKEN)
        if token is None:
            raise ConfigError(f"--to splunk needs --token-file (or ${ENV_SPLUNK_TOKEN})")
        _warn_plain_http(args.url, token, "ship")
        return SplunkHecSink(args.url, token=token, index=args.splunk_index,
                             ca_file=args.ca_file, verify=verify, name=name)
    from analyzer.sinks.http import WebhookSink

    _need(args, "url")
    token = read_secret(args.token_file) if args.token_file else \
        _secret_from_env(ENV_WEBHOOK_TOKEN)
    _warn_plain_http(args.url, token, "ship")
    return WebhookSink(args.url, headers={"Authorization": f"Bearer {token}"} if token else None,
                       ca_file=args.ca_file, verify=verify, name=name)


def _warn_plain_http(url: str, secret: str | None, command: str) -> None:
    if secret and url.lower().startswith("http://"):
        warn(command, f"the credential for {url.split('/')[2] if url.count('/') >= 2 else url} "
                      "is sent over plain http://: anyone on the way can read and replay "
                      "it; use https://")


def _on_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGINT/SIGTERM call ``stop`` (a clean stop); returns what restores the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: object) -> None:
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def run_ship(args: argparse.Namespace) -> int:
    from analyzer.logger import AuditLogger
    from analyzer.sinks.shipper import Shipper, is_alert

    if not args.log.exists():
        raise FileNotFoundError(2, "no such file", str(args.log))
    key = read_key_file(args.key_file)
    sink = build_sink(args)
    metrics, stop_metrics = start_metrics(args)
    # Rejected records are reported into the shipped log itself, continuing its chain,
    # sealed with the trail's key; without it (--clear-only) they are reported on stderr
    # and in the dead-letter file only, never written in clear into an encrypted trail.
    from analyzer.crypto import trail_is_sealed

    encryption = sealing_key(args)
    audit = None
    if encryption is not None or not trail_is_sealed(args.log):
        audit = AuditLogger(args.log, key=key, name="audit-analyzer.ship",
                            encryption_key=encryption)
    shipper = Shipper(args.log, sink, batch_records=args.batch, audit=audit,
                      select=is_alert if args.only == "alerts" else None,
                      transform=_record_unsealer(_unsealing(args, command="ship")))
    if metrics is not None:
        metrics.watch_shipper(shipper)
    restore = _on_signals(shipper.stop)
    done = threading.Event()
    if not args.once and args.stats_every > 0:
        def report() -> None:
            while not done.wait(args.stats_every):
                warn("ship", shipper.stats().summary())

        threading.Thread(target=report, daemon=True).start()
    try:
        stats = shipper.run(follow=not args.once, give_up_after=args.give_up_after)
    finally:
        restore()
        done.set()
        stop_metrics()
        sink.close()
        if audit is not None:
            audit.close()
    say(stats.summary())
    if stats.rejected:
        warn("ship", f"{stats.rejected:,} records rejected for good: see {shipper.dead_letter}")
        return 1
    return 0


# -- watch ---------------------------------------------------------------------------------


def start_at_end_if_new(log: Path, destination: str) -> bool:
    """Give a destination without a cursor one at the end of the log; True if it did.

    A webhook added to ``watch`` on a log that already holds alerts must not post them all
    again: it starts with what is written from now on. Once it has a cursor it resumes
    from it as any destination does, so nothing written while it was stopped is lost.
    """
    from analyzer.sinks.shipper import cursor_at_end, cursor_path, save_cursor

    path = cursor_path(log, destination)
    if path.exists():
        return False
    save_cursor(path, cursor_at_end(log))
    return True


def run_watch(args: argparse.Namespace) -> int:
    from analyzer.logger import AuditLogger
    from analyzer.sinks.background import BackgroundShipper
    from analyzer.sinks.shipper import is_alert
    from analyzer.watch import Watcher, alert_writer, model_scorer

    if not args.log.exists():
        raise FileNotFoundError(2, "no such file", str(args.log))
    model = load_model_from_args(args)
    meta = getattr(model, "metadata", {}) or {}
    key = read_key_file(args.key_file)
    audit = AuditLogger(args.log, key=key, name="audit-analyzer.watch",
                        encryption_key=sealing_key(args))
    metrics, stop_metrics = start_metrics(args)
    score_windows = model_scorer(model, alerts_per_day=args.alerts_per_day)
    if metrics is not None:
        from analyzer.metrics import observed_scorer

        score_windows = observed_scorer(score_windows, metrics, model=model)
    write = alert_writer(audit, model_id=str(meta.get("model_id", "unknown")),
                         model_version=str(meta.get("created", "")))

    def on_alert(rows: Any) -> None:
        write(rows)
        if metrics is not None:
            metrics.alerted(rows)
        for row in rows.itertuples(index=False):
            label = "UPDATE" if row.update else "ALERT"
            say(f"{label} {row.entity_type} {printable(str(row.entity))} "
                f"{row.window_start:%Y-%m-%d %H:%M} risk {getattr(row, 'risk_score', 0):.0f}: "
                f"{printable(str(row.reasons))}")

    shipping = None
    if args.webhook:
        from analyzer.sinks._http import read_secret
        from analyzer.sinks.http import WebhookSink

        token = read_secret(args.webhook_token_file) if args.webhook_token_file else \
            _secret_from_env(ENV_WEBHOOK_TOKEN)
        _warn_plain_http(args.webhook, token, "watch")
        sink = WebhookSink(args.webhook, ca_file=args.ca_file,
                           headers={"Authorization": f"Bearer {token}"} if token else None)
        start_at_end_if_new(args.log, sink.name)
        shipping = BackgroundShipper(args.log, [sink], audit=audit, select=is_alert)
        shipping.start()
    watcher = Watcher(args.log, score_windows=score_windows, on_alert=on_alert,
                      interval=args.interval,
                      window=getattr(model, "window", "1h"), grace=args.grace,
                      from_end=args.from_end,
                      unseal=getattr(_unsealing(args, command="watch"), "unseal", None),
                      on_stats=(lambda stats: warn("watch", stats.summary()))
                      if args.stats_every > 0 else None,
                      stats_every=args.stats_every if args.stats_every > 0 else 60.0)
    restore = _on_signals(watcher.stop)
    done = threading.Event()
    verifying = start_verifying(args, metrics, key, done)
    say(f"watching {args.log} (re-scoring every {args.interval:g} s; Ctrl-C to stop)")
    try:
        stats = watcher.run()
    finally:
        restore()
        done.set()
        if verifying is not None:
            verifying.join(timeout=10)
        stop_metrics()
        if shipping is not None:
            shipping.stop(timeout=10)
        audit.close()
    say(f"stopped: {stats.events:,} events, {stats.alerts} alerts, {stats.updates} updates")
    return 0


# -- retention -----------------------------------------------------------------------------


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
