"""The Kafka source at start-up, over a backlog whose partitions are far apart in event time:
until every partition has a watermark, a partition that has one reads small tables and waits, so
no batch is stamped hours ahead of a partition not yet read (streaming dedup forgets keys by
stamps; a stamp far ahead made it forget keys another partition still repeated). A partition
that never gets a watermark (an empty one) holds the others back for 30 s at most.

Driven bundle by bundle with a stand-in consumer and an injected clock; no broker."""

from __future__ import annotations

import json

from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.pvalue import TaggedOutput

from transforms.ingest.kafka import (
    _START_BATCH,
    _START_WAIT_SECONDS,
    _UNBOUNDED,
    ReadKafka,
    _PartitionRange,
    _PartitionTracker,
    _ReadUnboundedPartitionFn,
)
from transforms.ingest.kafka_time import NO_TIME

HOUR_US = 3_600_000_000
T0 = 1_709_280_000_000_000  # 2024-03-01T08:00:00Z


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Message:
    def __init__(self, offset: int, ts_us: int):
        self._offset = offset
        self._value = json.dumps({"ts": ts_us // 1000, "n": offset}).encode()

    def error(self):
        return None

    def value(self):
        return self._value

    def offset(self):
        return self._offset


class Consumer:
    """One partition's messages, returned in order from the assigned offset."""

    def __init__(self, messages: list[Message]):
        self.messages, self.at = messages, 0

    def assign(self, parts):
        self.at = parts[0].offset

    def consume(self, n, timeout):
        got = self.messages[self.at : self.at + n]
        self.at += len(got)
        return got

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return 0, len(self.messages)

    def close(self):
        pass


class Tracker:
    """The SDK's wrapper around the partition tracker, as far as the reader uses it."""

    def __init__(self, span):
        self.inner, self.residual = _PartitionTracker(span), None

    def current_restriction(self):
        return self.inner.current_restriction()

    def try_claim(self, position):
        return self.inner.try_claim(position)

    def defer_remainder(self, delay=None):
        self.residual = self.inner.try_split(0)[1]


class Partition:
    """One partition's read: its restriction and watermark estimator between bundles."""

    def __init__(self, fn, number: int, consumer: Consumer):
        self.fn, self.number = fn, number
        self.span = _PartitionRange(0, _UNBOUNDED, NO_TIME)
        self.estimator = ManualWatermarkEstimator(None)
        fn._consumers[number] = consumer

    def bundle(self) -> list[tuple[int, int]]:
        """Runs one bundle; returns (rows, stamp in us) per records table."""
        tracker = Tracker(self.span)
        out = list(self.fn._process((self.number, 0, -1, 2), tracker, self.estimator))
        self.span = tracker.residual
        return [(len(v.value), v.timestamp.micros) for v in out if not isinstance(v, TaggedOutput)]


def messages(count: int, first_us: int) -> list[Message]:
    return [Message(i, first_us + i * 1000) for i in range(count)]


def reader(clock: Clock):
    read = ReadKafka("127.0.0.1:1", "events", window_seconds=3600, allowed_lateness_seconds=600, clock=clock)
    fn = _ReadUnboundedPartitionFn(read._spec)
    fn.setup()
    return fn


def test_a_partition_read_first_waits_for_the_others_before_running_ahead():
    clock = Clock()
    fn = reader(clock)
    ahead = Partition(fn, 0, Consumer(messages(5000, T0 + 5 * HOUR_US)))  # five hours ahead
    behind = Partition(fn, 1, Consumer(messages(5000, T0)))

    assert sum(n for n, _ in ahead.bundle()) == _START_BATCH  # one small table, then it waits
    clock.now += 1
    assert ahead.bundle() == []  # the other partition has no watermark yet: still waiting
    assert ahead.span.start == _START_BATCH

    got = behind.bundle()  # now every partition has a watermark
    assert sum(n for n, _ in got) == 5000
    floor = T0 + 4999 * 1000  # the behind partition's watermark: the topic's floor
    got = ahead.bundle()
    assert sum(n for n, _ in got) == 5000 - _START_BATCH
    # Stamped at or below the floor, not at the ahead partition's own watermark, five hours on.
    assert all(stamp <= floor for _, stamp in got)


def test_an_empty_partition_holds_the_others_back_for_a_bounded_time():
    clock = Clock()
    fn = reader(clock)
    busy = Partition(fn, 0, Consumer(messages(5000, T0)))
    empty = Partition(fn, 1, Consumer([]))

    assert sum(n for n, _ in busy.bundle()) == _START_BATCH
    assert empty.bundle() == []
    clock.now += _START_WAIT_SECONDS - 1
    assert busy.bundle() == []  # the empty partition may yet get messages
    clock.now += 1
    assert sum(n for n, _ in busy.bundle()) == 5000 - _START_BATCH  # waited long enough: it reads on
