"""A hand-written confluent-kafka + psycopg loop: the floor of Python overhead for the streaming
benchmark's work (see ``benchmarks.stream_peers``).

One process, one consumer assigned every partition from the beginning; per message: parse,
check, drop a repeated event_id, add to the hourly aggregate in dicts; once a second, the
aggregates changed since the last upsert go to PostgreSQL in one transaction. No event-time
lateness, no dead-letter output and no restart guarantees: what the framework adds costs what
this leaves out.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from psycopg import sql

from benchmarks.stream_peers.records import check


def _key(record, window_s: int):
    """(window start, event_type, country) and the record's user and amount in cents, or None
    for a record the events contract rejects."""
    event = check(record)
    if event is None:
        return None
    start = int(event.seconds // window_s * window_s)
    return event.event_id, (start, event.event_type, event.country), event.user_id, event.cents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stream_peers.loop", description=__doc__.split("\n\n")[0]
    )
    for flag in ("bootstrap", "topic", "dsn", "table", "work"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--window_seconds", type=int, default=3600)
    parser.add_argument("--flush_seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    table = sql.Identifier(args.table)
    conn = psycopg.connect(args.dsn, autocommit=False)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    conn.execute(sql.SQL("CREATE TABLE {} (window_start timestamptz, event_type text, country text, events bigint, "
                         "users bigint, amount_sum numeric(20, 2), PRIMARY KEY (window_start, event_type, country))"
                         ).format(table))  # fmt: skip
    conn.commit()
    upsert = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (window_start, event_type, country) "
                     "DO UPDATE SET events = EXCLUDED.events, users = EXCLUDED.users, "
                     "amount_sum = EXCLUDED.amount_sum").format(table)  # fmt: skip
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "bench-loop", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 50})  # fmt: skip
    partitions = consumer.list_topics(args.topic, timeout=30).topics[args.topic].partitions
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
    announce = True  # once the first fetch has returned, as the framework's reader says it
    seen: set[str] = set()
    aggs: dict[tuple, list] = {}  # key -> [events, users, cents]
    dirty: set[tuple] = set()
    last = time.monotonic()
    while True:
        for m in consumer.consume(10_000, timeout=0.05):
            if m.error() is not None:
                continue
            try:
                parsed = _key(orjson.loads(m.value() or b""), args.window_seconds)
            except orjson.JSONDecodeError:
                continue
            if parsed is None or parsed[0] in seen:
                continue
            event_id, key, user, cents = parsed
            seen.add(event_id)
            agg = aggs.get(key)
            if agg is None:
                agg = aggs[key] = [0, set(), 0]
            agg[0] += 1
            agg[1].add(user)
            agg[2] += cents
            dirty.add(key)
        if announce:
            announce = False
            for p in sorted(partitions):
                print(f"consuming Kafka topic {args.topic} partition {p} from offset 0", flush=True)
        if dirty and time.monotonic() - last >= args.flush_seconds:
            rows = [(datetime.fromtimestamp(k[0], timezone.utc), k[1], k[2], a[0], len(a[1]), Decimal(a[2]).scaleb(-2))
                    for k in dirty for a in (aggs[k],)]  # fmt: skip
            with conn.cursor() as cur:
                cur.executemany(upsert, rows)
            conn.commit()
            dirty.clear()
            last = time.monotonic()


if __name__ == "__main__":
    sys.exit(main())
