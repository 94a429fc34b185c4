"""The `sessions` spec with its Kafka source swapped for another stream, and its batch results,
for the streaming tests of the Pub/Sub and Kinesis sources."""

from __future__ import annotations

from pathlib import Path

import psycopg
import yaml

from beam_pipelines.spec.build import spec_path
from tests.e2e.helpers import cli, read_parquet_dir, report, run_module

COLUMNS = "user_id, window_start, window_end, events, pages, converted"
KAFKA_SOURCE = (
    '    - {name: Read, type: ReadKafka, mode: streaming, config: {bootstrap: "${kafka_bootstrap}", '
    'topic: "${kafka_topic}", stop_at_end: "${kafka_stop_at_end}"}}\n'
)


def sessions_lines(root: Path, rows: int = 1500) -> list[bytes]:
    proc = run_module("beam_pipelines.datagen", "--dataset=sessions", f"--rows={rows}", "--format=jsonl",
                      "--dirty-fraction=0.05", f"--out={root}", "--seed=5", "--days=1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [x for f in sorted(root.glob("*.jsonl")) for x in f.read_bytes().splitlines() if x.strip()]


def spec_with_source(path: Path, source_type: str, config: dict) -> Path:
    """The packaged sessions spec, its streaming source replaced by ``source_type`` with ``config``."""
    text = Path(spec_path("sessions")).read_text()
    assert text.count(KAFKA_SOURCE) == 1
    source = yaml.safe_dump({"name": "Read", "type": source_type, "mode": "streaming", "config": config},
                            default_flow_style=True, width=1000).strip()  # fmt: skip
    path.write_text(text.replace(KAFKA_SOURCE, f"    - {source}\n"))
    return path


def batch_results(input_glob: str, out: Path) -> tuple[list, dict]:
    """The sessions spec in batch over the same records: (sorted aggregate rows, report)."""
    proc = cli("--pipeline=sessions", f"--input={input_glob}", f"--output={out}", "--history=none", "--lineage=none")
    assert proc.returncode == 0, proc.stderr
    rows = sorted(
        (r["user_id"], r["window_start"], r["window_end"], r["events"], r["pages"], r["converted"])
        for r in read_parquet_dir(out / "aggregates").to_pylist()
    )
    return rows, report(out)


def table_rows(dsn: str, table: str) -> list:
    with psycopg.connect(dsn) as conn:
        return sorted(conn.execute(f"SELECT {COLUMNS} FROM {table}").fetchall())  # noqa: S608
