"""Stopping a streaming job with Ctrl-C: one ``error: interrupted`` line and exit 130, whether the
interrupt reaches the whole process group (a terminal's Ctrl-C: prism gets it too) or only the
launcher, and also for a job started in the background of a script (SIGINT ignored, which Beam's
own handler overrides to stop its job server). Not Beam's threads' tracebacks about the closed
connections, and not ``streaming pipeline failed``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from beam_pipelines.streaming import failure_line
from tests.e2e.helpers import ROOT
from tests.services import create_topic


def _start(args: list[str], ignore_sigint: bool) -> subprocess.Popen:
    def child():
        os.setsid()  # its own process group, as a terminal gives a job
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-m", "beam_pipelines.main", *args], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=child)  # fmt: skip


@pytest.mark.timeout(600)
@pytest.mark.parametrize("to, ignore_sigint", [("group", False), ("launcher", False), ("launcher", True)])
def test_ctrl_c_stops_a_streaming_job_with_one_line(prism_binary, kafka_bootstrap, pg_dsn, tmp_path, to,
                                                     ignore_sigint):  # fmt: skip
    topic = create_topic(kafka_bootstrap, f"stop.{to}.{int(ignore_sigint)}", partitions=2)
    args = ["--pipeline=events", "--streaming", "--runner=PrismRunner", f"--kafka_bootstrap={kafka_bootstrap}",
            f"--kafka_topic={topic}", f"--pg_dsn={pg_dsn}", "--pg_table=stop_agg", f"--output={tmp_path}/out"]  # fmt: skip
    job = _start(args, ignore_sigint)
    try:
        deadline, said = time.monotonic() + 240, []
        while time.monotonic() < deadline and not any("partition 1" in line for line in said):
            line = job.stdout.readline()
            assert line, f"the job ended before consuming: {job.communicate(timeout=30)[1][-3000:]}"
            said.append(line)
        time.sleep(2)
        (os.killpg if to == "group" else os.kill)(job.pid, signal.SIGINT)
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)
    assert job.returncode == 130, err[-3000:]
    assert err == "error: interrupted\n"


def test_a_grpc_failure_is_told_by_its_details_and_a_worker_error_by_its_last_line():
    class Rendezvous(Exception):
        def __str__(self):
            return ('<_MultiThreadedRendezvous of RPC that terminated with:\n\tstatus = StatusCode.UNAVAILABLE\n'
                    '\tdetails = "Socket closed"\n\tdebug_error_string = "UNAVAILABLE:Socket closed"\n>')  # fmt: skip

    assert failure_line(Rendezvous()) == "Rendezvous: Socket closed"
    worker = RuntimeError("Traceback (most recent call last):\n  ...\ntransforms.ingest.kafka.KafkaSourceError: gone")
    assert failure_line(worker) == "KafkaSourceError: gone"
    assert failure_line(ValueError("")) == "ValueError"
