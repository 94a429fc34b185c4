"""The feature kernels (pure numpy/Arrow) against the plain-Python reference, over random events
with ties, exact range boundaries, nulls and shuffled order; and the definitions' own checks."""

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from tests.feature_reference import condition, reference
from transforms.feature_defs import FeatureError, FeatureSet, Ratio, SessionFeature, Trailing, feature_from_dict
from transforms.feature_kernels import (
    METADATA_KEY,
    compute,
    features_as_of,
    lower_bounds,
    prepare,
    rejects,
    trailing_distinct,
)

UTC = timezone.utc
BASE = datetime(2024, 3, 1, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("user", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("page", pa.string()),
        ("amount", pa.float64()),
        ("qty", pa.int64()),
        ("flag", pa.bool_()),
        ("price", pa.decimal128(10, 2)),
    ]
)
BUY = "page == 'buy'"
FLAGGED = "flag"
CONDITIONS = {BUY: condition("page", "buy"), FLAGGED: lambda x: x["flag"] is True}
FEATURES = FeatureSet(
    "user",
    "ts",
    (
        Trailing("n10m", "count", 600),
        Trailing("n1h", "count", 3600),
        Trailing("n24h", "count", 86400),
        Trailing("buys_24h", "count", 86400, where=BUY),
        Trailing("amount_1h", "sum", 3600, "amount", decimals=2),
        Trailing("qty_24h", "sum", 86400, "qty"),
        Trailing("flags_1h", "sum", 3600, "flag"),
        Trailing("price_24h", "sum", 86400, "price"),
        Trailing("pages_1h", "count_distinct", 3600, "page"),
        Trailing("qty_kinds_24h", "count_distinct", 86400, "qty", where=FLAGGED),
        Trailing("last_page_1h", "last", 3600, "page"),
        Trailing("last_amount_24h", "last", 86400, "amount"),
        Trailing("last_bought_24h", "last", 86400, "qty", where=BUY),
        SessionFeature("session_s", "session_length", 1800),
        SessionFeature("session_n", "session_events", 1800),
        SessionFeature("session_buy", "session_converted", 1800, BUY),
        Ratio("buy_rate_24h", "buys_24h", "n24h"),
        Ratio("amount_per_event_1h", "amount_1h", "n1h"),
    ),
    keep=("id",),
)


def events(seed: int, n: int = 500, users=("a", "b", "c", "d")) -> list[dict]:
    """Events in random order; times on a 3-minute grid (so ties, and events exactly 10 min, 1 h
    and 24 h apart, are common), some a microsecond off it; values with nulls and halves."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ts = BASE + timedelta(minutes=3 * rng.randrange(0, 500), microseconds=rng.choice([0, 0, 0, 1, -1]))
        rows.append(
            {
                "id": i,
                "user": rng.choice(users),
                "ts": ts,
                "page": rng.choice([None, "home", "buy", "cart", "p1", "p2"]),
                "amount": rng.choice([None, 0.125, 2.675, 1.005, round(rng.uniform(0, 100), 3), -3.5]),
                "qty": rng.choice([None, 1, 2, 3, 40, -7]),
                "flag": rng.choice([None, True, False]),
                "price": rng.choice([None, Decimal("0.01"), Decimal("19.99"), Decimal("-5.00")]),
            }
        )
    rng.shuffle(rows)
    return rows


def by_id(rows) -> dict:
    return {r["id"]: r for r in rows}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_feature_of_every_event_equals_the_plain_python_reference(seed):
    rows = events(seed)
    got = features_as_of(pa.Table.from_pylist(rows, SCHEMA), FEATURES)
    expected = reference(rows, FEATURES, CONDITIONS)
    assert got.num_rows == len(rows)
    got_rows, want_rows = by_id(got.to_pylist()), by_id(expected)
    for i, want in want_rows.items():
        assert got_rows[i] == want, (i, {k: (got_rows[i][k], v) for k, v in want.items() if got_rows[i][k] != v})
    # Ties are common in these events, and many of them hit a range's bound exactly.
    assert len({(r["user"], r["ts"]) for r in rows}) < len(rows) - 15


def test_integer_entities_and_many_of_them():
    rows = events(9, n=800, users=tuple(range(-3, 60)))
    schema = SCHEMA.set(SCHEMA.get_field_index("user"), pa.field("user", pa.int64()))
    got = features_as_of(pa.Table.from_pylist(rows, schema), FEATURES)
    assert by_id(got.to_pylist()) == by_id(reference(rows, FEATURES, CONDITIONS))


def test_rows_come_out_sorted_by_entity_time_and_kept_columns_whatever_the_input_order():
    rows = events(5)
    first = features_as_of(pa.Table.from_pylist(rows, SCHEMA), FEATURES)
    random.Random(0).shuffle(rows)
    again = features_as_of(pa.Table.from_pylist(rows, SCHEMA), FEATURES)
    assert first.equals(again)
    keys = [(r["user"], r["ts"], r["id"]) for r in first.to_pylist()]
    assert keys == sorted(keys)
    assert first.schema.metadata[METADATA_KEY]  # the definition travels with the table
    assert features_as_of(SCHEMA.empty_table(), FEATURES).schema == first.schema  # same types when empty


def test_the_bounds_and_ties_as_defined():
    """(t - range, t]: an event exactly one range back is out, one a microsecond later is in; events
    at the same time are one instant (same values), the last of them the largest value."""
    t0 = BASE
    rows = [
        {"id": 1, "user": "u", "ts": t0, "page": "z", "amount": 1.0},
        {"id": 2, "user": "u", "ts": t0 + timedelta(microseconds=1), "page": "b", "amount": 2.0},
        {"id": 3, "user": "u", "ts": t0 + timedelta(hours=1), "page": "a", "amount": 4.0},
        {"id": 4, "user": "u", "ts": t0 + timedelta(hours=1), "page": "c", "amount": None},
        {"id": 5, "user": "u", "ts": t0 + timedelta(hours=1, minutes=29, seconds=59), "page": None, "amount": 8.0},
        {"id": 6, "user": "u", "ts": t0 + timedelta(hours=2, minutes=30), "page": None, "amount": 16.0},
    ]
    fs = FeatureSet(
        "user",
        "ts",
        (
            Trailing("n", "count", 3600),
            Trailing("s", "sum", 3600, "amount", decimals=0),
            Trailing("last", "last", 3600, "page"),
            SessionFeature("len", "session_length", 1800),
            SessionFeature("events", "session_events", 1800),
        ),
        keep=("id",),
    )
    schema = pa.schema([f for f in SCHEMA if f.name in ("id", "user", "ts", "page", "amount")])
    got = [
        (r["n"], r["s"], r["last"], r["len"], r["events"])
        for r in features_as_of(pa.Table.from_pylist(rows, schema), fs).to_pylist()
    ]
    assert got == [
        (1, 1.0, "z", 0.0, 1),
        (2, 3.0, "b", 0.000001, 2),
        (3, 6.0, "c", 0.0, 2),  # id 1 is exactly 1 h back: out; ids 3 and 4 tie: 'c' > 'a'; an hour of
        (3, 6.0, "c", 0.0, 2),  # silence (30 minutes or more) starts a new session
        (3, 12.0, "c", 1799.0, 3),
        (1, 16.0, None, 0.0, 1),  # 1 h 1 s after id 5: alone in its range and its session
    ]


def test_rejects_names_each_event_without_features():
    rows = events(2, n=30)
    rows[0]["user"] = None
    rows[1]["ts"] = None
    rows[2]["user"], rows[2]["ts"] = None, None
    rows[3]["amount"] = float("nan")
    rows[4]["amount"] = 1e300
    table = pa.Table.from_pylist(rows, SCHEMA)
    bad, why = rejects(table, FEATURES)
    assert np.flatnonzero(bad).tolist() == [0, 1, 2, 3, 4]
    assert [w[:2] for w in why] == [("missing_entity", "user"), ("missing_time", "ts"), ("missing_entity", "user"),
                                    ("invalid_value", "amount"), ("invalid_value", "amount")]  # fmt: skip
    rest = [r for i, r in enumerate(rows) if i > 4]
    got = features_as_of(table.filter(pa.array(~bad)), FEATURES)
    assert by_id(got.to_pylist()) == by_id(reference(rest, FEATURES, CONDITIONS))


def test_prepare_ships_only_what_the_features_need():
    table = pa.Table.from_pylist(events(3, n=50), SCHEMA)
    prepared = prepare(table, FEATURES)
    assert prepared.column_names[:3] == ["user", "ts", "id"]
    assert not {"page", "amount", "qty", "flag"} & set(prepared.column_names)
    assert compute(prepared, FEATURES).equals(features_as_of(table, FEATURES))


def test_lower_bounds_keep_entities_apart_when_the_key_must_be_cut_in_slices():
    """Times 2^58 microseconds apart leave room for few entities per int64 key: several slices."""
    rng = np.random.default_rng(4)
    codes = np.sort(rng.integers(0, 40, 600))
    t = rng.integers(0, 4, 600) * (1 << 58) + rng.integers(0, 5, 600)
    order = np.lexsort((t, codes))
    codes, t = codes[order], t[order]
    for r, lo in lower_bounds(codes, t, [1, 3, 1 << 58]).items():
        want = [next(j for j in range(len(t)) if codes[j] == codes[i] and t[j] > t[i] - r) for i in range(len(t))]
        assert lo.tolist() == want, r


def test_trailing_distinct_counts_values_once_per_range():
    rng = np.random.default_rng(8)
    n = 300
    codes = np.sort(rng.integers(0, 5, n))
    values = rng.integers(-1, 6, n)  # -1: no value
    starts = np.searchsorted(codes, codes)
    lo = np.maximum(starts, np.arange(n) - rng.integers(0, 12, n))
    lo = np.maximum.accumulate(lo)
    hi = np.maximum.accumulate(
        np.minimum(np.arange(n) + 1 + rng.integers(0, 3, n), np.searchsorted(codes, codes, "right"))
    )
    hi = np.maximum(hi, lo)
    want = [len({v for v in values[lo[i] : hi[i]] if v >= 0}) for i in range(n)]
    assert trailing_distinct(codes, values, lo, hi).tolist() == want


@pytest.mark.parametrize(
    "make, key, message",
    [
        (lambda: Trailing("x", "count", 0), "features.x.range", ">= 1"),
        (lambda: Trailing("x", "sum", 60), "features.x", "sum needs a column"),
        (lambda: Trailing("x", "count", 60, column="a"), "features.x.column", "takes no column"),
        (lambda: Trailing("x", "last", 60, "a", decimals=2), "features.x.decimals", "sum of a double"),
        (lambda: SessionFeature("x", "session_converted", 60), "features.x", "needs where"),
        (lambda: FeatureSet("u", "t", (Ratio("r", "a", "b"),)), "features.r.numerator", "no feature 'a' before it"),
        (lambda: FeatureSet("u", "t", (Ratio("r", "n", "n"), Trailing("n", "count", 5))), "features.r.numerator",
         "defined before use"),
        (lambda: FeatureSet("u", "t", (Trailing("u", "count", 5),)), "features.u", "the entity column"),
        (lambda: FeatureSet("u", "t", (Trailing("n", "count", 5), Trailing("n", "count", 6))), "features.n",
         "already a feature"),
        (lambda: feature_from_dict("x", {"fn": "count"}), "features.x", "needs a range"),
        (lambda: feature_from_dict("x", {"fn": "session_events", "gap": 60, "range": 5}), "features.x.range",
         "takes no range"),
    ],
)  # fmt: skip
def test_definitions_are_checked_where_they_are_made(make, key, message):
    with pytest.raises(FeatureError) as info:
        make()
    assert info.value.key == key and message in info.value.message


def test_output_types_check_columns_and_a_feature_set_round_trips_as_data():
    types = dict(zip(SCHEMA.names, SCHEMA.types))
    out = FEATURES.output_types(types)
    assert out["price_24h"] == pa.decimal128(38, 2) and out["amount_1h"] == pa.float64()
    assert out["last_bought_24h"] == pa.int64() and out["session_buy"] == pa.bool_()
    with pytest.raises(FeatureError, match="needs decimals"):
        FeatureSet("user", "ts", (Trailing("s", "sum", 5, "amount"),)).output_types(types)
    with pytest.raises(FeatureError, match="sum of 'page' must be"):
        FeatureSet("user", "ts", (Trailing("s", "sum", 5, "page"),)).output_types(types)
    with pytest.raises(FeatureError, match="is bool"):
        FeatureSet("user", "ts", (SessionFeature("c", "session_converted", 5, BUY), Ratio("r", "c", "c"))).output_types(
            types
        )
    assert FeatureSet.from_dict(FEATURES.to_dict()) == FEATURES
