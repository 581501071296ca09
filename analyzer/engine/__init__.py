"""Where the pipeline runs: this process (the default), or a Dask cluster.

``audit-analyzer train|score --engine dask [--scheduler tcp://host:8786]`` runs the same
pipeline as the local engine on a Dask cluster (the ``dask`` extra: ``dask[dataframe]`` and
``distributed``). The inputs become partitions (:mod:`analyzer.engine.partitions`); the
workers read them, compute the features in two phases and fit the detectors (one per entity
type, side by side); the client assembles the model and writes the alerts back, so the
results are those of the local engine
(:mod:`analyzer.engine.dask_engine`). Nothing here imports dask until a cluster is asked for:
without the extra, the rest of the package works as before.
"""

from __future__ import annotations

import importlib.util

from analyzer.engine.dask_engine import DaskEngine, EngineProgress
from analyzer.engine.partitions import Partition, plan_partitions

__all__ = ["DaskEngine", "EngineProgress", "Partition", "dask_available", "plan_partitions"]


def dask_available() -> bool:
    """True when the ``dask`` extra (``dask`` and ``distributed``) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("dask", "distributed"))
