"""The ``ship`` command: deliver an audit log to a destination, at least once, from a cursor
kept beside it."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from analyzer.cli._common import (
    add_command,
    add_encryption_options,
    add_key_option,
    read_key_file,
    say,
    sealing_key,
    warn,
)
from analyzer.cli._live import (
    ENV_ES_API_KEY,
    ENV_ES_PASSWORD,
    ENV_SPLUNK_TOKEN,
    ENV_WEBHOOK_TOKEN,
    add_metrics_option,
    on_signals,
    secret_from_env,
    start_metrics,
    unsealing,
    warn_plain_http,
)
from analyzer.errors import ConfigError

_DESTINATIONS = ("elasticsearch", "cloudwatch", "syslog", "splunk", "webhook", "sqlite",
                 "postgres")


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
    _add_destination_options(p)
    add_metrics_option(p)
    add_key_option(p)
    p.set_defaults(func=run_ship)
    p.set_defaults(func=run_ship)


def _add_destination_options(p: argparse.ArgumentParser) -> None:
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


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise ConfigError(f"--to {args.to} needs {', '.join(missing)}")


def _record_unsealer(cipher: Any) -> Any:
    from analyzer.sinks.shipper import unsealer

    return None if cipher is None else unsealer(cipher)


def build_sink(args: argparse.Namespace) -> Any:
    """The destination the options describe (credentials from files or the environment)."""
    from analyzer.files import read_secret

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
            api_key = secret_from_env(ENV_ES_API_KEY)
        if args.username is not None and password is None:
            password = secret_from_env(ENV_ES_PASSWORD)
            if password is None:
                raise ConfigError(f"--username needs --password-file (or ${ENV_ES_PASSWORD})")
        warn_plain_http(args.url, api_key or password, "ship")
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
            secret_from_env(ENV_SPLUNK_TOKEN)
        if token is None:
            raise ConfigError(f"--to splunk needs --token-file (or ${ENV_SPLUNK_TOKEN})")
        warn_plain_http(args.url, token, "ship")
        return SplunkHecSink(args.url, token=token, index=args.splunk_index,
                             ca_file=args.ca_file, verify=verify, name=name)
    from analyzer.sinks.http import WebhookSink

    _need(args, "url")
    token = read_secret(args.token_file) if args.token_file else \
        secret_from_env(ENV_WEBHOOK_TOKEN)
    warn_plain_http(args.url, token, "ship")
    return WebhookSink(args.url, headers={"Authorization": f"Bearer {token}"} if token else None,
                       ca_file=args.ca_file, verify=verify, name=name)


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
                      transform=_record_unsealer(unsealing(args, command="ship")))
    if metrics is not None:
        metrics.watch_shipper(shipper)
    restore = on_signals(shipper.stop)
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
