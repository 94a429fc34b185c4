"""The online store against a real PostgreSQL (scripts/postgres.sh; fails if it cannot start):
UpsertPostgres keeps the highest version of each entity's row whatever order the rows come in;
OnlineStore, lookup() and the lookup CLI read them back."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import apache_beam as beam
import psycopg
import pyarrow as pa
import pytest

from beam_pipelines.features.__main__ import main
from beam_pipelines.features.online import OnlineStore, OnlineStoreError, lookup
from transforms.sinks.postgres import UpsertPostgres

T = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("events_1h", pa.int64()),
        ("revenue", pa.decimal128(38, 2)),
        ("last_action", pa.string()),
        ("_version", pa.int64()),
    ]
)


def rows(*values) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(SCHEMA.names, v)) for v in values], SCHEMA)


def write(pipeline, dsn: str, table: str, tables: list[pa.Table]) -> None:
    p = pipeline()
    p | beam.Create(tables) | UpsertPostgres(dsn, table, ("user_id",), SCHEMA, version="_version")
    p.run().wait_until_finish()


def test_the_highest_version_of_each_entity_stays_and_is_read_back(pipeline, pg_dsn, capsys):
    newer = rows(("a", T, 3, Decimal("12.50"), "buy", 7), ("b", T, 1, Decimal("0.00"), "view", 7))
    older = rows(("a", T, 2, Decimal("2.50"), "view", 5), ("c", T, 9, None, None, 6))
    write(pipeline, pg_dsn, "online_test", [newer])
    write(pipeline, pg_dsn, "online_test", [older])  # arrives after the newer rows: a's stays
    write(pipeline, pg_dsn, "online_test", [rows(("b", T, 4, Decimal("1.25"), "cart", 7))])  # same version: replaces
    want_a = {"user_id": "a", "ts": T, "events_1h": 3, "revenue": Decimal("12.50"), "last_action": "buy"}
    with OnlineStore(pg_dsn, "online_test") as store:
        assert store.entity == "user_id"
        assert store.columns == ("user_id", "ts", "events_1h", "revenue", "last_action")
        assert store.get("a") == want_a
        assert store.get("zz") is None
        assert store.get_many(["b", "c", "zz"]) == {
            "b": {"user_id": "b", "ts": T, "events_1h": 4, "revenue": Decimal("1.25"), "last_action": "cart"},
            "c": {"user_id": "c", "ts": T, "events_1h": 9, "revenue": None, "last_action": None},
        }
    assert lookup(pg_dsn, "online_test", ["a"]) == {"a": want_a}
    assert main(["lookup", f"--dsn={pg_dsn}", "--table=online_test", "--entity=zz", "--entity=a"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out == [
        {"user_id": "zz", "found": False},
        {"user_id": "a", "found": True, "ts": "2024-03-01T12:00:00+00:00", "events_1h": 3, "revenue": "12.50",
         "last_action": "buy"},
    ]  # fmt: skip


def test_integer_entities_and_tables_that_are_not_online_tables(pg_dsn, capsys):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS online_int (card bigint PRIMARY KEY, n bigint, _version bigint)")
        conn.execute("INSERT INTO online_int VALUES (42, 7, 1) ON CONFLICT DO NOTHING")
        conn.execute("CREATE TABLE IF NOT EXISTS no_key (card bigint, n bigint)")
    assert main(["lookup", f"--dsn={pg_dsn}", "--table=online_int", "--entity=42"]) == 0
    assert json.loads(capsys.readouterr().out) == {"card": 42, "found": True, "n": 7}
    assert main(["lookup", f"--dsn={pg_dsn}", "--table=online_int", "--entity=x"]) == 2
    assert "card is an integer column" in capsys.readouterr().err
    with pytest.raises(OnlineStoreError, match="no table 'missing'"):
        OnlineStore(pg_dsn, "missing")
    with pytest.raises(OnlineStoreError, match="not an online feature table"):
        OnlineStore(pg_dsn, "no_key")
    assert main(["lookup", "--dsn=postgresql://bp@127.0.0.1:1/bp", "--table=t", "--entity=1"]) == 1
    assert capsys.readouterr().err.startswith("error: cannot reach PostgreSQL: ")


def test_version_is_checked_at_build():
    with pytest.raises(ValueError, match="version must be an integer column"):
        UpsertPostgres("postgresql://x", "t", ("user_id",), SCHEMA, version="last_action")
    with pytest.raises(ValueError, match="cannot be a key column"):
        UpsertPostgres("postgresql://x", "t", ("user_id", "_version"), SCHEMA, version="_version")
