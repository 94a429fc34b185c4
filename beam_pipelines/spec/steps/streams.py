"""Spec source types for streams besides Kafka: Google Cloud Pub/Sub and AWS Kinesis.

Both emit the raw record batches ``ReadKafka`` emits (``raw`` + ``source``, JSON messages) and a
``late`` output, so Parse, Validate, the dead letters and the conservation report apply
unchanged. Lateness is judged by the pipeline's first windowed aggregate, as for Kafka.
"""

from __future__ import annotations

from beam_pipelines.spec.steps.base import register
from beam_pipelines.spec.steps.io import Source
from transforms.ingest.kinesis import ENDPOINT_PATTERN, REGION_PATTERN, STREAM_PATTERN
from transforms.ingest.pubsub import HOST_PATTERN, SUBSCRIPTION_PATTERN

__all__ = []

_TIMEOUT_S = 15.0


class _StreamSource(Source):
    modes = ("streaming",)
    # Whether a restart can read again what an earlier attempt read (the launcher then rebuilds
    # the outputs from the replay; see beam_pipelines/streaming.py).
    replays = True

    def columns(self, inputs):
        self.ctx.source_format = "jsonl"
        self.ctx.live = not self.bounded()
        if self.ctx.event_time is None:
            raise self.error(None, "a streaming source needs an event time: add a WindowedAggregate")
        return None

    def bounded(self) -> bool:
        raise NotImplementedError


@register
class ReadPubSub(_StreamSource):
    type = "ReadPubSub"
    doc = (
        "Reads a Google Cloud Pub/Sub subscription's JSON messages, acknowledging them once the runner has "
        "committed them (at least once: give a Deduplicate step); records later than the allowed lateness go to "
        "the dead letters with reason late."
    )
    replays = False  # acknowledged messages are gone from the subscription
    config_schema = {
        "type": "object",
        "properties": {
            "subscription": {
                "type": "string",
                "pattern": SUBSCRIPTION_PATTERN,
                "description": "projects/<project>/subscriptions/<name>; it must exist.",
            },
            "emulator_host": {
                "type": "string",
                "pattern": HOST_PATTERN,
                "description": "host:port of a Pub/Sub emulator (plain gRPC, no credentials). Default: Google's "
                "service with the default credentials.",
            },
            "stop_after_idle": {
                "type": "number",
                "minimum": 0.1,
                "description": "Seconds: finish once pulls have found nothing for this long (a bounded read of what "
                "the subscription holds). Default: read forever.",
            },
        },
        "required": ["subscription"],
    }

    def bounded(self) -> bool:
        return self.config.get("stop_after_idle") is not None

    def input_name(self) -> str:
        return f"Pub/Sub subscription {self.config['subscription']}"

    def preflight(self) -> None:
        """OSError with one plain line when the subscription cannot be read."""
        from transforms.ingest.pubsub import PubSubSourceError, check_subscription

        try:
            check_subscription(self.config.get("emulator_host"), self.config["subscription"], _TIMEOUT_S)
        except PubSubSourceError as e:
            raise OSError(str(e)) from e

    def make(self, root: str):
        from transforms.ingest.pubsub import ReadPubSub as Read

        time_field, window, lateness = self.ctx.event_time
        return Read(
            self.config["subscription"],
            window_seconds=window,
            allowed_lateness_seconds=lateness,
            emulator_host=self.config.get("emulator_host"),
            stop_after_idle_seconds=self.config.get("stop_after_idle"),
            event_time_field=time_field,
        )


@register
class ReadKinesis(_StreamSource):
    type = "ReadKinesis"
    doc = (
        "Reads an AWS Kinesis data stream's JSON records (every shard, in sequence order; credentials from the "
        "AWS environment); records later than the allowed lateness go to the dead letters with reason late."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "stream": {
                "type": "string",
                "pattern": STREAM_PATTERN,
                "description": "The stream's name: 1-128 of A-Z a-z 0-9 _ . -",
            },
            "endpoint_url": {
                "type": "string",
                "pattern": ENDPOINT_PATTERN,
                "description": "http(s)://host[:port] of a Kinesis-compatible server (a local one). Default: AWS's.",
            },
            "region": {
                "type": "string",
                "pattern": REGION_PATTERN,
                "description": "AWS region, like us-east-1. Default: boto3's (AWS_REGION, ~/.aws/config).",
            },
            "stop_at_end": {
                "type": "boolean",
                "description": "Finish each shard once it is caught up (a bounded stream). Default: false.",
            },
        },
        "required": ["stream"],
    }

    def bounded(self) -> bool:
        return bool(self.config.get("stop_at_end"))

    def input_name(self) -> str:
        return f"Kinesis stream {self.config['stream']}"

    def preflight(self) -> None:
        """OSError with one plain line when the stream's shards cannot be listed."""
        from transforms.ingest.kinesis import KinesisSourceError, check_stream

        c = self.config
        try:
            check_stream(c.get("endpoint_url"), c.get("region"), c["stream"], _TIMEOUT_S)
        except KinesisSourceError as e:
            raise OSError(str(e)) from e

    def make(self, root: str):
        from transforms.ingest.kinesis import ReadKinesis as Read

        time_field, window, lateness = self.ctx.event_time
        c = self.config
        return Read(
            c["stream"],
            window_seconds=window,
            allowed_lateness_seconds=lateness,
            endpoint_url=c.get("endpoint_url"),
            region=c.get("region"),
            stop_at_end=self.bounded(),
            event_time_field=time_field,
        )
