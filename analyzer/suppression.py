"""Suppression rules: known-benign patterns that should not raise alerts.

An alert that keeps firing on something everybody knows is fine (the nightly backup export,
the pen-test address, the VPN egress in another country) teaches analysts to ignore alerts.
A suppression file silences such patterns **with a reason and an expiry**, and a suppressed
alert is still written to the audit trail, at WARNING instead of CRITICAL, naming the rule
and its reason: nothing is silently dropped.

The file format
---------------

UTF-8 text, one rule per line as a JSON object; blank lines and lines starting with ``#`` are
ignored::

    # nightly export by the backup account, approved in CHG-1042
    {"entity": "svc-backup", "action": "*.export", "expires": "2026-12-31", "reason": "CHG-1042"}
    # the red team's address during the pen test
    {"source": "203.0.113.0/24", "expires": "2026-03-31", "reason": "approved pen test"}
    # alice works from the Berlin office this quarter
    {"entity": "alice", "when": "n_new_countries >= 1", "expires": "2026-06-30", "reason": "moved"}

Keys (a rule must have ``reason``, ``expires`` and at least one condition; every condition
given must hold for a window to be suppressed):

``entity``
    The entity name, or a glob (``svc-*``).
``entity_type``
    ``user`` or ``source_ip``.
``action``
    A glob or a list of globs; holds when **every** action in the window matches one of them
    (an intruder's extra actions in the same window keep the alert).
``source``
    An address or CIDR block, or a list of them; holds when every source address in the
    window lies inside (for an address window, the address itself).
``when``
    A feature condition ``<feature> <op> <number>`` with ``op`` one of ``>= > <= < == !=``,
    or a list of them (all must hold), over the window's feature values
    (``n_new_countries >= 1``).
``expires``
    A date (``2026-12-31``: the rule holds through that UTC day) or an ISO 8601 time. An
    expired rule is ignored, with a note.
``reason``
    Why this is benign; it is written into each suppressed alert.
``id``
    Optional name of the rule (default: ``<file name>:<line>``).

A malformed file (bad JSON, an unknown key, a missing reason, a bad date, an unknown feature)
is rejected as a whole, naming every bad line and why, before anything is scored.

>>> rules = parse_suppressions('{"entity": "svc-*", "expires": "2099-01-01", "reason": "ok"}')
>>> rules.rules[0].describe()
'<text>:1 (entity svc-*)'
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import logging
import operator
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from analyzer.errors import ConfigError, SchemaError, SourceError
from analyzer.features import ENTITY_TYPES, FEATURES

__all__ = [
    "SUPPRESSION_COLUMNS",
    "Condition",
    "SuppressionRule",
    "Suppressions",
    "WindowFacts",
    "apply_suppressions",
    "parse_suppressions",
    "read_suppressions",
]

log = logging.getLogger(__name__)

#: Columns :func:`apply_suppressions` adds to a scores frame.
SUPPRESSION_COLUMNS: tuple[str, ...] = ("suppressed", "suppressed_by", "suppression_reason")

_KEYS = frozenset({"id", "entity", "entity_type", "action", "source", "when", "expires",
                   "reason"})
_CONDITION_KEYS = ("entity", "entity_type", "action", "source", "when")
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
    ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*"
                        r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_FEATURE_NAMES = tuple(f.name for f in FEATURES)
_MAX_REPORTED = 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """``feature op value`` over a window's feature values."""

    feature: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.feature} {self.op} {self.value:g}"

    def holds(self, values: pd.Series) -> np.ndarray:
        """Elementwise truth over a column of feature values (missing: false)."""
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.asarray(_OPS[self.op](numbers, self.value), dtype=bool) \
                & np.isfinite(numbers)


@dataclasses.dataclass(frozen=True, slots=True)
class SuppressionRule:
    """One rule of a suppression file (see the module docstring)."""

    id: str
    line: int
    reason: str
    expires: pd.Timestamp
    entity: str | None = None
    entity_type: str | None = None
    action: tuple[str, ...] = ()
    source: tuple[Network, ...] = ()
    when: tuple[Condition, ...] = ()

    def expired(self, now: pd.Timestamp) -> bool:
        """Whether the rule no longer holds at ``now``."""
        return now >= self.expires

    @property
    def needs_events(self) -> bool:
        """Whether matching needs the window's events (actions or source addresses)."""
        return bool(self.action or self.source)

    def describe(self) -> str:
        """The rule's id and conditions, for messages."""
        parts = []
        if self.entity_type:
            parts.append(f"entity_type {self.entity_type}")
        if self.entity:
            parts.append(f"entity {self.entity}")
        if self.action:
            parts.append(f"action {'|'.join(self.action)}")
        if self.source:
            parts.append(f"source {'|'.join(str(s) for s in self.source)}")
        parts += [str(c) for c in self.when]
        return f"{self.id} ({', '.join(parts)})"


@dataclasses.dataclass(frozen=True, slots=True)
class Suppressions:
    """The rules of one suppression file."""

    source: str
    rules: tuple[SuppressionRule, ...]

    def active(self, now: pd.Timestamp | None = None) -> tuple[SuppressionRule, ...]:
        """Rules not expired at ``now`` (default: the current time)."""
        when = _now(now)
        return tuple(r for r in self.rules if not r.expired(when))

    def expired(self, now: pd.Timestamp | None = None) -> tuple[SuppressionRule, ...]:
        """Rules expired at ``now``: ignored, and worth a note to whoever keeps the file."""
        when = _now(now)
        return tuple(r for r in self.rules if r.expired(when))

    def notes(self, now: pd.Timestamp | None = None) -> list[str]:
        """One line per expired rule."""
        return [f"suppression rule {r.id} expired on {r.expires:%Y-%m-%d %H:%M} UTC; "
                f"ignored (reason was: {r.reason})" for r in self.expired(now)]


def read_suppressions(path: str | os.PathLike[str]) -> Suppressions:
    """Read and validate a suppression file.

    Raises
    ------
    SourceError
        The file cannot be read.
    SchemaError
        A line is malformed; the message names every bad line (up to twenty) and why.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(f"{source}: cannot read suppressions: "
                          f"{exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{source}: suppressions are not UTF-8 text ({exc.reason})") from None
    return parse_suppressions(text, source=str(source))


def parse_suppressions(text: str, *, source: str = "<text>") -> Suppressions:
    """Parse the text of a suppression file; see :func:`read_suppressions`."""
    rules: list[SuppressionRule] = []
    problems: list[str] = []
    name = Path(source).name
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            rules.append(_parse_rule(stripped, number, name))
        except ValueError as exc:
            problems.append(f"{source}:{number}: {exc}")
    ids = [r.id for r in rules]
    for rule in rules:
        if ids.count(rule.id) > 1 and ids.index(rule.id) != rules.index(rule):
            problems.append(f"{source}:{rule.line}: duplicate rule id {rule.id!r}")
    if problems:
        more = len(problems) - _MAX_REPORTED
        listed = "; ".join(problems[:_MAX_REPORTED]) + (f"; and {more} more" if more > 0 else "")
        raise SchemaError(f"malformed suppression file, nothing scored: {listed}")
    return Suppressions(source=source, rules=tuple(rules))


def _parse_rule(line: str, number: int, file_name: str) -> SuppressionRule:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not a JSON object ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(sorted(_KEYS))}")
    reason = doc.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a rule needs a non-empty 'reason'")
    if "expires" not in doc:
        raise ValueError("a rule needs 'expires' (a date such as 2026-12-31)")
    expires = _expiry(doc["expires"])
    if not any(doc.get(k) not in (None, "", []) for k in _CONDITION_KEYS):
        raise ValueError("a rule needs at least one of " + ", ".join(_CONDITION_KEYS)
                         + " (a rule without one would silence every alert)")
    rule_id = doc.get("id", f"{file_name}:{number}")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise ValueError("'id' must be a non-empty string")
    entity = doc.get("entity")
    if entity is not None and (not isinstance(entity, str) or not entity):
        raise ValueError("'entity' must be a non-empty string")
    entity_type = doc.get("entity_type")
    if entity_type is not None and entity_type not in ENTITY_TYPES:
        raise ValueError(f"'entity_type' must be one of {', '.join(ENTITY_TYPES)}, "
                         f"got {entity_type!r}")
    action = _strings(doc.get("action"), "action")
    sources = []
    for item in _strings(doc.get("source"), "source"):
        try:
            sources.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"'source' {item!r} is not an address or CIDR block") from None
    conditions = tuple(_condition(c) for c in _strings(doc.get("when"), "when"))
    return SuppressionRule(id=rule_id.strip(), line=number, reason=reason.strip(),
                           expires=expires, entity=entity, entity_type=entity_type,
                           action=action, source=tuple(sources), when=conditions)


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise ValueError(f"'{key}' must be a non-empty string or a list of them")
    return tuple(v.strip() for v in items)


def _condition(text: str) -> Condition:
    match = _CONDITION.match(text)
    if not match:
        raise ValueError(f"'when' {text!r} is not '<feature> <op> <number>' with op one of "
                         f"{' '.join(_OPS)}")
    feature, op, value = match.groups()
    if feature not in _FEATURE_NAMES:
        close = [n for n in _FEATURE_NAMES if feature in n or n in feature]
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise ValueError(f"'when' names unknown feature {feature!r}{hint}; see the feature "
                         "table in the README")
    return Condition(feature, op, float(value))


def _expiry(value: Any) -> pd.Timestamp:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'expires' must be a date such as 2026-12-31, got {value!r}")
    text = value.strip()
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        stamp = None
    if stamp is None or stamp is pd.NaT:
        raise ValueError(f"'expires' is not a date: {text!r}")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        stamp += pd.Timedelta(days=1)  # a date holds through that day
    return stamp


def _now(now: pd.Timestamp | None) -> pd.Timestamp:
    if now is None:
        return pd.Timestamp.now(tz="UTC")
    stamp = pd.Timestamp(now)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# -- applying --------------------------------------------------------------------------------

def apply_suppressions(scores: pd.DataFrame, suppressions: Suppressions | Iterable[
                       SuppressionRule], *, events: pd.DataFrame | None = None,
                       facts: WindowFacts | None = None,
                       now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Mark the alerts that an active rule suppresses.

    Parameters
    ----------
    scores
        A scores frame (``entity_type, entity, window_start, window_end, alert`` and the
        ``f_<feature>`` columns for ``when`` conditions).
    suppressions
        The rules (expired ones are ignored).
    events
        The normalized events frame that was scored; needed by rules with ``action`` or
        ``source`` conditions, which look at every event of the window.
    facts
        Instead of ``events``: what those rules need of them, gathered as the events were
        read in chunks (:class:`WindowFacts`).
    now
        The time expiry is judged at (default: the current time).

    Returns
    -------
    pandas.DataFrame
        A copy of ``scores`` where a suppressed window has ``alert`` false, ``suppressed``
        true, and the first matching rule in ``suppressed_by`` (its id) and
        ``suppression_reason``. Windows that were not alerts are never marked.
    """
    missing = [c for c in ("entity_type", "entity", "window_start", "window_end", "alert")
               if c not in scores.columns]
    if missing:
        raise SchemaError(f"scores lack column(s): {', '.join(missing)}")
    rules = suppressions.active(now) if isinstance(suppressions, Suppressions) \
        else tuple(r for r in suppressions if not r.expired(_now(now)))
    out = scores.copy()
    alert = out["alert"].fillna(False).astype(bool).to_numpy()
    suppressed = np.zeros(len(out), dtype=bool)
    by = np.full(len(out), "", dtype=object)
    why = np.full(len(out), "", dtype=object)
    candidates = np.flatnonzero(alert)
    if len(candidates) and rules:
        sub = out.iloc[candidates].reset_index(drop=True)
        found = _facts_of(sub, rules, events, facts)
        for rule in rules:
            hit = _matches(rule, sub, found) & ~suppressed[candidates]
            rows = candidates[hit]
            suppressed[rows] = True
            by[rows] = rule.id
            why[rows] = rule.reason
    out["alert"] = alert & ~suppressed
    out["suppressed"] = suppressed
    out["suppressed_by"] = by
    out["suppression_reason"] = why
    if suppressed.any():
        log.info("%d alert(s) suppressed", int(suppressed.sum()))
    return out


def _facts_of(sub: pd.DataFrame, rules: tuple[SuppressionRule, ...],
              events: pd.DataFrame | None, facts: WindowFacts | None) -> _Facts | None:
    """What the rules on actions and addresses need to know of the windows of ``sub``."""
    marked = tuple(r for r in rules if r.needs_events)
    if not marked:
        return None
    if facts is not None:
        return facts.of(sub, marked)
    if events is None:
        raise ConfigError("suppression rules with 'action' or 'source' need the "
                          "scored events")
    return _window_facts(sub, events, marked)


def _matches(rule: SuppressionRule, sub: pd.DataFrame, facts: _Facts | None) -> np.ndarray:
    hit = np.ones(len(sub), dtype=bool)
    if rule.entity_type:
        hit &= sub["entity_type"].astype(str).to_numpy() == rule.entity_type
    if rule.entity:
        pattern = re.compile(fnmatch.translate(rule.entity))
        hit &= np.array([pattern.match(e) is not None for e in sub["entity"].astype(str)],
                        dtype=bool)
    for condition in rule.when:
        column = "f_" + condition.feature
        if column not in sub.columns:
            column = condition.feature
        if column not in sub.columns:
            raise SchemaError(f"suppression rule {rule.id} needs feature "
                              f"{condition.feature}, which the scores do not have")
        hit &= condition.holds(sub[column])
    if rule.action or rule.source:
        assert facts is not None  # _facts_of gathers them for every such rule
        action, source = facts.holds(rule)
        hit &= action & source
    return hit


def _inside(ip: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in networks)


# -- what rules on actions and addresses know of a window ----------------------------------
#
# A rule on actions holds when the window has events and every one's action matches; a rule
# on addresses when the window has an address and every address lies inside. Both are
# "all" and "any" over the window's events, judged one event at a time (_marks), so they
# can be gathered per part of a window (an hour of a sliding window, a chunk of the log) and
# combined: sums, minimums and maximums (_combine).


class _Facts:
    """Per window (the rows of the candidates), what the rules on actions and addresses
    need: ``n`` events, ``has_source`` (any address), and per rule ``a<i>`` (every action
    matches) and ``s<i>`` (every address inside), ``i`` its place in ``rules``."""

    def __init__(self, table: pd.DataFrame, rules: tuple[SuppressionRule, ...]) -> None:
        self.table = table
        self.rules = rules

    def holds(self, rule: SuppressionRule) -> tuple[np.ndarray, np.ndarray]:
        """Whether ``rule``'s action condition, and its source condition, hold (true where
        the rule has none)."""
        i = self.rules.index(rule)
        every = np.ones(len(self.table), dtype=bool)
        action = every if not rule.action else \
            (self.table["n"].to_numpy() > 0) & self.table[f"a{i}"].to_numpy(dtype=bool)
        source = every if not rule.source else \
            self.table["has_source"].to_numpy(dtype=bool) \
            & self.table[f"s{i}"].to_numpy(dtype=bool)
        return action, source


def _text(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as text (``astype(str)``'s, missing as "nan") by codes into its distinct
    texts: the rules look at each distinct value once, not once per event."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        names = np.append(values.cat.categories.astype(str).to_numpy(dtype=object), "nan")
        codes = values.cat.codes.to_numpy().astype(np.int64)
        return np.where(codes < 0, len(names) - 1, codes), names
    codes, uniques = pd.factorize(values.astype(str))
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _activity(events: pd.DataFrame) -> pd.DataFrame:
    """The events that are activity: the analyzer's own alerts are not."""
    missing = [c for c in ("timestamp", "user", "source_ip", "action") if c not in events]
    if missing:
        raise SchemaError(f"events frame lacks column(s): {', '.join(missing)}")
    if "kind" in events.columns:
        events = events[events["kind"].astype(str) != "alert"]
    return events


def _marks(events: pd.DataFrame, rules: tuple[SuppressionRule, ...]) -> dict[str, np.ndarray]:
    """Per event: ``n`` (1), ``has_source``, and per rule ``a<i>`` (its action matches; true
    for a rule without actions) and ``s<i>`` (its address is inside, or it has none)."""
    codes, names = _text(events["action"])
    ips, addresses = _text(events["source_ip"])
    present = np.array([a not in ("", "nan") for a in addresses], dtype=bool)
    out = {"n": np.ones(len(events), dtype=np.int64), "has_source": present[ips]}
    for i, rule in enumerate(rules):
        if rule.action:
            pattern = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in rule.action))
            ok = np.array([pattern.match(a) is not None for a in names], dtype=bool)
            out[f"a{i}"] = ok[codes]
        else:
            out[f"a{i}"] = np.ones(len(events), dtype=bool)
        inside = np.array([_inside(a, rule.source) for a in addresses], dtype=bool) \
            if rule.source else np.ones(len(addresses), dtype=bool)
        out[f"s{i}"] = (inside | ~present)[ips]
    return out


def _combine(parts: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Facts of parts of windows, combined per ``by``: counts add up, "any" is a maximum,
    "every" a minimum."""
    how = {c: ("sum" if c == "n" else "max" if c == "has_source" else "min")
           for c in parts.columns if c not in by}
    return parts.groupby(by, sort=False, observed=True).agg(how).reset_index()


def _per_window(pairs: pd.DataFrame, n_windows: int, rules: tuple[SuppressionRule, ...]
                ) -> _Facts:
    """The facts of each window from ``pairs`` (a ``row`` column: the window's, and facts of
    its parts); a window without events has none of them."""
    table = _combine(pairs, ["row"]).set_index("row") if len(pairs) else pd.DataFrame()
    index = pd.RangeIndex(n_windows)
    full = pd.DataFrame({"n": table["n"].reindex(index, fill_value=0) if len(table)
                         else np.zeros(n_windows, dtype=np.int64)}, index=index)
    full["has_source"] = table["has_source"].reindex(index, fill_value=False).astype(bool) \
        if len(table) else False
    for i in range(len(rules)):
        for column in (f"a{i}", f"s{i}"):
            full[column] = table[column].reindex(index, fill_value=True).astype(bool) \
                if len(table) else True
    return _Facts(full, rules)


def _nanoseconds(stamps: pd.Series) -> np.ndarray:
    """Times as nanoseconds since the epoch, whatever their unit (naive means UTC)."""
    utc = pd.to_datetime(stamps, utc=True).dt.tz_localize(None)
    return utc.to_numpy().astype("datetime64[ns]").astype(np.int64)


def _candidates(windows: pd.DataFrame) -> pd.DataFrame:
    keys = windows[["entity_type", "entity", "window_start", "window_end"]].copy()
    keys["row"] = np.arange(len(keys))
    keys["entity_type"] = keys["entity_type"].astype(str)
    keys["entity"] = keys["entity"].astype(str)
    keys["window_start"] = pd.to_datetime(keys["window_start"], utc=True)
    keys["window_end"] = pd.to_datetime(keys["window_end"], utc=True)
    return keys


def _window_facts(windows: pd.DataFrame, events: pd.DataFrame,
                  rules: tuple[SuppressionRule, ...]) -> _Facts:
    """Per window (row of ``windows``), what ``rules`` need of its events."""
    events = _activity(events)
    keys = _candidates(windows)
    parts = []
    for etype in ENTITY_TYPES:
        mine = keys[keys["entity_type"] == etype]
        if mine.empty:
            continue
        # only the events of alerted entities: a handful of windows, not the whole frame
        wanted = events[events[etype].astype(str).isin(set(mine["entity"]))]
        sub = pd.DataFrame({"entity": wanted[etype].astype(str).to_numpy(),
                            "timestamp": pd.to_datetime(wanted["timestamp"], utc=True)
                            .to_numpy(), **_marks(wanted, rules)})
        sub["timestamp"] = pd.to_datetime(sub["timestamp"], utc=True)
        pairs = mine.merge(sub, on="entity")
        inside = (pairs["timestamp"] >= pairs["window_start"]) \
            & (pairs["timestamp"] < pairs["window_end"])
        parts.append(pairs.loc[inside].drop(columns=["entity_type", "entity", "timestamp",
                                                     "window_start", "window_end"]))
    joined = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return _per_window(joined, len(keys), rules)


class WindowFacts:
    """What suppression rules on ``action`` or ``source`` need of the events, gathered as a
    log is read in chunks, so that the events are never held together.

    ``add`` each chunk as it is read; :func:`apply_suppressions` (``facts=``) then asks for
    the windows alerted. What is kept is, per entity and window step (``step``, in
    nanoseconds: the model's; a window is a whole number of steps from the epoch), a count
    and one "every action matches" and one "every address inside" per rule: its size
    follows the entities and the span of the log, not its events. The answers are those of
    the whole frame.
    """

    def __init__(self, rules: Iterable[SuppressionRule], *, step: int) -> None:
        if step < 1:
            raise ConfigError(f"step must be at least one nanosecond, got {step}")
        self.rules = tuple(r for r in rules if r.needs_events)
        self.step = int(step)
        self._parts: list[pd.DataFrame] = []
        self._rows = 0
        self._kept = 0  # rows once last combined: combine again when they double

    def add(self, events: pd.DataFrame) -> None:
        """Gather what the rules need of a chunk of the scored events."""
        if not self.rules:
            return
        events = _activity(events)
        if not len(events):
            return
        slot = _nanoseconds(events["timestamp"]) // self.step
        marks = _marks(events, self.rules)
        for etype in ENTITY_TYPES:
            codes, names = _text(events[etype])
            part = _combine(pd.DataFrame({"code": codes, "slot": slot, **marks}),
                            ["code", "slot"])
            part.insert(0, "entity", names[part.pop("code").to_numpy()])
            part.insert(0, "entity_type", etype)
            self._parts.append(part)
            self._rows += len(part)
        if self._rows > 2 * self._kept + 100_000:
            self._compact()

    def _compact(self) -> None:
        table = _combine(pd.concat(self._parts, ignore_index=True),
                         ["entity_type", "entity", "slot"])
        self._parts = [table]
        self._rows = self._kept = len(table)

    def of(self, windows: pd.DataFrame, rules: tuple[SuppressionRule, ...]) -> _Facts:
        """The facts of ``windows`` for ``rules`` (among those gathered)."""
        if any(r not in self.rules for r in rules):
            raise ConfigError("the facts were gathered for other suppression rules")
        keys = _candidates(windows)
        start, end = _nanoseconds(keys["window_start"]), _nanoseconds(keys["window_end"])
        if ((start % self.step) != 0).any() or ((end % self.step) != 0).any():
            raise ConfigError("the windows do not start and end on the facts' step")
        keys["first"], keys["stop"] = start // self.step, end // self.step
        table = pd.concat(self._parts, ignore_index=True) if self._parts else \
            pd.DataFrame(columns=["entity_type", "entity", "slot"])
        table = table[table["entity"].isin(set(keys["entity"]))]
        pairs = keys[["row", "entity_type", "entity", "first", "stop"]].merge(
            table, on=["entity_type", "entity"])
        pairs = pairs[(pairs["slot"] >= pairs["first"]) & (pairs["slot"] < pairs["stop"])]
        wanted = [f"{c}{self.rules.index(r)}" for r in rules for c in "as"]
        picked = pairs[["row", "n", "has_source", *wanted]].rename(
            columns={f"{c}{self.rules.index(r)}": f"{c}{i}"
                     for i, r in enumerate(rules) for c in "as"})
        return _per_window(picked, len(keys), rules)
