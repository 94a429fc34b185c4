"""The reference pipeline ``events`` (see SPEC-events.md): build(p, cfg, io) composes it.

Sources and sinks come in through ``io``; :func:`file_io` gives the file-based ones the CLI
uses, and a test passes ``Create``-based ones and reads the returned PCollections.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.spec import EventsConfig
from transforms.cleanse import Cleanse, CountryCode, Email
from transforms.dedup import Deduplicate
from transforms.dedup_stream import DeduplicateStream
from transforms.features import AddFeatures
from transforms.ingest.files import ReadFiles
from transforms.ingest.parse import ParseRecords
from transforms.ingest.validate import (
    CodeField,
    EnumField,
    IdField,
    NumberField,
    TextField,
    TimestampField,
    ValidateSchema,
)
from transforms.quality.counts import CountRows, MergeCounts
from transforms.quality.expectations import CheckExpectations
from transforms.quality.expectations_spec import load_expectations
from transforms.quality.profile import ProfileColumns
from transforms.sinks.deadletters import WriteDeadLetters, write_jsonl
from transforms.sinks.files import join_path, write_parquet
from transforms.sinks.kafka import WriteKafkaJson
from transforms.sinks.lake import WriteLake
from transforms.sinks.postgres import UpsertPostgres
from transforms.sinks.stream_files import WriteTableFiles
from transforms.sinks.window_json import WriteWindowJson
from transforms.windows import WindowedAggregate, WindowTables

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "refund")
FIELDS = ("event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "country")
RULES = (
    IdField("event_id"),
    IdField("user_id"),
    EnumField("event_type", EVENT_TYPES),
    NumberField("amount", minimum=0.0, decimals=2, required_if=("event_type", ("purchase", "refund"))),
    CodeField("currency", r"^[A-Za-z]{3}$", default="USD"),
    TimestampField("ts"),
    TextField("email"),
    TextField("country"),
)
CURATED_COLUMNS = (
    "event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "email_domain",
    "country", "hour_of_day", "day_of_week", "is_weekend", "extras",
)  # fmt: skip
AGGREGATE_KEYS = ("window_start", "event_type", "country")
# What expectations see: the curated columns, plus the record text and source for dead letters.
CHECKED_TYPES = {
    "event_id": pa.string(), "user_id": pa.string(), "event_type": pa.string(), "amount": pa.float64(),
    "currency": pa.string(), "ts": pa.timestamp("us", tz="UTC"), "email": pa.string(),
    "email_domain": pa.string(), "country": pa.string(), "hour_of_day": pa.int32(), "day_of_week": pa.int32(),
    "is_weekend": pa.bool_(), "extras": pa.string(), "_raw": pa.string(), "_source": pa.string(),
}  # fmt: skip
DEFAULT_EXPECTATIONS = os.path.join(os.path.dirname(__file__), "events.expectations.yaml")
SCRATCH = "_scratch"
REPORT_FIRING_SECONDS = 10  # streaming: how often _run/report.json is rewritten with the counts so far
REPORT_COUNTS = ("read", "curated", "dead_lettered", "duplicates", "late", "aggregates")


@dataclass(frozen=True)
class EventsIO:
    """Where the pipeline reads from and writes to.

    Args:
        source: PBegin -> PCollection of raw batches (see ``ParseRecords``), or a dict with
            ``records`` (those batches) and ``late`` (DeadLetter tables of records that came
            after their window closed: a streaming source judges lateness, see ReadKafka).
        curated: Sink for curated tables (or None to leave them unconsumed by IO).
        aggregates: Sink for aggregate tables (one per window).
        dead_letters: Sink for DeadLetter tables.
        report: Sink for the one report dict.
        profile: Sink for column-profile dicts of the curated output (None: not profiled): one
            for the run in batch, one per window and firing in streaming.
        checks: Streaming: sink for the expectation results, one dict per window.
        scratch: A directory every worker can reach; when set (batch), the dedup and
            aggregate shuffles go through files there instead of through the runner's memory.
    """

    source: beam.PTransform
    curated: beam.PTransform | None = None
    aggregates: beam.PTransform | None = None
    dead_letters: beam.PTransform | None = None
    report: beam.PTransform | None = None
    profile: beam.PTransform | None = None
    checks: beam.PTransform | None = None
    scratch: str | None = None


def make_report(counts: dict, expectations: dict | None = None) -> dict:
    """The run report from merged stage counts; conservation is computed, never assumed.

    ``expectations`` is CheckExpectations' result for the run; its list goes under
    ``expectations`` (absent when no expectations are declared).
    """
    c = {k: int(counts.get(k, 0)) for k in REPORT_COUNTS}
    reasons = {k.split(".", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("dead_lettered.")}
    quality = {k.split(".", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("quality.")}
    ok = c["read"] == c["curated"] + c["dead_lettered"] + c["duplicates"] + c["late"]
    report = {"counts": c, "dead_letter_reasons": reasons, "quality": quality, "conservation_ok": ok}
    if expectations is not None:
        report["expectations"] = expectations["results"]
    return report


RECORD_COLUMNS = ("_raw", "_source")


def reads_records(checks: tuple) -> bool:
    """Whether expectations read a record's text or source after deduplication: to quarantine
    rows as dead letters, or in a check. If not, deduplication leaves those columns out."""
    for check in checks:
        used = check.reads()
        if used is None or check.quarantines or used & set(RECORD_COLUMNS):
            return True
    return False


def load_checks(cfg: EventsConfig) -> tuple:
    """The configured expectations, validated against the checked columns (ExpectationError)."""
    if cfg.expectations is None:
        return ()
    return load_expectations(cfg.expectations, CHECKED_TYPES)


class _SelectFn(beam.DoFn):
    def __init__(self, columns: tuple[str, ...]):
        self._columns = list(columns)

    def process(self, table: pa.Table):
        yield table.select(self._columns)


class _LateCountFn(beam.DoFn):
    # A late record was read and ends in the late count (and the dead-letter output).
    def process(self, table: pa.Table):
        if table.num_rows:
            yield {"read": table.num_rows, "late": table.num_rows}


def _early(cfg: EventsConfig, seconds: int | None) -> int | None:
    """Processing-time (early) firings: for live streams only. A bounded stream fires every window
    when it ends; and Prism 2.77 panics when an early-firing timer outlives its window, which the
    end of a bounded stream (the watermark jumping to the end of time) makes likely."""
    return seconds if cfg.streaming and not cfg.kafka_stop_at_end else None


def _deduplicate(cfg: EventsConfig, io: EventsIO, cleaned):
    if cfg.streaming:
        return cleaned | "Deduplicate" >> DeduplicateStream(
            "event_id",
            time_field="ts",
            horizon_seconds=cfg.window_seconds + cfg.allowed_lateness_seconds,
            order_by=("ts", "_raw"),
            partitions=cfg.shuffle_partitions,
        )
    return cleaned | "Deduplicate" >> Deduplicate(
        "event_id",
        order_by=("ts", "_raw"),
        partitions=cfg.shuffle_partitions,
        spill_dir=join_path(io.scratch, "dedup") if io.scratch else None,
        drop=() if reads_records(load_checks(cfg)) else RECORD_COLUMNS,
    )


def build(p: beam.Pipeline, cfg: EventsConfig, io: EventsIO) -> dict:
    """Composes the events pipeline; returns its PCollections by name.

    Returns ``curated``, ``aggregates``, ``dead_letters`` (tables) and ``report`` (one dict;
    in streaming, one per firing of the report trigger, each with the counts so far).
    """
    source = p | "Read" >> io.source
    if isinstance(source, dict):
        raw, late = source["records"], source["late"]
    else:
        raw, late = source, None
    parsed = raw | "ParseRecords" >> ParseRecords(cfg.input_format, FIELDS)
    validated = parsed["parsed"] | "ValidateSchema" >> ValidateSchema(RULES, cfg.schema_policy)
    cleansed = validated["valid"] | "Cleanse" >> Cleanse((Email("email"), CountryCode("country")))
    unique = _deduplicate(cfg, io, cleansed["cleaned"])
    featured = unique["unique"] | "AddFeatures" >> AddFeatures("ts", "email")
    checks = load_checks(cfg)
    checked = None
    if checks:
        checked = featured | "CheckExpectations" >> CheckExpectations(
            checks,
            run_time=cfg.run_time,
            columns=CHECKED_TYPES,
            window_seconds=cfg.window_seconds if cfg.streaming else None,
            unique_partitions=cfg.shuffle_partitions,
        )
        featured = checked["passed"]
    curated = featured | "SelectCurated" >> beam.ParDo(_SelectFn(CURATED_COLUMNS)).with_output_types(pa.Table)
    aggregates = curated | "HourlyAggregate" >> WindowedAggregate(
        time_field="ts",
        window_seconds=cfg.window_seconds,
        group_by=("event_type", "country"),
        count_distinct="user_id",
        sum_field="amount",
        allowed_lateness_seconds=cfg.allowed_lateness_seconds,
        early_firing_seconds=_early(cfg, cfg.early_firing_seconds),
        late_firings=cfg.streaming,
        spill_dir=join_path(io.scratch, "aggregate") if io.scratch and not cfg.streaming else None,
        partitions=cfg.shuffle_partitions,
    )
    dead_parts = [parsed["dead_letters"], validated["dead_letters"]]
    if checked is not None:
        dead_parts.append(checked["dead_letters"])
    dead = tuple(dead_parts) | "AllDeadLetters" >> beam.Flatten()
    count_parts = [
        parsed["stats"],
        cleansed["stats"],
        unique["stats"],
        *([checked["stats"]] if checked is not None else []),
        curated | "CountCurated" >> CountRows("curated"),
        dead | "CountDeadLetters" >> CountRows("dead_lettered", by="reason"),
        aggregates | "CountAggregates" >> CountRows("aggregates"),
    ]
    if late is not None:
        count_parts.append(
            late
            | "CountLate" >> beam.ParDo(_LateCountFn()).with_input_types(pa.Table).with_output_types(dict)
            | "LateGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
        )
    counts = tuple(count_parts) | "AllCounts" >> beam.Flatten()
    merge = MergeCounts(early_firing_seconds=_early(cfg, REPORT_FIRING_SECONDS))
    # In streaming, expectation results are per window and stay out of the run's report.
    results = checked["results"] if checked is not None and not cfg.streaming else None
    report = (
        counts
        | "MergeCounts" >> merge
        | "MakeReport"
        >> beam.Map(
            make_report, expectations=beam.pvalue.AsSingleton(results) if results is not None else None
        ).with_output_types(dict)
    )
    if io.profile is not None:
        profiled = curated
        if cfg.streaming:
            profiled = curated | "WindowCurated" >> WindowTables(
                "ts",
                cfg.window_seconds,
                cfg.allowed_lateness_seconds,
                _early(cfg, cfg.early_firing_seconds),
                late_firings=True,
            )
        profile = profiled | "ProfileCurated" >> ProfileColumns(CURATED_COLUMNS)
        profile | "WriteProfile" >> io.profile
    if cfg.streaming and checked is not None and io.checks is not None:
        checked["results"] | "WriteChecks" >> io.checks
    if io.curated is not None:
        curated | "WriteCurated" >> io.curated
    if io.aggregates is not None:
        aggregates | "WriteAggregates" >> io.aggregates
    all_dead = dead if late is None else (dead, late) | "DeadAndLate" >> beam.Flatten()
    if io.dead_letters is not None:
        all_dead | "WriteDeadLetters" >> io.dead_letters
    if io.report is not None:
        report | "WriteReport" >> io.report
    return {"curated": curated, "aggregates": aggregates, "dead_letters": all_dead, "report": report}


class _WriteJsonFn(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, obj: dict):
        with FileSystems.create(self._path, mime_type="application/json") as fh:
            fh.write(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")
        yield self._path


class WriteJson(beam.PTransform):
    """Writes each dict element to ``path`` as indented JSON (use for single-element
    PCollections such as the run report)."""

    def __init__(self, path: str, label: str | None = None):
        super().__init__(label)
        self._path = path

    def expand(self, pcoll):
        return pcoll | "Write" >> beam.ParDo(_WriteJsonFn(self._path))


def file_io(cfg: EventsConfig, root: str) -> EventsIO:
    """File sources and sinks under ``root`` (the run's staging directory)."""
    scratch = join_path(root, SCRATCH)
    return EventsIO(
        scratch=scratch,
        source=ReadFiles(cfg.input, cfg.input_format, chunk_bytes=cfg.chunk_bytes),
        curated=WriteLake(
            join_path(root, "curated"),
            columns=CURATED_COLUMNS,
            sort_by=("event_id",),
            date_field="ts",
            buckets=cfg.curated_buckets,
            bucket_key="event_id",
            spill_dir=join_path(scratch, "curated"),
        ),
        aggregates=WriteLake(join_path(root, "aggregates"), sort_by=AGGREGATE_KEYS),
        dead_letters=WriteDeadLetters(
            join_path(root, "dlq"), shards=cfg.dlq_shards, spill_dir=join_path(scratch, "dlq")
        ),
        report=WriteJson(join_path(root, "_run", "report.json")),
        profile=WriteJson(join_path(root, "_run", "profile.json")) if cfg.profile else None,
    )


AGGREGATE_SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("event_type", pa.string()),
        ("country", pa.string()),
        ("events", pa.int64()),
        ("users", pa.int64()),
        ("amount_sum", pa.float64()),
    ]
)


def stream_io(cfg: EventsConfig, root: str) -> EventsIO:
    """Kafka in; curated and dead letters to files as they come, aggregates upserted into
    PostgreSQL, the report rewritten under ``root`` as counts come in."""
    from transforms.ingest.kafka import ReadKafka  # imported here: batch runs need no Kafka client

    return EventsIO(
        source=ReadKafka(
            cfg.kafka_bootstrap,
            cfg.kafka_topic,
            window_seconds=cfg.window_seconds,
            allowed_lateness_seconds=cfg.allowed_lateness_seconds,
            stop_at_end=cfg.kafka_stop_at_end,
        ),
        curated=WriteTableFiles(
            join_path(root, "curated"),
            write_parquet,
            ".parquet",
            id_column="event_id",
            sort_by=("event_id",),
            date_field="ts",
            window_seconds=cfg.window_seconds,
        ),
        aggregates=UpsertPostgres(cfg.pg_dsn, cfg.pg_table, AGGREGATE_KEYS, AGGREGATE_SCHEMA),
        dead_letters=WriteKafkaJson(cfg.kafka_bootstrap, cfg.dlq_topic, key_column="source")
        if cfg.dlq_topic
        else WriteTableFiles(
            join_path(root, "dlq"), write_jsonl, ".jsonl", id_column="source", sort_by=("source", "raw")
        ),
        report=WriteJson(join_path(root, "_run", "report.json")),
        profile=WriteWindowJson(join_path(root, "_run", "windows"), "profile.json") if cfg.profile else None,
        checks=WriteWindowJson(join_path(root, "_run", "windows"), "expectations.json"),
    )
