"""What a report shows, computed once: plain frozen dataclasses built from the results.

:func:`build_view` turns a :class:`ReportData` (the events frame, the scores, the integrity
verdict, the model's metadata) into a :class:`ReportView`. Everything a reader sees is decided
here: aggregations, top-N cuts, sort keys, translated and formatted texts, the SVG charts. The
HTML template and the text renderer only lay it out, so both show the same facts.

Aggregation is group-by and array code over the frame, so a million-event log costs a few
passes over its columns; only the shown rows (top N, alerts and their evidence) become Python
objects.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from analyzer.report import charts
from analyzer.report.i18n import N_, Locale, get_locale, split_reasons
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

LEVELS = ("debug", "info", "warning", "error", "critical")
OUTCOMES = ("success", "failure", "unknown")
MAX_ALERTS = 50
MAX_EVIDENCE = 25
_CONTEXT_BUCKETS = 12
_MIN_RATE_EVENTS = 10
_MAX_ONE_IN = 1_000_000
_MAX_CELL = 160
_BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
_NS = 1_000_000_000
# Words from data that the report translates: levels, outcomes, weekdays, chain problems.
_TRANSLATED_VALUES = (
    N_("debug"), N_("info"), N_("warning"), N_("error"), N_("critical"),
    N_("success"), N_("failure"), N_("unknown"),
    N_("Monday"), N_("Tuesday"), N_("Wednesday"), N_("Thursday"), N_("Friday"),
    N_("Saturday"), N_("Sunday"),
    N_("changed"), N_("missing"), N_("inserted"), N_("reordered"), N_("truncated"),
    N_("bad JSON"),
)


# -- inputs --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Integrity:
    """The integrity verdict of the trail, as the report states it.

    ``status`` is ``verified``, ``broken`` or ``not_chained``.
    """

    status: str
    records: int = 0
    line: int | None = None
    sequence: int | None = None
    problem: str = ""
    detail: str = ""
    keyed: bool = False


@dataclasses.dataclass(frozen=True)
class ReportData:
    """Everything a report is computed from (see :func:`analyzer.report.load_report_data`)."""

    frame: pd.DataFrame
    source: str = ""
    integrity: Integrity = Integrity("not_chained")
    scores: pd.DataFrame | None = None
    recorded_alerts: tuple[Any, ...] = ()
    model: dict[str, Any] | None = None
    threshold: float | None = None
    privileged: tuple[str, ...] | None = None
    rejected: int = 0
    generated: str = ""
    version: str = ""
    drift: str = ""
    #: the :class:`~analyzer.sources.ReadResult` of the log read: for the command's
    #: accounting line and its rejected lines
    reading: Any = None
    #: how the scores came to be when no model was given: "fitted" (the log scored against
    #: its own earlier events, as ``score`` does without ``--model``), "too_little" (too
    #: little activity to learn from), or "" (a model or scores were given)
    self_fit: str = ""


# -- the view-model ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Cell:
    """A table cell: its text, and a key the page sorts by (numbers and ISO times)."""

    text: str
    sort: str = ""
    numeric: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class TableView:
    id: str
    title: str
    columns: tuple[Cell, ...]
    rows: tuple[tuple[Cell, ...], ...]
    more: str = ""
    empty: str = ""
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ChartView:
    id: str
    title: str
    svg: Markup
    note: str = ""
    data: TableView | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Fact:
    label: str
    value: str
    wide: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # verified, broken, not_chained
    headline: str
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class AlertView:
    rank: int
    anchor: str
    entity: str
    entity_kind: str
    window: str
    window_sort: str
    risk: str
    risk_sort: str
    severity: str  # high, medium, low
    reasons: tuple[str, ...]
    context: ChartView | None
    signals: TableView
    evidence: TableView


@dataclasses.dataclass(frozen=True, slots=True)
class ReportView:
    lang: str
    title: str
    source: str
    generated: str
    version: str
    facts: tuple[Fact, ...]
    integrity: Verdict
    model: tuple[Fact, ...]
    notes: tuple[str, ...]
    alerts_title: str
    alerts_intro: str
    alert_columns: tuple[Cell, ...]
    alerts: tuple[AlertView, ...]
    alerts_more: str
    alerts_empty: str
    activity: tuple[ChartView, ...]
    categories: ChartView | None
    tops: tuple[TableView, ...]
    scores: ChartView | None
    scores_empty: str
    compliance: tuple[TableView, ...]


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
    frame = data.frame
    alerts = _alerts(data)
    ctx = _Context(frame, loc, top)
    view = ReportView(
        lang=loc.lang,
        title=_("Audit report"),
        source=data.source,
        generated=data.generated,
        version=data.version,
        facts=ctx.facts(data, len(alerts)),
        integrity=_verdict(data.integrity, loc),
        model=_model_facts(data, loc),
        notes=_notes(data, loc),
        alerts_title=_("Alerts"),
        alerts_intro=_alerts_intro(data, len(alerts), loc),
        alert_columns=(Cell("#", numeric=True), Cell(_("Entity")), Cell(_("Window (UTC)")),
                       Cell(_("Risk"), numeric=True), Cell(_("Reasons"))),
        alerts=tuple(ctx.alert_view(i + 1, a) for i, a in enumerate(alerts[:MAX_ALERTS])),
        alerts_more=_more(loc, len(alerts) - MAX_ALERTS, N_("and {n} more alert"),
                          N_("and {n} more alerts")),
        alerts_empty=_("No alerts.") if data.scores is not None or data.recorded_alerts
        else _("No alerts: no model or scores were given and the trail records none."),
        activity=ctx.activity(),
        categories=ctx.categories(),
        tops=ctx.tops(),
        scores=_score_chart(data, loc),
        scores_empty=_("No scores: run the report with --model or --scores to see them."),
        compliance=ctx.compliance(data),
    )
    return view


def _more(loc: Locale, n: int, singular: str, plural: str) -> str:
    if n <= 0:
        return ""
    return loc.ngettext(singular, plural, n).format(n=loc.number(n))


def _alerts(data: ReportData) -> list[Any]:
    if data.scores is not None:
        from analyzer.alerts import alerts_from_scores

        return alerts_from_scores(data.scores)
    return sorted(data.recorded_alerts, key=lambda a: (-a.risk_score, -a.score,
                                                       a.window_start, a.entity))


def _fmt_time(ts: Any) -> str:
    if ts is None or pd.isna(ts):
        return "–"
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%d %H:%M")


def _iso(ts: Any) -> str:
    if ts is None or pd.isna(ts):
        return ""
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S")


def _clip(text: Any, limit: int = _MAX_CELL) -> str:
    value = "" if text is None or (not isinstance(text, str) and pd.isna(text)) else str(text)
    return value if len(value) <= limit else value[:limit - 1] + "…"


def _window_text(start: Any, end: Any) -> str:
    start, end = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    same_day = start.normalize() == (end - pd.Timedelta(1)).normalize()
    return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}" if same_day else \
        f"{start:%Y-%m-%d %H:%M}–{end:%Y-%m-%d %H:%M}"


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
        facts.append(Fact(_("Trained"), _fmt_time(pd.Timestamp(meta["created"]))
                          + " UTC"))
    if meta.get("training_start") and meta.get("training_end"):
        facts.append(Fact(_("Training period"), "{} – {}".format(
            _fmt_time(pd.Timestamp(meta["training_start"])),
            _fmt_time(pd.Timestamp(meta["training_end"]))), wide=True))
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


class _Context:
    """The frame's columns as arrays, shared by every aggregation of one report."""

    def __init__(self, frame: pd.DataFrame, loc: Locale, top: int) -> None:
        self.frame = frame
        self.loc = loc
        self.top = max(1, int(top))
        self.n = len(frame)
        ts = frame["timestamp"] if self.n else pd.Series([], dtype="datetime64[ns, UTC]")
        self.ts_ns = ts.to_numpy(dtype="datetime64[ns]").view("int64") if self.n else \
            np.empty(0, dtype=np.int64)
        self.sorted = bool(np.all(np.diff(self.ts_ns) >= 0)) if self.n else True
        self.failed = (frame["outcome"].astype(str) == "failure").to_numpy() if self.n else \
            np.empty(0, dtype=bool)

    # -- header ----------------------------------------------------------------------------

    def _distinct(self, column: str) -> int:
        if column not in self.frame.columns or not self.n:
            return 0
        values = self.frame[column].dropna().astype(str)
        return int(values[values != ""].nunique())

    def facts(self, data: ReportData, n_alerts: int) -> tuple[Fact, ...]:
        loc, _ = self.loc, self.loc.gettext
        if self.n:
            start, end = pd.Timestamp(self.ts_ns.min(), tz="UTC"), \
                pd.Timestamp(self.ts_ns.max(), tz="UTC")
            days = (end - start) / pd.Timedelta(days=1)
            span = loc.ngettext("{n} day", "{n} days", max(1, math.ceil(days))).format(
                n=loc.number(max(1, math.ceil(days))))
            period = f"{_fmt_time(start)} – {_fmt_time(end)} UTC ({span})"
        else:
            period = _("no events")
        failures = int(self.failed.sum())
        return (
            Fact(_("Period"), period, wide=True),
            Fact(_("Events"), loc.number(self.n)),
            Fact(_("Failures"), f"{loc.number(failures)} ({loc.percent(failures / self.n)})"
                 if self.n else "0"),
            Fact(_("Users"), loc.number(self._distinct("user"))),
            Fact(_("Source addresses"), loc.number(self._distinct("source_ip"))),
            Fact(_("Hosts"), loc.number(self._distinct("host"))),
            Fact(_("Alerts"), loc.number(n_alerts)),
        )

    # -- activity --------------------------------------------------------------------------

    def _buckets(self, max_buckets: int) -> tuple[int, int, int, np.ndarray]:
        lo, hi = int(self.ts_ns.min()), int(self.ts_ns.max())
        for seconds in _BUCKETS_S:
            size = seconds * _NS
            start = lo // size * size
            count = (hi - start) // size + 1
            if count <= max_buckets:
                break
        index = (self.ts_ns - start) // size
        return size, start, int(count), index

    def _bucket_labels(self, size: int, start: int, count: int) -> list[str]:
        fmt = "%Y-%m-%d" if size >= 86400 * _NS else "%m-%d %H:%M"
        stamps = pd.to_datetime(start + np.arange(count, dtype=np.int64) * size, utc=True)
        return list(stamps.strftime(fmt))

    def activity(self) -> tuple[ChartView, ...]:
        if not self.n:
            return ()
        loc, _ = self.loc, self.loc.gettext
        size, start, count, index = self._buckets(96)
        labels = self._bucket_labels(size, start, count)
        level = self.frame["level"].astype("string").str.lower().fillna("").to_numpy() \
            if "level" in self.frame.columns else np.full(self.n, "", dtype=object)
        level_series = []
        known = np.zeros(self.n, dtype=bool)
        for name in LEVELS:
            mask = level == name
            known |= mask
            if mask.any():
                level_series.append((_(name), f"s-{name}",
                                     np.bincount(index[mask], minlength=count).tolist()))
        if (~known).any():
            level_series.append((_("unspecified"), "s-other",
                                 np.bincount(index[~known], minlength=count).tolist()))
        outcome = self.frame["outcome"].astype(str).to_numpy()
        outcome_series = []
        for name in OUTCOMES:
            mask = outcome == name
            if mask.any():
                outcome_series.append((_(name), f"s-{name}",
                                       np.bincount(index[mask], minlength=count).tolist()))
        total = np.bincount(index, minlength=count)
        failures = np.bincount(index[self.failed], minlength=count)
        with np.errstate(invalid="ignore", divide="ignore"):
            # a rate over a handful of events is noise (one failed login is "100%")
            rate = np.where(total >= _MIN_RATE_EVENTS, failures / np.maximum(total, 1), np.nan)
        width = self._bucket_name(size)
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
            self._activity_table())
        return (by_level, by_outcome)

    def _bucket_name(self, size: int) -> str:
        _ = self.loc.gettext
        seconds = size // _NS
        names = {60: _("minute"), 300: _("5 minutes"), 900: _("15 minutes"), 3600: _("hour"),
                 3 * 3600: _("3 hours"), 6 * 3600: _("6 hours"), 12 * 3600: _("12 hours"),
                 86400: _("day"), 7 * 86400: _("week")}
        return names.get(seconds, str(seconds))

    def _activity_table(self) -> TableView:
        loc, _ = self.loc, self.loc.gettext
        size, start, count, index = self._buckets(31)
        labels = self._bucket_labels(size, start, count)
        total = np.bincount(index, minlength=count)
        failures = np.bincount(index[self.failed], minlength=count)
        level = self.frame["level"].astype("string").str.lower().fillna("").to_numpy() \
            if "level" in self.frame.columns else np.full(self.n, "", dtype=object)
        severe = np.isin(level, ("warning", "error", "critical"))
        warn = np.bincount(index[severe], minlength=count)
        rows = tuple(
            (Cell(labels[i]), Cell(loc.number(total[i]), str(total[i]), True),
             Cell(loc.number(failures[i]), str(failures[i]), True),
             Cell(loc.percent(failures[i] / total[i]) if total[i] else "–",
                  f"{failures[i] / total[i]:.6f}" if total[i] else "0", True),
             Cell(loc.number(warn[i]), str(warn[i]), True))
            for i in range(count) if total[i])
        return TableView("activity-data", _("Activity per {width}").format(
            width=self._bucket_name(size)),
            (Cell(_("Period (UTC)")), Cell(_("Events"), numeric=True),
             Cell(_("Failures"), numeric=True), Cell(_("Failure rate"), numeric=True),
             Cell(_("Warnings and worse"), numeric=True)), rows)

    def _counts(self, column: str, *, fill: str | None = None) -> pd.DataFrame:
        """Events and failures per value of ``column``, most events first."""
        values = self.frame[column]
        if fill is not None:
            values = values.astype("string").fillna(fill).replace("", fill)
        grouped = pd.DataFrame({"key": values, "failed": self.failed}).groupby(
            "key", observed=True, sort=False)["failed"].agg(["size", "sum"])
        grouped = grouped.rename(columns={"size": "events", "sum": "failures"})
        grouped.index = grouped.index.astype(str)
        grouped = grouped[grouped.index != ""]
        grouped = grouped.reset_index().rename(columns={"index": "key"})
        grouped.columns = ["key", "events", "failures"]
        return grouped.sort_values(["events", "key"], ascending=[False, True],
                                   kind="stable", ignore_index=True)

    def categories(self) -> ChartView | None:
        if not self.n or "category" not in self.frame.columns:
            return None
        loc, _ = self.loc, self.loc.gettext
        counts = self._counts("category", fill=_("uncategorized"))
        shown = counts.head(self.top)
        items = [(str(r.key), float(r.events), float(r.failures))
                 for r in shown.itertuples(index=False)]
        rest = counts.iloc[self.top:]
        if len(rest):
            items.append((_("other ({n})").format(n=loc.number(len(rest))),
                          float(rest["events"].sum()), float(rest["failures"].sum())))
        svg = charts.horizontal_bars("categories", _("Events by category"), items,
                                     number=loc.number, names=(_("events"), _("failures")))
        table = self._top_table("categories-data", _("Events by category"), _("Category"),
                                counts)
        return ChartView("categories", _("Events by category"), svg, "", table)

    def _top_table(self, table_id: str, title: str, label: str, counts: pd.DataFrame,
                   ) -> TableView:
        loc, _ = self.loc, self.loc.gettext
        shown = counts.head(self.top)
        rows = []
        for r in shown.itertuples(index=False):
            events, failures = int(r.events), int(r.failures)
            rows.append((
                Cell(_clip(r.key)),
                Cell(loc.number(events), str(events), True),
                Cell(loc.percent(events / self.n), f"{events / self.n:.6f}", True),
                Cell(loc.number(failures), str(failures), True),
                Cell(loc.percent(failures / events), f"{failures / events:.6f}", True),
            ))
        return TableView(
            table_id, title,
            (Cell(label), Cell(_("Events"), numeric=True), Cell(_("Share"), numeric=True),
             Cell(_("Failures"), numeric=True), Cell(_("Failure rate"), numeric=True)),
            tuple(rows), _more(loc, len(counts) - len(shown), N_("and {n} more"),
                               N_("and {n} more")), _("None in this log."))

    def tops(self) -> tuple[TableView, ...]:
        _ = self.loc.gettext
        spec = (("user", _("Top users"), _("User")),
                ("action", _("Top actions"), _("Action")),
                ("resource", _("Top resources"), _("Resource")),
                ("source_ip", _("Top source addresses"), _("Source address")),
                ("country", _("Top countries"), _("Country")))
        out = []
        for column, title, label in spec:
            if column not in self.frame.columns:
                continue
            counts = self._counts(column) if self.n else \
                pd.DataFrame({"key": [], "events": [], "failures": []})
            out.append(self._top_table(f"top-{column.replace('_', '-')}", title, label, counts))
        return tuple(out)

    # -- compliance ------------------------------------------------------------------------

    def compliance(self, data: ReportData) -> tuple[TableView, ...]:
        return (self._privileged(data), self._failed(), self._new_places(data))

    def _limit(self) -> int:
        return self.top * 2

    def _privileged(self, data: ReportData) -> TableView:
        from analyzer.features import DEFAULT_PRIVILEGED_ACTIONS, privileged_mask

        loc, _ = self.loc, self.loc.gettext
        columns = (Cell(_("User")), Cell(_("Action")), Cell(_("Events"), numeric=True),
                   Cell(_("Failures"), numeric=True), Cell(_("Resources"), numeric=True),
                   Cell(_("First (UTC)")), Cell(_("Last (UTC)")))
        patterns = data.privileged or DEFAULT_PRIVILEGED_ACTIONS
        rows: list[tuple[Cell, ...]] = []
        more = ""
        if self.n:
            action = self.frame["action"].astype("category")
            names = np.asarray(action.cat.categories.astype(str), dtype=object)
            flags = privileged_mask(names, tuple(patterns)) if len(names) else \
                np.zeros(0, dtype=bool)
            codes = action.cat.codes.to_numpy()
            mask = np.zeros(self.n, dtype=bool)
            mask[codes >= 0] = flags[codes[codes >= 0]]
            if mask.any():
                sub = pd.DataFrame({
                    "user": self.frame["user"].astype(str).to_numpy()[mask],
                    "action": names[codes[mask]],
                    "resource": self.frame["resource"].astype(str).to_numpy()[mask],
                    "ts": self.ts_ns[mask], "failed": self.failed[mask]})
                grouped = sub.groupby(["user", "action"], sort=False).agg(
                    events=("ts", "size"), failures=("failed", "sum"),
                    resources=("resource", "nunique"), first=("ts", "min"),
                    last=("ts", "max")).reset_index()
                grouped = grouped.sort_values(["events", "user", "action"],
                                              ascending=[False, True, True], kind="stable")
                shown = grouped.head(self._limit())
                more = _more(loc, len(grouped) - len(shown), N_("and {n} more"),
                             N_("and {n} more"))
                for r in shown.itertuples(index=False):
                    rows.append((Cell(_clip(r.user) or _("(none)")), Cell(_clip(r.action)),
                                 *self._num_cells(r.events, r.failures, r.resources),
                                 *self._time_cells(r.first, r.last)))
        return TableView("privileged", _("Privileged actions"), columns, tuple(rows), more,
                         _("No privileged actions in this log."),
                         _("Actions that change who may do what, delete, or move data and "
                           "models out (permission, role and user changes, deletes, exports, "
                           "downloads), by user and action."))

    def _num_cells(self, *values: int) -> tuple[Cell, ...]:
        return tuple(Cell(self.loc.number(int(v)), str(int(v)), True) for v in values)

    @staticmethod
    def _time_cells(*stamps: int) -> tuple[Cell, ...]:
        return tuple(Cell(_fmt_time(pd.Timestamp(int(s), tz="UTC")),
                          _iso(pd.Timestamp(int(s), tz="UTC"))) for s in stamps)

    def _failed(self) -> TableView:
        loc, _ = self.loc, self.loc.gettext
        columns = (Cell(_("User")), Cell(_("Source address")), Cell(_("Country")),
                   Cell(_("Failures"), numeric=True), Cell(_("Actions"), numeric=True),
                   Cell(_("First (UTC)")), Cell(_("Last (UTC)")))
        rows: list[tuple[Cell, ...]] = []
        more = ""
        mask = self.failed
        if mask.any():
            country = self.frame["country"].astype("string").fillna("").to_numpy()[mask] \
                if "country" in self.frame.columns else np.full(int(mask.sum()), "")
            sub = pd.DataFrame({
                "user": self.frame["user"].astype(str).to_numpy()[mask],
                "ip": self.frame["source_ip"].astype(str).to_numpy()[mask],
                "country": country, "action": self.frame["action"].astype(str).to_numpy()[mask],
                "ts": self.ts_ns[mask]})
            grouped = sub.groupby(["user", "ip"], sort=False).agg(
                country=("country", "first"), failures=("ts", "size"),
                actions=("action", "nunique"), first=("ts", "min"),
                last=("ts", "max")).reset_index()
            grouped = grouped.sort_values(["failures", "user", "ip"],
                                          ascending=[False, True, True], kind="stable")
            shown = grouped.head(self._limit())
            more = _more(loc, len(grouped) - len(shown), N_("and {n} more"), N_("and {n} more"))
            for r in shown.itertuples(index=False):
                rows.append((Cell(_clip(r.user) or _("(none)")), Cell(_clip(r.ip) or "–"),
                             Cell(_clip(r.country) or "–"),
                             *self._num_cells(r.failures, r.actions),
                             *self._time_cells(r.first, r.last)))
        return TableView("failed-access", _("Failed access attempts"), columns, tuple(rows),
                         more, _("No failed events in this log."),
                         _("Events that failed, by user and source address."))

    def _baseline_end(self, data: ReportData) -> int:
        lo, hi = int(self.ts_ns.min()), int(self.ts_ns.max())
        trained = (data.model or {}).get("training_end")
        if trained:
            end = pd.Timestamp(trained).tz_convert("UTC").value
            if lo < end < hi:
                return end
        span = hi - lo
        return lo + min(span // 4, 7 * 86400 * _NS)

    def _new_places(self, data: ReportData) -> TableView:
        loc, _ = self.loc, self.loc.gettext
        columns = (Cell(_("User")), Cell(_("Source address")), Cell(_("Country")),
                   Cell(_("First seen (UTC)")), Cell(_("Events"), numeric=True),
                   Cell(_("Failures"), numeric=True), Cell(_("User seen before")))
        rows: list[tuple[Cell, ...]] = []
        more, note = "", _("Pairs of user and source address first seen in this log.")
        if self.n:
            cut = self._baseline_end(data)
            note = _("User and source address pairs first seen after {cut} UTC, the end of "
                     "the baseline (the model's training period, or the first quarter of the "
                     "log, at most 7 days).").format(cut=_fmt_time(pd.Timestamp(cut, tz="UTC")))
            user = self.frame["user"].astype(str).to_numpy()
            ip = self.frame["source_ip"].astype(str).to_numpy()
            valid = (user != "") & (ip != "")
            country = self.frame["country"].astype("string").fillna("").to_numpy() \
                if "country" in self.frame.columns else np.full(self.n, "")
            sub = pd.DataFrame({"user": user[valid], "ip": ip[valid],
                                "country": country[valid], "ts": self.ts_ns[valid],
                                "failed": self.failed[valid]})
            pairs = sub.groupby(["user", "ip"], sort=False).agg(
                country=("country", "last"), first=("ts", "min"), events=("ts", "size"),
                failures=("failed", "sum")).reset_index()
            users_before = set(sub.loc[sub["ts"] < cut, "user"].unique())
            new = pairs[pairs["first"] >= cut].sort_values(
                ["first", "user", "ip"], kind="stable")
            shown = new.head(self._limit())
            more = _more(loc, len(new) - len(shown), N_("and {n} more"), N_("and {n} more"))
            yes, no = _("yes"), _("no (new user)")
            for r in shown.itertuples(index=False):
                rows.append((Cell(_clip(r.user)), Cell(_clip(r.ip)),
                             Cell(_clip(r.country) or "–"), *self._time_cells(r.first),
                             *self._num_cells(r.events, r.failures),
                             Cell(yes if r.user in users_before else no)))
        return TableView("new-places", _("Access from new places"), columns, tuple(rows), more,
                         _("No access from new places."), note)

    # -- alerts ----------------------------------------------------------------------------

    def _entity_rows(self, alert: Any) -> np.ndarray:
        column = "user" if alert.entity_type == "user" else "source_ip"
        if not self.n or column not in self.frame.columns:
            return np.empty(0, dtype=np.int64)
        values = self.frame[column]
        if column == "source_ip":
            from analyzer.features._table import source_entities
            values = source_entities(self.frame)  # a source named by host name too
        if isinstance(values.dtype, pd.CategoricalDtype):
            try:
                code = values.cat.categories.get_loc(alert.entity)
            except KeyError:
                return np.empty(0, dtype=np.int64)
            return np.flatnonzero(values.cat.codes.to_numpy() == code)
        return np.flatnonzero((values.astype(str) == alert.entity).to_numpy())

    def alert_view(self, rank: int, alert: Any) -> AlertView:
        loc, _ = self.loc, self.loc.gettext
        rows = self._entity_rows(alert)
        start = pd.Timestamp(alert.window_start).tz_convert("UTC")
        end = pd.Timestamp(alert.window_end).tz_convert("UTC")
        risk = float(alert.risk_score)
        reasons = tuple(loc.reason(r) for r in split_reasons("; ".join(alert.reasons)))
        entity_kind = _("user") if alert.entity_type == "user" else _("source address")
        return AlertView(
            rank=rank, anchor=f"alert-{rank}", entity=_clip(alert.entity), entity_kind=entity_kind,
            window=_window_text(start, end), window_sort=_iso(start),
            risk=loc.number(risk), risk_sort=f"{risk:06.1f}",
            severity="high" if risk >= 80 else "medium" if risk >= 50 else "low",
            reasons=reasons or (_("unusual combination of features"),),
            context=self._context_chart(rank, alert, rows, start, end),
            signals=self._signals(rank, alert),
            evidence=self._evidence(rank, alert, rows, start, end),
        )

    def _context_chart(self, rank: int, alert: Any, rows: np.ndarray, start: pd.Timestamp,
                       end: pd.Timestamp) -> ChartView | None:
        loc, _ = self.loc, self.loc.gettext
        if not len(rows):
            return None
        width = max(int((end - start).value), 300 * _NS)
        width = min(width, 86400 * _NS)
        first = start.value - _CONTEXT_BUCKETS * width
        n_win = max(1, math.ceil((end.value - start.value) / width))
        count = 2 * _CONTEXT_BUCKETS + n_win
        last = first + count * width
        ts = self.ts_ns[rows]
        inside = (ts >= first) & (ts < last)
        index = (ts[inside] - first) // width
        actual = np.bincount(index, minlength=count)
        failed = np.bincount(index[self.failed[rows][inside]], minlength=count)
        # usual pattern: the entity's mean per bucket at the same time of day, outside the
        # context range (per day when buckets are a day long)
        outside = ts[~inside]
        span_days = max(1.0, (self.ts_ns.max() - self.ts_ns.min()) / (86400 * _NS)
                        - count * width / (86400 * _NS))
        bucket_start = first + np.arange(count, dtype=np.int64) * width
        if width <= 3600 * _NS and len(outside):
            hour_counts = np.bincount((outside // (3600 * _NS)) % 24, minlength=24)
            usual = hour_counts[(bucket_start // (3600 * _NS)) % 24] / span_days * (
                width / (3600 * _NS))
        else:
            usual = np.full(count, len(outside) / span_days * width / (86400 * _NS))
        labels = list(pd.to_datetime(bucket_start, utc=True).strftime(
            "%H:%M" if width < 86400 * _NS else "%m-%d"))
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
                          start=_fmt_time(pd.Timestamp(first, tz="UTC")),
                          end=_fmt_time(pd.Timestamp(last, tz="UTC")))
        return ChartView(f"alert-{rank}", _("Activity around the window"), svg, note)

    def _signals(self, rank: int, alert: Any) -> TableView:
        from analyzer.features import FEATURES

        loc, _ = self.loc, self.loc.gettext
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

    def _evidence(self, rank: int, alert: Any, rows: np.ndarray, start: pd.Timestamp,
                  end: pd.Timestamp) -> TableView:
        loc, _ = self.loc, self.loc.gettext
        columns = (Cell(_("Seq."), numeric=True), Cell(_("Time (UTC)")), Cell(_("User")),
                   Cell(_("Source address")), Cell(_("Action")), Cell(_("Resource")),
                   Cell(_("Outcome")), Cell(_("Message")))
        ts = self.ts_ns[rows]
        keep = rows[(ts >= start.value) & (ts < end.value)]
        if len(keep) and "sequence" in self.frame.columns and \
                alert.first_sequence is not None and alert.last_sequence is not None:
            seq = self.frame["sequence"].to_numpy(dtype="float64", na_value=np.nan)[keep]
            in_range = (seq >= alert.first_sequence) & (seq <= alert.last_sequence)
            keep = keep[in_range | np.isnan(seq)]
        shown = keep[:MAX_EVIDENCE]
        sub = self.frame.iloc[shown]
        out = []
        for record in sub.to_dict("records"):
            seq = record.get("sequence")
            seq_text = "" if seq is None or pd.isna(seq) else str(int(seq))
            outcome = str(record.get("outcome", ""))
            out.append((Cell(seq_text, seq_text, True),
                        Cell(pd.Timestamp(record["timestamp"]).strftime("%Y-%m-%d %H:%M:%S"),
                             _iso(record["timestamp"])),
                        Cell(_clip(record.get("user"))), Cell(_clip(record.get("source_ip"))),
                        Cell(_clip(record.get("action"))), Cell(_clip(record.get("resource"))),
                        Cell(_(outcome) if outcome in OUTCOMES else _clip(outcome), outcome),
                        Cell(_clip(record.get("message"), 100))))
        where = ""
        if alert.first_sequence is not None and alert.last_sequence is not None:
            where = _("Records with sequence {first} to {last} in the trail.").format(
                first=alert.first_sequence, last=alert.last_sequence) + " "
        return TableView(
            f"alert-{rank}-evidence", _("Evidence records"), columns, tuple(out),
            _more(loc, len(keep) - len(shown), N_("and {n} more record"),
                  N_("and {n} more records")),
            _("The window's events are not in this log."),
            where + loc.ngettext("{n} event of {entity} in the window.",
                                 "{n} events of {entity} in the window.", len(keep)).format(
                n=loc.number(len(keep)), entity=alert.entity))

