"""The HTTP API source against a sequential client, on the same local API, side by side.

    python -m benchmarks.http_source --pages 400 --per-page 100 --latency 0.05 --concurrency 16

The API (tests/http_api.py, in its own process) answers every page after ``--latency``
seconds, as a remote API over a network would. Systems, each reading every page of the page-number endpoint (the
first page tells the number of pages):

- ``sequential``: a plain ``urllib.request`` loop, one page after another;
- ``walk``: this source's client and page walk alone (no Beam), ``--concurrency`` in flight;
- ``read_http``: the ``ReadHttp`` composite in a Beam pipeline on DirectRunner (pipeline
  start-up included), its records counted.

Each checks it got every record exactly once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from transforms.ingest.http import Pagination, ReadHttp, RetryPolicy
from transforms.ingest.http.client import HttpClient
from transforms.ingest.http.pagination import make_pager
from transforms.ingest.http.source import _fetch
from transforms.ingest.http.walk import walk

PAGINATION = Pagination("page", size_param="per_page", total_pages_path="meta.total_pages")


def sequential(url: str, per_page: int, concurrency: int) -> int:
    ids, page = set(), 1
    while True:
        with urllib.request.urlopen(f"{url}/items?per_page={per_page}&page={page}", timeout=30) as resp:
            body = json.loads(resp.read())
        if not body["data"]:
            break
        ids.update(r["id"] for r in body["data"])
        if page >= body["meta"]["total_pages"]:
            break
        page += 1
    return len(ids)


def walk_only(url: str, per_page: int, concurrency: int) -> int:
    pagination = Pagination("page", size_param="per_page", size=per_page, total_pages_path="meta.total_pages")
    client = HttpClient(RetryPolicy(), pool_size=concurrency)
    try:
        pages = walk([make_pager(0, url + "/items", {}, pagination)], _fetch(client, "data", False), concurrency)
        return len({r["id"] for page in pages for r in page.records})
    finally:
        client.close()


class _Rows(beam.DoFn):
    def process(self, table):
        yield table.num_rows


class _Report(beam.DoFn):
    def process(self, n: int):
        beam.metrics.Metrics.counter("bench", "distinct").inc(n)


def read_http(url: str, per_page: int, concurrency: int) -> int:
    pagination = Pagination("page", size_param="per_page", size=per_page, total_pages_path="meta.total_pages")
    p = beam.Pipeline()
    out = p | "Read" >> ReadHttp(url + "/items", pagination, "data", record_key="id", concurrency=concurrency)
    (
        out["records"]
        | "Rows" >> beam.ParDo(_Rows())  # repeats are dropped by the source (record_key)
        | "Sum" >> beam.CombineGlobally(sum)
        | "Report" >> beam.ParDo(_Report())
    )
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("distinct"))["counters"]
    return sum(c.committed for c in counters)


SYSTEMS = {"sequential": sequential, "walk": walk_only, "read_http": read_http}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=400)
    ap.add_argument("--per-page", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds each page waits at the API")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--port", type=int, default=8767, help="where the API listens")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    rows = args.pages * args.per_page
    results = {}
    # The API runs in its own process, as a remote one would: it does not share this one's GIL.
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.http_api", f"--port={args.port}", f"--records={rows}",
         f"--per-page={args.per_page}", f"--latency={args.latency}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        server.stdout.readline()  # "serving ...": it listens
        url = f"http://127.0.0.1:{args.port}"
        for name in args.systems.split(","):
            started = time.perf_counter()
            got = SYSTEMS[name](url, args.per_page, args.concurrency)
            elapsed = time.perf_counter() - started
            if got != rows:
                raise SystemExit(f"{name} read {got} distinct records, not {rows}")
            results[name] = {"seconds": round(elapsed, 3), "records_per_s": round(rows / elapsed)}
    finally:
        server.terminate()
        server.wait()
    base = results.get("sequential", {}).get("seconds")
    print(f"{args.pages} pages x {args.per_page} records, {args.latency * 1000:g} ms a page, "
          f"concurrency {args.concurrency}")  # fmt: skip
    print(f"{'system':<12} {'seconds':>8} {'records/s':>10} {'vs sequential':>14}")
    for name, r in results.items():
        speedup = f"{base / r['seconds']:.1f}x" if base else "-"
        print(f"{name:<12} {r['seconds']:>8.2f} {r['records_per_s']:>10,} {speedup:>14}")
    doc = {"args": vars(args), "results": results}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
    return doc


if __name__ == "__main__":
    main()
