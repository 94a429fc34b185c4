"""A stream's silver layer: WriteLakehouse in streaming mode MERGEs each batch of curated records
into the Delta table as it comes (beam_pipelines/lakehouse/stream_merge.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_pipelines.lakehouse import tables
from beam_pipelines.lakehouse.stream_merge import MergeSilver
from beam_pipelines.spec import EventsConfig, SpecError
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.yamlsrc import load

SESSIONS = Path(__file__).resolve().parents[2] / "beam_pipelines" / "pipelines" / "sessions.yaml"
T0 = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)


def _batch(rows: list[tuple[str, int, str]]) -> pa.Table:
    ids, minutes, pages = zip(*rows)
    return pa.table({
        "event_id": list(ids),
        "ts": pa.array([T0 + timedelta(minutes=m) for m in minutes], pa.timestamp("us", tz="UTC")),
        "page": list(pages),
    })  # fmt: skip


def _silver(uri: str) -> dict:
    return {r["event_id"]: (r["page"], r["dt"].isoformat()) for r in tables.read(tables.open_table(uri)).to_pylist()}


def test_each_batch_is_merged_and_the_newest_version_of_a_key_wins_whatever_the_order(tmp_path):
    uri = str(tmp_path / "silver")
    batches = [
        _batch([("a", 0, "home"), ("b", 1, "cart"), ("a", 2, "pay")]),  # a twice in one batch: the newer wins
        _batch([("c", 3, "home"), ("b", 0, "old")]),  # b older than stored: not replaced
        _batch([("b", 5, "done"), ("d", 60 * 13, "late-night")]),  # next day for d
    ]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        (
            p
            | beam.Create([*batches, batches[0]], reshuffle=False)  # the first again: a replay changes nothing
            | MergeSilver(uri, "event_id", ("ts", "last"), "ts", ("event_id", "ts", "page"))
        )
    assert _silver(uri) == {"a": ("pay", "2026-05-01"), "b": ("done", "2026-05-01"), "c": ("home", "2026-05-01"),
                            "d": ("late-night", "2026-05-02")}  # fmt: skip
    assert tables.open_table(uri).metadata().partition_columns == ["dt"]


def _streaming_spec(tmp_path: Path, step: str) -> Path:
    text = SESSIONS.read_text()
    anchor = "    - name: WriteCurated\n"
    assert text.count(anchor) == 1
    path = tmp_path / "sessions.yaml"
    path.write_text(text.replace(anchor, step + anchor))
    return path


def _compile(path: Path):
    cfg = EventsConfig(input="-", input_format="jsonl", output=str(path.parent / "out"), streaming=True,
                       kafka_bootstrap="127.0.0.1:9", kafka_topic="t", pg_dsn="postgresql://bp@127.0.0.1:9/bp")  # fmt: skip
    return compile_spec(load(str(path)), cfg, str(path))


def test_a_streaming_spec_writes_silver_by_merge_and_refuses_the_batch_layers(tmp_path):
    silver = ("    - {name: Silver, type: WriteLakehouse, mode: streaming, input: Curated, "
              "config: {layer: silver, path: lakehouse/silver}}\n")  # fmt: skip
    plan = _compile(_streaming_spec(tmp_path, silver))
    (node,) = [n for n in plan.sinks if n.step.name == "Silver"]
    sink = node.step.make(str(tmp_path / "out"))
    assert isinstance(sink, MergeSilver)
    bronze = ("    - {name: Bronze, type: WriteLakehouse, mode: streaming, input: Read, "
              "config: {layer: bronze, path: lakehouse/bronze}}\n")  # fmt: skip
    with pytest.raises(SpecError, match="a stream writes layer silver only"):
        _compile(_streaming_spec(tmp_path, bronze))
