"""Batch/stream parity of the user_features spec, and its online store, on real services.

The same clickstream goes to a batch run (files) and to a streaming run (a real 2-partition Kafka
topic, Prism, a real PostgreSQL): messages out of order by up to 20 minutes, events of one user
at the same instant, copies of events, and events hours behind the watermark. The stream's late
records are exactly those the source's rule makes late (window end + allowed lateness at or
before the partition's watermark), computed here from the messages; with those left out, the
batch run's feature table and the stream's are equal, every column of every row; the online
table holds each user's row as of the latest event, the same values as the feature table's
latest row (what a training set takes at that time), and the lookup CLI reads them.

The spec run reads a topic filled before it starts, in a few large batches. The composite is also
run on Prism over a live topic, filled in small pieces while it reads: the watermark moves between
them, rows are written mid-stream and out-of-order events arrive after rows of their users have
been written; its rows equal the kernels' over all the on-time events.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import apache_beam as beam
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Producer

from beam_pipelines.features.__main__ import main as features_main
from beam_pipelines.features.online import OnlineStore
from beam_pipelines.features.training import as_of_join, feature_layout
from beam_pipelines.runners import make_runner
from beam_pipelines.spec import EventsConfig
from beam_pipelines.spec.build import plan_for
from tests.e2e.helpers import cli, read_parquet_dir, report, run_module
from tests.services import create_topic
from transforms.entity_features_stream import VERSION, EntityFeaturesStream
from transforms.feature_kernels import features_as_of
from transforms.ingest.kafka import ReadKafka

WINDOW, LATENESS = 3600, 600
TABLE = "user_features_online_test"
KEY = ["user_id", "ts", "event_id"]


def _us(ts) -> int:
    """Epoch microseconds of a generated ``ts``: ISO text (UTC without an offset), epoch seconds or ms."""
    if isinstance(ts, str):
        t = datetime.fromisoformat(ts)
        return round((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1_000_000)
    return ts * 1000 if isinstance(ts, int) and ts >= 10**11 else round(ts * 1_000_000)


def messages(root) -> list[tuple[int, bytes]]:
    """(partition, message) in produce order: each user's events go to one partition, in time
    order give or take 20 minutes; ties, copies and a few events hours late mixed in."""
    proc = run_module("beam_pipelines.datagen", "--dataset=sessions", "--rows=3000", "--format=jsonl",
                      "--dirty-fraction=0", f"--out={root}", "--seed=5", "--days=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for f in sorted(root.glob("*.jsonl")) for x in f.read_text().splitlines() if x.strip()]
    rng = random.Random(19)
    extra = []
    for i, r in enumerate(records[::25]):  # another event of the same user at the same instant
        extra.append({**r, "event_id": f"tie-{i}", "action": rng.choice(["view", "purchase"]),
                      "amount": 9.99, "page": f"/tie/{i}"})  # fmt: skip
    records += extra
    order = sorted(records, key=lambda r: _us(r["ts"]) + rng.randrange(0, 1200 * 1_000_000))
    for i in range(60, len(order), 400):  # hours behind what has been read by then: late
        old = dict(order[i - 60], event_id=f"late-{i}", page="/late")
        old["ts"] = datetime.fromtimestamp(_us(order[i]["ts"]) / 1e6 - 5 * 3600, timezone.utc).isoformat()
        order.insert(i, old)
    for i in range(10, len(order), 300):  # a copy sent again (a redelivery)
        order.insert(i + 5, order[i])
    return [(int(r["user_id"][2:]) % 2, json.dumps(r).encode()) for r in order]


def late_ids(msgs: list[tuple[int, bytes]]) -> set[str]:
    """The source's rule per partition, in offset order: late when window end + lateness <= the
    largest event time read before it."""
    late, watermark = set(), {}
    for partition, value in msgs:
        r = json.loads(value)
        t = _us(r["ts"])
        end = (t // (WINDOW * 1_000_000) + 1) * WINDOW * 1_000_000
        if partition in watermark and end + LATENESS * 1_000_000 <= watermark[partition]:
            late.add(r["event_id"])
        watermark[partition] = max(watermark.get(partition, t), t)
    return late


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> list[tuple[int, bytes]]:
    return messages(tmp_path_factory.mktemp("features_gen"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, generated, prism_binary, kafka_bootstrap, pg_dsn):
    root = tmp_path_factory.mktemp("features_stream")
    msgs = generated
    late = late_ids(msgs)
    assert 5 <= len(late) < 100, len(late)  # the injected ones, and some of the 20-minute disorder
    on_time = [v for _, v in msgs if json.loads(v)["event_id"] not in late]
    (root / "in").mkdir()
    (root / "in" / "events.jsonl").write_bytes(b"\n".join(on_time) + b"\n")
    batch = root / "batch"
    proc = cli("--pipeline=user_features", f"--input={root}/in/*.jsonl", f"--output={batch}", "--history=none",
               "--lineage=none")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    topic = create_topic(kafka_bootstrap, f"features-{root.name}", partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for partition, value in msgs:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(30) == 0
    stream = root / "stream"
    proc = cli("--pipeline=user_features", "--streaming", "--runner=PrismRunner", f"--kafka_bootstrap={kafka_bootstrap}",
               f"--kafka_topic={topic}", f"--pg_dsn={pg_dsn}", f"--pg_table={TABLE}", f"--output={stream}",
               f"--window_seconds={WINDOW}", f"--allowed_lateness={LATENESS}", "--kafka_stop_at_end")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {"batch": batch, "stream": stream, "late": late, "messages": msgs, "stdout": proc.stdout, "dsn": pg_dsn}


def table(out) -> pa.Table:
    return read_parquet_dir(out / "curated").sort_by([(c, "ascending") for c in KEY])


@pytest.mark.timeout(900)
def test_the_stream_writes_the_batch_feature_table_late_records_left_out_alike(runs):
    assert "user_features (streaming) on PrismRunner" in runs["stdout"]
    rep = report(runs["stream"])
    assert rep["conservation_ok"], rep
    assert rep["counts"]["read"] == len(runs["messages"])
    assert rep["counts"]["late"] == len(runs["late"])
    dead = [json.loads(x) for p in sorted((runs["stream"] / "dlq").rglob("*.jsonl")) for x in p.read_text().split("\n")
            if x.strip()]  # fmt: skip
    assert {json.loads(d["raw"])["event_id"] for d in dead if d["reason"] == "late"} == runs["late"]
    assert rep["counts"]["curated"] == report(runs["batch"])["counts"]["curated"]
    streamed, batched = table(runs["stream"]), table(runs["batch"])
    assert streamed.num_rows == batched.num_rows > 2500
    assert streamed.column_names == batched.column_names
    for name in batched.column_names:  # every value of every row, column by column for a readable failure
        assert streamed.column(name).to_pylist() == batched.column(name).to_pylist(), name
    ties = batched.filter(pa.compute.starts_with(batched.column("event_id"), "tie-"))
    assert ties.num_rows > 50


@pytest.mark.timeout(900)
def test_the_online_store_holds_each_users_features_as_of_the_latest_event(runs):
    batched = table(runs["batch"])
    layout = feature_layout(batched.schema)
    users = pa.compute.unique(batched.column("user_id")).sort()
    # The offline as-of values: a training set with every user labelled after the last event.
    labels = pa.table({"user_id": users, "ts": pa.array([datetime(2100, 1, 1, tzinfo=timezone.utc)] * len(users),
                                                        pa.timestamp("us", tz="UTC"))})  # fmt: skip
    offline = as_of_join(labels, batched, layout, "ts").to_pylist()
    with OnlineStore(runs["dsn"], TABLE) as store:
        online = store.get_many(users.to_pylist())
    assert len(online) == len(users)
    for want in offline:
        got = online[want["user_id"]]
        assert got["ts"] == want["feature_time"], want["user_id"]
        assert {f: got[f] for f in layout.features} == {f: want[f] for f in layout.features}, want["user_id"]
    with psycopg.connect(runs["dsn"]) as conn:
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == len(users)  # noqa: S608


def test_the_lookup_cli_reads_the_online_store(runs, capsys):
    user = table(runs["batch"]).column("user_id")[0].as_py()
    assert features_main(["lookup", f"--dsn={runs['dsn']}", f"--table={TABLE}", f"--entity={user}"]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    with OnlineStore(runs["dsn"], TABLE) as store:
        want = store.get(user)
    assert row["found"] and row["user_id"] == user
    assert row["events_7d"] == want["events_7d"] and row["ts"] == want["ts"].isoformat()


_TYPES = {"user_id": pa.string(), "ts": pa.timestamp("us", tz="UTC"), "event_id": pa.string(),
          "page": pa.string(), "action": pa.string(), "amount": pa.float64()}  # fmt: skip


def events_table(values: list[bytes]) -> pa.Table:
    rows = [json.loads(v) for v in values]
    cols = {c: [r.get(c) for r in rows] for c in _TYPES}
    cols["ts"] = [_us(t) for t in cols["ts"]]
    return pa.table({c: pa.array(v, pa.int64() if c == "ts" else t).cast(t) for (c, v), t in zip(cols.items(),
                                                                                                _TYPES.values())})  # fmt: skip


class _Parse(beam.DoFn):
    def process(self, table: pa.Table):
        yield events_table(table.column("raw").to_pylist())


class _Save(beam.DoFn):
    """Each table as a parquet file under ``root``, named by the element's timestamp."""

    def __init__(self, root: str):
        self._root = root

    def process(self, table: pa.Table, timestamp=beam.DoFn.TimestampParam):
        name = f"{self._root}/{timestamp.micros}-{uuid.uuid4().hex}"
        pq.write_table(table, name + ".tmp")
        os.replace(name + ".tmp", name + ".parquet")


def saved(root: Path) -> tuple[pa.Table, list[int]]:
    files = sorted(root.glob("*.parquet"))
    if not files:
        return pa.table({}), []
    return pa.concat_tables([pq.read_table(f) for f in files]), sorted({int(f.name.split("-")[0]) for f in files})


def live_chunks(msgs: list[tuple[int, bytes]]) -> list[list[tuple[int, bytes]]]:
    """The messages cut where both partitions have passed an hour's end by two minutes (every
    other hour), each next piece led by a straggler: an event of the hour just ended, on the
    partition further behind. It is on time (its window's end plus the lateness is still ahead of
    that partition), but that window's end is behind the watermark when it comes."""
    hour = WINDOW * 1_000_000
    chunks, current, marks, cut_at = [], [], {}, None
    for partition, value in msgs:
        current.append((partition, value))
        marks[partition] = max(marks.get(partition, 0), _us(json.loads(value)["ts"]))
        floor = min(marks.values()) if len(marks) == 2 else 0
        if cut_at is None and floor:
            cut_at = (floor // hour + 4) * hour + 120_000_000
        if cut_at is not None and floor >= cut_at:
            behind = min(marks, key=marks.get)
            chunks.append(current)
            current = []
            ended = floor // hour * hour
            if floor - ended < LATENESS * 1_000_000:  # still on time for the hour that ended there
                user = next(json.loads(v)["user_id"] for p, v in reversed(chunks[-1]) if p == behind)
                ts = datetime.fromtimestamp((ended - 60_000_000) / 1e6, timezone.utc).isoformat()
                straggler = {"event_id": f"straggler-{len(chunks)}", "user_id": user, "ts": ts, "page": "/s",
                             "action": "purchase", "amount": 5.0}  # fmt: skip
                current.append((behind, json.dumps(straggler).encode()))
            cut_at = (floor // hour + 4) * hour + 120_000_000
    return chunks + [current]


def sentinel(partition: int, ts_us: int) -> bytes:
    """An event far ahead on ``partition``: it moves the watermark past every real event."""
    ts = datetime.fromtimestamp(ts_us / 1e6, timezone.utc).isoformat()
    return json.dumps({"event_id": f"end-{partition}", "user_id": f"u-999999{partition}", "ts": ts}).encode()


@pytest.mark.timeout(900)
def test_the_composite_on_prism_as_a_live_stream_arrives(generated, tmp_path, prism_binary, kafka_bootstrap):
    seen, unique = set(), []
    for partition, value in generated:  # the copies left out: this is the composite alone, no dedup
        if (event_id := json.loads(value)["event_id"]) not in seen:
            seen.add(event_id)
            unique.append((partition, value))
    chunks = live_chunks(unique)
    msgs = [m for chunk in chunks for m in chunk]
    late = late_ids(msgs)
    stragglers = [v for c in chunks for _, v in c[:1] if b"straggler-" in v]
    assert len(chunks) > 8 and len(stragglers) > 5 and not any(e.startswith("straggler-") for e in late)
    on_time = events_table([v for _, v in msgs if json.loads(v)["event_id"] not in late])
    topic = create_topic(kafka_bootstrap, f"features-live-{uuid.uuid4().hex[:8]}", partitions=2)
    fs = plan_for(EventsConfig(input="x", input_format="jsonl", output="x", pipeline="user_features")).node(
        "UserFeatures").step.feature_set()  # fmt: skip
    out = {name: tmp_path / name for name in ("features", "online", "dead", "late")}
    for d in out.values():
        d.mkdir()
    options = PipelineOptions(["--runner=PrismRunner", "--streaming"])
    p = beam.Pipeline(runner=make_runner(options), options=options)
    read = p | ReadKafka(kafka_bootstrap, topic, window_seconds=WINDOW, allowed_lateness_seconds=LATENESS)
    got = read["records"] | beam.ParDo(_Parse()) | EntityFeaturesStream(fs, WINDOW, LATENESS, partitions=3)
    for name, folder in (("features", "features"), ("online", "online"), ("dead_letters", "dead")):
        got[name] | f"Save{folder}" >> beam.ParDo(_Save(str(out[folder])))
    read["late"] | "SaveLate" >> beam.ParDo(_Save(str(out["late"])))
    result = p.run()
    try:
        # Produced in small pieces while the job reads: the watermark moves between them, rows are
        # written as it passes their closing, and out-of-order events come after some of them.
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
        for chunk in chunks:
            for partition, value in chunk:
                producer.produce(topic, value=value, partition=partition)
            assert producer.flush(30) == 0
            time.sleep(2.0)  # the watermark reaches the features stage within about a second here
        end = int(pa.compute.max(on_time.column("ts")).value) + 86_400_000_000
        for partition in (0, 1):
            producer.produce(topic, value=sentinel(partition, end), partition=partition)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and saved(out["features"])[0].num_rows < on_time.num_rows:
            time.sleep(1)
    finally:
        result.cancel()
    rows, stamps = saved(out["features"])
    late_read = {json.loads(r)["event_id"] for r in saved(out["late"])[0].column("raw").to_pylist()}
    assert late_read == late
    assert not list(out["dead"].glob("*.parquet"))
    want = features_as_of(on_time, fs).sort_by([(c, "ascending") for c in KEY])
    rows = rows.sort_by([(c, "ascending") for c in KEY])
    assert rows.num_rows == on_time.num_rows
    for name in want.column_names:
        assert rows.column(name).to_pylist() == want.column(name).to_pylist(), name
    assert len(stamps) > 10, "rows were written as the watermark passed, not all at the end"
    online, _ = saved(out["online"])
    newest = {}
    for r in online.to_pylist():
        if r["user_id"] not in newest or r[VERSION] > newest[r["user_id"]][VERSION]:
            newest[r["user_id"]] = r
    latest = {r["user_id"]: r for r in want.to_pylist()}  # sorted: each user's last row wins
    for user, r in latest.items():
        got_row = dict(newest[user])
        got_row.pop(VERSION)
        assert got_row == r, user
