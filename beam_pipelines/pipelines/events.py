"""The reference pipeline ``events`` (see SPEC-events.md): build(p, cfg, io) composes it.

Sources and sinks come in through ``io``; :func:`file_io` gives the file-based ones the CLI
uses, and a test passes ``Create``-based ones and reads the returned PCollections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.spec import EventsConfig
from transforms.cleanse import Cleanse, CountryCode, Email
from transforms.dedup import Deduplicate
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
from transforms.sinks.deadletters import WriteDeadLetters
from transforms.sinks.files import join_path
from transforms.sinks.lake import WriteLake
from transforms.windows import WindowedAggregate

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
SCRATCH = "_scratch"
REPORT_COUNTS = ("read", "curated", "dead_lettered", "duplicates", "late", "aggregates")


@dataclass(frozen=True)
class EventsIO:
    """Where the pipeline reads from and writes to.

    Args:
        source: PBegin -> PCollection of raw batches (see ``ParseRecords``).
        curated: Sink for curated tables (or None to leave them unconsumed by IO).
        aggregates: Sink for aggregate tables (one per window).
        dead_letters: Sink for DeadLetter tables.
        report: Sink for the one report dict.
        scratch: A directory every worker can reach; when set, the dedup shuffle goes
            through files there instead of through the runner's memory.
    """

    source: beam.PTransform
    curated: beam.PTransform | None = None
    aggregates: beam.PTransform | None = None
    dead_letters: beam.PTransform | None = None
    report: beam.PTransform | None = None
    scratch: str | None = None


def make_report(counts: dict) -> dict:
    """The run report from merged stage counts; conservation is computed, never assumed."""
    c = {k: int(counts.get(k, 0)) for k in REPORT_COUNTS}
    reasons = {k.split(".", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("dead_lettered.")}
    quality = {k.split(".", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("quality.")}
    ok = c["read"] == c["curated"] + c["dead_lettered"] + c["duplicates"] + c["late"]
    return {"counts": c, "dead_letter_reasons": reasons, "quality": quality, "conservation_ok": ok}


class _SelectFn(beam.DoFn):
    def __init__(self, columns: tuple[str, ...]):
        self._columns = list(columns)

    def process(self, table: pa.Table):
        yield table.select(self._columns)


def build(p: beam.Pipeline, cfg: EventsConfig, io: EventsIO) -> dict:
    """Composes the events pipeline; returns its PCollections by name.

    Returns ``curated``, ``aggregates``, ``dead_letters`` (tables) and ``report`` (one dict).
    """
    raw = p | "Read" >> io.source
    parsed = raw | "ParseRecords" >> ParseRecords(cfg.input_format, FIELDS)
    validated = parsed["parsed"] | "ValidateSchema" >> ValidateSchema(RULES, cfg.schema_policy)
    cleansed = validated["valid"] | "Cleanse" >> Cleanse((Email("email"), CountryCode("country")))
    unique = cleansed["cleaned"] | "Deduplicate" >> Deduplicate(
        "event_id",
        order_by=("ts", "_raw"),
        partitions=cfg.shuffle_partitions,
        spill_dir=join_path(io.scratch, "dedup") if io.scratch else None,
    )
    curated = (
        unique["unique"]
        | "AddFeatures" >> AddFeatures("ts", "email")
        | "SelectCurated" >> beam.ParDo(_SelectFn(CURATED_COLUMNS)).with_output_types(pa.Table)
    )
    aggregates = curated | "HourlyAggregate" >> WindowedAggregate(
        time_field="ts",
        window_seconds=cfg.window_seconds,
        group_by=("event_type", "country"),
        count_distinct="user_id",
        sum_field="amount",
        allowed_lateness_seconds=cfg.allowed_lateness_seconds,
    )
    dead = (parsed["dead_letters"], validated["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    counts = (
        parsed["stats"],
        cleansed["stats"],
        unique["stats"],
        curated | "CountCurated" >> CountRows("curated"),
        dead | "CountDeadLetters" >> CountRows("dead_lettered", by="reason"),
        aggregates | "CountAggregates" >> CountRows("aggregates"),
    ) | "AllCounts" >> beam.Flatten()
    report = counts | "MergeCounts" >> MergeCounts() | "MakeReport" >> beam.Map(make_report).with_output_types(dict)
    if io.curated is not None:
        curated | "WriteCurated" >> io.curated
    if io.aggregates is not None:
        aggregates | "WriteAggregates" >> io.aggregates
    if io.dead_letters is not None:
        dead | "WriteDeadLetters" >> io.dead_letters
    if io.report is not None:
        report | "WriteReport" >> io.report
    return {"curated": curated, "aggregates": aggregates, "dead_letters": dead, "report": report}


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
        dead_letters=WriteDeadLetters(join_path(root, "dlq"), shards=cfg.dlq_shards),
        report=WriteJson(join_path(root, "_run", "report.json")),
    )
