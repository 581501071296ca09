"""Languages of the reports: gettext catalogs, number formats, and translated alert reasons.

The catalogs live in ``analyzer/locale/<lang>/LC_MESSAGES/audit_analyzer.mo`` (compiled from the
``.po`` files beside them). Message ids are the English texts, so a message a catalog lacks
falls back to English, never to a key.

Alert reasons are :class:`analyzer.reasons.Reason` objects: a reason's template (``"{value}
failed events ({typical})"``, from :data:`analyzer.features.FEATURES`) is looked up in the
catalog and refilled from the reason's fields. The values themselves (entities, resources,
actions) come from the log and are never translated. A reason kept only as English text (a
scores file, an alert recorded before reasons were objects) is first read back to its
template by :func:`analyzer.reasons.read_reason`. A reason whose template has no translation
stays in English.
"""

from __future__ import annotations

import dataclasses
import gettext
import math
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from analyzer.errors import ConfigError

if TYPE_CHECKING:
    from analyzer.reasons import Phrase, Reason

__all__ = ["DOMAIN", "LANGUAGES", "Locale", "get_locale", "reason_templates", "split_reasons"]

DOMAIN = "audit_analyzer"
#: Languages with a catalog; English is the source language.
LANGUAGES: tuple[str, ...] = ("en", "de", "es")

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _noop(message: str) -> str:
    """Marks a message for extraction where it is translated later."""
    return message


N_ = _noop


def reason_templates() -> tuple[str, ...]:
    """Every English reason template the detector can phrase, and the phrases inside them."""
    from analyzer import reasons  # late: the report must not need features to import

    return reasons.reason_templates()


def split_reasons(text: str) -> tuple[str, ...]:
    """The reasons of a scores row (``"a; b; c"``); no reason template contains ``"; "``.

    >>> split_reasons("7 failed events (no history for x); first time doing model.download")
    ('7 failed events (no history for x)', 'first time doing model.download')
    """
    return tuple(p.strip() for p in str(text or "").split("; ") if p.strip())


@dataclasses.dataclass(frozen=True, slots=True)
class Locale:
    """Translations and formats of one language.

    >>> de = get_locale("de")
    >>> de.number(1234567), de.decimal(0.25), de.percent(0.125)
    ('1.234.567', '0,25', '12,5 %')
    >>> get_locale("en").number(1234567)
    '1,234,567'
    """

    lang: str
    translations: gettext.NullTranslations

    @property
    def gettext(self) -> Callable[[str], str]:
        return self.translations.gettext

    @property
    def ngettext(self) -> Callable[[str, str, int], str]:
        return self.translations.ngettext

    def _separators(self) -> tuple[str, str]:
        return (",", ".") if self.lang == "en" else (".", ",")

    def number(self, value: float | int) -> str:
        """An integer count with the language's thousands separator."""
        thousands, _ = self._separators()
        return f"{round(value):,}".replace(",", thousands)

    def decimal(self, value: float, digits: int = 2) -> str:
        thousands, point = self._separators()
        text = f"{value:,.{digits}f}"
        return text.replace(",", "\0").replace(".", point).replace("\0", thousands)

    def percent(self, share: float) -> str:
        """A share in [0, 1] as a percentage with one decimal when it matters."""
        if share is None or not math.isfinite(share):
            return "–"
        value = share * 100
        text = self.number(value) if abs(value - round(value)) < 0.05 else self.decimal(value, 1)
        return f"{text}%" if self.lang == "en" else f"{text} %"

    def weekday(self, english: str) -> str:
        return self.gettext(english) if english in WEEKDAYS else english

    def reason(self, reason: Reason | str) -> str:
        """One reason in this language (English when the catalog has no translation of it).

        ``reason`` is a :class:`~analyzer.reasons.Reason`, or one reason's English text.
        """
        from analyzer.reasons import read_reason  # late, as for the templates

        if isinstance(reason, str):
            if self.lang == "en":
                return reason
            phrase = read_reason(reason)
            return reason if phrase is None else self._phrase(phrase, reason)
        if self.lang == "en":
            return reason.text
        return self._phrase(reason.phrase(), reason.text)

    def _phrase(self, phrase: Phrase, english: str) -> str:
        """``phrase`` refilled in this language, or ``english`` without a translation."""
        translated = self.gettext(phrase.template)
        if translated == phrase.template:
            return english  # no translation: keep the English reason whole
        values = {}
        for name, value in phrase.fields:
            if not isinstance(value, str):  # {typical}: a phrase of its own
                text = value.english()
                values[name] = self._phrase(value, text)
            elif name == "weekday":
                values[name] = self.weekday(value)
            elif name in ("detail", "names"):
                values[name] = self._more(value)
            else:
                values[name] = value
        try:
            return translated.format(**values)
        except (KeyError, IndexError, ValueError):  # a catalog with a bad placeholder
            return english

    def _more(self, value: str) -> str:
        """A detail's trailing "and 3 more" in this language (the rest is log text)."""
        head, sep, tail = value.removesuffix(" more").rpartition(" and ")
        if not sep or not value.endswith(" more") or not tail.isdecimal():
            return value
        n = int(tail)
        more = self.ngettext("and {n} more", "and {n} more", n).format(n=self.number(n))
        return f"{head} {more}"


def get_locale(lang: str = "en") -> Locale:
    """The :class:`Locale` of ``lang`` (one of :data:`LANGUAGES`).

    Raises
    ------
    ConfigError
        For a language without a catalog.
    """
    code = (lang or "en").lower().replace("-", "_").split("_")[0]
    if code not in LANGUAGES:
        raise ConfigError(f"no report language {lang!r}; available: {', '.join(LANGUAGES)}")
    return Locale(code, _translations(code))


@cache
def _translations(code: str) -> gettext.NullTranslations:
    localedir = resources.files("analyzer") / "locale"
    # fallback=True: a missing or partial catalog shows English, the message ids themselves
    return gettext.translation(DOMAIN, localedir=str(localedir), languages=[code],
                               fallback=True)
