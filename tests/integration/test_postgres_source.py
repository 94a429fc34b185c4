"""ReadPostgres against a real PostgreSQL server (scripts/postgres.sh; fails if it cannot start):
full and incremental loads, the cursor state across published and failed runs, range splits,
and the launcher's handling of an unreachable database and of the password."""

from __future__ import annotations

import io
import json
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that

from beam_pipelines.errors import RunError
from beam_pipelines.main import run
from tests.e2e.helpers import ROOT, run_module
from tests.services import free_port
from transforms.ingest.postgres import ReadPostgres
from transforms.records import concat_records

BASE = datetime(2024, 3, 1, tzinfo=timezone.utc)
EXAMPLE = ROOT / "examples" / "postgres"
PASSWORD = "pw-" + uuid.uuid4().hex[:12]  # trust auth ignores it; it must show up nowhere


def with_password(dsn: str) -> str:
    return dsn.replace("postgresql://bp@", f"postgresql://bp:{PASSWORD}@")


def new_table(dsn: str, rows: int) -> str:
    """A fresh table of the example's shape: version ``id`` of order ``1 + id // 2``, one minute apart."""
    name = "ov_" + uuid.uuid4().hex[:10]
    seed = (EXAMPLE / "seed.sql").read_text().replace("order_versions", name)
    seed = seed.replace("generate_series(1, 10000)", f"generate_series(1, {rows})")
    seed = seed.split("-- Rows the contract rejects")[0]  # clean rows only
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(seed)
    return name


def insert(dsn: str, table: str, rows: list[tuple[int, int, str, datetime]]) -> None:
    """Versions (id, order_id, status, updated_at) of otherwise fixed content."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            psycopg.sql.SQL(
                "INSERT INTO {} VALUES (%s, %s, 7, 'north', %s, 12.50, 2, false, NULL, 'web', %s, %s)"
            ).format(psycopg.sql.Identifier(table)),
            [(i, o, status, BASE, ts) for i, o, status, ts in rows],
        )


def spec_for(tmp_path: Path, table: str, extra: str = "") -> Path:
    """The example spec reading ``table`` (written beside the test's outputs)."""
    text = (EXAMPLE / "orders.yaml").read_text().replace("table: order_versions", f"table: {table}")
    if extra:
        text = text.replace("          - {name: order_id_unique,", extra + "\n          - {name: order_id_unique,")
    path = tmp_path / f"{table}.yaml"
    path.write_text(text)
    return path


def run_spec(spec: Path, out: Path) -> dict:
    return run([f"--pipeline={spec}", f"--output={out}", "--history=none", "--lineage=none"], out=io.StringIO())


def curated(out: Path) -> dict:
    """order_id -> (status, updated_at) of the published curated rows (one per order)."""
    t = pq.read_table(out / "curated", columns=["order_id", "status", "updated_at"])
    rows = t.to_pylist()
    assert len({r["order_id"] for r in rows}) == len(rows)
    return {int(r["order_id"]): (r["status"], r["updated_at"]) for r in rows}


def latest(dsn: str, table: str, since: datetime | None = None) -> dict:
    """What the curated output should hold: the latest version of each order (by updated_at, id) among
    the rows updated at or after ``since``, computed by PostgreSQL itself."""
    query = psycopg.sql.SQL(
        "SELECT DISTINCT ON (order_id) order_id, status, updated_at FROM {} WHERE updated_at >= %s "
        "ORDER BY order_id, updated_at DESC, id DESC"
    ).format(psycopg.sql.Identifier(table))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(query, (since or datetime(1970, 1, 1, tzinfo=timezone.utc),)).fetchall()
    return {o: (s, u) for o, s, u in rows}


def cli(*args: str, env: dict | None = None):
    """The CLI as a user runs it, with ``env`` added to the environment."""
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, env or {}):
        return run_module("beam_pipelines.main", *args)


def count_since(dsn: str, table: str, since: datetime) -> int:
    query = psycopg.sql.SQL("SELECT count(*) FROM {} WHERE updated_at >= %s").format(psycopg.sql.Identifier(table))
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, (since,)).fetchone()[0]


def state(out: Path) -> dict:
    return json.loads((out / "_state" / "Read.json").read_text())


def test_full_load_reads_every_row_once_in_parallel_ranges(pipeline, pg_dsn, monkeypatch):
    monkeypatch.setenv("PG_TEST_DSN", with_password(pg_dsn))
    table = new_table(pg_dsn, 0)
    keys = [-(2**63), -7, 0, 1, 2, 3, 999, 10**12, 2**63 - 1]  # the ends of int64 included
    insert(pg_dsn, table, [(k, i, "paid", BASE + timedelta(minutes=i)) for i, k in enumerate(keys)])
    with psycopg.connect(pg_dsn) as conn:
        expected = conn.execute(psycopg.sql.SQL("SELECT id, order_id, amount FROM {}").format(
            psycopg.sql.Identifier(table))).fetchall()  # fmt: skip

    def check(tables):
        t = concat_records(list(tables))
        got = sorted(zip(t.column("id").to_pylist(), t.column("order_id").to_pylist(), t.column("amount").to_pylist()))
        assert got == sorted(expected)
        assert sorted(t.column("_source").to_pylist()) == sorted(f"postgres:public.{table} id={k}" for k in keys)
        assert t.schema.field("amount").type == pa.decimal128(18, 2)

    for ranges in (1, 4, 64):
        p = pipeline()
        got = p | f"Read{ranges}" >> ReadPostgres(table, "id", ranges=ranges, dsn_env="PG_TEST_DSN")
        assert_that(got, check, label=f"Check{ranges}")
        p.run().wait_until_finish()


def test_a_nullable_split_key_is_refused(pipeline, pg_dsn, monkeypatch):
    # A NULL key falls in no range: rather than lose those rows, the read refuses the column.
    monkeypatch.setenv("PG_TEST_DSN", pg_dsn)
    name = "nokey_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE TABLE {} (id bigint, v text)").format(psycopg.sql.Identifier(name)))
    p = pipeline()
    p | ReadPostgres(name, "id", dsn_env="PG_TEST_DSN")
    with pytest.raises(Exception, match="nullable"):
        p.run().wait_until_finish()


def test_injection_in_a_name_is_refused_at_config_time(tmp_path):
    with pytest.raises(ValueError, match="plain SQL name"):
        ReadPostgres('orders"; DROP TABLE orders; --', "id", dsn_env="X")
    with pytest.raises(ValueError, match="plain SQL name"):
        ReadPostgres("orders", "id", columns=("a", "b) FROM pg_shadow --"), dsn_env="X")
    spec = spec_for(tmp_path, "orders")
    spec.write_text(spec.read_text().replace("table: orders", "table: 'orders; DROP TABLE orders'"))
    proc = cli(f"--pipeline={spec}", f"--output={tmp_path / 'out'}")
    assert proc.returncode == 2, proc.stderr
    assert "transforms[0].config.table" in proc.stderr and "plain SQL name" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_incremental_runs_pick_up_new_and_updated_rows_with_the_lookback(pg_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("PG_SOURCE_DSN", pg_dsn)
    table = new_table(pg_dsn, 200)
    spec, out = spec_for(tmp_path, table), tmp_path / "out"
    first = run_spec(spec, out)
    assert first["counts"]["read"] == 200 and first["conservation_ok"]
    assert curated(out) == latest(pg_dsn, table)
    cursor = BASE + timedelta(minutes=200)
    assert state(out)["cursor"] == cursor.isoformat() and state(out)["cursor_key"] == 200

    insert(pg_dsn, table, [
        (201, 500, "placed", cursor + timedelta(minutes=5)),
        (202, 500, "paid", cursor + timedelta(minutes=6)),  # the same order updated twice: the last wins
        (203, 501, "placed", cursor - timedelta(minutes=4)),  # committed late, inside the lookback
        (204, 502, "placed", cursor - timedelta(minutes=30)),  # committed later than the lookback allows
    ])  # fmt: skip
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("UPDATE {} SET status = 'shipped', updated_at = %s WHERE id = 150").format(
            psycopg.sql.Identifier(table)), (cursor + timedelta(minutes=7),))  # fmt: skip
    second = run_spec(spec, out)
    since = cursor - timedelta(minutes=10)
    window = count_since(pg_dsn, table, since)
    assert second["counts"]["read"] == window == 11 + 4  # ids 190..200 again (lookback), 201-203, 150
    assert curated(out) == latest(pg_dsn, table, since)
    assert curated(out)[500][0] == "paid" and curated(out)[76][0] == "shipped"  # order 76 holds id 150
    assert 502 not in curated(out)
    assert second["counts"]["duplicates"] == window - len(latest(pg_dsn, table, since)) > 0
    assert second["conservation_ok"]
    assert state(out)["cursor"] == (cursor + timedelta(minutes=7)).isoformat() and state(out)["cursor_key"] == 150

    # A re-run from the same state gives the same output and the same next state.
    saved, before = state(out), curated(out)
    (out / "_state" / "Read.json").write_text(json.dumps({**saved, "cursor": cursor.isoformat(), "cursor_key": 200}))
    again = run_spec(spec, out)
    assert again["counts"] == second["counts"]
    assert curated(out) == before and state(out) == saved

    # Nothing new: only the lookback is read again, and the cursor stays.
    third = run_spec(spec, out)
    assert third["counts"]["read"] == count_since(pg_dsn, table, cursor - timedelta(minutes=3)) < window
    assert state(out) == saved


def test_a_failed_run_leaves_the_cursor_and_the_outputs(pg_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("PG_SOURCE_DSN", pg_dsn)
    table = new_table(pg_dsn, 50)
    guard = "          - {name: no_huge_orders, kind: expression, expr: 'amount < 100000', severity: error}"
    spec, out = spec_for(tmp_path, table, guard), tmp_path / "out"
    run_spec(spec, out)
    published, saved = curated(out), state(out)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a new version the audit refuses
        conn.execute(psycopg.sql.SQL("UPDATE {} SET amount = 200000, updated_at = %s WHERE id = 10").format(
            psycopg.sql.Identifier(table)), (BASE + timedelta(days=1),))  # fmt: skip
    with pytest.raises(RunError, match="nothing published"):
        run_spec(spec, out)
    assert state(out) == saved and curated(out) == published
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # fixed at the source: the next run takes it
        conn.execute(psycopg.sql.SQL("UPDATE {} SET amount = 20 WHERE id = 10").format(psycopg.sql.Identifier(table)))
    fixed = run_spec(spec, out)
    assert fixed["counts"]["read"] >= 1 and state(out)["cursor"] == (BASE + timedelta(days=1)).isoformat()


def test_an_unreachable_database_is_one_error_line_and_nothing_published(tmp_path):
    out = tmp_path / "out"
    dsn = f"postgresql://bp:{PASSWORD}@127.0.0.1:{free_port()}/bp"
    proc = cli(f"--pipeline={EXAMPLE / 'orders.yaml'}", f"--output={out}", env={"PG_SOURCE_DSN": dsn})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to PostgreSQL for Read"), proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout
    assert not (out / "curated").exists() and not (out / "_state").exists()


def test_the_password_is_in_no_log_report_lineage_or_graph(pg_dsn, tmp_path):
    table = new_table(pg_dsn, 100)
    spec, out = spec_for(tmp_path, table), tmp_path / "out"
    env = {"PG_SOURCE_DSN": with_password(pg_dsn)}
    proc = cli(f"--pipeline={spec}", f"--output={out}", "--log_level=INFO", env=env)
    assert proc.returncode == 0, proc.stderr
    dry = cli(f"--pipeline={spec}", f"--output={tmp_path / 'dry'}", "--dry_run", env=env)
    assert dry.returncode == 0, dry.stderr
    files = [f for f in [*out.rglob("*"), *(tmp_path / "dry").rglob("*")] if f.is_file()]
    assert any(f.name == "pipeline.json" for f in files) and any(f.name == "report.json" for f in files)
    assert any("_lineage" in f.parts for f in files)
    for f in files:
        assert PASSWORD.encode() not in f.read_bytes(), f
    assert PASSWORD not in proc.stdout + proc.stderr + dry.stdout + dry.stderr
    summary = json.loads((out / "_run" / "summary.json").read_text())
    assert summary["input"].endswith(f"/bp/public.{table}") and "bp:" not in summary["input"]
    shutil.rmtree(out)
