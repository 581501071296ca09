"""Phase 1 of the feature computation: organisation-wide statistics as a map-reduce.

Every feature that looks beyond a window's own events ("as seen so far", peers, habits,
storms, history) reads one of the tables below instead of the whole log: the first time each
(entity, value) pair was seen, each entity's first and last own event, the failures of the
organisation per window, the hours each entity was active, the days with activity...

- :func:`chunk_stats` maps a chunk of events (a normalized frame) to :class:`PartialStats`
  and the chunk's :class:`~analyzer.features._events.EventArrays`;
- :func:`merge_stats` is associative (keep chunks in time order: nothing else depends on
  the order), so partial statistics reduce in any tree;
- :class:`WindowContext` is what phase 2 (:mod:`analyzer.features._windows`) needs: the
  finalized tables as sorted lookups, built by
  :meth:`~analyzer.features.FeatureExtractor.finalize_stats`.

Everything here is numpy arrays keyed by integer codes, picklable, sized by the number of
entities, values and active hours, never by the number of events; and holds no keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.features._events import FIELDS, EventArrays, prepare

_NS_PER_HOUR = 3_600 * 10**9
_NS_PER_DAY = 24 * _NS_PER_HOUR
_NEVER = np.iinfo(np.int64).max
_BEFORE_ALL = np.iinfo(np.int64).min
_CODED = (*FIELDS, "credential", "path", "agent")
#: Vocabularies kept in the order of first appearance in the log (merged in partition order).
_IN_LOG_ORDER = ("path", "agent")
#: Pairs each entity type is profiled on, by its own doing: (entity type, attribute).
NOVELTY_PAIRS = (("user", "source_ip"), ("user", "country"), ("user", "resource"),
                 ("user", "action"), ("source_ip", "user"), ("source_ip", "action"))


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class StatsSpec:
    """What phase 1 needs to know: window and step (ns), privileged-action patterns, and the
    fitted vocabularies when the statistics are those of a log to score (None to fit)."""

    window: int
    step: int
    patterns: tuple[str, ...]
    vocab: dict[str, np.ndarray] | None = None

    @property
    def fitting(self) -> bool:
        return self.vocab is None


@dataclasses.dataclass(slots=True)
class KeyTable:
    """Distinct keys (one column per field, codes of ``fields``' vocabulary, or plain
    integers where the field is "") with one value each, reduced by ``how``."""

    fields: tuple[str, ...]
    keys: np.ndarray
    values: np.ndarray
    how: str

    def __len__(self) -> int:
        return len(self.values)


_REDUCE = {"min": np.minimum, "max": np.maximum, "sum": np.add}


def _reduced(fields: tuple[str, ...], cols: Sequence[np.ndarray], values: np.ndarray,
             how: str) -> KeyTable:
    """The table of ``cols`` (equal length) reduced per distinct key."""
    n = len(values)
    if not n:
        return KeyTable(fields, np.zeros((0, len(fields)), dtype=np.int64),
                        np.zeros(0, dtype=np.int64), how)
    lows = [int(c.min()) for c in cols]
    widths = [int(c.max()) - lo + 1 for c, lo in zip(cols, lows, strict=True)]
    if len(cols) == 1 and widths[0] <= 4 * n + 1024:
        return _dense(fields, cols[0] - lows[0], lows[0], widths[0], values, how)
    packed = np.zeros(n, dtype=np.int64)
    for c, lo, w in zip(cols, lows, widths, strict=True):
        packed = packed * w + (c - lo)
    order = np.argsort(packed)  # any order within a key: min, max and sum do not care
    packed, values = packed[order], values[order]
    starts = np.flatnonzero(np.r_[True, packed[1:] != packed[:-1]])
    reduced = _REDUCE[how].reduceat(values, starts)
    distinct = packed[starts]
    keys = np.zeros((len(starts), len(cols)), dtype=np.int64)
    for j in range(len(cols) - 1, -1, -1):
        keys[:, j] = distinct % widths[j] + lows[j]
        distinct = distinct // widths[j]
    return KeyTable(fields, keys, reduced.astype(np.int64), how)


def _dense(fields: tuple[str, ...], offset: np.ndarray, low: int, width: int,
           values: np.ndarray, how: str) -> KeyTable:
    """:func:`_reduced` of one column of small range: an array per value, no sort."""
    present = np.bincount(offset, minlength=width) > 0
    if how == "sum":
        out = np.bincount(offset, values, minlength=width).astype(np.int64)
    else:
        out = np.full(width, _NEVER if how == "min" else _BEFORE_ALL, dtype=np.int64)
        (np.minimum if how == "min" else np.maximum).at(out, offset, values)
    keys = np.flatnonzero(present)
    return KeyTable(fields, (keys + low)[:, None].astype(np.int64), out[keys], how)


@dataclasses.dataclass(slots=True)
class PartialStats:
    """The statistics of some events (one chunk, or several merged).

    ``names`` holds each coded field's vocabulary (the fitted one first, ``known`` of it,
    then the values new to it, sorted); ``tables`` the key tables (see :func:`stats_of`);
    ``bounds`` minimal or maximal times: ``t_min``/``t_max`` of all events, ``ent_min:<e>``
    of events with an entity of type ``e``, ``fail_min:<e>`` of its failures with a user.
    """

    names: dict[str, np.ndarray]
    known: dict[str, int]
    tables: dict[str, KeyTable]
    n: int
    bounds: dict[str, int]


def chunk_stats(frame: pd.DataFrame, spec: StatsSpec) -> tuple[PartialStats, EventArrays]:
    """Phase 1's map: the statistics of one chunk of events and its compact arrays."""
    events = prepare(frame, spec.vocab, spec.patterns)
    return stats_of(events, spec), events


def _rows(*masks: np.ndarray) -> np.ndarray:
    ok = masks[0]
    for m in masks[1:]:
        ok = ok & m
    return np.flatnonzero(ok)


def stats_of(ev: EventArrays, spec: StatsSpec) -> PartialStats:
    """The statistics of ``ev`` (see :class:`PartialStats`)."""
    c, t = ev.codes, ev.t
    own = ~ev.fail
    has = {f: c[f] >= 0 for f in FIELDS}
    tables: dict[str, KeyTable] = {}

    def first(name: str, fields: tuple[str, ...], rows: np.ndarray, how: str = "min",
              cols: Sequence[np.ndarray] | None = None, values: np.ndarray | None = None
              ) -> None:
        columns = [c[f][rows] for f in fields] if cols is None else cols
        tables[name] = _reduced(fields, columns, t[rows] if values is None else values, how)

    for etype, attr in NOVELTY_PAIRS:
        mask = [has[etype], has[attr]] + ([own] if etype == "user" else [])
        first(f"nov:{etype}:{attr}", (etype, attr), _rows(*mask))
    first("use:user:action", ("user", "action"), _rows(has["user"], has["action"]))
    for etype in ("user", "source_ip"):
        rows = _rows(has[etype], own) if etype == "user" else np.flatnonzero(has[etype])
        first(f"first:{etype}", (etype,), rows)
        first(f"last:{etype}", (etype,), rows, how="max")
    first("user_from_address", ("user",), _rows(has["user"], has["source_ip"]))
    first("done_from_address", ("user", "resource"),
          _rows(has["user"], has["resource"], has["source_ip"], own))
    cred = ev.evidence.credential
    rows = _rows(cred >= 0, has["source_ip"])
    first("cred_address", ("credential", "source_ip"), rows,
          cols=[cred[rows], c["source_ip"][rows]])
    days = np.unique(t // _NS_PER_DAY)
    tables["days"] = KeyTable(("",), days[:, None], np.ones(len(days), dtype=np.int64), "max")
    _org_failures(ev, spec, tables)
    if spec.fitting:
        for etype in ("user", "source_ip"):
            rows = _rows(has[etype], own) if etype == "user" else np.flatnonzero(has[etype])
            first(f"units:{etype}", (etype, ""), rows, how="max",
                  cols=[c[etype][rows], t[rows] // _NS_PER_HOUR],
                  values=np.ones(len(rows), dtype=np.int64))
        rows = np.flatnonzero(has["country"])
        first("country", ("country",), rows, how="sum", values=np.ones(len(rows), np.int64))
    names = {f: ev.names[f] for f in FIELDS}
    names["credential"] = ev.evidence.credential_names
    names["path"] = ev.evidence.path_names
    names["agent"] = ev.evidence.agent_names
    # when fitting, no value is known beforehand: merged vocabularies are sorted unions
    known = {f: 0 if spec.fitting else ev.known[f] for f in FIELDS}
    known.update(credential=0, path=0, agent=0)
    return PartialStats(names=names, known=known, tables=tables, n=ev.n,
                        bounds=_bounds(ev))


def _org_failures(ev: EventArrays, spec: StatsSpec, tables: dict[str, KeyTable]) -> None:
    """Failures, failing addresses and failed accounts per window start (as slot)."""
    sel = np.flatnonzero(ev.fail)
    k = spec.window // spec.step
    slot = np.repeat(ev.t[sel] // spec.step, k) - np.tile(np.arange(k, dtype=np.int64),
                                                         len(sel))
    rows = np.repeat(sel, k)
    tables["org_failures"] = _reduced(("",), [slot], np.ones(len(slot), np.int64), "sum")
    for field, name in (("source_ip", "org_addresses"), ("user", "org_accounts")):
        code = ev.codes[field][rows]
        ok = code >= 0
        tables[name] = _reduced(("", field), [slot[ok], code[ok]],
                                np.ones(int(ok.sum()), np.int64), "max")


def _bounds(ev: EventArrays) -> dict[str, int]:
    out: dict[str, int] = {}
    if ev.n:
        out["t_min"], out["t_max"] = int(ev.t.min()), int(ev.t.max())
    for etype in ("user", "source_ip"):
        has = ev.codes[etype] >= 0
        if has.any():
            out[f"ent_min:{etype}"] = int(ev.t[has].min())
        failed = has & ev.fail & (ev.codes["user"] >= 0)
        if failed.any():
            out[f"fail_min:{etype}"] = int(ev.t[failed].min())
    return out


def merge_stats(a: PartialStats, b: PartialStats) -> PartialStats:
    """Phase 1's reduce: the statistics of the events of ``a`` and ``b`` together."""
    names: dict[str, np.ndarray] = {}
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for f in _CODED:
        k = a.known[f]
        if f in _IN_LOG_ORDER:  # a's values, then b's new ones, each in their order
            seen = pd.Index(a.names[f], dtype=object)
            later = b.names[f][seen.get_indexer(b.names[f]) < 0] if len(seen) else b.names[f]
            names[f] = np.concatenate([a.names[f], later]).astype(object)
        else:
            new = np.unique(np.concatenate([a.names[f][k:], b.names[f][k:]]).astype(str))
            names[f] = np.concatenate([a.names[f][:k], new.astype(object)]).astype(object)
        maps[f] = (_mapping(a.names[f], names[f]), _mapping(b.names[f], names[f]))
    tables = {}
    for name in [*a.tables, *(n for n in b.tables if n not in a.tables)]:
        sides = [(s.tables[name], j) for j, s in enumerate((a, b)) if name in s.tables]
        proto = sides[0][0]
        cols = []
        for col, field in enumerate(proto.fields):
            parts = [tab.keys[:, col] if not field else
                     _apply(maps[field][j], tab.keys[:, col]) for tab, j in sides]
            cols.append(np.concatenate(parts))
        values = np.concatenate([tab.values for tab, _ in sides])
        tables[name] = _reduced(proto.fields, cols, values, proto.how)
    bounds = dict(a.bounds)
    for key, value in b.bounds.items():
        pick = max if key == "t_max" else min
        bounds[key] = pick(bounds[key], value) if key in bounds else value
    return PartialStats(names=names, known=dict(a.known), tables=tables, n=a.n + b.n,
                        bounds=bounds)


def _mapping(names: np.ndarray, target: np.ndarray) -> np.ndarray:
    if not len(names):
        return np.zeros(0, dtype=np.int64)
    return pd.Index(target, dtype=object).get_indexer(names).astype(np.int64)


def _apply(mapping: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return mapping[codes] if len(codes) else codes


# -- phase 2's view: lookups --------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class Lookup:
    """A key table as sorted packed keys (``code * width + code``) for row lookups."""

    keys: np.ndarray
    values: np.ndarray
    width: int
    # the keys' hash index, built on first use (probing it beats a binary search per row)
    index: pd.Index | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, table: KeyTable, widths: dict[str, int]) -> Lookup:
        width = max(widths.get(table.fields[-1], 1), 1) if len(table.fields) == 2 else 1
        keys = table.keys[:, 0] * width + table.keys[:, -1] if len(table.fields) == 2 \
            else table.keys[:, 0]
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], table.values[order], width)

    def packed(self, first: np.ndarray, second: np.ndarray | None = None) -> np.ndarray:
        return first if second is None else first * self.width + second

    def get(self, first: np.ndarray, second: np.ndarray | None = None, *,
            default: int = _NEVER) -> np.ndarray:
        """The value of each key (``default`` where absent or a code is -1)."""
        query = self.packed(first, second)
        out = np.full(len(query), default, dtype=np.int64)
        ok = first >= 0 if second is None else (first >= 0) & (second >= 0)
        if not len(self.keys) or not ok.any():
            return out
        if self.index is None:
            self.index = pd.Index(self.keys)
        pos = self.index.get_indexer(query[ok])
        found = pos >= 0
        hits = np.flatnonzero(ok)
        out[hits[found]] = self.values[pos[found]]
        return out


@dataclasses.dataclass(slots=True)
class WindowContext:
    """Everything phase 2 needs besides a block's own events (picklable, holds no keys).

    ``profile`` is the fitted :class:`~analyzer.features.FeatureExtractor` (when fitting,
    the profile being fitted: its vocabularies, peers, time priors and country shares are
    set before any window is computed). ``first`` maps table names of :func:`stats_of` to
    lookups of first times; ``org``/``storm`` are the organisation's failures per window
    start; ``days`` the UTC days with activity (the fitted ones too, when scoring);
    ``units`` (fitting) each entity's hour units with their surprisal;
    ``peer_first`` (fitting) the first time each user's group touched each value.
    """

    window: int
    step: int
    fitting: bool
    profile: Any
    names: dict[str, np.ndarray]
    known: dict[str, int]
    first: dict[str, Lookup]
    org: pd.DataFrame
    storm: pd.Series
    days: np.ndarray
    fail_origin: dict[str, int]
    credential_first: tuple[np.ndarray, np.ndarray]
    units: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    peer_first: dict[str, Lookup]
    period: tuple[int, int] | None
    n_events: int
    # the vocabularies as pd.Index, built on first use by encode
    indexes: dict[str, pd.Index] = dataclasses.field(default_factory=dict, repr=False)

    def encode(self, parts: Sequence[EventArrays]) -> EventArrays:
        """Time-ordered chunks' arrays as one block in the context's vocabularies."""
        from analyzer.features._events import concat_events

        if not self.indexes:
            self.indexes.update({f: pd.Index(v, dtype=object) for f, v in self.names.items()})
        return concat_events(parts, self.names, {f: self.known[f] for f in FIELDS},
                             self.indexes)


def org_table(stats: PartialStats, step: int) -> pd.DataFrame:
    """The organisation's failures per window start (ns): failures, addresses, accounts."""
    fails = stats.tables["org_failures"]
    index = fails.keys[:, 0]
    out = pd.DataFrame({"failures": fails.values}, index=index)
    for name, column in (("org_addresses", "addresses"), ("org_accounts", "accounts")):
        tab = stats.tables[name]
        counts = np.bincount(np.searchsorted(index, tab.keys[:, 0]), minlength=len(index)) \
            if len(tab) else np.zeros(len(index), dtype=np.int64)
        out[column] = counts[:len(index)]
    out.index = index * step
    return out


def fail_origin(stats: PartialStats, etype: str, window: int, step: int) -> int | None:
    """The packing origin of the trailing-day failed users of one entity type: a day before
    the earlier of its first failure with a user and its first window start."""
    fail = stats.bounds.get(f"fail_min:{etype}")
    ent = stats.bounds.get(f"ent_min:{etype}")
    if fail is None or ent is None:
        return None
    first_start = (ent // step - (window // step - 1)) * step
    return min(fail, first_start) - _NS_PER_DAY
