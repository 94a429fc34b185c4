"""Every rule of the spec's input table, through parse + validate on Arrow tables."""

import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from beam_pipelines.pipelines.events import FIELDS, RULES
from transforms.ingest.parse import _parse_arrow_records
from transforms.ingest.parse import _parse_json_records as _json
from transforms.ingest.validate import NumberField, ValidateSchema, validate_table


def _parse_json_records(lines, sources, fields):
    return _json(pa.array(lines, pa.binary()), pa.array(sources, pa.string()), fields)


BASE = {"event_id": "e1", "user_id": "u1", "event_type": "view", "ts": "2024-01-01T00:00:00Z"}


def run(records, policy="additive"):
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    parsed, bad = _parse_json_records(lines, ["test"] * len(lines), FIELDS)
    assert bad.num_rows == 0
    return validate_table(parsed, RULES, policy)


def one(**changes):
    rec = {**BASE, **changes}
    for k, v in list(rec.items()):
        if v is ...:
            del rec[k]
    valid, dead = run([rec])
    if valid.num_rows:
        return valid.to_pylist()[0], None
    row = dead.to_pylist()[0]
    return None, (row["reason"], row["field"])


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "value,expected",
    [("  e1 ", "e1"), (42, "42"), ("x", "x")],
)
def test_ids_accept_strings_and_integers(value, expected):
    row, err = one(event_id=value, user_id=value)
    assert err is None and row["event_id"] == expected and row["user_id"] == expected


@pytest.mark.parametrize(
    "value,reason",
    [(..., "missing_field"), (None, "missing_field"), ("", "invalid_value"), ("  ", "invalid_value"),
     (1.5, "invalid_value"), (True, "invalid_value"), ({"a": 1}, "invalid_value")],
)  # fmt: skip
@pytest.mark.parametrize("field", ["event_id", "user_id"])
def test_ids_reject(field, value, reason):
    assert one(**{field: value})[1] == (reason, field)


@pytest.mark.parametrize("value", ["view", "CLICK", " Add_To_Cart ", "purchase", "Refund"])
def test_event_type_case_and_space_insensitive(value):
    row, err = one(event_type=value, amount=1)
    assert err is None and row["event_type"] == value.strip().lower()


@pytest.mark.parametrize("value,reason", [("buy", "invalid_value"), (None, "missing_field"), (3, "invalid_value")])
def test_event_type_rejects(value, reason):
    assert one(event_type=value)[1] == (reason, "event_type")


@pytest.mark.parametrize(
    "value,expected",
    [(12, 12.0), (12.345, 12.35), ("7.5", 7.5), (" 3 ", 3.0), ("1e2", 100.0), (0, 0.0), (2.004, 2.0)],
)
def test_amount_numbers_and_numeric_strings(value, expected):
    row, err = one(event_type="purchase", amount=value)
    assert err is None and row["amount"] == expected


@pytest.mark.parametrize("etype", ["view", "click", "add_to_cart"])
def test_amount_null_allowed_for_browsing_events(etype):
    row, err = one(event_type=etype, amount=None)
    assert err is None and row["amount"] is None
    assert one(event_type=etype, amount=...)[1] is None


@pytest.mark.parametrize("etype", ["purchase", "refund"])
def test_amount_required_for_money_events(etype):
    assert one(event_type=etype, amount=None)[1] == ("missing_field", "amount")
    assert one(event_type=etype, amount=...)[1] == ("missing_field", "amount")


@pytest.mark.parametrize("value", [-0.01, "-3", "abc", "", "1e999", True, [1]])
def test_amount_rejects(value):
    assert one(event_type="purchase", amount=value)[1] == ("invalid_value", "amount")


@pytest.mark.parametrize("value,expected", [(..., "USD"), (None, "USD"), ("eur", "EUR"), (" gbp ", "GBP")])
def test_currency(value, expected):
    row, err = one(currency=value)
    assert err is None and row["currency"] == expected


@pytest.mark.parametrize("value", ["US", "EURO", "U$D", "", 840])
def test_currency_rejects(value):
    assert one(currency=value)[1] == ("invalid_value", "currency")


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2024-01-01T10:00:00Z", utc(2024, 1, 1, 10)),
        ("2024-01-01T10:00:00+02:00", utc(2024, 1, 1, 8)),
        ("2024-01-01T10:00:00-0130", utc(2024, 1, 1, 11, 30)),
        ("2024-01-01T10:00:00", utc(2024, 1, 1, 10)),
        ("2024-01-01 10:00:00.250Z", utc(2024, 1, 1, 10, 0, 0, 250000)),
        ("2024-01-01", utc(2024, 1, 1)),
        ("2024-01-01T10:00:00.1234567Z", utc(2024, 1, 1, 10, 0, 0, 123456)),
        (1704103200, utc(2024, 1, 1, 10)),
        (1704103200.5, utc(2024, 1, 1, 10, 0, 0, 500000)),
        ("1704103200", utc(2024, 1, 1, 10)),
        ("+1704103200", utc(2024, 1, 1, 10)),
        (1704103200123, utc(2024, 1, 1, 10, 0, 0, 123000)),
        (" 2024-01-01T10:00:00z ", utc(2024, 1, 1, 10)),
    ],
)
def test_ts_formats(value, expected, colscan_impl):
    row, err = one(ts=value)
    assert err is None, err
    assert row["ts"] == expected


@pytest.mark.parametrize(
    "value,reason",
    [
        (..., "missing_field"),
        (None, "missing_field"),
        ("yesterday", "invalid_value"),
        ("99999999999999999999999", "invalid_value"),
        ("-5", "invalid_value"),
        ("2024-02-30T00:00:00Z", "invalid_value"),
        ("1999-12-31T23:59:59Z", "invalid_value"),
        ("2100-01-01T00:00:00Z", "invalid_value"),
        (946684799, "invalid_value"),
        (4102444800, "invalid_value"),
        (True, "invalid_value"),
        ("", "invalid_value"),
        ("2024-03-01T25:00:00Z", "invalid_value"),
        ("2024-03-01T10:00:00+05:", "invalid_value"),
        ("0001-01-01T00:00:00+05:00", "invalid_value"),  # before year 1 in UTC
        ("9999-12-31T23:00:00-05:00", "invalid_value"),  # after year 9999 in UTC
    ],
)
def test_ts_rejects(value, reason, colscan_impl):
    assert one(ts=value)[1] == (reason, "ts")


def test_ts_range_edges():
    assert one(ts="2000-01-01T00:00:00Z")[1] is None
    assert one(ts="2099-12-31T23:59:59.999999Z")[1] is None


def test_first_failing_field_names_the_dead_letter():
    _, err = one(event_id=None, currency="b@d", ts="never")
    assert err == ("missing_field", "event_id")
    _, err = one(currency="b@d", ts="never")
    assert err == ("invalid_value", "currency")


def test_dead_letter_keeps_raw_and_message():
    valid, dead = run([b'{"event_id": "e1", "user_id": "u", "event_type": "view", "ts": "soon"}'])
    row = dead.to_pylist()[0]
    assert row["raw"] == '{"event_id": "e1", "user_id": "u", "event_type": "view", "ts": "soon"}'
    assert row["stage"] == "validate" and row["source"] == "test"
    assert "soon" in row["error"]
    _, dead = run([b'{"user_id": "u", "event_type": "view", "ts": "soon"}', b'{"event_id": "e"}'])
    assert dead.column("error").to_pylist() == ["event_id is missing or null", "user_id is missing or null"]
    assert dead.column("field").to_pylist() == ["event_id", "user_id"]


def test_extras_additive_and_strict():
    rec = {**BASE, "session": "s1", "device": {"os": "ios"}}
    valid, dead = run([rec])
    assert json.loads(valid.column("extras")[0].as_py()) == {"session": "s1", "device": {"os": "ios"}}
    valid, dead = run([rec], policy="strict")
    assert valid.num_rows == 0
    assert dead.to_pylist()[0]["reason"] == "unknown_field" and dead.to_pylist()[0]["field"] == "session"
    assert dead.to_pylist()[0]["error"] == "field session is not declared (policy strict)"
    valid, dead = run([BASE], policy="strict")
    assert valid.num_rows == 1


def test_typed_parquet_columns_validate_the_same_way():
    table = pa.table(
        {
            "event_id": pa.array([1, 2, None], pa.int64()),
            "user_id": ["u", "u", "u"],
            "event_type": ["purchase", "purchase", "view"],
            "amount": [1.005, -1.0, None],
            "currency": [None, "eur", "usd"],
            "ts": pa.array([1_704_103_200_000_000] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    valid, dead = validate_table(_parse_arrow_records(table, FIELDS), RULES, "additive")
    assert valid.to_pylist()[0]["event_id"] == "1"
    assert valid.to_pylist()[0]["ts"] == utc(2024, 1, 1, 10)
    assert [(r["reason"], r["field"]) for r in dead.to_pylist()] == [
        ("invalid_value", "amount"),
        ("missing_field", "event_id"),
    ]


def test_validate_schema_rejects_bad_config():
    with pytest.raises(ValueError, match="policy"):
        ValidateSchema(RULES, policy="relaxed-ish")
    with pytest.raises(ValueError, match="earlier field"):
        ValidateSchema((NumberField("amount", required_if=("event_type", ("purchase",))),))


# Values of every kind a field can hold, good and bad: a batch that mixes them takes each
# rule's general path, a one-row batch the path for its single kind.
VARIED = {
    "event_id": ["e1", "  e2 ", "", "   ", 7, -3, 1.5, True, None, ..., {"n": 1}],
    "user_id": ["u1", 12, "", None, ..., False],
    "event_type": ["view", " Click ", "PURCHASE", "refund", "nope", 3, None, ...],
    "amount": [1.005, 0, 12, "3.50", " 7 ", "x", "-1", -2.5, None, ..., True, "1e3", 1e300, 10**18],
    "currency": ["usd", " Eur ", "EURO", "", 3, None, ...],
    "ts": [
        "2024-03-01T00:51:35.533245Z", "2024-03-01t10:00:00+02:00", "2024-03-01 10:00",
        "2024-03-01T10:00:00-0130", "2024-03-01T00:51:35.5332451Z", "2024-03-01", "2024-02-30",
        "1709251817", "+1709251817", "1709251763505", "1709251817.25", 1709251817, 1709251763505,
        1709251817.5, "yesterday", "", 10**18, -1, None, ..., "1999-12-31T23:59:59Z",
        " 2024-03-01T10:00:00Z\t", "2024-03-01T10:00+05", "2024-03-01T10:00:00+14:92", "0001-01-01T00:00+05:00",
        "\u00a02024-03-01", "2024-02-29T10:00:00Z", "2023-02-29T10:00:00Z",
    ],
    "email": ["A@B.co", 5, None, ...],
    "country": ["de", None, ..., 1],
}  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_validates_as_its_rows_do_one_by_one(seed, colscan_impl):
    import random

    rng = random.Random(seed)
    records = []
    for _ in range(300):
        rec = {k: rng.choice(v) for k, v in VARIED.items()}
        records.append({k: v for k, v in rec.items() if v is not ...})
    lines = [json.dumps(r).encode() for r in records]
    whole = run(lines)
    alone = [run([line]) for line in lines]
    assert whole[0].to_pylist() == [row for v, _ in alone for row in v.to_pylist()]
    assert whole[1].to_pylist() == [row for _, d in alone for row in d.to_pylist()]


def test_typed_batch_validates_as_its_rows_do_one_by_one():
    table = pa.table(
        {
            "event_id": ["e1", " e2", None, "", "e5", "e6"],
            "user_id": ["u", "u", "u", "u", "u", None],
            "event_type": ["purchase", "VIEW", "view", "click", "refund", "nope"],
            "amount": [1.005, None, -1.0, 2.0, 4.0, 3.0],
            "currency": [None, "eur", "usd", "x", "gbp", "usd"],
            "ts": pa.array(
                [1_704_103_200_000_000, None, 0, 4_102_444_800_000_000, 946_684_800_000_000, 1],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    whole = validate_table(_parse_arrow_records(table, FIELDS), RULES, "additive")
    alone = [validate_table(_parse_arrow_records(table.slice(i, 1), FIELDS), RULES, "additive") for i in range(6)]
    assert whole[0].to_pylist() == [row for v, _ in alone for row in v.to_pylist()]
    assert whole[1].to_pylist() == [row for _, d in alone for row in d.to_pylist()]
    assert whole[0].num_rows == 2 and whole[1].num_rows == 4


def _iso_like(rng) -> str:
    def two(hi):
        if rng.random() < 0.9:
            return f"{rng.randrange(hi + 1):02d}"
        return rng.choice(["7", "1x", "00", f"{hi:02d}"])

    text = f"{rng.choice(['2024', '2024', '2000', '2099', '1999', '0001', '9999', '20x4'])}-{two(13)}-{two(32)}"
    if rng.random() < 0.85:
        text += rng.choice("Tt ;") + two(24) + rng.choice([":", ":", ";"]) + two(60)
        if rng.random() < 0.8:
            text += ":" + two(60)
            if rng.random() < 0.6:
                text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randrange(9)))
        zone = rng.random()
        if zone < 0.35:
            text += rng.choice("Zz")
        elif zone < 0.75:
            text += rng.choice("+-") + two(24) + (rng.choice([":", "", ":"]) + two(60) if rng.random() < 0.7 else "")
    if rng.random() < 0.15:
        text = rng.choice([" ", "\t", "\u00a0", "\x1c"]) + text
    if rng.random() < 0.15:
        text += rng.choice([" ", "\r\n", "\u2003", "Z", "0", ":"])
    if rng.random() < 0.05:
        text = text[: rng.randrange(len(text) + 1)]
    return text


def test_compiled_iso_timestamps_parse_as_arrow_does():
    # Every string the compiled pass takes must match the ISO pattern and parse to the same
    # instant as the Arrow path (which is what it was before the pass existed).
    import random

    import numpy as np
    import pyarrow.compute as pc

    from transforms import colscan
    from transforms.ingest.validate import _ISO, _parse_iso

    if not colscan.compiled():
        pytest.fail("transforms/_colscan.c was not built")
    rng = random.Random(11)
    strings = [_iso_like(rng) for _ in range(4000)] + [None]
    arr = pa.array(strings)
    handled, micros = colscan.iso_micros(arr, np.ones(len(arr), bool))
    assert 300 < handled.sum() < len(strings) - 500  # both paths are exercised
    trimmed = pc.utf8_trim_whitespace(arr)
    iso = pc.fill_null(pc.match_substring_regex(trimmed, _ISO), False).to_numpy(zero_copy_only=False)
    assert not (handled & ~iso).any()
    for i in np.flatnonzero(handled):
        assert _parse_iso(trimmed.slice(int(i), 1)).cast(pa.int64())[0].as_py() == micros[i], strings[i]
    where = np.zeros(len(arr), bool)
    where[::2] = True
    assert not colscan.iso_micros(arr, where)[0][1::2].any()
