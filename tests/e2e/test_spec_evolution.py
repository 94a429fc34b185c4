"""Contract evolution through the CLI: records written under v1 and v2 in one run are upcast to
v2 (a renamed field filled from its former name, a new field's default), and curated files
written under both versions read as one schema in pyarrow, DuckDB and Polars."""

import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from tests.e2e.helpers import cli, report

SPECS = Path(__file__).resolve().parents[1] / "unit" / "specs" / "evolve"
V1 = [
    {"order_id": "o1", "amount": 10, "coupon": "SAVE10", "ts": "2024-03-01T10:00:00Z"},
    {"order_id": "o2", "amount": 5.5, "ts": "2024-03-01T11:00:00Z"},
]
V2 = [
    {"order_id": "o3", "amount": 7, "promo_code": "NEW", "channel": "app", "ts": "2024-03-02T09:00:00Z"},
    {"order_id": "o4", "amount": 1, "ts": "2024-03-02T10:00:00Z"},
]


def write(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run(spec: str, pattern: str, out: Path):
    proc = cli(f"--pipeline={SPECS / spec}", f"--input={pattern}", f"--output={out}", "--history=none",
               "--lineage=none", "--expectations=none")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def curated(out: Path) -> list[dict]:
    return sorted(ds.dataset(out / "curated", format="parquet").to_table().to_pylist(), key=lambda r: r["order_id"])


def test_v1_and_v2_records_in_one_run_are_upcast_to_v2(tmp_path):
    write(tmp_path / "in" / "a-v1.jsonl", V1)
    write(tmp_path / "in" / "b-v2.jsonl", V2)
    run("v2.yaml", f"{tmp_path}/in/*.jsonl", tmp_path / "out")
    rows = {r["order_id"]: (r["promo_code"], r["channel"], r["extras"]) for r in curated(tmp_path / "out")}
    assert rows == {
        "o1": ("SAVE10", "web", None),  # coupon (v1's name) fills promo_code; channel takes its default
        "o2": (None, "web", None),
        "o3": ("NEW", "app", None),
        "o4": (None, "web", None),
    }
    rep = report(tmp_path / "out")
    assert rep["conservation_ok"] and rep["counts"]["curated"] == 4
    assert "unknown_fields" not in rep.get("drift", {})  # a former name is not drift
    # Under v1 the same files are drift: v2's new fields are undeclared there.
    run("v1.yaml", f"{tmp_path}/in/*.jsonl", tmp_path / "out-v1")
    drift = report(tmp_path / "out-v1")["drift"]["unknown_fields"]
    assert drift["promo_code"]["records"] == 1 and drift["channel"]["records"] == 1


def test_curated_files_of_both_versions_read_as_one_schema(tmp_path):
    run("v1.yaml", str(write(tmp_path / "in1" / "v1.jsonl", V1)), tmp_path / "old")
    run("v2.yaml", str(write(tmp_path / "in2" / "v2.jsonl", V2)), tmp_path / "new")
    files = sorted(str(p) for p in (tmp_path / "old" / "curated").rglob("*.parquet")) + sorted(
        str(p) for p in (tmp_path / "new" / "curated").rglob("*.parquet")
    )
    schemas = [pa.parquet.read_schema(f) for f in files]
    unified = pa.unify_schemas(schemas)
    # Columns both versions have keep their names and types; each version's own are null in the other's rows.
    assert {"order_id", "amount", "coupon", "promo_code", "channel", "ts"} <= set(unified.names)
    table = ds.dataset(files, schema=unified, format="parquet").to_table()
    assert table.num_rows == 4 and table.schema == unified
    by_id = {r["order_id"]: r for r in table.to_pylist()}
    assert by_id["o1"]["coupon"] == "SAVE10" and by_id["o1"]["channel"] is None and by_id["o3"]["channel"] == "app"
    duck = duckdb.sql(
        f"select order_id, coupon, promo_code, channel from read_parquet({files!r}, union_by_name=true) order by 1"
    ).fetchall()
    assert duck == [("o1", "SAVE10", None, None), ("o2", None, None, None), ("o3", None, "NEW", "app"),
                    ("o4", None, None, "web")]  # fmt: skip
    polars = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed").sort("order_id")
    assert polars.select("order_id", "coupon", "promo_code", "channel").rows() == duck
