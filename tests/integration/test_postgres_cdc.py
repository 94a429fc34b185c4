"""PostgreSQL change data capture against a real server (``scripts/postgres.sh``, wal_level = logical):
pgoutput decoding, the slot source and the mirror sink on the DirectRunner."""

from __future__ import annotations

import json
import uuid

import apache_beam as beam
import psycopg
import pyarrow as pa
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from transforms import change_progress
from transforms.ingest.pgoutput import ChangeDecoder, parse_lsn
from transforms.ingest.postgres_cdc import CdcSourceError, ReadPostgresChanges, prepare_slot
from transforms.sinks.postgres_mirror import MirrorPostgres

SCHEMA = pa.schema([("id", pa.int64()), ("email", pa.string()), ("amount", pa.float64())])


@pytest.fixture()
def source(pg_dsn):
    """A fresh table ``t_<hex>`` with a slot and publication of the same name; dropped after."""
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, email text, amount float8)")
        prepare_slot(conn, "public", name, name, name)
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        conn.execute(f"DROP PUBLICATION IF EXISTS {name}")
        conn.execute(f"DROP TABLE IF EXISTS {name}, {name}_mirror")


def _sql(dsn: str, *statements: str) -> None:
    # Commits whose WAL is written before they return: the test server runs synchronous_commit = off,
    # and decoding sees only written WAL.
    with psycopg.connect(dsn, autocommit=True, options="-c synchronous_commit=on") as conn:
        for s in statements:
            conn.execute(s)


def _peek(dsn: str, slot: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
            "'publication_names', %s)",
            (slot, slot),
        ).fetchall()


def _rows(dsn: str, table: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT id, email, amount FROM {table} ORDER BY id").fetchall()  # noqa: S608


def test_changes_come_in_commit_order_with_their_types_and_the_key_image_of_deletes(pg_dsn, source):
    _sql(
        pg_dsn,
        f"INSERT INTO {source} VALUES (1, 'a@x.org', 1.5), (2, 'b@x.org', NULL)",
        f"UPDATE {source} SET amount = 7 WHERE id = 1",
        f"DELETE FROM {source} WHERE id = 2",
    )
    got = ChangeDecoder().decode(_peek(pg_dsn, source))
    assert got.transactions == 3 and not got.problems
    (t,) = got.changes
    rows = t.to_pylist()
    assert [(r["_op"], r["id"], r["email"], r["amount"]) for r in rows] == [
        ("insert", 1, "a@x.org", 1.5),
        ("insert", 2, "b@x.org", None),
        ("update", 1, "a@x.org", 7.0),
        ("delete", 2, None, None),
    ]
    assert t.schema.field("id").type == pa.int64() and t.schema.field("amount").type == pa.float64()
    assert [r["_seq"] for r in rows] == [0, 1, 0, 0]  # place in the transaction
    lsns = [r["_lsn"] for r in rows]
    assert lsns[0] == lsns[1] < lsns[2] < lsns[3] == got.last_lsn
    assert json.loads(rows[3]["_before"]) == {"id": "2"}  # the default replica identity: the key
    assert rows[0]["_before"] is None


def test_transactions_handed_on_are_not_decoded_again(pg_dsn, source):
    _sql(pg_dsn, f"INSERT INTO {source} VALUES (1, 'a', 1)", f"INSERT INTO {source} VALUES (2, 'b', 2)")
    messages = _peek(pg_dsn, source)
    first = ChangeDecoder().decode(messages)
    lsn_of_first = first.changes[0].column("_lsn")[0].as_py()
    again = ChangeDecoder(after=lsn_of_first).decode(messages)
    assert again.changes[0].column("id").to_pylist() == [2]
    assert ChangeDecoder(after=first.last_lsn).decode(messages).transactions == 0


def test_a_column_added_to_the_table_appears_from_its_change_on(pg_dsn, source):
    _sql(
        pg_dsn,
        f"INSERT INTO {source} VALUES (1, 'a', 1)",
        f"ALTER TABLE {source} ADD COLUMN tier text",
        f"INSERT INTO {source} VALUES (2, 'b', 2, 'gold')",
    )
    got = ChangeDecoder().decode(_peek(pg_dsn, source))
    before, after = got.changes
    assert before.column_names[:3] == ["id", "email", "amount"] and "tier" not in before.column_names
    assert after.column("tier").to_pylist() == ["gold"]


def test_truncate_and_unsent_toast_values_are_problems_not_failures(pg_dsn, source):
    # Incompressible text is stored out of line (TOAST): an update of another column does not send it.
    big = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 4000))"
    _sql(
        pg_dsn,
        f"INSERT INTO {source} VALUES (1, {big}, 1)",
        f"UPDATE {source} SET amount = 2 WHERE id = 1",
        f"TRUNCATE {source}",
        f"INSERT INTO {source} VALUES (3, 'c', 3)",
    )
    got = ChangeDecoder().decode(_peek(pg_dsn, source))
    assert [p[3].split(":")[0] for p in got.problems] == [
        "update of " + source + " left email unchanged and unsent (TOAST)",
        "TRUNCATE is not mirrored",
    ]
    assert [r["id"] for t in got.changes for r in t.to_pylist()] == [1, 3]  # the rest still comes
    # With the full old image the unsent value is filled from it.
    _sql(pg_dsn, f"ALTER TABLE {source} REPLICA IDENTITY FULL", f"INSERT INTO {source} VALUES (4, {big}, 1)",
         f"UPDATE {source} SET amount = 5 WHERE id = 4")  # fmt: skip
    later = ChangeDecoder(after=got.last_lsn).decode(_peek(pg_dsn, source))
    update = [r for t in later.changes for r in t.to_pylist() if r["_op"] == "update"]
    (stored,) = [r[1] for r in _rows(pg_dsn, source) if r[0] == 4]
    assert not later.problems and len(stored) == 128_000
    assert update[0]["email"] == stored and update[0]["amount"] == 5.0


def test_a_server_without_logical_decoding_or_a_missing_table_is_one_line(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(CdcSourceError, match="table public.no_such_table does not exist"):
            prepare_slot(conn, "public", "no_such_table", "s_missing", "s_missing")


def _mirror(pg_dsn: str, source: str, *, bounded=True) -> None:
    consumer = f"{source}/{source}_mirror"
    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = p | "Read" >> ReadPostgresChanges(
            source, source, consumers=[(pg_dsn, consumer)], dsn=pg_dsn, stop_at_end=bounded
        )
        out["records"] | "Mirror" >> MirrorPostgres(pg_dsn, f"{source}_mirror", ("id",), SCHEMA, consumer)


def _slot_lsn(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn) as conn:
        return parse_lsn(
            conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()[0]  # fmt: skip
        )


def test_the_mirror_ends_equal_to_the_table_and_the_slot_is_confirmed_to_what_it_applied(pg_dsn, source):
    _sql(
        pg_dsn,
        f"INSERT INTO {source} SELECT g, 'u' || g || '@x.org', g * 1.5 FROM generate_series(1, 3000) g",
        f"UPDATE {source} SET amount = -1 WHERE id % 10 = 0",
        f"DELETE FROM {source} WHERE id % 7 = 0",
        f"INSERT INTO {source} VALUES (7, 'back@x.org', 0)",  # deleted, then inserted again
    )
    _mirror(pg_dsn, source)
    assert _rows(pg_dsn, f"{source}_mirror") == _rows(pg_dsn, source)
    with psycopg.connect(pg_dsn) as conn:
        (applied,) = conn.execute(change_progress.read_sql(), (f"{source}/{source}_mirror",)).fetchone()
    assert _slot_lsn(pg_dsn, source) == applied  # confirmed exactly as far as the mirror applied
    # More changes later: the next run goes on from the slot, and nothing before comes again.
    _sql(pg_dsn, f"DELETE FROM {source} WHERE id < 100", f"UPDATE {source} SET email = 'z' WHERE id = 500")
    _mirror(pg_dsn, source)
    assert _rows(pg_dsn, f"{source}_mirror") == _rows(pg_dsn, source)


def _changes(rows: list[tuple]) -> pa.Table:
    ids, emails, amounts, ops, lsns, seqs = zip(*rows)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "email": pa.array(emails, pa.string()),
            "amount": pa.array(amounts, pa.float64()),
            "_op": list(ops),
            "_lsn": pa.array(lsns, pa.int64()),
            "_seq": pa.array(seqs, pa.int32()),
        }  # fmt: skip
    )


def test_the_mirror_skips_changes_it_already_applied_so_a_redelivery_changes_nothing(pg_dsn):
    table = "m_" + uuid.uuid4().hex[:10]
    first = _changes(
        [(1, "a", 1.0, "insert", 100, 0), (2, "b", 2.0, "insert", 100, 1), (1, "a", 3.0, "update", 200, 0)]
    )
    second = _changes([(2, None, None, "delete", 300, 0), (3, "c", 3.0, "insert", 300, 1)])
    consumer = f"test/{table}"
    with beam.Pipeline(runner=FnApiRunner()) as p:
        (
            p
            | beam.Create([first, second, first, second], reshuffle=False)  # delivered twice, in order
            | MirrorPostgres(pg_dsn, table, ("id",), SCHEMA, consumer)
        )
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT id, email, amount, _lsn FROM {table} ORDER BY id").fetchall()  # noqa: S608
        (progress,) = conn.execute(change_progress.read_sql(), (consumer,)).fetchone()
    # The delete of 2 stayed a delete (the first batch's insert of 2 did not bring it back), and
    # 1 kept its update rather than its older insert.
    assert rows == [(1, "a", 3.0, 200), (3, "c", 3.0, 300)]
    assert progress == 300


def test_mirror_config_is_checked_when_the_pipeline_is_built(pg_dsn):
    with pytest.raises(ValueError, match="key 'nope' is not a column"):
        MirrorPostgres(pg_dsn, "t", ("nope",), SCHEMA, "c")
    with pytest.raises(ValueError, match="table"):
        MirrorPostgres(pg_dsn, "bad name; drop", ("id",), SCHEMA, "c")
    with pytest.raises(ValueError, match="slot must be a plain SQL name"):
        ReadPostgresChanges("t", "slot'; drop", dsn=pg_dsn)


def _delta_rows(uri: str) -> list[tuple]:
    from deltalake import DeltaTable, QueryBuilder

    got = (
        QueryBuilder().register("t", DeltaTable(uri)).execute("SELECT id, email, amount FROM t ORDER BY id").read_all()
    )
    return [tuple(r.values()) for r in pa.table(got).to_pylist()]


def test_the_delta_mirror_ends_equal_to_the_table_and_records_its_progress_in_its_commits(pg_dsn, source, tmp_path):
    from deltalake import DeltaTable

    from transforms.sinks.lake_mirror import MirrorDelta

    uri = str(tmp_path / "mirror")
    consumer = f"{source}/mirror"
    _sql(
        pg_dsn,
        f"INSERT INTO {source} SELECT g, 'u' || g || '@x.org', g * 1.5 FROM generate_series(1, 2000) g",
        f"UPDATE {source} SET amount = -1 WHERE id % 10 = 0",
        f"DELETE FROM {source} WHERE id % 7 = 0",
    )
    for more in (None, f"DELETE FROM {source} WHERE id < 100"):  # a second run goes on from the slot
        if more:
            _sql(pg_dsn, more, f"INSERT INTO {source} VALUES (7, 'back@x.org', 0)")
        with beam.Pipeline(runner=FnApiRunner()) as p:
            out = p | "Read" >> ReadPostgresChanges(
                source, source, consumers=[("delta", uri, consumer)], dsn=pg_dsn, stop_at_end=True
            )
            out["records"] | "Mirror" >> MirrorDelta(uri, ("id",), ("id", "email", "amount"), consumer)
        assert _delta_rows(uri) == [tuple(r) for r in _rows(pg_dsn, source)]
        assert _slot_lsn(pg_dsn, source) == DeltaTable(uri).transaction_version(consumer)


def test_the_delta_mirror_skips_changes_it_already_applied(tmp_path):
    from transforms.sinks.lake_mirror import MirrorDelta

    uri = str(tmp_path / "mirror")
    first = _changes(
        [(1, "a", 1.0, "insert", 100, 0), (2, "b", 2.0, "insert", 100, 1), (1, "a", 3.0, "update", 200, 0)]
    )
    second = _changes([(2, None, None, "delete", 300, 0), (3, "c", 3.0, "insert", 300, 1)])
    with beam.Pipeline(runner=FnApiRunner()) as p:
        (
            p
            | beam.Create([first, second, first, second], reshuffle=False)
            | MirrorDelta(uri, ("id",), ("id", "email", "amount"), "test/mirror")
        )
    assert _delta_rows(uri) == [(1, "a", 3.0), (3, "c", 3.0)]
