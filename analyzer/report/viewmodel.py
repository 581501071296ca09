"""What a report shows, computed once: plain frozen dataclasses built from the results.

:func:`build_view` turns a :class:`ReportData` (the events frame, the scores, the integrity
verdict, the model's metadata) into a :class:`ReportView`. Everything a reader sees is decided
here: aggregations, top-N cuts, sort keys, translated and formatted texts, the SVG charts. The
HTML template and the text renderer only lay it out, so both show the same facts.

This module builds the view and its header (integrity verdict, model, notes, the score
chart); the sections have modules of their own, over the events' counts
(:class:`~analyzer.report.tally.Tally`, added up as the log is read) and the alerts' rows
(:mod:`~analyzer.report.context`): :mod:`~analyzer.report.overview` (the header's numbers,
activity, categories, top tables), :mod:`~analyzer.report.alertview` (each alert) and
:mod:`~analyzer.report.compliance`. The types are in :mod:`~analyzer.report.views`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analyzer.report import alertview, charts, compliance, overview
from analyzer.report.alertview import MAX_EVIDENCE as MAX_EVIDENCE
from analyzer.report.frame import LEVELS as LEVELS
from analyzer.report.frame import OUTCOMES as OUTCOMES
from analyzer.report.frame import and_more, fmt_time
from analyzer.report.gather import Gathering
from analyzer.report.i18n import N_, Locale, get_locale
from analyzer.report.tally import Counted, Tally
from analyzer.report.views import (
    AlertView,
    Cell,
    ChartView,
    Fact,
    Integrity,
    ReportData,
    ReportView,
    TableView,
    Verdict,
)
from analyzer.scoring_math import risk_from_p

__all__ = [
    "AlertView",
    "Cell",
    "ChartView",
    "Fact",
    "Integrity",
    "ReportData",
    "ReportView",
    "TableView",
    "Verdict",
    "build_view",
]

MAX_ALERTS = 50
# Words from data that the report translates: levels, outcomes, weekdays, chain problems.
_TRANSLATED_VALUES = (
    N_("debug"), N_("info"), N_("warning"), N_("error"), N_("critical"),
    N_("success"), N_("failure"), N_("unknown"),
    N_("Monday"), N_("Tuesday"), N_("Wednesday"), N_("Thursday"), N_("Friday"),
    N_("Saturday"), N_("Sunday"),
    N_("changed"), N_("missing"), N_("inserted"), N_("reordered"), N_("truncated"),
    N_("bad JSON"),
)


# -- building ------------------------------------------------------------------------------

def build_view(data: ReportData, *, top: int = 10, lang: str = "en") -> ReportView:
    """Compute everything the report shows.

    Parameters
    ----------
    data
        The frame, scores, verdict and model metadata.
    top
        Rows in each "top" table (the rest are counted as "and K more").
    lang
        Report language (see :data:`analyzer.report.i18n.LANGUAGES`).
    """
    loc = get_locale(lang)
    _ = loc.gettext
    alerts = alertview.alerts_of(data)
    tally, rows = data.tally, data.alert_rows
    if tally is None:  # a caller's frame: counted here, as one chunk
        tally, rows = _counted(data, alerts[:MAX_ALERTS])
    cols = Counted(tally, loc, top)
    view = ReportView(
        lang=loc.lang,
        title=_("Audit report"),
        source=data.source,
        generated=data.generated,
        version=data.version,
        facts=overview.facts(cols, len(alerts)),
        integrity=_verdict(data.integrity, loc),
        model=_model_facts(data, loc),
        notes=_notes(data, loc),
        alerts_title=_("Alerts"),
        alerts_intro=_alerts_intro(data, len(alerts), loc),
        alert_columns=(Cell("#", numeric=True), Cell(_("Entity")), Cell(_("Window (UTC)")),
                       Cell(_("Risk"), numeric=True), Cell(_("Reasons"))),
        alerts=tuple(alertview.alert_view(cols, i + 1, r) for i, r in enumerate(rows)),
        alerts_more=and_more(loc, len(alerts) - MAX_ALERTS, N_("and {n} more alert"),
                          N_("and {n} more alerts")),
        alerts_empty=_("No alerts.") if data.scores is not None or data.recorded_alerts
        else _("No alerts: no model or scores were given and the trail records none."),
        activity=overview.activity(cols),
        categories=overview.categories(cols),
        tops=overview.tops(cols),
        scores=_score_chart(data, loc),
        scores_empty=_("No scores: run the report with --model or --scores to see them."),
        compliance=compliance.compliance(cols, data),
    )
    return view


def _counted(data: ReportData, alerts: list[Any]) -> tuple[Tally, tuple[Any, ...]]:
    """The counts and the alerts' rows of ``data.frame``, the whole log as one chunk."""
    from analyzer.features import DEFAULT_PRIVILEGED_ACTIONS

    gathering = Gathering(data.privileged or DEFAULT_PRIVILEGED_ACTIONS, None, alerts)
    gathering(data.frame if data.frame is not None else pd.DataFrame(
        {"timestamp": pd.Series([], dtype="datetime64[ns, UTC]")}))
    return gathering.tally, tuple(gathering.gather_alerts(alerts))


def _verdict(integrity: Integrity, loc: Locale) -> Verdict:
    _ = loc.gettext
    if integrity.status == "verified":
        how = _("keyed, HMAC-SHA256") if integrity.keyed else _("unkeyed, SHA-256")
        return Verdict("verified", _("Verified"),
                       _("The hash chain of {n} records is intact ({how}).").format(
                           n=loc.number(integrity.records), how=how))
    if integrity.status == "broken":
        where = (_("record {line}").format(line=loc.number(integrity.line))
                 if integrity.line is not None else _("the end of the log"))
        seq = (" " + _("(sequence {seq})").format(seq=integrity.sequence)
               if integrity.sequence is not None else "")
        return Verdict("broken", _("Broken at {where}").format(where=where),
                       _("{where}{seq}: {problem}: {detail}. {n} records verified before it.")
                       .format(where=where[:1].upper() + where[1:], seq=seq,
                               problem=_(integrity.problem) if integrity.problem else "",
                               detail=integrity.detail, n=loc.number(integrity.records)))
    return Verdict("not_chained", _("Not chained"),
                   _("This log carries no hash chain, so changes to it cannot be detected."))


def _model_facts(data: ReportData, loc: Locale) -> tuple[Fact, ...]:
    _ = loc.gettext
    meta = data.model
    if not meta:
        if data.scores is not None:
            return (Fact(_("Model"), _("scores file (model not named)")),)
        return (Fact(_("Model"), _("none")),)
    facts = [Fact(_("Model"), " ".join(str(x) for x in (meta.get("name"), meta.get("model_id"))
                                        if x) or _("unnamed"))]
    if meta.get("created"):
        facts.append(Fact(_("Trained"), fmt_time(pd.Timestamp(meta["created"]))
                          + " UTC"))
    if meta.get("training_start") and meta.get("training_end"):
        facts.append(Fact(_("Training period"), "{} – {}".format(
            fmt_time(pd.Timestamp(meta["training_start"])),
            fmt_time(pd.Timestamp(meta["training_end"]))), wide=True))
    if meta.get("n_events"):
        facts.append(Fact(_("Trained on"), _("{n} events").format(
            n=loc.number(meta["n_events"]))))
    budget = (meta.get("params") or {}).get("alerts_per_day")
    if budget:
        facts.append(Fact(_("Alert budget"), _("about {n} per day").format(
            n=loc.decimal(float(budget), 1).rstrip("0").rstrip(",.")
        )))
    return tuple(facts)


def _notes(data: ReportData, loc: Locale) -> tuple[str, ...]:
    _ = loc.gettext
    notes = []
    if data.rejected:
        notes.append(loc.ngettext("{n} line of the log could not be read and is not counted.",
                                  "{n} lines of the log could not be read and are not counted.",
                                  data.rejected).format(n=loc.number(data.rejected)))
    if data.integrity.status == "broken":
        notes.append(_("The trail does not verify: treat everything after the broken record "
                       "as untrusted."))
    if data.drift:
        notes.append(data.drift)
    if data.self_fit == "fitted":
        notes.append(_("No model was given: each window was scored against the log's own "
                       "earlier activity, as 'score' does without --model. A model trained "
                       "on a longer history sees more."))
    elif data.self_fit == "too_little":
        notes.append(_("No model was given, and the log has too little activity to learn "
                       "what is usual from it: give --model or --scores."))
    return tuple(notes)


def _alerts_intro(data: ReportData, n: int, loc: Locale) -> str:
    _ = loc.gettext
    count = loc.ngettext("{n} alert", "{n} alerts", n).format(n=loc.number(n))
    if data.scores is not None:
        windows = loc.number(len(data.scores))
        return _("{count} in {windows} scored windows, highest risk first.").format(
            count=count, windows=windows)
    if data.recorded_alerts:
        return _("{count} recorded in the audit trail, highest risk first.").format(count=count)
    return ""


def threshold_risk(threshold_p: float | None) -> float | None:
    """The risk score (0-100) of an alert threshold given as a tail probability."""
    if threshold_p is None or not threshold_p > 0:
        return None
    return float(risk_from_p(threshold_p, decimals=None))


def _score_chart(data: ReportData, loc: Locale) -> ChartView | None:
    scores = data.scores
    if scores is None or not len(scores):
        return None
    _ = loc.gettext
    risk = pd.to_numeric(scores["risk_score"], errors="coerce").fillna(0).to_numpy()
    edges = [float(x) for x in range(0, 105, 5)]
    counts, _edges = np.histogram(np.clip(risk, 0, 100), bins=edges)
    threshold = threshold_risk(data.threshold)
    label = _("alert threshold {risk}").format(risk=loc.number(threshold)) \
        if threshold is not None else ""
    alerted = scores["alert"].astype(bool).to_numpy()
    if threshold is None and alerted.any():
        threshold = float(risk[alerted].min())
        label = _("lowest alerted risk {risk}").format(risk=loc.number(threshold))
    svg = charts.histogram("scores", _("Anomaly score distribution"), edges,
                           [int(c) for c in counts], threshold=threshold,
                           threshold_label=label, x_title=_("risk score (0-100)"),
                           y_title=_("windows (log scale)"), number=loc.number)
    rows = tuple((Cell(f"{int(edges[i])}–{int(edges[i + 1])}"),
                  Cell(loc.number(c), str(int(c)), True))
                 for i, c in enumerate(counts) if c)
    note = _("{n} windows scored; {a} alerts.").format(n=loc.number(len(scores)),
                                                       a=loc.number(int(alerted.sum())))
    table = TableView("scores-data", _("Windows by risk score"),
                      (Cell(_("Risk")), Cell(_("Windows"), numeric=True)), rows)
    return ChartView("scores", _("Anomaly score distribution"), svg, note, table)
