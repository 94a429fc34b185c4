import json

import numpy as np
import pyarrow as pa
import pytest

from transforms.records import (
    ArrowTableCoder,
    _needs_escape,
    concat_records,
    dead_letters,
    hash_partition,
    json_quote,
    json_text,
    raw_text,
    record_struct,
    slices_by,
)


def test_hash_partition_is_stable_and_spreads(colscan_impl):
    values = pa.array([f"ev-{i}" for i in range(10_000)])
    a = hash_partition(values, 8)
    b = hash_partition(pa.chunked_array([values.slice(0, 4000), values.slice(4000)]), 8)
    assert (a == b).all()
    counts = np.bincount(a, minlength=8)
    assert counts.min() > 1000, counts
    # Same key, same partition, wherever it appears.
    assert hash_partition(pa.array(["ev-42"]), 8)[0] == a[42]
    # Pinned values: a change here would reshuffle every existing deployment's data.
    assert hash_partition(pa.array(["", "a", "ev-1", None]), 1000).tolist() == [0, 501, 7, 0]


def test_hash_partition_handles_slices_and_long_strings(colscan_impl):
    values = pa.array(["x" * 1000, "y", "x" * 1000, "z" * 300_000])
    parts = hash_partition(values.slice(1), 16)
    assert len(parts) == 3
    assert parts[1] == hash_partition(values, 16)[0]


def test_hash_partition_compiled_equals_numpy(monkeypatch):
    from transforms import colscan

    rng = np.random.default_rng(9)
    keys = ["".join(rng.choice(["a", "7", "-", "é", "日"], k)) for k in rng.integers(0, 600, 3000)]
    keys[::53] = [None] * len(keys[::53])
    cases = [pa.array(keys), pa.array(keys).slice(11, 1500), pa.array(keys, pa.large_string()), pa.array(["ab"] * 9)]
    compiled = [hash_partition(c, 997).tolist() for c in cases]
    monkeypatch.setattr(colscan, "native", None)
    assert compiled == [hash_partition(c, 997).tolist() for c in cases]


def test_json_text_round_trips_through_json(colscan_impl):
    table = pa.table(
        {
            "s": ['a"b\\c', "tab\there", None],
            "i": [1, None, -3],
            "f": [1.5, 2.0, None],
            "b": [True, False, None],
            "ts": pa.array([0, 1_700_000_000_000_000, None], pa.timestamp("us", tz="UTC")),
        }
    )
    docs = [json.loads(t) for t in json_text(table).to_pylist()]
    assert docs[0] == {"s": 'a"b\\c', "i": 1, "f": 1.5, "b": True, "ts": "1970-01-01T00:00:00.000000Z"}
    assert docs[1]["s"] == "tab\there" and docs[1]["i"] is None and docs[1]["b"] is False
    assert docs[2]["s"] is None and docs[2]["ts"] is None


def test_json_quote_escapes_control_characters(colscan_impl):
    out = json_quote(pa.array(["a\nb", "\x01"])).to_pylist()
    assert [json.loads(x) for x in out] == ["a\nb", "\x01"]


def test_compiled_json_quote_writes_what_orjson_writes(monkeypatch):
    import random

    import orjson

    from transforms import colscan

    if not colscan.compiled():
        pytest.fail("transforms/_colscan.c was not built")
    rng = random.Random(5)
    alphabet = [chr(c) for c in range(0x20)] + ['"', "\\", "/", "a", " ", "\x7f", "é", "\u2028", "日", "😀"]
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(3000)]
    strings[::41] = [None] * len(strings[::41])
    arr = pa.array(strings)
    for case in (arr, arr.slice(17, 1000), arr.cast(pa.large_string()), pa.array([], pa.string())):
        quoted = json_quote(case)
        assert quoted.type == pa.string() and quoted.null_count == case.null_count
        expected = [None if v is None else orjson.dumps(v).decode() for v in case.to_pylist()]
        assert quoted.to_pylist() == expected
        monkeypatch.setattr(colscan, "native", None)
        assert json_quote(case).to_pylist() == expected
        monkeypatch.undo()


def test_dead_letters_broadcast_scalars():
    t = dead_letters("parse", "malformed", None, "bad", pa.array(["x", "y"]), pa.array(["f", "f"]))
    assert t.column("stage").to_pylist() == ["parse", "parse"]
    assert t.column("field").to_pylist() == [None, None]


def test_arrow_table_coder_round_trip():
    table = pa.table({"a": [1, 2], "b": ["x", None]}).replace_schema_metadata({b"k": b"v"})
    coder = ArrowTableCoder()
    back = coder.decode(coder.encode(table))
    assert back.equals(table) and back.schema.metadata == {b"k": b"v"}


def test_hash_partition_same_for_fixed_and_mixed_width_keys(colscan_impl):
    from transforms.records import hash_partition

    ids = [f"ev-{i:010d}" for i in range(2000)] + ["é€" * 150]
    fixed = hash_partition(pa.array(ids[:-1]), 16)  # every key 13 bytes: the row-wise path
    mixed = hash_partition(pa.array(ids), 16)  # one longer key: the per-byte path
    assert (fixed == mixed[:-1]).all()
    assert sorted(set(fixed.tolist())) == list(range(16))
    long_fixed = hash_partition(pa.array(["é€" * 150, "€é" * 150]), 1 << 20)  # past the 256 weights
    long_mixed = hash_partition(pa.array(["é€" * 150, "€é" * 150, "x"]), 1 << 20)
    assert (long_fixed == long_mixed[:2]).all() and long_fixed[0] != long_fixed[1]


def test_json_text_plain_strings_and_timestamps_without_nulls(colscan_impl):
    table = pa.table(
        {
            "id": ["a", "b"],
            "note": ["x", None],
            "ts": pa.array([0, 1_000_000], pa.timestamp("us", tz="UTC")),
            "n": [1, 2],
        }
    )
    assert json_text(table).to_pylist() == [
        '{"id":"a","note":"x","ts":"1970-01-01T00:00:00.000000Z","n":1}',
        '{"id":"b","note":null,"ts":"1970-01-01T00:00:01.000000Z","n":2}',
    ]


@pytest.mark.parametrize("text", ['a"b', "a\\b", "a\nb", "tab\there", "\x00", "\x1f"])
@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_escape_check_finds_every_character_json_must_escape(text, kind):
    clean = ["plain", None, "ünïcödé €"]
    assert not _needs_escape(pa.array(clean, kind))
    arr = pa.array([*clean, text], kind)
    assert _needs_escape(arr)
    assert not _needs_escape(arr.slice(0, 3))  # the slice ends before the dirty value
    assert _needs_escape(arr.slice(3))
    assert json.loads(json_quote(arr).to_pylist()[3]) == text


def test_slices_by_groups_rows_by_id_in_id_order_keeping_row_order():
    table = pa.table({"v": ["a", "b", "c", "d", "e"]})
    got = [(k, t.column("v").to_pylist()) for k, t in slices_by(table, np.array([3, 1, 3, 0, 1]))]
    assert got == [(0, ["d"]), (1, ["b", "e"]), (3, ["a", "c"])]
    assert all(isinstance(k, int) for k, _ in got)
    assert list(slices_by(table.slice(0, 0), np.array([], np.int64))) == []


def test_raw_text_writes_typed_records_as_json_and_keeps_text(colscan_impl):
    typed = record_struct(pa.table({"id": [1, None], "name": ['a"b', "c"]}))
    assert raw_text(typed).to_pylist() == ['{"id":1,"name":"a\\"b"}', '{"id":null,"name":"c"}']
    assert raw_text(typed.slice(1)).to_pylist() == ['{"id":null,"name":"c"}']
    text = pa.array(['{"x": 1}'])
    assert raw_text(text) is text
    # A dead letter always holds text, whichever form the record had.
    dl = dead_letters("s", "r", None, "e", typed, pa.array(["f", "f"]))
    assert dl.column("raw").to_pylist() == raw_text(typed).to_pylist()


def test_concat_records_turns_differing_struct_records_into_text():
    a = pa.table({"k": [1], "_raw": record_struct(pa.table({"x": [1]}))})
    b = pa.table({"k": [2], "_raw": record_struct(pa.table({"x": ["s"], "y": [2.5]}))})
    same = concat_records([a, a])
    assert same.schema == a.schema and same.num_rows == 2
    mixed = concat_records([a, b])
    assert mixed.column("_raw").to_pylist() == ['{"x":1}', '{"x":"s","y":2.5}']
    assert mixed.column("k").to_pylist() == [1, 2]


def test_dead_letter_lines_are_what_orjson_writes(tmp_path, colscan_impl):
    import orjson

    from transforms.sinks.deadletters import write_jsonl

    raw = ['{"a": 1}', "tab\there\nline\x01\x1f", 'quote " back \\ é ☃', None]
    table = dead_letters("parse", "malformed", None, pa.array(["e\r\x08\x0c", None, "x", "y"]), pa.array(raw),
                         pa.array(["f", "f", "g", "g"]))  # fmt: skip
    write_jsonl(table, str(tmp_path / "dl.jsonl"))
    expected = b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist())
    assert (tmp_path / "dl.jsonl").read_bytes() == expected
    write_jsonl(table.slice(0, 0), str(tmp_path / "empty.jsonl"))
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()])
def test_string_buffers_are_views_of_a_sliced_array(kind):
    from transforms.colscan import string_buffers

    arr = pa.array(["ab", None, "", "xyz", "q"], kind).slice(1, 3)
    offsets, data = string_buffers(arr)
    assert [None if v is None else bytes(data[a:b]) for v, a, b in zip(arr.to_pylist(), offsets[:-1], offsets[1:])] == [
        None, b"", b"xyz"
    ]  # fmt: skip
