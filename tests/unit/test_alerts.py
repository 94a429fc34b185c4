"""Alerts: the Slack payload, delivery with retries, and failures reported instead of raised."""

from __future__ import annotations

import pytest

from beam_pipelines.observability.alerts import alert_message, failed_expectations, send_alert
from tests.receivers import Receiver, closed_port_url

ANOMALY = {
    "metric": "dead_letter_rate",
    "value": 0.25,
    "median": 0.02,
    "mad": 0.001,
    "score": 155.135,
    "direction": "high",
    "runs": 7,
    "rule": "mad",
}
FAILED = {
    "name": "amount_positive",
    "kind": "between",
    "column": "amount",
    "severity": "error",
    "action": "fail",
    "passed": False,
    "checked": 1000,
    "failing": 12,
    "samples": [],
    "detail": "amount < 0",
}
PASSED = dict(FAILED, name="ok", passed=True, failing=0)


def test_failed_expectations_keeps_only_failures():
    assert failed_expectations({"expectations": [PASSED, FAILED]}) == [FAILED]
    assert failed_expectations({}) == []


def test_message_has_header_and_one_line_per_finding():
    msg = alert_message("events", "run-1", [ANOMALY], [FAILED], report_url="http://x/report.json")
    header, link, anomaly, expectation = msg["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "events run run-1: 1 anomalies, 1 failed expectations"},
    }
    assert link["text"]["text"] == "<http://x/report.json|Run report>"
    assert anomaly["type"] == "section" and anomaly["text"]["type"] == "mrkdwn"
    assert anomaly["text"]["text"] == (
        ":warning: `dead_letter_rate` = 0.25 is high: median 0.02, MAD 0.001, modified z +155.1 (over 7 runs)"
    )
    assert expectation["text"]["text"] == (
        ":x: expectation `amount_positive` (between, severity error) on `amount`: 12 of 1,000 rows failing. amount < 0"
    )
    assert msg["text"].splitlines()[0] == header["text"]["text"]
    assert len(msg["text"].splitlines()) == 4


def test_relative_rule_anomaly_line_says_values_were_constant():
    a = dict(ANOMALY, score=None, mad=0.0, rule="relative", runs=6)
    line = alert_message("events", "r", [a], [])["blocks"][1]["text"]["text"]
    assert "the 6 earlier values were constant" in line


def test_many_findings_stay_within_slack_block_limit():
    msg = alert_message("events", "r", [dict(ANOMALY, metric=f"m{i}") for i in range(60)], [])
    assert len(msg["blocks"]) == 47  # header + 45 findings + overflow line
    assert msg["blocks"][-1]["text"]["text"] == "... and 15 more (see the run report)"


def test_send_posts_json_to_the_webhook():
    with Receiver() as rx:
        result = send_alert(rx.url + "/services/T0/B0/x", "events", "run-1", [ANOMALY], [FAILED])
    assert (result.sent, result.status, result.attempts, result.error) == (True, 200, 1, None)
    [req] = rx.requests
    assert (req.method, req.path) == ("POST", "/services/T0/B0/x")
    assert req.headers["content-type"].startswith("application/json")
    assert req.json() == alert_message("events", "run-1", [ANOMALY], [FAILED])


def test_nothing_to_report_sends_nothing():
    with Receiver() as rx:
        result = send_alert(rx.url, "events", "run-1", [], [])
    assert (result.sent, result.attempts) == (False, 0)
    assert rx.requests == []


def test_5xx_is_retried_with_backoff():
    sleeps = []
    with Receiver(statuses=[503, 500]) as rx:
        result = send_alert(rx.url, "events", "r", [ANOMALY], [], retries=3, sleep=sleeps.append, backoff=0.5)
    assert (result.sent, result.status, result.attempts) == (True, 200, 3)
    assert sleeps == [0.5, 1.0]
    assert [r.status for r in rx.requests] == [503, 500, 200]


def test_retries_are_bounded_and_failure_is_returned():
    sleeps = []
    with Receiver(default_status=502) as rx:
        result = send_alert(rx.url, "events", "r", [ANOMALY], [], retries=2, sleep=sleeps.append, backoff=1.0)
    assert (result.sent, result.status, result.attempts) == (False, 502, 3)
    assert result.error == "HTTP 502 Bad Gateway"
    assert sleeps == [1.0, 2.0]
    assert len(rx.requests) == 3


def test_4xx_is_not_retried():
    with Receiver(default_status=404) as rx:
        result = send_alert(rx.url, "events", "r", [ANOMALY], [], sleep=lambda s: None)
    assert (result.sent, result.status, result.attempts) == (False, 404, 1)
    assert len(rx.requests) == 1


def test_connection_refused_is_returned_not_raised():
    sleeps = []
    result = send_alert(closed_port_url(), "events", "r", [], [FAILED], retries=2, sleep=sleeps.append)
    assert (result.sent, result.status, result.attempts) == (False, None, 3)
    assert "refused" in result.error.lower()
    assert sleeps == [1.0, 2.0]


def test_bad_webhook_url_raises():
    with pytest.raises(ValueError, match="webhook_url"):
        send_alert("ftp://example.com/hook", "events", "r", [ANOMALY], [])
