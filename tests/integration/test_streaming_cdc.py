"""The CDC example spec (examples/cdc/orders.yaml) on Prism against a real PostgreSQL server: a
table's changes mirrored with deletes as deletes, rejected changes as dead letters, a column added
mid-stream kept in extras, a TRUNCATE dead-lettered without stopping, and a job killed with
SIGKILL mid-stream and started again losing and repeating nothing."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from tests.e2e.helpers import ROOT, cli, run_module
from tests.integration.stream_jobs import StreamJob
from transforms import faults

SPEC = ROOT / "examples" / "cdc" / "orders.yaml"
LAKE_SPEC = ROOT / "examples" / "cdc" / "orders_lake.yaml"
SEED = (ROOT / "examples" / "cdc" / "seed.sql").read_text()
COLUMNS = "order_id, customer_id, region, status, amount, quantity, is_gift, channel"


def _sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True, options="-c synchronous_commit=on") as conn:
        for s in statements:
            conn.execute(s)


@pytest.fixture()
def cdc_db(pg_dsn):
    """A database of its own holding the seed's empty orders table (the spec names fixed ones)."""
    name = f"cdc_{int(time.time() * 1000) % 10**9}_{random.randrange(10**6)}"
    _sql(pg_dsn, f"CREATE DATABASE {name}")
    dsn = pg_dsn.rsplit("/", 1)[0] + "/" + name
    _sql(dsn, SEED)
    yield dsn
    # A killed job's server process may still hold its slot for a moment: end the database's
    # sessions, then drop the slots once free (slot names are the server's, not the database's).
    deadline = time.monotonic() + 60
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE database = %s AND NOT active", (name,))  # fmt: skip
            left = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s", (name,)).fetchone()[0]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    _sql(pg_dsn, f"DROP DATABASE {name} WITH (FORCE)")


def _args(dsn: str, out: Path, bounded: bool) -> list[str]:
    return [f"--pipeline={SPEC}", "--streaming", "--runner=PrismRunner", f"--pg_dsn={dsn}", f"--output={out}",
            *(["--kafka_stop_at_end"] if bounded else [])]  # fmt: skip


def _run(dsn: str, out: Path, monkeypatch):
    monkeypatch.setenv("PG_SOURCE_DSN", dsn)
    return cli(*_args(dsn, out, bounded=True))


def _table(dsn: str, table: str) -> dict:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT {COLUMNS} FROM {table}").fetchall()  # noqa: S608
    return {str(r[0]): tuple(str(v) for v in r[1:]) for r in rows}


INSERTS = (
    "INSERT INTO orders SELECT g, 1 + g % 97, (ARRAY['north', 'south', 'east', 'west', 'central'])[1 + g % 5], "
    "(ARRAY['placed', 'paid', 'shipped', 'delivered'])[1 + g % 4], round(g / 10.0, 2), 1 + g % 9, g % 7 = 0, NULL, "
    "'web', timestamptz '2024-03-01' + g * interval '1 minute', timestamptz '2024-03-01' + g * interval '1 minute' "
    "FROM generate_series({lo}, {hi}) g"
)


@pytest.mark.timeout(600)
def test_the_cdc_spec_mirrors_changes_and_dead_letters_what_it_cannot_apply(
    prism_binary, cdc_db, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    first = _run(cdc_db, out, monkeypatch)  # creates the slot: changes from here on are captured
    assert first.returncode == 0, first.stderr
    _sql(
        cdc_db,
        INSERTS.format(lo=1, hi=1000),
        "UPDATE orders SET status = 'cancelled', updated_at = updated_at + interval '1 hour' WHERE order_id % 10 = 0",
        "DELETE FROM orders WHERE order_id % 25 = 0",
    )
    before_bad = _table(cdc_db, "orders")
    _sql(cdc_db, "UPDATE orders SET amount = -5 WHERE order_id = 101",
         "UPDATE orders SET region = 'atlantis' WHERE order_id = 202")  # fmt: skip
    second = _run(cdc_db, out, monkeypatch)
    assert second.returncode == 0, second.stderr
    mirror, source = _table(cdc_db, "orders_mirror"), _table(cdc_db, "orders")
    assert len(mirror) == 960 and set(mirror) == set(source)  # 40 deletes arrived as deletes
    differ = {k for k in source if mirror[k] != source[k]}
    assert differ == {"101", "202"}  # the rejected changes were not applied ...
    assert mirror["101"] == before_bad["101"] and mirror["202"] == before_bad["202"]  # ... the rows kept
    letters = [json.loads(line) for f in sorted((out / "dlq").rglob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted((d["field"], d["reason"]) for d in letters) == [
        ("amount", "invalid_value"),
        ("region", "invalid_value"),
    ]
    assert all(d["source"].startswith("public.orders@") for d in letters)
    assert "read                 1,142" in second.stdout and "conservation OK" in second.stdout
    # A column added to the source: its values go to extras (the contract's columns: evolve). A
    # TRUNCATE cannot be mirrored: a dead letter, and the changes after it still come.
    _sql(cdc_db, "ALTER TABLE orders ADD COLUMN gift_note text",
         "UPDATE orders SET gift_note = 'happy birthday' WHERE order_id = 7")  # fmt: skip
    _sql(cdc_db, "TRUNCATE orders", INSERTS.format(lo=5000, hi=5001))
    third = _run(cdc_db, out, monkeypatch)
    assert third.returncode == 0, third.stderr
    with psycopg.connect(cdc_db) as conn:
        extras = conn.execute("SELECT extras FROM orders_mirror WHERE order_id = '7'").fetchone()[0]
        new = conn.execute("SELECT count(*) FROM orders_mirror WHERE order_id IN ('5000', '5001')").fetchone()[0]
    assert json.loads(extras) == {"gift_note": "happy birthday"}
    assert new == 2
    assert "unsupported_change 1" in third.stdout and "conservation OK" in third.stdout, third.stdout


def _writer(dsn: str, stop: threading.Event, counts: dict) -> None:
    """Transactions of inserts, updates and deletes until ``stop``; ids from 1 up."""
    rng = random.Random(7)
    next_id = 1
    with psycopg.connect(dsn, autocommit=True, options="-c synchronous_commit=on") as conn:
        while not stop.is_set():
            with conn.transaction():
                conn.execute(INSERTS.format(lo=next_id, hi=next_id + 19))
                next_id += 20
                for _ in range(5):
                    conn.execute("UPDATE orders SET quantity = quantity + 1 WHERE order_id = %s",
                                 (rng.randrange(1, next_id),))  # fmt: skip
                conn.execute("DELETE FROM orders WHERE order_id = %s", (rng.randrange(1, next_id),))
            counts["transactions"] = counts.get("transactions", 0) + 1
            time.sleep(0.02)


def _wait(check, timeout_s: float, job: StreamJob | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if job is not None:
            job.assert_running()
        if check():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.timeout(600)
def test_a_job_killed_mid_stream_and_started_again_loses_and_repeats_nothing(
    prism_binary, cdc_db, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    first = _run(cdc_db, out, monkeypatch)  # creates the slot: changes from here on are captured
    assert first.returncode == 0, first.stderr
    _sql(cdc_db, INSERTS.format(lo=1_000_000, hi=1_000_009), "DELETE FROM orders WHERE order_id = 1000000")
    assert _run(cdc_db, out, monkeypatch).returncode == 0  # creates the mirror table
    # Every row write the mirror takes is logged: a change applied twice would log its (key, LSN) twice.
    _sql(
        cdc_db,
        "CREATE TABLE applied (order_id text, lsn bigint, op text)",
        "CREATE FUNCTION log_applied() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO applied VALUES (NEW.order_id, NEW._lsn, TG_OP); RETURN NEW; END $$",
        "CREATE TRIGGER log_applied AFTER INSERT OR UPDATE ON orders_mirror FOR EACH ROW EXECUTE FUNCTION log_applied()",
    )
    stop, counts = threading.Event(), {}
    writer = threading.Thread(target=_writer, args=(cdc_db, stop, counts), daemon=True)
    writer.start()
    try:
        # Killed (SIGKILL to the whole process group) right after a commit of the mirror, before
        # the source confirms it to the slot: the slot gives those changes again after the restart.
        crash = tmp_path / "crash-now"
        monkeypatch.setenv(faults.ENV, f"mirror:applied=kill_if:{crash}")
        with StreamJob(_args(cdc_db, out, bounded=False), tmp_path / "job1.err") as job:
            assert _wait(lambda: _count(cdc_db, "applied") > 300, 180, job), job.stderr()[-3000:]
            crash.touch()
            job.proc.wait(60)
            assert job.proc.returncode == -9, job.stderr()[-3000:]
        monkeypatch.delenv(faults.ENV)
        killed_at = counts.get("transactions", 0)
        with psycopg.connect(cdc_db) as conn:
            confirmed, applied = _positions(conn)
        assert confirmed < applied  # applied, not confirmed: the restart is given them again
        with StreamJob(_args(cdc_db, out, bounded=False), tmp_path / "job2.err") as job:
            assert _wait(lambda: counts.get("transactions", 0) > killed_at + 100, 120, job)
            stop.set()
            writer.join(30)
            assert _wait(lambda: _table(cdc_db, "orders_mirror") == _table(cdc_db, "orders"), 180, job), (
                _difference(cdc_db) + job.stderr()[-3000:]
            )
            job.assert_running()
    finally:
        stop.set()
    with psycopg.connect(cdc_db) as conn:
        doubled = conn.execute(
            "SELECT order_id, lsn, count(*) FROM applied GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 5"
        ).fetchall()
        confirmed, applied = _positions(conn)
    assert doubled == []
    assert confirmed <= applied  # the slot never ran ahead of the mirror
    assert counts["transactions"] > killed_at > 0


def _positions(conn) -> tuple[int, int]:
    """The slot's confirmed LSN and the LSN the mirror applied."""
    return conn.execute(
        "SELECT (SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = 'orders_cdc'), "
        "(SELECT lsn FROM bp_cdc_progress)"
    ).fetchone()


def _difference(dsn: str) -> str:
    mirror, source = _table(dsn, "orders_mirror"), _table(dsn, "orders")
    missing, extra = sorted(set(source) - set(mirror)), sorted(set(mirror) - set(source))
    changed = [(k, mirror[k], source[k]) for k in source if k in mirror and mirror[k] != source[k]]
    with psycopg.connect(dsn) as conn:  # where the slot and the mirror stand, and the server's WAL
        (confirmed, applied), wal = _positions(conn), conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()[0]
    return (
        f"slot confirmed {confirmed}, mirror applied {applied}, WAL at {wal}; "
        f"missing {len(missing)} {missing[:5]}; extra {len(extra)} {extra[:5]}; changed {len(changed)} {changed[:3]}\n"
    )


def _count(dsn: str, table: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
    except psycopg.Error:
        return 0


def test_an_unreachable_source_or_a_missing_table_is_one_error_line(cdc_db, tmp_path, monkeypatch):
    from tests.services import free_port

    monkeypatch.setenv("PG_SOURCE_DSN", f"postgresql://bp:canary-secret@127.0.0.1:{free_port()}/nowhere")
    down = cli(*_args(cdc_db, tmp_path / "out", bounded=True))
    assert down.returncode == 1
    (line,) = down.stderr.strip().splitlines()
    assert line.startswith("error: Read: cannot connect to PostgreSQL:") and "canary-secret" not in line, line
    # A role that may read the table but neither own it nor replicate: each error says what it lacks.
    role = "reader_" + cdc_db.rsplit("_", 1)[1]
    _sql(cdc_db, f"CREATE ROLE {role} LOGIN", f"GRANT SELECT ON orders TO {role}",
         f"GRANT CREATE ON DATABASE {cdc_db.rsplit('/', 1)[1]} TO {role}")  # fmt: skip
    monkeypatch.setenv("PG_SOURCE_DSN", cdc_db.replace("://bp@", f"://{role}@"))
    for needs in ("cannot create publication orders_cdc for public.orders (needs the table's owner): must be owner",
                  "cannot create replication slot orders_cdc (needs the REPLICATION attribute): "):  # fmt: skip
        denied = cli(*_args(cdc_db, tmp_path / "out", bounded=True))
        assert denied.returncode == 1
        (line,) = denied.stderr.strip().splitlines()
        assert line.startswith(f"error: Read: {needs}"), line
        if "publication" in needs:  # the owner makes it; the slot is next
            _sql(cdc_db, "CREATE PUBLICATION orders_cdc FOR TABLE orders")
    _sql(cdc_db, "DROP TABLE orders")
    monkeypatch.setenv("PG_SOURCE_DSN", cdc_db)
    missing = cli(*_args(cdc_db, tmp_path / "out", bounded=True))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == ["error: Read: table public.orders does not exist"]


def _delta(uri: Path) -> dict:
    from deltalake import DeltaTable, QueryBuilder

    got = QueryBuilder().register("t", DeltaTable(str(uri))).execute(f"SELECT {COLUMNS} FROM t").read_all()
    rows = pa.table(got).to_pylist()
    return {str(r["order_id"]): tuple(str(v) for k, v in r.items() if k != "order_id") for r in rows}


@pytest.mark.timeout(600)
def test_changes_merged_into_a_delta_table_and_its_small_files_compacted(prism_binary, cdc_db, tmp_path, monkeypatch):
    from deltalake import DeltaTable

    out = tmp_path / "out"
    monkeypatch.setenv("PG_SOURCE_DSN", cdc_db)
    args = [f"--pipeline={LAKE_SPEC}", "--streaming", "--runner=PrismRunner", f"--pg_dsn={cdc_db}", f"--output={out}",
            "--kafka_stop_at_end"]  # fmt: skip
    assert cli(*args).returncode == 0  # the slot
    _sql(cdc_db, INSERTS.format(lo=1, hi=500), "DELETE FROM orders WHERE order_id % 9 = 0")
    assert cli(*args).returncode == 0
    _sql(cdc_db, INSERTS.format(lo=501, hi=600))  # new keys only: the MERGE adds a file
    assert cli(*args).returncode == 0
    table = out / "lakehouse" / "orders"
    assert _delta(table) == _table(cdc_db, "orders")
    assert len(DeltaTable(str(table)).file_uris()) == 2
    maintained = run_module("beam_pipelines.lakehouse", "maintain", f"--pipeline={LAKE_SPEC}", f"--output={out}")
    assert maintained.returncode == 0, maintained.stderr
    assert "2 files -> 1" in maintained.stdout, maintained.stdout
    assert len(DeltaTable(str(table)).file_uris()) == 1
    assert _delta(table) == _table(cdc_db, "orders")
    _sql(cdc_db, "UPDATE orders SET status = 'returned' WHERE order_id < 50", "DELETE FROM orders WHERE order_id > 450")
    assert cli(*args).returncode == 0  # and the changes after the compaction
    assert _delta(table) == _table(cdc_db, "orders")
