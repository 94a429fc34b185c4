"""The `sessions` spec streaming from a real Pub/Sub emulator (scripts/pubsub.sh) on Prism, its
session windows upserted into a real PostgreSQL: equal to a batch run over the same records,
with garbage and empty messages counted as dead letters; a second start over the first one's
outputs is refused (Pub/Sub cannot replay what it acknowledged). A job killed with SIGKILL
mid-stream: what it had acknowledged is never delivered again, everything else goes to the
next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import grpc
import psycopg
import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from tests.e2e.helpers import ROOT, cli, one_line_error, report
from tests.integration.stream_specs import batch_results, sessions_lines, spec_with_source, table_rows
from tests.services import pubsub_messages
from transforms.ingest.pubsub import subscriber_client

TABLE = "user_sessions_pubsub"


@pytest.mark.timeout(600)
def test_sessions_spec_streams_from_pubsub_like_a_batch_run(prism_binary, pubsub_emulator, pg_dsn, tmp_path):
    lines = sessions_lines(tmp_path / "in")
    expected, batch = batch_results(f"{tmp_path}/in/*.jsonl", tmp_path / "batch")

    name = uuid.uuid4().hex[:12]
    topic, subscription = f"projects/bp-test/topics/t-{name}", f"projects/bp-test/subscriptions/s-{name}"
    publisher = pubsub_v1.PublisherClient(
        transport=PublisherGrpcTransport(channel=grpc.insecure_channel(pubsub_emulator))
    )
    publisher.create_topic(name=topic)
    subscriber = subscriber_client(pubsub_emulator)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    futures = [publisher.publish(topic, line) for line in lines]
    # Garbage, and a message without data (Pub/Sub needs data or an attribute): two dead letters.
    futures += [publisher.publish(topic, b"{not json"), publisher.publish(topic, b"", kind="empty")]
    for f in futures:
        f.result(timeout=30)

    spec = spec_with_source(tmp_path / "sessions_pubsub.yaml", "ReadPubSub",
                            {"subscription": subscription, "emulator_host": pubsub_emulator, "stop_after_idle": 3})  # fmt: skip
    out = tmp_path / "stream"
    # A day of allowed lateness: this test is about the source, not about late data.
    args = [f"--pipeline={spec}", "--streaming", "--runner=PrismRunner", f"--pg_dsn={pg_dsn}", f"--pg_table={TABLE}",
            f"--output={out}", "--allowed_lateness=86400"]  # fmt: skip
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"records from Pub/Sub subscription {subscription}" in proc.stdout
    rep = report(out)
    assert rep["conservation_ok"] and rep["counts"]["late"] == 0
    assert rep["counts"]["read"] == len(lines) + 2
    assert rep["counts"]["curated"] == batch["counts"]["curated"]
    assert rep["counts"]["dead_lettered"] == batch["counts"]["dead_lettered"] + 2
    assert rep["dead_letter_reasons"]["malformed"] == batch["dead_letter_reasons"].get("malformed", 0) + 2
    assert table_rows(pg_dsn, TABLE) == expected
    # Everything was acknowledged: nothing is left to deliver.
    left = subscriber.pull(request={"subscription": subscription, "max_messages": 10}, timeout=5)
    assert list(left.received_messages) == []

    again = one_line_error(cli(*args), 1)
    assert "cannot replay what it acknowledged" in again and "give a new --output" in again
    assert table_rows(pg_dsn, TABLE) == expected  # refused before anything was cleared


def test_a_missing_subscription_or_unreachable_emulator_is_one_error_line(prism_binary, pubsub_emulator, tmp_path):
    flags = ["--streaming", "--runner=PrismRunner", "--pg_dsn=postgresql://bp@127.0.0.1:9/bp", f"--output={tmp_path}/o"]
    sub = "projects/bp-test/subscriptions/nope"
    missing = spec_with_source(
        tmp_path / "missing.yaml", "ReadPubSub", {"subscription": sub, "emulator_host": pubsub_emulator}
    )
    error = one_line_error(cli(f"--pipeline={missing}", *flags), 1)
    assert f"Pub/Sub subscription '{sub}' does not exist" in error
    closed = spec_with_source(
        tmp_path / "closed.yaml", "ReadPubSub", {"subscription": sub, "emulator_host": "127.0.0.1:9"}
    )
    assert "Pub/Sub at 127.0.0.1:9 did not answer" in one_line_error(cli(f"--pipeline={closed}", *flags), 1)


@pytest.mark.timeout(600)
def test_kill_9_mid_stream_acknowledged_messages_stay_acknowledged_the_rest_go_to_the_next_run(
    prism_binary, pubsub_emulator, pg_dsn, tmp_path
):
    lines = sessions_lines(tmp_path / "in")
    name = uuid.uuid4().hex[:12]
    topic, subscription = f"projects/bp-test/topics/k-{name}", f"projects/bp-test/subscriptions/k-{name}"
    publisher = pubsub_v1.PublisherClient(
        transport=PublisherGrpcTransport(channel=grpc.insecure_channel(pubsub_emulator))
    )
    publisher.create_topic(name=topic)
    ack_deadline = 15
    subscriber_client(pubsub_emulator).create_subscription(name=subscription, topic=topic,
                                                           ack_deadline_seconds=ack_deadline)  # fmt: skip

    def publish(batch: list[bytes]) -> None:
        for f in [publisher.publish(topic, line) for line in batch]:
            f.result(timeout=30)

    cut = len(lines) * 3 // 5  # the rest after the kill: the killed job cannot have seen everything
    publish(lines[:cut])
    config = {"subscription": subscription, "emulator_host": pubsub_emulator}
    live = spec_with_source(tmp_path / "live.yaml", "ReadPubSub", config)
    out, table = tmp_path / "first", "sessions_pubsub_crash"
    args = ["--streaming", "--runner=PrismRunner", f"--pg_dsn={pg_dsn}", "--allowed_lateness=86400"]
    # Unbounded: the job would run forever; it is killed once sessions have reached PostgreSQL.
    job = subprocess.Popen([sys.executable, "-m", "beam_pipelines.main", f"--pipeline={live}", *args,
                            f"--pg_table={table}", f"--output={out}"], cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline, seen = time.monotonic() + 300, 0
        while time.monotonic() < deadline and job.poll() is None and not seen:
            try:
                seen = len(table_rows(pg_dsn, table))
            except psycopg.errors.UndefinedTable:
                seen = 0
            time.sleep(0.5)
        assert job.poll() is None, job.stderr.read().decode()
        assert seen > 0, "no session reached PostgreSQL before the kill"
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # prism and the SDK worker die with it
        job.wait(30)
    killed_at = time.monotonic()
    assert job.returncode == -signal.SIGKILL
    acked = {i for i, m in pubsub_messages(pubsub_emulator, topic).items() if m["acks"]}
    assert 0 < len(acked) <= cut
    publish(lines[cut:])

    # Over the killed job's outputs: refused, and nothing is touched.
    rows = table_rows(pg_dsn, table)
    refused = one_line_error(cli(f"--pipeline={live}", *args, f"--pg_table={table}", f"--output={out}"), 1)
    assert "cannot replay what it acknowledged" in refused
    assert table_rows(pg_dsn, table) == rows

    # Into a new output and table, once what the killed job held unacknowledged is due again.
    time.sleep(max(0.0, killed_at + ack_deadline + 1 - time.monotonic()))
    bounded = spec_with_source(tmp_path / "bounded.yaml", "ReadPubSub", {**config, "stop_after_idle": 3})
    again = tmp_path / "second"
    proc = cli(f"--pipeline={bounded}", *args, "--pg_table=sessions_pubsub_after", f"--output={again}")
    assert proc.returncode == 0, proc.stderr
    rep = report(again)
    assert rep["conservation_ok"]
    # Every message the killed job had not acknowledged, and none that it had.
    assert rep["counts"]["read"] == len(lines) - len(acked)
    states = pubsub_messages(pubsub_emulator, topic)
    assert len(states) == len(lines) and all(m["acks"] for m in states.values())
