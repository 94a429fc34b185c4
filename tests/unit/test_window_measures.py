"""WindowedAggregate's measures and windows (fixed, sliding, sessions) against a plain Python
reference computed row by row, on every path: combiner, spill files, bounded and streaming
sessions."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to

from transforms.partials import AggregateSpec, group_codes, key_partitions
from transforms.records import ArrowTableCoder
from transforms.sessions import session_runs
from transforms.windows import Fixed, Measure, Sessions, Sliding, WindowedAggregate

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEYS = ("k", "g")

# Two count_distinct columns, and every fn on ints, floats with nulls, decimals and strings.
ALL = (
    Measure("n", "count"),
    Measure("users", "count_distinct", "u"),
    Measure("labels", "count_distinct", "s"),
    Measure("i_sum", "sum", "i"),
    Measure("i_min", "min", "i"),
    Measure("i_max", "max", "i"),
    Measure("i_mean", "mean", "i"),
    Measure("f_sum", "sum", "f", decimals=2),
    Measure("f_total", "sum", "f"),
    Measure("f_min", "min", "f"),
    Measure("f_max", "max", "f"),
    Measure("f_mean", "mean", "f"),
    Measure("d_sum", "sum", "d"),
    Measure("d_min", "min", "d"),
    Measure("d_max", "max", "d"),
    Measure("d_mean", "mean", "d"),
    Measure("s_min", "min", "s"),
    Measure("s_max", "max", "s"),
    Measure("first", "min", "ts"),
    Measure("last", "max", "ts"),
    Measure("b_sum", "sum", "b"),
    Measure("b_any", "max", "b"),
    Measure("b_rate", "mean", "b"),
)
# One count_distinct: the spill path partitions by its column.
ONE = (
    Measure("users", "count_distinct", "u"),
    Measure("f_sum", "sum", "f", decimals=2),
    Measure("n", "count"),
    Measure("s_min", "min", "s"),
    Measure("i_max", "max", "i"),
    Measure("d_mean", "mean", "d"),
)
# No count_distinct: partials are one row per group, the combiner path serves spill_dir too.
NONE = (Measure("d_sum", "sum", "d"), Measure("i_sum", "sum", "i"), Measure("f_mean", "mean", "f"))
MEASURE_SETS = {"all": ALL, "one_distinct": ONE, "no_distinct": NONE}
ZERO = {"i": 0, "f": 0.0, "d": Decimal("0.00"), "b": 0}  # a sum of no values, by column type
APPROX = {"mean", "f_total"}  # float results whose last bits depend on summation order

WINDOWS = {"fixed": Fixed(3600), "sliding": Sliding(3600, 1200), "sessions": Sessions(300)}


def random_rows(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    base = int(T0.timestamp()) * 1_000_000
    return pa.table(
        {
            "ts": pa.array(base + rng.integers(0, 3 * 3_600_000_000, n), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "k": pa.array(rng.choice(["x", "y", None], n), pa.string()),
            "g": pa.array(rng.integers(1, 3, n), pa.int64()),
            "u": [f"u{i}" for i in rng.integers(0, 12, n)],
            "i": pa.array(rng.integers(-50, 1000, n), pa.int32(), mask=rng.random(n) < 0.2),
            "f": pa.array(np.round(rng.uniform(0, 100, n), 2), mask=rng.random(n) < 0.3),
            "d": pa.array(
                [Decimal(int(x)).scaleb(-2) for x in rng.integers(-10_000, 100_000, n)],
                pa.decimal128(12, 2),
                mask=rng.random(n) < 0.2,
            ),
            "s": pa.array(rng.choice(["alpha", "beta", "gamma", "délta", None], n), pa.string()),
            "b": pa.array(rng.random(n) < 0.3, mask=rng.random(n) < 0.2),
        }
    )


def micros_to_time(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def windows_of(us: int, window) -> list[tuple[int, int]]:
    """The (start, end) in microseconds of each fixed or sliding window holding ``us``."""
    if isinstance(window, Fixed):
        size = window.size_seconds * 1_000_000
        return [(us - us % size, us - us % size + size)]
    size, period = window.size_seconds * 1_000_000, window.period_seconds * 1_000_000
    bucket = us - us % period
    return [(bucket - j * period, bucket - j * period + size) for j in range(size // period)]


def sessions_of(rows: list[dict], gap_us: int) -> dict:
    """Rows of one key -> {(start, end): rows} with Beam's session spans."""
    out, current = {}, []
    for r in sorted(rows, key=lambda r: r["_us"]):
        if current and r["_us"] - current[-1]["_us"] >= gap_us:
            out[(current[0]["_us"], current[-1]["_us"] + gap_us)] = current
            current = []
        current.append(r)
    out[(current[0]["_us"], current[-1]["_us"] + gap_us)] = current
    return out


def reference_value(m: Measure, rows: list[dict]):
    if m.fn == "count":
        return len(rows)
    values = [r[m.column] for r in rows if r[m.column] is not None]
    if m.fn == "count_distinct":
        return len(set(values))
    if m.fn == "sum" and m.decimals is not None:
        scale = 10**m.decimals
        return round(sum(round(v * scale) for v in values) / scale, m.decimals)
    if m.fn == "sum":
        return sum(values, ZERO[m.column])
    if m.fn == "mean":
        return float(sum(values)) / len(values) if values else None
    if not values:
        return None
    return min(values) if m.fn == "min" else max(values)


def reference(table: pa.Table, measures, window) -> list[dict]:
    """The aggregate computed row by row in plain Python."""
    rows = table.to_pylist()
    for r, us in zip(rows, table.column("ts").cast(pa.int64()).to_pylist()):
        r["_us"] = us
    groups: dict = {}
    if isinstance(window, Sessions):
        by_key: dict = {}
        for r in rows:
            by_key.setdefault(tuple(r[k] for k in KEYS), []).append(r)
        for key, key_rows in by_key.items():
            for span, session in sessions_of(key_rows, window.gap_seconds * 1_000_000).items():
                groups[(span, key)] = session
    else:
        for r in rows:
            for span in windows_of(r["_us"], window):
                groups.setdefault((span, tuple(r[k] for k in KEYS)), []).append(r)
    out = []
    for ((start, end), key), group in groups.items():
        row = {"window_start": micros_to_time(start), "window_end": micros_to_time(end), **dict(zip(KEYS, key))}
        row.update({m.name: reference_value(m, group) for m in measures})
        out.append(row)
    return sorted(out, key=sort_key)


def sort_key(row: dict) -> tuple:
    return (row["window_start"], row["k"] or "", row["g"])


def same(want: list[dict], measures):
    """A matcher: the actual rows equal ``want``; float results of summation order approximately."""
    loose = {m.name for m in measures if m.fn in APPROX or m.name in APPROX}

    def match(actual):
        actual = sorted(actual, key=sort_key)
        assert len(actual) == len(want), (len(actual), len(want))
        for got, exp in zip(actual, want):
            assert list(got) == list(exp), (list(got), list(exp))
            for name, value in exp.items():
                if name in loose and value is not None:
                    assert math.isclose(got[name], value, rel_tol=1e-12), (name, got, exp)
                else:
                    assert got[name] == value and type(got[name]) is type(value), (name, got[name], value, got)

    return match


class _CheckWindowFn(beam.DoFn):
    """Each output table lies in the Beam window its rows name (fixed and sliding windows)."""

    def process(self, table, window=beam.DoFn.WindowParam):
        starts = set(table.column("window_start").cast(pa.int64()).to_pylist())
        ends = set(table.column("window_end").cast(pa.int64()).to_pylist())
        yield starts == {window.start.micros} and ends == {window.end.micros}


def run_bounded(pipeline, batches, want, measures, window, **kwargs):
    with pipeline() as p:
        out = p | beam.Create(batches) | WindowedAggregate(group_by=KEYS, measures=measures, window=window, **kwargs)
        rows = out | beam.FlatMap(lambda t: t.to_pylist())
        assert_that(rows, same(want, measures))
        if not isinstance(window, Sessions):
            placed = out | beam.ParDo(_CheckWindowFn()) | beam.WindowInto(beam.window.GlobalWindows()) | beam.Distinct()
            assert_that(placed, equal_to([True]), label="InTheirWindows")


@pytest.mark.parametrize("path", ["combiner", "spill"])
@pytest.mark.parametrize("measure_set", sorted(MEASURE_SETS))
@pytest.mark.parametrize("window_name", sorted(WINDOWS))
def test_measures_match_a_row_by_row_reference(pipeline, tmp_path, path, measure_set, window_name):
    measures, window = MEASURE_SETS[measure_set], WINDOWS[window_name]
    batches = [random_rows(seed, 150) for seed in range(3)]
    want = reference(pa.concat_tables(batches), measures, window)
    assert len(want) >= 18  # every (window, key) of 3 hours and 6 keys, or more
    kwargs = {"spill_dir": str(tmp_path / "scratch"), "partitions": 3} if path == "spill" else {}
    run_bounded(pipeline, batches, want, measures, window, **kwargs)
    spilled = list((tmp_path / "scratch").rglob("*.arrow"))
    # Spill files are written by the paths that use them: not without a count_distinct.
    assert bool(spilled) == (path == "spill" and (measure_set != "no_distinct" or window_name == "sessions"))


def test_output_types_follow_the_measures(pipeline):
    batch = random_rows(5, 200)
    with pipeline() as p:
        out = p | beam.Create([batch]) | WindowedAggregate(group_by=KEYS, measures=ALL, window=Fixed(3600))
        schemas = (
            out
            | beam.Map(lambda t: tuple((f.name, str(f.type)) for f in t.schema))
            | beam.WindowInto(beam.window.GlobalWindows())
            | beam.Distinct()
        )
        assert_that(
            schemas,
            equal_to(
                [
                    (
                        ("window_start", "timestamp[us, tz=UTC]"),
                        ("window_end", "timestamp[us, tz=UTC]"),
                        ("k", "string"),
                        ("g", "int64"),
                        ("n", "int64"),
                        ("users", "int64"),
                        ("labels", "int64"),
                        ("i_sum", "int64"),
                        ("i_min", "int32"),
                        ("i_max", "int32"),
                        ("i_mean", "double"),
                        ("f_sum", "double"),
                        ("f_total", "double"),
                        ("f_min", "double"),
                        ("f_max", "double"),
                        ("f_mean", "double"),
                        ("d_sum", "decimal128(38, 2)"),
                        ("d_min", "decimal128(12, 2)"),
                        ("d_max", "decimal128(12, 2)"),
                        ("d_mean", "double"),
                        ("s_min", "string"),
                        ("s_max", "string"),
                        ("first", "timestamp[us, tz=UTC]"),
                        ("last", "timestamp[us, tz=UTC]"),
                        ("b_sum", "int64"),
                        ("b_any", "bool"),
                        ("b_rate", "double"),
                    )
                ]
            ),
        )


def test_all_null_values_sum_to_zero_and_have_no_min_or_mean(pipeline):
    table = pa.table(
        {
            "ts": pa.array([T0, T0 + timedelta(minutes=1)], pa.timestamp("us", tz="UTC")),
            "k": ["x", "x"],
            "g": [1, 1],
            "i": pa.array([None, None], pa.int64()),
            "f": pa.array([None, None], pa.float64()),
            "d": pa.array([None, None], pa.decimal128(12, 2)),
        }
    )
    measures = (
        Measure("i_sum", "sum", "i"),
        Measure("f_sum", "sum", "f", decimals=2),
        Measure("d_sum", "sum", "d"),
        Measure("i_min", "min", "i"),
        Measure("f_mean", "mean", "f"),
    )
    with pipeline() as p:
        out = p | beam.Create([table]) | WindowedAggregate(group_by=KEYS, measures=measures, window=Fixed(3600))
        values = out | beam.FlatMap(lambda t: [tuple(r[m.name] for m in measures) for r in t.to_pylist()])
        assert_that(values, equal_to([(0, 0.0, Decimal("0.00"), None, None)]))


def test_legacy_keywords_mean_the_events_measures():
    legacy = WindowedAggregate(window_seconds=1800, count_distinct="uid", sum_field="price", decimals=3)._spec
    assert legacy.window == Fixed(1800)
    assert legacy.measures == (
        Measure("events", "count"),
        Measure("users", "count_distinct", "uid"),
        Measure("price_sum", "sum", "price", 3),
    )
    default = WindowedAggregate()._spec
    assert default.window == Fixed(3600)
    assert [m.name for m in default.measures] == ["events", "users", "amount_sum"]


# Streaming: TestStream on the bundle-based DirectRunner (see test_stream_windows).


def streaming_pipeline() -> beam.Pipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)


def clicks(rows) -> pa.Table:
    """rows: (minute after T0, user, amount)."""
    return pa.table(
        {
            "ts": pa.array([T0 + timedelta(minutes=m) for m, _, _ in rows], pa.timestamp("us", tz="UTC")),
            "user_id": [u for _, u, _ in rows],
            "amount": pa.array([a for *_, a in rows], pa.float64()),
            "site": ["web"] * len(rows),
        }
    )


STREAM_MEASURES = (
    Measure("n", "count"),
    Measure("users", "count_distinct", "user_id"),
    Measure("amt", "sum", "amount", 2),
)


def firings(tables, keyed: bool = False):
    """(key?, window start minute, window end minute, n, users?, amt) per output row, in firing order."""

    def minutes(t):
        return int((t - T0).total_seconds() // 60)

    def rows(t):
        return [
            ((r["user_id"],) if keyed else ())
            + (minutes(r["window_start"]), minutes(r["window_end"]), r["n"])
            + (() if keyed else (r["users"],))
            + (r["amt"],)
            for r in t.to_pylist()
        ]

    return tables | "Firings" >> beam.FlatMap(rows)


def test_sliding_windows_in_streaming_fire_on_time_then_late():
    stream = (
        test_stream.TestStream(coder=ArrowTableCoder())
        .advance_watermark_to(T0.timestamp())
        .add_elements([clicks([(5, "a", 1.0), (15, "b", 2.0)])])
        .advance_watermark_to(T0.timestamp() + 30 * 60)  # windows ending by 00:30 fire on time
        .add_elements([clicks([(12, "a", 0.5)])])  # late: updates the two windows holding 00:12
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    out = (
        p
        | stream
        | WindowedAggregate(
            group_by=("user_id",),
            measures=STREAM_MEASURES[:1] + STREAM_MEASURES[2:],
            window=Sliding(20 * 60, 10 * 60),
            allowed_lateness_seconds=3600,
            late_firings=True,
        )
    )
    assert_that(
        firings(out, keyed=True),
        equal_to(
            [
                ("a", -10, 10, 1, 1.0),
                ("a", 0, 20, 1, 1.0),
                ("b", 0, 20, 1, 2.0),
                ("b", 10, 30, 1, 2.0),
                # Late firings carry the window's whole value so far (accumulating panes).
                ("a", 0, 20, 2, 1.5),
                ("b", 0, 20, 1, 2.0),
                ("a", 10, 30, 1, 0.5),
                ("b", 10, 30, 1, 2.0),
            ]
        ),
    )
    p.run().wait_until_finish()


def test_sliding_windows_count_distinct_in_streaming():
    stream = (
        test_stream.TestStream(coder=ArrowTableCoder())
        .advance_watermark_to(T0.timestamp())
        .add_elements([clicks([(5, "a", 1.0), (15, "b", 2.0)]), clicks([(16, "a", 0.25)])])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    out = p | stream | WindowedAggregate(group_by=("site",), measures=STREAM_MEASURES, window=Sliding(1200, 600))
    assert_that(firings(out), equal_to([(-10, 10, 1, 1, 1.0), (0, 20, 3, 2, 3.25), (10, 30, 2, 2, 2.25)]))
    p.run().wait_until_finish()


def test_streaming_sessions_merge_when_a_late_event_bridges_two():
    stream = (
        test_stream.TestStream(coder=ArrowTableCoder())
        .advance_watermark_to(T0.timestamp())
        # a: two sessions (00:00 and 00:15); b: one; c: one table whose events chain across
        # 16 minutes with a 10-minute gap, so its session spans 00:30-00:56.
        .add_elements([clicks([(0, "a", 1.0), (15, "a", 2.0), (3, "b", 4.0)])])
        .add_elements([clicks([(30, "c", 1.0), (34, "c", 1.0), (38, "c", 1.0), (42, "c", 1.0), (46, "c", 1.0)])])
        .advance_watermark_to(T0.timestamp() + 3600)  # all sessions closed: on-time firings
        .add_elements([clicks([(7, "a", 0.5)])])  # late, within lateness: joins a's two sessions
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    out = (
        p
        | stream
        | WindowedAggregate(
            group_by=("user_id",),
            measures=(Measure("n", "count"), Measure("amt", "sum", "amount", 2)),
            window=Sessions(600),
            allowed_lateness_seconds=7200,
            late_firings=True,
        )
    )
    assert_that(
        firings(out, keyed=True),
        equal_to(
            [
                ("a", 0, 10, 1, 1.0),
                ("a", 15, 25, 1, 2.0),
                ("b", 3, 13, 1, 4.0),
                ("c", 30, 56, 5, 5.0),
                ("a", 0, 25, 3, 3.5),  # the merged session, fired late with all three events
            ]
        ),
    )
    p.run().wait_until_finish()


def test_session_runs_chain_markers_across_each_run():
    rng = np.random.default_rng(3)
    base = int(T0.timestamp()) * 1_000_000
    table = pa.table(
        {
            "ts": pa.array(base + np.sort(rng.integers(0, 4 * 3_600_000_000, 400)), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "user_id": rng.choice(["a", "b", "c"], 400),
        }
    )
    spec = AggregateSpec("ts", ("user_id",), (Measure("n", "count"),), Sessions(300))
    gap = spec.gap_us
    runs = list(session_runs(table, spec))
    assert sum(part.column("_n").to_numpy().sum() for _, part, _, _ in runs) == 400
    per_key: dict = {}
    for (user,), _part, first, marks in runs:
        chain = [first, *sorted(marks)]
        # Neighbouring points are less than a gap apart, so Beam's session windows
        # [t, t + gap) of the run and its markers merge into one.
        assert all(b - a < gap for a, b in zip(chain, chain[1:]))
        per_key.setdefault(user, []).append((chain[0], chain[-1]))
    for user, spans in per_key.items():
        times = table.filter(pa.compute.equal(table.column("user_id"), user)).column("ts").cast(pa.int64())
        times = np.sort(times.to_numpy())
        breaks = np.flatnonzero(np.diff(times) >= gap)
        want = list(zip(times[np.r_[0, breaks + 1]], times[np.r_[breaks, len(times) - 1]]))
        assert sorted(spans) == [(int(a), int(b)) for a, b in want]


def test_group_codes_and_key_partitions_follow_equal_values():
    table = pa.table(
        {
            "k": pa.array(["x", None, "x", "y", None, "x"], pa.string()),
            "g": pa.array([1, 1, 1, 2, 1, 2], pa.int64()),
        }
    )
    codes = group_codes(table, ("k", "g"))
    assert [codes[0] == codes[2], codes[1] == codes[4], codes[0] == codes[5], codes[0] == codes[1]] == [
        True,
        True,
        False,
        False,
    ]
    parts = key_partitions(table, ["k", "g"], 4)
    assert parts[0] == parts[2] and parts[1] == parts[4]
    assert ((0 <= parts) & (parts < 4)).all()
    many = pa.table({"k": [f"k{i % 50}" for i in range(1000)], "g": [i % 7 for i in range(1000)]})
    assert len(set(key_partitions(many, ["k", "g"], 8).tolist())) == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"measures": (Measure("n", "count"), Measure("n", "sum", "x"))}, "duplicate measure names: n"),
        ({"measures": ()}, "non-empty"),
        ({"measures": Measure("n", "count")}, "tuple of Measure"),
        ({"measures": (("n", "count"),)}, "Measure objects"),
        ({"measures": (Measure("country", "count"),)}, "clashes"),
        ({"measures": (Measure("window_start", "count"),)}, "clashes"),
        ({"measures": (Measure("window", "count"),)}, "reserved"),
        ({"measures": (Measure("n", "max", "_session"),)}, "reserved name"),
        ({"measures": (Measure("n", "count"),), "count_distinct": "user_id"}, "not both"),
        ({"measures": (Measure("n", "count"),), "decimals": 2}, "not both"),
        ({"window": Fixed(60), "window_seconds": 60}, "not both"),
        ({"window": 3600}, "Fixed, Sliding or Sessions"),
        ({"window_seconds": -5}, "positive"),
        ({"group_by": ("k", "k")}, "distinct"),
        ({"group_by": ("window_end",)}, "not named"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowedAggregate(**kwargs)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Measure("n", "median", "x"), "unknown fn 'median'"),
        (lambda: Measure("n", "sum"), "sum needs a column"),
        (lambda: Measure("n", "count_distinct"), "count_distinct needs a column"),
        (lambda: Measure("n", "count", "x"), "takes no column"),
        (lambda: Measure("n", "min", "x", decimals=2), "decimals applies to sum only"),
        (lambda: Measure("n", "sum", "x", decimals=9), "between 0 and 6"),
        (lambda: Measure("", "count"), "non-empty"),
        (lambda: Sliding(3600, 700), "multiple of period"),
        (lambda: Sliding(0, 0), "positive"),
        (lambda: Fixed(0), "positive"),
        (lambda: Sessions(-1), "positive"),
    ],
)
def test_measure_and_window_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
