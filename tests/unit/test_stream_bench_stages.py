"""The streaming benchmark's per-stage breakdown: a job's stage times (``BP_STAGE_TIMES``) lined
up with the harness's produce and arrival times."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.streaming import markdown, stages
from transforms.stage_times import ENV, record


def test_stage_times_are_written_only_when_the_environment_names_a_file(tmp_path, monkeypatch):
    path = tmp_path / "times.jsonl"
    monkeypatch.delenv(ENV, raising=False)
    record("read", partition=0, last_offset=3, rows=4)
    assert not path.exists()
    monkeypatch.setenv(ENV, str(path))
    record("read", partition=0, last_offset=3, rows=4)
    record("upsert", table="t", began=1.0, rows=2)
    got = [json.loads(line) for line in path.read_text().splitlines()]
    assert [g["stage"] for g in got] == ["read", "upsert"]
    assert got[0]["last_offset"] == 3 and got[1]["began"] == 1.0 and got[0]["at"] > 1e9


def test_each_event_is_matched_to_the_first_table_that_read_it(tmp_path):
    # Wall clock = monotonic + 1000. Event i went to partition i % 2 at offset i // 2.
    sent = np.array([0.0, 0.0, 1.0, 1.0, 2.0, 2.0])
    seen = np.array([3.0, 3.0, 3.0, 3.0, 4.0, 4.0])
    lines = [
        {"stage": "read", "at": 1001.5, "partition": 0, "last_offset": 1, "rows": 2},  # events 0 and 2
        {"stage": "read", "at": 1000.2, "partition": 1, "last_offset": 0, "rows": 1},  # event 1
        {"stage": "read", "at": 1002.5, "partition": 1, "last_offset": 2, "rows": 2},  # events 3 and 5
        {"stage": "read", "at": 1002.4, "partition": 0, "last_offset": 2, "rows": 1},  # event 4
        {"stage": "upsert", "at": 1003.0, "began": 1002.9, "table": "lat", "rows": 3},
        {"stage": "upsert", "at": 1003.5, "began": 1003.2, "table": "other", "rows": 3},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = stages(path, "lat", sent, seen, 1000.0)
    # Produce -> read: 1.5, 0.2, 0.5, 1.5, 0.4, 0.5. Read -> counted: 1.5, 2.8, 1.5, 0.5, 1.6, 1.5.
    assert got["to_source_p50_s"] == 0.5 and got["to_source_p99_s"] == 1.5
    assert got["source_to_pg_p50_s"] == 1.5 and got["source_to_pg_p99_s"] == 2.74
    assert got["tables_read"] == 4 and got["firings"] == 1  # the other table's firing is not this job's
    assert got["upsert_p50_ms"] == 100.0
    assert stages(tmp_path / "missing.jsonl", "lat", sent, seen, 1000.0) is None


def test_the_results_table_shows_the_breakdown_where_a_system_recorded_it():
    run = {"rate_per_s": 500, "p50_s": 1.0, "p99_s": 2.0, "events": 10, "counted": 10}
    staged = {"to_source_p50_s": 0.1, "to_source_p99_s": 0.3, "source_to_pg_p50_s": 0.9,
              "source_to_pg_p99_s": 1.7, "upsert_p50_ms": 4.0, "upsert_p99_ms": 9.0}  # fmt: skip
    system = {"startup_s": 5, "catch_up": {"messages_per_s": 1000, "matches": True}, "sustainable_rate": 500}
    result = {"rates": [500], "systems": {"a": {**system, "latency": [{**run, "stages": staged}]},
                                          "b": {**system, "latency": [{**run, "stages": None}]}}}  # fmt: skip
    text = markdown(result)
    assert "| at 500/s: produce -> read by the source, p50 / p99 (s) | 0.1 / 0.3 | not recorded |" in text
    assert "| at 500/s: one firing's upsert, p50 / p99 (ms) | 4.0 / 9.0 | not recorded |" in text
