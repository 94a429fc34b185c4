"""The whole events pipeline through build(p, cfg, io), with Create-based IO."""

import json
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.pipelines.events import CURATED_COLUMNS, EventsIO, build, make_report
from beam_pipelines.spec import EventsConfig

UTC = timezone.utc
LINES = [
    {"event_id": "e1", "user_id": "u1", "event_type": "purchase", "amount": "10.005", "ts": "2024-01-01T10:15:00Z",
     "email": "A@X.COM", "country": "us", "promo": "spring"},
    {"event_id": "e2", "user_id": 7, "event_type": "VIEW", "ts": 1704104100, "country": "USA"},
    {"event_id": "e1", "user_id": "u1", "event_type": "purchase", "amount": 99, "ts": "2024-01-01T11:00:00Z"},
    {"event_id": "e3", "user_id": "u2", "event_type": "refund", "ts": "2024-01-01T10:20:00Z"},
    {"event_id": "e4", "user_id": "u3", "event_type": "click", "ts": "1999-01-01T00:00:00Z"},
    {"event_id": "e5", "user_id": "u3", "event_type": "purchase", "amount": 1.5, "currency": "eur",
     "ts": "2024-01-01T10:59:59.999+00:00", "email": "nope"},
]  # fmt: skip
RAW = [json.dumps(r).encode() for r in LINES] + [b"{not json", b"\xff\xfe"]


def source():
    batch = pa.table({"raw": pa.array(RAW, pa.binary()), "source": ["mem"] * len(RAW)})
    return beam.Create([batch.slice(0, 4), batch.slice(4)])


def cfg():
    return EventsConfig(input=None, input_format="jsonl", output="unused", shuffle_partitions=2, expectations="none")


def test_whole_pipeline_outputs(pipeline):
    with pipeline() as p:
        out = build(p, cfg(), EventsIO(source=source()))
        curated = out["curated"] | "c" >> beam.FlatMap(lambda t: t.to_pylist())
        assert_that(
            curated | "ids" >> beam.Map(lambda r: (r["event_id"], r["amount"], r["email"], r["country"], r["extras"])),
            equal_to(
                [
                    ("e1", 10.01, "a@x.com", "US", '{"promo":"spring"}'),
                    ("e2", None, None, None, None),
                    ("e5", 1.5, None, None, None),
                ]
            ),
            label="curated",
        )
        assert_that(
            out["curated"] | "cols" >> beam.Map(lambda t: tuple(t.column_names)) | beam.Distinct(),
            equal_to([CURATED_COLUMNS]),
            label="columns",
        )
        aggs = out["aggregates"] | "a" >> beam.FlatMap(lambda t: t.to_pylist())
        assert_that(
            aggs
            | "akeys"
            >> beam.Map(
                lambda r: (r["window_start"], r["event_type"], r["country"], r["events"], r["users"], r["amount_sum"])
            ),  # fmt: skip
            equal_to(
                [
                    (datetime(2024, 1, 1, 10, tzinfo=UTC), "purchase", "US", 1, 1, 10.01),
                    (datetime(2024, 1, 1, 10, tzinfo=UTC), "view", None, 1, 1, 0.0),
                    (datetime(2024, 1, 1, 10, tzinfo=UTC), "purchase", None, 1, 1, 1.5),
                ]
            ),
            label="aggregates",
        )
        reasons = out["dead_letters"] | "r" >> beam.FlatMap(lambda t: t.column("reason").to_pylist())
        assert_that(reasons, equal_to(["missing_field", "invalid_value", "malformed", "malformed"]), label="dlq")
        assert_that(
            out["report"],
            equal_to(
                [
                    {
                        "counts": {
                            "read": 8,
                            "curated": 3,
                            "dead_lettered": 4,
                            "duplicates": 1,
                            "late": 0,
                            "aggregates": 3,
                        },  # fmt: skip
                        "dead_letter_reasons": {"invalid_value": 1, "malformed": 2, "missing_field": 1},
                        "quality": {"invalid_country": 1, "invalid_email": 1},
                        "conservation_ok": True,
                        # Records parsed (6 of 8) against the contract: one undeclared field, an amount
                        # sent as text, and optional fields absent or null.
                        "drift": {
                            "unknown_fields": {"promo": {"records": 1, "samples": ['{"promo":"spring"}']}},
                            "type_changes": {"amount": {"string": 1}},
                            "missing_fields": {"amount": 3, "country": 4, "currency": 5, "email": 4},
                        },
                    }
                ]
            ),
            label="report",
        )


def test_report_conservation_is_computed():
    bad = make_report({"read": 10, "curated": 5, "dead_lettered": 2, "duplicates": 1})
    assert bad["conservation_ok"] is False
    good = make_report({"read": 10, "curated": 7, "dead_lettered": 2, "duplicates": 1, "dead_lettered.malformed": 2})
    assert good["conservation_ok"] is True and good["dead_letter_reasons"] == {"malformed": 2}


def test_record_columns_are_dropped_after_dedup_only_when_no_expectation_reads_them():
    from beam_pipelines.pipelines.events import reads_records
    from transforms.quality.expectations_spec import AcceptedValues, Expression, NotNull

    counted = (NotNull(name="a", column="event_id"), Expression(name="b", expr="amount > 0"))
    assert reads_records(()) is False
    assert reads_records(counted) is False
    assert reads_records(load_checks_default()) is False
    assert reads_records((AcceptedValues(name="q", column="event_type", values=["view"], action="quarantine"),))
    assert reads_records((NotNull(name="r", column="_raw"),))
    assert reads_records((Expression(name="s", expr="is_null(_source)"),))
    assert reads_records((Expression(name="c", expr=lambda table: table.column("amount").is_valid()),))


def load_checks_default():
    from beam_pipelines.pipelines.events import CHECKED_TYPES, DEFAULT_EXPECTATIONS
    from transforms.quality.expectations_spec import load_expectations

    return load_expectations(DEFAULT_EXPECTATIONS, CHECKED_TYPES)
