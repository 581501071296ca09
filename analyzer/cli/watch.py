"""The ``watch`` command: follow a live audit log, re-score open windows, alert at once."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from analyzer.cli._common import (
    add_command,
    add_encryption_options,
    add_key_option,
    add_model_options,
    load_model_from_args,
    read_key_file,
    say,
    sealing_key,
    warn,
)
from analyzer.cli._live import (
    ENV_WEBHOOK_TOKEN,
    add_metrics_option,
    on_signals,
    secret_from_env,
    start_metrics,
    unsealing,
    warn_plain_http,
)
from analyzer.events import printable


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run_watch)


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
        from analyzer.files import read_secret
        from analyzer.sinks.http import WebhookSink

        token = read_secret(args.webhook_token_file) if args.webhook_token_file else \
            secret_from_env(ENV_WEBHOOK_TOKEN)
        warn_plain_http(args.webhook, token, "watch")
        sink = WebhookSink(args.webhook, ca_file=args.ca_file,
                           headers={"Authorization": f"Bearer {token}"} if token else None)
        start_at_end_if_new(args.log, sink.name)
        shipping = BackgroundShipper(args.log, [sink], audit=audit, select=is_alert)
        shipping.start()
    watcher = Watcher(args.log, score_windows=score_windows, on_alert=on_alert,
                      interval=args.interval,
                      window=getattr(model, "window", "1h"), grace=args.grace,
                      from_end=args.from_end,
                      unseal=getattr(unsealing(args, command="watch"), "unseal", None),
                      on_stats=(lambda stats: warn("watch", stats.summary()))
                      if args.stats_every > 0 else None,
                      stats_every=args.stats_every if args.stats_every > 0 else 60.0)
    restore = on_signals(watcher.stop)
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
