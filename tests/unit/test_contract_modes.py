"""dlt-style schema-contract modes at run time: undeclared fields (evolve, discard_row,
discard_value, freeze) and unusable values (evolve, discard_row, discard_value, freeze), set for
the contract, per type and per field; nothing discarded goes uncounted."""

import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.contracts.loader import contract_from_doc
from beam_pipelines.spec import EventsConfig, SpecError
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


def test_evolve_keeps_an_unusable_value_in_extras_under_its_field():
    counts = {}
    valid, dead = validate_table(parsed(), RULES, "additive", "evolve", counts)
    assert valid.column("n").to_pylist() == [1, None]
    # The record's own undeclared field and the kept value share one JSON object.
    assert [json.loads(x) if x else x for x in valid.column("extras").to_pylist()] == [
        None,
        {"promo": "p", "n": "lots"},
    ]
    assert counts == {"quality.evolved_value.n": 1}
    # x is required: its record is a dead letter whatever the policy.
    assert dead.column("field").to_pylist() == ["x"]


def test_evolve_keeps_the_value_as_the_record_held_it():
    raw = pa.array([b'{"id": "a", "n": 1.5}', b'{"id": "b", "n": {"k": [1]}}', b'{"id": "c", "n": true}'], pa.binary())
    table, _ = _parse_json_records(raw, pa.array(["mem"] * 3), ("id", "n"))
    valid, _ = validate_table(table, (IdField("id"), IntegerField("n")), "additive", "evolve")
    extras = [json.loads(x) for x in valid.column("extras").to_pylist()]
    assert extras == [{"n": 1.5}, {"n": {"k": [1]}}, {"n": True}]


def test_a_mapping_sets_the_policy_per_field():
    counts = {}
    valid, dead = validate_table(parsed(), RULES, "additive", {"n": "discard_value"}, counts)
    assert valid.column("id").to_pylist() == ["a", "b"] and counts == {"quality.discarded_value.n": 1}
    assert dead.column("field").to_pylist() == ["x"]  # x has no entry: discard_row
    with pytest.raises(ContractViolation, match="field 'x' got nan"):
        validate_table(parsed(), RULES, "additive", {"n": "discard_value", "x": "freeze"})


def contract(evolution: str, n_field: str = "{name: n, type: long}"):
    doc = f"name: mini\nversion: 1\nfields:\n  - {{name: id, type: id}}\n  - {n_field}\n  - {{name: d, type: double}}\n"
    return contract_from_doc(yaml_doc(doc + evolution), "mini.yaml")


def yaml_doc(text: str):
    from beam_pipelines.spec import yamlsrc

    return yamlsrc.load_text(text, "mini.yaml")


def test_a_contract_sets_data_type_for_itself_per_type_and_per_field():
    c = contract("evolution: {data_type: discard_value, types: {long: evolve}}")
    assert [c.data_type_policy(n) for n in ("id", "n", "d")] == ["discard_value", "evolve", "discard_value"]
    c = contract("evolution: {types: {long: evolve}}", "{name: n, type: long, evolution: {data_type: freeze}}")
    assert [c.data_type_policy(n) for n in ("n", "d")] == ["freeze", "discard_row"]
    with pytest.raises(SpecError, match=r"mini.yaml:7: evolution.types.lnog: unknown key \(did you mean 'long'"):
        contract("evolution: {types: {lnog: evolve}}")
    with pytest.raises(SpecError, match=r"fields\[1\].evolution.data_type: .*must be one of"):
        contract("", "{name: n, type: long, evolution: {data_type: keep}}")


def test_a_frozen_data_type_fails_on_the_first_unusable_value():
    with pytest.raises(
        ContractViolation, match="field 'n' got lots, which .* and the contract's data types are frozen"
    ):
        validate_table(parsed(), RULES, "additive", "freeze")


def mini_run(tmp_path, contract: str, lines: list[str]):
    """A one-source spec over contract ``mini`` (written from ``contract``): its input batch and config."""
    (tmp_path / "schemas" / "mini").mkdir(parents=True)
    (tmp_path / "schemas" / "mini" / "v1.yaml").write_text(contract)
    spec = tmp_path / "mini.yaml"
    spec.write_text(
        "pipeline:\n  name: mini\n  contract: mini\n  transforms:\n"
        "    - {name: Read, type: ReadFiles, config: {path: '${input}', format: jsonl}}\n"
        "    - {name: Parse, type: Parse, config: {error_handling: {output: bad}}}\n"
        "    - {name: Validate, type: Validate, config: {error_handling: {output: bad}}}\n"
        "    - {name: Write, type: WriteLake, config: {path: curated}}\n"
        "    - {name: Dead, type: WriteDeadLetters, input: [Parse.bad, Validate.bad], config: {path: dlq}}\n"
    )
    batch = pa.table({"raw": pa.array([x.encode() for x in lines], pa.binary()), "source": ["m", "m"]})
    cfg = EventsConfig(input=None, input_format="jsonl", output="unused", pipeline=str(spec), shuffle_partitions=1)
    return batch, cfg


def test_a_spec_takes_its_modes_from_the_contract_and_reports_the_counts(pipeline, tmp_path):
    contract = (
        "name: mini\nversion: 1\nfields:\n  - {name: id, type: id}\n  - {name: n, type: long}\n"
        "evolution: {columns: discard_value, data_type: discard_value}\n"
    )
    lines = [json.dumps({"id": "a", "n": 1}), json.dumps({"id": "b", "n": "x", "zz": 1})]
    batch, cfg = mini_run(tmp_path, contract, lines)
    with pipeline() as p:
        out = build(p, cfg, PipelineIO(source=beam.Create([batch])))
        assert_that(
            out["report"] | beam.Map(lambda r: (r["counts"]["curated"], r["quality"], r["conservation_ok"])),
            equal_to([(2, {"discarded_fields": 1, "discarded_value.n": 1}, True)]),
        )


def test_a_spec_run_keeps_evolved_values_per_field(pipeline, tmp_path):
    contract = (
        "name: mini\nversion: 1\nfields:\n  - {name: id, type: id}\n"
        "  - {name: n, type: long, evolution: {data_type: evolve}}\n  - {name: b, type: boolean}\n"
        "evolution: {types: {boolean: discard_value}}\n"
    )
    lines = [json.dumps({"id": "a", "n": "12k", "b": "maybe"}), json.dumps({"id": "b", "n": 2, "b": True})]
    batch, cfg = mini_run(tmp_path, contract, lines)
    with pipeline() as p:
        out = build(p, cfg, PipelineIO(source=beam.Create([batch])))
        assert_that(
            out["report"] | beam.Map(lambda r: (r["counts"]["curated"], r["quality"], r["conservation_ok"])),
            equal_to([(2, {"evolved_value.n": 1, "discarded_value.b": 1}, True)]),
            label="Report",
        )
        assert_that(
            out["curated"]
            | beam.FlatMap(lambda t: zip(t["id"].to_pylist(), t["n"].to_pylist(), t["extras"].to_pylist())),
            equal_to([("a", None, '{"n":"12k"}'), ("b", 2, None)]),
            label="Curated",
        )
