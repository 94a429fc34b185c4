"""An hour of a stream's micro-batches MERGEd into silver, then compacted.

    python -m benchmarks.stream_silver [--rate 200] [--batch-seconds 5] [--minutes 60] [--json OUT.json]

What a streaming spec's silver sink does per bundle (``lakehouse.stream_merge.merge_batch``: one
MERGE on the record key, newest version wins), driven directly for ``--minutes`` of stream time
at ``--rate`` events a second in batches of ``--batch-seconds``: 90% new keys, 10% new versions
of keys from the last ten minutes, and 2% of each batch late by a day (the partition before). It
reports each MERGE's time (p50, p99, the last ten minutes' p50: the table grows), the files per
partition the hour left, then runs ``lakehouse maintain``'s compaction on the table and reports
the files per partition after it (target: at most 2) and the rows, unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from beam_pipelines.lakehouse import maintain, tables
from beam_pipelines.lakehouse.stream_merge import merge_batch

START = datetime(2026, 5, 2, 9, tzinfo=timezone.utc)


def _batch(rng: random.Random, n: int, first_id: int, at: datetime, recent: range) -> pa.Table:
    ids, ts, pages = [], [], []
    for i in range(n):
        r = rng.random()
        if r < 0.1 and len(recent):
            ids.append(f"e{rng.choice(recent)}")
        else:
            ids.append(f"e{first_id + i}")
        late = timedelta(days=1) if r > 0.98 else timedelta(0)
        ts.append(at - late + timedelta(milliseconds=rng.randrange(1000)))
        pages.append(rng.choice(("home", "search", "item", "cart", "pay")))
    return pa.table({"event_id": ids, "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "page": pages,
                     "amount": pa.array([rng.random() * 100 for _ in range(n)], pa.float64())})  # fmt: skip


def _files_per_partition(uri: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in maintain._files(tables.open_table(uri)):
        out[f["partition"]] = out.get(f["partition"], 0) + 1
    return dict(sorted(out.items()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stream_silver", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=200, help="events a second (default 200)")
    ap.add_argument("--batch-seconds", type=int, default=5, help="seconds of stream per MERGE (default 5)")
    ap.add_argument("--minutes", type=int, default=60, help="minutes of stream (default 60)")
    ap.add_argument("--json", help="write the results here (and a Markdown table beside it)")
    a = ap.parse_args(argv)
    rng = random.Random(11)
    per_batch = a.rate * a.batch_seconds
    batches = a.minutes * 60 // a.batch_seconds
    with tempfile.TemporaryDirectory() as tmp:
        uri = os.path.join(tmp, "silver")
        times, next_id = [], 0
        for b in range(batches):
            at = START + timedelta(seconds=b * a.batch_seconds)
            recent = range(max(0, next_id - a.rate * 600), next_id)
            data = _batch(rng, per_batch, next_id, at, recent)
            next_id += per_batch
            t = time.perf_counter()
            merge_batch(uri, data, "event_id", ("ts", "last"), "ts", label="bench")
            times.append(time.perf_counter() - t)
        before = _files_per_partition(uri)
        rows = tables.open_table(uri).count()
        entry = {"step": "Silver", "layer": "silver", "table": uri, "retention_days": None,
                 "keep_versions_hours": 0, "target_bytes": 128 * 1024 * 1024}  # fmt: skip
        t = time.perf_counter()
        done = maintain.maintain_table(entry, date(2026, 5, 3), False, "bench-maintain")
        compact_s = time.perf_counter() - t
        after = _files_per_partition(uri)
        rows_after = tables.open_table(uri).count()
    ms = np.array(times) * 1000
    tail = ms[-max(1, len(ms) // 6) :]
    result = {
        "rate": a.rate, "batch_seconds": a.batch_seconds, "minutes": a.minutes, "merges": batches,
        "rows": rows, "rows_after": rows_after, "merge_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "merge_ms_p99": round(float(np.percentile(ms, 99)), 1), "merge_ms_p50_last_10min": round(float(np.median(tail)), 1),
        "merge_total_s": round(float(ms.sum()) / 1000, 1), "files_before": before, "files_after": after,
        "compaction_s": round(compact_s, 2), "compacted": done.get("compacted"),
        "load_average": os.getloadavg(),
    }  # fmt: skip
    table = (
        "| stream | MERGEs | MERGE p50 / p99 (ms) | p50, last 10 min (ms) | files per partition | after compaction "
        "| compaction (s) | rows |\n|---|---:|---:|---:|---|---|---:|---:|\n"
        f"| {a.minutes} min at {a.rate:,}/s, {a.batch_seconds} s batches | {batches:,} | {result['merge_ms_p50']} / "
        f"{result['merge_ms_p99']} | {result['merge_ms_p50_last_10min']} | "
        f"{', '.join(f'{p}: {n}' for p, n in before.items())} | {', '.join(f'{p}: {n}' for p, n in after.items())} | "
        f"{result['compaction_s']} | {rows:,} -> {rows_after:,} |\n"
    )
    print(table, end="")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        with open(os.path.splitext(a.json)[0] + ".md", "w") as fh:
            fh.write(f"# An hour of micro-batches into silver, then compaction\n\n`python -m benchmarks.stream_silver "
                     f"--rate {a.rate} --batch-seconds {a.batch_seconds} --minutes {a.minutes} --json {a.json}`; "
                     f"load average after: {load}\n\n{table}")  # fmt: skip


if __name__ == "__main__":
    main()
