"""One column's profile state: exact counts and moments plus Apache DataSketches, updated per Arrow batch.

Each batch is reduced with ``pyarrow.compute``/numpy before it touches a sketch, so no Python
object is made per row:

- distinct: :class:`~transforms.quality.hll.DistinctSketch` (HLL; see there for what its
  vectorised feed changes: nothing in the registers, the composite instead of the HIP estimator);
- quantiles and histograms: ``kll_doubles_sketch`` (k=200) updated with whole numpy arrays.
  Timestamps enter as int64 microseconds, exact as doubles below 2**53 (the year 2255); so are
  integers below 2**53 in magnitude. Rank error about 1.3% (``normalized_rank_error(False)``);
- top values: ``frequent_strings_sketch`` updated with each batch's ``value_counts``, but only
  with the batch's ``feed`` most frequent values. A value outside a batch's top ``feed`` loses
  that batch's count for it (at most the batch's ``feed``-th largest count), on top of the
  sketch's own error of ``epsilon * total weight``. Values frequent overall are in every batch's
  top ``feed`` unless more than ``feed`` values per batch are at least as frequent. For string
  columns whose batches are mostly distinct values (ids, emails) ``value_counts`` of the whole
  batch is the largest cost, so there the rows are bucketed by the hash already computed for the
  HLL (65536 buckets) and only rows in the ``feed`` fullest buckets are counted, exactly. A value
  is then left out only if ``feed`` buckets hold more rows than its own, which can only happen
  to a value with at most the batch's ``feed``-th largest count as well;
- exact: non-null count, min/max (NaN ignored), string lengths, and mean/M2 merged with Chan's
  parallel formula, so any merge order gives the same moments up to rounding.
"""

from __future__ import annotations

import math

import datasketches as ds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.colscan import string_stats
from transforms.quality.hll import DistinctSketch

__all__ = ["KLL_K", "ColumnSketch", "column_kind", "normalised", "signature"]

KLL_K = 200
_BUCKETS = 1 << 16  # hash buckets for heavy-hitter candidates in mostly-distinct string batches
NUMERIC, TIMESTAMP, STRING, BOOLEAN, OTHER = "numeric", "timestamp", "string", "boolean", "other"
_MICROS_PER = {"s": 1_000_000, "ms": 1_000, "us": 1}


def column_kind(t: pa.DataType) -> str:
    """How a column of type ``t`` is profiled: numeric, timestamp, string, boolean or other.

    Args:
        t: The column's Arrow type.
    """
    if pa.types.is_dictionary(t):
        return column_kind(t.value_type)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return NUMERIC
    if pa.types.is_timestamp(t):
        return TIMESTAMP
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return STRING
    if pa.types.is_boolean(t):
        return BOOLEAN
    return OTHER


def signature(t: pa.DataType) -> tuple[str, bool]:
    """(kind, holds integers): columns that differ in either cannot share a profile.

    Args:
        t: The column's Arrow type.
    """
    value_type = t.value_type if pa.types.is_dictionary(t) else t
    return column_kind(t), pa.types.is_integer(value_type)


def normalised(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array in the type its kind is computed on (dictionaries decoded, decimals as float64).

    Args:
        column: A table column or array.
    """
    if isinstance(column, pa.ChunkedArray):
        # A slice of a table is one chunk: take it as is rather than copying it.
        arr = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    else:
        arr = column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    if pa.types.is_decimal(arr.type) or pa.types.is_float16(arr.type):
        arr = arr.cast(pa.float64())
    return arr


def _merge_moments(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    """(n, mean, M2) of the union of two samples (Chan et al.)."""
    (na, ma, m2a), (nb, mb, m2b) = a, b
    if nb == 0:
        return a
    if na == 0:
        return b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n


def _opt(f, a, b):
    return b if a is None else a if b is None else f(a, b)


class ColumnSketch:
    """Mergeable profile state of one column.

    Args:
        kind: One of the kinds :func:`column_kind` returns.
        integer: Whether a numeric column holds integers (it then gets top values).
        type_name: The Arrow type, as reported.
        lg_k: log2 of the HLL registers for distinct counts.
        freq_lg_k: log2 of the frequent-strings sketch's map size.
    """

    def __init__(self, kind: str, integer: bool, type_name: str, lg_k: int, freq_lg_k: int):
        self.kind, self.integer, self.type_name = kind, integer, type_name
        self.lg_k, self.freq_lg_k = lg_k, freq_lg_k
        self.count = 0
        self.lo = self.hi = None
        self.moments = (0, 0.0, 0.0)
        self.nans = 0
        self.min_len = self.max_len = None
        self.distinct = DistinctSketch(lg_k) if kind != OTHER else None
        self.kll = ds.kll_doubles_sketch(KLL_K) if kind in (NUMERIC, TIMESTAMP) else None
        self.freq = ds.frequent_strings_sketch(freq_lg_k) if self.has_top_values else None
        # Whether the last string batch was mostly distinct values (then the next skips value_counts).
        self._mostly_distinct = False

    @classmethod
    def for_type(cls, t: pa.DataType, lg_k: int, freq_lg_k: int) -> ColumnSketch:
        return cls(*signature(t), str(t), lg_k, freq_lg_k)

    def accepts(self, t: pa.DataType) -> bool:
        """Whether batches of type ``t`` can update this state (same kind, integers with integers)."""
        return signature(t) == (self.kind, self.integer)

    @property
    def has_top_values(self) -> bool:
        return self.kind in (STRING, BOOLEAN) or (self.kind == NUMERIC and self.integer)

    @property
    def feed(self) -> int:
        """How many of a batch's most frequent values update the frequent-strings sketch."""
        return 1 << (self.freq_lg_k - 2)

    def update(self, arr: pa.Array) -> None:
        """Adds one batch of the column (see :func:`normalised`)."""
        valid = len(arr) - arr.null_count
        self.count += valid
        if valid == 0 or self.kind == OTHER:
            return
        if self.kind == NUMERIC:
            self._update_numeric(arr)
        elif self.kind == TIMESTAMP:
            self._update_timestamp(arr)
        elif self.kind == STRING:
            self._update_string(arr)
        else:
            self._update_boolean(arr)

    def _update_numeric(self, arr: pa.Array) -> None:
        if self.integer:
            values, counts = _value_counts(arr)
            self.distinct.update_ints(pc.cast(values, pa.int64(), safe=False).to_numpy())
            self._update_top(values.cast(pa.string()), counts)
            lo, hi = pc.min_max(values).values()
            self._update_range(lo.as_py(), hi.as_py())
        xs = _non_null(arr).cast(pa.float64()).to_numpy(zero_copy_only=False)
        if not self.integer:
            nan = np.isnan(xs)
            if nan.any():
                self.nans += int(nan.sum())
                xs = xs[~nan]
            if len(xs) == 0:
                return
            self.distinct.update_floats(xs)
            self._update_range(float(xs.min()), float(xs.max()))
        self._update_moments(xs)

    def _update_timestamp(self, arr: pa.Array) -> None:
        micros = _non_null(arr).cast(pa.int64()).to_numpy()
        if arr.type.unit == "ns":
            micros = micros // 1_000
        elif arr.type.unit != "us":
            micros = micros * _MICROS_PER[arr.type.unit]
        self.distinct.update_ints(micros)
        self._update_range(int(micros.min()), int(micros.max()))
        self._update_moments(micros.astype(np.float64))

    def _update_string(self, arr: pa.Array) -> None:
        # Small batches: value_counts is cheaper than scanning the buckets.
        if self._mostly_distinct and self.feed * 4 <= _BUCKETS and len(arr) - arr.null_count >= _BUCKETS // 8:
            values = arr
            coupons = self.distinct.update_strings(arr)  # 0 for nulls: they share a bucket, not counted
            buckets = (coupons & np.uint64(_BUCKETS - 1)).astype(np.intp)
            sizes = np.bincount(buckets, minlength=_BUCKETS)
            rows = np.flatnonzero(_fullest(sizes, self.feed)[buckets])
            self._update_top(*_value_counts(arr.take(pa.array(rows))))
            # Distinct values from bucket occupancy (linear counting): good enough to pick a path.
            used = int(np.count_nonzero(sizes))
            distinct = -_BUCKETS * math.log1p(-used / _BUCKETS) if used < _BUCKETS else math.inf
            self._mostly_distinct = distinct * 2 > len(arr) - arr.null_count
        else:
            values, counts = _value_counts(arr)
            self.distinct.update_strings(values)
            self._update_top(values, counts)
            self._mostly_distinct = len(values) * 2 > len(arr) - arr.null_count
        lo, hi, short, long = string_stats(values)
        self._update_range(lo, hi)
        self.min_len = _opt(min, self.min_len, short)
        self.max_len = _opt(max, self.max_len, long)

    def _update_boolean(self, arr: pa.Array) -> None:
        values, counts = _value_counts(arr)
        self.distinct.update_ints(values.cast(pa.int64()).to_numpy())
        self._update_top(values.cast(pa.string()), counts)

    def _update_top(self, keys: pa.Array, counts: pa.Array) -> None:
        weights = counts.to_numpy()
        if len(weights) > self.feed:
            top = np.argpartition(weights, len(weights) - self.feed)[-self.feed :]
            keys, weights = keys.take(pa.array(top)), weights[top]
        update = self.freq.update
        for key, weight in zip(keys.to_pylist(), weights.tolist()):
            update(key, weight)

    def _update_range(self, lo, hi) -> None:
        self.lo = _opt(min, self.lo, lo)
        self.hi = _opt(max, self.hi, hi)

    def _update_moments(self, xs: np.ndarray) -> None:
        # numpy's own two-pass var, not np.dot: a BLAS call spins up threads that cost 50x the sum.
        self.moments = _merge_moments(self.moments, (len(xs), float(xs.mean()), float(xs.var()) * len(xs)))
        # The binding rejects read-only arrays, which zero-copy views of Arrow buffers are.
        self.kll.update(xs if xs.flags.writeable else xs.copy())

    def merge(self, other: ColumnSketch) -> None:
        """Adds another state of the same column (same kind) into this one."""
        if (other.kind, other.integer) != (self.kind, self.integer):
            raise TypeError(f"cannot merge a profile of {other.type_name} into one of {self.type_name}")
        self.count += other.count
        self._update_range(other.lo, other.hi)
        self.moments = _merge_moments(self.moments, other.moments)
        self.nans += other.nans
        self.min_len = _opt(min, self.min_len, other.min_len)
        self.max_len = _opt(max, self.max_len, other.max_len)
        if self.distinct is not None:
            self.distinct.merge(other.distinct)
        if self.kll is not None:
            self.kll.merge(other.kll)
        if self.freq is not None:
            self.freq.merge(other.freq)

    def to_parts(self) -> tuple[dict, list[bytes]]:
        """Plain fields and the sketches' own serialisations (distinct, kll, freq: those present)."""
        meta = {
            "kind": self.kind, "type": self.type_name, "integer": self.integer, "lg_k": self.lg_k,
            "freq_lg_k": self.freq_lg_k, "count": self.count, "lo": self.lo, "hi": self.hi,
            "moments": list(self.moments), "nans": self.nans, "min_len": self.min_len, "max_len": self.max_len,
        }  # fmt: skip
        blobs = [s.serialize() for s in (self.distinct, self.kll, self.freq) if s is not None]
        return meta, blobs

    @classmethod
    def from_parts(cls, meta: dict, blobs: list[bytes]) -> ColumnSketch:
        col = cls(meta["kind"], meta["integer"], meta["type"], meta["lg_k"], meta["freq_lg_k"])
        col.count, col.lo, col.hi = meta["count"], meta["lo"], meta["hi"]
        n, mean, m2 = meta["moments"]
        col.moments = (int(n), float(mean), float(m2))
        col.nans, col.min_len, col.max_len = meta["nans"], meta["min_len"], meta["max_len"]
        blobs = list(blobs)
        if col.distinct is not None:
            col.distinct = DistinctSketch.deserialize(blobs.pop(0))
        if col.kll is not None:
            col.kll = ds.kll_doubles_sketch.deserialize(blobs.pop(0))
        if col.freq is not None:
            col.freq = ds.frequent_strings_sketch.deserialize(blobs.pop(0))
        return col

    def stddev(self) -> float | None:
        n, _, m2 = self.moments
        return math.sqrt(max(m2, 0.0) / n) if n else None


def _fullest(sizes: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` fullest buckets (ties to the lowest bucket numbers), without a sort."""
    at_least = np.cumsum(np.bincount(sizes)[::-1])[::-1]  # buckets holding >= s rows, s = 0..max
    at_least = np.append(at_least, 0)
    threshold = int(np.argmax(at_least[1:] <= k))  # every bucket fuller than this fits in k
    mask = sizes > threshold
    mask[np.flatnonzero(sizes == threshold)[: k - int(at_least[threshold + 1])]] = True
    return mask


def _non_null(arr: pa.Array) -> pa.Array:
    return arr.drop_null() if arr.null_count else arr


def _value_counts(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Distinct non-null values of a batch and how often each occurs."""
    vc = pc.value_counts(arr)
    values, counts = vc.field("values"), vc.field("counts")
    if values.null_count:
        keep = values.is_valid()
        values, counts = values.filter(keep), counts.filter(keep)
    return values, counts
