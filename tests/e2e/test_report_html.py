"""The HTML run report, rendered from a real events run and opened in a real Chromium.

scripts/chromium.sh installs Debian's chromium when it is missing; if it cannot (or the browser
does not start) the browser tests fail, they are never skipped. Playwright drives that
executable and never downloads a browser of its own. Every test page is screenshotted to
/tmp/report_html*.png, failing or not.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from beam_pipelines.report_charts import fmt_num, fmt_pct
from beam_pipelines.report_html import render_report
from tests.e2e.helpers import ROOT, cli, curated, datagen, report

SCREENSHOT = "/tmp/report_html.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INJECTION = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


# --- the document: a real run, plus a profile of its curated output and a synthetic history ---


def _profile_column(col: pa.ChunkedArray) -> dict:
    """A profile entry computed with pyarrow: what the team's profiler reports per column."""
    n, nulls = len(col), col.null_count
    out = {
        "type": str(col.type),
        "count": n,
        "nulls": nulls,
        "null_rate": nulls / n if n else 0.0,
        "distinct_approx": pc.count_distinct(col).as_py(),
        "min": None,
        "max": None,
        "mean": None,
        "stddev": None,
        "quantiles": None,
        "histogram": None,
        "top_values": None,
    }
    if pa.types.is_timestamp(col.type):
        mm = pc.min_max(col).as_py()
        out["min"], out["max"] = mm["min"].isoformat(), mm["max"].isoformat()
        micros = col.cast(pa.int64()).drop_null().to_numpy()
        counts, edges = np.histogram(micros, bins=24)
        iso = pc.cast(pa.array(edges.astype("int64")), pa.timestamp("us", tz="UTC")).to_pylist()
        out["histogram"] = {"edges": [e.isoformat() for e in iso], "counts": counts.tolist()}
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        values = col.drop_null().to_numpy().astype("float64")
        mm = pc.min_max(col).as_py()
        out.update(min=mm["min"], max=mm["max"], mean=float(values.mean()), stddev=float(values.std()))
        qs = np.quantile(values, [0.01, 0.25, 0.5, 0.75, 0.99])
        out["quantiles"] = dict(zip(("p01", "p25", "p50", "p75", "p99"), (round(float(q), 4) for q in qs)))
        counts, edges = np.histogram(values, bins=20)
        out["histogram"] = {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        vc = pc.value_counts(col.drop_null()).to_pylist()
        vc.sort(key=lambda d: (-d["counts"], d["values"]))
        out["top_values"] = [{"value": d["values"], "count": d["counts"]} for d in vc[:6]]
        mm = pc.min_max(col).as_py()
        out["min"], out["max"] = mm["min"], mm["max"]
    return out


def _history(counts: dict, run_id: str) -> tuple[list[dict], list[dict]]:
    """Twelve earlier runs with steady metrics, this run last, and the anomalies against them."""
    rng = np.random.default_rng(5)
    runs = []
    for i in range(12):
        read = int(3000 + rng.integers(-40, 40))
        dead = int(read * (0.037 + rng.normal(0, 0.002)))
        dup = int(17 + rng.integers(-3, 4))
        runs.append(
            {
                "run_id": f"2026111{i // 10}T0{i % 10}0000Z-hist{i:04d}",
                "recorded_at": f"2026-11-{10 + i:02d}T05:00:00+00:00",
                "metrics": {
                    "count.read": read,
                    "count.curated": read - dead - dup,
                    "count.dead_lettered": dead,
                    "dead_letter_rate": round(dead / read, 5),
                    "count.duplicates": dup,
                    "elapsed_s": round(float(2.0 + rng.normal(0, 0.05)), 3),
                },
            }
        )
    read = counts["read"]
    current = {
        "count.read": read,
        "count.curated": counts["curated"],
        "count.dead_lettered": counts["dead_lettered"],
        "dead_letter_rate": round(counts["dead_lettered"] / read, 5),
        "count.duplicates": counts["duplicates"],
        "elapsed_s": 9.5,  # a slow run: the anomaly the page must show
    }
    runs.append({"run_id": run_id, "recorded_at": "2026-11-26T05:04:12+00:00", "metrics": current})
    past = [r["metrics"]["elapsed_s"] for r in runs[:-1]]
    med = statistics.median(past)
    mad = statistics.median(abs(v - med) for v in past)
    score = round(0.6745 * (current["elapsed_s"] - med) / mad, 2)
    anomalies = [
        {
            "metric": "elapsed_s",
            "value": 9.5,
            "median": med,
            "mad": mad,
            "score": score,
            "direction": "high",
            "runs": 12,
        }
    ]
    return runs, anomalies


def _expectations(table: pa.Table, quality: dict) -> list[dict]:
    n = table.num_rows
    return [
        {"name": "event_id_unique", "kind": "unique", "column": "event_id", "severity": "error", "action": "fail",
         "passed": True, "checked": n, "failing": 0, "samples": [], "detail": "no repeated event_id"},
        {"name": "amount_non_negative", "kind": "range", "column": "amount", "severity": "error", "action": "fail",
         "passed": True, "checked": n, "failing": 0, "samples": [], "detail": "amount >= 0"},
        {"name": "country_is_known", "kind": "not_null", "column": "country", "severity": "warn", "action": "warn",
         "passed": False, "checked": n, "failing": table.column("country").null_count,
         "samples": ["XX1", "  ", "Germany"], "detail": f"{quality.get('invalid_country', 0)} values were nulled"},
        {"name": "email_present", "kind": "not_null", "column": "email", "severity": "warn", "action": "warn",
         "passed": False, "checked": n, "failing": table.column("email").null_count, "samples": ["not-an-email"],
         "detail": "mostly optional"},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A dirty jsonl run through the CLI: (report, summary, curated table)."""
    base = tmp_path_factory.mktemp("report_html")
    data = datagen(base / "in", "jsonl", rows=3000, dirty=0.05, seed=3)
    out = base / "out"
    proc = cli("--pipeline=events", f"--input={data}/*.jsonl", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "_run" / "summary.json").read_text())
    return report(out), summary, curated(out)


@pytest.fixture(scope="module")
def doc(run):
    rep, summary, table = run
    history, anomalies = _history(rep["counts"], summary["run_id"])
    profile = {
        "rows": table.num_rows,
        "columns": {name: _profile_column(table.column(name)) for name in table.column_names},
    }
    return {
        "summary": {**summary, "started_at": "2026-11-26T05:04:10+00:00"},
        "report": {**rep, "expectations": _expectations(table, rep["quality"])},
        "profile": profile,
        "history": history,
        "anomalies": anomalies,
        "published": True,
        "audit_error": None,
    }


# --- the browser ---


@pytest.fixture(scope="module")
def browser():
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "chromium.sh")], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        pytest.fail(f"cannot install Chromium (scripts/chromium.sh): {proc.stderr.strip() or proc.stdout}")
    executable = proc.stdout.strip().splitlines()[-1]
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except PlaywrightError as e:
            pytest.fail(f"Chromium at {executable} does not start: {e}")
        yield b
        b.close()


class Opened:
    """A report page opened from a file, with what the browser complained about."""

    def __init__(self, browser, html: str, path, screenshot: str):
        path.write_text(html, encoding="utf-8")
        self.url = path.as_uri()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"requestfailed: {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        try:
            self.page.goto(self.url, wait_until="load")
            self.text = self.page.inner_text("body")
        finally:
            self.page.screenshot(path=screenshot, full_page=True)


@pytest.fixture
def open_page(browser, tmp_path):
    opened = []

    def make(html: str, screenshot: str) -> Opened:
        page = Opened(browser, html, tmp_path / f"report{len(opened)}.html", screenshot)
        opened.append(page)
        return page

    yield make
    for page in opened:
        page.page.close()


# --- tests ---


def _card(page: Opened, column: str):
    """The profile card whose title is exactly ``column``."""
    title = page.page.locator("h3", has_text=re.compile(f"^{re.escape(column)}$"))
    cards = page.page.locator("#profiles article.card").filter(has=title)
    assert cards.count() == 1, column
    return cards


def test_full_report_shows_the_runs_numbers(doc, open_page):
    page = open_page(render_report(doc), SCREENSHOT)
    assert page.errors == []
    # Self-contained: the only thing loaded is the file itself.
    assert page.requests == [page.url]
    text = page.text
    c = doc["report"]["counts"]
    assert "PASSED" in text and "FAILED" not in text.split("Where every record went")[0]
    assert doc["summary"]["run_id"] in text and "DirectRunner" in text and "2026-11-26 05:04:10 UTC" in text
    assert f"{c['read']:,}" in text and c["read"] >= 1000  # thousands separator
    # The funnel and the dead-letter bars: label, count and share per row, largest reason first.
    funnel = page.page.locator("#funnel .brow").all_inner_texts()
    assert funnel == [
        f"{label}\n{c[key]:,}\n{fmt_pct(c[key] / c['read'])}"
        for key, label in (("read", "read"), ("curated", "curated"), ("dead_lettered", "dead-lettered"),
                           ("duplicates", "duplicates"), ("late", "late"))
    ]  # fmt: skip
    reasons = sorted(doc["report"]["dead_letter_reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
    assert len(reasons) >= 3 and sum(n for _, n in reasons) == c["dead_lettered"]
    assert page.page.locator("#dead-letters .brow").all_inner_texts() == [
        f"{r}\n{n:,}\n{fmt_pct(n / c['dead_lettered'])}" for r, n in reasons
    ]
    conservation = (
        f"read {c['read']:,} = curated {c['curated']:,} + dead-lettered {c['dead_lettered']:,} "
        f"+ duplicates {c['duplicates']:,} + late {c['late']:,}"
    )
    assert "\u2713 " + conservation in text and "conservation holds" in text
    # Expectations: a passing and a failing one, with their verdicts in the same row.
    rows = page.page.locator("#expectations tbody tr")
    assert rows.count() == 4
    failing = rows.filter(has_text="country_is_known")
    assert failing.locator(".pill").inner_text() == "FAIL"
    nulls = doc["profile"]["columns"]["country"]["nulls"]
    assert f"{nulls:,} / {doc['profile']['rows']:,}" in failing.inner_text()
    assert rows.filter(has_text="event_id_unique").locator(".pill").inner_text() == "PASS"
    # Profiles: one card per column, the email column with its real null rate.
    cols = doc["profile"]["columns"]
    assert page.page.locator("#profiles article.card").count() == len(cols)
    email = _card(page, "email")
    rate = fmt_pct(cols["email"]["null_rate"])
    assert cols["email"]["nulls"] > 0
    assert f"{cols['email']['nulls']:,} ({rate})" in email.inner_text()
    # Histograms for numeric/timestamp columns, top-value bars for strings.
    assert _card(page, "amount").locator("svg.hist").count() == 1
    ts = _card(page, "ts")
    assert ts.locator("svg.hist").count() == 1 and ts.locator("svg.hist rect").count() == 24
    assert cols["ts"]["min"][:19].replace("T", " ") + " UTC" in ts.inner_text()  # seconds shown, UTC named
    assert _card(page, "event_type").locator(".top .brow").count() == cols["event_type"]["distinct_approx"]
    # History: the three key trends plus the anomalous metric, its point in red, and the anomaly table.
    trends = page.page.locator("#history article.trend")
    assert [t.locator("h3").inner_text() for t in trends.all()] == [
        "rows read",
        "dead-letter rate",
        "curated",
        "elapsed_s",
    ]
    anomaly = doc["anomalies"][0]
    red = page.page.locator("#history circle.anom")
    assert red.count() == 1 and f"score {fmt_num(anomaly['score'])}" in red.locator("title").text_content()
    table_text = page.page.locator("#history table").inner_text()
    assert "elapsed_s" in table_text and fmt_num(anomaly["score"]) in table_text
    # Charts are SVG: 5 funnel bars, one bar per reason, histograms, top-value bars, 4 sparklines.
    hists = sum(1 for col in cols.values() if col["histogram"])
    tops = sum(len(col["top_values"]) for col in cols.values() if not col["histogram"] and col["top_values"])
    assert hists >= 4 and tops >= 6
    assert page.page.locator("svg").count() == 5 + len(reasons) + hists + tops + 4


def test_summary_and_report_only(doc, open_page):
    small = {"summary": doc["summary"], "report": {k: v for k, v in doc["report"].items() if k != "expectations"}}
    page = open_page(render_report(small), "/tmp/report_html_minimal.png")
    assert page.errors == []
    text = page.text
    assert "PASSED" in text and f"{small['report']['counts']['read']:,}" in text
    # Expectations, profiles, history and anomalies each say so.
    assert text.count("not computed") >= 4
    for section in ("expectations", "profiles", "history"):
        assert "not computed" in page.page.locator(f"#{section}").inner_text(), section


def test_html_in_data_is_shown_as_text(doc, open_page):
    evil = json.loads(json.dumps(doc))
    evil["report"]["dead_letter_reasons"] = {INJECTION: 3, "malformed": 1}
    evil["report"]["expectations"][2]["samples"] = [INJECTION]
    evil["profile"]["columns"] = {INJECTION: evil["profile"]["columns"]["event_type"]}
    evil["anomalies"][0]["metric"] = INJECTION
    page = open_page(render_report(evil), "/tmp/report_html_injection.png")
    assert page.errors == []
    assert page.page.evaluate("window.__pwned") is None
    assert page.page.locator("img").count() == 0 and page.page.locator("script").count() == 1
    assert page.page.locator("#dead-letters .blabel").first.inner_text() == INJECTION
    assert page.page.locator("#profiles h3").inner_text() == INJECTION
    assert page.page.locator("#expectations .samples code").first.inner_text() == INJECTION[:59] + "\u2026"
    assert page.page.locator("#history td code").inner_text() == INJECTION
    assert page.requests == [page.url]


def test_failed_runs_say_so_in_the_badge(doc, open_page):
    bad = json.loads(json.dumps(doc))
    bad["report"]["counts"]["curated"] -= 5
    bad["report"]["conservation_ok"] = False
    page = open_page(render_report(bad), "/tmp/report_html_conservation.png")
    assert page.errors == []
    assert page.page.locator(".badge").inner_text() == "\u2717 CONSERVATION FAILED"
    assert "off by -5" in page.text and "\u2717 read" in page.text
    audit = {**doc, "published": False, "audit_error": "expectation event_id_unique failed: 3 of 2,870 rows"}
    html = render_report(audit)
    assert '<div class="badge bad">\u2717 FAILED AUDIT</div>' in html
    assert "Audit failed:</strong> expectation event_id_unique failed: 3 of 2,870 rows" in html
    assert "not published" in html


def test_sorting_a_table_by_a_column(doc, open_page):
    page = open_page(render_report(doc), "/tmp/report_html_sorted.png")
    header = page.page.locator("#expectations th", has_text="Name")
    header.click()
    names = page.page.locator("#expectations tbody tr td:nth-child(2)").all_inner_texts()
    assert names == sorted(names)
    header.click()
    assert page.page.locator("#expectations tbody tr td:nth-child(2)").all_inner_texts() == sorted(names, reverse=True)
    assert page.errors == []


# --- without a browser: empty input, determinism, speed ---


def test_empty_document_renders():
    html = render_report({})
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</html>\n")
    assert "NOT VERIFIED" in html and html.count("not computed") >= 5
    assert (
        render_report({"summary": None, "report": {"counts": {}}, "profile": {"columns": {}}}).count("not computed")
        >= 5
    )


def test_same_document_same_bytes_and_fast(doc):
    big = json.loads(json.dumps(doc))
    template = doc["profile"]["columns"]["amount"]
    big["profile"]["columns"] = {f"col_{i:03d}": template for i in range(300)}
    big["history"] = [{**doc["history"][i % 12], "run_id": f"r{i}"} for i in range(2000)] + doc["history"][-1:]
    start = time.perf_counter()
    first = render_report(big)
    elapsed = time.perf_counter() - start
    assert render_report(json.loads(json.dumps(big))) == first
    assert first.count('<article class="card col') == 300
    assert elapsed < 1.0, f"render_report took {elapsed:.2f} s for 300 columns and 2,001 runs"


def test_the_clis_own_report_page_shows_its_numbers(run, open_page):
    rep, summary, _ = run
    html = (Path(summary["output"]) / "_run" / "report.html").read_text(encoding="utf-8")
    page = open_page(html, "/tmp/report_html_cli.png")
    assert page.errors == []
    c = rep["counts"]
    assert "PASSED" in page.text and summary["run_id"] in page.text
    assert f"read {c['read']:,} = curated {c['curated']:,}" in page.text.replace("\n", " ")
    for name in ("event_id_not_null", "ts_range", "has_rows"):  # the default expectations, all passed
        assert name in page.text
    assert _card(page, "event_type").count() == 1  # a profile card per curated column
    assert page.page.locator("#profiles article.card").count() == 13
