"""The filter language of ``query``: which records a query keeps, and times as people write them.

:class:`Filter` also derives the literal byte strings a matching line must hold
(:meth:`Filter.literals`), which the scan uses as a raw pre-filter.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from analyzer.durations import parse_duration
from analyzer.errors import ConfigError
from analyzer.events import OUTCOME_CATEGORIES, Kind, Level, parse_timestamp

__all__ = ["ESCAPE", "Filter", "parse_time"]

#: What any line that spells a character as an escape holds (see :meth:`Filter.literals`).
ESCAPE = b"\\u"
# Literal pre-filter: only text a JSON writer does not escape is searched for as it is. Left
# out: quotes, backslashes, control and non-ASCII characters (all may be escaped), "/"
# (often written "\/") and "<", ">", "&" (escaped by Go's encoder and other HTML-safe ones).

def parse_time(value: str | datetime, *, now: datetime | None = None) -> datetime:
    """A point in time from ISO 8601 (a date, or a date and time) or a span back from now.

    Relative spans are durations (:func:`~analyzer.durations.parse_duration`): a number and
    a unit, ``s``, ``m`` (minutes), ``h``, ``d``, ``w``, or several (``1h30m``); a clock
    (``10:00:00``) is not a span here, it reads as a time of day. A naive date or time is UTC.

    >>> now = datetime(2026, 1, 10, 12, tzinfo=UTC)
    >>> parse_time("7d", now=now).isoformat()
    '2026-01-03T12:00:00+00:00'
    >>> parse_time("2026-01-02", now=now).isoformat()
    '2026-01-02T00:00:00+00:00'
    """
    if isinstance(value, datetime):
        return parse_timestamp(value)
    text = value.strip()
    if ":" not in text:
        try:
            return (now or datetime.now(UTC)) - parse_duration(text)
        except ConfigError:
            pass  # not a span: a date or time, below
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z")
                                        else text)
    except ValueError:
        raise ConfigError(f"not a time: {value!r}; give ISO 8601 (2026-01-02 or "
                          f"2026-01-02T10:00:00Z) or a span back from now (30m, 12h, 7d, 2w)"
                          ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Which records a query keeps. Fields are combined with AND, values of one field with OR.

    Parameters
    ----------
    users
        Exact ``user.name`` values.
    actions, resources
        Shell-style globs (``permission.*``, ``datasets/*``) on ``event.action`` and
        ``resource.name``; case-sensitive, ``*`` also crosses dots and slashes.
    outcomes
        ``success``, ``failure``, ``unknown`` (a record without an outcome is ``unknown``).
    levels
        Exact ``log.level`` labels (:meth:`at_least` builds "this level or more severe").
    kinds
        ``event`` or ``alert`` (a record without ``event.kind`` is an ``event``).
    source_ips
        Addresses or networks in CIDR notation (``10.0.0.0/8``, ``2001:db8::/32``).
    since, until
        ``since <= @timestamp < until``.
    text
        A case-insensitive substring of ``message``.
    """

    users: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    source_ips: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("users", "actions", "outcomes", "levels", "kinds", "source_ips",
                     "resources"):
            set_(self, name, _as_tuple(getattr(self, name)))
        for value in self.outcomes:
            if value not in OUTCOME_CATEGORIES:
                raise ConfigError(f"unknown outcome {value!r}; expected success, failure or "
                                  f"unknown")
        set_(self, "levels", tuple(Level.parse(v).label for v in self.levels))
        for value in self.kinds:
            if value not in {k.value for k in Kind}:
                raise ConfigError(f"unknown kind {value!r}; expected event or alert")
        for value in self.source_ips:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ConfigError(f"not an IP address or network: {value!r}") from None
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, parse_time(value))
        if self.text == "":
            set_(self, "text", None)

    @staticmethod
    def at_least(level: str | Level) -> tuple[str, ...]:
        """The labels of ``level`` and every more severe level.

        >>> Filter.at_least("warning")
        ('warning', 'error', 'critical')
        """
        floor = Level.parse(level)
        return tuple(lvl.label for lvl in Level if lvl >= floor)

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in dataclasses.fields(self))

    def literals(self) -> tuple[bytes, ...]:
        """JSON string literals of which every matching line contains at least one.

        Empty when no filter allows it; the scan then looks at every line. The value
        literals come with ``\\u``: a line may spell the value with escapes
        (``"\\u0061lert"``), and is then looked at too (:func:`~analyzer.events.may_contain`).
        """
        exact = [
            self.users,
            self.source_ips if all(_is_ipv4_address(ip) for ip in self.source_ips) else (),
            self.kinds if self.kinds == ("alert",) else (),
            self.outcomes if "unknown" not in self.outcomes else (),
            self.levels,
        ]
        fields = [(exact[0], False), (self.resources, True), (self.actions, True),
                  *((values, False) for values in exact[1:])]
        for values, glob in fields:
            found = [_glob_literal(v, glob=glob) for v in values]
            if found and all(found):
                return (*dict.fromkeys(f for f in found if f), ESCAPE)
        return ()


def _glob_literal(pattern: str, *, glob: bool = True) -> bytes | None:
    """The longest text the raw JSON of every value matching ``pattern`` holds, or None.

    Runs of characters a writer may escape split the pattern like wildcards do. A run at
    the start of the pattern takes the string's opening quote, a run at its end the closing
    quote. With brackets (character classes) only the part before the first one is used.
    """
    if glob and ("[" in pattern or "]" in pattern):
        cut = min(pattern.index(ch) for ch in "*?[]" if ch in pattern)
        return _glob_literal(pattern[:cut] + "*") if cut else None
    unsafe = re.compile(r"[*?]+|[^A-Za-z0-9 !#$%'()+,.:;=@^_`{|}~\[\]-]+" if glob
                        else r"[^A-Za-z0-9 !#$%'()*+,.:;=?@^_`{|}~\[\]-]+")
    best = b""
    position = 0
    for piece in [*unsafe.finditer(pattern), None]:
        start = piece.start() if piece else len(pattern)
        run = pattern[position:start]
        if run:
            text = run.encode("ascii")
            if position == 0:
                text = b'"' + text
            if start == len(pattern):
                text += b'"'
            if len(text) > len(best):
                best = text
        if piece:
            position = piece.end()
    return best if len(best.strip(b'"')) else None


def _is_ipv4_address(value: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address)
    except ValueError:
        return False
