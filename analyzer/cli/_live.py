"""What the live commands (``ship``, ``watch``) share: metrics, signals, credentials from
the environment, how encrypted records are opened.

Credentials come from files (``--*-file``) or, when no file is given, from the environment
variables named in each option's help; this module is the only place that reads them.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from analyzer.cli._common import read_encryption_keys, warn
from analyzer.errors import ConfigError

#: environment variables read when the matching credential file is not given
ENV_ES_API_KEY = "AUDIT_ES_API_KEY"
ENV_ES_PASSWORD = "AUDIT_ES_PASSWORD"  # noqa: S105 - a variable name, not a password
ENV_SPLUNK_TOKEN = "AUDIT_SPLUNK_TOKEN"  # noqa: S105
ENV_WEBHOOK_TOKEN = "AUDIT_WEBHOOK_TOKEN"  # noqa: S105


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


def secret_from_env(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def unsealing(args: argparse.Namespace, *, command: str) -> Any:
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


def warn_plain_http(url: str, secret: str | None, command: str) -> None:
    if secret and url.lower().startswith("http://"):
        warn(command, f"the credential for {url.split('/')[2] if url.count('/') >= 2 else url} "
                      "is sent over plain http://: anyone on the way can read and replay "
                      "it; use https://")


def on_signals(stop: Callable[[], None]) -> Callable[[], None]:
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
