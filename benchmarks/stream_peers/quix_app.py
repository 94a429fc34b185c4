"""The Quix Streams Application of the streaming benchmark, written as its users write one (run
with the Quix virtualenv's interpreter: ``benchmarks.stream_peers.quix``).

The topic is read from the beginning by a new consumer group. Each message is parsed and
checked (lines that are not events are dropped), stamped with its event time and grouped by
(event_type, country), the aggregate's key: Quix repartitions through a Kafka topic so that a
key's messages meet in one process. There, the key's state drops a repeated event_id (a repeat
is an exact copy, so it has its original's key) and marks the first event of each user in its
window. A tumbling one-hour window counts events and those marks and sums the amount in cents;
``.current()`` emits the window's running value on every update, and Quix's community
PostgreSQL sink upserts the newest value per key at every checkpoint (each second).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path

import orjson
import psycopg2
import quixstreams.dataframe.windows.aggregations as agg
from psycopg2 import sql
from psycopg2.extensions import parse_dsn
from quixstreams import Application
from quixstreams.sinks.community.postgresql import PostgreSQLSink

from benchmarks.stream_peers.records import check

# How late (in event time) an event may come and still count in its window. Quix closes a window by
# the newest timestamp the key's partition has seen, and a consumer hands over one partition's
# fetched batch (thousands of messages) before the next: catching up on a backlog, the other
# partition's events arrive hours behind. The benchmark's backlog spans a day.
GRACE = timedelta(days=1)


class AnnouncingApplication(Application):
    """An Application that says when it consumes the source topic's partitions: once a poll has
    returned with them assigned (and state recovery, if any, done). Its one consumer is assigned
    every partition at once."""

    def __init__(self, source_topic: str, **kwargs):
        super().__init__(**kwargs)
        self._source_topic, self._announced = source_topic, False

    def _process_message(self, dataframe_composed):
        super()._process_message(dataframe_composed)
        if self._announced:
            return
        for tp in sorted(self._consumer.assignment(), key=lambda tp: (tp.topic, tp.partition)):
            if tp.topic == self._source_topic:
                self._announced = True
                low, _ = self._consumer.get_watermark_offsets(tp, timeout=10)
                print(f"consuming Kafka topic {tp.topic} partition {tp.partition} from offset {low}", flush=True)


def parse(value: bytes) -> dict | None:
    try:
        event = check(orjson.loads(value))
    except orjson.JSONDecodeError:
        return None
    return None if event is None else event._asdict()


def first_seen(event: dict, state, window_s: int) -> dict | None:
    """None for a repeated event_id; else the event with ``new_user`` 1 for its user's first
    event in its window. ``state`` is the (event_type, country) key's."""
    if state.exists(event["event_id"]):
        return None
    state.set(event["event_id"], True)
    user = f"user {int(event['seconds'] // window_s)} {event['user_id']}"
    event["new_user"] = 0 if state.exists(user) else 1
    if event["new_user"]:
        state.set(user, True)
    return event


def row(window: dict, key: str, *_) -> dict:
    event_type, country = key.split("|", 1)
    return {
        "window_start": datetime.fromtimestamp(window["start"] / 1000, timezone.utc),
        "event_type": event_type,
        "country": country,
        "events": window["events"],
        "users": window["users"],
        "amount_sum": Decimal(window["cents"]).scaleb(-2),
    }


def create_table(dsn: str, table: str) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        cur.execute(sql.SQL("CREATE TABLE {} (window_start timestamptz, event_type text, country text, events bigint, "
                            "users bigint, amount_sum numeric(20, 2), PRIMARY KEY (window_start, event_type, country))"
                            ).format(sql.Identifier(table)))  # fmt: skip
    conn.close()


def build(args: argparse.Namespace) -> Application:
    app = AnnouncingApplication(
        args.topic,
        broker_address=args.bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:12]}",  # a new group: the topic from its beginning
        auto_offset_reset="earliest",
        commit_interval=args.flush_seconds,  # each checkpoint flushes the sink: results at most this stale
        state_dir=Path(args.work) / f"quix-state-{args.table}",
        loglevel="WARNING",
    )
    sdf = app.dataframe(app.topic(args.topic, value_deserializer="bytes"))
    sdf = sdf.apply(parse).filter(lambda event: event is not None)
    sdf = sdf.set_timestamp(lambda event, key, timestamp, headers: int(event["seconds"] * 1000))
    sdf = sdf.group_by(lambda event: f"{event['event_type']}|{event['country']}", name="type_country")
    sdf = sdf.apply(partial(first_seen, window_s=args.window_seconds), stateful=True).filter(
        lambda event: event is not None
    )
    sdf = (
        sdf.tumbling_window(timedelta(seconds=args.window_seconds), grace_ms=GRACE)
        .agg(events=agg.Count(), users=agg.Sum("new_user"), cents=agg.Sum("cents"))
        .current()
    )
    sdf = sdf.apply(row, metadata=True)
    pg = parse_dsn(args.dsn)
    sdf.sink(
        PostgreSQLSink(
            host=pg.get("host", "127.0.0.1"),
            port=int(pg.get("port", 5432)),
            dbname=pg["dbname"],
            user=pg["user"],
            password=pg.get("password", ""),
            table_name=args.table,
            schema_auto_update=False,  # the benchmark's table, created by create_table
            primary_key_columns=["window_start", "event_type", "country"],
            upsert_on_primary_key=True,
            include_metadata=False,
        )
    )
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stream_peers.quix", description=__doc__.split("\n\n")[0]
    )
    for flag in ("bootstrap", "topic", "dsn", "table", "work"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--window_seconds", type=int, default=3600)
    parser.add_argument("--flush_seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    create_table(args.dsn, args.table)
    build(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
