"""The benchmark harness on a tiny data set: it runs, measures, and compares outputs."""

import json

from tests.e2e.helpers import run_module


def test_harness_measures_and_compares(tmp_path):
    out = tmp_path / "results.json"
    proc = run_module(
        "benchmarks.run",
        "--rows=3000",
        "--format=jsonl",
        "--systems=beam_pipelines,duckdb,polars",
        "--repeat=2",
        f"--data-dir={tmp_path / 'data'}",
        f"--work-dir={tmp_path / 'work'}",
        f"--json={out}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["machine"]["cpus"] >= 1 and results["machine"]["beam"]
    runs = results["runs"]
    assert [r["system"] for r in runs] == ["beam_pipelines", "duckdb", "polars"]
    for r in runs:
        assert r["rows"] == 3000 and r["format"] == "jsonl"
        assert r["output_matches"] is True
        assert len(r["walls"]) == 2 and r["wall_s"] > 0 and r["rows_per_s"] > 0
        assert r["peak_rss_mb"] > 20  # a Python process tree, measured from outside
    assert out.with_suffix(".md").read_text().startswith("| system |")
    assert out.with_suffix(".png").stat().st_size > 1000
