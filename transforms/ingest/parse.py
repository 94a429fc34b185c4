"""ParseRecords: raw batches (lines, CSV rows, typed parquet batches) -> parsed slot tables.

Records that cannot be parsed become dead letters (stage ``parse``, reason ``malformed``).
"""

from __future__ import annotations

import csv
import json

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from transforms import faults
from transforms.ingest.flatjson import scan_flat
from transforms.ingest.slots import (
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_MISSING,
    KIND_NULL,
    KIND_OTHER,
    KIND_STR,
    KIND_TIMESTAMP,
    slot_schema,
)
from transforms.records import CHANGE_COLUMNS, as_array, dead_letters, json_text, record_struct, typed

__all__ = ["FORMATS", "ParseRecords"]

FORMATS = ("jsonl", "csv", "avro", "parquet")
STAGE = "parse"
_MISSING = object()


def _decode_raw(line: bytes) -> str:
    return line.decode("utf-8", errors="backslashreplace")


# orjson reads integers beyond 64 bits as floats; lines that may hold one are read again exactly.
_BIG_INT = r"[:\[,]\s*-?\d{19,}\s*[,}\]]"


# Records nested deeper are malformed: well within what orjson writes back (254 levels) and
# what Python's json reads and writes within its recursion limit, wherever the parser runs.
MAX_DEPTH = 200


def _deeper(value, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels in ``value`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        children = v.values() if type(v) is dict else v
        stack.extend((c, depth + 1) for c in children if type(c) is dict or type(c) is list)
    return False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _exact_loads(line: bytes):
    return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)


def _dumps(value) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_KIND_OF = {type(None): KIND_NULL, str: KIND_STR, int: KIND_INT, float: KIND_FLOAT, bool: KIND_BOOL}


def _text_of(v) -> str:
    if v is True or v is False:
        return "true" if v else "false"
    if type(v) is int or type(v) is float:
        return repr(v)
    return _dumps(v)


def _mixed_slots(values: list) -> list[pa.Array]:
    """Slots for a field whose values mix types: one pass per slot, rare kinds fixed up."""
    n = len(values)
    kinds = np.fromiter((_KIND_OF.get(type(v), KIND_OTHER) for v in values), dtype=np.int8, count=n)
    strs = pa.array([v if type(v) is str else None for v in values], pa.string())
    ints = [v if type(v) is int and -(2**63) <= v < 2**63 else None for v in values]
    floats = [v if type(v) is float else None for v in values]
    text = pc.coalesce(
        strs, pa.array(ints, pa.int64()).cast(pa.string()), pa.array(floats, pa.float64()).cast(pa.string())
    )
    # Booleans, objects and integers beyond 64 bits: few, and done one by one.
    rare = np.flatnonzero(
        (kinds == KIND_BOOL)
        | (kinds == KIND_OTHER)
        | ((kinds == KIND_INT) & pc.is_null(pa.array(ints, pa.int64())).to_numpy(zero_copy_only=False))
    )
    if len(rare):
        texts = text.to_pylist()
        for i in rare.tolist():
            v = values[i]
            texts[i] = _text_of(v)
            if type(v) is int:
                floats[i] = float(v)
        text = pa.array(texts, pa.string())
    return [pa.array(kinds), text, pa.array(ints, pa.int64()), pa.array(floats, pa.float64())]


def _slots_from_values(values: list) -> list[pa.Array]:
    """Slots for one field from Python values (None for null or absent); the common,
    homogeneous case is converted by Arrow in one call."""
    n = len(values)
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _mixed_slots(values)
    t = arr.type

    def kinds(present: int) -> pa.Array:
        return pc.if_else(pc.is_null(arr), KIND_NULL, present).cast(pa.int8())

    null_i, null_f = pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64())
    if pa.types.is_string(t):
        return [kinds(KIND_STR), arr, null_i, null_f]
    if pa.types.is_int64(t):
        return [kinds(KIND_INT), arr.cast(pa.string()), arr, null_f]
    if pa.types.is_null(t):
        return [kinds(KIND_NULL), pa.nulls(n, pa.string()), null_i, null_f]
    if pa.types.is_boolean(t):
        return [kinds(KIND_BOOL), pc.if_else(arr, "true", "false"), null_i, null_f]
    return _mixed_slots(values)


def _slot_table(
    fields: tuple[str, ...],
    columns: dict[str, list[pa.Array]],
    raw: pa.Array,
    source: pa.Array,
    extras: pa.Array,
    unknown: pa.Array,
) -> pa.Table:
    arrays = []
    for f in fields:
        arrays += columns[f]
    arrays += [raw, source, extras, unknown]
    return pa.Table.from_arrays(arrays, schema=slot_schema(fields, raw.type))


def _strings(column: pa.ChunkedArray) -> pa.Array:
    """A column as one string array: a single string chunk as it is, without a copy."""
    arr = as_array(column)
    return arr if pa.types.is_string(arr.type) else arr.cast(pa.string())


def _malformed(raw: list[str], sources: pa.Array, errors: list[str]) -> pa.Table:
    return dead_letters(STAGE, "malformed", None, pa.array(errors, pa.string()), pa.array(raw, pa.string()), sources)


def _parse_json_records(raw: pa.Array, sources: pa.Array, fields: tuple[str, ...]) -> tuple[pa.Table, pa.Table]:
    """JSON lines (a binary array) -> (slot table, malformed dead letters).

    Flat lines take the vectorised path (``transforms.ingest.flatjson``), the rest are parsed
    one by one; rows keep their input order.
    """
    fast, taken = scan_flat(raw, fields)
    if fast is None:
        return _parse_json_lines(raw, sources, fields)[:2]
    fast_sources = sources if len(taken) == len(raw) else sources.take(pa.array(taken))
    fast = fast.append_column("_source", fast_sources).select(slot_schema(fields).names)
    left = np.ones(len(raw), dtype=bool)
    left[taken] = False
    rest = np.flatnonzero(left)
    if not len(rest):
        return fast, _malformed([], sources.slice(0, 0), [])
    parsed, bad, good = _parse_json_lines(raw.take(pa.array(rest)), sources.take(pa.array(rest)), fields)
    if not parsed.num_rows:
        return fast, bad
    # Back to input order, as the per-line parser alone would give.
    good_rest = rest[good]
    order = pa.array(np.argsort(np.concatenate([taken, good_rest]), kind="stable"))
    # Column by column: a take across a two-chunk table costs twice as much.
    columns = [
        pa.concat_arrays([fast.column(i).combine_chunks(), parsed.column(i).combine_chunks()]).take(order)
        for i in range(fast.num_columns)
    ]
    return pa.Table.from_arrays(columns, schema=fast.schema), bad


def _parse_json_lines(raw: pa.Array, sources: pa.Array, fields: tuple[str, ...]) -> tuple[pa.Table, pa.Table, list]:
    """JSON lines parsed one by one (any valid JSON) -> (slot table, malformed dead letters,
    positions of the parsed lines)."""
    lines = raw.to_pylist()
    records: list[dict] = []
    good: list[int] = []
    bad: list[int] = []
    bad_err: list[str] = []
    loads = orjson.loads
    for i, line in enumerate(lines):
        try:
            rec = loads(line)
        except orjson.JSONDecodeError as e:
            bad.append(i)
            bad_err.append(f"not valid JSON: {e}")
            continue
        if type(rec) is not dict:
            bad.append(i)
            bad_err.append(f"expected a JSON object, got {type(rec).__name__}")
            continue
        if line.count(b"[") + line.count(b"{") > MAX_DEPTH and _deeper(rec, MAX_DEPTH):
            bad.append(i)
            bad_err.append(f"nested deeper than {MAX_DEPTH} levels")
            continue
        records.append(rec)
        good.append(i)
    good_idx = pa.array(good, pa.int64())
    text = raw.take(good_idx).cast(pa.string())
    if records:
        for j in np.flatnonzero(pc.match_substring_regex(text, _BIG_INT).to_numpy(zero_copy_only=False)):
            records[j] = _exact_loads(lines[good[j]])
    columns = {f: _slots_from_values([r.get(f) for r in records]) for f in fields}
    known = frozenset(fields)
    extras, unknown = [], []
    for r in records:
        if r.keys() <= known:
            extras.append(None), unknown.append(None)
        else:
            rest = {k: v for k, v in r.items() if k not in known}
            extras.append(_dumps(rest)), unknown.append(next(iter(rest)))
    parsed = _slot_table(
        fields, columns, text, sources.take(good_idx), pa.array(extras, pa.string()), pa.array(unknown, pa.string())
    )
    bad_sources = sources.take(pa.array(bad, pa.int64()))
    return parsed, _malformed([_decode_raw(lines[i]) for i in bad], bad_sources, bad_err), good


def _parse_csv_records(
    raw: pa.Array, sources: pa.Array, header: list[str], fields: tuple[str, ...]
) -> tuple[pa.Table, pa.Table]:
    """CSV rows (a binary array, one record each) -> (slot table, malformed dead letters)."""
    rows = raw.to_pylist()
    good_values: list[list[str]] = []
    good: list[int] = []
    bad: list[int] = []
    bad_err: list[str] = []
    width = len(header)
    for i, row in enumerate(rows):
        try:
            text = row.decode("utf-8")
            values = next(csv.reader([text], strict=True))
        except (UnicodeDecodeError, csv.Error, StopIteration) as e:
            bad.append(i)
            bad_err.append(f"not a valid CSV row: {e}")
            continue
        if len(values) != width:
            bad.append(i)
            bad_err.append(f"expected {width} columns, got {len(values)}")
            continue
        good_values.append(values)
        good.append(i)
    n = len(good)
    position = {name: j for j, name in enumerate(header)}
    columns = {}
    for f in fields:
        j = position.get(f)
        if j is None:
            kinds = pa.array([KIND_MISSING] * n, pa.int8())
            columns[f] = [kinds, pa.nulls(n, pa.string()), pa.nulls(n, pa.int64()),
                          pa.nulls(n, pa.float64())]  # fmt: skip
            continue
        # CSV cannot tell an empty string from a missing value: both are null here.
        text = pa.array([v[j] or None for v in good_values], pa.string())
        kinds = pc.if_else(pc.is_null(text), KIND_NULL, KIND_STR).cast(pa.int8())
        columns[f] = [kinds, text, pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64())]
    undeclared = [(j, name) for j, name in enumerate(header) if name not in fields]
    if undeclared:
        extra_objs = [{name: v[j] for j, name in undeclared if v[j]} for v in good_values]
        extras = pa.array([_dumps(e) if e else None for e in extra_objs])
        unknown = pa.array([undeclared[0][1]] * n, pa.string())
    else:
        extras = pa.nulls(n, pa.string())
        unknown = pa.nulls(n, pa.string())
    good_idx = pa.array(good, pa.int64())
    text = raw.take(good_idx).cast(pa.string())
    parsed = _slot_table(fields, columns, text, sources.take(good_idx), extras.cast(pa.string()), unknown)
    return parsed, _malformed([_decode_raw(rows[i]) for i in bad], sources.take(pa.array(bad, pa.int64())), bad_err)


def _parse_csv_batch(batch: pa.Table, fields: tuple[str, ...]) -> tuple[pa.Table, pa.Table]:
    """A CSV batch (see ``ParseRecords``) -> (slot table, malformed dead letters). Rows under a
    header that could not be read are all dead letters, with the header's error."""
    raw = as_array(batch.column("raw"))
    sources = _strings(batch.column("source"))
    meta = batch.schema.metadata or {}
    if b"csv_header" in meta:
        return _parse_csv_records(raw, sources, orjson.loads(meta[b"csv_header"]), fields)
    error = meta.get(b"csv_header_error", b"the batch carries no CSV header").decode()
    none = pa.array([], pa.int64())
    parsed = _parse_csv_records(raw.take(none), sources.take(none), list(fields), fields)[0]
    return parsed, _malformed([_decode_raw(r) for r in raw.to_pylist()], sources, [error] * len(raw))


def _typed_slots(col: pa.Array, n: int) -> list[pa.Array]:
    """Slots for one typed (parquet/Arrow) column, vectorised."""
    t = col.type
    null_i, null_f, null_s = pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64()), pa.nulls(n, pa.string())

    def kinds(present: int) -> pa.Array:
        return pc.if_else(pc.is_null(col), KIND_NULL, present).cast(pa.int8())

    if pa.types.is_dictionary(t):
        return _typed_slots(col.dictionary_decode(), n)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [kinds(KIND_STR), col.cast(pa.string()), null_i, null_f]
    if pa.types.is_uint64(t) and pc.any(pc.greater(col, pa.scalar(2**63 - 1, t))).as_py():
        # Beyond int64, as a JSON integer beyond 64 bits: exact text, a float value, no int.
        big = pc.fill_null(pc.greater(col, pa.scalar(2**63 - 1, t)), False)
        as_int = pc.if_else(big, pa.scalar(None, t), col).cast(pa.int64())
        as_float = pc.if_else(big, col.cast(pa.float64(), safe=False), null_f)
        return [kinds(KIND_INT), col.cast(pa.string()), as_int, as_float]
    if pa.types.is_integer(t):
        as_int = col.cast(pa.int64())
        return [kinds(KIND_INT), as_int.cast(pa.string()), as_int, null_f]
    if pa.types.is_decimal(t):
        # The exact decimal text: what an exact (decimal) rule reads.
        return [kinds(KIND_FLOAT), col.cast(pa.string()), null_i, col.cast(pa.float64())]
    if pa.types.is_floating(t):
        as_float = col.cast(pa.float64())
        return [kinds(KIND_FLOAT), as_float.cast(pa.string()), null_i, as_float]
    if pa.types.is_boolean(t):
        return [kinds(KIND_BOOL), pc.if_else(col, "true", "false"), null_i, null_f]
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        micros, fits = _epoch_micros(col)
        if fits is None:
            # No text slot: formatting every timestamp costs more than the rest of the row.
            return [kinds(KIND_TIMESTAMP), null_s, micros, null_f]
        # Instants beyond int64 microseconds (year 294247 and on) are values of no use.
        kind = pc.if_else(pc.is_null(col), KIND_NULL, pc.if_else(fits, KIND_TIMESTAMP, KIND_OTHER)).cast(pa.int8())
        text = pc.if_else(fits, null_s, col.cast(pa.string()))
        return [kind, text, pc.if_else(fits, micros, null_i), null_f]
    if pa.types.is_null(t):
        return [kinds(KIND_NULL), null_s, null_i, null_f]
    text = pc.if_else(pc.is_null(col), None, f"<{t}>")
    return [kinds(KIND_OTHER), text.cast(pa.string()), null_i, null_f]


_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1}
_INT64_MAX = 2**63 - 1


def _epoch_micros(col: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """Microseconds since the epoch (UTC) of a timestamp or date column, nanoseconds floored,
    and which values fit int64 microseconds (None: all do)."""
    t = col.type
    if pa.types.is_date32(t):
        per, values = 86_400_000_000, col.cast(pa.int32()).cast(pa.int64())
    elif pa.types.is_date64(t):
        per, values = 1_000, col.cast(pa.int64())
    elif t.unit == "ns":
        # Floored (not cut toward zero): an instant before 1970 stays before it.
        return _floor_div(col.cast(pa.int64()), 1000), None
    else:
        per, values = _MICROS[t.unit], col.cast(pa.int64())
    if per == 1:
        return values, None
    limit = _INT64_MAX // per
    fits = pc.fill_null(pc.less_equal(pc.abs(values), limit), True)
    if fits.false_count:
        return pc.multiply(pc.if_else(fits, values, 0), per), fits
    return pc.multiply(values, per), None


def _floor_div(values: pa.Array, by: int) -> pa.Array:
    """``values // by`` rounding toward minus infinity (Arrow's integer division cuts toward zero)."""
    cut = pc.divide(values, by)
    below = pc.and_(pc.less(values, 0), pc.not_equal(pc.multiply(cut, by), values))
    return pc.if_else(below, pc.subtract(cut, 1), cut)


def _parse_arrow_records(table: pa.Table, fields: tuple[str, ...]) -> pa.Table:
    n = table.num_rows
    changes = [c for c in CHANGE_COLUMNS if c in table.column_names]
    data = table.drop_columns([c for c in ("_raw", "_source", *changes) if c in table.column_names])
    columns = {}
    for f in fields:
        if f in data.column_names:
            columns[f] = _typed_slots(as_array(data.column(f)), n)
        else:
            columns[f] = [pa.array([KIND_MISSING] * n, pa.int8()), pa.nulls(n, pa.string()),
                          pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64())]  # fmt: skip
    undeclared = [c for c in data.column_names if c not in fields]
    if undeclared:
        extras = json_text(data.select(undeclared))
        unknown = pa.array([undeclared[0]] * n, pa.string())
    else:
        extras, unknown = pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    # Typed rows stay typed: their JSON text is written only where a record is shown or compared.
    raw = as_array(table.column("_raw")).cast(pa.string()) if "_raw" in table.column_names else record_struct(data)
    if "_source" in table.column_names:
        source = _strings(table.column("_source"))
    else:
        source = pa.nulls(n, pa.string())
    slots = _slot_table(fields, columns, raw, source, extras, unknown)
    for c in changes:  # a change stream's own columns ride along (see records.CHANGE_COLUMNS)
        slots = slots.append_column(c, table.column(c))
    return slots


class _ParseFn(beam.DoFn):
    def __init__(self, fmt: str, fields: tuple[str, ...]):
        self._fmt = fmt
        self._fields = fields

    def setup(self):
        self._read = beam.metrics.Metrics.counter("parse", "read")
        self._malformed = beam.metrics.Metrics.counter("parse", "malformed")

    def process(self, batch: pa.Table):
        faults.at("parse")
        if batch.num_rows == 0:
            return
        if self._fmt == "parquet":
            parsed, bad = _parse_arrow_records(batch, self._fields), None
        elif self._fmt == "csv":
            parsed, bad = _parse_csv_batch(batch, self._fields)
        else:
            raw = as_array(batch.column("raw"))
            parsed, bad = _parse_json_records(raw, _strings(batch.column("source")), self._fields)
        n_bad = bad.num_rows if bad is not None else 0
        self._read.inc(batch.num_rows)
        self._malformed.inc(n_bad)
        if parsed.num_rows:
            yield parsed
        if n_bad:
            yield beam.pvalue.TaggedOutput("dead_letters", bad)
        yield beam.pvalue.TaggedOutput("stats", {"read": batch.num_rows})


class ParseRecords(beam.PTransform):
    """Parses raw batches into slot tables (see ``transforms.ingest.slots``).

    Args:
        fmt: Input format, one of ``jsonl``, ``csv``, ``avro``, ``parquet``. Text formats
            (and avro, read as JSON text) take tables with ``raw`` (binary) and ``source``
            columns, one row per record; csv batches carry the header as JSON in the
            schema metadata key ``csv_header`` (or in ``csv_header_error`` why it could not
            be read: their rows are then dead letters). ``parquet`` takes typed tables,
            optionally with ``_raw`` and ``_source`` columns.
        fields: The declared field names; any other field goes to ``_extras``.

    Returns a dict of PCollections: ``parsed`` (slot tables), ``dead_letters`` (DeadLetter
    tables, reason ``malformed``), ``stats`` (dicts of counts: ``read``).
    """

    def __init__(self, fmt: str, fields: tuple[str, ...], label: str | None = None):
        super().__init__(label)
        if fmt not in FORMATS:
            raise ValueError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if not fields or len(set(fields)) != len(fields):
            raise ValueError("fields must be a non-empty list of distinct names")
        self._fmt = fmt
        self._fields = tuple(fields)

    def expand(self, batches):
        out = batches | "Parse" >> beam.ParDo(_ParseFn(self._fmt, self._fields)).with_outputs(
            "dead_letters", "stats", main="parsed"
        ).with_input_types(pa.Table)
        return {"parsed": typed(out.parsed), "dead_letters": typed(out.dead_letters), "stats": typed(out.stats, dict)}
