"""Windows and features: the normalized events frame becomes one row of named numbers per window.

A window is (entity type, entity, window start, window end), DESIGN contract 4. Entities are
users and source addresses; windows are one-hour tumbling windows aligned to UTC hours unless
``window``/``step`` say otherwise. Each window gets the features listed in :data:`FEATURES`:
volume and failures, diversity, novelty against the entity's own past and its peers', time of
day and week against the entity's habits, privileged actions and data volume, and failures
followed by a success.

What is learned from training (vocabularies, what each entity and its peer group has touched,
hours, typical volumes) lives in a fitted :class:`FeatureExtractor`. Its ``fit_transform``
computes novelty "as seen so far" in time order, so that training windows show the normal rate
of novelty; ``transform`` compares new windows with the whole fitted profile.

Everything here is array and group-by code: no Python loop runs per event.

The computation has two phases, so that a log larger than memory can be windowed in chunks
(:mod:`analyzer.streaming`, and a Dask cluster) with the same result as in memory:
organisation-wide statistics as a map-reduce (:func:`chunk_stats` maps a chunk of events to
:class:`PartialStats`, :func:`merge_stats` reduces, :meth:`FeatureExtractor.finalize_stats`
fits the profile and returns the :class:`WindowContext`), then the windows of each block of
events given that context (:meth:`FeatureExtractor.window_block`, independent blocks) and a
last pass over the window table (:meth:`FeatureExtractor.finish_windows`).

>>> import pandas as pd
>>> frame = pd.DataFrame({
...     "timestamp": pd.to_datetime(["2026-01-05 09:10", "2026-01-05 09:20",
...                                  "2026-01-05 10:05"], utc=True),
...     "user": ["alice", "alice", "bob"], "action": ["login", "dataset.read", "login"],
...     "outcome": ["success", "success", "failure"], "source_ip": ["10.0.0.1"] * 3,
...     "resource": ["", "sales", ""]})
>>> windows = FeatureExtractor().fit_transform(frame)
>>> print(windows[["entity_type", "entity", "n_events", "n_failures"]].to_string(index=False))
entity_type   entity  n_events  n_failures
       user    alice       2.0         0.0
       user      bob       1.0         1.0
  source_ip 10.0.0.1       2.0         0.0
  source_ip 10.0.0.1       1.0         1.0
"""

from __future__ import annotations

from analyzer.features._events import EventArrays
from analyzer.features._extractor import (
    TIME_HISTORY_DAYS,
    WEEKDAY_HISTORY_DAYS,
    FeatureExtractor,
    describe_hour,
)
from analyzer.features._stats import (
    PartialStats,
    StatsSpec,
    WindowContext,
    chunk_stats,
    merge_stats,
)
from analyzer.features._table import (
    DEFAULT_PRIVILEGED_ACTIONS,
    ENTITY_TYPES,
    FEATURES,
    WINDOW_COLUMNS,
    Feature,
    agree,
    as_template_plural,
    detector_features,
    feature_names,
    privileged_mask,
    source_entities,
)
from analyzer.features._windows import Block, Failures

__all__ = [
    "DEFAULT_PRIVILEGED_ACTIONS",
    "ENTITY_TYPES",
    "FEATURES",
    "TIME_HISTORY_DAYS",
    "WEEKDAY_HISTORY_DAYS",
    "WINDOW_COLUMNS",
    "Block",
    "EventArrays",
    "Failures",
    "Feature",
    "FeatureExtractor",
    "PartialStats",
    "StatsSpec",
    "WindowContext",
    "agree",
    "as_template_plural",
    "chunk_stats",
    "describe_hour",
    "detector_features",
    "feature_names",
    "merge_stats",
    "privileged_mask",
    "source_entities",
]

