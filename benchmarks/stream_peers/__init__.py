"""The systems the streaming benchmark runs side by side (``python -m benchmarks.streaming``).

Each system is a command that reads a Kafka topic from its beginning, keeps hourly aggregates
per (event_type, country) (events, distinct users, amount sum, duplicates by event_id counted
once, lines that are not JSON events dropped) and upserts them into a PostgreSQL table
``(window_start, event_type, country, events, users, amount_sum)`` with results at most about
a second stale. Each prints ``consuming Kafka topic T partition P from offset O`` on stdout once
it reads partition P: the harness produces nothing before every partition has said so.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["READY", "SYSTEMS", "Job", "StreamSystem"]

READY = re.compile(r"consuming Kafka topic (\S+) partition (\d+) from offset (\d+)")


@dataclass(frozen=True)
class Job:
    """Where a system reads and writes for one run."""

    bootstrap: str
    topic: str
    dsn: str
    table: str
    work: Path
    window_s: int = 3600


@dataclass(frozen=True)
class StreamSystem:
    name: str
    doc: str
    module: str  # run as ``python -m MODULE`` with the flags below

    def command(self, job: Job) -> list[str]:
        return [sys.executable, "-m", self.module, f"--bootstrap={job.bootstrap}", f"--topic={job.topic}",
                f"--dsn={job.dsn}", f"--table={job.table}", f"--work={job.work}",
                f"--window_seconds={job.window_s}"]  # fmt: skip


SYSTEMS = {
    s.name: s
    for s in (
        StreamSystem(
            "beam_pipelines",
            "this project's `events` spec streaming on Prism: validation, dedup, dead letters, lateness, "
            "exactly-once results after a restart",
            "benchmarks.stream_peers.beam_pipelines",
        ),
        StreamSystem(
            "loop",
            "a hand-written confluent-kafka + psycopg loop: the floor of Python overhead (no lateness, no "
            "restart guarantees)",
            "benchmarks.stream_peers.loop",
        ),
        StreamSystem(
            "quix",
            "Quix Streams 3.28: an Application grouping by the aggregate's key (a Kafka repartition), keyed "
            "state for dedup and distinct users, a tumbling window's `.current()` values upserted by the "
            "community PostgreSQL sink at each one-second checkpoint",
            "benchmarks.stream_peers.quix",
        ),
        StreamSystem(
            "pyflink",
            "PyFlink 2.0 (Flink SQL on the local mini-cluster): a Kafka JSON table, ROW_NUMBER dedup, a continuous "
            "GROUP BY on the hour with mini-batches, a JDBC upsert table flushed every second",
            "benchmarks.stream_peers.pyflink",
        ),
    )
}
