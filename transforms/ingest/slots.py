"""The parsed-record table: every declared field as typed slots, whatever the input format.

A JSON value may be a string in one record and a number in the next; a parquet column has
one Arrow type. Parsing puts each declared field ``f`` into four columns so validation can
stay vectorised over any input:

- ``f.k`` (int8): the kind of value the record held (see the ``KIND_*`` constants);
- ``f.s`` (string): the text for strings, and a display form of other kinds;
- ``f.i`` (int64): the value for integers, epoch microseconds (UTC) for timestamps;
- ``f.f`` (float64): the value for floats.

Plus ``_raw`` (the original record: its text, or for typed sources such as parquet its own
columns as a struct, written as JSON text only where shown, see ``records.raw_text``),
``_source`` (where it came from), ``_extras`` (a JSON object of undeclared fields, or null)
and ``_unknown`` (the first undeclared field name).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from transforms.records import as_array

KIND_MISSING = 0
KIND_NULL = 1
KIND_STR = 2
KIND_INT = 3
KIND_FLOAT = 4
KIND_BOOL = 5
KIND_OTHER = 6
KIND_TIMESTAMP = 7

META_COLUMNS = ("_raw", "_source", "_extras", "_unknown")


def slot_schema(fields: tuple[str, ...], raw_type: pa.DataType = pa.string()) -> pa.Schema:
    cols = []
    for f in fields:
        cols += [
            pa.field(f + ".k", pa.int8()),
            pa.field(f + ".s", pa.string()),
            pa.field(f + ".i", pa.int64()),
            pa.field(f + ".f", pa.float64()),
        ]
    cols += [pa.field(m, raw_type if m == "_raw" else pa.string()) for m in META_COLUMNS]
    return pa.schema(cols)


class Slots:
    """Read access to one field's slots in a parsed table.

    ``present`` holds the kinds that occur: rules skip the work of kinds a batch does not
    hold (a parquet column has one kind plus null; a JSON field mostly one).
    """

    __slots__ = ("name", "kind", "text", "int", "float", "present")

    def __init__(self, table: pa.Table, name: str):
        self.name = name
        self.kind = as_array(table.column(name + ".k"))
        self.text = as_array(table.column(name + ".s"))
        self.int = as_array(table.column(name + ".i"))
        self.float = as_array(table.column(name + ".f"))
        if self.kind.null_count:
            self.present = frozenset(range(KIND_TIMESTAMP + 1))
        else:
            counts = np.bincount(self.kind.to_numpy(zero_copy_only=False).astype(np.intp), minlength=KIND_TIMESTAMP + 1)
            self.present = frozenset(np.flatnonzero(counts).tolist())

    def only(self, *kinds: int) -> bool:
        """Whether every row holds one of ``kinds``."""
        return self.present <= set(kinds)

    def has(self, *kinds: int) -> bool:
        """Whether some row holds one of ``kinds``."""
        return not self.present.isdisjoint(kinds)
