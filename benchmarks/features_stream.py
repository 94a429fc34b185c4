"""Streamed features: freshness of the online store, and lookups from it.

    python -m benchmarks.features_stream [--rates 1000,2500,5000] [--seconds 20] [--users 100000] \\
        [--lookups 20000] [--json benchmarks/results/features_stream.json]

Starts a real Kafka broker and PostgreSQL (scripts/kafka.sh, scripts/postgres.sh) on free ports
and runs the packaged ``user_features`` spec in streaming mode on Prism (live, unbounded), once
per rate: clickstream events of ``--users`` users, stamped with the current time, produced at the
rate for ``--seconds`` (each user's events on one partition, in order).

- **Freshness**: from an event's produce call until the online table (``--pg_table``) holds its
  user's features as of that event or later. The table is made before the job starts, with the
  sink's columns plus a trigger recording, per upsert, the user, the row's time and the server's
  ``clock_timestamp()``; an event is reflected by the first recorded row of its user at or after
  its time. p50, p99 and max over every event; a rate is kept up with when every event is
  reflected within the wait and p99 stays under 2 s.
- **Lookups**: ``OnlineStore.get`` of random users (one connection, a prepared statement), one at
  a time, against the largest online table, with no job running; and ``get_many`` of 100 users.

The machine's load average (``os.getloadavg``) is recorded around each measurement: other work
shares the cores, and the numbers mean little without it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import psycopg
from confluent_kafka import Producer
from psycopg import sql

from benchmarks.stream_peers import READY
from tests.services import (
    create_topic,
    free_port,
    free_port_pair,
    start_kafka,
    start_postgres,
    stop_kafka,
    stop_postgres,
)

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 2
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
KEPT_UP_P99_S = 2.0
ACTIONS = ("view",) * 6 + ("click", "add_to_cart", "checkout", "purchase")
PAGES = tuple(f"/product/{i}" for i in range(200)) + ("/", "/cart", "/checkout")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def online_columns() -> list[tuple[str, str]]:
    """The online table's columns as the spec's sink creates them (name, PostgreSQL type)."""
    from beam_pipelines.spec import EventsConfig
    from beam_pipelines.spec.build import plan_for
    from transforms.sinks.postgres import PANE_COLUMN, pg_type

    cfg = EventsConfig(input=None, input_format="jsonl", output="x", pipeline="user_features", streaming=True,
                       kafka_bootstrap="k:1", kafka_topic="t", pg_dsn="postgresql://x")  # fmt: skip
    schema = plan_for(cfg).node("WriteOnline").step._schema
    return [(f.name, pg_type(f.type)) for f in schema] + [(PANE_COLUMN, "bigint")]


def prepare_tables(dsn: str, table: str) -> str:
    """The online table, made ahead with a trigger that records every upsert; returns the record table."""
    seen = f"{table}_seen"
    ident = sql.Identifier
    cols = sql.SQL(", ").join(sql.SQL("{} {}").format(ident(n), sql.SQL(t)) for n, t in online_columns())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(ident(table), ident(seen)))
        conn.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (user_id))").format(ident(table), cols))
        conn.execute(sql.SQL("CREATE TABLE {} (user_id text, ts timestamptz, seen_at timestamptz)").format(ident(seen)))
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "INSERT INTO {seen} VALUES (NEW.user_id, NEW.ts, clock_timestamp()); RETURN NEW; END $$"
            ).format(fn=ident(f"{table}_record"), seen=ident(seen))
        )
        conn.execute(
            sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
                ident(f"{table}_record"), ident(table), ident(f"{table}_record")
            )
        )
    return seen


class Job:
    """The streaming CLI in its own process group, its output in files."""

    def __init__(self, argv: list[str], work: Path):
        self.out, self.err = work / "job.out", work / "job.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=out,
                                         stderr=err, start_new_session=True)  # fmt: skip
        self.launched = time.monotonic()

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the job ended ({self.proc.returncode}):\n{self.err.read_text()[-3000:]}")

    def wait_ready(self, topic: str, timeout_s: float = 300) -> float:
        deadline = self.launched + timeout_s
        while time.monotonic() < deadline:
            said = {int(m[2]) for m in READY.finditer(self.out.read_text(errors="replace")) if m[1] == topic}
            if len(said) >= PARTITIONS:
                return time.monotonic() - self.launched
            self.check()
            time.sleep(0.05)
        raise RuntimeError(f"the job did not start consuming within {timeout_s:g}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def produce(bootstrap: str, topic: str, rate: int, seconds: float, users: int, sent: list) -> None:
    """Events at ``rate`` per second for ``seconds``; ``sent`` gets (user, ts µs, produced at) each."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True})
    rng = random.Random(rate)
    start = time.monotonic()
    i = 0
    while (now := time.monotonic()) - start < seconds:
        while i < int((now - start) * rate):
            user = rng.randrange(users)
            ts_us = int(time.time() * 1_000_000)
            action = rng.choice(ACTIONS)
            record = {"event_id": f"e{rate}-{i:09d}", "user_id": f"u-{user:07d}", "page": rng.choice(PAGES),
                      "ts": (EPOCH + timedelta(microseconds=ts_us)).isoformat(), "action": action,
                      "device": "web"}  # fmt: skip
            if action == "purchase":
                record["amount"] = rng.randrange(100, 20_000) / 100
            producer.produce(topic, value=orjson.dumps(record), partition=user % PARTITIONS)
            sent.append((record["user_id"], ts_us, time.time()))
            i += 1
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)


def reflected(dsn: str, seen: str, sent: list) -> np.ndarray:
    """Per sent event, seconds from its produce call until its user's online row was at its time or
    later (inf when never)."""
    import polars as pl

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT user_id, (extract(epoch FROM ts) * 1e6)::bigint, extract(epoch FROM seen_at)::float8 FROM {}"
            ).format(sql.Identifier(seen))  # fmt: skip
        ).fetchall()
    updates = pl.DataFrame(rows, schema=["user_id", "ts", "seen_at"], orient="row").sort("ts")
    events = pl.DataFrame(sent, schema=["user_id", "ts", "produced_at"], orient="row").sort("ts")
    # The first upsert of the user's row at or after the event's time (a user's rows are upserted in time order).
    joined = events.join_asof(updates, on="ts", by="user_id", strategy="forward", check_sortedness=False)
    return (joined["seen_at"] - joined["produced_at"]).fill_null(float("inf")).to_numpy()


def freshness(services: dict, work: Path, rate: int, seconds: float, users: int) -> dict:
    name = f"fs_online_{rate}"
    topic = create_topic(services["bootstrap"], f"fs_{rate}_{os.getpid()}", PARTITIONS)
    seen = prepare_tables(services["dsn"], name)
    run = work / f"rate{rate}"
    run.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "beam_pipelines.main", "--pipeline=user_features", "--streaming",
            "--runner=PrismRunner", f"--kafka_bootstrap={services['bootstrap']}", f"--kafka_topic={topic}",
            f"--pg_dsn={services['dsn']}", f"--pg_table={name}", f"--output={run}/out"]  # fmt: skip
    before = load()
    job = Job(argv, run)
    try:
        startup = job.wait_ready(topic)
        sent: list = []
        producer = threading.Thread(target=produce, args=(services["bootstrap"], topic, rate, seconds, users, sent))
        producer.start()
        producer.join()
        last = {}
        for user, ts, _ in sent:
            last[user] = max(last.get(user, 0), ts)
        deadline = time.monotonic() + 60
        query = sql.SQL("SELECT user_id, (extract(epoch FROM max(ts)) * 1e6)::bigint FROM {} GROUP BY user_id")
        with psycopg.connect(services["dsn"], autocommit=True) as conn:
            while time.monotonic() < deadline:
                have = dict(conn.execute(query.format(sql.Identifier(seen))).fetchall())
                if all(have.get(u, -1) >= ts for u, ts in last.items()):
                    break
                job.check()
                time.sleep(0.5)
    finally:
        job.stop()
    lat = reflected(services["dsn"], seen, sent)
    done = lat[np.isfinite(lat)]
    p99 = float(np.percentile(lat, 99))
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "events": len(sent),
        "users_touched": len(last),
        "reflected": int(len(done)),
        "startup_s": round(startup, 2),
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p99_s": round(p99, 3) if np.isfinite(p99) else None,
        "max_s": round(float(done.max()), 3) if len(done) else None,
        "kept_up": len(done) == len(sent) and p99 < KEPT_UP_P99_S,
        "load_before": before,
        "load_after": load(),
        "table": name,
    }


def lookups(dsn: str, table: str, n: int) -> dict:
    from beam_pipelines.features.online import OnlineStore

    with psycopg.connect(dsn) as conn:
        users = [u for (u,) in conn.execute(sql.SQL("SELECT user_id FROM {}").format(sql.Identifier(table)))]
    rng = random.Random(7)
    before = load()
    with OnlineStore(dsn, table) as store:
        for user in users[:200]:  # warm: connection, prepared statement, the table's pages
            store.get(user)
        one = []
        for _ in range(n):
            user = rng.choice(users)
            t0 = time.perf_counter()
            row = store.get(user)
            one.append(time.perf_counter() - t0)
            assert row is not None and row["user_id"] == user
        many = []
        for _ in range(max(n // 100, 10)):
            batch = rng.sample(users, 100)
            t0 = time.perf_counter()
            rows = store.get_many(batch)
            many.append(time.perf_counter() - t0)
            assert len(rows) == 100

    def ms(values, q):
        return round(float(np.percentile(values, q)) * 1000, 3)

    return {
        "table_rows": len(users),
        "lookups": n,
        "get_p50_ms": ms(one, 50),
        "get_p99_ms": ms(one, 99),
        "get_max_ms": round(max(one) * 1000, 3),
        "get_many_100_p50_ms": ms(many, 50),
        "get_many_100_p99_ms": ms(many, 99),
        "load_before": before,
        "load_after": load(),
    }


def markdown(result: dict) -> str:
    lines = [
        "| rate (events/s) | events | reflected | start-up (s) | freshness p50 (s) | p99 (s) | max (s) | kept up "
        "(p99 < 2 s) | load avg before -> after |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in result["freshness"]:
        lines.append(
            f"| {r['rate_per_s']:,} | {r['events']:,} | {r['reflected']:,} | {r['startup_s']} | {r['p50_s']} | "
            f"{r['p99_s']} | {r['max_s']} | {'yes' if r['kept_up'] else 'no'} | "
            f"{' '.join(map(str, r['load_before']))} -> {' '.join(map(str, r['load_after']))} |"
        )
    lk = result["lookups"]
    lines += [
        "",
        f"Lookups against {lk['table_rows']:,} online rows ({lk['lookups']:,} single gets; load average "
        f"{' '.join(map(str, lk['load_before']))} -> {' '.join(map(str, lk['load_after']))}):",
        "",
        "| lookup | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|",
        f"| `OnlineStore.get` (one user) | {lk['get_p50_ms']} | {lk['get_p99_ms']} |",
        f"| `OnlineStore.get_many` (100 users) | {lk['get_many_100_p50_ms']} | {lk['get_many_100_p99_ms']} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.features_stream")
    parser.add_argument("--rates", default="1000,2500,5000")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="features-stream-"))
    kafka_port, pg_port = free_port_pair(), free_port()
    services = {"bootstrap": start_kafka(kafka_port, os.getpid()), "dsn": start_postgres(pg_port, os.getpid())}
    result = {"cpus": os.cpu_count(), "users": args.users, "freshness": []}
    try:
        for rate in (int(r) for r in args.rates.split(",")):
            print(f"user_features: {rate:,} events/s for {args.seconds:g} s", file=sys.stderr, flush=True)
            run = freshness(services, work, rate, args.seconds, args.users)
            result["freshness"].append(run)
            print(f"  freshness p50 {run['p50_s']} s, p99 {run['p99_s']} s, {run['reflected']:,} of "
                  f"{run['events']:,} reflected; load {run['load_before']} -> {run['load_after']}",
                  file=sys.stderr, flush=True)  # fmt: skip
        biggest = max(result["freshness"], key=lambda r: r["users_touched"])["table"]
        result["lookups"] = lookups(services["dsn"], biggest, args.lookups)
    finally:
        stop_kafka(kafka_port)
        stop_postgres(pg_port)
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        args.json.with_suffix(".md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
