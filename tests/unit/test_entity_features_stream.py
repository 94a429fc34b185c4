"""EntityFeaturesStream with TestStream (Beam's bundle-based DirectRunner in streaming mode):
events arriving out of order within the allowed lateness, in batches stamped as ReadKafka stamps
them, with the watermark moving as the source moves it, give every event's row once, equal to the
plain-Python reference over all the events; the online rows end at each entity's latest row; an
event behind what is already final is a dead letter."""

from __future__ import annotations

import json
import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from tests.feature_reference import micros, reference
from tests.unit.test_feature_kernels import CONDITIONS, FEATURES, SCHEMA, events
from transforms.entity_features_stream import VERSION, EntityFeaturesStream
from transforms.feature_horizon import closing_us
from transforms.records import ArrowTableCoder

WINDOW, LATENESS = 1800, 900


def streaming_pipeline() -> beam.Pipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)


def arrivals(rows: list[dict], seed: int, jitter_s: int) -> list[dict]:
    """The rows in time order, each shifted by up to ``jitter_s`` seconds of disorder."""
    rng = random.Random(seed)
    return sorted(rows, key=lambda r: micros(r["ts"]) + rng.randrange(0, jitter_s * 1_000_000))


def stream_of(rows: list[dict], batch: int) -> test_stream.TestStream:
    """Batches stamped at or below every on-time event's time; after each, the watermark moves
    as far as it can without making a later event late (the source's rule)."""
    stream = test_stream.TestStream(coder=ArrowTableCoder())
    times = np.array([micros(r["ts"]) for r in rows])
    closes = closing_us(times, WINDOW * 1_000_000, LATENESS * 1_000_000)
    # After position i, the watermark may reach the earliest closing still to come (minus one).
    limit = np.append(np.minimum.accumulate(closes[::-1])[::-1][1:], np.iinfo(np.int64).max)
    seen_max, watermark = None, None
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        t = times[i : i + batch]
        stamp = int(t.min()) if watermark is None else min(watermark, int(t.min()))
        stream.add_elements([TimestampedValue(pa.Table.from_pylist(part, SCHEMA), Timestamp(micros=stamp))])
        seen_max = int(t.max()) if seen_max is None else max(seen_max, int(t.max()))
        end = min(i + batch, len(rows)) - 1
        mark = min(seen_max, int(limit[end]) - 1) // 1000 * 1000  # TestStream moves it in milliseconds
        if watermark is None or mark > watermark:
            watermark = mark
            stream.advance_watermark_to(Timestamp(micros=mark))
    # Past every event's closing first: the bundle-based DirectRunner lets a GroupByKey downstream
    # (assert_that's) fire before the rows of timers that the jump to the end sets off.
    stream.advance_watermark_to(Timestamp(micros=int(closes.max()) // 1000 * 1000 + 1000))
    return stream.advance_watermark_to_infinity()


def _by_id(expected: list[dict]):
    want = {r["id"]: r for r in expected}

    def check(tables):
        got = {}
        for t in tables:
            for r in t.to_pylist():
                assert r["id"] not in got, f"event {r['id']} has two final rows"
                got[r["id"]] = r
        assert got == want

    return check


def _latest(expected: list[dict]):
    want = {}
    for r in expected:
        if r["user"] not in want or (r["ts"], r["id"]) > (want[r["user"]]["ts"], want[r["user"]]["id"]):
            want[r["user"]] = r

    def check(tables):
        newest = {}
        for t in tables:
            assert json.loads(t.schema.metadata[b"beam_pipelines.features"]) == FEATURES.to_dict()
            for r in t.to_pylist():
                v = r.pop(VERSION)
                if r["user"] not in newest or v > newest[r["user"]][0]:
                    newest[r["user"]] = (v, r)
        assert {u: r for u, (_, r) in newest.items()} == want

    return check


@pytest.mark.parametrize("seed, n, batch, jitter", [(1, 240, 7, 600), (2, 240, 40, 1500), (3, 80, 1, 300)])
def test_rows_of_out_of_order_events_equal_the_reference_once_final(seed, n, batch, jitter):
    rows = arrivals(events(seed, n=n, users=tuple("abcdef")), seed, jitter)
    expected = reference(rows, FEATURES, CONDITIONS)
    with streaming_pipeline() as p:
        out = p | stream_of(rows, batch) | EntityFeaturesStream(FEATURES, WINDOW, LATENESS, partitions=3, stage="UF")
        assert_that(out["features"], _by_id(expected))
        assert_that(out["online"], _latest(expected), label="online")
        assert_that(out["dead_letters"], equal_to([]), label="dead")


def test_an_event_behind_the_final_horizon_is_a_dead_letter_and_counts_nowhere():
    rows = sorted(events(4, n=60, users=("a", "b")), key=lambda r: r["ts"])
    early, rest = rows[0], rows[1:]
    stream = test_stream.TestStream(coder=ArrowTableCoder())
    first = micros(rest[0]["ts"])
    stream.add_elements([TimestampedValue(pa.Table.from_pylist(rest, SCHEMA), Timestamp(micros=first))])
    stream.advance_watermark_to(Timestamp(micros=micros(rest[-1]["ts"]) // 1000 * 1000 + 10 * 3600 * 1_000_000))
    stream.add_elements([TimestampedValue(pa.Table.from_pylist([early], SCHEMA), Timestamp(micros=first))])
    stream.advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        out = p | stream | EntityFeaturesStream(FEATURES, WINDOW, LATENESS, partitions=2, stage="UF")
        assert_that(out["features"], _by_id(reference(rest, FEATURES, CONDITIONS)))
        dead = out["dead_letters"] | beam.FlatMap(
            lambda t: [(r["stage"], r["reason"], json.loads(r["raw"])["id"]) for r in t.to_pylist()]
        )
        assert_that(dead, equal_to([("UF", "late", early["id"])]), label="dead")


def test_config_errors_fail_at_construction():
    with pytest.raises(ValueError, match="window_seconds"):
        EntityFeaturesStream(FEATURES, 0, 10)
    with pytest.raises(ValueError, match="allowed_lateness_seconds"):
        EntityFeaturesStream(FEATURES, 60, -1)
    with pytest.raises(ValueError, match="FeatureSet"):
        EntityFeaturesStream({"entity": "u"}, 60, 10)
