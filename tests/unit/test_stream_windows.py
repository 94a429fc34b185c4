"""Event-time windows in streaming: on-time, early and late firings, with TestStream.

TestStream runs on Beam's bundle-based DirectRunner in streaming mode (the in-process
FnApiRunner has no processing-time or watermark control).
"""

from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from transforms.quality.counts import MergeCounts
from transforms.records import ArrowTableCoder
from transforms.windows import WindowedAggregate

UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def events(rows) -> pa.Table:
    """rows: (minute of 2024-01-01 00:00 UTC, user, amount)."""
    return pa.table(
        {
            "ts": pa.array(
                [datetime(2024, 1, 1, m // 60, m % 60, tzinfo=UTC) for m, _, _ in rows], pa.timestamp("us", tz="UTC")
            ),
            "event_type": ["purchase"] * len(rows),
            "country": pa.array(["US"] * len(rows), pa.string()),
            "user_id": [u for _, u, _ in rows],
            "amount": pa.array([a for *_, a in rows], pa.float64()),
        }
    )


def stream_clock() -> Timestamp:
    """Processing time of a TestStream on this runner: starts at 0 (it only moves forward)."""
    return Timestamp(0)


def streaming_pipeline() -> beam.Pipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)


def firings(tables):
    """(window start minute, events, users, amount_sum) per firing, in firing order."""
    return tables | "Firings" >> beam.Map(
        lambda t: (
            int(t.column("window_start")[0].value // 60_000_000 - T0 // 60),
            t.column("events")[0].as_py(),
            t.column("users")[0].as_py(),
            t.column("amount_sum")[0].as_py(),
        )
    )


def test_on_time_then_late_firings_accumulate_and_past_lateness_is_dropped_by_beam():
    stream = (
        test_stream.TestStream(coder=ArrowTableCoder())
        .advance_watermark_to(T0)
        .add_elements([events([(5, "a", 1.0), (10, "b", 2.5)])])
        .advance_watermark_to(T0 + 3600)  # the watermark passes the window end: on-time firing
        .add_elements([events([(30, "c", 1.25)])])  # late, within the 10 minutes allowed
        .add_elements([events([(31, "a", 1.0)])])  # late again: one firing per late table
        .advance_watermark_to(T0 + 3600 + 1200)  # past window end + allowed lateness
        .add_elements([events([(40, "d", 100.0)])])  # Beam drops this one (hence the source's gate)
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    out = p | stream | WindowedAggregate(allowed_lateness_seconds=600, late_firings=True)
    assert_that(firings(out), equal_to([(0, 2, 2, 3.5), (0, 3, 3, 4.75), (0, 4, 3, 5.75)]))
    p.run().wait_until_finish()


def test_early_firings_every_n_seconds_of_processing_time():
    stream = (
        test_stream.TestStream(coder=ArrowTableCoder())
        .advance_watermark_to(T0)
        .add_elements([events([(1, "a", 1.0)])])
        .advance_processing_time(6)  # an early firing with what has come so far
        .add_elements([events([(2, "b", 2.0)])])
        .advance_watermark_to(T0 + 3600)  # on-time firing with everything
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    # Unbounded input with early firings takes the running path (running_aggregate), whose timers
    # read a clock: this runner's processing time starts at 0, so the test gives one that does.
    out = (
        p
        | stream
        | WindowedAggregate(allowed_lateness_seconds=600, early_firing_seconds=5, late_firings=True, clock=stream_clock)
    )
    assert_that(firings(out), equal_to([(0, 1, 1, 1.0), (0, 2, 2, 3.0)]))
    p.run().wait_until_finish()


def test_a_window_fires_its_first_element_at_once_then_at_most_every_n_seconds():
    # The first pane need not wait out the delay: a live job's first results (and each new
    # window's) show at once; after that, firings come early_firing_seconds apart.
    stream = (
        test_stream.TestStream(coder=ArrowTableCoder())
        .advance_watermark_to(T0)
        .add_elements([events([(1, "a", 1.0)])])  # fires at once
        .advance_processing_time(1)
        .add_elements([events([(2, "b", 2.0)])])  # starts the delay
        .advance_processing_time(2)
        .add_elements([events([(3, "c", 4.0)])])  # within the delay: waits
        .advance_processing_time(4)  # 5 s after the first firing: one firing with b and c
        .advance_watermark_to(T0 + 3600)
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    out = p | stream | WindowedAggregate(allowed_lateness_seconds=600, early_firing_seconds=5, late_firings=True,
                                         clock=stream_clock)  # fmt: skip
    assert_that(firings(out), equal_to([(0, 1, 1, 1.0), (0, 3, 3, 7.0)]))
    p.run().wait_until_finish()


def test_report_counts_fire_early_and_at_the_end_of_the_stream():
    stream = (
        test_stream.TestStream()
        .add_elements([{"read": 2}])
        .advance_processing_time(11)
        .add_elements([{"read": 3, "late": 1}])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    out = p | stream | MergeCounts(early_firing_seconds=10)
    assert_that(out, equal_to([{"read": 2}, {"read": 5, "late": 1}]))
    p.run().wait_until_finish()


def test_bad_trigger_config_fails_at_build():
    with pytest.raises(ValueError, match="early_firing_seconds"):
        WindowedAggregate(early_firing_seconds=0)
    with pytest.raises(ValueError, match="early_firing_seconds"):
        MergeCounts(early_firing_seconds=-1)
