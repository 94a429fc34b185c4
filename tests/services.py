"""Real Kafka and PostgreSQL servers for tests, benchmarks and demos.

The servers are started by ``scripts/kafka.sh`` and ``scripts/postgres.sh`` (which fetch and cache what they need
under ``.cache/services/``) on free ports, so a run never touches a server started by hand on the default ports.

Pytest fixtures (session scope unless noted; loaded for every test by ``pytest_plugins`` in tests/conftest.py):

* ``kafka_bootstrap``: ``"127.0.0.1:PORT"`` of a single-node KRaft broker; topics are not auto-created.
* ``new_topic`` (function scope): ``new_topic(partitions=1, prefix="t") -> name`` creates a uniquely named topic.
* ``pg_dsn``: ``"postgresql://bp@127.0.0.1:PORT/bp"`` (role ``bp`` is a superuser; trust auth). One database for
  the session: give tables unique names (or a schema per test).
* ``pubsub_emulator``: ``"127.0.0.1:PORT"`` of a Pub/Sub emulator (``scripts/pubsub.sh``: Google's pstest fake),
  the value for ``PUBSUB_EMULATOR_HOST`` or ReadPubSub's ``emulator_host``; topics and subscriptions in memory.
  ``pubsub_messages(host, topic)`` tells how often each message of a topic was delivered and acknowledged.
* ``kinesis_endpoint``: ``"http://127.0.0.1:PORT"`` of a Kinesis server (``scripts/kinesis.sh``: moto's server), the
  ``endpoint_url`` of boto3's kinesis client; any credentials, region ``us-east-1``.
* ``kms_endpoint``: the same moto server's URL, as the endpoint of boto3's KMS client (``AWS_ENDPOINT_URL``).

A server that cannot start fails the test with the script's error; it is never skipped. Without pytest, call
``start_kafka``/``stop_kafka``, ``create_topic`` and ``start_postgres``/``stop_postgres``; these raise
``ServiceError`` instead (and ``start_pubsub``/``start_kinesis`` with their stops).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

__all__ = [
    "KAFKA_SH",
    "KINESIS_SH",
    "POSTGRES_SH",
    "PUBSUB_SH",
    "ROOT",
    "ServiceError",
    "create_topic",
    "free_port",
    "free_port_pair",
    "kafka_bootstrap",
    "kafka_topic",
    "kinesis_endpoint",
    "kms_endpoint",
    "new_topic",
    "pg_dsn",
    "pubsub_emulator",
    "pubsub_messages",
    "start_kafka",
    "start_kinesis",
    "start_postgres",
    "start_pubsub",
    "stop_kafka",
    "stop_kinesis",
    "stop_postgres",
    "stop_pubsub",
]

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "scripts" / "kafka.sh"
POSTGRES_SH = ROOT / "scripts" / "postgres.sh"
PUBSUB_SH = ROOT / "scripts" / "pubsub.sh"
KINESIS_SH = ROOT / "scripts" / "kinesis.sh"

# A cold start may first fetch the broker's jars (Maven) or install PostgreSQL (apt-get); below pytest's
# 600 s per-test timeout (pyproject.toml), so the script's error is what a failing test shows.
START_TIMEOUT_S = 540
STOP_TIMEOUT_S = 120
TOPIC_TIMEOUT_S = 30.0
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class ServiceError(RuntimeError):
    """A service script failed; the message is the script's own error line."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` are both free (Kafka's listener and its controller)."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise ServiceError("no free pair of adjacent TCP ports on 127.0.0.1")


def _run(script: Path, args: list[str], env: dict[str, str], timeout: float) -> str:
    """Runs a service script; its last stdout line, or ServiceError with its error."""
    try:
        proc = subprocess.run(
            ["bash", str(script), *args],
            cwd=ROOT,
            env={**os.environ, "PYTHON": sys.executable, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise ServiceError(f"{script.name} {' '.join(args)}: no answer within {timeout:.0f}s") from e
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        raise ServiceError(err[-1] if err else f"{script.name} {' '.join(args)} exited {proc.returncode}")
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def start_kafka(port: int, owner_pid: int | None = None) -> str:
    """Starts (or finds running) a single-node Kafka broker.

    Args:
        port: The PLAINTEXT listener port; the KRaft controller listens on ``port + 1``.
        owner_pid: When this process exits without ``stop_kafka`` (a killed test run), the broker is stopped and
            its data removed; the fixtures pass their own pid.

    Returns:
        The bootstrap address, ``"127.0.0.1:PORT"``.
    """
    env = {"KAFKA_PORT": str(port), "KAFKA_OWNER_PID": "" if owner_pid is None else str(owner_pid)}
    return _run(KAFKA_SH, ["start"], env, START_TIMEOUT_S)


def stop_kafka(port: int, keep_data: bool = False) -> None:
    """Stops the broker on ``port`` and removes its data and log unless ``keep_data``.

    Args:
        port: The listener port given to ``start_kafka``.
        keep_data: Keep the topic data and the log file (to look at them, or to restart on the same data).
    """
    _run(KAFKA_SH, ["stop"], {"KAFKA_PORT": str(port), "KEEP_DATA": "1" if keep_data else "0"}, STOP_TIMEOUT_S)


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> str:
    """Creates a topic (if it does not exist) and waits until every partition has a leader.

    This uses confluent-kafka's AdminClient in this process (0.1-0.3 s; ``scripts/kafka.sh topic`` starts a JVM and
    takes about 2 s), so tests can each make fresh topics.

    Args:
        bootstrap: The broker's bootstrap address.
        name: The topic name (letters, digits, ``.``, ``_``, ``-``; at most 249).
        partitions: The number of partitions (replication factor is 1).

    Returns:
        ``name``.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"invalid Kafka topic name {name!r}")
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=TOPIC_TIMEOUT_S)[name]
    try:
        future.result(timeout=TOPIC_TIMEOUT_S)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ServiceError(f"cannot create topic {name!r} on {bootstrap}: {e}") from e
    # CreateTopics returns before the partitions have leaders; a producer started now would first see errors.
    for _ in range(int(TOPIC_TIMEOUT_S * 10)):
        meta = admin.list_topics(topic=name, timeout=TOPIC_TIMEOUT_S).topics.get(name)
        if meta is not None and meta.error is None and all(p.leader >= 0 for p in meta.partitions.values()):
            if len(meta.partitions) >= partitions:
                return name
        admin.poll(0.1)
    raise ServiceError(f"topic {name!r} on {bootstrap} has no leader for every partition after {TOPIC_TIMEOUT_S}s")


# The name the task description uses for the same helper.
kafka_topic = create_topic


def start_postgres(port: int, owner_pid: int | None = None) -> str:
    """Starts (or finds running) a throwaway PostgreSQL cluster, installing PostgreSQL when missing.

    Args:
        port: The TCP port on 127.0.0.1.
        owner_pid: When this process exits without ``stop_postgres`` (a killed test run), the server is stopped
            and its data removed; the fixtures pass their own pid.

    Returns:
        The DSN, ``"postgresql://bp@127.0.0.1:PORT/bp"``.
    """
    env = {"PG_PORT": str(port), "PG_OWNER_PID": "" if owner_pid is None else str(owner_pid)}
    return _run(POSTGRES_SH, ["start"], env, START_TIMEOUT_S)


def stop_postgres(port: int, keep_data: bool = False) -> None:
    """Stops the cluster on ``port`` and removes its data directory unless ``keep_data``.

    Args:
        port: The port given to ``start_postgres``.
        keep_data: Keep the data directory (and its server log).
    """
    _run(POSTGRES_SH, ["stop"], {"PG_PORT": str(port), "KEEP_DATA": "1" if keep_data else "0"}, STOP_TIMEOUT_S)


def start_pubsub(port: int, owner_pid: int | None = None) -> str:
    """Starts (or finds running) the Pub/Sub emulator, building it when missing; returns ``"127.0.0.1:PORT"``.

    Its message states are served on ``port + 1`` (see :func:`pubsub_messages`).

    Args:
        port: The TCP port on 127.0.0.1 (``port + 1`` must be free too).
        owner_pid: When this process exits without ``stop_pubsub`` (a killed test run), the server is stopped.
    """
    env = {"PUBSUB_PORT": str(port), "PUBSUB_ADMIN_PORT": str(port + 1),
           "PUBSUB_OWNER_PID": "" if owner_pid is None else str(owner_pid)}  # fmt: skip
    return _run(PUBSUB_SH, ["start"], env, START_TIMEOUT_S)


def pubsub_messages(host: str, topic: str) -> dict[str, dict]:
    """Message id -> ``{"deliveries": n, "acks": n}`` of every message published to ``topic``
    (a full ``projects/P/topics/T`` path) on the emulator that :func:`start_pubsub` started."""
    import json
    import urllib.request

    name, port = host.rsplit(":", 1)
    with urllib.request.urlopen(f"http://{name}:{int(port) + 1}/messages", timeout=10) as response:
        states = json.loads(response.read())
    return {m["id"]: {"deliveries": m["deliveries"], "acks": m["acks"]} for m in states if m["topic"] == topic}


def stop_pubsub(port: int, keep_data: bool = False) -> None:
    """Stops the emulator on ``port`` (its topics live in its memory) and removes its log unless ``keep_data``."""
    _run(PUBSUB_SH, ["stop"], {"PUBSUB_PORT": str(port), "KEEP_DATA": "1" if keep_data else "0"}, STOP_TIMEOUT_S)


def start_kinesis(port: int, owner_pid: int | None = None) -> str:
    """Starts (or finds running) moto's server for Kinesis; returns its endpoint URL.

    Args:
        port: The TCP port on 127.0.0.1.
        owner_pid: When this process exits without ``stop_kinesis`` (a killed test run), the server is stopped.
    """
    env = {"KINESIS_PORT": str(port), "KINESIS_OWNER_PID": "" if owner_pid is None else str(owner_pid)}
    _run(KINESIS_SH, ["start"], env, START_TIMEOUT_S)
    return _run(KINESIS_SH, ["endpoint"], env, STOP_TIMEOUT_S)


def stop_kinesis(port: int, keep_data: bool = False) -> None:
    """Stops the Kinesis server on ``port`` (its streams live in its memory)."""
    _run(KINESIS_SH, ["stop"], {"KINESIS_PORT": str(port)}, STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def pubsub_emulator():
    """A Pub/Sub emulator on a free port for the whole session; its ``host:port``."""
    port = free_port_pair()
    host = _start_or_fail("the Pub/Sub emulator (scripts/pubsub.sh start)", start_pubsub, stop_pubsub, port)
    yield host
    stop_pubsub(port)


@pytest.fixture(scope="session")
def kinesis_endpoint():
    """moto's Kinesis on a free port for the whole session; its endpoint URL."""
    port = free_port()
    url = _start_or_fail("the Kinesis server (scripts/kinesis.sh start)", start_kinesis, stop_kinesis, port)
    yield url
    stop_kinesis(port)


@pytest.fixture(scope="session")
def kms_endpoint(kinesis_endpoint):
    """AWS KMS on moto's server (the same process that serves Kinesis); its endpoint URL."""
    return kinesis_endpoint


@pytest.fixture(scope="session")
def kafka_bootstrap():
    """A Kafka broker on a free port pair for the whole session; its bootstrap address."""
    port = free_port_pair()
    bootstrap = _start_or_fail("Kafka (scripts/kafka.sh start)", start_kafka, stop_kafka, port)
    yield bootstrap
    stop_kafka(port)


@pytest.fixture
def new_topic(kafka_bootstrap, request):
    """A factory of fresh, uniquely named topics on the session's broker: ``new_topic(partitions=1, prefix="t")``."""
    counter = itertools.count()
    test = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:80]

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}.{test}.{next(counter)}.{uuid.uuid4().hex[:8]}"
        return create_topic(kafka_bootstrap, name, partitions)

    return make


@pytest.fixture(scope="session")
def pg_dsn():
    """A PostgreSQL server on a free port for the whole session; its DSN (database and superuser ``bp``)."""
    port = free_port()
    dsn = _start_or_fail("PostgreSQL (scripts/postgres.sh start)", start_postgres, stop_postgres, port)
    yield dsn
    stop_postgres(port)


def _start_or_fail(what: str, start, stop, port: int) -> str:
    """``start(port)`` owned by this process, or the test fails with the script's error (never skips)."""
    try:
        return start(port, owner_pid=os.getpid())
    except ServiceError as e:
        error = str(e)
    # Stop what the failed start left running, keeping its data and log to look at; the start's error is the
    # one to report.
    with contextlib.suppress(ServiceError):
        stop(port, keep_data=True)
    pytest.fail(f"cannot start {what}: {error}", pytrace=False)
