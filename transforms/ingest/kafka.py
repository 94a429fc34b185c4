"""ReadKafka: a Kafka topic -> raw record batches, with event-time watermarks and a lateness gate.

A Python-native source (a splittable DoFn on confluent-kafka) for Beam's portable runners
(Prism) and the in-process FnApiRunner: ``Impulse`` -> list the topic's partitions -> one
``OffsetRange`` restriction per partition, read in offset order, ``try_claim`` per message.

Outputs:

- ``records``: tables with ``raw`` (binary, the message value) and ``source``
  (``"<topic>/<partition>/<offset>"``), shaped like the file reader's line batches, so
  ``ParseRecords("jsonl", ...)`` parses them unchanged. A message with a null value is passed
  as empty bytes: ParseRecords makes it a ``malformed`` dead letter (it does not skip empty
  lines; only the file reader does), so it is counted, never lost.
- ``late``: DeadLetter tables (stage ``ingest``, reason ``late``).

Event time and watermark. A message's event time is its JSON field ``ts`` read exactly like
``TimestampField`` (``kafka_time.event_times_us``); a message whose ``ts`` cannot be read
goes to ``records`` (validation dead-letters it) and does not move the watermark. Per
partition, the watermark W is the largest event time read so far. The SDF's
``ManualWatermarkEstimator`` holds it, so it is the partition's output watermark; the
restriction carries it too (the tracker updates it with each claim), so a checkpointed range
resumes with exactly the W after its last claimed message, whenever the checkpoint happened. A
message is late when ``window_end(ts) + allowed_lateness <= W_before`` (W before it, in offset
order): by then a downstream window with that lateness has been closed by this watermark. A
read started from ``start_offsets`` starts with no watermark.

Batch timestamp. Each batch is timestamped ``min(F, min ts of its on-time records)``, where F
is the topic's floor at batch start (the lowest partition watermark, the one reported; F <= W;
W while some partition has none yet). Downstream re-timestamps rows to their window start and groups them; a row is
dropped there only if the GroupByKey's input watermark has passed its window end plus the
allowed lateness. An element in flight holds every downstream watermark at or below its own
timestamp, so while a batch (and the rows cut from it) travels, downstream watermarks stay at
or below T <= ts < window_end(ts) for each on-time row: that row is not even late. Where the
GroupByKey is fused with the read, its input watermark is at most the watermark this
partition reported before the batch (W at batch start), and an on-time row satisfies
``window_end + lateness > W_before >= W at batch start``: not droppable. Stamping a batch at
the watermark after it instead would let a later message of the same batch move W past the
window of an earlier, on-time one. Dead letters of late messages carry the same timestamp.

Bundles. A bundle reads tables of up to ``max_batch_records`` until the partition is idle,
the range ends or its time budget is spent, then checkpoints
(``tracker.defer_remainder()``, the portable SDK's ``ProcessContinuation.resume()``; with a
short delay when idle), so its output is committed with the watermark. Restrictions are never
split by the runner: two bundles would judge one partition's messages out of order. A bounded
range (``stop_at_end``) finishes when its last offset is claimed; its watermark then goes to
+infinity. Without ``stop_at_end`` the read is unbounded (streaming runners only). Each DoFn
instance keeps one consumer per partition it reads (created on first use, closed in
``teardown()``), so a range resumed where its consumer stands keeps the prefetched messages.
The time budget is ``max_batch_seconds`` while the reader keeps up (results soon; shared by the
partitions, since a runner may read them one after another in one bundle), and grows
to ``catch_up_seconds`` while ``catch_up_backlog`` messages or more still wait after the last
table (a backlog: after a restart or a burst, fewer and larger bundles catch up faster, and
nobody is waiting on results that are late already). A table asks the consumer only for the
messages its last fetch says are waiting (``consume(n)`` waits its whole timeout when fewer than
n come): the end of a backlog goes out at once, not after the catch-up budget.

Outages. librdkafka reconnects on its own, and to ``consume()`` a broker that is down looks like
an idle partition. So an idle partition asks the broker for its end offset every few seconds; once
an ask fails (or a fetch returns a retriable error) the partition counts as unreachable until the
broker answers again, and after ``retry_for_s`` of that the read fails with one
``KafkaSourceError`` naming the topic, partition and broker. Nothing read is lost either way:
offsets are claimed only for messages returned.
"""

from __future__ import annotations

import bisect
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from transforms.ingest.kafka_time import (
    NO_TIME,
    batch_timestamp_us,
    event_times_us,
    late_mask,
    watermarks_before,
    window_end_us,
)
from transforms.ingest.log_repeats import quiet_repeats
from transforms.ingest.stream_read import WatermarkFloor
from transforms.records import dead_letters, iso_text, typed
from transforms.stage_times import record

__all__ = ["KafkaSourceError", "ReadKafka"]

STAGE = "ingest"
LATE = "late"
_UNBOUNDED = sys.maxsize
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_RECORDS = pa.schema([("raw", pa.binary()), ("source", pa.string())])
_US = pa.timestamp("us", tz="UTC")
# How long an idle partition waits before it is polled again. Short: an idle bundle has already
# waited out its poll, and a message arriving in the pause waits for both (a stream's first
# events, or a quiet stream's).
_IDLE_RESUME_SECONDS = 0.05
# Every table polls at least once, for at least this long, even when the time budget is spent.
_MIN_POLL_SECONDS = 0.05
# Until every partition has a watermark, a partition that has one reads tables of at most this
# many messages and then waits for the others, for at most _START_WAIT_SECONDS (an empty
# partition never gets one): stamps cannot run hours ahead of a partition not yet read.
_START_BATCH = 1_000
_START_WAIT_SECONDS = 30.0
# A broker outage looks like an idle partition to consume(): an idle partition asks the broker for
# its offsets at most this often, and every idle poll while the last ask failed.
_PROBE_SECONDS = 5.0
_PROBE_TIMEOUT_SECONDS = 2.0
# The consumer settings this source depends on; consumer_config may not change them.
_FIXED = ("bootstrap.servers", "enable.auto.commit", "enable.auto.offset.store", "allow.auto.create.topics")
# librdkafka's own log lines (broker connection trouble) go here, to the worker's logging, one
# per kind of complaint per interval.
_log = quiet_repeats(logging.getLogger(__name__))
_log.addHandler(logging.NullHandler())
# One INFO line when a worker starts reading a partition: the sign that the job is consuming
# (the streaming launcher shows it; harnesses wait for it before producing).
PROGRESS_LOGGER = __name__ + ".progress"
_progress = logging.getLogger(PROGRESS_LOGGER)


def keep_up_seconds(s: dict, partitions: int) -> float:
    """One partition's share of the keeping-up budget.

    A runner may hand one bundle every partition of the topic (Prism does), read one after
    another: each takes its share, so the bundle's output is committed within the budget
    whatever the partition count.
    """
    return max(s["max_batch_seconds"] / max(partitions, 1), _MIN_POLL_SECONDS)


def bundle_seconds(backlog: int, s: dict, partitions: int = 1) -> float:
    """A partition's time budget in a bundle: short while the reader keeps up, longer over a backlog."""
    if backlog >= s["catch_up_backlog"]:
        return max(s["catch_up_seconds"], s["max_batch_seconds"])
    return keep_up_seconds(s, partitions)


class KafkaSourceError(RuntimeError):
    """The broker cannot be reached, the topic does not exist, or a partition read failed."""


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _consumer_config(bootstrap: str, extra: dict | None) -> dict:
    extra = dict(extra or {})
    fixed = sorted(set(extra) & set(_FIXED))
    if fixed:
        raise ValueError(f"consumer_config may not set {', '.join(fixed)}: ReadKafka manages them")
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"consumer_config entries must be str -> str|int|float|bool, got {key!r}: {value!r}")
    # One consumer per partition per worker: a smaller prefetch queue than librdkafka's 64 MB each.
    config = {"group.id": "beam-pipelines-read-kafka", "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
              "queued.max.messages.kbytes": 16384}  # fmt: skip
    config.update(extra)
    # Offsets live in the restrictions: nothing is committed to the broker, no topic is created.
    config.update({"bootstrap.servers": bootstrap, "enable.auto.commit": False, "enable.auto.offset.store": False,
                   "allow.auto.create.topics": False})  # fmt: skip
    return config


class _ListPartitionsFn(beam.DoFn):
    """Impulse -> (partition, start offset, stop offset or -1) per partition of the topic."""

    def __init__(self, spec: dict):
        self._s = spec

    def setup(self):
        self._consumer = Consumer(self._s["config"], logger=_log)

    def teardown(self):
        self._consumer.close()

    def _fail(self, what: str, error: KafkaException) -> KafkaSourceError:
        s = self._s
        detail = error.args[0].str() if error.args and isinstance(error.args[0], KafkaError) else str(error)
        return KafkaSourceError(
            f"Kafka at {s['bootstrap']} did not answer {what} for topic {s['topic']!r} "
            f"within {s['timeout']:g}s (is the broker running?): {detail}"
        )

    def process(self, _):
        s = self._s
        topic = s["topic"]
        try:
            meta = self._consumer.list_topics(topic, timeout=s["timeout"])
        except KafkaException as e:
            raise self._fail("a metadata request", e) from e
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            detail = f" ({found.error.str()})" if found is not None and found.error is not None else ""
            raise KafkaSourceError(f"Kafka topic {topic!r} does not exist on {s['bootstrap']}{detail}")
        partitions = sorted(found.partitions)
        unknown = sorted(set(s["start_offsets"]) - set(partitions))
        if unknown:
            raise KafkaSourceError(f"start_offsets name partitions {unknown} that topic {topic!r} does not have")
        for p in partitions:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=s["timeout"], cached=False
                )
            except KafkaException as e:
                raise self._fail(f"the offsets of partition {p}", e) from e
            start = s["start_offsets"].get(p, low)
            # The end is the snapshot taken now: messages produced later are not read.
            stop = max(start, high) if s["stop_at_end"] else -1
            yield p, start, stop, len(partitions)


class _PartitionRange(OffsetRange):
    """Offsets ``[start, stop)`` of one partition, and the partition watermark before ``start``."""

    def __init__(self, start: int, stop: int, watermark_us: int = int(NO_TIME)):
        super().__init__(start, stop)
        self.watermark_us = int(watermark_us)

    def __eq__(self, other):
        return super().__eq__(other) and self.watermark_us == getattr(other, "watermark_us", None)

    def __hash__(self):
        return hash((self.start, self.stop, self.watermark_us))

    def __repr__(self):
        return f"_PartitionRange(start={self.start}, stop={self.stop}, watermark_us={self.watermark_us})"


class _PartitionTracker(OffsetRestrictionTracker):
    """Claims ``(offset, event time)`` in offset order and keeps the watermark with the claims.

    A checkpoint hands the residual the watermark after the last claimed message, whenever it
    happens (the SDK serialises claims and splits), so a resumed range judges its first message
    exactly as an uninterrupted read would. Only checkpoints are accepted: a runner split would
    let two bundles judge one partition's messages out of order.
    """

    def __init__(self, span: _PartitionRange):
        super().__init__(span)
        self._first = span.watermark_us
        self._watermark_us = span.watermark_us

    def try_claim(self, position):
        offset, event_us = position
        if not super().try_claim(offset):
            return False
        if event_us > self._watermark_us:
            self._watermark_us = int(event_us)
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0:
            return None
        split = super().try_split(0)
        if split is None:
            return None
        primary, residual = split
        self._range = _PartitionRange(primary.start, primary.stop, self._first)
        return self._range, _PartitionRange(residual.start, residual.stop, self._watermark_us)

    def is_bounded(self):
        return self._range.stop != _UNBOUNDED


class _OffsetsProvider(RestrictionProvider):
    def initial_restriction(self, element):
        _, start, stop, _ = element
        return _PartitionRange(start, stop if stop >= 0 else _UNBOUNDED)

    def create_tracker(self, restriction):
        return _PartitionTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()


def _late_letters(values: list[bytes], sources: pa.Array, ts: np.ndarray, before: np.ndarray, s: dict) -> pa.Table:
    end = window_end_us(ts, s["window_seconds"])
    closes = end + np.int64(s["lateness_seconds"]) * 1_000_000

    def text(micros: np.ndarray) -> pa.Array:
        return pc.replace_substring(iso_text(pa.array(micros, pa.int64()).cast(_US)), ".000000Z", "Z")

    error = pc.binary_join_element_wise(
        "event time ", text(ts), " is in window [", text(end - np.int64(s["window_seconds"]) * 1_000_000), ", ",
        text(end), "), closed at ", text(closes), f" (allowed lateness {s['lateness_seconds']}s) by partition "
        "watermark ", text(before), "",
    )  # fmt: skip
    raw = pa.array([v.decode("utf-8", errors="backslashreplace") for v in values], pa.string())
    return dead_letters(STAGE, LATE, s["field"], error, raw, sources)


class _ReadPartitionFn(beam.DoFn):
    """(partition, start, stop) with an offset restriction -> records and late dead letters."""

    def __init__(self, spec: dict):
        self._s = spec

    def setup(self):
        # One consumer per partition this instance reads, kept across bundles: a range resumed
        # where its consumer stands keeps the messages librdkafka has already fetched.
        self._consumers: dict[int, Consumer] = {}
        self._at: dict[int, int] = {}  # partition -> next offset its consumer returns
        self._announce: set[int] = set()  # new consumers, announced once their first fetch returned
        self._clock = self._s["clock"]
        self._began = self._clock()
        self._key = self._s["read_id"]
        self._read = beam.metrics.Metrics.counter("kafka", "read")
        self._late = beam.metrics.Metrics.counter("kafka", "late")
        self._retries = beam.metrics.Metrics.counter("kafka", "retriable_errors")
        self._contact: dict[int, float] = {}  # partition -> when the broker last answered for it
        self._down: dict[int, float] = {}  # partition -> when the broker first failed to answer
        self._errors: dict[int, str] = {}  # partition -> its consumer's last client error

    def teardown(self):
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()

    def process(
        self,
        element,
        tracker=beam.DoFn.RestrictionParam(_OffsetsProvider()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        return self._process(element, tracker, watermark)

    def _consumer(self, partition: int, offset: int) -> Consumer:
        consumer = self._consumers.get(partition)
        if consumer is None:
            # Its last client error (say, "Connect to ... failed: Connection refused") explains an outage better
            # than the failed ask for offsets does.
            config = {**self._s["config"], "error_cb": lambda e, p=partition: self._errors.__setitem__(p, e.str())}
            consumer = self._consumers[partition] = Consumer(config, logger=_log)
            self._announce.add(partition)
        # Forgotten until the batch is read: a failed read leaves the consumer at an unknown offset.
        if self._at.pop(partition, None) != offset:
            consumer.assign([TopicPartition(self._s["topic"], partition, offset)])
        return consumer

    def _process(self, element, tracker, watermark):
        partition, count = element[0], element[3]
        span = tracker.current_restriction()
        if span.start >= span.stop:
            return
        # The estimator reports the watermark (the floor over every partition); the restriction
        # carries the partition's own across checkpoints.
        floor = self._report(watermark, partition, count, span.watermark_us)
        if self._waits_for_others(floor, span.watermark_us):
            tracker.defer_remainder(Duration.of(_IDLE_RESUME_SECONDS))
            return
        consumer = self._consumer(partition, span.start)
        # Tables of up to max_batch_records until the partition is idle, the range ends, or
        # max_batch_seconds have passed: then the bundle ends and its output is committed.
        started = self._clock()
        keep_up = keep_up_seconds(self._s, count)
        deadline = started + keep_up
        batch_start, next_offset = span.watermark_us, span.start
        while True:  # at least one table per bundle, however the clock runs
            most = min(_START_BATCH, self._s["max_batch_records"]) if floor == NO_TIME else self._s["max_batch_records"]
            values, raw, offsets, ts, ended, idle, in_step = self._read_batch(
                consumer, tracker, partition, span, next_offset, deadline, most, keep_up
            )
            if partition in self._announce and in_step:
                self._announce.discard(partition)
                _progress.info("consuming Kafka topic %s partition %d from offset %d", self._s["topic"], partition,
                               span.start)  # fmt: skip
            if values:
                yield from self._emit(partition, values, raw, offsets, ts, batch_start, floor)
                batch_start, next_offset = max(batch_start, int(ts.max())), offsets[-1] + 1
                floor = self._report(watermark, partition, count, batch_start)
                deadline = started + bundle_seconds(
                    self._backlog(consumer, partition, span, next_offset), self._s, count
                )
            if ended or idle or self._clock() >= deadline or self._waits_for_others(floor, batch_start):
                break
        # Other partitions may have moved the floor while this one was idle.
        self._report(watermark, partition, count, batch_start)
        if not ended:
            if in_step:
                self._at[partition] = next_offset
            # Checkpoint (the portable SDK's ProcessContinuation.resume()): the rest of the range
            # is processed in a later bundle, after this one's output is committed with the watermark.
            tracker.defer_remainder(Duration.of(_IDLE_RESUME_SECONDS) if idle else None)

    def _waits_for_others(self, floor: int, own_us: int) -> bool:
        """Whether this partition, having a watermark, waits for one from every other partition."""
        return floor == NO_TIME and own_us != NO_TIME and self._clock() - self._began < _START_WAIT_SECONDS

    def _report(self, watermark, partition: int, count: int, own_us: int) -> int:
        """Records this partition's watermark and reports the topic's floor; returns the floor."""
        floor = WatermarkFloor.floor(self._key, partition, count, own_us)
        current = watermark.current_watermark()
        if floor != NO_TIME and (current is None or current.micros < floor):
            watermark.set_watermark(Timestamp(micros=floor))
        return floor

    def _backlog(self, consumer: Consumer, partition: int, span, next_offset: int) -> int:
        """Messages known to wait after ``next_offset`` (from the last fetch; no broker call)."""
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(self._s["topic"], partition), cached=True)
        except KafkaException:
            return 0
        if span.stop != _UNBOUNDED:
            high = min(high, span.stop)
        return max(0, high - next_offset)

    def _read_batch(
        self,
        consumer: Consumer,
        tracker,
        partition: int,
        span,
        next_offset: int,
        deadline: float,
        most: int,
        keep_up: float | None = None,
    ):
        """Claims and reads up to one table.

        Returns (values, the same as one binary array, offsets, event times, range ended,
        partition idle, consumer still at the offset after the last claimed one).
        """
        s = self._s
        values: list[bytes] = []
        arrays: list[pa.Array] = []  # the claimed part of each chunk, as binary
        offsets: list[int] = []
        times: list[np.ndarray] = []
        ended = idle = polled = False
        in_step = True
        table_started = self._clock()
        while len(values) < most and not (ended or idle):
            now = self._clock()
            wait = deadline - now
            if wait <= 0 and polled:
                break
            polled = True
            want = most - len(values)
            position = offsets[-1] + 1 if offsets else next_offset
            if span.stop != _UNBOUNDED:
                # consume() waits for as many messages as asked: never ask past the range's end.
                want = min(want, span.stop - position)
            # Nor past the messages known to wait (the last fetch's high watermark): a backlog's
            # last table would otherwise wait out a catch-up budget for messages not yet produced.
            # Once they are read, the table waits at most the keeping-up budget for more.
            known = self._backlog(consumer, partition, span, position)
            if known > 0:
                want = min(want, known)
            elif values:
                wait = min(wait, table_started + (keep_up or s["max_batch_seconds"]) - now)
                if wait <= 0:
                    break
            messages = consumer.consume(want, timeout=max(wait, _MIN_POLL_SECONDS))
            if not messages:
                ended, idle = self._past_end(consumer, tracker, partition, span.stop), True
                if not ended:
                    self._check_broker(consumer, partition)
                break
            good = []
            for m in messages:
                error = m.error()
                if error is None:
                    good.append(m)
                    continue
                if not error.retriable():
                    raise KafkaSourceError(
                        f"reading Kafka topic {s['topic']!r} partition {partition} from {s['bootstrap']}: {error.str()}"
                    )
                self._retries.inc()
                self._unreachable(partition, error.str())
                idle, in_step = True, False  # messages after the error were dropped: assign again
                break
            if good:
                self._reached(partition)
            chunk = [m.value() or b"" for m in good]
            chunk_raw = pa.array(chunk, pa.binary())  # once: read for event times, then emitted
            chunk_ts = event_times_us(chunk_raw, s["field"])
            chunk_offsets = [m.offset() for m in good]
            # One claim per chunk, of its last offset in the range (claiming an offset claims
            # the ones before it): the range is never split while a table is read (only
            # checkpointed between tables), so per-message claims only cost time. Offsets may
            # skip numbers (transaction markers), so the range's end is found by offset.
            claimed = bisect.bisect_left(chunk_offsets, span.stop)
            if claimed and not tracker.try_claim((chunk_offsets[claimed - 1], int(chunk_ts[:claimed].max()))):
                claimed = 0
            if claimed < len(good) or (claimed and chunk_offsets[claimed - 1] == span.stop - 1):
                ended = True
            offsets += chunk_offsets[:claimed]
            values += chunk[:claimed]
            arrays.append(chunk_raw.slice(0, claimed))
            times.append(chunk_ts[:claimed])
        ts = np.concatenate(times) if times else np.zeros(0, np.int64)
        raw = pa.concat_arrays(arrays) if len(arrays) > 1 else arrays[0] if arrays else pa.array([], pa.binary())
        return values, raw, offsets, ts, ended, idle, in_step

    def _check_broker(self, consumer: Consumer, partition: int) -> None:
        """After an empty poll: whether the broker is there (asked at most every _PROBE_SECONDS
        while it answers), failing the read once it has not answered for ``retry_for_s``."""
        last = self._contact.get(partition, self._began)
        if partition not in self._down and self._clock() - last < _PROBE_SECONDS:
            return
        try:
            consumer.get_watermark_offsets(
                TopicPartition(self._s["topic"], partition), timeout=_PROBE_TIMEOUT_SECONDS, cached=False
            )
        except KafkaException as e:
            self._unreachable(partition, e.args[0].str() if e.args and isinstance(e.args[0], KafkaError) else str(e))
        else:
            self._reached(partition)

    def _reached(self, partition: int) -> None:
        now = self._clock()
        self._contact[partition] = now
        self._errors.pop(partition, None)
        since = self._down.pop(partition, None)
        if since is not None:
            _log.warning("Kafka broker %s answers again for topic %s partition %d after %.0fs",
                         self._s["bootstrap"], self._s["topic"], partition, now - since)  # fmt: skip

    def _unreachable(self, partition: int, why: str) -> None:
        """Counts toward the outage budget; raises KafkaSourceError once it is spent."""
        s, now = self._s, self._clock()
        why = self._errors.get(partition, why)
        since = self._down.setdefault(partition, now)
        if since == now:
            _log.warning("Kafka broker %s not reachable for topic %s partition %d (%s); retrying for up to %.0fs",
                         s["bootstrap"], s["topic"], partition, why, s["retry_for_s"])  # fmt: skip
        if now - since >= s["retry_for_s"]:
            raise KafkaSourceError(
                f"Kafka topic {s['topic']!r} partition {partition}: broker {s['bootstrap']} not reachable "
                f"for {s['retry_for_s']:.0f}s: {why}"
            )

    def _past_end(self, consumer: Consumer, tracker, partition: int, stop: int) -> bool:
        """Whether a bounded range has nothing left (its tail may be offsets no message holds)."""
        if stop == _UNBOUNDED:
            return False
        (position,) = consumer.position([TopicPartition(self._s["topic"], partition)])
        if position.offset >= stop:
            tracker.try_claim((stop, NO_TIME))  # fails, and so marks the range done
            return True
        return False

    def _emit(self, partition: int, values: list[bytes], raw: pa.Array, offsets: list[int], ts: np.ndarray, start: int,
              floor: int):  # fmt: skip
        s = self._s
        self._read.inc(len(values))
        before, _ = watermarks_before(ts, start)
        late = late_mask(ts, before, s["window_seconds"], s["lateness_seconds"])
        # Stamped at or below the topic's floor (the watermark reported), not this partition's
        # own: downstream state (DeduplicateStream) may then trust stamps to say how far every
        # partition has come. Until every partition has a watermark, this partition's own.
        stamp_us = batch_timestamp_us(start if floor == NO_TIME else min(start, floor), ts, late)
        stamp = MIN_TIMESTAMP if stamp_us == NO_TIME else Timestamp(micros=stamp_us)
        prefix = pa.scalar(f"{s['topic']}/{partition}/", pa.string())
        sources = pc.binary_join_element_wise(prefix, pa.array(offsets, pa.int64()).cast(pa.string()), "")
        n_late = int(late.sum())
        record("read", partition=partition, last_offset=offsets[-1], rows=len(values))
        if n_late < len(values):
            keep = np.flatnonzero(~late) if n_late else None
            table = pa.Table.from_arrays(
                [raw, sources] if keep is None else [raw.take(keep), sources.take(keep)], schema=_RECORDS
            )
            yield TimestampedValue(table, stamp)
        if n_late:
            self._late.inc(n_late)
            idx = np.flatnonzero(late)
            letters = _late_letters([values[i] for i in idx], sources.take(idx), ts[idx], before[idx], s)
            yield beam.pvalue.TaggedOutput(LATE, TimestampedValue(letters, stamp))


class _ReadUnboundedPartitionFn(_ReadPartitionFn):
    """The same read without an end offset: an unbounded amount of work per partition."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element,
        tracker=beam.DoFn.RestrictionParam(_OffsetsProvider()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        return self._process(element, tracker, watermark)


class ReadKafka(beam.PTransform):
    """Reads a Kafka topic into raw record batches, routing late messages to dead letters.

    Args:
        bootstrap: Broker list, ``host:port[,host:port...]``.
        topic: The topic to read (every partition).
        window_seconds: Size of the downstream fixed event-time windows (aligned to the epoch).
        allowed_lateness_seconds: How long after a window's end its messages are still taken.
        start_offsets: Partition -> first offset to read (the resume point of an earlier run);
            other partitions start at their earliest offset.
        stop_at_end: Read up to the end offsets seen when the partitions are listed, then
            finish (a bounded read); otherwise read forever (streaming runners).
        max_batch_records: Most messages per emitted table.
        max_batch_seconds: A bundle's time budget while the reader keeps up: its tables are
            emitted and committed at most this long after the bundle began (shared by the
            partitions a bundle reads one after another).
        catch_up_seconds: The budget while at least ``catch_up_backlog`` messages still wait
            after the last table (never less than ``max_batch_seconds``).
        catch_up_backlog: How many waiting messages make a backlog.
        consumer_config: Extra librdkafka consumer settings (security, fetch sizes, ...).
        event_time_field: The JSON field holding each message's event time.
        connect_timeout_seconds: How long listing the partitions may wait for the broker.
        retry_for_s: How long a partition read rides out a broker that does not answer
            (reconnecting all along) before the job fails with ``KafkaSourceError``.
        clock: Monotonic seconds for the batch time budget (default ``time.monotonic``).
        label: The transform's label.

    Returns a dict: ``records`` (tables with ``raw`` binary and ``source`` string columns) and
    ``late`` (DeadLetter tables, stage ``ingest``, reason ``late``).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        window_seconds: int,
        allowed_lateness_seconds: int,
        start_offsets: dict[int, int] | None = None,
        stop_at_end: bool = False,
        max_batch_records: int = 50000,
        max_batch_seconds: float = 0.25,
        catch_up_seconds: float = 4.0,
        catch_up_backlog: int = 10_000,
        consumer_config: dict | None = None,
        event_time_field: str = "ts",
        connect_timeout_seconds: float = 15.0,
        retry_for_s: float = 300.0,
        clock: Callable[[], float] | None = None,
        label: str | None = None,
    ):
        super().__init__(label)
        if not isinstance(bootstrap, str) or not bootstrap.strip():
            raise ValueError("bootstrap must be a non-empty host:port list")
        if not isinstance(topic, str) or not _TOPIC.match(topic):
            raise ValueError(f"topic must be 1-249 characters of [A-Za-z0-9._-], got {topic!r}")
        offsets = dict(start_offsets or {})
        for p, o in offsets.items():
            _int("start_offsets partition", p, 0)
            _int(f"start_offsets[{p}]", o, 0)
        if not isinstance(max_batch_seconds, (int, float)) or not max_batch_seconds > 0:
            raise ValueError(f"max_batch_seconds must be > 0, got {max_batch_seconds!r}")
        if not isinstance(catch_up_seconds, (int, float)) or not catch_up_seconds > 0:
            raise ValueError(f"catch_up_seconds must be > 0, got {catch_up_seconds!r}")
        if not isinstance(connect_timeout_seconds, (int, float)) or not connect_timeout_seconds > 0:
            raise ValueError(f"connect_timeout_seconds must be > 0, got {connect_timeout_seconds!r}")
        if isinstance(retry_for_s, bool) or not isinstance(retry_for_s, (int, float)) or not retry_for_s > 0:
            raise ValueError(f"retry_for_s must be > 0, got {retry_for_s!r}")
        if not isinstance(event_time_field, str) or not event_time_field:
            raise ValueError("event_time_field must be a non-empty string")
        self._stop_at_end = bool(stop_at_end)
        self._spec = {
            "bootstrap": bootstrap,
            "topic": topic,
            "window_seconds": _int("window_seconds", window_seconds, 1),
            "lateness_seconds": _int("allowed_lateness_seconds", allowed_lateness_seconds, 0),
            "start_offsets": offsets,
            "stop_at_end": self._stop_at_end,
            "max_batch_records": _int("max_batch_records", max_batch_records, 1),
            "max_batch_seconds": float(max_batch_seconds),
            "catch_up_seconds": float(catch_up_seconds),
            "catch_up_backlog": _int("catch_up_backlog", catch_up_backlog, 1),
            "config": _consumer_config(bootstrap, consumer_config),
            "field": event_time_field,
            "timeout": float(connect_timeout_seconds),
            "retry_for_s": float(retry_for_s),
            "clock": clock or time.monotonic,
            # One read of the topic: its partitions share a watermark floor (see WatermarkFloor).
            "read_id": uuid.uuid4().hex,
        }

    def expand(self, pbegin):
        read = _ReadPartitionFn if self._stop_at_end else _ReadUnboundedPartitionFn
        partitions = (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "ListPartitions"
            >> beam.ParDo(_ListPartitionsFn(self._spec))
            .with_input_types(bytes)
            .with_output_types(beam.typehints.Tuple[int, int, int, int])
        )
        out = partitions | "ReadPartitions" >> beam.ParDo(read(self._spec)).with_outputs(
            LATE, main="records"
        ).with_input_types(beam.typehints.Tuple[int, int, int, int])
        return {"records": typed(out.records), "late": typed(out.late)}
