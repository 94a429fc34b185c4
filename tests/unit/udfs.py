"""User functions the spec tests call through PythonFunction steps (allowed as tests.unit.udfs)."""

import pyarrow as pa
import pyarrow.compute as pc


def tier(table: pa.Table) -> pa.Table:
    """Adds ``tier`` from ``amount``; refuses a batch holding the user ``u-bad`` (a bug stand-in)."""
    if pc.any(pc.equal(table.column("user_id"), "u-bad")).as_py():
        raise ValueError("cannot tier user u-bad")
    gold = pc.fill_null(pc.greater(table.column("amount"), 50.0), False)
    return table.append_column("tier", pc.if_else(gold, "gold", "basic"))


def drops_a_row(table: pa.Table) -> pa.Table:
    return table.slice(1)
