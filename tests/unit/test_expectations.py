"""Data-quality expectations: declaration, validation, the expression language, and evaluation in pipelines."""

import json
import math
from datetime import date, datetime, timezone

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from beam_pipelines import datagen
from beam_pipelines.pipelines import events as events_pipeline
from beam_pipelines.spec import EventsConfig
from transforms.quality.expect_expr import parse_expression
from transforms.quality.expectations import (
    Between,
    CheckExpectations,
    ExpectationError,
    Expression,
    Freshness,
    NotNull,
    Regex,
    RowCountBetween,
    Unique,
    evaluate_rows,
    expectations_path,
    failed_errors,
    failing_rows,
    load_expectations,
)
from transforms.records import ArrowTableCoder

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
RUN = datetime(2024, 1, 3, tzinfo=UTC)
COLS = {"event_id": pa.string(), "amount": pa.float64(), "currency": pa.string(), "ts": TS, "n": pa.int64()}
CURATED = {
    "event_id": pa.string(),
    "user_id": pa.string(),
    "event_type": pa.string(),
    "amount": pa.float64(),
    "currency": pa.string(),
    "ts": TS,
    "email": pa.string(),
    "email_domain": pa.string(),
    "country": pa.string(),
    "hour_of_day": pa.int32(),
    "day_of_week": pa.int32(),
    "is_weekend": pa.bool_(),
    "extras": pa.string(),
}
DEFAULTS = expectations_path(events_pipeline.__file__)


def day(d, h=0):
    return datetime(2024, 1, d, h, tzinfo=UTC)


def events(rows):
    """(event_id, event_type, amount, currency, ts, email) rows as a table."""
    names = ["event_id", "event_type", "amount", "currency", "ts", "email"]
    types = [pa.string(), pa.string(), pa.float64(), pa.string(), TS, pa.string()]
    return pa.table({n: pa.array([r[i] for r in rows], t) for i, (n, t) in enumerate(zip(names, types))})


def flat_rows(pcoll, label):
    return pcoll | label >> beam.FlatMap(lambda t: [tuple(r.values()) for r in t.to_pylist()])


def result(name, kind, column, passed, checked, failing, samples, detail, severity="error", action="count"):
    return {
        "name": name,
        "kind": kind,
        "column": column,
        "severity": severity,
        "action": action,
        "passed": passed,
        "checked": checked,
        "failing": failing,
        "samples": samples,
        "detail": detail,
    }


# ---------------------------------------------------------------- every kind, through a pipeline

ALL_KINDS = """
expectations:
  - {name: email_present, kind: not_null, column: email, severity: warn}
  - {name: id_present, kind: not_null, column: event_id}
  - {name: type_known, kind: accepted_values, column: event_type, values: [view, click, purchase, refund]}
  - {name: currency_known, kind: accepted_values, column: currency, values: [USD, EUR, GBP], allow_null: false}
  - {name: currency_code, kind: regex, column: currency, pattern: "^[A-Z]{3}$"}
  - {name: amount_range, kind: between, column: amount, min: 0, max: 1e9}
  - {name: amount_small, kind: between, column: amount, max: 10, inclusive: false}
  - {name: ts_range, kind: between, column: ts, min: 2000-01-01, max: "2100-01-01T00:00:00Z"}
  - {name: paid_positive, kind: expression, expr: "event_type not in ['purchase', 'refund'] or amount > 0"}
  - {name: ids_unique, kind: unique, column: event_id}
  - {name: emails_unique, kind: unique, column: email}
  - {name: enough_rows, kind: row_count_between, min: 1, max: 10}
  - {name: few_rows, kind: row_count_between, max: 4, severity: warn}
  - {name: fresh, kind: freshness, column: ts, max_age: 36h}
  - {name: very_fresh, kind: freshness, column: ts, max_age: 12h}
"""
EVENT_COLS = {"event_id": pa.string(), "event_type": pa.string(), "amount": pa.float64(), "currency": pa.string(),
              "ts": TS, "email": pa.string()}  # fmt: skip
T1 = events(
    [
        ("e1", "purchase", 10.0, "USD", day(1, 10), "a@x.com"),
        ("e2", "view", None, "usd", day(1, 11), None),
        ("e3", "refund", -2.5, "EUR", datetime(1999, 12, 31, 23, tzinfo=UTC), "b@y.com"),
    ]
)
T2 = events([("e4", "click", 2e9, None, day(2), None), ("e1", "bogus", 0.0, "GBP", day(1, 12), "c@z.com")])
ALL_KINDS_RESULTS = [
    result("email_present", "not_null", "email", False, 5, 2, [None], "2 of 5 rows have email null", "warn"),
    result("id_present", "not_null", "event_id", True, 5, 0, [], "0 of 5 rows have event_id null"),
    result("type_known", "accepted_values", "event_type", False, 5, 1, ["bogus"],
           '1 of 5 rows have event_type not in ["view", "click", "purchase", "refund"]'),
    result("currency_known", "accepted_values", "currency", False, 5, 2, ["usd", None],
           '2 of 5 rows have currency not in ["USD", "EUR", "GBP"]'),
    result("currency_code", "regex", "currency", False, 5, 1, ["usd"], "1 of 5 rows have currency not matching ^[A-Z]{3}$"),
    result("amount_range", "between", "amount", False, 5, 2, [-2.5, 2e9], "2 of 5 rows have amount outside [0, 1e9]"),
    result("amount_small", "between", "amount", False, 5, 2, [10.0, 2e9], "2 of 5 rows have amount >= 10"),
    result("ts_range", "between", "ts", False, 5, 1, ["1999-12-31T23:00:00Z"],
           "1 of 5 rows have ts outside [2000-01-01, 2100-01-01T00:00:00Z]"),
    result("paid_positive", "expression", None, False, 5, 1, [{"event_type": "refund", "amount": -2.5}],
           "1 of 5 rows fail: event_type not in ['purchase', 'refund'] or amount > 0"),
    result("ids_unique", "unique", "event_id", False, 5, 1, ["e1"], "1 event_id value occurs more than once in 5 rows",
           action=None),
    result("emails_unique", "unique", "email", True, 5, 0, [], "0 email values occur more than once in 5 rows",
           action=None),
    result("enough_rows", "row_count_between", None, True, 5, 0, [], "row count 5 in [1, 10]", action=None),
    result("few_rows", "row_count_between", None, False, 5, 1, [], "row count 5 not in [-inf, 4]", "warn", None),
    result("fresh", "freshness", "ts", True, 5, 0, [],
           "max(ts) 2024-01-02T00:00:00Z is within 36h before run time 2024-01-03T00:00:00Z", action=None),
    result("very_fresh", "freshness", "ts", False, 5, 1, ["2024-01-02T00:00:00Z"],
           "max(ts) 2024-01-02T00:00:00Z is older than 12h before run time 2024-01-03T00:00:00Z", action=None),
]  # fmt: skip


def test_every_kind_passing_and_failing_with_exact_counts_and_samples(pipeline):
    exps = load_expectations(ALL_KINDS, EVENT_COLS)
    with pipeline() as p:
        out = p | "Create" >> beam.Create([T1, T2]) | "Check" >> CheckExpectations(exps, RUN)
        assert_that(
            out["results"],
            equal_to([{"window_start": None, "window_end": None, "results": ALL_KINDS_RESULTS}]),
            label="results",
        )
        # Count-only expectations change nothing: every row passes on, nothing is dead-lettered.
        assert_that(flat_rows(out["passed"], "PassedRows") | beam.Map(lambda r: r[0]),
                    equal_to(["e1", "e2", "e3", "e4", "e1"]), label="passed")  # fmt: skip
        assert_that(out["dead_letters"], equal_to([]), label="no_dead_letters")
    json.dumps(ALL_KINDS_RESULTS)  # results are JSON-serialisable as they stand


def test_results_are_json_and_failed_errors_picks_error_failures():
    err = failed_errors({"window_start": None, "window_end": None, "results": ALL_KINDS_RESULTS})
    assert [r["name"] for r in err] == [
        "type_known", "currency_known", "currency_code", "amount_range", "amount_small", "ts_range",
        "paid_positive", "ids_unique", "very_fresh",
    ]  # fmt: skip
    assert failed_errors(ALL_KINDS_RESULTS[1:2]) == []


# ---------------------------------------------------------------- quarantine


def priced(rows):
    """(event_id, currency, amount) rows, with _raw and _source derived from the id."""
    return pa.table(
        {
            "event_id": [r[0] for r in rows],
            "currency": pa.array([r[1] for r in rows], pa.string()),
            "amount": pa.array([r[2] for r in rows], pa.float64()),
            "_raw": [f"raw-{r[0]}" for r in rows],
            "_source": [f"src-{r[0]}" for r in rows],
        }
    )


QUARANTINE = (
    Regex(name="currency_code", column="currency", pattern=r"^[A-Z]{3}$", action="quarantine"),
    Between(name="amount_min", column="amount", min=0, action="quarantine"),
    Between(name="amount_tiny", column="amount", max=1.5, severity="warn"),
    RowCountBetween(name="rows", min=1),
)


def test_quarantine_removes_failing_rows_and_dead_letters_each_once(pipeline):
    a = priced([("q1", "USD", 1.0), ("q2", "USD", -1.0), ("q3", "usd", -3.0), ("q4", None, 2.0)])
    b = priced([("q5", "EU", -4.0), ("q6", "GBP", 3.0)])
    with pipeline() as p:
        tables = p | "Create" >> beam.Create([a, b])
        out = tables | "Check" >> CheckExpectations(QUARANTINE, RUN, stage="audit")
        assert_that(
            flat_rows(out["passed"], "Passed"),
            equal_to(
                [
                    ("q1", "USD", 1.0, "raw-q1", "src-q1"),
                    ("q4", None, 2.0, "raw-q4", "src-q4"),
                    ("q6", "GBP", 3.0, "raw-q6", "src-q6"),
                ]
            ),  # fmt: skip
            label="passed",
        )
        assert_that(
            out["passed"] | "Columns" >> beam.Map(lambda t: tuple(t.schema.names)) | "Distinct" >> beam.Distinct(),
            equal_to([("event_id", "currency", "amount", "_raw", "_source")]),
            label="columns",
        )
        # q3 and q5 fail both quarantines: dead-lettered once, under the first declared (currency_code).
        assert_that(
            flat_rows(out["dead_letters"], "Dead"),
            equal_to(
                [
                    ("audit", "expectation:amount_min", "amount", "amount -1.0 < 0", "raw-q2", "src-q2"),
                    (
                        "audit",
                        "expectation:currency_code",
                        "currency",
                        'currency "usd" does not match ^[A-Z]{3}$',
                        "raw-q3",
                        "src-q3",
                    ),
                    (
                        "audit",
                        "expectation:currency_code",
                        "currency",
                        'currency "EU" does not match ^[A-Z]{3}$',
                        "raw-q5",
                        "src-q5",
                    ),
                ]
            ),  # fmt: skip
            label="dead_letters",
        )
        assert_that(
            out["results"]
            | "Counts" >> beam.Map(lambda r: [(x["name"], x["failing"], x["samples"]) for x in r["results"]]),
            equal_to(
                [
                    [
                        ("currency_code", 2, ["EU", "usd"]),
                        ("amount_min", 3, [-4.0, -3.0, -1.0]),
                        ("amount_tiny", 2, [2.0, 3.0]),
                        ("rows", 0, []),
                    ]
                ]
            ),  # fmt: skip
            label="results",
        )
        assert_that(
            out["results"] | "RowCount" >> beam.Map(lambda r: r["results"][3]["detail"]),
            equal_to(["row count 3 in [1, inf]"]),  # dataset-level checks see the rows that pass
            label="row_count",
        )
        assert_that(
            out["stats"],
            equal_to(
                [
                    {
                        "quality.expectation:currency_code": 1,
                        "quality.expectation:amount_min": 2,
                        "quality.expectation:amount_tiny": 1,
                    },
                    {
                        "quality.expectation:currency_code": 1,
                        "quality.expectation:amount_min": 1,
                        "quality.expectation:amount_tiny": 1,
                    },
                ]
            ),  # fmt: skip
            label="stats",
        )
        # Without a raw column the dead letter carries the row as JSON; without a source, null.
        bare = tables | "DropRaw" >> beam.Map(lambda t: t.select(["event_id", "currency", "amount"])).with_output_types(
            pa.Table
        )
        bare_out = bare | "CheckBare" >> CheckExpectations(QUARANTINE[:2], RUN)
        assert_that(
            bare_out["dead_letters"]
            | "BareRaw" >> beam.FlatMap(lambda t: zip(t["raw"].to_pylist(), t["source"].to_pylist())),
            equal_to(
                [
                    ('{"event_id":"q2","currency":"USD","amount":-1}', None),
                    ('{"event_id":"q3","currency":"usd","amount":-3}', None),
                    ('{"event_id":"q5","currency":"EU","amount":-4}', None),
                ]
            ),
            label="bare",
        )


# ---------------------------------------------------------------- unique, windows, empty input


@pytest.mark.parametrize("partitions", [1, 3])
def test_unique_finds_duplicates_split_across_batches(pipeline, partitions):
    def ids(values):
        return pa.table({"event_id": pa.array([v[0] for v in values], pa.string()), "n": [v[1] for v in values]})

    tables = [ids([("a", 1), ("b", 2)]), ids([("c", 3), ("a", 4)]), ids([("d", 5), (None, 6)]),
              ids([(None, 7), ("b", 8), ("b", 9)])]  # fmt: skip
    exps = (Unique(name="ids", column="event_id"), Unique(name="ns", column="n"))
    with pipeline() as p:
        out = p | beam.Create(tables) | CheckExpectations(exps, RUN, unique_partitions=partitions)
        assert_that(
            out["results"] | beam.Map(lambda r: r["results"]),
            equal_to(
                [
                    [
                        result(
                            "ids",
                            "unique",
                            "event_id",
                            False,
                            9,
                            2,
                            ["a", "b"],
                            "2 event_id values occur more than once in 9 rows",
                            action=None,
                        ),
                        result(
                            "ns",
                            "unique",
                            "n",
                            True,
                            9,
                            0,
                            [],
                            "0 n values occur more than once in 9 rows",
                            action=None,
                        ),
                    ]
                ]
            ),  # fmt: skip
        )


def test_results_per_window(pipeline):
    def stamped(ids, minute):
        return (pa.table({"event_id": ids}), day(1, 10).timestamp() + minute * 60)

    inputs = [stamped(["a", "b"], 5), stamped(["a"], 40), stamped(["a", "c"], 70)]
    exps = (Unique(name="ids", column="event_id"), RowCountBetween(name="rows", min=3))
    with pipeline() as p:
        tables = (
            p
            | beam.Create(inputs)
            | "Stamp" >> beam.Map(lambda x: TimestampedValue(x[0], x[1])).with_output_types(pa.Table)
        )
        out = tables | CheckExpectations(exps, RUN, window_seconds=3600)
        summary = out["results"] | beam.Map(
            lambda r: (
                r["window_start"],
                r["window_end"],
                [(x["passed"], x["failing"], x["samples"]) for x in r["results"]],
            )
        )
        assert_that(
            summary,
            equal_to(
                [
                    ("2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z", [(False, 1, ["a"]), (True, 0, [])]),
                    ("2024-01-01T11:00:00Z", "2024-01-01T12:00:00Z", [(True, 0, []), (False, 1, [])]),
                ]
            ),
        )


def test_streaming_results_per_window_on_the_watermark():
    # TestStream needs Beam's bundle-based DirectRunner in streaming mode (not the FnApiRunner).
    t0 = day(1, 10).timestamp()
    stream = (
        test_stream.TestStream(coder=ArrowTableCoder())
        .advance_watermark_to(t0)
        .add_elements([TimestampedValue(pa.table({"event_id": ["a", "b"]}), t0 + 300)])
        .add_elements([TimestampedValue(pa.table({"event_id": ["a"]}), t0 + 2400)])
        .advance_watermark_to(t0 + 3600)
        .add_elements([TimestampedValue(pa.table({"event_id": ["a", "c"]}), t0 + 4200)])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    exps = (Unique(name="ids", column="event_id"), RowCountBetween(name="rows", min=3))
    out = p | stream | CheckExpectations(exps, RUN, window_seconds=3600)
    assert_that(
        out["results"] | beam.Map(lambda r: (r["window_start"], [(x["passed"], x["failing"]) for x in r["results"]])),
        equal_to(
            [("2024-01-01T10:00:00Z", [(False, 1), (True, 0)]), ("2024-01-01T11:00:00Z", [(True, 0), (False, 1)])]
        ),
    )
    p.run().wait_until_finish()


def test_empty_input_still_gives_one_result_in_batch(pipeline):
    exps = (
        RowCountBetween(name="rows", min=1),
        Freshness(name="fresh", column="ts", max_age="1d"),
        Unique(name="ids", column="event_id"),
        NotNull(name="id", column="event_id"),
    )
    with pipeline() as p:
        out = p | beam.Create([events([])]) | CheckExpectations(exps, RUN)
        assert_that(
            out["results"] | beam.Map(lambda r: [(x["passed"], x["checked"], x["detail"]) for x in r["results"]]),
            equal_to(
                [
                    [
                        (False, 0, "row count 0 not in [1, inf]"),
                        (False, 0, "no ts values to check against run time 2024-01-03T00:00:00Z"),
                        (True, 0, "0 event_id values occur more than once in 0 rows"),
                        (True, 0, "0 of 0 rows have event_id null"),
                    ]
                ]
            ),
        )


# ---------------------------------------------------------------- row-level functions and the Python API


def test_row_level_masks_nulls_and_bounds():
    t = events(
        [
            ("a", "view", 0.0, "USD", day(1), None),
            ("b", None, float("nan"), None, day(2), "x"),
            ("c", "click", 5.0, "usd", None, "y"),
        ]
    )

    def fails(exp):
        return failing_rows(exp, t).to_pylist()

    assert fails(NotNull(name="e", column="email")) == [True, False, False]
    assert fails(Regex(name="r", column="currency", pattern="^[A-Z]+$")) == [False, False, True]  # null passes
    assert fails(Between(name="b", column="amount", min=0)) == [False, True, False]  # NaN fails, 0 included
    assert fails(Between(name="b", column="amount", min=0, inclusive=False)) == [True, True, False]
    assert fails(Between(name="t", column="ts", max="2024-01-01T12:00:00+00:00")) == [False, True, False]
    assert fails(Between(name="t", column="ts", min=date(2024, 1, 2))) == [True, False, False]
    states, masks = evaluate_rows((Between(name="b", column="amount", max=1), RowCountBetween(name="n", min=1)), t)
    # Row-level states only; samples in Arrow's order (NaN after numbers).
    assert list(states) == [0] and states[0][:2] == [3, 2] and states[0][3] is None
    assert states[0][2][0] == 5.0 and math.isnan(states[0][2][1])
    assert [m.to_pylist() for m in masks] == [[False, True, True]]


def test_callable_expression_and_its_contract():
    t = events([("a", "view", 1.0, "USD", day(1), None), ("b", "view", 3.0, "USD", day(1), None)])
    exp = Expression(name="small", expr=lambda table: pc.less(table["amount"], 2.0))
    assert failing_rows(exp, t).to_pylist() == [False, True]
    states, _ = evaluate_rows((exp,), t)
    assert states[0] == [2, 1, [], None]
    broken = Expression(name="broken", expr=lambda table: pa.array([1, 2]))
    with pytest.raises(ValueError, match="'broken': the callable must return a BooleanArray of 2 rows"):
        failing_rows(broken, t)


def test_python_api_validates_on_construction():
    with pytest.raises(ExpectationError, match="expectation 'b': between needs 'min' and/or 'max'"):
        Between(name="b", column="amount")
    with pytest.raises(ExpectationError, match="'x': action 'quarantine': unique only allows 'count'"):
        Unique(name="x", column="event_id", action="quarantine")
    with pytest.raises(ExpectationError, match="attribute access 'a.b'"):
        Expression(name="e", expr="a.b > 1")


def test_check_expectations_config_errors():
    exp = NotNull(name="a", column="event_id")
    with pytest.raises(ValueError, match="timezone-aware"):
        CheckExpectations([exp], datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="non-empty"):
        CheckExpectations([], RUN)
    with pytest.raises(ValueError, match=r"duplicate expectation names: \['a'\]"):
        CheckExpectations([exp, exp], RUN)
    with pytest.raises(ExpectationError, match="column 'nope' does not exist"):
        CheckExpectations([NotNull(name="a", column="nope")], RUN, columns=COLS)
    with pytest.raises(ValueError, match="window_seconds"):
        CheckExpectations([exp], RUN, window_seconds=0)


# ---------------------------------------------------------------- load errors, one per mistake


def one(item: str) -> str:
    return "expectations:\n  - " + item + "\n"


LOAD_ERRORS = {
    "unknown_kind": (one("{name: a, kind: betwen, column: amount, min: 0}"),
                     "expectations: expectation 'a': unknown kind 'betwen' (kinds: not_null, accepted_values,"),
    "unknown_key": (one("{name: a, kind: between, column: amount, mni: 0}"), "expectation 'a': unknown key 'mni' for between"),
    "missing_key": (one("{name: a, kind: between, min: 0}"), "expectation 'a': missing key 'column' for between"),
    "missing_name": (one("{kind: between, column: amount, min: 0}"), "expectation #1: missing key 'name' for between"),
    "missing_column": (one("{name: amount_range, kind: between, column: amout, min: 0}"),
                       "expectations: expectation 'amount_range': column 'amout' does not exist "
                       "(columns: event_id, amount, currency, ts, n)"),
    "regex_on_number": (one("{name: a, kind: regex, column: amount, pattern: x}"),
                        "expectation 'a': regex needs a string column, 'amount' is double"),
    "between_text_bound": (one("{name: a, kind: between, column: amount, min: abc}"),
                           "expectation 'a': min 'abc' does not fit column type double"),
    "between_bad_ts": (one("{name: a, kind: between, column: ts, max: 'soon'}"),
                       "expectation 'a': max 'soon' does not fit column type timestamp[us, tz=UTC]"),
    "between_on_text": (one("{name: a, kind: between, column: currency, min: a}"),
                        "expectation 'a': between needs a numeric, timestamp or date column, 'currency' is string"),
    "between_reversed": (one("{name: a, kind: between, column: n, min: 5, max: 1}"),
                         "expectation 'a': min 5 is greater than max 1"),
    "bad_regex": (one("{name: a, kind: regex, column: currency, pattern: '([A-Z'}"),
                  "expectation 'a': pattern '([A-Z': Invalid regular expression: missing ]: [A-Z"),
    "bad_expression": (one("{name: a, kind: expression, expr: 'amount.real > 0'}"),
                       "expectation 'a': attribute access 'amount.real' is not allowed in 'amount.real > 0'"),
    "expression_types": (one("{name: a, kind: expression, expr: \"lower(amount) == 'x'\"}"),
                         "expectation 'a': 'lower(amount)': Function 'utf8_lower' has no kernel matching input types"),
    "expression_column": (one("{name: a, kind: expression, expr: 'amout > 0'}"),
                          "expectation 'a': column 'amout' does not exist"),
    "duplicate_names": ("expectations:\n  - {name: a, kind: not_null, column: n}\n  - {name: a, kind: not_null, column: ts}\n",
                        "expectation 'a': duplicate name"),
    "bad_severity": (one("{name: a, kind: not_null, column: n, severity: fatal}"),
                     "expectation 'a': severity 'fatal' must be 'warn' or 'error'"),
    "bad_action": (one("{name: a, kind: not_null, column: n, action: drop}"),
                   "expectation 'a': action 'drop' must be 'count' or 'quarantine'"),
    "unique_quarantine": (one("{name: a, kind: unique, column: n, action: quarantine}"),
                          "expectation 'a': action 'quarantine': unique only allows 'count'"),
    "dataset_action": (one("{name: a, kind: row_count_between, min: 1, action: count}"),
                       "expectation 'a': unknown key 'action' for row_count_between"),
    "bad_name": (one("{name: Amount-Range, kind: not_null, column: n}"),
                 "expectation 'Amount-Range': name must match [a-z0-9_]+"),
    "values_type": (one("{name: a, kind: accepted_values, column: currency, values: [1, 2]}"),
                    "expectation 'a': value 1 does not fit column type string"),
    "values_empty": (one("{name: a, kind: accepted_values, column: currency, values: []}"),
                     "expectation 'a': values must be a non-empty list"),
    "bad_max_age": (one("{name: a, kind: freshness, column: ts, max_age: 36 hours}"),
                    "expectation 'a': max_age '36 hours' must look like '36h'"),
    "freshness_on_number": (one("{name: a, kind: freshness, column: n, max_age: 1d}"),
                            "expectation 'a': freshness needs a timestamp column, 'n' is int64"),
    "row_count_bounds": (one("{name: a, kind: row_count_between, min: -1}"),
                         "expectation 'a': min -1 must be a non-negative integer"),
    "malformed_yaml": ("expectations:\n  - name: a\n   kind: [\n", "expectations: malformed YAML at line 3"),
    "not_a_list": ("- {name: a}\n", "expectations: must be a mapping with one key 'expectations' holding a list"),
    "item_not_mapping": ("expectations:\n  - not_null\n", "expectation #1: must be a mapping, not str"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LOAD_ERRORS))
def test_load_errors_name_the_culprit(case):
    text, message = LOAD_ERRORS[case]
    with pytest.raises(ExpectationError) as err:
        load_expectations(text, COLS)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_load_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.expectations.yaml"
    path.write_text(one("{name: amount_range, kind: between, column: amout, min: 0}"))
    with pytest.raises(ExpectationError) as err:
        load_expectations(str(path), COLS)
    assert str(err.value) == (
        "bad.expectations.yaml: expectation 'amount_range': column 'amout' does not exist "
        "(columns: event_id, amount, currency, ts, n)"
    )
    with pytest.raises(ExpectationError, match="missing.yaml: cannot read .*missing.yaml: No such file"):
        load_expectations(tmp_path / "missing.yaml", COLS)


def test_load_accepts_dicts_and_objects():
    exps = load_expectations(
        [{"name": "a", "kind": "not_null", "column": "n"}, Between(name="b", column="ts", min="2020-01-01")], COLS
    )
    assert [(e.name, e.kind, e.severity) for e in exps] == [("a", "not_null", "error"), ("b", "between", "error")]
    with pytest.raises(ExpectationError, match="expectations: expectation 'b': column 'tz' does not exist"):
        load_expectations([Between(name="b", column="tz", min=1)], COLS)


# ---------------------------------------------------------------- the expression language

EXPR_TABLE = pa.table(
    {
        "event_type": ["purchase", "view", None, "refund"],
        "amount": pa.array([0.0, None, 3.0, 5.0]),
        "ts": pa.array([0, 5 * 3600 * 10**6, None, 10**15], TS),
        "n": pa.array([1, 2, 3, None], pa.int64()),
        "email": ["A@x", None, "b", "c"],
    }
)
EXPR_COLS = dict(zip(EXPR_TABLE.schema.names, EXPR_TABLE.schema.types))
VALID = {
    "event_type not in ['purchase', 'refund'] or amount > 0": [False, True, True, True],
    "0 <= amount < 4": [True, None, True, False],
    "n / 2 > 0.6": [False, True, True, None],
    "n * 2 - 1 == 3 and not (n == 1)": [False, True, False, None],
    "hour(ts) == 5": [False, True, None, False],
    "ts >= '1970-01-01T01:00:00Z'": [False, True, None, True],
    "coalesce(amount, 0) + 1 > 1": [False, False, True, True],
    "coalesce(amount, None) > 1": [False, None, True, True],
    "is_null(email) or length(email) > 1": [True, True, False, False],
    "lower(email) == 'a@x' or upper(email) == 'C'": [True, None, False, True],
    "not is_valid(amount)": [False, True, False, False],
    "n in [1, 3]": [True, False, True, None],
    "-n < -1": [False, True, True, None],
    "abs(-amount) >= 3": [False, None, True, True],
    "event_type in ('view', 'click')": [False, True, None, False],
    "True": [True, True, True, True],
}
REJECTED = {
    "a.b > 1": "attribute access 'a.b' is not allowed",
    "email[0] == 'a'": "subscript 'email[0]' is not allowed",
    "(lambda: 1)()": "call '(lambda: 1)()' is not allowed",
    "lambda: True": "lambda 'lambda: True' is not allowed",
    "foo(n) > 1": "call 'foo(n)' is not allowed in 'foo(n) > 1' (functions: abs, coalesce, hour, is_null",
    "__import__('os')": "call \"__import__('os')\" is not allowed",
    "n % 2 == 0": "operator 'n % 2' is not allowed",
    "n is None": "comparison 'n is None' is not allowed",
    "length(email, email) > 1": "'length(email, email)' takes 1 positional argument(s)",
    "lower(x=email) == 'a'": "'lower(x=email)' takes 1 positional argument(s)",
    "n >": "invalid syntax in 'n >'",
    "[1] == n": "list '[1]' is only allowed after 'in'",
    "n in [amount]": "'amount' in '[amount]' is not a literal",
    "n in [None]": "'None' in '[None]' is not a literal (use is_null(x) for nulls)",
    "n in 5": "'in' needs a non-empty list of literals, not '5'",
    "amount if n else n": "conditional expression 'amount if n else n' is not allowed",
    "n < 'abc'": "\"n < 'abc'\": Function 'less' has no kernel matching input types (int64, string)",
    "n and True": "'n and True': Function 'and_kleene' has no kernel matching input types (int64, bool)",
    "n + 1": "'n + 1' is int64, not boolean",
    "missing > 1": "column 'missing' does not exist (columns: event_type, amount, ts, n, email)",
    "event_type in [1, 2]": "'event_type in [1, 2]': Expected bytes, got a 'int' object",
    "b'x' == email": "literal \"b'x'\" is not allowed",
}


@pytest.mark.parametrize("text", sorted(VALID))
def test_expression_valid_forms(text):
    expr = parse_expression(text)
    expr.check(EXPR_COLS)
    assert expr.evaluate(EXPR_TABLE).to_pylist() == VALID[text]


@pytest.mark.parametrize("text", sorted(REJECTED))
def test_expression_rejected_forms(text):
    with pytest.raises(ValueError) as err:
        parse_expression(text).check(EXPR_COLS)
    assert REJECTED[text] in str(err.value)


def test_expression_columns_exclude_function_names():
    assert parse_expression("is_null(email) or lower(email) == event_type").columns == ("email", "event_type")


# ---------------------------------------------------------------- the events defaults


def test_events_defaults_load_against_the_curated_schema():
    exps = load_expectations(DEFAULTS, {**CURATED, "_raw": pa.string(), "_source": pa.string()})
    assert [(e.name, e.kind, e.severity) for e in exps] == [
        ("event_id_not_null", "not_null", "error"),
        ("event_type_known", "accepted_values", "error"),
        ("amount_range", "between", "warn"),
        ("paid_events_have_amount", "expression", "warn"),
        ("currency_code", "regex", "warn"),
        ("ts_range", "between", "error"),
        ("country_code", "regex", "warn"),
        ("has_rows", "row_count_between", "error"),
    ]
    assert all(getattr(e, "action", "count") == "count" for e in exps)  # none quarantine by default


def test_events_defaults_pass_on_the_curated_output_of_generated_data(pipeline):
    table, dirty = datagen.generate(3000, 0, seed=7, dirty_fraction=0.05)
    lines = datagen.render_jsonl(table, dirty, np.random.default_rng(7))
    batch = pa.table({"raw": pa.array(lines, pa.binary()), "source": ["gen"] * len(lines)})
    exps = load_expectations(DEFAULTS, CURATED)
    cfg = EventsConfig(input=None, input_format="jsonl", output="unused", shuffle_partitions=2)
    with pipeline() as p:
        io = events_pipeline.EventsIO(source=beam.Create([batch.slice(0, 1500), batch.slice(1500)]))
        curated = events_pipeline.build(p, cfg, io)["curated"]
        out = curated | "Check" >> CheckExpectations(exps, RUN)
        assert_that(
            out["results"] | beam.Map(lambda r: [(x["name"], x["passed"]) for x in r["results"] if not x["passed"]]),
            equal_to([[]]),
            label="all_pass",
        )
        assert_that(
            out["results"] | "Checked" >> beam.Map(lambda r: r["results"][-1]["checked"] > 2500),
            equal_to([True]),
            label="checked",
        )
        assert_that(
            curated | "Schema" >> beam.Map(lambda t: str(t.schema)) | beam.Distinct(),
            equal_to([str(pa.schema(CURATED))]),
            label="schema",
        )
