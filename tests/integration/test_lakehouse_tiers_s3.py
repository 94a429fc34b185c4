"""Hot and cold tiers in two buckets of a real S3 server (moto, started through scripts/s3.sh by
the benchmarks' S3Server; the test fails if it cannot start): maintenance moves the old
partitions from the hot bucket's table to the cold bucket's, at zstd 19; a query over both tiers
(the project's reader and Polars) returns every row; a second run moves nothing; a maintenance
cut off between its two commits is completed by the next one without a row copied twice. The
lakehouse example with silver's cold tier in a bucket: a run MERGEs into the cold tier, and an
erasure reaches it."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest

from beam_pipelines import datagen, erase
from beam_pipelines.lakehouse import maintain, tables, tiers
from beam_pipelines.main import run
from benchmarks.lake_tables import s3_store
from benchmarks.table_formats import S3Server
from tests.e2e.test_erase import SPEC, holding
from transforms import faults

DAYS = [date(2024, 3, 1) + timedelta(days=i) for i in range(4)]
AS_OF = date(2024, 3, 5)  # with after_days 2: 2024-03-01 and 2024-03-02 go cold


def day_rows(day: date, n: int) -> pa.Table:
    return pa.table({
        "order_id": [f"o-{day.day}-{i:05d}" for i in range(n)],
        "note": [f"order {i} of {day.isoformat()}: status {('placed', 'paid', 'shipped')[i % 3]}" for i in range(n)],
        "amount": [float(i % 997) for i in range(n)],
        "dt": pa.array([day] * n, pa.date32()),
    })  # fmt: skip


def entry(hot: str, cold: str) -> dict:
    return {"step": "Silver", "layer": "silver", "table": hot, "retention_days": None, "keep_versions_hours": 0,
            "target_bytes": 128 * 1024 * 1024, "storage_options": tiers.storage_options(hot),
            "cold": {"table": cold, "after_days": 2, "level": tiers.COLD_LEVEL}}  # fmt: skip


def every_row(data) -> Counter:
    """The rows (order, amount, day) of an Arrow table or a Polars frame, with their multiplicity."""
    data = data.to_arrow() if isinstance(data, pl.DataFrame) else data
    return Counter(zip(data["order_id"].to_pylist(), data["amount"].to_pylist(), data["dt"].to_pylist()))


@pytest.fixture()
def buckets(monkeypatch):
    with S3Server() as endpoint:
        hot, cold = s3_store(endpoint, "lake-hot", "silver"), s3_store(endpoint, "lake-cold", "silver")
        for k, v in hot.options.items():
            monkeypatch.setenv(k, v)
        yield hot, cold


def test_old_partitions_move_to_the_cold_bucket_and_a_query_spans_both(buckets):
    hot_store, cold_store = buckets
    hot, cold = hot_store.uri, cold_store.uri
    for day in DAYS:
        tables.append(hot, day_rows(day, 3000), ["dt"], storage_options=tiers.storage_options(hot))
    before = every_row(tiers.read(hot))
    hot_bytes = {p: sum(f["bytes"] for f in maintain._files(tables.open_table(hot, tiers.storage_options(hot))) if f["partition"] == p)
                 for p in ("2024-03-01", "2024-03-02")}  # fmt: skip

    result = maintain.maintain_table(entry(hot, cold), AS_OF, False, "maintain-test")
    assert result["moved"] == {"appended": 6000, "deleted": 6000}
    cold_result = maintain.maintain_table(tiers.cold_entry(entry(hot, cold)), AS_OF, False, "maintain-test")
    assert cold_result["tier"] == "cold" and cold_result["files_after"] == 2

    # Each bucket holds its own tier.
    assert {f["partition"] for f in maintain._files(tables.open_table(hot, tiers.storage_options(hot)))} == {
        "2024-03-03", "2024-03-04"}  # fmt: skip
    cold_files = maintain._files(tables.open_table(cold, tiers.storage_options(cold)))
    assert {f["partition"] for f in cold_files} == {"2024-03-01", "2024-03-02"}
    assert all(f["path"] for f in cold_files) and any(k.endswith(".parquet") for k in cold_store.listing())
    # zstd 19: the same rows in fewer bytes than at the hot tier's level.
    for p, b in hot_bytes.items():
        assert sum(f["bytes"] for f in cold_files if f["partition"] == p) < b

    # A query spanning both tiers returns every row: the project's reader, and Polars.
    assert every_row(tiers.read(hot, cold)) == before
    options = tiers.storage_options(hot)
    both = pl.concat([pl.scan_delta(hot, storage_options=options), pl.scan_delta(cold, storage_options=options)])
    assert every_row(both.collect()) == before
    per_day = both.group_by("dt").len().sort("dt").collect()
    assert per_day["len"].to_list() == [3000] * 4

    # Again: nothing to move, nothing copied twice.
    again = maintain.maintain_table(entry(hot, cold), AS_OF, False, "maintain-test-2")
    assert again["to_move"] == {} and "moved" not in again
    assert every_row(tiers.read(hot, cold)) == before


def test_a_move_cut_off_between_its_commits_is_completed_by_the_next(buckets, monkeypatch):
    hot_store, cold_store = buckets
    hot, cold = hot_store.uri, cold_store.uri
    for day in DAYS:
        tables.append(hot, day_rows(day, 500), ["dt"], storage_options=tiers.storage_options(hot))
    before = every_row(tiers.read(hot))
    monkeypatch.setenv(faults.ENV, "tier:moved=raise")
    with pytest.raises(faults.FaultInjected):
        maintain.maintain_table(entry(hot, cold), AS_OF, False, "maintain-cut")
    monkeypatch.delenv(faults.ENV)
    # The moved rows are in both buckets now.
    assert len(tiers.read(hot, cold)) == 4 * 500 + 2 * 500
    done = maintain.maintain_table(entry(hot, cold), AS_OF, False, "maintain-next")
    assert done["moved"] == {"appended": 0, "deleted": 1000}
    assert every_row(tiers.read(hot, cold)) == before


def test_the_pipeline_with_its_cold_tier_in_a_bucket_merges_there_and_an_erasure_reaches_it(tmp_path, buckets):
    """The lakehouse example with silver's cold tier in the cold bucket: after maintenance, a run
    whose records update orders of cold partitions MERGEs them there (no key in both tiers, the
    table equals silver without tiers); an erasure then leaves the subject's id in no file of the
    output and no object of the bucket."""

    _, cold_store = buckets
    text = SPEC.read_text()
    old = "partition_by: created_at, retention: 400d}"
    cold_uri = f"s3://lake-cold/{tmp_path.name}/silver"
    spec = tmp_path / "orders.yaml"
    spec.write_text(
        text.replace(
            old, f'partition_by: created_at, retention: 400d, cold: {{after_days: 90, location: "{cold_uri}"}}}}'
        )
    )
    plain = tmp_path / "plain.yaml"
    plain.write_text(text)
    for name, seed in (("in1", 7), ("in2", 8)):
        assert (
            datagen.main(["--dataset=orders", "--rows=3000", f"--out={tmp_path / name}", f"--seed={seed}", "--days=3"])
            == 0
        )

    def pipeline(spec_path, data, out, day):
        when = datetime(2026, 5, day, 6, tzinfo=timezone.utc)
        argv = [
            f"--pipeline={spec_path}",
            f"--input={data}/*.jsonl",
            f"--output={out}",
            "--history=none",
            "--lineage=none",
        ]
        return run(argv, clock=lambda: when, out=io.StringIO())

    out, reference = tmp_path / "out", tmp_path / "reference"
    pipeline(spec, tmp_path / "in1", out, 1)
    said = io.StringIO()
    maintain.run([f"--pipeline={spec}", f"--output={out}", "--as_of=2024-06-01"], out=said)
    assert f"to {cold_uri}" in said.getvalue()
    second = pipeline(spec, tmp_path / "in2", out, 2)
    assert second["tables_match"]
    (silver_commit,) = [t["commit"] for t in second["lakehouse"] if t["layer"] == "silver"]
    assert silver_commit["cold"] > 0
    hot_uri = str(out / "lakehouse" / "silver")
    both = tiers.read(hot_uri, cold_uri)
    assert pc.count_distinct(both["order_id"]).as_py() == both.num_rows  # no key in both tiers
    pipeline(plain, tmp_path / "in1", reference, 1)
    pipeline(plain, tmp_path / "in2", reference, 2)
    untiered = tables.read(tables.open_table(str(reference / "lakehouse" / "silver")))
    cols = [c for c in untiered.column_names]
    assert sorted(zip(*(both[c].to_pylist() for c in cols))) == sorted(zip(*(untiered[c].to_pylist() for c in cols)))

    cold_rows = tiers.read(cold_uri)
    subject = Counter(cold_rows["customer_id"].to_pylist()).most_common(1)[0][0]
    receipt = erase.run(
        [f"--pipeline={spec}", f"--output={out}", f"--subject=customer_id={subject}"], out=io.StringIO()
    )
    (cold_row,) = [t for t in receipt["tables"] if t.get("tier") == "cold"]
    assert cold_row["table"] == cold_uri and cold_row["rows_deleted"] > 0 and cold_row["log_entries_removed"] > 0
    assert holding(out, subject) == {}
    local = tmp_path / "bucket"
    s3 = cold_store.fs
    for info in s3.get_file_info(pafs.FileSelector(f"lake-cold/{tmp_path.name}", recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        key = info.path
        target = local / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with s3.open_input_stream(key) as src:
            target.write_bytes(src.read())
    assert any(local.rglob("*.parquet"))
    assert holding(local, subject) == {}
    other = next(c for c in cold_rows["customer_id"].to_pylist() if c != subject)
    assert holding(local, other)  # the scan finds what is there
    assert (
        json.loads((out / "_erasure" / f"{receipt['erasure_id']}.json").read_text())["subject"]["column"]
        == "customer_id"
    )
