"""The `sessions` spec streaming from a real Kinesis server (scripts/kinesis.sh: moto) on Prism,
over two shards, its session windows upserted into a real PostgreSQL: equal to a batch run over
the same records, with garbage and empty records counted as dead letters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from tests.e2e.helpers import ROOT, cli, one_line_error, report
from tests.integration.stream_specs import batch_results, sessions_lines, spec_with_source, table_rows
from transforms.ingest.kinesis import kinesis_client

TABLE = "user_sessions_kinesis"


@pytest.fixture
def aws(monkeypatch):
    # moto takes any credentials; the CLI's subprocess inherits these.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """The generated records, and the batch run's sessions and report over them."""
    root = tmp_path_factory.mktemp("sessions")
    lines = sessions_lines(root / "in")
    expected, batch = batch_results(f"{root}/in/*.jsonl", root / "batch")
    return lines, expected, batch


def _key(line: bytes) -> str:
    """A user's events on one shard, in file order."""
    try:
        return str(json.loads(line).get("user_id")) or "none"
    except (ValueError, AttributeError):
        return "none"


def _records(lines: list[bytes]) -> list[dict]:
    records = [{"Data": line, "PartitionKey": _key(line)} for line in lines]
    return records + [{"Data": b"{not json", "PartitionKey": "x"}, {"Data": b"", "PartitionKey": "y"}]


def _put(client, stream: str, records: list[dict]) -> None:
    for i in range(0, len(records), 500):
        assert client.put_records(StreamName=stream, Records=records[i : i + 500])["FailedRecordCount"] == 0


def _new_stream(endpoint: str):
    client = kinesis_client(endpoint, "us-east-1", 10)
    stream = f"sessions-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=stream, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    return client, stream


def _stream_args(spec, pg_dsn: str, table: str, out) -> list[str]:
    # A day of allowed lateness: these tests are about the source, not about late data.
    return [f"--pipeline={spec}", "--streaming", "--runner=PrismRunner", f"--pg_dsn={pg_dsn}", f"--pg_table={table}",
            f"--output={out}", "--allowed_lateness=86400"]  # fmt: skip


def _check(out, batch: dict, lines: list[bytes], pg_dsn: str, table: str, expected: list) -> None:
    rep = report(out)
    assert rep["conservation_ok"] and rep["counts"]["late"] == 0
    assert rep["counts"]["read"] == len(lines) + 2
    assert rep["counts"]["curated"] == batch["counts"]["curated"]
    assert rep["counts"]["dead_lettered"] == batch["counts"]["dead_lettered"] + 2
    assert table_rows(pg_dsn, table) == expected


@pytest.mark.timeout(600)
def test_sessions_spec_streams_from_kinesis_like_a_batch_run(
    prism_binary, kinesis_endpoint, pg_dsn, sessions, tmp_path, aws
):
    lines, expected, batch = sessions
    client, stream = _new_stream(kinesis_endpoint)
    _put(client, stream, _records(lines))
    config = {"stream": stream, "endpoint_url": kinesis_endpoint, "region": "us-east-1", "stop_at_end": True}
    spec = spec_with_source(tmp_path / "sessions_kinesis.yaml", "ReadKinesis", config)
    out = tmp_path / "stream"
    proc = cli(*_stream_args(spec, pg_dsn, TABLE, out))
    assert proc.returncode == 0, proc.stderr
    assert f"records from Kinesis stream {stream}" in proc.stdout
    _check(out, batch, lines, pg_dsn, TABLE, expected)


@pytest.mark.timeout(600)
def test_kill_9_mid_stream_then_restart_replays_the_shards(
    prism_binary, kinesis_endpoint, pg_dsn, sessions, tmp_path, aws
):
    lines, expected, batch = sessions
    client, stream = _new_stream(kinesis_endpoint)
    records = _records(lines)
    cut = len(records) * 3 // 5  # the rest after the kill: the killed job cannot have seen everything
    _put(client, stream, records[:cut])
    config = {"stream": stream, "endpoint_url": kinesis_endpoint, "region": "us-east-1"}
    live = spec_with_source(tmp_path / "live.yaml", "ReadKinesis", config)
    table, out = "sessions_kinesis_crash", tmp_path / "stream"
    # Unbounded: the job would run forever; it is killed once sessions have reached PostgreSQL.
    job = subprocess.Popen([sys.executable, "-m", "beam_pipelines.main", *_stream_args(live, pg_dsn, table, out)],
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline, seen = time.monotonic() + 300, 0
        while time.monotonic() < deadline and job.poll() is None and not seen:
            try:
                seen = len(table_rows(pg_dsn, table))
            except psycopg.errors.UndefinedTable:
                seen = 0
            time.sleep(0.5)
        assert job.poll() is None, job.stderr.read().decode()
        assert seen > 0, "no session reached PostgreSQL before the kill"
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # prism and the SDK worker die with it
        job.wait(30)
    assert job.returncode == -signal.SIGKILL
    partial = table_rows(pg_dsn, table)
    assert partial and partial != expected
    _put(client, stream, records[cut:])
    bounded = spec_with_source(tmp_path / "bounded.yaml", "ReadKinesis", {**config, "stop_at_end": True})
    proc = cli(*_stream_args(bounded, pg_dsn, table, out))
    assert proc.returncode == 0, proc.stderr
    # The replay rebuilt the outputs: each record counted once, the sessions of one whole run.
    _check(out, batch, lines, pg_dsn, table, expected)


def test_a_missing_stream_or_unreachable_endpoint_is_one_error_line(prism_binary, kinesis_endpoint, tmp_path, aws):
    flags = ["--streaming", "--runner=PrismRunner", "--pg_dsn=postgresql://bp@127.0.0.1:9/bp", f"--output={tmp_path}/o"]
    missing = spec_with_source(tmp_path / "missing.yaml", "ReadKinesis",
                               {"stream": "nope", "endpoint_url": kinesis_endpoint, "region": "us-east-1"})  # fmt: skip
    error = one_line_error(cli(f"--pipeline={missing}", *flags), 1)
    assert f"Kinesis stream 'nope' does not exist at {kinesis_endpoint}" in error
    closed = spec_with_source(tmp_path / "closed.yaml", "ReadKinesis",
                              {"stream": "s", "endpoint_url": "http://127.0.0.1:9", "region": "us-east-1"})  # fmt: skip
    assert "cannot reach Kinesis at http://127.0.0.1:9" in one_line_error(cli(f"--pipeline={closed}", *flags), 1)
