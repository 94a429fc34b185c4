"""The lakehouse's Delta writes and publish-time commits on real tables in a temporary directory:
MERGE keeps the newest version of a key and changes nothing when given what it holds; gold
replaces exactly the windows given; a commit carries its transaction version, so completing it
again commits nothing; a table that cannot take a run's rows is refused before the commit point;
and bronze rows keep every record's original text."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.lakehouse import commit, tables
from transforms.sinks.bronze import RECEIVED_SCHEMA, received_rows

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def orders(rows: list[tuple]) -> pa.Table:
    """(order_id, hours after T0, amount) -> rows shaped like the curated orders, with dt."""
    ts = [T0 + timedelta(hours=h) for _, h, _ in rows]
    return pa.table(
        {
            "order_id": [k for k, _, _ in rows],
            "updated_at": pa.array(ts, TS),
            "amount": pa.array([Decimal(a) for _, _, a in rows], pa.decimal128(18, 2)),
            "is_gift": pa.array([None] * len(rows), pa.bool_()),
            "dt": pa.array([t.date() for t in ts], pa.date32()),
        }
    )


def content(table) -> list[dict]:
    return tables.read(table).sort_by("order_id").to_pylist()


@pytest.fixture
def silver(tmp_path):
    uri = str(tmp_path / "silver")
    tables.append(uri, orders([("a", 1, "1.00"), ("b", 30, "2.00"), ("c", 2, "3.00")]), ["dt"])
    return tables.open_table(uri)


def test_merge_inserts_new_keys_and_replaces_a_key_only_by_a_newer_version(silver):
    incoming = orders([("a", 50, "10.00"), ("b", 5, "20.00"), ("d", 3, "4.00")])  # a newer, b older, d new
    m = tables.merge(silver, incoming, "order_id", ("updated_at", "last"))
    assert (m["num_target_rows_inserted"], m["num_target_rows_updated"]) == (1, 1)
    silver.update_incremental()
    got = {r["order_id"]: (r["amount"], r["dt"]) for r in content(silver)}
    # a moved to its new version's day partition; b kept its newer stored version.
    assert got == {"a": (Decimal("10.00"), date(2026, 3, 3)), "b": (Decimal("2.00"), date(2026, 3, 2)),
                   "c": (Decimal("3.00"), date(2026, 3, 1)), "d": (Decimal("4.00"), date(2026, 3, 1))}  # fmt: skip


def test_keep_first_keeps_the_earliest_version(silver):
    incoming = orders([("a", 0, "9.00"), ("c", 9, "9.00")])  # a earlier, c later
    tables.merge(silver, incoming, "order_id", ("updated_at", "first"))
    silver.update_incremental()
    got = {r["order_id"]: r["amount"] for r in content(silver)}
    assert got == {"a": Decimal("9.00"), "b": Decimal("2.00"), "c": Decimal("3.00")}


def test_merging_what_the_table_holds_changes_nothing_and_commits_nothing(silver):
    before, version = content(silver), silver.version()
    same = orders([("a", 1, "1.00"), ("b", 30, "2.00"), ("c", 2, "3.00")])
    m = tables.merge(silver, same, "order_id", ("updated_at", "last"))
    assert (m["num_target_rows_inserted"], m["num_target_rows_updated"]) == (0, 0)
    silver.update_incremental()
    assert silver.version() == version and content(silver) == before
    # An equal time but another value (a corrected record) does replace the row.
    fixed = orders([("c", 2, "3.50")])
    tables.merge(silver, fixed, "order_id", ("updated_at", "last"))
    silver.update_incremental()
    assert silver.version() == version + 1 and content(silver)[2]["amount"] == Decimal("3.50")


def test_merge_adds_a_new_column(silver):
    incoming = orders([("e", 4, "5.00")]).append_column("channel", pa.array(["web"]))
    tables.merge(silver, incoming, "order_id")
    silver.update_incremental()
    assert [r["channel"] for r in content(silver)] == [None, None, None, "web"]


def aggregates(rows: list[tuple]) -> pa.Table:
    """(window hour, group, count) -> hourly aggregate rows with dt."""
    starts = [T0 + timedelta(hours=h) for h, _, _ in rows]
    return pa.table(
        {
            "window_start": pa.array(starts, TS),
            "window_end": pa.array([s + timedelta(hours=1) for s in starts], TS),
            "region": [g for _, g, _ in rows],
            "orders": pa.array([n for _, _, n in rows], pa.int64()),
            "dt": pa.array([s.date() for s in starts], pa.date32()),
        }
    )


def test_replace_windows_replaces_exactly_the_windows_given(tmp_path):
    uri = str(tmp_path / "gold")
    tables.replace_windows(uri, aggregates([(0, "n", 1), (0, "s", 2), (1, "n", 3), (30, "n", 4)]), "window_start", "dt")
    # Window 0 recomputed without group s; window 1 and the next day's window 30 not recomputed.
    tables.replace_windows(uri, aggregates([(0, "n", 10), (2, "e", 5)]), "window_start", "dt")
    got = sorted((r["window_start"].hour + 24 * (r["window_start"].day - 1), r["region"], r["orders"])
                 for r in tables.read(tables.open_table(uri)).to_pylist())  # fmt: skip
    assert got == [(0, "n", 10), (1, "n", 3), (2, "e", 5), (30, "n", 4)]


def staged(tmp_path, name: str, layer: str, rows: pa.Table, **entry) -> dict:
    root = tmp_path / "staging" / name
    root.mkdir(parents=True)
    pq.write_table(rows, root / "part-00000.parquet")
    return {"step": name, "layer": layer, "table": str(tmp_path / "lake" / name), "staged": str(root), **entry}


def test_a_commit_completed_again_commits_nothing(tmp_path):
    bronze = received_rows(pa.table({"raw": pa.array([b'{"a":1}', b'{"a":2}'], pa.binary()), "source": ["f", "f"]}),
                           T0)  # fmt: skip
    entry = staged(tmp_path, "Bronze", "bronze", bronze, partition_by=None)
    (prepared,) = commit.prepare([entry], "run-1")
    assert (prepared["rows"], prepared["txn"], prepared["files"]) == (2, 1, ["part-00000.parquet"])
    assert json.loads(json.dumps(prepared)) == prepared  # it goes into the publish journal as it is
    assert commit.complete(prepared) is True
    assert commit.complete(prepared) is False  # as the next holder of the output would, after a crash
    table = tables.open_table(entry["table"])
    assert table.count() == 2 and tables.txn_version(table) == 1
    assert table.metadata().partition_columns == ["ingest_date"]
    rows = tables.read(table).to_pylist()
    assert {(r["record"], r["ingest_date"], r["run_id"]) for r in rows} == {
        ('{"a":1}', T0.date(), "run-1"), ('{"a":2}', T0.date(), "run-1")}  # fmt: skip
    # The next run plans the next transaction version and appends.
    (again,) = commit.prepare([entry], "run-2")
    assert again["txn"] == 2 and commit.complete(again) is True
    assert tables.open_table(entry["table"]).count() == 4
    (result,) = commit.results([again])
    assert result["commit"]["added"] == 2 and result["rows"] == 4 and result["version"] == 1


def test_bronze_staged_with_the_runs_id_is_committed_as_written(tmp_path):
    raw = pa.table({"raw": pa.array([b'{"a":1}', b'{"a":2}'], pa.binary()), "source": ["f", "f"]})
    entry = staged(tmp_path, "Bronze", "bronze", received_rows(raw, T0, "run-1"), partition_by=None)
    staged_file = tmp_path / "staging" / "Bronze" / "part-00000.parquet"
    (first,) = commit.prepare([entry], "run-1")
    assert commit.complete(first) is True and commit.complete(first) is False
    table = tables.open_table(entry["table"])
    (path,) = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
    linked = tmp_path / "lake" / "Bronze" / path
    assert linked.stat().st_ino == staged_file.stat().st_ino  # the staged file itself, not a rewrite
    assert (table.count(), tables.txn_version(table), commit.results([first])[0]["commit"]["added"]) == (2, 1, 2)
    # The next run's table exists: its file is added to it; one staged without the run's id is rewritten.
    staged_file.unlink()  # each run stages new files (writing into the linked one would change the table's)
    pq.write_table(received_rows(raw, T0 + timedelta(days=1), "run-2"), staged_file)
    (second,) = commit.prepare([entry], "run-2")
    assert commit.complete(second) is True and commit.results([second])[0]["commit"]["added"] == 2
    staged_file.unlink()
    pq.write_table(received_rows(raw, T0 + timedelta(days=1)), staged_file)
    (third,) = commit.prepare([entry], "run-3")
    assert commit.complete(third) is True
    table = tables.open_table(entry["table"])
    assert table.count() == 6 and tables.txn_version(table) == 3
    rows = tables.read(table).to_pylist()
    assert sorted((r["run_id"], r["ingest_date"].isoformat(), r["record"]) for r in rows) == [
        ("run-1", "2026-03-01", '{"a":1}'), ("run-1", "2026-03-01", '{"a":2}'),
        ("run-2", "2026-03-02", '{"a":1}'), ("run-2", "2026-03-02", '{"a":2}'),
        ("run-3", "2026-03-02", '{"a":1}'), ("run-3", "2026-03-02", '{"a":2}')]  # fmt: skip
    assert tables.read(table).schema.names == ["record", "source", "ingest_time", "ingest_date", "run_id"]


def test_a_table_that_cannot_take_the_rows_is_refused_before_anything_is_committed(tmp_path):
    entry = staged(tmp_path, "Silver", "silver", orders([("a", 1, "1.00")]).drop_columns(["dt"]),
                   partition_by="updated_at", key="order_id", newer=None)  # fmt: skip
    assert commit.complete(commit.prepare([entry], "run-1")[0])
    wider = orders([("a", 1, "1.00")]).drop_columns(["dt"])
    wider = wider.set_column(2, "amount", wider["amount"].cast(pa.float64()))
    (tmp_path / "other").mkdir()
    pq.write_table(wider, tmp_path / "other" / "part-00000.parquet")
    with pytest.raises(OSError, match="holds column amount as decimal128.18, 2., this run's rows have double"):
        commit.prepare([{**entry, "staged": str(tmp_path / "other")}], "run-2")
    gold = staged(tmp_path, "Gold", "gold", aggregates([(0, "n", 1)]).drop_columns(["dt"]), partition_by="window_start")
    with pytest.raises(OSError, match="partitioned by dt, not by ingest_date: is it another layer's table"):
        commit.prepare([{**gold, "layer": "bronze", "table": entry["table"]}], "run-3")


def test_a_commit_whose_staged_rows_are_gone_fails_plainly(tmp_path):
    entry = staged(
        tmp_path, "Gold", "gold", aggregates([(0, "n", 1)]).drop_columns(["dt"]), partition_by="window_start"
    )
    (prepared,) = commit.prepare([entry], "run-1")
    (tmp_path / "staging" / "Gold" / "part-00000.parquet").unlink()
    with pytest.raises(OSError, match="the staged rows of table .* are gone"):
        commit.complete(prepared)
    assert tables.open_table(entry["table"]) is None


def test_bronze_rows_keep_each_records_original_text_and_source():
    text = pa.table({"raw": pa.array([b'{"id": 1}', b"\xff broken"], pa.binary()), "source": ["a.jsonl", "a.jsonl"]})
    rows = received_rows(text, T0)
    assert rows.schema == RECEIVED_SCHEMA
    assert rows.column("record").to_pylist() == ['{"id": 1}', "\\xff broken"]  # undecodable bytes escaped
    assert set(rows.column("ingest_time").to_pylist()) == {T0}
    typed = pa.table({"id": [1, 2], "name": ["x", None], "_source": ["t.parquet", "t.parquet"]})
    rows = received_rows(typed, T0)
    assert rows.column("record").to_pylist() == ['{"id":1,"name":"x"}', '{"id":2,"name":null}']
    assert rows.column("source").to_pylist() == ["t.parquet", "t.parquet"]


def test_predicate_literals_are_quoted_and_names_checked():
    assert tables.sql_string("x' OR '1'='1") == "'x'' OR ''1''=''1'"
    assert tables.quote("order_id") == '"order_id"'
    with pytest.raises(ValueError):
        tables.quote('a" OR 1=1 --')
    with pytest.raises(ValueError):
        tables.sql_timestamp(datetime(2026, 1, 1))  # naive
    assert tables.sql_timestamp(T0) == "'2026-03-01T00:00:00.000000+00:00'"
