"""Typed, validated run config: built from CLI options and the compiled spec."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime, timezone

from transforms.ingest.parse import FORMATS
from transforms.ingest.validate import POLICIES


class ConfigError(ValueError):
    """A config value is unusable; the message names the flag and the problem."""


@dataclass(frozen=True)
class EventsConfig:
    """Config of the ``events`` pipeline (flags of the same names, see options.py).

    Args:
        input: Input file pattern (any Beam filesystem).
        input_format: jsonl, csv, avro or parquet.
        output: Output root directory.
        schema_policy: additive (unknown fields kept in extras) or strict (dead-lettered).
        window_seconds: Aggregation window size in seconds.
        allowed_lateness_seconds: How late an event may arrive and still update its window.
        shuffle_partitions: Hash partitions of the dedup shuffle.
        curated_buckets: Parquet files per date partition of the curated output.
        dlq_shards: Dead-letter JSON-lines files.
        chunk_bytes: Bytes read per batch from text inputs.
        streaming: Read the spec's stream (Kafka, Pub/Sub, Kinesis) instead of files, write as data arrives.
        kafka_bootstrap: Kafka bootstrap servers (streaming).
        kafka_topic: Kafka topic (streaming).
        kafka_stop_at_end: Stop at the end offsets seen at start (streaming, bounded).
        pg_dsn: PostgreSQL DSN for the aggregates (streaming).
        pg_table: PostgreSQL table of the aggregates (streaming); None: the spec's.
        early_firing_seconds: Early firings every N seconds of processing time (streaming).
        dlq_topic: Kafka topic for the dead letters instead of files (streaming).
        expectations: Path of the expectations YAML; ``none`` for none; None: the spec's own.
        profile: Profile the curated columns into ``_run/profile.json``.
        run_time: When the run started (timezone-aware); ``freshness`` is measured against it.
        pipeline: The pipeline spec: a packaged pipeline's name or a YAML file's path.
        python_modules: Modules (and their submodules) a spec's PythonFunction steps may import.
        run_id: The run's id, set by the launcher (bronze rows carry it); None outside a launched run.
    """

    input: str | None
    input_format: str | None
    output: str
    schema_policy: str = "additive"
    window_seconds: int = 3600
    allowed_lateness_seconds: int = 600
    shuffle_partitions: int = 8
    curated_buckets: int = 1
    dlq_shards: int = 1
    chunk_bytes: int = 8 << 20
    streaming: bool = False
    kafka_bootstrap: str | None = None
    kafka_topic: str | None = None
    kafka_stop_at_end: bool = False
    pg_dsn: str | None = None
    pg_table: str | None = None
    early_firing_seconds: int | None = None
    dlq_topic: str | None = None
    expectations: str | None = None
    profile: bool = True
    run_time: datetime = datetime(2000, 1, 1, tzinfo=timezone.utc)
    pipeline: str = "events"
    python_modules: tuple[str, ...] = ()
    run_id: str | None = None

    def __post_init__(self):
        if self.input_format is not None and self.input_format not in FORMATS:
            raise ConfigError(f"--input_format must be one of {', '.join(FORMATS)}, got {self.input_format!r}")
        if self.schema_policy not in POLICIES:
            raise ConfigError(f"--schema_policy must be one of {', '.join(POLICIES)}, got {self.schema_policy!r}")
        if not self.output:
            raise ConfigError("--output is required")
        for name in ("window_seconds", "shuffle_partitions", "curated_buckets", "dlq_shards"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.allowed_lateness_seconds < 0:
            raise ConfigError("--allowed_lateness must be >= 0 seconds")
        if self.chunk_bytes < 1024:
            raise ConfigError("--read_chunk_kb must be >= 1")
        if self.streaming:
            # The source's own flags (--kafka_bootstrap, ...) are the spec's to require.
            if not self.pg_dsn:
                raise ConfigError("--streaming needs --pg_dsn")
            if self.input_format != "jsonl":
                raise ConfigError("--streaming reads JSON messages: --input_format must be jsonl")
            if 86_400 % self.window_seconds:
                raise ConfigError("--window_seconds must divide a day when --streaming (windowed file names)")
            if self.pg_table is not None and not re.fullmatch(r"^[a-z_][a-z0-9_]{0,62}$", self.pg_table):
                raise ConfigError(f"--pg_table must be a plain lower-case SQL name, got {self.pg_table!r}")
        if self.dlq_topic is not None and not self.streaming:
            raise ConfigError("--dlq_topic needs --streaming (batch runs write dlq/ files)")
        if self.run_time.tzinfo is None:
            raise ConfigError("run_time must be timezone-aware")
        if self.early_firing_seconds is not None and self.early_firing_seconds < 1:
            raise ConfigError("--early_firing_seconds must be >= 1")

    @classmethod
    def from_dict(cls, values: dict) -> EventsConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**values)
