"""The report's compliance tables: privileged actions, failed access, access from new places."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyzer.report.frame import NS, EventColumns, and_more, clip, fmt_time, time_cells
from analyzer.report.i18n import N_
from analyzer.report.views import Cell, ReportData, TableView

__all__ = ["compliance"]


def compliance(cols: EventColumns, data: ReportData) -> tuple[TableView, ...]:
    """Privileged actions, failed access attempts and access from new places."""
    return (_privileged(cols, data), _failed(cols), _new_places(cols, data))


def _privileged(cols: EventColumns, data: ReportData) -> TableView:
    from analyzer.features import DEFAULT_PRIVILEGED_ACTIONS, privileged_mask

    loc, _ = cols.loc, cols.loc.gettext
    columns = (Cell(_("User")), Cell(_("Action")), Cell(_("Events"), numeric=True),
               Cell(_("Failures"), numeric=True), Cell(_("Resources"), numeric=True),
               Cell(_("First (UTC)")), Cell(_("Last (UTC)")))
    patterns = data.privileged or DEFAULT_PRIVILEGED_ACTIONS
    rows: list[tuple[Cell, ...]] = []
    more = ""
    if cols.n:
        action = cols.frame["action"].astype("category")
        names = np.asarray(action.cat.categories.astype(str), dtype=object)
        flags = privileged_mask(names, tuple(patterns)) if len(names) else \
            np.zeros(0, dtype=bool)
        codes = action.cat.codes.to_numpy()
        mask = np.zeros(cols.n, dtype=bool)
        mask[codes >= 0] = flags[codes[codes >= 0]]
        if mask.any():
            sub = pd.DataFrame({
                "user": cols.frame["user"].astype(str).to_numpy()[mask],
                "action": names[codes[mask]],
                "resource": cols.frame["resource"].astype(str).to_numpy()[mask],
                "ts": cols.ts_ns[mask], "failed": cols.failed[mask]})
            grouped = sub.groupby(["user", "action"], sort=False).agg(
                events=("ts", "size"), failures=("failed", "sum"),
                resources=("resource", "nunique"), first=("ts", "min"),
                last=("ts", "max")).reset_index()
            grouped = grouped.sort_values(["events", "user", "action"],
                                          ascending=[False, True, True], kind="stable")
            shown = grouped.head(cols.limit())
            more = and_more(loc, len(grouped) - len(shown), N_("and {n} more"),
                         N_("and {n} more"))
            for r in shown.itertuples(index=False):
                rows.append((Cell(clip(r.user) or _("(none)")), Cell(clip(r.action)),
                             *cols.num_cells(r.events, r.failures, r.resources),
                             *time_cells(r.first, r.last)))
    return TableView("privileged", _("Privileged actions"), columns, tuple(rows), more,
                     _("No privileged actions in this log."),
                     _("Actions that change who may do what, delete, or move data and "
                       "models out (permission, role and user changes, deletes, exports, "
                       "downloads), by user and action."))


def _failed(cols: EventColumns) -> TableView:
    loc, _ = cols.loc, cols.loc.gettext
    columns = (Cell(_("User")), Cell(_("Source address")), Cell(_("Country")),
               Cell(_("Failures"), numeric=True), Cell(_("Actions"), numeric=True),
               Cell(_("First (UTC)")), Cell(_("Last (UTC)")))
    rows: list[tuple[Cell, ...]] = []
    more = ""
    mask = cols.failed
    if mask.any():
        country = cols.frame["country"].astype("string").fillna("").to_numpy()[mask] \
            if "country" in cols.frame.columns else np.full(int(mask.sum()), "")
        sub = pd.DataFrame({
            "user": cols.frame["user"].astype(str).to_numpy()[mask],
            "ip": cols.frame["source_ip"].astype(str).to_numpy()[mask],
            "country": country, "action": cols.frame["action"].astype(str).to_numpy()[mask],
            "ts": cols.ts_ns[mask]})
        grouped = sub.groupby(["user", "ip"], sort=False).agg(
            country=("country", "first"), failures=("ts", "size"),
            actions=("action", "nunique"), first=("ts", "min"),
            last=("ts", "max")).reset_index()
        grouped = grouped.sort_values(["failures", "user", "ip"],
                                      ascending=[False, True, True], kind="stable")
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


def _baseline_end(cols: EventColumns, data: ReportData) -> int:
    lo, hi = int(cols.ts_ns.min()), int(cols.ts_ns.max())
    trained = (data.model or {}).get("training_end")
    if trained:
        end = pd.Timestamp(trained).tz_convert("UTC").value
        if lo < end < hi:
            return end
    span = hi - lo
    return lo + min(span // 4, 7 * 86400 * NS)


def _new_places(cols: EventColumns, data: ReportData) -> TableView:
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
        user = cols.frame["user"].astype(str).to_numpy()
        ip = cols.frame["source_ip"].astype(str).to_numpy()
        valid = (user != "") & (ip != "")
        country = cols.frame["country"].astype("string").fillna("").to_numpy() \
            if "country" in cols.frame.columns else np.full(cols.n, "")
        sub = pd.DataFrame({"user": user[valid], "ip": ip[valid],
                            "country": country[valid], "ts": cols.ts_ns[valid],
                            "failed": cols.failed[valid]})
        pairs = sub.groupby(["user", "ip"], sort=False).agg(
            country=("country", "last"), first=("ts", "min"), events=("ts", "size"),
            failures=("failed", "sum")).reset_index()
        users_before = set(sub.loc[sub["ts"] < cut, "user"].unique())
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
