from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.windows import WindowedAggregate

UTC = timezone.utc


def events(rows):
    return pa.table(
        {
            "ts": pa.array([r[0] for r in rows], pa.timestamp("us", tz="UTC")),
            "event_type": [r[1] for r in rows],
            "country": pa.array([r[2] for r in rows], pa.string()),
            "user_id": [r[3] for r in rows],
            "amount": pa.array([r[4] for r in rows], pa.float64()),
        }
    )


def h(hour, minute=0):
    return datetime(2024, 1, 1, hour, minute, tzinfo=UTC)


def test_hourly_windows_counts_distinct_users_and_exact_sums(pipeline):
    # One table spanning two windows, and a second table adding to the first window.
    a = events(
        [
            (h(10, 1), "purchase", "US", "u1", 0.1),
            (h(10, 59), "purchase", "US", "u1", 0.2),
            (h(10, 30), "purchase", None, "u2", 5.0),
            (h(11, 0), "view", "US", "u1", None),
        ]
    )
    b = events([(h(10, 5), "purchase", "US", "u3", 0.7), (h(10, 6), "purchase", None, "u2", None)])
    with pipeline() as p:
        out = p | beam.Create([a, b]) | WindowedAggregate()
        flat = out | beam.FlatMap(lambda t: [tuple(r.values()) for r in t.to_pylist()])
        assert_that(
            flat,
            equal_to(
                [
                    (h(10), h(11), "purchase", None, 2, 1, 5.0),
                    (h(10), h(11), "purchase", "US", 3, 2, 1.0),
                    (h(11), h(12), "view", "US", 1, 1, 0.0),
                ]
            ),
        )


def test_window_size_is_configurable(pipeline):
    a = events([(h(10, 1), "view", "US", "u1", None), (h(10, 40), "view", "US", "u1", None)])
    with pipeline() as p:
        out = p | beam.Create([a]) | WindowedAggregate(window_seconds=1800)
        starts = out | beam.FlatMap(lambda t: t.column("window_start").to_pylist())
        assert_that(starts, equal_to([h(10), h(10, 30)]))


def test_config_errors():
    with pytest.raises(ValueError):
        WindowedAggregate(window_seconds=0)
    with pytest.raises(ValueError):
        WindowedAggregate(group_by=())
    with pytest.raises(ValueError):
        WindowedAggregate(allowed_lateness_seconds=-1)
