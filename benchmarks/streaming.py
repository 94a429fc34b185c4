"""Streaming benchmark: Kafka -> the events pipeline on Prism -> PostgreSQL.

    python -m benchmarks.streaming [--events 200000] [--rate 2000] [--seconds 30] \\
        [--json benchmarks/results/streaming.json]

Starts a real Kafka broker and PostgreSQL (scripts/kafka.sh, scripts/postgres.sh) on free ports,
then measures:

- throughput: ``--events`` generated events (5% dirty) spanning one day of event time, in
  event-time order as a live feed would bring them, produced to a 2-partition topic first, then the streaming CLI with
  ``--kafka_stop_at_end``; events/s over the job's wall time, and sustained events/s with the
  job's fixed start-up (a run over an empty topic) taken off;
- latency: the streaming CLI running unbounded with ``--early_firing_seconds=1`` while events
  stamped with the current time are produced at ``--rate`` per second for ``--seconds``; an
  event's latency is the time from its produce call until the aggregate rows in PostgreSQL
  count it (polled every 20 ms); p50 and p99 over all events.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psycopg
from confluent_kafka import Producer

from beam_pipelines.produce import produce_files
from tests.services import (
    create_topic,
    free_port,
    free_port_pair,
    start_kafka,
    start_postgres,
    stop_kafka,
    stop_postgres,
)
from transforms.ingest.kafka_time import NO_TIME, event_times_us

ROOT = Path(__file__).resolve().parents[1]
TABLE = "bench_aggregates"


def _cli(bootstrap: str, topic: str, dsn: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "beam_pipelines.main", "--pipeline=events", "--streaming", "--runner=PrismRunner",
            f"--kafka_bootstrap={bootstrap}", f"--kafka_topic={topic}", f"--pg_dsn={dsn}", f"--pg_table={TABLE}",
            f"--output={out}", *extra]  # fmt: skip


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _bounded_run(bootstrap: str, topic: str, dsn: str, out: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run(_cli(bootstrap, topic, dsn, out, "--kafka_stop_at_end"), cwd=ROOT, env=_env(),
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"streaming run failed: {proc.stderr.strip()}")
    return time.monotonic() - started


def _in_time_order(paths: list[Path], out: Path) -> Path:
    """The generator spreads events over days in random order; a feed brings them roughly in order.
    Lines without a readable ``ts`` keep their place among the others."""
    lines = [ln for p in paths for ln in p.read_bytes().splitlines() if ln.strip()]
    times = event_times_us(lines)
    order = np.argsort(np.where(times == NO_TIME, np.maximum.accumulate(np.where(times == NO_TIME, 0, times)), times),
                       kind="stable")  # fmt: skip
    out.write_bytes(b"\n".join(lines[i] for i in order) + b"\n")
    return out


def throughput(bootstrap: str, dsn: str, work: Path, events: int) -> dict:
    data = work / "in"
    subprocess.run([sys.executable, "-m", "beam_pipelines.datagen", f"--rows={events}", "--format=jsonl",
                    "--dirty-fraction=0.05", f"--out={data}", "--seed=21", "--days=1"], cwd=ROOT, env=_env(), check=True,
                   capture_output=True)  # fmt: skip
    ordered = _in_time_order(sorted(data.glob("*.jsonl")), work / "ordered.jsonl")
    empty = create_topic(bootstrap, "bench-empty", 2)
    startup = _bounded_run(bootstrap, empty, dsn, work / "out-empty")
    topic = create_topic(bootstrap, "bench-throughput", 2)
    produced = produce_files(bootstrap, topic, [str(ordered)], key_field="event_id")
    wall = _bounded_run(bootstrap, topic, dsn, work / "out-throughput")
    report = json.loads((work / "out-throughput" / "_run" / "report.json").read_text())
    return {
        "events": produced,
        "read": report["counts"]["read"],
        "wall_s": round(wall, 2),
        "startup_s": round(startup, 2),
        "events_per_s": round(produced / wall),
        "sustained_events_per_s": round(produced / max(wall - startup, 1e-3)),
        "conservation_ok": report["conservation_ok"],
    }


def _produce_live(bootstrap: str, topic: str, rate: int, seconds: float, sent: list) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    start = time.monotonic()
    i = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while i < due:
            ts = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
            value = json.dumps({"event_id": f"lat-{i}", "user_id": f"u{i % 100}", "event_type": "view", "ts": ts,
                                "country": "US"}).encode()  # fmt: skip
            producer.produce(topic, value=value, partition=i % 2)
            sent.append(time.monotonic())
            i += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)


def _counted(conn) -> int:
    try:
        return int(conn.execute(f"SELECT coalesce(sum(events), 0) FROM {TABLE}").fetchone()[0])  # noqa: S608
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return 0


def latency(bootstrap: str, dsn: str, work: Path, rate: int, seconds: float) -> dict:
    topic = create_topic(bootstrap, "bench-latency", 2)
    job = subprocess.Popen(_cli(bootstrap, topic, dsn, work / "out-latency", "--early_firing_seconds=1"), cwd=ROOT,
                           env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)  # fmt: skip
    try:
        time.sleep(8)  # the job's start-up (and its clearing of the table) comes before the stream
        sent: list[float] = []
        producer = threading.Thread(target=_produce_live, args=(bootstrap, topic, rate, seconds, sent))
        producer.start()
        seen_at = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + seconds + 60
            while time.monotonic() < deadline:
                n = _counted(conn)
                now = time.monotonic()
                seen_at.extend([now] * (n - len(seen_at)))
                if not producer.is_alive() and len(seen_at) >= len(sent):
                    break
                if job.poll() is not None:
                    raise RuntimeError(f"streaming job ended: {job.stderr.read().decode().strip()}")
                time.sleep(0.02)
        producer.join()
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
    n = min(len(sent), len(seen_at))
    lat = np.array(seen_at[:n]) - np.array(sent[:n])
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "events": len(sent),
        "counted": len(seen_at),
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p99_s": round(float(np.percentile(lat, 99)), 3),
        "max_s": round(float(lat.max()), 3),
    }


def markdown(result: dict) -> str:
    t, lat = result["throughput"], result["latency"]
    return "\n".join([
        "| measure | value |", "|---|---:|",
        f"| events produced, then read to the end (2 partitions) | {t['events']:,} |",
        f"| wall time of the streaming job (Prism) | {t['wall_s']} s |",
        f"| job start-up (an empty topic) | {t['startup_s']} s |",
        f"| events/s over the whole job | {t['events_per_s']:,} |",
        f"| sustained events/s (start-up taken off) | {t['sustained_events_per_s']:,} |",
        f"| latency: events produced live | {lat['events']:,} at {lat['rate_per_s']:,}/s for {lat['seconds']} s |",
        f"| latency produce -> counted in PostgreSQL, p50 | {lat['p50_s']} s |",
        f"| latency, p99 | {lat['p99_s']} s |",
        f"| latency, max | {lat['max_s']} s |",
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="Events for the throughput run.")
    parser.add_argument("--rate", type=int, default=2000, help="Events per second for the latency run.")
    parser.add_argument("--seconds", type=float, default=30, help="Length of the latency run.")
    parser.add_argument("--json", default="benchmarks/results/streaming.json", help="Result file (.md beside it).")
    args = parser.parse_args(argv)
    kafka_port, pg_port = free_port_pair(), free_port()
    bootstrap, dsn = start_kafka(kafka_port), start_postgres(pg_port)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
            work = Path(tmp)
            result = {
                "throughput": throughput(bootstrap, dsn, work, args.events),
                "latency": latency(bootstrap, dsn, work, args.rate, args.seconds),
            }
    finally:
        stop_kafka(kafka_port)
        stop_postgres(pg_port)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
