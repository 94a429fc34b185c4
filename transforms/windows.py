"""WindowedAggregate: event-time windows (fixed, sliding, sessions) over Arrow tables, with any
ordered set of measures (count, exact count_distinct, sum, min, max, mean) per group.

Fixed and sliding windows: each table is split so every element holds rows of one window (of
one period, for sliding windows) and is timestamped at its start, so Beam's own windowing
(and, in streaming, its watermark and lateness) applies; ``SlidingWindows`` puts each period's
element into every window that holds it. Each element is pre-aggregated to one row per
(group keys, distinct values) before the shuffle; a CombineFn merges those partial tables per
window, so what crosses the shuffle is small and grows with distinct values, not with rows.
A live stream with early firings keeps a running value per window in state instead
(``running_aggregate``).
Bounded input can instead shuffle its partials through files (window_spill). Sessions are in
``sessions``.
"""

from __future__ import annotations

from collections.abc import Callable

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders.coders import IntervalWindowCoder
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.trigger import (
    AccumulationMode,
    AfterCount,
    AfterEach,
    AfterProcessingTime,
    AfterWatermark,
    Repeatedly,
)
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms import faults
from transforms.partials import (
    RESERVED,
    AggregateSpec,
    Fixed,
    Measure,
    Sessions,
    Sliding,
    group_states,
    merge_partials,
    partial_aggregate,
    state,
    window_result,
    window_starts,
)
from transforms.records import ArrowTableCoder, slices_by
from transforms.running_aggregate import RunningAggregate, wall_clock
from transforms.sessions import KEYED, SessionAggregate, SessionRuns
from transforms.window_spill import WINDOW_COLUMN, SpilledPartials

__all__ = [
    "Fixed",
    "Measure",
    "Sessions",
    "Sliding",
    "WindowTables",
    "WindowedAggregate",
    "split_by_window",
    "window_into",
]

_OUTPUT = ("window_start", "window_end")


def split_by_window(table: pa.Table, time_field: str, size_us: int):
    """Yields ``(window start in microseconds, rows of that window)`` for each window a table spans."""
    if table.num_rows:
        yield from slices_by(table, window_starts(table.column(time_field), size_us))


class _SplitTablesFn(beam.DoFn):
    def __init__(self, time_field: str, size_us: int):
        self._time, self._size_us = time_field, size_us

    def process(self, table: pa.Table):
        for start, rows in split_by_window(table, self._time, self._size_us):
            yield beam_window.TimestampedValue(rows, Timestamp(micros=start))


class _SplitByWindowFn(beam.DoFn):
    """Tables -> partials of each window (sliding: of each period), timestamped at its start."""

    def __init__(self, spec: AggregateSpec):
        self._s = spec

    def process(self, table: pa.Table):
        s = self._s
        for start, rows in split_by_window(table, s.time, s.step_us):
            yield beam_window.TimestampedValue(partial_aggregate(rows, s), Timestamp(micros=start))


class _PartialsCoder(beam.coders.Coder):
    """Accumulators (lists of partial tables) as one LZ4 Arrow stream: they hold every distinct
    value per group, and pickling them would cost several times the bytes."""

    def __init__(self):
        self._tables = ArrowTableCoder()

    def encode(self, acc: list) -> bytes:
        return self._tables.encode(pa.concat_tables(acc)) if acc else b""

    def decode(self, encoded: bytes) -> list:
        return [self._tables.decode(encoded)] if encoded else []

    def is_deterministic(self) -> bool:
        return False


class _TablesCombineFn(beam.CombineFn):
    """Accumulates non-empty tables as a list, merged by ``_merge`` (every 32 tables, and when
    combined)."""

    def _merge(self, tables: list[pa.Table]) -> pa.Table:
        raise NotImplementedError

    def get_accumulator_coder(self):
        return _PartialsCoder()

    def create_accumulator(self):
        return []

    def add_input(self, acc, table):
        if table.num_rows:  # session markers are empty
            acc.append(table)
        if len(acc) >= 32:
            acc[:] = [self._merge(acc)]
        return acc

    def merge_accumulators(self, accs):
        tables = [t for acc in accs for t in acc]
        return [self._merge(tables)] if tables else []

    def compact(self, acc):
        return [self._merge(acc)] if len(acc) > 1 else acc

    def extract_output(self, acc):
        return self._merge(acc) if acc else None


class _MergePartialsFn(_TablesCombineFn):
    def __init__(self, spec: AggregateSpec):
        self._s = spec

    def _merge(self, tables):
        return merge_partials(tables, self._s)


def _session_partials(keyed: tuple):
    """A session's merged partials; none for a pane that holds only markers (its events' partials
    are in the session it merges into), which no table-typed step could carry."""
    if keyed[1] is not None:
        yield keyed[1]


class _FinalizeFn(beam.DoFn):
    def __init__(self, spec: AggregateSpec):
        self._s = spec

    def process(self, partial: pa.Table | None, window=beam.DoFn.WindowParam):
        faults.at("aggregate")
        if partial is None or partial.num_rows == 0:
            return
        s = self._s
        finals = group_states(partial, s, list(s.keys), "partials", "finals")
        yield window_result(finals, s, window.start.micros, window.end.micros)


class _SumCountsFn(_TablesCombineFn):
    """Adds up the per (window, keys) finals of disjoint parts (see window_spill)."""

    def __init__(self, spec: AggregateSpec):
        self._s = spec

    def _merge(self, tables):
        return group_states(pa.concat_tables(tables), self._s, [WINDOW_COLUMN, *self._s.keys], "finals", "finals")


class _FinalizeCountsFn(beam.DoFn):
    """The summed finals of all windows -> one result table per window, timestamped at its start."""

    def __init__(self, spec: AggregateSpec):
        self._s = spec

    def process(self, counts: pa.Table | None):
        faults.at("aggregate")
        if counts is None or counts.num_rows == 0:
            return
        for start, rows in slices_by(counts, counts.column(WINDOW_COLUMN).to_numpy()):
            yield beam_window.TimestampedValue(
                window_result(rows, self._s, start, start + self._s.size_us), Timestamp(micros=start)
            )


class _StartWindows(beam_window.NonMergingWindowFn):
    """Each element in the one window ``[timestamp, timestamp + size)``: the sliding window a
    result table timestamped at its start belongs to (``SlidingWindows`` would put it in all
    windows holding that instant)."""

    def __init__(self, size_us: int):
        self._size = Duration(micros=size_us)

    def assign(self, context):
        return [beam_window.IntervalWindow(context.timestamp, context.timestamp + self._size)]

    def get_window_coder(self):
        return IntervalWindowCoder()

    def __eq__(self, other):
        return type(self) is type(other) and self._size == other._size

    def __hash__(self):
        return hash((type(self), self._size))


def _window_fn(window):
    if isinstance(window, Sliding):
        return beam_window.SlidingWindows(window.size_seconds, window.period_seconds)
    if isinstance(window, Sessions):
        return beam_window.Sessions(window.gap_seconds)
    return beam_window.FixedWindows(window if isinstance(window, int) else window.size_seconds)


def window_into(
    window: int | Fixed | Sliding | Sessions, lateness: int, early: int | None, late: bool
) -> beam.WindowInto:
    """Event-time windows (an int: fixed windows of that many seconds); with early or late
    firings, accumulating panes. Early firings: a window's first element at once, then every
    ``early`` seconds of processing time while elements come."""
    windows = _window_fn(window)
    if early is None and not late:
        return beam.WindowInto(windows, allowed_lateness=lateness)
    if isinstance(window, Sessions) and early is None:
        # The default trigger already fires again for each late element; Prism refuses an explicit
        # (stateful) trigger on merging windows (apache/beam#31438).
        return beam.WindowInto(windows, accumulation_mode=AccumulationMode.ACCUMULATING, allowed_lateness=lateness)
    # Early panes: a window's first element fires at once (a live job's first results, and each
    # new window's, need not wait out the delay), then at most every ``early`` seconds.
    trigger = AfterWatermark(
        early=AfterEach(AfterCount(1), Repeatedly(AfterProcessingTime(early))) if early else None,
        late=AfterCount(1) if late else None,
    )
    return beam.WindowInto(
        windows, trigger=trigger, accumulation_mode=AccumulationMode.ACCUMULATING, allowed_lateness=lateness
    )


class WindowTables(beam.PTransform):
    """Splits tables so each element holds the rows of one fixed event-time window, timestamped at
    its start, and windows them (for per-window computations such as profiles).

    Args:
        time_field: timestamp[us, UTC] column giving each row's event time.
        window_seconds: Fixed window size.
        allowed_lateness_seconds: How late a row may still update its window.
        early_firing_seconds: Early firings every that many seconds of processing time, or None.
        late_firings: Fire again for every late table within the allowed lateness.
    """

    def __init__(self, time_field: str, window_seconds: int, allowed_lateness_seconds: int = 0,
                 early_firing_seconds: int | None = None, late_firings: bool = False,
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        if window_seconds <= 0 or allowed_lateness_seconds < 0:
            raise ValueError("window_seconds must be positive and allowed_lateness_seconds >= 0")
        if early_firing_seconds is not None and early_firing_seconds <= 0:
            raise ValueError("early_firing_seconds must be positive (or None for no early firings)")
        self._time, self._size_us = time_field, window_seconds * 1_000_000
        self._window = (window_seconds, allowed_lateness_seconds, early_firing_seconds, late_firings)

    def expand(self, tables):
        return (
            tables
            | "SplitWindows"
            >> beam.ParDo(_SplitTablesFn(self._time, self._size_us))
            .with_input_types(pa.Table)
            .with_output_types(pa.Table)
            | "Window" >> window_into(*self._window)
        )


def _legacy_measures(count_distinct: str | None, sum_field: str | None, decimals: int | None) -> tuple[Measure, ...]:
    sum_field = "amount" if sum_field is None else sum_field
    return (
        Measure("events", "count"),
        Measure("users", "count_distinct", "user_id" if count_distinct is None else count_distinct),
        Measure(sum_field + "_sum", "sum", sum_field, 2 if decimals is None else decimals),
    )


def _check_measures(measures, keys: tuple[str, ...]) -> tuple[Measure, ...]:
    if isinstance(measures, Measure) or not isinstance(measures, (tuple, list)) or not measures:
        raise ValueError("measures must be a non-empty tuple of Measure")
    measures = tuple(measures)
    for m in measures:
        if not isinstance(m, Measure):
            raise ValueError(f"measures must be Measure objects, got {m!r}")
    names = [m.name for m in measures]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"duplicate measure names: {', '.join(dups)}")
    for name in names:
        if name in _OUTPUT or name in keys:
            raise ValueError(
                f"measure name {name!r} clashes with an output column (window_start, window_end, group_by)"
            )
    internal = set(keys) | {m.column for m in measures if m.fn == "count_distinct"} | set(RESERVED)
    for m in measures:
        if m.column in RESERVED:
            raise ValueError(f"measure {m.name!r}: column {m.column!r} is a reserved name")
        if state(m) in internal:
            raise ValueError(f"measure name {m.name!r} is reserved: its state column {state(m)!r} is taken")
    return measures


class WindowedAggregate(beam.PTransform):
    """Measures per group in event-time windows: fixed, sliding or sessions.

    Args:
        time_field: timestamp[us, UTC] column giving each row's event time.
        window_seconds: Fixed window size (when ``window`` is not given; default 3600).
        group_by: Group key columns (null is its own group); for sessions, the session key.
        count_distinct: Legacy form, with ``sum_field`` and ``decimals``, of the measures
            ``events`` (count), ``users`` (count_distinct of this column, default ``user_id``)
            and ``<sum_field>_sum`` (sum of ``sum_field``, default ``amount``, exactly in units
            of ``10**-decimals``, default 2). Not with ``measures``.
        sum_field: See ``count_distinct``.
        decimals: See ``count_distinct``.
        allowed_lateness_seconds: How late (behind the watermark) a row may still update its
            window; only meaningful for unbounded input.
        early_firing_seconds: If set, also fire every that many seconds of processing time
            before the watermark closes the window (streaming: results visible early).
        late_firings: Fire again for every late table within the allowed lateness. With either
            of these, panes accumulate: every firing carries the window's complete value so far,
            so a sink that upserts by (window_start, keys) always holds the latest total.
            Unbounded input with early firings (fixed and sliding windows) takes the running
            path instead (``running_aggregate``): no trigger; each window's result so far is
            emitted ``early_firing_seconds`` after new data arrives, late data within the allowed
            lateness included (whatever ``late_firings``), each emission numbered by its pane
            index so the sinks keep the newest.
        spill_dir: Bounded input only (no early or late firings): shuffle through Arrow files
            there, so memory stays flat as input grows. Fixed and sliding windows: the partial
            rows, partitioned by the distinct column (by group with several count_distinct
            measures; see window_spill); without a count_distinct, partials are one row per
            window and group and the combiner path is used instead. Sessions: the rows,
            partitioned by group key. Must be visible to every worker.
        partitions: With ``spill_dir`` (and for bounded sessions): how many partitions (each
            merge holds about 1/partitions of the rows).
        measures: Ordered tuple of :class:`Measure` (count, count_distinct, sum, min, max, mean).
            Several count_distinct columns work, at the cost of partials per combination of
            their values (combiner path) or of partitions by group (spill path).
        window: :class:`Fixed`, :class:`Sliding` or :class:`Sessions` (not with
            ``window_seconds``). Sessions over bounded input (or with ``spill_dir``) are
            computed by partitions of the group keys, one table of many sessions per partition
            in the global window; over unbounded input, by Beam's ``Sessions`` per key, one
            single-row table per session firing (see sessions): when a late event joins two
            sessions, the merged one fires under the earlier one's start. A sliding window's
            merge work is about ``size / period`` times a fixed window's (each period's
            partials are counted in every window holding it).
        clock: Processing time now, for the running path's timers (default: the wall clock;
            tests give their own).

    Yields tables with ``window_start``, ``window_end``, the group keys and the measures in
    order, sorted by the keys (then window_start); fixed and sliding windows give one table per
    window, in that window. ``count``/``count_distinct`` are int64; ``sum``, ``min`` and ``max``
    keep integer and decimal types (a decimal sum is decimal128(38, scale)); a floating ``sum``
    with decimals is float64 rounded to them (without, a plain float64 sum); a boolean ``sum``
    counts trues (int64); ``mean`` is float64.
    A sum of no values is 0; ``min``, ``max`` and ``mean`` of none are null.
    """

    def __init__(
        self,
        time_field: str = "ts",
        window_seconds: int | None = None,
        group_by: tuple[str, ...] = ("event_type", "country"),
        count_distinct: str | None = None,
        sum_field: str | None = None,
        decimals: int | None = None,
        allowed_lateness_seconds: int = 0,
        early_firing_seconds: int | None = None,
        late_firings: bool = False,
        spill_dir: str | None = None,
        partitions: int = 8,
        measures: tuple[Measure, ...] | None = None,
        window: Fixed | Sliding | Sessions | None = None,
        clock: Callable[[], Timestamp] = wall_clock,
        label: str | None = None,
    ):
        super().__init__(label)
        if window is None:
            if window_seconds is not None and window_seconds <= 0:
                raise ValueError("window_seconds must be positive")
            window = Fixed(3600 if window_seconds is None else window_seconds)
        elif window_seconds is not None:
            raise ValueError("give window or window_seconds, not both")
        if not isinstance(window, (Fixed, Sliding, Sessions)):
            raise ValueError(f"window must be Fixed, Sliding or Sessions, got {window!r}")
        if spill_dir is not None and (early_firing_seconds is not None or late_firings):
            raise ValueError("spill_dir is for bounded input: it cannot be used with early or late firings")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        if allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must be >= 0")
        if early_firing_seconds is not None and early_firing_seconds <= 0:
            raise ValueError("early_firing_seconds must be positive (or None for no early firings)")
        if not group_by:
            raise ValueError("group_by needs at least one column")
        keys = tuple(group_by)
        if len(set(keys)) != len(keys) or set(keys) & (set(_OUTPUT) | set(RESERVED)):
            raise ValueError(f"group_by columns must be distinct and not named {', '.join(_OUTPUT + RESERVED)}")
        if measures is None:
            measures = _legacy_measures(count_distinct, sum_field, decimals)
        elif (count_distinct, sum_field, decimals) != (None, None, None):
            raise ValueError("give measures or count_distinct/sum_field/decimals, not both")
        self._spec = AggregateSpec(time_field, keys, _check_measures(measures, keys), window)
        self._spill_dir, self._partitions = spill_dir, partitions
        self._lateness = allowed_lateness_seconds
        self._early, self._late = early_firing_seconds, late_firings
        if not callable(clock):
            raise ValueError("clock must be callable")
        self._clock = clock

    def _window_into(self) -> beam.WindowInto:
        return window_into(self._spec.window, self._lateness, self._early, self._late)

    def _result_windows(self) -> beam.WindowInto:
        """The window of each spill-path result table (timestamped at its window's start)."""
        if isinstance(self._spec.window, Sliding):
            return beam.WindowInto(_StartWindows(self._spec.size_us))
        return self._window_into()

    def expand(self, tables):
        s = self._spec
        if isinstance(s.window, Sessions):
            if self._spill_dir is not None or (tables.is_bounded and self._early is None and not self._late):
                return tables | "SessionAggregate" >> SessionAggregate(s, self._partitions, self._spill_dir)
            return (
                tables
                | "SessionRuns" >> SessionRuns(s)
                | "Window" >> self._window_into()
                | "Combine" >> beam.CombinePerKey(_MergePartialsFn(s)).with_input_types(KEYED).with_output_types(KEYED)
                | "Sessions" >> beam.FlatMap(_session_partials).with_output_types(pa.Table)
                | "Finalize" >> beam.ParDo(_FinalizeFn(s)).with_output_types(pa.Table)
            )
        if self._spill_dir is not None and s.distinct:
            # Bounded input: every partition's finals are summed in one global combine (a
            # per-window combine put thousands of small tables through the runner's trigger
            # machinery), then each window's table is windowed as the other path's are.
            return (
                tables
                | "SpilledPartials" >> SpilledPartials(s, self._partitions, self._spill_dir)
                | "Combine" >> beam.CombineGlobally(_SumCountsFn(s)).without_defaults().with_output_types(pa.Table)
                | "Finalize" >> beam.ParDo(_FinalizeCountsFn(s)).with_output_types(pa.Table)
                | "Window" >> self._result_windows()
            )
        partials = tables | "SplitWindows" >> beam.ParDo(_SplitByWindowFn(s)).with_input_types(
            pa.Table
        ).with_output_types(pa.Table)
        if not tables.is_bounded and self._early is not None:
            # The live stream: a running value per window in state, emitted by a processing-time
            # timer (see running_aggregate), instead of accumulating panes that re-merge the
            # window's whole history at every early firing.
            return (
                partials
                | "Window" >> beam.WindowInto(_window_fn(s.window), allowed_lateness=self._lateness)
                | "Running" >> RunningAggregate(s, self._early, self._lateness, self._clock)
            )
        return (
            partials
            | "Window" >> self._window_into()
            | "Combine" >> beam.CombineGlobally(_MergePartialsFn(s)).without_defaults().with_output_types(pa.Table)
            | "Finalize" >> beam.ParDo(_FinalizeFn(s)).with_output_types(pa.Table)
        )
