"""The report's view-model types: what a report is computed from, and what it shows.

Plain frozen dataclasses: :mod:`analyzer.report.viewmodel` fills them, the HTML template and the
text renderer lay them out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
from markupsafe import Markup

__all__ = ["AlertView", "Cell", "ChartView", "Fact", "Integrity", "ReportData", "ReportView",
           "TableView", "Verdict"]


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

    #: the events (a caller's frame; ``None`` when ``tally`` counted them as they were read)
    frame: pd.DataFrame | None = None
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
    #: the events' counts (:class:`~analyzer.report.tally.Tally`); ``None``: count ``frame``
    tally: Any = None
    #: the rows of the alerts shown (:class:`~analyzer.report.context.AlertRows`), in order
    alert_rows: tuple[Any, ...] = ()


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
