"""Running the project's commands the way a user does: as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_module(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_module("beam_pipelines.main", *args)


def datagen(out: Path, fmt: str, rows: int, dirty: float = 0.2, seed: int = 11, files: int = 1) -> Path:
    proc = run_module(
        "beam_pipelines.datagen",
        f"--rows={rows}",
        f"--format={fmt}",
        f"--dirty-fraction={dirty}",
        f"--out={out}",
        f"--seed={seed}",
        f"--files={files}",
    )
    assert proc.returncode == 0, proc.stderr
    return out


def report(out: Path) -> dict:
    return json.loads((out / "_run" / "report.json").read_text())


def read_parquet_dir(root: Path) -> pa.Table:
    tables = [pq.read_table(p, partitioning=None) for p in sorted(root.rglob("*.parquet"))]
    return pa.concat_tables(tables) if tables else pa.table({})


def curated(out: Path) -> pa.Table:
    return read_parquet_dir(out / "curated").sort_by("event_id")


def aggregates(out: Path) -> pa.Table:
    return read_parquet_dir(out / "aggregates").sort_by(
        [("window_start", "ascending"), ("event_type", "ascending"), ("country", "ascending")]
    )


def dead_letters(out: Path) -> list[dict]:
    rows = []
    for p in sorted((out / "dlq").glob("*.jsonl")):
        rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return rows


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    """Asserts a CLI failure: exit ``code`` and exactly one ``error:`` line, no traceback; returns it."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]
