"""WriteBigQuery through the CLI, against the local stand-in of the BigQuery API
(tests/bigquery_api.py): the published curated and aggregate files and the two tables hold the
same rows, an upload answered 503 and one whose connection drops are retried, and a second run
replaces the same days and merges to the same table. No real BigQuery (README: BigQuery sink)."""

from __future__ import annotations

from pathlib import Path

from tests.bigquery_api import FakeBigQuery
from tests.e2e.helpers import cli, read_parquet_dir, run_module

SPEC = Path(__file__).with_name("specs") / "bigquery_orders.yaml"


def _key(row: dict) -> tuple:
    return tuple(str(row.get(k)) for k in ("order_id", "window_start", "region", "status"))


def test_the_cli_loads_what_it_publishes_and_a_rerun_changes_nothing(tmp_path):
    data = tmp_path / "in"
    proc = run_module("beam_pipelines.datagen", "--dataset=orders", "--contract-version=2", "--rows=6000",
                      "--days=3", "--format=jsonl", f"--out={data}", "--seed=5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with FakeBigQuery() as api:
        spec = tmp_path / "bigquery_orders.yaml"
        spec.write_text(SPEC.read_text().replace("http://127.0.0.1:9050", api.url))
        api.fail("upload", 503, "reset")
        tables, stderr = {}, {}
        for run in ("first", "second"):
            out = tmp_path / run
            proc = cli(f"--pipeline={spec}", "--runner=DirectRunner", f"--input={data}/*.jsonl", "--input_format=jsonl",
                       f"--output={out}")  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            curated = sorted(read_parquet_dir(out / "curated").to_pylist(), key=_key)
            aggregates = sorted(read_parquet_dir(out / "aggregates").to_pylist(), key=_key)
            orders = sorted(api.rows("proj-1.sales.orders").to_pylist(), key=_key)
            revenue = sorted(api.rows("proj-1.sales.daily_revenue").drop_columns(["_pane"]).to_pylist(), key=_key)
            assert orders == curated and revenue == aggregates and len(curated) > 2000
            tables[run], stderr[run] = (orders, revenue), proc.stderr
        assert tables["first"] == tables["second"]
        assert not any(api.faults.values())
        assert "failed (try 1): 503" in stderr["first"] and "Remote end closed connection" in stderr["first"]
        days = sorted(x["configuration"]["load"]["destinationTable"]["tableId"] for x in api.loads
                      if x["configuration"]["load"]["destinationTable"]["tableId"].startswith("orders$"))  # fmt: skip
        assert days == sorted(2 * ["orders$20240301", "orders$20240302", "orders$20240303"])
        assert all(x["configuration"]["labels"] == {"pipeline": "orders"} for x in api.loads
                   if x["configuration"]["load"]["destinationTable"]["tableId"].startswith("orders$"))  # fmt: skip
        assert len(api.queries) == 2 and sorted(api.tables) == ["proj-1.sales.daily_revenue", "proj-1.sales.orders"]
