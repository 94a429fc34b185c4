"""Schema drift counts of parsed records against a contract, and their merge into the report."""

import json

import pyarrow as pa

from transforms.ingest.drift import drift_counts, drift_report
from transforms.ingest.parse import _parse_json_records
from transforms.quality.counts import _sum_dicts

FIELDS = (("id", "id"), ("n", "long"), ("when", "timestamp"), ("flag", "boolean"))


def parsed(records):
    raw = pa.array([json.dumps(r).encode() for r in records], pa.binary())
    table, dead = _parse_json_records(raw, pa.array(["mem"] * len(records)), tuple(f for f, _ in FIELDS))
    assert dead.num_rows == 0
    return table


def test_unknown_fields_type_changes_and_missing_fields_are_counted():
    table = parsed([
        {"id": "a", "n": 1, "when": "2024-01-01", "flag": True, "promo": "x"},
        {"id": 2, "n": "7", "when": 1700000000, "flag": "yes", "promo": "y", "channel": "web"},
        {"id": "c", "n": 1.5, "flag": None, "channel": "app"},
    ])  # fmt: skip
    counts = drift_counts(table, FIELDS)
    report = drift_report(counts)
    assert report["unknown_fields"] == {
        "promo": {"records": 2, "samples": ['{"promo":"x"}', '{"promo":"y","channel":"web"}']},
        "channel": {"records": 2, "samples": ['{"channel":"app"}', '{"promo":"y","channel":"web"}']},
    }
    assert report["type_changes"] == {"n": {"string": 1, "float": 1}, "flag": {"string": 1}}
    assert report["missing_fields"] == {"when": 1, "flag": 1}


def test_a_clean_batch_has_no_drift_and_merged_samples_do_not_depend_on_order():
    assert drift_report(drift_counts(parsed([{"id": "a", "n": 1, "when": "2024-01-01", "flag": False}]), FIELDS)) == {}
    parts = [drift_counts(parsed([{"id": str(i), "n": 1, "when": "2024-01-01", "flag": True, "x": i}]), FIELDS)
             for i in range(8)]  # fmt: skip
    forward, backward = drift_report(_sum_dicts(parts)), drift_report(_sum_dicts(parts[::-1]))
    assert forward == backward and forward["unknown_fields"]["x"]["records"] == 8
    assert len(forward["unknown_fields"]["x"]["samples"]) == 5
