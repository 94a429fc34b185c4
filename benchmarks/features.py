"""Per-entity features as of every event: this project against DuckDB and Polars, in one run.

    python -m benchmarks.features --events 5000000 --users 100000 --json benchmarks/results/features.json

The workload: events (user_id, ts, amount) of ``--users`` users over ``--days`` days (times in
whole seconds, so a user sometimes has two events at one time), in parquet files; per event, its
user's event count and amount sum over the trailing 1 h, 24 h and 7 d, each range ``(t - range,
t]`` (``transforms.feature_defs``), amounts summed exactly in cents. Every system reads the same
files and writes parquet (user_id, ts, events_1h, amount_1h, events_24h, amount_24h, events_7d,
amount_7d); the outputs, sorted by (user_id, ts), must be equal value for value.

Systems, each its own process (wall time and peak RSS of its process tree, from outside):

- ``beam_pipelines``: ``EntityFeatures`` in a Beam pipeline on the direct runner with one worker
  process per core, forked ahead, as ``python -m beam_pipelines.main`` runs: parquet batches in
  (``ReadFiles``), the entity shuffle through spill files, the feature table out with
  ``WriteLake`` (one file per entity bucket, sorted by user and time);
- ``beam_pipelines_1worker``: the same on one worker, in the launcher's process (Beam's default);
- ``beam_pipelines_kernel``: the same computation without Beam, in one process: the whole table
  read, ``feature_kernels.features_as_of``, one file written (what the pipeline's workers run,
  on all of the data at once);
- ``duckdb``: window functions ``RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW`` (the
  interval one microsecond short of the range: DuckDB's bound is inclusive);
- ``polars``: ``LazyFrame.rolling(index_column="ts", period=..., closed="right", group_by=
  "user_id")``, one per range, joined side by side.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("beam_pipelines", "beam_pipelines_1worker", "beam_pipelines_kernel", "duckdb", "polars")
RANGES = (("1h", 3600), ("24h", 86_400), ("7d", 604_800))
COLUMNS = ("user_id", "ts", *(f"{kind}_{name}" for name, _ in RANGES for kind in ("events", "amount")))
_US = pa.timestamp("us", tz="UTC")
BASE_US = 1_709_251_200_000_000  # 2024-03-01T00:00:00Z


def feature_set():
    from transforms.feature_defs import FeatureSet, Trailing

    features = []
    for name, seconds in RANGES:
        features += [Trailing(f"events_{name}", "count", seconds),
                     Trailing(f"amount_{name}", "sum", seconds, "amount", decimals=2)]  # fmt: skip
    return FeatureSet("user_id", "ts", tuple(features))


def generate(events: int, users: int, days: int, files: int, seed: int) -> Path:
    """The events in ``files`` parquet files (made once, kept under .cache/bench/features/)."""
    out = ROOT / ".cache" / "bench" / "features" / f"events-{events}-{users}-{days}-{seed}"
    if (out / "_done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    per = -(-events // files)
    for i in range(files):
        n = min(per, events - i * per)
        user = rng.integers(0, users, n)
        table = pa.table(
            {
                "user_id": pa.array(np.char.add("u", np.char.zfill(user.astype(str), 7))),
                "ts": pa.array(BASE_US + rng.integers(0, days * 86_400, n) * 1_000_000, _US),
                "amount": rng.integers(0, 50_000, n) / 100,
            }
        )
        pq.write_table(table, out / f"part-{i:05d}.parquet", row_group_size=250_000)
    (out / "_done").touch()
    return out


# -- the systems (each run as `python -m benchmarks.features one SYSTEM IN OUT`) ----------------


def run_beam(src: Path, out: Path, workers: int | None = None) -> None:
    import contextlib
    import gc

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_pipelines.runners import parallel_direct_runner
    from beam_pipelines.warm_workers import WarmWorkers
    from transforms.entity_features import EntityFeatures
    from transforms.ingest.files import ReadFiles
    from transforms.sinks.lake import WriteLake

    scratch = out.parent / (out.name + "-scratch")
    options = PipelineOptions([])
    workers = workers or max(1, min(4, _cores()))
    # As the launcher does: worker processes forked before the runner; one worker runs in-process.
    with WarmWorkers(workers) if workers > 1 else contextlib.nullcontext() as pool:
        runner = parallel_direct_runner(options, workers, None, pool.command()) if workers > 1 else FnApiRunner()
        p = beam.Pipeline(runner=runner, options=options)
        tables = p | "Read" >> ReadFiles(str(src / "*.parquet"), "parquet")
        features = tables | "Features" >> EntityFeatures(feature_set(), partitions=8, spill_dir=str(scratch / "f"))
        features["features"] | "Write" >> WriteLake(str(out), sort_by=("user_id", "ts"), buckets=8,
                                                    bucket_key="user_id", spill_dir=str(scratch / "w"))  # fmt: skip
        features["dead_letters"] | "NoDeadLetters" >> beam.Map(_no_rows)
        gc.freeze()
        p.run().wait_until_finish()
    shutil.rmtree(scratch, ignore_errors=True)


def _no_rows(table: pa.Table) -> None:
    if table.num_rows:
        raise AssertionError(f"{table.num_rows} events became dead letters")


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def run_kernel(src: Path, out: Path) -> None:
    from transforms.feature_kernels import features_as_of

    table = pq.read_table(src, columns=["user_id", "ts", "amount"])
    out.mkdir(parents=True)
    pq.write_table(features_as_of(table, feature_set()), out / "part-00000.parquet", compression="zstd")


def run_duckdb(src: Path, out: Path) -> None:
    import duckdb

    def window(seconds: int) -> str:
        return (f"(PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '{seconds * 1_000_000 - 1} microseconds' "
                "PRECEDING AND CURRENT ROW)")  # fmt: skip

    measures = ", ".join(
        f"count(*) OVER {window(s)} AS events_{name}, sum(cents) OVER {window(s)} / 100.0 AS amount_{name}"
        for name, s in RANGES
    )
    out.mkdir(parents=True)
    duckdb.connect().execute(
        f"COPY (SELECT user_id, ts, {measures} FROM (SELECT user_id, ts, CAST(round(amount * 100) AS BIGINT) AS cents "
        f"FROM read_parquet('{src}/*.parquet')) ORDER BY user_id, ts) "
        f"TO '{out}/part-00000.parquet' (FORMAT parquet, COMPRESSION zstd)"
    )


def run_polars(src: Path, out: Path) -> None:
    import polars as pl

    events = (
        pl.scan_parquet(f"{src}/*.parquet")
        .with_columns(cents=(pl.col("amount") * 100).round().cast(pl.Int64))
        .sort("user_id", "ts")
    )
    parts = [
        events.rolling(index_column="ts", period=name, closed="right", group_by="user_id").agg(
            pl.len().cast(pl.Int64).alias(f"events_{name}"), pl.col("cents").sum().alias(f"cents_{name}")
        )
        for name, _ in RANGES
    ]
    # Rows of one user and time have the same values, so the parts line up whatever their order among them.
    joined = pl.concat([parts[0], *(p.drop("user_id", "ts") for p in parts[1:])], how="horizontal")
    # Cents to amounts by a true division (eager, by a column of 100.0): the lazy optimiser turns a
    # division by a constant into a multiplication by its reciprocal, which can differ in the last bit.
    df = joined.collect()
    hundred = pl.Series("_hundred", np.full(df.height, 100.0))
    df = df.select(
        "user_id", "ts", *(e for name, _ in RANGES for e in (
            pl.col(f"events_{name}"), (pl.col(f"cents_{name}") / hundred).alias(f"amount_{name}")))
    )  # fmt: skip
    out.mkdir(parents=True)
    df.write_parquet(out / "part-00000.parquet", compression="zstd")


RUNS = {
    "beam_pipelines": run_beam,
    "beam_pipelines_1worker": lambda src, out: run_beam(src, out, workers=1),
    "beam_pipelines_kernel": run_kernel,
    "duckdb": run_duckdb,
    "polars": run_polars,
}


# -- the harness --------------------------------------------------------------------------------


def canonical(out: Path) -> pa.Table:
    """A system's feature table: the compared columns in canonical types, sorted by (user_id, ts)."""
    table = ds.dataset(out, format="parquet").to_table(columns=list(COLUMNS))
    types = {"user_id": pa.string(), "ts": _US}
    table = pa.table(
        {c: table.column(c).cast(types.get(c, pa.int64() if c.startswith("events") else pa.float64())) for c in COLUMNS}
    )
    return table.sort_by([("user_id", "ascending"), ("ts", "ascending")])


def _load() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["one"]:
        system, src, out = argv[1], Path(argv[2]), Path(argv[3])
        RUNS[system](src, out)
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.features", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each system (round-robin); the median is kept")
    ap.add_argument("--json", help="write results here (and a Markdown table beside it)")
    args = ap.parse_args(argv)
    from benchmarks.run import machine, measure

    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in RUNS]
    if unknown:
        ap.error(f"unknown systems: {', '.join(unknown)} (known: {', '.join(SYSTEMS)})")
    src = generate(args.events, args.users, args.days, args.files, args.seed)
    work = ROOT / ".cache" / "bench" / "features" / "out"
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    reference, matches = None, {}
    # Round-robin: each repeat runs every system once, so a change in the machine's load falls on all.
    for _ in range(args.repeat):
        for system in systems:
            out = work / system
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work / (system + "-scratch"), ignore_errors=True)
            load = _load()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            m = measure([sys.executable, "-m", "benchmarks.features", "one", system, str(src), str(out)], args.timeout)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU seconds of the whole process tree (workers are waited for, so theirs count): steadier
            # than wall time when other work shares the machine.
            m["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
            m["load_before"] = load
            if m["ok"] and system not in matches:
                table = canonical(out)
                if reference is None:
                    reference = (system, table)
                matches[system] = {"rows": table.num_rows,
                                   "matches": reference[0] if table.equals(reference[1]) else False}  # fmt: skip
            runs[system].append(m)
            shown = (
                f"{m['wall_s']:7.2f} s {m['cpu_s']:7.2f} cpu-s {m['peak_rss_mb']:7.0f} MB" if m["ok"] else m["error"]
            )
            print(f"{system:24s} {shown}  load {load}", file=sys.stderr, flush=True)
    results = [_summary(system, runs[system], matches.get(system, {}), args) for system in systems]
    doc = {"workload": {k: getattr(args, k) for k in ("events", "users", "days", "files", "seed", "repeat")},
           "machine": machine(), "versions": _versions(), "results": results}  # fmt: skip
    if args.json:
        path = Path(args.json)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        path.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0 if all(r["ok"] and r.get("matches") for r in results) else 1


def _summary(system: str, runs: list[dict], match: dict, args) -> dict:
    ok = [r for r in runs if r["ok"]]
    row = {"system": system, "events": args.events, "users": args.users, "ok": len(ok) == len(runs), **match}
    if not row["ok"]:
        row["error"] = next(r["error"] for r in runs if not r["ok"])
        return row
    return {
        **row,
        "wall_s": round(statistics.median(r["wall_s"] for r in ok), 2),
        "cpu_s": round(statistics.median(r["cpu_s"] for r in ok), 2),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in ok), 1),
        "runs": [{k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "load_before")} for r in ok],
    }


def _versions() -> dict:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("apache-beam", "pyarrow", "numpy", "duckdb", "polars")}


def markdown(doc: dict) -> str:
    w = doc["workload"]
    ok = [r for r in doc["results"] if r["ok"]]
    peers = [r["wall_s"] for r in ok if not r["system"].startswith("beam_pipelines")]
    best = min(peers) if peers else None
    lines = [
        f"Features as of every event: {w['events']:,} events, {w['users']:,} users, {w['days']} days; "
        "count and sum over 1 h, 24 h, 7 d.",
        "",
        "| system | wall s | events/s | / fastest peer | CPU s | peak RSS MB | output equal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        if not r["ok"]:
            lines.append(f"| {r['system']} | failed: {r['error']} | | | | | |")
            continue
        rel = f"{r['wall_s'] / best:.2f}x" if best else ""
        same = "reference" if r["matches"] == r["system"] else ("yes" if r["matches"] else "NO")
        lines.append(f"| {r['system']} | {r['wall_s']:.2f} | {r['events'] / r['wall_s']:,.0f} | {rel} | "
                     f"{r['cpu_s']:.1f} | {r['peak_rss_mb']:,.0f} | {same} |")  # fmt: skip
    m, v = doc["machine"], doc["versions"]
    loads = [run["load_before"][0] for r in doc["results"] for run in r.get("runs", ()) if run["load_before"]]
    lines += [
        "",
        f"{m.get('cpus')} CPUs ({m.get('cpu', '?')}), {m.get('memory_gb', '?')} GB; load average before the "
        f"runs: {min(loads, default=0):.2f} to {max(loads, default=0):.2f}. Beam {v['apache-beam']}, pyarrow {v['pyarrow']}, "
        f"numpy {v['numpy']}, DuckDB {v['duckdb']}, Polars {v['polars']}. Wall time of each system's whole "
        f"process (start-up included) and CPU seconds of its process tree, median of {w['repeat']} run(s) each "
        "(round-robin), peak RSS the largest.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
