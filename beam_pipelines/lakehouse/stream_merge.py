"""MergeSilver: a stream's curated records MERGEd into the silver Delta table as they come.

A batch run stages silver and commits it when it publishes; a stream has no end to publish at,
so each element (one bundle's curated records) is one MERGE on the record key, with the same
rule as the batch commit (``tables.merge``): a stored row is replaced only by a record that
differs from it and is not older by the Deduplicate step's ordering. Merging the same records
again changes nothing, so a replayed stream (a restart) or a repeated bundle is harmless. Two
bundles committing at once (or ``lakehouse maintain`` compacting) conflict in Delta's log: the
loser reads the table again and retries.

Each MERGE adds small files; ``python -m beam_pipelines.lakehouse maintain`` compacts them
(``benchmarks/stream_silver.py`` measures an hour of micro-batches).
"""

from __future__ import annotations

import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.lakehouse import tables
from beam_pipelines.lakehouse.commit import DAY

__all__ = ["MergeSilver", "merge_batch"]

_CONFLICT_TRIES = 10


def _one_per_key(data: pa.Table, key: str, newer: tuple[str, str] | None) -> pa.Table:
    """Each key once (Delta refuses a target row matched twice): the newest by ``newer``, else the last."""
    order = [(newer[0], "ascending")] if newer else []
    keep_last = newer is None or newer[1] == "last"
    idx = pa.array(np.arange(data.num_rows, dtype=np.int64))
    ranked = data.append_column("_i", idx).sort_by([*order, ("_i", "ascending")])
    ranked = ranked.append_column("_r", pa.array(np.arange(ranked.num_rows, dtype=np.int64)))
    picked = ranked.group_by([key], use_threads=False).aggregate([("_r", "max" if keep_last else "min")])
    rows = np.sort(picked.column(picked.num_columns - 1).to_numpy())
    return ranked.take(pa.array(rows)).drop_columns(["_i", "_r"])


def merge_batch(uri: str, data: pa.Table, key: str, newer: tuple[str, str] | None, partition_by: str,
                label: str = "stream") -> dict:  # fmt: skip
    """MERGEs one batch of curated records into the silver table at ``uri`` (created by the first)."""
    from deltalake.exceptions import CommitFailedError

    data = _one_per_key(data, key, newer)
    data = data.append_column(DAY, pc.cast(data.column(partition_by), pa.date32()))
    props = tables.commit_properties(label, layer="silver")
    for attempt in range(_CONFLICT_TRIES):
        try:
            table = tables.open_table(uri)
            if table is None:
                tables.append(uri, data, [DAY], props)
                return {"inserted": data.num_rows, "updated": 0}
            # delta-rs' MERGE: for a small batch into a large table it is the faster of the two
            # (benchmarks/stream_silver.py: p50 61 against 71 ms); arrow_merge is for the batch commit.
            m = tables.merge(table, data, key, newer, props, engine="delta-rs")
            return {"inserted": m.get("num_target_rows_inserted", 0), "updated": m.get("num_target_rows_updated", 0)}
        except CommitFailedError:
            if attempt == _CONFLICT_TRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


class _MergeFn(beam.DoFn):
    def __init__(self, uri, key, newer, partition_by, columns):
        self._uri, self._key, self._newer = uri, key, newer
        self._partition_by, self._columns = partition_by, columns

    def setup(self):
        self._merged = beam.metrics.Metrics.counter("lakehouse", "silver_rows_merged")

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        got = merge_batch(self._uri, table.select(list(self._columns)), self._key, self._newer, self._partition_by)
        self._merged.inc(table.num_rows)
        yield {"table": self._uri, "rows": table.num_rows, **got}


class MergeSilver(beam.PTransform):
    """Merges each curated table into the silver Delta table at ``uri`` (see the module doc).

    Args:
        uri: The table's directory (local).
        key: The record key (the Deduplicate step's).
        newer: ``(column, keep)``: which of two versions of a key wins (``last``: the larger), or None.
        partition_by: The timestamp column whose UTC day (``dt``) partitions the table.
        columns: The curated columns written.

    Returns a PCollection of one dict per MERGE: rows, inserted, updated.
    """

    def __init__(self, uri: str, key: str, newer, partition_by: str, columns: tuple[str, ...],
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        if key not in columns or partition_by not in columns:
            raise ValueError(f"key {key!r} and partition_by {partition_by!r} must be among the columns written")
        self._fn = _MergeFn(uri, key, tuple(newer) if newer else None, partition_by, tuple(columns))

    def expand(self, tables_):
        return tables_ | "Merge" >> beam.ParDo(self._fn).with_input_types(pa.Table).with_output_types(dict)
