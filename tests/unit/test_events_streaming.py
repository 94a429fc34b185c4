"""The events pipeline in streaming mode: build(p, cfg, io) over a TestStream source.

The source gives ``records`` (raw batches, as the Kafka source emits them) and ``late``
(dead letters of records judged late by the source); the test checks the aggregate firings,
the late count and conservation in the final report.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.pipelines.events import EventsIO, build
from beam_pipelines.spec import EventsConfig
from transforms.records import ArrowTableCoder, dead_letters

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()


def raw_batch(records, first_offset: int) -> pa.Table:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    sources = [f"events/0/{first_offset + i}" for i in range(len(lines))]
    return pa.table({"raw": pa.array(lines, pa.binary()), "source": pa.array(sources, pa.string())})


def ev(eid, user, minute, amount=1.0, event_type="purchase"):
    return {"event_id": eid, "user_id": user, "event_type": event_type, "amount": amount,
            "ts": f"2024-01-01T{minute // 60:02d}:{minute % 60:02d}:00Z", "country": "us"}  # fmt: skip


class _Source(beam.PTransform):
    def expand(self, pbegin):
        stream = (
            test_stream.TestStream(coder=ArrowTableCoder())
            .advance_watermark_to(T0)
            .add_elements([raw_batch([ev("e1", "u1", 5), ev("e2", "u2", 10), b"{broken"], 0)])
            .add_elements([raw_batch([ev("e1", "u1", 5), ev("e3", "u1", 20, event_type="refund", amount=2.5)], 3)])
            .advance_watermark_to(T0 + 3600)  # window [00:00, 01:00) fires on time
            .add_elements([raw_batch([ev("e4", "u3", 30)], 5)])  # late but within the allowed lateness
            .advance_watermark_to(T0 + 7200 + 1)
            .advance_watermark_to_infinity()
        )
        late_table = dead_letters(
            "ingest", "late", "ts", "window closed", pa.array(['{"event_id":"old"}']), pa.array(["events/0/6"])
        )
        return {
            "records": pbegin | "Stream" >> stream,
            "late": pbegin | "Late" >> beam.Create([late_table]),
        }


def test_streaming_events_fire_on_time_then_late_and_count_late_records():
    cfg = EventsConfig(
        input=None, input_format="jsonl", output="unused", shuffle_partitions=2, streaming=True, expectations="none",
        kafka_bootstrap="unused:9092", kafka_topic="events", pg_dsn="postgresql://unused",
    )  # fmt: skip
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    out = build(p, cfg, EventsIO(source=_Source()))
    firings = out["aggregates"] | "Firings" >> beam.FlatMap(
        lambda t: [(r["event_type"], r["country"], r["events"], r["users"], r["amount_sum"]) for r in t.to_pylist()]
    )
    assert_that(
        firings,
        equal_to(
            [
                ("purchase", "US", 2, 2, 2.0),  # on time: e1 (once: its copy is a duplicate) and e2
                ("refund", "US", 1, 1, 2.5),
                ("purchase", "US", 3, 3, 3.0),  # the late firing carries the whole window so far
                ("refund", "US", 1, 1, 2.5),
            ]
        ),
        label="Firings",
    )
    final = out["report"] | "Final" >> beam.Filter(lambda r: r["counts"]["read"] == 7)
    assert_that(
        final | "Counts" >> beam.Map(lambda r: (r["counts"], r["dead_letter_reasons"], r["conservation_ok"])),
        equal_to(
            [
                (
                    {"read": 7, "curated": 4, "dead_lettered": 1, "duplicates": 1, "late": 1, "aggregates": 4},
                    {"malformed": 1},
                    True,
                )
            ]
        ),
        label="Report",
    )
    dead = out["dead_letters"] | "Reasons" >> beam.FlatMap(lambda t: t.column("reason").to_pylist())
    assert_that(dead, equal_to(["malformed", "late"]), label="DeadLetters")
    p.run().wait_until_finish()
