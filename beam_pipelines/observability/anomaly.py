"""Anomaly detection on run metrics: robust modified z-scores against the last runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["detect"]

# Iglewicz & Hoaglin: 0.6745 is the 0.75 quantile of the standard normal, so MAD/0.6745
# estimates the standard deviation for normal data.
_K = 0.6745


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def detect(
    current: Mapping[str, float],
    history: Sequence[Mapping],
    min_runs: int = 5,
    threshold: float = 3.5,
    tolerance: float = 0.1,
) -> list[dict]:
    """Metrics of the current run that are far from their recent values.

    For each metric of ``current`` with at least ``min_runs`` finite values in ``history``,
    the score is the modified z-score ``0.6745 * (x - median) / MAD`` over those values, and
    the metric is flagged when ``|score| > threshold``.

    When MAD is 0 (at least half of the past values are identical) the z-score is undefined;
    the metric is then flagged only if it differs from the median by more than ``tolerance``
    relative to the median (any change at all when the median is 0), and ``score`` is None
    with ``"rule": "relative"``. Metrics with fewer points are not judged; history metrics
    absent from ``current`` are not judged either.

    Args:
        current: This run's metrics (see ``history.run_metrics``).
        history: Earlier runs, as ``MetricsHistory.last_runs`` returns them
            (``[{"metrics": {...}, ...}]``); the caller chooses how many.
        min_runs: Past values a metric needs before it is judged.
        threshold: Absolute modified z-score above which a value is anomalous.
        tolerance: Relative change that counts when MAD is 0.

    Returns:
        ``[{"metric", "value", "median", "mad", "score", "direction": "high"|"low", "runs",
        "rule": "mad"|"relative"}]`` sorted by metric name.
    """
    if min_runs < 1:
        raise ValueError(f"min_runs must be >= 1, got {min_runs}")
    if threshold <= 0 or tolerance < 0:
        raise ValueError("threshold must be > 0 and tolerance >= 0")
    out = []
    for metric in sorted(current):
        value = current[metric]
        if not _finite(value):
            continue
        past = [run["metrics"][metric] for run in history if _finite((run.get("metrics") or {}).get(metric))]
        if len(past) < min_runs:
            continue
        median = statistics.median(past)
        mad = statistics.median(abs(v - median) for v in past)
        delta = value - median
        if mad > 0:
            score = _K * delta / mad
            flagged, rule = abs(score) > threshold, "mad"
        else:
            score = None
            flagged, rule = abs(delta) > tolerance * abs(median), "relative"
        if flagged:
            out.append(
                {
                    "metric": metric,
                    "value": float(value),
                    "median": float(median),
                    "mad": float(mad),
                    "score": None if score is None else round(score, 4),
                    "direction": "high" if delta > 0 else "low",
                    "runs": len(past),
                    "rule": rule,
                }
            )
    return out
