"""Produces the lines of JSONL files to a Kafka topic, one message per non-blank line.

    python -m beam_pipelines.produce --bootstrap=127.0.0.1:9092 --topic=events \\
        --input='data/in/*.jsonl' [--partitions-by=event_id|none] [--rate=5000/s]

Files are read in name order and lines in file order. With ``--partitions-by=FIELD`` each
message is keyed by that JSON field (strings as they are, other values as JSON text), so all
messages of one key land, in order, on one partition; a line that is not a JSON object with
that field is produced without a key. Prints how many messages were produced; exits 1 with a
one-line error when the topic does not exist, the broker does not answer, or a message is not
delivered.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import logging
import re
import sys
import time

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from transforms.ingest.log_repeats import quiet_repeats

__all__ = ["ProduceError", "main", "message_key", "parse_rate", "produce_files"]

# librdkafka reports connection trouble through this logger, not on stderr: the one-line error says it.
_log = quiet_repeats(logging.getLogger(__name__))
_log.addHandler(logging.NullHandler())
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/s)?\s*$")


class ProduceError(RuntimeError):
    """The broker, the topic or the input cannot be used, or messages were not delivered."""


def parse_rate(text: str | None) -> float | None:
    """``"5000/s"`` or ``"5000"`` -> 5000.0 messages per second; None or ``"0"`` means unlimited.

    Args:
        text: The ``--rate`` value.
    """
    if text is None:
        return None
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"--rate must look like 5000/s, got {text!r}")
    rate = float(m.group(1))
    return rate or None


def message_key(line: bytes, field: str | None) -> bytes | None:
    """The key of one line: its JSON ``field`` (strings as they are, other values as JSON), or None.

    Args:
        line: One JSONL line.
        field: The key field, or None for no key.
    """
    if field is None:
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(record) is not dict or record.get(field) is None:
        return None
    value = record[field]
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def _lines(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def _check_topic(producer: Producer, bootstrap: str, topic: str, timeout: float) -> int:
    try:
        meta = producer.list_topics(topic, timeout=timeout)
    except KafkaException as e:
        raise ProduceError(f"Kafka at {bootstrap} did not answer within {timeout:g}s: {e.args[0].str()}") from e
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ProduceError(f"Kafka topic {topic!r} does not exist on {bootstrap}")
    return len(found.partitions)


def produce_files(
    bootstrap: str,
    topic: str,
    paths: list[str],
    key_field: str | None = None,
    rate: float | None = None,
    timeout: float = 30.0,
    clock=time.monotonic,
    sleep=time.sleep,
) -> int:
    """Produces every non-blank line of ``paths`` (in order) to ``topic``; the number delivered.

    Args:
        bootstrap: Broker list, ``host:port[,...]``.
        topic: An existing topic.
        paths: Input files (``.gz`` is decompressed).
        key_field: JSON field to key messages by, or None for no key.
        rate: Most messages per second, or None for as fast as the broker takes them.
        timeout: How long to wait for the broker (metadata, and the final delivery of all messages).
        clock: Monotonic seconds, for the rate limit.
        sleep: Sleeps seconds, for the rate limit.
    """
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "allow.auto.create.topics": False},
        logger=_log,
    )
    _check_topic(producer, bootstrap, topic, timeout)
    failures: list[KafkaError] = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    sent = 0
    started = clock()
    for path in paths:
        for line in _lines(path):
            if rate is not None:
                ahead = sent / rate - (clock() - started)
                if ahead > 0:
                    sleep(ahead)
            while True:
                try:
                    producer.produce(topic, value=line, key=message_key(line, key_field), on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)
            producer.poll(0)
            sent += 1
    left = producer.flush(timeout)
    if failures or left:
        detail = failures[0].str() if failures else f"{left} still queued after {timeout:g}s"
        raise ProduceError(f"{len(failures) + left} of {sent} messages to {topic!r} not delivered: {detail}")
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.produce",
        description="Produces each non-blank line of JSONL files as one Kafka message.",
    )
    parser.add_argument("--bootstrap", required=True, help="Broker list, host:port[,host:port...].")
    parser.add_argument("--topic", required=True, help="The (existing) topic to produce to.")
    parser.add_argument("--input", required=True, help="A file pattern, e.g. 'data/in/*.jsonl' (.gz is read too).")
    parser.add_argument("--partitions-by", default="none",
                        help="JSON field to key messages by (same key, same partition), or none. Default: none.")  # fmt: skip
    parser.add_argument("--rate", default=None, help="Most messages per second, e.g. 5000/s. Default: unlimited.")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="Seconds to wait for the broker and for the last deliveries. Default: 30.")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        rate = parse_rate(args.rate)
    except ValueError as e:
        parser.error(str(e))
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    paths = sorted(glob.glob(args.input))
    if not paths:
        print(f"error: no file matches {args.input!r}", file=sys.stderr)
        return 1
    key_field = None if args.partitions_by.strip().lower() == "none" else args.partitions_by.strip()
    started = time.monotonic()
    try:
        n = produce_files(args.bootstrap, args.topic, paths, key_field, rate, args.timeout)
    except ProduceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print(f"produced {n} messages to {args.topic} on {args.bootstrap} from {len(paths)} file(s) in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
