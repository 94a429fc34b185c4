"""The events pipeline on an object store against a local run of the same files: what the GCS and Azure tests share.

A store is reached through a small client (``put``, ``get``, ``keys``) that each test module builds on the store's
own Python client; runs go through the CLI with the store's flags and environment.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from tests.e2e.helpers import ROOT, dead_letters, file_bytes, one_line_error, report

ROWS = 3000


@dataclass
class Store:
    """One bucket (container) on a store, as the tests see it.

    Args:
        scheme_root: The Beam path of the bucket, e.g. ``gs://events`` or ``azfs://devstoreaccount1/events``.
        put: ``put(key, bytes)``.
        get: ``get(key) -> bytes``.
        keys: ``keys(prefix) -> sorted keys``.
        flags: CLI flags the store needs.
        env: Environment variables the store needs.
    """

    scheme_root: str
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes]
    keys: Callable[[str], list[str]]
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def cli(store: Store, *args: str) -> subprocess.CompletedProcess:
    """The CLI with the store's flags and environment (which the rest of the test session does not get)."""
    env = {**os.environ, **store.env, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "beam_pipelines.main", *args, *store.flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def upload(store: Store, data: Path, prefix: str = "in") -> None:
    for path in sorted(data.iterdir()):
        store.put(f"{prefix}/{path.name}", path.read_bytes())


def run_matches_local_run(store: Store, fmt: str, local: Path) -> None:
    """Runs the events pipeline from ``<bucket>/in`` to ``<bucket>/out`` twice and checks the published outputs
    against the local run's ``local``: the second run replaces all of the first's, plus an object no run wrote."""
    root = store.scheme_root
    run = ("--pipeline=events", f"--input={root}/in/*.{fmt}", f"--output={root}/out")
    first = cli(store, *run, "--curated_buckets=2")
    assert first.returncode == 0, first.stderr
    assert any(k.endswith("/part-00001.parquet") for k in store.keys("out/curated/"))
    store.put("out/curated/dt=1999-01-01/part-00000.parquet", b"stale")

    second = cli(store, *run)
    assert second.returncode == 0, second.stderr
    assert f"{root}/out/curated" in second.stdout

    rep = json.loads(store.get("out/_run/report.json"))
    assert rep["conservation_ok"] is True
    assert rep["counts"]["read"] == ROWS and rep["counts"]["curated"] > 0
    assert rep == report(local)  # counts, dead-letter reasons and quality counts

    # Exactly the files a local run writes: no part-00001, stale object, staging or probe left.
    # (A local run also keeps a metrics history and a lineage log beside its outputs by default.)
    keys = store.keys("out/")
    published = [p for p in file_bytes(local) if p.split("/")[0] not in ("_history", "_lineage")]
    assert keys == sorted("out/" + p for p in published)

    curated = [k for k in keys if k.startswith("out/curated/dt=") and k.endswith(".parquet")]
    assert curated
    rows = sum(pq.ParquetFile(io.BytesIO(store.get(k))).metadata.num_rows for k in curated)
    assert rows == rep["counts"]["curated"]

    # Curated records and aggregates carry no input path: the same bytes as the local run.
    for key in keys:
        if key.startswith(("out/curated/", "out/aggregates/")):
            assert store.get(key) == (local / key[len("out/") :]).read_bytes(), key

    # Dead letters are the same records, their source naming the store's object.
    dlq = [json.loads(line) for k in keys if k.startswith("out/dlq/") for line in store.get(k).splitlines()]
    assert len(dlq) == rep["counts"]["dead_lettered"]
    assert all(d["source"].startswith(f"{root}/in/") for d in dlq)
    assert _by_file(dlq) == _by_file(dead_letters(local))

    summary = json.loads(store.get("out/_run/summary.json"))
    assert summary["files_match"] is True and summary["published"]["curated_rows"] == rows


def missing_bucket_fails(store: Store, missing_root: str, fmt: str, what: str) -> None:
    """A missing bucket (container) for the output or the input: one ``error:`` line, exit 1, nothing written
    but the audit log's record of the run."""
    root = store.scheme_root
    before = store.keys("")
    line = one_line_error(
        cli(store, "--pipeline=events", f"--input={root}/in/*.{fmt}", f"--output={missing_root}/out"), 1
    )
    assert "not writable" in line and what in line, line
    line = one_line_error(
        cli(store, "--pipeline=events", f"--input={missing_root}/in/*.{fmt}", f"--output={root}/out2"), 1
    )
    assert "cannot list --input" in line and what in line, line
    # Nothing written but the failed run's record in the output's audit log.
    assert store.keys("") == sorted([*before, "out2/_audit/log.jsonl"])
    entries = [json.loads(e) for e in store.get("out2/_audit/log.jsonl").splitlines()]
    assert [(e["action"], e["outcome"]) for e in entries] == [("run", "started"), ("run", "failed")]
    assert entries[1]["what"]["error"].startswith("cannot list --input")


def _by_file(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(dict(d, source=Path(d["source"]).name), sort_keys=True) for d in rows)
