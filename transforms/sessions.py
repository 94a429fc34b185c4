"""Session windows of WindowedAggregate: a session per group key that closes after ``gap``
without events, spanning ``[first event, last event + gap)`` (Beam's convention).

Bounded input (:class:`SessionAggregate`): rows are hash-partitioned by the group keys (through
spill files, or Beam's shuffle), so every session lies in one partition; each partition sorts its
rows by (keys, time), finds the gaps with numpy and aggregates every session with one Arrow
group-by. Nothing per row or per session runs in Python.

Unbounded input (:class:`SessionRuns`, then WindowedAggregate's per-key combine): each table is
cut into the same per-key runs of events, and each run becomes one element keyed by its group
key, holding its partial states and timestamped at its first event, plus a few empty marker
elements at later event
times (the first and last event of every half-gap slot), so that Beam's own ``Sessions``
windows, which span ``[timestamp, timestamp + gap)`` per element, merge into exactly the run's
span. Beam then merges runs (across tables, and when a late event bridges two sessions) and
fires with the configured lateness and triggers. Cost: Python work and shuffled elements per
(key, run) in each table, not per row, and one combine per (key, session): fine for a stream's
small tables; for bounded input the partitioned path is far cheaper.
"""

from __future__ import annotations

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.window import GlobalWindows, TimestampCombiner
from apache_beam.utils.timestamp import Timestamp

from transforms.partials import (
    AggregateSpec,
    Sessions,
    group_states,
    key_partitions,
    result_table,
    row_states,
    session_breaks,
)
from transforms.records import slices_by
from transforms.sinks.files import spill_parts, unspill

__all__ = ["KEYED", "SessionAggregate", "SessionRuns", "session_results", "session_runs"]

_SESSION = "_session"


def _columns(spec: AggregateSpec) -> list[str]:
    """The input columns a session aggregate reads."""
    used = [spec.time, *spec.keys, *(m.column for m in spec.measures if m.column)]
    return list(dict.fromkeys(used))


def session_results(table: pa.Table, spec: AggregateSpec) -> pa.Table:
    """The output rows of every session in ``table``, which holds all rows of its keys."""
    n = table.num_rows
    order, times, starts = session_breaks(table, spec)
    rows = table.take(pa.array(order))
    ids = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.append(first[1:], n) - 1
    finals = group_states(row_states(rows, spec, {_SESSION: pa.array(ids)}), spec, [_SESSION], "rows", "finals")
    found = finals.column(_SESSION).to_numpy()
    keys = rows.select(list(spec.keys)).take(pa.array(first[found]))
    for k in spec.keys:
        finals = finals.append_column(k, keys.column(k))
    start = pa.array(times[first[found]])
    end = pa.array(times[last[found]] + spec.gap_us)
    return result_table(finals, spec, start, end)


def session_runs(table: pa.Table, spec: AggregateSpec):
    """Yields ``(key values, partials, first event, marker times)`` for each run of one key's
    events in ``table`` with less than ``gap`` between neighbours (epoch microseconds)."""
    order, times, starts = session_breaks(table, spec)
    rows = table.take(pa.array(order))
    ids = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    lead = {_SESSION: pa.array(ids), **{k: rows.column(k) for k in spec.keys}}
    partials = group_states(row_states(rows, spec, lead), spec, [_SESSION, *spec.keys], "rows", "partials")
    # Markers: the first and last event of every half-gap slot of a run. Neighbouring markers
    # are then less than gap apart, so their Beam session windows chain across the whole run.
    slot = (times - times[first][ids]) // max(spec.gap_us // 2, 1)
    runs = starts.copy()
    runs[1:] |= slot[1:] != slot[:-1]
    run_first = np.flatnonzero(runs)
    marks = np.setdiff1d(np.union1d(run_first, np.append(run_first[1:], len(times)) - 1), first)
    marks_of = [[] for _ in first]
    for i in marks.tolist():
        marks_of[ids[i]].append(int(times[i]))
    keys = rows.select(list(spec.keys)).take(pa.array(first)).to_pylist()
    for sid, part in slices_by(partials, partials.column(_SESSION).to_numpy()):
        yield tuple(keys[sid].values()), part.drop_columns([_SESSION]), int(times[first[sid]]), marks_of[sid]


class _PartitionFn(beam.DoFn):
    def __init__(self, spec: AggregateSpec, partitions: int, spill_dir: str | None):
        self._s, self._partitions, self._spill_dir = spec, partitions, spill_dir

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        table = table.select(_columns(self._s))
        parts = list(slices_by(table, key_partitions(table, list(self._s.keys), self._partitions)))
        yield from parts if self._spill_dir is None else spill_parts(parts, self._spill_dir)


class _MergeFn(beam.DoFn):
    def __init__(self, spec: AggregateSpec):
        self._s = spec

    def process(self, element):
        _, parts = element
        parts = list(parts)
        tables = [p for p in parts if not isinstance(p, str)] + unspill(sorted(p for p in parts if isinstance(p, str)))
        table = pa.concat_tables(tables)
        if table.num_rows:
            yield session_results(table, self._s)


class SessionAggregate(beam.PTransform):
    """Bounded input -> session aggregates: tables of many sessions (rows sorted by keys and
    start) in the global window.

    Args:
        spec: WindowedAggregate's spec (a Sessions window).
        partitions: Hash partitions of the group keys (how many merges; one merge holds about
            1/partitions of the rows, at least all rows of one key).
        spill_dir: If set, partitions pass through Arrow files there and only their paths
            through Beam's shuffle. Must be visible to every worker.
    """

    def __init__(
        self, spec: AggregateSpec, partitions: int = 8, spill_dir: str | None = None, label: str | None = None
    ):
        super().__init__(label)
        if not isinstance(spec.window, Sessions):
            raise ValueError("SessionAggregate needs a Sessions window")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self._s, self._partitions, self._spill_dir = spec, partitions, spill_dir

    def expand(self, tables):
        part_type = beam.typehints.KV[int, pa.Table if self._spill_dir is None else str]
        return (
            tables
            | "PartitionByKey"
            >> beam.ParDo(_PartitionFn(self._s, self._partitions, self._spill_dir))
            .with_input_types(pa.Table)
            .with_output_types(part_type)
            # Grouped parts keep their earliest timestamp, not the global window's end.
            | "KeepTimestamps"
            >> beam.WindowInto(GlobalWindows(), timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST)
            | "GroupPartitions" >> beam.GroupByKey().with_input_types(part_type)
            | "Rewindow" >> beam.WindowInto(GlobalWindows())
            | "MergeSessions" >> beam.ParDo(_MergeFn(self._s)).with_output_types(pa.Table)
        )


KEYED = beam.typehints.KV[tuple[typing.Any, ...], pa.Table]


class _RunsFn(beam.DoFn):
    """Tables -> (key, partials) per run of a key's events, at the run's first event, and
    (key, empty partials) markers at later events of the run."""

    def __init__(self, spec: AggregateSpec):
        self._s = spec

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        for key, part, first, marks in session_runs(table, self._s):
            yield beam_window.TimestampedValue((key, part), Timestamp(micros=first))
            empty = part.slice(0, 0)
            for t in marks:
                yield beam_window.TimestampedValue((key, empty), Timestamp(micros=t))


class SessionRuns(beam.PTransform):
    """Unbounded input -> ``(group key values, partials)`` per run of a key's events, timestamped
    at the run's first event, with empty markers at later events of the run, ready for Beam's
    ``Sessions`` windows and a per-key combine of the partials (see the module docstring).

    Args:
        spec: WindowedAggregate's spec (a Sessions window).
    """

    def __init__(self, spec: AggregateSpec, label: str | None = None):
        super().__init__(label)
        if not isinstance(spec.window, Sessions):
            raise ValueError("SessionRuns needs a Sessions window")
        self._s = spec

    def expand(self, tables):
        return tables | "SplitRuns" >> beam.ParDo(_RunsFn(self._s)).with_input_types(pa.Table).with_output_types(KEYED)
