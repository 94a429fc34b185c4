"""Erasing one data subject from a large silver table: time and bytes rewritten, next to a full rewrite.

    python -m benchmarks.erase [--rows 2000000 ...] [--days 30] [--json benchmarks/results/erase.json]

A silver-like Delta table of ``--rows`` generated orders (``datagen_orders``, partitioned by the
day of ``created_at`` over ``--days`` days, compacted to one file a day as ``lakehouse maintain``
leaves it) is built once per size and copied before each measurement. Then, for the customer
with the most orders (their rows on the most days, so the most files) and for one with a single
order:

- **erase**: what ``python -m beam_pipelines.erase`` does to silver: a Delta DELETE on the
  customer's id (``lakehouse/erasure.delete``: only the files holding one of their rows are
  rewritten), then the earlier versions expired (``erasure.expire``: vacuum, checkpoint, log);
- **full rewrite**: the whole table read, the customer's rows filtered out, and written as a new
  version (``mode=overwrite``), what an engine without file-level deletes would do.

Bytes rewritten are the sizes of the files each commit added (the files removed are about as
big). The table after both must hold the same rows. Memory: generating the orders in memory
dominates (``--rows 50000000``, a 20M-row silver table, peaks at about 23 GB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.run import ROOT, machine


def silver_table(rows: int, days: int, seed: int) -> pa.Table:
    from beam_pipelines import datagen_orders

    sample = datagen_orders.generate(rows, 0, seed, 0.0, days=days, version=2)
    table = sample.table
    # Silver holds one row per order (the latest version): keep the last of each order id.
    ids = table["order_id"].to_pylist()
    last = {k: i for i, k in enumerate(ids)}
    table = table.take(pa.array(sorted(last.values())))
    return table.append_column("dt", pc.cast(table["created_at"], pa.date32()))


def build(rows: int, days: int, seed: int, path: Path) -> dict:
    from beam_pipelines.lakehouse import tables

    data = silver_table(rows, days, seed)
    tables.append(str(path), data, ["dt"])
    table = tables.open_table(str(path))
    table.optimize.compact(writer_properties=tables.writer_properties())
    table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)
    counts = Counter(data["customer_id"].to_pylist()).most_common()
    (busiest, n), (single, m) = counts[0], counts[-1]
    return {"rows": data.num_rows, "customer": busiest, "customer_rows": n, "single": single, "single_rows": m,
            "customer_days": len(set(data.filter(pc.equal(data["customer_id"], busiest))["dt"].to_pylist()))}  # fmt: skip


def _live(table) -> dict[str, int]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return dict(zip(actions["path"].to_pylist(), actions["size_bytes"].to_pylist()))


def erase_once(path: Path, customer: str) -> dict:
    from beam_pipelines.lakehouse import erasure, tables

    before = _live(tables.open_table(str(path)))
    t0 = time.perf_counter()
    done = erasure.delete(str(path), erasure.subject_predicate("customer_id", customer), "bench")
    t1 = time.perf_counter()
    expired = erasure.expire(str(path), "bench")
    t2 = time.perf_counter()
    after = _live(tables.open_table(str(path)))
    added = {p: b for p, b in after.items() if p not in before}
    return {"delete_s": round(t1 - t0, 3), "expire_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
            "rows_deleted": done["rows_deleted"], "files_rewritten": done["files_rewritten"],
            "files": len(before), "table_bytes": sum(before.values()), "bytes_rewritten": sum(added.values()),
            "files_vacuumed": expired["files_vacuumed"]}  # fmt: skip


def full_rewrite_once(path: Path, customer: str) -> dict:
    from deltalake import write_deltalake

    from beam_pipelines.lakehouse import tables

    table = tables.open_table(str(path))
    before = _live(table)
    t0 = time.perf_counter()
    data = tables.read(table)
    kept = data.filter(pc.not_equal(data["customer_id"], customer))
    write_deltalake(table, kept, mode="overwrite", partition_by=["dt"], writer_properties=tables.writer_properties())
    t1 = time.perf_counter()
    after = _live(tables.open_table(str(path)))
    return {"total_s": round(t1 - t0, 3), "rows_deleted": data.num_rows - kept.num_rows, "files": len(before),
            "table_bytes": sum(before.values()), "bytes_rewritten": sum(after.values())}  # fmt: skip


def rows_of(path: Path) -> int:
    from beam_pipelines.lakehouse import tables

    return tables.open_table(str(path)).count()


def measure(rows: int, days: int, seed: int, repeat: int, work: Path) -> dict:
    base = work / f"silver-{rows}"
    info = build(rows, days, seed, base)
    print(f"{info['rows']:,} silver rows; customer {info['customer']}: {info['customer_rows']} rows on "
          f"{info['customer_days']} days", file=sys.stderr, flush=True)  # fmt: skip
    runs: dict[str, list[dict]] = {"erase": [], "erase (one order)": [], "full rewrite": []}
    counts = {}
    methods = (("erase", erase_once, info["customer"]), ("erase (one order)", erase_once, info["single"]),
               ("full rewrite", full_rewrite_once, info["customer"]))  # fmt: skip
    for _ in range(repeat):
        for name, fn, customer in methods:
            copy = work / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(base, copy)
            runs[name].append(fn(copy, customer))
            counts[name] = rows_of(copy)
            print(f"  {name:<13} {runs[name][-1]['total_s']:8.3f} s  {runs[name][-1]['bytes_rewritten'] / 1e6:8.1f} MB",
                  file=sys.stderr, flush=True)  # fmt: skip
    if (
        counts["erase"] != counts["full rewrite"]
        or counts["erase"] != info["rows"] - info["customer_rows"]
        or (counts["erase (one order)"] != info["rows"] - info["single_rows"])
    ):
        raise RuntimeError(f"the tables differ after erase and full rewrite: {counts}")
    shutil.rmtree(base, ignore_errors=True)
    best = {name: min(rs, key=lambda r: r["total_s"]) for name, rs in runs.items()}
    return {**info, "days": days, **{name: r for name, r in best.items()}}


def markdown(result: dict) -> str:
    lines = [
        f"One customer erased from a silver Delta table (orders, {result['runs'][0]['days']} daily partitions, one "
        f"file each); best of {result['repeat']}; {result['machine'].get('cpus')} cores, deltalake "
        f"{result['deltalake']}",
        "",
        "| silver rows | table (MB) | customer rows / days | method | time (s) | files rewritten | MB rewritten | share of the table |",  # noqa: E501
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        for name in ("erase", "erase (one order)", "full rewrite"):
            m = r[name]
            detail = f" (delete {m['delete_s']} + expire {m['expire_s']})" if name.startswith("erase") else ""
            files = m.get("files_rewritten", m["files"])
            who = (
                f"{r['single_rows']} / 1"
                if name == "erase (one order)"
                else f"{r['customer_rows']} / {r['customer_days']}"
            )
            lines.append(f"| {r['rows']:,} | {m['table_bytes'] / 1e6:,.1f} | {who} | "
                         f"{name} | {m['total_s']}{detail} | {files} of {m['files']} | {m['bytes_rewritten'] / 1e6:,.1f} | "
                         f"{m['bytes_rewritten'] / m['table_bytes']:.0%} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.erase", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 2_000_000],
                        help="Generated order versions per table size (about 40%% are distinct orders: silver).")  # fmt: skip
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "erase.json"))
    args = parser.parse_args(argv)
    if min(args.rows) < 1 or args.repeat < 1 or args.days < 1:
        parser.error("--rows, --days and --repeat must be positive")
    import deltalake

    with tempfile.TemporaryDirectory(prefix="bench-erase-") as tmp:
        runs = [measure(n, args.days, args.seed, args.repeat, Path(tmp)) for n in args.rows]
    result = {"repeat": args.repeat, "machine": machine(), "deltalake": deltalake.__version__, "runs": runs}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
