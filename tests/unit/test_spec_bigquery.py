"""WriteBigQuery in a spec: the plan it compiles to, a case per kind of mistake (each a SpecError
naming its place), and the packaged orders spec run on the in-process runner with two BigQuery
sinks against the local API stand-in (``tests/bigquery_api.py``): what the tables hold equals the
curated and aggregate files of the same run, and a second run changes nothing."""

from __future__ import annotations

import glob
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines import datagen
from beam_pipelines.spec import EventsConfig, SpecError
from beam_pipelines.spec.build import build, file_io, plan_for
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.yamlsrc import load
from tests.bigquery_api import FakeBigQuery

PIPELINES = Path(datagen.__file__).parent / "pipelines"
ORDERS = (PIPELINES / "orders.yaml").read_text()
EVENTS = (PIPELINES / "events.yaml").read_text()
CURATED = "{project: proj-1, dataset: sales, table: orders, partition_by: updated_at, endpoint: URL}"
REVENUE = (
    "{project: proj-1, dataset: sales, table: daily_revenue, partition_by: window_start, mode: merge, "
    "keys: [window_start, region, status], endpoint: URL}"
)


def orders_spec(curated: str = CURATED, revenue: str = REVENUE, url: str = "http://127.0.0.1:9") -> str:
    sinks = (
        f"    - {{name: CuratedToBigQuery, type: WriteBigQuery, input: Curated, config: {curated}}}\n"
        f"    - {{name: RevenueToBigQuery, type: WriteBigQuery, input: DailyRevenue, config: {revenue}}}\n"
    )
    at = ORDERS.index("    - name: WriteDeadLetters")
    return (ORDERS[:at] + sinks + ORDERS[at:]).replace("endpoint: URL", f"endpoint: '{url}'")


def compile_text(text: str, tmp_path: Path, **kw):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    cfg = EventsConfig(**{"input": "in/*.jsonl", "input_format": "jsonl", "output": "out", **kw})
    return compile_spec(load(str(path)), cfg, str(path))


def test_the_spec_plans_a_partition_replacing_and_a_merging_table(tmp_path):
    plan = compile_text(orders_spec(), tmp_path)
    steps = {n.step.name: n.step for n in plan.sinks if n.step.type == "WriteBigQuery"}
    assert {name: s.describe() for name, s in steps.items()} == {
        "CuratedToBigQuery": "curated -> BigQuery proj-1.sales.orders (replace_partitions, day of updated_at)",
        "RevenueToBigQuery": "aggregates -> BigQuery proj-1.sales.daily_revenue (merge by window_start, region, "
        "status, day of window_start)",
    }
    curated = steps["CuratedToBigQuery"].make("out")
    # REQUIRED where the contract requires the field; the rest (and every aggregate column) NULLABLE.
    assert curated._required == ("order_id", "customer_id", "region", "status", "amount", "quantity", "created_at",
                                 "updated_at")  # fmt: skip
    assert curated._schema.names[-3:] == ["is_open", "order_hour", "extras"] and not curated._streaming
    revenue = steps["RevenueToBigQuery"].make("out")
    assert (revenue._mode, revenue._keys, revenue._required) == ("merge", ("window_start", "region", "status"), ())


def test_streaming_merges_each_firing_by_default(tmp_path):
    sink = "{project: proj-1, dataset: sales, table: hourly, partition_by: window_start, keys: [window_start, event_type, country]}"
    text = EVENTS.replace("    - name: WriteDeadLetters", f"    - {{name: Hourly, type: WriteBigQuery, input: HourlyAggregate, config: {sink}}}\n    - name: WriteDeadLetters")  # fmt: skip
    kw = dict(streaming=True, kafka_bootstrap="k:9092", kafka_topic="t", pg_dsn="postgresql://x")
    (tmp_path / "events.expectations.yaml").write_text((PIPELINES / "events.expectations.yaml").read_text())
    (step,) = [n.step for n in compile_text(text, tmp_path, **kw).sinks if n.step.type == "WriteBigQuery"]
    made = step.make("out")
    assert (made._mode, made._streaming) == ("merge", True)
    with pytest.raises(SpecError) as info:
        compile_text(text.replace("partition_by: window_start,", "partition_by: window_start, mode: replace_partitions,"), tmp_path, **kw)  # fmt: skip
    assert info.value.place.endswith(".config.mode") and "a streaming write merges by keys" in info.value.message


MAX_UPDATE = "          largest_order: {fn: max, column: amount}\n"
CASES = [
    (orders_spec(revenue=REVENUE.replace(", keys: [window_start, region, status]", "")), "transforms[11]",
     "mode merge needs keys"),
    (orders_spec(revenue=REVENUE.replace("keys: [window_start, region,", "keys: [window_start, regoin,")),
     "transforms[11].config.keys[1]", "no column 'regoin' reaches this step (did you mean 'region'?)"),
    (orders_spec(curated=CURATED.replace("updated_at", "status")), "transforms[10].config.partition_by",
     "column 'status' must be a timestamp or a date, but it is string"),
    (orders_spec(curated=CURATED.replace("}", ", keys: [order_id]}")), "transforms[10].config.keys",
     "keys apply to mode merge"),
    (orders_spec(curated=CURATED.replace("table: orders", "table: 'orders`; DROP TABLE x; --'")),
     "transforms[10].config.table", "orders`; DROP TABLE x; --"),
    (orders_spec(curated=CURATED.replace("project: proj-1", "project: Proj_1")), "transforms[10].config.project",
     "Proj_1"),
    (orders_spec(revenue=REVENUE.replace("daily_revenue", "orders")), "transforms[11].config.table",
     "proj-1.sales.orders is written by step CuratedToBigQuery already"),
    (orders_spec(revenue=REVENUE.replace("partition_by: window_start, mode: merge, keys: [window_start, region, "
                                         "status]", "partition_by: last_update")).replace(
        MAX_UPDATE, MAX_UPDATE + "          last_update: {fn: max, column: updated_at}\n"),
     "transforms[11].config.partition_by", "column 'last_update' may be null"),
    (orders_spec(curated=CURATED.replace("}", ", labels: {Team: data}}")), "transforms[10].config.labels",
     "Team"),
]  # fmt: skip


@pytest.mark.parametrize("text, place, message", CASES, ids=[c[1] + ":" + c[2][:24] for c in CASES])
def test_each_mistake_is_one_error_naming_its_place(tmp_path, text, place, message):
    with pytest.raises(SpecError) as info:
        compile_text(text, tmp_path)
    assert info.value.place == "pipeline." + place
    assert message in info.value.message
    assert info.value.line > 0


def _files(root: Path, table: str) -> list[dict]:
    paths = sorted(glob.glob(str(root / table / "**" / "*.parquet"), recursive=True))
    return pa.concat_tables([pq.ParquetFile(p).read() for p in paths]).to_pylist()  # no dt= column from the path


def _run(spec: Path, data: Path, root: Path) -> None:
    cfg = EventsConfig(input=str(data / "*.jsonl"), input_format="jsonl", output=str(root), pipeline=str(spec),
                       shuffle_partitions=2)  # fmt: skip
    plan = plan_for(cfg)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    with beam.Pipeline(runner=FnApiRunner()) as p:
        build(p, cfg, file_io(cfg, str(root), plan), plan)


def test_a_spec_run_loads_what_it_writes_to_files_and_a_rerun_changes_nothing(tmp_path):
    data = tmp_path / "in"
    assert datagen.main(["--dataset", "orders", "--contract-version", "2", "--rows", "3000", "--days", "3",
                         "--format", "jsonl", "--out", str(data), "--seed", "11"]) == 0  # fmt: skip
    with FakeBigQuery() as api:
        spec = tmp_path / "orders.yaml"
        spec.write_text(orders_spec(url=api.url))
        _run(spec, data, tmp_path / "run1")
        curated, aggregates = _files(tmp_path / "run1", "curated"), _files(tmp_path / "run1", "aggregates")
        assert len(curated) > 1000 and len(aggregates) > 20

        def key(r):
            return r["order_id"]

        def agg_key(r):
            return (r["window_start"], r["region"], r["status"])

        assert sorted(api.rows("proj-1.sales.orders").to_pylist(), key=key) == sorted(curated, key=key)
        merged = api.rows("proj-1.sales.daily_revenue").drop_columns(["_pane"]).to_pylist()
        assert sorted(merged, key=agg_key) == sorted(aggregates, key=agg_key)
        # What the loads carried: the curated rows, one load per day of updated_at.
        loads = [
            x for x in api.loads if x["configuration"]["load"]["destinationTable"]["tableId"].startswith("orders$")
        ]
        days = sorted({r["updated_at"].strftime("%Y%m%d") for r in curated})
        assert sorted(x["configuration"]["load"]["destinationTable"]["tableId"] for x in loads) == [
            f"orders${d}" for d in days]  # fmt: skip
        assert sum(x["rows"].num_rows for x in loads) == len(curated)
        assert len(api.queries) == 1 and sorted(api.tables) == ["proj-1.sales.daily_revenue", "proj-1.sales.orders"]

        _run(spec, data, tmp_path / "run2")
        assert sorted(api.rows("proj-1.sales.orders").to_pylist(), key=key) == sorted(curated, key=key)
        merged = api.rows("proj-1.sales.daily_revenue").drop_columns(["_pane"]).to_pylist()
        assert sorted(merged, key=agg_key) == sorted(aggregates, key=agg_key)
        assert len(api.loads) == 2 * (len(days) + 1) and len(api.queries) == 2
