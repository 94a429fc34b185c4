"""WriteDeadLetters: DeadLetter tables -> JSON-lines files, one object per dead letter."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.records import DEAD_LETTER_SCHEMA, hash_partition, json_lines
from transforms.sinks.files import WriteKeyedTables

__all__ = ["WriteDeadLetters"]

_COLUMNS = DEAD_LETTER_SCHEMA.names
_ORDER = "_order"


def write_jsonl(table: pa.Table, path: str) -> None:
    body = json_lines(table.select(_COLUMNS))
    with FileSystems.create(path, mime_type="application/x-ndjson") as fh:
        fh.write(body)


class _ShardFn(beam.DoFn):
    def __init__(self, shards: int):
        self._shards = shards

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        # Files list a source's dead letters by a stable hash of the record text, then the text:
        # as deterministic as sorting by the text, at a fraction of the cost of comparing
        # records that share long prefixes.
        table = table.select(_COLUMNS).append_column(_ORDER, pa.array(hash_partition(table.column("raw"), 2**62)))
        if self._shards == 1:
            yield "part-00000.jsonl", table
            return
        shard = hash_partition(table.column("raw"), self._shards)
        for s in sorted(set(shard.tolist())):
            yield f"part-{s:05d}.jsonl", table.filter(pa.array(shard == s))


class WriteDeadLetters(beam.PTransform):
    """Writes dead letters as JSON lines: stage, reason, field, error, raw, source.

    Args:
        root: Output directory on any Beam filesystem.
        shards: Number of files, split by a stable hash of ``raw``.
        spill_dir: If set, dead letters are written there as Arrow files on their way to the
            writer and only their paths are shuffled (see ``WriteKeyedTables``).

    Returns a PCollection of ``{"path", "rows"}`` dicts, one per file written.
    """

    def __init__(self, root: str, shards: int = 1, spill_dir: str | None = None, label: str | None = None):
        super().__init__(label)
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._root, self._shards, self._spill_dir = root, shards, spill_dir

    def expand(self, tables):
        return (
            tables
            | "Shard"
            >> beam.ParDo(_ShardFn(self._shards))
            .with_input_types(pa.Table)
            .with_output_types(beam.typehints.KV[str, pa.Table])
            | "Files"
            >> WriteKeyedTables(
                self._root, ("source", _ORDER, "raw", "stage", "reason", "field"), write_jsonl, self._spill_dir
            )
        )
