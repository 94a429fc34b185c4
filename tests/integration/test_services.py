"""Round trips through the real Kafka broker and PostgreSQL server that scripts/kafka.sh and scripts/postgres.sh start.

The servers come from the session fixtures in tests/services.py; when one cannot start, the tests fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from psycopg import sql

from tests.services import KAFKA_SH, POSTGRES_SH, ROOT, free_port, start_postgres, stop_postgres

MESSAGES = 600
KEYS = 20
PARTITIONS = 3
CONSUME_TIMEOUT_S = 60


def _script(script, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _port(bootstrap: str) -> str:
    return bootstrap.rsplit(":", 1)[1]


def _consume_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                if msg.error() is None:
                    got.append(msg)
                elif msg.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consumer error: {msg.error()}")
        # Anything past the expected count would be a duplicate: read once more briefly to see it.
        got.extend(m for m in consumer.consume(num_messages=500, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    return got


def test_kafka_keyed_json_round_trip_on_three_partitions(kafka_bootstrap):
    topic = f"svc.roundtrip.{uuid.uuid4().hex[:8]}"
    port = _port(kafka_bootstrap)

    created = _script(KAFKA_SH, "topic", topic, str(PARTITIONS), KAFKA_PORT=port)
    assert created.returncode == 0, created.stderr
    assert f"created with {PARTITIONS} partition(s)" in created.stdout
    # Idempotent: a second create leaves the topic (and its partition count) as it is.
    again = _script(KAFKA_SH, "topic", topic, "7", KAFKA_PORT=port)
    assert again.returncode == 0, again.stderr
    assert f"already there with {PARTITIONS} partition(s)" in again.stdout

    sent = [
        (f"k{i % KEYS:02d}", {"seq": i, "key": f"k{i % KEYS:02d}", "payload": "x" * (i % 7)}) for i in range(MESSAGES)
    ]
    errors = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for key, value in sent:
        producer.produce(
            topic, key=key.encode(), value=json.dumps(value).encode(), on_delivery=lambda e, _m: e and errors.append(e)
        )
    assert producer.flush(30) == 0
    assert errors == []

    got = _consume_all(kafka_bootstrap, topic, MESSAGES)

    assert len(got) == MESSAGES

    def by_key_and_seq(kv):
        return kv[0], kv[1]["seq"]

    decoded = sorted(((m.key().decode(), json.loads(m.value())) for m in got), key=by_key_and_seq)
    assert decoded == sorted(sent, key=by_key_and_seq)
    partitions_of_key = defaultdict(set)
    seqs_in_partition = defaultdict(list)
    for m in got:
        partitions_of_key[m.key()].add(m.partition())
        seqs_in_partition[(m.partition(), m.key())].append((m.offset(), json.loads(m.value())["seq"]))
    # Keyed partitioning: each key in exactly one partition, the keys spread over all three, order kept per key.
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert {next(iter(p)) for p in partitions_of_key.values()} == set(range(PARTITIONS))
    for pairs in seqs_in_partition.values():
        assert [seq for _, seq in sorted(pairs)] == sorted(seq for _, seq in pairs)


def test_kafka_new_topic_fixture_makes_distinct_topics(kafka_bootstrap, new_topic):
    first, second = new_topic(partitions=2), new_topic()
    assert first != second
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"meta-{uuid.uuid4().hex}"})
    try:
        topics = consumer.list_topics(timeout=10).topics
    finally:
        consumer.close()
    assert len(topics[first].partitions) == 2
    assert len(topics[second].partitions) == 1


def test_kafka_script_status_bootstrap_and_errors(kafka_bootstrap):
    port = _port(kafka_bootstrap)
    status = _script(KAFKA_SH, "status", KAFKA_PORT=port)
    assert status.returncode == 0 and f"running on {kafka_bootstrap}" in status.stdout
    again = _script(KAFKA_SH, "start", KAFKA_PORT=port)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout and again.stdout.splitlines()[-1] == kafka_bootstrap
    assert _script(KAFKA_SH, "bootstrap", KAFKA_PORT=port).stdout.strip() == kafka_bootstrap

    bad = _script(KAFKA_SH, "topic", "no spaces", KAFKA_PORT=port)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1

    # auto.create.topics.enable=false: producing to an unknown topic fails instead of creating it.
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 1500})
    errors = []
    producer.produce(f"svc.absent.{uuid.uuid4().hex[:8]}", value=b"x", on_delivery=lambda e, _m: errors.append(e))
    producer.flush(10)
    assert len(errors) == 1 and errors[0] is not None


def test_start_scripts_refuse_a_port_taken_by_another_process():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for script, env in ((KAFKA_SH, {"KAFKA_PORT": port}), (POSTGRES_SH, {"PG_PORT": port})):
            proc = _script(script, "start", **env)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 1, (script.name, proc.stdout)
            assert len(lines) == 1 and lines[0].startswith(f"{script.name}: port {port} on 127.0.0.1 is taken"), lines


def _upsert(conn: psycopg.Connection, table: str, rows: list[tuple[str, int, str]]) -> None:
    query = sql.SQL(
        "INSERT INTO {t} (id, n, note) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n, note = EXCLUDED.note"
    ).format(t=sql.Identifier(table))
    with conn.cursor() as cur:
        cur.executemany(query, rows)


def _read(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(sql.SQL("SELECT id, n, note FROM {t} ORDER BY id").format(t=sql.Identifier(table))).fetchall()


def test_postgres_upsert_round_trip(pg_dsn):
    assert pg_dsn.startswith("postgresql://bp@127.0.0.1:") and pg_dsn.endswith("/bp")
    table = f"svc_upsert_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("bp", "bp")
        conn.execute(
            sql.SQL("CREATE TABLE {t} (id text PRIMARY KEY, n bigint NOT NULL, note text)").format(
                t=sql.Identifier(table)
            )
        )
        first = [("a", 1, "first"), ("b", 2, None), ("c'; DROP TABLE x; --", 3, "quoted")]
        _upsert(conn, table, first)
        assert _read(conn, table) == first
        # Re-running the same rows changes nothing; changed and new rows are updated and inserted.
        _upsert(conn, table, first)
        assert _read(conn, table) == first
        _upsert(conn, table, [("b", 20, "updated"), ("d", 4, "new")])
        assert _read(conn, table) == [
            ("a", 1, "first"),
            ("b", 20, "updated"),
            ("c'; DROP TABLE x; --", 3, "quoted"),
            ("d", 4, "new"),
        ]
        conn.execute(sql.SQL("DROP TABLE {t}").format(t=sql.Identifier(table)))


def test_postgres_script_keeps_data_across_restart_with_keep_data(pg_dsn):
    port = free_port()
    dsn = start_postgres(port)
    try:
        assert dsn == f"postgresql://bp@127.0.0.1:{port}/bp"
        assert _script(POSTGRES_SH, "dsn", PG_PORT=str(port)).stdout.strip() == dsn
        assert _script(POSTGRES_SH, "status", PG_PORT=str(port)).returncode == 0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
            conn.execute("INSERT INTO kept VALUES (%s), (%s)", (1, 2))
        stop_postgres(port, keep_data=True)
        assert _script(POSTGRES_SH, "status", PG_PORT=str(port)).returncode == 1
        assert start_postgres(port) == dsn
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT id FROM kept ORDER BY id").fetchall() == [(1,), (2,)]
    finally:
        stop_postgres(port)
    assert _script(POSTGRES_SH, "status", PG_PORT=str(port)).returncode == 1
    # The session's server is a different cluster, untouched by this one's restart.
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)


@pytest.mark.parametrize("script", [KAFKA_SH, POSTGRES_SH])
def test_scripts_reject_unknown_commands(script):
    proc = _script(script, "frobnicate")
    assert proc.returncode == 1 and "usage:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
