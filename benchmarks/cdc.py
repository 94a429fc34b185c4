"""Change data capture throughput: a backlog of changes into a PostgreSQL mirror.

    python -m benchmarks.cdc --changes 500000 [--dsn DSN] [--json OUT.json]

A table of orders (``examples/cdc/seed.sql``) gets ``--changes`` changes in transactions of
1,000 (60% inserts, 30% updates, 10% deletes) after two replication slots were made, so both
readers below meet the same backlog (a server is started by scripts/postgres.sh unless ``--dsn``
is given). Then, one after the other:

1. **beam_pipelines**: ``examples/cdc/orders.yaml`` through the CLI on Prism, bounded
   (``--kafka_stop_at_end``): read the slot, parse and validate every change against the orders
   contract, apply them to ``orders_mirror`` (upserts and deletes, progress row, slot confirmed).
   Timed twice: the whole command (start-up included) and the pipeline's own ``elapsed_s``. Then
   ``examples/cdc/orders_lake.yaml`` the same way, merging into a Delta Lake table (its own slot).
2. **floor**: the same slot reading, decoding and applying in one plain Python loop (no Beam, no
   validation): ``pg_logical_slot_get_binary_changes`` in WAL steps, ``ChangeDecoder``, and the
   mirror's COPY + upsert + delete. What the framework costs is the difference.

Both mirrors are checked equal to the source table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psycopg
import pyarrow as pa

from tests.services import ROOT, free_port, start_postgres, stop_postgres
from transforms.ingest.pgoutput import ChangeDecoder, format_lsn, parse_lsn

SPEC = ROOT / "examples" / "cdc" / "orders.yaml"
LAKE_SPEC = ROOT / "examples" / "cdc" / "orders_lake.yaml"
SEED = (ROOT / "examples" / "cdc" / "seed.sql").read_text()
TX = 1000
COLUMNS = "order_id, customer_id, region, status, amount::numeric(18, 2), quantity, is_gift, channel"
INSERT = (
    "INSERT INTO orders SELECT g, 1 + g %% 97, (ARRAY['north', 'south', 'east', 'west', 'central'])[1 + g %% 5], "
    "(ARRAY['placed', 'paid', 'shipped', 'delivered'])[1 + g %% 4], round((g %% 50000) / 100.0 + 1, 2), 1 + g %% 9, "
    "g %% 7 = 0, NULL, 'web', timestamptz '2024-03-01' + g * interval '1 second', "
    "timestamptz '2024-03-01' + g * interval '1 second' FROM generate_series(%s::bigint, %s::bigint) g"
)


def _db(dsn: str, name: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                      (name,))  # fmt: skip
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return dsn.rsplit("/", 1)[0] + "/" + name


def generate(dsn: str, changes: int) -> dict:
    """The backlog: transactions of TX changes; returns the count of each kind."""
    from transforms.ingest.postgres_cdc import prepare_slot

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEED)
        prepare_slot(conn, "public", "orders", "orders_cdc", "orders_cdc")
        prepare_slot(conn, "public", "orders", "orders_cdc_lake", "orders_cdc_lake")
        conn.execute("SELECT pg_create_logical_replication_slot('floor', 'pgoutput')")
    counts = {"insert": 0, "update": 0, "delete": 0}
    next_id = 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        while sum(counts.values()) < changes:
            with conn.transaction():
                n = min(TX, changes - sum(counts.values()))
                ins, upd = int(n * 0.6) or n, int(n * 0.3)
                dele = n - ins - upd
                conn.execute(INSERT, (next_id, next_id + ins - 1))
                next_id += ins
                counts["insert"] += ins
                if upd:  # the rows inserted 2 transactions ago
                    lo = max(1, next_id - 3 * ins)
                    cur = conn.execute("UPDATE orders SET status = 'paid', quantity = quantity + 1 "
                                       "WHERE order_id >= %s AND order_id < %s", (lo, lo + upd))  # fmt: skip
                    counts["update"] += cur.rowcount
                if dele:
                    lo = max(1, next_id - 4 * ins)
                    cur = conn.execute("DELETE FROM orders WHERE order_id >= %s AND order_id < %s", (lo, lo + dele))
                    counts["delete"] += cur.rowcount
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return counts


def _table(dsn: str, table: str) -> dict:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT {COLUMNS} FROM {table}").fetchall()  # noqa: S608
    return {str(r[0]): tuple(str(v) for v in r[1:]) for r in rows}


def _delta_table(uri: str) -> dict:
    from deltalake import DeltaTable, QueryBuilder

    got = (
        QueryBuilder()
        .register("t", DeltaTable(uri))
        .execute(f"SELECT {COLUMNS.replace('::numeric(18, 2)', '')} FROM t")
    )
    rows = pa.table(got.read_all()).to_pylist()
    return {str(r["order_id"]): tuple(str(v) for k, v in r.items() if k != "order_id") for r in rows}


def run_beam(dsn: str, out: str, spec=SPEC) -> dict:
    env = dict(os.environ, PG_SOURCE_DSN=dsn, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "beam_pipelines.main", f"--pipeline={spec}", "--streaming", "--runner=PrismRunner",
            f"--pg_dsn={dsn}", f"--output={out}", "--kafka_stop_at_end"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the CDC run failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "_run", "summary.json")) as fh:
        summary = json.load(fh)
    return {"wall_s": round(wall, 2), "pipeline_s": summary["elapsed_s"], "read": summary["counts"]["read"],
            "curated": summary["counts"]["curated"]}  # fmt: skip


def run_floor(dsn: str) -> dict:
    """One loop: get changes (consuming), decode, apply as the mirror does (COPY, upsert, delete)."""
    import apache_beam as beam  # noqa: F401 - the mirror's DoFn is a Beam class

    from transforms.sinks.postgres_mirror import _MirrorFn

    decoder = ChangeDecoder()
    fn = None
    changes = 0
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        end = parse_lsn(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
        at = parse_lsn(conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                    "WHERE slot_name = 'floor'").fetchone()[0])  # fmt: skip
        while at < end:
            at += 16 << 20
            rows = conn.execute(
                "SELECT data FROM pg_logical_slot_get_binary_changes('floor', %s::pg_lsn, NULL, 'proto_version', "
                "'1', 'publication_names', 'orders_cdc')",
                (format_lsn(at),),
            ).fetchall()
            for table in decoder.decode(rows).changes:
                if fn is None:
                    import pyarrow as pa

                    schema = pa.schema([f for f in table.schema if not f.name.startswith("_")])
                    fn = _MirrorFn(dsn, "floor_mirror", ("order_id",), schema, "floor", 60.0)
                    fn.setup()
                for _ in fn.process(table):
                    pass
                changes += table.num_rows
    elapsed = time.perf_counter() - started
    if fn is not None:
        fn.teardown()
    return {"wall_s": round(elapsed, 2), "read": changes}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cdc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=500_000, help="changes in the backlog (default 500,000)")
    ap.add_argument("--dsn", help="a server to use (default: one started by scripts/postgres.sh)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if a.changes < TX:
        ap.error(f"--changes must be at least {TX}")
    port = None
    base = a.dsn
    if base is None:
        port = free_port()
        base = start_postgres(port, owner_pid=os.getpid())
    try:
        dsn = _db(base, "bench_cdc")
        t = time.perf_counter()
        counts = generate(dsn, a.changes)
        total = sum(counts.values())
        print(f"backlog: {total:,} changes ({counts['insert']:,} inserts, {counts['update']:,} updates, "
              f"{counts['delete']:,} deletes) in {time.perf_counter() - t:.1f} s", flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory() as out:
            beam_run = run_beam(dsn, os.path.join(out, "out"))
            lake_run = run_beam(dsn, os.path.join(out, "lake"), LAKE_SPEC)
            lake = _delta_table(os.path.join(out, "lake", "lakehouse", "orders"))
        source = _table(dsn, "orders")
        beam_ok = _table(dsn, "orders_mirror") == source
        lake_ok = lake == source
        floor = run_floor(dsn)
        floor_ok = _table(dsn, "floor_mirror") == source
    finally:
        if port is not None:
            stop_postgres(port)
    rows = [
        {"system": "beam_pipelines (Prism, whole command)", "seconds": beam_run["wall_s"],
         "changes_per_s": round(total / beam_run["wall_s"]), "mirror_equal": beam_ok},
        {"system": "beam_pipelines (pipeline run)", "seconds": beam_run["pipeline_s"],
         "changes_per_s": round(total / beam_run["pipeline_s"]), "mirror_equal": beam_ok},
        {"system": "beam_pipelines into Delta Lake (Prism, whole command)", "seconds": lake_run["wall_s"],
         "changes_per_s": round(total / lake_run["wall_s"]), "mirror_equal": lake_ok},
        {"system": "beam_pipelines into Delta Lake (pipeline run)", "seconds": lake_run["pipeline_s"],
         "changes_per_s": round(total / lake_run["pipeline_s"]), "mirror_equal": lake_ok},
        {"system": "floor (plain loop, no validation)", "seconds": floor["wall_s"],
         "changes_per_s": round(total / floor["wall_s"]), "mirror_equal": floor_ok},
    ]  # fmt: skip
    table = "| system | seconds | changes/s | mirror equal to source |\n|---|---:|---:|---|\n" + "".join(
        f"| {r['system']} | {r['seconds']:.1f} | {r['changes_per_s']:,} | {r['mirror_equal']} |\n" for r in rows
    )
    print("\n" + table, end="")
    if a.json:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        with open(os.path.splitext(a.json)[0] + ".md", "w") as fh:
            fh.write(f"# CDC: {total:,} changes ({counts['insert']:,} inserts, {counts['update']:,} updates, "
                     f"{counts['delete']:,} deletes) into a PostgreSQL mirror and a Delta Lake table\n\n`python -m benchmarks.cdc "
                     f"--changes {a.changes} --json {a.json}`; load average after: {load}\n\n{table}")  # fmt: skip
        with open(a.json, "w") as fh:
            json.dump({"changes": counts, "total": total, "read_by_beam": beam_run["read"], "rows": rows,
                       "load_average": os.getloadavg()}, fh, indent=2)  # fmt: skip
            fh.write("\n")


if __name__ == "__main__":
    main()
