"""What the launcher does around a batch run for quality and operations.

Before the run: an OpenLineage START. After it, on the staged outputs: the audit
(write-audit-publish: an error-severity expectation that failed stops the publish). After a
publish: the metrics history with anomaly detection, the alert webhook, Prometheus text (and
a push), OpenLineage COMPLETE, and ``_run/report.html``. A failed run sends FAIL.

Network deliveries (webhook, Pushgateway, lineage over HTTP) never fail a finished run: each
returns a result, and a failed one is logged and named in the summary's ``deliveries``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from apache_beam.io.filesystems import FileSystems

from beam_pipelines import publish
from beam_pipelines.observability.alerts import failed_expectations, send_alert
from beam_pipelines.observability.anomaly import detect
from beam_pipelines.observability.history import MetricsHistory, run_metrics
from beam_pipelines.observability.lineage import LineageEmitter
from beam_pipelines.observability.prometheus import prometheus_text, push
from beam_pipelines.report_html import render_report
from transforms.quality.expectations import failed_errors
from transforms.sinks.files import join_path

__all__ = ["Observer", "audit_failure", "read_json"]

_LOG = logging.getLogger(__name__)
PIPELINE = "events"


def read_json(path: str) -> dict | None:
    """A JSON file on any Beam filesystem, or None when it is not there."""
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as fh:
        return json.loads(fh.read())


def _write(path: str, text: str, mime: str) -> None:
    with FileSystems.create(path, mime_type=mime) as fh:
        fh.write(text.encode())


def audit_failure(report: dict) -> str | None:
    """One line naming the error-severity expectations that failed, or None when the audit passed."""
    failed = failed_errors(report.get("expectations") or [])
    if not failed:
        return None
    first = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"expectation {first['name']!r} failed: {first['detail']}{more}"


def _default_under(output: str, flag_value: str | None, relpath: str) -> str | None:
    if flag_value is not None:
        return None if flag_value.lower() == "none" else flag_value
    return join_path(output, relpath) if publish.is_local(output) else None


@dataclass
class Observer:
    """The run's observability targets (from the flags) and what was delivered.

    Args:
        output: The run's ``--output``.
        input: The input pattern (lineage input dataset).
        history: ``--history`` (None: default under --output; 'none': off).
        history_runs: Earlier runs compared with.
        alert_webhook: Slack-compatible webhook URL, or None.
        lineage: ``--lineage`` (None: default under --output; 'none': off).
        pushgateway: Pushgateway URL, or None.
    """

    output: str
    input: str
    history: str | None = None
    history_runs: int = 20
    alert_webhook: str | None = None
    lineage: str | None = None
    pushgateway: str | None = None
    deliveries: dict = field(default_factory=dict)

    def __post_init__(self):
        self.history = _default_under(self.output, self.history, "_history/metrics.sqlite")
        target = _default_under(self.output, self.lineage, "_lineage/events.jsonl")
        self._lineage = LineageEmitter(target) if target else None

    def _delivered(self, what: str, result) -> None:
        ok = bool(getattr(result, "sent", False))
        self.deliveries[what] = "sent" if ok else f"failed: {getattr(result, 'error', None)}"
        if not ok:
            _LOG.warning("%s not delivered: %s", what, getattr(result, "error", None))

    def started(self, run_id: str, when: datetime) -> None:
        if self._lineage is not None:
            self._delivered("lineage_start", self._lineage.start(run_id, PIPELINE, self.input, when))

    def failed(self, run_id: str, error: BaseException | str, when: datetime) -> None:
        if self._lineage is not None:
            self._delivered("lineage_fail", self._lineage.fail(run_id, PIPELINE, self.input, error, when))

    def history_and_anomalies(self, run_id: str, when: datetime, report: dict, profile: dict | None) -> tuple:
        """Records this run's metrics; returns (history including this run, anomalies)."""
        if self.history is None:
            return [], []
        metrics = run_metrics(report, profile)
        with MetricsHistory.open(self.history) as store:
            earlier = store.last_runs(PIPELINE, self.history_runs, before_run_id=run_id)
            anomalies = detect(metrics, earlier)
            store.record(PIPELINE, run_id, when, metrics)
        history = earlier + [{"run_id": run_id, "recorded_at": when.isoformat(), "metrics": metrics}]
        return history, anomalies

    def finished(self, run_id: str, when: datetime, summary: dict, beam_metrics, run_dir: str) -> dict:
        """Everything after a publish; returns the report.html document (also written)."""
        report = read_json(join_path(run_dir, "report.json")) or {}
        profile = read_json(join_path(run_dir, "profile.json"))
        history, anomalies = self.history_and_anomalies(run_id, when, report, profile)
        report["anomalies"] = anomalies
        _write(
            join_path(run_dir, "report.json"), json.dumps(report, indent=2, sort_keys=True) + "\n", "application/json"
        )
        failed = failed_expectations(report)
        if self.alert_webhook and (anomalies or failed):
            result = send_alert(self.alert_webhook, PIPELINE, run_id, anomalies, failed,
                                report_url=join_path(run_dir, "report.html"))  # fmt: skip
            self._delivered("alert", result)
        text = prometheus_text(beam_metrics, report, summary, PIPELINE)
        _write(join_path(run_dir, "metrics.prom"), text, "text/plain")
        if self.pushgateway:
            self._delivered("pushgateway", push(self.pushgateway, text, "beam_pipelines", {"pipeline": PIPELINE}))
        if self._lineage is not None:
            result = self._lineage.complete(run_id, PIPELINE, self.input, self.output, report, profile, when,
                                            tables=summary.get("lakehouse"))  # fmt: skip
            self._delivered("lineage_complete", result)
        doc = {"summary": summary, "report": report, "profile": profile, "history": history,
               "anomalies": anomalies, "published": True, "audit_error": None}  # fmt: skip
        _write(join_path(run_dir, "report.html"), render_report(doc), "text/html")
        return doc

    def audit_failed(self, summary: dict, run_dir: str, reason: str) -> None:
        """The page of a run whose outputs were kept back (written beside the staged outputs)."""
        report = read_json(join_path(run_dir, "report.json")) or {}
        profile = read_json(join_path(run_dir, "profile.json"))
        doc = {"summary": summary, "report": report, "profile": profile, "history": [], "anomalies": [],
               "published": False, "audit_error": reason}  # fmt: skip
        _write(join_path(run_dir, "report.html"), render_report(doc), "text/html")

    def close(self) -> None:
        if self._lineage is not None:
            self._lineage.close()
