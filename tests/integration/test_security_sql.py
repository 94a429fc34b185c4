"""SQL injection against a real PostgreSQL server (scripts/postgres.sh; fails if it cannot start):
hostile values written and read by every PostgreSQL path come back byte for byte, a decoy table
beside them survives, and hostile names reaching the server are refused or looked up as values.
Row-level security's hostile tenant value is in test_postgres_row_security.py. README: Security."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import apache_beam as beam
import psycopg
import pyarrow as pa
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that
from psycopg import sql

from beam_pipelines.features.online import OnlineStore, OnlineStoreError
from beam_pipelines.observability.history import MetricsHistory
from tests.unit.test_security_sql import HOSTILE_VALUES
from transforms.ingest.postgres import ReadPostgres
from transforms.ingest.postgres_cdc import prepare_slot
from transforms.records import concat_records
from transforms.sinks.postgres import UpsertPostgres
from transforms.sinks.postgres_mirror import MirrorPostgres

# Besides HOSTILE_VALUES: what CSV (the mirror's COPY) treats specially: a field that is the
# end-of-data marker, separators, quotes and line breaks, an empty string (not NULL).
COPY_VALUES = ["\\.", "a,b", 'say "hi"', "two\nlines", "cr\r\n", ""]
VALUES = [*HOSTILE_VALUES, *COPY_VALUES]
SCHEMA = pa.schema([("id", pa.int64()), ("note", pa.string())])


@pytest.fixture
def decoy(pg_dsn):
    """A table named ``t`` the hostile values name (``DROP TABLE t``): it must still be there after."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
        conn.execute("CREATE TABLE IF NOT EXISTS orders (x int)")
    yield
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('t'), to_regclass('orders')").fetchone() == ("t", "orders")


def notes(dsn: str, table: str, key: str = "id") -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT {}, note FROM {} ORDER BY 1").format(sql.Identifier(key), sql.Identifier(table))
        return conn.execute(query).fetchall()


def test_the_upsert_sink_writes_hostile_values_as_they_are(pipeline, pg_dsn, decoy):
    table = "sec_up_" + uuid.uuid4().hex[:8]
    rows = pa.table({"id": pa.array(range(len(VALUES)), pa.int64()), "note": VALUES})
    p = pipeline()
    p | beam.Create([rows]) | UpsertPostgres(pg_dsn, table, ("id",), SCHEMA)
    p.run().wait_until_finish()
    assert notes(pg_dsn, table) == list(enumerate(VALUES))


def test_a_nul_byte_in_a_value_fails_the_write_with_a_clear_error(pipeline, pg_dsn):
    # PostgreSQL text cannot hold NUL: the value is refused, not cut at the NUL.
    table = "sec_nul_" + uuid.uuid4().hex[:8]
    p = pipeline()
    (
        p
        | beam.Create([pa.table({"id": [1], "note": ["a\x00' OR 1=1 --"]})])
        | UpsertPostgres(pg_dsn, table, ("id",), SCHEMA)
    )
    with pytest.raises(Exception, match="NUL"):
        p.run().wait_until_finish()


def test_the_source_reads_hostile_values_as_data(pipeline, pg_dsn, decoy, monkeypatch):
    table = "sec_src_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, note text NOT NULL)").format(sql.Identifier(table))
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table)), list(enumerate(VALUES))
            )
    monkeypatch.setenv("PG_SEC_DSN", pg_dsn)

    def check(tables):
        t = concat_records(list(tables))
        assert sorted(zip(t.column("id").to_pylist(), t.column("note").to_pylist())) == list(enumerate(VALUES))

    p = pipeline()
    assert_that(p | ReadPostgres(table, "id", columns=("id", "note"), ranges=3, dsn_env="PG_SEC_DSN"), check)
    p.run().wait_until_finish()


def _changes(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows))
    return pa.table({"code": pa.array(cols[0], pa.string()), "note": pa.array(cols[1], pa.string()),
                     "_op": pa.array(cols[2], pa.string()), "_lsn": pa.array(cols[3], pa.int64()),
                     "_seq": pa.array(range(len(rows)), pa.int64())})  # fmt: skip


def test_the_mirror_applies_hostile_values_and_keys_through_copy(pg_dsn, decoy):
    # Keyed by text, so hostile values are keys too: a delete batch of one text key per CSV line is
    # where an unquoted \. would end the COPY early.
    table = "sec_mir_" + uuid.uuid4().hex[:8]
    schema = pa.schema([("code", pa.string()), ("note", pa.string())])
    inserts = _changes([(v, v, "insert", 100, 0) for v in VALUES])
    deletes = _changes([(v, None, "delete", 200, 0) for v in VALUES[::2]])
    with beam.Pipeline(runner=FnApiRunner()) as p:
        (p | beam.Create([inserts, deletes], reshuffle=False)
         | MirrorPostgres(pg_dsn, table, ("code",), schema, f"sec/{table}"))  # fmt: skip
    kept = VALUES[1::2]
    assert notes(pg_dsn, table, key="code") == sorted((v, v) for v in kept)


def test_the_online_store_looks_up_hostile_tables_and_entities_as_values(pipeline, pg_dsn, decoy):
    table = "sec_online_" + uuid.uuid4().hex[:8]
    schema = pa.schema([("user_id", pa.string()), ("note", pa.string()), ("_version", pa.int64())])
    rows = pa.table({"user_id": VALUES, "note": VALUES, "_version": [1] * len(VALUES)}, schema=schema)
    p = pipeline()
    p | beam.Create([rows]) | UpsertPostgres(pg_dsn, table, ("user_id",), schema, version="_version")
    p.run().wait_until_finish()
    for hostile in ('t"; DROP TABLE t; --', "t; DROP TABLE t", "orders' OR 1=1 --"):
        with pytest.raises(OnlineStoreError) as e:
            OnlineStore(pg_dsn, hostile)
        assert len(str(e.value).splitlines()) == 1
    store = OnlineStore(pg_dsn, table)
    try:
        for v in VALUES:
            assert store.get(v)["note"] == v
        assert store.get("' OR '1'='1") is None
        assert {k: r["note"] for k, r in store.get_many(VALUES).items()} == {v: v for v in VALUES}
    finally:
        store.close()


def test_the_postgresql_history_stores_hostile_names_as_data(pg_dsn, decoy):
    at = datetime(2024, 3, 1, tzinfo=timezone.utc)
    tag = uuid.uuid4().hex[:8]
    named = [v for v in VALUES if v]  # a run id is required
    with MetricsHistory.open(pg_dsn) as h:
        for i, v in enumerate(named):
            h.record(f"{tag}{v}", v, at, {v: float(i)})
        for i, v in enumerate(named):
            (run,) = h.last_runs(f"{tag}{v}", 3)
            assert run["run_id"] == v and run["metrics"] == {v: float(i)}
        assert h.last_runs(f"{tag}' OR 1=1 --' OR '1'='1", 3) == []


def test_a_hostile_slot_or_publication_name_never_reaches_the_server(pg_dsn, decoy):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for args in (("public", "t", 't"; DROP TABLE t; --', "pub_ok"), ("public", "t", "slot_ok", "p; DROP TABLE t"),
                     ("public", 't"; DROP TABLE t; --', "slot_ok", "pub_ok")):  # fmt: skip
            with pytest.raises((ValueError, psycopg.Error)):
                prepare_slot(conn, *args)
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'slot_ok'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_publication WHERE pubname = 'pub_ok'").fetchone() == (0,)
