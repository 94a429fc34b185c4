import json

import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import rows
from transforms.ingest.parse import ParseRecords, _parse_arrow_records
from transforms.ingest.parse import _parse_csv_records as _csv
from transforms.ingest.parse import _parse_json_records as _json
from transforms.ingest.slots import KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_NULL, KIND_OTHER, KIND_STR


def _parse_json_records(lines, sources, fields):
    return _json(pa.array(lines, pa.binary()), pa.array(sources, pa.string()), fields)


def _parse_csv_records(rows_, sources, header, fields):
    return _csv(pa.array(rows_, pa.binary()), pa.array(sources, pa.string()), header, fields)


FIELDS = ("a", "b")


def slots(table, name):
    return list(
        zip(
            table.column(name + ".k").to_pylist(),
            table.column(name + ".s").to_pylist(),
            table.column(name + ".i").to_pylist(),
            table.column(name + ".f").to_pylist(),
        )
    )


def test_json_homogeneous_and_mixed_types():
    lines = [b'{"a": "x", "b": 1}', b'{"a": 2, "b": 1.5}', b'{"a": null, "b": true}', b'{"b": [1]}']
    parsed, bad = _parse_json_records(lines, ["s"] * 4, FIELDS)
    assert bad.num_rows == 0
    assert slots(parsed, "a") == [
        (KIND_STR, "x", None, None),
        (KIND_INT, "2", 2, None),
        (KIND_NULL, None, None, None),
        (KIND_NULL, None, None, None),  # absent and null mean the same to every rule
    ]
    kinds_b = [k for k, *_ in slots(parsed, "b")]
    assert kinds_b == [KIND_INT, KIND_FLOAT, KIND_BOOL, KIND_OTHER]
    assert slots(parsed, "b")[1][3] == 1.5
    assert parsed.column("_raw").to_pylist() == [ln.decode() for ln in lines]


def test_json_extras_and_unknown_keep_record_order():
    parsed, _ = _parse_json_records([b'{"z": 1, "a": "x", "y": {"n": [1, 2]}}', b'{"a": "q"}'], ["s", "s"], FIELDS)
    assert [json.loads(e) if e else None for e in parsed.column("_extras").to_pylist()] == [
        {"z": 1, "y": {"n": [1, 2]}},
        None,
    ]
    assert parsed.column("_unknown").to_pylist() == ["z", None]


def test_json_malformed_lines_become_dead_letters_with_raw_text():
    lines = [b"{bad", b"[1, 2]", b'"text"', b'{"a": "caf\xe9"}', b'{"a": "ok"}']
    parsed, bad = _parse_json_records(lines, ["f.jsonl"] * 5, FIELDS)
    assert parsed.num_rows == 1
    assert bad.column("reason").to_pylist() == ["malformed"] * 4
    assert bad.column("stage").to_pylist() == ["parse"] * 4
    assert bad.column("raw").to_pylist() == ["{bad", "[1, 2]", '"text"', '{"a": "caf\\xe9"}']
    assert bad.column("source").to_pylist() == ["f.jsonl"] * 4
    assert "JSON object" in bad.column("error")[1].as_py()


def test_json_integers_beyond_64_bits_are_not_malformed():
    parsed, bad = _parse_json_records([b'{"a": 123456789012345678901234567890}'], ["s"], FIELDS)
    assert bad.num_rows == 0
    assert slots(parsed, "a")[0][:3] == (KIND_INT, "123456789012345678901234567890", None)


def test_json_rejects_non_json_constants_and_lone_surrogates():
    lines = [b'{"a": NaN}', b'{"a": 1, "b": Infinity}', b'{"a": "\\udc00x"}']
    parsed, bad = _parse_json_records(lines, ["s"] * 3, FIELDS)
    assert parsed.num_rows == 0 and bad.column("reason").to_pylist() == ["malformed"] * 3


def test_csv_rows_wrong_width_and_undecodable():
    header = ["a", "b", "extra"]
    rows_ = [b"x,1,e", b"y,2", b'"q,uoted",3,', b"\xff,1,2", b'"multi\nline",4,z', b'"x"y,1,2']
    parsed, bad = _parse_csv_records(rows_, ["c.csv"] * len(rows_), header, FIELDS)
    assert parsed.column("a.s").to_pylist() == ["x", "q,uoted", "multi\nline"]
    assert parsed.column("b.k").to_pylist() == [KIND_STR] * 3
    assert parsed.column("_extras").to_pylist() == ['{"extra":"e"}', None, '{"extra":"z"}']
    assert bad.column("raw").to_pylist() == ["y,2", "\\xff,1,2", '"x"y,1,2']
    assert "expected 3 columns, got 2" in bad.column("error")[0].as_py()


def test_csv_empty_cell_is_null():
    parsed, _ = _parse_csv_records([b",1"], ["c"], ["a", "b"], FIELDS)
    assert slots(parsed, "a") == [(KIND_NULL, None, None, None)]


def test_arrow_typed_columns_map_to_slots():
    table = pa.table(
        {
            "a": pa.array([1, None], pa.int32()),
            "b": pa.array([0, 1_000_000], pa.timestamp("ms")),
            "c": ["x", "y"],
        }
    )
    parsed = _parse_arrow_records(table, FIELDS)
    assert slots(parsed, "a") == [(KIND_INT, "1", 1, None), (KIND_NULL, None, None, None)]
    assert parsed.column("b.i").to_pylist() == [0, 1_000_000_000]
    assert [json.loads(r) for r in parsed.column("_raw").to_pylist()][0]["c"] == "x"
    assert parsed.column("_unknown").to_pylist() == ["c", "c"]


def test_parse_records_composite(pipeline):
    batch = pa.table({"raw": pa.array([b'{"a": "1"}', b"nope"], pa.binary()), "source": ["s", "s"]})
    with pipeline() as p:
        import apache_beam as beam

        out = p | beam.Create([batch]) | ParseRecords("jsonl", FIELDS)
        assert_that(out["parsed"] | "n" >> beam.Map(lambda t: t.num_rows), equal_to([1]), label="parsed")
        assert_that(
            out["dead_letters"] | "r" >> beam.FlatMap(lambda t: t.column("reason").to_pylist()),
            equal_to(["malformed"]),
            label="dead",
        )
        assert_that(out["stats"], equal_to([{"read": 2}]), label="stats")


def test_parse_records_rejects_bad_config():
    with pytest.raises(ValueError, match="unknown input format"):
        ParseRecords("xml", FIELDS)
    with pytest.raises(ValueError, match="distinct"):
        ParseRecords("jsonl", ("a", "a"))


def test_rows_helper():
    assert rows([pa.table({"x": [1]}), pa.table({"x": [2]})]) == [{"x": 1}, {"x": 2}]
