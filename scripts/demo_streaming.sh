#!/usr/bin/env bash
# make demo-streaming: the events pipeline on a real Kafka topic, aggregates upserted into a real
# PostgreSQL, on Prism. Starts both services (scripts/kafka.sh, scripts/postgres.sh), produces
# generated events, runs the streaming job until the topic's end offsets (--kafka_stop_at_end),
# prints the summary and the aggregate table's size, and stops the services again.
#
# Environment: PYTHON (default .venv/bin/python), DEMO_STREAM_ROWS (default 50000),
# KAFKA_PORT (default 59092), PG_PORT (default 55432), OUT (default out-stream/).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
ROWS=${DEMO_STREAM_ROWS:-50000}
KAFKA_PORT=${KAFKA_PORT:-59092}
PG_PORT=${PG_PORT:-55432}
OUT=${OUT:-out-stream/}
TOPIC=events

cleanup() {
    KAFKA_PORT=$KAFKA_PORT scripts/kafka.sh stop >/dev/null 2>&1 || true
    PG_PORT=$PG_PORT scripts/postgres.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$PYTHON" -m beam_pipelines.artifacts fetch --prism
dsn=$(PG_PORT=$PG_PORT scripts/postgres.sh start | tail -n 1)
bootstrap=$(KAFKA_PORT=$KAFKA_PORT PYTHON=$PYTHON scripts/kafka.sh start | tail -n 1)
KAFKA_PORT=$KAFKA_PORT PYTHON=$PYTHON scripts/kafka.sh topic "$TOPIC" 2 >/dev/null

rm -rf data/stream "$OUT"
"$PYTHON" -m beam_pipelines.datagen --rows "$ROWS" --format jsonl --dirty-fraction 0.05 --out data/stream --seed 11
"$PYTHON" -m beam_pipelines.produce --bootstrap="$bootstrap" --topic="$TOPIC" --input='data/stream/*.jsonl'

echo "The generated events are spread over a week in random order, so many reach the stream after"
echo "their window (plus the allowed lateness) closed: they are counted as late and kept in dlq/."
"$PYTHON" -m beam_pipelines.main --pipeline=events --streaming --runner=PrismRunner \
    --kafka_bootstrap="$bootstrap" --kafka_topic="$TOPIC" --kafka_stop_at_end \
    --pg_dsn="$dsn" --output="$OUT"

echo
echo "PostgreSQL $dsn, table events_aggregates (first rows):"
"$PYTHON" - "$dsn" <<'PY'
import sys

import psycopg

with psycopg.connect(sys.argv[1]) as conn:
    rows = conn.execute(
        "SELECT window_start, event_type, country, events, users, amount_sum FROM events_aggregates "
        "ORDER BY window_start, event_type, country LIMIT 8"
    ).fetchall()
    total = conn.execute("SELECT count(*), sum(events) FROM events_aggregates").fetchone()
for r in rows:
    print("  ", r[0].isoformat(), *r[1:])
print(f"   ... {total[0]:,} rows, {total[1]:,} events")
PY
