import json
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import datasketches as ds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window as beam_window

from transforms import colscan
from transforms.quality.hll import DistinctSketch, _coupons, coupons_of_floats, coupons_of_ints, coupons_of_strings
from transforms.quality.profile import ProfileColumns, _Config, _ProfileCoder, _ProfileFn, _SketchFn, profile_tables

UTC = timezone.utc
KLL_EPS = ds.kll_doubles_sketch.get_normalized_rank_error(200, False)
KLL_PMF_EPS = ds.kll_doubles_sketch.get_normalized_rank_error(200, True)
US = pa.timestamp("us", tz="UTC")


def events(n=20_000, seed=1, offset=0):
    """An events-like table: near-unique ids, skewed categories, floats with nulls and NaN, timestamps."""
    rng = np.random.default_rng(seed)
    amount = np.round(rng.gamma(2.0, 50.0, n), 2)
    amount_null = rng.random(n) < 0.3
    amount[rng.random(n) < 0.01] = np.nan
    ts = 1_709_251_200_000_000 + rng.integers(0, 7 * 86_400_000_000, n)
    return pa.table(
        {
            "event_id": pc.binary_join_element_wise(
                "ev-", pa.array(np.arange(offset, offset + n)).cast(pa.string()), ""
            ),
            "event_type": pa.array(
                np.array(["view", "click", "purchase", "refund"])[rng.choice(4, n, p=[0.6, 0.25, 0.1, 0.05])]
            ),
            "amount": pa.array(np.ma.masked_array(amount, amount_null)),
            "ts": pa.array(ts, pa.int64()).cast(US),
            "hour_of_day": pa.array(rng.integers(0, 24, n), pa.int32()),
            "is_weekend": pa.array(rng.random(n) < 0.3),
            "_internal": pa.array(np.zeros(n)),
        }
    )


def iso(micros: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(microseconds=int(micros))).isoformat(timespec="microseconds") + "Z"


def rank_of(sorted_values: np.ndarray, v: float) -> float:
    return np.searchsorted(sorted_values, v, side="left") / len(sorted_values)


def test_exact_fields_match_numpy():
    t = events()
    prof = profile_tables([t.slice(0, 7000), t.slice(7000)])
    assert prof["rows"] == 20_000
    assert set(prof["columns"]) == {"event_id", "event_type", "amount", "ts", "hour_of_day", "is_weekend"}

    amount = prof["columns"]["amount"]
    raw = t.column("amount").to_numpy(zero_copy_only=False)  # nulls as NaN
    valid = ~np.isnan(raw)
    nan_count = int(t.column("amount").is_valid().to_numpy(zero_copy_only=False).sum() - valid.sum())
    assert nan_count > 0
    assert amount["type"] == "double"
    assert amount["count"] == 20_000 - t.column("amount").null_count
    assert amount["nulls"] == t.column("amount").null_count
    assert amount["null_rate"] == pytest.approx(t.column("amount").null_count / 20_000)
    assert amount["nans"] == nan_count
    x = raw[valid]
    assert amount["min"] == x.min() and amount["max"] == x.max()
    assert amount["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert amount["stddev"] == pytest.approx(x.std(), rel=1e-9)
    assert amount["top_values"] is None

    hours = prof["columns"]["hour_of_day"]
    h = t.column("hour_of_day").to_numpy()
    assert (hours["min"], hours["max"], hours["count"], hours["nulls"]) == (0, 23, 20_000, 0)
    assert isinstance(hours["min"], int)
    assert hours["mean"] == pytest.approx(h.mean(), rel=1e-12)
    assert hours["stddev"] == pytest.approx(h.std(), rel=1e-9)
    assert hours["distinct_approx"] == 24
    assert all(isinstance(v, int) for v in hours["quantiles"].values())
    json.dumps(prof, allow_nan=False)


def test_distinct_within_hll_error_and_identical_to_feeding_every_value():
    rng = np.random.default_rng(5)
    ids = pa.array(np.char.add("user-", rng.permutation(100_000).astype(str)))
    repeated = pa.concat_arrays([ids, ids.slice(0, 30_000)])  # 100k distinct in 130k rows
    t = pa.table({"user_id": repeated})
    prof = profile_tables([t.slice(i, 13_000) for i in range(0, t.num_rows, 13_000)], lg_k=12)
    est = prof["columns"]["user_id"]["distinct_approx"]
    assert abs(est - 100_000) / 100_000 < 0.02

    # The vectorised feed leaves the registers as a value-by-value feed would: same estimate.
    fed = DistinctSketch(12)
    for i in range(0, len(repeated), 13_000):
        fed.update_strings(repeated.slice(i, 13_000))
    plain = ds.hll_sketch(12, ds.HLL_8)
    for s in repeated.to_pylist():
        plain.update(s)
    assert fed.estimate() == DistinctSketch(12, plain).estimate()
    assert round(fed.estimate()) == est


@pytest.mark.parametrize(
    "batches",
    [(1,), (25, 25), (200, 200), (300, 300), (1_500, 1_500), (20_000, 20_000), (100, 110, 120, 5_000), (60,) * 8],
)
def test_distinct_sketch_equals_library_sketch_at_every_size(batches):
    # Small batches keep the library in its exact LIST/SET modes (every coupon fed); a batch that
    # touches more than k/8 slots switches to per-slot selection, also right after sparse ones.
    n = sum(batches)
    values = np.random.default_rng(n).integers(-(2**62), 2**62, n)
    fed = DistinctSketch(10)
    for part in np.split(values, np.cumsum(batches)[:-1]):
        fed.update_ints(np.concatenate([part, part[:5]]))  # repeats change nothing
    plain = ds.hll_sketch(10, ds.HLL_8)
    for v in values.tolist():
        plain.update(v)
    assert fed.estimate() == DistinctSketch(10, plain).estimate()
    if n <= 50:
        assert round(fed.estimate()) == n


def test_compiled_column_passes_are_built():
    # `make venv` builds them; without them column profiles cost about twice as much.
    assert colscan.compiled(), "transforms/_colscan.c was not built: is a C compiler installed?"


def test_coupons_match_the_library_hash(colscan_impl):
    def library_coupon(v):
        sketch = ds.hll_sketch(12)
        sketch.update(v)
        return int.from_bytes(sketch.serialize_compact()[8:12], "little")  # LIST mode: one coupon

    rng = np.random.default_rng(3)
    strings = ["a", "exactly16bytes!!", "exactly17bytes!!!", "é∂ unicode ✓", "x" * 200, "user1@example.com"]
    strings += ["".join(chr(c) for c in rng.integers(32, 900, rng.integers(1, 60))) for _ in range(200)]
    assert coupons_of_strings(pa.array(strings)).tolist() == [library_coupon(s) for s in strings]
    ints = [0, 1, -1, 2**63 - 1, -(2**63), *rng.integers(-(2**63), 2**63 - 1, 200).tolist()]
    assert coupons_of_ints(np.array(ints, np.int64)).tolist() == [library_coupon(v) for v in ints]
    floats = [0.0, -0.0, float("inf"), float("nan"), 5e-324, *rng.normal(0, 1e6, 200).tolist()]
    assert coupons_of_floats(np.array(floats)).tolist() == [library_coupon(v) for v in floats]


def test_compiled_and_numpy_hashes_agree(monkeypatch):
    rng = np.random.default_rng(4)
    lengths = rng.integers(0, 70, 3000)
    strings = ["".join(chr(c) for c in rng.integers(1, 3000, k)) for k in lengths]
    strings[::97] = [None] * len(strings[::97])
    arr = pa.array(strings)
    cases = [arr, arr.slice(5, 2000), arr.cast(pa.large_string()), arr.slice(0, 0), pa.array(["", None, "a"])]
    words = rng.integers(-(2**63), 2**63 - 1, 3000)
    floats = np.concatenate([rng.normal(0, 1e9, 3000), [0.0, -0.0, np.nan, -np.nan, np.inf]])
    compiled = [coupons_of_strings(c).tolist() for c in cases], coupons_of_ints(words), coupons_of_floats(floats)
    monkeypatch.setattr(colscan, "native", None)
    numpy = [coupons_of_strings(c).tolist() for c in cases], coupons_of_ints(words), coupons_of_floats(floats)
    assert compiled[0] == numpy[0]
    assert compiled[0][4] == [0, 0, numpy[0][4][2]] and numpy[0][4][2] != 0
    assert np.array_equal(compiled[1], numpy[1]) and np.array_equal(compiled[2], numpy[2])


def test_compiled_and_arrow_string_stats_agree(monkeypatch):
    rng = np.random.default_rng(5)
    alphabet = ["a", "b", "Z", "0", " ", "é", "ß", "日", "😀", "\x00", "\x7f"]
    strings = ["".join(rng.choice(alphabet, k)) for k in rng.integers(0, 40, 2000)]
    strings[::31] = [None] * len(strings[::31])
    arr = pa.array(strings)
    cases = [
        arr,
        arr.slice(7, 900),
        arr.cast(pa.large_string()),
        pa.array(["", None, "b", "a"]),
        pa.array(["日本", "abcdefghij"]),
    ]
    compiled = [colscan.string_stats(c) for c in cases] + [colscan.string_stats(pa.array([None, None], pa.string()))]
    monkeypatch.setattr(colscan, "native", None)
    arrow = [colscan.string_stats(c) for c in cases] + [colscan.string_stats(pa.array([None, None], pa.string()))]
    assert compiled == arrow
    assert compiled[3] == ("", "b", 0, 1) and compiled[4] == ("abcdefghij", "日本", 2, 10) and compiled[-1] is None


def test_coupon_rank_is_exact_where_float_conversion_rounds_up():
    # 2**63 - 1 and friends round up to the next power of two as float64.
    h2 = [0, 1, 3, 2**53 - 1, 2**53 + 1, 2**54 - 1, 2**62 - 1, 2**63 - 1, 2**63, 2**64 - 1]
    h1 = np.arange(len(h2), dtype=np.uint64)
    expected = [((min(64 - v.bit_length(), 62) + 1) << 26) | i for i, v in enumerate(h2)]
    assert _coupons(h1, np.array(h2, np.uint64)).tolist() == expected


def test_quantiles_and_histogram_within_kll_rank_error():
    t = events(50_000, seed=9)
    prof = profile_tables([t.slice(i, 10_000) for i in range(0, 50_000, 10_000)], quantiles=(0.01, 0.5, 0.9, 0.999))
    amount = prof["columns"]["amount"]
    x = np.sort(t.column("amount").drop_null().to_numpy())
    x = x[~np.isnan(x)]
    assert list(amount["quantiles"]) == ["p01", "p50", "p90", "p99.9"]
    for q, v in zip((0.01, 0.5, 0.9, 0.999), amount["quantiles"].values()):
        assert abs(rank_of(x, v) - q) <= KLL_EPS, (q, v)
    hist = amount["histogram"]
    assert len(hist["edges"]) == 21 and len(hist["counts"]) == 20
    assert hist["edges"][0] == x[0] and hist["edges"][-1] == x[-1]
    assert sum(hist["counts"]) == len(x)
    exact, _ = np.histogram(x, bins=np.array(hist["edges"]))
    assert np.all(np.abs(np.array(hist["counts"]) - exact) <= KLL_PMF_EPS * len(x) + 1)


def test_top_values_on_a_skewed_column():
    rng = np.random.default_rng(11)
    # Zipf-like: value i has weight 1/(i+1)^1.2 over 5000 values, so the head is clear of the tail.
    weights = 1 / np.arange(1, 5001) ** 1.2
    codes = rng.choice(5000, 200_000, p=weights / weights.sum())
    col = pa.array(np.char.add("v", codes.astype(str)))
    t = pa.table({"code": col, "n": pa.array(codes)})
    prof = profile_tables([t.slice(i, 20_000) for i in range(0, 200_000, 20_000)], top_k=5)
    truth = np.bincount(codes, minlength=5000)
    order = np.argsort(-truth, kind="stable")[:5]
    epsilon = ds.frequent_strings_sketch.get_epsilon_for_lg_size(10) * 200_000
    top = prof["columns"]["code"]["top_values"]
    assert [d["value"] for d in top] == [f"v{i}" for i in order]
    assert all(abs(d["count"] - truth[i]) <= epsilon for d, i in zip(top, order))
    assert [d["value"] for d in prof["columns"]["n"]["top_values"]] == order.tolist()


def test_top_values_of_mostly_distinct_strings():
    # Batches of mostly unique ids take the bucketed path after the first; heavy ids must still win.
    rng = np.random.default_rng(12)
    ids = np.char.add("id-", rng.permutation(300_000)[:100_000].astype(str)).astype(object)
    heavy = {"id-hot": 900, "id-warm": 500, "id-mild": 300, "": 200}
    pos = rng.permutation(100_000)
    start = 0
    for value, n in {**heavy, None: 3_000}.items():
        ids[pos[start : start + n]] = value
        start += n
    t = pa.table({"id": pa.array(ids.tolist())})
    batches = [t.slice(i, 10_000) for i in range(0, 100_000, 10_000)]
    col = profile_tables(batches, top_k=4)["columns"]["id"]
    assert col["top_values"] == [{"value": v, "count": n} for v, n in heavy.items()]
    assert (col["count"], col["nulls"]) == (97_000, 3_000)
    texts = [x for x in ids.tolist() if x is not None]
    truth = len(set(texts)) - 1  # the empty string is not counted
    assert abs(col["distinct_approx"] - truth) / truth < 0.03
    assert (col["min"], col["max"]) == (min(texts), max(texts))
    assert (col["min_length"], col["max_length"]) == (0, max(len(x) for x in texts))


def test_strings_and_booleans(colscan_impl):
    t = pa.table(
        {
            "word": pa.array(["pear", "apple", None, "fig", "apple", ""]),
            "flag": pa.array([True, False, True, None, True, True]),
        }
    )
    prof = profile_tables([t])
    word, flag = prof["columns"]["word"], prof["columns"]["flag"]
    assert (word["min"], word["max"], word["min_length"], word["max_length"]) == ("", "pear", 0, 5)
    assert (word["count"], word["nulls"], word["mean"], word["quantiles"]) == (5, 1, None, None)
    assert word["distinct_approx"] == 3  # the sketch ignores empty strings, as the library does
    assert word["top_values"][0] == {"value": "apple", "count": 2}
    assert flag["top_values"] == [{"value": True, "count": 4}, {"value": False, "count": 1}]
    assert (flag["distinct_approx"], flag["min"], flag["histogram"]) == (2, None, None)


def test_timestamps_are_iso_text():
    t = events(5_000, seed=4)
    prof = profile_tables([t])
    ts = prof["columns"]["ts"]
    micros = t.column("ts").cast(pa.int64()).to_numpy()
    assert ts["type"] == "timestamp[us, tz=UTC]"
    assert ts["min"] == iso(micros.min()) and ts["max"] == iso(micros.max())
    assert ts["mean"] == iso(round(micros.astype(np.float64).mean()))
    assert ts["stddev"] == pytest.approx(micros.std() / 1e6, rel=1e-9)
    texts = [*ts["quantiles"].values(), *ts["histogram"]["edges"]]
    assert all(s.endswith("Z") and s[10] == "T" for s in texts)
    p50 = datetime.fromisoformat(ts["quantiles"]["p50"]).timestamp() * 1e6
    assert abs(rank_of(np.sort(micros), p50) - 0.5) <= KLL_EPS
    assert ts["top_values"] is None


def test_other_timestamp_units_are_microseconds():
    secs = pa.array([1_700_000_000, 1_700_000_100], pa.timestamp("s", tz="UTC"))
    nanos = pa.array([1_700_000_000_000_000_123, 1_700_000_100_000_000_999], pa.timestamp("ns", tz="UTC"))
    prof = profile_tables([pa.table({"s": secs, "ns": nanos})])
    assert prof["columns"]["s"]["min"] == prof["columns"]["ns"]["min"] == "2023-11-14T22:13:20.000000Z"
    assert prof["columns"]["s"]["max"] == "2023-11-14T22:15:00.000000Z"


def test_merged_accumulators_equal_one_pass():
    cfg = _Config(None, 10, (0.01, 0.25, 0.5, 0.75, 0.99), 20, 12)
    fn = _ProfileFn(cfg)
    a, b = events(30_000, seed=2), events(30_000, seed=3, offset=30_000)
    merged = fn.extract_output(
        fn.merge_accumulators([fn.add_input(fn.create_accumulator(), a), fn.add_input(fn.create_accumulator(), b)])
    )
    one = fn.extract_output(fn.add_input(fn.create_accumulator(), pa.concat_tables([a, b])))
    assert merged["rows"] == one["rows"] == 60_000
    both = pa.concat_tables([a, b])
    for name, m in merged["columns"].items():
        o = one["columns"][name]
        for field in ("type", "count", "nulls", "min", "max", "min_length", "max_length"):
            assert m.get(field) == o.get(field), (name, field)
        # Exact registers either way, so the HLL estimates agree exactly.
        assert m["distinct_approx"] == o["distinct_approx"], name
        if isinstance(m["mean"], float):
            assert m["mean"] == pytest.approx(o["mean"], rel=1e-12)
            assert m["stddev"] == pytest.approx(o["stddev"], rel=1e-9)
    for name in ("amount", "hour_of_day"):
        x = np.sort(both.column(name).drop_null().cast(pa.float64()).to_numpy())
        x = x[~np.isnan(x)]
        for key, q in zip(merged["columns"][name]["quantiles"], (0.01, 0.25, 0.5, 0.75, 0.99)):
            for prof in (merged, one):
                v = prof["columns"][name]["quantiles"][key]
                # Integer columns repeat values: the true rank of v spans a range.
                lo, hi = rank_of(x, v), np.searchsorted(x, v, side="right") / len(x)
                assert lo - KLL_EPS <= q <= hi + KLL_EPS, (name, key, v)
    assert merged["columns"]["event_type"]["top_values"] == one["columns"]["event_type"]["top_values"]
    assert merged["columns"]["event_id"]["distinct_approx"] == pytest.approx(60_000, rel=0.03)


def test_accumulator_coder_round_trips():
    cfg = _Config(None, 10, (0.5,), 5, 12)
    fn = _ProfileFn(cfg)
    acc = fn.add_input(fn.create_accumulator(), events(8_000, seed=6))
    acc = fn.add_input(acc, events(0, seed=7))  # an empty batch is fine
    coder = fn.get_accumulator_coder()
    assert isinstance(coder, _ProfileCoder)
    data = coder.encode(acc)
    assert isinstance(data, bytes) and len(data) < 60_000
    back = coder.decode(data)
    assert fn.extract_output(back) == fn.extract_output(acc)
    # (frequent_strings_sketch re-serialises its map in another order, so compare what it holds)
    assert fn.extract_output(coder.decode(coder.encode(back))) == fn.extract_output(acc)
    # A decoded accumulator still merges and takes input.
    more = fn.add_input(back, events(2_000, seed=8, offset=8_000))
    out = fn.extract_output(fn.merge_accumulators([more, coder.decode(data)]))
    assert out["rows"] == 18_000 and out["columns"]["hour_of_day"]["distinct_approx"] == 24


def test_empty_inputs_give_empty_profiles():
    assert profile_tables([]) == {"rows": 0, "columns": {}}
    empty = profile_tables([], columns=["a"])["columns"]["a"]
    assert (empty["type"], empty["count"], empty["nulls"], empty["null_rate"], empty["mean"]) == (
        None,
        0,
        0,
        None,
        None,
    )
    schema_only = profile_tables([events(0)])["columns"]["amount"]
    assert (schema_only["type"], schema_only["count"], schema_only["min"], schema_only["quantiles"]) == (
        "double",
        0,
        None,
        None,
    )


def test_missing_and_conflicting_columns():
    a = pa.table({"x": [1, 2], "y": ["a", "b"]})
    b = pa.table({"x": [3, None, 5]})
    prof = profile_tables([a, b], columns=["y", "x"])
    assert list(prof["columns"]) == ["y", "x"]
    assert (prof["columns"]["y"]["count"], prof["columns"]["y"]["nulls"]) == (2, 3)
    assert (prof["columns"]["x"]["count"], prof["columns"]["x"]["max"]) == (4, 5)
    with pytest.raises(TypeError, match="column 'x'"):
        profile_tables([a, pa.table({"x": ["text"]})])
    with pytest.raises(TypeError, match="column 'x'"):
        profile_tables([a, pa.table({"x": [1.5]})])
    # Same kind in another width or encoding is fine.
    wide = profile_tables([a, pa.table({"x": pa.array([9], pa.int8()), "y": pa.array(["c"]).dictionary_encode()})])
    assert (wide["columns"]["x"]["max"], wide["columns"]["y"]["max"], wide["columns"]["y"]["count"]) == (9, "c", 3)


def test_profile_columns_on_the_fn_api_runner(pipeline):
    tables = [events(6_000, seed=s, offset=s * 6_000) for s in range(4)]
    everything = pa.concat_tables(tables)
    amount = everything.column("amount").drop_null().to_numpy()
    amount = amount[~np.isnan(amount)]

    def check(profiles):
        assert len(profiles) == 1
        prof = profiles[0]
        assert prof["rows"] == 24_000 and prof["window"] is None
        cols = prof["columns"]
        assert list(cols) == ["event_id", "amount"]
        assert cols["event_id"]["count"] == 24_000
        assert abs(cols["event_id"]["distinct_approx"] - 24_000) <= 0.03 * 24_000
        assert (cols["amount"]["min"], cols["amount"]["max"]) == (amount.min(), amount.max())
        assert cols["amount"]["mean"] == pytest.approx(amount.mean(), rel=1e-12)
        json.dumps(prof, allow_nan=False)

    with pipeline() as p:
        profiles = (
            p
            | "Tables" >> beam.Create(tables)
            | "Reshuffle" >> beam.Reshuffle()  # several bundles: accumulators cross the runner encoded
            | "Profile" >> ProfileColumns(columns=["event_id", "amount"], histogram_bins=4)
        )
        assert_that(profiles, check)


def test_one_profile_per_window(pipeline):
    def at(hour, values):
        return pa.table({"ts": pa.array([datetime(2024, 1, 1, hour, m, tzinfo=UTC) for m in values], US)})

    def stamp(table):
        start = table.column("ts")[0].value // 1_000_000
        return beam_window.TimestampedValue(table, start)

    with pipeline() as p:
        profiles = (
            p
            | "Tables" >> beam.Create([at(10, [1, 2]), at(10, [30]), at(11, [5])])
            | "Stamp" >> beam.Map(stamp)
            | "Hourly" >> beam.WindowInto(beam_window.FixedWindows(3600))
            | "Profile" >> ProfileColumns()
            | "Summary" >> beam.Map(lambda d: (d["window"]["start"], d["rows"], d["columns"]["ts"]["max"]))
        )
        assert_that(
            profiles,
            equal_to(
                [
                    ("2024-01-01T10:00:00.000000Z", 3, "2024-01-01T10:30:00.000000Z"),
                    ("2024-01-01T11:00:00.000000Z", 1, "2024-01-01T11:05:00.000000Z"),
                ]
            ),
        )


def test_a_bundle_gives_one_accumulator_per_window_equal_to_one_pass():
    cfg = _Config(None, 10, (0.5,), 4, 12)
    tables = [events(3_000, seed=s, offset=s * 3_000) for s in range(4)]
    hours = [beam_window.IntervalWindow(h * 3600, (h + 1) * 3600) for h in (10, 11)]
    fn = _SketchFn(cfg)
    fn.start_bundle()
    for i, table in enumerate(tables):
        assert list(fn.process(table, window=hours[i % 2]) or []) == []
    assert list(fn.process(tables[0].slice(0, 0), window=hours[0]) or []) == []
    out = list(fn.finish_bundle())
    assert [(w.windows, w.timestamp) for w in out] == [((h,), h.max_timestamp()) for h in hours]
    random = ("quantiles", "histogram")  # KLL sketches are randomised

    def exact(profile):
        return {n: {f: v for f, v in c.items() if f not in random} for n, c in profile["columns"].items()}

    for k, w in enumerate(out):
        got = _ProfileFn(cfg).extract_output(w.value)
        alone = profile_tables(tables[k::2], quantiles=(0.5,), histogram_bins=4)
        assert got["rows"] == alone["rows"] == 6_000
        assert exact(got) == exact(alone)
    fn.start_bundle()
    assert list(fn.finish_bundle()) == []  # nothing carried into the next bundle


@pytest.mark.parametrize(
    "kwargs",
    [
        {"top_k": 0},
        {"top_k": 2.5},
        {"quantiles": (0.5, 1.0)},
        {"quantiles": (0.0,)},
        {"quantiles": ()},
        {"quantiles": (0.5, True)},
        {"histogram_bins": 0},
        {"lg_k": 6},
        {"lg_k": 22},
        {"columns": "amount"},
        {"columns": ["a", "a"]},
        {"columns": ["a", ""]},
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        ProfileColumns(**kwargs)
