"""Run metrics in the Prometheus text exposition format, and a push to a Pushgateway.

A batch run is over before any scraper could see it, so the launcher pushes one snapshot per
run; the Pushgateway keeps the last one per grouping key for Prometheus to scrape.
"""

from __future__ import annotations

import base64
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from beam_pipelines.observability.delivery import DeliveryResult, check_http_url, deliver

__all__ = ["METRIC_NAMES", "beam_counters", "prometheus_text", "push"]

PREFIX = "beam_pipelines_"
# The series prometheus_text can emit (sample names, counters with their _total suffix).
METRIC_NAMES = (
    "beam_pipelines_rows_total",
    "beam_pipelines_dead_letters_total",
    "beam_pipelines_quality_issues_total",
    "beam_pipelines_run_seconds",
    "beam_pipelines_rows_per_second",
    "beam_pipelines_run_started_timestamp_seconds",
    "beam_pipelines_conservation_ok",
    "beam_pipelines_expectation_failing",
    "beam_pipelines_beam_counter",
)
# The text format 0.0.4 that every Pushgateway version accepts; our names need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _value(result) -> float | None:
    # Some runners fill only attempted values; committed is the exact one when present.
    committed = getattr(result, "committed", None)
    return committed if committed is not None else getattr(result, "attempted", None)


def beam_counters(beam_metrics) -> list[dict]:
    """Beam counters as ``[{"step", "namespace", "name", "value"}]``, summed per key and sorted.

    Args:
        beam_metrics: ``PipelineResult.metrics().query()`` (a dict with ``"counters"``), a list
            of ``MetricResult``, a list of ``{"step", "namespace", "name", "value"}`` dicts, or None.
    """
    if beam_metrics is None:
        return []
    items = beam_metrics.get("counters", []) if isinstance(beam_metrics, Mapping) else beam_metrics
    totals: dict[tuple[str, str, str], float] = {}
    for item in items:
        if isinstance(item, Mapping):
            key, value = (item["step"], item["namespace"], item["name"]), item["value"]
        else:
            key = (item.key.step, item.key.metric.namespace, item.key.metric.name)
            value = _value(item)
        if value is None:
            continue
        key = tuple("" if k is None else str(k) for k in key)
        totals[key] = totals.get(key, 0.0) + float(value)
    return [{"step": s, "namespace": ns, "name": n, "value": v} for (s, ns, n), v in sorted(totals.items())]


def _started_epoch(summary: Mapping) -> float | None:
    started = summary.get("started_at")
    if not started:
        return None
    ts = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"summary started_at must carry a UTC offset, got {started!r}")
    return ts.timestamp()


class _RunCollector:
    def __init__(self, families: list):
        self._families = families

    def collect(self) -> Iterable:
        return iter(self._families)


def _families(beam_metrics, report: Mapping, summary: Mapping, pipeline: str) -> list:
    rows = CounterMetricFamily(
        PREFIX + "rows", "Rows per pipeline stage in the last run.", labels=["pipeline", "stage"]
    )
    for stage, n in sorted((report.get("counts") or {}).items()):
        rows.add_metric([pipeline, stage], float(n))
    dead = CounterMetricFamily(
        PREFIX + "dead_letters", "Dead-lettered rows per reason in the last run.", labels=["pipeline", "reason"]
    )
    for reason, n in sorted((report.get("dead_letter_reasons") or {}).items()):
        dead.add_metric([pipeline, reason], float(n))
    quality = CounterMetricFamily(
        PREFIX + "quality_issues", "Rows kept with a value nulled, per check.", labels=["pipeline", "check"]
    )
    for check, n in sorted((report.get("quality") or {}).items()):
        quality.add_metric([pipeline, check], float(n))
    families = [rows, dead, quality]

    def gauge(name: str, doc: str, value) -> None:
        if value is not None:
            families.append(GaugeMetricFamily(PREFIX + name, doc, labels=["pipeline"]))
            families[-1].add_metric([pipeline], float(value))

    gauge("run_seconds", "Wall time of the last run in seconds.", summary.get("elapsed_s"))
    gauge("rows_per_second", "Rows read per second in the last run.", summary.get("rows_per_s"))
    gauge("run_started_timestamp_seconds", "Start of the last run (Unix time).", _started_epoch(summary))
    if "conservation_ok" in report:
        ok = 1.0 if report["conservation_ok"] else 0.0
        gauge("conservation_ok", "1 when read = curated + dead_lettered + duplicates + late.", ok)
    expectations = GaugeMetricFamily(
        PREFIX + "expectation_failing", "Rows failing each expectation.", labels=["pipeline", "name", "severity"]
    )
    for e in report.get("expectations") or []:
        expectations.add_metric([pipeline, str(e["name"]), str(e.get("severity") or "")], float(e.get("failing") or 0))
    counters = GaugeMetricFamily(
        PREFIX + "beam_counter",
        "Beam counter values of the last run.",
        labels=["pipeline", "step", "namespace", "name"],
    )
    for c in beam_counters(beam_metrics):
        counters.add_metric([pipeline, c["step"], c["namespace"], c["name"]], c["value"])
    return families + [expectations, counters]


def prometheus_text(beam_metrics, report: Mapping, summary: Mapping, pipeline: str) -> str:
    """The run's metrics in the Prometheus text exposition format.

    Args:
        beam_metrics: Beam counters in any form :func:`beam_counters` accepts (or None).
        report: The run report (``_run/report.json``).
        summary: The run summary (``elapsed_s``, ``rows_per_s``, ``started_at``).
        pipeline: Value of the ``pipeline`` label on every series.
    """
    if not pipeline:
        raise ValueError("pipeline is required")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RunCollector(_families(beam_metrics, report, summary, pipeline)))
    return generate_latest(registry).decode()


def _segment(label: str, value: str) -> str:
    # The Pushgateway API takes values with "/" (or empty ones) base64url-encoded.
    if value and "/" not in value:
        return f"{label}/{urllib.parse.quote(value, safe='')}"
    encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
    return f"{label}@base64/{encoded}"


def push(
    gateway_url: str,
    text: str,
    job: str,
    grouping: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    retries: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    backoff: float = 1.0,
) -> DeliveryResult:
    """Replaces the job's metric group on a Pushgateway (HTTP PUT); never raises on network failure.

    Args:
        gateway_url: Pushgateway base URL, e.g. ``http://pushgateway:9091``.
        text: Exposition text (from :func:`prometheus_text`).
        job: The ``job`` grouping label.
        grouping: Further grouping labels, e.g. ``{"pipeline": "events"}``.
        timeout: Seconds per attempt.
        retries: Further attempts after the first on 429/5xx answers and connection errors.
        sleep: Called with each backoff delay (injected by tests).
        backoff: Seconds before the first retry, doubled after each.

    Raises:
        ValueError: For a non-http(s) URL, an empty job or an invalid label name.
    """
    base = check_http_url(gateway_url, "gateway_url").rstrip("/")
    if not job:
        raise ValueError("job is required")
    path = [_segment("job", job)]
    for label, value in (grouping or {}).items():
        if not _LABEL.fullmatch(label) or label == "job":
            raise ValueError(f"invalid grouping label name {label!r}")
        path.append(_segment(label, str(value)))
    url = f"{base}/metrics/" + "/".join(path)
    headers = {"Content-Type": CONTENT_TYPE}
    return deliver("PUT", url, text.encode(), headers, timeout=timeout, retries=retries, backoff=backoff, sleep=sleep)
