"""Reasons as values: what made a window unusual, phrased only when it is shown.

:func:`analyzer.detector.explain` says why a window is unusual as :class:`Reason` objects
(the feature, its value, the entity's typical range, the detail the feature names: actions,
addresses, resources). Phrasing happens from the object, at render time:

- in English (:attr:`Reason.text`), from the reason templates of
  :data:`analyzer.features.FEATURES`, exactly as the scores file's ``reasons`` column and an
  alert's ``message`` have always read;
- in another language, by :meth:`analyzer.report.i18n.Locale.reason`, from the same template
  looked up in a catalog and refilled from the object's fields (:meth:`Reason.phrase`).

A window's reasons travel in the scores frame as a :class:`ReasonText`: a ``str`` (the English
text, reasons joined with ``"; "``, what every writer of scores writes) that carries the
objects in :attr:`ReasonText.reasons`. Alerts carry them to the trail under
``analyzer.alert.reason_details`` (:meth:`Reason.to_json`, :func:`reasons_from_json`).

Text written before reasons were objects (a scores file, an older trail's alerts) has only the
English: :func:`read_reason` finds the template it was phrased from (by its fixed words, no
pattern matching), so the report can still translate it.

>>> r = Reason("n_failures", 1.0, typical=(0.0, 0.0), entity="bob")
>>> r.text
'1 failed event (typical for bob: 0)'
>>> read_reason(r.text) == r.phrase()
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from analyzer.features import FEATURES, Feature, agree, as_template_plural

__all__ = ["Phrase", "Reason", "ReasonText", "format_bytes", "format_value", "read_reason",
           "reason_templates", "reasons_from_json"]

#: The template of the reason named when no feature is rare enough to name on its own.
COMBINATION = "unusual combination of {names}"
# Sub-phrases the templates hold in {typical}, and the combination reason.
_EXTRA_TEMPLATES = ("no history for {entity}", "typical for {entity}: {span}", COMBINATION)
_FIELDS = ("detail", "entity", "hour", "weekday")


def format_bytes(value: float) -> str:
    """Bytes for a person.

    >>> format_bytes(1536), format_bytes(3.5 * 1024**3)
    ('1.5 KB', '3.5 GB')
    """
    value = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PB"  # pragma: no cover - unreachable


def format_value(unit: str, value: float) -> str:
    """A feature's value in a reason, by the feature's unit.

    >>> format_value("share", 0.25), format_value("logratio", math.log(2.0))
    ('25%', '2.0')
    """
    if unit == "share":
        return f"{value:.0%}"
    if unit == "rate":
        return f"{value:.1f}"
    if unit == "bytes":
        return format_bytes(value)
    if unit == "logratio":
        ratio = math.exp(value)
        return f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.1f}"
    return f"{value:.0f}"


_FEATURES: dict[str, Feature] = {f.name: f for f in FEATURES}


def reason_templates() -> tuple[str, ...]:
    """Every English reason template, and the phrases inside them."""
    return tuple(dict.fromkeys([f.reason for f in FEATURES] + list(_EXTRA_TEMPLATES)))


@dataclasses.dataclass(frozen=True, slots=True)
class Phrase:
    """A template and the English text of its fields: what a language refills.

    A field is text, or a phrase of its own (``{typical}`` holds "typical for bob: 0-1").
    """

    template: str
    fields: tuple[tuple[str, str | Phrase], ...] = ()

    def english(self) -> str:
        """The phrase in English (before number agreement, see :attr:`Reason.text`)."""
        if not self.fields:
            return self.template
        return self.template.format(**{name: value.english() if isinstance(value, Phrase)
                                       else value for name, value in self.fields})


@dataclasses.dataclass(frozen=True, slots=True)
class Reason:
    """One reason a window is unusual: a feature of it, and what phrasing it needs.

    ``feature`` names a feature of :data:`analyzer.features.FEATURES` (another name is
    phrased as itself, underscores as spaces), or is ``""`` for the unusual combination of
    ``names``. ``typical`` is the entity's usual range of the feature, ``None`` when it has
    no history. ``detail`` is what the feature names (from the window's detail column);
    ``entity``, ``hour`` and ``weekday`` are those of the window. Only the fields its
    template uses are set (see :meth:`of`).
    """

    feature: str
    value: float = 0.0
    typical: tuple[float, float] | None = None
    detail: str = ""
    entity: str = ""
    hour: str = ""
    weekday: str = ""
    names: tuple[str, ...] = ()

    @classmethod
    def of(cls, feature: str, value: float, *, typical: tuple[float, float] | None = None,
           detail: str = "", entity: str = "", hour: str = "", weekday: str = "") -> Reason:
        """The reason of ``feature``, keeping only the fields its template uses."""
        info = _FEATURES.get(feature)
        if info is None:
            return cls(feature)
        uses = _placeholders(info.reason)
        return cls(feature, float(value),
                   typical=typical if "typical" in uses else None,
                   detail=detail if "detail" in uses else "",
                   entity=entity if "entity" in uses or "typical" in uses else "",
                   hour=hour if "hour" in uses else "",
                   weekday=weekday if "weekday" in uses else "")

    @classmethod
    def combination(cls, names: Sequence[str]) -> Reason:
        """The reason when no feature is rare enough by itself: the rarest ones together."""
        return cls("", names=tuple(names))

    def phrase(self) -> Phrase:
        """The template of this reason and its fields, in English."""
        if not self.feature:
            return Phrase(COMBINATION, (("names", " and ".join(
                n.replace("_", " ") for n in self.names)),))
        info = _FEATURES.get(self.feature)
        if info is None:
            return Phrase(self.feature.replace("_", " "))
        return Phrase(info.reason, tuple((name, self._field(name, info.unit, bool(info.detail)))
                                         for name in _placeholders(info.reason)))

    def _field(self, name: str, unit: str, has_detail: bool) -> str | Phrase:
        if name == "value":
            return format_value(unit, self.value)
        if name == "typical":
            if self.typical is None:
                return Phrase("no history for {entity}", (("entity", self.entity),))
            lo, hi = (format_value(unit, v) for v in self.typical)
            return Phrase("typical for {entity}: {span}",
                          (("entity", self.entity), ("span", lo if lo == hi else f"{lo}-{hi}")))
        if name == "detail":
            return self.detail or ("new values" if has_detail else "")
        return str(getattr(self, name))  # entity, hour, weekday

    @property
    def text(self) -> str:
        """The reason in English, its counted noun in agreement ("1 failed event")."""
        info = _FEATURES.get(self.feature)
        if info is None:
            return agree(self.phrase().english())
        # phrase().english() without building the phrase: explain says this of every
        # alert, near miss and evidence window of a scoring run
        fields = {}
        for name in _placeholders(info.reason):
            value = self._field(name, info.unit, bool(info.detail))
            fields[name] = value if isinstance(value, str) else value.english()
        return agree(info.reason.format(**fields))

    def to_json(self) -> dict[str, Any]:
        """The reason as a JSON object (what an alert records), empty fields left out."""
        doc: dict[str, Any] = {"feature": self.feature}
        if self.feature:
            doc["value"] = self.value if math.isfinite(self.value) else None
        if self.typical is not None:
            doc["typical"] = list(self.typical)
        doc.update({name: getattr(self, name) for name in _FIELDS if getattr(self, name)})
        if self.names:
            doc["names"] = list(self.names)
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Reason:
        """The reason of a JSON object written by :meth:`to_json`.

        Raises
        ------
        ValueError
            For anything else (a field of the wrong type, a range that is not two numbers).
        """
        if not isinstance(doc, dict) or not isinstance(doc.get("feature"), str):
            raise ValueError("a reason is an object with a feature name")
        value = doc.get("value", 0.0)
        value = math.nan if value is None else value
        if not _is_number(value):
            raise ValueError("a reason's value is a number")
        typical = doc.get("typical")
        if typical is not None and not (isinstance(typical, list) and len(typical) == 2
                                        and all(_is_number(v) for v in typical)):
            raise ValueError("a reason's typical range is two numbers")
        texts = {name: doc.get(name, "") for name in _FIELDS}
        names = doc.get("names", [])
        if not all(isinstance(v, str) for v in texts.values()) or not (
                isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError("a reason's detail, entity, hour, weekday and names are text")
        return cls(doc["feature"], float(value),
                   typical=None if typical is None else (float(typical[0]), float(typical[1])),
                   names=tuple(names), **texts)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def reasons_from_json(value: Any) -> tuple[Reason, ...]:
    """The reasons an alert recorded (``analyzer.alert.reason_details``).

    Anything malformed gives none, so that the alert's English reasons are shown instead.
    """
    if not isinstance(value, list):
        return ()
    try:
        return tuple(Reason.from_json(doc) for doc in value)
    except ValueError:
        return ()


class ReasonText(str):
    """A window's reasons in English, joined with ``"; "``, carrying the :class:`Reason` objects.

    It is the ``str`` a scores file holds; in memory, :attr:`reasons` keeps what it says as
    values, for the report to phrase in another language.

    >>> text = ReasonText([Reason("new_entity", 1.0, entity="eve")])
    >>> text, text.reasons[0].feature
    ('eve never seen before', 'new_entity')
    """

    __slots__ = ("reasons",)
    reasons: tuple[Reason, ...]

    def __new__(cls, reasons: Iterable[Reason]) -> ReasonText:
        items = tuple(reasons)
        self = super().__new__(cls, "; ".join(r.text for r in items))
        self.reasons = items
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReasonText, (self.reasons,))


# -- text written before reasons were objects ------------------------------------------------

@cache
def _template_parts() -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """Per template: itself, its fixed texts and its field names; most fixed text first."""
    out = []
    for template in reason_templates():
        texts, names, rest = [], [], template
        while "{" in rest:
            head, _, tail = rest.partition("{")
            name, _, rest = tail.partition("}")
            texts.append(head)
            names.append(name)
        texts.append(rest)
        out.append((template, tuple(texts), tuple(names)))
    # the most specific first, so that "{value} events ({typical})" does not take
    # "{value} failed events ({typical})"
    out.sort(key=lambda item: -sum(len(t) for t in item[1]))
    return tuple(out)


@cache
def _placeholders(template: str) -> tuple[str, ...]:
    """The field names of ``template``, each once, in order."""
    return tuple(dict.fromkeys(name for parts in _template_parts() if parts[0] == template
                               for name in parts[2]))


def _fill(text: str, texts: tuple[str, ...], names: tuple[str, ...], pos: int,
          found: dict[str, str]) -> dict[str, str] | None:
    """Fields of ``text[pos:]`` after the fixed text before field ``len(found)``.

    Each field takes at least one character and, of the ways the rest can still match, the
    shortest; a field named twice must repeat its text.
    """
    k = len(found)
    name, after = names[k], texts[k + 1]
    last = k + 1 == len(names)
    if name in found:
        value = found[name]
        if not text.startswith(value, pos):
            return None
        starts: Iterable[int] = (pos + len(value),)
    elif last:
        starts = (len(text) - len(after),)
    else:
        starts = _occurrences(text, after, pos + 1)
    for end in starts:
        if end <= pos or not text.startswith(after, end):
            continue
        if last and end + len(after) != len(text):
            continue
        filled = {**found, name: text[pos:end]}
        if last:
            return filled
        result = _fill(text, texts, names, end + len(after), filled)
        if result is not None:
            return result
    return None


def _occurrences(text: str, part: str, start: int) -> Iterable[int]:
    at = text.find(part, start)
    while at >= 0:
        yield at
        at = text.find(part, at + 1)


def read_reason(text: str, *, _depth: int = 0) -> Phrase | None:
    """The template and fields an English reason was phrased from, or ``None``.

    For reasons that were only kept as text. A singular count ("1 failed event") reads as
    its template's plural; ``{typical}`` is read as a phrase of its own.

    >>> read_reason("3 failed events (no history for bob)").template
    '{value} failed events ({typical})'
    """
    plural = as_template_plural(text)
    for template, texts, names in _template_parts():
        if not (plural.startswith(texts[0]) and plural.endswith(texts[-1])):
            continue
        if not names:
            found: dict[str, str] | None = {} if plural == template else None
        else:
            found = _fill(plural, texts, names, len(texts[0]), {})
        if found is None:
            continue
        fields: list[tuple[str, str | Phrase]] = []
        for name in _placeholders(template):
            value: str | Phrase = found[name]
            if name == "typical" and _depth < 2:
                value = read_reason(found[name], _depth=_depth + 1) or found[name]
            fields.append((name, value))
        return Phrase(template, tuple(fields))
    return None
