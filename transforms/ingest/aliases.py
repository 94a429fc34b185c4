"""Former field names (a contract's ``aliases``): a record written before a rename still fills
the field. Works on parsed slot tables, vectorised: where the field is absent or null and an
alias holds a value, the alias's slots are taken; the alias columns are then dropped."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from transforms.ingest.slots import KIND_MISSING, KIND_NULL
from transforms.records import as_array

__all__ = ["resolve_aliases"]

_SLOTS = (".k", ".s", ".i", ".f")


def resolve_aliases(table: pa.Table, aliases: tuple[tuple[str, tuple[str, ...]], ...]) -> pa.Table:
    """``aliases`` are (field, former names) pairs; the first former name holding a value wins."""
    gone = []
    for field, former in aliases:
        for alias in former:
            empty = pc.is_in(as_array(table.column(field + ".k")), pa.array([KIND_MISSING, KIND_NULL], pa.int8()))
            has = pc.invert(
                pc.is_in(as_array(table.column(alias + ".k")), pa.array([KIND_MISSING, KIND_NULL], pa.int8()))
            )
            take = pc.and_(empty, has)
            if pc.any(take).as_py():
                for suffix in _SLOTS:
                    i = table.schema.get_field_index(field + suffix)
                    value = pc.if_else(take, as_array(table.column(alias + suffix)), as_array(table.column(i)))
                    table = table.set_column(i, field + suffix, value)
            gone += [alias + suffix for suffix in _SLOTS]
    return table.drop_columns(gone) if gone else table
