"""The text report: the same facts as the HTML page, for a terminal, a ticket or an email.

Laid out from the same :class:`~analyzer.report.viewmodel.ReportView`: tables become aligned
columns, each chart its data table. Strings from the log are printed as they are, except that
control characters are made visible so that a crafted value cannot rewrite the terminal.
"""

from __future__ import annotations

import textwrap
import unicodedata

from analyzer.events import printable
from analyzer.report.i18n import get_locale
from analyzer.report.viewmodel import Cell, ChartView, ReportView, TableView

__all__ = ["render_text"]

_WIDTH = 100
def _clean(text: str) -> str:
    """Text with control characters (escape sequences, bidi overrides, line breaks) shown as
    escapes, so that a crafted value cannot rewrite the terminal or forge a line."""
    return printable(text)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * max(0, width - _width(text))
    return gap + text if right else text + gap


def _cut(text: str, limit: int) -> str:
    return text if _width(text) <= limit else text[:max(1, limit - 1)] + "…"


def _table(t: TableView, indent: str = "  ", max_col: int = 40) -> list[str]:
    lines = [f"{indent}{_clean(t.title)}"]
    if t.note:
        lines += textwrap.wrap(_clean(t.note), _WIDTH, initial_indent=indent + "  ",
                               subsequent_indent=indent + "  ")
    if not t.rows:
        lines.append(f"{indent}  {_clean(t.empty)}")
        return lines
    heads: tuple[Cell, ...] = t.columns
    rows = [[_cut(_clean(c.text), max_col) for c in row] for row in t.rows]
    widths = [max([_width(_clean(h.text))] + [_width(r[i]) for r in rows])
              for i, h in enumerate(heads)]
    lines.append(indent + "  " + "  ".join(_pad(_clean(h.text), w, h.numeric)
                                           for h, w in zip(heads, widths, strict=True)).rstrip())
    lines.append(indent + "  " + "  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(indent + "  " + "  ".join(_pad(text, w, h.numeric) for text, w, h in
                                               zip(row, widths, heads, strict=True)).rstrip())
    if t.more:
        lines.append(f"{indent}  {_clean(t.more)}")
    return lines


def _chart(c: ChartView | None) -> list[str]:
    if c is None or c.data is None:
        return []
    lines = _table(c.data)
    if c.note:
        lines += textwrap.wrap(_clean(c.note), _WIDTH, initial_indent="    ",
                               subsequent_indent="    ")
    return lines


def _heading(text: str) -> list[str]:
    return ["", text.upper(), "=" * min(_WIDTH, _width(text))]


def render_text(view: ReportView) -> str:
    """The plain-text report for ``view``."""
    _ = get_locale(view.lang).gettext
    out = [f"{view.title}: {_clean(view.source)}",
           _("generated %(when)s", ) % {"when": view.generated}
           + f" · audit-analyzer {view.version}", ""]
    label_w = max(_width(f.label) for f in (*view.facts, *view.model)) + 1
    out.append(f"{_('Integrity') + ':':{label_w + 1}} {view.integrity.headline}. "
               f"{_clean(view.integrity.detail)}")
    for fact in (*view.facts, *view.model):
        out.append(f"{fact.label + ':':{label_w + 1}} {_clean(fact.value)}")
    for note in view.notes:
        out.append(f"! {note}")

    out += _heading(view.alerts_title)
    if view.alerts_intro:
        out.append(view.alerts_intro)
    if not view.alerts:
        out.append(view.alerts_empty)
    for a in view.alerts:
        out.append("")
        out.append(f"{a.rank:>3}. [{_('Risk')} {a.risk}] {a.entity_kind} {_clean(a.entity)}  "
                   f"{a.window} UTC")
        for reason in a.reasons:
            out += textwrap.wrap(_clean(reason), _WIDTH, initial_indent="     - ",
                                 subsequent_indent="       ")
        if a.signals.rows:
            out += _table(a.signals, indent="     ")
        out += _table(a.evidence, indent="     ", max_col=30)
    if view.alerts_more:
        out.append(view.alerts_more)

    out += _heading(_("Activity"))
    if not view.activity:
        out.append(_("No events in this log."))
    for chart in view.activity:
        out += _chart(chart)
    out += _chart(view.categories)

    out += _heading(_("Top users, actions, resources, addresses and countries"))
    for t in view.tops:
        out += _table(t)
        out.append("")

    out += _heading(_("Anomaly scores"))
    if view.scores is None:
        out.append(view.scores_empty)
    else:
        out += _chart(view.scores)

    out += _heading(_("Compliance"))
    for t in view.compliance:
        out += _table(t)
        out.append("")
    out.append(_("Times are UTC. Values from the log are shown exactly as recorded."))
    return "\n".join(line.rstrip() for line in out).rstrip() + "\n"
