"""ReadKafka and beam_pipelines.produce against a real Kafka broker (scripts/kafka.sh via tests/services.py).

ReadKafka runs on the in-process FnApiRunner and on Prism (the cached binary, built by the artifacts
script when missing). A broker or a Prism binary that cannot be had fails the tests; nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to, is_empty
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from confluent_kafka import Consumer, Producer, TopicPartition

from beam_pipelines.produce import message_key, parse_rate
from beam_pipelines.runners import make_runner
from tests.e2e.helpers import ROOT
from tests.services import free_port
from transforms.ingest.kafka import ReadKafka

HOUR = 3600
LATENESS = 900  # 15 minutes
RECORDS_SCHEMA = pa.schema([("raw", pa.binary()), ("source", pa.string())])


def us(text: str) -> int:
    """Epoch microseconds of an ISO time (UTC when it has no offset)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1_000_000)


# (partition, value) in offset order. Window [h, h+1); late when window end + 15 min <= partition watermark.
MESSAGES = [
    (0, b'{"event_id": "a0", "ts": "2024-03-01T10:05:00Z"}'),  # 0/0 first: W = 10:05
    (0, b'{"event_id": "a1", "ts": "2024-03-01T11:30:00Z"}'),  # 0/1 W = 11:30
    (0, b'{"event_id": "a2", "ts": "2024-03-01T10:50:00Z"}'),  # 0/2 closes 11:15 <= 11:30: late
    (0, b'{"event_id": "a3", "ts": "yesterday"}'),  # 0/3 unreadable ts: passed on, W unchanged
    (0, b"this is not json"),  # 0/4 passed on (ParseRecords makes it malformed)
    (0, b'{"event_id": "a5", "ts": 1709291100}'),  # 0/5 11:05 (epoch s), closes 12:15 > 11:30: on time
    (0, b'{"event_id": "a6", "ts": 1709295300000}'),  # 0/6 12:15 (epoch ms): W = 12:15
    (0, b'{"event_id": "a7", "ts": "2024-03-01T13:05:00+02:00"}'),  # 0/7 11:05Z closes 12:15 <= 12:15: late
    (0, None),  # 0/8 null value: passed on as empty bytes
    (0, b'{"event_id": "a9", "ts": "2024-03-01 12:00:00"}'),  # 0/9 no offset = UTC, window [12, 13): on time
    (1, b'{"event_id": "b0", "ts": null}'),  # 1/0 no ts, no watermark yet
    (1, b'{"event_id": "b1", "ts": 1709283600.0}'),  # 1/1 09:00 (float epoch s): W = 09:00
    (1, b'{"event_id": "b2", "ts": "2024-03-01T07:30:00Z"}'),  # 1/2 closes 08:15 <= 09:00: late
    (1, b'{"event_id": "b3", "ts": "2024-03-01T08:10:00Z"}'),  # 1/3 closes 09:15 > 09:00; far behind 0's W
]
LATE = {"0/2", "0/7", "1/2"}
# The batch stamp of each message when every message is its own batch (max_batch_records=1),
# while the other partition has no watermark yet: min(W before it, its ts if on time and readable).
STAMPS_ONE_BY_ONE = {
    "0/0": us("2024-03-01T10:05:00"),
    "0/1": us("2024-03-01T10:05:00"),
    "0/2": us("2024-03-01T11:30:00"),
    "0/3": us("2024-03-01T11:30:00"),
    "0/4": us("2024-03-01T11:30:00"),
    "0/5": us("2024-03-01T11:05:00"),
    "0/6": us("2024-03-01T11:30:00"),
    "0/7": us("2024-03-01T12:15:00"),
    "0/8": us("2024-03-01T12:15:00"),
    "0/9": us("2024-03-01T12:00:00"),
    "1/0": MIN_TIMESTAMP.micros,
    "1/1": us("2024-03-01T09:00:00"),
    "1/2": us("2024-03-01T09:00:00"),
    "1/3": us("2024-03-01T08:10:00"),
}
# Once both partitions have a watermark, stamps are at or below the floor, the lower of the two:
# partition 1's W never passes 09:00, and partition 0's is 10:05 or later.
FLOOR_ONCE_BOTH = {"0": us("2024-03-01T09:00:00"), "1": STAMPS_ONE_BY_ONE["1/1"] + 1}


def _stamps_match(topic: str):
    def check(stamps):
        assert sorted(k for k, _ in stamps) == sorted(f"{topic}/{k}" for k in STAMPS_ONE_BY_ONE), stamps
        for source, stamp in stamps:
            key = source[len(topic) + 1 :]
            own = STAMPS_ONE_BY_ONE[key]
            assert stamp in (own, min(own, FLOOR_ONCE_BOTH[key.split("/")[0]])), (source, stamp)

    return check


@pytest.fixture
def events_topic(kafka_bootstrap, new_topic):
    """A 2-partition topic holding MESSAGES at known offsets."""
    topic = new_topic(partitions=2, prefix="src")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for partition, value in MESSAGES:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(30) == 0
    return topic


def _sources(topic: str, names) -> list[str]:
    return sorted(f"{topic}/{n}" for n in names)


def _make_pipeline(runner: str):
    if runner == "direct":
        return test_pipeline.TestPipeline(runner=FnApiRunner())
    options = PipelineOptions(["--runner=PrismRunner"])
    return test_pipeline.TestPipeline(runner=make_runner(options), options=options)


class _FastClock:
    """Advances 100 s per reading: every bundle's time budget is spent after its first table, so
    with one message per table every message is read in its own bundle, after a checkpoint."""

    def __init__(self):
        self._now = 0.0

    def __call__(self) -> float:
        self._now += 100.0
        return self._now


class _RowStamps(beam.DoFn):
    """Each row of a table as (source, the element's timestamp in micros)."""

    def process(self, table, timestamp=beam.DoFn.TimestampParam):
        for source in table.column("source").to_pylist():
            yield source, timestamp.micros


def _late_rows_match(topic: str):
    values = {f"{topic}/{p}/{i}": v for p, i, v in _offsets()}

    def check(rows):
        assert sorted(r["source"] for r in rows) == _sources(topic, LATE), rows
        for r in rows:
            assert (r["stage"], r["reason"], r["field"]) == ("ingest", "late", "ts"), r
            assert r["raw"] == values[r["source"]].decode(), r
        by_source = {r["source"]: r["error"] for r in rows}
        assert by_source[f"{topic}/0/2"] == (
            "event time 2024-03-01T10:50:00Z is in window [2024-03-01T10:00:00Z, 2024-03-01T11:00:00Z), closed at "
            "2024-03-01T11:15:00Z (allowed lateness 900s) by partition watermark 2024-03-01T11:30:00Z"
        )
        assert "window [2024-03-01T11:00:00Z, 2024-03-01T12:00:00Z)" in by_source[f"{topic}/0/7"]
        assert "watermark 2024-03-01T12:15:00Z" in by_source[f"{topic}/0/7"]
        assert "watermark 2024-03-01T09:00:00Z" in by_source[f"{topic}/1/2"]

    return check


def _offsets():
    seen = {0: 0, 1: 0}
    for p, v in MESSAGES:
        yield p, seen[p], v or b""
        seen[p] += 1


@pytest.mark.timeout(900)
@pytest.mark.parametrize("runner", ["direct", "prism"])
@pytest.mark.parametrize("batch, backlog", [(1, 10_000), (5000, 10_000), (100, 100)])
def test_records_and_late_messages_by_offset(runner, batch, backlog, kafka_bootstrap, events_topic, request):
    """With batch 1, a checkpoint after every message: the watermark must come back with each resumed range.
    With a backlog of one table, bundles take the catch-up budget."""
    if runner == "prism":
        request.getfixturevalue("prism_binary")
    topic = events_topic
    p = _make_pipeline(runner)
    out = p | "ReadKafka" >> ReadKafka(
        kafka_bootstrap,
        topic,
        window_seconds=HOUR,
        allowed_lateness_seconds=LATENESS,
        stop_at_end=True,
        max_batch_records=batch,
        max_batch_seconds=5.0,
        catch_up_seconds=6.0,
        catch_up_backlog=backlog,
        clock=_FastClock() if batch == 1 else None,
    )
    records = out["records"] | "RecordRows" >> beam.FlatMap(
        lambda t: zip(t["source"].to_pylist(), t["raw"].to_pylist())
    )
    expected = [(f"{topic}/{p_}/{i}", v) for p_, i, v in _offsets() if f"{p_}/{i}" not in LATE]
    assert_that(records, equal_to(expected), label="Records")
    schemas = out["records"] | "RecordSchema" >> beam.Map(lambda t: t.schema.equals(RECORDS_SCHEMA))
    assert_that(schemas | "OneSchema" >> beam.Distinct(), equal_to([True]), label="Schema")
    late = out["late"] | "LateRows" >> beam.FlatMap(lambda t: t.to_pylist())
    assert_that(late, _late_rows_match(topic), label="Late")
    if batch == 1:
        stamps = (out["records"], out["late"]) | "Both" >> beam.Flatten() | "Stamps" >> beam.ParDo(_RowStamps())
        assert_that(stamps, _stamps_match(topic), label="Stamps")
    p.run().wait_until_finish()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runner", ["direct", "prism"])
def test_start_offsets_resume_with_a_fresh_watermark(runner, kafka_bootstrap, events_topic, request):
    if runner == "prism":
        request.getfixturevalue("prism_binary")
    topic = events_topic
    p = _make_pipeline(runner)
    out = p | "ReadKafka" >> ReadKafka(
        kafka_bootstrap,
        topic,
        window_seconds=HOUR,
        allowed_lateness_seconds=LATENESS,
        start_offsets={0: 5, 1: 2},
        stop_at_end=True,
    )
    records = out["records"] | "Sources" >> beam.FlatMap(lambda t: t["source"].to_pylist())
    # 1/2 was late after 1/1; resumed at 1/2 there is no watermark yet, so it is on time now.
    assert_that(records, equal_to(_sources(topic, ["0/5", "0/6", "0/8", "0/9", "1/2", "1/3"])), label="Records")
    late = out["late"] | "LateSources" >> beam.FlatMap(lambda t: t["source"].to_pylist())
    assert_that(late, equal_to(_sources(topic, ["0/7"])), label="Late")
    p.run().wait_until_finish()


def test_start_offsets_at_the_end_read_nothing(kafka_bootstrap, events_topic, pipeline):
    p = pipeline()
    out = p | "ReadKafka" >> ReadKafka(
        kafka_bootstrap, events_topic, window_seconds=HOUR, allowed_lateness_seconds=0,
        start_offsets={0: 10, 1: 4}, stop_at_end=True,
    )  # fmt: skip
    assert_that(out["records"], is_empty(), label="NoRecords")
    assert_that(out["late"], is_empty(), label="NoLate")
    p.run().wait_until_finish()


def test_an_empty_topic_finishes(kafka_bootstrap, new_topic, pipeline):
    topic = new_topic(partitions=2, prefix="empty")
    p = pipeline()
    out = p | "ReadKafka" >> ReadKafka(
        kafka_bootstrap, topic, window_seconds=HOUR, allowed_lateness_seconds=0, stop_at_end=True
    )
    assert_that(out["records"], is_empty(), label="NoRecords")
    p.run().wait_until_finish()


def test_start_offsets_for_a_partition_the_topic_lacks_fail(kafka_bootstrap, events_topic, pipeline):
    p = pipeline()
    _ = p | "ReadKafka" >> ReadKafka(
        kafka_bootstrap, events_topic, window_seconds=HOUR, allowed_lateness_seconds=0,
        start_offsets={7: 0}, stop_at_end=True,
    )  # fmt: skip
    with pytest.raises(Exception, match=r"start_offsets name partitions \[7\]"):
        p.run().wait_until_finish()


def test_a_missing_topic_fails_with_a_clear_message(kafka_bootstrap, pipeline):
    p = pipeline()
    _ = p | "ReadKafka" >> ReadKafka(
        kafka_bootstrap, "no.such.topic", window_seconds=HOUR, allowed_lateness_seconds=0, stop_at_end=True
    )
    with pytest.raises(Exception) as e:
        p.run().wait_until_finish()
    assert f"Kafka topic 'no.such.topic' does not exist on {kafka_bootstrap}" in str(e.value)


def test_an_unreachable_broker_fails_within_the_timeout(pipeline):
    bootstrap = f"127.0.0.1:{free_port()}"
    p = pipeline()
    _ = p | "ReadKafka" >> ReadKafka(
        bootstrap, "events", window_seconds=HOUR, allowed_lateness_seconds=0, stop_at_end=True,
        connect_timeout_seconds=2,
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(Exception) as e:
        p.run().wait_until_finish()
    assert time.monotonic() - started < 30
    assert f"Kafka at {bootstrap} did not answer" in str(e.value) and "'events'" in str(e.value)


# --- beam_pipelines.produce --------------------------------------------------------------------------------------


def _produce(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "beam_pipelines.produce", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-produce", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < expected and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=1.0):
                assert m.error() is None, m.error()
                got.append((m.partition(), m.offset(), m.key(), m.value()))
        return got
    finally:
        consumer.close()


def test_produce_sends_each_non_blank_line_keyed_by_a_field(kafka_bootstrap, new_topic, tmp_path):
    topic = new_topic(partitions=2, prefix="produce")
    lines = [f'{{"event_id": "e{i % 7}", "n": {i}}}'.encode() for i in range(60)]
    lines[10] = b'{"event_id": 42, "n": 10}'  # a non-string key: its JSON text
    lines[20] = b"not json"  # no key
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines[:30]) + b"\n\n   \n")
    (tmp_path / "b.jsonl").write_bytes(b"\r\n".join(lines[30:]))  # CRLF, no final newline
    proc = _produce(f"--bootstrap={kafka_bootstrap}", f"--topic={topic}", f"--input={tmp_path}/*.jsonl",
                    "--partitions-by=event_id")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"produced 60 messages to {topic} on {kafka_bootstrap} from 2 file(s)")
    got = _consume_all(kafka_bootstrap, topic, 2, 60)
    assert sorted(v for *_, v in got) == sorted(lines)
    for *_, key, value in got:
        assert key == message_key(value, "event_id")
    assert {k for *_, k, _ in got} >= {b"e0", b"42", None}
    # One key, one partition, in file order.
    by_key: dict = {}
    for partition, _, key, value in sorted(got):
        if key is not None:
            by_key.setdefault(key, []).append((partition, lines.index(value)))
    for key, seen in by_key.items():
        assert len({p for p, _ in seen}) == 1, key
        assert [i for _, i in seen] == sorted(i for _, i in seen), key


def test_produce_without_key_and_with_a_rate(kafka_bootstrap, new_topic, tmp_path):
    topic = new_topic(partitions=1, prefix="produce")
    (tmp_path / "in.jsonl").write_bytes(b"".join(f'{{"event_id": "e{i}"}}\n'.encode() for i in range(20)))
    started = time.monotonic()
    proc = _produce(f"--bootstrap={kafka_bootstrap}", f"--topic={topic}", f"--input={tmp_path}/in.jsonl",
                    "--partitions-by=none", "--rate=40/s")  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "produced 20 messages" in proc.stdout
    assert elapsed >= 19 / 40
    got = _consume_all(kafka_bootstrap, topic, 1, 20)
    assert [(o, k, v) for _, o, k, v in got] == [(i, None, f'{{"event_id": "e{i}"}}'.encode()) for i in range(20)]


def test_produce_errors_are_one_line(kafka_bootstrap, tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b'{"event_id": "e"}\n')
    proc = _produce(f"--bootstrap={kafka_bootstrap}", "--topic=no.such.topic", f"--input={tmp_path}/in.jsonl")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: Kafka topic 'no.such.topic' does not exist on {kafka_bootstrap}"
    bootstrap = f"127.0.0.1:{free_port()}"
    proc = _produce(f"--bootstrap={bootstrap}", "--topic=t", f"--input={tmp_path}/in.jsonl", "--timeout=2")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"error: Kafka at {bootstrap} did not answer within 2s")
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _produce(f"--bootstrap={kafka_bootstrap}", "--topic=t", f"--input={tmp_path}/none-*.jsonl")
    assert proc.returncode == 1 and "no file matches" in proc.stderr


def test_parse_rate():
    assert parse_rate("5000/s") == 5000.0 and parse_rate("2.5") == 2.5
    assert parse_rate(None) is None and parse_rate("0/s") is None
    with pytest.raises(ValueError, match="--rate must look like 5000/s"):
        parse_rate("fast")
