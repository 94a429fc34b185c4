"""Deduplicate: one row per key across the whole input, by an Arrow-partitioned shuffle.

Each batch is split by a stable hash of the key into ``partitions`` sub-tables; one
GroupByKey brings each partition's sub-tables together, where one pass keeps the first row
per key by ``order_by``. Removed rows are counted. Batches are not deduplicated on their own
first: duplicates are rare, and that pass would hash every key once more.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import GlobalWindows, TimestampCombiner

from transforms import faults
from transforms.records import as_array, concat_records, hash_partition, raw_text, slices_by, typed
from transforms.sinks.files import spill_parts, unspill

__all__ = ["Deduplicate"]


def _sortable(column):
    return raw_text(column) if pa.types.is_struct(column.type) else column


def keep_first(
    table: pa.Table, key: str, order_by: tuple[str, ...], drop: tuple[str, ...] = (), last: bool = False
) -> pa.Table:
    """Rows with a distinct ``key``, each the smallest by ``order_by`` (the largest when ``last``),
    without the ``drop`` columns.

    Rows keep their order; only the ordering columns of rows whose key repeats are sorted.
    """
    gone = [c for c in drop if c in table.column_names]
    kept = table.drop_columns(gone) if gone else table
    if table.num_rows < 2:
        return kept
    # One hash pass: each row's key number, and how many rows hold it.
    codes = pc.dictionary_encode(as_array(table.column(key)), null_encoding="encode").indices.to_numpy()
    dup_mask = np.bincount(codes)[codes] > 1
    if not dup_mask.any():
        return kept
    dup_rows = np.flatnonzero(dup_mask)
    # Only the ordering columns of repeated keys are sorted; records kept typed (a struct
    # ``_raw``) are compared by their text, as text records are.
    dups = table.select(list(dict.fromkeys((key, *order_by)))).take(pa.array(dup_rows))
    order = pa.table({c: _sortable(dups.column(c)) for c in dups.column_names})
    direction = "descending" if last else "ascending"
    ranked = pc.sort_indices(order, [(key, "ascending")] + [(c, direction) for c in order_by]).to_numpy()
    ranked_keys = order.column(key).take(pa.array(ranked)).combine_chunks()
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = pc.fill_null(pc.not_equal(ranked_keys.slice(1), ranked_keys.slice(0, len(ranked) - 1)), True).to_numpy(
        zero_copy_only=False
    )
    keep = ~dup_mask
    keep[dup_rows[ranked[first]]] = True
    return kept.filter(pa.array(keep))


class _PartitionFn(beam.DoFn):
    def __init__(self, key: str, order_by: tuple[str, ...], partitions: int, spill_dir: str | None):
        self._key, self._order_by, self._partitions = key, order_by, partitions
        self._spill_dir = spill_dir

    def process(self, table: pa.Table):
        parts = list(slices_by(table, hash_partition(table.column(self._key), self._partitions)))
        yield from parts if self._spill_dir is None else spill_parts(parts, self._spill_dir)


class _MergeFn(beam.DoFn):
    def __init__(self, key: str, order_by: tuple[str, ...], drop: tuple[str, ...], last: bool = False):
        self._key, self._order_by, self._drop, self._last = key, order_by, drop, last

    def setup(self):
        self._dups = beam.metrics.Metrics.counter("dedup", "duplicates")

    def process(self, element):
        faults.at("dedup")
        _, parts = element
        parts = list(parts)
        tables = [p for p in parts if not isinstance(p, str)] + unspill([p for p in parts if isinstance(p, str)])
        table = concat_records(tables)
        deduped = keep_first(table, self._key, self._order_by, self._drop, self._last)
        removed = table.num_rows - deduped.num_rows
        self._dups.inc(removed)
        if removed:
            yield beam.pvalue.TaggedOutput("stats", {"duplicates": removed})
        yield deduped


class Deduplicate(beam.PTransform):
    """Keeps exactly one row per key: the first (or last) by ``order_by``; counts the others.

    Args:
        key: The key column (e.g. ``event_id``).
        order_by: Columns that choose the survivor, smallest first (e.g. ``("ts", "_raw")``:
            the earliest, ties broken by the smallest raw text).
        partitions: How many hash partitions the shuffle uses (parallelism of the merge).
            Partition ``p`` holds the keys with ``hash_partition(key, partitions) == p``.
        drop: Columns left out of the output once the survivors are chosen (e.g. a tie-break
            column nothing downstream reads: not copying it is cheaper than carrying it).
        spill_dir: If set, partitions are written there as Arrow files and only their paths
            go through Beam's shuffle, so a runner that holds shuffled data in memory (the
            direct runner) holds paths, not rows: memory stays flat as input grows. Must be
            visible to every worker (the run's staging directory is).
        keep: ``first`` keeps the smallest row by ``order_by``; ``last`` the largest (e.g. the
            latest version of a record by ``updated_at``).

    Returns a dict: ``unique`` (tables, in no particular row order) and ``stats`` (dicts with
    ``duplicates``).
    """

    def __init__(
        self,
        key: str,
        order_by: tuple[str, ...] = (),
        partitions: int = 8,
        spill_dir: str | None = None,
        drop: tuple[str, ...] = (),
        keep: str = "first",
        label: str | None = None,
    ):
        super().__init__(label)
        if keep not in ("first", "last"):
            raise ValueError(f"keep must be first or last, got {keep!r}")
        self._last = keep == "last"
        self._drop = tuple(drop)
        if key in self._drop:
            raise ValueError("drop must not hold the key")
        self._spill_dir = spill_dir
        if not key:
            raise ValueError("key is required")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self._key, self._order_by, self._partitions = key, tuple(order_by), partitions

    def expand(self, tables):
        part_type = beam.typehints.KV[int, pa.Table if self._spill_dir is None else str]
        parts = tables | "Partition" >> beam.ParDo(
            _PartitionFn(self._key, self._order_by, self._partitions, self._spill_dir)
        ).with_input_types(pa.Table).with_output_types(part_type).with_outputs("stats", main="parts")
        merged = (
            typed(parts.parts, part_type)
            # Grouped rows keep their earliest timestamp, not the global window's end: otherwise
            # any event-time window downstream is already expired, and Prism drops its data.
            | "KeepTimestamps"
            >> beam.WindowInto(GlobalWindows(), timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST)
            | "GroupPartitions" >> beam.GroupByKey().with_input_types(part_type)
            | "Rewindow" >> beam.WindowInto(GlobalWindows())  # back to the default, so outputs flatten with others
            | "Merge"
            >> beam.ParDo(_MergeFn(self._key, self._order_by, self._drop, self._last)).with_outputs(
                "stats", main="unique"
            )
        )
        stats = (typed(parts.stats, dict), typed(merged.stats, dict)) | "Stats" >> beam.Flatten()
        return {"unique": typed(merged.unique), "stats": stats}
