from datetime import datetime, timedelta, timezone

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.window_spill import SpilledPartials
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


def test_window_config_errors_for_spilling():
    with pytest.raises(ValueError, match="bounded"):
        WindowedAggregate(spill_dir="/tmp/x", late_firings=True)
    with pytest.raises(ValueError, match="bounded"):
        WindowedAggregate(spill_dir="/tmp/x", early_firing_seconds=5)
    with pytest.raises(ValueError):
        WindowedAggregate(spill_dir="/tmp/x", partitions=0)


def random_events(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    base = int(h(0).timestamp() * 1_000_000)
    amounts = np.round(rng.uniform(0, 100, n), 2)
    return pa.table(
        {
            "ts": pa.array(base + rng.integers(0, 6 * 3_600_000_000, n), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "event_type": rng.choice(["view", "click", "purchase"], n),
            "country": pa.array(rng.choice(["US", "DE", None], n), pa.string()),
            "user_id": [f"u{i}" for i in rng.integers(0, 40, n)],
            "amount": pa.array(amounts, mask=rng.random(n) < 0.2),
        }
    )


def expected_rows(table: pa.Table) -> list[tuple]:
    """The aggregates computed directly in Python, row by row."""
    groups: dict = {}
    for r in table.to_pylist():
        start = r["ts"].replace(minute=0, second=0, microsecond=0)
        g = groups.setdefault((start, r["event_type"], r["country"]), [0, set(), 0])
        g[0] += 1
        g[1].add(r["user_id"])
        amount = r["amount"]
        g[2] += 0 if amount is None else round(amount * 100)
    rows = [
        (s, s + timedelta(hours=1), et, c, n, len(users), round(units / 100, 2))
        for (s, et, c), (n, users, units) in groups.items()
    ]
    return sorted(rows, key=row_key)


def row_key(r: tuple) -> tuple:
    return (r[0], r[2], r[3] or "")


def assert_aggregates(pipeline, batches, want, **kwargs) -> None:
    with pipeline() as p:
        out = p | beam.Create(batches) | WindowedAggregate(**kwargs)
        flat = out | beam.FlatMap(lambda t: [tuple(r.values()) for r in t.to_pylist()])
        assert_that(flat, equal_to(want))


@pytest.mark.parametrize("partitions", [1, 3])
def test_spilled_partials_give_the_same_aggregates(pipeline, tmp_path, partitions):
    batches = [random_events(seed, 500) for seed in range(4)]
    want = expected_rows(pa.concat_tables(batches))
    assert len(want) > 30
    assert_aggregates(pipeline, batches, want)
    assert_aggregates(pipeline, batches, want, spill_dir=str(tmp_path / "scratch"), partitions=partitions)
    # Partials went through files (one per flush, its partitions as record batches); none
    # through the runner.
    assert len(list((tmp_path / "scratch").rglob("*.arrow"))) >= 1


def test_spilled_partials_flush_mid_bundle_without_losing_rows(pipeline, tmp_path):
    table = random_events(9, 2000)
    spec = WindowedAggregate()._spec
    with pipeline() as p:
        out = (
            p
            | beam.Create([table.slice(i, 100) for i in range(0, 2000, 100)])
            | SpilledPartials(spec, partitions=2, spill_dir=str(tmp_path / "s"), flush_rows=150)
        )
        events = out | beam.Map(lambda t: pc.sum(t["_events"]).as_py()) | beam.CombineGlobally(sum)
        assert_that(events, equal_to([2000]))
    # 20 tables of 100 partial rows flushed every 150 rows: many flushes, not one per bundle.
    assert len(list((tmp_path / "s").rglob("*.arrow"))) >= 10
