"""The Kafka broker restarted under a streaming job: the source reconnects, and PostgreSQL ends
holding exactly the aggregates a fault-free run gives (no event lost, none counted twice).

A broker of its own (the session's stays up for the other tests): the job reads half the events,
the broker is stopped with its data kept, started again on the same port, and the other half is
produced; the job must bring the table to the batch run's rows without being restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.helpers import ROOT
from tests.integration.test_streaming_kafka import expected, pg_rows, produce, stream_args  # noqa: F401 - fixture
from tests.integration.test_streaming_pg_restart import _rows_or_none
from tests.services import create_topic, free_port_pair, start_kafka, stop_kafka


@pytest.mark.timeout(900)
def test_kafka_restarted_mid_stream_ends_with_the_fault_free_rows(prism_binary, pg_dsn, expected, tmp_path):  # noqa: F811
    port = free_port_pair()
    bootstrap = start_kafka(port, owner_pid=os.getpid())
    job = None
    try:
        topic = create_topic(bootstrap, "restart.events", partitions=2)
        cut = {p: len(messages) // 2 for p, messages in expected["parts"].items()}
        produce(bootstrap, topic, {p: m[: cut[p]] for p, m in expected["parts"].items()})
        job = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "beam_pipelines.main",
                *stream_args(bootstrap, topic, pg_dsn, "agg_kafka_restart", tmp_path / "out"),
            ],  # fmt: skip
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not (before := _rows_or_none(pg_dsn, "agg_kafka_restart")):
            assert job.poll() is None, job.stderr.read().decode()
            assert time.monotonic() < deadline, "no aggregate reached PostgreSQL"
            time.sleep(0.5)
        assert before != expected["rows"]  # half the events are not even produced yet
        stop_kafka(port, keep_data=True)
        time.sleep(3)  # the job's consumer meets the dead broker
        assert job.poll() is None, job.stderr.read().decode()
        assert start_kafka(port, owner_pid=os.getpid()) == bootstrap
        produce(bootstrap, topic, {p: m[cut[p] :] for p, m in expected["parts"].items()})
        deadline, rows = time.monotonic() + 300, None
        while rows != expected["rows"] and time.monotonic() < deadline:
            assert job.poll() is None, job.stderr.read().decode()
            time.sleep(1)
            rows = _rows_or_none(pg_dsn, "agg_kafka_restart")
        assert rows == expected["rows"]
        assert job.poll() is None  # the job rode out the restart
    finally:
        if job is not None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)
        stop_kafka(port)
