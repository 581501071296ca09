"""Draw the Grafana dashboards of this folder as PNGs from their own panel queries.

Grafana is not packaged for Debian or PyPI, so this stands in for a screenshot: it starts
the services the integration test uses (a real PostgreSQL and Debian's ``prometheus``,
see ``tests/services.py``), runs ``watch`` and ``ship --to postgres`` with metrics on a short
trail (the test's activity, a few more bursts of events, then one tampered record), runs every
panel's own PromQL or SQL against them and draws each dashboard as a grid of its panels
(``gridPos``) with matplotlib: time series as lines, stats as big numbers, bar gauges as
bars, tables as tables.

    PYTHONPATH=. python dashboards/render.py      # about two minutes, model fit included

writes ``dashboards/audit-trail-health.png`` and ``dashboards/audit-alerts.png``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

#: how each Grafana panel type is drawn (every panel type the dashboards use must be here)
KINDS = {"timeseries": "lines", "stat": "number", "bargauge": "bars", "table": "table"}
_COLORS = {"green": "#37872d", "orange": "#e0752d", "red": "#c4162a"}
_ROW_INCH = 0.42  # height of one gridPos unit
_LEFT = {"lines": 0.025, "number": 0.0, "bars": 0.075, "table": 0.0}


def _legend(fmt: str | None, labels: dict[str, str]) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def _unit(value: float, unit: str | None) -> str:
    if unit == "s":
        for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if value >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} s"
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.2f}"


def _color(panel: dict[str, Any], value: float) -> str:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
    color = "#1f60c4"
    for step in steps or ():
        if step["value"] is None or value >= step["value"]:
            color = _COLORS.get(step["color"], step["color"])
    return color


def query_panels(dash: dict[str, Any], prom: Any, con: Any, start: float,
                 end: float) -> dict[int, list[Any]]:
    """Panel id -> one result per target: Prometheus series ``(legend, times, values)``
    (a range for time series, the latest value otherwise) or SQL ``(columns, rows)``."""
    out: dict[int, list[Any]] = {}
    for panel in dash["panels"]:
        results = []
        for target in panel["targets"]:
            if "rawSql" in target:
                sql = re.sub(r"\$__timeFilter\((\w+)\)",
                             r"\1 BETWEEN now() - interval '6 hours' AND now()", target["rawSql"])
                cur = con.execute(sql)
                results.append(([c.name for c in cur.description], cur.fetchall()))
            elif panel["type"] == "timeseries":
                for s in prom.query_range(target["expr"], start, end, 2):
                    results.append((_legend(target.get("legendFormat"), s["metric"]),
                                    [float(t) for t, _ in s["values"]],
                                    [float(v) for _, v in s["values"]]))
            else:
                for s in prom.query(target["expr"]):
                    results.append((_legend(target.get("legendFormat"), s["metric"]),
                                    [float(s["value"][0])], [float(s["value"][1])]))
        out[panel["id"]] = results
    return out


def _draw_panel(ax: Any, panel: dict[str, Any], results: list[Any]) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    kind = KINDS[panel["type"]]
    ax.set_title(panel["title"], loc="left", fontsize=10, fontweight="bold")
    if kind == "lines":
        for legend, times, values in results:
            ax.plot([datetime.fromtimestamp(t, UTC) for t in times], values, label=legend)
        ax.legend(fontsize=7, loc="upper left")
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_formatter(_time_format())
        if unit in ("ops", "s"):
            ax.set_ylabel("per second" if unit == "ops" else "seconds", fontsize=7)
    elif kind == "number":
        value = results[0][2][-1] if results else float("nan")
        ax.set_facecolor(_color(panel, value) if results else "#888888")
        ax.text(0.5, 0.45, _unit(value, unit), ha="center", va="center", fontsize=26,
                color="white", fontweight="bold", transform=ax.transAxes)
        ax.set_xticks([]), ax.set_yticks([])
    elif kind == "bars":
        def order(item: Any) -> Any:
            le = re.search(r"<= (\S+)", item[0])  # histogram buckets in bucket order
            return float(le.group(1)) if le else item[0]
        items = sorted(results, key=order)
        values = [i[2][-1] for i in items]
        bars = ax.barh([i[0] for i in items], values, color="#1f60c4")
        ax.bar_label(bars, labels=[_unit(v, unit) for v in values], fontsize=7, padding=2)
        ax.set_xlim(0, max([*values, 1]) * 1.12)
        ax.invert_yaxis()
        ax.tick_params(labelsize=7)
    else:
        columns, rows = results[0]
        cells = [[_cell(v) for v in row] for row in rows[:8]]
        ax.axis("off")
        table = ax.table(cellText=cells or [["(no rows)"] + [""] * (len(columns) - 1)],
                         colLabels=columns, loc="upper left", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.5)
        table.auto_set_column_width(list(range(len(columns))))
        if len(rows) > len(cells):
            ax.text(0, 0, f"{len(cells)} of {len(rows)} rows", fontsize=7,
                    transform=ax.transAxes)


def _time_format() -> Any:
    import matplotlib.dates as mdates

    return mdates.DateFormatter("%H:%M:%S")


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    return text if len(text) <= 70 else text[:69] + "…"


def draw(dash: dict[str, Any], results: dict[int, list[Any]], path: Path) -> None:
    """One PNG of the dashboard: every panel at its ``gridPos`` (24 columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    fig = plt.figure(figsize=(16, rows * _ROW_INCH + 0.6))
    top = rows * _ROW_INCH / (rows * _ROW_INCH + 0.6)
    fig.suptitle(dash["title"], x=0.01, ha="left", fontsize=14, fontweight="bold")
    for panel in dash["panels"]:
        pos, pad = panel["gridPos"], 0.006
        left = _LEFT[KINDS[panel["type"]]]  # room for the axis labels
        ax = fig.add_axes((pos["x"] / 24 + pad + left,
                           top * (1 - (pos["y"] + pos["h"]) / rows) + 0.045,
                           pos["w"] / 24 - 2 * pad - left - 0.005,
                           top * pos["h"] / rows - 0.075))
        _draw_panel(ax, panel, results[panel["id"]])
    fig.savefig(path, dpi=72, pil_kwargs={"optimize": True})
    plt.close(fig)


def _activity(log: Path, tmp: Path, pg_url: str, dashboards: dict[str, Any]) -> None:
    """A short real run: ``watch`` and ``ship`` with metrics, scraped by Prometheus; then
    every dashboard is queried and drawn."""
    import psycopg
    import services
    from test_observability import RULES, _start, _stop, _tamper_last_record, _write_activity
    from test_watch import _fitted_model

    from analyzer.logger import AuditLogger

    model = _fitted_model(tmp)
    start = time.time()
    _write_activity(log)
    watch_port, ship_port = services.free_port(), services.free_port()
    watch = _start(["watch", str(log), "--model", str(model), "--signing-key-file",
                    str(tmp / "model.key"), "--interval", "1", "--verify-every", "1",
                    "--stats-every", "0", "--metrics-address", f"127.0.0.1:{watch_port}"])
    ship = _start(["ship", str(log), "--to", "postgres", "--dsn", pg_url, "--batch", "100",
                   "--stats-every", "0", "--metrics-address", f"127.0.0.1:{ship_port}"])
    procs = (watch, ship)
    try:
        with services.prometheus(tmp / "prometheus", [f"127.0.0.1:{watch_port}",
                                                      f"127.0.0.1:{ship_port}"], RULES) as prom:
            def wait(what: str, check: Any) -> Any:
                return services.wait(what, check, procs=procs, timeout=120)

            wait("an alert", lambda: prom.value("sum(audit_analyzer_alerts_total)"))
            wait("drift measured", lambda: prom.query("audit_analyzer_model_drift_psi"))
            for burst in range(6):  # more writing, of varying size, for the rate panels
                with AuditLogger(log, service="api" if burst % 2 else "app") as audit:
                    for i in range(200 * (burst + 1)):
                        audit.log("dataset.read", user=f"user{i % 40}", resource="datasets/d1",
                                  outcome="success" if i % 9 else "failure",
                                  level="WARNING" if i % 50 == 0 else "INFO")
                    for i in range(300 if burst == 2 else 0):  # a second guessing burst
                        audit.log("login", user=f"svc{i % 30}", outcome="failure",
                                  source_ip="203.0.113.9", category="authentication",
                                  message="bad password")
                time.sleep(5)
            wait("the backlog drained", lambda: prom.value(
                "sum(audit_analyzer_ship_backlog_events)") == 0)
            _tamper_last_record(log)
            wait("chain_intact 0", lambda: prom.value("min(audit_analyzer_chain_intact)") == 0)
            time.sleep(3)
            with psycopg.connect(pg_url) as con:
                for name, dash in dashboards.items():
                    results = query_panels(dash, prom, con, start, time.time())
                    draw(dash, results, HERE / name.replace(".json", ".png"))
    finally:
        for proc in procs:
            _stop(proc)


def main() -> None:
    import services

    dashboards = {p.name: json.loads(p.read_text()) for p in sorted(HERE.glob("*.json"))}
    with tempfile.TemporaryDirectory() as folder, services.postgres() as pg_url:
        _activity(Path(folder) / "audit.jsonl", Path(folder), pg_url, dashboards)
    for name in dashboards:
        print(HERE / name.replace(".json", ".png"))


if __name__ == "__main__":
    main()
