"""Feature families that per-entity hourly counts cannot see (issue #13, item 4).

Each family is one function over a :class:`WindowIndex` (the rows of one entity type's windows,
sorted by window) that returns its feature columns and detail texts:

- :func:`failure_storm`: the organisation's failures across addresses and accounts in each
  window, joined to every entity's window of that time, and successes from never-seen
  addresses while a storm is on (distributed credential stuffing);
- :func:`slow_collection`: days of the trailing week on which an established user touched
  resources never touched before (low-and-slow collection);
- :func:`second_address`: a never-seen address interleaved with the account's known one in
  the same window (session hijack);
- :func:`stable_novelty`: something new done by an entity after many days of doing nothing
  new (a very stable entity doing one new thing);
- :func:`dormancy`: days since the account last did anything (a dormant account waking up).

Everything is "as seen so far" when fitting (a window sees only what came before it) and, when
scoring, the fitted profile plus what came earlier in the scored frame. No loop runs per event;
the only Python loops build detail texts for the few windows that carry a non-zero value.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

_NS_PER_DAY = 86_400 * 10**9
_NEVER = np.iinfo(np.int64).max
_BEFORE_ALL = np.iinfo(np.int64).min
# A failure storm: at least this many distinct failing addresses in one window, and this many
# times the organisation's typical number (failing addresses per window so far).
STORM_MIN_ADDRESSES = 20
STORM_FACTOR = 5.0
# Novelty in an account's first days is settling in, not collection.
SETTLING_NS = 7 * _NS_PER_DAY
# How far back the slow-collection count looks.
WEEK_NS = 7 * _NS_PER_DAY


@dataclasses.dataclass(slots=True)
class WindowIndex:
    """One entity type's windows and the event rows in them (sorted by window, then time)."""

    etype: str
    window: int
    idx: np.ndarray         # event index of each row
    t: np.ndarray           # time of each row (ns)
    ent: np.ndarray         # entity code of each row
    win: np.ndarray         # window number of each row
    firsts: np.ndarray      # first row of each window
    w_ent: np.ndarray       # entity code of each window
    w_start: np.ndarray     # start of each window (ns)
    counted: np.ndarray     # rows that are the entity's own doing (users: not failed)
    known: int              # entities known to the fitted profile (codes below this)
    fitting: bool

    @property
    def n_win(self) -> int:
        return len(self.firsts)

    @property
    def row_wstart(self) -> np.ndarray:
        return self.w_start[self.win]


Columns = dict[str, np.ndarray]


# -- organisation-level: failure storms ---------------------------------------------------------

def org_failures(t: np.ndarray, fail: np.ndarray, ip: np.ndarray, user: np.ndarray,
                 window: int, step: int) -> pd.DataFrame:
    """Failures, failing addresses and failed accounts across the organisation per window.

    Indexed by window start (ns); a window of ``window`` ns starting at every ``step``.
    """
    sel = np.flatnonzero(fail)
    k = window // step
    slot = np.repeat(t[sel] // step, k) - np.tile(np.arange(k, dtype=np.int64), len(sel))
    rows = np.repeat(sel, k)
    frame = pd.DataFrame({"slot": slot, "ip": ip[rows], "user": user[rows]})
    out = pd.DataFrame({"failures": frame.groupby("slot", sort=True).size()})
    for column, name in (("ip", "addresses"), ("user", "accounts")):
        valid = frame.loc[frame[column] >= 0, ["slot", column]].drop_duplicates()
        out[name] = valid.groupby("slot").size().reindex(out.index, fill_value=0)
    out.index = out.index.to_numpy() * step
    return out


def storm_windows(org: pd.DataFrame, typical: float | None, span_ns: int) -> pd.Series:
    """Which window starts of ``org`` are failure storms.

    ``typical`` is the fitted number of failing addresses per window; ``None`` when fitting,
    where each window is compared with the mean of the windows before it ("as seen so far").
    """
    if not len(org):
        return pd.Series([], dtype=bool)
    addresses = org["addresses"].to_numpy(dtype=float)
    if typical is None:
        starts = org.index.to_numpy()
        elapsed = np.maximum((starts - starts[0]) / span_ns, 1.0)
        past = np.cumsum(addresses) - addresses
        base = np.where(starts > starts[0], past / elapsed, 0.0)
    else:
        base = np.full(len(addresses), typical)
    return pd.Series((addresses >= STORM_MIN_ADDRESSES) & (addresses >= STORM_FACTOR * base),
                     index=org.index)


def failure_storm(wi: WindowIndex, org: pd.DataFrame, storm: pd.Series, succ: np.ndarray,
                  new_source: np.ndarray, source_names: np.ndarray, source: np.ndarray,
                  *, details: bool) -> tuple[Columns, Columns]:
    """Organisation-wide failing addresses in windows that are a failure storm (0 in the
    others), and successes from a never-seen address (new to the user, or new altogether for
    an address) during a storm."""
    n_win = wi.n_win
    at = pd.Index(org.index).get_indexer(wi.w_start)
    found = at >= 0
    failing = np.zeros(n_win)
    failing[found] = org["addresses"].to_numpy()[at[found]]
    on = np.zeros(n_win, dtype=bool)
    on[found] = storm.to_numpy()[at[found]]
    hits = succ & new_source & on[wi.win]
    cols = {"storm_addresses": np.where(on, failing, 0.0),
            "storm_new_source_success": np.bincount(wi.win, hits, minlength=n_win)}
    detail: Columns = {}
    if details:
        text = np.full(n_win, "", dtype=object)
        rows = np.flatnonzero(hits)
        if len(rows):
            first = pd.Series(rows).groupby(wi.win[rows]).first()
            span = "in the hour" if wi.window == 3_600 * 10**9 else "in the window"
            for w, r in zip(first.index.to_numpy(), first.to_numpy(), strict=True):
                o = org.iloc[at[w]]
                text[w] = (f"{source_names[source[r]]} during a failure storm "
                           f"({int(o['failures'])} failures from {int(o['addresses'])} "
                           f"addresses against {int(o['accounts'])} accounts {span})")
        detail["d_storm_success"] = text
    return cols, detail


# -- per-entity families ------------------------------------------------------------------------

def first_seen(wi: WindowIndex, profile_first: np.ndarray | None) -> np.ndarray:
    """Per row: when the row's entity was first seen doing something itself."""
    t_own = np.where(wi.counted, wi.t, _NEVER)
    first = pd.Series(t_own).groupby(wi.ent, sort=False).transform("min").to_numpy()
    if profile_first is not None and len(profile_first):
        inside = wi.ent < len(profile_first)
        first = first.copy()
        first[inside] = np.minimum(first[inside], profile_first[wi.ent[inside]])
    return first


def _previous(keys_ent: np.ndarray, keys_t: np.ndarray, ent: np.ndarray,
              before: np.ndarray) -> np.ndarray:
    """For each query (``ent``, ``before``): the latest of that entity's ``keys_t`` strictly
    before ``before`` (the smallest int64 when there is none)."""
    out = np.full(len(ent), _BEFORE_ALL)
    if not len(keys_t) or not len(ent):
        return out
    # (entity, second) packed into one sortable integer; seconds keep the product in int64
    origin = min(int(keys_t.min()), int(before.min())) // 10**9 - 1
    span = max(int(keys_t.max()), int(before.max())) // 10**9 - origin + 2
    key = keys_ent * span + (keys_t // 10**9 - origin)
    order = np.argsort(key, kind="stable")
    key, kt = key[order], keys_t[order]
    query = ent * span + (before - 1) // 10**9 - origin
    j = np.searchsorted(key, query, side="right") - 1
    ok = j >= 0
    ok[ok] = key[j[ok]] // span == ent[ok]
    out[ok] = kt[j[ok]]
    # an event in the same second as ``before`` but after it cannot precede it
    late = ok & (out >= before)
    out[late] = _BEFORE_ALL
    return out


def _window_min(values: np.ndarray, mask: np.ndarray, wi: WindowIndex) -> np.ndarray:
    return np.minimum.reduceat(np.where(mask, values, _NEVER), wi.firsts)


def _window_max(values: np.ndarray, mask: np.ndarray, wi: WindowIndex) -> np.ndarray:
    return np.maximum.reduceat(np.where(mask, values, _BEFORE_ALL), wi.firsts)


def slow_collection(wi: WindowIndex, new_resource: np.ndarray, resource: np.ndarray,
                    first: np.ndarray, *, details: bool) -> tuple[Columns, Columns]:
    """Days of the trailing week with a first touch of a resource by an established user, in
    windows that touch one; with the number of resources first touched in that week."""
    n_win = wi.n_win
    settled = new_resource & (wi.t >= first + SETTLING_NS)
    cols = {"new_resources_week": np.zeros(n_win)}
    detail: Columns = {}
    if details:
        detail["d_new_resources_week"] = np.full(n_win, "", dtype=object)
    if not settled.any():
        return cols, detail
    # one first touch per (user, resource): overlapping windows repeat rows
    pairs = pd.DataFrame({"e": wi.ent[settled], "r": resource[settled], "t": wi.t[settled]})
    touches = pairs.groupby(["e", "r"], sort=False)["t"].min().reset_index()
    e, tt = touches["e"].to_numpy(), touches["t"].to_numpy()
    origin = int(min(tt.min(), wi.w_start.min())) - WEEK_NS
    span = 1 << 40  # seconds since origin fit in 40 bits for centuries

    def packed(entity: np.ndarray, when: np.ndarray) -> np.ndarray:
        return entity * span + (when - origin) // 10**9

    keys = np.sort(packed(e, tt))
    w_end = wi.w_start + wi.window
    count = (np.searchsorted(keys, packed(wi.w_ent, w_end), side="left")
             - np.searchsorted(keys, packed(wi.w_ent, w_end - WEEK_NS), side="left"))
    day_keys = np.unique(packed(e, (tt - origin) // _NS_PER_DAY * _NS_PER_DAY + origin))
    days = (np.searchsorted(day_keys, packed(wi.w_ent, w_end), side="left")
            - np.searchsorted(day_keys, packed(wi.w_ent, w_end - WEEK_NS), side="left"))
    # days, not resources: one burst (a takeover's dozen reads) is one day and says nothing
    # about the week after it; collection comes back day after day
    here = np.bincount(wi.win, settled, minlength=n_win) > 0
    value = np.where(here, days, 0).astype(float)
    cols["new_resources_week"] = value
    if details:
        text = detail["d_new_resources_week"]
        for w in np.flatnonzero(value > 0):
            text[w] = f"{count[w]} resource{'s' if count[w] != 1 else ''} in all"
    return cols, detail


def second_address(wi: WindowIndex, new_ip: np.ndarray, ip: np.ndarray,
                   ip_names: np.ndarray, first_window: np.ndarray, *,
                   details: bool) -> tuple[Columns, Columns]:
    """Events from a never-seen address while the account is active, later in the same
    window, from an address it has used before (two places at once, not a move)."""
    n_win = wi.n_win
    own = wi.counted & (ip >= 0)
    new_rows = own & new_ip
    old_rows = own & ~new_ip
    first_new = _window_min(wi.t, new_rows, wi)
    last_old = _window_max(wi.t, old_rows, wi)
    both = (last_old > first_new) & ~first_window
    value = np.where(both, np.bincount(wi.win, new_rows, minlength=n_win), 0).astype(float)
    cols = {"second_address_events": value}
    detail: Columns = {}
    if details:
        text = np.full(n_win, "", dtype=object)
        hit = np.flatnonzero(value > 0)
        if len(hit):
            chosen = np.isin(wi.win, hit)
            new_first = pd.Series(ip[chosen & new_rows]).groupby(
                wi.win[chosen & new_rows]).first()
            old_first = pd.Series(ip[chosen & old_rows]).groupby(
                wi.win[chosen & old_rows]).first()
            for w in hit:
                text[w] = (f"{ip_names[new_first[w]]} while active from "
                           f"{ip_names[old_first[w]]}")
        detail["d_second_address"] = text
    return cols, detail


def stable_novelty(wi: WindowIndex, novel: np.ndarray, first: np.ndarray,
                   profile_last: np.ndarray | None, first_window: np.ndarray) -> Columns:
    """Days without anything new before a window that does something new (0 otherwise).

    ``novel`` marks rows doing something the entity never did (a resource or an action),
    ``first`` is when the entity was first seen, ``profile_last`` the last novelty of each
    entity in the fitted profile (when scoring).
    """
    n_win = wi.n_win
    rows = np.flatnonzero(novel)
    prev = _previous(wi.ent[rows], wi.t[rows], wi.w_ent, wi.w_start)
    if profile_last is not None and len(profile_last):
        inside = wi.w_ent < len(profile_last)
        prev[inside] = np.maximum(prev[inside], profile_last[wi.w_ent[inside]])
    w_first = first[wi.firsts]
    since = np.maximum(prev, w_first)
    here = (np.bincount(wi.win, novel, minlength=n_win) > 0) & ~first_window
    days = np.clip((wi.w_start - since) / _NS_PER_DAY, 0.0, None)
    return {"stable_days_before_novelty": np.where(here & (w_first < _NEVER), days, 0.0)}


def dormancy(wi: WindowIndex, profile_last: np.ndarray | None) -> Columns:
    """Days between a window's first own event and the entity's previous own event."""
    rows = np.flatnonzero(wi.counted)
    prev = _previous(wi.ent[rows], wi.t[rows], wi.w_ent, wi.w_start)
    if profile_last is not None and len(profile_last):
        inside = (wi.w_ent < len(profile_last)) & (wi.w_ent < wi.known)
        prev[inside] = np.maximum(prev[inside], profile_last[wi.w_ent[inside]])
    first_own = _window_min(wi.t, wi.counted, wi)
    ok = (prev > _BEFORE_ALL) & (first_own < _NEVER)
    gap = np.where(ok, (first_own - np.where(ok, prev, 0)) / _NS_PER_DAY, 0.0)
    return {"days_dormant": np.clip(gap, 0.0, None)}


def last_times(ent: np.ndarray, t: np.ndarray, mask: np.ndarray, n_ent: int,
               *, first: bool = False) -> np.ndarray:
    """Per entity code below ``n_ent``: the earliest (``first``) or latest masked time."""
    sel = mask & (ent >= 0) & (ent < n_ent)
    out = np.full(n_ent, _NEVER if first else _BEFORE_ALL)
    if first:
        np.minimum.at(out, ent[sel], t[sel])
    else:
        np.maximum.at(out, ent[sel], t[sel])
    return out
