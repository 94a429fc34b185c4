"""The PostgreSQL source side by side: its read paths, and the whole orders work against DuckDB.

    python -m benchmarks.postgres_read --rows 1000000 [--dsn DSN] [--ranges 8] [--json OUT.json]

On one table of order versions (``examples/postgres/seed.sql`` at ``--rows`` rows; a server is
started by scripts/postgres.sh unless ``--dsn`` is given):

1. Read paths, each reading the same key ranges one after another into Arrow tables: the ADBC
   PostgreSQL driver (parameterised query, binary results decoded into Arrow in C: what
   ReadPostgres uses) and psycopg 3's ``COPY ... TO STDOUT (FORMAT BINARY)`` (rows decoded by
   psycopg's C loaders, columns gathered into Arrow).
2. The whole work, wall clock: ``examples/postgres/orders.yaml`` through the CLI (a full load:
   read, validate, latest version per order, daily revenue, written under --output), and DuckDB
   doing the same: its postgres extension cannot be fetched here, so the table is exported with
   ``COPY ... TO STDOUT (FORMAT CSV)`` and ``benchmarks.systems.orders_duckdb`` runs on the file
   (both steps timed). Curated and dead-letter counts of the two are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg import sql

from tests.services import ROOT, free_port, start_postgres, stop_postgres
from transforms.ingest import pg_sql

EXAMPLE = ROOT / "examples" / "postgres"
COLUMNS = ("order_id", "customer_id", "region", "status", "amount", "quantity", "is_gift", "promo_code", "channel",
           "created_at", "updated_at")  # fmt: skip
PG_TYPES = ("int8", "int8", "text", "text", "numeric", "int4", "bool", "text", "text", "timestamptz", "timestamptz")
# The contract's text forms: what a CSV reader validates (booleans as true/false, ISO timestamps).
CSV_SELECT = (
    "SELECT order_id, customer_id, region, status, amount, quantity, "
    "CASE WHEN is_gift THEN 'true' WHEN NOT is_gift THEN 'false' END AS is_gift, promo_code, channel, "
    """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at, """
    """to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS updated_at FROM {}"""
)


def load(dsn: str, rows: int) -> str:
    table = f"bench_order_versions_{rows}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
        if (
            exists
            and conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0] == rows
        ):
            return table
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        seed = (EXAMPLE / "seed.sql").read_text().replace("order_versions", table)
        conn.execute(seed.replace("generate_series(1, 10000)", f"generate_series(1, {int(rows)})"))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    return table


def _ranges(dsn: str, table: str, n: int) -> list:
    with psycopg.connect(dsn) as conn:
        lo, hi = conn.execute(sql.SQL("SELECT min(id), max(id) FROM {}").format(sql.Identifier(table))).fetchone()
    return pg_sql.split_ranges(lo, hi, n)


def read_adbc(dsn: str, table: str, ranges: list) -> int:
    import adbc_driver_postgresql.dbapi as adbc

    rows = 0
    with adbc.connect(dsn, autocommit=True) as conn:
        for lo, hi in ranges:
            query, params = pg_sql.read_query("public", table, "id", COLUMNS, None, None, lo, hi)
            with conn.cursor() as cur:
                cur.execute(query, params)
                rows += cur.fetch_arrow_table().num_rows
    return rows


def read_copy_binary(dsn: str, table: str, ranges: list) -> int:
    rows = 0
    names = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for lo, hi in ranges:
            where, params = ("id >= %s AND id < %s", (lo, hi)) if hi is not None else ("id >= %s", (lo,))
            query = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT BINARY)").format(
                names, sql.Identifier(table), sql.SQL(where)
            )
            columns: list[list] = [[] for _ in COLUMNS]
            with cur.copy(query, params) as copy:
                copy.set_types(list(PG_TYPES))
                for row in copy.rows():
                    for col, v in zip(columns, row):
                        col.append(v)
            rows += pa.table(dict(zip(COLUMNS, columns))).num_rows
    return rows


def timed(fn, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def run_pipeline(dsn: str, table: str, work: Path, ranges: int) -> tuple[float, dict]:
    spec = work / "orders_pg.yaml"
    text = (EXAMPLE / "orders.yaml").read_text().replace("table: order_versions", f"table: {table}")
    spec.write_text(text.replace("ranges: 4", f"ranges: {ranges}"))
    out = work / "beam_pipelines"
    env = {**os.environ, "PG_SOURCE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.main", f"--pipeline={spec}", f"--output={out}", "--history=none",
         "--lineage=none"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"pipeline failed: {proc.stderr.strip()}")
    counts = json.loads((out / "_run" / "summary.json").read_text())["counts"]
    return wall, counts


def run_duckdb(dsn: str, table: str, work: Path) -> tuple[float, float, dict]:
    csv_path = work / "export" / "orders.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, open(csv_path, "wb") as fh:
        query = sql.SQL("COPY ({}) TO STDOUT (FORMAT CSV, HEADER)").format(
            sql.SQL(CSV_SELECT).format(sql.Identifier(table))
        )
        with cur.copy(query) as copy:
            for block in copy:
                fh.write(block)
    export = time.perf_counter() - started
    out = work / "duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.systems.orders_duckdb", f"--input={csv_path}", "--format=csv",
         f"--output={out}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"duckdb failed: {proc.stderr.strip()}")
    return wall, export, json.loads((out / "_run" / "report.json").read_text())["counts"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres_read", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dsn", help="An existing server (default: one started by scripts/postgres.sh).")
    parser.add_argument("--ranges", type=int, default=8, help="Key ranges (the read paths and the pipeline).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of each, interleaved; the fastest is kept.")
    parser.add_argument("--json", help="Write the results here too.")
    args = parser.parse_args(argv)
    port = None
    dsn = args.dsn
    if dsn is None:
        port = free_port()
        dsn = start_postgres(port)
    try:
        table = load(dsn, args.rows)
        ranges = _ranges(dsn, table, args.ranges)
        results: dict = {"rows": args.rows, "ranges": args.ranges, "repeat": args.repeat}
        best: dict = {}
        # Interleaved, so load from other processes on the machine falls on every system alike.
        for _ in range(args.repeat):
            for name, fn in (("adbc", read_adbc), ("psycopg_copy_binary", read_copy_binary)):
                seconds, rows = timed(fn, dsn, table, ranges)
                assert rows == args.rows, (name, rows)
                best[f"read_{name}_s"] = min(best.get(f"read_{name}_s", seconds), seconds)
            with tempfile.TemporaryDirectory(prefix="pgbench-") as tmp:
                work = Path(tmp)
                wall, counts = run_pipeline(dsn, table, work, args.ranges)
                d_wall, d_export, d_counts = run_duckdb(dsn, table, work)
            if wall < best.get("beam_pipelines_s", float("inf")):
                best["beam_pipelines_s"] = wall
            if d_wall < best.get("duckdb_s", float("inf")):
                best["duckdb_s"], best["duckdb_export_s"] = d_wall, d_export
        results.update({k: round(v, 2) for k, v in best.items()})
        for name in ("adbc", "psycopg_copy_binary"):
            sec = results[f"read_{name}_s"]
            print(f"read {name:22s} {args.rows:>10,} rows  {sec:7.2f} s  {args.rows / sec:>12,.0f} rows/s")
        match = all(counts[k] == d_counts[k] for k in ("read", "curated", "dead_lettered", "duplicates"))
        results.update(beam_pipelines_counts=counts, duckdb_counts=d_counts, counts_match=match,
                       ratio=round(best["beam_pipelines_s"] / best["duckdb_s"], 2))  # fmt: skip
        print(f"beam_pipelines (ReadPostgres + orders spec)  {results['beam_pipelines_s']:7.2f} s  "
              f"curated {counts['curated']:,}")  # fmt: skip
        print(f"duckdb (COPY CSV {results['duckdb_export_s']:.2f} s + orders SQL)  {results['duckdb_s']:7.2f} s  "
              f"curated {d_counts['curated']:,}")  # fmt: skip
        print(f"ratio {results['ratio']}x, counts match: {match}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if port is not None:
            stop_postgres(port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
