"""The Flink SQL job of the streaming benchmark's PyFlink peer, on PyFlink's local mini-cluster
(run with the PyFlink virtualenv's interpreter by ``benchmarks.stream_peers.pyflink``).

A Kafka table reads the topic from its earliest offsets with the JSON format (lines that are not
JSON objects are skipped, fields of the wrong type read as NULL) and ``ts`` as TIMESTAMP_LTZ.
The contract's checks are a WHERE clause; ROW_NUMBER over event_id keeps each event's first
copy; a continuous GROUP BY on the hour of ``ts`` keeps the running aggregates (COUNT, COUNT
DISTINCT, an exact DECIMAL sum) and a JDBC table with the primary key upserts them, its buffer
flushed every second. A windowed TUMBLE aggregation would emit a window only once the watermark
passes its end: a GROUP BY on the bucket gives the same rows, updated as events come.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment

# FLOOR(ts TO unit): the window sizes a time unit spells.
UNITS = {60: "MINUTE", 3600: "HOUR", 86400: "DAY"}

SOURCE = """
CREATE TABLE events (
    event_id STRING,
    user_id STRING,
    event_type STRING,
    country STRING,
    amount DECIMAL(20, 2),
    ts TIMESTAMP_LTZ(3)
) WITH (
    'connector' = 'kafka',
    'topic' = '{topic}',
    'properties.bootstrap.servers' = '{bootstrap}',
    'properties.group.id' = 'bench-pyflink',
    'scan.startup.mode' = 'earliest-offset',
    'format' = 'json',
    'json.ignore-parse-errors' = 'true',
    'json.timestamp-format.standard' = 'ISO-8601'
)
"""

SINK = """
CREATE TABLE aggregates (
    window_start TIMESTAMP(3),
    event_type STRING,
    country STRING,
    events BIGINT,
    users BIGINT,
    amount_sum DECIMAL(20, 2),
    PRIMARY KEY (window_start, event_type, country) NOT ENFORCED
) WITH (
    'connector' = 'jdbc',
    'url' = '{url}',
    'table-name' = '{table}',
    'sink.buffer-flush.interval' = '{flush}',
    'sink.buffer-flush.max-rows' = '10000',
    'username' = '{user}',
    'password' = '{password}'
)
"""

QUERY = """
INSERT INTO aggregates
SELECT window_start, event_type, country, COUNT(*), COUNT(DISTINCT user_id), SUM(COALESCE(amount, 0))
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY proctime) AS copy
    FROM (
        SELECT event_id, user_id, event_type, COALESCE(country, '') AS country, amount,
               FLOOR(CAST(ts AS TIMESTAMP(3)) TO {unit}) AS window_start, PROCTIME() AS proctime
        FROM events
        WHERE event_id IS NOT NULL AND user_id IS NOT NULL AND ts IS NOT NULL
          AND event_type IN ('view', 'click', 'add_to_cart', 'purchase', 'refund')
          AND (amount >= 0 OR (amount IS NULL AND event_type NOT IN ('purchase', 'refund')))
    )
)
WHERE copy = 1
GROUP BY window_start, event_type, country
"""


def _literal(text: str) -> str:
    """A SQL string literal's body."""
    return text.replace("'", "''")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_peers.flink_job")
    for flag in ("bootstrap", "topic", "jdbc_url", "user", "table", "jars"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--window_seconds", type=int, default=3600)
    parser.add_argument("--flush_seconds", type=float, default=1.0)
    parser.add_argument("--parallelism", type=int, default=2)
    args = parser.parse_args(argv)
    if args.window_seconds not in UNITS:
        parser.error(f"--window_seconds must be one of {sorted(UNITS)}")
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = t_env.get_config()
    config.set("pipeline.jars", ";".join(p.as_uri() for p in sorted(Path(args.jars).glob("*.jar"))))
    config.set("parallelism.default", str(args.parallelism))
    config.set("table.local-time-zone", "UTC")
    # Group aggregation folds a short batch of changes per key before emitting, rather than one update per event.
    config.set("table.exec.mini-batch.enabled", "true")
    config.set("table.exec.mini-batch.allow-latency", "200 ms")
    config.set("table.exec.mini-batch.size", "5000")
    t_env.execute_sql(SOURCE.format(topic=_literal(args.topic), bootstrap=_literal(args.bootstrap)))
    # The password comes from the launcher's environment, never on a command line.
    password = os.environ.get("BENCH_PG_PASSWORD", "")
    t_env.execute_sql(
        SINK.format(
            url=_literal(args.jdbc_url),
            table=_literal(args.table),
            flush=f"{round(args.flush_seconds * 1000)} ms",
            user=_literal(args.user),
            password=_literal(password),
        )
    )
    t_env.execute_sql(QUERY.format(unit=UNITS[args.window_seconds])).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
