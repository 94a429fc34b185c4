"""ReadKinesis against a real Kinesis server (scripts/kinesis.sh: moto's server) on the
in-process FnApiRunner: every record of every shard arrives once, in sequence order per shard;
garbage and empty records reach the dead letters through Parse; records behind their shard's
watermark go to the late output; a read resumes after given sequence numbers."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from transforms.ingest.kinesis import KinesisSourceError, ReadKinesis, check_stream, kinesis_client, list_shards
from transforms.ingest.parse import ParseRecords

BASE = datetime(2024, 3, 1, 10, tzinfo=timezone.utc)
_OUT: dict[str, list] = {}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    # moto takes any credentials; boto3 needs some, and a region.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _event(i: int, minutes: float) -> bytes:
    ts = (BASE + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    return json.dumps({"event_id": f"e{i}", "ts": ts, "n": i}).encode()


@pytest.fixture
def stream(kinesis_endpoint):
    client = kinesis_client(kinesis_endpoint, "us-east-1", 10)
    made = []

    def make(shards: int) -> str:
        name = f"s-{uuid.uuid4().hex[:12]}"
        client.create_stream(StreamName=name, ShardCount=shards)
        client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
        made.append(name)
        return name

    yield make, client
    for name in made:
        client.delete_stream(StreamName=name)
    client.close()


class _Collect(beam.DoFn):
    """Appends each table's rows to ``_OUT[run]`` (top-level: pickled by reference)."""

    def __init__(self, run: str, kind: str):
        self._run, self._kind = run, kind

    def process(self, table):
        _OUT[self._run].extend((self._kind, r) for r in table.to_pylist())


def _run(name: str, endpoint: str, **options) -> tuple[list, list, list, list]:
    """(sources, parsed rows, dead letters, late letters) of a bounded read of stream ``name``."""
    run = uuid.uuid4().hex
    _OUT[run] = []
    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = p | "Read" >> ReadKinesis(name, window_seconds=3600, allowed_lateness_seconds=600, endpoint_url=endpoint,
                                        region="us-east-1", stop_at_end=True, **options)  # fmt: skip
        parsed = out["records"] | "Parse" >> ParseRecords("jsonl", ("event_id", "ts", "n"))
        (
            out["records"]
            | "Sources" >> beam.Map(lambda t: t.select(["source"]))
            | "S" >> beam.ParDo(_Collect(run, "source"))
        )
        parsed["parsed"] | "Rows" >> beam.Map(lambda t: t.select([0])) | "R" >> beam.ParDo(_Collect(run, "ok"))
        parsed["dead_letters"] | "Dead" >> beam.ParDo(_Collect(run, "dead"))
        out["late"] | "Late" >> beam.ParDo(_Collect(run, "late"))
    got = _OUT.pop(run)
    return tuple([r for k, r in got if k == kind] for kind in ("source", "ok", "dead", "late"))


def test_every_record_of_every_shard_once_in_order(stream, kinesis_endpoint):
    make, client = stream
    name = make(3)
    records = [{"Data": _event(i, i * 0.1), "PartitionKey": f"k{i % 11}"} for i in range(400)]
    records += [{"Data": b"{not json", "PartitionKey": "bad"}, {"Data": b"", "PartitionKey": "empty"}]
    for i in range(0, len(records), 100):
        assert client.put_records(StreamName=name, Records=records[i : i + 100])["FailedRecordCount"] == 0
    # Small tables: several per shard, across checkpoints.
    sources, ok, dead, late = _run(name, kinesis_endpoint, max_batch_records=37)
    sources = [r["source"] for r in sources]
    assert len(sources) == len(set(sources)) == 402
    shards = list_shards(client, name, kinesis_endpoint)
    by_shard: dict[str, list[int]] = {}
    for s in sources:
        by_shard.setdefault(s.split("/")[1], []).append(int(s.rsplit("/", 1)[1]))
    assert set(by_shard) <= set(shards) and len(by_shard) > 1
    assert all(seqs == sorted(seqs) for seqs in by_shard.values())  # read in sequence order per shard
    assert len(ok) == 400
    assert sorted(d["reason"] for d in dead) == ["malformed", "malformed"]
    assert late == []


def test_records_behind_the_shard_watermark_are_late_and_a_read_resumes(stream, kinesis_endpoint):
    make, client = stream
    name = make(1)
    # In order through 10:59, then one record 90 minutes behind (its window [08:30 -> 08:00, 09:00)
    # closed at 09:10 with the allowed lateness), one a few minutes behind (on time), one unreadable ts.
    data = [_event(i, i) for i in range(60)]
    data += [_event(100, -90), _event(101, 50), b'{"event_id": "x", "ts": "soon"}']
    seqs = [client.put_record(StreamName=name, Data=d, PartitionKey="k")["SequenceNumber"] for d in data]
    sources, ok, _, late = _run(name, kinesis_endpoint, max_batch_records=7)
    assert [json.loads(r["raw"])["event_id"] for r in late] == ["e100"]
    (letter,) = late
    assert letter["reason"] == "late" and letter["field"] == "ts"
    assert "by shard watermark 2024-03-01T10:59:00Z" in letter["error"]
    assert letter["source"].endswith("/" + seqs[60])
    assert len(ok) == len(sources) == 62
    # Resumed after the 30th record: the rest in order; by e100 the watermark is 10:59 again.
    (shard,) = list_shards(client, name, kinesis_endpoint)
    sources, ok, _, late = _run(name, kinesis_endpoint, start_sequence_numbers={shard: seqs[29]})
    assert [r["source"].rsplit("/", 1)[1] for r in sources] == seqs[30:60] + seqs[61:]
    assert [r["source"].rsplit("/", 1)[1] for r in late] == [seqs[60]]


def test_missing_stream_and_unreachable_endpoint_are_one_clear_error(kinesis_endpoint):
    client = kinesis_client(kinesis_endpoint, "us-east-1", 5)
    with pytest.raises(KinesisSourceError, match="does not exist"):
        list_shards(client, "no-such-stream", kinesis_endpoint)
    with pytest.raises(Exception, match="Kinesis stream 'no-such-stream' does not exist"):
        _run("no-such-stream", kinesis_endpoint)
    closed = kinesis_client("http://127.0.0.1:9", "us-east-1", 2)
    with pytest.raises(KinesisSourceError, match="cannot reach Kinesis at http://127.0.0.1:9"):
        list_shards(closed, "s", "http://127.0.0.1:9")


def test_no_region_is_one_clear_error(kinesis_endpoint, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(KinesisSourceError, match="Kinesis stream 's': You must specify a region"):
        check_stream(kinesis_endpoint, None, "s", 5)


def test_config_is_checked_when_built():
    with pytest.raises(ValueError, match="stream must be"):
        ReadKinesis("a stream", window_seconds=60, allowed_lateness_seconds=0)
    with pytest.raises(ValueError, match="endpoint_url"):
        ReadKinesis("s", window_seconds=60, allowed_lateness_seconds=0, endpoint_url="localhost:4567")
    with pytest.raises(ValueError, match="region"):
        ReadKinesis("s", window_seconds=60, allowed_lateness_seconds=0, region="Mars")
    with pytest.raises(ValueError, match="start_sequence_numbers"):
        ReadKinesis("s", window_seconds=60, allowed_lateness_seconds=0, start_sequence_numbers={"shardId-0": 5})
