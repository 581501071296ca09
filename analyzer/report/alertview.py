"""The report's alerts: each with its reasons, activity around the window, signals, evidence."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analyzer.report import charts
from analyzer.report.frame import NS, OUTCOMES, EventColumns, and_more, clip, fmt_time, iso
from analyzer.report.i18n import N_, split_reasons
from analyzer.report.views import AlertView, Cell, ChartView, ReportData, TableView

__all__ = ["MAX_EVIDENCE", "alert_view", "alerts_of"]

MAX_EVIDENCE = 25
_CONTEXT_BUCKETS = 12
_MAX_ONE_IN = 1_000_000


def alerts_of(data: ReportData) -> list[Any]:
    """The alerts a report shows: of its scores, else those recorded in the trail."""
    if data.scores is not None:
        from analyzer.alerts import alerts_from_scores

        return alerts_from_scores(data.scores)
    return sorted(data.recorded_alerts, key=lambda a: (-a.risk_score, -a.score,
                                                       a.window_start, a.entity))


def _window_text(start: Any, end: Any) -> str:
    start, end = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    same_day = start.normalize() == (end - pd.Timedelta(1)).normalize()
    return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}" if same_day else \
        f"{start:%Y-%m-%d %H:%M}–{end:%Y-%m-%d %H:%M}"


def _entity_rows(cols: EventColumns, alert: Any) -> np.ndarray:
    column = "user" if alert.entity_type == "user" else "source_ip"
    if not cols.n or column not in cols.frame.columns:
        return np.empty(0, dtype=np.int64)
    values = cols.frame[column]
    if column == "source_ip":
        from analyzer.features import source_entities
        values = source_entities(cols.frame)  # a source named by host name too
    if isinstance(values.dtype, pd.CategoricalDtype):
        try:
            code = values.cat.categories.get_loc(alert.entity)
        except KeyError:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(values.cat.codes.to_numpy() == code)
    return np.flatnonzero((values.astype(str) == alert.entity).to_numpy())


def alert_view(cols: EventColumns, rank: int, alert: Any) -> AlertView:
    """The view of one alert, ``rank`` in the report's order."""
    loc, _ = cols.loc, cols.loc.gettext
    rows = _entity_rows(cols, alert)
    start = pd.Timestamp(alert.window_start).tz_convert("UTC")
    end = pd.Timestamp(alert.window_end).tz_convert("UTC")
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
        context=_context_chart(cols, rank, alert, rows, start, end),
        signals=_signals(cols, rank, alert),
        evidence=_evidence(cols, rank, alert, rows, start, end),
    )


def _context_chart(cols: EventColumns, rank: int, alert: Any, rows: np.ndarray,
                   start: pd.Timestamp, end: pd.Timestamp) -> ChartView | None:
    loc, _ = cols.loc, cols.loc.gettext
    if not len(rows):
        return None
    width = max(int((end - start).value), 300 * NS)
    width = min(width, 86400 * NS)
    first = start.value - _CONTEXT_BUCKETS * width
    n_win = max(1, math.ceil((end.value - start.value) / width))
    count = 2 * _CONTEXT_BUCKETS + n_win
    last = first + count * width
    ts = cols.ts_ns[rows]
    inside = (ts >= first) & (ts < last)
    index = (ts[inside] - first) // width
    actual = np.bincount(index, minlength=count)
    failed = np.bincount(index[cols.failed[rows][inside]], minlength=count)
    # usual pattern: the entity's mean per bucket at the same time of day, outside the
    # context range (per day when buckets are a day long)
    outside = ts[~inside]
    span_days = max(1.0, (cols.ts_ns.max() - cols.ts_ns.min()) / (86400 * NS)
                    - count * width / (86400 * NS))
    bucket_start = first + np.arange(count, dtype=np.int64) * width
    if width <= 3600 * NS and len(outside):
        hour_counts = np.bincount((outside // (3600 * NS)) % 24, minlength=24)
        usual = hour_counts[(bucket_start // (3600 * NS)) % 24] / span_days * (
            width / (3600 * NS))
    else:
        usual = np.full(count, len(outside) / span_days * width / (86400 * NS))
    labels = list(pd.to_datetime(bucket_start, utc=True).strftime(
        "%H:%M" if width < 86400 * NS else "%m-%d"))
    svg = charts.stacked_bars(
        f"alert-{rank}", _("Activity of {entity} around the window").format(
            entity=alert.entity), labels,
        [(_("events"), "s-success", (actual - failed).tolist()),
         (_("failures"), "s-failure", failed.tolist())],
        number=loc.number, highlight=(_CONTEXT_BUCKETS, _CONTEXT_BUCKETS + n_win - 1),
        overlay=(_("usual at this time"), [round(float(u), 3) for u in usual]),
        width=720)
    note = _("Events of {entity} from {start} to {end} UTC; the shaded bars are the alert's "
             "window, the dashed line the entity's usual activity at that time of day."
             ).format(entity=alert.entity,
                      start=fmt_time(pd.Timestamp(first, tz="UTC")),
                      end=fmt_time(pd.Timestamp(last, tz="UTC")))
    return ChartView(f"alert-{rank}", _("Activity around the window"), svg, note)


def _signals(cols: EventColumns, rank: int, alert: Any) -> TableView:
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


def _evidence(cols: EventColumns, rank: int, alert: Any, rows: np.ndarray,
              start: pd.Timestamp, end: pd.Timestamp) -> TableView:
    loc, _ = cols.loc, cols.loc.gettext
    columns = (Cell(_("Seq."), numeric=True), Cell(_("Time (UTC)")), Cell(_("User")),
               Cell(_("Source address")), Cell(_("Action")), Cell(_("Resource")),
               Cell(_("Outcome")), Cell(_("Message")))
    ts = cols.ts_ns[rows]
    keep = rows[(ts >= start.value) & (ts < end.value)]
    if len(keep) and "sequence" in cols.frame.columns and \
            alert.first_sequence is not None and alert.last_sequence is not None:
        seq = cols.frame["sequence"].to_numpy(dtype="float64", na_value=np.nan)[keep]
        in_range = (seq >= alert.first_sequence) & (seq <= alert.last_sequence)
        keep = keep[in_range | np.isnan(seq)]
    shown = keep[:MAX_EVIDENCE]
    sub = cols.frame.iloc[shown]
    out = []
    for record in sub.to_dict("records"):
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
        and_more(loc, len(keep) - len(shown), N_("and {n} more record"),
              N_("and {n} more records")),
        _("The window's events are not in this log."),
        where + loc.ngettext("{n} event of {entity} in the window.",
                             "{n} events of {entity} in the window.", len(keep)).format(
            n=loc.number(len(keep)), entity=alert.entity))
