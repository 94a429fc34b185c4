"""The Kafka broker restarted under a streaming job: the source reconnects, and PostgreSQL ends
holding exactly the aggregates a fault-free run gives (no event lost, none counted twice).

A broker of its own (the session's stays up for the other tests): the job reads half the events,
the broker is stopped with its data kept, started again on the same port, and the other half is
produced; the job must bring the table to the batch run's rows without being restarted.

A broker that never comes back: the job gives up after the source's retry budget with one
``error:`` line naming the topic, the partition, the broker and the client's complaint.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.integration.stream_jobs import StreamJob, wait_for_rows
from tests.integration.stream_specs import sessions_lines, spec_with_source, table_rows
from tests.integration.test_streaming_kafka import expected, produce, stream_args  # noqa: F401 - fixture
from tests.services import create_topic, free_port_pair, start_kafka, stop_kafka


@pytest.mark.timeout(900)
def test_kafka_restarted_mid_stream_ends_with_the_fault_free_rows(prism_binary, pg_dsn, expected, tmp_path):  # noqa: F811
    port = free_port_pair()
    bootstrap = start_kafka(port, owner_pid=os.getpid())
    try:
        topic = create_topic(bootstrap, "restart.events", partitions=2)
        cut = {p: len(messages) // 2 for p, messages in expected["parts"].items()}
        produce(bootstrap, topic, {p: m[: cut[p]] for p, m in expected["parts"].items()})
        args = stream_args(bootstrap, topic, pg_dsn, "agg_kafka_restart", tmp_path / "out")
        with StreamJob(args, tmp_path / "job.err") as job:
            before = wait_for_rows(job, pg_dsn, "agg_kafka_restart", bool)
            assert before, "no aggregate reached PostgreSQL"
            assert before != expected["rows"]  # half the events are not even produced yet
            stop_kafka(port, keep_data=True)
            time.sleep(5)  # the job's consumers meet the dead broker
            job.assert_running()
            assert start_kafka(port, owner_pid=os.getpid()) == bootstrap
            produce(bootstrap, topic, {p: m[cut[p] :] for p, m in expected["parts"].items()})
            rows = wait_for_rows(job, pg_dsn, "agg_kafka_restart", lambda r: r == expected["rows"])
            assert rows == expected["rows"]
            job.assert_running()  # the job rode out the restart
            said = job.stderr()
    finally:
        stop_kafka(port)
    refused = [line for line in said.splitlines() if "Connection refused" in line]
    assert refused  # the consumers met the outage
    # One line per kind of complaint per interval, not one per reconnect attempt.
    assert len(refused) <= 8, "\n".join(refused)


@pytest.mark.timeout(600)
def test_a_broker_gone_for_good_fails_the_job_after_the_retry_budget_with_one_error(prism_binary, pg_dsn, tmp_path):
    port = free_port_pair()
    bootstrap = start_kafka(port, owner_pid=os.getpid())
    try:
        topic = create_topic(bootstrap, "gone.events", partitions=2)
        lines = sessions_lines(tmp_path / "in", rows=300)
        produce(bootstrap, topic, {0: lines[::2], 1: lines[1::2]})
        spec = spec_with_source(tmp_path / "sessions_kafka.yaml", "ReadKafka",
                                {"bootstrap": "${kafka_bootstrap}", "topic": "${kafka_topic}",
                                 "retry_for_seconds": 10})  # fmt: skip
        args = [f"--pipeline={spec}", "--streaming", "--runner=PrismRunner", f"--kafka_bootstrap={bootstrap}",
                f"--kafka_topic={topic}", f"--pg_dsn={pg_dsn}", "--pg_table=sessions_kafka_gone",
                f"--output={tmp_path / 'out'}", "--allowed_lateness=86400"]  # fmt: skip
        with StreamJob(args, tmp_path / "job.err") as job:
            written = wait_for_rows(job, pg_dsn, "sessions_kafka_gone", bool, read=table_rows)
            assert written, "no session reached PostgreSQL"
            stopped = time.monotonic()
            stop_kafka(port)
            try:
                code = job.proc.wait(240)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the job still runs 240 s after the broker went:\n{job.stderr()[-3000:]}")
            took = time.monotonic() - stopped
            said = job.stderr()
    finally:
        stop_kafka(port)
    assert code == 1, said[-3000:]
    # The worker's traceback and Prism's account of the failed bundle are logged above it; the
    # launcher's own verdict is the last line, and the only one of its form.
    last = said.strip().splitlines()[-1]
    assert [line for line in said.splitlines() if line.startswith("error: ")] == [last]
    assert last.startswith(f"error: streaming pipeline failed: KafkaSourceError: Kafka topic '{topic}' partition ")
    assert f"broker {bootstrap} not reachable for 10s: " in last
    assert "Connection refused" in last  # the client's own account of the outage
    assert took >= 10  # not before the budget was spent
