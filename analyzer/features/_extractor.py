"""The fitted feature extractor and the array code behind it (see :mod:`analyzer.features`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.errors import ConfigError, SchemaError
from analyzer.events import REQUIRED_FRAME_COLUMNS
from analyzer.features import _evidence
from analyzer.features import _families as fam
from analyzer.features._table import (
    _DETAIL_COLUMNS,
    DEFAULT_PRIVILEGED_ACTIONS,
    ENTITY_TYPES,
    _all_feature_names,
    feature_names,
    privileged_mask,
    source_entities,
)

logger = logging.getLogger(__name__)

# Attributes each entity type is profiled on: (entity type, attribute) -> novelty feature.
_NOVELTY: dict[tuple[str, str], str] = {
    ("user", "source_ip"): "n_new_ips",
    ("user", "country"): "n_new_countries",
    ("user", "resource"): "n_new_resources",
    ("user", "action"): "n_new_actions",
    ("source_ip", "user"): "n_new_users",
    ("source_ip", "action"): "n_new_actions",
}
#: Novelty of a user against the user's own history (zero in the account's first window).
_OWN_NOVELTY_USER = (*(f for (e, _), f in _NOVELTY.items() if e == "user"),
                     "new_privileged_events")
_FIELDS = ("user", "source_ip", "action", "resource", "country")
_NS_PER_MINUTE = 60_000_000_000
_NS_PER_HOUR = 60 * _NS_PER_MINUTE
# Pseudo-count pulling a short history towards the organisation's hour profile.
_PRIOR_STRENGTH = 5.0
# An hour of the week is "quiet" when it holds less than this share of an average hour.
_QUIET_SHARE = 0.25
# An hour of day or weekday is unusual for an entity below 2% of its activity.
_UNUSUAL = float(np.log(50.0))
# Time of day is continuous: activity at 17:00 makes 18:00 less surprising than 03:00. An
# entity's hour profile is smoothed over neighbouring hours (weights by distance in hours),
# so a short history that happens to lack one evening hour does not make it "unusual".
_HOUR_KERNEL: tuple[tuple[int, float], ...] = (
    (-2, 0.25), (-1, 0.5), (0, 1.0), (1, 0.5), (2, 0.25))
_KERNEL_MASS = sum(w for _, w in _HOUR_KERNEL)
# Time-of-day and weekday features mean nothing until the organisation has history to
# compare with (the entity's own profile is shrunk towards the organisation's): below these
# many distinct UTC days of earlier activity they are muted (0), so a one-hour log never
# says "active at 11:00, unusual for X". Weekdays need a week to have been seen at all.
TIME_HISTORY_DAYS = 3
WEEKDAY_HISTORY_DAYS = 7
_NS_PER_DAY = 24 * 60 * _NS_PER_MINUTE
# How far back the "in the last day" features look.
_TRAILING = 24 * _NS_PER_HOUR
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# -- preparing the frame ---------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class _Prepared:
    """The frame as integer arrays: one entry per (non-alert) event."""

    t: np.ndarray
    codes: dict[str, np.ndarray]
    names: dict[str, np.ndarray]
    known: dict[str, int]
    fail: np.ndarray
    succ: np.ndarray
    nbytes: np.ndarray
    seq: np.ndarray | None
    priv: np.ndarray
    evidence: _evidence.Evidence

    @property
    def n(self) -> int:
        return len(self.t)


def _encode(series: pd.Series | None, n: int,
            vocab: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes for a string column against ``vocab`` (-1 for empty or missing).

    Values not in ``vocab`` get codes from ``len(vocab)`` on, so a code tells at once whether
    the value was seen in training. Returns codes, the extended names and ``len(vocab)``.
    """
    if series is None:
        base = np.empty(0, dtype=object) if vocab is None else vocab
        return np.full(n, -1, dtype=np.int64), base, len(base)
    cat = series if isinstance(series.dtype, pd.CategoricalDtype) else \
        series.astype("category")
    cats = np.asarray(cat.cat.categories.astype(str), dtype=object)
    cc = cat.cat.codes.to_numpy().astype(np.int64)
    nonempty = np.array([bool(c.strip()) for c in cats], dtype=bool) if len(cats) else \
        np.zeros(0, dtype=bool)  # one check per distinct value, not per event
    used = np.bincount(cc[cc >= 0], minlength=len(cats)) > 0
    if vocab is None:
        vocab = np.sort(cats[nonempty & used])
    mapping = pd.Index(vocab, dtype=object).get_indexer(cats).astype(np.int64)
    # Values new to the vocabulary are numbered in sorted order, and only those with rows:
    # the codes then do not depend on the column's category order (a whole file lists its
    # categories in order of first appearance, a day's partition only its own), so the same
    # events give the same windows, in the same order, however they were read.
    new = np.flatnonzero((mapping < 0) & nonempty & used)
    new = new[np.argsort(cats[new], kind="stable")]
    mapping[mapping < 0] = -1
    mapping[new] = len(vocab) + np.arange(len(new))
    mapping[~nonempty] = -1
    codes = np.where(cc >= 0, mapping[np.maximum(cc, 0)], -1) if len(cats) else \
        np.full(n, -1, dtype=np.int64)
    return codes, np.concatenate([vocab, cats[new]]).astype(object), len(vocab)


def _prepare(frame: pd.DataFrame, vocab: dict[str, np.ndarray] | None,
             patterns: Sequence[str]) -> _Prepared:
    missing = [c for c in REQUIRED_FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"events frame: missing required column(s): {', '.join(missing)}")
    if "kind" in frame.columns:
        # the analyzer never scores its own alerts as activity
        keep = ~(frame["kind"] == "alert").fillna(False).to_numpy(dtype=bool)
        if not keep.all():
            frame = frame.loc[keep]
    n = len(frame)
    ts = frame["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        try:
            ts = pd.to_datetime(ts, utc=True)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"events frame: timestamp is not a time: {exc}") from None
    t = ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]")
    if n and np.isnat(t).any():
        raise SchemaError("events frame: timestamp has missing values")
    codes: dict[str, np.ndarray] = {}
    names: dict[str, np.ndarray] = {}
    known: dict[str, int] = {}
    for field in _FIELDS:
        column = source_entities(frame) if field == "source_ip" else \
            frame[field] if field in frame.columns else None
        codes[field], names[field], known[field] = _encode(
            column, n, None if vocab is None else vocab[field])
    outcome = frame["outcome"]
    fail = (outcome == "failure").fillna(False).to_numpy(dtype=bool)
    succ = (outcome == "success").fillna(False).to_numpy(dtype=bool)
    if "bytes" in frame.columns:
        nbytes = pd.to_numeric(frame["bytes"], errors="coerce").astype("float64") \
            .fillna(0.0).clip(lower=0).to_numpy()
    else:
        nbytes = np.zeros(n)
    seq = None
    if "sequence" in frame.columns:
        seq = pd.to_numeric(frame["sequence"], errors="coerce").astype("float64") \
            .fillna(-1).to_numpy().astype(np.int64)
    action_priv = privileged_mask(names["action"], patterns)
    a = codes["action"]
    priv = np.where(a >= 0, action_priv[np.maximum(a, 0)], False) if len(action_priv) else \
        np.zeros(n, dtype=bool)
    evidence = _evidence.gather(frame, user_codes=codes["user"], user_names=names["user"],
                                action_codes=a, action_names=names["action"])
    return _Prepared(t=t.view(np.int64), codes=codes, names=names, known=known, fail=fail,
                     succ=succ, nbytes=nbytes, seq=seq, priv=priv, evidence=evidence)


# -- small array helpers ----------------------------------------------------------------------

def _distinct(win: np.ndarray, codes: np.ndarray, n_win: int,
              mask: np.ndarray | None = None) -> np.ndarray:
    """Distinct non-negative codes per window."""
    ok = codes >= 0 if mask is None else mask & (codes >= 0)
    if not ok.any():
        return np.zeros(n_win)
    width = int(codes[ok].max()) + 1
    # sort-based: faster than np.unique's hashing on a million int64 keys
    keys = np.sort(win[ok] * width + codes[ok])
    first = np.r_[True, keys[1:] != keys[:-1]]
    return np.bincount(keys // width, first, minlength=n_win)


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sorting beats np.unique's hashing on large int64 arrays)."""
    ordered = np.sort(values)
    if not len(ordered):
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def _in_sorted(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Membership of ``query`` in the sorted array ``keys``."""
    if not len(keys):
        return np.zeros(len(query), dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[pos] == query


def _first_time(keys: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Earliest ``t`` among rows sharing each row's key, per row."""
    return pd.Series(t).groupby(keys, sort=False).transform("min").to_numpy()


def _describe(win: np.ndarray, codes: np.ndarray, names: np.ndarray, mask: np.ndarray,
              n_win: int, *, counts: bool = False, limit: int = 3) -> np.ndarray:
    """Per window, a short text naming the values selected by ``mask`` (most frequent first)."""
    out = np.full(n_win, "", dtype=object)
    sel = mask & (codes >= 0)
    if not sel.any():
        return out
    pairs = pd.DataFrame({"w": win[sel], "c": codes[sel]})
    tally = pairs.value_counts(sort=False).rename("k").reset_index()
    tally = tally.sort_values(["w", "k", "c"], ascending=[True, False, True], kind="stable")
    total = tally.groupby("w", sort=False)["c"].transform("size").to_numpy()
    rank = tally.groupby("w", sort=False).cumcount().to_numpy()
    keep = rank < limit
    tally = tally[keep]
    label = pd.Series(names[tally["c"].to_numpy()], index=tally.index).astype(str)
    if counts:
        label = tally["k"].astype(str) + " " + label
    w, texts, rank = tally["w"].to_numpy(), label.to_numpy(dtype=object), rank[keep]
    # joined one rank at a time (at most ``limit`` passes), never one window at a time
    for r in range(limit):
        at = rank == r
        out[w[at]] = texts[at] if r == 0 else out[w[at]] + ", " + texts[at]
    extra = total[keep][rank == 0] - limit
    first = w[rank == 0]
    out[first[extra > 0]] += " and " + extra[extra > 0].astype(str).astype(object) + " more"
    return out


# -- the extractor ----------------------------------------------------------------------------

def _parse_span(value: str | pd.Timedelta | None, name: str) -> int:
    try:
        span = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{name}: not a duration: {value!r} (try '1h' or '15min')") from None
    ns = int(span.value)
    if ns < _NS_PER_MINUTE:
        raise ConfigError(f"{name}: must be at least one minute, got {value!r}")
    return ns


class FeatureExtractor:
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

    # sklearn-style plumbing, so the extractor shows its parameters like any estimator
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
        self._fit(frame)
        return self

    def fit_transform(self, frame: pd.DataFrame, *, details: bool = False) -> pd.DataFrame:
        """Fit, and return the training windows with novelty computed "as seen so far".

        Unlike ``fit(frame).transform(frame)`` (where nothing in ``frame`` is new), a value
        counts as new in the first window where it appears, so these rows carry the normal
        rate of novelty the detector must learn. This is also how a log is scored against
        itself (prequentially): each window is compared only with what came before it.
        With ``details``, the ``d_*`` columns name what was new, as in :meth:`transform`.
        """
        return self._fit(frame, details=details)

    def transform(self, frame: pd.DataFrame, *, details: bool = True) -> pd.DataFrame:
        """Per-window features of ``frame`` against the fitted profiles.

        With ``details`` (the default), columns ``d_*`` name what was new in each window
        (addresses, countries, resources, actions), for the reasons of alerts.
        """
        self._check_fitted()
        prep = _prepare(frame, self.vocab_, self._patterns())
        return self._windows(prep, fitting=False, details=details)

    def _check_fitted(self) -> None:
        if not hasattr(self, "vocab_"):
            from sklearn.exceptions import NotFittedError
            raise NotFittedError("this FeatureExtractor is not fitted yet; call fit first")

    # -- fitting --------------------------------------------------------------------------

    def _fit(self, frame: pd.DataFrame, *, details: bool = False) -> pd.DataFrame:
        window, step = self._spans()
        if not isinstance(self.n_peers, int | np.integer) or self.n_peers < 0:
            raise ConfigError(f"n_peers must be a non-negative integer, got {self.n_peers!r}")
        prep = _prepare(frame, None, self._patterns())
        self.window_ns_, self.step_ns_ = window, step
        self.vocab_ = {f: prep.names[f][:prep.known[f]] for f in _FIELDS}
        self.n_events_ = prep.n
        if prep.n:
            self.period_ = (pd.Timestamp(int(prep.t.min()), tz="UTC"),
                            pd.Timestamp(int(prep.t.max()), tz="UTC"))
        else:
            self.period_ = (None, None)
        self.pairs_: dict[tuple[str, str], np.ndarray] = {}
        for (etype, attr) in _NOVELTY:
            self.pairs_[(etype, attr)] = _pair_keys(prep, etype, attr)
        self._fit_peers(prep)
        self._fit_time(prep)
        country = prep.codes["country"]
        n_countries = prep.known["country"]
        counts = np.bincount(country[country >= 0], minlength=n_countries)[:n_countries]
        # smoothed share; a country never seen gets the share of a single event
        self.country_share_ = (counts + 1.0) / (counts.sum() + n_countries + 1.0)
        self.country_unseen_ = 1.0 / (counts.sum() + n_countries + 1.0)
        self.typical_events_: dict[str, np.ndarray] = {}
        self.typical_bytes_: dict[str, np.ndarray] = {}
        self.active_days_ = _unique(prep.t // _NS_PER_DAY)
        self._fit_activity(prep)
        out = self._windows(prep, fitting=True, details=details)
        logger.debug("fitted features on %d events, %d windows", prep.n, len(out))
        return out

    def _fit_peers(self, prep: _Prepared) -> None:
        """Peer groups from co-access, and what each group has touched."""
        n_users = prep.known["user"]
        self.peers_ = _peer_groups(prep, n_users, self.n_peers)
        self.peer_keys_: dict[str, np.ndarray] = {}
        u = prep.codes["user"]
        for attr in ("resource", "action"):
            a = prep.codes[attr]
            ok = (u >= 0) & (a >= 0) & ~prep.fail
            width = max(prep.known[attr], 1)
            own = _unique(u[ok] * width + a[ok])
            self.peer_keys_[attr] = _expand_to_peers(own, width, self.peers_)

    def _fit_activity(self, prep: _Prepared) -> None:
        """When each entity was first and last seen doing something itself, and the
        organisation's typical number of failing addresses per window."""
        self.first_seen_: dict[str, np.ndarray] = {}
        self.last_seen_: dict[str, np.ndarray] = {}
        self.last_novel_: dict[str, np.ndarray] = {}  # filled by the fitting pass
        for etype in ENTITY_TYPES:
            own = ~prep.fail if etype == "user" else np.ones(prep.n, dtype=bool)
            ent, n_ent = prep.codes[etype], prep.known[etype]
            self.first_seen_[etype] = fam.last_times(ent, prep.t, own, n_ent, first=True)
            self.last_seen_[etype] = fam.last_times(ent, prep.t, own, n_ent)
        org = fam.org_failures(prep.t, prep.fail, prep.codes["source_ip"],
                               prep.codes["user"], self.window_ns_, self.step_ns_)
        slots = (int(prep.t.max() - prep.t.min()) // self.step_ns_ + 1) if prep.n else 1
        self.org_failing_typical_ = float(org["addresses"].sum()) / slots

    def _fit_time(self, prep: _Prepared) -> None:
        """Hour and weekday profiles per entity, the organisation's priors and quiet hours."""
        self.hour_counts_: dict[str, np.ndarray] = {}
        self.weekday_counts_: dict[str, np.ndarray] = {}
        all_units = []
        for etype in ENTITY_TYPES:
            ent = np.where(prep.fail, -1, prep.codes[etype]) if etype == "user" else \
                prep.codes[etype]
            n_ent = prep.known[etype]
            ent_u, hb = _units(ent, prep.t)
            self.hour_counts_[etype] = _count_matrix(ent_u, hb % 24, n_ent, 24)
            self.weekday_counts_[etype] = _count_matrix(ent_u, _weekday(hb), n_ent, 7)
            all_units.append(hb)
        hb = np.concatenate(all_units) if all_units else np.zeros(0, dtype=np.int64)
        hours = np.bincount(hb % 24, minlength=24).astype(float) + 1.0
        days = np.bincount(_weekday(hb), minlength=7).astype(float) + 1.0
        self.hour_prior_ = hours / hours.sum()
        self.weekday_prior_ = days / days.sum()
        how = np.bincount(_weekday(hb) * 24 + hb % 24, minlength=168).astype(float)
        self.quiet_hours_ = how < _QUIET_SHARE * how.mean() if len(hb) else \
            np.zeros(168, dtype=bool)

    # -- windows ----------------------------------------------------------------------------

    def _windows(self, prep: _Prepared, *, fitting: bool, details: bool) -> pd.DataFrame:
        # the organisation-level view is one per window time, shared by every entity
        org = fam.org_failures(prep.t, prep.fail, prep.codes["source_ip"], prep.codes["user"],
                               self.window_ns_, self.step_ns_)
        # a profile saved before storms were features compares with the log's own past
        typical = None if fitting else getattr(self, "org_failing_typical_", None)
        storm = fam.storm_windows(org, typical, self.step_ns_)
        self._org = (org, storm)
        parts = [self._entity_windows(prep, etype, fitting=fitting, details=details)
                 for etype in ENTITY_TYPES]
        del self._org
        parts = [p for p in parts if len(p)]
        if not parts:
            return _empty_windows(details)
        out = pd.concat(parts, ignore_index=True)
        out["entity_type"] = pd.Categorical(out["entity_type"], categories=list(ENTITY_TYPES))
        return out

    def _entity_windows(self, prep: _Prepared, etype: str, *, fitting: bool,
                        details: bool) -> pd.DataFrame:
        window, step = self.window_ns_, self.step_ns_
        ent_all = prep.codes[etype]
        idx = np.flatnonzero(ent_all >= 0)
        if not len(idx):
            return pd.DataFrame()
        k = window // step
        slot = prep.t[idx] // step
        if k > 1:
            # an event belongs to every window that covers it: repeat it once per window
            idx = np.repeat(idx, k)
            slot = np.repeat(slot, k) - np.tile(np.arange(k, dtype=np.int64), len(slot))
        t = prep.t[idx]
        ent = ent_all[idx]
        slot0 = slot.min()
        n_slots = int(slot.max() - slot0) + 1
        key = ent * n_slots + (slot - slot0)
        order = np.lexsort((t, key))
        idx, t, ent, key = idx[order], t[order], ent[order], key[order]
        start = np.r_[True, key[1:] != key[:-1]]
        win = np.cumsum(start) - 1
        firsts = np.flatnonzero(start)
        n_win = len(firsts)
        w_ent = ent[firsts]
        w_start = (key[firsts] % n_slots + slot0) * step
        row_wstart = w_start[win]

        fail, succ, priv = prep.fail[idx], prep.succ[idx], prep.priv[idx]
        n = np.bincount(win, minlength=n_win).astype(float)
        cols: dict[str, Any] = {}
        cols["n_events"] = n
        cols["n_failures"] = np.bincount(win, fail, minlength=n_win)
        cols["failure_ratio"] = cols["n_failures"] / n if etype == "source_ip" else np.zeros(n_win)
        minute = t // _NS_PER_MINUTE
        new_minute = start | np.r_[True, minute[1:] != minute[:-1]]
        cols["events_per_minute"] = n / np.bincount(win, new_minute, minlength=n_win)
        run = np.cumsum(new_minute) - 1
        run_len = np.bincount(run)
        cols["max_burst"] = np.maximum.reduceat(run_len, run[firsts]).astype(float)
        log_n = np.log1p(n)
        cols["events_vs_typical"] = self._vs_typical(
            "events", etype, log_n, w_ent, fitting=fitting, known=prep.known[etype])

        codes = {f: prep.codes[f][idx] for f in _FIELDS}
        cols["n_resources"] = _distinct(win, codes["resource"], n_win)
        cols["n_actions"] = _distinct(win, codes["action"], n_win)
        if etype == "user":
            cols["n_ips"] = _distinct(win, codes["source_ip"], n_win, ~fail)
            cols["n_countries"] = _distinct(win, codes["country"], n_win, ~fail)
        else:
            c = codes["country"]
            # countries unknown to the profile get the share of a single event
            shares = np.r_[self.country_share_, self.country_unseen_]
            share = shares[np.where(c < len(self.country_share_), c, -1)]
            rarity = np.where(c >= 0, -np.log(share), 0.0)
            cols["country_rarity"] = np.maximum.reduceat(rarity, firsts)
            country_rows = c >= 0
            cols["n_users"] = _distinct(win, codes["user"], n_win)
            cols["n_users_failed"] = _distinct(win, codes["user"], n_win, fail)
            cols["n_users_failed_day"] = _trailing_failed_users(
                ent, codes["user"], t, fail, w_ent, w_start, window=window)

        detail_cols: dict[str, np.ndarray] = {}
        novel: dict[str, np.ndarray] = {}
        # A user's profile is what the user did: failed attempts against an account are
        # someone else's doing (the address windows carry them), so they neither build the
        # profile nor count as the user doing something new.
        counted = ~fail if etype == "user" else np.ones(len(t), dtype=bool)
        t_seen = np.where(counted, t, np.iinfo(np.int64).max)
        # Novelty "as seen so far": a value is new in a window when nothing before the window
        # start had it, neither in this frame nor (when scoring) in the fitted profile. So a
        # new address is news in the first window it appears in, not in every later one.
        for (e, attr), feature in _NOVELTY.items():
            if e != etype:
                continue
            a = codes[attr]
            span = max(len(prep.names[attr]), 1)
            is_new = counted & (a >= 0) & (_first_time(ent * span + a, t_seen) >= row_wstart)
            if not fitting:
                is_new &= ~self._known_pair(etype, attr, ent, a)
            novel[attr] = is_new
            cols[feature] = _distinct(win, a, n_win, is_new)
        fresh = counted & (_first_time(ent, t_seen) >= row_wstart)
        if not fitting:
            fresh &= ent >= prep.known[etype]
        cols["new_entity"] = np.maximum.reduceat(fresh.astype(float), firsts)
        new_priv = novel["action"] & priv
        cols["new_privileged_events"] = np.bincount(win, new_priv, minlength=n_win)
        if etype == "user":
            # In an account's very first window everything is new: its own-history novelty
            # counts would repeat the new_entity flag four or five times over, so a new
            # joiner's first hour would outrank (and, in training, set the calibration scale
            # above) windows that are rare in several independent ways, such as a dozen
            # exports at 3 a.m. The flag alone says it. Address windows keep their counts:
            # an attacker's address is new too, and its first window is where it shows.
            known = 1.0 - cols["new_entity"]
            for feature in _OWN_NOVELTY_USER:
                cols[feature] = cols[feature] * known

        u = codes["user"]
        if etype == "user":
            for attr, feature in (("resource", "n_outside_peer_resources"),
                                  ("action", "n_outside_peer_actions")):
                a = codes[attr]
                outside = counted & self._outside_peers(attr, ent, a, t_seen, row_wstart,
                                                        prep, fitting=fitting)
                novel["peer_" + attr] = outside
                cols[feature] = _distinct(win, a, n_win, outside)
        else:
            unknown = (u >= 0) & (_first_time(u, t) >= row_wstart)
            if not fitting:
                unknown &= u >= prep.known["user"]
            novel["unknown_user"] = unknown
            cols["n_unknown_users"] = _distinct(win, u, n_win, unknown)
            # what users new to this address did from it that was new for them: a traveller
            # reads the usual things from a new place, an intruder with a stolen password
            # does not (and an insider at their usual desk is the user window's business)
            r = codes["resource"]
            done = (u >= 0) & (r >= 0) & ~fail
            span = max(len(prep.names["resource"]), 1)
            first = _first_time(u * span + r, np.where(done, t, np.iinfo(np.int64).max))
            theirs = done & (first >= row_wstart) & novel["user"]
            if not fitting:
                theirs &= ~self._known_pair("user", "resource", u, r)
            novel["resource"] = theirs
            cols["n_users_new_resources"] = _distinct(win, r, n_win, theirs)

        wi = fam.WindowIndex(etype=etype, window=window, idx=idx, t=t, ent=ent, win=win,
                             firsts=firsts, w_ent=w_ent, w_start=w_start, counted=counted,
                             known=prep.known[etype], fitting=fitting)
        self._attack_families(prep, wi, codes, novel, fresh, cols, detail_cols,
                              details=details)

        hour_s, week_s = self._time_surprisal(prep, etype, idx, fitting=fitting)
        history = self._history_days(prep, w_start, fitting=fitting)[win]
        hour_s = np.where(history >= TIME_HISTORY_DAYS, hour_s, 0.0)
        week_s = np.where(history >= WEEKDAY_HISTORY_DAYS, week_s, 0.0)
        n_counted = np.maximum(np.bincount(win, counted, minlength=n_win), 1)
        cols["hour_rarity"] = np.bincount(win, hour_s * counted, minlength=n_win) / n_counted
        cols["weekday_rarity"] = np.bincount(win, week_s * counted, minlength=n_win) / n_counted
        odd_time = counted & priv & ((hour_s > _UNUSUAL) | (week_s > _UNUSUAL))
        cols["privileged_off_hours"] = np.bincount(win, odd_time, minlength=n_win)
        hb = t // _NS_PER_HOUR
        quiet = self.quiet_hours_[_weekday(hb) * 24 + hb % 24]
        quiet &= history >= TIME_HISTORY_DAYS
        cols["off_hours_share"] = np.bincount(win, quiet, minlength=n_win) / n
        cols["n_privileged"] = np.bincount(win, priv, minlength=n_win)
        nbytes = np.bincount(win, prep.nbytes[idx], minlength=n_win)
        cols["bytes_total"] = nbytes
        cols["bytes_vs_typical"] = self._vs_typical(
            "bytes", etype, np.log1p(nbytes), w_ent, fitting=fitting, known=prep.known[etype])
        cols["fail_then_success"] = _fail_then_success(
            win, codes["source_ip"] if etype == "user" else None, fail, succ, n_win)
        evidence_details = self._evidence(prep, etype, cols, idx, win, n_win, ent, t,
                                          row_wstart, w_start + window, fitting=fitting)

        if details:
            for name, (c, labels, mask, counts) in evidence_details.items():
                detail_cols[name] = _describe(win, c, labels, mask, n_win, counts=counts)
            names = prep.names
            detail_cols["d_new_ips"] = _describe(win, codes["source_ip"], names["source_ip"],
                                                 novel.get("source_ip", _none(win)), n_win)
            detail_cols["d_new_countries"] = _describe(
                win, codes["country"], names["country"], novel.get("country", _none(win)),
                n_win)
            detail_cols["d_new_resources"] = _describe(
                win, codes["resource"], names["resource"], novel.get("resource", _none(win)),
                n_win)
            detail_cols["d_new_actions"] = _describe(
                win, codes["action"], names["action"], novel["action"], n_win, counts=True)
            detail_cols["d_new_privileged"] = _describe(
                win, codes["action"], names["action"], new_priv, n_win, counts=True)
            detail_cols["d_outside_peer_resources"] = _describe(
                win, codes["resource"], names["resource"],
                novel.get("peer_resource", _none(win)), n_win)
            detail_cols["d_outside_peer_actions"] = _describe(
                win, codes["action"], names["action"], novel.get("peer_action", _none(win)),
                n_win)
            detail_cols["d_privileged_off_hours"] = _describe(
                win, codes["action"], names["action"], odd_time, n_win, counts=True)
            if etype == "source_ip":
                detail_cols["d_country"] = _describe(win, codes["country"], names["country"],
                                                     country_rows, n_win, limit=2)
                # the accounts it failed against that it was never seen with before (a stranger's
                # attempts, not a person mistyping at their own desk): see model._victim_links
                detail_cols["d_new_failed_users"] = _describe(
                    win, u, names["user"], fail & novel.get("user", _none(win)), n_win)
            detail_cols["d_new_users"] = _describe(win, u, names["user"],
                                                   novel.get("user", _none(win)), n_win)
            detail_cols["d_unknown_users"] = _describe(
                win, u, names["user"], novel.get("unknown_user", _none(win)), n_win)

        if prep.seq is not None:
            seq = prep.seq[idx]
            big = np.iinfo(np.int64).max
            lo = np.minimum.reduceat(np.where(seq >= 0, seq, big), firsts)
            hi = np.maximum.reduceat(seq, firsts)
            first_seq = pd.array(np.where(lo == big, 0, lo), dtype="Int64")
            first_seq[lo == big] = pd.NA
            last_seq = pd.array(np.maximum(hi, 0), dtype="Int64")
            last_seq[hi < 0] = pd.NA
        else:
            first_seq = last_seq = pd.array([pd.NA] * n_win, dtype="Int64")

        frame = pd.DataFrame({
            "entity_type": etype,
            "entity": prep.names[etype][w_ent],
            "window_start": pd.to_datetime(w_start, utc=True).astype("datetime64[ns, UTC]"),
            "window_end": pd.to_datetime(w_start + window, utc=True)
            .astype("datetime64[ns, UTC]"),
            "first_sequence": first_seq,
            "last_sequence": last_seq,
        })
        for name in _all_feature_names():
            values = cols.get(name)
            frame[name] = np.zeros(n_win) if values is None else np.asarray(values, float)
        if details:
            for name in _DETAIL_COLUMNS:
                frame[name] = detail_cols.get(name, np.full(n_win, "", dtype=object))
        frame["entity"] = frame["entity"].astype(str)
        return frame

    def _attack_families(self, prep: _Prepared, wi: fam.WindowIndex,
                         codes: dict[str, np.ndarray], novel: dict[str, np.ndarray],
                         fresh: np.ndarray, cols: dict[str, Any],
                         detail_cols: dict[str, np.ndarray], *, details: bool) -> None:
        """The families per-entity hourly counts cannot see (see :mod:`._families`)."""
        etype, fitting = wi.etype, wi.fitting
        org, storm = self._org
        succ = prep.succ[wi.idx]
        new_source = novel["source_ip"] if etype == "user" else fresh
        storm_cols, storm_detail = fam.failure_storm(
            wi, org, storm, succ, new_source, prep.names["source_ip"], codes["source_ip"],
            details=details)
        cols.update(storm_cols)
        detail_cols.update(storm_detail)
        if etype != "user":
            return
        profile = None if fitting else self
        first = fam.first_seen(wi, None if profile is None
                               else getattr(self, "first_seen_", {}).get(etype))
        first_window = cols["new_entity"] > 0
        r = codes["resource"]
        more, text = fam.slow_collection(wi, novel["resource"], r, first, details=details)
        cols.update(more)
        detail_cols.update(text)
        more, text = fam.second_address(wi, novel["source_ip"], codes["source_ip"],
                                        prep.names["source_ip"], first_window, details=details)
        cols.update(more)
        detail_cols.update(text)
        something_new = novel["resource"] | novel["action"]
        last_novel = getattr(self, "last_novel_", {}).get(etype) if profile else None
        cols.update(fam.stable_novelty(wi, something_new, first, last_novel, first_window))
        if fitting:
            self.last_novel_[etype] = fam.last_times(wi.ent, wi.t, something_new, wi.known)
        cols.update(fam.dormancy(wi, None if profile is None
                                 else getattr(self, "last_seen_", {}).get(etype)))

    # -- pieces that use the fitted profile ---------------------------------------------

    def _evidence(self, prep: _Prepared, etype: str, cols: dict[str, Any], idx: np.ndarray,
                  win: np.ndarray, n_win: int, ent: np.ndarray, t: np.ndarray,
                  row_wstart: np.ndarray, w_end: np.ndarray, *, fitting: bool
                  ) -> dict[str, _evidence.Detail]:
        """Evidence features (:mod:`analyzer.features._evidence`) into ``cols``."""
        a = prep.codes["action"][idx]
        # first use of an action by the entity, failed attempts included (an intruder
        # trying DeleteTrail without the right is news too), and never zeroed in an
        # entity's first window: a new identity's first DeleteTrail is the case to name
        span = max(len(prep.names["action"]), 1)
        first_use = (a >= 0) & (_first_time(ent * span + a, t) >= row_wstart)
        if not fitting:
            first_use &= ~self._known_pair(etype, "action", ent, a)
        found, named = _evidence.window_evidence(
            prep.evidence, idx, win, n_win, etype=etype, t=t, window_end=w_end,
            first_use=first_use, address=prep.codes["source_ip"][idx],
            address_names=prep.names["source_ip"])
        cols.update(found)
        return named

    def _history_days(self, prep: _Prepared, w_start: np.ndarray, *,
                      fitting: bool) -> np.ndarray:
        """Distinct UTC days with activity before each window's day (training days too)."""
        days = _unique(prep.t // _NS_PER_DAY)
        if not fitting:
            known = getattr(self, "active_days_", None)
            if known is None:  # a profile saved before history was counted: all of it
                return np.full(len(w_start), np.iinfo(np.int64).max)
            days = _unique(np.r_[known, days])
        return np.searchsorted(days, w_start // _NS_PER_DAY, side="left")

    def _known_pair(self, etype: str, attr: str, ent: np.ndarray, a: np.ndarray) -> np.ndarray:
        n_ent, width = len(self.vocab_[etype]), max(len(self.vocab_[attr]), 1)
        inside = (ent < n_ent) & (a >= 0) & (a < width)
        return inside & _in_sorted(self.pairs_[(etype, attr)], ent * width + a)

    def _outside_peers(self, attr: str, ent: np.ndarray, a: np.ndarray, t: np.ndarray,
                       row_wstart: np.ndarray, prep: _Prepared, *, fitting: bool) -> np.ndarray:
        ok = (a >= 0) & (t < np.iinfo(np.int64).max)
        if not fitting:
            # users unknown to the profile have no peer group yet: say nothing rather than
            # flag everything a new joiner touches
            width = max(len(self.vocab_[attr]), 1)
            inside = (ent < len(self.vocab_["user"])) & (a < width)
            known = inside & _in_sorted(self.peer_keys_[attr], ent * width + a)
            span = max(len(prep.names[attr]), 1)
            fresh = _first_time(ent * span + a, t) >= row_wstart
            return ok & fresh & ~known & (ent < len(self.vocab_["user"]))
        # as seen so far: outside if nobody in the group touched it before this window
        width = max(prep.known[attr], 1)
        pair = ent * width + a
        first = _first_time(pair, t)
        ok_pairs, ok_first = pair[ok], first[ok]
        order = np.argsort(ok_pairs, kind="stable")
        ok_pairs, ok_first = ok_pairs[order], ok_first[order]
        lead = np.r_[True, ok_pairs[1:] != ok_pairs[:-1]] if len(ok_pairs) else \
            np.zeros(0, dtype=bool)
        own_pairs, own_first = ok_pairs[lead], ok_first[lead]
        group_first = _group_first(own_pairs, own_first, width, self.peers_)
        row_group_first = np.full(len(a), np.iinfo(np.int64).max)
        row_group_first[ok] = group_first[np.searchsorted(own_pairs, pair[ok])]
        return ok & (row_group_first >= row_wstart)

    def _vs_typical(self, what: str, etype: str, values: np.ndarray, w_ent: np.ndarray, *,
                    fitting: bool, known: int) -> np.ndarray:
        store = self.typical_events_ if what == "events" else self.typical_bytes_
        if fitting:
            # windows are sorted by entity then time: an expanding mean of the past windows
            s = pd.Series(values)
            grouped = s.groupby(w_ent, sort=False)
            past_sum = grouped.cumsum().to_numpy() - values
            past_n = grouped.cumcount().to_numpy()
            with np.errstate(invalid="ignore", divide="ignore"):
                prior = np.where(past_n > 0, past_sum / np.maximum(past_n, 1), np.nan)
            totals = np.bincount(w_ent, values, minlength=known)[:known]
            counts = np.bincount(w_ent, minlength=known)[:known]
            with np.errstate(invalid="ignore", divide="ignore"):
                store[etype] = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        else:
            typical = store[etype]
            prior = np.full(len(values), np.nan)
            inside = w_ent < len(typical)
            prior[inside] = typical[w_ent[inside]]
        return np.where(np.isnan(prior), 0.0, values - prior)

    def _time_surprisal(self, prep: _Prepared, etype: str, idx: np.ndarray, *,
                        fitting: bool) -> tuple[np.ndarray, np.ndarray]:
        """Surprisal of each row's hour of day and weekday for its entity."""
        ent = prep.codes[etype]
        # a user's habits are what the user did, not failed attempts against the account
        ent_habit = np.where(prep.fail, -1, ent) if etype == "user" else ent
        sel = np.flatnonzero(ent_habit >= 0)
        if not len(sel):
            return np.zeros(len(idx)), np.zeros(len(idx))
        ent_u, hb = _units(ent_habit[sel], prep.t[sel])
        unit_key = ent_u * (1 << 32) + hb
        hour, day = hb % 24, _weekday(hb)
        if fitting:
            # units come sorted by entity then time: counts before each unit
            frame = pd.DataFrame({"e": ent_u, "h": hour, "d": day})
            c_day = frame.groupby(["e", "d"], sort=False).cumcount().to_numpy()
            total = frame.groupby("e", sort=False).cumcount().to_numpy()
            # units of the same entity in each nearby hour of day, before this unit
            by_hour = np.sort((ent_u * 24 + hour) * (1 << 32) + hb)
            c_hour = np.zeros(len(ent_u))
            for offset, weight in _HOUR_KERNEL:
                key = (ent_u * 24 + (hour + offset) % 24) * (1 << 32)
                c_hour += weight * (np.searchsorted(by_hour, key + hb, side="left")
                                    - np.searchsorted(by_hour, key, side="left"))
        else:
            counts_h, counts_d = self.hour_counts_[etype], self.weekday_counts_[etype]
            inside = ent_u < len(counts_h)
            c_hour = np.zeros(len(ent_u))
            c_day = np.zeros(len(ent_u))
            total = np.zeros(len(ent_u))
            smooth = sum(weight * np.roll(counts_h, -offset, axis=1)
                         for offset, weight in _HOUR_KERNEL)
            c_hour[inside] = smooth[ent_u[inside], hour[inside]]
            c_day[inside] = counts_d[ent_u[inside], day[inside]]
            total[inside] = counts_h[ent_u[inside]].sum(axis=1)
        m = _PRIOR_STRENGTH
        s_hour = -np.log((c_hour / _KERNEL_MASS + m * self.hour_prior_[hour]) / (total + m))
        s_day = -np.log((c_day + m * self.weekday_prior_[day]) / (total + m))
        # map back to rows: each row's (entity, hour bucket) unit
        row_key = ent[idx] * (1 << 32) + prep.t[idx] // _NS_PER_HOUR
        pos = np.minimum(np.searchsorted(unit_key, row_key), len(unit_key) - 1)
        return s_hour[pos], s_day[pos]


# -- helpers used by the extractor --------------------------------------------------------------

def _none(like: np.ndarray) -> np.ndarray:
    return np.zeros(len(like), dtype=bool)


def _weekday(hour_bucket: np.ndarray) -> np.ndarray:
    # 1970-01-01 was a Thursday; Monday is 0
    return (hour_bucket // 24 + 3) % 7


def _units(ent: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (entity, UTC hour) pairs of the valid entities, sorted by entity then hour."""
    ok = ent >= 0
    key = _unique(ent[ok] * (1 << 32) + t[ok] // _NS_PER_HOUR)
    return key >> 32, key & ((1 << 32) - 1)


def _count_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    flat = np.bincount(rows * n_cols + cols, minlength=n_rows * n_cols)
    return flat[: n_rows * n_cols].reshape(n_rows, n_cols).astype(np.int32)


def _pair_keys(prep: _Prepared, etype: str, attr: str) -> np.ndarray:
    e, a = prep.codes[etype], prep.codes[attr]
    ok = (e >= 0) & (a >= 0)
    if etype == "user":
        ok &= ~prep.fail
    width = max(prep.known[attr], 1)
    return _unique(e[ok] * width + a[ok])


def _peer_groups(prep: _Prepared, n_users: int, n_peers: int) -> np.ndarray:
    """For each user, the ``n_peers`` users with the most similar resources and actions."""
    if n_users < 2 or n_peers == 0:
        return np.full((n_users, 0), -1, dtype=np.int64)
    from scipy import sparse

    u = prep.codes["user"]
    blocks = []
    offset = 0
    for attr in ("resource", "action"):
        a = prep.codes[attr]
        ok = (u >= 0) & (a >= 0) & ~prep.fail
        width = max(prep.known[attr], 1)
        keys = _unique(u[ok] * width + a[ok])
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


def _trailing_failed_users(ent: np.ndarray, user: np.ndarray, t: np.ndarray, fail: np.ndarray,
                           w_ent: np.ndarray, w_start: np.ndarray, *, window: int) -> np.ndarray:
    """Distinct users with a failure from each window's entity in the day up to its end.

    Each (entity, user) pair's failures form runs whose gaps are under a day; a run counts
    for every window that ends within a day of one of its failures, so a window's count is
    the runs of its entity begun before its end minus those over a day before it.
    """
    ok = fail & (user >= 0)
    if not ok.any():
        return np.zeros(len(w_ent))
    day = _TRAILING
    pair = ent[ok] * (int(user.max()) + 1) + user[ok]
    tf = t[ok]
    order = np.lexsort((tf, pair))
    pair, tf, e = pair[order], tf[order], ent[ok][order]
    new_run = np.r_[True, (pair[1:] != pair[:-1]) | (tf[1:] - tf[:-1] > day)]
    last = np.r_[new_run[1:], True]
    # seconds from a common origin, so (entity, time) packs into one sortable integer
    origin = min(int(tf.min()), int(w_start.min())) - day
    sec = 1_000_000_000

    def packed(entity: np.ndarray, when: np.ndarray) -> np.ndarray:
        return entity * (1 << 33) + (when - origin) // sec

    begins = np.sort(packed(e[new_run], tf[new_run]))
    ends = np.sort(packed(e[last], tf[last] + day))
    w_end = w_start + window
    # runs begun before the window's end, less runs over before it could reach back to them
    started = np.searchsorted(begins, packed(w_ent, w_end), side="left")
    over = np.searchsorted(ends, packed(w_ent, w_end), side="left")
    return (started - over).astype(float)


def _fail_then_success(win: np.ndarray, source: np.ndarray | None, fail: np.ndarray,
                       succ: np.ndarray, n_win: int) -> np.ndarray:
    """Failures that a later success from the same source follows, within each window."""
    if not fail.any() or not succ.any():
        return np.zeros(n_win)
    group = win if source is None else win * (int(source.max()) + 2) + (source + 1)
    # rows are in time order within a window; a stable sort keeps that order per group
    order = np.argsort(group, kind="stable")[::-1]
    later = pd.Series(succ[order]).groupby(group[order], sort=False).cummax().to_numpy()
    hits = np.zeros(len(win), dtype=bool)
    hits[order] = later & fail[order]
    return np.bincount(win, hits, minlength=n_win).astype(float)


def _empty_windows(details: bool) -> pd.DataFrame:
    frame = pd.DataFrame({
        "entity_type": pd.Categorical([], categories=list(ENTITY_TYPES)),
        "entity": pd.Series([], dtype=object),
        "window_start": pd.Series([], dtype="datetime64[ns, UTC]"),
        "window_end": pd.Series([], dtype="datetime64[ns, UTC]"),
        "first_sequence": pd.array([], dtype="Int64"),
        "last_sequence": pd.array([], dtype="Int64"),
    })
    for name in _all_feature_names():
        frame[name] = np.zeros(0)
    if details:
        for name in _DETAIL_COLUMNS:
            frame[name] = pd.Series([], dtype=object)
    return frame


def describe_hour(window_start: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Hour text ("03:00") and weekday name of window starts, for reasons."""
    ts = pd.to_datetime(window_start, utc=True)
    hours = ts.dt.strftime("%H:00").to_numpy(dtype=object)
    days = np.asarray(_WEEKDAYS, dtype=object)[ts.dt.day_of_week.to_numpy()]
    return hours, days
