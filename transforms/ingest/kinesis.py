"""ReadKinesis: an AWS Kinesis data stream -> raw record batches, with per-shard event-time
watermarks and a lateness gate.

A Python-native source (a splittable DoFn on boto3) for Beam's portable runners (Prism) and the
in-process FnApiRunner: ``Impulse`` -> list the stream's shards -> one read per shard, in
sequence-number order (``GetShardIterator`` + ``GetRecords``), claiming each record's sequence
number; a checkpoint resumes ``AFTER_SEQUENCE_NUMBER`` of the last claimed record.

Outputs, the same as ``ReadKafka``'s:

- ``records``: tables with ``raw`` (binary, the record's data) and ``source``
  (``"<stream>/<shard id>/<sequence number>"``), so ``ParseRecords("jsonl", ...)`` parses them
  unchanged. A record with empty data reaches Parse as empty bytes: a ``malformed`` dead letter.
- ``late``: DeadLetter tables (stage ``ingest``, reason ``late``).

Event time and watermark: as for a Kafka partition, per shard. A shard's watermark W is the
largest event time (JSON field ``ts``) read from it so far; a record is late when
``window_end(ts) + allowed_lateness <= W`` before it (in sequence order); every shard reports
the minimum W over the stream's shards (``stream_read.WatermarkFloor``), and batches are
timestamped ``min(W at batch start, min on-time ts)`` (see ``kafka_time``).

Reads. A bundle reads tables of up to ``max_batch_records`` until the shard is caught up
(``GetRecords`` returns nothing with ``MillisBehindLatest`` 0), the shard is closed (no next
iterator: it was split or merged), or ``max_batch_seconds`` have passed; then it checkpoints
(its output is committed with the watermark) and resumes after a short delay when caught up.
Kinesis allows five ``GetRecords`` calls per second per shard: calls on one shard are spaced
by at least ``_MIN_CALL_GAP_SECONDS``, and throttling is retried with backoff.
With ``stop_at_end`` a shard's read finishes once it is caught up (a bounded read of what the
stream holds; its watermark then goes to +infinity); otherwise it reads forever (streaming
runners only). The shards are listed once, at start: shards created by a later resharding are
not read until the next run (their parents are read to their end).

Restarts read from the start of the retention (``TRIM_HORIZON``) or from
``start_sequence_numbers``, like Kafka's earliest offsets: a replay gives the same records in
the same per-shard order, so the same lateness verdicts.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.utils.timestamp import Duration

from transforms.ingest.kafka_time import NO_TIME, event_times_us, watermarks_before
from transforms.ingest.stream_read import (
    END,
    LATE,
    SpanProvider,
    WatermarkFloor,
    check_int,
    check_seconds,
    emit_batch,
    report_watermark,
)
from transforms.records import typed

__all__ = [
    "ENDPOINT_PATTERN", "REGION_PATTERN", "STREAM_PATTERN", "KinesisSourceError", "ReadKinesis", "check_stream",
    "kinesis_client", "list_shards",
]  # fmt: skip

# AWS's rules for stream and region names (the spec's JSON Schema uses them too).
STREAM_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]$"
ENDPOINT_PATTERN = r"^https?://[^\s/]+/?$"
_STREAM = re.compile(STREAM_PATTERN)
_REGION = re.compile(REGION_PATTERN)
# GetRecords returns at most 10,000 records per call.
_MAX_RECORDS = 10_000
_IDLE_RESUME_SECONDS = 0.5
# Five GetRecords calls per second per shard.
_MIN_CALL_GAP_SECONDS = 0.2
_THROTTLED = ("ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException")
_log = logging.getLogger(__name__)


class KinesisSourceError(RuntimeError):
    """Kinesis cannot be reached, the stream does not exist, or a shard read failed for good."""


def kinesis_client(endpoint_url: str | None, region: str | None, timeout: float):
    """A boto3 Kinesis client (credentials from boto3's default chain: the environment,
    ``~/.aws``, the instance or task role)."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("kinesis", endpoint_url=endpoint_url, region_name=region, config=config)


def _plain(error: Exception, stream: str, where: str) -> KinesisSourceError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ResourceNotFoundException":
            return KinesisSourceError(f"Kinesis stream {stream!r} does not exist at {where}")
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
            return KinesisSourceError(
                f"no permission to read Kinesis stream {stream!r} (needs kinesis:ListShards, kinesis:GetShardIterator "
                f"and kinesis:GetRecords): {code}: {message}"
            )
        return KinesisSourceError(f"Kinesis at {where} refused a request for stream {stream!r}: {code}: {message}")
    if isinstance(error, EndpointConnectionError):
        return KinesisSourceError(f"cannot reach Kinesis at {where} (is the endpoint right?)")
    if isinstance(error, (NoCredentialsError, NoRegionError)):
        return KinesisSourceError(f"Kinesis stream {stream!r}: {error} (set AWS_REGION and AWS credentials)")
    return KinesisSourceError(f"Kinesis stream {stream!r} at {where}: {error}")


def list_shards(client, stream: str, where: str) -> list[str]:
    """The ids of the stream's shards, in id order (KinesisSourceError when it cannot be read)."""
    from botocore.exceptions import BotoCoreError, ClientError

    shards: list[str] = []
    request = {"StreamName": stream}
    try:
        while True:
            page = client.list_shards(**request)
            shards += [s["ShardId"] for s in page.get("Shards", [])]
            token = page.get("NextToken")
            if not token:
                break
            request = {"NextToken": token}
    except (BotoCoreError, ClientError) as e:
        raise _plain(e, stream, where) from e
    if not shards:
        raise KinesisSourceError(f"Kinesis stream {stream!r} at {where} has no shards")
    return sorted(shards)


def check_stream(endpoint_url: str | None, region: str | None, stream: str, timeout: float) -> list[str]:
    """The stream's shard ids, or KinesisSourceError with one plain line (no region, no
    credentials, no answer, no such stream, no permission)."""
    from botocore.exceptions import BotoCoreError

    where = endpoint_url or f"AWS ({region or 'default region'})"
    try:
        client = kinesis_client(endpoint_url, region, timeout)
    except BotoCoreError as e:
        raise _plain(e, stream, where) from e
    try:
        return list_shards(client, stream, where)
    finally:
        client.close()


class _ListShardsFn(beam.DoFn):
    """Impulse -> (shard id, index, shard count, read after: a sequence number or None) per shard.

    Sequence numbers travel as decimal text: AWS's are wider than a 64-bit integer coder takes.
    """

    def __init__(self, spec: dict):
        self._s = spec

    def setup(self):
        s = self._s
        self._client = kinesis_client(s["endpoint_url"], s["region"], s["timeout"])

    def teardown(self):
        self._client.close()

    def process(self, _):
        s = self._s
        shards = list_shards(self._client, s["stream"], s["where"])
        unknown = sorted(set(s["start"]) - set(shards))
        if unknown:
            raise KinesisSourceError(f"start_sequence_numbers name shards {unknown} that {s['stream']!r} does not have")
        for i, shard in enumerate(shards):
            after = s["start"].get(shard)
            yield shard, i, len(shards), after


class _ReadShardFn(beam.DoFn):
    """(shard, index, count, after) with a StreamSpan restriction -> records and late dead letters."""

    def __init__(self, spec: dict):
        self._s = spec

    def setup(self):
        s = self._s
        self._client = kinesis_client(s["endpoint_url"], s["region"], s["timeout"])
        # shard -> (last claimed sequence number, the iterator after it): a read resumed where it
        # stopped keeps its iterator (GetShardIterator is limited to five calls a second per shard).
        self._iterators: dict[str, tuple[int | None, str]] = {}
        self._last_call: dict[str, float] = {}
        self._clock = s["clock"]
        self._read = beam.metrics.Metrics.counter("kinesis", "read")
        self._late = beam.metrics.Metrics.counter("kinesis", "late")
        self._retries = beam.metrics.Metrics.counter("kinesis", "retriable_errors")

    def teardown(self):
        self._client.close()

    def process(
        self,
        element,
        tracker=beam.DoFn.RestrictionParam(SpanProvider(True, int(NO_TIME))),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        return self._process(element, tracker, watermark)

    def _iterator(self, shard: str, after: int | None) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        kept = self._iterators.pop(shard, None)
        if kept is not None and kept[0] == after:
            return kept[1]
        s = self._s
        request = {"StreamName": s["stream"], "ShardId": shard}
        if after is None:
            request["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            request.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=str(after))
        try:
            return self._call(shard, self._client.get_shard_iterator, **request)["ShardIterator"]
        except (BotoCoreError, ClientError) as e:
            raise _plain(e, s["stream"], s["where"]) from e

    def _call(self, shard: str, method, **request):
        """One Kinesis call on a shard: spaced from the last one, throttling retried with backoff."""
        from botocore.exceptions import ClientError

        delay = _MIN_CALL_GAP_SECONDS
        started = self._clock()
        while True:
            gap = self._last_call.get(shard, -1e9) + _MIN_CALL_GAP_SECONDS - self._clock()
            if gap > 0:
                time.sleep(gap)
            self._last_call[shard] = self._clock()
            try:
                return method(**request)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if code not in _THROTTLED or self._clock() - started > self._s["timeout"]:
                    raise
                self._retries.inc()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _process(self, element, tracker, watermark):
        from botocore.exceptions import BotoCoreError, ClientError

        shard, index, count = element[0], element[1], element[2]
        s = self._s
        span = tracker.current_restriction()
        if span.done:
            return
        self._report(watermark, index, count, span.state)
        after, w = span.after, span.state
        iterator = self._iterator(shard, after)
        started = self._clock()
        deadline = started + s["max_batch_seconds"]
        values: list[bytes] = []
        seqs: list[str] = []
        times: list[np.ndarray] = []
        batch_start = w
        ended = idle = False
        while True:
            want = min(_MAX_RECORDS, s["max_batch_records"] - len(values))
            try:
                response = self._call(shard, self._client.get_records, ShardIterator=iterator, Limit=want)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") == "ExpiredIteratorException":
                    iterator = self._iterator(shard, after)
                    continue
                raise _plain(e, s["stream"], s["where"]) from e
            except BotoCoreError as e:
                raise _plain(e, s["stream"], s["where"]) from e
            records = response.get("Records", [])
            next_iterator = response.get("NextShardIterator")
            chunk = [r.get("Data") or b"" for r in records]
            chunk_ts = event_times_us(chunk, s["field"])
            claimed = 0
            for r, t in zip(records, chunk_ts.tolist()):
                w_after = max(w, t)
                if not tracker.try_claim((int(r["SequenceNumber"]), w_after)):
                    ended = True
                    break
                after, w, claimed = int(r["SequenceNumber"]), w_after, claimed + 1
            values += chunk[:claimed]
            seqs += [r["SequenceNumber"] for r in records[:claimed]]
            times.append(chunk_ts[:claimed])
            if ended:  # a checkpoint came in: the rest is read by the next bundle
                break
            iterator = next_iterator
            if next_iterator is None:  # a closed shard, read to its end
                tracker.try_claim(END)
                ended = True
                break
            if not records and response.get("MillisBehindLatest", 0) == 0:
                idle = True  # caught up
                if s["stop_at_end"]:
                    tracker.try_claim(END)
                    ended = True
                break
            if len(values) >= s["max_batch_records"]:
                yield from self._emit(shard, values, seqs, times, batch_start, self._floor(index, count))
                batch_start = w
                values, seqs, times = [], [], []
                self._report(watermark, index, count, w)
            if self._clock() >= deadline:
                break
        if values:
            yield from self._emit(shard, values, seqs, times, batch_start, self._floor(index, count))
        # Other shards may have moved the floor while this one was idle.
        self._report(watermark, index, count, w)
        if not ended:
            if iterator is not None:
                self._iterators[shard] = (after, iterator)
            tracker.defer_remainder(Duration.of(_IDLE_RESUME_SECONDS) if idle else None)

    def _report(self, watermark, index: int, count: int, own_us: int) -> None:
        report_watermark(watermark, WatermarkFloor.floor(self._s["read_id"], index, count, own_us))

    def _floor(self, index: int, count: int) -> int:
        """The read's floor now (the lowest shard watermark; NO_TIME while a shard has none)."""
        return WatermarkFloor.floor(self._s["read_id"], index, count, NO_TIME)

    def _emit(self, shard: str, values: list[bytes], seqs: list[str], times: list[np.ndarray], start: int, floor: int):
        s = self._s
        self._read.inc(len(values))
        ts = np.concatenate(times)
        before, _ = watermarks_before(ts, start)
        prefix = pa.scalar(f"{s['stream']}/{shard}/", pa.string())
        sources = pc.binary_join_element_wise(prefix, pa.array(seqs, pa.string()), "")
        # Stamped at or below the floor, the watermark reported (see ReadKafka, DeduplicateStream).
        stamp_from = start if floor == NO_TIME else min(start, floor)
        yield from emit_batch(values, sources, ts, before, stamp_from, s, "shard", self._late)


class _ReadUnboundedShardFn(_ReadShardFn):
    """The same read without an end: an unbounded amount of work per shard."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element,
        tracker=beam.DoFn.RestrictionParam(SpanProvider(False, int(NO_TIME))),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        return self._process(element, tracker, watermark)


class ReadKinesis(beam.PTransform):
    """Reads a Kinesis data stream into raw record batches, routing late records to dead letters.

    Args:
        stream: The stream's name (every shard listed at start is read).
        window_seconds: Size of the downstream fixed event-time windows (aligned to the epoch).
        allowed_lateness_seconds: How long after a window's end its records are still taken.
        endpoint_url: A Kinesis-compatible endpoint (e.g. a local server); default AWS's.
        region: The AWS region; default boto3's (``AWS_REGION``, ``~/.aws/config``).
        start_sequence_numbers: Shard id -> the sequence number to read after (the resume
            point of an earlier run); other shards start at the oldest record kept.
        stop_at_end: Finish each shard once it is caught up (a bounded read of what the
            stream holds); otherwise read forever (streaming runners).
        max_batch_records: Most records per emitted table.
        max_batch_seconds: A bundle's time budget: its tables are emitted and committed at most
            about this long after it began.
        event_time_field: The JSON field holding each record's event time.
        timeout_seconds: Connect and read timeout of each call, and how long throttling is
            retried before the read fails.
        clock: Monotonic seconds for the time budget (default ``time.monotonic``).
        label: The transform's label.

    Credentials come from boto3's default chain (environment, ``~/.aws``, the instance or task
    role), never from the pipeline's arguments. Returns a dict: ``records`` (tables with ``raw``
    binary and ``source`` string columns) and ``late`` (DeadLetter tables, reason ``late``).
    """

    def __init__(
        self,
        stream: str,
        *,
        window_seconds: int,
        allowed_lateness_seconds: int,
        endpoint_url: str | None = None,
        region: str | None = None,
        start_sequence_numbers: dict[str, str] | None = None,
        stop_at_end: bool = False,
        max_batch_records: int = 10_000,
        max_batch_seconds: float = 1.0,
        event_time_field: str = "ts",
        timeout_seconds: float = 30.0,
        clock: Callable[[], float] | None = None,
        label: str | None = None,
    ):
        super().__init__(label)
        if not isinstance(stream, str) or not _STREAM.match(stream):
            raise ValueError(f"stream must be 1-128 characters of [A-Za-z0-9_.-], got {stream!r}")
        if endpoint_url is not None and (
            not isinstance(endpoint_url, str) or not re.match(ENDPOINT_PATTERN, endpoint_url)
        ):
            raise ValueError(f"endpoint_url must be http(s)://host[:port], got {endpoint_url!r}")
        if region is not None and (not isinstance(region, str) or not _REGION.match(region)):
            raise ValueError(f"region must be an AWS region name like us-east-1, got {region!r}")
        start = dict(start_sequence_numbers or {})
        for shard, seq in start.items():
            if not isinstance(shard, str) or not isinstance(seq, str) or not seq.isdigit():
                raise ValueError(
                    f"start_sequence_numbers must map shard ids to sequence numbers, got {shard!r}: {seq!r}"
                )
        if not isinstance(event_time_field, str) or not event_time_field:
            raise ValueError("event_time_field must be a non-empty string")
        self._stop_at_end = bool(stop_at_end)
        self._spec = {
            "stream": stream,
            "endpoint_url": endpoint_url,
            "region": region,
            "where": endpoint_url or f"AWS ({region or 'default region'})",
            "start": start,
            "stop_at_end": self._stop_at_end,
            "window_seconds": check_int("window_seconds", window_seconds, 1),
            "lateness_seconds": check_int("allowed_lateness_seconds", allowed_lateness_seconds, 0),
            "max_batch_records": check_int("max_batch_records", max_batch_records, 1),
            "max_batch_seconds": check_seconds("max_batch_seconds", max_batch_seconds),
            "field": event_time_field,
            "timeout": check_seconds("timeout_seconds", timeout_seconds),
            "clock": clock or time.monotonic,
            # One read of the stream: its shards share a watermark floor.
            "read_id": uuid.uuid4().hex,
        }

    def expand(self, pbegin):
        read = _ReadShardFn if self._stop_at_end else _ReadUnboundedShardFn
        shard_type = beam.typehints.Tuple[str, int, int, beam.typehints.Optional[str]]
        shards = (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "ListShards"
            >> beam.ParDo(_ListShardsFn(self._spec)).with_input_types(bytes).with_output_types(shard_type)
        )
        out = shards | "ReadShards" >> beam.ParDo(read(self._spec)).with_outputs(LATE, main="records").with_input_types(
            shard_type
        )
        return {"records": typed(out.records), "late": typed(out.late)}
