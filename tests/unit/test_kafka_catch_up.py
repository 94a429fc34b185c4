"""The Kafka source over a backlog: it asks the consumer only for messages known to wait, so the
last table of a backlog goes out at once instead of waiting out the catch-up budget for messages
nobody has produced (librdkafka's consume(n, timeout) waits the whole timeout when fewer than n
messages come). Keeping up, a table still collects messages for the keeping-up budget.

Driven with a stand-in consumer that behaves as consume() does and an injected clock."""

from __future__ import annotations

from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.pvalue import TaggedOutput

from tests.unit.test_kafka_start_alignment import Clock, Message, Tracker
from transforms.ingest.kafka import _UNBOUNDED, ReadKafka, _PartitionRange, _ReadUnboundedPartitionFn

T0 = 1_709_280_000_000_000  # 2024-03-01T08:00:00Z


class Consumer:
    """consume(n, timeout) as librdkafka's: n messages at once if they are there, else whatever
    there is after the whole timeout (the clock moves by it). The cached high watermark is the end
    of what has been produced, as after a fetch."""

    def __init__(self, clock: Clock, produced: int, cached: bool = True):
        self.clock, self.produced, self.cached, self.at = clock, produced, cached, 0
        self.asks: list[tuple[int, float]] = []

    def assign(self, parts):
        self.at = parts[0].offset

    def consume(self, n, timeout):
        self.asks.append((n, timeout))
        got = [Message(o, T0 + o * 1000) for o in range(self.at, min(self.at + n, self.produced))]
        if len(got) < n:
            self.clock.now += timeout
        self.at += len(got)
        return got

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        if cached and not self.cached:
            return -1001, -1001  # librdkafka before its first fetch answer
        return 0, self.produced

    def close(self):
        pass


def reader(clock: Clock, **settings):
    read = ReadKafka(
        "127.0.0.1:1", "events", window_seconds=3600, allowed_lateness_seconds=600, clock=clock, **settings
    )
    fn = _ReadUnboundedPartitionFn(read._spec)
    fn.setup()
    return fn


def one_bundle(fn, consumer: Consumer, start: int = 0, partitions: int = 1) -> tuple[int, _PartitionRange]:
    """Runs one bundle of partition 0 (of ``partitions``); returns the rows read and the residual range."""
    fn._consumers[0] = consumer
    fn._at[0] = start
    tracker = Tracker(_PartitionRange(start, _UNBOUNDED, T0))
    out = list(fn._process((0, start, -1, partitions), tracker, ManualWatermarkEstimator(None)))
    return sum(len(v.value) for v in out if not isinstance(v, TaggedOutput)), tracker.residual


def test_the_last_table_of_a_backlog_does_not_wait_out_the_catch_up_budget():
    clock = Clock()
    fn = reader(clock, max_batch_records=5000, max_batch_seconds=0.25, catch_up_seconds=4.0, catch_up_backlog=1000)
    consumer = Consumer(clock, produced=12_000)
    rows, residual = one_bundle(fn, consumer)
    assert rows == 12_000
    assert residual.start == 12_000
    # Tables of 5000, 5000 and 2000, each asked for exactly what waits; then one wait for more
    # of at most the keeping-up budget, not the 4 s catch-up budget.
    assert [n for n, _ in consumer.asks[:3]] == [5000, 5000, 2000]
    assert clock.now <= 0.25


def test_keeping_up_a_table_collects_for_the_keeping_up_budget():
    clock = Clock()
    fn = reader(clock, max_batch_records=5000, max_batch_seconds=0.25)
    consumer = Consumer(clock, produced=0)
    rows, residual = one_bundle(fn, consumer)
    assert rows == 0 and residual.start == 0
    assert consumer.asks == [(5000, 0.25)]  # nothing known to wait: collect up to the budget


def test_partitions_read_one_after_another_share_the_keeping_up_budget():
    clock = Clock()
    fn = reader(clock, max_batch_records=5000, max_batch_seconds=0.25)
    for p in range(2):  # the other partition has a watermark too: neither waits for the other
        fn._report(ManualWatermarkEstimator(None), p, 2, T0)
    consumer = Consumer(clock, produced=0)
    one_bundle(fn, consumer, partitions=2)
    assert consumer.asks == [(5000, 0.125)]  # a bundle holding both partitions still ends within 0.25 s


def test_without_a_known_high_watermark_the_budget_still_bounds_the_wait():
    clock = Clock()
    fn = reader(clock, max_batch_records=5000, max_batch_seconds=0.25, catch_up_seconds=4.0, catch_up_backlog=1000)
    consumer = Consumer(clock, produced=3000, cached=False)
    rows, _ = one_bundle(fn, consumer)
    assert rows == 3000
    assert clock.now <= 0.25 + 1e-9
