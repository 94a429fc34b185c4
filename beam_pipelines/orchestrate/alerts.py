"""Failures and missed deadlines of a pipeline's DAG, posted to the webhook the pipelines' own run
alerts go to (Slack-compatible: ``{"text", "blocks"}``).

The URL is the Airflow variable ``beam_pipelines_alert_webhook`` (or $BEAM_PIPELINES_ALERT_WEBHOOK),
the value the DAG also passes to the CLI as ``--alert_webhook``. Without one nothing is posted. A
delivery that fails is logged: an alert never changes a task's outcome.
"""

from __future__ import annotations

import json
import logging

from beam_pipelines.observability.delivery import deliver

__all__ = ["deadline_missed", "message", "post", "task_failed"]

_LOG = logging.getLogger(__name__)


def message(title: str, lines: list[str], link: str | None = None) -> dict:
    """The Slack-compatible payload: a header, an optional link, one section per line."""
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    if link:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Task log>"}})
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": line[:2900]}} for line in lines]
    return {"text": "\n".join([title, *lines] + ([f"log: {link}"] if link else [])), "blocks": blocks}


def post(payload: dict, webhook: str | None = None) -> bool:
    """Posts ``payload`` to the webhook; False (and a log line) when there is none or it failed."""
    if webhook is None:
        from beam_pipelines.orchestrate.operators import setting

        webhook = setting("alert_webhook")
    if not webhook:
        _LOG.info("no alert webhook set (variable beam_pipelines_alert_webhook): alert not sent")
        return False
    body = json.dumps(payload).encode()
    result = deliver("POST", webhook, body, {"Content-Type": "application/json; charset=utf-8"}, retries=2)
    if not result.sent:
        _LOG.warning("alert not delivered: %s", result.error)
    return result.sent


def task_failed(context) -> None:
    """``on_failure_callback`` of every task: called once its retries are used up."""
    ti, run = context["ti"], context["dag_run"]
    error = context.get("exception")
    title = f"beam-pipelines {ti.dag_id}: task {ti.task_id} failed (try {ti.try_number})"
    lines = [f"run `{run.run_id}`", f"error: {str(error).strip()[:1500] if error else 'unknown'}"]
    post(message(title, lines, getattr(ti, "log_url", None)))


def deadline_missed(context: dict, pipeline: str, deadline: str) -> None:
    """Deadline callback (run by the executor when a run has not finished in time)."""
    run = (context or {}).get("dag_run") or {}
    when = ((context or {}).get("deadline") or {}).get("deadline_time")
    title = f"beam-pipelines {pipeline}: run missed its deadline ({deadline} after it was queued)"
    lines = [f"run `{run.get('run_id')}` is {run.get('state')}", f"deadline: {when}"]
    post(message(title, lines))
