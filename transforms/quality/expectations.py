"""CheckExpectations: data-quality expectations evaluated on Arrow batches as they flow.

Row-level expectations give each row pass/fail with one or two ``pyarrow.compute`` calls per
batch; failing rows of ``quarantine`` expectations become dead letters (once, under the first
failing one in declaration order) and leave the output. Dataset-level expectations see the rows
that pass: ``unique`` counts values in a hash-partitioned shuffle of per-batch value counts,
``row_count_between`` and ``freshness`` need only counts and a maximum. Every batch yields a
small partial state per expectation; a CombineFn merges them into one list of results per
window (the global window in batch).

The declaring side (one dataclass per kind, YAML loading) is in ``expectations_spec`` and is
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms import window as beam_window

from transforms.quality.expect_expr import Expr
from transforms.quality.expectations_spec import (
    KINDS,
    AcceptedValues,
    Between,
    Expectation,
    ExpectationError,
    Expression,
    Freshness,
    NotNull,
    Regex,
    RowCountBetween,
    Unique,
    expectations_path,
    load_expectations,
)
from transforms.records import as_array, dead_letters, hash_partition, json_text, slices_by, typed

__all__ = [
    "AcceptedValues",
    "Between",
    "CheckExpectations",
    "Expectation",
    "ExpectationError",
    "Expression",
    "Freshness",
    "NotNull",
    "Regex",
    "RowCountBetween",
    "Unique",
    "evaluate_rows",
    "failing_rows",
    "expectations_path",
    "failed_errors",
    "load_expectations",
]

SAMPLES = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1e-3}


# ---------------------------------------------------------------- values, samples, wording


def _jsonable(v):
    """A JSON value for a sample (timestamps as ISO-8601 text, ``Z`` for UTC)."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            return v.isoformat()
        return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="backslashreplace")
    if isinstance(v, (Decimal, timedelta)):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _show(v) -> str:
    return orjson.dumps(_jsonable(v)).decode()


def _bound(v) -> str:
    return _jsonable(v) if isinstance(v, (datetime, date)) else str(v)


def _sort_key(v):
    """Arrow's ascending order (NaN after numbers, nulls last), so samples are the same
    smallest values whatever order batches arrive in."""
    if isinstance(v, dict):
        return tuple(_sort_key(x) for x in v.values())
    if v is None:
        return (2,)
    if isinstance(v, float) and math.isnan(v):
        return (1,)
    return (0, v)


def _merge_samples(a: list, b: list) -> list:
    if not b:
        return a
    distinct = {_sort_key(v): v for v in a + b}
    return [distinct[k] for k in sorted(distinct)[:SAMPLES]]


def _smallest_distinct(values: pa.Array | pa.Table) -> list:
    """The (up to) SAMPLES smallest distinct values of an array, or distinct rows of a table."""
    if isinstance(values, pa.Table):
        if values.num_columns == 0:
            return []
        cols = values.column_names
        try:
            distinct = values.group_by(cols, use_threads=False).aggregate([]).select(cols)
            return distinct.sort_by([(c, "ascending") for c in cols]).slice(0, SAMPLES).to_pylist()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            return values.slice(0, SAMPLES).to_pylist()  # nested columns cannot be grouped or sorted
    distinct = pc.unique(values)
    return distinct.take(pc.sort_indices(distinct)[:SAMPLES]).to_pylist()


def _condition(exp: Expectation) -> str:
    """What a failing row has, e.g. ``amount < 0``."""
    col = exp.field
    if isinstance(exp, NotNull):
        return f"{col} null"
    if isinstance(exp, AcceptedValues):
        shown = ", ".join(_show(v) for v in exp.values[:10]) + (", ..." if len(exp.values) > 10 else "")
        return f"{col} not in [{shown}]"
    if isinstance(exp, Regex):
        return f"{col} not matching {exp.pattern}"
    if isinstance(exp, Between):
        if exp.max is None:
            return f"{col} {'<' if exp.inclusive else '<='} {_bound(exp.min)}"
        if exp.min is None:
            return f"{col} {'>' if exp.inclusive else '>='} {_bound(exp.max)}"
        a, b = ("[", "]") if exp.inclusive else ("(", ")")
        return f"{col} outside {a}{_bound(exp.min)}, {_bound(exp.max)}{b}"
    return ""


def _micros(value: pa.Scalar) -> int | None:
    if not value.is_valid:
        return None
    return int(value.cast(pa.int64()).as_py() * _UNIT_US[value.type.unit])


def _iso_micros(us: int) -> str:
    return _jsonable(_EPOCH + timedelta(microseconds=us))


# ---------------------------------------------------------------- per-batch evaluation


def _expression_result(exp: Expression, table: pa.Table) -> pa.Array:
    if isinstance(exp.expr, Expr):
        return exp.expr.evaluate(table)
    out = as_array(exp.expr(table))
    if not isinstance(out, pa.Array) or not pa.types.is_boolean(out.type) or len(out) != table.num_rows:
        raise ValueError(f"expectation {exp.name!r}: the callable must return a BooleanArray of {table.num_rows} rows")
    return out


def failing_rows(exp: Expectation, table: pa.Table) -> pa.Array:
    """A null-free boolean array: True where a row fails the row-level ``exp``.

    Args:
        exp: A row-level expectation.
        table: One batch holding the columns ``exp`` reads.
    """
    if isinstance(exp, Expression):
        return pc.invert(pc.fill_null(_expression_result(exp, table), False))
    col = as_array(table.column(exp.column))
    if isinstance(exp, NotNull):
        return pc.is_null(col)
    if isinstance(exp, AcceptedValues):
        ok = pc.is_in(col, value_set=exp.value_set(col.type))  # null -> False
        return pc.invert(pc.or_(ok, pc.is_null(col)) if exp.allow_null else ok)
    if isinstance(exp, Regex):
        return pc.invert(pc.fill_null(pc.match_substring_regex(col, exp.pattern), True))
    if isinstance(exp, Between):
        lo, hi = exp.bounds(col.type)
        ok = None
        if lo is not None:
            ok = (pc.greater_equal if exp.inclusive else pc.greater)(col, lo)
        if hi is not None:
            upper = (pc.less_equal if exp.inclusive else pc.less)(col, hi)
            ok = upper if ok is None else pc.and_(ok, upper)
        return pc.invert(pc.fill_null(ok, True))
    raise TypeError(f"{type(exp).__name__} is not a row-level expectation")


def _samples(exp: Expectation, table: pa.Table, fail: pa.Array) -> list:
    if isinstance(exp, Expression):
        if not isinstance(exp.expr, Expr):
            return []
        return _smallest_distinct(table.select(list(exp.expr.columns)).filter(fail))
    return _smallest_distinct(as_array(table.column(exp.column)).filter(fail))


def _errors(exp: Expectation, rows: pa.Table) -> list[str]:
    """One short message per (already failing) row, naming the failing value."""
    if isinstance(exp, Expression):
        if not isinstance(exp.expr, Expr):
            return [f"{exp.name} is not true"] * rows.num_rows
        shown = json_text(rows.select(list(exp.expr.columns))).to_pylist()
        return [f"not true: {exp.expr.text} for {s}" for s in shown]
    values = rows.column(exp.column).to_pylist()
    if isinstance(exp, NotNull):
        return [f"{exp.column} is null"] * len(values)
    if isinstance(exp, AcceptedValues):
        return [f"{exp.column} {_show(v)} is not an accepted value" for v in values]
    if isinstance(exp, Regex):
        return [f"{exp.column} {_show(v)} does not match {exp.pattern}" for v in values]
    cond = _condition(exp).removeprefix(exp.column + " ")
    return [f"{exp.column} {_show(v)} {cond}" for v in values]


def evaluate_rows(expectations: Sequence[Expectation], table: pa.Table) -> tuple[dict[int, list], list[pa.Array]]:
    """Row-level expectations on one table.

    Args:
        expectations: All expectations (dataset-level ones are skipped).
        table: One batch.

    Returns:
        ``({index: [checked, failing, samples, None]}, masks)`` with one failing-row mask per
        row-level expectation, in order.
    """
    states, masks = {}, []
    for i, exp in enumerate(expectations):
        if not exp.row_level:
            continue
        fail = failing_rows(exp, table)
        n = fail.true_count
        states[i] = [table.num_rows, n, _samples(exp, table, fail) if n else [], None]
        masks.append(fail)
    return states, masks


class _EvaluateFn(beam.DoFn):
    def __init__(self, expectations: tuple, stage: str, raw_column: str, source_column: str, partitions: int):
        self._exps, self._stage = expectations, stage
        self._raw, self._source, self._partitions = raw_column, source_column, partitions

    def setup(self):
        self._failing = {e.name: beam.metrics.Metrics.counter("expectations", e.name) for e in self._exps}
        self._quarantined = beam.metrics.Metrics.counter("expectations", "quarantined")

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            yield table
            return
        states, masks = evaluate_rows(self._exps, table)
        row_level = [e for e in self._exps if e.row_level]
        stats = {}
        for exp, fail in zip(row_level, masks):
            n = fail.true_count
            self._failing[exp.name].inc(n)
            if n:
                stats[f"quality.expectation:{exp.name}"] = n
        passed = table
        quarantine = [(e, m) for e, m in zip(row_level, masks) if e.action == "quarantine" and m.true_count]
        if quarantine:
            taken = pa.array(np.zeros(table.num_rows, dtype=bool))
            for exp, fail in quarantine:
                first = pc.and_(fail, pc.invert(taken))
                if first.true_count:
                    yield beam.pvalue.TaggedOutput("dead_letters", self._dead_letters(exp, table.filter(first)))
                taken = pc.or_(taken, first)
            self._quarantined.inc(taken.true_count)
            passed = table.filter(pc.invert(taken))
        for i, exp in enumerate(self._exps):
            if not exp.row_level:
                states[i] = self._dataset_state(exp, passed)
        yield passed
        yield beam.pvalue.TaggedOutput("partials", states)
        if stats:
            yield beam.pvalue.TaggedOutput("stats", stats)
        for i, exp in enumerate(self._exps):
            if isinstance(exp, Unique) and passed.num_rows:
                yield from self._unique_parts(i, as_array(passed.column(exp.column)))

    def _dead_letters(self, exp: Expectation, rows: pa.Table) -> pa.Table:
        names = rows.column_names
        raw = rows.column(self._raw) if self._raw in names else json_text(rows)
        source = rows.column(self._source) if self._source in names else pa.nulls(rows.num_rows, pa.string())
        errors = pa.array(_errors(exp, rows), pa.string())
        return dead_letters(self._stage, f"expectation:{exp.name}", exp.field, errors, as_array(raw), source)

    @staticmethod
    def _dataset_state(exp: Expectation, passed: pa.Table) -> list:
        max_us = None
        if isinstance(exp, Freshness) and passed.num_rows:
            max_us = _micros(pc.max(passed.column(exp.column)))
        return [passed.num_rows, 0, [], max_us]

    def _unique_parts(self, i: int, column: pa.Array):
        counts = pc.value_counts(column.drop_null())
        values, n = counts.field("values"), counts.field("counts")
        pids = np.zeros(len(values), np.int64) if self._partitions == 1 else hash_partition(values, self._partitions)
        for pid, part in slices_by(pa.table({"value": values, "count": n}), pids):
            yield beam.pvalue.TaggedOutput("unique", (i * self._partitions + pid, part))


class _DuplicatesFn(beam.DoFn):
    """Per (expectation, partition): values seen more than once across all batches."""

    def __init__(self, partitions: int):
        self._partitions = partitions

    def process(self, element):
        key, parts = element
        table = pa.concat_tables(list(parts)).combine_chunks()
        totals = table.group_by("value", use_threads=False).aggregate([("count", "sum")])
        dups = totals.filter(pc.greater(totals.column("count_sum"), 1)).column("value")
        yield {key // self._partitions: [0, len(dups), _smallest_distinct(as_array(dups)) if len(dups) else [], None]}


# ---------------------------------------------------------------- merging into results


def _merge_state(acc: list, state: list) -> None:
    acc[0] += state[0]
    acc[1] += state[1]
    acc[2] = _merge_samples(acc[2], state[2])
    if state[3] is not None:
        acc[3] = state[3] if acc[3] is None else max(acc[3], state[3])


def _result(exp: Expectation, state: list, run_us: int) -> dict:
    checked, failing, samples, max_us = state
    if exp.row_level:
        passed = failing == 0
        what = f"fail: {exp.expr.text}" if isinstance(exp, Expression) and isinstance(exp.expr, Expr) else None
        what = what or ("fail the expression" if isinstance(exp, Expression) else f"have {_condition(exp)}")
        detail = f"{failing:,} of {checked:,} rows {what}"
    elif isinstance(exp, Unique):
        passed = failing == 0
        values = "value occurs" if failing == 1 else "values occur"
        detail = f"{failing:,} {exp.column} {values} more than once in {checked:,} rows"
    elif isinstance(exp, RowCountBetween):
        passed = (exp.min is None or checked >= exp.min) and (exp.max is None or checked <= exp.max)
        lo = "-inf" if exp.min is None else f"{exp.min:,}"
        hi = "inf" if exp.max is None else f"{exp.max:,}"
        detail = f"row count {checked:,} {'in' if passed else 'not in'} [{lo}, {hi}]"
        failing = 0 if passed else 1
    elif isinstance(exp, Freshness):
        run = _iso_micros(run_us)
        if max_us is None:
            passed, detail = False, f"no {exp.column} values to check against run time {run}"
        else:
            passed = max_us >= run_us - exp.age() // timedelta(microseconds=1)
            newest = _iso_micros(max_us)
            relation = "is within" if passed else "is older than"
            detail = f"max({exp.column}) {newest} {relation} {exp.max_age} before run time {run}"
            samples = [] if passed else [_EPOCH + timedelta(microseconds=max_us)]
        failing = 0 if passed else 1
    else:
        raise TypeError(f"{type(exp).__name__} is not an expectation kind")
    return {
        "name": exp.name,
        "kind": exp.kind,
        "column": exp.field,
        "severity": exp.severity,
        "action": exp.action if exp.row_level else None,
        "passed": passed,
        "checked": checked,
        "failing": failing,
        "samples": [_jsonable(s) for s in samples],
        "detail": detail,
    }


class _ResultsFn(beam.CombineFn):
    """Accumulator: per expectation ``[checked, failing, samples (<= SAMPLES), max timestamp us]``."""

    def __init__(self, expectations: tuple, run_us: int):
        self._exps, self._run_us = expectations, run_us

    def create_accumulator(self):
        return [[0, 0, [], None] for _ in self._exps]

    def add_input(self, acc, partial: dict):
        for i, state in partial.items():
            _merge_state(acc[i], state)
        return acc

    def merge_accumulators(self, accs):
        accs = iter(accs)
        out = next(accs)
        for acc in accs:
            for mine, theirs in zip(out, acc):
                _merge_state(mine, theirs)
        return out

    def extract_output(self, acc):
        return [_result(exp, state, self._run_us) for exp, state in zip(self._exps, acc)]


class _WindowResultsFn(beam.DoFn):
    def process(self, results: list, window=beam.DoFn.WindowParam):
        if isinstance(window, beam_window.GlobalWindow):
            start = end = None
        else:
            start, end = _iso_micros(window.start.micros), _iso_micros(window.end.micros)
        yield {"window_start": start, "window_end": end, "results": results}


def failed_errors(results) -> list[dict]:
    """The failed error-severity results (what should stop a write-audit-publish).

    Args:
        results: One ``results`` element of :class:`CheckExpectations` (a dict holding
            ``results``), or its list of result dicts.
    """
    items = results["results"] if isinstance(results, Mapping) else results
    return [r for r in items if r["severity"] == "error" and not r["passed"]]


class CheckExpectations(beam.PTransform):
    """Evaluates expectations on ``pa.Table`` elements as they flow, in batch and streaming.

    Row-level expectations are evaluated on every input row; dataset-level ones (``unique``,
    ``row_count_between``, ``freshness``) on the rows that pass (what would be published).

    Args:
        expectations: The expectations, e.g. from :func:`load_expectations`; declaration order is
            the order of results and decides the reason of a row failing several quarantines.
        run_time: Timezone-aware time of the run; ``freshness`` is measured against it.
        stage: ``stage`` of the dead letters.
        raw_column: Column holding each row's original record text, copied to the dead letter's
            ``raw`` (when absent, the row's JSON is used).
        source_column: Column copied to the dead letter's ``source`` (null when absent).
        columns: Optional column name -> type of the input tables, to validate against at build.
        window_seconds: If set, results are per fixed window of element timestamps (for
            unbounded input in the global window); otherwise the input's windows are used.
        unique_partitions: Hash partitions of the ``unique`` shuffle.

    Returns a dict: ``passed`` (tables minus quarantined rows, other columns untouched),
    ``dead_letters`` (DeadLetter tables, reason ``expectation:<name>``), ``results`` (one dict
    per window: ``window_start``, ``window_end`` (ISO text, null in the global window) and
    ``results``, one dict per expectation in order) and ``stats`` (dicts counting failing rows
    as ``quality.expectation:<name>``).
    """

    def __init__(
        self,
        expectations: Sequence[Expectation],
        run_time: datetime,
        stage: str = "quality",
        raw_column: str = "_raw",
        source_column: str = "_source",
        columns: Mapping[str, pa.DataType] | None = None,
        window_seconds: int | None = None,
        unique_partitions: int = 8,
        label: str | None = None,
    ):
        super().__init__(label)
        exps = tuple(expectations)
        if not exps or not all(isinstance(e, Expectation) and e.kind in KINDS for e in exps):
            raise ValueError("expectations must be a non-empty sequence of expectations of the kinds in KINDS")
        names = [e.name for e in exps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate expectation names: {sorted({n for n in names if names.count(n) > 1})}")
        if not isinstance(run_time, datetime) or run_time.tzinfo is None:
            raise ValueError("run_time must be a timezone-aware datetime")
        if not stage or not raw_column or not source_column:
            raise ValueError("stage, raw_column and source_column must be non-empty")
        if window_seconds is not None and window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if unique_partitions < 1:
            raise ValueError("unique_partitions must be >= 1")
        if columns is not None:
            for exp in exps:
                exp.check(columns)
        self._exps, self._stage = exps, stage
        self._raw, self._source = raw_column, source_column
        self._run_us = (run_time - _EPOCH) // timedelta(microseconds=1)
        self._window_seconds, self._partitions = window_seconds, unique_partitions

    def expand(self, tables):
        out = tables | "Evaluate" >> beam.ParDo(
            _EvaluateFn(self._exps, self._stage, self._raw, self._source, self._partitions)
        ).with_outputs("dead_letters", "partials", "unique", "stats", main="passed").with_input_types(pa.Table)
        partials, unique = typed(out.partials, dict), typed(out.unique, beam.typehints.KV[int, pa.Table])
        if self._window_seconds is not None:
            partials = partials | "WindowPartials" >> beam.WindowInto(beam_window.FixedWindows(self._window_seconds))
            unique = unique | "WindowUnique" >> beam.WindowInto(beam_window.FixedWindows(self._window_seconds))
        if any(isinstance(e, Unique) for e in self._exps):
            duplicates = (
                unique
                | "GroupUnique" >> beam.GroupByKey().with_input_types(beam.typehints.KV[int, pa.Table])
                | "CountDuplicates" >> beam.ParDo(_DuplicatesFn(self._partitions)).with_output_types(dict)
            )
            partials = (partials, duplicates) | "AllPartials" >> beam.Flatten()
        combine = beam.CombineGlobally(_ResultsFn(self._exps, self._run_us))
        if not isinstance(partials.windowing.windowfn, beam_window.GlobalWindows):
            combine = combine.without_defaults()
        results = (
            partials
            | "CombineResults" >> combine.with_output_types(list)
            | "Results" >> beam.ParDo(_WindowResultsFn()).with_output_types(dict)
        )
        return {
            "passed": typed(out.passed),
            "dead_letters": typed(out.dead_letters),
            "results": results,
            "stats": typed(out.stats, dict),
        }
