"""The report's overview: the header's numbers, activity over time, categories, top tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analyzer.report import charts
from analyzer.report.frame import LEVELS, NS, OUTCOMES, and_more, clip, fmt_time
from analyzer.report.i18n import N_
from analyzer.report.tally import Counted
from analyzer.report.views import Cell, ChartView, Fact, TableView

__all__ = ["activity", "categories", "facts", "tops"]

_MIN_RATE_EVENTS = 10
_BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)


def facts(cols: Counted, n_alerts: int) -> tuple[Fact, ...]:
    """The header's numbers: period, events, failures, distinct users, addresses, hosts."""
    loc, _ = cols.loc, cols.loc.gettext
    if cols.n:
        start, end = pd.Timestamp(cols.tally.lo, tz="UTC"), pd.Timestamp(cols.tally.hi, tz="UTC")
        days = (end - start) / pd.Timedelta(days=1)
        span = loc.ngettext("{n} day", "{n} days", max(1, math.ceil(days))).format(
            n=loc.number(max(1, math.ceil(days))))
        period = f"{fmt_time(start)} – {fmt_time(end)} UTC ({span})"
    else:
        period = _("no events")
    failures = cols.tally.failures
    return (
        Fact(_("Period"), period, wide=True),
        Fact(_("Events"), loc.number(cols.n)),
        Fact(_("Failures"), f"{loc.number(failures)} ({loc.percent(failures / cols.n)})"
             if cols.n else "0"),
        Fact(_("Users"), loc.number(cols.distinct("user"))),
        Fact(_("Source addresses"), loc.number(cols.distinct("source_ip"))),
        Fact(_("Hosts"), loc.number(cols.distinct("host"))),
        Fact(_("Alerts"), loc.number(n_alerts)),
    )


def _buckets(cols: Counted, max_buckets: int) -> tuple[int, int, int, dict[str, np.ndarray]]:
    """The bucket size and start, their number, and the per-minute counts summed into them."""
    lo, hi = int(cols.tally.lo or 0), int(cols.tally.hi or 0)
    for seconds in _BUCKETS_S:
        size = seconds * NS
        start = lo // size * size
        count = (hi - start) // size + 1
        if count <= max_buckets:
            break
    return size, start, int(count), cols.tally.per_bucket(size, start, int(count))


def _bucket_labels(size: int, start: int, count: int) -> list[str]:
    fmt = "%Y-%m-%d" if size >= 86400 * NS else "%m-%d %H:%M"
    stamps = pd.to_datetime(start + np.arange(count, dtype=np.int64) * size, utc=True)
    return list(stamps.strftime(fmt))


def activity(cols: Counted) -> tuple[ChartView, ...]:
    """Events over time, by level and by outcome with the failure rate."""
    if not cols.n:
        return ()
    loc, _ = cols.loc, cols.loc.gettext
    size, start, count, per = _buckets(cols, 96)
    labels = _bucket_labels(size, start, count)
    level_series = []
    known = np.zeros(count, dtype=np.int64)
    for name in LEVELS:
        known += per[f"level {name}"]
        if per[f"level {name}"].any():
            level_series.append((_(name), f"s-{name}", per[f"level {name}"].tolist()))
    if (per["total"] - known).any():
        level_series.append((_("unspecified"), "s-other", (per["total"] - known).tolist()))
    outcome_series = []
    for name in OUTCOMES:
        if per[f"outcome {name}"].any():
            outcome_series.append((_(name), f"s-{name}", per[f"outcome {name}"].tolist()))
    total, failures = per["total"], per["failed"]
    with np.errstate(invalid="ignore", divide="ignore"):
        # a rate over a handful of events is noise (one failed login is "100%")
        rate = np.where(total >= _MIN_RATE_EVENTS, failures / np.maximum(total, 1), np.nan)
    width = _bucket_name(cols, size)
    by_level = ChartView(
        "activity-level", _("Events over time by level"),
        charts.stacked_bars("activity-level", _("Events over time by level"), labels,
                            level_series, number=loc.number),
        _("One bar per {width} (UTC).").format(width=width))
    by_outcome = ChartView(
        "activity-outcome", _("Events over time by outcome, with the failure rate"),
        charts.stacked_bars("activity-outcome",
                            _("Events over time by outcome, with the failure rate"),
                            labels, outcome_series, number=loc.number,
                            line=(_("failure rate"), rate.tolist()),
                            line_format=loc.percent),
        _("One bar per {width} (UTC); the line is the share of events that failed "
          "(right axis).").format(width=width),
        _activity_table(cols))
    return (by_level, by_outcome)


def _bucket_name(cols: Counted, size: int) -> str:
    _ = cols.loc.gettext
    seconds = size // NS
    names = {60: _("minute"), 300: _("5 minutes"), 900: _("15 minutes"), 3600: _("hour"),
             3 * 3600: _("3 hours"), 6 * 3600: _("6 hours"), 12 * 3600: _("12 hours"),
             86400: _("day"), 7 * 86400: _("week")}
    return names.get(seconds, str(seconds))


def _activity_table(cols: Counted) -> TableView:
    loc, _ = cols.loc, cols.loc.gettext
    size, start, count, per = _buckets(cols, 31)
    labels = _bucket_labels(size, start, count)
    total, failures, warn = per["total"], per["failed"], per["severe"]
    rows = tuple(
        (Cell(labels[i]), Cell(loc.number(total[i]), str(total[i]), True),
         Cell(loc.number(failures[i]), str(failures[i]), True),
         Cell(loc.percent(failures[i] / total[i]) if total[i] else "–",
              f"{failures[i] / total[i]:.6f}" if total[i] else "0", True),
         Cell(loc.number(warn[i]), str(warn[i]), True))
        for i in range(count) if total[i])
    return TableView("activity-data", _("Activity per {width}").format(
        width=_bucket_name(cols, size)),
        (Cell(_("Period (UTC)")), Cell(_("Events"), numeric=True),
         Cell(_("Failures"), numeric=True), Cell(_("Failure rate"), numeric=True),
         Cell(_("Warnings and worse"), numeric=True)), rows)


def categories(cols: Counted) -> ChartView | None:
    if not cols.n or "category" not in cols.tally.columns:
        return None
    loc, _ = cols.loc, cols.loc.gettext
    counts = cols.tally.counts("category", fill=_("uncategorized"))
    shown = counts.head(cols.top)
    items = [(str(r.key), float(r.events), float(r.failures))
             for r in shown.itertuples(index=False)]
    rest = counts.iloc[cols.top:]
    if len(rest):
        items.append((_("other ({n})").format(n=loc.number(len(rest))),
                      float(rest["events"].sum()), float(rest["failures"].sum())))
    svg = charts.horizontal_bars("categories", _("Events by category"), items,
                                 number=loc.number, names=(_("events"), _("failures")))
    table = _top_table(cols, "categories-data", _("Events by category"), _("Category"),
                            counts)
    return ChartView("categories", _("Events by category"), svg, "", table)


def _top_table(cols: Counted, table_id: str, title: str, label: str,
               counts: pd.DataFrame) -> TableView:
    loc, _ = cols.loc, cols.loc.gettext
    shown = counts.head(cols.top)
    rows = []
    for r in shown.itertuples(index=False):
        events, failures = int(r.events), int(r.failures)
        rows.append((
            Cell(clip(r.key)),
            Cell(loc.number(events), str(events), True),
            Cell(loc.percent(events / cols.n), f"{events / cols.n:.6f}", True),
            Cell(loc.number(failures), str(failures), True),
            Cell(loc.percent(failures / events), f"{failures / events:.6f}", True),
        ))
    return TableView(
        table_id, title,
        (Cell(label), Cell(_("Events"), numeric=True), Cell(_("Share"), numeric=True),
         Cell(_("Failures"), numeric=True), Cell(_("Failure rate"), numeric=True)),
        tuple(rows), and_more(loc, len(counts) - len(shown), N_("and {n} more"),
                           N_("and {n} more")), _("None in this log."))


def tops(cols: Counted) -> tuple[TableView, ...]:
    """The top users, actions, resources, source addresses and countries."""
    _ = cols.loc.gettext
    spec = (("user", _("Top users"), _("User")),
            ("action", _("Top actions"), _("Action")),
            ("resource", _("Top resources"), _("Resource")),
            ("source_ip", _("Top source addresses"), _("Source address")),
            ("country", _("Top countries"), _("Country")))
    out = []
    for column, title, label in spec:
        if column not in cols.tally.columns:
            continue
        counts = cols.tally.counts(column)
        out.append(_top_table(cols, f"top-{column.replace('_', '-')}", title, label, counts))
    return tuple(out)
