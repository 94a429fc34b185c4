"""Bad input at scale: property-based tests of parse and validate over generated bad input.

Random bytes, deep nesting, numbers beyond int64 and float64, NaN/Infinity literals, invalid
UTF-8, values of the wrong type, very long strings, BOMs, CR/LF variants and blank lines, as
jsonl and CSV chunks (split as ReadFiles splits them) and as typed (parquet) tables, through
the packaged ``events`` and ``orders`` specs' parse and validate steps. Whatever the input:
no exception escapes, every record read ends as exactly one curated row or one dead letter
with its stage and reason, and the compiled passes (``_flatscan.c``, ``_colscan.c``) give
what their Arrow/numpy twins give.

The examples are fixed (``derandomize``) so CI is reproducible; ``HYPOTHESIS_PROFILE=long``
runs a hundred times as many, from a random seed (README: Reliability).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal

import apache_beam as beam
import orjson
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from beam_pipelines.spec import EventsConfig
from beam_pipelines.spec.build import PipelineIO, build, plan_for
from transforms import colscan
from transforms.ingest import files, flatjson
from transforms.ingest.aliases import resolve_aliases
from transforms.ingest.drift import drift_counts
from transforms.ingest.files import ReadFiles
from transforms.ingest.parse import (
    _decode_raw,
    _parse_arrow_records,
    _parse_csv_batch,
    _parse_json_lines,
    _parse_json_records,
)
from transforms.ingest.validate import validate_table
from transforms.records import empty_dead_letters, raw_text

# ---------------------------------------------------------------- how many examples

_PROFILES = {
    # CI: the same examples every run, no example database.
    "ci": {"scale": 1, "derandomize": True, "database": None},
    # Local soak: a hundred times as many, a random seed each run, failures kept in .hypothesis/.
    "long": {"scale": 100, "derandomize": False},
}
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if _PROFILE not in _PROFILES:
    raise ValueError(f"HYPOTHESIS_PROFILE must be one of {', '.join(_PROFILES)}, got {_PROFILE!r}")


def fuzz(examples: int, suppress: list | None = None):
    """Settings of one property: ``examples`` in CI, scaled up by the profile."""
    opts = dict(_PROFILES[_PROFILE])
    scale = opts.pop("scale")
    return settings(
        max_examples=examples * scale,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            *(suppress or []),
        ],  # fmt: skip
        **opts,
    )


# ---------------------------------------------------------------- the pipelines under test


class Spec:
    """What a packaged spec's Parse and Validate steps are given: names, aliases, rules, modes."""

    def __init__(self, name: str):
        plan = plan_for(EventsConfig(input="in/*.jsonl", input_format="jsonl", output="out", pipeline=name))
        parse = next(n.step for n in plan.chain if n.step.type == "Parse")
        validate = next(n.step for n in plan.chain if n.step.type == "Validate")
        self.name = name
        self.contract = plan.ctx.contract
        self.aliases = parse._aliases()
        self.fields = tuple(f.name for f in self.contract.fields)
        self.parsed_names = self.fields + tuple(a for _, former in self.aliases for a in former)
        self.rules = tuple(_rules(validate))
        self.policy = validate.policy()
        self.invalid = validate.invalid()
        self.types = tuple((f.name, f.type) for f in self.contract.fields)


def _rules(validate):
    from beam_pipelines.spec.contract_rules import rules_for

    return rules_for(validate.ctx.contract)


SPECS = {name: Spec(name) for name in ("events", "orders")}
_REASONS = {"parse": {"malformed"}, "validate": {"missing_field", "invalid_value", "unknown_field"}}

# ---------------------------------------------------------------- values


def _sign(digits: bytes) -> st.SearchStrategy:
    return st.sampled_from([b"", b"-"]).map(lambda s: s + digits)


_TOKENS = [
    b"true", b"false", b"null", b"True", b"None", b"nul", b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"nan",
    b"inf", b"1e400", b"-1e400", b"1e-400", b"1.7976931348623157e308", b"-1.7976931348623157e308", b"5e-324",
    b"-0", b"-0.0", b"0e0", b"1E+2", b"01", b"1.", b".5", b"+1", b"0x10", b"1_000", b"9223372036854775807",
    b"9223372036854775808", b"-9223372036854775808", b"-9223372036854775809", b"18446744073709551616",
    b'"\\u0000"', b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\ud83d\\ude00"', b'"\\""', b'"\\\\"', b'"\\/"',
    b'"\\x41"', b"'single'", b'"\xc0\x80"', b'"\xed\xa0\x80"', b'"\xff"', b'"\t"', b'""', b'" "', b'"NaN"',
    b'"Infinity"', b'"-1e400"', b'"1e999999999"', b'"0x1F"', b'"\xef\xbc\x91"', b'"\xd9\xa3"', b"[]", b"{}",
    b'{"":1}', b'[1,"a",null]', b'"2024-02-30T00:00:00Z"', b'"9999-12-31T23:59:59.9999999+14:00"',
    b'"0000-01-01"', b'"2024-01-01T24:00:00"', b"-1e18", b"1e20", b"253402300800", b"253402300800000000",
]  # fmt: skip

_PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _deep(draw) -> bytes:
    """Arrays or objects nested up to past every parser's limit."""
    depth = draw(st.one_of(st.integers(1, 40), st.integers(200, 300), st.integers(900, 1100)))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"k":', b"}"), (b'[{"k":', b"}]")]))
    inner = draw(st.sampled_from([b"1", b"123456789012345678901234", b'"x"', b"[]", b"1.5"]))
    return opener * depth + inner + closer * depth


NASTY = st.one_of(
    st.sampled_from(_TOKENS),
    st.integers(min_value=-(2**80), max_value=2**80).map(lambda i: str(i).encode()),
    st.integers(19, 400).flatmap(lambda n: _sign(b"9" * n)),
    st.floats().map(lambda f: repr(f).encode()),  # nan, inf: not JSON
    st.text(max_size=24).map(orjson.dumps),
    st.binary(max_size=24).map(lambda b: b'"' + b + b'"'),  # control bytes, bad UTF-8, stray quotes
    st.integers(1_000, 200_000).map(lambda n: b'"' + b"x" * n + b'"'),
    _PLAIN.map(lambda v: json.dumps(v).encode()),
    _deep(),
)


def _text(strategy) -> st.SearchStrategy:
    return strategy.map(lambda s: orjson.dumps(s))


_UTC = st.just(timezone.utc)
_ISO = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=_UTC | st.none())
_TS = st.one_of(
    _text(_ISO.map(lambda d: d.isoformat())),
    _ISO.map(lambda d: str(int(d.replace(tzinfo=timezone.utc).timestamp())).encode()),
    _ISO.map(lambda d: str(int(d.replace(tzinfo=timezone.utc).timestamp() * 1000)).encode()),
)
_ID = _text(st.text(min_size=1, max_size=8)) | st.integers(0, 10**6).map(lambda i: str(i).encode())
_WORD = _text(st.text(max_size=12))


def _enum(values) -> st.SearchStrategy:
    cased = [v for value in values for v in (value, value.upper(), f" {value} ")]
    return _text(st.sampled_from(cased))


_MONEY = st.decimals(min_value=0, max_value=10**6, places=2).map(lambda d: str(d).encode())
GOOD = {
    "events": {
        "event_id": _ID,
        "user_id": _ID,
        "event_type": _enum(["view", "click", "add_to_cart", "purchase", "refund"]),
        "amount": _MONEY | _text(_MONEY.map(bytes.decode)) | st.just(b"null"),
        "currency": _text(st.sampled_from(["usd", "EUR", "gbp", "xx"])),
        "ts": _TS,
        "email": _text(st.sampled_from(["a@b.co", "A@X.COM", "nope"])) | _WORD,
        "country": _text(st.sampled_from(["us", "DE", "USA"])) | _WORD,
    },
    "orders": {
        "order_id": _ID,
        "customer_id": _ID,
        "region": _enum(["north", "south", "east", "west", "central"]),
        "status": _enum(["placed", "paid", "shipped", "delivered", "cancelled", "returned"]),
        "amount": _MONEY | _text(_MONEY.map(bytes.decode)),
        "quantity": st.integers(1, 1000).map(lambda i: str(i).encode()) | _text(st.integers(1, 1000).map(str)),
        "is_gift": st.sampled_from([b"true", b"false", b'"yes"', b'"0"', b"null"]),
        "promo_code": _text(st.from_regex(r"[A-Za-z0-9]{3,8}", fullmatch=True)),
        "coupon": _text(st.from_regex(r"[A-Za-z0-9]{3,8}", fullmatch=True)),
        "created_at": _TS,
        "updated_at": _TS,
        "channel": _enum(["web", "app", "store", "phone"]),
    },
}
_RAW_KEYS = ["k\\u0022q", "a\udcff"]  # written as they are: an escaped quote, a byte that is not UTF-8
_EXTRA_KEYS = ["extra", "x y", "", "é", "_raw", *_RAW_KEYS]
BOM = b"\xef\xbb\xbf"
# Whitespace JSON allows (\r too, which the fast path leaves to the per-line parser), and some it does not.
_WS = st.sampled_from([b""] * 12 + [b" ", b"\t", b"\r", b"  "])
_ANY_WS = st.one_of(_WS, st.sampled_from([b"\x0b", b"\xc2\xa0", BOM]))

# ---------------------------------------------------------------- jsonl chunks


@st.composite
def json_line(draw, spec: str) -> bytes:
    good = GOOD[spec]
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return draw(st.binary(max_size=80))
    if shape == 1:
        return draw(NASTY)
    clean = shape >= 10  # a record meant to pass: every field a good value
    names = list(good)
    if clean:
        keys = draw(st.permutations(names))
        keys = keys[: draw(st.integers(len(keys) - 2, len(keys)))]
    else:
        keys = draw(st.lists(st.sampled_from(names + _EXTRA_KEYS), max_size=len(names) + 3))
    pairs = []
    for key in keys:
        if key in good and (clean or draw(st.booleans())):
            value = draw(good[key])
        else:
            value = draw(NASTY)
        text = b'"' + key.encode("utf-8", "surrogateescape") + b'"' if key in _RAW_KEYS else orjson.dumps(key)
        ws = _WS if clean else _ANY_WS
        pairs.append(draw(ws) + text + draw(ws) + b":" + draw(ws) + value + draw(ws))
    line = b"{" + b",".join(pairs) + b"}"
    if not clean:
        line = draw(_ANY_WS) + line + draw(_ANY_WS) + draw(st.sampled_from([b""] * 8 + [b",", b"}", b" x", b"{}"]))
    return line


_EOL = st.sampled_from([b"\n"] * 6 + [b"\r\n", b"\r\r\n", b"\n\n", b"\n \t\n", b"\r", b"\n\r\n"])


@st.composite
def jsonl_chunk(draw, spec: str) -> bytes:
    """A jsonl file's bytes: generated lines, or random bytes; any line ending, maybe a BOM."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=400))
    lines = draw(st.lists(json_line(spec), min_size=1, max_size=20))
    data = b"".join(line + draw(_EOL) for line in lines)
    if draw(st.booleans()):
        data = data.rstrip(b"\n")
    return (BOM if draw(st.integers(0, 4)) == 0 else b"") + data


def _lines(data: bytes) -> list[bytes]:
    """The records ReadFiles reads from a jsonl file's bytes."""
    return [
        line for batch in files._iter_range_lines(io.BytesIO(data), 0, len(data), 1024) for line in batch.to_pylist()
    ]


# ---------------------------------------------------------------- CSV chunks

_CELL_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "a,b", 'x"y', '"', '""', "\r", "\n", "\r\n", "a\x00b", "NaN", "1e400", "-Infinity",
                     "99999999999999999999999", "1e-400", "0x10", "1_000", "null", "true", "TRUE", "yes"]),
    st.integers(1_000, 200_000).map(lambda n: "x" * n),
)  # fmt: skip


def _csv_text(value: bytes) -> bytes:
    """A good JSON value as a CSV cell: strings unquoted from JSON, quoted for CSV if need be."""
    if value.startswith(b'"'):
        value = orjson.loads(value).encode()
    return b'"' + value.replace(b'"', b'""') + b'"' if any(c in value for c in b',"\r\n') else value


@st.composite
def csv_cell(draw, spec: str, name: str) -> bytes:
    good = GOOD[spec].get(name)
    if good is not None and draw(st.integers(0, 3)):
        value = draw(good)
        if value.startswith(b'"'):
            value = orjson.loads(value).encode() if draw(st.integers(0, 9)) else value
    elif draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=16))  # as it is: bad UTF-8, stray quotes, delimiters
    else:
        value = draw(_CELL_TEXT).encode("utf-8", "surrogatepass")
    if any(c in value for c in b',"\r\n') or draw(st.integers(0, 5)) == 0:
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


@st.composite
def csv_chunk(draw, spec: str) -> bytes:
    """A CSV file's bytes: a header (maybe with a BOM, spaces, extra or repeated names) and rows
    of good or bad cells, some of the wrong width, with any line ending and blank lines."""
    names = list(GOOD[spec])
    if draw(st.integers(0, 2)):
        header = draw(st.permutations(names))
    else:
        header = draw(st.lists(st.sampled_from(names + ["extra", "é", ""]), min_size=1, max_size=len(names) + 2))
    head = b",".join(draw(st.sampled_from([b"", b" "])) + h.encode() for h in header)
    if draw(st.integers(0, 3)) == 0:
        head = BOM + head
    rows = []
    for _ in range(draw(st.integers(1, 15))):
        if draw(st.booleans()):  # a row meant to pass
            rows.append(b",".join(_csv_text(draw(GOOD[spec][h])) if h in names else b"" for h in header))
            continue
        width = len(header) + draw(st.sampled_from([0] * 8 + [-1, 1]))
        cells = [draw(csv_cell(spec, header[i] if i < len(header) else "")) for i in range(max(width, 0))]
        rows.append(b",".join(cells))
    data = head + draw(_EOL) + b"".join(row + draw(_EOL) for row in rows)
    return data if draw(st.booleans()) else data.rstrip(b"\r\n")


def _csv_batches(data: bytes, chunk_bytes: int) -> list[pa.Table]:
    """The batches ReadFiles reads from a CSV file's bytes."""
    out = []
    for header, rows in files._iter_csv_rows(io.BytesIO(data), chunk_bytes):
        out.append(files._line_batch(rows, "mem.csv", files.csv_header_metadata(header)))
    return out


# ---------------------------------------------------------------- typed (parquet) tables

_INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(), pa.uint64()]
_TS_TYPES = [pa.timestamp(u, tz=tz) for u in ("s", "ms", "us", "ns") for tz in (None, "UTC", "Asia/Kolkata")]


def _typed_column(kind: pa.DataType, n: int) -> st.SearchStrategy:
    def values(strategy):
        return st.lists(st.none() | strategy, min_size=n, max_size=n).map(lambda v: pa.array(v, kind))

    if pa.types.is_integer(kind):
        bits = kind.bit_width
        lo, hi = (0, 2**bits - 1) if pa.types.is_unsigned_integer(kind) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return values(st.integers(lo, hi))
    if pa.types.is_timestamp(kind) or kind in (pa.date64(), pa.duration("s"), pa.time64("us")):
        lo, hi = (0, 86_400_000_000 - 1) if kind == pa.time64("us") else (-(2**63) + 1, 2**63 - 1)
        edge = st.sampled_from([0, 1, -1, 999, 10**15 + 1, 2**62, -(2**62), lo, hi])
        return st.lists(st.none() | st.integers(lo, hi) | edge, min_size=n, max_size=n).map(
            lambda v: pa.array(v, pa.int64()).cast(kind)
        )
    if kind == pa.date32():
        return st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), min_size=n, max_size=n).map(
            lambda v: pa.array(v, pa.int32()).cast(kind)
        )
    if pa.types.is_floating(kind):
        return values(st.floats(width=kind.bit_width))
    if pa.types.is_decimal(kind):
        limit = Decimal(10) ** (kind.precision - kind.scale) - 1
        return values(st.decimals(-limit, limit, places=kind.scale, allow_nan=False, allow_infinity=False))
    if pa.types.is_boolean(kind):
        return values(st.booleans())
    if pa.types.is_binary(kind):
        return values(st.binary(max_size=8))
    if pa.types.is_dictionary(kind):
        return st.lists(st.none() | st.text(max_size=4), min_size=n, max_size=n).map(
            lambda v: pa.array(v, pa.string()).dictionary_encode()
        )
    if pa.types.is_null(kind):
        return st.just(pa.nulls(n))
    if pa.types.is_list(kind):  # of integers, or of instants made from any int64
        items = st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=3)
        return st.lists(st.none() | items, min_size=n, max_size=n).map(
            lambda v: pa.array(v, pa.list_(pa.int64())).cast(kind)
        )
    if pa.types.is_struct(kind):
        return values(st.fixed_dictionaries({"a": st.none() | st.integers(0, 9), "b": st.none() | st.text(max_size=3)}))
    if pa.types.is_map(kind):
        return values(st.lists(st.tuples(st.text(max_size=3), st.none() | st.integers(0, 9)), max_size=2))
    return values(st.text(max_size=12))  # string, large_string


_TYPES = [
    *_INT_TYPES, pa.float32(), pa.float64(), pa.decimal128(38, 2), pa.decimal128(5, 0), pa.decimal256(60, 10),
    pa.bool_(), pa.string(), pa.large_string(), pa.binary(), pa.dictionary(pa.int32(), pa.string()), pa.null(),
    *_TS_TYPES, pa.date32(), pa.date64(), pa.time64("us"), pa.duration("s"), pa.list_(pa.int64()),
    pa.list_(pa.timestamp("s")), pa.struct([("a", pa.int64()), ("b", pa.string())]), pa.map_(pa.string(), pa.int64()),
]  # fmt: skip


_INSTANTS = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=_UTC)


@st.composite
def _good_column(draw, spec: str, name: str, n: int) -> pa.Array:
    """A column of values the field takes: the JSON ones as Arrow reads them, or instants."""
    if name.endswith(("ts", "_at")) and draw(st.booleans()):
        return pa.array(draw(st.lists(_INSTANTS, min_size=n, max_size=n)), pa.timestamp("us", tz="UTC"))
    values = [json.loads(draw(GOOD[spec][name])) for _ in range(n)]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed kinds: as text, as a CSV-born parquet file holds them
        return pa.array([None if v is None else str(v) for v in values], pa.string())


@st.composite
def typed_table(draw, spec: str) -> pa.Table:
    """A parquet row group: usable columns or none, then columns of any type, any value."""
    n = draw(st.integers(1, 6))
    columns = {}
    if draw(st.booleans()):
        columns = {name: draw(_good_column(spec, name, n)) for name in GOOD[spec]}
    names = st.sampled_from(list(GOOD[spec]) + ["extra", "é"])
    for name in draw(st.lists(names, min_size=0 if columns else 1, max_size=4, unique=True)):
        columns[name] = draw(_typed_column(draw(st.sampled_from(_TYPES)), n))
    return pa.table(columns)


# ---------------------------------------------------------------- the properties


@contextlib.contextmanager
def implementation(compiled: bool):
    """Runs with the compiled passes, or with their Arrow/numpy twins."""
    saved = flatjson._flatscan, colscan.native
    if not compiled:
        flatjson._flatscan, colscan.native = None, None
    try:
        yield
    finally:
        flatjson._flatscan, colscan.native = saved


def _run(spec: Spec, parse, raw_of_record: list[str], modes: tuple | None) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Parse (``parse()`` -> parsed slots, malformed dead letters) then validate as the spec
    does, or with other contract ``modes`` (undeclared fields, unusable values); checks that
    every record ends as exactly one curated row or one dead letter."""
    parsed, malformed = parse()
    if spec.aliases:
        parsed = resolve_aliases(parsed, spec.aliases)
    drift_counts(parsed, spec.types)
    policy, invalid_values = modes or (spec.policy, spec.invalid)
    valid, invalid = validate_table(parsed, spec.rules, policy, invalid_values, {})
    read = len(raw_of_record)
    assert parsed.num_rows + malformed.num_rows == read
    assert valid.num_rows + invalid.num_rows == parsed.num_rows
    dead = pa.concat_tables([malformed, invalid])
    for row in dead.select(["stage", "reason", "error", "source"]).to_pylist():
        assert row["reason"] in _REASONS[row["stage"]], row
        assert row["error"] and row["source"], row
    # Exactly one place per record: the record texts that come out are the ones that went in.
    out = raw_text(valid.column("_raw")).to_pylist() + dead.column("raw").to_pylist()
    assert Counter(out) == Counter(raw_of_record)
    # What the examples reached (pytest --hypothesis-show-statistics).
    event("some curated" if valid.num_rows else "none curated")
    for reason in set(dead.column("reason").to_pylist()):
        event(f"dead letter: {reason}")
    # Curated rows hold the contract's types, and a required field is never null there.
    for rule in spec.rules:
        if getattr(rule, "required", True) and getattr(rule, "default", None) is None:
            assert valid.column(rule.name).null_count == 0, rule.name
    return parsed, valid, dead


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    # A typed record (a struct) is compared as its text; repr lets NaN equal NaN.
    if "_raw" in a.column_names:
        a, b = (t.set_column(t.column_names.index("_raw"), "_raw", raw_text(t.column("_raw"))) for t in (a, b))
    assert repr(a.to_pydict()) == repr(b.to_pydict())


# Contract modes besides the specs' own (additive, discard_row): (undeclared fields, unusable values).
MODES = st.sampled_from([None, None, ("additive", "evolve"), ("strict", "discard_value"), ("discard", "discard_row")])


def _both(spec: Spec, parse, raw_of_record: list[str], modes: tuple | None = None) -> None:
    """The property, with the compiled passes and with their twins; both must agree."""
    with implementation(compiled=True):
        results = _run(spec, parse, raw_of_record, modes)
    with implementation(compiled=False):
        twins = _run(spec, parse, raw_of_record, modes)
    for a, b in zip(results, twins):
        _same(a, b)


def _json_parse(spec: Spec, lines: list[bytes], arrow_type=pa.binary(), sliced: bool = False):
    raw = pa.array([b"{}"] * sliced + lines, arrow_type).slice(int(sliced))
    sources = pa.array([f"mem:{i}" for i in range(len(lines))])
    return lambda: _parse_json_records(raw, sources, spec.parsed_names)


# Inputs that once broke a property, each kept as an explicit example (``data=None`` runs them).
REGRESSIONS_JSONL = [
    # Nested past the recursion limit of Python's json, with an integer beyond 64 bits: RecursionError.
    b'{"event_id":"e","order_id":"o","amount":' + b"[" * 1000 + b"12345678901234567890" + b"]" * 1000 + b"}\n",
    # Nested too deep for orjson's writer and Python's, undeclared then declared: RecursionError.
    b'{"zz":' + b"[" * 1020 + b"1" + b"]" * 1020 + b"}\n",
    b'{"email":' + b"[" * 1020 + b"1" + b"]" * 1020 + b"}\n",
    # A finite number too large to round to 2 decimals: ArrowInvalid (overflow during rounding).
    b'{"event_id":"e","event_type":"view","ts":"2024-01-01T00:00:00Z","amount":1.7976931348623157e308}\n',
]
REGRESSIONS_CSV = [
    b"event_id,order_id,amount,event_type,ts\ne,o,1e308,view,2024-01-01T00:00:00Z\n",
    # A carriage return inside the header line: csv.Error out of ReadFiles.
    BOM + b"event_id,event_id\r,\n,\n,\n",
    # A BOM before the header: its first column was named "\ufeffevent_id", so no row had an id.
    BOM + b"event_id,user_id,order_id,customer_id\ne1,u1,o1,c1\n",
]


def _typed_regressions() -> list[tuple[pa.Table, tuple | None]]:
    def instants(unit: str, *values: int) -> pa.Array:
        return pa.array(values, pa.int64()).cast(pa.timestamp(unit))

    usable = {"event_id": ["e"], "user_id": ["u"], "event_type": ["view"], "ts": ["2024-01-01T00:00:00Z"]}
    return [
        # Nanoseconds: ArrowInvalid (the cast to microseconds would lose data).
        (pa.table({"ts": instants("ns", 1), "order_id": instants("ns", -1)}), None),
        # Beyond int64 microseconds: ArrowInvalid (out of bounds timestamp).
        (pa.table({"ts": pa.array([2**31 - 1], pa.int32()).cast(pa.date32()), "zz": instants("s", 2**62)}), None),
        # Nested and binary columns in a record's text: ArrowNotImplementedError, ArrowInvalid (UTF-8).
        (pa.table({"event_id": pa.array([[1]], pa.list_(pa.int64())), "zz": pa.array([b"\xff"])}), None),
        (
            pa.table(
                {
                    "email": pa.array([{"a": 1}]),
                    "zz": pa.array([[("k", 1), ("k", 2)]], pa.map_(pa.string(), pa.int64())),
                }
            ),
            None,
        ),
        # Instants inside a list, beyond Python's years, in a record's text: OverflowError.
        (pa.table({"zz": pa.array([[2**62]], pa.list_(pa.int64())).cast(pa.list_(pa.timestamp("s")))}), None),
        # An unusable instant past the year 9999 kept under evolve: OverflowError.
        (pa.table({**usable, "amount": instants("us", 2**62)}), ("additive", "evolve")),
        # NaN in an undeclared float column: written into extras as `nan`, which is not JSON.
        (pa.table({**usable, "zz": pa.array([float("nan")])}), None),
    ]


@pytest.mark.parametrize("name", ["events", "orders"])
@fuzz(examples=100)
@given(data=st.data())
@example(data=None)
def test_jsonl_chunks_end_as_one_row_or_dead_letter_each(name, data):
    spec = SPECS[name]
    chunks = REGRESSIONS_JSONL if data is None else [data.draw(jsonl_chunk(name), label="chunk")]
    for chunk in chunks:
        lines = _lines(chunk)
        if not lines:
            continue
        kind, sliced, modes = pa.binary(), False, None
        if data is not None:
            kind = data.draw(st.sampled_from([pa.binary(), pa.large_binary()]), label="type")
            sliced = data.draw(st.booleans(), label="sliced")
            modes = data.draw(MODES, label="modes")
        _both(spec, _json_parse(spec, lines, kind, sliced), [_decode_raw(line) for line in lines], modes)


@pytest.mark.parametrize("name", ["events", "orders"])
@fuzz(examples=60)
@given(data=st.data())
@example(data=None)
def test_csv_chunks_end_as_one_row_or_dead_letter_each(name, data):
    spec = SPECS[name]
    if data is None:
        chunks = [(c, 1024) for c in REGRESSIONS_CSV]
    else:
        chunks = [(data.draw(csv_chunk(name), label="chunk"), data.draw(st.sampled_from([1024, 1 << 20])))]
    for chunk, chunk_bytes in chunks:
        for batch in _csv_batches(chunk, chunk_bytes):
            records = [_decode_raw(r) for r in batch.column("raw").to_pylist()]
            modes = None if data is None else data.draw(MODES, label="modes")
            _both(spec, lambda batch=batch: _parse_csv_batch(batch, spec.parsed_names), records, modes)


@pytest.mark.parametrize("name", ["events", "orders"])
@fuzz(examples=80)
@given(data=st.data())
@example(data=None)
def test_typed_tables_end_as_one_row_or_dead_letter_each(name, data):
    spec = SPECS[name]
    if data is None:
        cases = _typed_regressions()
    else:
        cases = [(data.draw(typed_table(name), label="table"), data.draw(MODES, label="modes"))]
    for table, modes in cases:
        table = table.append_column("_source", pa.array(["mem.parquet"] * table.num_rows))  # as ReadFiles adds it
        with implementation(compiled=True):
            expected = raw_text(_parse_arrow_records(table, spec.parsed_names).column("_raw")).to_pylist()
        for text in expected:  # a typed record's text is JSON
            json.loads(text)
        _both(spec, lambda table=table: (_parse_arrow_records(table, spec.parsed_names), empty_dead_letters()),
              expected, modes)  # fmt: skip


@fuzz(examples=150)
@given(lines=st.lists(json_line("events"), min_size=1, max_size=30))
def test_fast_paths_parse_as_the_per_line_parser_does(lines):
    """The compiled scanner and the Arrow passes give the per-line parser's slots."""
    fields = SPECS["events"].fields
    raw = pa.array(lines, pa.binary())
    sources = pa.array(["s"] * len(lines))
    reference = _parse_json_lines(raw, sources, fields)[:2]
    for compiled in (True, False):
        with implementation(compiled):
            for a, b in zip(_parse_json_records(raw, sources, fields), reference):
                _same(a, b)


@fuzz(examples=100)
@given(data=st.data())
def test_a_bom_starting_a_file_is_not_data(data):
    """A file that starts with a BOM reads as the same file without it."""
    spec = data.draw(st.sampled_from(["events", "orders"]), label="spec")
    if data.draw(st.booleans(), label="csv"):
        chunk = data.draw(csv_chunk(spec), label="chunk").removeprefix(BOM)
        read = [(b.schema.metadata, b.column("raw").to_pylist()) for b in _csv_batches(chunk, 1024)]
        assert [(b.schema.metadata, b.column("raw").to_pylist()) for b in _csv_batches(BOM + chunk, 1024)] == read
    else:
        chunk = data.draw(jsonl_chunk(spec), label="chunk").removeprefix(BOM)
        assert _lines(BOM + chunk) == _lines(chunk)


# ---------------------------------------------------------------- one end-to-end property


@fuzz(examples=4, suppress=[HealthCheck.function_scoped_fixture])  # the fixture makes pipelines, keeps no state
@given(name=st.sampled_from(["events", "orders"]), fmt=st.sampled_from(["jsonl", "csv"]), data=st.data())
def test_pipeline_conserves_every_record(name, fmt, data, pipeline):
    """The whole spec pipeline (TestPipeline) reading a generated file with ReadFiles: its
    report counts every record read exactly once, and every dead letter has a stage and reason."""
    chunk = data.draw(jsonl_chunk(name) if fmt == "jsonl" else csv_chunk(name), label="file")
    read = len(_lines(chunk)) if fmt == "jsonl" else sum(b.num_rows for b in _csv_batches(chunk, 1024))
    event(f"{name} {fmt}: {read} records")
    cfg = EventsConfig(
        input=None, input_format=fmt, output="unused", shuffle_partitions=2, expectations="none", pipeline=name
    )
    with tempfile.TemporaryDirectory() as tmp, pipeline() as p:
        path = os.path.join(tmp, f"in.{fmt}")
        with open(path, "wb") as f:
            f.write(chunk)
        out = build(p, cfg, PipelineIO(source=ReadFiles(path, fmt, chunk_bytes=1024)))
        report = out["report"] | "Conserved" >> beam.Map(lambda r: (r["conservation_ok"], r["counts"]["read"]))
        assert_that(report, equal_to([(True, read)]), label="report")
        unnamed = out["dead_letters"] | "Unnamed" >> beam.FlatMap(
            lambda t: [r for r in t.select(["stage", "reason"]).to_pylist() if not (r["stage"] and r["reason"])]
        )
        assert_that(unnamed, equal_to([]), label="reasons")
