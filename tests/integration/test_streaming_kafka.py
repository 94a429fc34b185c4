"""The streaming events pipeline on Prism: a real Kafka topic in, a real PostgreSQL out.

A known event set is produced to a 2-partition topic — out of order, some records late within
the allowed lateness and some beyond it, invalid and malformed messages, exact duplicates —
and the streaming CLI runs over it. PostgreSQL must then hold exactly the aggregates a batch
run of the same CLI gives over the records that were not late; the late and dead-letter counts
must be exact. A second test kills the streaming job with SIGKILL mid-stream, restarts it, and
checks that every event is counted once in PostgreSQL and in the curated files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pyarrow.compute as pc
import pytest
from confluent_kafka import Producer

from tests.e2e.helpers import ROOT, cli, one_line_error, read_parquet_dir, report

UTC = timezone.utc
BASE = datetime(2024, 3, 1, tzinfo=UTC)
WINDOW_S, LATENESS_S = 3600, 600
TYPES = ("view", "click", "add_to_cart", "purchase", "refund")
COUNTRIES = ("US", "DE", "FR", None)


def _event(i: int, minute: float) -> dict:
    et = TYPES[i % 5]
    return {
        "event_id": f"e{i}",
        "user_id": f"u{i % 37}",
        "event_type": et,
        "amount": round((i % 50) * 1.25, 2) if et in ("purchase", "refund") else None,
        "ts": (BASE + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z"),
        "country": COUNTRIES[i % 4],
    }


def event_set() -> dict[int, list[bytes]]:
    """Messages per partition, in produce order."""
    parts: dict[int, list[bytes]] = {0: [], 1: []}
    i = 0
    for p in (0, 1):
        for k in range(240):  # four hours, about one event a minute, mostly in order
            minute = k + (p * 0.5)
            if k % 17 == 5:
                minute -= 7  # out of order, within the same window or just behind it
            parts[p].append(json.dumps(_event(i, minute)).encode())
            i += 1
            if k in (70, 150):  # late beyond window end + allowed lateness: 90 minutes behind
                parts[p].append(json.dumps(_event(i, k - 90)).encode())
                i += 1
            if k in (65, 125):  # behind its window's end, but within the allowed lateness: a late firing
                parts[p].append(json.dumps(_event(i, k - 9)).encode())
                i += 1
            if k % 40 == 9:  # an exact duplicate (redelivery)
                parts[p].append(parts[p][-1])
            if k % 50 == 3:
                parts[p].append(json.dumps({**_event(i, k), "event_type": "teleport"}).encode())
                i += 1
            if k == 100:
                parts[p].append(b"{not json")
                parts[p].append(b"")  # a null-ish message: empty value
    return parts


def _ts_us(message: bytes) -> int | None:
    try:
        text = json.loads(message)["ts"]
    except (ValueError, KeyError, TypeError):
        return None
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000)


def split_late(parts: dict[int, list[bytes]]) -> tuple[list[bytes], list[bytes]]:
    """(on-time messages, late messages) by the source's rule, computed independently:
    late when window_end(ts) + allowed lateness <= the largest ts read before it on its partition."""
    on_time, late = [], []
    for messages in parts.values():
        watermark = None
        for m in messages:
            ts = _ts_us(m)
            if ts is not None:
                end = ts - ts % (WINDOW_S * 1_000_000) + WINDOW_S * 1_000_000
                if watermark is not None and end + LATENESS_S * 1_000_000 <= watermark:
                    late.append(m)
                    continue
                watermark = ts if watermark is None else max(watermark, ts)
            on_time.append(m)
    return on_time, late


def produce(bootstrap: str, topic: str, parts: dict[int, list[bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failed = []

    def delivered(error, message):
        if error is not None:
            failed.append(f"partition {message.partition()}: {error}")

    for p, messages in parts.items():
        for m in messages:
            producer.produce(topic, value=m, partition=p, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert not failed, failed[:5]  # a refused message would otherwise count as sent


def stream_args(bootstrap, topic, dsn, table, out) -> list[str]:
    return [
        "--pipeline=events", "--streaming", "--runner=PrismRunner", f"--kafka_bootstrap={bootstrap}",
        f"--kafka_topic={topic}", f"--pg_dsn={dsn}", f"--pg_table={table}", f"--output={out}",
        f"--window_seconds={WINDOW_S}", f"--allowed_lateness={LATENESS_S}", "--early_firing_seconds=1",
    ]  # fmt: skip


def pg_rows(dsn: str, table: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT window_start, event_type, country, events, users, amount_sum FROM {table} "  # noqa: S608
            "ORDER BY window_start, event_type, country"
        ).fetchall()


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The batch CLI's outputs over the on-time messages (what streaming must match)."""
    parts = event_set()
    on_time, late = split_late(parts)
    root = tmp_path_factory.mktemp("batch")
    (root / "in.jsonl").write_bytes(b"\n".join(m if m else b'""' for m in on_time) + b"\n")
    out = root / "out"
    proc = cli("--pipeline=events", f"--input={root}/in.jsonl", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    aggs = read_parquet_dir(out / "aggregates").sort_by([("window_start", "ascending")])
    rows = sorted(
        (r["window_start"], r["event_type"], r["country"] or "", r["events"], r["users"], r["amount_sum"])
        for r in aggs.to_pylist()
    )
    curated = sorted(read_parquet_dir(out / "curated").column("event_id").to_pylist())
    return {"parts": parts, "late": len(late), "rows": rows, "report": report(out), "curated": curated}


def check_against_batch(out, dsn, table, expected) -> dict:
    rep = report(out)
    batch = expected["report"]
    assert rep["conservation_ok"] is True
    assert rep["counts"]["late"] == expected["late"] > 0
    assert rep["counts"]["read"] == batch["counts"]["read"] + expected["late"]
    assert rep["counts"]["curated"] == batch["counts"]["curated"]
    assert rep["counts"]["duplicates"] == batch["counts"]["duplicates"] > 0
    assert rep["dead_letter_reasons"] == batch["dead_letter_reasons"]
    assert pg_rows(dsn, table) == expected["rows"]
    curated = read_parquet_dir(out / "curated")
    ids = sorted(curated.column("event_id").to_pylist())
    assert ids == expected["curated"]  # every curated event exactly once
    assert pc.count_distinct(curated.column("event_id")).as_py() == curated.num_rows
    dlq = [json.loads(line) for f in sorted((out / "dlq").rglob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sum(d["reason"] == "late" for d in dlq) == expected["late"]
    assert all(d["source"].count("/") == 2 for d in dlq)  # topic/partition/offset
    # Per window: the profile of its curated rows (the last firing holds them all) and the
    # expectation results.
    windows = sorted((out / "_run" / "windows").glob("window=*"))
    assert len(windows) == len({r[0] for r in expected["rows"]})
    profiles = [json.loads((w / "profile.json").read_text()) for w in windows]
    assert sum(p["rows"] for p in profiles) == len(expected["curated"])
    assert all(p["columns"]["event_type"]["nulls"] == 0 for p in profiles)
    checks = [json.loads(f.read_text()) for f in sorted((out / "_run" / "windows").glob("window=*/expectations.json"))]
    assert checks and all(len(c["results"]) == 8 for c in checks)  # the default expectations
    return rep


@pytest.mark.timeout(900)
def test_streaming_on_prism_matches_batch_over_on_time_records(
    prism_binary, kafka_bootstrap, new_topic, pg_dsn, expected, tmp_path
):
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, expected["parts"])
    out = tmp_path / "out"
    proc = cli(*stream_args(kafka_bootstrap, topic, pg_dsn, "agg_stream", out), "--kafka_stop_at_end")
    assert proc.returncode == 0, proc.stderr
    assert "conservation OK" in proc.stdout
    assert proc.stderr.strip() == ""  # a successful run prints no runner warnings
    rep = check_against_batch(out, pg_dsn, "agg_stream", expected)
    entries = [json.loads(line) for line in (out / "_audit" / "log.jsonl").read_text().splitlines()]
    assert [(e["action"], e["outcome"]) for e in entries] == [("run", "started"), ("run", "finished")]
    assert entries[0]["what"]["streaming"] is True and entries[0]["what"]["kafka_topic"] == topic
    assert entries[1]["what"]["counts"] == rep["counts"] and entries[1]["what"]["pg_table"] == "agg_stream"


@pytest.mark.timeout(1200)
def test_kill_9_mid_stream_then_restart_counts_every_event_once(
    prism_binary, kafka_bootstrap, new_topic, pg_dsn, expected, tmp_path
):
    topic = new_topic(partitions=2)
    # The first part of each partition now, the rest after the kill: the killed job cannot have
    # seen everything, however fast it went.
    cut = {p: len(messages) * 3 // 5 for p, messages in expected["parts"].items()}
    produce(kafka_bootstrap, topic, {p: m[: cut[p]] for p, m in expected["parts"].items()})
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # Unbounded: the job would run forever; it is killed once aggregates have reached PostgreSQL.
    err = tmp_path / "job.err"  # a file: a pipe nobody drains would block the job once full
    job = subprocess.Popen(
        [sys.executable, "-m", "beam_pipelines.main", *stream_args(kafka_bootstrap, topic, pg_dsn, "agg_crash", out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err.open("wb"),
        start_new_session=True,  # its own process group: prism and the SDK worker die with it
    )
    try:
        deadline = time.monotonic() + 300
        seen = 0
        while time.monotonic() < deadline and job.poll() is None:
            try:
                seen = len(pg_rows(pg_dsn, "agg_crash"))
            except psycopg.errors.UndefinedTable:
                seen = 0
            if seen:
                break
            time.sleep(0.5)
        assert job.poll() is None, err.read_text()
        assert seen > 0, "no aggregate reached PostgreSQL before the kill"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
    assert job.returncode == -signal.SIGKILL
    partial = pg_rows(pg_dsn, "agg_crash")
    assert partial and partial != expected["rows"]
    produce(kafka_bootstrap, topic, {p: m[cut[p] :] for p, m in expected["parts"].items()})
    proc = cli(*stream_args(kafka_bootstrap, topic, pg_dsn, "agg_crash", out), "--kafka_stop_at_end")
    assert proc.returncode == 0, proc.stderr
    check_against_batch(out, pg_dsn, "agg_crash", expected)


@pytest.mark.timeout(300)
def test_bad_streaming_setups_are_one_line_errors(prism_binary, kafka_bootstrap, new_topic, pg_dsn, tmp_path):
    topic = new_topic(partitions=1)
    out = tmp_path / "out"
    args = stream_args(kafka_bootstrap, topic, pg_dsn, "agg_bad", out)
    # Flags: no database, the in-process runner (batch only).
    no_db = [a for a in args if not a.startswith("--pg_dsn")]
    assert "--streaming needs --pg_dsn" in one_line_error(cli(*no_db), 2)
    direct = [a if a != "--runner=PrismRunner" else "--runner=DirectRunner" for a in args]
    assert "PrismRunner" in one_line_error(cli(*direct), 2)
    # Services: a topic that does not exist, a broker that does not answer, a database that does not.
    missing = [a if not a.startswith("--kafka_topic") else "--kafka_topic=no-such-topic" for a in args]
    assert "'no-such-topic' (--kafka_topic) does not exist" in one_line_error(cli(*missing), 1)
    dead_kafka = [a if not a.startswith("--kafka_bootstrap") else "--kafka_bootstrap=127.0.0.1:9" for a in args]
    assert "cannot reach Kafka at --kafka_bootstrap=127.0.0.1:9" in one_line_error(cli(*dead_kafka), 1)
    dead_db = [a if not a.startswith("--pg_dsn") else "--pg_dsn=postgresql://bp@127.0.0.1:9/bp" for a in args]
    assert "cannot reach PostgreSQL" in one_line_error(cli(*dead_db), 1)
    # Nothing was written by any of them but the audit log's record of the three that held the output.
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] == ["_audit/log.jsonl"]
    entries = [json.loads(line) for line in (out / "_audit" / "log.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in entries] == ["started", "failed"] * 3
    assert "cannot reach PostgreSQL" in entries[-1]["what"]["error"]


@pytest.mark.timeout(600)
def test_dead_letters_to_a_kafka_topic(prism_binary, kafka_bootstrap, new_topic, pg_dsn, expected, tmp_path):
    from confluent_kafka import Consumer, TopicPartition

    topic, dlq = new_topic(partitions=2), new_topic(partitions=1, prefix="dlq")
    produce(kafka_bootstrap, topic, expected["parts"])
    out = tmp_path / "out"
    proc = cli(
        *stream_args(kafka_bootstrap, topic, pg_dsn, "agg_dlq", out), "--kafka_stop_at_end", f"--dlq_topic={dlq}"
    )
    assert proc.returncode == 0, proc.stderr
    rep = report(out)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "check", "enable.auto.commit": False})
    consumer.assign([TopicPartition(dlq, 0, 0)])
    letters = []
    deadline = time.monotonic() + 60
    while len(letters) < rep["counts"]["dead_lettered"] + rep["counts"]["late"] and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            letters.append(json.loads(msg.value()))
    consumer.close()
    assert len(letters) == rep["counts"]["dead_lettered"] + rep["counts"]["late"] > 0
    assert sum(d["reason"] == "late" for d in letters) == expected["late"]
    assert {d["reason"] for d in letters} - {"late"} == set(expected["report"]["dead_letter_reasons"])
    assert not (out / "dlq").exists()  # the topic instead of files
    assert pg_rows(pg_dsn, "agg_dlq") == expected["rows"]
