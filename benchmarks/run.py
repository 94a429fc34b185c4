"""Runs the `events` (or `orders`) workload on every system, on the same files, and compares them.

    python -m benchmarks.run --rows 1000000,5000000 --format parquet,jsonl --json results.json
    python -m benchmarks.run --pipeline orders --rows 1000000 --systems beam_pipelines,duckdb,polars

Each system runs as its own process (see benchmarks/README.md); wall time and the peak RSS of
its whole process tree are measured from outside, the median of ``--repeat`` runs is kept, and
each system's aggregates and curated row count are checked against the others'.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = (
    "beam_pipelines", "beam_pipelines_1worker", "beam_pipelines_bare", "beam_pipelines_prism", "beam_per_record",
    "duckdb", "polars", "pyspark",
)  # fmt: skip
# beam_pipelines_bare: the same pipeline without expectations, profiles, history and lineage, to
# measure what the quality layer costs.
BARE_FLAGS = ("--expectations=none", "--profile=false", "--history=none", "--lineage=none")
DEFAULT_SYSTEMS = ("beam_pipelines", "beam_per_record", "duckdb", "polars", "pyspark")
AGG_COLUMNS = ("window_start", "window_end", "event_type", "country", "events", "users", "amount_sum")
_US = pa.timestamp("us", tz="UTC")
PIPELINES = ("events", "orders")
# orders: the peers of duckdb and polars, and its aggregates (exact decimals; average_order, a
# float mean of decimals, may differ in its last bits with how an engine turns a decimal into a
# float, so it is compared to a relative 1e-12).
ORDERS_PEERS = {"duckdb": "orders_duckdb", "polars": "orders_polars"}
ORDERS_SYSTEMS = ("beam_pipelines", "beam_pipelines_1worker", "beam_pipelines_bare", "beam_pipelines_prism", "duckdb",
                  "polars")  # fmt: skip
ORDERS_DEFAULT_SYSTEMS = ("beam_pipelines", "duckdb", "polars")
ORDERS_AGG_TYPES = {
    "window_start": _US, "window_end": _US, "region": pa.string(), "status": pa.string(), "orders": pa.int64(),
    "customers": pa.int64(), "revenue": pa.decimal128(38, 2), "items": pa.int64(), "average_order": pa.float64(),
    "largest_order": pa.decimal128(18, 2),
}  # fmt: skip
ORDERS_FLOAT_RTOL = 1e-12


def at_revision(system: str) -> Path | None:
    """For ``beam_pipelines@REV``: a worktree of the project at git revision REV (its compiled
    passes built in place), so a change is measured against the code before it in one run."""
    if "@" not in system:
        return None
    rev = system.split("@", 1)[1]
    tree = ROOT / ".cache" / "bench" / "worktrees" / rev
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, check=True,
                       capture_output=True)  # fmt: skip
    return tree


def command(system: str, pattern: str, fmt: str, out: Path, pipeline: str = "events") -> list[str]:
    py = sys.executable
    spec = f"--pipeline={pipeline}"
    if system == "beam_pipelines" or system.startswith("beam_pipelines@"):
        return [py, "-m", "beam_pipelines.main", spec, "--runner=DirectRunner",
                f"--input={pattern}", f"--input_format={fmt}", f"--output={out}"]  # fmt: skip
    if system == "beam_pipelines_1worker":  # like for like with beam_per_record: one worker, Beam's default
        return [py, "-m", "beam_pipelines.main", spec, "--runner=DirectRunner",
                f"--input={pattern}", f"--input_format={fmt}", f"--output={out}", "--local_workers=1"]  # fmt: skip
    if system == "beam_pipelines_bare":
        return [py, "-m", "beam_pipelines.main", spec, "--runner=DirectRunner",
                f"--input={pattern}", f"--input_format={fmt}", f"--output={out}", *BARE_FLAGS]  # fmt: skip
    if system == "beam_pipelines_prism":
        return [py, "-m", "beam_pipelines.main", spec, "--runner=PrismRunner",
                f"--input={pattern}", f"--input_format={fmt}", f"--output={out}"]  # fmt: skip
    module = ORDERS_PEERS[system] if pipeline == "orders" else system
    return [py, "-m", f"benchmarks.systems.{module}", "--input", pattern, "--format", fmt, "--output", str(out)]


def measure(cmd: list[str], timeout: float, root: Path = ROOT) -> dict:
    """Runs one command in ``root`` (the project, or a worktree of it at another revision); wall
    time and peak RSS (MB) summed over its process tree."""
    import psutil

    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = ROOT / ".cache" / "bench" / "last-run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as fh:
        proc = psutil.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            rss = 0
            try:
                for p in [proc] + proc.children(recursive=True):
                    try:
                        rss += p.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                pass
            peak = max(peak, rss)
            if time.monotonic() - started > timeout:
                for p in proc.children(recursive=True) + [proc]:
                    p.kill()
                return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.05)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        return {"ok": False, "error": f"exit {proc.returncode}: {tail[0][:300]}"}
    return {"ok": True, "wall_s": wall, "peak_rss_mb": peak / 2**20}


def canonical_aggregates(out: Path, pipeline: str = "events") -> pa.Table:
    if pipeline == "orders":
        return _orders_aggregates(out)
    files = sorted((out / "aggregates").rglob("*.parquet"))
    if not files:
        return pa.table({c: [] for c in AGG_COLUMNS})
    table = pa.concat_tables([pq.read_table(f, partitioning=None).select(list(AGG_COLUMNS)) for f in files],
                             promote_options="permissive")  # fmt: skip
    casts = {"window_start": _US, "window_end": _US, "event_type": pa.string(), "country": pa.string(),
             "events": pa.int64(), "users": pa.int64(), "amount_sum": pa.float64()}  # fmt: skip
    table = pa.table({c: pc.cast(table.column(c), casts[c]) for c in AGG_COLUMNS})
    return table.sort_by([("window_start", "ascending"), ("event_type", "ascending"), ("country", "ascending")])


def _orders_aggregates(out: Path) -> pa.Table:
    files = sorted((out / "aggregates").rglob("*.parquet"))
    names = list(ORDERS_AGG_TYPES)
    if not files:
        return pa.table({c: pa.array([], t) for c, t in ORDERS_AGG_TYPES.items()})
    table = pa.concat_tables([pq.read_table(f, partitioning=None).select(names) for f in files],
                             promote_options="permissive")  # fmt: skip
    table = pa.table({c: pc.cast(table.column(c), t) for c, t in ORDERS_AGG_TYPES.items()})
    return table.sort_by([("window_start", "ascending"), ("region", "ascending"), ("status", "ascending")])


def same_aggregates(a: pa.Table, b: pa.Table, pipeline: str = "events") -> bool:
    """Whether two canonical aggregate tables agree: exactly, but for the float columns of
    ``orders``, which agree to a relative ``ORDERS_FLOAT_RTOL``."""
    if pipeline != "orders":
        return a.equals(b)
    floats = [f.name for f in a.schema if pa.types.is_floating(f.type)]
    if a.num_rows != b.num_rows or not a.drop_columns(floats).equals(b.drop_columns(floats)):
        return False
    for name in floats:
        x, y = a.column(name), b.column(name)
        if not pc.equal(x.is_null(), y.is_null()).to_numpy(zero_copy_only=False).all():
            return False
        x, y = pc.drop_null(x).to_numpy(), pc.drop_null(y).to_numpy()
        if not (abs(x - y) <= ORDERS_FLOAT_RTOL * abs(x)).all():
            return False
    return True


def curated_rows(out: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in (out / "curated").rglob("*.parquet"))


def ensure_data(data_dir: Path, fmt: str, rows: int, dirty: float, seed: int, pipeline: str = "events") -> str:
    # The events data keep their directory names; another pipeline's are prefixed with its name.
    prefix = "" if pipeline == "events" else f"{pipeline}-"
    target = data_dir / f"{prefix}{fmt}-{rows}-dirty{dirty}-seed{seed}"
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "beam_pipelines.datagen",
                f"--rows={rows}",
                f"--format={fmt}",
                f"--dirty-fraction={dirty}",
                f"--seed={seed}",
                f"--out={target}",
                *([f"--dataset={pipeline}"] if pipeline != "events" else []),
            ],  # fmt: skip
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            check=True,
        )
        (target / ".complete").write_text("ok")
    return str(target / f"*.{fmt}")


def machine() -> dict:
    import apache_beam

    info = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "beam": apache_beam.__version__,
        "pyarrow": pa.__version__,
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def markdown(results: dict) -> str:
    lines = [
        "| system | format | rows | wall s | rows/s | peak RSS MB | output matches |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results["runs"]:
        if r.get("error"):
            lines.append(f"| {r['system']} | {r['format']} | {r['rows']:,} | — | — | — | error: {r['error'][:80]} |")
            continue
        lines.append(
            f"| {r['system']} | {r['format']} | {r['rows']:,} | {r['wall_s']:.2f} | {r['rows_per_s']:,.0f} | "
            f"{r['peak_rss_mb']:,.0f} | {'yes' if r['output_matches'] else 'NO'} |"
        )
    m = results["machine"]
    lines.append("")
    if results.get("pipeline", "events") != "events":
        lines.append(f"Pipeline: {results['pipeline']}.")
        lines.append("")
    lines.append(f"Machine: {m.get('cpu', '?')}, {m['cpus']} cores, {m.get('memory_gb', '?')} GB; "
                 f"Python {m['python']}, Beam {m['beam']}, pyarrow {m['pyarrow']}. Median of "
                 f"{results['repeat']} runs (fewer where one system's runs on one data set would exceed "
                 f"{results['repeat_budget']:.0f} s; `walls` in the JSON lists every run).")  # fmt: skip
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results["runs"] if not r.get("error")]
    groups = sorted({(r["format"], r["rows"]) for r in runs})
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in runs)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) * max(1, len(systems)) / 3), 4.5))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        xs, ys = [], []
        for g, (fmt, rows) in enumerate(groups):
            for r in runs:
                if r["system"] == system and r["format"] == fmt and r["rows"] == rows:
                    xs.append(g + i * width)
                    ys.append(r["rows_per_s"])
        ax.bar(xs, ys, width, label=system)
    ax.set_yscale("log")
    ax.set_ylabel("rows/s (log scale)")
    ax.set_xticks([g + width * (len(systems) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{fmt}\n{rows:,}" for fmt, rows in groups])
    ax.set_title(f"{results.get('pipeline', 'events')} pipeline: throughput by system, format and rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", choices=PIPELINES, default="events",
                        help="The workload: its data (datagen --dataset), the project's spec and the peers "
                             f"that run it (orders: {', '.join(ORDERS_SYSTEMS)}). Default: events.")  # fmt: skip
    parser.add_argument("--rows", default="1000000", help="Comma-separated data sizes. Default: 1000000.")
    parser.add_argument("--format", default="parquet,jsonl", help="Comma-separated formats. Default: parquet,jsonl.")
    parser.add_argument("--systems", default=None,
                        help=f"Comma-separated systems from {', '.join(SYSTEMS)}, or beam_pipelines@REV: "
                             "this project at git revision REV (a worktree), to compare a change in one run. "
                             f"Default: {','.join(DEFAULT_SYSTEMS)} "
                             f"(orders: {','.join(ORDERS_DEFAULT_SYSTEMS)}).")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="Runs per system and data set (median kept).")
    parser.add_argument("--interleave", action="store_true",
                        help="Run every system once, then again, instead of each system's runs in a row (for "
                             "comparing close figures on a machine whose speed drifts).")  # fmt: skip
    parser.add_argument("--dirty-fraction", type=float, default=0.05, help="Dirty records in the data. Default 0.05.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", default=str(ROOT / ".cache" / "bench" / "data"))
    parser.add_argument("--work-dir", default=str(ROOT / ".cache" / "bench" / "out"))
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds per run before it is killed.")
    parser.add_argument("--repeat-budget", type=float, default=900,
                        help="Seconds one system may spend on one data set; past it, fewer repeats.")  # fmt: skip
    parser.add_argument("--json", default="results.json", help="Where results go (.md and .png beside it).")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.rows.split(",") if x]
    formats = [x for x in args.format.split(",") if x]
    chosen = args.systems or ",".join(ORDERS_DEFAULT_SYSTEMS if args.pipeline == "orders" else DEFAULT_SYSTEMS)
    systems = [x for x in chosen.split(",") if x]
    unknown = [s for s in systems if s not in SYSTEMS and not s.startswith("beam_pipelines@")]
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)}")
    if args.pipeline == "orders":
        missing = [s for s in systems if s not in ORDERS_SYSTEMS and not s.startswith("beam_pipelines@")]
        if missing:
            parser.error(f"no orders peer for: {', '.join(missing)} (orders runs {', '.join(ORDERS_SYSTEMS)})")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    results = {"machine": machine(), "repeat": args.repeat, "repeat_budget": args.repeat_budget, "runs": []}
    if args.pipeline != "events":
        results["pipeline"] = args.pipeline
    out_json = Path(args.json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    prefix = "" if args.pipeline == "events" else f"{args.pipeline}-"  # the events outputs keep their names
    for fmt in formats:
        for rows in sizes:
            pattern = ensure_data(Path(args.data_dir), fmt, rows, args.dirty_fraction, args.seed, args.pipeline)
            reference = None
            state = {system: {"walls": [], "peaks": [], "error": None, "outputs": None} for system in systems}
            # Interleaved: every system once, then again (a drifting machine then favours none).
            order = (
                [(rep, system) for rep in range(args.repeat) for system in systems]
                if args.interleave
                else [(rep, system) for system in systems for rep in range(args.repeat)]
            )
            for rep, system in order:
                st = state[system]
                walls = st["walls"]
                if st["error"] or len(walls) < rep:
                    continue
                if rep and sum(walls) * args.repeat / rep > args.repeat_budget:
                    continue  # a slow system at a large size: fewer runs, recorded in `walls`
                out = Path(args.work_dir) / f"{prefix}{system}-{fmt}-{rows}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = command(system, pattern, fmt, out, args.pipeline)
                m = measure(cmd, args.timeout, at_revision(system) or ROOT)
                if not m["ok"]:
                    st["error"] = m["error"]
                    continue
                walls.append(m["wall_s"])
                st["peaks"].append(m["peak_rss_mb"])
                if rep == 0:
                    st["outputs"] = (canonical_aggregates(out, args.pipeline), curated_rows(out))
                print(f"{system:<22} {fmt:<8} {rows:>10,}  run {rep + 1}: {m['wall_s']:7.2f} s "
                      f"{m['peak_rss_mb']:7.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
            for system in systems:
                st = state[system]
                walls, outputs = st["walls"], st["outputs"]
                run = {"system": system, "rows": rows, "format": fmt}
                if st["error"]:
                    run.update(error=st["error"], output_matches=False)
                    print(f"{system:<22} {fmt:<8} {rows:>10,}  FAILED: {st['error']}", file=sys.stderr)
                else:
                    if reference is None:
                        reference = outputs
                    matches = outputs[1] == reference[1] and same_aggregates(outputs[0], reference[0], args.pipeline)
                    wall = statistics.median(walls)
                    run.update(
                        wall_s=round(wall, 3),
                        rows_per_s=round(rows / wall),
                        peak_rss_mb=round(statistics.median(st["peaks"]), 1),
                        max_rss_mb=round(max(st["peaks"]), 1),
                        curated_rows=outputs[1],
                        aggregate_rows=outputs[0].num_rows,
                        output_matches=bool(matches),
                        walls=[round(w, 3) for w in walls],
                    )
                results["runs"].append(run)
                out_json.write_text(json.dumps(results, indent=2) + "\n")
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    out_json.with_suffix(".md").write_text(markdown(results))
    chart(results, out_json.with_suffix(".png"))
    print(markdown(results))
    return 0 if all(r.get("output_matches") for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
