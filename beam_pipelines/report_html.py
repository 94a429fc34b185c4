"""The run report as one self-contained HTML page (``_run/report.html``).

``render_report(doc)`` turns the run document (summary, report, profile, history, anomalies,
audit outcome) into a page with inline CSS, inline SVG charts and a few lines of script for
sorting tables. Nothing is loaded from elsewhere, so the file opens offline from anywhere. Any
part of the document may be missing: its section then says "not computed". The output depends
on the document only (no clock, no randomness), so the same document gives the same bytes.
"""

from __future__ import annotations

from beam_pipelines.report_charts import (
    COLORS,
    bar_rows,
    esc,
    fmt_num,
    fmt_pct,
    fmt_time,
    fmt_value,
    histogram,
    is_number,
    short,
    sparkline,
)

__all__ = ["render_report"]

_NOT_COMPUTED = '<p class="muted nc">not computed</p>'
_STAGES = (
    ("read", "read"),
    ("curated", "curated"),
    ("dead_lettered", "dead-lettered"),
    ("duplicates", "duplicates"),
    ("late", "late"),
)
# History metric names (observability.history.run_metrics) of the three trends always shown.
_KEY_METRICS = (
    ("rows read", ("count.read",)),
    ("dead-letter rate", ("dead_letter_rate",)),
    ("curated", ("count.curated",)),
)
_FAILING_SEVERITIES = ("error",)
_MAX_SAMPLES = 5
_MAX_REASONS = 15
_MAX_TOP_VALUES = 10
_ARROWS = {"high": "\u2191", "up": "\u2191", "above": "\u2191", "low": "\u2193", "down": "\u2193", "below": "\u2193"}


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _section(anchor: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<span class="secnote">{note}</span>' if note else ""
    return (
        f'<details class="sec" id="{anchor}" open><summary><h2>{title}</h2>{note_html}</summary>'
        f'<div class="secbody">{body}</div></details>'
    )


def _elapsed(seconds: object) -> str:
    if not is_number(seconds):
        return ""
    if seconds < 60:
        return f"{seconds:,.2f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {secs} s" if hours else f"{minutes} min {secs} s"


def _text_or_nc(text: str) -> str:
    return text if text else '<span class="muted">not computed</span>'


def _conservation(summary: dict, report: dict) -> object:
    """The run's conservation flag: the report's, else the summary's; None when neither has one."""
    flag = report.get("conservation_ok")
    return flag if flag is not None else summary.get("conservation_ok")


def _verdict(summary: dict, report: dict, audit_error: object) -> tuple[str, str, str]:
    """(badge text, css class, one-line explanation) for the run."""
    conservation = _conservation(summary, report)
    if conservation is False:
        return "CONSERVATION FAILED", "bad", "records were lost or double-counted between stages"
    if audit_error:
        return "FAILED AUDIT", "bad", "the audit stopped the outputs from being published"
    if conservation is True:
        return "PASSED", "ok", "every record read is accounted for"
    return "NOT VERIFIED", "unknown", "conservation was not computed"


def _header(doc: dict, summary: dict, report: dict) -> str:
    audit_error = doc.get("audit_error")
    badge, cls, why = _verdict(summary, report, audit_error)
    mark = {"ok": "\u2713", "bad": "\u2717"}.get(cls, "?")
    fmt_in = f" ({esc(summary['input_format'])})" if summary.get("input_format") else ""
    rps = summary.get("rows_per_s")
    meta = (
        ("Runner", esc(summary.get("runner") or "")),
        ("Input", esc(summary.get("input") or "") + fmt_in if summary.get("input") else ""),
        ("Output", esc(summary.get("output") or "")),
        ("Started", esc(fmt_time(str(summary["started_at"]))) if summary.get("started_at") else ""),
        ("Elapsed", esc(_elapsed(summary.get("elapsed_s")))),
        ("Throughput", f"{esc(fmt_num(rps))} rows/s" if is_number(rps) else ""),
    )
    meta_html = "".join(f"<div><dt>{k}</dt><dd>{_text_or_nc(v)}</dd></div>" for k, v in meta)
    pills = []
    published = doc.get("published")
    if published is True:
        pills.append('<span class="pill ok">published</span>')
    elif published is False:
        pills.append('<span class="pill bad">not published</span>')
    files_match = summary.get("files_match")
    if files_match is True:
        pills.append('<span class="pill ok">output files match the counts</span>')
    elif files_match is False:
        pills.append('<span class="pill bad">output files do NOT match the counts</span>')
    alert = ""
    if audit_error:
        alert = f'<div class="alert"><strong>Audit failed:</strong> {esc(audit_error)}</div>'
    return (
        '<header class="top"><div class="wrap">'
        '<div class="titlerow"><div>'
        f'<div class="eyebrow">Run report</div><h1>{esc(summary.get("pipeline") or "pipeline")}</h1>'
        f'<div class="runid">run <code>{_text_or_nc(esc(summary.get("run_id") or ""))}</code></div></div>'
        f'<div class="verdict"><div class="badge {cls}">{mark} {badge}</div><div class="why">{why}</div></div>'
        f'</div><dl class="meta">{meta_html}</dl>'
        f'<div class="pills">{"".join(pills)}</div>{alert}</div></header>'
    )


def _kpis(counts: dict, expectations: list, anomalies: object) -> str:
    read, dead = counts.get("read"), counts.get("dead_lettered")
    rate = dead / read if is_number(read) and read > 0 and is_number(dead) else None
    checked = [e for e in expectations if isinstance(e, dict) and isinstance(e.get("passed"), bool)]
    passed = sum(1 for e in checked if e["passed"])
    tiles = [
        ("Rows read", esc(fmt_num(read)) if is_number(read) else "", ""),
        ("Curated", esc(fmt_num(counts.get("curated"))) if is_number(counts.get("curated")) else "", ""),
        ("Dead-letter rate", esc(fmt_pct(rate)) if rate is not None else "", "warn" if rate else ""),
        ("Expectations passed", f"{passed:,} / {len(checked):,}" if checked else "", ""),
        ("Anomalies", f"{len(anomalies):,}" if isinstance(anomalies, list) else "", "bad" if anomalies else ""),
    ]
    if passed < len(checked):
        hard = any(not e["passed"] and str(e.get("severity", "")).lower() in _FAILING_SEVERITIES for e in checked)
        tiles[3] = (tiles[3][0], tiles[3][1], "bad" if hard else "warn")
    html = "".join(
        f'<div class="kpi {cls}"><div class="kl">{label}</div><div class="kv">{_text_or_nc(value)}</div></div>'
        for label, value, cls in tiles
    )
    return f'<div class="kpis">{html}</div>'


def _funnel(counts: dict, conservation: object) -> str:
    read = counts.get("read")
    if not counts or not is_number(read):
        return _section("funnel", "Where every record went", _NOT_COMPUTED)
    items = [(label, counts.get(key), COLORS[key]) for key, label in _STAGES if key in counts]
    chart = bar_rows(items, read, "funnel")
    parts = {key: counts.get(key, 0) for key, _ in _STAGES}
    if all(is_number(v) for v in parts.values()):
        total = parts["curated"] + parts["dead_lettered"] + parts["duplicates"] + parts["late"]
        holds = total == read and conservation is not False
        eq_sign = "=" if total == read else "\u2260"
        mark = '<span class="mark ok">\u2713</span>' if holds else '<span class="mark bad">\u2717</span>'
        diff = "" if total == read else f" (the parts add up to {fmt_num(total)}, off by {fmt_num(total - read)})"
        verdict = "conservation holds" if holds else "conservation FAILED"
        equation = (
            f'<p class="eq {"ok" if holds else "bad"}">{mark} <span>read {fmt_num(read)} {eq_sign} curated '
            f"{fmt_num(parts['curated'])} + dead-lettered {fmt_num(parts['dead_lettered'])} + duplicates "
            f"{fmt_num(parts['duplicates'])} + late {fmt_num(parts['late'])}</span>"
            f' <span class="eqv">{verdict}{diff}</span></p>'
        )
    else:
        equation = '<p class="eq muted">conservation: not computed</p>'
    aggs = counts.get("aggregates")
    agg_html = (
        f'<p class="muted">Aggregates written: <strong>{esc(fmt_num(aggs))}</strong> rows '
        "(one per window and group; not part of the balance).</p>"
        if is_number(aggs)
        else ""
    )
    return _section("funnel", "Where every record went", chart + equation + agg_html, "share of rows read")


def _dead_letters(report: dict) -> str:
    reasons = report.get("dead_letter_reasons")
    quality = _dict(report.get("quality"))
    if not isinstance(reasons, dict):
        body = _NOT_COMPUTED
    elif not reasons:
        body = '<p class="okmsg">No dead letters in this run.</p>'
    else:
        ordered = sorted(reasons.items(), key=lambda kv: (-kv[1] if is_number(kv[1]) else 0, str(kv[0])))
        total = sum(v for _, v in ordered if is_number(v))
        items = [(reason, n, COLORS["dead_lettered"]) for reason, n in ordered[:_MAX_REASONS]]
        rest = ordered[_MAX_REASONS:]
        if rest:
            label = f"{len(rest):,} other reasons"
            items.append((label, sum(v for _, v in rest if is_number(v)), COLORS["neutral"]))
        body = f'<p class="muted">{fmt_num(total)} dead letters, by reason (share of dead letters)</p>'
        body += bar_rows(items, total, "reasons")
    if quality:
        cells = "".join(
            f"<li><code>{esc(k)}</code> <strong>{esc(fmt_num(v))}</strong></li>" for k, v in sorted(quality.items())
        )
        body += f'<h3>Kept with a value nulled</h3><ul class="quality">{cells}</ul>'
    return _section("dead-letters", "Dead letters", body)


def _drift(report: dict) -> str:
    drift = _dict(report.get("drift"))
    if not drift:
        return _section("drift", "Schema drift", '<p class="okmsg">The records fit their contract.</p>')
    rows = []
    for name, info in _dict(drift.get("unknown_fields")).items():
        info = _dict(info)
        rows.append(
            f'<tr><td><code>{esc(name)}</code></td><td>not in the contract</td><td data-v="{esc(info.get("records"))}">'
            f"{esc(fmt_num(info.get('records')))}</td><td>{_samples(info.get('samples'))}</td></tr>"
        )
    for name, kinds in _dict(drift.get("type_changes")).items():
        for kind, n in _dict(kinds).items():
            rows.append(
                f"<tr><td><code>{esc(name)}</code></td><td>sent as {esc(kind)}</td>"
                f'<td data-v="{esc(n)}">{esc(fmt_num(n))}</td><td></td></tr>'
            )
    for name, n in _dict(drift.get("missing_fields")).items():
        rows.append(
            f"<tr><td><code>{esc(name)}</code></td><td>absent or null</td>"
            f'<td data-v="{esc(n)}">{esc(fmt_num(n))}</td><td></td></tr>'
        )
    table = _table((("Field", "text"), ("Drift", "text"), ("Records", "num"), ("Samples", "text")), rows)
    return _section("drift", "Schema drift", table, "parsed records against the contract")


def _lakehouse(tables: object) -> str:
    """The Delta tables the run committed to (none: no section)."""
    if not isinstance(tables, list) or not tables:
        return ""
    rows = []
    for t in tables:
        t = _dict(t)
        commit = _dict(t.get("commit"))
        if not commit:
            did = "no change"
        elif commit.get("operation") == "MERGE":
            did = f"MERGE of {fmt_num(commit.get('source'))}: {fmt_num(commit.get('inserted'))} inserted, " \
                  f"{fmt_num(commit.get('updated'))} updated"  # fmt: skip
        else:
            did = f"{esc(commit.get('operation', '').lower())} of {fmt_num(commit.get('added'))} rows"
            if commit.get("windows"):
                did += f" ({fmt_num(commit.get('windows'))} windows replaced)"
        rows.append(
            f"<tr><td><code>{esc(t.get('table'))}</code></td><td>{esc(t.get('layer'))}</td>"
            f'<td data-v="{esc(t.get("version"))}">{esc(t.get("version"))}</td>'
            f'<td data-v="{esc(t.get("rows"))}">{esc(fmt_num(t.get("rows")))}</td><td>{esc(did)}</td></tr>'
        )
    table = _table((("Table", "text"), ("Layer", "text"), ("Version", "num"), ("Rows", "num"), ("This run", "text")),
                   rows)  # fmt: skip
    return _section("lakehouse", "Lakehouse tables", table, "the Delta tables this run committed to")


def _samples(samples: object) -> str:
    values = samples if isinstance(samples, list) else ([] if samples is None else [samples])
    shown = "".join(f"<code>{fmt_value(v, 60)}</code>" for v in values[:_MAX_SAMPLES])
    more = f'<span class="muted"> +{len(values) - _MAX_SAMPLES:,} more</span>' if len(values) > _MAX_SAMPLES else ""
    return f'<div class="samples">{shown}{more}</div>' if values else '<span class="muted">\u2014</span>'


def _expectation_rank(e: dict) -> tuple[int, int]:
    if e.get("passed") is False:
        return (0, 0) if str(e.get("severity", "")).lower() in _FAILING_SEVERITIES else (0, 1)
    return (1, 0) if e.get("passed") is True else (2, 0)


def _expectations(expectations: object) -> str:
    if not isinstance(expectations, list):
        return _section("expectations", "Expectations", _NOT_COMPUTED)
    rows = [e for e in expectations if isinstance(e, dict)]
    if not rows:
        return _section("expectations", "Expectations", '<p class="muted">No expectations were declared.</p>')
    body = []
    for e in sorted(rows, key=_expectation_rank):
        passed = e.get("passed")
        verdict, cls = {True: ("PASS", "ok"), False: ("FAIL", "bad")}.get(passed, ("NOT RUN", "unknown"))
        if passed is False and str(e.get("severity", "")).lower() not in _FAILING_SEVERITIES:
            cls = "warn"
        failing, checked = e.get("failing"), e.get("checked")
        ratio = f"{fmt_num(failing)} / {fmt_num(checked)}"
        rate = fmt_pct(failing / checked) if is_number(failing) and is_number(checked) and checked > 0 else ""
        sort_v = failing if is_number(failing) else -1
        body.append(
            f'<tr class="{cls}"><td data-v="{_expectation_rank(e)[0]}"><span class="pill {cls}">{verdict}</span></td>'
            f"<td><strong>{esc(e.get('name'))}</strong></td><td>{esc(e.get('kind'))}</td>"
            f"<td><code>{esc(e.get('column'))}</code></td><td>{esc(e.get('severity'))}</td>"
            f"<td>{esc(e.get('action'))}</td>"
            f'<td class="num" data-v="{sort_v}">{esc(ratio)}<div class="muted small">{esc(rate)}</div></td>'
            f'<td>{_samples(e.get("samples"))}</td><td class="detail">{esc(e.get("detail"))}</td></tr>'
        )
    columns = (
        ("Result", "num"),
        ("Name", "text"),
        ("Kind", "text"),
        ("Column", "text"),
        ("Severity", "text"),
        ("Action", "text"),
        ("Failing / checked", "num"),
        ("Samples", "text"),
        ("Detail", "text"),
    )
    table = _table(columns, body)
    failed = sum(1 for e in rows if e.get("passed") is False)
    note = f"{failed:,} of {len(rows):,} failed" if failed else f"all {len(rows):,} passed"
    return _section("expectations", "Expectations", table, esc(note))


def _null_rate(col: dict, rows: object) -> object:
    rate = col.get("null_rate")
    if is_number(rate):
        return rate
    nulls, count = col.get("nulls"), col.get("count")
    denom = count if is_number(count) and count > 0 else rows
    return nulls / denom if is_number(nulls) and is_number(denom) and denom > 0 else None


def _profile_card(name: str, col: dict, rows: object) -> str:
    nulls = col.get("nulls")
    rate = _null_rate(col, rows)
    null_txt = f"{fmt_num(nulls)} ({fmt_pct(rate)})" if is_number(nulls) else fmt_pct(rate)
    distinct = col.get("distinct_approx")
    counts = (
        ("count", fmt_value(col.get("count"))),
        ("nulls", esc(null_txt)),
        ("distinct", ("\u2248 " + fmt_value(distinct)) if distinct is not None else fmt_value(None)),
    )
    stats_html = f'<dl class="stats s3">{_cells(counts)}</dl>'
    stats_html += f'<dl class="stats range">{_cells((("min", col.get("min")), ("max", col.get("max"))), True)}</dl>'
    if col.get("mean") is not None or col.get("stddev") is not None:
        moments = (("mean", col.get("mean")), ("stddev", col.get("stddev")))
        stats_html += f'<dl class="stats s2">{_cells(moments, True)}</dl>'
    quantiles = col.get("quantiles")
    q_html = ""
    if isinstance(quantiles, dict) and quantiles:
        cells = "".join(f"<div><dt>{esc(q)}</dt><dd>{fmt_value(v, 32)}</dd></div>" for q, v in quantiles.items())
        q_html = f'<dl class="quant">{cells}</dl>'
    hist, top = _dict(col.get("histogram")), col.get("top_values")
    if hist.get("counts") and hist.get("edges"):
        chart = histogram(_list(hist.get("edges")), _list(hist.get("counts")))
    elif isinstance(top, list) and top:
        values = [_dict(t) for t in top[:_MAX_TOP_VALUES]]
        items = [
            (short(t.get("value"), 40) if t.get("value") is not None else "(null)", t.get("count"), COLORS["accent"])
            for t in values
        ]
        denom = col.get("count") if is_number(col.get("count")) else rows
        chart = '<div class="toptitle muted small">top values</div>' + bar_rows(items, denom, "top")
    else:
        chart = '<p class="muted small">distribution not computed</p>'
    warn = " warn" if is_number(rate) and rate > 0.5 else ""
    return (
        f'<article class="card col{warn}"><header><h3 title="{esc(name)}">{esc(name)}</h3>'
        f'<span class="type">{esc(col.get("type") or "?")}</span></header>'
        f'{stats_html}{q_html}<div class="chart">{chart}</div></article>'
    )


def _cells(pairs: tuple, raw: bool = False) -> str:
    """``<dt>/<dd>`` pairs; with ``raw`` the values are data, shortened, with the full text on hover."""
    if not raw:
        return "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in pairs)
    return "".join(f'<div><dt>{k}</dt><dd title="{fmt_value(v, 500)}">{fmt_value(v, 60)}</dd></div>' for k, v in pairs)


def _profiles(profile: object) -> str:
    prof = _dict(profile)
    columns = prof.get("columns")
    if not isinstance(columns, dict) or not columns:
        return _section("profiles", "Column profiles", _NOT_COMPUTED)
    rows = prof.get("rows")
    cards = "".join(_profile_card(str(name), _dict(col), rows) for name, col in columns.items())
    note = f"{len(columns):,} column{'' if len(columns) == 1 else 's'}"
    if is_number(rows):
        note = f"{fmt_num(rows)} rows profiled, {note}"
    return _section("profiles", "Column profiles", f'<div class="grid cols">{cards}</div>', esc(note))


def _metric_series(history: list, names: tuple[str, ...]) -> tuple[str | None, list]:
    for name in names:
        if any(name in _dict(run.get("metrics")) for run in history):
            return name, [_dict(run.get("metrics")).get(name) for run in history]
    return None, []


def _dead_letter_rate_series(history: list) -> list:
    read_name, reads = _metric_series(history, _KEY_METRICS[0][1])
    dead_name, deads = _metric_series(history, ("dead_lettered", "rows_dead_lettered", "counts.dead_lettered"))
    if read_name is None or dead_name is None:
        return []
    return [d / r if is_number(d) and is_number(r) and r > 0 else None for r, d in zip(reads, deads)]


def _is_rate(name: str) -> bool:
    return "rate" in name.lower() or "ratio" in name.lower()


def _trend_card(title: str, values: list, anomaly: dict | None, history: list) -> str:
    def fmt(v: object) -> str:
        return fmt_pct(v) if _is_rate(title) and is_number(v) and 0 <= v <= 1 else fmt_num(v)

    marks = {}
    note = ""
    if anomaly is not None:
        score = anomaly.get("score")
        direction = str(anomaly.get("direction") or "")
        arrow = _ARROWS.get(direction.lower(), "\u26a0")
        marks[len(values) - 1] = (
            f"anomaly in this run: {fmt(anomaly.get('value'))}, score {fmt_num(score)}, "
            f"median {fmt(anomaly.get('median'))}"
        )
        note = (
            f'<div class="anote">{arrow} anomaly: score '
            f"<strong>{esc(fmt_num(score))}</strong> ({esc(direction)}; median {esc(fmt(anomaly.get('median')))})</div>"
        )
    numeric = [v for v in values if is_number(v)]
    current = values[-1] if values else None
    run_ids = [str(r.get("run_id") or f"run {i + 1}") for i, r in enumerate(history)]
    span = (
        f'<div class="muted small">{len(values):,} runs \u00b7 min {esc(fmt(min(numeric)))} \u00b7 max '
        f"{esc(fmt(max(numeric)))}</div>"
        if numeric
        else ""
    )
    return (
        f'<article class="card trend{" anomalous" if anomaly is not None else ""}">'
        f'<header><h3>{esc(title)}</h3><span class="kv2">{esc(fmt(current))}</span></header>'
        f"{sparkline(values, marks, fmt, run_ids)}{span}{note}</article>"
    )


def _history(history: object, anomalies: object) -> str:
    runs = [r for r in _list(history) if isinstance(r, dict)]
    anomaly_list = [a for a in _list(anomalies) if isinstance(a, dict)]
    by_metric = {str(a.get("metric")): a for a in anomaly_list}
    if not runs:
        trends = _NOT_COMPUTED
    else:
        cards, shown = [], set()
        for title, names in _KEY_METRICS:
            name, values = _metric_series(runs, names)
            if name is None and title == "dead-letter rate":
                values = _dead_letter_rate_series(runs)
                name = "dead_letter_rate" if values else None
            if name is None:
                continue
            shown.add(name)
            cards.append(_trend_card(title, values, by_metric.get(name), runs))
        for metric, anomaly in by_metric.items():
            if metric in shown:
                continue
            _, values = _metric_series(runs, (metric,))
            if values:
                cards.append(_trend_card(metric, values, anomaly, runs))
        trends = f'<div class="grid trends">{"".join(cards)}</div>' if cards else _NOT_COMPUTED
    body = f"<h3>Trends over the last {len(runs):,} runs</h3>{trends}" if runs else trends
    body += "<h3>Anomalies</h3>" + _anomaly_table(anomalies, anomaly_list, len(runs))
    return _section("history", "Metric history", body, "red points are anomalies in this run")


def _anomaly_table(raw: object, anomalies: list, runs: int) -> str:
    if not isinstance(raw, list):
        return _NOT_COMPUTED
    if not anomalies:
        return f'<p class="okmsg">No anomalies against {runs:,} runs of history.</p>'
    rows = []
    for a in sorted(anomalies, key=lambda a: -abs(a["score"]) if is_number(a.get("score")) else 0):
        rows.append(
            f"<tr><td><code>{esc(a.get('metric'))}</code></td>"
            f'<td class="num" data-v="{esc(a.get("value"))}">{fmt_value(a.get("value"))}</td>'
            f'<td class="num">{fmt_value(a.get("median"))}</td><td class="num">{fmt_value(a.get("mad"))}</td>'
            f'<td class="num bad" data-v="{esc(a.get("score"))}"><strong>{fmt_value(a.get("score"))}</strong></td>'
            f'<td>{esc(a.get("direction"))}</td><td class="num">{fmt_value(a.get("runs"))}</td></tr>'
        )
    columns = (
        ("Metric", "text"),
        ("Value", "num"),
        ("Median", "num"),
        ("MAD", "num"),
        ("Score", "num"),
        ("Direction", "text"),
        ("Runs", "num"),
    )
    return _table(columns, rows)


def _table(columns: tuple[tuple[str, str], ...], rows: list[str]) -> str:
    """A table sortable by clicking a header; ``columns`` are (title, "num" | "text")."""
    head = "".join(f'<th data-type="{kind}">{title}</th>' for title, kind in columns)
    return (
        f'<div class="tablewrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def render_report(doc: dict) -> str:
    """The run report as one self-contained HTML page.

    Args:
        doc: the run document: ``summary`` (run id, runner, input, timings, conservation flag),
            ``report`` (counts, dead-letter reasons, quality counts, expectations), ``profile``
            (per-column statistics), ``history`` (per-run metrics, oldest first, this run last),
            ``anomalies``, ``published`` and ``audit_error``. Any part may be missing or empty.

    Returns:
        The page as text: CSS, SVG charts and script inline, every data value escaped.
    """
    doc = _dict(doc)
    summary, report = _dict(doc.get("summary")), _dict(doc.get("report"))
    counts = _dict(report.get("counts"))
    conservation = _conservation(summary, report)
    expectations = report.get("expectations")
    title = f"{summary.get('pipeline') or 'pipeline'} run {summary.get('run_id') or ''}".strip()
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("funnel", "Records"),
            ("dead-letters", "Dead letters"),
            ("drift", "Drift"),
            ("expectations", "Expectations"),
            ("profiles", "Profiles"),
            ("history", "History"),
        )
    )
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        _header(doc, summary, report),
        f'<nav class="toc"><div class="wrap">{nav}</div></nav><main class="wrap">',
        _kpis(counts, _list(expectations), doc.get("anomalies")),
        _funnel(counts, conservation),
        _dead_letters(report),
        _drift(report),
        _expectations(expectations),
        _profiles(doc.get("profile")),
        _lakehouse(summary.get("lakehouse")),
        _history(doc.get("history"), doc.get("anomalies")),
        f'</main><footer class="wrap muted small">{esc(title)}</footer>',
        f"<script>{_SCRIPT}</script></body></html>\n",
    ]
    return "".join(parts)


# Sorts a table by the clicked column: numbers by data-v (or the text without separators).
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var num = th.dataset.type === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    function key(cell) {
      var v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
      if (!num) return v.toLowerCase();
      var n = parseFloat(String(v).replace(/,/g, ""));
      return isNaN(n) ? -Infinity : n;
    }
    Array.prototype.slice.call(body.rows)
      .sort(function (a, b) {
        var x = key(a.cells[i]), y = key(b.cells[i]);
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      })
      .forEach(function (r) { body.appendChild(r); });
  });
});
"""

_CSS = """
:root{--bg:#f4f6f9;--card:#fff;--ink:#0f172a;--ink2:#475569;--muted:#64748b;--line:#e2e8f0;--ok:#15803d;
--okbg:#dcfce7;--bad:#b91c1c;--badbg:#fee2e2;--warn:#b45309;--warnbg:#fef3c7;--unk:#475569;--unkbg:#e2e8f0;
--accent:#0ea5e9;--track:#eef2f7}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue","DejaVu Sans",Arial,sans-serif;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:.92em}
.wrap{max-width:1240px;margin:0 auto;padding:0 24px}
.muted{color:var(--muted)}.small{font-size:12px}
header.top{background:linear-gradient(135deg,#0f172a,#1e293b);color:#e2e8f0;padding:28px 0 22px}
.titlerow{display:flex;justify-content:space-between;align-items:flex-start;gap:24px;flex-wrap:wrap}
.eyebrow{text-transform:uppercase;letter-spacing:.12em;font-size:11px;color:#94a3b8}
h1{margin:2px 0 4px;font-size:30px;color:#fff;letter-spacing:-.01em}
.runid{color:#94a3b8}.runid code{color:#e2e8f0;background:rgba(255,255,255,.08);padding:2px 6px;border-radius:4px}
.verdict{text-align:right}
.badge{display:inline-block;font-weight:700;font-size:18px;letter-spacing:.04em;padding:10px 18px;border-radius:10px}
.badge.ok{background:#16a34a;color:#fff}.badge.bad{background:#dc2626;color:#fff}
.badge.unknown{background:#475569;color:#fff}
.why{font-size:12px;color:#94a3b8;margin-top:6px}
dl{margin:0}dt{font-size:11px;text-transform:uppercase;letter-spacing:.06em}dd{margin:0}
.meta{display:grid;grid-template-columns:1fr 2fr 2fr 1.5fr .8fr 1fr;gap:12px 24px;margin-top:20px}
.meta dt{color:#94a3b8}.meta dd{color:#f8fafc;overflow-wrap:anywhere}.meta .muted{color:#94a3b8}
.pills{margin-top:14px;display:flex;gap:8px;flex-wrap:wrap}
.pill{display:inline-block;font-size:12px;font-weight:600;padding:2px 10px;border-radius:999px;white-space:nowrap}
.pill.ok{background:var(--okbg);color:var(--ok)}.pill.bad{background:var(--badbg);color:var(--bad)}
.pill.warn{background:var(--warnbg);color:var(--warn)}.pill.unknown{background:var(--unkbg);color:var(--unk)}
.alert{margin-top:14px;background:#7f1d1d;color:#fee2e2;border-left:4px solid #f87171;padding:10px 14px;
border-radius:6px;word-break:break-word}
nav.toc{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.92);backdrop-filter:blur(6px);
border-bottom:1px solid var(--line)}
nav.toc .wrap{display:flex;gap:22px;padding-top:10px;padding-bottom:10px;overflow-x:auto}
nav.toc a{color:var(--ink2);text-decoration:none;font-weight:600;font-size:13px;white-space:nowrap}
nav.toc a:hover{color:var(--accent)}
main.wrap{padding-top:20px;padding-bottom:24px}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:14px;margin-bottom:18px}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 16px;
box-shadow:0 1px 2px rgba(15,23,42,.04)}
.kl{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.06em}
.kv{font-size:26px;font-weight:700;margin-top:2px}.kpi.bad .kv{color:var(--bad)}.kpi.warn .kv{color:var(--warn)}
.kv .muted{font-size:14px;font-weight:400}
.sec{background:var(--card);border:1px solid var(--line);border-radius:12px;margin-bottom:18px;
box-shadow:0 1px 2px rgba(15,23,42,.04);scroll-margin-top:52px}
.sec>summary{list-style:none;cursor:pointer;display:flex;align-items:baseline;gap:12px;padding:16px 20px;
border-bottom:1px solid var(--line)}
.sec>summary::-webkit-details-marker{display:none}
.sec>summary::before{content:"\\25BE";color:var(--muted);font-size:12px}
.sec:not([open])>summary::before{content:"\\25B8"}.sec:not([open])>summary{border-bottom:0}
h2{margin:0;font-size:18px}.secnote{color:var(--muted);font-size:13px}
.secbody{padding:16px 20px 20px}
h3{font-size:14px;margin:18px 0 10px;color:var(--ink2)}.secbody>h3:first-child{margin-top:0}
.nc{font-style:italic}
.bars{display:flex;flex-direction:column;gap:8px}
.brow{display:grid;grid-template-columns:minmax(90px,190px) 1fr 84px 64px;align-items:center;gap:12px}
.blabel{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
svg.bar{width:100%;height:18px;display:block;border-radius:4px;overflow:hidden}
svg.bar .track{fill:var(--track)}
.bnum{text-align:right;font-weight:600}.bpct{text-align:right;color:var(--muted);font-size:12px}
.top .brow{grid-template-columns:minmax(60px,110px) 1fr 56px 52px;gap:8px}.top .blabel{font-weight:400}
.top svg.bar{height:10px}
.eq{margin:18px 0 6px;padding:12px 16px;border-radius:8px;font-size:15px;font-weight:600}
.eq.ok{background:var(--okbg);color:#14532d}.eq.bad{background:var(--badbg);color:#7f1d1d}
.eq .mark{font-size:18px;margin-right:4px}.eqv{font-weight:400;font-size:13px;margin-left:8px}
.okmsg{color:var(--ok);font-weight:600}
ul.quality{list-style:none;padding:0;margin:0;display:flex;gap:10px;flex-wrap:wrap}
ul.quality li{background:var(--warnbg);color:var(--warn);padding:4px 12px;border-radius:999px}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);
border-bottom:2px solid var(--line);padding:8px 10px;cursor:pointer;user-select:none;white-space:nowrap}
th:hover{color:var(--ink)}th[aria-sort=ascending]::after{content:" \\25B4"}
th[aria-sort=descending]::after{content:" \\25BE"}
td{padding:9px 10px;border-bottom:1px solid var(--line);vertical-align:top}
td.num{text-align:right;white-space:nowrap}td.bad{color:var(--bad)}
tr.bad td:first-child{box-shadow:inset 3px 0 0 #dc2626}tr.warn td:first-child{box-shadow:inset 3px 0 0 #d97706}
tr.ok td:first-child{box-shadow:inset 3px 0 0 #16a34a}
td.detail{color:var(--ink2);max-width:320px;word-break:break-word}
.samples{display:flex;flex-wrap:wrap;gap:4px;max-width:300px}
.samples code{background:#f1f5f9;border:1px solid var(--line);border-radius:4px;padding:0 5px;word-break:break-all}
.grid{display:grid;gap:14px}
.grid.cols{grid-template-columns:repeat(auto-fill,minmax(290px,1fr))}
.grid.trends{grid-template-columns:repeat(auto-fill,minmax(260px,1fr))}
.card{border:1px solid var(--line);border-radius:10px;padding:12px 14px;background:#fcfdfe;min-width:0}
.card>header{display:flex;justify-content:space-between;align-items:baseline;gap:8px;margin-bottom:8px}
.card h3{margin:0;font-size:15px;color:var(--ink);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.type{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:11px;background:#e0f2fe;color:#075985;
padding:1px 7px;border-radius:4px;white-space:nowrap}
.card.warn{border-color:#fcd34d}
.stats{display:grid;gap:6px 10px;margin-top:6px}.stats.s3{grid-template-columns:1fr 1.4fr 1fr}
.stats.s2{grid-template-columns:repeat(2,minmax(0,1fr))}
.stats dt,.quant dt{color:var(--muted);font-size:10px}.stats dd{font-weight:600;font-size:13px}
.stats.s2 dd{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.stats.range{grid-template-columns:1fr;gap:2px}.stats.range>div{display:flex;align-items:baseline;gap:8px;min-width:0}
.stats.range dt{width:30px;flex:none}.stats.range dd{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.quant{display:grid;grid-template-columns:repeat(5,minmax(0,1fr));gap:4px;margin-top:10px;padding:6px 8px;
background:#f1f5f9;border-radius:6px}.quant dd{font-size:12px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.chart{margin-top:10px}
svg.hist{width:100%;height:auto;display:block}svg.hist .axis{stroke:#cbd5e1;stroke-width:1}
svg.hist rect:hover{opacity:.75}
.hlabels{display:flex;justify-content:space-between;font-size:11px;color:var(--muted);gap:6px}
.hlabels span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;max-width:33%}
.toptitle{margin-bottom:4px}
.trend .kv2{font-size:18px;font-weight:700}
.trend.anomalous{border-color:#fca5a5;background:#fffafa}
svg.sparkline{width:100%;height:auto;display:block;margin:4px 0}
.spark{fill:none;stroke:var(--accent);stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
.pt{fill:var(--accent)}.anom{fill:#dc2626;stroke:#fff;stroke-width:1.5}
.anote{margin-top:6px;color:var(--bad);font-size:12px}
footer{padding:8px 24px 32px}
@media (max-width:900px){.meta{grid-template-columns:repeat(2,minmax(0,1fr))}}
@media (max-width:640px){.verdict{text-align:left}.kv{font-size:22px}.brow{grid-template-columns:90px 1fr 64px 48px}}
@media print{nav.toc{display:none}.sec{break-inside:avoid}body{background:#fff}}
"""
