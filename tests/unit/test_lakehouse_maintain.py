"""Lakehouse maintenance (``python -m beam_pipelines.lakehouse maintain``) on real Delta tables:
retention deletes the partitions before the cut-off and their files really go; compaction joins
each partition's small files; vacuum removes replaced files and orphans; the rows kept are the
rows they were; ``--dry_run`` lists all that and changes nothing."""

from __future__ import annotations

import io
import json
import os
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from beam_pipelines import audit_log, lease
from beam_pipelines.errors import RunError, UsageError
from beam_pipelines.lakehouse import maintain, tables

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lakehouse" / "orders.yaml"
DAYS = [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)]


def spec(tmp_path: Path) -> str:
    """The example with retention on silver (2 days) and no time travel kept."""
    text = EXAMPLE.read_text()
    old = "partition_by: created_at, retention: 400d}"
    assert text.count(old) == 1
    path = tmp_path / "orders.yaml"
    path.write_text(text.replace(old, "partition_by: created_at, retention: 2d, keep_versions: 0}"))
    return str(path)


def day_rows(day: date, n: int, first: int = 0) -> pa.Table:
    return pa.table({"order_id": [f"o-{day.day}-{i}" for i in range(first, first + n)],
                     "amount": [float(i) for i in range(first, first + n)],
                     "dt": pa.array([day] * n, pa.date32())})  # fmt: skip


def silver(out: Path) -> str:
    """A silver-like table: each day written in two appends (two small files a day), then one
    order deleted (its file replaced), and an orphan file a dead writer left."""
    uri = str(out / "lakehouse" / "silver")
    for day in DAYS:
        tables.append(uri, day_rows(day, 50), ["dt"])
        tables.append(uri, day_rows(day, 50, first=50), ["dt"])
    tables.open_table(uri).delete("\"order_id\" = 'o-3-0'")
    orphan = Path(uri) / "dt=2024-03-02" / "part-00000-left-by-a-dead-writer.parquet"
    orphan.write_bytes(b"PAR1 not a real file")
    old = time.time() - 3 * 86_400
    os.utime(orphan, (old, old))
    return uri


def parquet_files(uri: str) -> list[str]:
    return sorted(str(p.relative_to(uri)) for p in Path(uri).rglob("*.parquet"))


def rows(uri: str) -> list[tuple]:
    data = tables.read(tables.open_table(uri))
    return sorted(zip(data["order_id"].to_pylist(), data["amount"].to_pylist(), data["dt"].to_pylist()))


def run(*argv: str) -> str:
    out = io.StringIO()
    maintain.run(list(argv), clock=lambda: datetime(2026, 12, 7, tzinfo=timezone.utc), out=out)
    return out.getvalue()


def test_a_dry_run_lists_what_would_go_and_changes_nothing(tmp_path):
    out = tmp_path / "out"
    uri = silver(out)
    files, version = parquet_files(uri), tables.open_table(uri).version()
    said = run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-04", "--dry_run")
    assert "lakehouse maintenance of" in said and "as of 2024-03-04 (dry run)" in said
    assert "retention: would delete 1 partition(s) before 2024-03-02: 2024-03-01" in said
    assert "compaction: would join 4 small files in 2 partition(s)" in said  # 2024-03-01 is going anyway
    assert "vacuum: would remove 2 unreferenced file(s)" in said  # the file the delete replaced, the orphan
    assert f"{out}/lakehouse/bronze: no table yet" in said
    assert said.endswith("dry run: nothing was changed\n")
    assert parquet_files(uri) == files and tables.open_table(uri).version() == version
    assert not (out / "_audit").exists()  # a dry run records nothing


def test_retention_compaction_and_vacuum_leave_the_kept_rows_in_one_file_a_partition(tmp_path):
    out = tmp_path / "out"
    uri = silver(out)
    kept = [r for r in rows(uri) if r[2] >= date(2024, 3, 2)]
    said = run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-04")
    assert "retention: delete 1 partition(s) before 2024-03-02: 2024-03-01" in said and "100 rows deleted" in said
    assert "compaction: join 4 small files in 2 partition(s): 4 files -> 2" in said
    assert rows(uri) == kept  # 2024-03-02 and 2024-03-03, without the deleted order
    files = parquet_files(uri)
    # One file a kept partition; the expired partition's files, the replaced ones and the orphan are gone.
    assert [f.split("/")[0] for f in files] == ["dt=2024-03-02", "dt=2024-03-03"]
    # The audit log holds what was done, chained.
    entries = [json.loads(line) for line in (out / "_audit" / "log.jsonl").read_text().splitlines()]
    assert [(e["action"], e["outcome"]) for e in entries] == [("maintain", "done")]
    (table,) = [t for t in entries[0]["what"]["tables"] if t["table"] == uri]
    assert table["expired"] == {"2024-03-01": table["expired"]["2024-03-01"]} and table["rows_deleted"] == 100
    assert audit_log.main(["verify", f"--output={out}"]) == 0
    again = run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-04")
    assert "retention: nothing before 2024-03-02" in again and "compaction: nothing to join" in again
    assert "vacuum: remove 0 unreferenced file(s)" in again and parquet_files(uri) == files


def test_maintenance_waits_for_no_run_it_takes_the_outputs_lease(tmp_path):
    out = tmp_path / "out"
    silver(out)
    with lease.acquire(str(out), "20261207T000000Z-running"):
        with pytest.raises(RunError, match="in use by run 20261207T000000Z-running"):
            run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-04")


def test_bad_flags_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--pipeline and --output are required"):
        run(f"--output={tmp_path}")
    with pytest.raises(UsageError, match="no WriteLakehouse or MirrorDelta step"):
        run("--pipeline=events", f"--output={tmp_path}")
    with pytest.raises(UsageError, match="unknown flags"):
        run(f"--pipeline={spec(tmp_path)}", f"--output={tmp_path}", "--nope")
    with pytest.raises(UsageError, match="local disks only"):
        run(f"--pipeline={spec(tmp_path)}", "--output=s3://bucket/out")
