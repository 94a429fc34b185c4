"""The lakehouse against the plain parquet lake: the same orders runs, with and without the
bronze, silver and gold Delta tables.

    python -m benchmarks.lakehouse --rows 5000000 [--repeat 3] [--json OUT.json] [--runner DirectRunner]

Two inputs of ``--rows`` generated order versions (``beam_pipelines.datagen --dataset orders``,
seeds 7 and 8: the second holds other versions of the same orders, as a next day's export
would). Each system runs day 1 into an empty output, then day 2 into the same output:

- **parquet lake**: the packaged ``orders`` pipeline (curated, aggregates and dead letters as
  parquet and JSON lines, replaced whole by each run);
- **lakehouse**: ``examples/lakehouse/orders.yaml``, the same pipeline plus bronze (append),
  silver (MERGE on order_id: day 1 inserts every order, day 2 updates and inserts) and gold
  (windows replaced), committed when the run publishes.

Each run is the whole CLI command, timed by wall clock; the ratio is lakehouse / parquet lake.
The two systems take turns (parquet lake day 1, lakehouse day 1, parquet lake day 2, lakehouse
day 2), so other work on the machine weighs on both alike; ``--repeat N`` does it all N times,
each into new outputs, and reports the medians (every time is in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAKE_SPEC = ROOT / "examples" / "lakehouse" / "orders.yaml"


def _module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip


def generate(root: Path, rows: int) -> dict[str, Path]:
    days = {}
    for day, seed in (("day1", 7), ("day2", 8)):
        out = root / day
        proc = _module("beam_pipelines.datagen", "--dataset", "orders", f"--rows={rows}", "--days=3", f"--out={out}",
                       f"--seed={seed}")  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"datagen failed: {proc.stderr[-2000:]}")
        days[day] = out
    return days


def run(pipeline: str, data: Path, out: Path, runner: str) -> dict:
    started = time.perf_counter()
    proc = _module("beam_pipelines.main", f"--pipeline={pipeline}", f"--input={data}/*.jsonl", f"--output={out}",
                   f"--runner={runner}")  # fmt: skip
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{pipeline} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "_run" / "summary.json").read_text())
    result = {"seconds": round(seconds, 2), "curated": summary["counts"]["curated"]}
    lake = summary.get("lakehouse")
    if lake:
        result["tables"] = lake
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lakehouse", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="order versions per day (default 1,000,000)")
    ap.add_argument("--runner", default="DirectRunner")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of both systems' runs; medians reported (default 1)")
    ap.add_argument("--json", help="write the results here (and a Markdown table beside it)")
    a = ap.parse_args(argv)
    systems = (("parquet lake", "orders"), ("lakehouse", str(LAKE_SPEC)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        days = generate(root / "data", a.rows)
        print(f"inputs: 2 x {a.rows:,} order versions in {time.perf_counter() - t:.1f} s", flush=True)
        runs = {system: {"day1": [], "day2": []} for system, _ in systems}
        for n in range(a.repeat):
            for day in ("day1", "day2"):
                for system, pipeline in systems:
                    out = root / f"{system.replace(' ', '_')}-{n}"
                    runs[system][day].append(run(pipeline, days[day], out, a.runner))
                    print(f"{system} {day} (round {n + 1}): {runs[system][day][-1]['seconds']:.1f} s", flush=True)
            for system, _ in systems:
                shutil.rmtree(root / f"{system.replace(' ', '_')}-{n}")
    results = {system: {day: {**sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2],
                              "seconds": statistics.median(r["seconds"] for r in rs),
                              "all_seconds": [r["seconds"] for r in rs]} for day, rs in by_day.items()}
               for system, by_day in runs.items()}  # fmt: skip
    plain, lake = results["parquet lake"], results["lakehouse"]
    table = "| run | parquet lake (s) | lakehouse (s) | ratio |\n|---|---:|---:|---:|\n"
    for day, what in (("day1", "day 1: empty output (silver: every order inserted)"),
                      ("day2", "day 2: other versions (silver: MERGE, updates and inserts)")):  # fmt: skip
        table += (f"| {what} | {plain[day]['seconds']:.1f} | {lake[day]['seconds']:.1f} | "
                  f"{lake[day]['seconds'] / plain[day]['seconds']:.2f}x |\n")  # fmt: skip
    print("\n" + table, end="")
    if a.json:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        with open(a.json, "w") as fh:
            json.dump({"rows": a.rows, "runner": a.runner, "repeat": a.repeat, "results": results,
                       "load_average": os.getloadavg()}, fh, indent=2)  # fmt: skip
            fh.write("\n")
        with open(os.path.splitext(a.json)[0] + ".md", "w") as fh:
            fh.write(f"# The lakehouse against the parquet lake: 2 x {a.rows:,} order versions ({a.runner})\n\n"
                     f"`python -m benchmarks.lakehouse --rows {a.rows} --repeat {a.repeat} --json {a.json}`; "
                     f"medians of {a.repeat} rounds; load average after: {load}\n\n{table}")  # fmt: skip


if __name__ == "__main__":
    main()
