"""The WriteBigQuery spec step: curated records or an aggregate into a day-partitioned BigQuery
table (``transforms/sinks/bigquery.py``).

Batch replaces the days the run has rows for (``replace_partitions``, the default) or merges by
keys; streaming merges each window firing by the aggregate's keys. The table's columns come from
the rows reaching the step, REQUIRED where the record contract requires the field. Credentials
come from the environment (Application Default Credentials), never from the spec.
"""

from __future__ import annotations

import re

import pyarrow as pa

from beam_pipelines.spec.steps.base import register, type_name
from beam_pipelines.spec.steps.io import Sink
from transforms.sinks.bigquery_schema import DATASET, LABEL_KEY, LABEL_VALUE, MODES, PROJECT, TABLE

__all__ = ["WriteBigQuery"]

_WINDOW_COLUMNS = ("window_start", "window_end")  # an aggregate's columns that always have a value


@register
class WriteBigQuery(Sink):
    type = "WriteBigQuery"
    doc = (
        "Writes rows into a BigQuery table partitioned by day, by load jobs of parquet files: batch replaces the "
        "days it has rows for (replace_partitions) or MERGEs by keys; streaming MERGEs each window firing by keys. "
        "The table is created when missing and gains the rows' new columns. Credentials: Application Default "
        "Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, a service account)."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "project": {"type": "string", "pattern": PROJECT, "description": "The Google Cloud project."},
            "dataset": {"type": "string", "pattern": DATASET, "description": "An existing dataset."},
            "table": {"type": "string", "pattern": TABLE, "description": "The table (created when missing)."},
            "partition_by": {
                "type": "string",
                "description": "A timestamp or date column: the table is partitioned by its UTC day.",
            },
            "mode": {
                "enum": list(MODES),
                "description": "replace_partitions (batch): each day the run has rows for is replaced by one load "
                "job (table$YYYYMMDD, WRITE_TRUNCATE). merge: rows are staged and MERGEd by keys. Default: "
                "replace_partitions in batch, merge in streaming.",
            },
            "keys": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string"},
                "description": "merge: the columns that identify a row (an aggregate's window and group columns).",
            },
            "location": {"type": "string", "description": "The dataset's location (US, EU, europe-west1...)."},
            "endpoint": {
                "type": "string",
                "pattern": r"^https?://[^\s/]+(/\S*)?$",
                "description": "Another BigQuery API's URL (an emulator, a test server); it gets no credentials.",
            },
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": LABEL_KEY},
                "additionalProperties": {"type": "string", "pattern": LABEL_VALUE},
                "description": "Labels on the table and its jobs.",
            },
            "retry_for_seconds": {
                "type": "number",
                "minimum": 1,
                "description": "How long one write retries BigQuery's retryable errors (429, 5xx, dropped "
                "connections) before the job fails. Default: 300.",
            },
        },
        "required": ["project", "dataset", "table", "partition_by"],
    }

    def columns(self, inputs):
        super().columns(inputs)
        c, cols, streaming = self.config, inputs[0], self.ctx.mode == "streaming"
        mode = c.get("mode") or ("merge" if streaming else "replace_partitions")
        if streaming and mode == "replace_partitions":
            raise self.error("mode", "a streaming write merges by keys (mode: merge): a window's firing holds part of "
                                     "a day, not the whole day")  # fmt: skip
        partition = c["partition_by"]
        kind = self.need(cols, partition, "partition_by")
        if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
            raise self.error("partition_by", f"column {partition!r} must be a timestamp or a date, but it is "
                                             f"{type_name(kind)}")  # fmt: skip
        keys = tuple(c.get("keys", ()))
        if mode == "merge" and not keys:
            raise self.error(None, "mode merge needs keys: the columns that identify a row")
        if mode == "replace_partitions" and keys:
            raise self.error("keys", "keys apply to mode merge; replace_partitions replaces whole days")
        for i, k in enumerate(keys):
            self.need(cols, k, f"keys.{i}")
        contract = self.ctx.contract
        required = ()
        if self.role == "curated" and contract is not None:
            required = tuple(f.name for f in contract.fields if f.required and cols.get(f.name) == f.arrow_type)
        if mode == "replace_partitions":
            always = required if self.role == "curated" else _WINDOW_COLUMNS if self.role == "aggregates" else None
            if always is not None and partition not in always:
                raise self.error("partition_by", f"column {partition!r} may be null, and a row without a day has no "
                                                 "partition to replace: partition by a required field of the contract "
                                                 "(or an aggregate's window_start)")  # fmt: skip
        for k in c.get("labels") or {}:
            if not re.fullmatch(LABEL_KEY, k):
                raise self.error("labels", f"label {k!r} must match {LABEL_KEY}")
        name = f"bigquery:{c['project']}.{c['dataset']}.{c['table']}"
        if name in self.ctx.tables:
            raise self.error("table", f"{name[9:]} is written by step {self.ctx.tables[name]} already")
        self.ctx.tables[name] = self.name
        self._mode, self._keys, self._required = mode, keys, required
        self._schema = pa.schema([(n, cols[n]) for n in self.written(cols)])
        try:
            self.make("")
        except ValueError as e:  # a name, a type or a key BigQuery would refuse
            raise self.error(None, str(e)) from None
        return None

    def reads(self):
        return set(self._schema.names)

    def describe(self) -> str:
        c = self.config
        how = f"merge by {', '.join(self._keys)}" if self._mode == "merge" else "replace_partitions"
        return f"{self.role} -> BigQuery {c['project']}.{c['dataset']}.{c['table']} ({how}, day of {c['partition_by']})"

    def make(self, root: str):
        from transforms.sinks.bigquery import WriteBigQuery as Write

        c = self.config
        return Write(
            c["project"],
            c["dataset"],
            c["table"],
            self._schema,
            c["partition_by"],
            mode=self._mode,
            keys=self._keys,
            required=self._required,
            streaming=self.ctx.mode == "streaming",
            location=c.get("location"),
            endpoint=c.get("endpoint"),
            labels=dict(c.get("labels") or {}),
            retry_for_s=c.get("retry_for_seconds", 300.0),
        )
