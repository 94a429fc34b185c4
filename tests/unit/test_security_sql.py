"""SQL injection, swept over every path that builds SQL without a PostgreSQL server: hostile
identifiers are refused when the step or sink is built, with a message naming what was wrong;
hostile values are data (bind parameters, quoted literals checked on real Delta tables and DuckDB,
the BigQuery stand-in's query text and parameters). The PostgreSQL paths against a real server are
in ``tests/integration/test_security_sql.py``; README: Security."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from beam_pipelines import erase
from beam_pipelines.errors import UsageError
from beam_pipelines.lakehouse import erasure, tables, tiers
from beam_pipelines.observability.history import MetricsHistory
from transforms.ingest import pg_sql
from transforms.ingest.postgres import ReadPostgres
from transforms.ingest.postgres_cdc import ReadPostgresChanges
from transforms.sinks import bigquery_schema
from transforms.sinks.postgres import UpsertPostgres
from transforms.sinks.postgres_mirror import MirrorPostgres
from transforms.sinks.row_security import RowSecurity

# Names no SQL path may take: each would close a quote, end a statement, comment out the rest, or
# name a different object than the one checked (the trailing newline passed a ``^...$`` check).
HOSTILE_NAMES = [
    'orders"; DROP TABLE orders; --',
    "orders'; DROP TABLE orders; --",
    "orders; DROP TABLE orders",
    "orders--",
    "orders\n",
    "orders\nDROP TABLE orders",
    "orders\x00",
    "ördérs",
    "orders` x",
    "orders\\",
    "or ders",
    "",
    "a" * 64,
]
# Values that are only data: SQL metacharacters, a backslash before a quote (MySQL-style escaping
# does not apply here), placeholders, regex metacharacters, unicode.
HOSTILE_VALUES = [
    "' OR 1=1 --",
    "x'; DROP TABLE t; --",
    "\\' OR 1=1 --",
    "back\\slash\\",
    "%s %(x)s $1 @p ?",
    ".*(a|b)+[^x]",
    "ünïcødé € 😀",
    '"quoted" `ticks`',
]
SCHEMA = pa.schema([("id", pa.int64()), ("email", pa.string())])


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_postgres_source_cdc_and_sinks_refuse_a_hostile_name_when_built(name):
    with pytest.raises(ValueError, match="plain SQL name"):
        pg_sql.check_identifier(name, "table")
    with pytest.raises(ValueError, match="table must be a plain SQL name"):
        ReadPostgres(name, "id", dsn_env="X")
    with pytest.raises(ValueError, match="key must be a plain SQL name"):
        ReadPostgres("orders", name, dsn_env="X")
    with pytest.raises(ValueError, match="column must be a plain SQL name"):
        ReadPostgres("orders", "id", columns=("id", name), dsn_env="X")
    with pytest.raises(ValueError, match="cursor must be a plain SQL name"):
        ReadPostgres("orders", "id", cursor=name, dsn_env="X")
    with pytest.raises(ValueError, match="schema must be a plain SQL name"):
        ReadPostgres("orders", "id", schema=name, dsn_env="X")
    for kw, what in ((dict(table=name, slot="s"), "table"), (dict(table="t", slot=name), "slot"),
                     *([(dict(table="t", slot="s", publication=name), "publication")] if name else [])):  # fmt: skip
        with pytest.raises(ValueError, match=f"{what} must be a plain SQL name"):
            ReadPostgresChanges(dsn="postgresql://x", **kw)
    with pytest.raises(ValueError, match="table"):
        UpsertPostgres("postgresql://x", name, ("id",), SCHEMA)
    with pytest.raises(ValueError, match="table"):
        MirrorPostgres("postgresql://x", name, ("id",), SCHEMA, "c")
    if name:
        bad_column = pa.schema([("id", pa.int64()), (name, pa.string())])
        with pytest.raises(ValueError, match="column"):
            UpsertPostgres("postgresql://x", "t", ("id",), bad_column)
        with pytest.raises(ValueError, match="column"):
            MirrorPostgres("postgresql://x", "t", ("id",), bad_column, "c")
    with pytest.raises(ValueError, match="role"):
        RowSecurity(column="tenant", roles={"acme": name})


def test_a_hostile_dsn_env_name_is_refused():
    with pytest.raises(ValueError, match="dsn_env"):
        ReadPostgres("orders", "id", dsn_env="PG_DSN\n")


@pytest.mark.parametrize("name", [*HOSTILE_NAMES[:-1], "a" * 1025])
def test_lakehouse_and_bigquery_names_are_refused(name):
    if len(name) < 1000:  # a Delta column name has no length limit
        with pytest.raises(ValueError, match="not a plain column name"):
            tables.quote(name)
    with pytest.raises(ValueError, match="column"):
        bigquery_schema.check_column(name)
    with pytest.raises(ValueError, match="table"):
        bigquery_schema.TableName("proj-1", "sales", name)
    with pytest.raises(ValueError, match="dataset"):
        bigquery_schema.TableName("proj-1", name, "orders")
    with pytest.raises(ValueError, match="column"):
        bigquery_schema.merge_statement(bigquery_schema.TableName("proj-1", "sales", "orders"),
                                        bigquery_schema.TableName("proj-1", "sales", "s"), ["id", name], ["id"])  # fmt: skip


@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES[:-1] if "=" not in n])
def test_erase_refuses_a_hostile_subject_column(name):
    with pytest.raises(UsageError, match="--subject"):
        erase._subject(f"{name}=c-000123")


def test_values_in_the_source_queries_are_bind_parameters():
    lo = datetime(2024, 3, 1, tzinfo=timezone.utc)
    window = pg_sql.Window((lo, 7), (lo + timedelta(hours=1), 9))
    query, params = pg_sql.read_query("public", "orders", "id", ("id", "email"), "updated_at", window, 10, 20)
    assert query == ('SELECT "id", "email" FROM "public"."orders" WHERE "id" >= $1 AND "id" < $2 AND '
                     '("updated_at", "id") > ($3, $4) AND ("updated_at", "id") <= ($5, $6)')  # fmt: skip
    assert params == [10, 20, lo, 7, lo + timedelta(hours=1), 9]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_a_delta_predicate_takes_a_hostile_value_as_data(tmp_path, value):
    uri = str(tmp_path / "silver")
    emails = [value, "other@example.com", value + "x", "' OR 1=1 --x"]
    data = pa.table({"id": pa.array(range(len(emails)), pa.int64()), "email": emails})
    from deltalake import write_deltalake

    write_deltalake(uri, data)
    done = erasure.delete(uri, erasure.subject_predicate("email", value), "erase-test")
    assert done["rows_deleted"] == 1
    left = tables.read(tables.open_table(uri)).sort_by("id")
    assert left.column("email").to_pylist() == emails[1:]


@pytest.mark.parametrize("value", ["' OR 1=1 --", "a.b*c", "ünï€", "x'y\\z", "(a|b)"])
def test_the_raw_record_predicate_matches_the_value_as_a_whole_word_only(tmp_path, value):
    uri = str(tmp_path / "bronze")
    records = [f'{{"id": "{value}"}}', '{"id": "other"}', f'{{"id": "{value}z"}}', '{"id": "ab*c"}']
    from deltalake import write_deltalake

    write_deltalake(uri, pa.table({"record": records}))
    done = erasure.delete(uri, erasure.raw_predicate([value]), "erase-test")
    assert done["rows_deleted"] == 1
    assert sorted(tables.read(tables.open_table(uri)).column("record").to_pylist()) == sorted(records[1:])


@pytest.mark.parametrize("value", ["nul\x00byte", "new\nline", "tab\tbed"])
def test_control_characters_in_a_predicate_value_are_refused(value):
    with pytest.raises(ValueError, match="control characters"):
        erasure.subject_predicate("email", value)
    with pytest.raises(UsageError, match="--subject: control characters"):
        erase._subject(f"email={value}")


def test_duckdb_tier_queries_take_hostile_values_as_data(tmp_path):
    hot = pa.table({"dt": ["2024-03-01"] * 3, "email": HOSTILE_VALUES[:3]})
    held = pa.table({"dt": ["2024-03-01"], "email": [HOSTILE_VALUES[1]]})
    left = tiers._not_held(hot, held)
    assert sorted(left.column("email").to_pylist()) == sorted([HOSTILE_VALUES[0], HOSTILE_VALUES[2]])
    with pytest.raises(ValueError, match="not a plain column name"):
        tiers._not_held(pa.table({'x"; DROP TABLE hot_rows; --': [1]}), pa.table({"y": [1]}))
    with pytest.raises(ValueError, match="control characters"):
        tiers._in("dt", ["2024-03-01'\x00"])


def test_the_bigquery_merge_text_holds_only_checked_quoted_names():
    target = bigquery_schema.TableName("proj-1", "sales", "orders")
    text = bigquery_schema.merge_statement(target, target.staging("0" * 32), ["id", "email"], ["id"])
    assert "`proj-1`.`sales`.`orders`" in text and "@" not in text and "'" not in text


def test_a_bigquery_merge_of_hostile_values_loads_them_and_keeps_them_out_of_the_query(pipeline):
    import apache_beam as beam

    from tests.bigquery_api import FakeBigQuery
    from transforms.sinks.bigquery import WriteBigQuery

    t0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
    rows = pa.table({"order_id": pa.array(HOSTILE_VALUES), "status": pa.array(list(reversed(HOSTILE_VALUES))),
                     "updated_at": pa.array([t0 + timedelta(hours=i) for i in range(len(HOSTILE_VALUES))],
                                            pa.timestamp("us", tz="UTC"))})  # fmt: skip
    with FakeBigQuery() as api:
        write = WriteBigQuery("proj-1", "sales", "orders", rows.schema, mode="merge", keys=("order_id", "updated_at"),
                              partition_by="updated_at", endpoint=api.url, first_wait_s=0.02)  # fmt: skip
        with pipeline() as p:
            _ = p | beam.Create([rows]) | write
        (query,) = api.queries
        for v in HOSTILE_VALUES:
            assert v not in query["query"]
        assert [p["parameterType"]["type"] for p in query["parameters"]] == ["TIMESTAMP", "TIMESTAMP"]
        got = {r["order_id"]: r["status"] for r in api.rows("proj-1.sales.orders").to_pylist()}
        assert got == dict(zip(HOSTILE_VALUES, reversed(HOSTILE_VALUES)))


@pytest.mark.parametrize("value", [*HOSTILE_VALUES, "nul\x00in a name"])
def test_the_sqlite_history_stores_hostile_names_as_data(tmp_path, value):
    path = tmp_path / "history.sqlite"
    at = datetime(2024, 3, 1, tzinfo=timezone.utc)
    with MetricsHistory.open(str(path)) as h:
        h.record(value, value, at, {value: 1.0, "rows": 2.0})
        h.record("other", "r1", at, {"rows": 3.0})
        (run,) = h.last_runs(value, 5)
        assert run["run_id"] == value and run["metrics"] == {value: 1.0, "rows": 2.0}
        assert h.last_runs("other", 5, before_run_id=value)[0]["metrics"] == {"rows": 3.0}
        assert h.last_runs("' OR 1=1 --", 5) == [] or value == "' OR 1=1 --"


def test_erasure_scrubs_sqlite_tables_whose_names_hold_quotes(tmp_path):
    path = tmp_path / "odd.sqlite"
    con = sqlite3.connect(path)
    con.execute('CREATE TABLE "t"" x; --" ("c""1" TEXT)')
    con.execute('INSERT INTO "t"" x; --" VALUES (?)', ("mail jo@example.com here",))
    con.commit()
    con.close()
    assert erase._scrub_sqlite(str(path), ["jo@example.com"], dry_run=False) == 1
    con = sqlite3.connect(path)
    assert con.execute('SELECT "c""1" FROM "t"" x; --"').fetchall() == [(f"mail {erase.ERASED} here",)]
    con.close()
