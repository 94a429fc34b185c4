"""benchmarks.merge: the newest run of each (system, format, rows) wins; older ones say where they came from."""

import json

from benchmarks.merge import main

MACHINE = {"cpus": 2, "python": "3.11", "beam": "2.75.0", "pyarrow": "23", "cpu": "x", "memory_gb": 1}


def run(system, rows, wall, fmt="parquet"):
    return {"system": system, "rows": rows, "format": fmt, "wall_s": wall, "rows_per_s": rows / wall,
            "peak_rss_mb": 1.0, "output_matches": True}  # fmt: skip


def test_newest_wins_and_older_runs_are_noted(tmp_path):
    new = tmp_path / "new.json"
    old = tmp_path / "old.json"
    new.write_text(
        json.dumps({"machine": MACHINE, "repeat": 3, "repeat_budget": 240, "runs": [run("duckdb", 10, 1.0)]})
    )
    old.write_text(json.dumps({"machine": MACHINE, "runs": [run("duckdb", 10, 9.0), run("polars", 10, 2.0, "jsonl"),
                                                            run("polars", 5, 3.0)]}))  # fmt: skip
    out = tmp_path / "out.json"
    assert main([str(out), str(new), str(old), "--note", "old.json=earlier run"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["system"], r["format"], r["rows"], r["wall_s"], r.get("note")) for r in runs] == [
        ("polars", "parquet", 5, 3.0, "earlier run"),
        ("duckdb", "parquet", 10, 1.0, None),
        ("polars", "jsonl", 10, 2.0, "earlier run"),
    ]
    assert "| duckdb | parquet | 10 | 1.00 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 0
