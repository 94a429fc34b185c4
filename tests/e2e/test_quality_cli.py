"""Quality and operations through the CLI: write-audit-publish, quarantine, bad expectation
files, the metrics history with anomalies, and the webhook/lineage/Pushgateway deliveries
(against local HTTP receivers)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from beam_pipelines.observability.history import MetricsHistory, run_metrics
from tests.e2e.helpers import cli, datagen, file_bytes, one_line_error, report
from tests.receivers import Receiver

ROWS = 2000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return datagen(tmp_path_factory.mktemp("quality") / "in", "jsonl", rows=ROWS, dirty=0.1, seed=5)


def published(out) -> dict:
    """The published outputs' bytes (not the staging area, the lineage log or the history)."""
    return {k: v for k, v in file_bytes(out).items() if k.split("/", 1)[0] in ("curated", "aggregates", "dlq", "_run")}


def write_yaml(path, body: str):
    path.write_text(body)
    return path


def test_a_failed_error_expectation_publishes_nothing_and_keeps_the_previous_outputs(data, tmp_path):
    out = tmp_path / "out"
    first = cli("--pipeline=events", f"--input={data}/*.jsonl", f"--output={out}", "--history=none")
    assert first.returncode == 0, first.stderr
    before = published(out)
    strict = write_yaml(
        tmp_path / "strict.yaml",
        "expectations:\n"
        "  - {name: tiny_amounts, kind: between, column: amount, max: 1, severity: error, action: count}\n",
    )
    proc = cli("--pipeline=events", f"--input={data}/*.jsonl", f"--output={out}", f"--expectations={strict}",
               "--history=none")  # fmt: skip
    line = one_line_error(proc, 1)
    assert "audit failed, nothing published" in line and "tiny_amounts" in line
    assert published(out) == before  # the previous publish, byte for byte
    staged = [p for p in (out / "_staging").iterdir()]
    assert len(staged) == 1 and (staged[0] / "_run" / "report.html").is_file()
    kept = json.loads((staged[0] / "_run" / "report.json").read_text())
    (result,) = kept["expectations"]
    assert result["name"] == "tiny_amounts" and result["passed"] is False and result["failing"] > 0
    entries = [json.loads(line) for line in (out / "_audit" / "log.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in entries] == ["started", "published", "started", "audit_failed"]
    assert entries[-1]["what"]["staging"] == str(staged[0]) and "tiny_amounts" in entries[-1]["what"]["error"]


def test_quarantined_rows_become_dead_letters_and_conservation_holds(data, tmp_path):
    out = tmp_path / "out"
    spec = write_yaml(
        tmp_path / "q.yaml",
        "expectations:\n"
        "  - {name: no_refunds, kind: accepted_values, column: event_type,\n"
        "     values: [view, click, add_to_cart, purchase], severity: warn, action: quarantine}\n",
    )
    base = cli("--pipeline=events", f"--input={data}/*.jsonl", f"--output={tmp_path / 'base'}", "--expectations=none")
    proc = cli("--pipeline=events", f"--input={data}/*.jsonl", f"--output={out}", f"--expectations={spec}")
    assert base.returncode == 0 and proc.returncode == 0, proc.stderr
    plain, checked = report(tmp_path / "base"), report(out)
    quarantined = checked["dead_letter_reasons"]["expectation:no_refunds"]
    assert quarantined > 0
    assert checked["counts"]["curated"] == plain["counts"]["curated"] - quarantined
    assert checked["counts"]["dead_lettered"] == plain["counts"]["dead_lettered"] + quarantined
    assert checked["conservation_ok"] is True and "expectations" not in plain
    letters = [json.loads(x) for f in (out / "dlq").glob("*.jsonl") for x in f.read_text().splitlines()]
    refunds = [d for d in letters if d["reason"] == "expectation:no_refunds"]
    assert len(refunds) == quarantined
    assert all(d["stage"] == "quality" and '"refund"' in d["raw"].lower() for d in refunds)


@pytest.mark.parametrize(
    "body, culprit",
    [
        ("expectations:\n  - {name: a, kind: not_null, column: amout, severity: warn}\n", "amout"),
        ("expectations:\n  - {name: a, kind: telepathy, column: amount, severity: warn}\n", "telepathy"),
        ("expectations: [ {name: a, kind: not_null\n", "YAML"),
    ],
)
def test_a_bad_expectations_file_is_a_usage_error_before_any_data_is_read(data, tmp_path, body, culprit):
    spec = write_yaml(tmp_path / "bad.yaml", body)
    proc = cli("--pipeline=events", f"--input={data}/*.jsonl", f"--output={tmp_path / 'out'}",
               f"--expectations={spec}")  # fmt: skip
    line = one_line_error(proc, 2)
    assert culprit.lower() in line.lower() and "--expectations" in line
    assert not (tmp_path / "out").exists()


def test_history_anomaly_alert_lineage_and_pushgateway(data, tmp_path):
    out = tmp_path / "out"
    history = tmp_path / "history.sqlite"
    # Six earlier runs of a clean feed (dead-letter rate ~1%); this one is 10% dirty.
    steady = {"counts": {"read": ROWS, "curated": ROWS - 20, "dead_lettered": 20, "duplicates": 0, "late": 0,
                         "aggregates": 900}, "dead_letter_reasons": {"malformed": 20}, "quality": {}}  # fmt: skip
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with MetricsHistory.open(str(history)) as store:
        for i in range(6):
            steady["counts"]["dead_lettered"] = 20 + i % 2
            store.record("events", f"r{i}", start + timedelta(days=i), run_metrics(steady))
    hooks, lineage, gateway = Receiver().start(), Receiver().start(), Receiver().start()
    try:
        proc = cli(
            "--pipeline=events", f"--input={data}/*.jsonl", f"--output={out}", f"--history={history}",
            f"--alert_webhook={hooks.url}/hook", f"--lineage={lineage.url}", f"--pushgateway={gateway.url}",
        )  # fmt: skip
    finally:
        for r in (hooks, lineage, gateway):
            r.stop()
    assert proc.returncode == 0, proc.stderr
    rep = report(out)
    flagged = {a["metric"] for a in rep["anomalies"]}
    assert "dead_letter_rate" in flagged
    assert "anomalies against 6 earlier runs: " in proc.stdout and "dead_letter_rate" in proc.stdout
    (alert,) = hooks.requests
    assert alert.method == "POST" and alert.path == "/hook" and "dead_letter_rate" in alert.json()["text"]
    events = [r.json() for r in lineage.requests]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]
    assert {d["name"].rsplit("/", 1)[-1] for d in events[1]["outputs"]} == {"curated", "aggregates", "dlq"}
    (pushed,) = gateway.requests
    assert pushed.method == "PUT" and pushed.path.startswith("/metrics/job/beam_pipelines")
    assert f'beam_pipelines_rows_total{{pipeline="events",stage="read"}} {ROWS}' in pushed.text().replace(".0\n", "\n")
    assert pushed.text() == (out / "_run" / "metrics.prom").read_text()
    with MetricsHistory.open(str(history)) as store:
        assert len(store.last_runs("events", 20)) == 7  # this run was recorded too


def test_unreachable_deliveries_do_not_fail_a_finished_run(data, tmp_path):
    dead = "http://127.0.0.1:9"  # discard port: nothing answers
    proc = cli("--pipeline=events", f"--input={data}/*.jsonl", f"--output={tmp_path / 'out'}",
               f"--lineage={dead}", f"--pushgateway={dead}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "not delivered: " in proc.stdout and "pushgateway" in proc.stdout
    summary = json.loads((tmp_path / "out" / "_run" / "summary.json").read_text())
    assert summary["deliveries"]["pushgateway"].startswith("failed")
