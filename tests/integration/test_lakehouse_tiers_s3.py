"""Hot and cold tiers in two buckets of a real S3 server (moto, started through scripts/s3.sh by
the benchmarks' S3Server; the test fails if it cannot start): maintenance moves the old
partitions from the hot bucket's table to the cold bucket's, at zstd 19; a query over both tiers
(the project's reader and Polars) returns every row; a second run moves nothing; a maintenance
cut off between its two commits is completed by the next one without a row copied twice."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import polars as pl
import pyarrow as pa
import pytest

from beam_pipelines.lakehouse import maintain, tables, tiers
from benchmarks.lake_tables import s3_store
from benchmarks.table_formats import S3Server
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
