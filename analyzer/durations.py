"""Durations as users write them: one grammar for every option that takes a span of time.

The logger's ``rotate_every``, the spans back from now of ``--since``/``--until``
(:func:`analyzer.query.parse_time`) and the window ``watch`` follows all read a duration
with :func:`parse_duration`. The grammar is the union of what each of them accepted before:

- one or more terms, each a number (decimals allowed) and a unit, separated by nothing,
  spaces or commas: ``90s``, ``30m``, ``1.5h``, ``7d``, ``2w``, ``1h30m``, ``1 day, 2 hours``;
- units, in any case: ``w``/``week``/``weeks``; ``d``/``day``/``days``;
  ``h``/``hr``/``hrs``/``hour``/``hours``; ``m``/``min``/``mins``/``minute``/``minutes``;
  ``s``/``sec``/``secs``/``second``/``seconds``; ``ms``/``milli``/``millis``/
  ``millisecond(s)``; ``us``/``µs``/``micro``/``micros``/``microsecond(s)``;
  ``ns``/``nano``/``nanos``/``nanosecond(s)``;
- optionally a clock ``hh:mm:ss[.fff]`` last (``1 days 02:00:00``, ``02:00:00``: how pandas
  prints a duration, which is how a model's window may be written);
- or ISO 8601: ``PT1H``, ``P1DT12H``, ``P2W``.

No sign: a duration here is a length, and each caller says whether zero is allowed. The
value is exact to the microsecond (a :class:`~datetime.timedelta`). Pandas durations
(:class:`pandas.Timedelta`) mean the same for every form above; the bare numbers pandas
reads as nanoseconds are refused.

>>> parse_duration("1h30m")
datetime.timedelta(seconds=5400)
>>> parse_duration("2w") == parse_duration("14 days") == parse_duration("P2W")
True
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from analyzer.errors import ConfigError

__all__ = ["parse_duration"]

_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
       "h": 3600 * 10**9, "d": 86_400 * 10**9, "w": 7 * 86_400 * 10**9}
_UNIT_NAMES = {
    "w": ("w", "week", "weeks"),
    "d": ("d", "day", "days"),
    "h": ("h", "hr", "hrs", "hour", "hours"),
    "m": ("m", "min", "mins", "minute", "minutes"),
    "s": ("s", "sec", "secs", "second", "seconds"),
    "ms": ("ms", "milli", "millis", "millisecond", "milliseconds"),
    "us": ("us", "\N{MICRO SIGN}s", "\N{GREEK SMALL LETTER MU}s", "micro", "micros",
           "microsecond", "microseconds"),
    "ns": ("ns", "nano", "nanos", "nanosecond", "nanoseconds"),
}
_UNIT_NS = {name: _NS[unit] for unit, names in _UNIT_NAMES.items() for name in names}

_NUMBER = r"\d+(?:\.\d*)?"
_TERM = re.compile(rf"({_NUMBER})\s*([^\W\d_]+)")
_SEPARATOR = re.compile(r"[\s,]*")
_CLOCK = re.compile(r"(\d+):(\d\d?):(\d\d?(?:\.\d+)?)\s*\Z")
_ISO = re.compile(rf"P(?:({_NUMBER})W)?(?:({_NUMBER})D)?"
                  rf"(?:T(?=\d)(?:({_NUMBER})H)?(?:({_NUMBER})M)?(?:({_NUMBER})S)?)?",
                  re.IGNORECASE)
_ISO_UNITS = ("w", "d", "h", "m", "s")
_EXAMPLES = ("give a number and a unit (90s, 30m, 1.5h, 7d, 2w), several (1h30m), "
             "or ISO 8601 (PT1H)")


def parse_duration(value: str | timedelta, *, name: str = "duration") -> timedelta:
    """The span of time ``value`` names (see the module docstring for the grammar).

    A :class:`~datetime.timedelta` (a :class:`pandas.Timedelta` too) is returned as it is.

    Raises
    ------
    ConfigError
        ``value`` is not a duration; the message starts with ``name``.
    """
    if isinstance(value, timedelta):
        return value
    text = value.strip() if isinstance(value, str) else ""
    ns = _iso_ns(text) if text[:1] in ("P", "p") else _terms_ns(text)
    if ns is None:
        raise ConfigError(f"{name}: not a duration: {value!r}; {_EXAMPLES}")
    return timedelta(microseconds=ns // 1_000)


def _terms_ns(text: str) -> int | None:
    total, pos, found = 0, 0, False
    while True:
        pos = _SEPARATOR.match(text, pos).end()  # type: ignore[union-attr]  # always matches
        if pos == len(text):
            return total if found else None
        clock = _CLOCK.match(text, pos)
        if clock is not None:
            hours, minutes, seconds = clock.groups()
            return total + int(hours) * _NS["h"] + int(minutes) * _NS["m"] + int(
                Decimal(seconds) * _NS["s"])
        term = _TERM.match(text, pos)
        unit = _UNIT_NS.get(term.group(2).lower()) if term is not None else None
        if term is None or unit is None:
            return None
        total += int(Decimal(term.group(1)) * unit)
        pos, found = term.end(), True


def _iso_ns(text: str) -> int | None:
    match = _ISO.fullmatch(text)
    if match is None or not any(match.groups()):
        return None
    return sum(int(Decimal(amount) * _NS[unit])
               for amount, unit in zip(match.groups(), _ISO_UNITS, strict=True) if amount)
