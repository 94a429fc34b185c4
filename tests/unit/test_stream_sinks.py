"""Streaming dedup (keyed state) and the per-element file sink."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from tests.conftest import rows
from tests.unit.state_doubles import Bag, Value
from transforms.dedup_stream import DeduplicateStream
from transforms.sinks.files import write_parquet
from transforms.sinks.postgres import RetryBudget
from transforms.sinks.stream_files import WriteTableFiles, content_name

UTC = timezone.utc
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def batch(ids, minutes) -> pa.Table:
    return pa.table(
        {
            "event_id": pa.array(ids, pa.string()),
            "ts": pa.array([BASE + timedelta(minutes=m) for m in minutes], pa.timestamp("us", tz="UTC")),
            "_raw": pa.array([f"raw-{i}-{m}" for i, m in zip(ids, minutes)], pa.string()),
        }
    )


def test_stream_dedup_keeps_first_copy_across_tables_and_counts_the_rest(pipeline):
    tables = [batch(["a", "b", "a"], [0, 1, 2]), batch(["b", "c"], [3, 4]), batch(["c", "d", "a"], [5, 6, 7])]
    p = pipeline()
    out = p | beam.Create(tables) | DeduplicateStream("event_id", "ts", horizon_seconds=3600, partitions=2)
    kept = out["unique"] | "Ids" >> beam.FlatMap(lambda t: t.column("event_id").to_pylist())
    dups = out["stats"] | "Dups" >> beam.Map(lambda d: d["duplicates"]) | beam.CombineGlobally(sum)
    assert_that(kept, equal_to(["a", "b", "c", "d"]), label="Kept")
    assert_that(dups, equal_to([4]), label="Dups")
    p.run().wait_until_finish()


def _stamp(table: pa.Table, minutes: int):
    return TimestampedValue(table, Timestamp.from_utc_datetime(BASE + timedelta(minutes=minutes)))


def _dedup_stream(events, want: list[str]) -> None:
    """Checks the event ids DeduplicateStream keeps (1-hour horizon) for ``events``: (table,
    element timestamp in minutes after BASE), as a source stamps batches at its watermark."""
    p = TestPipeline(runner=FnApiRunner())
    stamped = p | beam.Create(events) | "Stamp" >> beam.MapTuple(_stamp).with_output_types(pa.Table)
    out = stamped | DeduplicateStream("event_id", "ts", horizon_seconds=3600, partitions=1)
    kept = out["unique"] | "Ids" >> beam.FlatMap(lambda t: t.column("event_id").to_pylist())
    assert_that(kept, equal_to(want))
    p.run().wait_until_finish()


def test_stream_dedup_remembers_keys_until_a_stamp_passes_the_horizon():
    # A row 150 minutes of event time ahead (one Kafka partition read ahead of another) does not
    # make the first "a" forgotten: the stamps (the slowest partition's watermark) have not
    # moved, so its copy is a duplicate.
    _dedup_stream([(batch(["a"], [0]), 0), (batch(["z"], [150]), 0), (batch(["a"], [1]), 0)], ["a", "z"])


def test_stream_dedup_forgets_keys_once_a_stamp_passes_the_horizon():
    # Stamped past the 1-hour horizon, the first "a" is forgotten (a copy would be late for any
    # window anyway), so a copy then passes; a key seen after that is remembered again.
    events = [(batch(["a", "b"], [0, 100]), 0), (batch(["a", "b"], [121, 101]), 61), (batch(["a"], [122]), 61)]
    _dedup_stream(events, ["a", "b", "a"])


def test_bad_stream_dedup_config():
    with pytest.raises(ValueError, match="horizon"):
        DeduplicateStream("event_id", "ts", horizon_seconds=0)
    with pytest.raises(ValueError, match="partitions"):
        DeduplicateStream("event_id", "ts", horizon_seconds=10, partitions=0)


def test_content_name_depends_on_the_set_of_ids_only():
    assert content_name(pa.array(["b", "a", "c"])) == content_name(pa.array(["c", "b", "a"]))
    assert content_name(pa.array(["a", "b"])) != content_name(pa.array(["ab"]))
    assert content_name(pa.array(["a", None])) != content_name(pa.array(["a"]))


def test_stream_files_split_by_window_and_rewrite_the_same_rows_to_the_same_file(pipeline, tmp_path):
    table = batch(["x", "y", "z"], [5, 70, 10])  # two hourly windows on one day
    for attempt in range(2):  # a replayed element overwrites its own file
        p = pipeline()
        written = (
            p
            | f"Create{attempt}" >> beam.Create([table])
            | WriteTableFiles(
                str(tmp_path), write_parquet, ".parquet", id_column="event_id", sort_by=("event_id",), date_field="ts"
            )
        )
        assert_that(written | beam.Map(lambda d: d["rows"]), equal_to([2, 1]))
        p.run().wait_until_finish()
    files = sorted(tmp_path.rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["dt=2024-01-01", "dt=2024-01-01"]
    assert sorted(f.name.split("-")[1] for f in files) == ["w0000", "w0100"]
    assert sorted(r["event_id"] for r in rows([pq.read_table(f) for f in files])) == ["x", "y", "z"]
    assert not list(tmp_path.rglob(".tmp-*"))


def test_stream_files_config_errors(tmp_path):
    with pytest.raises(ValueError, match="divide a day"):
        WriteTableFiles(str(tmp_path), write_parquet, ".parquet", id_column="event_id", window_seconds=7 * 3600)
    with pytest.raises(ValueError, match="required"):
        WriteTableFiles(str(tmp_path), write_parquet, ".parquet", id_column="")


def test_the_retry_budget_doubles_its_waits_up_to_a_cap_and_stops_at_the_deadline():
    now, waits = [0.0], []

    def sleep(s):
        waits.append(s)
        now[0] += s

    retry = RetryBudget(30.0, first_wait_s=0.5, max_wait_s=8.0, clock=lambda: now[0], sleep=sleep)
    while retry.wait():
        now[0] += 1.0  # each try itself takes a second
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 0.5]  # the last wait ends at the deadline
    assert retry.tries == len(waits) + 1
    assert sum(waits) + len(waits) == 31.0


def _seen_fn():
    from transforms.dedup_stream import _SeenFn

    fn = _SeenFn("event_id", "ts", 3600 * 1_000_000)
    fn.setup()
    return fn


def _kept(fn, state, ids, minutes):
    stamp = Timestamp.from_utc_datetime(BASE)
    out = fn.process((0, batch(ids, minutes)), stamp, "w", *state)
    return [i for t in out if isinstance(t, pa.Table) for i in t.column("event_id").to_pylist()]


def test_seen_keys_in_memory_follow_the_state_across_instances_and_discarded_bundles():
    state = (Bag(), Value(), Value())  # keys, token, stamp: as the runner keeps them
    a, b = _seen_fn(), _seen_fn()
    assert _kept(a, state, ["a", "b"], [0, 1]) == ["a", "b"]
    assert _kept(b, state, ["b", "c"], [2, 3]) == ["c"]  # b never saw "b": it reads the state
    assert _kept(a, state, ["c", "d"], [4, 5]) == ["d"]  # a's memory is stale ("c" came via b)
    committed = ([*state[0].items], state[1].value, state[2].value)
    assert _kept(a, state, ["e"], [6]) == ["e"]
    state[0].items, state[1].value, state[2].value = committed  # that bundle failed: its writes are gone
    assert _kept(a, state, ["e", "a"], [6, 7]) == ["e"]  # retried: "e" is new again, "a" still known
