"""WriteKafkaJson: table rows -> one JSON message each on a Kafka topic (e.g. dead letters)."""

from __future__ import annotations

import logging

import apache_beam as beam
import orjson
import pyarrow as pa

__all__ = ["KafkaSinkError", "WriteKafkaJson"]

_LOG = logging.getLogger(__name__)


class KafkaSinkError(RuntimeError):
    """Messages were not delivered; the bundle fails and the runner retries it."""


class _ProduceFn(beam.DoFn):
    def __init__(self, bootstrap: str, topic: str, key_column: str | None, timeout_s: float):
        self._bootstrap, self._topic, self._key, self._timeout = bootstrap, topic, key_column, timeout_s
        self._producer = None

    def setup(self):
        from confluent_kafka import Producer

        quiet = logging.getLogger(__name__ + ".librdkafka")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self._producer = Producer(
            {"bootstrap.servers": self._bootstrap, "enable.idempotence": True, "linger.ms": 20, "logger": quiet}
        )
        self._sent = beam.metrics.Metrics.counter("kafka_sink", "messages")

    def start_bundle(self):
        self._errors: list[str] = []

    def _delivered(self, err, _msg):
        if err is not None:
            self._errors.append(str(err))

    def process(self, table: pa.Table):
        # Rows here are few (dead letters): per-row serialisation is fine.
        for row in table.to_pylist():
            key = None if self._key is None or row.get(self._key) is None else str(row[self._key]).encode()
            self._producer.produce(self._topic, value=orjson.dumps(row), key=key, on_delivery=self._delivered)
            self._producer.poll(0)
        self._sent.inc(table.num_rows)

    def finish_bundle(self):
        # A bundle is done only when Kafka has every message of it (then a retry cannot lose any).
        left = self._producer.flush(self._timeout)
        if left or self._errors:
            raise KafkaSinkError(
                f"{left} messages not delivered to {self._topic} on {self._bootstrap}"
                + (f": {self._errors[0]}" if self._errors else "")
            )

    def teardown(self):
        if self._producer is not None:
            self._producer.flush(self._timeout)


class WriteKafkaJson(beam.PTransform):
    """Produces every row of every table as one JSON object to ``topic``.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: An existing topic.
        key_column: Column whose value keys each message (None: no key).
        timeout_s: How long a bundle waits for its messages to be acknowledged.
    """

    def __init__(self, bootstrap: str, topic: str, key_column: str | None = None, timeout_s: float = 30.0,
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        if not bootstrap or not topic:
            raise ValueError("bootstrap and topic are required")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._fn = _ProduceFn(bootstrap, topic, key_column, timeout_s)

    def expand(self, tables):
        return tables | "Produce" >> beam.ParDo(self._fn).with_input_types(pa.Table)
