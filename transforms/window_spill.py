"""The bounded-input path of WindowedAggregate: partial aggregates shuffled through files.

Exact distinct counts need every distinct value of a window in one place; held as combiner
accumulators, they grow with the input (one partial row per (window, keys, value)). Here the
partial rows are hash-partitioned by the distinct value, so each value of every window lands in
exactly one partition: a window's distinct count is the sum of its partitions' counts. Each
partition's partials are written as Arrow files and only their paths go through the runner's
shuffle; one partition is merged at a time, so memory stays flat as input grows. What leaves
a partition is one small row per (window, keys), which Beam's own windows then combine.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.window import GlobalWindow, GlobalWindows, TimestampCombiner
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.partials import partial_rows, window_starts
from transforms.records import hash_partition, slices_by
from transforms.sinks.files import spill_parts, unspill

__all__ = ["WINDOW_COLUMN", "SpilledPartials"]

WINDOW_COLUMN = _W = "_window"  # window start, microseconds since the epoch
FLUSH_ROWS = 1_000_000  # partial rows buffered per bundle before they are written out


def user_partials(table: pa.Table, s: dict) -> pa.Table:
    """One partial row per input row (window start, keys, distinct value, ``_events``, ``_units``).

    Not grouped per batch: with a distinct value per row (users within an hour) a batch's
    group-by removed 0.5% of its rows at ~400 ns a row; the partition's merge groups once.
    """
    starts = pa.array(window_starts(table.column(s["time"]), s["size_us"]))
    return partial_rows(table.append_column(_W, starts), (_W, *s["keys"]), s["distinct"], s["sum"], s["scale"])


def merge_user_partials(table: pa.Table, s: dict) -> pa.Table:
    """Partials of one partition -> one row per (window start, keys): events, users, units.

    Every row of a distinct value is in this partition, so one group-by with a distinct count
    is exact (and ~2.5x faster than grouping by the value first).
    """
    keys = [_W, *s["keys"]]
    out = table.group_by(keys, use_threads=False).aggregate(
        [("_events", "sum"), (s["distinct"], "count_distinct"), ("_units", "sum")]
    )
    return out.rename_columns(keys + ["_events", "_users", "_units"])


class _PartitionFn(beam.DoFn):
    """Buffers partial rows per bundle and writes them out, one file per partition, every
    ``flush_rows`` rows and at the end of the bundle (fewer, larger files than one per table)."""

    def __init__(self, spec: dict, partitions: int, spill_dir: str, flush_rows: int):
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
        parts = list(slices_by(table, hash_partition(table.column(self._s["distinct"]), self._partitions)))
        for (pid, part), (_, ref) in zip(parts, spill_parts(parts, self._spill_dir)):
            # Timestamped at its earliest window, so no window downstream is expired on arrival.
            yield Timestamp(micros=pc.min(part.column(_W)).as_py()), (pid, ref)


class _MergeFn(beam.DoFn):
    def __init__(self, spec: dict):
        self._s = spec

    def process(self, element):
        _, paths = element
        table = pa.concat_tables(unspill(sorted(paths)))
        yield merge_user_partials(table, self._s)


class SpilledPartials(beam.PTransform):
    """Tables -> per (window, keys) counts (``_events``, ``_users``, ``_units``), one small
    table per partition in the global window, its windows' starts (epoch microseconds) in
    column ``_window``: adding up the partitions' counts needs no per-window shuffle.

    Args:
        spec: WindowedAggregate's spec (time, size_us, keys, distinct, sum, scale).
        partitions: Hash partitions of the distinct column (how many merges, and how much of
            the input one merge holds: about 1/partitions of the partial rows).
        spill_dir: Directory every worker can reach (the run's scratch directory).
        flush_rows: Partial rows a worker buffers before writing them out (bounds its memory).
    """

    def __init__(
        self, spec: dict, partitions: int, spill_dir: str, flush_rows: int = FLUSH_ROWS, label: str | None = None
    ):
        super().__init__(label)
        if partitions < 1 or flush_rows < 1:
            raise ValueError("partitions and flush_rows must be >= 1")
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
