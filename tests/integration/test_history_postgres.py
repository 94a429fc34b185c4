"""MetricsHistory on a real PostgreSQL server (``pg_dsn`` from tests/services.py; it fails, never skips)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from beam_pipelines.observability.anomaly import detect
from beam_pipelines.observability.history import MetricsHistory, run_metrics

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def pipeline_name():
    # The server is shared by the session: each test keeps to its own pipeline name.
    return f"events-{uuid.uuid4().hex[:8]}"


def test_table_is_created_with_typed_columns(pg_dsn):
    MetricsHistory.open(pg_dsn).close()
    with psycopg.connect(pg_dsn) as conn:
        columns = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                ("metrics_history",),
            ).fetchall()
        )
        key = conn.execute(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'metrics_history'::regclass AND i.indisprimary"
        ).fetchone()[0]
    assert columns == {
        "pipeline": "text",
        "run_id": "text",
        "metric": "text",
        "value": "double precision",
        "recorded_at": "timestamp with time zone",
    }
    assert key == ["metric", "pipeline", "run_id"]


def test_record_and_last_runs(pg_dsn, pipeline_name):
    with MetricsHistory.open(pg_dsn) as h:
        for i in range(6):
            h.record(pipeline_name, f"run-{i}", T0 + timedelta(hours=i), {"count.read": 100.0 + i})
        runs = h.last_runs(pipeline_name, 3)
        assert [r["run_id"] for r in runs] == ["run-3", "run-4", "run-5"]
        assert runs[-1]["metrics"] == {"count.read": 105.0}
        assert runs[-1]["recorded_at"] == T0 + timedelta(hours=5)
        assert runs[-1]["recorded_at"].utcoffset() == timedelta(0)
        before = h.last_runs(pipeline_name, 10, before_run_id="run-2")
        assert [r["run_id"] for r in before] == ["run-0", "run-1"]


def test_offsets_are_compared_as_instants(pg_dsn, pipeline_name):
    with MetricsHistory.open(pg_dsn) as h:
        h.record(pipeline_name, "a", datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), {"m": 1.0})
        h.record(pipeline_name, "b", datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc), {"m": 2.0})
        assert [r["run_id"] for r in h.last_runs(pipeline_name, 5)] == ["a", "b"]


def test_rerecord_replaces_and_survives_reopen(pg_dsn, pipeline_name):
    with MetricsHistory.open(pg_dsn) as h:
        h.record(pipeline_name, "r1", T0, {"m": 1.0, "gone": 2.0})
        h.record(pipeline_name, "r1", T0 + timedelta(minutes=1), {"m": 3.0, "it's": 4.0})
    with MetricsHistory.open(pg_dsn) as h:
        [run] = h.last_runs(pipeline_name, 5)
    assert run["metrics"] == {"m": 3.0, "it's": 4.0}
    assert run["recorded_at"] == T0 + timedelta(minutes=1)


def test_history_feeds_anomaly_detection(pg_dsn, pipeline_name):
    report = {"counts": {"read": 1000, "dead_lettered": 20}, "dead_letter_reasons": {"malformed": 20}}
    with MetricsHistory.open(pg_dsn) as h:
        for i in range(7):
            r = {"counts": {"read": 1000 + 10 * (i % 3), "dead_lettered": 20 + i % 2}, "dead_letter_reasons": {}}
            h.record(pipeline_name, f"run-{i}", T0 + timedelta(hours=i), run_metrics(r))
        current = run_metrics(dict(report, counts={"read": 1000, "dead_lettered": 200}))
        h.record(pipeline_name, "now", T0 + timedelta(hours=8), current)
        past = h.last_runs(pipeline_name, 20, before_run_id="now")
    assert len(past) == 7
    found = {a["metric"]: a for a in detect(current, past)}
    assert set(found) == {"count.dead_lettered", "dead_letter_rate"}
    assert found["dead_letter_rate"]["direction"] == "high"
