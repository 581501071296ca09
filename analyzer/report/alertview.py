"""The report's alerts: each with its reasons, activity around the window, signals, evidence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.report import charts
from analyzer.report.context import CONTEXT_BUCKETS, MAX_EVIDENCE, AlertRows
from analyzer.report.frame import NS, OUTCOMES, and_more, clip, fmt_time, iso
from analyzer.report.i18n import N_, split_reasons
from analyzer.report.tally import Counted
from analyzer.report.views import AlertView, Cell, ChartView, ReportData, TableView

__all__ = ["MAX_EVIDENCE", "alert_view", "alerts_of", "ordered_alerts"]

_MAX_ONE_IN = 1_000_000


def alerts_of(data: ReportData) -> list[Any]:
    """The alerts a report shows: of its scores, else those recorded in the trail."""
    return ordered_alerts(data.scores, data.recorded_alerts)


def ordered_alerts(scores: Any, recorded: Sequence[Any]) -> list[Any]:
    """The alerts of ``scores`` (a scores frame), else the ``recorded`` ones, in the
    report's order: highest risk first."""
    if scores is not None:
        from analyzer.alerts import alerts_from_scores

        return alerts_from_scores(scores)
    return sorted(recorded, key=lambda a: (-a.risk_score, -a.score, a.window_start,
                                           a.entity))


def _window_text(start: Any, end: Any) -> str:
    start, end = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    same_day = start.normalize() == (end - pd.Timedelta(1)).normalize()
    return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}" if same_day else \
        f"{start:%Y-%m-%d %H:%M}–{end:%Y-%m-%d %H:%M}"


def alert_view(cols: Counted, rank: int, rows: AlertRows) -> AlertView:
    """The view of one alert, ``rank`` in the report's order, from its entity's ``rows``."""
    loc, _ = cols.loc, cols.loc.gettext
    alert = rows.alert
    start, end = rows.start, rows.end
    risk = float(alert.risk_score)
    # the reasons as objects when the alert has them; its English text otherwise
    reasons = tuple(loc.reason(r) for r in getattr(alert, "reason_details", ())
                    or split_reasons("; ".join(alert.reasons)))
    entity_kind = _("user") if alert.entity_type == "user" else _("source address")
    return AlertView(
        rank=rank, anchor=f"alert-{rank}", entity=clip(alert.entity), entity_kind=entity_kind,
        window=_window_text(start, end), window_sort=iso(start),
        risk=loc.number(risk), risk_sort=f"{risk:06.1f}",
        severity="high" if risk >= 80 else "medium" if risk >= 50 else "low",
        reasons=reasons or (_("unusual combination of features"),),
        context=_context_chart(cols, rank, rows),
        signals=_signals(cols, rank, alert),
        evidence=_evidence(cols, rank, rows),
    )


def _context_chart(cols: Counted, rank: int, rows: AlertRows) -> ChartView | None:
    loc, _ = cols.loc, cols.loc.gettext
    alert = rows.alert
    if not rows.seen:
        return None
    width, first, count, last = rows.width, rows.first, rows.count, rows.last
    actual, failed = rows.actual, rows.failed
    # usual pattern: the entity's mean per bucket at the same time of day, outside the
    # context range (per day when buckets are a day long)
    span = np.int64(cols.tally.hi or 0) - np.int64(cols.tally.lo or 0)  # numpy's division
    span_days = max(1.0, span / (86400 * NS) - count * width / (86400 * NS))
    bucket_start = first + np.arange(count, dtype=np.int64) * width
    if width <= 3600 * NS and rows.outside:
        usual = rows.outside_hours[(bucket_start // (3600 * NS)) % 24] / span_days * (
            width / (3600 * NS))
    else:
        usual = np.full(count, rows.outside / span_days * width / (86400 * NS))
    labels = list(pd.to_datetime(bucket_start, utc=True).strftime(
        "%H:%M" if width < 86400 * NS else "%m-%d"))
    svg = charts.stacked_bars(
        f"alert-{rank}", _("Activity of {entity} around the window").format(
            entity=alert.entity), labels,
        [(_("events"), "s-success", (actual - failed).tolist()),
         (_("failures"), "s-failure", failed.tolist())],
        number=loc.number, highlight=(CONTEXT_BUCKETS, CONTEXT_BUCKETS + rows.n_win - 1),
        overlay=(_("usual at this time"), [round(float(u), 3) for u in usual]),
        width=720)
    note = _("Events of {entity} from {start} to {end} UTC; the shaded bars are the alert's "
             "window, the dashed line the entity's usual activity at that time of day."
             ).format(entity=alert.entity,
                      start=fmt_time(pd.Timestamp(first, tz="UTC")),
                      end=fmt_time(pd.Timestamp(last, tz="UTC")))
    return ChartView(f"alert-{rank}", _("Activity around the window"), svg, note)


def _signals(cols: Counted, rank: int, alert: Any) -> TableView:
    from analyzer.features import FEATURES

    loc, _ = cols.loc, cols.loc.gettext
    meaning = {f.name: f.meaning for f in FEATURES}
    unit = {f.name: f.unit for f in FEATURES}
    rows = []
    for name, c in sorted(alert.contributions.items(), key=lambda kv: (-(kv[1] or 0),
                                                                        kv[0])):
        if not c:
            continue
        value = alert.features.get(name)
        value_text = "–" if value is None else (
            loc.number(value) if float(value).is_integer() else loc.decimal(value))
        if value is not None and unit.get(name) == "share":
            value_text = loc.percent(float(value))
        one_in = math.exp(min(float(c), 40.0))
        rarity = _("1 in {n}").format(n=loc.number(one_in)) if one_in < _MAX_ONE_IN \
            else _("under 1 in {n}").format(n=loc.number(_MAX_ONE_IN))
        rows.append((Cell(_(meaning.get(name, name.replace("_", " ")))),
                     Cell(value_text, f"{value or 0:.6f}", True),
                     Cell(rarity, f"{one_in:.3f}", True)))
    return TableView(f"alert-{rank}-signals", _("What stood out"),
                     (Cell(_("Signal")), Cell(_("Value"), numeric=True),
                      Cell(_("Rarer than"), numeric=True)), tuple(rows), "",
                     _("No per-signal detail recorded."),
                     _("Rarer than: the share of the entity type's training windows at "
                       "least this extreme."))


def _evidence(cols: Counted, rank: int, rows: AlertRows) -> TableView:
    loc, _ = cols.loc, cols.loc.gettext
    alert = rows.alert
    columns = (Cell(_("Seq."), numeric=True), Cell(_("Time (UTC)")), Cell(_("User")),
               Cell(_("Source address")), Cell(_("Action")), Cell(_("Resource")),
               Cell(_("Outcome")), Cell(_("Message")))
    out = []
    for record in rows.evidence_records():
        seq = record.get("sequence")
        seq_text = "" if seq is None or pd.isna(seq) else str(int(seq))
        outcome = str(record.get("outcome", ""))
        out.append((Cell(seq_text, seq_text, True),
                    Cell(pd.Timestamp(record["timestamp"]).strftime("%Y-%m-%d %H:%M:%S"),
                         iso(record["timestamp"])),
                    Cell(clip(record.get("user"))), Cell(clip(record.get("source_ip"))),
                    Cell(clip(record.get("action"))), Cell(clip(record.get("resource"))),
                    Cell(_(outcome) if outcome in OUTCOMES else clip(outcome), outcome),
                    Cell(clip(record.get("message"), 100))))
    where = ""
    if alert.first_sequence is not None and alert.last_sequence is not None:
        where = _("Records with sequence {first} to {last} in the trail.").format(
            first=alert.first_sequence, last=alert.last_sequence) + " "
    return TableView(
        f"alert-{rank}-evidence", _("Evidence records"), columns, tuple(out),
        and_more(loc, rows.in_window - len(out), N_("and {n} more record"),
                 N_("and {n} more records")),
        _("The window's events are not in this log."),
        where + loc.ngettext("{n} event of {entity} in the window.",
                             "{n} events of {entity} in the window.", rows.in_window).format(
            n=loc.number(rows.in_window), entity=alert.entity))
