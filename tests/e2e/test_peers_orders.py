"""The orders peers (DuckDB SQL, Polars) agree with the project's CLI on the same dirty data.

Per input format, one dirty data set holding v1 and v2 files (a quarter of the records dirty)
is run through ``beam_pipelines.main --pipeline=orders`` and through each peer
(``python -m benchmarks.systems.orders_<peer>``), as the benchmark harness runs them. Their
aggregates must be equal (average_order, a float mean of decimals, to a relative 1e-12), their
curated rows equal value for value, their dead letters equal by reason and field, and their
read, dead-lettered and duplicate counts equal.
"""

from __future__ import annotations

import collections
import importlib.util
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from benchmarks.run import canonical_aggregates, same_aggregates
from benchmarks.systems import orders_common as oc
from tests.e2e.helpers import ROOT, cli, dead_letters, read_parquet_dir, report, run_module

FORMATS = ("jsonl", "csv", "parquet", "avro")
PEERS = ("duckdb", "polars")
CONTRACT = ROOT / "beam_pipelines" / "pipelines" / "schemas" / "orders" / "v2.yaml"


def _generate(out: Path, fmt: str) -> Path:
    for version in (1, 2):
        proc = run_module(
            "beam_pipelines.datagen", "--dataset=orders", f"--contract-version={version}", "--rows=4000",
            f"--format={fmt}", "--dirty-fraction=0.25", "--seed=13", "--files=2", f"--out={out}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def project_runs(tmp_path_factory):
    """Per format: (input dir, the project's output dir), generated and run once."""
    base = tmp_path_factory.mktemp("orders-peers")
    runs = {}
    for fmt in FORMATS:
        data = _generate(base / f"in-{fmt}", fmt)
        out = base / f"project-{fmt}"
        proc = cli("--pipeline=orders", f"--input={data}/*.{fmt}", f"--output={out}")
        assert proc.returncode == 0, proc.stderr
        runs[fmt] = (data, out)
    return runs


def _curated(out: Path, schema: pa.Schema | None = None) -> pa.Table:
    table = read_parquet_dir(out / "curated").drop_columns(["extras"])
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    return table.sort_by("order_id")


def _peer_dead_letters(out: Path) -> collections.Counter:
    rows = read_parquet_dir(out / "dlq").select(["reason", "field"]).to_pylist()
    return collections.Counter((r["reason"], r["field"]) for r in rows)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_peer_matches_project(project_runs, tmp_path, fmt, peer):
    # The peers are in requirements-dev.txt: a missing one is a broken install, not a skip.
    assert importlib.util.find_spec(peer) is not None, f"{peer} is not installed (requirements-dev.txt)"
    data, project_out = project_runs[fmt]
    out = tmp_path / peer
    proc = run_module(
        f"benchmarks.systems.orders_{peer}", "--input", f"{data}/*.{fmt}", "--format", fmt, "--output", str(out)
    )
    assert proc.returncode == 0, proc.stderr

    want, got = canonical_aggregates(project_out, "orders"), canonical_aggregates(out, "orders")
    assert got.num_rows == want.num_rows > 0
    for name in got.column_names:
        if name == "average_order":
            assert got.column(name).to_pylist() == pytest.approx(want.column(name).to_pylist(), rel=1e-12, abs=0)
        else:
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), f"{peer}/{fmt}: {name} differs"
    assert same_aggregates(got, want, "orders")

    project_curated = _curated(project_out)
    peer_curated = _curated(out, project_curated.schema)
    assert peer_curated.num_rows == project_curated.num_rows > 0
    assert peer_curated.equals(project_curated), f"{peer}/{fmt}: curated rows differ"

    wanted = collections.Counter((d["reason"], d["field"]) for d in dead_letters(project_out))
    assert _peer_dead_letters(out) == wanted
    assert {"malformed", "missing_field", "invalid_value"} & {reason for reason, _ in wanted}

    counts = json.loads((out / "_run" / "report.json").read_text())["counts"]
    project = report(project_out)["counts"]
    for key in ("read", "dead_lettered", "duplicates", "curated", "aggregates"):
        assert counts[key] == project[key], f"{peer}/{fmt}: {key}"


def test_constants_are_the_contracts():
    doc = yaml.safe_load(CONTRACT.read_text())
    fields = {f["name"]: f for f in doc["fields"]}
    assert tuple(fields) == oc.FIELDS
    assert {name: f["aliases"][0] for name, f in fields.items() if f.get("aliases")} == oc.ALIASES
    assert tuple(fields["region"]["values"]) == oc.REGIONS
    assert tuple(fields["status"]["values"]) == oc.STATUSES
    assert tuple(fields["channel"]["values"]) == oc.CHANNELS
    assert fields["channel"]["default"] == oc.DEFAULT_CHANNEL
    assert (fields["amount"]["precision"], fields["amount"]["scale"]) == (oc.AMOUNT_PRECISION, oc.AMOUNT_SCALE)
    assert (fields["quantity"]["minimum"], fields["quantity"]["maximum"]) == (oc.QUANTITY_MIN, oc.QUANTITY_MAX)
    assert fields["promo_code"]["pattern"] == oc.PROMO_RE


def test_aggregate_comparison_tells_differences(project_runs):
    table = canonical_aggregates(project_runs["parquet"][1], "orders")
    mean = table.column("average_order")
    assert same_aggregates(table, table.set_column(8, "average_order", pc.multiply(mean, 1 + 1e-14)), "orders")
    assert not same_aggregates(table, table.set_column(8, "average_order", pc.multiply(mean, 1 + 1e-9)), "orders")
    revenue = table.column("revenue").to_pylist()
    changed = pa.array([revenue[0] + Decimal("0.01")] + revenue[1:], table.schema.field("revenue").type)
    assert not same_aggregates(table, table.set_column(6, "revenue", changed), "orders")
    assert not same_aggregates(table, table.slice(1), "orders")


def test_harness_runs_orders(tmp_path):
    out = tmp_path / "results.json"
    proc = run_module(
        "benchmarks.run", "--pipeline=orders", "--rows=2000", "--format=parquet", "--repeat=1",
        f"--data-dir={tmp_path / 'data'}", f"--work-dir={tmp_path / 'work'}", f"--json={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["pipeline"] == "orders"
    assert [r["system"] for r in results["runs"]] == ["beam_pipelines", "duckdb", "polars"]
    assert all(r["output_matches"] is True and r["curated_rows"] > 0 for r in results["runs"])
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["orders-parquet-2000-dirty0.05-seed7"]
    refused = run_module("benchmarks.run", "--pipeline=orders", "--systems=pyspark", f"--json={out}")
    assert refused.returncode == 2 and "no orders peer for: pyspark" in refused.stderr
