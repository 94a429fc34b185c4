"""The `sessions` spec streaming from a real Kinesis server (scripts/kinesis.sh: moto) on Prism,
over two shards, its session windows upserted into a real PostgreSQL: equal to a batch run over
the same records, with garbage and empty records counted as dead letters."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.e2e.helpers import cli, one_line_error, report
from tests.integration.stream_specs import batch_results, sessions_lines, spec_with_source, table_rows
from transforms.ingest.kinesis import kinesis_client

TABLE = "user_sessions_kinesis"


@pytest.mark.timeout(600)
def test_sessions_spec_streams_from_kinesis_like_a_batch_run(prism_binary, kinesis_endpoint, pg_dsn, tmp_path,
                                                             monkeypatch):  # fmt: skip
    # moto takes any credentials; the CLI's subprocess inherits these.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    lines = sessions_lines(tmp_path / "in")
    expected, batch = batch_results(f"{tmp_path}/in/*.jsonl", tmp_path / "batch")

    client = kinesis_client(kinesis_endpoint, "us-east-1", 10)
    stream = f"sessions-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=stream, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})

    def key(line: bytes) -> str:  # a user's events on one shard, in file order
        try:
            return str(json.loads(line).get("user_id")) or "none"
        except (ValueError, AttributeError):
            return "none"

    records = [{"Data": line, "PartitionKey": key(line)} for line in lines]
    records += [{"Data": b"{not json", "PartitionKey": "x"}, {"Data": b"", "PartitionKey": "y"}]
    for i in range(0, len(records), 500):
        assert client.put_records(StreamName=stream, Records=records[i : i + 500])["FailedRecordCount"] == 0

    config = {"stream": stream, "endpoint_url": kinesis_endpoint, "region": "us-east-1", "stop_at_end": True}
    spec = spec_with_source(tmp_path / "sessions_kinesis.yaml", "ReadKinesis", config)
    out = tmp_path / "stream"
    proc = cli(f"--pipeline={spec}", "--streaming", "--runner=PrismRunner", f"--pg_dsn={pg_dsn}", f"--pg_table={TABLE}",
               f"--output={out}", "--allowed_lateness=86400")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"records from Kinesis stream {stream}" in proc.stdout
    rep = report(out)
    assert rep["conservation_ok"] and rep["counts"]["late"] == 0
    assert rep["counts"]["read"] == len(lines) + 2
    assert rep["counts"]["curated"] == batch["counts"]["curated"]
    assert rep["counts"]["dead_lettered"] == batch["counts"]["dead_lettered"] + 2
    assert table_rows(pg_dsn, TABLE) == expected


def test_a_missing_stream_or_unreachable_endpoint_is_one_error_line(prism_binary, kinesis_endpoint, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    flags = ["--streaming", "--runner=PrismRunner", "--pg_dsn=postgresql://bp@127.0.0.1:9/bp", f"--output={tmp_path}/o"]
    missing = spec_with_source(tmp_path / "missing.yaml", "ReadKinesis",
                               {"stream": "nope", "endpoint_url": kinesis_endpoint, "region": "us-east-1"})  # fmt: skip
    error = one_line_error(cli(f"--pipeline={missing}", *flags), 1)
    assert f"Kinesis stream 'nope' does not exist at {kinesis_endpoint}" in error
    closed = spec_with_source(tmp_path / "closed.yaml", "ReadKinesis",
                              {"stream": "s", "endpoint_url": "http://127.0.0.1:9", "region": "us-east-1"})  # fmt: skip
    assert "cannot reach Kinesis at http://127.0.0.1:9" in one_line_error(cli(f"--pipeline={closed}", *flags), 1)
