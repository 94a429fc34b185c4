"""The benchmark peers (DuckDB SQL, Polars) agree with the project's CLI on the same dirty data.

For each input format one dirty data set is generated and run through ``beam_pipelines.main`` and
through every peer (``python -m benchmarks.systems.<name>``), as the benchmark harness runs them;
their aggregates must be equal (amount_sum exactly) and their curated row counts too.
"""

from __future__ import annotations

import importlib.util

import pyarrow as pa
import pytest

from tests.e2e.helpers import aggregates, cli, curated, datagen, run_module

FORMATS = ("jsonl", "csv", "parquet", "avro")
PEERS = ("duckdb", "polars")
AGG_COLUMNS = ["window_start", "window_end", "event_type", "country", "events", "users", "amount_sum"]
TS_TYPE = pa.timestamp("us", tz="UTC")


@pytest.fixture(scope="module")
def project_runs(tmp_path_factory):
    """Per format: (input dir, the project's output dir), generated and run once."""
    base = tmp_path_factory.mktemp("peers")
    runs = {}
    for fmt in FORMATS:
        data = datagen(base / f"in-{fmt}", fmt, rows=5000, dirty=0.25, files=2)
        out = base / f"project-{fmt}"
        proc = cli(f"--input={data}/*.{fmt}", f"--output={out}")
        assert proc.returncode == 0, proc.stderr
        runs[fmt] = (data, out)
    return runs


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_peer_matches_project(project_runs, tmp_path, fmt, peer):
    # The peers are in requirements-dev.txt: a missing one is a broken install, not a skip.
    assert importlib.util.find_spec(peer) is not None, f"{peer} is not installed (requirements-dev.txt)"
    data, project_out = project_runs[fmt]
    out = tmp_path / peer
    proc = run_module(f"benchmarks.systems.{peer}", "--input", f"{data}/*.{fmt}", "--format", fmt, "--output", str(out))
    assert proc.returncode == 0, proc.stderr

    want, got = aggregates(project_out), aggregates(out)
    assert got.column_names == AGG_COLUMNS
    assert got.schema.field("window_start").type == TS_TYPE
    assert got.schema.field("window_end").type == TS_TYPE
    assert got.num_rows == want.num_rows > 0
    for name in AGG_COLUMNS:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), f"{peer}/{fmt}: {name} differs"

    assert curated(out).num_rows == curated(project_out).num_rows
