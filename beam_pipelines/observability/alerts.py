"""Run alerts to a Slack-compatible incoming webhook: anomalies and failed expectations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence

from beam_pipelines.observability.delivery import DeliveryResult, check_http_url, deliver

__all__ = ["alert_message", "failed_expectations", "send_alert"]

# Slack accepts at most 50 blocks per message; keep room for the header, summary and overflow line.
_MAX_ITEMS = 45


def failed_expectations(report: Mapping) -> list[dict]:
    """The expectations of a run report that did not pass.

    Args:
        report: The run report (``_run/report.json``).
    """
    return [e for e in report.get("expectations") or [] if not e.get("passed", True)]


def _num(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return f"{value:,.0f}" if abs(value) >= 1 else f"{value:g}"


def _anomaly_line(a: Mapping) -> str:
    how = (
        f"modified z {a['score']:+.1f}"
        if a.get("score") is not None
        else f"the {a.get('runs', '?')} earlier values were constant"
    )
    return (
        f":warning: `{a['metric']}` = {_num(a['value'])} is {a['direction']}: median {_num(a['median'])}, "
        f"MAD {_num(a['mad'])}, {how} (over {a.get('runs', '?')} runs)"
    )


def _expectation_line(e: Mapping) -> str:
    column = f" on `{e['column']}`" if e.get("column") else ""
    checked = f" of {_num(e['checked'])}" if e.get("checked") is not None else ""
    detail = f" {e['detail']}" if e.get("detail") else ""
    return (
        f":x: expectation `{e.get('name')}` ({e.get('kind')}, severity {e.get('severity')}){column}: "
        f"{_num(e.get('failing'))}{checked} rows failing.{detail}"
    )


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}


def alert_message(
    pipeline: str,
    run_id: str,
    anomalies: Sequence[Mapping],
    failed_expectations: Sequence[Mapping],
    report_url: str | None = None,
) -> dict:
    """The Slack-compatible payload: ``{"text", "blocks"}``, one section per finding.

    Args:
        pipeline: Pipeline name.
        run_id: Run id.
        anomalies: Findings of ``anomaly.detect``.
        failed_expectations: Expectation results (from the run report) that did not pass.
        report_url: Optional link to the run report.
    """
    title = f"{pipeline} run {run_id}: {len(anomalies)} anomalies, {len(failed_expectations)} failed expectations"
    lines = [_anomaly_line(a) for a in anomalies] + [_expectation_line(e) for e in failed_expectations]
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    if report_url:
        blocks.append(_section(f"<{report_url}|Run report>"))
    blocks += [_section(line) for line in lines[:_MAX_ITEMS]]
    if len(lines) > _MAX_ITEMS:
        blocks.append(_section(f"... and {len(lines) - _MAX_ITEMS} more (see the run report)"))
    # ``text`` is what notifications and clients without blocks show.
    text = "\n".join([title, *lines[:_MAX_ITEMS]] + ([f"report: {report_url}"] if report_url else []))
    return {"text": text, "blocks": blocks}


def send_alert(
    webhook_url: str,
    pipeline: str,
    run_id: str,
    anomalies: Sequence[Mapping],
    failed_expectations: Sequence[Mapping],
    report_url: str | None = None,
    timeout: float = 5.0,
    retries: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    backoff: float = 1.0,
) -> DeliveryResult:
    """Posts an alert when there are anomalies or failed expectations; never raises on network failure.

    Args:
        webhook_url: Slack (or compatible) incoming webhook URL.
        pipeline: Pipeline name.
        run_id: Run id.
        anomalies: Findings of ``anomaly.detect``.
        failed_expectations: Expectation results that did not pass (see :func:`failed_expectations`).
        report_url: Optional link to the run report.
        timeout: Seconds per attempt.
        retries: Further attempts after the first on 429/5xx answers and connection errors.
        sleep: Called with each backoff delay (injected by tests).
        backoff: Seconds before the first retry, doubled after each.

    Returns:
        A DeliveryResult; ``attempts == 0`` when there was nothing to report.

    Raises:
        ValueError: When ``webhook_url`` is not an http(s) URL.
    """
    url = check_http_url(webhook_url, "webhook_url")
    if not anomalies and not failed_expectations:
        return DeliveryResult(sent=False, status=None, attempts=0, error=None)
    body = json.dumps(alert_message(pipeline, run_id, anomalies, failed_expectations, report_url)).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    return deliver("POST", url, body, headers, timeout=timeout, retries=retries, backoff=backoff, sleep=sleep)
