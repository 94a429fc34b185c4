"""What the Pub/Sub and Kinesis readers share: a resumable read position, a watermark floor
over a stream's shards, and the emission of one read batch (records and late dead letters).

A read is a splittable DoFn whose restriction is a :class:`StreamSpan`: the position after
which it reads (a Kinesis sequence number, a count of Pub/Sub claims; None: from the start)
and the reader's watermark state after that position. Each message read is claimed with the
state after it, so a checkpoint (the only split accepted) hands the rest of the read exactly
the state an uninterrupted read would have: a resumed read judges lateness the same way.
Lateness and batch timestamps follow the Kafka source's rules (``kafka_time``).
"""

from __future__ import annotations

import threading

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from transforms.ingest.kafka_time import NO_TIME, batch_timestamp_us, late_mask, window_end_us
from transforms.records import dead_letters, iso_text

__all__ = ["END", "LATE", "RECORDS", "STAGE", "StreamSpan", "SpanProvider", "WatermarkFloor", "emit_batch"]

STAGE = "ingest"
LATE = "late"
RECORDS = pa.schema([("raw", pa.binary()), ("source", pa.string())])
# Claimed to say the read has nothing more to do (a closed shard, a drained bounded read); the
# claim fails, like claiming past an offset range's end.
END = "end"
_US = pa.timestamp("us", tz="UTC")


class StreamSpan:
    """The rest of one stream read: after ``after`` (None: from the start), with ``state``.

    ``done`` marks the part a bundle has finished (a checkpoint's primary, or a read that
    ended); ``bounded`` whether the read ends by itself.
    """

    def __init__(self, after, state, bounded: bool, done: bool = False):
        self.after, self.state, self.bounded, self.done = after, state, bool(bounded), bool(done)

    def _key(self):
        return (self.after, self.state, self.bounded, self.done)

    def __eq__(self, other):
        return isinstance(other, StreamSpan) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"StreamSpan(after={self.after!r}, state={self.state!r}, bounded={self.bounded}, done={self.done})"


class _SpanTracker(RestrictionTracker):
    """Claims ``(position, state)`` in increasing position order, or :data:`END`.

    Only checkpoints are accepted (``try_split(0)``): a runner split would let two bundles read
    one stream's messages out of order and judge them differently.
    """

    def __init__(self, span: StreamSpan):
        self._span = span
        self._last, self._state = span.after, span.state
        self._claimed = 0
        self._ended = span.done

    def current_restriction(self):
        return self._span

    def current_progress(self):
        return RestrictionProgress(completed=self._claimed, remaining=0 if self._ended else 1)

    def try_claim(self, position):
        if self._ended:
            return False
        if position == END:
            self._ended = True
            return False
        at, state = position
        if self._last is not None and at <= self._last:
            raise ValueError(f"position {at!r} claimed after {self._last!r}: claims must increase")
        self._last, self._state = at, state
        self._claimed += 1
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0 or self._ended:
            return None
        s = self._span
        primary = StreamSpan(s.after, s.state, s.bounded, done=True)
        residual = StreamSpan(self._last, self._state, s.bounded)
        self._span, self._ended = primary, True
        return primary, residual

    def check_done(self):
        if not self._ended:
            raise ValueError(f"the read after {self._last!r} was neither finished nor checkpointed")

    def is_bounded(self):
        return self._span.bounded


class SpanProvider(RestrictionProvider):
    """An element's whole read: after the element's last item when it is a tuple (a start
    position: an int, a decimal string, which elements carry for sequence numbers wider than
    64 bits, or None), else from the start; with the reader's initial ``state``."""

    def __init__(self, bounded: bool, state):
        self._bounded, self._state = bool(bounded), state

    def initial_restriction(self, element):
        after = element[-1] if isinstance(element, tuple) else None
        return StreamSpan(int(after) if isinstance(after, str) else after, self._state, self._bounded)

    def create_tracker(self, restriction):
        return _SpanTracker(restriction)

    def restriction_size(self, element, restriction):
        return 0 if restriction.done else 1

    def split(self, element, restriction):
        yield restriction  # one reader per stream (or shard), in order


class WatermarkFloor:
    """The watermark each shard (Kafka partition, Kinesis shard) of one read has reached in this
    process; every shard reports their minimum, so no shard's watermark overstates another's.

    Prism takes a splittable DoFn stage's output watermark from the residuals of the bundle that
    finished last, not the minimum over every shard still being read: a shard read ahead moved
    the downstream watermark past windows another was still filling, and their records were
    dropped as late after the aggregation's GroupByKey. The minimum is correct on every runner;
    runners that combine restrictions' watermarks themselves lose nothing by it. Shared within a
    process: Prism's LOOPBACK worker reads every shard in the launcher's process.
    """

    _lock = threading.Lock()
    _reads: dict[str, dict[int, int]] = {}

    @classmethod
    def floor(cls, read_id: str, shard: int, count: int, watermark_us: int) -> int:
        """Records ``shard``'s watermark; the minimum over the read's ``count`` shards
        (:data:`NO_TIME` while any of them has none)."""
        with cls._lock:
            marks = cls._reads.setdefault(read_id, {})
            if watermark_us != NO_TIME and watermark_us > marks.get(shard, NO_TIME):
                marks[shard] = watermark_us
            if any(i not in marks for i in range(count)):
                return int(NO_TIME)
            return min(marks[i] for i in range(count))


def report_watermark(estimator, watermark_us: int) -> None:
    """Moves a ManualWatermarkEstimator forward to ``watermark_us`` (never back)."""
    current = estimator.current_watermark()
    if watermark_us != NO_TIME and (current is None or current.micros < watermark_us):
        estimator.set_watermark(Timestamp(micros=watermark_us))


def _late_letters(values, sources: pa.Array, ts: np.ndarray, before: np.ndarray, s: dict, what: str) -> pa.Table:
    end = window_end_us(ts, s["window_seconds"])
    closes = end + np.int64(s["lateness_seconds"]) * 1_000_000

    def text(micros: np.ndarray) -> pa.Array:
        return pc.replace_substring(iso_text(pa.array(micros, pa.int64()).cast(_US)), ".000000Z", "Z")

    error = pc.binary_join_element_wise(
        "event time ", text(ts), " is in window [", text(end - np.int64(s["window_seconds"]) * 1_000_000), ", ",
        text(end), "), closed at ", text(closes), f" (allowed lateness {s['lateness_seconds']}s) by {what} watermark ",
        text(before), "",
    )  # fmt: skip
    raw = pa.array([v.decode("utf-8", errors="backslashreplace") for v in values], pa.string())
    return dead_letters(STAGE, LATE, s["field"], error, raw, sources)


def emit_batch(values: list[bytes], sources: pa.Array, ts: np.ndarray, before: np.ndarray, start_us: int, s: dict,
               what: str, late_counter=None):  # fmt: skip
    """The outputs of one read batch: the on-time records, and the late ones as dead letters.

    Args:
        values: Message payloads (empty bytes for none: Parse dead-letters them as malformed).
        sources: Each message's ``source`` text.
        ts: Event times (``kafka_time.NO_TIME`` for unreadable ones).
        before: The watermark each message was judged against.
        start_us: The watermark before the batch, or the read's floor when lower: no output is
            stamped later (DeduplicateStream trusts stamps not to pass the slowest shard).
        s: The read's settings: ``window_seconds``, ``lateness_seconds``, ``field``.
        what: Whose watermark, in the late dead letters' error (``shard``, ``subscription``).
        late_counter: A Beam counter of late messages.

    Each output is timestamped ``min(watermark before the batch, min on-time event time)``:
    while it travels, no downstream watermark passes the end of any of its records' windows
    (see ``kafka_time.batch_timestamp_us``).
    """
    late = late_mask(ts, before, s["window_seconds"], s["lateness_seconds"])
    stamp_us = batch_timestamp_us(start_us, ts, late)
    stamp = MIN_TIMESTAMP if stamp_us == NO_TIME else Timestamp(micros=stamp_us)
    n_late = int(late.sum())
    if n_late < len(values):
        raw = pa.array(values, pa.binary())
        if n_late:
            keep = np.flatnonzero(~late)
            raw, kept = raw.take(keep), sources.take(keep)
        else:
            kept = sources
        yield TimestampedValue(pa.Table.from_arrays([raw, kept], schema=RECORDS), stamp)
    if n_late:
        if late_counter is not None:
            late_counter.inc(n_late)
        idx = np.flatnonzero(late)
        letters = _late_letters([values[i] for i in idx], sources.take(idx), ts[idx], before[idx], s, what)
        yield beam.pvalue.TaggedOutput(LATE, TimestampedValue(letters, stamp))


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_seconds(name: str, value, minimum: float = 0.0, strict: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be a number {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)
