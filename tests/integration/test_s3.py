"""The events pipeline on s3:// input and output, against a real local S3 server (moto).

scripts/s3.sh starts the server; if it cannot, the tests fail (they are never skipped).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from tests.e2e.helpers import ROOT, cli, datagen, dead_letters, file_bytes, report, run_module

ROWS = 3000
KEY, SECRET, REGION = "testing", "testing", "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _script(action: str, port: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, S3_PORT=str(port), S3_HOST="127.0.0.1", PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "s3.sh"), action], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on a free port for this module; its URL."""
    port = _free_port()
    proc = _script("start", port)
    if proc.returncode != 0:
        _script("stop", port)
        pytest.fail(f"cannot start the S3 server (scripts/s3.sh start): {proc.stderr.strip() or proc.stdout}")
    yield f"http://127.0.0.1:{port}"
    stopped = _script("stop", port)
    assert stopped.returncode == 0, stopped.stderr
    # One log per free port would pile up under .cache/s3; the CLI's errors are in the assertions.
    (ROOT / ".cache" / "s3" / f"moto-{port}.log").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def s3(endpoint):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name=REGION
    )


def _s3_flags(endpoint: str) -> list[str]:
    return [
        f"--s3_endpoint_url={endpoint}",
        f"--s3_access_key_id={KEY}",
        f"--s3_secret_access_key={SECRET}",
        f"--s3_region_name={REGION}",
    ]


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _get(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module", params=("jsonl", "parquet"))
def dataset(request, tmp_path_factory, s3, endpoint):
    """One dirty data set in a fresh bucket, and the same files' outputs from a local run."""
    fmt = request.param
    base = tmp_path_factory.mktemp(f"s3-{fmt}")
    data = datagen(base / "in", fmt, rows=ROWS, dirty=0.2, files=2)
    bucket = f"events-{fmt}"
    s3.create_bucket(Bucket=bucket)
    for path in sorted(data.iterdir()):
        s3.upload_file(str(path), bucket, f"in/{path.name}")
    local = base / "local"
    proc = cli("--pipeline=events", f"--input={data}/*.{fmt}", f"--output={local}")
    assert proc.returncode == 0, proc.stderr
    return fmt, bucket, local


def _run_s3(dataset, endpoint, *extra: str) -> subprocess.CompletedProcess:
    fmt, bucket, _ = dataset
    return cli(
        "--pipeline=events",
        f"--input=s3://{bucket}/in/*.{fmt}",
        f"--output=s3://{bucket}/out",
        *_s3_flags(endpoint),
        *extra,
    )


def test_s3_run_matches_local_run(dataset, s3, endpoint):
    fmt, bucket, local = dataset

    if fmt == "jsonl":
        # A first run with two curated files per dt= partition, plus an object no run wrote, for
        # the run below to replace. Publishing does not depend on the input format, so this is
        # done once: each S3 run takes ~9 s (Beam makes a boto3 client per file operation).
        first = _run_s3(dataset, endpoint, "--curated_buckets=2")
        assert first.returncode == 0, first.stderr
        assert any(k.endswith("/part-00001.parquet") for k in _keys(s3, bucket, "out/curated/"))
        s3.put_object(Bucket=bucket, Key="out/curated/dt=1999-01-01/part-00000.parquet", Body=b"stale")

    # What a run killed before publishing leaves: the next run removes it.
    s3.put_object(Bucket=bucket, Key="out/_staging/20200101T000000Z-0000dead/shuffle/spill", Body=b"x" * 1000)
    # Configured like the local run (and for jsonl, replacing every output of the first run).
    second = _run_s3(dataset, endpoint)
    assert second.returncode == 0, second.stderr
    assert f"s3://{bucket}/out/curated" in second.stdout

    rep = json.loads(_get(s3, bucket, "out/_run/report.json"))
    assert rep["conservation_ok"] is True
    assert rep["counts"]["read"] == ROWS and rep["counts"]["curated"] > 0
    assert rep == report(local)  # counts, dead-letter reasons and quality counts

    # Exactly the files a local run writes: no part-00001, stale object, staging, lease or probe left.
    # (A local run also keeps a metrics history and a lineage log beside its outputs by default.)
    keys = _keys(s3, bucket, "out/")
    published = [p for p in file_bytes(local) if p.split("/")[0] not in ("_history", "_lineage")]
    assert keys == sorted("out/" + p for p in published)
    assert not any(k.endswith("part-00001.parquet") or "_staging" in k for k in keys)

    curated = [k for k in keys if k.startswith("out/curated/dt=") and k.endswith(".parquet")]
    assert curated
    rows = sum(pq.ParquetFile(io.BytesIO(_get(s3, bucket, k))).metadata.num_rows for k in curated)
    assert rows == rep["counts"]["curated"]

    # Curated records and aggregates carry no input path: the same bytes as the local run.
    for key in keys:
        if key.startswith(("out/curated/", "out/aggregates/")):
            assert _get(s3, bucket, key) == (local / key[len("out/") :]).read_bytes(), key

    # Dead letters are the same records, their source naming the s3:// object.
    dlq = [json.loads(line) for k in keys if k.startswith("out/dlq/") for line in _get(s3, bucket, k).splitlines()]
    assert len(dlq) == rep["counts"]["dead_lettered"]
    assert all(d["source"].startswith(f"s3://{bucket}/in/") for d in dlq)
    assert _by_file(dlq) == _by_file(dead_letters(local))

    summary = json.loads(_get(s3, bucket, "out/_run/summary.json"))
    assert summary["files_match"] is True and summary["published"]["curated_rows"] == rows
    assert summary["scratch"]["abandoned_removed"] == {"20200101T000000Z-0000dead": 1000}


def _by_file(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(dict(d, source=Path(d["source"]).name), sort_keys=True) for d in rows)


def _lease_options(endpoint: str):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(_s3_flags(endpoint))


def test_the_s3_lease_has_one_holder_and_a_stale_one_is_taken_over(s3, endpoint):
    from datetime import datetime, timedelta, timezone

    from beam_pipelines import lease

    s3.create_bucket(Bucket="lease-bucket")
    out, options = "s3://lease-bucket/out", _lease_options(endpoint)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    first = lease.acquire(out, "run-a", clock=lambda: t0, heartbeat_s=3600, ttl_s=60, options=options)
    assert json.loads(_get(s3, "lease-bucket", "out/_lease.json"))["run_id"] == "run-a"
    with pytest.raises(lease.LeaseError, match="in use by run run-a"):
        lease.acquire(out, "run-b", clock=lambda: t0 + timedelta(seconds=30), ttl_s=60, options=options)
    assert lease.holder_of(out, options) is None  # by the wall clock, run-a's 2026 heartbeat is long stale
    # run-a stopped beating: after the TTL its lease is taken over, and run-a may no longer publish.
    second = lease.acquire(out, "run-b", clock=lambda: t0 + timedelta(seconds=61), ttl_s=60, options=options)
    second.check()
    with pytest.raises(lease.LeaseError, match="another run holds it now"):
        first.check()
    first.release()  # leaves run-b's lease alone
    assert json.loads(_get(s3, "lease-bucket", "out/_lease.json"))["run_id"] == "run-b"
    second.release()
    assert _keys(s3, "lease-bucket", "out/") == []


def _append_to_s3_log(endpoint: str, path: str, worker: int, n: int, barrier) -> None:
    from beam_pipelines.audit_log import AuditLog

    log = AuditLog(path, options=_lease_options(endpoint))
    log.read()  # the client made and connected before the race starts
    barrier.wait()
    for i in range(n):
        log.append("run", "published", {"worker": worker, "i": i}, {"user": "u", "os_user": "u", "host": "h"})


def test_the_s3_audit_log_keeps_one_chain_under_concurrent_appends(s3, endpoint):
    # Each append is a conditional put (If-Match on the ETag it read): of two writers, one wins
    # and the other reads again, so no entry is lost and the chain stays whole.
    import multiprocessing

    from beam_pipelines.audit_log import verify

    s3.create_bucket(Bucket="audit-bucket")
    path = "s3://audit-bucket/out/_audit/log.jsonl"
    workers, each = 4, 12
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_append_to_s3_log, args=(endpoint, path, w, each, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    data = _get(s3, "audit-bucket", "out/_audit/log.jsonl")
    found = verify(data)
    assert found.error is None and found.entries == workers * each
    got = sorted((e["what"]["worker"], e["what"]["i"]) for e in map(json.loads, data.splitlines()))
    assert got == [(w, i) for w in range(workers) for i in range(each)]
    proc = run_module("beam_pipelines.audit_log", "verify", "--output=s3://audit-bucket/out", *_s3_flags(endpoint))
    assert proc.returncode == 0 and proc.stdout.startswith(f"audit log OK: {workers * each} entries"), proc.stderr
