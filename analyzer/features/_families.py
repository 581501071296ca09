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
scoring, the fitted profile plus what came earlier in the scored log. Slow collection, stable
novelty and dormancy look back over the whole log: a block of events marks what its windows
did (:func:`first_touches`, :func:`tail_max`), and the three are finished on the window table
(:func:`previous_tail` and the family functions take window columns). No loop runs per event;
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

def _window_min(values: np.ndarray, mask: np.ndarray, wi: WindowIndex) -> np.ndarray:
    return np.minimum.reduceat(np.where(mask, values, _NEVER), wi.firsts)


def _window_max(values: np.ndarray, mask: np.ndarray, wi: WindowIndex) -> np.ndarray:
    return np.maximum.reduceat(np.where(mask, values, _BEFORE_ALL), wi.firsts)


def tail_max(wi: WindowIndex, mask: np.ndarray, step: int) -> np.ndarray:
    """Per window, the latest masked row in its last slot (the smallest int64 if none).

    The rows in a window's last slot are in no earlier window, so the latest masked event
    before a moment is the largest of these over the windows that end by then.
    """
    tail = wi.t >= wi.row_wstart + (wi.window - step)
    return _window_max(wi.t, mask & tail, wi)


def previous_tail(code: np.ndarray, start: np.ndarray, tail: np.ndarray,
                  window: int) -> np.ndarray:
    """For windows sorted by entity code then start: the largest ``tail`` of the same
    entity's windows that end by each window's start (the smallest int64 if none)."""
    out = np.full(len(code), _BEFORE_ALL)
    if not len(code):
        return out
    best = pd.Series(tail).groupby(code, sort=False).cummax().to_numpy()
    origin = int(start.min())
    sec = 10**9
    span = 1 << 40  # seconds since origin fit in 40 bits for centuries
    packed = code * span + (start - origin) // sec
    query = code * span + (start - window - origin) // sec
    j = np.searchsorted(packed, query, side="right") - 1
    ok = j >= 0
    ok[ok] = code[j[ok]] == code[ok]
    out[ok] = best[j[ok]]
    return out


def last_per_entity(code: np.ndarray, tail: np.ndarray, n_ent: int) -> np.ndarray:
    """Per entity code below ``n_ent``: the largest ``tail`` of its windows."""
    out = np.full(n_ent, _BEFORE_ALL)
    sel = code < n_ent
    np.maximum.at(out, code[sel], tail[sel])
    return out


def first_touches(wi: WindowIndex, new_resource: np.ndarray, resource: np.ndarray,
                  first: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows where an established user touched a resource first, and each (user, resource)
    pair's earliest such touch (columns ``e``, ``r``, ``t``)."""
    settled = new_resource & (wi.t >= first + SETTLING_NS)
    # one first touch per (user, resource): overlapping windows repeat rows
    pairs = pd.DataFrame({"e": wi.ent[settled], "r": resource[settled], "t": wi.t[settled]})
    return settled, pairs.groupby(["e", "r"], sort=False)["t"].min().reset_index()


def slow_collection(code: np.ndarray, start: np.ndarray, window: int, here: np.ndarray,
                    touches: pd.DataFrame, *, details: bool) -> tuple[np.ndarray, np.ndarray]:
    """Days of the trailing week with a first touch of a resource by an established user, in
    windows that touch one (``here``); with the texts naming the number of resources first
    touched in that week. Windows are sorted by entity code then start; ``touches`` are
    the first touches of :func:`first_touches` over the whole log."""
    n_win = len(code)
    value = np.zeros(n_win)
    text = np.full(n_win, "", dtype=object) if details else np.zeros(0, dtype=object)
    if not here.any() or not len(touches):
        return value, text
    touches = touches.groupby(["e", "r"], sort=False)["t"].min().reset_index()
    e, tt = touches["e"].to_numpy(), touches["t"].to_numpy()
    origin = int(min(tt.min(), start.min())) - WEEK_NS
    span = 1 << 40  # seconds since origin fit in 40 bits for centuries

    def packed(entity: np.ndarray, when: np.ndarray) -> np.ndarray:
        return entity * span + (when - origin) // 10**9

    keys = np.sort(packed(e, tt))
    w_end = start + window
    count = (np.searchsorted(keys, packed(code, w_end), side="left")
             - np.searchsorted(keys, packed(code, w_end - WEEK_NS), side="left"))
    day_keys = np.unique(packed(e, (tt - origin) // _NS_PER_DAY * _NS_PER_DAY + origin))
    days = (np.searchsorted(day_keys, packed(code, w_end), side="left")
            - np.searchsorted(day_keys, packed(code, w_end - WEEK_NS), side="left"))
    # days, not resources: one burst (a takeover's dozen reads) is one day and says nothing
    # about the week after it; collection comes back day after day
    value = np.where(here, days, 0).astype(float)
    if details:
        for w in np.flatnonzero(value > 0):
            text[w] = f"{count[w]} resource{'s' if count[w] != 1 else ''} in all"
    return value, text


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


def stable_novelty(code: np.ndarray, start: np.ndarray, prev: np.ndarray,
                   w_first: np.ndarray, profile_last: np.ndarray | None,
                   here: np.ndarray) -> np.ndarray:
    """Days without anything new before a window that does something new (0 otherwise).

    ``prev`` is the entity's last novelty before each window (:func:`previous_tail`),
    ``w_first`` when it was first seen, ``profile_last`` the last novelty of each entity in
    the fitted profile (when scoring), ``here`` the windows doing something new that are
    not the entity's first.
    """
    prev = prev.copy()
    if profile_last is not None and len(profile_last):
        inside = code < len(profile_last)
        prev[inside] = np.maximum(prev[inside], profile_last[code[inside]])
    since = np.maximum(prev, w_first)
    days = np.clip((start - since) / _NS_PER_DAY, 0.0, None)
    return np.where(here & (w_first < _NEVER), days, 0.0)


def dormancy(code: np.ndarray, prev: np.ndarray, first_own: np.ndarray,
             profile_last: np.ndarray | None, known: int) -> np.ndarray:
    """Days between a window's first own event and the entity's previous own event
    (``prev``, :func:`previous_tail`; and the fitted profile's last one when scoring)."""
    prev = prev.copy()
    if profile_last is not None and len(profile_last):
        inside = (code < len(profile_last)) & (code < known)
        prev[inside] = np.maximum(prev[inside], profile_last[code[inside]])
    ok = (prev > _BEFORE_ALL) & (first_own < _NEVER)
    gap = np.where(ok, (first_own - np.where(ok, prev, 0)) / _NS_PER_DAY, 0.0)
    return np.clip(gap, 0.0, None)
