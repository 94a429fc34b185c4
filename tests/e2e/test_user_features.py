"""The packaged `user_features` spec end to end through the CLI: features as of every event equal
to the plain-Python reference on clean data, every record accounted for on dirty data, and a
point-in-time training set made from the feature table with `python -m beam_pipelines.features`."""

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.helpers import run_module
from tests.e2e.test_example_pipelines import generate, lines, rows, run, when
from tests.feature_reference import condition, reference
from transforms.feature_defs import FeatureSet

PURCHASE = "action == 'purchase'"


def feature_set(out: Path) -> FeatureSet:
    import json

    meta = pq.read_schema(next((out / "curated").rglob("*.parquet"))).metadata
    return FeatureSet.from_dict(json.loads(meta[b"beam_pipelines.features"]))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    """One run of the spec on 2,000 clean events (the two tests below read its output)."""
    root = tmp_path_factory.mktemp("user_features")
    data = generate("sessions", root / "in", "jsonl", 2000, 0.0)
    rep = run("user_features", data, "jsonl", root / "out")
    assert rep["conservation_ok"] and rep["counts"]["curated"] == 2000
    return root


def test_features_of_every_event_equal_the_reference(clean_run):
    events = [{**r, "ts": when(r["ts"]), "amount": r.get("amount")} for r in lines(clean_run / "in")]
    fs = feature_set(clean_run / "out")
    expected = {r["event_id"]: r for r in reference(events, fs, {PURCHASE: condition("action", "purchase")})}
    got = {r["event_id"]: {k: v for k, v in r.items() if k != "dt"} for r in rows(clean_run / "out" / "curated")}
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        assert got[key] == want, key
    converted = [r for r in got.values() if r["session_converted"]]
    assert converted and any(r["session_events"] > 3 for r in got.values())


def test_dirty_input_every_record_is_a_feature_row_a_duplicate_or_a_dead_letter(tmp_path):
    data = generate("sessions", tmp_path / "in", "jsonl", 2000, 0.1)
    rep = run("user_features", data, "jsonl", tmp_path / "out")
    c = rep["counts"]
    assert rep["conservation_ok"] and c["read"] == 2000
    assert c["read"] == c["curated"] + c["dead_lettered"] + c["duplicates"] and c["dead_lettered"] > 0
    assert len(rows(tmp_path / "out" / "curated")) == c["curated"]


def test_a_training_set_from_the_feature_table_takes_features_as_of_each_label(clean_run, tmp_path):
    table = {r["event_id"]: r for r in rows(clean_run / "out" / "curated")}
    sample = sorted(table.values(), key=lambda r: r["event_id"])[::40]
    # A label at an event's time sees that event's features; one a microsecond before a user's first
    # event sees none.
    first = min((r for r in table.values() if r["user_id"] == sample[0]["user_id"]), key=lambda r: r["ts"])
    labels = [(r["user_id"], r["ts"], True) for r in sample] + [(first["user_id"], first["ts"] - timedelta(
        microseconds=1), False)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist([dict(zip(("user_id", "ts", "label"), x)) for x in labels]),
                   tmp_path / "labels.parquet")  # fmt: skip
    proc = run_module("beam_pipelines.features", "training-set", f"--labels={tmp_path / 'labels.parquet'}",
                      f"--features={clean_run / 'out' / 'curated'}", f"--output={tmp_path / 'train.parquet'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{len(labels):,} labels, {len(sample):,} with features" in proc.stdout
    got = pq.read_table(tmp_path / "train.parquet").to_pylist()
    for label, r in zip(sample, got):
        same_instant = [x for x in table.values() if x["user_id"] == label["user_id"] and x["ts"] == label["ts"]]
        assert r["events_7d"] == same_instant[0]["events_7d"] and r["feature_time"] == label["ts"]
        assert r["last_action"] == same_instant[0]["last_action"]
    assert got[-1]["events_7d"] is None and got[-1]["feature_time"] is None
