"""The table-format benchmark's warehouses in a real S3 server (moto, through scripts/s3.sh): both
libraries write and MERGE there, and the bucket holds exactly the files each table references.
The server is started by the benchmark's own S3Server; if it cannot start, the test fails."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines import datagen
from benchmarks.lake_tables import s3_store
from benchmarks.table_formats import S3Server, is_metadata, make_workload, run_s3, with_day


def test_both_formats_write_and_merge_in_an_s3_warehouse(tmp_path):
    table, _ = datagen.generate(1000, 0, seed=5, dirty_fraction=0.0)
    table = table.drop_columns(["session_id"])
    base = with_day(table.append_column("hour_of_day", pc.hour(table["ts"]).cast(pa.int32())))
    work = make_workload(base, micro_batches=1)
    days = pc.count_distinct(base["dt"]).as_py()
    with S3Server() as endpoint:
        ops = run_s3(work, endpoint, tmp_path)
        buckets = {fmt: s3_store(endpoint, f"lake-{fmt}", "warehouse").listing() for fmt in ("iceberg", "delta")}
    rows = {(r["op"], r["format"]): r for r in ops}
    for fmt in ("iceberg", "delta"):
        assert rows["s3 write", fmt]["rows"] == 1000 and rows["s3 write", fmt]["data_files_written"] == days
        merged = rows["s3 merge", fmt]
        assert (merged["updated"], merged["inserted"], merged["rows"]) == (10, 10, 1010)
        # Nothing was deleted yet: the bucket holds the first write's files and the merge's.
        data = [p for p in buckets[fmt] if not is_metadata(p)]
        assert len(data) == days + merged["data_files_written"]
        assert any(is_metadata(p) for p in buckets[fmt])
