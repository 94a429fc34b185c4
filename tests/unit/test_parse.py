import json

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import rows
from transforms.ingest.parse import ParseRecords, _parse_arrow_records
from transforms.ingest.parse import _parse_csv_records as _csv
from transforms.ingest.parse import _parse_json_records as _json
from transforms.ingest.slots import KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_NULL, KIND_OTHER, KIND_STR
from transforms.records import raw_text


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


def test_json_homogeneous_and_mixed_types(scanner):
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


def test_json_extras_and_unknown_keep_record_order(scanner):
    parsed, _ = _parse_json_records([b'{"z": 1, "a": "x", "y": {"n": [1, 2]}}', b'{"a": "q"}'], ["s", "s"], FIELDS)
    assert [json.loads(e) if e else None for e in parsed.column("_extras").to_pylist()] == [
        {"z": 1, "y": {"n": [1, 2]}},
        None,
    ]
    assert parsed.column("_unknown").to_pylist() == ["z", None]


def test_json_malformed_lines_become_dead_letters_with_raw_text(scanner):
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
    # Typed rows keep their record as a struct; its text is written only where it is shown.
    assert pa.types.is_struct(parsed.column("_raw").type)
    texts = raw_text(parsed.column("_raw")).to_pylist()
    assert texts == [
        '{"a":1,"b":"1970-01-01T00:00:00.000","c":"x"}',
        '{"a":null,"b":"1970-01-01T00:16:40.000","c":"y"}',
    ]
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


# Lines the vectorised path must parse exactly as the per-line parser does, and lines it must
# leave to it (escapes, nesting, big or infinite numbers, bad UTF-8, duplicate keys, ...).
EDGE_LINES = [
    b'{"a":"x","b":1}',
    b'{ "a" : "  x " , "b" : -0 , "c" : 1.5e-7 }',
    b'{"a":12,"b":1.0,"z":"s"}',
    b'{"a":true,"b":false,"z":null}',
    b'{"a":null,"z":-0}',
    b'{"z":2.5,"a":"q"}',
    b'{"z":"1","y":2,"a":"p"}',
    b'{"b":999999999999999999,"a":-999999999999999999}',
    b'{"b":9999999999999999999}',
    b'{"b":1e400}',
    b'{"b":1E5,"a":0.1}',
    b'{"b":0.30000000000000004}',
    b'{"a":"caf\xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80","z":"\xe6\x97\xa5"}',
    b'{"a":"caf\xe9"}',
    b'{"a":"\xed\xa0\x80"}',
    b'{"a":"tab\there"}',
    b'{"a":"q\\"uote","b":1}',
    b'{"a":"x","a":"y"}',
    b'{"z":1,"z":2,"a":"k"}',
    b'{"a":{"n":1}}',
    b'{"a":[1,2]}',
    b"{}",
    b"  {}  ",
    b'{"a":NaN}',
    b'{"a":01}',
    b'{"a":"x",}',
    b'{"a":"x"} {"b":1}',
    b'{"a":"x"}\r{"b":1}',
    b'["a"]',
    b'{"t":"2024-03-01T00:00:00","a":"x"}',
    b'{"a":"\x7f"}',
    b'{"a":"2024-03-01","b":"1709251817"}',
]


def test_json_vectorised_path_equals_per_line_parser(scanner):
    from transforms.ingest.flatjson import scan_flat
    from transforms.ingest.parse import _parse_json_lines

    lines = EDGE_LINES * 3
    raw, sources = pa.array(lines, pa.binary()), pa.array([f"s{i}" for i in range(len(lines))])
    flat = np.zeros(len(lines), dtype=bool)
    flat[scan_flat(raw, FIELDS)[1]] = True
    T, F = True, False
    # Duplicate keys (17, 18) are left to the per-line parser too.
    assert flat[: len(EDGE_LINES)].tolist() == [T] * 8 + [F, F] + [T] * 3 + [F] * 8 + [T, T] + [F] * 6 + [T] * 3
    fast, fast_bad = _json(raw, sources, FIELDS)
    slow, slow_bad, _ = _parse_json_lines(raw, sources, FIELDS)
    assert fast.schema == slow.schema
    assert fast.to_pydict() == slow.to_pydict()
    assert fast_bad.to_pydict() == slow_bad.to_pydict()
    assert fast.num_rows == 3 * 22 and fast_bad.num_rows == 3 * 10


def test_json_vectorised_extras_match_orjson(scanner):
    lines = [b'{"a":"x","z":-0}', b'{"z":1.5,"a":"x"}', b'{"y":"s","a":"x","z":true}', b'{"a":"x","w":null}']
    parsed, _ = _parse_json_records(lines, ["s"] * 4, FIELDS)
    assert parsed.column("_extras").to_pylist() == ['{"z":0}', '{"z":1.5}', '{"y":"s","z":true}', '{"w":null}']
    assert parsed.column("_unknown").to_pylist() == ["z", "z", "y", "w"]
    assert parsed.column("a.s").to_pylist() == ["x"] * 4


def test_json_vectorised_path_reads_records_larger_than_a_reader_block(scanner):
    from transforms.ingest import flatjson

    big = b'{"a":"' + b"x" * (3 << 20) + b'","b":7}'
    lines = [b'{"a":"s","b":1}', big, b'{"a":"t","b":2.5}']
    parsed, taken = flatjson.scan_flat(pa.array(lines, pa.binary()), FIELDS)
    assert taken.tolist() == [0, 1, 2]
    assert parsed.column("a.s").to_pylist() == ["s", "x" * (3 << 20), "t"]
    assert parsed.column("b.k").to_pylist() == [KIND_INT, KIND_INT, KIND_FLOAT]
