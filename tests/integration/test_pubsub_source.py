"""ReadPubSub against a real Pub/Sub emulator (scripts/pubsub.sh: Google's pstest fake) on the
in-process FnApiRunner: every message arrives once, null and garbage payloads reach the dead
letters through Parse, late messages go to the late output, and messages are acknowledged
after their bundle is committed."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from tests.services import pubsub_messages
from transforms.ingest.parse import ParseRecords
from transforms.ingest.pubsub import PubSubSourceError, ReadPubSub, check_subscription, subscriber_client

BASE = datetime(2024, 3, 1, 10, tzinfo=timezone.utc)
PROJECT = "bp-test"
# Read by the test's Map (in-process runner): set once the reader has emitted the first phase.
_SEEN: dict[str, threading.Event] = {}


def _ts(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _event(i: int, minutes: float) -> bytes:
    return json.dumps({"event_id": f"e{i}", "ts": _ts(minutes), "n": i}).encode()


@pytest.fixture
def subscription(pubsub_emulator):
    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    publisher = pubsub_v1.PublisherClient(
        transport=PublisherGrpcTransport(channel=grpc.insecure_channel(pubsub_emulator))
    )
    name = uuid.uuid4().hex[:12]
    topic = f"projects/{PROJECT}/topics/t-{name}"
    sub = f"projects/{PROJECT}/subscriptions/s-{name}"
    publisher.create_topic(name=topic)
    subscriber = subscriber_client(pubsub_emulator)
    subscriber.create_subscription(name=sub, topic=topic, ack_deadline_seconds=10)

    def publish(messages: list[tuple[bytes, dict]]) -> None:
        futures = [publisher.publish(topic, data, **attrs) for data, attrs in messages]
        for f in futures:
            f.result(timeout=30)

    yield sub, publish, subscriber, topic
    subscriber.close()


# What the pipelines emit, by run (the in-process runner's DoFns are copies: they reach the test
# through this module's globals, not through closures).
_OUT: dict[str, list] = {}


class _Collect(beam.DoFn):
    """Appends each table's rows to ``_OUT[run]`` (a top-level class: pickled by reference, so
    its ``_OUT`` is this module's)."""

    def __init__(self, run: str, kind: str):
        self._run, self._kind = run, kind

    def process(self, table):
        _OUT[self._run].extend((self._kind, r) for r in table.to_pylist())


class _Note(beam.DoFn):
    def __init__(self, mark: str | None):
        self._mark = mark

    def process(self, table):
        if self._mark is not None:
            _SEEN[self._mark].set()
        yield table


def _run(sub: str, host: str, mark=None, idle: float = 2.0) -> tuple[list, list, list, list]:
    """(sources, parsed rows, dead letters, late letters) of a bounded read of ``sub``."""
    run = uuid.uuid4().hex
    _OUT[run] = []

    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = p | "Read" >> ReadPubSub(sub, window_seconds=3600, allowed_lateness_seconds=600, emulator_host=host,
                                       stop_after_idle_seconds=idle)  # fmt: skip
        records = out["records"] | "Note" >> beam.ParDo(_Note(mark))
        parsed = records | "Parse" >> ParseRecords("jsonl", ("event_id", "ts", "n"))
        records | "Sources" >> beam.Map(lambda t: t.select(["source"])) | "S" >> beam.ParDo(_Collect(run, "source"))
        parsed["parsed"] | "Rows" >> beam.Map(lambda t: t.select([0])) | "R" >> beam.ParDo(_Collect(run, "ok"))
        parsed["dead_letters"] | "Dead" >> beam.ParDo(_Collect(run, "dead"))
        out["late"] | "Late" >> beam.ParDo(_Collect(run, "late"))
    got = _OUT.pop(run)
    return tuple([r for k, r in got if k == kind] for kind in ("source", "ok", "dead", "late"))


def test_every_message_once_garbage_dead_lettered_and_acked(subscription, pubsub_emulator):
    sub, publish, subscriber, topic = subscription
    messages = [(_event(i, i * 0.5), {}) for i in range(300)]
    messages += [(b"{not json", {}), (b"", {"kind": "null payload"})]
    publish(messages)
    sources, ok, dead, late = _run(sub, pubsub_emulator)
    sources = [r["source"] for r in sources]
    assert len(sources) == len(set(sources)) == 302
    assert all(s.startswith(sub + "/") for s in sources)
    assert len(ok) == 300
    assert sorted(d["reason"] for d in dead) == ["malformed", "malformed"]
    assert late == []
    # Each message delivered once and acknowledged (by the bundles' finalization).
    states = pubsub_messages(pubsub_emulator, topic)
    assert len(states) == 302
    assert all(m == {"deliveries": 1, "acks": 1} for m in states.values()), states


def test_messages_behind_the_caught_up_watermark_are_late(subscription, pubsub_emulator):
    sub, publish, _, _ = subscription
    # Phase one: an hour of events, published out of order (Pub/Sub has no order anyway).
    first = [(_event(i, (i * 7) % 60), {}) for i in range(60)]
    publish(first)
    key = uuid.uuid4().hex
    _SEEN[key] = threading.Event()

    # Once the reader has emitted phase one (and so caught up: its watermark is the largest ts,
    # 10:59), phase two comes: one message 90 minutes behind (its window closed at 09:10 with
    # the allowed lateness), one inside the open window, one without a readable ts.
    second = [(_event(100, -90), {}), (_event(101, 30), {}), (b'{"event_id": "x", "ts": "soon"}', {})]

    def later():
        assert _SEEN[key].wait(60)
        publish(second)

    thread = threading.Thread(target=later)
    thread.start()
    sources, ok, _, late = _run(sub, pubsub_emulator, mark=key, idle=3.0)
    thread.join()
    assert [json.loads(r["raw"])["event_id"] for r in late] == ["e100"]
    (letter,) = late
    assert letter["reason"] == "late" and letter["stage"] == "ingest" and letter["field"] == "ts"
    assert "by subscription watermark 2024-03-01T10:59:00Z" in letter["error"]
    assert len(ok) == len(sources) == 62  # phase one, e101 and the unreadable ts (Validate's to judge)


def test_missing_subscription_is_one_clear_error(pubsub_emulator):
    sub = f"projects/{PROJECT}/subscriptions/none-{uuid.uuid4().hex[:8]}"
    with pytest.raises(PubSubSourceError, match="does not exist"):
        check_subscription(pubsub_emulator, sub, 10)
    with pytest.raises(Exception, match="does not exist"):
        _run(sub, pubsub_emulator)


def test_no_credentials_is_one_clear_error(monkeypatch, tmp_path):
    # No emulator, no credentials file, no gcloud login, and no probe of a metadata server.
    for name in ("PUBSUB_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(PubSubSourceError, match="no Google credentials to read Pub/Sub subscription"):
        check_subscription(None, f"projects/{PROJECT}/subscriptions/s", 5)


def test_config_is_checked_when_built():
    with pytest.raises(ValueError, match="subscription must be"):
        ReadPubSub("my-sub", window_seconds=60, allowed_lateness_seconds=0)
    with pytest.raises(ValueError, match="emulator_host"):
        ReadPubSub("projects/abcdef/subscriptions/sub", window_seconds=60, allowed_lateness_seconds=0,
                   emulator_host="http://x")  # fmt: skip
    with pytest.raises(ValueError, match="stop_after_idle_seconds"):
        ReadPubSub("projects/abcdef/subscriptions/sub", window_seconds=60, allowed_lateness_seconds=0,
                   stop_after_idle_seconds=0)  # fmt: skip
