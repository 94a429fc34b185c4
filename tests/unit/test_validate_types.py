"""The contract types' rules (integer, boolean, decimal) and the rules' new parameters, on
JSON lines, CSV and parquet input, through parse and validate on Arrow tables."""

import csv
import io
import json
import random
import re
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Context, Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.ingest.parse import _parse_arrow_records
from transforms.ingest.parse import _parse_csv_records as _csv
from transforms.ingest.parse import _parse_json_records as _json
from transforms.ingest.slots import Slots
from transforms.ingest.validate import (
    BooleanField,
    CodeField,
    DecimalField,
    EnumField,
    IdField,
    IntegerField,
    NumberField,
    TextField,
    TimestampField,
    ValidateSchema,
    validate_table,
)

MISSING, INVALID = "<missing_field>", "<invalid_value>"
FORMATS = ("jsonl", "csv", "parquet")


class Raw(str):
    """A JSON literal written into the line as it is (``1e2``, ``19.99``, 20-digit integers)."""


def json_line(value) -> bytes:
    if value is ...:
        return b'{"id": 0}'
    text = value if isinstance(value, Raw) else json.dumps(value)
    return ('{"id": 0, "x": ' + text + "}").encode()


def parsed_json(values) -> pa.Table:
    lines = [json_line(v) for v in values]
    parsed, bad = _json(pa.array(lines, pa.binary()), pa.array(["t.jsonl"] * len(lines)), ("id", "x"))
    assert bad.num_rows == 0
    return parsed


def parsed_csv(values) -> pa.Table:
    """One CSV row per value (None: an empty cell); the ``x`` column is absent from the header
    when every value is ``...``."""
    header = ["id"] if all(v is ... for v in values) else ["id", "x"]
    rows = []
    for v in values:
        buf = io.StringIO()
        csv.writer(buf).writerow(["0"] if len(header) == 1 else ["0", "" if v is None else v])
        rows.append(buf.getvalue().rstrip("\r\n").encode())
    parsed, bad = _csv(pa.array(rows, pa.binary()), pa.array(["t.csv"] * len(rows)), header, ("id", "x"))
    assert bad.num_rows == 0
    return parsed


def parsed_parquet(values, arrow_type=None) -> pa.Table:
    """The values as one typed column written to parquet and read back (``...``: no column)."""
    columns = {"id": pa.array([0] * len(values), pa.int64())}
    if not all(v is ... for v in values):
        columns["x"] = pa.array([None if v is ... else v for v in values], arrow_type)
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return _parse_arrow_records(pq.read_table(pa.BufferReader(buf.getvalue())), ("id", "x"))


def parsed(fmt: str, values, arrow_type=None) -> pa.Table:
    if fmt == "jsonl":
        return parsed_json(values)
    if fmt == "csv":
        return parsed_csv(values)
    return parsed_parquet(values, arrow_type)


def outcomes(rule, table: pa.Table, expected_type: pa.DataType | None = None) -> list:
    """Each row's outcome of ``rule`` (its field is ``x``): the value, MISSING or INVALID."""
    out = rule.apply(Slots(table, "x"), {})
    if expected_type is not None:
        assert out.value.type == expected_type
    n = table.num_rows
    missing = out.missing.to_pylist() if out.missing is not None else [False] * n
    invalid = out.invalid.to_pylist() if out.invalid is not None else [False] * n
    return [MISSING if m else INVALID if i else v for v, m, i in zip(out.value.to_pylist(), missing, invalid)]


def check(rule, fmt, cases, arrow_type=None, expected_type=None):
    """``cases``: (input value, expected outcome) pairs; checked as one batch and row by row
    (a one-row batch takes the paths for its single kind, the whole batch the general one)."""
    values = [v for v, _ in cases]
    expected = [e for _, e in cases]
    assert outcomes(rule, parsed(fmt, values, arrow_type), expected_type) == expected
    for v, e in cases:
        assert outcomes(rule, parsed(fmt, [v], arrow_type), expected_type) == [e], v


def errors(rule, values) -> list[tuple[str, str, str]]:
    """(reason, field, error) of the dead letters of JSON records holding ``values``."""
    _, dead = validate_table(parsed_json(values), (IdField("id"), rule), "additive")
    return [(r["reason"], r["field"], r["error"]) for r in dead.to_pylist()]


# --- IntegerField --------------------------------------------------------------------------


def test_integer_json(scanner):
    check(
        IntegerField("x"),
        "jsonl",
        [
            (1, 1), (-2, -2), ("3", 3), (" +4 ", 4), ("-0", 0), ("007", 7), ("\t-12\n", -12),
            (5.0, 5), (-0.0, 0), (Raw("1e2"), 100), (2**53, 2**53), (Raw("9007199254740992.0"), 2**53),
            (5.5, INVALID), (Raw("9007199254740994.0"), INVALID), ("1e2", INVALID), ("3.0", INVALID),
            ("", INVALID), ("  ", INVALID), ("- 1", INVALID), ("1_000", INVALID), ("abc", INVALID),
            (True, INVALID), (False, INVALID), ([1], INVALID), ({"a": 1}, INVALID),
            (None, None), (..., None),
        ],
        expected_type=pa.int64(),
    )  # fmt: skip


def test_integer_19_and_more_digits(scanner):
    check(
        IntegerField("x"),
        "jsonl",
        [
            (Raw("9223372036854775807"), 2**63 - 1), (Raw("-9223372036854775808"), -(2**63)),
            (Raw("1234567890123456789"), 1234567890123456789),
            (Raw("9223372036854775808"), INVALID), (Raw("-9223372036854775809"), INVALID),
            (Raw("12345678901234567890123"), INVALID),
            ("9223372036854775807", 2**63 - 1), ("-9223372036854775808", -(2**63)),
            ("+09223372036854775807", 2**63 - 1), ("0000000000000000000000000042", 42),
            ("9223372036854775808", INVALID), ("-9223372036854775809", INVALID),
            ("99999999999999999999", INVALID), ("-12345678901234567890123", INVALID),
        ],
    )  # fmt: skip


def test_integer_32_bits_and_bounds(scanner):
    check(
        IntegerField("x", bits=32),
        "jsonl",
        [(2**31 - 1, 2**31 - 1), (-(2**31), -(2**31)), (2**31, INVALID), (-(2**31) - 1, INVALID),
         ("2147483648", INVALID), (4294967296.0, INVALID), (None, None)],
        expected_type=pa.int32(),
    )  # fmt: skip
    check(
        IntegerField("x", minimum=0, maximum=10),
        "jsonl",
        [(0, 0), (10, 10), ("10", 10), (10.0, 10), (-1, INVALID), (11, INVALID), ("11", INVALID)],
    )
    check(IntegerField("x", bits=32, minimum=-5), "jsonl", [(-5, -5), (2**31 - 1, 2**31 - 1), (2**31, INVALID)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_integer_required_and_default(fmt):
    values = ["12", " -3 ", None, "x"]
    assert outcomes(IntegerField("x"), parsed(fmt, values), pa.int64()) == [12, -3, None, INVALID]
    assert outcomes(IntegerField("x", required=True), parsed(fmt, values)) == [12, -3, MISSING, INVALID]
    assert outcomes(IntegerField("x", default=7), parsed(fmt, values)) == [12, -3, 7, INVALID]
    assert outcomes(IntegerField("x", required=True, default=7), parsed(fmt, values)) == [12, -3, 7, INVALID]
    assert outcomes(IntegerField("x", bits=32, default=7), parsed(fmt, [...]), pa.int32()) == [7]
    assert outcomes(IntegerField("x", required=True), parsed(fmt, [...])) == [MISSING]


def test_integer_csv():
    check(
        IntegerField("x", bits=32, maximum=100),
        "csv",
        [("12", 12), (" -3 ", -3), ("100", 100), ("101", INVALID), ("1.5", INVALID), ("3.0", INVALID),
         ("99999999999999999999", INVALID), ("2147483648", INVALID), ("", None), (" ", INVALID)],
        expected_type=pa.int32(),
    )  # fmt: skip


@pytest.mark.parametrize(
    "arrow_type,values,expected",
    [
        (pa.int8(), [-128, 127, None], [-128, 127, None]),
        (pa.uint32(), [0, 2**32 - 1], [0, 2**32 - 1]),
        (pa.int64(), [2**63 - 1, -(2**63)], [2**63 - 1, -(2**63)]),
        (pa.uint64(), [2**63 - 1, 2**63, 2**64 - 1], [2**63 - 1, INVALID, INVALID]),
        (pa.float64(), [3.0, -2.0, 3.5, float("nan"), float("inf"), None], [3, -2, INVALID, INVALID, INVALID, None]),
        (pa.bool_(), [True], [INVALID]),
        (pa.string(), ["42", "4x"], [42, INVALID]),
        (pa.decimal128(10, 2), [Decimal("3.00"), Decimal("3.50")], [3, INVALID]),
    ],
)
def test_integer_parquet(arrow_type, values, expected):
    assert outcomes(IntegerField("x"), parsed_parquet(values, arrow_type), pa.int64()) == expected


def test_integer_32_bits_on_wide_parquet_columns():
    values = [2**31 - 1, 2**31, -(2**40), None]
    assert outcomes(IntegerField("x", bits=32), parsed_parquet(values, pa.int64()), pa.int32()) == [
        2**31 - 1, INVALID, INVALID, None
    ]  # fmt: skip


def test_integer_on_typed_timestamps_names_the_instant():
    table = parsed_parquet([datetime(2024, 1, 1, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC"))
    assert outcomes(IntegerField("x"), table) == [INVALID]
    _, dead = validate_table(table, (IdField("id"), IntegerField("x")), "additive")
    assert dead.column("error").to_pylist() == ["x must be a 64-bit integer, got 2024-01-01T00:00:00.000000Z"]


# --- BooleanField --------------------------------------------------------------------------


def test_boolean_json(scanner):
    check(
        BooleanField("x"),
        "jsonl",
        [
            (True, True), (False, False), (" TRUE ", True), ("False", False), ("yes", True), ("No", False),
            ("t", True), ("F", False), ("Y", True), ("n", False), ("1", True), ("0", False), (" 1 ", True),
            (1, True), (0, False),
            (2, INVALID), (-1, INVALID), (1.0, INVALID), (0.0, INVALID), ("", INVALID), ("  ", INVALID),
            ("maybe", INVALID), ("truthy", INVALID), ("01", INVALID), ("on", INVALID), ([True], INVALID),
            (None, None), (..., None),
        ],
        expected_type=pa.bool_(),
    )  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_boolean_strings_required_and_default(fmt):
    values = ["true", " FALSE ", "Yes", "n", "0", "2", "", None]
    assert outcomes(BooleanField("x"), parsed(fmt, values), pa.bool_()) == (
        [True, False, True, False, False, INVALID] + ([INVALID, None] if fmt != "csv" else [None, None])
    )
    required = outcomes(BooleanField("x", required=True), parsed(fmt, values))
    assert required[-1] == MISSING and required[:6] == [True, False, True, False, False, INVALID]
    assert outcomes(BooleanField("x", default=False), parsed(fmt, [None, "y"])) == [False, True]
    assert outcomes(BooleanField("x", required=True, default=True), parsed(fmt, [None])) == [True]
    assert outcomes(BooleanField("x", required=True), parsed(fmt, [...])) == [MISSING]


@pytest.mark.parametrize(
    "arrow_type,values,expected",
    [
        (pa.bool_(), [True, False, None], [True, False, None]),
        (pa.int8(), [1, 0, 2, None], [True, False, INVALID, None]),
        (pa.uint64(), [1, 2**64 - 1], [True, INVALID]),
        (pa.float64(), [1.0, 0.0], [INVALID, INVALID]),
        (pa.string(), [" TRUE ", "nope"], [True, INVALID]),
    ],
)
def test_boolean_parquet(arrow_type, values, expected):
    assert outcomes(BooleanField("x"), parsed_parquet(values, arrow_type), pa.bool_()) == expected


# --- DecimalField --------------------------------------------------------------------------


def D(text: str) -> Decimal:  # noqa: N802 - reads like the type it builds
    return Decimal(text)


def test_decimal_json_text_is_exact(scanner):
    check(
        DecimalField("x"),
        "jsonl",
        [
            ("19.99", D("19.99")), ("1e2", D("100.00")), ("1E-3", D("0.00")), (" -0.005 ", D("-0.01")),
            ("0.005", D("0.01")), ("-0.004", D("0.00")), ("0.125", D("0.13")), ("-2.345", D("-2.35")),
            ("+.5", D("0.50")), ("5.", D("5.00")), ("-0", D("0.00")), ("0000000000000000000000000000000000000000012.5", D("12.50")),
            ("0." + "0" * 45 + "9", D("0.00")), ("1.23456789012345678901234567890123456789", D("1.23")),
            (Raw("19.99"), D("19.99")), (Raw("1e2"), D("100.00")), (Raw("2.675"), D("2.68")), (Raw("-0.005"), D("-0.01")),
            (Raw("0.1"), D("0.10")), (7, D("7.00")), (Raw("1E-7"), D("0.00")),
            ("9999999999999999.99", D("9999999999999999.99")), ("9999999999999999.994", D("9999999999999999.99")),
            ("9999999999999999.995", INVALID), ("-9999999999999999.995", INVALID), ("10000000000000000", INVALID),
            ("1e16", INVALID), (Raw("1e17"), INVALID), (Raw("12345678901234567890"), INVALID),
            ("abc", INVALID), ("", INVALID), (" ", INVALID), ("1,5", INVALID), ("1e", INVALID), ("nan", INVALID),
            ("inf", INVALID), (True, INVALID), ([1], INVALID),
            (None, None), (..., None),
        ],
        expected_type=pa.decimal128(18, 2),
    )  # fmt: skip


def test_decimal_precision_and_scale(scanner):
    check(
        DecimalField("x", precision=38, scale=0),
        "jsonl",
        [
            (Raw("12345678901234567890"), D("12345678901234567890")), ("9" * 38, D("9" * 38)),
            ("-" + "9" * 38, D("-" + "9" * 38)), ("9" * 37 + ".5", D("1" + "0" * 37)), ("9" * 38 + ".5", INVALID),
            ("1" * 39, INVALID), ("2.5", D("3")), ("-2.5", D("-3")), ("1e37", D("1" + "0" * 37)),
        ],
        expected_type=pa.decimal128(38, 0),
    )  # fmt: skip
    check(
        DecimalField("x", precision=4, scale=4),
        "jsonl",
        [("0.12345", D("0.1235")), ("-0.99995", INVALID), ("0.99994", D("0.9999")), ("1", INVALID), ("0", D("0"))],
        expected_type=pa.decimal128(4, 4),
    )
    check(DecimalField("x", precision=38, scale=37), "jsonl", [("1." + "5" * 40, D("1." + "5" * 36 + "6"))])


def test_decimal_bounds(scanner):
    check(
        DecimalField("x", minimum=0, maximum="100.5"),
        "jsonl",
        [("0", D("0.00")), ("100.5", D("100.50")), ("100.504", D("100.50")), ("100.505", INVALID),
         ("-0.004", D("0.00")), ("-0.005", INVALID), (Raw("-1e-9"), D("0.00"))],
    )  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_decimal_strings_required_and_default(fmt):
    values = ["19.99", " 1E2 ", "-0.005", "1,000", "", None]
    tail = [INVALID, None] if fmt != "csv" else [None, None]
    assert outcomes(DecimalField("x"), parsed(fmt, values), pa.decimal128(18, 2)) == [
        D("19.99"), D("100.00"), D("-0.01"), INVALID
    ] + tail  # fmt: skip
    assert outcomes(DecimalField("x", required=True), parsed(fmt, [None]))[0] == MISSING
    assert outcomes(DecimalField("x", default="0.5"), parsed(fmt, [None, "2"])) == [D("0.50"), D("2.00")]
    assert outcomes(DecimalField("x", precision=5, scale=1, default=3), parsed(fmt, [...]), pa.decimal128(5, 1)) == [
        D("3.0")
    ]


@pytest.mark.parametrize(
    "arrow_type,values,expected",
    [
        # 18 significant digits: float64 would lose the last ones.
        (pa.decimal128(20, 4), [D("12345678901234.5678"), D("-0.0050"), None],
         [D("12345678901234.57"), D("-0.01"), None]),
        (pa.decimal256(40, 2), [D("1.50")], [D("1.50")]),
        (pa.int64(), [10**15, 2**63 - 1], [D("1000000000000000.00"), INVALID]),
        (pa.uint64(), [2**64 - 1], [INVALID]),
        (pa.float64(), [0.1, 2.675, 1e300, float("nan"), float("inf")], [D("0.10"), D("2.68"), INVALID, INVALID, INVALID]),
        (pa.string(), ["19.99", "x"], [D("19.99"), INVALID]),
        (pa.bool_(), [True], [INVALID]),
    ],
)  # fmt: skip
def test_decimal_parquet(arrow_type, values, expected):
    assert outcomes(DecimalField("x"), parsed_parquet(values, arrow_type), pa.decimal128(18, 2)) == expected


def test_decimal_wide_parquet_integers_stay_exact():
    values = [2**64 - 1, 2**63]
    assert outcomes(DecimalField("x", precision=38, scale=0), parsed_parquet(values, pa.uint64())) == [
        D(str(2**64 - 1)), D(str(2**63))
    ]  # fmt: skip


def _reference(text: str, precision: int, scale: int):
    if not re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", text):
        return INVALID
    digits, _, exponent = text.strip().lower().partition("e")
    mantissa, shift = Decimal(digits), int(exponent or 0)
    if mantissa.is_zero() or mantissa.adjusted() + shift < -50:  # zero at any scale
        return Decimal(0)
    if mantissa.adjusted() + shift > 50:  # beyond any decimal128
        return INVALID
    d = mantissa.scaleb(shift, context=Context(prec=500))
    q = d.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=Context(prec=500))
    return q if abs(q) < Decimal(10) ** (precision - scale) else INVALID


def _numeric_text(rng) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 24)))
    frac = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 24)))
    text = (digits or "0") + ("." + frac if rng.random() < 0.7 else "")
    if rng.random() < 0.2:
        text = "0" * rng.randrange(1, 30) + text
    if rng.random() < 0.15:
        text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randrange(0, 40))
    if rng.random() < 0.15:
        text = text[: rng.randrange(1, 6)] + rng.choice("5499") * rng.randrange(1, 20)  # half-way and carry cases
    return rng.choice(["", "", "-", "+"]) + text


@pytest.mark.parametrize("precision,scale", [(18, 2), (38, 2), (38, 0), (10, 5), (37, 36), (3, 0), (1, 1)])
def test_decimal_batch_equals_python_decimal(precision, scale):
    rng = random.Random(precision * 100 + scale)
    texts = [_numeric_text(rng) for _ in range(3000)]
    got = outcomes(DecimalField("x", precision, scale), parsed_json(texts), pa.decimal128(precision, scale))
    for text, value in zip(texts, got):
        assert value == _reference(text, precision, scale), text


def _plain_text(rng, malformed: bool) -> str:
    """Short numbers without exponent or spaces (a batch of them is one cast), or now and
    then one malformed on the same bytes."""
    if malformed and rng.random() < 0.05:
        return rng.choice(["1.2.3", "--1", "+", ".", "-", "1-", "+-2", "..5", "5+"])
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 9)))
    frac = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 7)))
    text = digits + ("." + frac if rng.random() < 0.8 else "")
    if not digits and not frac:
        text = "0"
    if rng.random() < 0.2:
        text = text.rstrip("0123456789")[:-1] + rng.choice(["5", "95", "995", "4", "49"]) if "." in text else text
    return rng.choice(["", "", "-", "+"]) + text


@pytest.mark.parametrize("malformed", [False, True])
@pytest.mark.parametrize("precision,scale", [(18, 2), (10, 5), (3, 0), (6, 6), (36, 2), (37, 3)])
def test_decimal_short_plain_batches_equal_python_decimal(precision, scale, malformed):
    rng = random.Random(precision * 100 + scale + malformed)
    for decimals in (scale, scale + 3):  # none beyond the scale (one checked cast), and some
        texts = [_plain_text(rng, malformed) for _ in range(1500)]
        texts = [t if decimals > scale or "." not in t else t[: t.index(".") + 1 + scale] for t in texts]
        got = outcomes(DecimalField("x", precision, scale), parsed_json(texts), pa.decimal128(precision, scale))
        for text, value in zip(texts, got):
            assert value == _reference(text, precision, scale), text


def _int_like(rng) -> str:
    if rng.random() < 0.05:
        return rng.choice(["", "1-", "--1", "+-1", "-", "1.0", "0x1f", " 7"])
    width = rng.choice([1, 3, 9, 17, 18, 19, 19, 20, 25])
    digits = rng.choice("123456789") + "".join(rng.choice("0123456789") for _ in range(width - 1))
    if width == 19 and rng.random() < 0.5:
        digits = rng.choice(["9223372036854775807", "9223372036854775808", "9223372036854775806"])
    return rng.choice(["", "", "-", "+", "00", "-0"]) + digits


@pytest.mark.parametrize("seed", range(3))
def test_integer_strings_equal_python_int(seed):
    rng = random.Random(seed)
    texts = [_int_like(rng) for _ in range(2000)]
    for batch in (texts, [t for t in texts if t and "+" not in t and not t.startswith(" ")]):
        got = outcomes(IntegerField("x"), parsed_csv(batch), pa.int64())
        for text, value in zip(batch, got):
            if re.fullmatch(r"\s*[+-]?\d+\s*", text) and -(2**63) <= int(text) < 2**63:
                assert value == int(text), text
            else:
                assert value == (None if text == "" else INVALID), text


# --- messages, config, types of empty batches ------------------------------------------------


def test_error_messages():
    assert errors(IntegerField("x", bits=32, minimum=0, maximum=10), [11, "1e2"]) == [
        ("invalid_value", "x", "x must be a 32-bit integer >= 0 and <= 10, got 11"),
        ("invalid_value", "x", "x must be a 32-bit integer >= 0 and <= 10, got 1e2"),
    ]
    assert errors(IntegerField("x", required=True), [None]) == [("missing_field", "x", "x is missing or null")]
    assert errors(BooleanField("x"), ["maybe"]) == [
        ("invalid_value", "x", "x must be true/false, 1/0, yes/no, t/f or y/n, got maybe")
    ]
    assert errors(DecimalField("x", minimum="0.5"), ["1e20", "0.1"]) == [
        ("invalid_value", "x", "x must be a number >= 0.5 with at most 16 integer digits, got 1e20"),
        ("invalid_value", "x", "x must be a number >= 0.5 with at most 16 integer digits, got 0.1"),
    ]
    assert errors(NumberField("x", maximum=10.0), [10.5]) == [
        ("invalid_value", "x", "x must be a finite number >= 0 and <= 10, got 10.5")
    ]
    assert errors(NumberField("x", minimum=None, maximum=10.0), [10.5])[0][2] == (
        "x must be a finite number <= 10, got 10.5"
    )
    window = TimestampField("x", minimum="2020-01-01", maximum="2021-01-01T12:00:00+00:00")
    assert errors(window, ["2019-12-31T23:59:59Z"])[0][2] == (
        "x must be ISO-8601 or epoch seconds/milliseconds within [2020-01-01, 2021-01-01T12:00:00+00:00), "
        "got 2019-12-31T23:59:59Z"
    )


ALL_RULES = [
    (IdField("x"), pa.string()),
    (EnumField("x", ("a", "b"), required=False), pa.string()),
    (NumberField("x"), pa.float64()),
    (NumberField("x", decimals=None, default=1.5), pa.float64()),
    (CodeField("x", "^[a-z]+$", case="keep"), pa.string()),
    (TimestampField("x", required=False), pa.timestamp("us", tz="UTC")),
    (TextField("x", default="n/a"), pa.string()),
    (IntegerField("x"), pa.int64()),
    (IntegerField("x", bits=32, required=True), pa.int32()),
    (IntegerField("x", bits=32, default=3), pa.int32()),
    (BooleanField("x"), pa.bool_()),
    (BooleanField("x", default=True), pa.bool_()),
    (DecimalField("x"), pa.decimal128(18, 2)),
    (DecimalField("x", precision=38, scale=10, default=1), pa.decimal128(38, 10)),
]


@pytest.mark.parametrize("rule,arrow_type", ALL_RULES, ids=lambda r: repr(r)[:60])
@pytest.mark.parametrize(
    "table",
    [
        lambda: parsed_json([None, None]),
        lambda: parsed_json([..., ...]),
        lambda: parsed_csv([None, None]),
        lambda: parsed_csv([..., ...]),
        lambda: parsed_parquet([None, None], pa.null()),
        lambda: parsed_parquet([..., ...]),
        lambda: parsed_parquet([], pa.string()),
        lambda: parsed_json([]),
    ],
    ids=["json-null", "json-absent", "csv-null", "csv-absent", "parquet-null", "parquet-absent", "parquet-empty",
         "json-empty"],
)  # fmt: skip
def test_output_type_holds_for_null_and_empty_batches(rule, arrow_type, table):
    table = table()
    assert rule.apply(Slots(table, "x"), {}).value.type == arrow_type
    valid, dead = validate_table(table, (IdField("id"), rule), "additive")
    assert valid.schema.field("x").type == arrow_type
    assert valid.num_rows + dead.num_rows == table.num_rows


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: IntegerField("x", bits=16), "bits"),
        (lambda: IntegerField("x", minimum=5, maximum=4), "no 64-bit integer"),
        (lambda: IntegerField("x", bits=32, minimum=2**31), "no 32-bit integer"),
        (lambda: IntegerField("x", maximum=3, default=4), "default"),
        (lambda: IntegerField("x", default=1.5), "default"),
        (lambda: BooleanField("x", default="yes"), "default"),
        (lambda: DecimalField("x", precision=39), "precision"),
        (lambda: DecimalField("x", precision=5, scale=6), "scale"),
        (lambda: DecimalField("x", minimum="0.001"), "minimum"),
        (lambda: DecimalField("x", precision=3, scale=1, maximum=100), "maximum"),
        (lambda: DecimalField("x", minimum=2, maximum=1), "above"),
        (lambda: DecimalField("x", maximum=1, default=2), "default"),
        (lambda: DecimalField("x", default="abc"), "not a number"),
        (lambda: EnumField("x", ("a", "b"), default="c"), "default"),
        (lambda: NumberField("x", minimum=1.0, maximum=0.0), "above"),
        (lambda: NumberField("x", default=-1.0), "default"),
        (lambda: CodeField("x", "^a$", case="title"), "case"),
        (lambda: TimestampField("x", minimum="soon"), "ISO-8601"),
        (lambda: TimestampField("x", minimum="2021-01-01", maximum="2020-01-01"), "before"),
        (lambda: TimestampField("x", default="1999-01-01T00:00:00Z"), "default"),
    ],
)
def test_bad_config_fails_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _typed_rows(t: pa.Table) -> list[tuple]:
    types = (str(t.schema.field("n").type), str(t.schema.field("d").type))
    return [(*types, r["id"], r["n"], r["b"], r["d"]) for r in t.to_pylist()]


def test_validate_schema_composite_with_the_new_rules(pipeline):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    lines = [b'{"id": 1, "n": "7", "b": "yes", "d": 19.99}', b'{"id": 2, "n": 1.5, "b": true, "d": "1"}']
    batch = pa.table({"raw": pa.array(lines, pa.binary()), "source": ["s", "s"]})
    rules = (IdField("id"), IntegerField("n", bits=32), BooleanField("b"), DecimalField("d", 10, 3))
    with pipeline() as p:
        from transforms.ingest.parse import ParseRecords

        parsed = p | beam.Create([batch]) | ParseRecords("jsonl", ("id", "n", "b", "d"))
        out = parsed["parsed"] | ValidateSchema(rules)
        valid = out["valid"] | "v" >> beam.FlatMap(_typed_rows)
        assert_that(valid, equal_to([("int32", "decimal128(10, 3)", "1", 7, True, D("19.990"))]), label="valid")
        dead = out["dead_letters"] | "d" >> beam.Map(lambda t: t.select(["field", "error"]).to_pylist())
        assert_that(dead, equal_to([[{"field": "n", "error": "n must be a 32-bit integer, got 1.5"}]]), label="dead")


# --- the existing rules' new parameters ----------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_enum_required_and_default(fmt):
    values = [" View ", "nope", None]
    assert outcomes(EnumField("x", ("view", "click")), parsed(fmt, values)) == ["view", INVALID, MISSING]
    assert outcomes(EnumField("x", ("view", "click"), required=False), parsed(fmt, values)) == ["view", INVALID, None]
    assert outcomes(EnumField("x", ("view", "click"), default=" Click"), parsed(fmt, values)) == [
        "view", INVALID, "click"
    ]  # fmt: skip
    assert outcomes(EnumField("x", ("view",), required=False), parsed(fmt, [...])) == [None]


@pytest.mark.parametrize("fmt", FORMATS)
def test_timestamp_required_and_default(fmt):
    values = ["2024-01-01T10:00:00+02:00", "soon", None]
    jan1 = datetime(2024, 1, 1, 8, tzinfo=timezone.utc)
    assert outcomes(TimestampField("x"), parsed(fmt, values)) == [jan1, INVALID, MISSING]
    assert outcomes(TimestampField("x", required=False), parsed(fmt, values)) == [jan1, INVALID, None]
    default = TimestampField("x", default="2020-06-01")  # no offset: UTC
    assert outcomes(default, parsed(fmt, values))[2] == datetime(2020, 6, 1, tzinfo=timezone.utc)
    # Bounds without an offset are UTC too, whatever the machine's zone.
    narrow = TimestampField("x", minimum="2024-01-01T08:00:00", maximum="2024-01-01T08:00:01")
    assert outcomes(narrow, parsed(fmt, values)) == [jan1, INVALID, MISSING]


@pytest.mark.parametrize("fmt", FORMATS)
def test_number_maximum_decimals_required_default(fmt):
    values = ["1.23456", "10", "10.01", "-1", None]
    assert outcomes(NumberField("x", maximum=10.0), parsed(fmt, values)) == [1.23, 10.0, INVALID, INVALID, None]
    assert outcomes(NumberField("x", minimum=None, decimals=None), parsed(fmt, values)) == [
        1.23456, 10.0, 10.01, -1.0, None
    ]  # fmt: skip
    assert outcomes(NumberField("x", required=True), parsed(fmt, values))[4] == MISSING
    assert outcomes(NumberField("x", default=0.125), parsed(fmt, values))[4] == 0.13
    assert outcomes(NumberField("x", decimals=None, default=0.125), parsed(fmt, [...])) == [0.125]


def test_number_required_wins_over_required_if():
    rule = NumberField("x", required=True, required_if=("id", ("nothing",)))
    out = rule.apply(Slots(parsed_json([None, 1]), "x"), {"id": pa.array(["0", "0"])})
    assert out.missing.to_pylist() == [True, False]


@pytest.mark.parametrize("fmt", FORMATS)
def test_code_case_and_required(fmt):
    values = [" eUr ", "x1", None]
    pattern = "^[A-Za-z]{3}$"
    assert outcomes(CodeField("x", pattern), parsed(fmt, values)) == ["EUR", INVALID, None]
    assert outcomes(CodeField("x", pattern, case="lower"), parsed(fmt, values)) == ["eur", INVALID, None]
    assert outcomes(CodeField("x", pattern, case="keep"), parsed(fmt, values)) == ["eUr", INVALID, None]
    assert outcomes(CodeField("x", pattern, required=True), parsed(fmt, values)) == ["EUR", INVALID, MISSING]
    assert outcomes(CodeField("x", pattern, default="USD", required=True), parsed(fmt, values))[2] == "USD"


@pytest.mark.parametrize("fmt", FORMATS)
def test_text_required_and_default(fmt):
    values = ["a b ", None]
    assert outcomes(TextField("x"), parsed(fmt, values)) == ["a b ", None]
    assert outcomes(TextField("x", required=True), parsed(fmt, values)) == ["a b ", MISSING]
    assert outcomes(TextField("x", default="n/a"), parsed(fmt, values)) == ["a b ", "n/a"]
    assert outcomes(TextField("x", required=True), parsed(fmt, [...])) == [MISSING]


# --- a batch decides as its rows do one by one ---------------------------------------------

VARIED = [
    1, -7, 0, 2**31, 2**63 - 1, Raw("9223372036854775808"), Raw("123456789012345678901234"), 3.0, 2.5, -0.0,
    Raw("1e2"), Raw("19.99"), Raw("2.675"), Raw("1e17"), "42", " -3 ", "+0012", "1e2", "19.99", "-0.005",
    "9223372036854775807", "-9223372036854775809", "", " ", "abc", "true", " NO ", "y", "1", "0", True, False,
    None, ..., [1], {"a": 1}, "9999999999999999.995", "0." + "5" * 45,
]  # fmt: skip
TYPE_RULES = [
    IntegerField("x"),
    IntegerField("x", bits=32, minimum=-5, maximum=100, default=9),
    BooleanField("x"),
    BooleanField("x", required=True),
    DecimalField("x"),
    DecimalField("x", precision=38, scale=3, minimum=-1, required=True),
]


@pytest.mark.parametrize("rule", TYPE_RULES, ids=lambda r: repr(r)[:60])
@pytest.mark.parametrize("seed", range(3))
def test_a_mixed_batch_decides_as_its_rows_do_one_by_one(rule, seed, scanner):
    rng = random.Random(seed)
    values = [rng.choice(VARIED) for _ in range(200)]
    whole = outcomes(rule, parsed_json(values))
    assert whole == [outcomes(rule, parsed_json([v]))[0] for v in values]


@pytest.mark.parametrize("fmt", FORMATS)
def test_timestamp_offsets_of_sixty_minutes_or_more_are_invalid(fmt):
    # Python's fromisoformat carries +05:60 over to +06:00; an offset's minutes stop at 59.
    values = ["2024-01-01T00:00:00+05:60", "2024-01-01T00:00+0599", "2024-01-01T06:00:00+05:59"]
    assert outcomes(TimestampField("x"), parsed(fmt, values)) == [
        INVALID,
        INVALID,
        datetime(2024, 1, 1, 0, 1, tzinfo=timezone.utc),
    ]


def test_timestamp_float_that_rounds_onto_the_maximum_is_invalid():
    # 4102444799.9999999 is below 2100-01-01 as a float, but its microseconds round up onto it.
    values = [4102444799.9999999, 4102444799.999999, 4102444800.0]
    assert outcomes(TimestampField("x"), parsed_json(values)) == [
        INVALID,
        datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        INVALID,
    ]
