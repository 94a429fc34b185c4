"""WriteReceived: a source's raw batches -> the records as received (the bronze layer's rows).

Every record read becomes one row, whatever later happens to it (curated, deduplicated or a
dead letter): its original text (a line of jsonl or csv, an avro record as JSON; a typed row of
parquet or a database as a JSON object, fields in column order), where it came from (the file,
table key or URL the source names) and when the run received it (the run's clock, one instant
for the run).
"""

from __future__ import annotations

from datetime import datetime

import apache_beam as beam
import pyarrow as pa

from transforms.records import json_text
from transforms.sinks.files import WriteBundles

__all__ = ["RECEIVED_SCHEMA", "RUN_ID", "WriteReceived", "received_rows"]

RUN_ID = "run_id"

RECEIVED_SCHEMA = pa.schema(
    [
        pa.field("record", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("ingest_time", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def _text(raw: pa.Array | pa.ChunkedArray) -> pa.Array:
    try:
        return raw.cast(pa.string())  # checks the bytes are UTF-8
    except pa.ArrowInvalid:  # as the dead letters keep such bytes: escaped, nothing lost
        return pa.array([b.decode("utf-8", errors="backslashreplace") for b in raw.to_pylist()], pa.string())


def received_rows(batch: pa.Table, ingest_time: datetime, run_id: str | None = None) -> pa.Table:
    """The rows of ``RECEIVED_SCHEMA`` for one raw batch: text batches (``raw``, ``source``) or
    typed ones (record columns and ``_source``); with ``run_id``, a last column ``run_id``
    holding it (the bronze table's, so its files are committed as written)."""
    if "_source" in batch.column_names:
        source = batch.column("_source")
        record = json_text(batch.drop_columns(["_source"]))
    else:
        source = batch.column("source")
        record = _text(batch.column("raw"))
    when = pa.repeat(pa.scalar(ingest_time, RECEIVED_SCHEMA.field("ingest_time").type), batch.num_rows)
    rows = pa.Table.from_arrays([record, source.cast(pa.string()), when], schema=RECEIVED_SCHEMA)
    if run_id is None:
        return rows
    return rows.append_column(RUN_ID, pa.repeat(pa.scalar(run_id, pa.string()), batch.num_rows))


class _ReceivedFn(beam.DoFn):
    def __init__(self, ingest_time: datetime, run_id: str | None):
        self._ingest_time, self._run_id = ingest_time, run_id

    def process(self, batch: pa.Table):
        if batch.num_rows:
            yield received_rows(batch, self._ingest_time, self._run_id)


class WriteReceived(beam.PTransform):
    """Writes the records as received of a source's raw batches as parquet under ``root``, each
    bundle's rows into a file of its own (``WriteBundles``: no shuffle, the rows need no grouping).

    Args:
        root: Output directory on any Beam filesystem.
        ingest_time: When the run received the records (timezone-aware; the run's clock).
        scratch_dir: Directory (on ``root``'s filesystem, outside it) the files are written in first.
        run_id: When given, each row also carries it (column ``run_id``).

    Returns a PCollection of ``{"path", "rows"}`` dicts, one per file written.
    """

    def __init__(self, root: str, ingest_time: datetime, scratch_dir: str, run_id: str | None = None,
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        if ingest_time.tzinfo is None:
            raise ValueError("ingest_time must be timezone-aware (UTC)")
        self._root, self._ingest_time, self._scratch, self._run_id = root, ingest_time, scratch_dir, run_id

    def expand(self, raw):
        return (
            raw
            | "Received"
            >> beam.ParDo(_ReceivedFn(self._ingest_time, self._run_id))
            .with_input_types(pa.Table)
            .with_output_types(pa.Table)
            | "Files" >> WriteBundles(self._root, self._scratch)
        )
