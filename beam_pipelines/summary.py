"""The run summary: what the CLI prints at the end of a run and keeps in _run/summary.json."""

from __future__ import annotations

from apache_beam.options.pipeline_options import StandardOptions

from beam_pipelines import __version__
from beam_pipelines.spec.build import pipeline_name
from transforms.sinks.files import join_path


def make_summary(run_id, cfg, options, report, published, elapsed, input_bytes, started_at) -> dict:
    counts = report["counts"]
    files_match = (
        published["curated_rows"] == counts["curated"]
        and published["dead_letter_rows"] == counts["dead_lettered"]
        and published["aggregate_rows"] == counts["aggregates"]
    )
    return {
        "run_id": run_id,
        "version": __version__,
        "pipeline": pipeline_name(cfg),
        "runner": options.view_as(StandardOptions).runner or "DirectRunner",
        "input": cfg.input,
        "input_format": cfg.input_format,
        "input_bytes": input_bytes,
        "output": cfg.output,
        "started_at": started_at.isoformat(),
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(counts["read"] / elapsed) if elapsed > 0 else None,
        "counts": counts,
        "dead_letter_reasons": report["dead_letter_reasons"],
        "quality": report["quality"],
        "drift": report.get("drift", {}),
        "conservation_ok": report["conservation_ok"],
        "published": published,
        "files_match": files_match,
    }


def lakehouse_summary(entries: list[dict], counts: dict) -> dict:
    """The lakehouse tables after a publish (``lakehouse.commit.results``), and whether they took
    the counted rows: bronze every record read, silver every curated record, each table every row
    the run staged for it."""
    from beam_pipelines.lakehouse import commit

    tables = commit.results(entries)
    expected = {"bronze": counts["read"], "silver": counts["curated"]}
    ok = True
    for t in tables:
        if t["layer"] in expected and t["staged_rows"] != expected[t["layer"]]:
            ok = False
        c = t["commit"]
        if c is not None and c.get("source", c.get("added")) != t["staged_rows"]:
            ok = False
    return {"lakehouse": tables, "tables_match": ok}


def lakehouse_lines(tables: list[dict]) -> list[str]:
    """The summary's lines on the lakehouse tables (``lakehouse_summary``), none without tables."""
    if not tables:
        return []
    lines = ["", "  lakehouse (Delta tables):"]
    for t in tables:
        c = t["commit"]
        if c is None:
            did = "no change" if t["staged_rows"] else "nothing staged"
        elif c["operation"] == "MERGE":
            did = f"{c['inserted']:,} inserted, {c['updated']:,} updated (MERGE of {c['source']:,})"
            if c.get("cold"):
                did += f"; {c['cold']:,} of them into the cold tier"
        elif "windows" in c:
            did = f"{c['windows']:,} windows replaced ({c['added']:,} rows)"
        else:
            did = f"+{c['added']:,} appended" if t["layer"] == "bronze" else f"{c['added']:,} inserted"
        version = f"v{t['version']}" if t["version"] is not None else "-"
        lines.append(f"    {t['table']:<40} {t['layer']:<6} {version:>4}  {t['rows']:>10,} rows; {did}")
    return lines


MIN_HISTORY = 5  # anomaly.detect's default min_runs


def quality_summary(doc: dict, deliveries: dict, report_html: str) -> dict:
    """Expectation verdicts, anomalies and deliveries of a finished run, for the summary."""
    results = doc["report"].get("expectations") or []
    return {
        "expectations": {
            "checked": len(results),
            "failed": [r["name"] for r in results if not r["passed"]],
        },
        "anomalies": [a["metric"] for a in doc.get("anomalies") or []],
        "history_runs": len(doc.get("history") or []),
        "deliveries": deliveries,
        "report_html": report_html,
    }


def _quality_lines(s: dict) -> list[str]:
    lines = []
    exp = s.get("expectations")
    if exp and exp["checked"]:
        failed = f" (failed, warn: {', '.join(exp['failed'])})" if exp["failed"] else ""
        lines.append(f"  expectations: {exp['checked'] - len(exp['failed'])} of {exp['checked']} passed{failed}")
    if s.get("history_runs"):
        earlier = s["history_runs"] - 1
        if earlier < MIN_HISTORY:
            lines.append(f"  anomalies: judged from {MIN_HISTORY} earlier runs on (history has {earlier})")
        else:
            found = ", ".join(s["anomalies"]) if s["anomalies"] else "none"
            lines.append(f"  anomalies against {earlier} earlier runs: {found}")
    failed = {k: v for k, v in (s.get("deliveries") or {}).items() if v != "sent"}
    if failed:
        lines.append("  not delivered: " + "; ".join(f"{k} ({v})" for k, v in failed.items()))
    return lines


def _drift_lines(drift: dict) -> list[str]:
    """Schema drift against the contract, one line each (nothing when the records fit it)."""
    lines = []
    if drift.get("unknown_fields"):
        shown = ", ".join(f"{k} {v['records']:,}" for k, v in list(drift["unknown_fields"].items())[:5])
        lines.append(f"  drift, fields the contract lacks (records): {shown}")
    if drift.get("type_changes"):
        shown = ", ".join(
            f"{k} ({', '.join(f'{kind} {n:,}' for kind, n in kinds.items())})"
            for k, kinds in list(drift["type_changes"].items())[:5]
        )
        lines.append(f"  drift, values of another kind than declared: {shown}")
    return lines


def _scratch_lines(scratch: dict | None) -> list[str]:
    if not scratch:
        return []
    line = f"  scratch: {scratch['staged_bytes'] / 1e6:,.1f} MB staged"
    gone = scratch["abandoned_removed"]
    if gone:
        line += (f"; removed {len(gone)} abandoned staging entr{'y' if len(gone) == 1 else 'ies'} of dead runs "
                 f"({sum(gone.values()) / 1e6:,.1f} MB)")  # fmt: skip
    return [line]


def render(s: dict) -> str:
    c = s["counts"]
    width = max(len(f"{v:,}") for v in c.values())
    workers = f" ({s['workers']} worker processes)" if s.get("workers", 0) > 1 else ""
    lines = [
        f"{s['pipeline']} on {s['runner']}{workers}: {c['read']:,} records in {s['elapsed_s']:.1f} s"
        f" ({s['rows_per_s'] or 0:,} rows/s, {s['input_format']}, {s['input_bytes'] / 1e6:,.1f} MB)",
        "",
        "  stage           rows",
    ]
    for name in ("read", "curated", "dead_lettered", "duplicates", "late", "aggregates"):
        lines.append(f"  {name:<14}{c[name]:>{width + 2},}")
    if s["dead_letter_reasons"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in s["dead_letter_reasons"].items())
        lines += ["", f"  dead letters by reason: {reasons}"]
    if s["quality"]:
        quality = ", ".join(f"{k} {v:,}" for k, v in s["quality"].items())
        lines.append(f"  quality (kept, value nulled): {quality}")
    lines += _drift_lines(s.get("drift") or {})
    check = "OK" if s["conservation_ok"] else "FAILED"
    lines += [
        "",
        f"  conservation {check}: read {c['read']:,} = curated {c['curated']:,} + dead_lettered "
        f"{c['dead_lettered']:,} + duplicates {c['duplicates']:,} + late {c['late']:,}",
        f"  files {'match' if s['files_match'] else 'DO NOT match'} the counts "
        f"({s['published']['curated_files']} curated parquet files)",
        *_quality_lines(s),
        *_scratch_lines(s.get("scratch")),
        "",
        "  outputs:",
    ]
    out = s["output"]
    for name, what in (("curated", "curated records, dt=YYYY-MM-DD/"), ("aggregates", "windowed aggregates"),
                       ("dlq", "dead letters, JSON lines"), ("_run/report.json", "run report"),
                       ("_run/report.html", "run report page")):  # fmt: skip
        lines.append(f"    {join_path(out, name):<40} {what}")
    lines += lakehouse_lines(s.get("lakehouse") or [])
    return "\n".join(lines) + "\n"
