"""The `sessions` spec streaming from a real Pub/Sub emulator (scripts/pubsub.sh) on Prism, its
session windows upserted into a real PostgreSQL: equal to a batch run over the same records,
with garbage and empty messages counted as dead letters; a second start over the first one's
outputs is refused (Pub/Sub cannot replay what it acknowledged)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from tests.e2e.helpers import cli, one_line_error, report
from tests.integration.stream_specs import batch_results, sessions_lines, spec_with_source, table_rows
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
