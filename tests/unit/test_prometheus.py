"""Prometheus exposition text, the Pushgateway push, and the Grafana dashboard's queries."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName
from prometheus_client.parser import text_string_to_metric_families

from beam_pipelines.observability.prometheus import METRIC_NAMES, beam_counters, prometheus_text, push
from tests.receivers import Receiver, closed_port_url

DASHBOARD = Path(__file__).resolve().parents[2] / "templates" / "grafana" / "beam-pipelines-events.json"

REPORT = {
    "counts": {"read": 1000, "curated": 940, "dead_lettered": 50, "duplicates": 10, "late": 0, "aggregates": 24},
    "dead_letter_reasons": {"malformed": 20, "invalid_value": 30},
    "quality": {"invalid_email": 5, "invalid_country": 2},
    "conservation_ok": True,
    "expectations": [
        {
            "name": "amount_range",
            "kind": "between",
            "column": "amount",
            "severity": "warn",
            "action": "warn",
            "passed": False,
            "checked": 940,
            "failing": 7,
            "samples": [],
            "detail": "",
        },
        {
            "name": "id_unique",
            "kind": "unique",
            "column": "event_id",
            "severity": "error",
            "action": "fail",
            "passed": True,
            "checked": 940,
            "failing": 0,
            "samples": [],
            "detail": "",
        },
    ],
}
SUMMARY = {
    "run_id": "r1",
    "pipeline": "events",
    "started_at": "2026-03-01T12:00:00+00:00",
    "elapsed_s": 12.5,
    "rows_per_s": 80,
}
BEAM = [
    {"step": "ParseRecords", "namespace": "rows", "name": "parsed", "value": 990},
    {"step": "Validate", "namespace": "rows", "name": "valid", "value": 950},
]


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_text_has_every_series_with_values():
    got = samples(prometheus_text(BEAM, REPORT, SUMMARY, "events"))
    p = ("pipeline", "events")
    assert got[("beam_pipelines_rows_total", (p, ("stage", "read")))] == 1000
    assert got[("beam_pipelines_rows_total", (p, ("stage", "dead_lettered")))] == 50
    assert got[("beam_pipelines_dead_letters_total", (p, ("reason", "malformed")))] == 20
    assert got[("beam_pipelines_quality_issues_total", (("check", "invalid_country"), p))] == 2
    assert got[("beam_pipelines_run_seconds", (p,))] == 12.5
    assert got[("beam_pipelines_rows_per_second", (p,))] == 80
    assert got[("beam_pipelines_run_started_timestamp_seconds", (p,))] == 1772366400.0
    assert got[("beam_pipelines_conservation_ok", (p,))] == 1
    assert got[("beam_pipelines_expectation_failing", (("name", "amount_range"), p, ("severity", "warn")))] == 7
    assert got[("beam_pipelines_expectation_failing", (("name", "id_unique"), p, ("severity", "error")))] == 0
    key = (("name", "parsed"), ("namespace", "rows"), p, ("step", "ParseRecords"))
    assert got[("beam_pipelines_beam_counter", key)] == 990
    assert len([k for k in got if k[0] == "beam_pipelines_rows_total"]) == 6
    assert {k[0] for k in got} == set(METRIC_NAMES)


def test_failed_conservation_is_zero_and_label_values_are_escaped():
    report = dict(REPORT, conservation_ok=False, dead_letter_reasons={'bad "quote"\\ \n': 1})
    got = samples(prometheus_text([], report, {}, "events"))
    assert got[("beam_pipelines_conservation_ok", (("pipeline", "events"),))] == 0
    assert got[("beam_pipelines_dead_letters_total", (("pipeline", "events"), ("reason", 'bad "quote"\\ \n')))] == 1
    assert not [k for k in got if k[0] == "beam_pipelines_run_seconds"]


def test_beam_counters_from_metric_results_and_query_dict():
    def result(step, name, committed, attempted):
        return MetricResult(MetricKey(step, MetricName("ns", name)), committed, attempted)

    results = [result("A", "x", 3, 4), result("A", "x", 2, 2), result("B", "y", None, 7)]
    expected = [
        {"step": "A", "namespace": "ns", "name": "x", "value": 5.0},
        {"step": "B", "namespace": "ns", "name": "y", "value": 7.0},
    ]
    assert beam_counters(results) == expected
    assert beam_counters({"counters": results, "distributions": []}) == expected
    assert beam_counters(None) == []


def test_counters_of_a_real_pipeline_run(pipeline):
    class _Count(beam.DoFn):
        def process(self, x):
            beam.metrics.Metrics.counter("obs_test", "seen").inc(x)
            yield x

    p = pipeline()
    _ = p | "Values" >> beam.Create([1, 2, 3]) | "CountThem" >> beam.ParDo(_Count())
    result = p.run()
    result.wait_until_finish()
    counters = [c for c in beam_counters(result.metrics().query()) if c["namespace"] == "obs_test"]
    assert [(c["name"], c["value"]) for c in counters] == [("seen", 6.0)]
    assert "CountThem" in counters[0]["step"]
    text = prometheus_text(result.metrics().query(), REPORT, SUMMARY, "events")
    [value] = [v for (name, labels), v in samples(text).items() if ("namespace", "obs_test") in labels]
    assert value == 6.0


def test_push_puts_text_to_the_pushgateway_path():
    text = prometheus_text(BEAM, REPORT, SUMMARY, "events")
    with Receiver(default_status=200) as rx:
        result = push(rx.url + "/", text, "beam_pipelines", {"pipeline": "events", "instance": "run 1"})
    assert (result.sent, result.status, result.attempts) == (True, 200, 1)
    [req] = rx.requests
    assert req.method == "PUT"
    assert req.path == "/metrics/job/beam_pipelines/pipeline/events/instance/run%201"
    assert req.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert samples(req.text()) == samples(text)


def test_push_base64_encodes_values_with_slashes_and_empty_values():
    with Receiver() as rx:
        push(rx.url, "x 1\n", "job/a", {"path": "s3://b/out", "empty": ""})
    encoded = base64.urlsafe_b64encode(b"s3://b/out").decode()
    job = base64.urlsafe_b64encode(b"job/a").decode()
    assert rx.requests[0].path == f"/metrics/job@base64/{job}/path@base64/{encoded}/empty@base64/="


def test_push_retries_then_reports_failure():
    sleeps = []
    with Receiver(default_status=503) as rx:
        result = push(rx.url, "x 1\n", "j", retries=1, sleep=sleeps.append, backoff=0.25)
    assert (result.sent, result.status, result.attempts, result.error) == (
        False,
        503,
        2,
        "HTTP 503 Service Unavailable",
    )
    assert sleeps == [0.25] and len(rx.requests) == 2
    down = push(closed_port_url(), "x 1\n", "j", retries=0)
    assert (down.sent, down.status, down.attempts) == (False, None, 1)


def test_push_rejects_bad_config():
    with pytest.raises(ValueError, match="label"):
        push("http://localhost:9091", "", "j", {"bad-label": "x"})
    with pytest.raises(ValueError, match="job"):
        push("http://localhost:9091", "", "")
    with pytest.raises(ValueError, match="gateway_url"):
        push("localhost:9091", "", "j")


def _queries(node):
    """Every PromQL string of the dashboard: panel target exprs and variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def test_dashboard_queries_only_name_emitted_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    emitted = {k[0] for k in samples(prometheus_text(BEAM, REPORT, SUMMARY, "events"))}
    names = {"datasource", "pipeline"}
    assert {v["name"] for v in dashboard["templating"]["list"]} == names
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, panel["title"]
        for expr in exprs:
            found = set(re.findall(r"\bbeam_pipelines_[a-z_]+\b", expr))
            assert found, f"{panel['title']}: {expr} names no beam_pipelines metric"
            assert found <= emitted, f"{panel['title']}: {found - emitted} not emitted"
            assert 'pipeline=~"$pipeline"' in expr
            used |= found
    for query in _queries(dashboard["templating"]):
        assert set(re.findall(r"\bbeam_pipelines_[a-z_]+\b", query)) <= emitted, query
    required = {
        "beam_pipelines_rows_total",
        "beam_pipelines_dead_letters_total",
        "beam_pipelines_run_seconds",
        "beam_pipelines_rows_per_second",
        "beam_pipelines_conservation_ok",
        "beam_pipelines_expectation_failing",
    }
    assert required <= used
