"""Pure Arrow functions of the windowed aggregate's partial results, shared by its two paths
(``windows``: combiner accumulators; ``window_spill``: partitions through files).

A partial table holds one row per (group keys, distinct value) with ``_events`` (rows) and
``_units`` (the summed field in whole units of ``10**-decimals``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["merge_partials", "partial_aggregate", "partial_rows", "sum_counts", "window_starts"]


def window_starts(ts: pa.Array | pa.ChunkedArray, size_us: int) -> np.ndarray:
    """Start (microseconds since the epoch) of the fixed window each timestamp falls in."""
    micros = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return micros - np.mod(micros, size_us)


def partial_rows(table: pa.Table, keys: tuple[str, ...], distinct: str, sum_field: str, scale: int) -> pa.Table:
    """One partial row per input row: ``_events`` 1 and ``_units`` (the field in whole units)."""
    # Whole units held in float64: sums are exact (and order-independent) below 2**53 units,
    # and an absurdly large value cannot overflow and fail the run.
    units = pc.round(pc.multiply(pc.fill_null(table.column(sum_field), 0.0), float(scale)))
    events = pa.array(np.ones(table.num_rows, dtype=np.int64))
    return pa.table(
        {**{k: table.column(k) for k in keys}, distinct: table.column(distinct), "_events": events, "_units": units}
    )


def partial_aggregate(table: pa.Table, keys: tuple[str, ...], distinct: str, sum_field: str, scale: int) -> pa.Table:
    """One row per (keys, distinct) with ``_events`` and ``_units`` (sum in whole units)."""
    return merge_partials([partial_rows(table, keys, distinct, sum_field, scale)], keys, distinct)


def _named(out: pa.Table, keys: tuple[str, ...], distinct: str, renames: dict[str, str]) -> pa.Table:
    out = out.rename_columns([renames.get(c, c) for c in out.column_names])
    return out.select(list(keys) + [distinct, "_events", "_units"])


def merge_partials(tables: list[pa.Table], keys: tuple[str, ...], distinct: str) -> pa.Table:
    """Partial tables -> one partial table (one row per (keys, distinct))."""
    table = pa.concat_tables(tables).combine_chunks()
    out = table.group_by(list(keys) + [distinct], use_threads=False).aggregate([("_events", "sum"), ("_units", "sum")])
    return _named(out, keys, distinct, {"_events_sum": "_events", "_units_sum": "_units"})


def sum_counts(tables: list[pa.Table], keys: tuple[str, ...]) -> pa.Table:
    """Per-group counts (``_events``, ``_users``, ``_units``) of disjoint parts -> their sums."""
    table = pa.concat_tables(tables)
    out = table.group_by(list(keys), use_threads=False).aggregate(
        [("_events", "sum"), ("_users", "sum"), ("_units", "sum")]
    )
    return out.rename_columns(list(keys) + ["_events", "_users", "_units"])
