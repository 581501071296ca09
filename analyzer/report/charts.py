"""Inline SVG charts for the HTML report: no scripts, no fonts, no network.

Each function takes plain numbers and labels and returns the ``<svg>`` element as
:class:`markupsafe.Markup`. Every label is escaped here, because labels can come from the log
(categories, entity names). Colours are CSS classes (``s-info``, ``s-failure`` ...) defined in
the report's stylesheet, so the page and print styles decide them. Output is deterministic:
coordinates are rounded to one decimal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["histogram", "horizontal_bars", "nice_ticks", "stacked_bars"]

_W, _H = 960, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 52, 14, 42


def _f(x: float) -> str:
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top``.

    >>> nice_ticks(87)
    [0, 25, 50, 75, 100]
    >>> nice_ticks(0)
    [0, 1]
    """
    if not top or top <= 0 or not math.isfinite(top):
        return [0, 1]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 2.5, 5, 10) if power >= 10 else (1, 2, 5, 10)
    step = next(m * power for m in steps if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    values = [round(i * step, 10) for i in range(n + 1)]
    return [int(v) if float(v).is_integer() else v for v in values]


def _svg(chart_id: str, title: str, body: list[str], *, height: int = _H,
         width: int = _W) -> Markup:
    # every interpolated label was escaped by the caller of this helper
    return Markup(  # noqa: S704
        f'<svg class="chart" data-chart="{escape(chart_id)}" role="img" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(body) + "</svg>")


def _x_labels(labels: Sequence[str], x0: float, step: float, y: float,
              max_labels: int = 8) -> list[str]:
    if not labels:
        return []
    every = max(1, math.ceil(len(labels) / max_labels))
    out = []
    for i in range(0, len(labels), every):
        x = x0 + step * (i + 0.5)
        out.append(f'<text class="tick" x="{_f(x)}" y="{_f(y)}" text-anchor="middle">'
                   f'{escape(labels[i])}</text>')
    return out


def _y_axis(ticks: Sequence[float], fmt: Sequence[str], *, x: float, plot_h: float,
            top: float, right: bool = False, grid_to: float | None = None) -> list[str]:
    out = []
    peak = ticks[-1] or 1
    for value, text in zip(ticks, fmt, strict=True):
        y = top + plot_h - plot_h * value / peak
        if grid_to is not None:
            out.append(f'<line class="grid" x1="{_f(x)}" x2="{_f(grid_to)}" y1="{_f(y)}" '
                       f'y2="{_f(y)}"/>')
        anchor, dx = ("start", 6) if right else ("end", -6)
        out.append(f'<text class="tick" x="{_f(x + dx)}" y="{_f(y + 4)}" '
                   f'text-anchor="{anchor}">{escape(text)}</text>')
    return out


def stacked_bars(chart_id: str, title: str, labels: Sequence[str],
                 series: Sequence[tuple[str, str, Sequence[float]]], *,
                 number: callable = str, line: tuple[str, Sequence[float]] | None = None,
                 line_format: callable = str, highlight: tuple[int, int] | None = None,
                 overlay: tuple[str, Sequence[float]] | None = None,
                 width: int = _W) -> Markup:
    """Bars per time bucket, stacked by series, with an optional rate line on a right axis.

    Parameters
    ----------
    labels
        One label per bucket (only some are drawn).
    series
        ``(name, css class, values)``, bottom to top.
    line
        ``(name, values in [0, 1])``: a rate drawn as a line against the right axis.
    highlight
        ``(first, last)`` bucket indices to shade (an alert's window).
    overlay
        ``(name, values)``: a dashed step line on the left axis (the usual pattern).
    """
    n = len(labels)
    plot_w, plot_h = width - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    totals = [sum(s[2][i] for s in series) for i in range(n)]
    peak = max(totals + (list(overlay[1]) if overlay else []) + [0])
    ticks = nice_ticks(peak)
    scale = plot_h / (ticks[-1] or 1)
    step = plot_w / max(n, 1)
    body = _y_axis(ticks, [number(t) for t in ticks], x=_LEFT, plot_h=plot_h, top=_TOP,
                   grid_to=_LEFT + plot_w)
    if highlight is not None:
        x = _LEFT + step * highlight[0]
        w = step * (highlight[1] - highlight[0] + 1)
        body.append(f'<rect class="highlight" x="{_f(x)}" y="{_TOP}" width="{_f(w)}" '
                    f'height="{_f(plot_h)}"/>')
    gap = min(2.0, step * 0.15)
    for name, css, values in series:
        body.append(f'<g class="{escape(css)}"><title>{escape(name)}</title>')
        for i in range(n):
            v = values[i]
            if v <= 0:
                continue
            below = sum(s[2][i] for s in series[:[x[0] for x in series].index(name)])
            y = _TOP + plot_h - (below + v) * scale
            body.append(f'<rect x="{_f(_LEFT + step * i + gap / 2)}" y="{_f(y)}" '
                        f'width="{_f(max(step - gap, 0.5))}" height="{_f(v * scale)}"/>')
        body.append("</g>")
    if overlay is not None and n:
        points = []
        for i, v in enumerate(overlay[1]):
            y = _TOP + plot_h - v * scale
            points.append(f"{_f(_LEFT + step * i)},{_f(y)} {_f(_LEFT + step * (i + 1))},{_f(y)}")
        body.append(f'<polyline class="usual" points="{" ".join(points)}"><title>'
                    f'{escape(overlay[0])}</title></polyline>')
    if line is not None and n:
        rate_peak = max([v for v in line[1] if math.isfinite(v)] + [0.0])
        rate_ticks = nice_ticks(min(1.0, rate_peak) * 100 if rate_peak else 10)
        rate_scale = plot_h / (rate_ticks[-1] or 1)
        body += _y_axis(rate_ticks, [line_format(t / 100) for t in rate_ticks],
                        x=_LEFT + plot_w, plot_h=plot_h, top=_TOP, right=True)
        points = [f"{_f(_LEFT + step * (i + 0.5))},{_f(_TOP + plot_h - v * 100 * rate_scale)}"
                  for i, v in enumerate(line[1]) if math.isfinite(v)]
        body.append(f'<polyline class="rate" points="{" ".join(points)}"><title>'
                    f'{escape(line[0])}</title></polyline>')
    body.append(f'<line class="axis" x1="{_LEFT}" x2="{_f(_LEFT + plot_w)}" '
                f'y1="{_f(_TOP + plot_h)}" y2="{_f(_TOP + plot_h)}"/>')
    body += _x_labels(labels, _LEFT, step, _TOP + plot_h + 16)
    legend = [(name, css) for name, css, _ in series]
    if overlay is not None:
        legend.append((overlay[0], "usual"))
    if line is not None:
        legend.append((line[0], "rate"))
    body += _legend(legend, y=_H - 8)
    return _svg(chart_id, title, body, width=width)


def _legend(items: Sequence[tuple[str, str]], *, y: float, x: float = _LEFT) -> list[str]:
    out = []
    for name, css in items:
        if css in ("rate", "usual", "threshold"):
            out.append(f'<line class="{escape(css)}" x1="{_f(x)}" x2="{_f(x + 14)}" '
                       f'y1="{_f(y - 4)}" y2="{_f(y - 4)}"/>')
        else:
            out.append(f'<rect class="{escape(css)}" x="{_f(x)}" y="{_f(y - 9)}" width="10" '
                       f'height="10"/>')
        out.append(f'<text class="legend" x="{_f(x + 18)}" y="{_f(y)}">{escape(name)}</text>')
        x += 28 + 6.5 * len(name)
    return out


def horizontal_bars(chart_id: str, title: str,
                    items: Sequence[tuple[str, float, float]], *, number: callable = str,
                    names: tuple[str, str] = ("events", "failures")) -> Markup:
    """One bar per item (label, total, failed part), longest first as given."""
    row, label_w = 24, 170
    height = _TOP + row * max(len(items), 1) + 30
    plot_w = _W - label_w - 90
    peak = max([v for _, v, _ in items] + [1])
    body = []
    for i, (label, value, failed) in enumerate(items):
        y = _TOP + i * row
        w = plot_w * value / peak
        wf = plot_w * failed / peak
        shown = label if len(label) <= 26 else label[:25] + "…"
        body.append(f'<text class="tick" x="{label_w - 8}" y="{_f(y + 15)}" text-anchor="end">'
                    f'<title>{escape(label)}</title>{escape(shown)}</text>')
        body.append(f'<rect class="s-bar" x="{label_w}" y="{_f(y + 3)}" width="{_f(max(w, 1))}" '
                    f'height="{row - 8}"/>')
        if failed > 0:
            body.append(f'<rect class="s-failure" x="{label_w}" y="{_f(y + 3)}" '
                        f'width="{_f(max(wf, 1))}" height="{row - 8}"/>')
        body.append(f'<text class="value" x="{_f(label_w + max(w, 1) + 6)}" y="{_f(y + 15)}">'
                    f'{escape(number(value))}</text>')
    body += _legend([(names[0], "s-bar"), (names[1], "s-failure")], y=height - 8, x=label_w)
    return _svg(chart_id, title, body, height=height)


def histogram(chart_id: str, title: str, edges: Sequence[float], counts: Sequence[int], *,
              threshold: float | None, threshold_label: str, x_title: str,
              y_title: str, number: callable = str) -> Markup:
    """Counts per bin on a logarithmic axis (so the rare tail shows), with a threshold line."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    lo, hi = edges[0], edges[-1]
    peak = max([*counts, 1])
    # a count of 1 gets one step of height, so that single windows in the tail show
    decades = max(1, math.ceil(math.log10(peak)))
    scale = plot_h / (decades + 1)

    def y_of(count: float) -> float:
        return _TOP + plot_h - (math.log10(count) + 1) * scale if count > 0 else _TOP + plot_h

    body = []
    for d in range(decades + 1):
        y = y_of(10 ** d)
        body.append(f'<line class="grid" x1="{_LEFT}" x2="{_f(_LEFT + plot_w)}" y1="{_f(y)}" '
                    f'y2="{_f(y)}"/>')
        body.append(f'<text class="tick" x="{_LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">'
                    f'{escape(number(10 ** d))}</text>')
    width = plot_w / max(len(counts), 1)
    body.append('<g class="s-bar">')
    for i, count in enumerate(counts):
        if count <= 0:
            continue
        x = _LEFT + plot_w * (edges[i] - lo) / (hi - lo)
        y = y_of(count)
        body.append(f'<rect x="{_f(x + 0.5)}" y="{_f(y)}" width="{_f(max(width - 1, 0.5))}" '
                    f'height="{_f(_TOP + plot_h - y)}"><title>{escape(number(count))}</title>'
                    '</rect>')
    body.append("</g>")
    for value in edges[:: max(1, len(edges) // 5)]:
        x = _LEFT + plot_w * (value - lo) / (hi - lo)
        body.append(f'<text class="tick" x="{_f(x)}" y="{_f(_TOP + plot_h + 16)}" '
                    f'text-anchor="middle">{escape(number(value))}</text>')
    body.append(f'<line class="axis" x1="{_LEFT}" x2="{_f(_LEFT + plot_w)}" '
                f'y1="{_f(_TOP + plot_h)}" y2="{_f(_TOP + plot_h)}"/>')
    if threshold is not None and math.isfinite(threshold):
        x = _LEFT + plot_w * (min(max(threshold, lo), hi) - lo) / (hi - lo)
        body.append(f'<line class="threshold" x1="{_f(x)}" x2="{_f(x)}" y1="{_TOP}" '
                    f'y2="{_f(_TOP + plot_h)}"/>')
        anchor = "end" if x > _LEFT + plot_w * 0.7 else "start"
        dx = -5 if anchor == "end" else 5
        body.append(f'<text class="threshold-label" x="{_f(x + dx)}" y="{_TOP + 12}" '
                    f'text-anchor="{anchor}">{escape(threshold_label)}</text>')
    body.append(f'<text class="axis-title" x="{_f(_LEFT + plot_w / 2)}" y="{_H - 6}" '
                f'text-anchor="middle">{escape(x_title)}</text>')
    body.append(f'<text class="axis-title" x="12" y="{_f(_TOP + plot_h / 2)}" '
                f'text-anchor="middle" transform="rotate(-90 12 {_f(_TOP + plot_h / 2)})">'
                f'{escape(y_title)}</text>')
    return _svg(chart_id, title, body)
