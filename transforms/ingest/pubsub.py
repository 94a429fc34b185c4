"""ReadPubSub: a Google Cloud Pub/Sub subscription -> raw record batches, with an event-time
watermark, a lateness gate and acknowledgements after the runner has committed each bundle.

A Python-native source (a splittable DoFn on google-cloud-pubsub's synchronous pull) for Beam's
portable runners (Prism) and the in-process FnApiRunner; Beam's own ``ReadFromPubSub`` runs
only on DirectRunner and Dataflow. ``Impulse`` -> the subscription -> one reader that pulls,
claims each message and checkpoints after each bundle (``tracker.defer_remainder()``).

Outputs, the same as ``ReadKafka``'s:

- ``records``: tables with ``raw`` (binary, the message data) and ``source``
  (``"<subscription>/<message id>"``), so ``ParseRecords("jsonl", ...)`` parses them unchanged.
  A message without data is passed as empty bytes: Parse makes it a ``malformed`` dead letter.
- ``late``: DeadLetter tables (stage ``ingest``, reason ``late``).

Acknowledgements. The ack ids of a bundle's messages are acknowledged in the bundle's
finalization, which the runner calls only after it has committed the bundle's output (Prism
and the FnApiRunner both do). A message whose bundle failed, or whose acknowledgement did not
reach Pub/Sub, is delivered again after the subscription's ack deadline: delivery is at least
once, and a redelivered message is an exact duplicate that a ``Deduplicate`` step removes
(counted as a duplicate). The subscription's ack deadline must cover a bundle and its commit
(``max_batch_seconds`` plus a few seconds; 60 s is ample). What the runner holds after the
commit (windows not yet fired) is as durable as the runner's state: on Prism, memory.

Event time and watermark. Pub/Sub delivers in no particular order (the emulator returns a
pull's messages in random order), so the watermark cannot follow the messages as a Kafka
partition's does. It moves only when the subscription is caught up: when a pull waits and
finds nothing, every message published before it has been read (Pub/Sub may answer a pull
with fewer messages than wait, but not with none while a backlog waits), and the watermark W
becomes the largest event time read so far. Messages read while a backlog drains are judged against the
W of the last catch-up, so the order inside a backlog does not matter. A message is late when
``window_end(ts) + allowed_lateness <= W``; a message redelivered after its window closed is
late like any other. A message whose ``ts`` cannot be read goes to ``records`` (validation
dead-letters it) and does not move W. Batches are timestamped ``min(W, min ts of their on-time
records)`` (see ``kafka_time.batch_timestamp_us``).

Bounded reads. With ``stop_after_idle_seconds`` the read finishes once pulls have found
nothing for that long (the subscription is drained), and its watermark goes to +infinity: for
tests and backfills. Without it the read is unbounded (streaming runners only). One reader per
subscription: Pub/Sub spreads a subscription over its readers, and one reader keeps the
watermark and the lateness rule exact.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.utils.timestamp import Duration

from transforms.ingest.kafka_time import NO_TIME, event_times_us
from transforms.ingest.stream_read import (
    END,
    LATE,
    SpanProvider,
    check_int,
    check_seconds,
    emit_batch,
    report_watermark,
)
from transforms.records import typed

__all__ = ["HOST_PATTERN", "SUBSCRIPTION_PATTERN", "PubSubSourceError", "ReadPubSub"]

# Google's rules for project ids and subscription names (the spec's JSON Schema uses them too).
SUBSCRIPTION_PATTERN = r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/subscriptions/[A-Za-z][A-Za-z0-9._~%+-]{2,254}$"
HOST_PATTERN = r"^[A-Za-z0-9.-]+:[0-9]{1,5}$"
_SUBSCRIPTION = re.compile(SUBSCRIPTION_PATTERN)
_HOST = re.compile(HOST_PATTERN)
# Pub/Sub returns at most 1000 messages per pull, and takes at most 2500 ack ids per call.
_MAX_PULL = 1000
_MAX_ACK = 2500
# How long a caught-up reader waits before it pulls again, and how long a pull waits for messages.
_IDLE_RESUME_SECONDS = 0.2
_PULL_WAIT_SECONDS = 2.0
_log = logging.getLogger(__name__)


class PubSubSourceError(RuntimeError):
    """Pub/Sub cannot be reached, the subscription does not exist, or a pull failed for good."""


def subscriber_client(emulator_host: str | None):
    """A SubscriberClient: plain gRPC to ``emulator_host`` when given, else Google's service
    (or ``PUBSUB_EMULATOR_HOST``) with the default credentials."""
    from google.cloud import pubsub_v1

    if emulator_host is None:
        return pubsub_v1.SubscriberClient()
    import grpc
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(emulator_host)))


def check_subscription(emulator_host: str | None, subscription: str, timeout: float) -> None:
    """PubSubSourceError with one plain line when the subscription cannot be read."""
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError

    try:
        client = subscriber_client(emulator_host)
    except DefaultCredentialsError as e:
        raise PubSubSourceError(
            f"no Google credentials to read Pub/Sub subscription {subscription!r} (set GOOGLE_APPLICATION_CREDENTIALS, "
            "or run where a service account is attached; an emulator: emulator_host or PUBSUB_EMULATOR_HOST)"
        ) from e
    try:
        client.get_subscription(request={"subscription": subscription}, timeout=timeout, retry=None)
    except exceptions.NotFound as e:
        raise PubSubSourceError(f"Pub/Sub subscription {subscription!r} does not exist") from e
    except exceptions.PermissionDenied as e:
        raise PubSubSourceError(
            f"no permission to read Pub/Sub subscription {subscription!r} (needs pubsub.subscriptions.consume "
            f"and pubsub.subscriptions.get, e.g. roles/pubsub.subscriber): {e.message}"
        ) from e
    except exceptions.GoogleAPICallError as e:
        where = emulator_host or "pubsub.googleapis.com"
        raise PubSubSourceError(f"Pub/Sub at {where} did not answer within {timeout:g}s: {e.message}") from e
    finally:
        client.close()


# A reader's state: (watermark, largest event time read); neither is known at first.
_START = (int(NO_TIME), int(NO_TIME))


class _ReadSubscriptionFn(beam.DoFn):
    """subscription -> records and late dead letters; acks in the bundle's finalization."""

    def __init__(self, spec: dict):
        self._s = spec

    def setup(self):
        self._client = subscriber_client(self._s["emulator_host"])
        self._clock = self._s["clock"]
        self._read = beam.metrics.Metrics.counter("pubsub", "read")
        self._late = beam.metrics.Metrics.counter("pubsub", "late")
        self._retries = beam.metrics.Metrics.counter("pubsub", "retriable_errors")
        self._unacked = beam.metrics.Metrics.counter("pubsub", "ack_failures")

    def teardown(self):
        self._client.close()

    def process(
        self,
        element,
        # Before the restriction and estimator: the SDK passes those by keyword and this one by position.
        finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(SpanProvider(True, _START)),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        return self._process(tracker, watermark, finalizer)

    def _pull(self, want: int, failing_since: list) -> list:
        from google.api_core import exceptions

        s = self._s
        try:
            # A pull waits a while for messages (the emulator half a second) and then returns
            # nothing, or its deadline passes: either way nothing was waiting.
            response = self._client.pull(
                request={"subscription": s["subscription"], "max_messages": want},
                timeout=min(s["timeout"], _PULL_WAIT_SECONDS),
                retry=None,
            )
        except exceptions.DeadlineExceeded:
            failing_since[0] = None
            return []
        except exceptions.NotFound as e:
            raise PubSubSourceError(f"Pub/Sub subscription {s['subscription']!r} does not exist") from e
        except (exceptions.ServiceUnavailable, exceptions.InternalServerError, exceptions.TooManyRequests,
                exceptions.Aborted) as e:  # fmt: skip
            # Retried until the connect timeout has passed without a good pull.
            self._retries.inc()
            now = self._clock()
            if failing_since[0] is None:
                failing_since[0] = now
            if now - failing_since[0] > s["timeout"]:
                raise PubSubSourceError(
                    f"pulling Pub/Sub subscription {s['subscription']!r} failed for {s['timeout']:g}s: {e.message}"
                ) from e
            time.sleep(_IDLE_RESUME_SECONDS)
            return []
        failing_since[0] = None
        return list(response.received_messages)

    def _process(self, tracker, watermark, finalizer):
        s = self._s
        span = tracker.current_restriction()
        if span.done:
            return
        w, seen = span.state
        position = span.after or 0
        report_watermark(watermark, w)
        started = self._clock()
        deadline = started + s["max_batch_seconds"]
        values: list[bytes] = []
        ids: list[str] = []
        times: list[np.ndarray] = []
        acks: list[str] = []
        ended = idle = False
        idle_since = None
        failing_since = [None]
        while True:
            got = self._pull(min(_MAX_PULL, s["max_batch_records"] - len(values)), failing_since)
            if got:
                idle_since = None
                chunk = [m.message.data or b"" for m in got]
                chunk_ts = event_times_us(chunk, s["field"])
                claimed = 0
                for t in chunk_ts.tolist():
                    after = max(seen, t)
                    if not tracker.try_claim((position + 1, (w, after))):
                        break
                    position, seen, claimed = position + 1, after, claimed + 1
                acks += [m.ack_id for m in got[:claimed]]
                if claimed < len(got):  # the runner checkpointed the read: hand the rest back now
                    self._nack([m.ack_id for m in got[claimed:]])
                values += chunk[:claimed]
                ids += [m.message.message_id for m in got[:claimed]]
                times.append(chunk_ts[:claimed])
                if claimed < len(got):
                    ended = True  # nothing more may be claimed in this bundle
                    break
                if len(values) >= s["max_batch_records"]:
                    yield from self._emit(values, ids, times, w)
                    values, ids, times = [], [], []
            else:
                # Caught up: everything published before this pull has been read.
                if values:
                    yield from self._emit(values, ids, times, w)
                    values, ids, times = [], [], []
                if seen > w:
                    if not tracker.try_claim((position + 1, (seen, seen))):
                        ended = True
                        break
                    position, w = position + 1, seen
                    report_watermark(watermark, w)
                idle = True
                if s["idle_seconds"] is None:
                    break
                now = self._clock()
                idle_since = now if idle_since is None else idle_since
                if now - idle_since >= s["idle_seconds"]:
                    tracker.try_claim(END)  # drained: the bounded read is done
                    ended = True
                    break
                # A bounded read waits out its idle time in this bundle (its output is emitted).
                continue
            if self._clock() >= deadline:
                break
        if values:
            yield from self._emit(values, ids, times, w)
        if acks:
            finalizer.register(self._acker(acks))
        if not ended:
            # Checkpoint: the rest of the read comes in a later bundle, after this one's output
            # (and then its acknowledgements) are committed.
            tracker.defer_remainder(Duration.of(_IDLE_RESUME_SECONDS) if idle else None)

    def _emit(self, values: list[bytes], ids: list[str], times: list[np.ndarray], w: int):
        self._read.inc(len(values))
        ts = np.concatenate(times)
        prefix = pa.scalar(self._s["subscription"] + "/", pa.string())
        sources = pc.binary_join_element_wise(prefix, pa.array(ids, pa.string()), "")
        before = np.full(len(values), w, np.int64)
        yield from emit_batch(values, sources, ts, before, w, self._s, "subscription", self._late)

    def _acker(self, ack_ids: list[str]) -> Callable[[], None]:
        def ack():
            from google.api_core import exceptions

            for i in range(0, len(ack_ids), _MAX_ACK):
                chunk = ack_ids[i : i + _MAX_ACK]
                try:
                    self._client.acknowledge(
                        request={"subscription": self._s["subscription"], "ack_ids": chunk}, timeout=self._s["timeout"]
                    )
                except exceptions.GoogleAPICallError as e:
                    # Not lost: Pub/Sub delivers them again after the ack deadline (duplicates).
                    self._unacked.inc(len(chunk))
                    _log.warning("%d Pub/Sub acknowledgements failed; they will be redelivered: %s", len(chunk), e)

        return ack

    def _nack(self, ack_ids: list[str]) -> None:
        from google.api_core import exceptions

        try:
            self._client.modify_ack_deadline(
                request={"subscription": self._s["subscription"], "ack_ids": ack_ids, "ack_deadline_seconds": 0},
                timeout=self._s["timeout"],
            )
        except exceptions.GoogleAPICallError as e:  # redelivered after the ack deadline instead
            _log.warning("returning %d Pub/Sub messages failed; they come back after the ack deadline: %s",
                         len(ack_ids), e)  # fmt: skip


class _ReadUnboundedSubscriptionFn(_ReadSubscriptionFn):
    """The same read without an end: an unbounded amount of work."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element,
        finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(SpanProvider(False, _START)),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        return self._process(tracker, watermark, finalizer)


class ReadPubSub(beam.PTransform):
    """Reads a Pub/Sub subscription into raw record batches, routing late messages to dead letters.

    Args:
        subscription: ``projects/<project>/subscriptions/<name>``; it must exist.
        window_seconds: Size of the downstream fixed event-time windows (aligned to the epoch).
        allowed_lateness_seconds: How long after a window's end its messages are still taken.
        emulator_host: ``host:port`` of a Pub/Sub emulator (plain gRPC, no credentials); default
            Google's service with the default credentials (or ``PUBSUB_EMULATOR_HOST``).
        stop_after_idle_seconds: Finish once pulls have found nothing for this long (a bounded
            read of what the subscription holds); None (default): read forever.
        max_batch_records: Most messages per emitted table.
        max_batch_seconds: A bundle's time budget: its tables are emitted, committed and
            acknowledged at most about this long after it began.
        event_time_field: The JSON field holding each message's event time.
        timeout_seconds: How long a pull or an acknowledgement may take, and how long pulls may
            keep failing with retriable errors before the read fails.
        clock: Monotonic seconds for the time budget and the idle time (default ``time.monotonic``).
        label: The transform's label.

    Returns a dict: ``records`` (tables with ``raw`` binary and ``source`` string columns) and
    ``late`` (DeadLetter tables, stage ``ingest``, reason ``late``).
    """

    def __init__(
        self,
        subscription: str,
        *,
        window_seconds: int,
        allowed_lateness_seconds: int,
        emulator_host: str | None = None,
        stop_after_idle_seconds: float | None = None,
        max_batch_records: int = 10_000,
        max_batch_seconds: float = 1.0,
        event_time_field: str = "ts",
        timeout_seconds: float = 30.0,
        clock: Callable[[], float] | None = None,
        label: str | None = None,
    ):
        super().__init__(label)
        if not isinstance(subscription, str) or not _SUBSCRIPTION.match(subscription):
            raise ValueError(f"subscription must be projects/<project>/subscriptions/<name>, got {subscription!r}")
        if emulator_host is not None and (not isinstance(emulator_host, str) or not _HOST.match(emulator_host)):
            raise ValueError(f"emulator_host must be host:port, got {emulator_host!r}")
        if not isinstance(event_time_field, str) or not event_time_field:
            raise ValueError("event_time_field must be a non-empty string")
        idle = None
        if stop_after_idle_seconds is not None:
            idle = check_seconds("stop_after_idle_seconds", stop_after_idle_seconds)
        self._spec = {
            "subscription": subscription,
            "emulator_host": emulator_host,
            "window_seconds": check_int("window_seconds", window_seconds, 1),
            "lateness_seconds": check_int("allowed_lateness_seconds", allowed_lateness_seconds, 0),
            "idle_seconds": idle,
            "max_batch_records": check_int("max_batch_records", max_batch_records, 1),
            "max_batch_seconds": check_seconds("max_batch_seconds", max_batch_seconds),
            "field": event_time_field,
            "timeout": check_seconds("timeout_seconds", timeout_seconds),
            "clock": clock or time.monotonic,
        }

    def expand(self, pbegin):
        s = self._spec
        read = _ReadSubscriptionFn if s["idle_seconds"] is not None else _ReadUnboundedSubscriptionFn
        subscription = (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "Subscription" >> beam.Map(lambda _, name: name, s["subscription"]).with_output_types(str)
        )
        out = subscription | "ReadSubscription" >> beam.ParDo(read(s)).with_outputs(
            LATE, main="records"
        ).with_input_types(str)
        return {"records": typed(out.records), "late": typed(out.late)}
