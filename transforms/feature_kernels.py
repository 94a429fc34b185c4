"""The pure Arrow/numpy functions that compute a FeatureSet as of every event (no per-row Python).

Two steps, so the columns a shuffle moves are few:

- :func:`prepare`: each event's inputs, per batch: the entity, the time, the kept columns and
  one column per distinct feature input (a ``where`` evaluated to a mask, a double to sum turned
  into whole units, a value with the events ``where`` leaves out made null). :func:`rejects`
  says first which events cannot have features (no entity, no time, a sum value that is not
  finite).
- :func:`compute`: prepared events holding *every* event of their entities -> one feature row
  per event, sorted by (entity, time) (and the kept columns, when there are any).

Per entity, events are sorted by time once; a trailing range's events are an index range
``[lo, hi)`` (``hi``: past the last event at the same time, ``lo``: the first later than
``t - range``, by ``searchsorted`` on a key that keeps entities apart). Counts and sums are
differences of prefix sums (int64: exact, and exact even past a wrap-around as long as the
range's own sum fits); distinct counts count the events of a range whose previous event with
the same value lies before the range, done for all ranges at once with interval sums; the last
value is the last event with a value at or before ``hi``. See ``transforms.feature_defs`` for
what each feature means.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.feature_defs import FeatureSet, Ratio, SessionFeature, Trailing
from transforms.quality.expect_expr import parse_expression

__all__ = [
    "METADATA_KEY",
    "compute",
    "features_as_of",
    "input_columns",
    "lower_bounds",
    "prepare",
    "rejects",
    "session_starts",
    "tie_ends",
    "trailing_distinct",
    "trailing_last",
    "trailing_sum",
]

METADATA_KEY = b"beam_pipelines.features"  # the FeatureSet, as JSON, in the feature table's schema
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_KEY_LIMIT = 1 << 62


def as_array(x: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array from a column (a single chunk as it is). Kept here, not imported from
    ``transforms.records``, so that reading features needs no Beam (seconds of start-up)."""
    if isinstance(x, pa.ChunkedArray):
        return x.chunk(0) if x.num_chunks == 1 else x.combine_chunks()
    return x


@functools.lru_cache(maxsize=256)
def _expr(text: str):
    return parse_expression(text)


def _mask(table: pa.Table, where: str | None) -> pa.Array | None:
    """Where ``where`` is true (null counts as false); None when every event counts."""
    if where is None:
        return None
    value = _expr(where).evaluate(table)
    if isinstance(value, pa.Scalar):  # a constant condition
        value = pa.array(np.full(table.num_rows, bool(value.as_py())))
    return pc.fill_null(as_array(value), False)


def input_columns(fs: FeatureSet) -> dict[str, tuple]:
    """Feature name -> the name of its prepared input column and what it holds:
    ``(name, kind, column, where, decimals)``, kind one of ``mask``, ``units``, ``value``.
    Features needing the same input share the column; a plain count needs none."""
    seen: dict[tuple, str] = {}
    out = {}
    for f in fs.features:
        if isinstance(f, Trailing):
            if f.fn == "count":
                spec = ("mask", None, f.where, None) if f.where else None
            elif f.fn == "sum":
                spec = ("units", f.column, f.where, f.decimals)
            else:
                spec = ("value", f.column, f.where, None)
        elif isinstance(f, SessionFeature) and f.fn == "session_converted":
            spec = ("mask", None, f.where, None)
        else:
            spec = None
        if spec is not None:
            name = seen.setdefault(spec, f"_in{len(seen)}")
            out[f.name] = (name, *spec)
    return out


def _units(table: pa.Table, column: str, decimals: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Values to sum as int64 units (null: 0) and where a value cannot be (not finite, too large)."""
    col = as_array(table.column(column))
    t = col.type
    n = len(col)
    if pa.types.is_boolean(t) or pa.types.is_integer(t):
        return pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), np.zeros(n, dtype=bool)
    if pa.types.is_decimal(t):
        return _decimal_units(col), np.zeros(n, dtype=bool)
    scaled = pc.round(pc.multiply(col.cast(pa.float64()), float(10**decimals)), round_mode="half_to_even")
    values = (pc.fill_null(scaled, 0.0) if scaled.null_count else scaled).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(values) < 2.0**63)  # NaN compares false: bad too
    return np.where(bad, 0, values).astype(np.int64), bad


def _decimal_units(col: pa.Array) -> np.ndarray:
    """A decimal128 array's unscaled values as int64 (null: 0); precision <= 18 always fits."""
    if not pa.types.is_decimal128(col.type):
        col = col.cast(pa.decimal128(38, col.type.scale))
    words = np.frombuffer(col.buffers()[1], dtype="<i8")[2 * col.offset : 2 * (col.offset + len(col))]
    low = words[0::2].copy()
    if col.null_count:
        low[~col.is_valid().to_numpy(zero_copy_only=False)] = 0
    return low


def _decimal_array(units: np.ndarray, scale: int) -> pa.Array:
    """int64 unscaled values -> decimal128(38, scale), exactly (the high word is the sign)."""
    words = np.empty(2 * len(units), dtype="<i8")
    words[0::2] = units
    words[1::2] = units >> 63
    return pa.Array.from_buffers(pa.decimal128(38, scale), len(units), [None, pa.py_buffer(words.tobytes())])


def rejects(table: pa.Table, fs: FeatureSet) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """Which events cannot have features: their mask, and per rejected row (in row order) its
    ``(reason, field, error)``: ``missing_entity``, ``missing_time``, or ``invalid_value`` (a
    double to sum that is not finite or too large for its units), the first that applies."""
    n = table.num_rows
    checks = [
        ("missing_entity", fs.entity, "no entity key", pc.is_null(table.column(fs.entity))),
        ("missing_time", fs.time, "no event time", pc.is_null(table.column(fs.time))),
    ]
    summed = {(f.column, f.decimals, f.where) for f in fs.features if isinstance(f, Trailing) and f.fn == "sum"}
    for column, decimals, where in sorted(summed, key=str):
        if decimals is None:  # integers, booleans and decimals always fit
            continue
        _, invalid = _units(table, column, decimals)
        mask = _mask(table, where)
        if mask is not None:
            invalid &= mask.to_numpy(zero_copy_only=False)
        error = f"not a finite number that fits in whole units of 10^-{decimals}"
        checks.append(("invalid_value", column, error, invalid))
    bad = np.zeros(n, dtype=bool)
    why = np.full(n, -1, dtype=np.int64)
    for i, (_, _, _, mask) in enumerate(checks):
        mask = mask.to_numpy(zero_copy_only=False) if not isinstance(mask, np.ndarray) else mask
        new = mask & ~bad
        why[new] = i
        bad |= new
    return bad, [checks[i][:3] for i in why[bad].tolist()]


def prepare(table: pa.Table, fs: FeatureSet) -> pa.Table:
    """The columns :func:`compute` needs, from events that :func:`rejects` passed."""
    cols = {c: table.column(c) for c in (fs.entity, fs.time, *fs.keep)}
    done = set()
    for name, kind, column, where, decimals in input_columns(fs).values():
        if name in done:
            continue
        done.add(name)
        mask = _mask(table, where)
        if kind == "mask":
            cols[name] = mask
        elif kind == "units" and not pa.types.is_decimal(table.schema.field(column).type):
            units, _ = _units(table, column, decimals)
            if mask is not None:
                units = np.where(mask.to_numpy(zero_copy_only=False), units, 0)
            cols[name] = pa.array(units, pa.int64())
        else:
            value = as_array(table.column(column))
            cols[name] = value if mask is None else pc.if_else(mask, value, pa.scalar(None, value.type))
    return pa.table(cols)


# -- the index arithmetic (pure numpy; tested against a plain reference) -----------------------


def tie_ends(codes: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by (entity code, time): ``(hi, group)``, ``hi`` one past the last row of
    the same entity and time, ``group`` the number of that (entity, time) group."""
    n = len(t)
    new = np.empty(n, dtype=bool)
    new[:1] = True
    np.not_equal(codes[1:], codes[:-1], out=new[1:])
    new[1:] |= t[1:] != t[:-1]
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    return ends[group], group


def lower_bounds(codes: np.ndarray, t: np.ndarray, ranges: list[int]) -> dict[int, np.ndarray]:
    """For rows sorted by (entity code, time): per range ``r``, the first row of the same entity
    with time ``> t - r``. Entities are kept apart by a key ``code * width + time`` wide enough
    that ``key - r`` never reaches the entity before; when that key would not fit in int64,
    entities are taken a slice at a time."""
    n = len(t)
    out = {r: np.empty(n, dtype=np.int64) for r in ranges}
    if n == 0:
        return out
    rel = t - t.min()
    width = int(rel.max()) + max(ranges) + 1
    if width >= _KEY_LIMIT:
        raise ValueError("event times span too long a time for trailing ranges")
    per = _KEY_LIMIT // width  # entities per slice
    firsts = np.arange(0, int(codes[-1]) + 1, per)
    cuts = np.append(np.searchsorted(codes, firsts), n)
    for c0, a, b in zip(firsts.tolist(), cuts[:-1].tolist(), cuts[1:].tolist()):
        if a == b:
            continue
        key = (codes[a:b] - c0) * width + rel[a:b]
        for r in ranges:
            out[r][a:b] = np.searchsorted(key, key - r, side="right") + a
    return out


def trailing_sum(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sums of int64 ``values`` over ``[lo, hi)`` per row (prefix sums; wrap-around cancels)."""
    prefix = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=prefix[1:])
    with np.errstate(over="ignore"):
        return prefix[hi] - prefix[lo]


def trailing_distinct(codes: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distinct values (int codes, -1 for none) over ``[lo, hi)`` per row; ``lo`` and ``hi``
    non-decreasing, each range inside one entity.

    A row ``j`` is the first of its value in the range of row ``q`` when ``lo[q] <= j < hi[q]``
    and its previous row of the same (entity, value) is before ``lo[q]``. With ``lo`` and ``hi``
    sorted, those ``q`` form one interval: each ``j`` adds 1 over it, and a running sum of the
    interval edges gives every row's count."""
    n = len(values)
    rows = np.flatnonzero(values >= 0)
    if len(rows) == 0:
        return np.zeros(n, dtype=np.int64)
    same_order = np.lexsort((values[rows], codes[rows]))  # stable: rows keep their order per value
    j = rows[same_order]
    ent, val = codes[j], values[j]
    prev = np.full(len(j), -1, dtype=np.int64)
    repeat = (ent[1:] == ent[:-1]) & (val[1:] == val[:-1])
    prev[1:][repeat] = j[:-1][repeat]
    first = np.maximum(np.searchsorted(lo, prev, side="right"), np.searchsorted(hi, j, side="right"))
    stop = np.searchsorted(lo, j, side="right")
    live = first < stop
    edges = np.bincount(first[live], minlength=n + 1) - np.bincount(stop[live], minlength=n + 1)
    return np.cumsum(edges[:n])


def trailing_last(values: pa.Array, group: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> pa.Array:
    """The last non-null value over ``[lo, hi)`` per row (rows sorted by time per entity); of
    several values at that last time (one ``group``), the largest."""
    n = len(values)
    valid = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else np.ones(n, dtype=bool)
    if n == 0:
        return values
    idx = np.arange(n)
    last = np.maximum.accumulate(np.where(valid, idx, -1))
    at = last[hi - 1]
    found = at >= lo
    # The row standing for each group: its valid row, or the largest of its valid rows.
    best = np.full(int(group[-1]) + 1, -1, dtype=np.int64)
    valid_rows = idx[valid]
    best[group[valid_rows]] = valid_rows
    per_group = np.bincount(group[valid_rows], minlength=len(best))
    if (per_group > 1).any():
        tied = valid_rows[per_group[group[valid_rows]] > 1]
        ranked = pc.sort_indices(
            pa.table({"g": group[tied], "v": values.take(pa.array(tied))}), [("g", "ascending"), ("v", "descending")]
        ).to_numpy()
        tied, tied_groups = tied[ranked], group[tied[ranked]]
        head = np.ones(len(tied), dtype=bool)
        head[1:] = tied_groups[1:] != tied_groups[:-1]
        best[tied_groups[head]] = tied[head]
    rows = np.where(found, best[group[np.where(found, at, 0)]], 0)
    return values.take(pa.array(rows, mask=~found))


def session_starts(codes: np.ndarray, t: np.ndarray, gap: int) -> np.ndarray:
    """For rows sorted by (entity code, time): the first row of each row's session (a new
    entity, or ``gap`` or more since the entity's previous event, starts one)."""
    n = len(t)
    start = np.empty(n, dtype=bool)
    start[:1] = True
    np.not_equal(codes[1:], codes[:-1], out=start[1:])
    start[1:] |= (t[1:] - t[:-1]) >= gap
    return np.maximum.accumulate(np.where(start, np.arange(n), 0))


# -- one feature row per event ----------------------------------------------------------------


def _entity_codes(entity: pa.Array) -> np.ndarray:
    """An int64 per row, ordered as the entity values are (equal values, equal codes)."""
    encoded = pc.dictionary_encode(entity)
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(rank))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)]


def _order(table: pa.Table, fs: FeatureSet, codes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rows by (entity, time, kept columns). Without kept columns, rows of one (entity, time) are
    alike, so their order among themselves is free: one unstable sort of a single int64 key when
    it fits (several times faster than sorting by two keys)."""
    if not fs.keep:
        if len(t) == 0:
            return np.zeros(0, dtype=np.int64)
        rel = t - t.min()
        width = int(rel.max()) + 1
        if (int(codes.max()) + 1) * width < _KEY_LIMIT:
            return np.argsort(codes * width + rel)
        return np.lexsort((t, codes))
    keys = pa.table({"_e": codes, "_t": t, **{c: table.column(c) for c in fs.keep}})
    return pc.sort_indices(keys, [(c, "ascending") for c in keys.column_names]).to_numpy()


def _as_float(column: pa.Array) -> np.ndarray:
    values = column.cast(pa.float64())
    return (pc.fill_null(values, np.nan) if values.null_count else values).to_numpy(zero_copy_only=False)


def compute(prepared: pa.Table, fs: FeatureSet) -> pa.Table:
    """One row per prepared event: the entity, the time, the kept columns and the features, as
    of the event (see ``feature_defs``), sorted by (entity, time, kept columns). ``prepared``
    holds every event of its entities (rows of other entities cannot change them)."""
    entity = as_array(prepared.column(fs.entity))
    time = as_array(prepared.column(fs.time))
    per_second = _PER_SECOND[time.type.unit]
    codes = _entity_codes(entity)
    t = time.cast(pa.int64()).to_numpy(zero_copy_only=False)
    order = np.asarray(_order(prepared, fs, codes, t), dtype=np.int64)
    codes, t = codes[order], t[order]
    rows = prepared.take(pa.array(order))
    hi, group = tie_ends(codes, t)
    ranges = sorted({f.range_seconds * per_second for f in fs.features if isinstance(f, Trailing)})
    lows = lower_bounds(codes, t, ranges) if ranges else {}
    inputs = input_columns(fs)
    out: dict[str, pa.Array] = {c: rows.column(c) for c in (fs.entity, fs.time, *fs.keep)}
    numbers: dict[str, np.ndarray] = {}  # features ratios divide, as floats (NaN: null)
    ratio_parts = {name for f in fs.features if isinstance(f, Ratio) for name in (f.numerator, f.denominator)}
    sessions: dict[int, np.ndarray] = {}
    for f in fs.features:
        given = inputs.get(f.name)
        column = as_array(rows.column(given[0])) if given else None
        if isinstance(f, Trailing):
            lo = lows[f.range_seconds * per_second]
            if f.fn == "count":
                values = column.to_numpy(zero_copy_only=False).astype(np.int64) if column is not None else None
                out[f.name] = pa.array(hi - lo if values is None else trailing_sum(values, lo, hi))
            elif f.fn == "sum":
                out[f.name] = _sum(column, f, lo, hi)
            elif f.fn == "count_distinct":
                encoded = pc.dictionary_encode(column)
                values = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
                out[f.name] = pa.array(trailing_distinct(codes, values, lo, hi))
            else:
                out[f.name] = trailing_last(column, group, lo, hi)
        elif isinstance(f, SessionFeature):
            gap = f.gap_seconds * per_second
            if gap not in sessions:
                sessions[gap] = session_starts(codes, t, gap)
            first = sessions[gap]
            if f.fn == "session_length":
                out[f.name] = pa.array((t - t[first]) / per_second, pa.float64())
            elif f.fn == "session_events":
                out[f.name] = pa.array(hi - first)
            else:
                hits = trailing_sum(column.to_numpy(zero_copy_only=False).astype(np.int64), first, hi)
                out[f.name] = pa.array(hits > 0)
        else:
            num, den = numbers[f.numerator], numbers[f.denominator]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = num / den
            out[f.name] = pa.array(ratio, pa.float64(), mask=np.isnan(den) | (den == 0) | np.isnan(num))
        if f.name in ratio_parts:
            numbers[f.name] = _as_float(out[f.name])
    table = pa.table(out)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(fs.to_dict()).encode()})


def _sum(column: pa.Array, f: Trailing, lo: np.ndarray, hi: np.ndarray) -> pa.Array:
    """A sum feature from its prepared input: int64 units, or the decimal values themselves."""
    if pa.types.is_decimal(column.type):
        return _decimal_array(trailing_sum(_decimal_units(column), lo, hi), column.type.scale)
    sums = trailing_sum(column.to_numpy(zero_copy_only=False), lo, hi)
    if f.decimals is not None:
        return pa.array(sums / float(10**f.decimals), pa.float64())
    return pa.array(sums, pa.int64())


def features_as_of(table: pa.Table, fs: FeatureSet) -> pa.Table:
    """:func:`prepare` then :func:`compute`: the feature rows of a table holding every event of
    its entities (and none that :func:`rejects`)."""
    return compute(prepare(table, fs), fs)
