"""Anomaly detection: modified z-scores, the MAD == 0 rule, and what is not judged."""

from __future__ import annotations

import pytest

from beam_pipelines.observability.anomaly import detect


def runs(metric: str, values) -> list[dict]:
    return [{"run_id": f"r{i}", "metrics": {metric: v}} for i, v in enumerate(values)]


PAST = [100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 103.0]  # median 100, MAD 1


def test_high_value_is_flagged_with_its_score():
    [a] = detect({"count.read": 110.0}, runs("count.read", PAST))
    assert a == {
        "metric": "count.read",
        "value": 110.0,
        "median": 100.0,
        "mad": 1.0,
        "score": 6.745,  # 0.6745 * (110 - 100) / 1
        "direction": "high",
        "runs": 7,
        "rule": "mad",
    }


def test_low_value_is_flagged_low():
    [a] = detect({"count.read": 90.0}, runs("count.read", PAST))
    assert (a["direction"], a["score"]) == ("low", -6.745)


def test_values_within_threshold_are_not_flagged():
    # 0.6745 * 5 / 1 = 3.37 <= 3.5; 0.6745 * 6 / 1 = 4.05 > 3.5
    assert detect({"count.read": 105.0}, runs("count.read", PAST)) == []
    assert [a["metric"] for a in detect({"count.read": 106.0}, runs("count.read", PAST))] == ["count.read"]
    assert detect({"count.read": 106.0}, runs("count.read", PAST), threshold=5.0) == []


def test_too_few_runs_are_not_judged():
    assert detect({"count.read": 1e9}, runs("count.read", PAST[:4])) == []
    assert len(detect({"count.read": 1e9}, runs("count.read", PAST[:4]), min_runs=4)) == 1


def test_runs_without_the_metric_do_not_count():
    history = runs("count.read", PAST[:4]) + [{"run_id": "x", "metrics": {"other": 1.0}}]
    assert detect({"count.read": 1e9}, history) == []


def test_mad_zero_uses_relative_tolerance():
    constant = runs("dead_letter_rate", [0.02] * 6)
    assert detect({"dead_letter_rate": 0.021}, constant) == []  # 5% change, within 10%
    [a] = detect({"dead_letter_rate": 0.03}, constant)
    assert a["rule"] == "relative" and a["score"] is None
    assert (a["median"], a["mad"], a["direction"], a["runs"]) == (0.02, 0.0, "high", 6)
    assert detect({"dead_letter_rate": 0.021}, constant, tolerance=0.01)[0]["value"] == 0.021


def test_mad_zero_with_median_zero_flags_any_change():
    zeros = runs("count.late", [0.0, 0.0, 0.0, 0.0, 0.0, 3.0])
    assert detect({"count.late": 0.0}, zeros) == []
    assert detect({"count.late": 1.0}, zeros)[0]["direction"] == "high"


def test_several_metrics_sorted_by_name():
    history = [{"metrics": {"b": 10.0 + i % 2, "a": 5.0 + i % 2, "c": 1.0 + i % 2}} for i in range(6)]
    found = detect({"b": 50.0, "a": -50.0, "c": 1.5, "new": 7.0}, history)
    assert [(a["metric"], a["direction"]) for a in found] == [("a", "low"), ("b", "high")]


def test_non_finite_current_values_are_skipped():
    assert detect({"count.read": float("nan")}, runs("count.read", PAST)) == []


def test_bad_parameters_raise():
    with pytest.raises(ValueError):
        detect({}, [], min_runs=0)
    with pytest.raises(ValueError):
        detect({}, [], threshold=0)
