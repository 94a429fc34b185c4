"""The bounded-input path of WindowedAggregate: partial aggregates shuffled through files.

Exact distinct counts need every distinct value of a window in one place; held as combiner
accumulators, they grow with the input (one partial row per (window, keys, value)). Here the
partial rows are hash-partitioned by the distinct value, so each value of every window lands in
exactly one partition: a window's distinct count is the sum of its partitions' counts. With
several count_distinct columns, rows are partitioned by their group instead (window and keys
for fixed windows, keys for sliding ones), so each partition holds whole groups. Each
partition's partials are written as Arrow files and only their paths go through the runner's
shuffle; one partition is merged at a time, so memory stays flat as input grows. What leaves
a partition is one small row per (window, keys), which Beam's own windows then combine.

Sliding windows: rows are bucketed by period; a partition groups its rows per (bucket, keys,
distinct values), copies each group into the ``size / period`` windows holding its bucket and
counts there, so it costs about that many times the distinct groups of a period.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.window import GlobalWindow, GlobalWindows, TimestampCombiner
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import faults
from transforms.partials import AggregateSpec, Fixed, Sliding, group_states, key_partitions, row_states, window_starts
from transforms.records import hash_partition, slices_by
from transforms.sinks.files import spill_parts, unspill

__all__ = ["WINDOW_COLUMN", "SpilledPartials"]

WINDOW_COLUMN = _W = "_window"  # window (sliding: bucket) start, microseconds since the epoch
FLUSH_ROWS = 1_000_000  # partial rows buffered per bundle before they are written out


def user_partials(table: pa.Table, s: AggregateSpec) -> pa.Table:
    """One partial row per input row: bucket start, keys, distinct values and measure states.

    Not grouped per batch: with a distinct value per row (users within an hour) a batch's
    group-by removed 0.5% of its rows at ~400 ns a row; the partition's merge groups once.
    """
    starts = pa.array(window_starts(table.column(s.time), s.step_us))
    return row_states(table, s, {_W: starts, **{k: table.column(k) for k in s.keys}})


def partition_ids(table: pa.Table, s: AggregateSpec, partitions: int):
    """The partition of each partial row: by its distinct value (one distinct column) or by
    its group (several)."""
    if len(s.distinct) == 1:
        return hash_partition(table.column(s.distinct[0]), partitions)
    return key_partitions(table, ([_W] if isinstance(s.window, Fixed) else []) + list(s.keys), partitions)


def sliding_copies(partials: pa.Table, s: AggregateSpec) -> pa.Table:
    """Partials per period bucket -> the same partials once in every window holding the bucket."""
    at = partials.column_names.index(_W)
    buckets = partials.column(_W)
    copies = [partials]
    for j in range(1, s.size_us // s.step_us):
        copies.append(partials.set_column(at, _W, pc.subtract(buckets, j * s.step_us)))
    return pa.concat_tables(copies)


def merge_user_partials(table: pa.Table, s: AggregateSpec) -> pa.Table:
    """Partials of one partition -> finals per (window start, keys).

    Every row of a distinct value (or of a group) is in this partition, so one group-by with a
    distinct count is exact (and ~2.5x faster than grouping by the value first).
    """
    by = [_W, *s.keys]
    if isinstance(s.window, Sliding):
        partials = sliding_copies(group_states(table, s, by, "rows", "partials"), s)
        return group_states(partials, s, by, "partials", "finals", unique=False)
    return group_states(table, s, by, "rows", "finals")


class _PartitionFn(beam.DoFn):
    """Buffers partial rows per bundle and writes them out, one file per partition, every
    ``flush_rows`` rows and at the end of the bundle (fewer, larger files than one per table)."""

    def __init__(self, spec: AggregateSpec, partitions: int, spill_dir: str, flush_rows: int):
        self._s, self._partitions, self._spill_dir = spec, partitions, spill_dir
        self._flush_rows = flush_rows

    def start_bundle(self):
        self._buffer, self._rows = [], 0

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        part = user_partials(table, self._s)
        self._buffer.append(part)
        self._rows += part.num_rows
        if self._rows >= self._flush_rows:
            for ts, kv in self._flush():
                yield beam_window.TimestampedValue(kv, ts)

    def finish_bundle(self):
        for ts, kv in self._flush():
            yield WindowedValue(kv, ts, [GlobalWindow()])

    def _flush(self):
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer).combine_chunks()
        self._buffer, self._rows = [], 0
        parts = list(slices_by(table, partition_ids(table, self._s, self._partitions)))
        for (pid, part), (_, ref) in zip(parts, spill_parts(parts, self._spill_dir)):
            # Timestamped at its earliest window, so no window downstream is expired on arrival.
            yield Timestamp(micros=pc.min(part.column(_W)).as_py()), (pid, ref)


class _MergeFn(beam.DoFn):
    def __init__(self, spec: AggregateSpec):
        self._s = spec

    def process(self, element):
        faults.at("aggregate")
        _, paths = element
        table = pa.concat_tables(unspill(sorted(paths)))
        yield merge_user_partials(table, self._s)


class SpilledPartials(beam.PTransform):
    """Tables -> per (window, keys) finals (``_<measure>`` states, see partials), one small
    table per partition in the global window, its windows' starts (epoch microseconds) in
    column ``_window``: adding up the partitions' finals needs no per-window shuffle.

    Args:
        spec: WindowedAggregate's spec (fixed or sliding window, at least one count_distinct).
        partitions: Hash partitions of the distinct column (how many merges, and how much of
            the input one merge holds: about 1/partitions of the partial rows).
        spill_dir: Directory every worker can reach (the run's scratch directory).
        flush_rows: Partial rows a worker buffers before writing them out (bounds its memory).
    """

    def __init__(
        self,
        spec: AggregateSpec,
        partitions: int,
        spill_dir: str,
        flush_rows: int = FLUSH_ROWS,
        label: str | None = None,
    ):
        super().__init__(label)
        if partitions < 1 or flush_rows < 1:
            raise ValueError("partitions and flush_rows must be >= 1")
        if not isinstance(spec.window, (Fixed, Sliding)) or not spec.distinct:
            raise ValueError("SpilledPartials needs fixed or sliding windows and a count_distinct measure")
        self._s, self._partitions, self._spill_dir = spec, partitions, spill_dir
        self._flush_rows = flush_rows

    def expand(self, tables):
        kv = beam.typehints.KV[int, str]
        paths = tables | "PartitionPartials" >> beam.ParDo(
            _PartitionFn(self._s, self._partitions, self._spill_dir, self._flush_rows)
        ).with_input_types(pa.Table).with_output_types(kv)
        return (
            paths
            | "KeepTimestamps"
            >> beam.WindowInto(GlobalWindows(), timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST)
            | "GroupPartials" >> beam.GroupByKey().with_input_types(kv)
            | "MergePartials" >> beam.ParDo(_MergeFn(self._s)).with_output_types(pa.Table)
        )
