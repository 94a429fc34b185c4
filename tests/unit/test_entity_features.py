"""EntityFeatures in a TestPipeline: events spread over batches in any order, shuffled by entity
(through Beam or through spill files), come out as the reference's features, one row per event,
and the events without features as dead letters: none lost."""

import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.feature_reference import reference
from tests.unit.test_feature_kernels import CONDITIONS, FEATURES, SCHEMA, events
from transforms.entity_features import EntityFeatures
from transforms.feature_defs import FeatureSet, Trailing
from transforms.feature_kernels import METADATA_KEY


def batches(rows: list[dict], size: int) -> list[pa.Table]:
    return [pa.Table.from_pylist(rows[i : i + size], SCHEMA) for i in range(0, len(rows), size)]


class _Check:
    """Every feature row, gathered: one per good event, equal to the reference's."""

    def __init__(self, expected: list[dict]):
        self._expected = {r["id"]: r for r in expected}

    def __call__(self, tables: list[pa.Table]):
        got = {}
        users_seen: dict = {}
        for i, t in enumerate(tables):
            assert json.loads(t.schema.metadata[METADATA_KEY]) == FEATURES.to_dict()
            rows = t.to_pylist()
            keys = [(r["user"], r["ts"], r["id"]) for r in rows]
            assert keys == sorted(keys), "each table is sorted by entity, time and kept columns"
            for r in rows:
                assert users_seen.setdefault(r["user"], i) == i, "an entity's rows are in one table"
                assert r["id"] not in got
                got[r["id"]] = r
        assert got == self._expected


@pytest.mark.parametrize("spill", [False, True])
def test_features_of_events_in_any_batches_equal_the_reference(pipeline, tmp_path, spill):
    rows = events(11, n=400, users=tuple("abcdefg"))
    rows[5]["user"] = None
    rows[17]["ts"] = None
    rows[30]["amount"] = float("inf")
    good = [r for i, r in enumerate(rows) if i not in (5, 17, 30)]
    with pipeline() as p:
        out = (
            p
            | beam.Create(batches(rows, 37))
            | EntityFeatures(FEATURES, partitions=3, spill_dir=str(tmp_path / "s") if spill else None, stage="UF")
        )
        assert_that(out["features"], _Check(reference(good, FEATURES, CONDITIONS)))
        dead = out["dead_letters"] | beam.FlatMap(
            lambda t: [(r["stage"], r["reason"], r["field"], json.loads(r["raw"])["id"]) for r in t.to_pylist()]
        )
        assert_that(
            dead,
            equal_to(
                [
                    ("UF", "missing_entity", "user", rows[5]["id"]),
                    ("UF", "missing_time", "ts", rows[17]["id"]),
                    ("UF", "invalid_value", "amount", rows[30]["id"]),
                ]  # fmt: skip
            ),
            label="dead",
        )
    if spill:
        assert list((tmp_path / "s").rglob("*.arrow"))


def test_dead_letters_keep_the_records_own_text_when_it_rides_along(pipeline):
    fs = FeatureSet("user", "ts", (Trailing("n", "count", 60),))
    table = pa.table({"user": [None, "a"], "ts": pa.array([0, 0], pa.timestamp("us", tz="UTC")),
                      "_raw": ['{"user": null}', '{"user": "a"}'], "_source": ["f.jsonl", "f.jsonl"]})  # fmt: skip
    with pipeline() as p:
        out = p | beam.Create([table]) | EntityFeatures(fs, partitions=2)
        assert_that(
            out["dead_letters"] | beam.FlatMap(lambda t: [(r["raw"], r["source"]) for r in t.to_pylist()]),
            equal_to([('{"user": null}', "f.jsonl")]),
        )
        assert_that(
            out["features"] | beam.FlatMap(lambda t: t.to_pylist()) | beam.Map(lambda r: (r["user"], r["n"])),
            equal_to([("a", 1)]),
            label="features",
        )


def test_config_errors_fail_at_construction():
    with pytest.raises(ValueError, match="FeatureSet"):
        EntityFeatures({"entity": "u"})
    with pytest.raises(ValueError, match="partitions"):
        EntityFeatures(FEATURES, partitions=0)
