"""Schema drift of parsed records against their contract, counted per batch, vectorised.

Three things a data engineer wants to see before they break something downstream:
fields the records carry that the contract lacks (records holding each, with a few samples), declared fields arriving as a kind of value their type does
not expect (a number sent as a string, ...), and declared fields absent (or null) in records. The counts
are dicts merged with the run's other counts (``drift.<what>.<field>[.<kind>]``); samples are
lists the merge keeps short and sorted, so the report is the same whatever the bundle order.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import json as pa_json

from transforms.ingest.slots import (
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_MISSING,
    KIND_NULL,
    KIND_OTHER,
    KIND_STR,
    KIND_TIMESTAMP,
)
from transforms.records import as_array

__all__ = ["EXPECTED_KINDS", "SAMPLES", "drift_counts", "drift_report"]

SAMPLES = 3
_KIND_NAMES = {KIND_STR: "string", KIND_INT: "integer", KIND_FLOAT: "float", KIND_BOOL: "boolean",
               KIND_OTHER: "object", KIND_TIMESTAMP: "timestamp"}  # fmt: skip
# Contract type -> the kinds of value it takes as they are (others are converted, or refused).
EXPECTED_KINDS = {
    "id": {KIND_STR, KIND_INT},
    "string": {KIND_STR},
    "int": {KIND_INT},
    "long": {KIND_INT},
    "double": {KIND_INT, KIND_FLOAT},
    "decimal": {KIND_INT, KIND_FLOAT, KIND_STR},
    "boolean": {KIND_BOOL},
    "timestamp": {KIND_STR, KIND_INT, KIND_FLOAT, KIND_TIMESTAMP},
}


def drift_counts(parsed: pa.Table, fields: tuple[tuple[str, str], ...]) -> dict:
    """Drift counts of one parsed slot table; ``fields`` are (name, contract type) pairs."""
    out: dict = {}
    n = parsed.num_rows
    if not n:
        return out
    for name, kind in fields:
        kinds = as_array(parsed.column(name + ".k")).to_numpy(zero_copy_only=False)
        counts = np.bincount(kinds.astype(np.intp), minlength=KIND_TIMESTAMP + 1)
        absent = int(counts[KIND_MISSING] + counts[KIND_NULL])  # parsers may not tell absent from null
        if absent:
            out[f"drift.missing.{name}"] = absent
        for k, label in _KIND_NAMES.items():
            if counts[k] and k not in EXPECTED_KINDS[kind]:
                out[f"drift.type.{name}.{label}"] = int(counts[k])
    unknown = as_array(parsed.column("_unknown"))
    if unknown.null_count < n:
        extras = as_array(parsed.column("_extras"))
        # A record with one undeclared field is counted by its name (``_unknown``); the few with
        # several have every name read from their extras.
        several = pc.fill_null(pc.greater(pc.count_substring(extras, '":'), 1), False)
        single = pc.and_not(pc.is_valid(unknown), several)
        for row in unknown.filter(single).value_counts().to_pylist():
            out[f"drift.unknown.{row['values']}"] = row["counts"]
        if several.true_count:
            for name, count in _field_counts(extras.filter(several)).items():
                key = f"drift.unknown.{name}"
                out[key] = out.get(key, 0) + count
        for key in [k for k in out if k.startswith("drift.unknown.")]:
            name = key.split(".", 2)[2]
            holds = pc.fill_null(pc.match_substring(extras, json.dumps(name) + ":"), False)
            first = extras.filter(holds).slice(0, 64)
            out[f"drift.sample.{name}"] = sorted({v[:200] for v in first.to_pylist() if v is not None})[:SAMPLES]
    return out


def _field_counts(objects: pa.Array) -> dict:
    """How many of these JSON objects have each top-level key with a value (Arrow's JSON reader;
    one object at a time only where it refuses them, e.g. a key's type differs between rows)."""
    # One buffer of newline-separated objects, built by Arrow (each object is one line of JSON text).
    big = pa.large_string()
    lines = pc.binary_join_element_wise(objects.cast(big), pa.scalar("", big), pa.scalar("\n", big))
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    text = lines.buffers()[2][int(offsets[0]) : int(offsets[-1])]
    try:
        table = pa_json.read_json(pa.BufferReader(text))
        return {c: table.num_rows - table.column(c).null_count for c in table.column_names}
    except pa.ArrowInvalid:
        counts: dict = {}
        for v in objects.to_pylist():
            for k, value in orjson.loads(v).items():
                if value is not None:
                    counts[k] = counts.get(k, 0) + 1
        return counts


def drift_report(counts: dict) -> dict:
    """The report's ``drift`` section from merged counts (empty sections left out)."""
    unknown = {
        k.split(".", 2)[2]: {"records": v, "samples": counts.get("drift.sample." + k.split(".", 2)[2], [])}
        for k, v in sorted(counts.items())
        if k.startswith("drift.unknown.")
    }
    types: dict = {}
    for k, v in sorted(counts.items()):
        if k.startswith("drift.type."):
            field, kind = k.split(".", 2)[2].rsplit(".", 1)
            types.setdefault(field, {})[kind] = v
    missing = {k.split(".", 2)[2]: v for k, v in sorted(counts.items()) if k.startswith("drift.missing.")}
    out = {"unknown_fields": unknown, "type_changes": types, "missing_fields": missing}
    return {k: v for k, v in out.items() if v}
