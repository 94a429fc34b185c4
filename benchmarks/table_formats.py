"""Apache Iceberg (pyiceberg, SQLite catalog) and Delta Lake (deltalake) on the same lakehouse work.

    python -m benchmarks.table_formats --rows 1000000 [--json benchmarks/results/table_formats.json]

The curated `events` records (the project's pipeline run once on generated data, as
``benchmarks.run`` makes them) go through one sequence of table operations, each run with both
libraries one after the other: the initial write partitioned by event day, a MERGE keyed by
event_id, 60 micro-batch appends and a compaction to a target file size per partition, the
deletion of one subject's rows, snapshot expiry (and, for Iceberg, the orphan-file removal
pyiceberg lacks, written here), schema evolution, and a write + MERGE on a warehouse in moto's S3
server. Every operation records its wall time, the data and metadata files and bytes it wrote and
deleted, the live data files and the row count after it (checked against the count the workload
implies); the tables are finally read back by the library, DuckDB and Polars, which must agree.
The tables and the steps the libraries lack are in ``benchmarks.lake_tables``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks.lake_tables import DAY, KEY, SUBJECT, DeltaLakeTable, IcebergLake, Store, local_store, s3_store
from benchmarks.run import BARE_FLAGS, ROOT, ensure_data, machine

MICRO_BATCHES = 60
MERGE_FRACTION = 0.01  # updates and as many new rows, each this fraction of the table


# --- the data and the work ------------------------------------------------------------------


def curated_events(rows: int, data_dir: Path, work_dir: Path, seed: int = 7) -> pa.Table:
    """The events pipeline's curated records for ``rows`` generated events (5% dirty), made once
    and kept under ``work_dir``; with the event day column added."""
    pattern = ensure_data(data_dir, "parquet", rows, 0.05, seed)
    out = work_dir / f"curated-{rows}-seed{seed}"
    if not (out / ".complete").exists():
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "beam_pipelines.main", "--pipeline=events", "--runner=DirectRunner",
               f"--input={pattern}", "--input_format=parquet", f"--output={out}", *BARE_FLAGS]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, capture_output=True)
        (out / ".complete").write_text("ok")
    table = ds.dataset(out / "curated", format="parquet", partitioning="hive").to_table()
    return with_day(table.drop_columns([DAY]).sort_by(KEY))


def with_day(table: pa.Table) -> pa.Table:
    """The table with its UTC event day as a date column (replacing one of that name)."""
    if DAY in table.column_names:
        table = table.drop_columns([DAY])
    return table.append_column(DAY, table["ts"].cast(pa.date32()))


@dataclass
class Workload:
    """What the operations apply to the table, derived from it and a seed."""

    base: pa.Table
    merge: pa.Table  # updated copies of existing rows (amount + 1) and as many new rows
    merge_updates: int
    micro_batches: list[pa.Table]
    subject: str  # the user_id whose rows are deleted: the one with most rows


def make_workload(base: pa.Table, micro_batches: int = MICRO_BATCHES, seed: int = 7) -> Workload:
    rng = np.random.default_rng(seed)
    n = base.num_rows
    k = max(1, int(n * MERGE_FRACTION))
    updates = base.take(np.sort(rng.choice(n, k, replace=False)))
    amount = pc.add(pc.fill_null(updates["amount"], 0.0), 1.0)
    updates = updates.set_column(updates.schema.get_field_index("amount"), "amount", amount)
    merge = pa.concat_tables([updates, _renamed(base.take(rng.choice(n, k, replace=False)), "m-")])
    size = max(1, n // (10 * micro_batches))  # all micro-batches together: 10% of the table
    batches = [_renamed(base.take(rng.choice(n, size, replace=False)), f"b{i:02d}-") for i in range(micro_batches)]
    counts = pc.value_counts(base[SUBJECT])
    values, n_rows = counts.field("values"), counts.field("counts")
    subject = pc.min(values.filter(pc.equal(n_rows, pc.max(n_rows)))).as_py()
    return Workload(base, merge, k, batches, subject)


def _renamed(rows: pa.Table, prefix: str) -> pa.Table:
    """New records: copies of ``rows`` whose keys carry ``prefix``."""
    ids = pc.binary_join_element_wise(prefix, rows[KEY], "")
    return rows.set_column(rows.schema.get_field_index(KEY), KEY, ids)


def subject_rows(work: Workload) -> int:
    tables = [work.base, work.merge.slice(work.merge_updates), *work.micro_batches]
    return sum(pc.sum(pc.equal(t[SUBJECT], work.subject)).as_py() or 0 for t in tables)


# --- where the files are --------------------------------------------------------------------


def is_metadata(path: str) -> bool:
    return "/_delta_log/" in path or "/metadata/" in path


def measure(store: Store, fn: Callable[[], object]) -> tuple[dict, object]:
    """Runs ``fn``; its wall time and the data and metadata files it wrote and deleted in ``store``."""
    before = store.listing()
    started = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - started
    after = store.listing()
    new = {p: s for p, s in after.items() if p not in before}
    gone = {p: s for p, s in before.items() if p not in after}
    m = {"wall_s": round(wall, 3)}
    for kind, keep in (("data", lambda p: not is_metadata(p)), ("meta", is_metadata)):
        m[f"{kind}_files_written"] = sum(1 for p in new if keep(p))
        m[f"{kind}_bytes_written"] = sum(s for p, s in new.items() if keep(p))
    m["files_deleted"] = len(gone)
    m["bytes_deleted"] = sum(gone.values())
    m["disk_files"] = len(after)
    m["disk_data_files"] = sum(1 for p in after if not is_metadata(p))
    m["disk_bytes"] = sum(after.values())
    return m, result


# --- the runs --------------------------------------------------------------------------------


class Runner:
    """Runs each operation on every table in turn and records one row per (operation, format)."""

    def __init__(self, lakes: list, expected_rows: int = 0):
        self.lakes = lakes
        self.expected = expected_rows
        self.rows: list[dict] = []

    def op(self, name: str, fn: Callable, delta_rows: int = 0, note: dict | None = None) -> None:
        self.expected += delta_rows
        for lake in self.lakes:
            m, result = measure(lake.store, lambda lake=lake: fn(lake))
            live = lake.live_files()
            rows = lake.count()
            per_partition = lake.files_per_partition()
            row = {"op": name, "format": lake.fmt, **m, "live_files": len(live),
                   "max_files_per_partition": max(per_partition.values(), default=0), "rows": rows,
                   "expected_rows": self.expected, "rows_ok": rows == self.expected}  # fmt: skip
            if isinstance(result, dict):
                row.update(result)
            if note and lake.fmt in note:
                row["note"] = note[lake.fmt]
            self.rows.append(row)
            print(f"{name:<24} {lake.fmt:<8} {m['wall_s']:8.2f} s  {m['data_files_written']:5d} files "
                  f"{m['data_bytes_written'] / 1e6:9.1f} MB  live {len(live):4d}  rows {rows:,}",
                  file=sys.stderr, flush=True)  # fmt: skip


def run_local(work: Workload, root: Path) -> tuple[list[dict], dict]:
    """The whole sequence on local warehouses under ``root``; the operation rows and the read-back."""
    shutil.rmtree(root, ignore_errors=True)
    iceberg = IcebergLake(local_store(root / "iceberg"), f"sqlite:///{root / 'iceberg-catalog.db'}")
    delta = DeltaLakeTable(local_store(root / "delta"))
    run = Runner([iceberg, delta])
    base = work.base
    run.op("write", lambda lake: lake.write(base), base.num_rows)
    run.op("merge", lambda lake: lake.merge(work.merge), work.merge.num_rows - work.merge_updates)
    added = sum(b.num_rows for b in work.micro_batches)
    run.op(f"append x{len(work.micro_batches)}", lambda lake: append_all(lake, work.micro_batches), added)
    run.op("compact", lambda lake: lake.compact(), note={"iceberg": "written here: pyiceberg has none"})
    run.op("delete subject", lambda lake: lake.delete_subject(work.subject), -subject_rows(work))
    run.op("expire snapshots", lambda lake: lake.expire(),
           note={"iceberg": "metadata only", "delta": "vacuum, checkpoint, log cleanup"})  # fmt: skip
    run.op("remove orphan files", lambda lake: lake.remove_orphans(),
           note={"iceberg": "written here: pyiceberg has none", "delta": "vacuum full"})  # fmt: skip
    run.op("add column", lambda lake: lake.add_column("channel"))
    run.op("widen int->long", lambda lake: lake.widen("hour_of_day"),
           note={"delta": "no widening in deltalake: full rewrite"})  # fmt: skip
    run.op("rename column", lambda lake: lake.rename("country", "country_code"),
           note={"delta": "no rename in deltalake: full rewrite"})  # fmt: skip
    return run.rows, read_back(run.lakes, run.expected)


def append_all(lake, batches: list[pa.Table]) -> None:
    for batch in batches:
        lake.append(batch)


def read_back(lakes: list, expected: int) -> dict:
    """Each table read whole by its library, by DuckDB (its parquet files) and by Polars: row count,
    sum of amount and wall time (and the library's column types); ``agree`` when every reader sees
    the expected rows and the same sum."""
    import duckdb
    import polars as pl

    query = "SELECT count(*), sum(amount) FROM read_parquet($files, hive_partitioning = true)"
    out = {}
    for lake in lakes:
        readers = {
            "library": lake.read_arrow,
            "duckdb": lambda lake=lake: duckdb.execute(query, {"files": lake.parquet_files()}).fetchone(),
            "polars": lambda lake=lake: lake.polars().select(pl.len(), pl.col("amount").sum()).collect().row(0),
        }
        result: dict = {}
        for name, read in readers.items():
            started = time.perf_counter()
            got = read()
            wall = round(time.perf_counter() - started, 3)
            if isinstance(got, pa.Table):
                result["columns"] = {f.name: str(f.type) for f in got.schema}
                got = (got.num_rows, pc.sum(got["amount"]).as_py())
            rows, amount = got
            result[name] = {"wall_s": wall, "rows": int(rows), "amount_sum": round(float(amount or 0), 2)}
        sums = [result[r]["amount_sum"] for r in readers]
        result["agree"] = all(result[r]["rows"] == expected for r in readers) and max(sums) - min(sums) < 0.01
        out[lake.fmt] = result
    return out


def run_s3(work: Workload, endpoint: str, root: Path) -> list[dict]:
    """Write and MERGE with both warehouses in an S3 bucket (the Iceberg catalog in SQLite locally)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    iceberg = IcebergLake(s3_store(endpoint, "lake-iceberg", "warehouse"), f"sqlite:///{root / 'catalog.db'}")
    delta = DeltaLakeTable(s3_store(endpoint, "lake-delta", "warehouse"))
    run = Runner([iceberg, delta])
    run.op("s3 write", lambda lake: lake.write(work.base), work.base.num_rows)
    run.op("s3 merge", lambda lake: lake.merge(work.merge), work.merge.num_rows - work.merge_updates)
    return run.rows


def parquet_write(work: Workload, root: Path) -> dict:
    """Today's lake for reference: the same rows as plain zstd parquet, one directory per day."""
    shutil.rmtree(root, ignore_errors=True)
    store = local_store(root)
    m, _ = measure(store, lambda: pq.write_to_dataset(work.base, str(root), partition_cols=[DAY], compression="zstd"))
    return {"op": "write", "format": "parquet", **m, "live_files": m["data_files_written"], "rows": work.base.num_rows,
            "expected_rows": work.base.num_rows, "rows_ok": True}  # fmt: skip


class S3Server:
    """moto's S3 server on a free port through scripts/s3.sh, stopped on exit."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = dict(os.environ, S3_PORT=str(self.port), S3_HOST="127.0.0.1", PYTHON=sys.executable)

    def __enter__(self) -> str:
        self._script("start")
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self._script("stop")
        (ROOT / ".cache" / "s3" / f"moto-{self.port}.log").unlink(missing_ok=True)

    def _script(self, action: str) -> None:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "s3.sh"), action], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/s3.sh {action}: {proc.stderr.strip() or proc.stdout.strip()}")


# --- the report ------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    lines = []
    for size in results["sizes"]:
        rows = size["rows"]
        lines += [f"### {rows:,} events ({size['curated_rows']:,} curated rows)", ""]
        lines += [
            "| operation | format | wall s | data files written | data MB written | metadata files | "
            "files deleted | on disk after: data files, MB | live files | rows | rows ok |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in size["ops"]:
            lines.append(
                f"| {r['op']} | {r['format']} | {r['wall_s']:.2f} | {r['data_files_written']:,} | "
                f"{r['data_bytes_written'] / 1e6:,.1f} | {r['meta_files_written']:,} | {r['files_deleted']:,} | "
                f"{r['disk_data_files']:,}, {r['disk_bytes'] / 1e6:,.1f} | {r['live_files']:,} | {r['rows']:,} | "
                f"{'yes' if r['rows_ok'] else 'NO'}{_extra(r)} |"
            )
        lines += ["", "| read back | format | library s | DuckDB s | Polars s | rows (each) | agree |",
                  "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
        for fmt, rb in size["read_back"].items():
            counts = "/".join(f"{rb[r]['rows']:,}" for r in ("library", "duckdb", "polars"))
            lines.append(f"| whole table | {fmt} | {rb['library']['wall_s']:.2f} | {rb['duckdb']['wall_s']:.2f} | "
                         f"{rb['polars']['wall_s']:.2f} | {counts} | {'yes' if rb['agree'] else 'NO'} |")  # fmt: skip
        lines.append("")
    m = results["machine"]
    lines.append(f"Machine: {m.get('cpu', '?')}, {m['cpus']} cores, {m.get('memory_gb', '?')} GB; Python "
                 f"{m['python']}, pyarrow {m['pyarrow']}, {', '.join(f'{k} {v}' for k, v in results['libraries'].items())}. "
                 f"Load average at the start {results['load_average'][0]:.2f}. One run; each operation on "
                 "Iceberg, then on Delta, before the next.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _extra(r: dict) -> str:
    bits = []
    if r["op"].startswith(("append", "compact")):
        bits.append(f"max {r['max_files_per_partition']} files/partition")
    if r.get("note"):
        bits.append(r["note"])
    return f" ({'; '.join(bits)})" if bits else ""


def libraries() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("pyiceberg", "pyiceberg-core", "deltalake", "duckdb", "polars")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.table_formats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000", help="Comma-separated numbers of generated events.")
    parser.add_argument("--micro-batches", type=int, default=MICRO_BATCHES)
    parser.add_argument("--no-s3", action="store_true", help="Skip the warehouses on moto's S3 server.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", default=str(ROOT / ".cache" / "bench" / "data"))
    parser.add_argument("--work-dir", default=str(ROOT / ".cache" / "bench" / "table_formats"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "table_formats.json"),
                        help="Where results go (the Markdown table beside it).")  # fmt: skip
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="pyiceberg")
    warnings.filterwarnings("ignore", message="Iceberg scan planning")  # Polars without its optional plugin
    work_dir = Path(args.work_dir)
    # Other work on the machine moves the figures: its load when the run starts is kept with them.
    results = {"machine": machine(), "load_average": [round(x, 2) for x in os.getloadavg()],
               "libraries": libraries(), "sizes": []}  # fmt: skip
    for rows in [int(x) for x in args.rows.split(",") if x]:
        base = curated_events(rows, Path(args.data_dir), work_dir, args.seed)
        work = make_workload(base, args.micro_batches, args.seed)
        print(f"{rows:,} events: {base.num_rows:,} curated rows; merge {work.merge.num_rows:,}; "
              f"{len(work.micro_batches)} micro-batches of {work.micro_batches[0].num_rows:,}; subject {work.subject} "
              f"({subject_rows(work)} rows)", file=sys.stderr)  # fmt: skip
        ops = [parquet_write(work, work_dir / "parquet")]
        local_ops, read = run_local(work, work_dir / "lake")
        ops += local_ops
        if not args.no_s3:
            with S3Server() as endpoint:
                ops += run_s3(work, endpoint, work_dir / "s3")
        results["sizes"].append({"rows": rows, "curated_rows": base.num_rows, "merge_rows": work.merge.num_rows,
                                 "micro_batch_rows": work.micro_batches[0].num_rows, "subject": work.subject,
                                 "ops": ops, "read_back": read})  # fmt: skip
        shutil.rmtree(work_dir / "lake", ignore_errors=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    ok = all(r["rows_ok"] for s in results["sizes"] for r in s["ops"])
    return 0 if ok and all(rb["agree"] for s in results["sizes"] for rb in s["read_back"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
