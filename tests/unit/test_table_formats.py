"""The table-format benchmark's operations on Iceberg and Delta at a tiny scale, checked against a
model of the table built with Arrow alone (so the benchmark's numbers stay about correct tables)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from beam_pipelines import datagen
from beam_pipelines.lakehouse.tables import sql_string
from benchmarks.table_formats import make_workload, run_local, with_day

BATCHES = 4


def _events(rows: int) -> pa.Table:
    """Clean generated events shaped like the curated records the benchmark uses."""
    table, _ = datagen.generate(rows, 0, seed=11, dirty_fraction=0.0)
    table = table.drop_columns(["session_id"])
    return with_day(table.append_column("hour_of_day", pc.hour(table["ts"]).cast(pa.int32())))


def _model(work) -> pa.Table:
    """The table the operations should leave: updates replace rows by key, new rows added, the
    subject's rows gone."""
    updates = work.merge.slice(0, work.merge_updates)
    kept = work.base.filter(pc.invert(pc.is_in(work.base["event_id"], updates["event_id"])))
    table = pa.concat_tables([kept, work.merge, *work.micro_batches])
    return table.filter(pc.not_equal(table["user_id"], work.subject))


# Polars plans Iceberg scans with pyiceberg without its optional plugin, and says so.
@pytest.mark.filterwarnings("ignore:Iceberg scan planning")
def test_both_formats_run_every_operation_to_the_same_correct_table(tmp_path):
    base = _events(2000)
    work = make_workload(base, micro_batches=BATCHES)
    days = pc.count_distinct(base["dt"]).as_py()
    ops, read = run_local(work, tmp_path)
    model = _model(work)
    rows = {(r["op"], r["format"]): r for r in ops}
    for fmt in ("iceberg", "delta"):
        merge = rows["merge", fmt]
        assert (merge["updated"], merge["inserted"]) == (20, 20)
        assert merge["rows"] == 2020
        appended = rows[f"append x{BATCHES}", fmt]
        assert appended["rows"] == 2020 + BATCHES * 50
        assert appended["max_files_per_partition"] > BATCHES  # every micro-batch left a file per day
        compacted = rows["compact", fmt]
        assert (compacted["live_files"], compacted["max_files_per_partition"]) == (days, 1)
        deleted = rows["delete subject", fmt]
        assert 0 < deleted["data_files_written"] <= days and deleted["rows"] == model.num_rows
        # After expiry and orphan removal only the live data files are left on disk.
        cleaned = rows["remove orphan files", fmt]
        assert cleaned["disk_data_files"] == cleaned["live_files"] == days
        # Iceberg evolves the schema in metadata; Delta rewrites the table for widen and rename.
        rewritten = rows["rename column", fmt]["data_files_written"]
        assert rewritten == (0 if fmt == "iceberg" else days)
        assert all(r["rows_ok"] for r in ops if r["format"] == fmt)
        want = round(pc.sum(model["amount"]).as_py(), 2)
        for reader in ("library", "duckdb", "polars"):
            assert (read[fmt][reader]["rows"], read[fmt][reader]["amount_sum"]) == (model.num_rows, want), reader
        assert read[fmt]["agree"]
        columns = read[fmt]["columns"]
        assert columns["channel"] in ("string", "large_string") and columns["hour_of_day"] == "int64"
        assert "country_code" in columns and "country" not in columns
    # Iceberg's expiry leaves the old files; the orphan removal written for it deletes them.
    assert rows["expire snapshots", "iceberg"]["disk_data_files"] > days
    assert rows["remove orphan files", "iceberg"]["files_deleted"] > 0
    assert rows["expire snapshots", "delta"]["disk_data_files"] == days


def test_a_delete_predicate_value_is_one_quoted_literal():
    assert sql_string("u1") == "'u1'"
    assert sql_string("x' OR '1'='1") == "'x'' OR ''1''=''1'"
