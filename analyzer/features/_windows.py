"""Phase 2 of the feature computation: the windows of a block of events, given the context.

:func:`window_block` computes every window a block owns from the block's events and the
:class:`~analyzer.features._stats.WindowContext` alone (blocks are independent of each
other), one function per feature family over a :class:`~analyzer.features._families.WindowIndex`.
What is truly sequential over a log (an entity's typical volume so far, days since its last
novelty or its last own event, first touches over the trailing week) is finished on the window
table by :func:`finish_windows`, from hidden per-window columns (``_*``) and a small table of
first touches each block returns.

A block owns the windows whose last slot (``t // step``) is in ``[lo, hi)``; it holds every
event of the slots ``[lo - (window/step - 1), hi)`` and, in ``failures``, the failed events of
the day before (for ``n_users_failed_day``). ``lo``/``hi`` of None: no bound.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from analyzer.features import _evidence
from analyzer.features import _families as fam
from analyzer.features._events import EventArrays
from analyzer.features._stats import NOVELTY_PAIRS, WindowContext
from analyzer.features._table import _DETAIL_COLUMNS, ENTITY_TYPES, _all_feature_names

_NS_PER_MINUTE = 60_000_000_000
_NS_PER_HOUR = 60 * _NS_PER_MINUTE
_NS_PER_DAY = 24 * _NS_PER_HOUR
_TRAILING = 24 * _NS_PER_HOUR
_NEVER = np.iinfo(np.int64).max
_BEFORE_ALL = np.iinfo(np.int64).min
_NOVELTY: dict[tuple[str, str], str] = {
    ("user", "source_ip"): "n_new_ips",
    ("user", "country"): "n_new_countries",
    ("user", "resource"): "n_new_resources",
    ("user", "action"): "n_new_actions",
    ("source_ip", "user"): "n_new_users",
    ("source_ip", "action"): "n_new_actions",
}
assert tuple(_NOVELTY) == NOVELTY_PAIRS
#: Novelty of a user against the user's own history (zero in the account's first window).
_OWN_NOVELTY_USER = (*(f for (e, _), f in _NOVELTY.items() if e == "user"),
                     "new_privileged_events")
# Pseudo-count pulling a short history towards the organisation's hour profile.
PRIOR_STRENGTH = 5.0
# An hour of day or weekday is unusual for an entity below 2% of its activity.
_UNUSUAL = float(np.log(50.0))
#: Time of day is continuous: activity at 17:00 makes 18:00 less surprising than 03:00. An
#: entity's hour profile is smoothed over neighbouring hours (weights by distance in hours),
#: so a short history that happens to lack one evening hour does not make it "unusual".
HOUR_KERNEL: tuple[tuple[int, float], ...] = (
    (-2, 0.25), (-1, 0.5), (0, 1.0), (1, 0.5), (2, 0.25))
KERNEL_MASS = sum(w for _, w in HOUR_KERNEL)
# Time-of-day and weekday features mean nothing until the organisation has history to
# compare with (the entity's own profile is shrunk towards the organisation's): below these
# many distinct UTC days of earlier activity they are muted (0), so a one-hour log never
# says "active at 11:00, unusual for X". Weekdays need a week to have been seen at all.
TIME_HISTORY_DAYS = 3
WEEKDAY_HISTORY_DAYS = 7
#: Hidden per-window columns the table pass needs (dropped before the windows are returned).
HIDDEN = ("_code", "_novel_tail", "_own_tail", "_first_own", "_novel_here", "_settled_here",
          "_w_first")


@dataclasses.dataclass(slots=True)
class Block:
    """One block's windows (per entity type, rows sorted by entity code then time) and the
    first settled touches of resources by users in it (user, resource, time)."""

    windows: dict[str, pd.DataFrame]
    touches: pd.DataFrame


@dataclasses.dataclass(slots=True)
class Failures:
    """Failed events before a block (time, address and user codes) for the trailing day."""

    t: np.ndarray
    source: np.ndarray
    user: np.ndarray

    @classmethod
    def none(cls) -> Failures:
        empty = np.zeros(0, dtype=np.int64)
        return cls(empty, empty, empty)


def window_block(ctx: WindowContext, ev: EventArrays, *, lo: int | None = None,
                 hi: int | None = None, failures: Failures | None = None,
                 details: bool = True) -> Block:
    """Phase 2: the windows ``ev`` owns (see the module docstring), given ``ctx``."""
    out: dict[str, pd.DataFrame] = {}
    touches = _no_touches()
    for etype in ENTITY_TYPES:
        wi = _index(ctx, ev, etype, lo, hi)
        if wi is None:
            continue
        frame, found = _entity_windows(ctx, ev, wi, failures or Failures.none(),
                                       details=details)
        out[etype] = frame
        if found is not None:
            touches = found
    return Block(out, touches)


def _index(ctx: WindowContext, ev: EventArrays, etype: str, lo: int | None,
           hi: int | None) -> fam.WindowIndex | None:
    window, step = ctx.window, ctx.step
    ent_all = ev.codes[etype]
    idx = np.flatnonzero(ent_all >= 0)
    k = window // step
    slot = ev.t[idx] // step
    if k > 1:
        # an event belongs to every window that covers it: repeat it once per window
        idx = np.repeat(idx, k)
        slot = np.repeat(slot, k) - np.tile(np.arange(k, dtype=np.int64), len(slot))
    if lo is not None or hi is not None:
        last = slot + (k - 1)  # the window's last slot decides which block owns it
        keep = np.ones(len(slot), dtype=bool)
        if lo is not None:
            keep &= last >= lo
        if hi is not None:
            keep &= last < hi
        idx, slot = idx[keep], slot[keep]
    if not len(idx):
        return None
    t = ev.t[idx]
    ent = ent_all[idx]
    slot0 = slot.min()
    n_slots = int(slot.max() - slot0) + 1
    key = ent * n_slots + (slot - slot0)
    order = np.lexsort((t, key))
    idx, t, ent, key = idx[order], t[order], ent[order], key[order]
    start = np.r_[True, key[1:] != key[:-1]]
    win = np.cumsum(start) - 1
    firsts = np.flatnonzero(start)
    fail = ev.fail[idx]
    # A user's profile is what the user did: failed attempts against an account are
    # someone else's doing (the address windows carry them), so they neither build the
    # profile nor count as the user doing something new.
    counted = ~fail if etype == "user" else np.ones(len(t), dtype=bool)
    return fam.WindowIndex(
        etype=etype, window=window, idx=idx, t=t, ent=ent, win=win, firsts=firsts,
        w_ent=ent[firsts], w_start=(key[firsts] % n_slots + slot0) * step, counted=counted,
        known=ev.known[etype], fitting=ctx.fitting)


def _entity_windows(ctx: WindowContext, ev: EventArrays, wi: fam.WindowIndex,
                    failures: Failures, *, details: bool
                    ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    codes = {f: c[wi.idx] for f, c in ev.codes.items()}
    cols: dict[str, Any] = {}
    text: dict[str, np.ndarray] = {}
    cols.update(_volume(wi, ev, codes))
    cols.update(_diversity(ctx, wi, codes, ev.fail[wi.idx], failures))
    novel, fresh = _novelty(ctx, wi, codes, ev.priv[wi.idx], cols)
    if wi.etype == "user":
        cols.update(_outside_peers(ctx, wi, codes, novel))
    else:
        cols.update(_address_users(ctx, wi, codes, ev.fail[wi.idx], novel))
    hidden, touches = _attack_families(ctx, ev, wi, codes, novel, fresh, cols, text,
                                       details=details)
    odd_time = _time_of_day(ctx, ev, wi, codes, cols)
    evidence_text = _evidence_features(ctx, ev, wi, codes, cols)
    if details:
        text.update(_detail_texts(ev, wi, codes, novel, odd_time, evidence_text))
    return _frame(ev, wi, cols, text, hidden, details=details), touches


# -- the families -------------------------------------------------------------------------------

def _volume(wi: fam.WindowIndex, ev: EventArrays, codes: dict[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
    """Counts, failures, bursts, privileged actions, bytes, failures then a success."""
    win, n_win, firsts = wi.win, wi.n_win, wi.firsts
    fail, succ, priv = ev.fail[wi.idx], ev.succ[wi.idx], ev.priv[wi.idx]
    n = np.bincount(win, minlength=n_win).astype(float)
    cols = {"n_events": n, "n_failures": np.bincount(win, fail, minlength=n_win)}
    cols["failure_ratio"] = cols["n_failures"] / n if wi.etype == "source_ip" else \
        np.zeros(n_win)
    minute = wi.t // _NS_PER_MINUTE
    start = np.zeros(len(win), dtype=bool)
    start[firsts] = True
    new_minute = start | np.r_[True, minute[1:] != minute[:-1]]
    cols["events_per_minute"] = n / np.bincount(win, new_minute, minlength=n_win)
    run = np.cumsum(new_minute) - 1
    cols["max_burst"] = np.maximum.reduceat(np.bincount(run), run[firsts]).astype(float)
    cols["n_privileged"] = np.bincount(win, priv, minlength=n_win)
    cols["bytes_total"] = np.bincount(win, ev.nbytes[wi.idx], minlength=n_win)
    cols["fail_then_success"] = _fail_then_success(
        win, codes["source_ip"] if wi.etype == "user" else None, fail, succ, n_win)
    return cols


def _diversity(ctx: WindowContext, wi: fam.WindowIndex, codes: dict[str, np.ndarray],
               fail: np.ndarray, failures: Failures) -> dict[str, np.ndarray]:
    """Distinct resources, actions, addresses, countries, users; a country's rarity."""
    win, n_win = wi.win, wi.n_win
    cols = {"n_resources": _distinct(win, codes["resource"], n_win),
            "n_actions": _distinct(win, codes["action"], n_win)}
    if wi.etype == "user":
        cols["n_ips"] = _distinct(win, codes["source_ip"], n_win, ~fail)
        cols["n_countries"] = _distinct(win, codes["country"], n_win, ~fail)
        return cols
    c = codes["country"]
    profile = ctx.profile
    # countries unknown to the profile get the share of a single event
    shares = np.r_[profile.country_share_, profile.country_unseen_]
    share = shares[np.where(c < len(profile.country_share_), c, -1)]
    rarity = np.where(c >= 0, -np.log(share), 0.0)
    cols["country_rarity"] = np.maximum.reduceat(rarity, wi.firsts)
    cols["n_users"] = _distinct(win, codes["user"], n_win)
    cols["n_users_failed"] = _distinct(win, codes["user"], n_win, fail)
    ent = np.r_[wi.ent, failures.source]
    cols["n_users_failed_day"] = _trailing_failed_users(
        ent, np.r_[codes["user"], failures.user], np.r_[wi.t, failures.t],
        np.r_[fail, np.ones(len(failures.t), dtype=bool)], wi.w_ent, wi.w_start,
        window=wi.window, origin=ctx.fail_origin.get(wi.etype))
    return cols


def _novelty(ctx: WindowContext, wi: fam.WindowIndex, codes: dict[str, np.ndarray],
             priv: np.ndarray, cols: dict[str, Any]
             ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Novelty "as seen so far": a value is new in a window when nothing before the window
    start had it, neither in this log nor (when scoring) in the fitted profile. So a new
    address is news in the first window it appears in, not in every later one."""
    etype, win, n_win = wi.etype, wi.win, wi.n_win
    row_wstart = wi.row_wstart
    novel: dict[str, np.ndarray] = {}
    for (e, attr), feature in _NOVELTY.items():
        if e != etype:
            continue
        a = codes[attr]
        first = ctx.first[f"nov:{etype}:{attr}"].get(wi.ent, a)
        is_new = wi.counted & (a >= 0) & (first >= row_wstart)
        if not ctx.fitting:
            is_new &= ~_known_pair(ctx.profile, etype, attr, wi.ent, a)
        novel[attr] = is_new
        cols[feature] = _distinct(win, a, n_win, is_new)
    fresh = wi.counted & (ctx.first[f"first:{etype}"].get(wi.ent) >= row_wstart)
    if not ctx.fitting:
        fresh &= wi.ent >= wi.known
    cols["new_entity"] = np.maximum.reduceat(fresh.astype(float), wi.firsts)
    novel["privileged"] = novel["action"] & priv
    cols["new_privileged_events"] = np.bincount(win, novel["privileged"], minlength=n_win)
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
    return novel, fresh


def _outside_peers(ctx: WindowContext, wi: fam.WindowIndex, codes: dict[str, np.ndarray],
                   novel: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Resources and actions no member of the user's peer group touched before."""
    cols = {}
    for attr, feature in (("resource", "n_outside_peer_resources"),
                          ("action", "n_outside_peer_actions")):
        a = codes[attr]
        ok = wi.counted & (a >= 0)
        if ctx.fitting:
            # as seen so far: outside if nobody in the group touched it before this window
            group_first = ctx.peer_first[attr].get(wi.ent, a)
            outside = ok & (group_first >= wi.row_wstart)
        else:
            # users unknown to the profile have no peer group yet: say nothing rather than
            # flag everything a new joiner touches
            profile = ctx.profile
            width = max(len(profile.vocab_[attr]), 1)
            inside = (wi.ent < len(profile.vocab_["user"])) & (a < width)
            known = inside & _in_sorted(profile.peer_keys_[attr], wi.ent * width + a)
            fresh = ctx.first[f"nov:user:{attr}"].get(wi.ent, a) >= wi.row_wstart
            outside = ok & fresh & ~known & (wi.ent < len(profile.vocab_["user"]))
        novel["peer_" + attr] = outside
        cols[feature] = _distinct(wi.win, a, wi.n_win, outside)
    return cols


def _address_users(ctx: WindowContext, wi: fam.WindowIndex, codes: dict[str, np.ndarray],
                   fail: np.ndarray, novel: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Users never seen before, and what users new to the address did that was new for them:
    a traveller reads the usual things from a new place, an intruder with a stolen password
    does not (and an insider at their usual desk is the user window's business)."""
    u, r = codes["user"], codes["resource"]
    row_wstart = wi.row_wstart
    unknown = (u >= 0) & (ctx.first["user_from_address"].get(u) >= row_wstart)
    if not ctx.fitting:
        unknown &= u >= ctx.known["user"]
    novel["unknown_user"] = unknown
    done = (u >= 0) & (r >= 0) & ~fail
    first = ctx.first["done_from_address"].get(u, r)
    theirs = done & (first >= row_wstart) & novel["user"]
    if not ctx.fitting:
        theirs &= ~_known_pair(ctx.profile, "user", "resource", u, r)
    novel["resource"] = theirs
    return {"n_unknown_users": _distinct(wi.win, u, wi.n_win, unknown),
            "n_users_new_resources": _distinct(wi.win, r, wi.n_win, theirs)}


def _attack_families(ctx: WindowContext, ev: EventArrays, wi: fam.WindowIndex,
                     codes: dict[str, np.ndarray], novel: dict[str, np.ndarray],
                     fresh: np.ndarray, cols: dict[str, Any], text: dict[str, np.ndarray],
                     *, details: bool) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
    """The families per-entity hourly counts cannot see (see :mod:`._families`); returns the
    hidden columns the table pass finishes them from, and the block's first touches."""
    hidden: dict[str, np.ndarray] = {"_code": wi.w_ent}
    succ = ev.succ[wi.idx]
    new_source = novel["source_ip"] if wi.etype == "user" else fresh
    storm_cols, storm_text = fam.failure_storm(
        wi, ctx.org, ctx.storm, succ, new_source, ev.names["source_ip"], codes["source_ip"],
        details=details)
    cols.update(storm_cols)
    text.update(storm_text)
    if wi.etype != "user":
        return hidden, None
    first = _first_seen(ctx, wi)
    first_window = cols["new_entity"] > 0
    more, found = fam.second_address(wi, novel["source_ip"], codes["source_ip"],
                                     ev.names["source_ip"], first_window, details=details)
    cols.update(more)
    text.update(found)
    settled, touches = fam.first_touches(wi, novel["resource"], codes["resource"], first)
    something_new = novel["resource"] | novel["action"]
    hidden.update({
        "_novel_tail": fam.tail_max(wi, something_new, ctx.step),
        "_own_tail": fam.tail_max(wi, wi.counted, ctx.step),
        "_first_own": np.minimum.reduceat(np.where(wi.counted, wi.t, _NEVER), wi.firsts),
        "_novel_here": np.bincount(wi.win, something_new, minlength=wi.n_win) > 0,
        "_settled_here": np.bincount(wi.win, settled, minlength=wi.n_win) > 0,
        "_w_first": first[wi.firsts]})
    return hidden, touches


def _first_seen(ctx: WindowContext, wi: fam.WindowIndex) -> np.ndarray:
    """Per row: when the row's entity was first seen doing something itself."""
    first = ctx.first[f"first:{wi.etype}"].get(wi.ent)
    profile_first = None if ctx.fitting else \
        getattr(ctx.profile, "first_seen_", {}).get(wi.etype)
    if profile_first is not None and len(profile_first):
        inside = wi.ent < len(profile_first)
        first[inside] = np.minimum(first[inside], profile_first[wi.ent[inside]])
    return first


def _time_of_day(ctx: WindowContext, ev: EventArrays, wi: fam.WindowIndex,
                 codes: dict[str, np.ndarray], cols: dict[str, Any]) -> np.ndarray:
    """Hour and weekday rarity, privileged actions at odd times, quiet hours; returns the
    rows of privileged actions at odd times."""
    win, n_win, counted = wi.win, wi.n_win, wi.counted
    hour_s, week_s = _time_surprisal(ctx, wi)
    history = _history_days(ctx, wi.w_start)[win]
    hour_s = np.where(history >= TIME_HISTORY_DAYS, hour_s, 0.0)
    week_s = np.where(history >= WEEKDAY_HISTORY_DAYS, week_s, 0.0)
    n_counted = np.maximum(np.bincount(win, counted, minlength=n_win), 1)
    cols["hour_rarity"] = np.bincount(win, hour_s * counted, minlength=n_win) / n_counted
    cols["weekday_rarity"] = np.bincount(win, week_s * counted, minlength=n_win) / n_counted
    priv = ev.priv[wi.idx]
    odd_time = counted & priv & ((hour_s > _UNUSUAL) | (week_s > _UNUSUAL))
    cols["privileged_off_hours"] = np.bincount(win, odd_time, minlength=n_win)
    hb = wi.t // _NS_PER_HOUR
    quiet = ctx.profile.quiet_hours_[weekday(hb) * 24 + hb % 24]
    quiet &= history >= TIME_HISTORY_DAYS
    cols["off_hours_share"] = np.bincount(win, quiet, minlength=n_win) / cols["n_events"]
    return odd_time


def _time_surprisal(ctx: WindowContext, wi: fam.WindowIndex) -> tuple[np.ndarray, np.ndarray]:
    """Surprisal of each row's hour of day and weekday for its entity (rows that are not
    the entity's own doing get any value: they are never counted)."""
    hb = wi.t // _NS_PER_HOUR
    if ctx.fitting:
        unit_key, s_hour, s_day = ctx.units[wi.etype]
        if not len(unit_key):
            return np.zeros(len(hb)), np.zeros(len(hb))
        pos = np.minimum(np.searchsorted(unit_key, wi.ent * (1 << 32) + hb), len(unit_key) - 1)
        return s_hour[pos], s_day[pos]
    profile = ctx.profile
    counts_h, counts_d = profile.hour_counts_[wi.etype], profile.weekday_counts_[wi.etype]
    hour, day = hb % 24, weekday(hb)
    inside = wi.ent < len(counts_h)
    e = np.where(inside, wi.ent, 0)
    c_hour = np.zeros(len(hb))
    c_day = np.zeros(len(hb))
    total = np.zeros(len(hb))
    if len(counts_h):
        smooth = sum(weight * np.roll(counts_h, -offset, axis=1)
                     for offset, weight in HOUR_KERNEL)
        c_hour = np.where(inside, smooth[e, hour], 0.0)
        c_day = np.where(inside, counts_d[e, day], 0.0)
        total = np.where(inside, counts_h.sum(axis=1)[e], 0.0)
    return surprisal(c_hour, c_day, total, hour, day, profile.hour_prior_,
                     profile.weekday_prior_)


def surprisal(c_hour: np.ndarray, c_day: np.ndarray, total: np.ndarray, hour: np.ndarray,
              day: np.ndarray, hour_prior: np.ndarray, weekday_prior: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Hour-of-day and weekday surprisal from an entity's counts, shrunk to the priors."""
    m = PRIOR_STRENGTH
    s_hour = -np.log((c_hour / KERNEL_MASS + m * hour_prior[hour]) / (total + m))
    s_day = -np.log((c_day + m * weekday_prior[day]) / (total + m))
    return s_hour, s_day


def _history_days(ctx: WindowContext, w_start: np.ndarray) -> np.ndarray:
    """Distinct UTC days with activity before each window's day (training days too)."""
    if ctx.days is None:  # a profile saved before history was counted: all of it
        return np.full(len(w_start), np.iinfo(np.int64).max)
    return np.searchsorted(ctx.days, w_start // _NS_PER_DAY, side="left")


def _evidence_features(ctx: WindowContext, ev: EventArrays, wi: fam.WindowIndex,
                       codes: dict[str, np.ndarray], cols: dict[str, Any]
                       ) -> dict[str, _evidence.Detail]:
    """Evidence features (:mod:`analyzer.features._evidence`) into ``cols``."""
    a = codes["action"]
    # first use of an action by the entity, failed attempts included (an intruder
    # trying DeleteTrail without the right is news too), and never zeroed in an
    # entity's first window: a new identity's first DeleteTrail is the case to name
    table = "use:user:action" if wi.etype == "user" else "nov:source_ip:action"
    first_use = (a >= 0) & (ctx.first[table].get(wi.ent, a) >= wi.row_wstart)
    if not ctx.fitting:
        first_use &= ~_known_pair(ctx.profile, wi.etype, "action", wi.ent, a)
    found, named = _evidence.window_evidence(
        ev.evidence, wi.idx, wi.win, wi.n_win, etype=wi.etype, t=wi.t,
        window_end=wi.w_start + wi.window, first_use=first_use, address=codes["source_ip"],
        address_names=ev.names["source_ip"], credential_first=ctx.credential_first)
    cols.update(found)
    return named


def _detail_texts(ev: EventArrays, wi: fam.WindowIndex, codes: dict[str, np.ndarray],
                  novel: dict[str, np.ndarray], odd_time: np.ndarray,
                  evidence: dict[str, _evidence.Detail]) -> dict[str, np.ndarray]:
    """The ``d_*`` columns: what was new, rare or telling in each window, by name."""
    win, n_win, names = wi.win, wi.n_win, ev.names
    none = np.zeros(len(win), dtype=bool)
    out = {name: describe(win, c, labels, mask, n_win, counts=counts)
           for name, (c, labels, mask, counts) in evidence.items()}
    for name, field, key, counts in (
            ("d_new_ips", "source_ip", "source_ip", False),
            ("d_new_countries", "country", "country", False),
            ("d_new_resources", "resource", "resource", False),
            ("d_new_actions", "action", "action", True),
            ("d_new_privileged", "action", "privileged", True),
            ("d_outside_peer_resources", "resource", "peer_resource", False),
            ("d_outside_peer_actions", "action", "peer_action", False),
            ("d_new_users", "user", "user", False),
            ("d_unknown_users", "user", "unknown_user", False)):
        out[name] = describe(win, codes[field], names[field], novel.get(key, none), n_win,
                             counts=counts)
    out["d_privileged_off_hours"] = describe(win, codes["action"], names["action"], odd_time,
                                             n_win, counts=True)
    if wi.etype == "source_ip":
        out["d_country"] = describe(win, codes["country"], names["country"],
                                    codes["country"] >= 0, n_win, limit=2)
        # the accounts it failed against that it was never seen with before (a stranger's
        # attempts, not a person mistyping at their own desk): see model._victim_links
        out["d_new_failed_users"] = describe(win, codes["user"], names["user"],
                                             ev.fail[wi.idx] & novel.get("user", none), n_win)
    return out


def _frame(ev: EventArrays, wi: fam.WindowIndex, cols: dict[str, Any],
           text: dict[str, np.ndarray], hidden: dict[str, np.ndarray], *,
           details: bool) -> pd.DataFrame:
    n_win = wi.n_win
    if ev.seq is not None:
        seq = ev.seq[wi.idx]
        big = np.iinfo(np.int64).max
        lo = np.minimum.reduceat(np.where(seq >= 0, seq, big), wi.firsts)
        hi = np.maximum.reduceat(seq, wi.firsts)
        first_seq = pd.array(np.where(lo == big, 0, lo), dtype="Int64")
        first_seq[lo == big] = pd.NA
        last_seq = pd.array(np.maximum(hi, 0), dtype="Int64")
        last_seq[hi < 0] = pd.NA
    else:
        first_seq = last_seq = pd.array([pd.NA] * n_win, dtype="Int64")
    data: dict[str, Any] = {
        "entity_type": np.full(n_win, wi.etype, dtype=object),
        "entity": pd.Series(ev.names[wi.etype][wi.w_ent], dtype=object).astype(str),
        "window_start": pd.to_datetime(wi.w_start, utc=True).astype("datetime64[ns, UTC]"),
        "window_end": pd.to_datetime(wi.w_start + wi.window, utc=True)
        .astype("datetime64[ns, UTC]"),
        "first_sequence": first_seq,
        "last_sequence": last_seq,
    }
    for name in _all_feature_names():
        values = cols.get(name)
        data[name] = np.zeros(n_win) if values is None else np.asarray(values, float)
    if details:
        for name in _DETAIL_COLUMNS:
            data[name] = text.get(name, np.full(n_win, "", dtype=object))
    data.update(hidden)
    return pd.DataFrame(data)


# -- the table pass -----------------------------------------------------------------------------

def finish_windows(ctx: WindowContext, blocks: list[Block], *, details: bool
                   ) -> pd.DataFrame:
    """The window table from the blocks of a log, in the in-memory order (entity type,
    entity code, window start), with the sequential features finished; when fitting, the
    profile's typical volumes and last novelties are recorded. The blocks' window frames
    are consumed (taken out of them as they are joined, so that memory holds one copy)."""
    parts = []
    for etype in ENTITY_TYPES:
        frames = [f for b in blocks if (f := b.windows.pop(etype, None)) is not None]
        if not frames:
            continue
        w = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        del frames
        start = pd.DatetimeIndex(w["window_start"]).as_unit("ns").asi8
        order = np.lexsort((start, w["_code"].to_numpy()))
        if not (order == np.arange(len(order))).all():
            w = w.iloc[order].reset_index(drop=True)
        _vs_typical(ctx, etype, w)
        if etype == "user":
            touches = [b.touches for b in blocks if len(b.touches)]
            _user_history(ctx, w, pd.concat(touches) if touches else _no_touches(),
                          details=details)
        for column in HIDDEN:
            if column in w.columns:
                del w[column]  # in place: no copy of the table
        parts.append(w)
    if not parts:
        return empty_windows(details)
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    out["entity_type"] = pd.Categorical(out["entity_type"], categories=list(ENTITY_TYPES))
    return out


def _vs_typical(ctx: WindowContext, etype: str, w: pd.DataFrame) -> None:
    """Events and bytes against the entity's typical window: when fitting, the mean of its
    earlier windows (an expanding mean); when scoring, the fitted mean."""
    profile = ctx.profile
    code = w["_code"].to_numpy()
    for what, column, source in (("events", "events_vs_typical", "n_events"),
                                 ("bytes", "bytes_vs_typical", "bytes_total")):
        values = np.log1p(w[source].to_numpy(dtype=float))
        store = profile.typical_events_ if what == "events" else profile.typical_bytes_
        if ctx.fitting:
            # windows are sorted by entity then time: an expanding mean of the past windows
            grouped = pd.Series(values).groupby(code, sort=False)
            past_sum = grouped.cumsum().to_numpy() - values
            past_n = grouped.cumcount().to_numpy()
            with np.errstate(invalid="ignore", divide="ignore"):
                prior = np.where(past_n > 0, past_sum / np.maximum(past_n, 1), np.nan)
            known = ctx.known[etype]
            totals = np.bincount(code, values, minlength=known)[:known]
            counts = np.bincount(code, minlength=known)[:known]
            with np.errstate(invalid="ignore", divide="ignore"):
                store[etype] = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        else:
            typical = store[etype]
            prior = np.full(len(values), np.nan)
            inside = code < len(typical)
            prior[inside] = typical[code[inside]]
        w[column] = np.where(np.isnan(prior), 0.0, values - prior)


def _user_history(ctx: WindowContext, w: pd.DataFrame, touches: pd.DataFrame, *,
                  details: bool) -> None:
    """Stable novelty, dormancy and the trailing week's new resources of user windows."""
    code = w["_code"].to_numpy()
    start = pd.DatetimeIndex(w["window_start"]).as_unit("ns").asi8
    profile = ctx.profile
    novel_tail = w["_novel_tail"].to_numpy()
    if ctx.fitting:
        profile.last_novel_["user"] = fam.last_per_entity(code, novel_tail, ctx.known["user"])
    prev_novel = fam.previous_tail(code, start, novel_tail, ctx.window)
    prev_own = fam.previous_tail(code, start, w["_own_tail"].to_numpy(), ctx.window)
    first_window = w["new_entity"].to_numpy() > 0
    last_novel = None if ctx.fitting else getattr(profile, "last_novel_", {}).get("user")
    last_seen = None if ctx.fitting else getattr(profile, "last_seen_", {}).get("user")
    w["stable_days_before_novelty"] = fam.stable_novelty(
        code, start, prev_novel, w["_w_first"].to_numpy(), last_novel,
        w["_novel_here"].to_numpy(dtype=bool) & ~first_window)
    w["days_dormant"] = fam.dormancy(code, prev_own, w["_first_own"].to_numpy(), last_seen,
                                     ctx.known["user"])
    value, text = fam.slow_collection(code, start, ctx.window,
                                      w["_settled_here"].to_numpy(dtype=bool), touches,
                                      details=details)
    w["new_resources_week"] = value
    if details:
        w["d_new_resources_week"] = text


def _no_touches() -> pd.DataFrame:
    empty = np.zeros(0, dtype=np.int64)
    return pd.DataFrame({"e": empty, "r": empty, "t": empty})


def empty_windows(details: bool) -> pd.DataFrame:
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


# -- small array helpers ------------------------------------------------------------------------

def weekday(hour_bucket: np.ndarray) -> np.ndarray:
    # 1970-01-01 was a Thursday; Monday is 0
    return (hour_bucket // 24 + 3) % 7


def _known_pair(profile: Any, etype: str, attr: str, ent: np.ndarray,
                a: np.ndarray) -> np.ndarray:
    n_ent, width = len(profile.vocab_[etype]), max(len(profile.vocab_[attr]), 1)
    inside = (ent < n_ent) & (a >= 0) & (a < width)
    return inside & _in_sorted(profile.pairs_[(etype, attr)], ent * width + a)


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


def _in_sorted(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Membership of ``query`` in the sorted array ``keys``."""
    if not len(keys):
        return np.zeros(len(query), dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[pos] == query


def describe(win: np.ndarray, codes: np.ndarray, names: np.ndarray, mask: np.ndarray,
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


def _trailing_failed_users(ent: np.ndarray, user: np.ndarray, t: np.ndarray, fail: np.ndarray,
                           w_ent: np.ndarray, w_start: np.ndarray, *, window: int,
                           origin: int | None) -> np.ndarray:
    """Distinct users with a failure from each window's entity in the day up to its end.

    Each (entity, user) pair's failures form runs whose gaps are under a day; a run counts
    for every window that ends within a day of one of its failures, so a window's count is
    the runs of its entity begun before its end minus those over a day before it. Times are
    packed in whole seconds from ``origin`` (the log's, so that any block of it counts the
    same).
    """
    ok = fail & (user >= 0) & (ent >= 0)
    if not ok.any() or origin is None:
        return np.zeros(len(w_ent))
    day = _TRAILING
    pair = ent[ok] * (int(user.max()) + 1) + user[ok]
    tf = t[ok]
    order = np.lexsort((tf, pair))
    pair, tf, e = pair[order], tf[order], ent[ok][order]
    new_run = np.r_[True, (pair[1:] != pair[:-1]) | (tf[1:] - tf[:-1] > day)]
    last = np.r_[new_run[1:], True]
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
