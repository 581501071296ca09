"""The Dask engine: the pipeline's two feature phases on a cluster, the model on the client.

dask and distributed are imported inside the functions that need them, so this module (and
the package) import without the extra.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from analyzer.errors import ConfigError

__all__ = ["DaskEngine"]

logger = logging.getLogger(__name__)

#: Seconds to wait for a scheduler to answer before giving up with one line.
CONNECT_TIMEOUT = 20


class DaskEngine:
    """A connection to a Dask cluster, and the pipeline run on it.

    Build it with :meth:`connect`; close it (or use it as a context manager) to release a
    cluster it started.
    """

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client = client
        self._cluster = cluster

    @classmethod
    def connect(cls, address: str | None = None, *, n_workers: int | None = None,
                threads_per_worker: int = 1) -> DaskEngine:
        """Connect to the scheduler at ``address`` (``tcp://host:8786``), or start a
        ``LocalCluster`` of ``n_workers`` processes (default: one per core of this machine,
        one thread each: the feature code is numpy and pandas, which hold the GIL often)."""
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("the Dask engine needs the dask extra: pip install "
                              "'audit-analyzer[dask]'") from None
        if address:
            try:
                client = Client(address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {address}: "
                                  f"{exc}") from None
            return cls(client)
        workers = n_workers or max(1, os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                               processes=True, silence_logs=logging.WARNING)
        return cls(Client(cluster), cluster)

    @property
    def dashboard_link(self) -> str | None:
        """The cluster's dashboard, for the command line to print."""
        link = getattr(self.client, "dashboard_link", None)
        return str(link) if link else None

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        """Disconnect; stop the local cluster this engine started (never a remote one)."""
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
