"""WriteLake: Arrow tables -> Hive-style partitioned parquet files (``dt=YYYY-MM-DD/``)."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.records import hash_partition, slices_by
from transforms.sinks.files import WriteKeyedTables, write_parquet

__all__ = ["WriteLake"]

_DAY_US = 86_400_000_000
_EPOCH_DAY = datetime(1970, 1, 1)


class _RouteFn(beam.DoFn):
    def __init__(self, columns, date_field, bucket_key, buckets):
        self._columns, self._date_field = columns, date_field
        self._bucket_key, self._buckets = bucket_key, buckets

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        if self._columns:
            table = table.select(list(self._columns))
        n = table.num_rows
        if self._date_field:
            # UTC day numbers, formatted once per distinct day rather than once per row.
            micros = pc.cast(table.column(self._date_field), pa.int64()).to_numpy(zero_copy_only=False)
            days = np.floor_divide(micros, _DAY_US)
        else:
            days = np.zeros(n, dtype=np.int64)
        bucket = hash_partition(table.column(self._bucket_key), self._buckets) if self._buckets > 1 else 0
        group = days * self._buckets + bucket
        for key, rows in slices_by(table, np.asarray(group, dtype=np.int64)):
            day, part = divmod(key, self._buckets)
            label = f"dt={(_EPOCH_DAY + timedelta(days=day)):%Y-%m-%d}/" if self._date_field else ""
            yield f"{label}part-{part:05d}.parquet", rows


class WriteLake(beam.PTransform):
    """Writes tables as parquet under ``root``, one file per (date partition, bucket).

    Args:
        root: Output directory on any Beam filesystem.
        columns: Columns to write, in order (None writes all).
        sort_by: Row order inside each file; with unique keys this makes output byte-stable.
        date_field: timestamp column whose UTC date names the ``dt=YYYY-MM-DD`` partition;
            None writes unpartitioned files.
        buckets: Files per partition, split by a stable hash of ``bucket_key``.
        bucket_key: Column hashed into buckets (required when ``buckets > 1``).
        spill_dir: Scratch directory: rows go through it, not through Beam's shuffle (see
            ``WriteKeyedTables``).

    Returns a PCollection of ``{"path", "rows"}`` dicts, one per file written.
    """

    def __init__(self, root: str, columns=None, sort_by=(), date_field: str | None = None,
                 buckets: int = 1, bucket_key: str | None = None, spill_dir: str | None = None,
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        if buckets < 1:
            raise ValueError("buckets must be >= 1")
        if buckets > 1 and not bucket_key:
            raise ValueError("bucket_key is required when buckets > 1")
        self._root = root
        self._route = _RouteFn(tuple(columns) if columns else None, date_field, bucket_key, buckets)
        self._sort_by = tuple(sort_by)
        self._spill_dir = spill_dir

    def expand(self, tables):
        return (
            tables
            | "Route"
            >> beam.ParDo(self._route).with_input_types(pa.Table).with_output_types(beam.typehints.KV[str, pa.Table])
            | "Files"
            >> WriteKeyedTables(
                self._root, self._sort_by, functools.partial(write_parquet, sorted_by=self._sort_by), self._spill_dir
            )
        )
