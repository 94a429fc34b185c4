"""PostgreSQL restarted under a streaming job's upserts: the sink reconnects with backoff, and
the table ends holding exactly the aggregates a fault-free run gives (no loss, no doubles).

The job reads an unbounded Kafka topic; once its first aggregates are in PostgreSQL the server
is stopped, more events are produced while it is down, and it is started again (same data
directory). The job must then bring the table to the batch run's rows.
"""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from tests.integration.stream_jobs import StreamJob, wait_for_rows
from tests.integration.test_streaming_kafka import expected, produce, stream_args  # noqa: F401 - fixture
from tests.services import free_port, start_postgres, stop_postgres


@pytest.mark.timeout(900)
def test_postgres_restarted_mid_stream_ends_with_the_fault_free_rows(
    prism_binary,
    kafka_bootstrap,
    new_topic,
    expected,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    port = free_port()
    dsn = start_postgres(port, owner_pid=os.getpid())
    topic = new_topic(partitions=2)
    cut = {p: len(messages) // 2 for p, messages in expected["parts"].items()}
    produce(kafka_bootstrap, topic, {p: m[: cut[p]] for p, m in expected["parts"].items()})
    try:
        with StreamJob(
            stream_args(kafka_bootstrap, topic, dsn, "agg_pg", tmp_path / "out"), tmp_path / "job.err"
        ) as job:
            before = wait_for_rows(job, dsn, "agg_pg", bool)
            assert before, "no aggregate reached PostgreSQL"
            stop_postgres(port, keep_data=True)
            assert before != expected["rows"]  # half the events are not even produced yet
            produce(kafka_bootstrap, topic, {p: m[cut[p] :] for p, m in expected["parts"].items()})
            time.sleep(3)  # the job meets the outage: its upserts fail and back off
            assert start_postgres(port, owner_pid=os.getpid()) == dsn
            rows = wait_for_rows(job, dsn, "agg_pg", lambda r: r == expected["rows"])
            assert rows == expected["rows"]
            job.assert_running()  # the job rode out the restart
            with psycopg.connect(dsn) as conn:
                (latest,) = conn.execute("SELECT max(_pane) FROM agg_pg").fetchone()
            assert latest > 0  # each row holds its firing: later firings replaced earlier ones
            said = job.stderr()
    finally:
        stop_postgres(port)
    assert "upsert into agg_pg failed (try 1)" in said, said  # the upserts met the outage
