"""Parquet codecs on the curated records: size, write and read speed, for the lake's hot and cold tiers.

    python -m benchmarks.compression [--rows 1000000] [--repeat 3] [--json benchmarks/results/compression.json]

The curated `events` records (the pipeline run once on generated data, as the table-format
benchmark makes them, cached under ``.cache/bench/``) are written as one parquet file per codec
and level, the way the lake writes them (row groups of 128k rows, dictionary encoding on), and
read back whole. Each measurement is the best of ``--repeat`` (the page cache warm: this is the
codec's CPU, not the disk). The file read back must equal the table written.

- **hot tier**: recent partitions, read by most queries and rewritten by MERGE and compaction:
  the codec with the fastest read and write among those within a few percent of the best size;
- **cold tier**: old partitions, written once when they move and read rarely: the smallest file
  whose read stays within a small factor of the hot tier's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.run import ROOT, machine
from benchmarks.table_formats import curated_events

# (codec, level): None is the codec's default level.
CODECS = (
    ("none", None),
    ("snappy", None),
    ("lz4", None),
    ("zstd", 1),
    ("zstd", 3),
    ("zstd", 9),
    ("zstd", 19),
    ("gzip", 6),
    ("gzip", 9),
    ("brotli", 5),
)
ROW_GROUP = 128 * 1024


def _label(codec: str, level: int | None) -> str:
    return codec if level is None else f"{codec}-{level}"


def measure(table: pa.Table, codec: str, level: int | None, repeat: int, work: Path) -> dict:
    path = work / f"{_label(codec, level)}.parquet"
    writes, reads = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        pq.write_table(table, path, compression=codec, compression_level=level, row_group_size=ROW_GROUP)
        writes.append(time.perf_counter() - t)
        t = time.perf_counter()
        back = pq.read_table(path)
        reads.append(time.perf_counter() - t)
    if not back.equals(table):
        raise RuntimeError(f"{_label(codec, level)}: the file read back differs from the table written")
    size = os.path.getsize(path)
    path.unlink()
    raw = table.nbytes
    return {
        "codec": _label(codec, level),
        "bytes": size,
        "ratio": round(raw / size, 2),
        "write_s": round(min(writes), 3),
        "read_s": round(min(reads), 3),
        "write_mb_s": round(raw / 1e6 / min(writes), 1),
        "read_mb_s": round(raw / 1e6 / min(reads), 1),
    }


def choose(results: list[dict]) -> dict:
    """The tiers' codecs from the measurements (see the module docstring)."""
    smallest = min(r["bytes"] for r in results)
    compressed = [r for r in results if r["codec"] != "none"]
    near = [r for r in compressed if r["bytes"] <= smallest * 1.15]
    hot = min(near, key=lambda r: r["read_s"] + r["write_s"])
    cold_candidates = [r for r in compressed if r["read_s"] <= hot["read_s"] * 2]
    cold = min(cold_candidates, key=lambda r: r["bytes"])
    return {"hot": hot["codec"], "cold": cold["codec"]}


def _machine(m: dict) -> str:
    return (
        f"{m.get('cpus')} cores ({m.get('cpu', 'unknown CPU')}), pyarrow {m.get('pyarrow')}, Python {m.get('python')}"
    )


def markdown(result: dict) -> str:
    raw = result["raw_bytes"]
    lines = [
        f"{result['rows']:,} curated rows, {result['columns']} columns, {raw / 1e6:,.1f} MB in memory (Arrow); "
        f"best of {result['repeat']}; {_machine(result['machine'])}",
        "",
        "| codec | file (MB) | ratio | write (s) | read (s) | write (MB/s) | read (MB/s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["codecs"]:
        lines.append(f"| {r['codec']} | {r['bytes'] / 1e6:,.1f} | {r['ratio']} | {r['write_s']} | {r['read_s']} | "
                     f"{r['write_mb_s']:,} | {r['read_mb_s']:,} |")  # fmt: skip
    chosen = result["chosen"]
    lines += ["", f"Chosen by the rule in `benchmarks/compression.py`: hot tier **{chosen['hot']}**, cold tier "
              f"**{chosen['cold']}**."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Generated events (about 95% become curated).")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", default=str(ROOT / ".cache" / "bench" / "data"))
    parser.add_argument("--work-dir", default=str(ROOT / ".cache" / "bench" / "table_formats"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "compression.json"))
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")
    table = curated_events(args.rows, Path(args.data_dir), Path(args.work_dir), args.seed)
    print(f"{table.num_rows:,} curated rows, {table.nbytes / 1e6:,.1f} MB", file=sys.stderr, flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp:
        for codec, level in CODECS:
            r = measure(table, codec, level, args.repeat, Path(tmp))
            print(f"  {r['codec']:<10} {r['bytes'] / 1e6:8.1f} MB  write {r['write_s']:.3f} s  read {r['read_s']:.3f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            results.append(r)
    result = {"rows": table.num_rows, "columns": table.num_columns, "raw_bytes": table.nbytes, "repeat": args.repeat,
              "machine": machine(), "codecs": results, "chosen": choose(results)}  # fmt: skip
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
