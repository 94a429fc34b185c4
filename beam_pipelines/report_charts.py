"""Number formatting and inline SVG charts for the HTML run report.

Every function returns a string of HTML/SVG in which each value taken from data is escaped.
Charts are plain SVG built here (no script, no external resources) so the report opens offline
from a file; exact numbers sit beside each chart as text and in each mark's ``<title>``.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence

__all__ = [
    "COLORS",
    "bar_rows",
    "esc",
    "fmt_num",
    "fmt_pct",
    "fmt_time",
    "fmt_value",
    "histogram",
    "is_number",
    "short",
    "sparkline",
]

COLORS = {
    "read": "#3b82f6",
    "curated": "#16a34a",
    "dead_lettered": "#dc2626",
    "duplicates": "#d97706",
    "late": "#7c3aed",
    "neutral": "#64748b",
    "accent": "#0ea5e9",
    "bad": "#dc2626",
}

_MISSING = "\u2014"  # em dash: a value that does not apply or was not computed
_SAMPLE_CHARS = 120
_ISO_UTC = re.compile(r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<hm>\d{2}:\d{2})(?P<sec>:\d{2})?(?:\.\d+)?(?:Z|[+-]00:?00)$")


def esc(value: object) -> str:
    """``value`` as text, escaped for HTML element content and attribute values.

    Args:
        value: anything; ``None`` becomes the empty string.
    """
    return "" if value is None else html.escape(str(value), quote=True)


def is_number(value: object) -> bool:
    """True for a finite int or float (bool is not a number here).

    Args:
        value: anything.
    """
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_num(value: object) -> str:
    """A number with thousands separators and a precision that suits its size (not escaped).

    Args:
        value: an int or float; anything else is returned as text, ``None`` as an em dash.
    """
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "\u221e" if value > 0 else "-\u221e"
        size = abs(value)
        if value.is_integer() and size < 1e15:
            return f"{int(value):,}"
        if size >= 1e15:
            return f"{value:.3e}"
        if size >= 1000:
            return f"{value:,.1f}"
        if size >= 1:
            return f"{value:,.2f}"
        if size >= 1e-4:
            return f"{value:.4g}"
        return f"{value:.2e}"
    return str(value)


def fmt_pct(fraction: object) -> str:
    """A fraction (0..1) as a percentage: two decimals below 1 %, one above (not escaped).

    Args:
        fraction: a number; anything else gives an em dash.
    """
    if not is_number(fraction):
        return _MISSING
    pct = fraction * 100
    if pct == 0:
        return "0%"
    if abs(pct) < 1:
        return f"{pct:.2f}%"
    return f"{pct:,.1f}%"


def short(value: object, limit: int = _SAMPLE_CHARS) -> str:
    """A data value (number, timestamp text, sample) as display text, shortened, not escaped.

    Args:
        value: anything from the data.
        limit: longest text kept; longer text ends with an ellipsis.
    """
    text = fmt_num(value) if value is None or isinstance(value, int | float) else fmt_time(str(value))
    return text[: limit - 1] + "\u2026" if len(text) > limit else text


def fmt_time(text: str, minutes: bool = False) -> str:
    """ISO-8601 UTC timestamp text as ``YYYY-MM-DD HH:MM:SS UTC``; any other text unchanged.

    Args:
        text: a value from the data.
        minutes: drop seconds and the zone (``YYYY-MM-DD HH:MM``), for axis labels.
    """
    m = _ISO_UTC.match(text)
    if m is None:
        return text
    return f"{m['date']} {m['hm']}" if minutes else f"{m['date']} {m['hm']}{m['sec'] or ':00'} UTC"


def fmt_value(value: object, limit: int = _SAMPLE_CHARS) -> str:
    """``short(value, limit)``, escaped for HTML.

    Args:
        value: anything from the data.
        limit: longest text kept; longer text ends with an ellipsis.
    """
    return esc(short(value, limit))


def _bar_svg(fraction: float, color: str) -> str:
    width = max(0.0, min(1.0, fraction)) * 100
    # A sliver stays visible for a count that is tiny next to the total but not zero.
    if 0 < width < 0.6:
        width = 0.6
    return (
        '<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
        '<rect class="track" x="0" y="0" width="100" height="10"/>'
        f'<rect x="0" y="0" width="{width:.3f}" height="10" fill="{color}"/></svg>'
    )


def bar_rows(items: Sequence[tuple[str, object, str]], total: object, css: str = "") -> str:
    """A horizontal bar chart as rows of label, SVG bar, count and share of ``total``.

    Args:
        items: (label, count, colour) per bar, in display order; labels are escaped here.
        total: what 100 % means (the widest bar is ``count / total``); non-positive or missing
            total scales the bars to the largest count and leaves the share column out.
        css: extra class names for the chart's container.
    """
    counts = [c for _, c, _ in items if is_number(c)]
    has_total = is_number(total) and total > 0
    scale = total if has_total else max(counts, default=0)
    rows = []
    for label, count, color in items:
        frac = count / scale if is_number(count) and scale else 0.0
        share = fmt_pct(count / total) if has_total and is_number(count) else ""
        rows.append(
            f'<div class="brow"><span class="blabel" title="{esc(label)}">{esc(label)}</span>'
            f"{_bar_svg(frac, color)}"
            f'<span class="bnum">{esc(fmt_num(count))}</span><span class="bpct">{esc(share)}</span></div>'
        )
    return f'<div class="bars {esc(css)}">{"".join(rows)}</div>'


def histogram(edges: Sequence[object], counts: Sequence[object], color: str = COLORS["accent"]) -> str:
    """A histogram as SVG bars (each with a ``<title>`` of its range and count), edge labels below.

    Args:
        edges: bin edges, one more than ``counts`` (numbers or timestamp text).
        counts: rows per bin.
        color: bar fill.
    """
    bins = min(len(counts), max(len(edges) - 1, 0))
    values = [c if is_number(c) else 0 for c in counts[:bins]]
    peak = max(values, default=0)
    if bins == 0 or peak <= 0:
        return '<p class="muted">histogram: no data</p>'
    w, h, gap = 300.0, 80.0, 1.0
    step = w / bins
    marks = []
    for i, c in enumerate(values):
        bh = max(c / peak * h, 1.0 if c > 0 else 0.0)
        tip = f"{fmt_value(edges[i], 40)} \u2013 {fmt_value(edges[i + 1], 40)}: {esc(fmt_num(counts[i]))} rows"
        marks.append(
            f'<rect x="{i * step + gap / 2:.2f}" y="{h - bh:.2f}" width="{max(step - gap, 0.5):.2f}" '
            f'height="{bh:.2f}" fill="{color}"><title>{tip}</title></rect>'
        )
    svg = (
        f'<svg class="hist" viewBox="0 0 {w:.0f} {h + 1:.0f}" role="img" aria-label="histogram">'
        f'{"".join(marks)}<line x1="0" y1="{h + 0.5}" x2="{w:.0f}" y2="{h + 0.5}" class="axis"/></svg>'
    )

    def label(edge: object) -> str:
        return esc(fmt_time(edge, minutes=True)) if isinstance(edge, str) else fmt_value(edge, 24)

    mid = label(edges[bins // 2]) if bins > 1 else ""
    labels = (
        f'<div class="hlabels"><span>{label(edges[0])}</span><span>{mid}</span><span>{label(edges[bins])}</span></div>'
    )

    return svg + labels


def sparkline(values: Sequence[object], marks: dict[int, str], fmt=fmt_num, labels: Sequence[str] = ()) -> str:
    """A small line chart of one metric across runs; points in ``marks`` are drawn red.

    Args:
        values: one value per run, oldest first; non-numbers leave a gap.
        marks: index -> text for the red point's ``<title>`` (an anomaly and its score).
        fmt: formats a value for the points' titles.
        labels: a name per run for the points' titles (run ids); the run's position otherwise.
    """
    w, h, pad = 280.0, 64.0, 6.0
    points = [(i, float(v)) for i, v in enumerate(values) if is_number(v)]
    if not points:
        return '<p class="muted">no numeric values in the history</p>'
    lo = min(v for _, v in points)
    hi = max(v for _, v in points)
    n = len(values)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (i / (n - 1) * (w - 2 * pad) if n > 1 else (w - 2 * pad) / 2)
        y = h / 2 if hi == lo else pad + (hi - v) / (hi - lo) * (h - 2 * pad)
        return x, y

    # One polyline per run of consecutive numeric points, so a missing value shows as a gap.
    segments: list[list[tuple[float, float]]] = []
    last = None
    for i, v in points:
        if last is None or i != last + 1:
            segments.append([])
        segments[-1].append(xy(i, v))
        last = i
    lines = "".join(
        '<polyline class="spark" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in seg) + '"/>'
        for seg in segments
        if len(seg) > 1
    )
    dots = []
    for i, v in points:
        x, y = xy(i, v)
        if i in marks:
            dots.append(
                f'<circle class="anom" cx="{x:.1f}" cy="{y:.1f}" r="4.5"><title>{esc(marks[i])}</title></circle>'
            )
        elif i == points[-1][0] or n <= 40:
            r = 3 if i == points[-1][0] else 1.8
            dots.append(
                f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="{r}">'
                f"<title>{esc(labels[i] if i < len(labels) else f'run {i + 1}')}: {esc(fmt(v))}</title></circle>"
            )
    return (
        f'<svg class="sparkline" viewBox="0 0 {w:.0f} {h:.0f}" role="img" aria-label="trend across runs">'
        f"{lines}{''.join(dots)}</svg>"
    )
