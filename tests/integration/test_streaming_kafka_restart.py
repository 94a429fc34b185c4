"""The Kafka broker restarted under a streaming job: the source reconnects, and PostgreSQL ends
holding exactly the aggregates a fault-free run gives (no event lost, none counted twice).

A broker of its own (the session's stays up for the other tests): the job reads half the events,
the broker is stopped with its data kept, started again on the same port, and the other half is
produced; the job must bring the table to the batch run's rows without being restarted.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.stream_jobs import StreamJob, wait_for_rows
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
