"""The fast path for flat JSON lines, compiled and Arrow-only, against the per-line parser."""

import random

import numpy as np
import pyarrow as pa
import pytest

from transforms.ingest import flatjson
from transforms.ingest.parse import _parse_json_lines, _parse_json_records

FIELDS = ("a", "b", "ts")


def test_compiled_scanner_is_built():
    # `make venv` builds it; without it jsonl parsing is several times slower.
    assert flatjson.compiled(), "transforms/ingest/_flatscan.c was not built: is a C compiler installed?"


_TEXT = ["x", " ", "é", "\u2028", "日", "😀", "0", "2024-03-01T00:00:00Z", "\x7f", "a b"]
_BAD_TEXT = [b"\\n", b'\\"', b"\\u00e9", b"\t", b"\xe9", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\x01"]
_WORDS = [b"true", b"false", b"null", b"True", b"nul", b"NaN", b"Infinity", b"-", b"01", b"1.", b".5", b"1e", b"+1"]
_NESTED = [b'{"n":1}', b"[1,2]", b"{}", b"[]"]


def _string(rng: random.Random) -> bytes:
    parts = [rng.choice(_TEXT).encode() for _ in range(rng.randrange(4))]
    if rng.random() < 0.08:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(_BAD_TEXT))
    return b'"' + b"".join(parts) + b'"'


def _digits(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(lo, hi)))


def _number(rng: random.Random) -> bytes:
    text = rng.choice(["", "-"]) + (rng.choice(["0", "1" + _digits(rng, 0, 19)]) if rng.random() < 0.9 else "00")
    if rng.random() < 0.4:
        text += "." + _digits(rng, 1, 19)
    if rng.random() < 0.2:
        text += rng.choice("eE") + rng.choice(["", "+", "-"]) + _digits(rng, 1, 3)
    return text.encode()


def _value(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.45:
        return _string(rng)
    if r < 0.85:
        return _number(rng)
    if r < 0.97:
        return rng.choice(_WORDS[:3] if rng.random() < 0.8 else _WORDS)
    return rng.choice(_NESTED)


def _ws(rng: random.Random) -> bytes:
    return rng.choice([b""] * 30 + [b" "] * 4 + [b"\t", b"  ", b"\r"])


def _line(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.02:
        return rng.choice([b'["a"]', b'"text"', b"", b"   ", b"{", b"}", b"{bad", b"1"])
    keys = [k.encode() for k in rng.sample(["a", "b", "ts", "z", "y", "é", "a b", ""], rng.randrange(6))]
    if keys and rng.random() < 0.05:
        keys.append(rng.choice(keys))
    pairs = []
    for key in keys:
        k = b'"' + key + b'"' if rng.random() > 0.03 else rng.choice([b'"k\\"q"', b"k", b'"\x01"'])
        pairs.append(_ws(rng) + k + _ws(rng) + b":" + _ws(rng) + _value(rng) + _ws(rng))
    body = b",".join(pairs) if pairs else _ws(rng)
    line = _ws(rng) + b"{" + body + (b"," if rng.random() < 0.02 else b"") + b"}" + _ws(rng)
    if rng.random() < 0.02:
        line += rng.choice([b"x", b" {}", b"}"])
    return line


def _random_lines(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    return [_line(rng) for _ in range(n)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_lines_parse_as_the_per_line_parser_does(scanner, seed):
    lines = _random_lines(seed, 3000)
    raw = pa.array(lines, pa.binary())
    sources = pa.array([f"s{i}" for i in range(len(lines))])
    fast, fast_bad = _parse_json_records(raw, sources, FIELDS)
    slow, slow_bad, _ = _parse_json_lines(raw, sources, FIELDS)
    assert fast.schema == slow.schema
    assert fast.to_pydict() == slow.to_pydict()
    assert fast_bad.to_pydict() == slow_bad.to_pydict()
    # The fast path took most lines and left the rest: both kinds are exercised.
    taken = len(flatjson.scan_flat(raw, FIELDS)[1])
    assert 0.3 * len(lines) < taken < 0.95 * len(lines)


@pytest.mark.parametrize("seed", [4, 5])
def test_both_implementations_take_the_same_lines(seed, monkeypatch):
    raw = pa.array(_random_lines(seed, 3000), pa.binary())
    compiled, taken = flatjson.scan_flat(raw, FIELDS)
    monkeypatch.setattr(flatjson, "_flatscan", None)
    arrow, arrow_taken = flatjson.scan_flat(raw, FIELDS)
    assert taken.tolist() == arrow_taken.tolist()
    assert compiled.to_pydict() == arrow.to_pydict()


def test_sliced_and_large_binary_lines(scanner):
    lines = [b'{"a":"x","b":1}', b"{bad", b'{"a":"y","b":2.5,"z":true}', b'{"a":"w"}']
    for raw in (
        pa.array([b"{}"] + lines, pa.binary()).slice(1),
        pa.array(lines, pa.large_binary()),
    ):
        slots, taken = flatjson.scan_flat(raw, FIELDS)
        assert taken.tolist() == [0, 2, 3]
        assert slots.column("a.s").to_pylist() == ["x", "y", "w"]
        assert slots.column("b.f").to_pylist() == [None, 2.5, None]
        assert slots.column("_extras").to_pylist() == [None, '{"z":true}', None]
        assert slots.column("_raw").to_pylist() == [lines[0].decode(), lines[2].decode(), lines[3].decode()]


def test_every_line_taken_of_large_binary_reads_as_text(scanner):
    lines = [b'{"a":"x","b":1}', b'{"a":"y"}']
    for kind in (pa.binary(), pa.large_binary()):
        slots, taken = flatjson.scan_flat(pa.array(lines, kind), FIELDS)
        assert taken.tolist() == [0, 1]
        assert slots.column("_raw").type == pa.string()
        assert slots.column("_raw").to_pylist() == [line.decode() for line in lines]


def test_no_line_taken(scanner):
    slots, taken = flatjson.scan_flat(pa.array([b"{bad", b"[1]"], pa.binary()), FIELDS)
    assert slots is None and len(taken) == 0


def test_compiled_scanner_refuses_bad_offsets():
    if not flatjson.compiled():
        pytest.fail("the compiled scanner is not built")
    scan = flatjson._flatscan.scan
    data = np.frombuffer(b'{"a":1}', dtype=np.uint8)
    with pytest.raises(ValueError, match="out of the data"):
        scan(data, np.array([0, 99], dtype=np.int64), (b"a",))
    with pytest.raises(ValueError, match="decrease"):
        scan(data, np.array([0, 5, 3, 7], dtype=np.int64), (b"a",))
    with pytest.raises(TypeError, match="bytes"):
        scan(data, np.array([0, 7], dtype=np.int64), ("a",))
