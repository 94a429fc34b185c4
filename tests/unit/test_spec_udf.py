"""Derived columns and user functions in a spec: types known before any data, a function that
raises turns its batch into dead letters and the run goes on, imports only from allowed modules."""

import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.spec import EventsConfig, SpecError
from beam_pipelines.spec.build import PipelineIO, build, plan_for

SPEC = str(Path(__file__).with_name("specs") / "udf.yaml")


def cfg(**kw):
    base = {"input": None, "input_format": "jsonl", "output": "unused", "shuffle_partitions": 2, "pipeline": SPEC,
            "python_modules": ("tests.unit.udfs",)}  # fmt: skip
    return EventsConfig(**{**base, **kw})


def line(event_id, user, amount, event_type="purchase"):
    return json.dumps({"event_id": event_id, "user_id": user, "event_type": event_type, "amount": amount,
                       "ts": "2024-01-01T10:00:00Z"}).encode()  # fmt: skip


def batch(lines):
    return pa.table({"raw": pa.array(lines, pa.binary()), "source": ["mem"] * len(lines)})


def test_the_plan_knows_the_derived_columns_types():
    plan = plan_for(cfg())
    cols = plan.node("Tier").columns
    assert cols["big"] == pa.bool_() and cols["amount_x2"] == pa.float64() and cols["kind"] == pa.string()
    assert cols["tier"] == pa.string()
    assert list(plan.curated.columns) == ["event_id", "user_id", "amount", "big", "amount_x2", "kind", "tier"]


def test_a_failing_function_dead_letters_its_batch_and_the_run_goes_on(pipeline):
    good = batch([line("e1", "u1", 80), line("e2", "u2", 5)])
    bad = batch([line("e3", "u-bad", 9), line("e4", "u4", 99), b"{not json"])
    with pipeline() as p:
        out = build(p, cfg(), PipelineIO(source=beam.Create([good, bad])))
        curated = out["curated"] | "c" >> beam.FlatMap(lambda t: t.to_pylist())
        assert_that(
            curated,
            equal_to(
                [
                    {
                        "event_id": "e1",
                        "user_id": "u1",
                        "amount": 80.0,
                        "big": True,
                        "amount_x2": 160.0,
                        "kind": "PURCHASE",
                        "tier": "gold",
                    },
                    {
                        "event_id": "e2",
                        "user_id": "u2",
                        "amount": 5.0,
                        "big": False,
                        "amount_x2": 10.0,
                        "kind": "PURCHASE",
                        "tier": "basic",
                    },
                ]
            ),  # fmt: skip
            label="curated",
        )
        dead = out["dead_letters"] | "d" >> beam.FlatMap(
            lambda t: [(r["stage"], r["reason"], r["error"] if r["reason"] == "udf_error" else None,
                        json.loads(r["raw"])["event_id"] if r["reason"] == "udf_error" else r["raw"])
                       for r in t.to_pylist()]
        )  # fmt: skip
        failed = ("Tier", "udf_error", "ValueError: cannot tier user u-bad")
        assert_that(dead, equal_to([(*failed, "e3"), (*failed, "e4"), ("parse", "malformed", None, "{not json")]),
                    label="dead")  # fmt: skip
        assert_that(
            out["report"] | beam.Map(lambda r: (r["counts"]["read"], r["counts"]["curated"],
                                                r["counts"]["dead_lettered"], r["conservation_ok"])),
            equal_to([(5, 2, 3, True)]),
            label="report",
        )  # fmt: skip


def test_a_function_that_changes_the_row_count_is_refused_per_batch(pipeline, tmp_path):
    spec = tmp_path / "rows.yaml"
    spec.write_text(Path(SPEC).read_text().replace("tests.unit.udfs:tier", "tests.unit.udfs:drops_a_row"))
    with pipeline() as p:
        out = build(p, cfg(pipeline=str(spec)), PipelineIO(source=beam.Create([batch([line("e1", "u1", 1)] * 1)])))
        assert_that(
            out["dead_letters"] | beam.FlatMap(lambda t: t.column("error").to_pylist()),
            equal_to(["UdfResultError: returned 0 rows for 1: rows may not be added or removed"]),
        )


def test_modules_must_be_allowed_and_importable(tmp_path):
    with pytest.raises(SpecError, match=r"config.callable: module 'tests.unit.udfs' is not allowed"):
        plan_for(cfg(python_modules=()))
    assert plan_for(cfg(python_modules=("tests",))).node("Tier")  # a package allows its modules
    spec = tmp_path / "missing.yaml"
    spec.write_text(Path(SPEC).read_text().replace("tests.unit.udfs:tier", "tests.unit.udfs:nope"))
    with pytest.raises(SpecError, match=r"cannot import tests.unit.udfs:nope"):
        plan_for(cfg(pipeline=str(spec)))
    spec.write_text(Path(SPEC).read_text().replace('"amount > 50"', '"amount > "'))
    with pytest.raises(SpecError, match=r"transforms\[3\].config.columns.big: invalid syntax"):
        plan_for(cfg(pipeline=str(spec)))
    spec.write_text(Path(SPEC).read_text().replace('"amount * 2"', '"amunt * 2"'))
    with pytest.raises(SpecError, match=r"columns.amount_x2: no column 'amunt' reaches this step \(did you mean"):
        plan_for(cfg(pipeline=str(spec)))
