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
from transforms.records import dead_letters, json_text, typed

__all__ = ["FORMATS", "ParseRecords"]

FORMATS = ("jsonl", "csv", "avro", "parquet")
STAGE = "parse"
_MISSING = object()


def _decode_raw(line: bytes) -> str:
    return line.decode("utf-8", errors="backslashreplace")


# orjson reads integers beyond 64 bits as floats; lines that may hold one are read again exactly.
_BIG_INT = r"[:\[,]\s*-?\d{19,}\s*[,}\]]"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _exact_loads(line: bytes):
    return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)


def _dumps(value) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _classify(values: list) -> tuple[list, list, list, list]:
    """Per-element slots for a field whose values mix types (the slow path)."""
    kinds, texts, ints, floats = [], [], [], []
    for v in values:
        t = type(v)
        if v is _MISSING:
            kinds.append(KIND_MISSING), texts.append(None), ints.append(None), floats.append(None)
        elif v is None:
            kinds.append(KIND_NULL), texts.append(None), ints.append(None), floats.append(None)
        elif t is str:
            kinds.append(KIND_STR), texts.append(v), ints.append(None), floats.append(None)
        elif t is bool:
            kinds.append(KIND_BOOL), texts.append("true" if v else "false"), ints.append(None)
            floats.append(None)
        elif t is int:
            in_range = -(2**63) <= v < 2**63
            kinds.append(KIND_INT), texts.append(str(v))
            ints.append(v if in_range else None), floats.append(None if in_range else float(v))
        elif t is float:
            kinds.append(KIND_FLOAT), texts.append(repr(v)), ints.append(None), floats.append(v)
        else:
            kinds.append(KIND_OTHER), texts.append(_dumps(v))
            ints.append(None), floats.append(None)
    return kinds, texts, ints, floats


def _slots_from_values(values: list) -> list[pa.Array]:
    """Slots for one field from Python values; the common homogeneous case stays in C."""
    n = len(values)
    plain = [None if v is _MISSING else v for v in values]
    try:
        arr = pa.array(plain)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        arr = None
    null_i = pa.nulls(n, pa.int64())
    null_f = pa.nulls(n, pa.float64())
    null_s = pa.nulls(n, pa.string())
    if arr is not None:
        t = arr.type
        missing = pa.array([v is _MISSING for v in values]) if arr.null_count else None

        def kinds(present: int) -> pa.Array:
            k = pc.if_else(pc.is_null(arr), KIND_NULL, present)
            if missing is not None:
                k = pc.if_else(missing, KIND_MISSING, k)
            return k.cast(pa.int8())

        if pa.types.is_string(t):
            return [kinds(KIND_STR), arr, null_i, null_f]
        if pa.types.is_int64(t):
            return [kinds(KIND_INT), arr.cast(pa.string()), arr, null_f]
        if pa.types.is_null(t):
            return [kinds(KIND_NULL), null_s, null_i, null_f]
        if pa.types.is_boolean(t):
            return [kinds(KIND_BOOL), pc.if_else(arr, "true", "false"), null_i, null_f]
    kinds_, texts, ints, floats = _classify(values)
    return [
        pa.array(kinds_, pa.int8()),
        pa.array(texts, pa.string()),
        pa.array(ints, pa.int64()),
        pa.array(floats, pa.float64()),
    ]


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
    return pa.Table.from_arrays(arrays, schema=slot_schema(fields))


def _malformed(raw: list[str], sources: list[str], errors: list[str]) -> pa.Table:
    return dead_letters(
        STAGE,
        "malformed",
        None,
        pa.array(errors, pa.string()),
        pa.array(raw, pa.string()),
        pa.array(sources, pa.string()),
    )


def _parse_json_records(lines: list[bytes], sources: list[str], fields: tuple[str, ...]) -> tuple[pa.Table, pa.Table]:
    records: list[dict] = []
    good: list[int] = []
    bad_raw, bad_src, bad_err = [], [], []
    for i, line in enumerate(lines):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            bad_raw.append(_decode_raw(line)), bad_src.append(sources[i])
            bad_err.append(f"not valid JSON: {e}")
            continue
        if type(rec) is not dict:
            bad_raw.append(_decode_raw(line)), bad_src.append(sources[i])
            bad_err.append(f"expected a JSON object, got {type(rec).__name__}")
            continue
        records.append(rec)
        good.append(i)
    raw = pa.array([lines[i] for i in good], pa.binary()).cast(pa.string())
    if records:
        for j in np.flatnonzero(pc.match_substring_regex(raw, _BIG_INT).to_numpy(zero_copy_only=False)):
            records[j] = _exact_loads(lines[good[j]])
    columns = {f: _slots_from_values([r.pop(f, _MISSING) for r in records]) for f in fields}
    extras = pa.array([_dumps(r) if r else None for r in records], pa.string())
    unknown = pa.array([next(iter(r)) if r else None for r in records], pa.string())
    src = pa.array([sources[i] for i in good], pa.string())
    parsed = _slot_table(fields, columns, raw, src, extras, unknown)
    return parsed, _malformed(bad_raw, bad_src, bad_err)


def _parse_csv_records(
    rows: list[bytes], sources: list[str], header: list[str], fields: tuple[str, ...]
) -> tuple[pa.Table, pa.Table]:
    good_values: list[list[str]] = []
    good: list[int] = []
    bad_raw, bad_src, bad_err = [], [], []
    width = len(header)
    for i, row in enumerate(rows):
        try:
            text = row.decode("utf-8")
            values = next(csv.reader([text], strict=True))
        except (UnicodeDecodeError, csv.Error, StopIteration) as e:
            bad_raw.append(_decode_raw(row)), bad_src.append(sources[i])
            bad_err.append(f"not a valid CSV row: {e}")
            continue
        if len(values) != width:
            bad_raw.append(_decode_raw(row)), bad_src.append(sources[i])
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
    raw = pa.array([rows[i] for i in good], pa.binary()).cast(pa.string())
    src = pa.array([sources[i] for i in good], pa.string())
    parsed = _slot_table(fields, columns, raw, src, extras.cast(pa.string()), unknown)
    return parsed, _malformed(bad_raw, bad_src, bad_err)


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
    if pa.types.is_integer(t):
        as_int = col.cast(pa.int64())
        return [kinds(KIND_INT), as_int.cast(pa.string()), as_int, null_f]
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        as_float = col.cast(pa.float64())
        return [kinds(KIND_FLOAT), as_float.cast(pa.string()), null_i, as_float]
    if pa.types.is_boolean(t):
        return [kinds(KIND_BOOL), pc.if_else(col, "true", "false"), null_i, null_f]
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        ts = col.cast(pa.timestamp("us", tz=t.tz if pa.types.is_timestamp(t) else None))
        micros = ts.cast(pa.int64())
        # No text slot: formatting every timestamp costs more than the rest of the row.
        return [kinds(KIND_TIMESTAMP), null_s, micros, null_f]
    if pa.types.is_null(t):
        return [kinds(KIND_NULL), null_s, null_i, null_f]
    text = pc.if_else(pc.is_null(col), None, f"<{t}>")
    return [kinds(KIND_OTHER), text.cast(pa.string()), null_i, null_f]


def _parse_arrow_records(table: pa.Table, fields: tuple[str, ...]) -> pa.Table:
    n = table.num_rows
    data = table.drop_columns([c for c in ("_raw", "_source") if c in table.column_names])
    columns = {}
    for f in fields:
        if f in data.column_names:
            columns[f] = _typed_slots(data.column(f).combine_chunks(), n)
        else:
            columns[f] = [pa.array([KIND_MISSING] * n, pa.int8()), pa.nulls(n, pa.string()),
                          pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64())]  # fmt: skip
    undeclared = [c for c in data.column_names if c not in fields]
    if undeclared:
        extras = json_text(data.select(undeclared))
        unknown = pa.array([undeclared[0]] * n, pa.string())
    else:
        extras, unknown = pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    raw = table.column("_raw").combine_chunks() if "_raw" in table.column_names else json_text(data)
    if "_source" in table.column_names:
        source = table.column("_source").combine_chunks().cast(pa.string())
    else:
        source = pa.nulls(n, pa.string())
    return _slot_table(fields, columns, raw.cast(pa.string()), source, extras, unknown)


class _ParseFn(beam.DoFn):
    def __init__(self, fmt: str, fields: tuple[str, ...]):
        self._fmt = fmt
        self._fields = fields

    def setup(self):
        self._read = beam.metrics.Metrics.counter("parse", "read")
        self._malformed = beam.metrics.Metrics.counter("parse", "malformed")

    def process(self, batch: pa.Table):
        if batch.num_rows == 0:
            return
        if self._fmt == "parquet":
            parsed, bad = _parse_arrow_records(batch, self._fields), None
        else:
            lines = batch.column("raw").to_pylist()
            sources = batch.column("source").to_pylist()
            if self._fmt == "csv":
                header = orjson.loads(batch.schema.metadata[b"csv_header"])
                parsed, bad = _parse_csv_records(lines, sources, header, self._fields)
            else:
                parsed, bad = _parse_json_records(lines, sources, self._fields)
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
            schema metadata key ``csv_header``. ``parquet`` takes typed tables, optionally
            with ``_raw`` and ``_source`` columns.
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
