"""``--engine`` and ``--scheduler`` for ``train`` and ``score``: where the pipeline runs.

The default is the local engine (this process). ``--engine dask`` runs the pipeline on a
Dask cluster (:mod:`analyzer.engine`): the one at ``--scheduler ADDRESS``, else the one named
by ``AUDIT_DASK_SCHEDULER``, else a ``LocalCluster`` sized to this machine. ``--scheduler``
alone implies ``--engine dask``; the environment variable alone does not, so a variable left
in a shell never sends a trail to a cluster the command line did not ask for. Only this
module reads that variable (the library never reads the environment).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

from analyzer.errors import ConfigError

if TYPE_CHECKING:
    from analyzer.engine import DaskEngine

#: The environment variable naming the scheduler of ``--engine dask``.
SCHEDULER_VARIABLE = "AUDIT_DASK_SCHEDULER"


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine``, ``--scheduler`` and ``--decrypt-on-workers`` on a reading command."""
    parser.add_argument("--engine", choices=("local", "dask"), default=None,
                        help="where the pipeline runs: this process (local, the default) or "
                             "a Dask cluster (needs the dask extra: pip install "
                             "'audit-analyzer[dask]')")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="Dask scheduler to use, e.g. tcp://10.0.0.5:8786 (implies "
                             f"--engine dask; default: ${SCHEDULER_VARIABLE}, else a local "
                             "cluster sized to this machine)")
    parser.add_argument("--decrypt-on-workers", action="store_true",
                        help="with --engine dask on an encrypted trail: let this process "
                             "decrypt the records and send their decrypted columns to the "
                             "workers (the keys never leave this process)")


def engine_from_args(args: argparse.Namespace) -> DaskEngine | None:
    """The Dask engine the options ask for, connected; ``None`` for the local engine.

    Raises :class:`ConfigError` (one line, exit 2) when the dask extra is missing, and for
    options the Dask engine does not take.
    """
    engine = getattr(args, "engine", None)
    scheduler = getattr(args, "scheduler", None)
    if engine == "local":
        if scheduler:
            raise ConfigError("--scheduler is for --engine dask, not --engine local")
        return None
    if engine is None and not scheduler:
        return None
    _check_options(args)
    from analyzer.engine import DaskEngine, dask_available

    if not dask_available():
        raise ConfigError("--engine dask needs the dask extra: pip install "
                          "'audit-analyzer[dask]'")
    address = scheduler or os.environ.get(SCHEDULER_VARIABLE) or None
    if getattr(args, "verbose", 0) < 2:
        _quiet_distributed()
    engine = DaskEngine.connect(address)
    from analyzer.cli._common import say

    say(f"Dask engine: {engine.n_workers} worker(s) at "
        f"{address or 'a local cluster'}; dashboard: {engine.dashboard_link or 'none'}")
    return engine


def _quiet_distributed() -> None:
    """distributed logs every worker's coming and going at INFO, on loggers it sets to INFO
    itself when imported: only warnings reach the terminal (``-vv`` shows them all)."""
    import distributed  # noqa: F401 - its import sets the levels overridden here

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.WARNING)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse, before a cluster is reached, what the Dask engine does not do."""
    if getattr(args, "db", None):
        raise ConfigError("--engine dask reads log files, folders and URLs, not --db")
    if args.command == "score" and getattr(args, "model", None) is None:
        raise ConfigError("score --engine dask needs a model (--model, or a registry's "
                          "current one); fitting on the input itself runs locally")
    if getattr(args, "exclude_alerts", None) is not None:
        raise ConfigError("--exclude-alerts runs locally, not with --engine dask")
    if getattr(args, "encryption_key_file", None) and not args.decrypt_on_workers:
        raise ConfigError("an encrypted trail's decrypted fields would go to the Dask "
                          "workers: add --decrypt-on-workers to allow it (the keys stay "
                          "here), or read its clear fields only with --clear-only")
