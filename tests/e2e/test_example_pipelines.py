"""The example pipelines shipped as specs only (`orders`, `sessions`), end to end through the CLI:
every format on dirty data (conservation, dead letters, drift), and on clean data against an
independent computation in plain Python (the latest version of each order and its daily revenue;
sessions split by a 30-minute gap)."""

import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.e2e.helpers import cli, report, run_module

UTC = timezone.utc
FORMATS = ("jsonl", "csv", "avro", "parquet")


def generate(dataset: str, out: Path, fmt: str, rows: int, dirty: float) -> Path:
    proc = run_module("beam_pipelines.datagen", f"--dataset={dataset}", f"--rows={rows}", f"--format={fmt}",
                      f"--dirty-fraction={dirty}", f"--out={out}", "--seed=11", "--days=3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def run(pipeline: str, data: Path, fmt: str, out: Path) -> dict:
    proc = cli(f"--pipeline={pipeline}", f"--input={data}/*.{fmt}", f"--output={out}", "--history=none",
               "--lineage=none")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{pipeline} on DirectRunner" in proc.stdout
    return report(out)


def rows(root: Path) -> list[dict]:
    return ds.dataset(root, format="parquet").to_table().to_pylist()


def when(value) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000 if value >= 10**11 else value, UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def lines(data: Path) -> list[dict]:
    return [json.loads(x) for f in sorted(data.glob("*.jsonl")) for x in f.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("pipeline", ["orders", "sessions"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_example_runs_every_format_and_accounts_for_every_record(tmp_path, pipeline, fmt):
    data = generate(pipeline, tmp_path / "in", fmt, 4000, 0.1)
    rep = run(pipeline, data, fmt, tmp_path / "out")
    c = rep["counts"]
    assert rep["conservation_ok"] and c["read"] == 4000
    assert c["curated"] > 1000 and c["dead_lettered"] > 0 and c["aggregates"] > 0
    assert {"invalid_value", "missing_field"} <= set(rep["dead_letter_reasons"])
    letters = [json.loads(x) for f in (tmp_path / "out" / "dlq").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert len(letters) == c["dead_lettered"] and all(d["raw"] and d["source"] for d in letters)
    assert len(rows(tmp_path / "out" / "curated")) == c["curated"]
    assert len(rows(tmp_path / "out" / "aggregates")) == c["aggregates"]


def test_orders_keeps_each_orders_latest_version_and_sums_money_exactly(tmp_path):
    data = generate("orders", tmp_path / "in", "jsonl", 3000, 0.0)
    rep = run("orders", data, "jsonl", tmp_path / "out")
    latest: dict = {}
    for r in lines(data):
        if r["order_id"] not in latest or when(r["updated_at"]) > when(latest[r["order_id"]]["updated_at"]):
            latest[r["order_id"]] = r
    curated = {r["order_id"]: r for r in rows(tmp_path / "out" / "curated")}
    assert rep["counts"]["curated"] == len(latest) and rep["counts"]["duplicates"] == 3000 - len(latest)
    assert {k: (r["status"], r["amount"], r["updated_at"]) for k, r in curated.items()} == {
        k: (r["status"], Decimal(str(r["amount"])).quantize(Decimal("0.01")), when(r["updated_at"]))
        for k, r in latest.items()
    }
    expected = defaultdict(lambda: {"orders": 0, "customers": set(), "revenue": Decimal(0), "items": 0, "max": None})
    for r in latest.values():
        day = when(r["updated_at"]).replace(hour=0, minute=0, second=0, microsecond=0)
        e = expected[(day, r["region"].strip().lower(), r["status"])]
        amount = Decimal(str(r["amount"])).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        e["orders"] += 1
        e["customers"].add(r["customer_id"])
        e["revenue"] += amount
        e["items"] += r["quantity"]
        e["max"] = amount if e["max"] is None else max(e["max"], amount)
    got = {(a["window_start"], a["region"], a["status"]): a for a in rows(tmp_path / "out" / "aggregates")}
    assert set(got) == set(expected)
    for key, e in expected.items():
        a = got[key]
        assert a["window_end"] == key[0] + timedelta(days=1)
        assert (a["orders"], a["customers"], a["revenue"], a["items"], a["largest_order"]) == (
            e["orders"], len(e["customers"]), e["revenue"], e["items"], e["max"]
        )  # fmt: skip
        assert a["average_order"] == pytest.approx(float(e["revenue"]) / e["orders"])


def test_sessions_are_split_by_a_thirty_minute_gap(tmp_path):
    data = generate("sessions", tmp_path / "in", "jsonl", 3000, 0.0)
    run("sessions", data, "jsonl", tmp_path / "out")
    by_user = defaultdict(list)
    for r in lines(data):
        by_user[r["user_id"]].append(r)
    gap = timedelta(minutes=30)
    expected = {}
    for user, events in by_user.items():
        events.sort(key=lambda r: when(r["ts"]))
        session: list = []
        for r in events + [None]:
            if session and (r is None or when(r["ts"]) - when(session[-1]["ts"]) >= gap):
                start, end = when(session[0]["ts"]), when(session[-1]["ts"])
                expected[(user, start)] = (
                    end + gap, len(session), len({x["page"] for x in session}),
                    any(x["action"] == "purchase" for x in session),
                )  # fmt: skip
                session = []
            if r is not None:
                session.append(r)
    got = {
        (s["user_id"], s["window_start"]): (s["window_end"], s["events"], s["pages"], s["converted"])
        for s in rows(tmp_path / "out" / "aggregates")
    }
    assert got == expected
    assert len({u for u, _ in expected}) > 10 and sum(1 for v in expected.values() if v[3]) > 0
    for s in rows(tmp_path / "out" / "aggregates"):  # derived from the measures by an expression
        assert s["length_s"] == (s["last_event"] - s["first_event"]).total_seconds()
        assert s["window_end"] == s["last_event"] + gap


@pytest.mark.parametrize("pipeline", ["orders", "sessions"])
def test_dry_run_and_flex_template_per_spec(tmp_path, pipeline):
    graph = tmp_path / "graph.json"
    proc = cli(f"--pipeline={pipeline}", "--runner=DataflowRunner", "--project=my-project", "--region=europe-west1",
               "--temp_location=gs://my-bucket/tmp", "--input=gs://my-bucket/in/*.jsonl", "--output=gs://my-bucket/out",
               "--dry_run", f"--dry_run_out={graph}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"jsonl {pipeline} pipeline for DataflowRunner" in proc.stdout
    names = {t["uniqueName"] for t in json.loads(graph.read_text())["components"]["transforms"].values()}
    assert {"ParseRecords", "ValidateSchema", "WriteCurated", "WriteDeadLetters", "MakeReport"} <= names
    from beam_pipelines import flex

    committed = flex.metadata_path(pipeline).read_text()
    assert committed == flex.metadata_text(pipeline), "stale: run `python -m beam_pipelines.flex metadata`"
    params = {p["name"] for p in json.loads(committed)["parameters"]}
    assert {"input", "output", "shuffle_partitions"} <= params
    # A template offers the flags its spec takes: orders has no streaming source, sessions has one.
    assert ("kafka_topic" in params) == (pipeline == "sessions")
