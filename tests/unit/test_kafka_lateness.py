"""The Kafka source's event-time rules as pure functions: no broker."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.transforms.window import FixedWindows
from apache_beam.utils.timestamp import Timestamp

from tests.unit.test_flatscan import _random_lines
from transforms.ingest import flatjson
from transforms.ingest.kafka import ReadKafka, _OffsetsProvider, _PartitionRange, bundle_seconds
from transforms.ingest.kafka_time import (
    NO_TIME,
    batch_timestamp_us,
    event_times_us,
    late_mask,
    watermarks_before,
    window_end_us,
)
from transforms.ingest.stream_read import WatermarkFloor

HOUR = 3600
LATE_S = 600


def us(text: str) -> int:
    dt = datetime.fromisoformat(text)
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def arr(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_window_end_is_aligned_to_the_epoch_like_fixed_windows():
    times = arr(
        us("2024-03-01T10:00:00"),
        us("2024-03-01T10:59:59.999999"),
        us("2024-03-01T11:00:00"),
        us("1969-12-31T23:30:00"),  # before the epoch: floors, not truncates
        0,
    )
    ends = window_end_us(times, HOUR)
    assert ends.tolist() == [
        us("2024-03-01T11:00:00"),
        us("2024-03-01T11:00:00"),
        us("2024-03-01T12:00:00"),
        0,
        HOUR * 1_000_000,
    ]
    beam_windows = FixedWindows(HOUR)
    for t, end in zip(times.tolist(), ends.tolist()):
        (window,) = beam_windows.assign(FixedWindows.AssignContext(Timestamp(micros=t)))
        assert window.end.micros == end
    assert window_end_us(arr(us("2024-03-01T10:07:00")), 300).tolist() == [us("2024-03-01T10:10:00")]


def test_late_exactly_at_window_end_plus_lateness_and_not_a_microsecond_before():
    ts = us("2024-03-01T10:30:00")  # window [10:00, 11:00), closes at 11:10
    closes = us("2024-03-01T11:10:00")
    times = arr(ts, ts, ts)
    before = arr(closes, closes - 1, closes + 1)
    assert late_mask(times, before, HOUR, LATE_S).tolist() == [True, False, True]
    # The last microsecond of the window is judged like the rest of it; the next one is the next window.
    edge = arr(us("2024-03-01T10:59:59.999999"), us("2024-03-01T11:00:00"))
    assert late_mask(edge, arr(closes, closes), HOUR, LATE_S).tolist() == [True, False]
    # Zero lateness: late once the watermark reaches the window end.
    assert late_mask(arr(ts, ts), arr(us("2024-03-01T11:00:00"), us("2024-03-01T11:00:00") - 1), HOUR, 0).tolist() == [
        True,
        False,
    ]


def test_no_event_time_or_no_watermark_is_never_late():
    far = us("2030-01-01T00:00:00")
    times = arr(NO_TIME, us("2024-03-01T10:00:00"), us("2024-03-01T10:00:00"))
    assert late_mask(times, arr(far, NO_TIME, far), HOUR, LATE_S).tolist() == [False, False, True]


def test_watermark_is_the_running_max_of_readable_times():
    t = [us(f"2024-03-01T{h}:00:00") for h in ("10", "12", "11", "13")]
    times = arr(t[0], NO_TIME, t[1], t[2], NO_TIME, t[3])
    before, after = watermarks_before(times, NO_TIME)
    assert before.tolist() == [NO_TIME, t[0], t[0], t[1], t[1], t[1]]
    assert after == t[3]
    # Resumed from an earlier watermark that is ahead of the batch: it holds.
    before, after = watermarks_before(arr(t[0], t[2]), t[1])
    assert before.tolist() == [t[1], t[1]] and after == t[1]
    before, after = watermarks_before(arr(), t[1])
    assert before.tolist() == [] and after == t[1]
    before, after = watermarks_before(arr(NO_TIME, NO_TIME), NO_TIME)
    assert before.tolist() == [NO_TIME, NO_TIME] and after == NO_TIME


def test_event_times_read_every_ts_form_like_the_validator():
    base = us("2024-03-01T10:00:00")
    values = [
        b'{"ts": "2024-03-01T10:00:00Z"}',
        b'{"ts": "2024-03-01T12:00:00+02:00"}',
        b'{"ts": "2024-03-01T05:00:00-0500"}',
        b'{"ts": "2024-03-01T10:00:00"}',  # no offset: UTC
        b'{"ts": "2024-03-01 10:00:00.250"}',
        b'{"ts": 1709287200}',  # epoch seconds
        b'{"ts": 1709287200.5}',  # epoch seconds, float
        b'{"ts": 1709287200123}',  # epoch milliseconds (>= 10**11)
        b'{"ts": "1709287200"}',  # an integer string, like the validator
        b'{"ts": " 2024-03-01T10:00:00Z "}',
        b'{"other": 1, "ts": "2024-03-01T10:00:00z"}',
    ]
    expected = [base, base, base, base, base + 250_000, base, base + 500_000, base + 123_000, base, base, base]
    assert event_times_us(values).tolist() == expected


def test_unreadable_event_times_are_no_time():
    values = [
        b'{"ts": "yesterday"}',
        b'{"ts": null}',
        b"{}",
        b'{"ts": true}',
        b'{"ts": {"at": 1}}',
        b'{"ts": "1999-12-31T23:59:59Z"}',  # outside [2000, 2100), as the validator rules
        b'{"ts": 4102444800}',  # 2100-01-01
        b'[{"ts": 1709287200}]',  # not an object
        b"not json",
        b"",
        None,  # a null message value
        b'{"ts": 1e400}',
    ]
    assert event_times_us(values).tolist() == [NO_TIME] * len(values)


def test_event_time_field_is_configurable():
    values = [b'{"ts": "bad", "at": 1709287200}']
    assert event_times_us(values, "at").tolist() == [us("2024-03-01T10:00:00")]
    assert event_times_us(values).tolist() == [NO_TIME]


def test_batch_timestamp_is_the_min_of_the_start_watermark_and_on_time_event_times():
    w = us("2024-03-01T12:00:00")
    times = arr(us("2024-03-01T12:30:00"), us("2024-03-01T11:20:00"), us("2024-03-01T09:00:00"), NO_TIME)
    late = np.array([False, False, True, False])
    # An on-time record behind the watermark pulls the stamp down; the late one does not.
    assert batch_timestamp_us(w, times, late) == us("2024-03-01T11:20:00")
    # All on-time records ahead of the watermark: the watermark.
    assert batch_timestamp_us(w, times[:1], late[:1]) == w
    # Only late and unreadable records: the watermark.
    assert batch_timestamp_us(w, times[2:], late[2:]) == w
    # No watermark yet: the earliest on-time event time; with nothing readable either, no time.
    assert batch_timestamp_us(NO_TIME, times, late) == us("2024-03-01T11:20:00")
    assert batch_timestamp_us(NO_TIME, arr(NO_TIME), np.array([False])) == NO_TIME


def test_a_batch_stamp_never_passes_an_on_time_window_end():
    rng = np.random.default_rng(5)
    start = us("2024-03-01T00:00:00")
    for _ in range(200):
        times = start + rng.integers(0, 6 * HOUR * 1_000_000, size=20)
        times[rng.random(20) < 0.1] = NO_TIME
        w0 = int(start + rng.integers(0, 6 * HOUR * 1_000_000))
        before, _ = watermarks_before(times, w0)
        late = late_mask(times, before, HOUR, LATE_S)
        stamp = batch_timestamp_us(w0, times, late)
        on_time = (~late) & (times != NO_TIME)
        assert stamp <= w0
        assert (stamp < window_end_us(times[on_time], HOUR)).all()
        assert (window_end_us(times[on_time], HOUR) + LATE_S * 1_000_000 > before[on_time]).all()


def test_partition_restrictions_checkpoint_with_their_watermark_but_refuse_runner_splits():
    provider = _OffsetsProvider()
    assert provider.initial_restriction((0, 5, 9, 2)) == _PartitionRange(5, 9, NO_TIME)
    unbounded = provider.initial_restriction((1, 5, -1, 2))
    assert not provider.create_tracker(unbounded).is_bounded()
    tracker = provider.create_tracker(_PartitionRange(5, 9, us("2024-03-01T09:00:00")))
    assert tracker.is_bounded()
    assert tracker.try_claim((5, us("2024-03-01T10:00:00")))
    assert tracker.try_claim((6, NO_TIME))  # no event time: the watermark stays
    assert tracker.try_split(0.5) is None  # two bundles would judge one partition out of order
    primary, residual = tracker.try_split(0)
    assert primary == _PartitionRange(5, 7, us("2024-03-01T09:00:00"))
    assert residual == _PartitionRange(7, 9, us("2024-03-01T10:00:00"))
    assert not tracker.try_claim((7, us("2024-03-01T11:00:00")))
    tracker.check_done()
    # A checkpoint before any claim hands the whole range on, watermark unchanged.
    fresh = provider.create_tracker(_PartitionRange(7, 9, us("2024-03-01T10:00:00")))
    assert fresh.try_split(0) == (_PartitionRange(7, 7, us("2024-03-01T10:00:00")), residual)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window_seconds": 0}, "window_seconds must be an integer >= 1"),
        ({"window_seconds": 60.5}, "window_seconds must be an integer"),
        ({"allowed_lateness_seconds": -1}, "allowed_lateness_seconds must be an integer >= 0"),
        ({"start_offsets": {0: -3}}, "start_offsets[0] must be an integer >= 0"),
        ({"start_offsets": {"0": 3}}, "start_offsets partition must be an integer"),
        ({"max_batch_records": 0}, "max_batch_records must be an integer >= 1"),
        ({"max_batch_seconds": 0}, "max_batch_seconds must be > 0"),
        ({"catch_up_seconds": 0}, "catch_up_seconds must be > 0"),
        ({"catch_up_backlog": 0}, "catch_up_backlog must be an integer >= 1"),
        ({"consumer_config": {"enable.auto.commit": True}}, "may not set enable.auto.commit"),
        ({"consumer_config": {"bootstrap.servers": "x:1"}}, "may not set bootstrap.servers"),
        ({"topic": "bad topic"}, "topic must be 1-249 characters"),
        ({"bootstrap": " "}, "bootstrap must be a non-empty"),
        ({"event_time_field": ""}, "event_time_field must be a non-empty string"),
        ({"connect_timeout_seconds": -1}, "connect_timeout_seconds must be > 0"),
    ],
)
def test_bad_config_fails_when_the_transform_is_built(kwargs, message):
    args = {"bootstrap": "127.0.0.1:9092", "topic": "events", "window_seconds": HOUR, "allowed_lateness_seconds": 60}
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        ReadKafka(args.pop("bootstrap"), args.pop("topic"), **args)
    assert message in str(e.value)


def test_bundles_get_longer_only_over_a_backlog():
    s = {"max_batch_seconds": 1.0, "catch_up_seconds": 4.0, "catch_up_backlog": 10_000}
    assert bundle_seconds(0, s) == 1.0  # keeping up: results within a second
    assert bundle_seconds(9_999, s) == 1.0
    assert bundle_seconds(10_000, s) == 4.0  # behind: fewer, larger bundles
    assert bundle_seconds(10_000, {**s, "max_batch_seconds": 5.0}) == 5.0  # never shorter than the normal budget


def test_every_partition_reports_the_lowest_watermark_of_the_topic():
    # A partition read ahead must not move the downstream watermark past windows another
    # partition is still filling (Prism takes a stage's watermark from its last bundle).
    floor = WatermarkFloor.floor
    assert floor("read-a", 1, 2, 3_000) == NO_TIME  # partition 0 has no watermark yet
    assert floor("read-a", 0, 2, 1_000) == 1_000
    assert floor("read-a", 1, 2, 9_000) == 1_000  # partition 1 is ahead: the floor stays
    assert floor("read-a", 0, 2, NO_TIME) == 1_000  # a batch without event times moves nothing
    assert floor("read-a", 0, 2, 500) == 1_000  # a partition's watermark never goes back
    assert floor("read-a", 0, 2, 4_000) == 4_000
    assert floor("read-b", 0, 1, 7) == 7  # another read of the topic has a floor of its own


def _times(rng: random.Random) -> bytes:
    base = 1_709_287_200 + rng.randrange(-(10**6), 10**6)
    at = datetime.fromtimestamp(base, timezone.utc)
    return rng.choice([
        str(base).encode(), str(base * 1000).encode(), f"{base}.{rng.randrange(10**6):06d}".encode(),
        f"{base * 1000}.5".encode(), b"1e400", b"-1", b"true", b"null", b'"yesterday"', b'{"at": 1}',
        b'"%s"' % at.isoformat().encode(), b'"%s"' % at.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode(),
        b'"%s"' % at.strftime("%Y-%m-%dT%H:%M:%S+02:00").encode(), b'"%s"' % at.strftime("%Y-%m-%d %H:%M").encode(),
    ])  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_event_times_read_by_the_compiled_scanner_equal_those_parsed_one_by_one(seed, monkeypatch):
    rng = random.Random(seed)
    lines = _random_lines(seed, 2000)  # every shape of line, flat or not, ts of any kind
    for i in rng.sample(range(len(lines)), 1500):  # and ts values of every readable kind
        lines[i] = b'{"event_id": "e%d", "amount": 1.25, "ts": %s, "n": 3}' % (i, _times(rng))
    assert flatjson.compiled()
    taken = len(flatjson.field_slots(pa.array(lines, pa.binary()), "ts")[1])
    assert 0.5 * len(lines) < taken < len(lines)  # both the scanner and the parser read some
    fast = event_times_us(lines)
    assert event_times_us(pa.array(lines, pa.binary())).tolist() == fast.tolist()  # as the source passes them
    monkeypatch.setattr(flatjson, "_flatscan", None)
    assert flatjson.field_slots(pa.array(lines, pa.binary()), "ts") is None
    slow = event_times_us(lines)
    assert fast.tolist() == slow.tolist()
    assert (slow != NO_TIME).sum() > 500  # many read, many not
