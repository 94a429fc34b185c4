"""A spec other than events in streaming: the `sessions` example over a real Kafka topic on Prism,
its session windows upserted into a real PostgreSQL, equal to a batch run over the same records."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from confluent_kafka import Producer

from tests.e2e.helpers import cli, read_parquet_dir, report, run_module

TABLE = "user_sessions_stream"


def sessions_lines(root) -> list[bytes]:
    proc = run_module("beam_pipelines.datagen", "--dataset=sessions", "--rows=1500", "--format=jsonl",
                      "--dirty-fraction=0.05", f"--out={root}", "--seed=5", "--days=1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [x for f in sorted(root.glob("*.jsonl")) for x in f.read_bytes().splitlines() if x.strip()]


@pytest.mark.timeout(900)
def test_sessions_spec_streams_from_kafka_into_postgres_like_a_batch_run(
    prism_binary, kafka_bootstrap, new_topic, pg_dsn, tmp_path
):
    lines = sessions_lines(tmp_path / "in")
    batch = tmp_path / "batch"
    proc = cli("--pipeline=sessions", f"--input={tmp_path}/in/*.jsonl", f"--output={batch}", "--history=none",
               "--lineage=none")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = sorted(
        (r["user_id"], r["window_start"], r["window_end"], r["events"], r["pages"], r["converted"])
        for r in read_parquet_dir(batch / "aggregates").to_pylist()
    )
    topic = new_topic(partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for line in lines:  # one partition, in file order: the generator writes each user's events in time order
        producer.produce(topic, value=line)
    assert producer.flush(30) == 0
    out = tmp_path / "stream"
    # A day of allowed lateness: this test is about the sessions, not about late data.
    proc = cli("--pipeline=sessions", "--streaming", "--runner=PrismRunner", f"--kafka_bootstrap={kafka_bootstrap}",
               f"--kafka_topic={topic}", f"--pg_dsn={pg_dsn}", f"--pg_table={TABLE}", f"--output={out}",
               "--allowed_lateness=86400", "--kafka_stop_at_end")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "sessions (streaming) on PrismRunner" in proc.stdout
    rep = report(out)
    assert rep["conservation_ok"] and rep["counts"]["late"] == 0
    assert rep["counts"]["curated"] == report(batch)["counts"]["curated"]
    with psycopg.connect(pg_dsn) as conn:
        got = conn.execute(
            f"SELECT user_id, window_start, window_end, events, pages, converted FROM {TABLE}"  # noqa: S608
        ).fetchall()
    assert sorted(got) == expected
    assert all(end - start >= timedelta(minutes=30) for _, start, end, *_ in got)
