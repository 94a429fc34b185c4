"""The Kafka source's outage budget, with a consumer that stands for a broker that is down and an
injected clock: an idle partition asks the broker, counts the time it does not answer, and fails
with one KafkaSourceError once the budget is spent; an answer in between starts the count again."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from transforms.ingest.kafka import _PROBE_SECONDS, KafkaSourceError, ReadKafka, _ReadPartitionFn


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Consumer:
    """consume() returns nothing (idle or down); get_watermark_offsets() answers while ``up``."""

    def __init__(self):
        self.up = True
        self.asks = 0

    def consume(self, n, timeout):
        return []

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        if cached:  # librdkafka's last fetch answer: says nothing about the broker, and asks nothing
            return -1001, -1001
        self.asks += 1
        if not self.up:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
        return 0, 10


def reader(clock: Clock, budget: float) -> _ReadPartitionFn:
    read = ReadKafka(
        "127.0.0.1:1", "events", window_seconds=3600, allowed_lateness_seconds=60, retry_for_s=budget, clock=clock
    )
    fn = _ReadPartitionFn(read._spec)
    fn.setup()
    return fn


def idle_poll(fn: _ReadPartitionFn, consumer: Consumer, clock: Clock) -> None:
    """One empty poll of an unbounded range of partition 0."""

    class Span:
        stop = 2**63 - 1

    fn._read_batch(consumer, None, 0, Span, 0, clock.now + 0.25, 100)


def test_an_idle_partition_asks_the_broker_only_every_few_seconds():
    clock, consumer = Clock(), Consumer()
    fn = reader(clock, budget=60)
    for _ in range(40):  # 20 s of polls, one every 0.5 s
        idle_poll(fn, consumer, clock)
        clock.now += 0.5
    assert consumer.asks == 20 // _PROBE_SECONDS - 1  # at 5, 10 and 15 s: not once per poll


def test_a_broker_down_longer_than_the_budget_fails_the_read_with_one_clear_error():
    clock, consumer = Clock(), Consumer()
    fn = reader(clock, budget=30)
    clock.now += _PROBE_SECONDS
    consumer.up = False
    idle_poll(fn, consumer, clock)  # the first failed ask starts the count
    for _ in range(29):
        clock.now += 1
        idle_poll(fn, consumer, clock)  # asked on every poll while down; 29 s: still within the budget
    assert consumer.asks == 30
    clock.now += 1
    with pytest.raises(KafkaSourceError) as e:
        idle_poll(fn, consumer, clock)
    assert str(e.value) == (
        "Kafka topic 'events' partition 0: broker 127.0.0.1:1 not reachable for 30s: Connection refused"
    )


def test_an_answer_within_the_budget_starts_the_count_again():
    clock, consumer = Clock(), Consumer()
    fn = reader(clock, budget=30)
    clock.now += _PROBE_SECONDS
    consumer.up = False
    for _ in range(25):
        idle_poll(fn, consumer, clock)
        clock.now += 1
    consumer.up = True
    idle_poll(fn, consumer, clock)  # the broker answers: the outage is over
    consumer.up = False
    clock.now += _PROBE_SECONDS
    for _ in range(25):  # a second outage of 25 s: 50 s down in all, but never 30 s in a row
        idle_poll(fn, consumer, clock)
        clock.now += 1


@pytest.mark.parametrize("budget", [0, -1, True, "300"])
def test_the_budget_must_be_a_positive_number(budget):
    with pytest.raises(ValueError, match="retry_for_s must be > 0"):
        ReadKafka("127.0.0.1:1", "events", window_seconds=3600, allowed_lateness_seconds=60, retry_for_s=budget)
