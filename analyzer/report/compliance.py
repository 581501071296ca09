"""The report's compliance tables: privileged actions, failed access, access from new places."""

from __future__ import annotations

import pandas as pd

from analyzer.report.frame import NS, and_more, clip, fmt_time, time_cells
from analyzer.report.i18n import N_
from analyzer.report.tally import Counted
from analyzer.report.views import Cell, ReportData, TableView

__all__ = ["compliance"]


def compliance(cols: Counted, data: ReportData) -> tuple[TableView, ...]:
    """Privileged actions, failed access attempts and access from new places."""
    return (_privileged(cols), _failed(cols), _new_places(cols, data))


def _privileged(cols: Counted) -> TableView:
    loc, _ = cols.loc, cols.loc.gettext
    columns = (Cell(_("User")), Cell(_("Action")), Cell(_("Events"), numeric=True),
               Cell(_("Failures"), numeric=True), Cell(_("Resources"), numeric=True),
               Cell(_("First (UTC)")), Cell(_("Last (UTC)")))
    rows: list[tuple[Cell, ...]] = []
    more = ""
    grouped = cols.tally.privileged_groups()
    if grouped is not None:
        shown = grouped.head(cols.limit())
        more = and_more(loc, len(grouped) - len(shown), N_("and {n} more"), N_("and {n} more"))
        for r in shown.itertuples(index=False):
            rows.append((Cell(clip(r.user) or _("(none)")), Cell(clip(r.action)),
                         *cols.num_cells(r.events, r.failures, r.resources),
                         *time_cells(r.first, r.last)))
    return TableView("privileged", _("Privileged actions"), columns, tuple(rows), more,
                     _("No privileged actions in this log."),
                     _("Actions that change who may do what, delete, or move data and "
                       "models out (permission, role and user changes, deletes, exports, "
                       "downloads), by user and action."))


def _failed(cols: Counted) -> TableView:
    loc, _ = cols.loc, cols.loc.gettext
    columns = (Cell(_("User")), Cell(_("Source address")), Cell(_("Country")),
               Cell(_("Failures"), numeric=True), Cell(_("Actions"), numeric=True),
               Cell(_("First (UTC)")), Cell(_("Last (UTC)")))
    rows: list[tuple[Cell, ...]] = []
    more = ""
    grouped = cols.tally.failed_groups()
    if grouped is not None:
        shown = grouped.head(cols.limit())
        more = and_more(loc, len(grouped) - len(shown), N_("and {n} more"), N_("and {n} more"))
        for r in shown.itertuples(index=False):
            rows.append((Cell(clip(r.user) or _("(none)")), Cell(clip(r.ip) or "–"),
                         Cell(clip(r.country) or "–"),
                         *cols.num_cells(r.failures, r.actions),
                         *time_cells(r.first, r.last)))
    return TableView("failed-access", _("Failed access attempts"), columns, tuple(rows),
                     more, _("No failed events in this log."),
                     _("Events that failed, by user and source address."))


def _baseline_end(cols: Counted, data: ReportData) -> int:
    lo, hi = int(cols.tally.lo or 0), int(cols.tally.hi or 0)
    trained = (data.model or {}).get("training_end")
    if trained:
        end = pd.Timestamp(trained).tz_convert("UTC").value
        if lo < end < hi:
            return end
    span = hi - lo
    return lo + min(span // 4, 7 * 86400 * NS)


def _new_places(cols: Counted, data: ReportData) -> TableView:
    loc, _ = cols.loc, cols.loc.gettext
    columns = (Cell(_("User")), Cell(_("Source address")), Cell(_("Country")),
               Cell(_("First seen (UTC)")), Cell(_("Events"), numeric=True),
               Cell(_("Failures"), numeric=True), Cell(_("User seen before")))
    rows: list[tuple[Cell, ...]] = []
    more, note = "", _("Pairs of user and source address first seen in this log.")
    if cols.n:
        cut = _baseline_end(cols, data)
        note = _("User and source address pairs first seen after {cut} UTC, the end of "
                 "the baseline (the model's training period, or the first quarter of the "
                 "log, at most 7 days).").format(cut=fmt_time(pd.Timestamp(cut, tz="UTC")))
        pairs = cols.tally.pairs
        if pairs is None:
            pairs = pd.DataFrame({"user": [], "ip": [], "country": [], "first": [],
                                  "events": [], "failures": []})
        first_seen = cols.tally.user_first
        users_before: set[str] = set() if first_seen is None else \
            set(first_seen.index[first_seen < cut])
        new = pairs[pairs["first"] >= cut].sort_values(
            ["first", "user", "ip"], kind="stable")
        shown = new.head(cols.limit())
        more = and_more(loc, len(new) - len(shown), N_("and {n} more"), N_("and {n} more"))
        yes, no = _("yes"), _("no (new user)")
        for r in shown.itertuples(index=False):
            rows.append((Cell(clip(r.user)), Cell(clip(r.ip)),
                         Cell(clip(r.country) or "–"), *time_cells(r.first),
                         *cols.num_cells(r.events, r.failures),
                         Cell(yes if r.user in users_before else no)))
    return TableView("new-places", _("Access from new places"), columns, tuple(rows), more,
                     _("No access from new places."), note)
