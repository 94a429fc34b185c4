"""Streaming benchmark: Kafka -> each system -> PostgreSQL, side by side, on one machine.

    python -m benchmarks.streaming [--systems beam_pipelines,loop] [--rates 500,2000,5000,10000] \\
        [--seconds 20] [--backlog 200000] [--json benchmarks/results/streaming.json]

Starts a real Kafka broker and PostgreSQL (scripts/kafka.sh, scripts/postgres.sh) on free ports.
Every system does the same work (``benchmarks.stream_peers``: parse, check, dedup, hourly
aggregates upserted into PostgreSQL at most about a second stale) and is measured the same way:

- start-up: from launching the system to its "consuming ... partition P" line for every
  partition (the readiness signal: nothing is produced before it);
- latency at each rate: events stamped with the current time are produced at the rate for
  ``--seconds``; an event's latency is from its produce call until PostgreSQL counts it (the
  table's ``sum(events)``, polled every 20 ms); p50 and p99. A rate is sustained when every
  event is counted within the wait and p99 stays under 2 s; the sustainable rate is the highest
  sustained one (rates above the first one not sustained are not tried);
- the broker: before any system runs, the backlog is written to a topic of its own and read
  back once, so the first system measured does not pay for a just-started broker's slow first
  reads (a long-running broker would not make it pay);
- catch-up: ``--backlog`` events over one day of event time are produced before the system
  starts; throughput is the backlog over the time from readiness until PostgreSQL holds every
  aggregate, and the final table must equal the aggregates computed here from the same events.
- where an event's time goes, for systems that record their stages (this project, through
  ``BP_STAGE_TIMES``: the Kafka source per table read, the PostgreSQL sink per firing): from
  produce until the source has read it, from then until PostgreSQL counts it, and the time of
  one firing's upsert.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from psycopg import sql

from benchmarks.stream_events import backlog, event, expected_rows
from benchmarks.stream_peers import READY, SYSTEMS, Job, StreamSystem
from tests.services import (
    create_topic,
    free_port,
    free_port_pair,
    start_kafka,
    start_postgres,
    stop_kafka,
    stop_postgres,
)
from transforms.stage_times import ENV as STAGE_TIMES

ROOT = Path(__file__).resolve().parents[1]
SUSTAINED_P99_S = 2.0
PARTITIONS = 2
POLL_S = 0.02
STALLED_S = 120  # catch-up: a count that stops short of the backlog for this long is a failure


class Running:
    """A system's process, its output in files, until :meth:`stop`."""

    def __init__(self, system: StreamSystem, job: Job, env: dict | None = None):
        self.system, self.job = system, job
        self.out, self.err = job.work / f"{job.table}.out", job.work / f"{job.table}.err"
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(system.command(job), cwd=ROOT, env=env, stdout=out, stderr=err,
                                         start_new_session=True)  # fmt: skip
        self.launched = time.monotonic()

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.err.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.system.name} ended ({self.proc.returncode}):\n{tail}")

    def wait_ready(self, partitions: int, timeout_s: float = 240) -> float:
        """Seconds from launch until every partition of the topic is being consumed."""
        deadline = self.launched + timeout_s
        while time.monotonic() < deadline:
            said = {int(m[2]) for m in READY.finditer(self.out.read_text(errors="replace")) if m[1] == self.job.topic}
            if len(said) >= partitions:
                return time.monotonic() - self.launched
            self.check()
            time.sleep(POLL_S)
        raise RuntimeError(f"{self.system.name} did not start consuming within {timeout_s:g}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def _counted(conn, table: str) -> int:
    try:
        query = sql.SQL("SELECT coalesce(sum(events), 0) FROM {}").format(sql.Identifier(table))
        return int(conn.execute(query).fetchone()[0])
    except psycopg.errors.UndefinedTable:
        return 0


def _rows(dsn: str, table: str) -> list[tuple]:
    query = sql.SQL("SELECT window_start, event_type, coalesce(country, ''), events, users, "
                    "round(amount_sum::numeric, 2) FROM {} ORDER BY 1, 2, 3").format(sql.Identifier(table))  # fmt: skip
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(query).fetchall()]


def _ready_producer(bootstrap: str, linger_ms: int) -> Producer:
    """An idempotent producer that has its producer id: on a broker that has just started, getting
    one waits out the coordinator's loading (about a second), and the first events' latency would
    then be the producer's own start-up. One message to a topic of its own fetches the id."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "enable.idempotence": True})
    producer.produce(create_topic(bootstrap, "bench-producer-warmup"), value=b"{}")
    if producer.flush(60) != 0:
        raise RuntimeError(f"the benchmark's producer could not reach the broker at {bootstrap}")
    return producer


def warm_broker(bootstrap: str, messages: list[bytes], timeout_s: float = 120) -> float:
    """Produces ``messages`` to a topic of their own and reads them back once; returns the seconds.

    A broker that has just started serves its first reads slowly (its JVM compiles as it goes):
    without this the first system measured would pay for it (its catch-up ran at 40-44k
    messages/s where later runs on the same broker ran at 50-60k), as a long-running broker
    would not make it pay.
    """
    started = time.monotonic()
    topic = create_topic(bootstrap, "bench-broker-warmup", PARTITIONS)
    producer = _ready_producer(bootstrap, 20)
    for i, m in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=m, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.5)
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not produce the broker's warm-up messages to {bootstrap}")
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-broker-warmup", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    read, deadline = 0, started + timeout_s
    try:
        while read < len(messages):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"read {read:,} of the broker's {len(messages):,} warm-up messages in {timeout_s:g} s"
                )
            read += sum(1 for m in consumer.consume(10_000, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    return time.monotonic() - started


def _produce_live(producer: Producer, topic: str, rate: int, seconds: float, sent: list, prefix: str) -> None:
    rng = random.Random(rate)
    start = time.monotonic()
    i = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while i < due:
            value = event(rng, i, int(datetime.now(timezone.utc).timestamp() * 1e6), prefix)
            producer.produce(topic, value=value, partition=i % PARTITIONS)
            sent.append(time.monotonic())
            i += 1
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def stages(path: Path, table: str, sent: np.ndarray, seen: np.ndarray, wall_minus_mono: float) -> dict | None:
    """Where the events' time went, from the job's stage times (None if it recorded none).

    Event i went to partition i % PARTITIONS at offset i // PARTITIONS (a new topic); it was read
    in the first table of its partition whose last offset is at or past it.
    """
    if not path.exists():
        return None
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    reads = sorted((r for r in lines if r["stage"] == "read"), key=lambda r: r["at"])
    upserts = [r for r in lines if r["stage"] == "upsert" and r.get("table") == table]
    if not reads:
        return None
    read_at = np.full(len(sent), np.nan)
    index = np.arange(len(sent))
    for p in range(PARTITIONS):
        mine = [r for r in reads if r["partition"] == p]
        if not mine:
            continue
        last = np.maximum.accumulate([r["last_offset"] for r in mine])
        at = np.array([r["at"] for r in mine]) - wall_minus_mono
        events = index[index % PARTITIONS == p]
        k = np.searchsorted(last, events // PARTITIONS, side="left")
        found = k < len(last)
        read_at[events[found]] = at[k[found]]
    n = len(seen)
    to_source = (read_at - sent)[~np.isnan(read_at)]
    counted = (seen - read_at[:n])[~np.isnan(read_at[:n])]
    upsert_ms = np.array([(r["at"] - r["began"]) * 1000 for r in upserts])
    return {
        "to_source_p50_s": _pct(to_source, 50),
        "to_source_p99_s": _pct(to_source, 99),
        "source_to_pg_p50_s": _pct(counted, 50),
        "source_to_pg_p99_s": _pct(counted, 99),
        "tables_read": len(reads),
        "firings": len(upserts),
        "upsert_p50_ms": _pct(upsert_ms, 50),
        "upsert_p99_ms": _pct(upsert_ms, 99),
    }


def live(system: StreamSystem, services: dict, work: Path, rate: int, seconds: float) -> dict:
    name = f"lat_{system.name}_{rate}"
    job = Job(services["bootstrap"], create_topic(services["bootstrap"], name, PARTITIONS), services["dsn"], name, work)
    times = work / f"{name}.stages.jsonl"
    client = _ready_producer(job.bootstrap, 1)
    wall_minus_mono = time.time() - time.monotonic()
    running = Running(system, job, env={STAGE_TIMES: str(times)})
    try:
        startup = running.wait_ready(PARTITIONS)
        sent: list[float] = []
        producer = threading.Thread(
            target=_produce_live,
            args=(client, job.topic, rate, seconds, sent, f"lat{rate}"),
        )
        producer.start()
        seen_at: list[float] = []
        with psycopg.connect(job.dsn, autocommit=True) as conn:
            deadline = time.monotonic() + seconds + 30
            while time.monotonic() < deadline:
                n = _counted(conn, name)
                now = time.monotonic()
                seen_at.extend([now] * (n - len(seen_at)))
                if not producer.is_alive() and len(seen_at) >= len(sent):
                    break
                running.check()
                time.sleep(POLL_S)
        producer.join()
    finally:
        running.stop()
    n = min(len(sent), len(seen_at))
    lat = np.array(seen_at[:n]) - np.array(sent[:n]) if n else np.array([np.inf])
    p99 = float(np.percentile(lat, 99))
    seen = np.array(seen_at[:n])
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "events": len(sent),
        "counted": len(seen_at),
        "startup_s": round(startup, 2),
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p99_s": round(p99, 3),
        "max_s": round(float(lat.max()), 3),
        "sustained": len(seen_at) >= len(sent) and p99 < SUSTAINED_P99_S,
        "stages": stages(times, name, np.array(sent), seen, wall_minus_mono),
    }


def catch_up(system: StreamSystem, services: dict, work: Path, messages: list[bytes], expected: list[tuple]) -> dict:
    name = f"catchup_{system.name}"
    topic = create_topic(services["bootstrap"], name, PARTITIONS)
    # Idempotent: a request retried on a loaded machine would otherwise land after later ones, and
    # events out of order in a partition are late by every system's rules.
    producer = _ready_producer(services["bootstrap"], 20)
    for i, m in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=m, partition=i % PARTITIONS)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.5)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    total = sum(r[3] for r in expected)
    running = Running(system, Job(services["bootstrap"], topic, services["dsn"], name, work))
    try:
        startup = running.wait_ready(PARTITIONS)
        ready = time.monotonic()
        with psycopg.connect(services["dsn"], autocommit=True) as conn:
            deadline, last, moved = ready + 900, -1, time.monotonic()
            while (n := _counted(conn, name)) < total:
                running.check()
                now = time.monotonic()
                if n != last:
                    last, moved = n, now
                if now > deadline or now - moved > STALLED_S:
                    raise RuntimeError(f"{system.name} counted {n:,} of the backlog's {total:,} events and then "
                                       f"nothing more for {now - moved:.0f} s")  # fmt: skip
                time.sleep(0.1)
        done = time.monotonic()
        rows = _rows(services["dsn"], name)
    finally:
        running.stop()
    return {
        "messages": len(messages),
        "events": total,
        "startup_s": round(startup, 2),
        "seconds": round(done - ready, 2),
        "messages_per_s": round(len(messages) / (done - ready)),
        "matches": rows == expected,
    }


def measure(system: StreamSystem, services: dict, work: Path, rates: list[int], seconds: float, messages, expected):
    print(f"{system.name}: catch-up over {len(messages):,} messages", file=sys.stderr, flush=True)
    result = {"catch_up": catch_up(system, services, work, messages, expected), "latency": []}
    for rate in rates:
        print(f"{system.name}: {rate:,} events/s for {seconds:g} s", file=sys.stderr, flush=True)
        run = live(system, services, work, rate, seconds)
        result["latency"].append(run)
        print(f"  p50 {run['p50_s']} s, p99 {run['p99_s']} s, counted {run['counted']:,} of {run['events']:,}",
              file=sys.stderr, flush=True)  # fmt: skip
        if not run["sustained"]:
            break
    sustained = [r["rate_per_s"] for r in result["latency"] if r["sustained"]]
    result["sustainable_rate"] = max(sustained, default=0)
    result["startup_s"] = min(r["startup_s"] for r in result["latency"])
    return result


def markdown(result: dict) -> str:
    systems = result["systems"]
    names = list(systems)
    lines = [f"| measure | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(systems[n]) for n in names) + " |")

    row("start-up to consuming (s)", lambda s: f"{s['startup_s']}")
    row("catch-up throughput (messages/s)", lambda s: f"{s['catch_up']['messages_per_s']:,}")
    row("catch-up aggregates equal the expected", lambda s: "yes" if s["catch_up"]["matches"] else "**no**")
    row(f"sustainable rate (p99 < {SUSTAINED_P99_S:g} s, events/s)", lambda s: f"{s['sustainable_rate']:,}")
    for rate in result["rates"]:

        def cell(s, rate=rate):
            run = next((r for r in s["latency"] if r["rate_per_s"] == rate), None)
            if run is None:
                return "not tried"
            behind = "" if run["counted"] >= run["events"] else f" ({run['counted']:,} of {run['events']:,} counted)"
            return f"{run['p50_s']} / {run['p99_s']}{behind}"

        row(f"latency p50 / p99 at {rate:,}/s (s)", cell)
    # Where the time went, for systems that record their stages.
    breakdown = (
        ("produce -> read by the source", "to_source_p50_s", "to_source_p99_s", "s"),
        ("read -> counted in PostgreSQL", "source_to_pg_p50_s", "source_to_pg_p99_s", "s"),
        ("one firing's upsert", "upsert_p50_ms", "upsert_p99_ms", "ms"),
    )
    for rate in result["rates"]:
        runs = {n: next((r for r in systems[n]["latency"] if r["rate_per_s"] == rate), None) for n in names}
        if not any(run and run.get("stages") for run in runs.values()):
            continue
        for label, p50, p99, unit in breakdown:

            def cell(s, rate=rate, p50=p50, p99=p99):
                run = next((r for r in s["latency"] if r["rate_per_s"] == rate), None)
                t = run and run.get("stages")
                return f"{t[p50]} / {t[p99]}" if t else "not recorded"

            row(f"at {rate:,}/s: {label}, p50 / p99 ({unit})", cell)
    return "\n".join(lines) + "\n"


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in result["systems"].items():
        runs = s["latency"]
        ax.plot([r["rate_per_s"] for r in runs], [r["p99_s"] for r in runs], marker="o", label=name)
    ax.axhline(SUSTAINED_P99_S, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events per second")
    ax.set_ylabel("p99 produce -> PostgreSQL (s)")
    ax.set_title("Streaming latency, Kafka -> PostgreSQL")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="beam_pipelines,loop", help=f"Comma list of: {', '.join(SYSTEMS)}.")
    parser.add_argument("--rates", default="500,2000,5000,10000", help="Live rates in events/s, ascending.")
    parser.add_argument("--seconds", type=float, default=20, help="Length of each live run.")
    parser.add_argument("--backlog", type=int, default=200_000, help="Messages waiting before the catch-up run.")
    parser.add_argument("--json", default="benchmarks/results/streaming.json", help="Result file (.md, .png beside).")
    args = parser.parse_args(argv)
    names = [n for n in args.systems.split(",") if n]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    try:
        rates = sorted(int(r) for r in args.rates.split(","))
    except ValueError:
        parser.error(f"--rates must be integers, got {args.rates!r}")
    if args.backlog < 1 or args.seconds <= 0 or rates[0] < 1:
        parser.error("--backlog, --seconds and every rate must be positive")
    now_us = int(time.time() * 1e6)
    messages = backlog(args.backlog, now_us - 86_400_000_000, 86_400)
    expected = expected_rows(messages)
    kafka_port, pg_port = free_port_pair(), free_port()
    services = {"bootstrap": start_kafka(kafka_port), "dsn": start_postgres(pg_port)}
    result = {"rates": rates, "seconds": args.seconds, "backlog": args.backlog, "cores": os.cpu_count(),
              "systems": {}}  # fmt: skip
    try:
        warmed = warm_broker(services["bootstrap"], messages)
        print(f"broker warmed up: the backlog written and read once in {warmed:.1f} s", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
            for name in names:
                work = Path(tmp) / name
                work.mkdir()
                result["systems"][name] = measure(SYSTEMS[name], services, work, rates, args.seconds, messages,
                                                  expected)  # fmt: skip
    finally:
        stop_kafka(kafka_port)
        stop_postgres(pg_port)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    chart(result, path.with_suffix(".png"))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
