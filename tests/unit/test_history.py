"""MetricsHistory on SQLite, and run_metrics from a report and profile."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from beam_pipelines.observability.history import MetricsHistory, run_metrics

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def history(tmp_path):
    with MetricsHistory.open(str(tmp_path / "_history" / "metrics.sqlite")) as h:
        yield h


def test_last_runs_oldest_first_limited_to_n(history):
    for i in range(6):
        history.record("events", f"run-{i}", at(i), {"count.read": 100.0 + i, "dead_letter_rate": i / 100})
    runs = history.last_runs("events", 3)
    assert [r["run_id"] for r in runs] == ["run-3", "run-4", "run-5"]
    assert runs[0]["metrics"] == {"count.read": 103.0, "dead_letter_rate": 0.03}
    assert runs[-1]["recorded_at"] == at(5)
    assert runs[-1]["recorded_at"].tzinfo is not None


def test_recorded_at_is_stored_as_utc_instant(history):
    plus_two = timezone(timedelta(hours=2))
    history.record("events", "a", datetime(2026, 3, 1, 14, 0, tzinfo=plus_two), {"m": 1.0})
    history.record("events", "b", datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc), {"m": 2.0})
    runs = history.last_runs("events", 5)
    # 14:00+02:00 is 12:00 UTC, so "a" is older than "b" although its local hour is later.
    assert [r["run_id"] for r in runs] == ["a", "b"]
    assert runs[0]["recorded_at"] == datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_before_run_id_excludes_that_run_and_later_ones(history):
    for i in range(5):
        history.record("events", f"run-{i}", at(i), {"m": float(i)})
    assert [r["run_id"] for r in history.last_runs("events", 10, before_run_id="run-3")] == [
        "run-0",
        "run-1",
        "run-2",
    ]
    assert [r["run_id"] for r in history.last_runs("events", 2, before_run_id="run-3")] == ["run-1", "run-2"]
    # A run id that was never recorded filters nothing.
    assert len(history.last_runs("events", 10, before_run_id="unknown")) == 5


def test_same_time_runs_are_ordered_by_run_id(history):
    history.record("events", "b", at(0), {"m": 2.0})
    history.record("events", "a", at(0), {"m": 1.0})
    assert [r["run_id"] for r in history.last_runs("events", 5)] == ["a", "b"]
    assert [r["run_id"] for r in history.last_runs("events", 5, before_run_id="b")] == ["a"]


def test_rerecording_a_run_replaces_it(history):
    history.record("events", "run-1", at(0), {"m": 1.0, "gone": 5.0})
    history.record("events", "run-1", at(1), {"m": 2.0})
    runs = history.last_runs("events", 10)
    assert len(runs) == 1
    assert runs[0]["metrics"] == {"m": 2.0}
    assert runs[0]["recorded_at"] == at(1)


def test_pipelines_are_kept_apart(history):
    history.record("events", "r1", at(0), {"m": 1.0})
    history.record("orders", "r1", at(0), {"m": 9.0})
    assert history.last_runs("events", 5)[0]["metrics"] == {"m": 1.0}
    assert history.last_runs("orders", 5)[0]["metrics"] == {"m": 9.0}
    assert history.last_runs("nothing", 5) == []


def test_history_persists_across_opens(tmp_path):
    path = str(tmp_path / "h.sqlite")
    with MetricsHistory.open(path) as h:
        h.record("events", "r1", at(0), {"m": 1.5})
    with MetricsHistory.open("sqlite:///" + path) as h:
        assert h.last_runs("events", 1)[0]["metrics"] == {"m": 1.5}
    rows = sqlite3.connect(path).execute("SELECT pipeline, run_id, metric, value FROM metrics_history").fetchall()
    assert rows == [("events", "r1", "m", 1.5)]


def test_values_with_quotes_are_stored_verbatim(history):
    # Names go through placeholders, never into the SQL text.
    name = "expectation.x'); DROP TABLE metrics_history; --.failing"
    history.record("ev'ents", "r'1", at(0), {name: 3.0})
    assert history.last_runs("ev'ents", 1)[0]["metrics"] == {name: 3.0}


def test_bad_input_raises_value_error(history, tmp_path):
    with pytest.raises(ValueError, match="timezone-aware"):
        history.record("events", "r1", datetime(2026, 3, 1, 12, 0), {"m": 1.0})
    with pytest.raises(ValueError, match="finite"):
        history.record("events", "r1", at(0), {"m": float("nan")})
    with pytest.raises(ValueError, match="n must be"):
        history.last_runs("events", 0)
    with pytest.raises(ValueError, match="file path or postgresql"):
        MetricsHistory.open("mysql://localhost/db")
    assert history.last_runs("events", 5) == []


REPORT = {
    "counts": {"read": 1000, "curated": 940, "dead_lettered": 50, "duplicates": 10, "late": 0, "aggregates": 24},
    "dead_letter_reasons": {"malformed": 20, "invalid_value": 30},
    "quality": {"invalid_email": 5, "invalid_country": 0},
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
    ],
}
PROFILE = {
    "rows": 940,
    "columns": {
        "amount": {
            "type": "double",
            "count": 940,
            "nulls": 94,
            "null_rate": 0.1,
            "distinct_approx": 512.4,
            "min": 0.0,
            "max": 99.5,
            "mean": 42.25,
            "stddev": 3.0,
        },
        "country": {
            "type": "string",
            "count": 940,
            "nulls": 0,
            "null_rate": 0.0,
            "distinct_approx": 12.0,
            "min": "DE",
            "max": "US",
            "mean": None,
            "stddev": None,
        },
    },
}


def test_run_metrics_from_report_and_profile():
    m = run_metrics(REPORT, PROFILE)
    assert m == {
        "count.read": 1000.0,
        "count.curated": 940.0,
        "count.dead_lettered": 50.0,
        "count.duplicates": 10.0,
        "count.late": 0.0,
        "count.aggregates": 24.0,
        "dead_letter_rate": 0.05,
        "dead_letter_rate.malformed": 0.02,
        "dead_letter_rate.invalid_value": 0.03,
        "quality_rate.invalid_email": 0.005,
        "quality_rate.invalid_country": 0.0,
        "expectation.amount_range.failing": 7.0,
        "null_rate.amount": 0.1,
        "mean.amount": 42.25,
        "distinct.amount": 512.4,
        "null_rate.country": 0.0,
        "distinct.country": 12.0,
    }


def test_run_metrics_of_an_empty_run_has_zero_rates():
    m = run_metrics({"counts": {"read": 0, "dead_lettered": 0}, "dead_letter_reasons": {}}, None)
    assert m == {"count.read": 0.0, "count.dead_lettered": 0.0, "dead_letter_rate": 0.0}


def test_run_metrics_round_trip_through_history(history):
    history.record("events", "r1", at(0), run_metrics(REPORT, PROFILE))
    assert history.last_runs("events", 1)[0]["metrics"] == run_metrics(REPORT, PROFILE)
