"""How to read the input logs: one frozen set of options, each checked against the readers.

Every reader module declares the options it takes in ``OPTIONS`` (a subset of the fields of
:class:`ReaderOptions`); :func:`~analyzer.sources.read_events` hands each file's reader only
its own. An option no reader knows is an error when the options are made, and an option that
none of the files read takes (``year=`` for a CSV) is an error naming the formats it is for,
never silently dropped. One call may still read a mix of formats: ``year=`` applies to the
syslog files among them.

>>> ReaderOptions(year=2024).for_reader(frozenset({"year", "tz"}))
{'year': 2024}
>>> ReaderOptions.of(yaer=2024)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
analyzer.errors.ConfigError: unknown reader option 'yaer' (known: all_events, ...)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from analyzer.errors import ConfigError

__all__ = ["ReaderOptions"]

#: Options about the input's encryption: a key ring offered to whatever is sealed. They are
#: never "inapplicable": a command may hold the key for what it writes (``score`` sealing
#: its alerts into an encrypted trail while reading a CSV), and a clear file needs none.
_KEY_RING = frozenset({"decrypt_keys", "clear_only"})


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderOptions:
    """What the readers are told beyond the file: header mappings, syslog year, keys...

    Only the options set (different from their default) are passed on, each to the readers
    that declare it (``docs/formats.md`` lists what each format takes).
    """

    #: csv: header -> column; generic: the declarative mapping (a dict or a JSON file)
    mapping: Mapping[str, Any] | str | os.PathLike[str] | None = None
    #: csv: one value for a column the file lacks (``{"outcome": "success"}``)
    constants: Mapping[str, str] | None = None
    #: csv: the field separator
    delimiter: str | None = None
    #: sshd: the year of syslog timestamps (inferred when ``None``)
    year: int | None = None
    #: sshd: the time zone of syslog timestamps
    tz: str | None = None
    #: windows: keep events outside the mapped set
    all_events: bool = False
    #: k8s: the audit stages read
    stages: Collection[str] | None = None
    #: jsonl, parquet: keep the analyzer's own alert records
    include_alerts: bool = False
    #: jsonl: keys for records encrypted at rest
    decrypt_keys: tuple[bytes, ...] = ()
    #: jsonl, parquet: read encrypted records' clear fields only
    clear_only: bool = False

    @classmethod
    def of(cls, options: ReaderOptions | Mapping[str, Any] | None = None,
           **more: Any) -> ReaderOptions:
        """Options from keyword arguments (``read_events(path, year=2024)``), checked by
        name: a misspelt option is a :class:`~analyzer.errors.ConfigError`."""
        base = options if isinstance(options, ReaderOptions) else cls()
        given = dict(options) if isinstance(options, Mapping) else {}
        given.update(more)
        unknown = sorted(set(given) - _FIELDS)
        if unknown:
            raise ConfigError(f"unknown reader option {unknown[0]!r} "
                              f"(known: {', '.join(sorted(_FIELDS))})")
        return dataclasses.replace(base, **given) if given else base

    def given(self) -> dict[str, Any]:
        """The options set, by name (those equal to their default are left out)."""
        return {f.name: value for f in dataclasses.fields(self)
                if (value := getattr(self, f.name)) != f.default}

    def for_reader(self, accepted: Collection[str]) -> dict[str, Any]:
        """The options set that a reader declaring ``accepted`` takes, as keywords."""
        return {name: value for name, value in self.given().items() if name in accepted}

    def check_applies(self, readers: Mapping[str, Collection[str]],
                      takers: Callable[[str], Iterable[str]]) -> None:
        """Refuse an option that none of ``readers`` (format -> declared options) takes;
        ``takers(option)`` names the formats that do, for the message."""
        taken = set().union(*readers.values()) if readers else set()
        for name in self.given():
            if name not in taken and name not in _KEY_RING:
                raise ConfigError(
                    f"reader option {name!r} does not apply to "
                    f"{_names(readers)} (it is for {_names(takers(name))})")


def _names(formats: Iterable[str]) -> str:
    return ", ".join(sorted(formats)) or "no format"


_FIELDS = frozenset(f.name for f in dataclasses.fields(ReaderOptions))
