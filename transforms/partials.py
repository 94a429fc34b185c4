"""Measures and windows of the windowed aggregate, and the pure Arrow functions of its partial
states, shared by its paths (``windows``: combiner accumulators; ``window_spill``: partitions
through files; ``sessions``: session windows).

States come in three levels, each a table:

- rows (:func:`row_states`): one row per input row: leading columns (a window start, a session
  id, group keys), the count_distinct columns, and one state column ``_<name>`` per measure
  (none for count_distinct);
- partials (``group_states(..., dst="partials")``): one row per (leading columns, distinct
  values); partials merge in any order and grouping;
- finals (``group_states(..., dst="finals")``): one row per leading columns, with each
  count_distinct measure's count; finals of disjoint parts (partitions each holding every row
  of a distinct value, or of a group) add up (``src="finals"``).

:func:`result_table` turns finals into the output columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.records import as_array, hash_partition

__all__ = [
    "FNS",
    "RESERVED",
    "AggregateSpec",
    "Fixed",
    "Measure",
    "Sessions",
    "Sliding",
    "group_codes",
    "group_states",
    "key_partitions",
    "merge_partials",
    "partial_aggregate",
    "result_table",
    "row_states",
    "session_breaks",
    "state",
    "window_result",
    "window_starts",
]

FNS = ("count", "count_distinct", "sum", "min", "max", "mean")
RESERVED = ("_window", "_session")  # leading columns of the internal tables
_US = pa.timestamp("us", tz="UTC")
_WIDE_HASH = 2**31 - 1  # per-column hash range when several columns make one partition key
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Measure:
    """One output column of a windowed aggregate.

    Args:
        name: Output column name.
        fn: ``count`` (rows; no column), ``count_distinct`` (exact, non-null values), ``sum``,
            ``min``, ``max`` or ``mean`` (of non-null values; null when there are none).
        column: The input column (all but ``count``).
        decimals: ``sum`` of a floating column only: summed exactly in integer units of
            ``10**-decimals`` (nulls as 0) and rounded to it. Integer and decimal columns
            always sum exactly in their own type (int64, decimal128(38, scale)).
    """

    name: str
    fn: str
    column: str | None = None
    decimals: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"measure name must be a non-empty string, got {self.name!r}")
        if self.fn not in FNS:
            raise ValueError(f"measure {self.name!r}: unknown fn {self.fn!r} (one of {', '.join(FNS)})")
        if self.fn == "count" and self.column is not None:
            raise ValueError(f"measure {self.name!r}: count counts rows and takes no column")
        if self.fn != "count" and not self.column:
            raise ValueError(f"measure {self.name!r}: {self.fn} needs a column")
        if self.decimals is not None:
            if self.fn != "sum":
                raise ValueError(f"measure {self.name!r}: decimals applies to sum only")
            if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 6:
                raise ValueError(f"measure {self.name!r}: decimals must be an integer between 0 and 6")


def _positive(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer number of seconds, got {value!r}")


@dataclass(frozen=True)
class Fixed:
    """Fixed windows ``[k * size, (k + 1) * size)`` from the epoch."""

    size_seconds: int

    def __post_init__(self):
        _positive(self.size_seconds, "Fixed size_seconds")


@dataclass(frozen=True)
class Sliding:
    """Windows of ``size_seconds`` starting every ``period_seconds``; a row counts in each
    window that holds it (``size_seconds / period_seconds`` of them)."""

    size_seconds: int
    period_seconds: int

    def __post_init__(self):
        _positive(self.size_seconds, "Sliding size_seconds")
        _positive(self.period_seconds, "Sliding period_seconds")
        if self.size_seconds % self.period_seconds:
            raise ValueError("Sliding size_seconds must be a multiple of period_seconds")


@dataclass(frozen=True)
class Sessions:
    """A session per group key that closes after ``gap_seconds`` without events; it spans
    ``[first event, last event + gap)`` (Beam's convention)."""

    gap_seconds: int

    def __post_init__(self):
        _positive(self.gap_seconds, "Sessions gap_seconds")


@dataclass(frozen=True)
class AggregateSpec:
    """What a windowed aggregate computes: validated by WindowedAggregate, read by its paths."""

    time: str
    keys: tuple[str, ...]
    measures: tuple[Measure, ...]
    window: Fixed | Sliding | Sessions

    @cached_property
    def distinct(self) -> tuple[str, ...]:
        """The count_distinct columns, each once, in measure order."""
        return tuple(dict.fromkeys(m.column for m in self.measures if m.fn == "count_distinct"))

    def plan(self, by: tuple[str, ...], src: str, dst: str, unique: bool) -> tuple[list, list, list]:
        """``group_states``' group columns, (state, column, function) aggregates and Arrow
        calls, worked out once per spec (a partial aggregate runs per window of every table)."""
        plans = self.__dict__.setdefault("_plans", {})  # a memo beside the frozen fields
        key = (by, src, dst, unique)
        if key not in plans:
            groups = list(by) + ([d for d in self.distinct if d not in by] if dst == "partials" else [])
            aggregates = _aggregates(self, src, dst, unique)
            plans[key] = groups, aggregates, list(dict.fromkeys((col, fn) for _, col, fn in aggregates))
        return plans[key]

    @property
    def step_us(self) -> int:
        """Span of the buckets rows are split into: the window (fixed), the period (sliding)."""
        w = self.window
        return (w.period_seconds if isinstance(w, Sliding) else w.size_seconds) * 1_000_000

    @property
    def size_us(self) -> int:
        return self.window.size_seconds * 1_000_000

    @property
    def gap_us(self) -> int:
        return self.window.gap_seconds * 1_000_000


def state(m: Measure) -> str:
    """The state column of a measure (the mean's non-null count is ``state(m) + "#n"``)."""
    return "_" + m.name


def window_starts(ts: pa.Array | pa.ChunkedArray, size_us: int) -> np.ndarray:
    """Start (microseconds since the epoch) of the fixed window each timestamp falls in."""
    micros = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return micros - np.mod(micros, size_us)


def _row_value(column: pa.ChunkedArray, m: Measure):
    if m.fn in ("sum", "mean") and pa.types.is_boolean(column.type):
        return column.cast(pa.int64())  # trues counted (Arrow would sum to uint64)
    if m.decimals is not None and pa.types.is_floating(column.type):
        # Whole units held in float64: sums are exact (and order-independent) below 2**53
        # units, and an absurdly large value cannot overflow and fail the run.
        return pc.round(pc.multiply(pc.fill_null(column, 0.0), float(10**m.decimals)))
    return column


def row_states(table: pa.Table, spec: AggregateSpec, lead: dict) -> pa.Table:
    """One row per input row: the ``lead`` columns, the count_distinct columns and each
    measure's state (``count``: 1; ``sum``/``mean``: the value, in whole units for a floating
    sum with decimals, 1/0 for a boolean; ``min``/``max``: the value)."""
    columns = dict(lead)
    for d in spec.distinct:
        columns.setdefault(d, table.column(d))
    for m in spec.measures:
        if m.fn == "count":
            columns[state(m)] = pa.array(np.ones(table.num_rows, dtype=np.int64))
        elif m.fn != "count_distinct":
            columns[state(m)] = _row_value(table.column(m.column), m)
    return pa.table(columns)


def _aggregates(spec: AggregateSpec, src: str, dst: str, unique: bool) -> list[tuple[str, str, str]]:
    """(output state, input column, Arrow function) turning ``src`` states into ``dst``."""
    out = []
    for m in spec.measures:
        s = state(m)
        if m.fn == "count_distinct":
            if src == "finals":
                out.append((s, s, "sum"))
            elif dst == "finals":
                # Partials of one distinct column hold each value once per group: count them.
                out.append((s, m.column, "count" if unique else "count_distinct"))
        elif m.fn in ("count", "sum", "mean"):
            out.append((s, s, "sum"))  # a sum of no values is null here, 0 in the result
        else:
            out.append((s, s, m.fn))
        if m.fn == "mean":
            out.append((s + "#n", s, "count") if src == "rows" else (s + "#n", s + "#n", "sum"))
    return out


def group_states(
    table: pa.Table, spec: AggregateSpec, by: list[str], src: str, dst: str, unique: bool | None = None
) -> pa.Table:
    """States of level ``src`` (rows, partials or finals) -> level ``dst`` (partials or finals),
    grouped by ``by`` (and the distinct columns for partials).

    ``unique``: partials hold each distinct value once per group (default: from partials of a
    single distinct column), so finals count values rather than distinct values.
    """
    if unique is None:
        unique = src == "partials" and len(spec.distinct) == 1
    groups, aggregates, calls = spec.plan(tuple(by), src, dst, unique)
    out = table.group_by(groups, use_threads=False).aggregate(calls)
    return pa.table(
        {**{g: out.column(g) for g in groups}, **{name: out.column(f"{col}_{fn}") for name, col, fn in aggregates}}
    )


def partial_aggregate(table: pa.Table, spec: AggregateSpec) -> pa.Table:
    """Rows -> partials grouped by the group keys (and distinct values)."""
    rows = row_states(table, spec, {k: table.column(k) for k in spec.keys})
    return merge_partials([rows], spec, src="rows")


def merge_partials(tables: list[pa.Table], spec: AggregateSpec, src: str = "partials") -> pa.Table:
    """Partial tables -> one partial table grouped by the group keys (and distinct values)."""
    table = pa.concat_tables(tables).combine_chunks()
    return group_states(table, spec, list(spec.keys), src, "partials")


def _measure_column(finals: pa.Table, m: Measure):
    s = finals.column(state(m))
    if m.fn in ("count", "count_distinct"):
        return s.cast(pa.int64())
    if m.fn == "sum" and s.null_count:  # groups without a value sum to 0
        s = pc.fill_null(s, pa.scalar(0).cast(s.type))
    if m.fn == "sum" and m.decimals is not None and pa.types.is_floating(s.type):
        return pc.round(pc.divide(s.cast(pa.float64()), float(10**m.decimals)), m.decimals)
    if m.fn == "mean":
        n = finals.column(state(m) + "#n")
        mean = pc.divide(s.cast(pa.float64()), n.cast(pa.float64()))
        return pc.if_else(pc.greater(n, 0), mean, pa.scalar(None, pa.float64()))
    return s


def result_table(finals: pa.Table, spec: AggregateSpec, start: pa.Array, end: pa.Array) -> pa.Table:
    """Finals (with the group key columns) -> ``window_start``, ``window_end`` (timestamp[us,
    UTC] arrays from epoch microseconds), the group keys and the measures, sorted by the keys
    (and, for sessions, the start)."""
    result = pa.table(
        {
            "window_start": start.cast(_US),
            "window_end": end.cast(_US),
            **{k: finals.column(k) for k in spec.keys},
            **{m.name: _measure_column(finals, m) for m in spec.measures},
        }
    )
    order = [(k, "ascending") for k in spec.keys]
    if isinstance(spec.window, Sessions):
        order.append(("window_start", "ascending"))
    return result.sort_by(order)


def window_result(finals: pa.Table, spec: AggregateSpec, start_us: int, end_us: int) -> pa.Table:
    """Finals of one window ``[start_us, end_us)`` -> its result table (see :func:`result_table`)."""
    n = finals.num_rows
    return result_table(finals, spec, pa.array([start_us] * n, pa.int64()), pa.array([end_us] * n, pa.int64()))


def _column_hash(column: pa.ChunkedArray) -> np.ndarray:
    t = column.type
    if pa.types.is_integer(t) or pa.types.is_temporal(t):
        values = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
        return values.astype(np.uint64)
    return hash_partition(column, _WIDE_HASH).astype(np.uint64)


def key_partitions(table: pa.Table, columns: list[str], partitions: int) -> np.ndarray:
    """Stable partition in ``[0, partitions)`` of each row by the values of ``columns`` (one
    column: :func:`records.hash_partition`): rows with equal values share a partition."""
    if len(columns) == 1:
        return hash_partition(table.column(columns[0]), partitions)
    h = np.zeros(table.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in columns:
            h = (h ^ _column_hash(table.column(c))) * _MIX
            h ^= h >> np.uint64(29)
    return (h % np.uint64(partitions)).astype(np.int64)


def group_codes(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    """An int64 code per row, equal exactly when the rows' values of ``columns`` are equal
    (null equal to null)."""
    codes = np.zeros(table.num_rows, dtype=np.int64)
    size = 1
    for c in columns:
        encoded = pc.dictionary_encode(as_array(table.column(c)), null_encoding="encode")
        width = max(len(encoded.dictionary), 1)
        if size * width >= 2**62:  # re-number densely before the mixed-radix code overflows
            codes = np.unique(codes, return_inverse=True)[1].astype(np.int64)
            size = int(codes.max()) + 1
        codes = codes * width + encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        size *= width
    return codes


def session_breaks(table: pa.Table, spec: AggregateSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows in (group keys, time) order: ``(order, times, starts)``, where ``order`` sorts the
    table, ``times`` are the sorted event times (epoch microseconds) and ``starts`` marks each
    row that opens a session (a new key, or ``gap`` or more since the key's previous event)."""
    codes = group_codes(table, spec.keys)
    times = table.column(spec.time).cast(pa.int64()).to_numpy(zero_copy_only=False)
    order = np.lexsort((times, codes))
    codes, times = codes[order], times[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (codes[1:] != codes[:-1]) | (times[1:] - times[:-1] >= spec.gap_us)
    return order, times, starts
