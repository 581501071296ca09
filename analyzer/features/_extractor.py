"""The fitted feature extractor (see :mod:`analyzer.features`).

Fitting and transforming run in two phases (:mod:`._stats`, :mod:`._windows`): the
organisation-wide statistics of the events, then the windows given them. In memory, a frame is
one chunk and one block; :mod:`analyzer.streaming` runs the same phases over chunks of a log
larger than memory, and gets the same windows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from analyzer.errors import ConfigError
from analyzer.features import _families as fam
from analyzer.features._events import FIELDS, EventArrays, prepare
from analyzer.features._evidence import credential_first_times
from analyzer.features._stats import (
    NOVELTY_PAIRS,
    Lookup,
    PartialStats,
    StatsSpec,
    WindowContext,
    fail_origin,
    org_table,
    stats_of,
)
from analyzer.features._table import (
    DEFAULT_PRIVILEGED_ACTIONS,
    ENTITY_TYPES,
    feature_names,
)
from analyzer.features._windows import (
    HOUR_KERNEL,
    TIME_HISTORY_DAYS,
    WEEKDAY_HISTORY_DAYS,
    Block,
    Failures,
    finish_windows,
    surprisal,
    weekday,
    window_block,
)

__all__ = ["TIME_HISTORY_DAYS", "WEEKDAY_HISTORY_DAYS", "FeatureExtractor", "describe_hour"]

logger = logging.getLogger(__name__)

_NS_PER_MINUTE = 60_000_000_000
_NS_PER_HOUR = 60 * _NS_PER_MINUTE
_NEVER = np.iinfo(np.int64).max
_BEFORE_ALL = np.iinfo(np.int64).min
# An hour of the week is "quiet" when it holds less than this share of an average hour.
_QUIET_SHARE = 0.25
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The tables of first times phase 2 looks rows up in.
_FIRST_TABLES = ("nov:", "use:", "first:", "user_from_address", "done_from_address")


def _parse_span(value: str | pd.Timedelta | None, name: str) -> int:
    try:
        span = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{name}: not a duration: {value!r} (try '1h' or '15min')") from None
    ns = int(span.value)
    if ns < _NS_PER_MINUTE:
        raise ConfigError(f"{name}: must be at least one minute, got {value!r}")
    return ns


class FeatureExtractor(BaseEstimator):
    """Turns an events frame into per-window features, comparing each entity to its past.

    Parameters
    ----------
    window : str, default "1h"
        Window length, a pandas duration. Windows are aligned to the Unix epoch, so hour
        windows start on UTC hours and day windows at UTC midnight.
    step : str or None, default None
        Distance between window starts; ``None`` means tumbling windows. Must divide
        ``window``.
    privileged_actions : sequence of str or None, default None
        Glob patterns for privileged actions; ``None`` means
        :data:`DEFAULT_PRIVILEGED_ACTIONS`.
    n_peers : int, default 5
        Size of each user's peer group, the users with the most similar resources and
        actions (cosine over inverse-frequency weights).

    Attributes
    ----------
    vocab_ : dict of str to ndarray
        Names seen in training per field (user, source_ip, action, resource, country).
    n_events_, period_ : int, tuple of Timestamp
        Training events and first/last training timestamps.

    Examples
    --------
    >>> import pandas as pd
    >>> train = pd.DataFrame({"timestamp": pd.to_datetime(["2026-01-05 09:00"], utc=True),
    ...     "user": ["alice"], "action": ["login"], "outcome": ["success"],
    ...     "source_ip": ["10.0.0.1"], "resource": [""]})
    >>> fx = FeatureExtractor().fit(train)
    >>> later = train.assign(source_ip=["203.0.113.9"])
    >>> fx.transform(later).query("entity_type == 'user'")["n_new_ips"].tolist()
    [1.0]
    """

    def __init__(self, *, window: str = "1h", step: str | None = None,
                 privileged_actions: Sequence[str] | None = None, n_peers: int = 5) -> None:
        self.window = window
        self.step = step
        self.privileged_actions = privileged_actions
        self.n_peers = n_peers

    # a scikit-learn estimator (parameters in __init__, learned attributes end in "_"); the
    # parameters and errors stay this project's own (ConfigError) and the repr shows them all
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"window": self.window, "step": self.step,
                "privileged_actions": self.privileged_actions, "n_peers": self.n_peers}

    def set_params(self, **params: Any) -> FeatureExtractor:
        for key, value in params.items():
            if key not in self.get_params():
                raise ConfigError(f"FeatureExtractor has no parameter {key!r}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"FeatureExtractor({args})"

    def _spans(self) -> tuple[int, int]:
        window = _parse_span(self.window, "window")
        step = window if self.step is None else _parse_span(self.step, "step")
        if window % step:
            raise ConfigError(f"step {self.step!r} must divide window {self.window!r}")
        if window // step > 96:
            raise ConfigError(f"window {self.window!r} / step {self.step!r} is too many "
                              "overlapping windows (at most 96)")
        return window, step

    def _patterns(self) -> tuple[str, ...]:
        if self.privileged_actions is None:
            return DEFAULT_PRIVILEGED_ACTIONS
        if isinstance(self.privileged_actions, str):
            return (self.privileged_actions,)
        return tuple(self.privileged_actions)

    @property
    def feature_names_(self) -> dict[str, list[str]]:
        """Feature columns per entity type."""
        return {e: feature_names(e) for e in ENTITY_TYPES}

    def fit(self, frame: pd.DataFrame) -> FeatureExtractor:
        """Learn vocabularies and entity profiles from ``frame``; returns ``self``."""
        self.fit_transform(frame)
        return self

    def fit_transform(self, frame: pd.DataFrame, *, details: bool = False) -> pd.DataFrame:
        """Fit, and return the training windows with novelty computed "as seen so far".

        Unlike ``fit(frame).transform(frame)`` (where nothing in ``frame`` is new), a value
        counts as new in the first window where it appears, so these rows carry the normal
        rate of novelty the detector must learn. This is also how a log is scored against
        itself (prequentially): each window is compared only with what came before it.
        With ``details``, the ``d_*`` columns name what was new, as in :meth:`transform`.
        """
        spec = self.stats_spec(fitting=True)
        events = prepare(frame, None, spec.patterns)
        ctx = self.finalize_stats(stats_of(events, spec), fitting=True)
        out = self.finish_windows(ctx, [window_block(ctx, events, details=details)],
                                  details=details)
        logger.debug("fitted features on %d events, %d windows", events.n, len(out))
        return out

    def transform(self, frame: pd.DataFrame, *, details: bool = True) -> pd.DataFrame:
        """Per-window features of ``frame`` against the fitted profiles.

        With ``details`` (the default), columns ``d_*`` name what was new in each window
        (addresses, countries, resources, actions), for the reasons of alerts.
        """
        spec = self.stats_spec(fitting=False)
        events = prepare(frame, spec.vocab, spec.patterns)
        ctx = self.finalize_stats(stats_of(events, spec), fitting=False)
        return self.finish_windows(ctx, [window_block(ctx, events, details=details)],
                                   details=details)

    def _check_fitted(self) -> None:
        if not hasattr(self, "vocab_"):
            from sklearn.exceptions import NotFittedError
            raise NotFittedError("this FeatureExtractor is not fitted yet; call fit first")

    # -- the two phases ---------------------------------------------------------------------

    def stats_spec(self, *, fitting: bool) -> StatsSpec:
        """What phase 1 needs (:func:`~analyzer.features._stats.chunk_stats`): to fit, or to
        window a log against this fitted profile."""
        window, step = self._spans()
        if fitting:
            if not isinstance(self.n_peers, int | np.integer) or self.n_peers < 0:
                raise ConfigError(f"n_peers must be a non-negative integer, got "
                                  f"{self.n_peers!r}")
            return StatsSpec(window, step, self._patterns())
        self._check_fitted()
        return StatsSpec(self.window_ns_, self.step_ns_, self._patterns(), dict(self.vocab_))

    def finalize_stats(self, stats: PartialStats, *, fitting: bool) -> WindowContext:
        """The context phase 2 needs, from the merged statistics of a whole log. When
        ``fitting``, the profile is learnt from them first (this extractor is fitted; the
        typical volumes and last novelties follow in :meth:`finish_windows`)."""
        if fitting:
            self._fit_profile(stats)
        window, step = self.window_ns_, self.step_ns_
        widths = {f: len(v) for f, v in stats.names.items()}
        first = {name: Lookup.of(tab, widths) for name, tab in stats.tables.items()
                 if name.startswith(_FIRST_TABLES)}
        org = org_table(stats, step)
        # a profile saved before storms were features compares with the log's own past
        typical = None if fitting else getattr(self, "org_failing_typical_", None)
        days = stats.tables["days"].keys[:, 0]
        if not fitting:
            known_days = getattr(self, "active_days_", None)
            days = None if known_days is None else np.unique(np.r_[known_days, days])
        cred = stats.tables["cred_address"]
        known = {f: len(v) for f, v in stats.names.items()} if fitting else stats.known
        return WindowContext(
            window=window, step=step, fitting=fitting, profile=self, names=stats.names,
            known=known, first=first, org=org,
            storm=fam.storm_windows(org, typical, step), days=days,
            fail_origin={e: o for e in ENTITY_TYPES
                         if (o := fail_origin(stats, e, window, step)) is not None},
            credential_first=credential_first_times(cred.keys[:, 0], cred.values),
            units=self._unit_surprisal(stats) if fitting else {},
            peer_first=self._peer_first(stats) if fitting else {},
            period=(stats.bounds["t_min"], stats.bounds["t_max"]) if stats.n else None,
            n_events=stats.n)

    def window_block(self, ctx: WindowContext, events: EventArrays, *, lo: int | None = None,
                     hi: int | None = None, failures: Failures | None = None,
                     details: bool = True) -> Block:
        """Phase 2 on one block (see :func:`~analyzer.features._windows.window_block`)."""
        return window_block(ctx, events, lo=lo, hi=hi, failures=failures, details=details)

    def finish_windows(self, ctx: WindowContext, blocks: list[Block], *,
                       details: bool) -> pd.DataFrame:
        """The window table of a log from its blocks (in time order)."""
        if ctx.fitting:
            self.typical_events_: dict[str, np.ndarray] = {}
            self.typical_bytes_: dict[str, np.ndarray] = {}
            self.last_novel_: dict[str, np.ndarray] = {}
        out = finish_windows(ctx, blocks, details=details)
        if ctx.fitting:  # entity types without windows get empty profiles
            for etype in ENTITY_TYPES:
                n_ent = len(self.vocab_[etype])
                self.typical_events_.setdefault(etype, np.full(n_ent, np.nan))
                self.typical_bytes_.setdefault(etype, np.full(n_ent, np.nan))
            self.last_novel_.setdefault("user", np.full(len(self.vocab_["user"]),
                                                        _BEFORE_ALL))
        return out

    # -- fitting the profile ------------------------------------------------------------------

    def _fit_profile(self, stats: PartialStats) -> None:
        window, step = self._spans()
        self.window_ns_, self.step_ns_ = window, step
        self.vocab_ = {f: stats.names[f] for f in FIELDS}
        self.n_events_ = stats.n
        if stats.n:
            self.period_ = (pd.Timestamp(stats.bounds["t_min"], tz="UTC"),
                            pd.Timestamp(stats.bounds["t_max"], tz="UTC"))
        else:
            self.period_ = (None, None)
        widths = {f: len(v) for f, v in stats.names.items()}
        self.pairs_: dict[tuple[str, str], np.ndarray] = {
            pair: Lookup.of(stats.tables[f"nov:{pair[0]}:{pair[1]}"], widths).keys
            for pair in NOVELTY_PAIRS}
        self._fit_peers()
        self._fit_time(stats)
        country = stats.tables["country"]
        n_countries = len(self.vocab_["country"])
        counts = np.zeros(n_countries, dtype=np.int64)
        counts[country.keys[:, 0]] = country.values
        # smoothed share; a country never seen gets the share of a single event
        self.country_share_ = (counts + 1.0) / (counts.sum() + n_countries + 1.0)
        self.country_unseen_ = 1.0 / (counts.sum() + n_countries + 1.0)
        self.active_days_ = stats.tables["days"].keys[:, 0].copy()
        self._fit_activity(stats)

    def _fit_peers(self) -> None:
        """Peer groups from co-access, and what each group has touched."""
        n_users = len(self.vocab_["user"])
        own = {attr: self.pairs_[("user", attr)] for attr in ("resource", "action")}
        widths = {attr: max(len(self.vocab_[attr]), 1) for attr in own}
        self.peers_ = _peer_groups(own, widths, n_users, self.n_peers)
        self.peer_keys_: dict[str, np.ndarray] = {
            attr: _expand_to_peers(own[attr], widths[attr], self.peers_) for attr in own}

    def _fit_activity(self, stats: PartialStats) -> None:
        """When each entity was first and last seen doing something itself, and the
        organisation's typical number of failing addresses per window."""
        self.first_seen_: dict[str, np.ndarray] = {}
        self.last_seen_: dict[str, np.ndarray] = {}
        for etype in ENTITY_TYPES:
            n_ent = len(self.vocab_[etype])
            for store, name, fill in ((self.first_seen_, "first", _NEVER),
                                      (self.last_seen_, "last", _BEFORE_ALL)):
                table = stats.tables[f"{name}:{etype}"]
                values = np.full(n_ent, fill)
                values[table.keys[:, 0]] = table.values
                store[etype] = values
        # distinct failing addresses summed over the windows: the rows of the (slot,
        # address) set
        addresses = len(stats.tables["org_addresses"])
        slots = ((stats.bounds["t_max"] - stats.bounds["t_min"]) // self.step_ns_ + 1) \
            if stats.n else 1
        self.org_failing_typical_ = float(addresses) / slots

    def _fit_time(self, stats: PartialStats) -> None:
        """Hour and weekday profiles per entity, the organisation's priors and quiet hours."""
        self.hour_counts_: dict[str, np.ndarray] = {}
        self.weekday_counts_: dict[str, np.ndarray] = {}
        all_units = []
        for etype in ENTITY_TYPES:
            units = stats.tables[f"units:{etype}"].keys
            ent_u, hb = units[:, 0], units[:, 1]
            n_ent = len(self.vocab_[etype])
            self.hour_counts_[etype] = _count_matrix(ent_u, hb % 24, n_ent, 24)
            self.weekday_counts_[etype] = _count_matrix(ent_u, weekday(hb), n_ent, 7)
            all_units.append(hb)
        hb = np.concatenate(all_units) if all_units else np.zeros(0, dtype=np.int64)
        hours = np.bincount(hb % 24, minlength=24).astype(float) + 1.0
        days = np.bincount(weekday(hb), minlength=7).astype(float) + 1.0
        self.hour_prior_ = hours / hours.sum()
        self.weekday_prior_ = days / days.sum()
        how = np.bincount(weekday(hb) * 24 + hb % 24, minlength=168).astype(float)
        self.quiet_hours_ = how < _QUIET_SHARE * how.mean() if len(hb) else \
            np.zeros(168, dtype=bool)

    def _unit_surprisal(self, stats: PartialStats
                        ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Fitting: each (entity, hour) unit's hour and weekday surprisal against the units
        of the same entity before it ("as seen so far")."""
        out = {}
        for etype in ENTITY_TYPES:
            units = stats.tables[f"units:{etype}"].keys  # sorted by entity, then hour
            ent_u, hb = units[:, 0], units[:, 1]
            hour, day = hb % 24, weekday(hb)
            frame = pd.DataFrame({"e": ent_u, "h": hour, "d": day})
            c_day = frame.groupby(["e", "d"], sort=False).cumcount().to_numpy()
            total = frame.groupby("e", sort=False).cumcount().to_numpy()
            # units of the same entity in each nearby hour of day, before this unit
            by_hour = np.sort((ent_u * 24 + hour) * (1 << 32) + hb)
            c_hour = np.zeros(len(ent_u))
            for offset, weight in HOUR_KERNEL:
                key = (ent_u * 24 + (hour + offset) % 24) * (1 << 32)
                c_hour += weight * (np.searchsorted(by_hour, key + hb, side="left")
                                    - np.searchsorted(by_hour, key, side="left"))
            s_hour, s_day = surprisal(c_hour, c_day, total, hour, day, self.hour_prior_,
                                      self.weekday_prior_)
            out[etype] = (ent_u * (1 << 32) + hb, s_hour, s_day)
        return out

    def _peer_first(self, stats: PartialStats) -> dict[str, Lookup]:
        """Fitting: for each (user, value) pair, when anyone in the user's group first
        touched the value."""
        out = {}
        for attr in ("resource", "action"):
            own = Lookup.of(stats.tables[f"nov:user:{attr}"],
                            {attr: len(stats.names[attr])})
            group = _group_first(own.keys, own.values, own.width, self.peers_) \
                if len(own.keys) else own.values
            out[attr] = Lookup(own.keys, group.astype(np.int64), own.width)
        return out


# -- helpers used by the extractor --------------------------------------------------------------

def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sorting beats np.unique's hashing on large int64 arrays)."""
    ordered = np.sort(values)
    if not len(ordered):
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def _count_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    flat = np.bincount(rows * n_cols + cols, minlength=n_rows * n_cols)
    return flat[: n_rows * n_cols].reshape(n_rows, n_cols).astype(np.int32)


def _peer_groups(own: dict[str, np.ndarray], widths: dict[str, int], n_users: int,
                 n_peers: int) -> np.ndarray:
    """For each user, the ``n_peers`` users with the most similar resources and actions
    (``own``: the sorted keys ``user * width + value`` each user touched itself)."""
    if n_users < 2 or n_peers == 0:
        return np.full((n_users, 0), -1, dtype=np.int64)
    from scipy import sparse

    blocks = []
    offset = 0
    for attr in ("resource", "action"):
        keys, width = own[attr], widths[attr]
        blocks.append((keys // width, keys % width + offset))
        offset += width
    rows = np.concatenate([b[0] for b in blocks])
    cols = np.concatenate([b[1] for b in blocks])
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, offset))
    # inverse document frequency: sharing a rare resource says more than sharing "login"
    df = np.asarray(matrix.sum(axis=0)).ravel()
    idf = np.log((n_users + 1) / (df + 1))
    matrix = matrix @ sparse.diags(idf)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    matrix = sparse.diags(1 / np.where(norms > 0, norms, 1)) @ matrix
    k = min(n_peers, n_users - 1)
    peers = np.full((n_users, k), -1, dtype=np.int64)
    chunk = max(1, 4_000_000 // max(n_users, 1))
    for lo in range(0, n_users, chunk):  # one pass per block of users, not per event
        hi = min(lo + chunk, n_users)
        sim = (matrix[lo:hi] @ matrix.T).toarray()
        sim[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        good = np.take_along_axis(sim, top, axis=1) > 0
        peers[lo:hi] = np.where(good, top, -1)
    return peers


def _peer_edges(peers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user, member) pairs of every user's group, the user included."""
    n_users = len(peers)
    users = np.repeat(np.arange(n_users, dtype=np.int64), peers.shape[1])
    members = peers.ravel()
    ok = members >= 0
    own = np.arange(n_users, dtype=np.int64)
    return np.r_[own, users[ok]], np.r_[own, members[ok]]


def _expand_to_peers(own_keys: np.ndarray, width: int, peers: np.ndarray) -> np.ndarray:
    """Keys (user * width + value) for every value a member of the user's group touched."""
    if not len(own_keys):
        return own_keys
    users, members = _peer_edges(peers)
    table = pd.DataFrame({"member": own_keys // width, "value": own_keys % width})
    edges = pd.DataFrame({"user": users, "member": members})
    joined = edges.merge(table, on="member")
    return _unique(joined["user"].to_numpy() * width + joined["value"].to_numpy())


def _group_first(own_pairs: np.ndarray, own_first: np.ndarray, width: int,
                 peers: np.ndarray) -> np.ndarray:
    """For each (user, value) pair, the earliest time anyone in the user's group touched it."""
    users, members = _peer_edges(peers)
    table = pd.DataFrame({"member": own_pairs // width, "value": own_pairs % width,
                          "first": own_first})
    edges = pd.DataFrame({"user": users, "member": members})
    joined = edges.merge(table, on="member")
    key = joined["user"].to_numpy() * width + joined["value"].to_numpy()
    best = pd.Series(joined["first"].to_numpy()).groupby(key).min()
    return best.reindex(own_pairs).to_numpy()


def describe_hour(window_start: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Hour text ("03:00") and weekday name of window starts, for reasons."""
    ts = pd.to_datetime(window_start, utc=True)
    hours = ts.dt.strftime("%H:00").to_numpy(dtype=object)
    days = np.asarray(_WEEKDAYS, dtype=object)[ts.dt.day_of_week.to_numpy()]
    return hours, days
