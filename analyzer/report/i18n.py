"""Languages of the reports: gettext catalogs, number formats, and translated alert reasons.

The catalogs live in ``analyzer/locale/<lang>/LC_MESSAGES/audit_analyzer.mo`` (compiled from the
``.po`` files beside them). Message ids are the English texts, so a message a catalog lacks
falls back to English, never to a key.

Alert reasons are phrased in English by the detector from the reason templates in
:data:`analyzer.features.FEATURES` (``"{value} failed events ({typical})"``). To show them in
another language, each reason is matched back against those templates; the template is then
looked up in the catalog and refilled with the same values. The values themselves (entities,
resources, actions) come from the log and are never translated. A reason that matches no
template, or whose template has no translation, stays in English.
"""

from __future__ import annotations

import dataclasses
import gettext
import math
import re
from collections.abc import Callable
from functools import cache, lru_cache
from importlib import resources

from analyzer.errors import ConfigError

__all__ = ["DOMAIN", "LANGUAGES", "Locale", "get_locale", "reason_templates", "split_reasons"]

DOMAIN = "audit_analyzer"
#: Languages with a catalog; English is the source language.
LANGUAGES: tuple[str, ...] = ("en", "de", "es")

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Sub-phrases the detector puts inside reasons ({typical}) and its fallback reason.
_EXTRA_TEMPLATES = (
    "no history for {entity}",
    "typical for {entity}: {span}",
    "unusual combination of {names}",
)
_MORE = re.compile(r"^(?P<head>.*) and (?P<n>\d+) more$", re.DOTALL)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _noop(message: str) -> str:
    """Marks a message for extraction where it is translated later."""
    return message


N_ = _noop


def reason_templates() -> tuple[str, ...]:
    """Every English reason template the detector can phrase, and the phrases inside them."""
    from analyzer.features import FEATURES  # late: the report must not need features to import

    return tuple(dict.fromkeys([f.reason for f in FEATURES] + list(_EXTRA_TEMPLATES)))


@lru_cache(maxsize=1)
def _compiled() -> tuple[tuple[str, re.Pattern[str]], ...]:
    out = []
    for template in reason_templates():
        pattern, seen, pos = [], set(), 0
        for match in _PLACEHOLDER.finditer(template):
            pattern.append(re.escape(template[pos:match.start()]))
            name = match.group(1)
            pattern.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
            seen.add(name)
            pos = match.end()
        pattern.append(re.escape(template[pos:]))
        out.append((template, re.compile("".join(pattern), re.DOTALL)))
    # the most specific (longest fixed text) first, so "{value} events ({typical})" does not
    # swallow "{value} failed events ({typical})"
    out.sort(key=lambda item: -len(_PLACEHOLDER.sub("", item[0])))
    return tuple(out)


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

    def reason(self, text: str) -> str:
        """One English reason in this language (unchanged for English or when unknown)."""
        if self.lang == "en":
            return text
        return self._translate(text, depth=0)

    def _translate(self, text: str, *, depth: int) -> str:
        from analyzer.features import as_template_plural  # late, as for the templates

        plural = as_template_plural(text)  # "1 failed event" matches "{value} failed events"
        for template, pattern in _compiled():
            match = pattern.fullmatch(plural)
            if match is None:
                continue
            translated = self.gettext(template)
            if translated == template:
                return text  # no translation: keep the English reason whole
            values = {}
            for name, value in match.groupdict().items():
                if name in ("typical",) and depth < 2:
                    value = self._translate(value, depth=depth + 1)
                elif name == "weekday":
                    value = self.weekday(value)
                elif name in ("detail", "names"):
                    value = self._more(value)
                values[name] = value
            try:
                return translated.format(**values)
            except (KeyError, IndexError, ValueError):  # a catalog with a bad placeholder
                return text
        return text

    def _more(self, value: str) -> str:
        match = _MORE.match(value)
        if not match:
            return value
        n = int(match.group("n"))
        tail = self.ngettext("and {n} more", "and {n} more", n).format(n=self.number(n))
        return f"{match.group('head')} {tail}"


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
