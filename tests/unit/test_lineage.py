"""OpenLineage events to a JSON-lines file and over HTTP (to tests/receivers.py)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from beam_pipelines.observability.lineage import PRODUCER, LineageEmitter, dataset_name, lineage_run_id
from tests.receivers import Receiver, closed_port_url
from transforms.records import DEAD_LETTER_SCHEMA

RUN_ID = "20260301T120000Z-1a2b3c4d"
STARTED = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
FINISHED = STARTED + timedelta(seconds=42)
REPORT = {
    "counts": {"read": 1000, "curated": 940, "dead_lettered": 50, "duplicates": 10, "late": 0, "aggregates": 24},
    "dead_letter_reasons": {"malformed": 50},
    "quality": {"invalid_email": 5},
    "conservation_ok": True,
    "expectations": [
        {
            "name": "amount_range",
            "kind": "between",
            "column": "amount",
            "severity": "warn",
            "action": "warn",
            "passed": False,
            "checked": 940,
            "failing": 7,
            "samples": [-1.0],
            "detail": "amount in [0, 1e6]",
        },
        {
            "name": "rows",
            "kind": "row_count",
            "column": None,
            "severity": "error",
            "action": "fail",
            "passed": True,
            "checked": 940,
            "failing": 0,
            "samples": [],
            "detail": "",
        },
    ],
}
PROFILE = {
    "rows": 940,
    "columns": {
        "event_id": {
            "type": "string",
            "count": 940,
            "nulls": 0,
            "null_rate": 0.0,
            "distinct_approx": 940.2,
            "min": "a",
            "max": "z",
            "mean": None,
            "stddev": None,
            "quantiles": [1, 2],
        },
        "amount": {
            "type": "double",
            "count": 940,
            "nulls": 94,
            "null_rate": 0.1,
            "distinct_approx": 512.0,
            "min": 0.5,
            "max": 99.5,
            "mean": 42.0,
            "stddev": 3.0,
            "quantiles": {"0.5": 40.0, "0.99": 98.0},
        },
        "ts": {
            "type": "timestamp[us, tz=UTC]",
            "count": 940,
            "nulls": 0,
            "null_rate": 0.0,
            "distinct_approx": 900.0,
            "min": "2026-03-01T00:00:00+00:00",
            "max": "2026-03-01T23:00:00+00:00",
            "mean": None,
            "stddev": None,
            "quantiles": [[0.5, 1.0], 3.0, {"q": 0.9, "value": 2.0}],
        },
    },
}


def all_facets(event: dict):
    """Every facet object of an event, as (where, name, facet)."""
    yield from (("run", k, v) for k, v in event["run"].get("facets", {}).items())
    yield from (("job", k, v) for k, v in event["job"].get("facets", {}).items())
    for ds in event.get("inputs", []) + event.get("outputs", []):
        for group in ("facets", "inputFacets", "outputFacets"):
            yield from ((ds["name"], k, v) for k, v in ds.get(group, {}).items())


def check_start_and_complete(start: dict, complete: dict, input_dir: str, output_dir: str) -> None:
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert start["eventTime"] == "2026-03-01T12:00:00+00:00"
    assert complete["eventTime"] == "2026-03-01T12:00:42+00:00"
    run_uuid = str(uuid.UUID(start["run"]["runId"]))
    assert complete["run"]["runId"] == run_uuid == lineage_run_id(RUN_ID)
    for event in (start, complete):
        assert event["producer"] == PRODUCER
        assert event["job"]["namespace"] == "beam-pipelines" and event["job"]["name"] == "events"
        assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [("file", input_dir)]
        facets = list(all_facets(event))
        assert facets
        for where, name, facet in facets:
            assert facet["_producer"].startswith("https://"), (where, name)
            assert facet["_schemaURL"].startswith("https://openlineage.io/spec/"), (where, name)
    assert start["outputs"] == []
    outputs = {d["name"]: d for d in complete["outputs"]}
    assert sorted(outputs) == [output_dir + "/aggregates", output_dir + "/curated", output_dir + "/dlq"]
    assert {d["namespace"] for d in complete["outputs"]} == {"file"}
    curated = outputs[output_dir + "/curated"]
    assert [(f["name"], f["type"]) for f in curated["facets"]["schema"]["fields"]] == [
        ("event_id", "string"),
        ("amount", "double"),
        ("ts", "timestamp[us, tz=UTC]"),
    ]
    dq = curated["facets"]["dataQualityMetrics"]
    assert dq["rowCount"] == 940
    assert dq["columnMetrics"]["amount"] == {
        "nullCount": 94,
        "distinctCount": 512,
        "count": 940.0,
        "min": 0.5,
        "max": 99.5,
        "quantiles": {"0.5": 40.0, "0.99": 98.0},
    }
    assert dq["columnMetrics"]["event_id"]["distinctCount"] == 940
    assert "min" not in dq["columnMetrics"]["event_id"]
    assert dq["columnMetrics"]["ts"]["quantiles"] == {"0.5": 1.0, "0.9": 2.0}
    assertions = curated["facets"]["dataQualityAssertions"]["assertions"]
    assert [(a["name"], a["assertion"], a["success"], a.get("column")) for a in assertions] == [
        ("amount_range", "between", False, "amount"),
        ("rows", "row_count", True, None),
    ]
    assert assertions[0]["severity"] == "warn" and assertions[0]["actual"] == "7"
    assert curated["outputFacets"]["outputStatistics"]["rowCount"] == 940
    assert outputs[output_dir + "/aggregates"]["outputFacets"]["outputStatistics"]["rowCount"] == 24
    dlq = outputs[output_dir + "/dlq"]
    assert [f["name"] for f in dlq["facets"]["schema"]["fields"]] == DEAD_LETTER_SCHEMA.names
    assert dlq["outputFacets"]["outputStatistics"]["rowCount"] == 50
    [inp] = complete["inputs"]
    assert inp["inputFacets"]["dataQualityMetrics"]["rowCount"] == 1000
    assert complete["job"]["facets"]["jobType"]["processingType"] == "BATCH"


def emit_run(emitter: LineageEmitter, input_pattern: str, output_dir: str):
    started = emitter.start(RUN_ID, "events", input_pattern, STARTED)
    completed = emitter.complete(RUN_ID, "events", input_pattern, output_dir, REPORT, PROFILE, FINISHED)
    return started, completed


def test_file_target_appends_start_then_complete(tmp_path):
    path = tmp_path / "lineage" / "events.jsonl"
    emitter = LineageEmitter(str(path))
    started, completed = emit_run(emitter, str(tmp_path / "in" / "*.jsonl"), str(tmp_path / "out"))
    emitter.close()
    assert (started.sent, completed.sent, completed.error) == (True, True, None)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    start, complete = (json.loads(line) for line in lines)
    check_start_and_complete(start, complete, str(tmp_path / "in"), str(tmp_path / "out"))
    assert complete == json.loads(json.dumps(completed.event))


def test_fail_event_carries_the_error(tmp_path):
    path = tmp_path / "ol.jsonl"
    emitter = LineageEmitter("file://" + str(path))
    try:
        raise RuntimeError("pipeline failed: boom")
    except RuntimeError as e:
        result = emitter.fail(RUN_ID, "events", "s3://bucket/in/*.parquet", e, FINISHED)
    assert result.sent
    event = json.loads(path.read_text())
    assert event["eventType"] == "FAIL"
    facet = event["run"]["facets"]["errorMessage"]
    assert facet["message"] == "RuntimeError: pipeline failed: boom"
    assert facet["programmingLanguage"] == "PYTHON"
    assert "Traceback" in facet["stackTrace"] and "boom" in facet["stackTrace"]
    assert facet["_schemaURL"].endswith("ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet")
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [("s3://bucket", "in")]


def test_http_target_posts_to_the_lineage_api(tmp_path):
    with Receiver(statuses=[201, 201]) as rx:
        emitter = LineageEmitter(rx.url + "/marquez")
        started, completed = emit_run(emitter, "data/in/*.jsonl", str(tmp_path / "out"))
        emitter.close()
    assert (started.sent, completed.sent) == (True, True)
    assert [(r.method, r.path) for r in rx.requests] == [("POST", "/marquez/api/v1/lineage")] * 2
    assert all(r.headers["content-type"] == "application/json" for r in rx.requests)
    start, complete = (r.json() for r in rx.requests)
    check_start_and_complete(start, complete, os.path.abspath("data/in"), str(tmp_path / "out"))


def test_http_failure_is_returned_not_raised(tmp_path):
    with Receiver(default_status=500) as rx:
        emitter = LineageEmitter(rx.url, retries=1, backoff=0)
        result = emitter.start(RUN_ID, "events", "in/*.csv", STARTED)
    assert not result.sent
    assert "500" in result.error
    assert result.event["eventType"] == "START"
    assert len(rx.requests) == 2  # the first attempt and one retry
    down = LineageEmitter(closed_port_url(), retries=0).start(RUN_ID, "events", "in/*.csv", STARTED)
    assert not down.sent and "ConnectionError" in down.error


def test_run_ids_are_stable_uuids():
    assert lineage_run_id(RUN_ID) == lineage_run_id(RUN_ID)
    assert lineage_run_id(RUN_ID) != lineage_run_id(RUN_ID + "x")
    assert uuid.UUID(lineage_run_id(RUN_ID)).version == 5
    existing = "0b6b2f6e-3f0c-4c9b-9f1e-2a2b3c4d5e6f"
    assert lineage_run_id(existing) == existing


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/in/*.jsonl", ("file", "/data/in")),
        ("/data/in/events.jsonl", ("file", "/data/in/events.jsonl")),
        ("file:///data/out/curated", ("file", "/data/out/curated")),
        ("s3://bucket/raw/2026/*.parquet", ("s3://bucket", "raw/2026")),
        ("s3://bucket/*.parquet", ("s3://bucket", "/")),
        ("gs://bkt/out/curated", ("gs://bkt", "out/curated")),
        ("azfs://acct/cont/in/*.avro", ("wasbs://cont@acct.dfs.core.windows.net", "in")),
        ("hdfs://nn:8020/data/x", ("hdfs://nn:8020", "/data/x")),
    ],
)
def test_dataset_names_follow_the_naming_spec(path, expected):
    assert dataset_name(path) == expected


def test_bad_config_raises(tmp_path):
    with pytest.raises(ValueError, match="file path or an http"):
        LineageEmitter("kafka://broker:9092/lineage")
    with pytest.raises(ValueError, match="required"):
        LineageEmitter("")
    emitter = LineageEmitter(str(tmp_path / "x.jsonl"))
    with pytest.raises(ValueError, match="timezone-aware"):
        emitter.start(RUN_ID, "events", "in/*.csv", datetime(2026, 3, 1, 12, 0))
    assert not (tmp_path / "x.jsonl").exists()
