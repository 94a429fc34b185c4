"""Spec step types at the edges: sources and sinks.

Their composites are not built into the graph directly: ``make()`` gives the PTransform for
the run's mode and output root, and the launcher passes them in as IO (``build(p, cfg, io)``),
so a test swaps them for ``Create`` and captured outputs.
"""

from __future__ import annotations

import os
import posixpath

import pyarrow as pa

from beam_pipelines.spec.shape import duration, duration_seconds
from beam_pipelines.spec.steps.base import Outputs, Step, register
from transforms.ingest.parse import FORMATS
from transforms.sinks.deadletters import write_jsonl
from transforms.sinks.files import join_path, write_parquet

__all__ = ["SCRATCH"]

SCRATCH = "_scratch"
_RELATIVE = {
    "type": "string",
    "pattern": r"^(?!/)(?!.*(^|/)\.{1,2}(/|$))(?!.*//)(?!_)[A-Za-z0-9_.=/-]+$",
    "description": "A directory under --output (relative, no '..' or '.' parts, not starting with '_').",
}


class Source(Step):
    kind = "source"

    def preflight(self) -> int | None:
        """Checks the source before any worker starts; returns its size in bytes, or None when
        the launcher is to list the files of ``input_name()`` itself."""
        return None

    def input_name(self) -> str | None:
        """What the run reads, as the summary and lineage name it."""
        return self.config.get("path")

    def build(self, inputs, io):
        source = io.source_for(self)
        out = inputs[0] | self.name >> source
        if isinstance(out, dict):
            return Outputs(out["records"], extra={"late": out["late"]})
        return Outputs(out)


class Sink(Step):
    kind = "sink"
    role = None  # curated | aggregates | received | output | dead_letters: set by the checker from what it takes
    # Whether the sink may take curated records in any order: in streaming such a sink runs off
    # the latency path, behind a fusion break that gives up the source's order.
    any_order = False

    def columns(self, inputs):
        if self.role == "received":
            raise self.error(None, "this sink takes curated records, an aggregate or dead letters, not the source's "
                                   "records as received")  # fmt: skip
        if self.role != "dead_letters" and inputs[0] is None:
            raise self.error(None, "a sink takes records, aggregates or dead letters")
        return None

    def build(self, inputs, io):
        sink = io.sink_for(self)
        if sink is not None:
            inputs[0] | self.name >> sink
        return Outputs(None)

    def describe(self) -> str:
        """What the sink takes and writes, for ``spec check``."""
        return self.role

    def written(self, columns) -> list[str]:
        """The record columns written: those not starting with '_' (record text, origin)."""
        return [c for c in columns if not c.startswith("_")]


@register
class ReadFiles(Source):
    type = "ReadFiles"
    doc = "Reads files matching a pattern on any Beam filesystem (local, s3://, gs://, azfs://) in batches."
    modes = ("batch",)
    config_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File pattern, e.g. data/in/*.jsonl or ${input}."},
            "format": {"enum": list(FORMATS), "description": "File format. Default: from the extension."},
        },
        "required": ["path"],
    }

    def columns(self, inputs):
        if "path" in self.config:  # else --input is missing: Plan.check_io says so when it matters
            self.ctx.source_format = self.format()
        return None

    def input_name(self) -> str:
        return self.config["path"]

    def format(self) -> str:
        from transforms.ingest.files import format_from_path

        fmt = self.config.get("format") or format_from_path(self.config["path"])
        if fmt is None:
            raise self.error("format", "cannot tell the format from the path: give format (jsonl, csv, avro, parquet)")
        return fmt

    def make(self, root: str):
        from transforms.ingest.files import ReadFiles as Read

        return Read(self.config["path"], self.format(), chunk_bytes=self.ctx.cfg.chunk_bytes)


@register
class ReadKafka(Source):
    type = "ReadKafka"
    doc = (
        "Reads a Kafka topic's JSON messages (every partition, in offset order); records later than the "
        "allowed lateness go to the dead letters with reason late."
    )
    modes = ("streaming",)
    config_schema = {
        "type": "object",
        "properties": {
            "bootstrap": {"type": "string", "description": "Bootstrap servers, host:port[,host:port]."},
            "topic": {"type": "string"},
            "stop_at_end": {
                "type": "boolean",
                "description": "Stop at the end offsets seen at start (a bounded stream). Default: false.",
            },
            "retry_for_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "How long a broker that does not answer is waited for (reconnecting) before the job "
                "fails with one error. Default: 300.",
            },
        },
        "required": ["bootstrap", "topic"],
    }

    def columns(self, inputs):
        self.ctx.source_format = "jsonl"
        self.ctx.live = not self.config.get("stop_at_end")
        if self.ctx.event_time is None:
            raise self.error(None, "a streaming source needs an event time: add a WindowedAggregate")
        return None

    def make(self, root: str):
        from transforms.ingest.kafka import ReadKafka as Read  # batch runs need no Kafka client

        time_field, window, lateness = self.ctx.event_time
        return Read(
            self.config["bootstrap"],
            self.config["topic"],
            window_seconds=window,
            allowed_lateness_seconds=lateness,
            stop_at_end=bool(self.config.get("stop_at_end")),
            event_time_field=time_field,
            retry_for_s=self.config.get("retry_for_seconds", 300.0),
        )


@register
class WriteLake(Sink):
    type = "WriteLake"
    any_order = True  # files per window, each record written once whatever the order
    doc = (
        "Parquet files under --output: batch, one file per (dt= partition, bucket), replaced whole at publish; "
        "streaming, files per (date, window) as windows fire."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "path": _RELATIVE,
            "partition_by": {"type": "string", "description": "Timestamp column whose UTC date names dt= folders."},
            "sort_by": {"type": "array", "items": {"type": "string"}, "description": "Row order in each file."},
            "bucket_key": {
                "type": "string",
                "description": "Column hashed into the files of a partition (their number grows with the input).",
            },
        },
        "required": ["path"],
    }

    def columns(self, inputs):
        super().columns(inputs)
        cols = inputs[0]
        if "partition_by" in self.config:
            self.need(cols, self.config["partition_by"], "partition_by", ("timestamp",))
        for i, c in enumerate(self.config.get("sort_by", ())):
            self.need(cols, c, f"sort_by.{i}")
        if "bucket_key" in self.config:
            self.need(cols, self.config["bucket_key"], "bucket_key")
        if self.ctx.mode == "streaming" and not (self.config.get("bucket_key") or self.config.get("sort_by")):
            raise self.error(None, "streaming files are named by a key column: give bucket_key or sort_by")
        self._columns = self.written(cols)
        self._all = list(cols) == self._columns
        return None

    def reads(self):
        return set(self._columns)

    def make(self, root: str):
        from transforms.sinks.lake import WriteLake as Write
        from transforms.sinks.stream_files import WriteTableFiles

        c, cfg = self.config, self.ctx.cfg
        path = join_path(root, c["path"])
        sort_by = tuple(c.get("sort_by", ()))
        if self.ctx.mode == "streaming":
            return WriteTableFiles(
                path,
                write_parquet,
                ".parquet",
                id_column=c.get("bucket_key") or sort_by[0],
                sort_by=sort_by,
                date_field=c.get("partition_by"),
                window_seconds=self.ctx.event_time[1],
            )
        bucket_key = c.get("bucket_key")
        return Write(
            path,
            columns=None if self._all else tuple(self._columns),
            sort_by=sort_by,
            date_field=c.get("partition_by"),
            buckets=cfg.curated_buckets if bucket_key else 1,
            bucket_key=bucket_key,
            spill_dir=join_path(root, SCRATCH, posixpath.basename(c["path"].rstrip("/"))) if bucket_key else None,
        )


@register
class WriteDeadLetters(Sink):
    type = "WriteDeadLetters"
    role = "dead_letters"
    doc = (
        "Dead letters as JSON lines (stage, reason, field, error, raw, source) under --output; streaming: to a "
        "Kafka topic instead when topic is given. Late records of a streaming source come here too."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "path": _RELATIVE,
            "topic": {"type": ["string", "null"], "description": "Streaming: an existing Kafka topic instead."},
            "bootstrap": {"type": "string", "description": "With topic: Kafka servers. Default: the source's."},
        },
        "required": ["path"],
    }

    def columns(self, inputs):
        if self.config.get("topic") and self.ctx.mode != "streaming":
            raise self.error("topic", "dead letters go to a Kafka topic only when streaming")
        return None

    def make(self, root: str):
        from transforms.sinks.deadletters import WriteDeadLetters as Write
        from transforms.sinks.stream_files import WriteTableFiles

        c, cfg = self.config, self.ctx.cfg
        path = join_path(root, c["path"])
        if self.ctx.mode == "streaming":
            if c.get("topic"):
                from transforms.sinks.kafka import WriteKafkaJson

                return WriteKafkaJson(c.get("bootstrap") or cfg.kafka_bootstrap, c["topic"], key_column="source")
            return WriteTableFiles(path, write_jsonl, ".jsonl", id_column="source", sort_by=("source", "raw"))
        return Write(path, shards=cfg.dlq_shards, spill_dir=join_path(root, SCRATCH, "dlq"))


@register
class UpsertPostgres(Sink):
    type = "UpsertPostgres"
    doc = "Upserts rows into a PostgreSQL table (created when missing) keyed by natural key columns."
    config_schema = {
        "type": "object",
        "properties": {
            "dsn": {
                "type": "string",
                "description": "postgresql://user@host:port/db (e.g. ${pg_dsn}), without a password: it travels in "
                "the job graph. A password goes in dsn_env or dsn_file (or PGPASSWORD/PGPASSFILE on the workers).",
            },
            "dsn_env": {
                "type": "string",
                "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                "description": "Or the environment variable holding the connection string, read on the workers.",
            },
            "dsn_file": {
                "type": "string",
                "description": "Or a file holding the connection string (a mounted secret; relative to the spec), "
                "read on the workers.",
            },
            "table": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]{0,62}$", "description": "A plain SQL name."},
            "keys": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "retry_for_seconds": {
                "type": "number",
                "minimum": 1,
                "description": "How long a write is retried while PostgreSQL is unreachable (a restart, a failover)"
                " before the job fails. Default: 300.",
            },
            "version": {
                "type": "string",
                "description": "An integer column saying which of two rows of a key is newer (e.g. _version of "
                "EntityFeatures' online rows): a stored row is replaced only by one of the same or a higher "
                "version. Default: the firing each row came from.",
            },
            "row_security": {
                "type": "object",
                "description": "Row-level security: each tenant's roles see only that tenant's rows; the "
                "pipeline's role writes through the policies (run it as a plain role, not a superuser).",
                "properties": {
                    "column": {"type": "string", "description": "The tenant column: one of keys."},
                    "roles": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]{0,54}$"},
                        "description": "Tenant value -> role that reads only its rows (created NOLOGIN when "
                        "missing, which needs CREATEROLE).",
                    },
                    "shared_role": {
                        "type": "string",
                        "pattern": r"^[a-z_][a-z0-9_]{0,54}$",
                        "description": "A role that reads the rows of the tenant its session names: SET "
                        "beam_pipelines.tenant = 'value'.",
                    },
                },
                "required": ["column"],
                "additionalProperties": False,
            },
        },
        "required": ["table", "keys"],
    }

    def columns(self, inputs):
        super().columns(inputs)
        given = [k for k in ("dsn", "dsn_env", "dsn_file") if k in self.config]
        if len(given) != 1:
            raise self.error(None, "give the connection string's place: dsn, dsn_env or dsn_file (exactly one)")
        if given == ["dsn"] and _password_in(self.config["dsn"]):
            raise self.error("dsn", "holds a password, which would travel in the job graph: give the connection "
                                    "string by dsn_env or dsn_file, or the password by PGPASSWORD/PGPASSFILE")  # fmt: skip
        for i, k in enumerate(self.config["keys"]):
            self.need(inputs[0], k, f"keys.{i}")
        version = self.config.get("version")
        if version is not None:
            self.need(inputs[0], version, "version", ("integer",))
            if version in self.config["keys"]:
                raise self.error(
                    "version", f"{version!r} is a key column: the version says which row of a key is newer"
                )
        rls = self.config.get("row_security")
        if rls is not None:
            from transforms.sinks.row_security import RowSecurity

            if rls["column"] not in self.config["keys"]:
                raise self.error(
                    "row_security.column",
                    f"{rls['column']!r} must be one of keys: two tenants' rows with the same other keys would "
                    "replace each other",
                )
            try:
                RowSecurity(rls["column"], dict(rls.get("roles") or {}), rls.get("shared_role"))
            except ValueError as e:
                raise self.error("row_security", str(e)) from None
        self._schema = pa.schema([(c, t) for c, t in inputs[0].items() if not c.startswith("_") or c == version])
        return None

    def reads(self):
        return set(self._schema.names)

    def make(self, root: str):
        from transforms.sinks.postgres import UpsertPostgres as Upsert

        c = self.config
        return Upsert(
            c.get("dsn"),
            c["table"],
            tuple(c["keys"]),
            self._schema,
            retry_for_s=c.get("retry_for_seconds", 300.0),
            version=c.get("version"),
            row_security=self._row_security(),
            dsn_env=c.get("dsn_env"),
            dsn_file=self._dsn_file(),
        )

    def _dsn_file(self) -> str | None:
        f = self.config.get("dsn_file")
        return None if f is None else os.path.join(self.ctx.base_dir, f)

    def dsn(self) -> str:
        """The connection string, wherever the spec says it is (the launcher's own use: it clears
        and counts the table of a streaming run)."""
        from transforms.ingest.pg_sql import resolve_dsn

        return self.config["dsn"] if "dsn" in self.config else resolve_dsn(self.config.get("dsn_env"), self._dsn_file())

    def _row_security(self):
        rls = self.config.get("row_security")
        if rls is None:
            return None
        from transforms.sinks.row_security import RowSecurity

        return RowSecurity(rls["column"], dict(rls.get("roles") or {}), rls.get("shared_role"))


@register
class WriteKafka(Sink):
    type = "WriteKafka"
    doc = "Produces each row as a JSON message to an existing Kafka topic."
    config_schema = {
        "type": "object",
        "properties": {
            "bootstrap": {"type": "string"},
            "topic": {"type": "string"},
            "key": {"type": "string", "description": "Column whose value keys each message."},
            "timeout": duration("How long a bundle waits for its messages to be acknowledged."),
        },
        "required": ["bootstrap", "topic"],
    }

    def columns(self, inputs):
        super().columns(inputs)
        if "key" in self.config:
            self.need(inputs[0], self.config["key"], "key")
        return None

    def make(self, root: str):
        from transforms.sinks.kafka import WriteKafkaJson

        c = self.config
        timeout = float(duration_seconds(c["timeout"])) if "timeout" in c else 30.0
        return WriteKafkaJson(c["bootstrap"], c["topic"], key_column=c.get("key"), timeout_s=timeout)


def _password_in(dsn: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return bool(conninfo_to_dict(dsn).get("password"))
    except Exception:  # noqa: BLE001 - a malformed string fails when the sink connects, with its own error
        return False
