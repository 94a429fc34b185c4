"""Schema drift of parsed records against their contract, counted per batch, vectorised.

Three things a data engineer wants to see before they break something downstream:
fields the records carry that the contract lacks (counted by each record's first undeclared
field, with a few sample records), declared fields arriving as a kind of value their type does
not expect (a number sent as a string, ...), and declared fields absent (or null) in records. The counts
are dicts merged with the run's other counts (``drift.<what>.<field>[.<kind>]``); samples are
lists the merge keeps short and sorted, so the report is the same whatever the bundle order.
"""

from __future__ import annotations

import numpy as np
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
        names = unknown.value_counts()
        extras = as_array(parsed.column("_extras"))
        for row in names.to_pylist():
            name = row["values"]
            if name is None:
                continue
            out[f"drift.unknown.{name}"] = row["counts"]
            first = extras.filter(pc.fill_null(pc.equal(unknown, name), False)).slice(0, 64)
            shown = sorted({v[:200] for v in first.to_pylist() if v is not None})[:SAMPLES]
            out[f"drift.sample.{name}"] = shown
    return out


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
