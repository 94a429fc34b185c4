"""The benchmark peers ``beam_per_record`` and ``pyspark`` agree with the project's CLI.

For each of jsonl, csv and parquet: one dirty data set (datagen), one run of the CLI and one run of
each peer (``python -m benchmarks.systems.<name>``, as the benchmark harness runs them; pyspark
gets the three jobs in one invocation, so its JVM starts once). The peers start first and run
concurrently with the CLI runs.
Aggregates must be equal (sorted by window_start, event_type, country; amount_sum exactly), and
the curated outputs must hold the same event_ids.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e.helpers import ROOT, aggregates, cli, curated, datagen

FORMATS = ("jsonl", "csv", "parquet")
PEERS = ("beam_per_record", "pyspark")

pytest.importorskip("pyspark")


def _diff(got, want, limit: int = 10) -> str:
    g, w = got.to_pylist(), want.to_pylist()
    lines = [f"rows: got {len(g)}, expected {len(w)}"]
    lines += [f"  got {a}\n  exp {b}" for a, b in zip(g, w) if a != b][:limit]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("peers")
    data = {fmt: datagen(base / f"in-{fmt}", fmt, rows=3000, dirty=0.25, files=2) for fmt in FORMATS}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    outs = {(fmt, peer): base / f"out-{fmt}-{peer}" for fmt in FORMATS for peer in PEERS}
    # pyspark takes its three jobs in one invocation (one Spark session); it starts first, being the slowest.
    batches = [("pyspark", FORMATS)] + [("beam_per_record", (fmt,)) for fmt in FORMATS]
    procs = []
    for peer, fmts in batches:
        args = []
        for fmt in fmts:
            args += ["--input", f"{data[fmt]}/*.{fmt}", "--format", fmt, "--output", str(outs[(fmt, peer)])]
        proc = subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.systems.{peer}", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((proc, [(fmt, peer) for fmt in fmts]))
    results = {}
    try:
        for fmt in FORMATS:
            out = base / f"out-{fmt}-cli"
            proc = cli("--pipeline=events", f"--input={data[fmt]}/*.{fmt}", f"--input_format={fmt}", f"--output={out}")
            results[(fmt, "cli")] = (proc.returncode, proc.stderr, out)
        for proc, keys in procs:
            _, stderr = proc.communicate(timeout=900)
            for key in keys:
                results[key] = (proc.returncode, stderr, outs[key])
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_peer_matches_cli(runs, fmt, peer):
    code, stderr, cli_out = runs[(fmt, "cli")]
    assert code == 0, f"CLI failed on {fmt}:\n{stderr[-3000:]}"
    code, stderr, out = runs[(fmt, peer)]
    assert code == 0, f"{peer} failed on {fmt}:\n{stderr[-3000:]}"

    want, got = aggregates(cli_out), aggregates(out)
    assert want.num_rows > 0
    assert got.schema.equals(want.schema), f"{peer} aggregates schema:\n{got.schema}\nexpected:\n{want.schema}"
    assert got.equals(want), f"{peer} aggregates differ from the CLI's on {fmt}:\n{_diff(got, want)}"

    want_ids, got_ids = curated(cli_out).column("event_id"), curated(out).column("event_id")
    assert len(got_ids) == len(want_ids), f"{peer} curated {len(got_ids)} rows on {fmt}, CLI {len(want_ids)}"
    assert got_ids.equals(want_ids), f"{peer} curated event_ids differ from the CLI's on {fmt}"
