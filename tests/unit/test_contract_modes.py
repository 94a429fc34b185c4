"""dlt-style schema-contract modes at run time: undeclared fields (evolve, discard_row,
discard_value, freeze) and unusable values (discard_row, discard_value, freeze); nothing
discarded goes uncounted."""

import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.spec import EventsConfig
from beam_pipelines.spec.build import PipelineIO, build
from transforms.ingest.parse import _parse_json_records
from transforms.ingest.validate import ContractViolation, IdField, IntegerField, NumberField, validate_table

RULES = (IdField("id"), IntegerField("n"), NumberField("x", minimum=None, decimals=None, required=True))
RECORDS = [
    {"id": "a", "n": 1, "x": 1.5},
    {"id": "b", "n": "lots", "x": 2, "promo": "p"},  # n unusable; an undeclared field
    {"id": "c", "n": 3, "x": "nan?"},  # x unusable and required
]


def parsed():
    raw = pa.array([json.dumps(r).encode() for r in RECORDS], pa.binary())
    table, _ = _parse_json_records(raw, pa.array(["mem"] * len(RECORDS)), ("id", "n", "x"))
    return table


def test_discard_value_nulls_and_counts_optional_fields_only():
    counts = {}
    valid, dead = validate_table(parsed(), RULES, "additive", "discard_value", counts)
    assert valid.column("id").to_pylist() == ["a", "b"] and valid.column("n").to_pylist() == [1, None]
    assert dead.column("reason").to_pylist() == ["invalid_value"] and dead.column("field").to_pylist() == ["x"]
    assert counts == {"quality.discarded_value.n": 1}


def test_discard_row_is_the_default():
    valid, dead = validate_table(parsed(), RULES, "additive")
    assert valid.column("id").to_pylist() == ["a"] and sorted(dead.column("field").to_pylist()) == ["n", "x"]


def test_undeclared_fields_evolve_discard_or_freeze():
    valid, _ = validate_table(parsed(), RULES, "additive", "discard_value")
    assert valid.column("extras").to_pylist() == [None, '{"promo":"p"}']
    counts = {}
    valid, _ = validate_table(parsed(), RULES, "discard", "discard_value", counts)
    assert valid.column("extras").to_pylist() == [None, None] and counts["quality.discarded_fields"] == 1
    _, dead = validate_table(parsed(), RULES, "strict", "discard_value")
    assert "unknown_field" in dead.column("reason").to_pylist()
    with pytest.raises(ContractViolation, match="field 'promo' is not declared and the contract's columns are frozen"):
        validate_table(parsed(), RULES, "freeze")


def test_a_frozen_data_type_fails_on_the_first_unusable_value():
    with pytest.raises(
        ContractViolation, match="field 'n' got lots, which .* and the contract's data types are frozen"
    ):
        validate_table(parsed(), RULES, "additive", "freeze")


def test_a_spec_takes_its_modes_from_the_contract_and_reports_the_counts(pipeline, tmp_path):
    (tmp_path / "schemas" / "mini").mkdir(parents=True)
    (tmp_path / "schemas" / "mini" / "v1.yaml").write_text(
        "name: mini\nversion: 1\nfields:\n  - {name: id, type: id}\n  - {name: n, type: long}\n"
        "evolution: {columns: discard_value, data_type: discard_value}\n"
    )
    spec = tmp_path / "mini.yaml"
    spec.write_text(
        "pipeline:\n  name: mini\n  contract: mini\n  transforms:\n"
        "    - {name: Read, type: ReadFiles, config: {path: '${input}', format: jsonl}}\n"
        "    - {name: Parse, type: Parse, config: {error_handling: {output: bad}}}\n"
        "    - {name: Validate, type: Validate, config: {error_handling: {output: bad}}}\n"
        "    - {name: Write, type: WriteLake, config: {path: curated}}\n"
        "    - {name: Dead, type: WriteDeadLetters, input: [Parse.bad, Validate.bad], config: {path: dlq}}\n"
    )
    lines = [json.dumps({"id": "a", "n": 1}), json.dumps({"id": "b", "n": "x", "zz": 1})]
    batch = pa.table({"raw": pa.array([x.encode() for x in lines], pa.binary()), "source": ["m", "m"]})
    cfg = EventsConfig(input=None, input_format="jsonl", output="unused", pipeline=str(spec), shuffle_partitions=1)
    with pipeline() as p:
        out = build(p, cfg, PipelineIO(source=beam.Create([batch])))
        assert_that(
            out["report"] | beam.Map(lambda r: (r["counts"]["curated"], r["quality"], r["conservation_ok"])),
            equal_to([(2, {"discarded_fields": 1, "discarded_value.n": 1}, True)]),
        )
