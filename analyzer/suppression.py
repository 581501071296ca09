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
        facts = None
        if any(r.needs_events for r in rules):
            if events is None:
                raise ConfigError("suppression rules with 'action' or 'source' need the "
                                  "scored events")
            facts = _window_facts(sub, events)
        for rule in rules:
            hit = _matches(rule, sub, facts) & ~suppressed[candidates]
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


def _matches(rule: SuppressionRule, sub: pd.DataFrame,
             facts: pd.DataFrame | None) -> np.ndarray:
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
    if rule.action:
        patterns = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in rule.action))
        hit &= np.array([bool(acts) and all(patterns.match(a) for a in acts)
                         for acts in facts["actions"]], dtype=bool)
    if rule.source:
        hit &= np.array([bool(ips) and all(_inside(ip, rule.source) for ip in ips)
                         for ips in facts["sources"]], dtype=bool)
    return hit


def _inside(ip: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in networks)


def _window_facts(windows: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per window (row of ``windows``), the set of its events' actions and source addresses."""
    missing = [c for c in ("timestamp", "user", "source_ip", "action") if c not in events]
    if missing:
        raise SchemaError(f"events frame lacks column(s): {', '.join(missing)}")
    if "kind" in events.columns:
        events = events[events["kind"].astype(str) != "alert"]
    keys = windows[["entity_type", "entity", "window_start", "window_end"]].copy()
    keys["row"] = np.arange(len(keys))
    keys["entity"] = keys["entity"].astype(str)
    keys["window_start"] = pd.to_datetime(keys["window_start"], utc=True)
    keys["window_end"] = pd.to_datetime(keys["window_end"], utc=True)
    parts = []
    for etype in ENTITY_TYPES:
        mine = keys[keys["entity_type"].astype(str) == etype]
        if mine.empty:
            continue
        # only the events of alerted entities: a handful of windows, not the whole frame
        wanted = events[events[etype].astype(str).isin(set(mine["entity"]))]
        sub = pd.DataFrame({"entity": wanted[etype].astype(str).to_numpy(),
                            "timestamp": pd.to_datetime(wanted["timestamp"], utc=True)
                            .to_numpy(),
                            "action": wanted["action"].astype(str).to_numpy(),
                            "source_ip": wanted["source_ip"].astype(str).to_numpy()})
        sub["timestamp"] = pd.to_datetime(sub["timestamp"], utc=True)
        pairs = mine.merge(sub, on="entity")
        inside = (pairs["timestamp"] >= pairs["window_start"]) \
            & (pairs["timestamp"] < pairs["window_end"])
        parts.append(pairs.loc[inside, ["row", "action", "source_ip"]])
    joined = pd.concat(parts, ignore_index=True) if parts else \
        pd.DataFrame(columns=["row", "action", "source_ip"])
    actions = joined.groupby("row")["action"].agg(lambda s: frozenset(s))
    sources = joined[joined["source_ip"].ne("") & joined["source_ip"].ne("nan")] \
        .groupby("row")["source_ip"].agg(lambda s: frozenset(s))
    index = pd.RangeIndex(len(keys))
    empty: frozenset[str] = frozenset()
    return pd.DataFrame({
        "actions": actions.reindex(index).map(lambda v: v if isinstance(v, frozenset)
                                              else empty),
        "sources": sources.reindex(index).map(lambda v: v if isinstance(v, frozenset)
                                              else empty),
    })
