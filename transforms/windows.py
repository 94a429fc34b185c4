"""WindowedAggregate: event-time fixed windows over Arrow tables with lifted partial aggregates.

Each table is split so every element holds rows of one window and is timestamped at that
window's start, so Beam's own windowing (and, in streaming, its watermark and lateness)
applies. Each element is pre-aggregated to one row per (group keys, distinct value) before
the shuffle; a CombineFn merges those partial tables per window, so what crosses the shuffle
is small and grows with distinct values, not with rows.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.trigger import AccumulationMode, AfterCount, AfterProcessingTime, AfterWatermark
from apache_beam.utils.timestamp import Timestamp

from transforms.partials import merge_partials, partial_aggregate, sum_counts, window_starts
from transforms.records import ArrowTableCoder, slices_by
from transforms.window_spill import WINDOW_COLUMN, SpilledPartials

__all__ = ["WindowTables", "WindowedAggregate", "split_by_window", "window_into"]

_US = pa.timestamp("us", tz="UTC")


def split_by_window(table: pa.Table, time_field: str, size_us: int):
    """Yields ``(window start in microseconds, rows of that window)`` for each window a table spans."""
    if table.num_rows:
        yield from slices_by(table, window_starts(table.column(time_field), size_us))


class _SplitByWindowFn(beam.DoFn):
    def __init__(self, spec: dict):
        self._s = spec

    def process(self, table: pa.Table):
        s = self._s
        for start, rows in split_by_window(table, s["time"], s["size_us"]):
            if s.get("keys") is None:  # WindowTables: the rows themselves
                part = rows
            else:
                part = partial_aggregate(rows, s["keys"], s["distinct"], s["sum"], s["scale"])
            yield beam_window.TimestampedValue(part, Timestamp(micros=start))


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
    """Accumulates tables as a list, merged by ``_merge`` (every 32 tables, and when combined)."""

    def _merge(self, tables: list[pa.Table]) -> pa.Table:
        raise NotImplementedError

    def get_accumulator_coder(self):
        return _PartialsCoder()

    def create_accumulator(self):
        return []

    def add_input(self, acc, table):
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
    def __init__(self, keys: tuple[str, ...], distinct: str):
        self._keys, self._distinct = keys, distinct

    def _merge(self, tables):
        return merge_partials(tables, self._keys, self._distinct)


def _result(out: pa.Table, window, s: dict) -> pa.Table:
    """The output table of one window from per-group ``events``, ``users`` and ``_units``."""
    keys = list(s["keys"])
    n = out.num_rows
    start = pa.array([window.start.micros] * n, pa.int64()).cast(_US)
    end = pa.array([window.end.micros] * n, pa.int64()).cast(_US)
    amount = pc.round(pc.divide(out.column("_units").cast(pa.float64()), float(s["scale"])), s["decimals"])
    result = pa.table(
        {
            "window_start": start,
            "window_end": end,
            **{k: out.column(k) for k in keys},
            "events": out.column("events").cast(pa.int64()),
            "users": out.column("users").cast(pa.int64()),
            s["sum_out"]: amount,
        }
    )
    return result.sort_by([(k, "ascending") for k in keys])


class _FinalizeFn(beam.DoFn):
    def __init__(self, spec: dict):
        self._s = spec

    def process(self, partial: pa.Table | None, window=beam.DoFn.WindowParam):
        if partial is None or partial.num_rows == 0:
            return
        s = self._s
        out = partial.group_by(list(s["keys"]), use_threads=False).aggregate(
            [("_events", "sum"), (s["distinct"], "count"), ("_units", "sum")]
        )
        renames = {"_events_sum": "events", s["distinct"] + "_count": "users", "_units_sum": "_units"}
        yield _result(out.rename_columns([renames.get(c, c) for c in out.column_names]), window, s)


class _SumCountsFn(_TablesCombineFn):
    """Adds per-group counts of disjoint parts of a window (see window_spill)."""

    def __init__(self, keys: tuple[str, ...]):
        self._keys = keys

    def _merge(self, tables):
        return sum_counts(tables, self._keys)


class _FinalizeCountsFn(beam.DoFn):
    """The summed counts of all windows -> one result table per window, timestamped at its start."""

    def __init__(self, spec: dict):
        self._s = spec

    def process(self, counts: pa.Table | None):
        if counts is None or counts.num_rows == 0:
            return
        counts = counts.rename_columns({"_events": "events", "_users": "users"})
        for start, rows in slices_by(counts, counts.column(WINDOW_COLUMN).to_numpy()):
            window = beam_window.IntervalWindow(Timestamp(micros=start), Timestamp(micros=start + self._s["size_us"]))
            yield beam_window.TimestampedValue(_result(rows, window, self._s), window.start)


def window_into(window_seconds: int, lateness: int, early: int | None, late: bool) -> beam.WindowInto:
    """Fixed event-time windows; with early or late firings, accumulating panes."""
    windows = beam_window.FixedWindows(window_seconds)
    if early is None and not late:
        return beam.WindowInto(windows, allowed_lateness=lateness)
    trigger = AfterWatermark(
        early=AfterProcessingTime(early) if early else None,
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
        self._spec = {"time": time_field, "size_us": window_seconds * 1_000_000, "keys": None}
        self._window = (window_seconds, allowed_lateness_seconds, early_firing_seconds, late_firings)

    def expand(self, tables):
        return (
            tables
            | "SplitWindows"
            >> beam.ParDo(_SplitByWindowFn(self._spec)).with_input_types(pa.Table).with_output_types(pa.Table)
            | "Window" >> window_into(*self._window)
        )


class WindowedAggregate(beam.PTransform):
    """Counts, exact distinct counts and sums per group in fixed event-time windows.

    Args:
        time_field: timestamp[us, UTC] column giving each row's event time.
        window_seconds: Fixed window size.
        group_by: Group key columns (null is its own group).
        count_distinct: Column whose exact distinct count per group is ``users``.
        sum_field: Numeric column summed (nulls as 0) into ``<sum_field>_sum``.
        decimals: The sum is computed exactly in units of ``10**-decimals`` and rounded to it.
        allowed_lateness_seconds: How late (behind the watermark) a row may still update its
            window; only meaningful for unbounded input.
        early_firing_seconds: If set, also fire every that many seconds of processing time
            before the watermark closes the window (streaming: results visible early).
        late_firings: Fire again for every late table within the allowed lateness. With either
            of these, panes accumulate: every firing carries the window's complete value so far,
            so a sink that upserts by (window_start, keys) always holds the latest total.
        spill_dir: Bounded input only (no early or late firings): shuffle the partial
            aggregates through Arrow files there, partitioned by the distinct column, so memory
            stays flat as input grows (see window_spill). Must be visible to every worker.
        partitions: With ``spill_dir``: how many partitions (each merge holds about
            1/partitions of the partial rows).

    Yields one table per window with ``window_start``, ``window_end``, the group keys,
    ``events``, ``users`` and ``<sum_field>_sum``.
    """

    def __init__(
        self,
        time_field: str = "ts",
        window_seconds: int = 3600,
        group_by: tuple[str, ...] = ("event_type", "country"),
        count_distinct: str = "user_id",
        sum_field: str = "amount",
        decimals: int = 2,
        allowed_lateness_seconds: int = 0,
        early_firing_seconds: int | None = None,
        late_firings: bool = False,
        spill_dir: str | None = None,
        partitions: int = 8,
        label: str | None = None,
    ):
        super().__init__(label)
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if spill_dir is not None and (early_firing_seconds is not None or late_firings):
            raise ValueError("spill_dir is for bounded input: it cannot be used with early or late firings")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self._spill_dir, self._partitions = spill_dir, partitions
        if allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must be >= 0")
        if early_firing_seconds is not None and early_firing_seconds <= 0:
            raise ValueError("early_firing_seconds must be positive (or None for no early firings)")
        if not group_by:
            raise ValueError("group_by needs at least one column")
        if not 0 <= decimals <= 6:
            raise ValueError("decimals must be between 0 and 6")
        self._window_seconds = window_seconds
        self._lateness = allowed_lateness_seconds
        self._early, self._late = early_firing_seconds, late_firings
        self._spec = {
            "time": time_field,
            "size_us": window_seconds * 1_000_000,
            "keys": tuple(group_by),
            "distinct": count_distinct,
            "sum": sum_field,
            "sum_out": sum_field + "_sum",
            "scale": 10**decimals,
            "decimals": decimals,
        }

    def _window_into(self) -> beam.WindowInto:
        return window_into(self._window_seconds, self._lateness, self._early, self._late)

    def expand(self, tables):
        s = self._spec
        if self._spill_dir is not None:
            # Bounded input: every partition's counts are summed in one global combine (a
            # per-window combine put thousands of small tables through the runner's trigger
            # machinery), then each window's table is windowed as the other path's are.
            return (
                tables
                | "SpilledPartials" >> SpilledPartials(s, self._partitions, self._spill_dir)
                | "Combine"
                >> beam.CombineGlobally(_SumCountsFn((WINDOW_COLUMN, *s["keys"])))
                .without_defaults()
                .with_output_types(pa.Table)
                | "Finalize" >> beam.ParDo(_FinalizeCountsFn(s)).with_output_types(pa.Table)
                | "Window" >> self._window_into()
            )
        return (
            tables
            | "SplitWindows" >> beam.ParDo(_SplitByWindowFn(s)).with_input_types(pa.Table).with_output_types(pa.Table)
            | "Window" >> self._window_into()
            | "Combine"
            >> beam.CombineGlobally(_MergePartialsFn(s["keys"], s["distinct"]))
            .without_defaults()
            .with_output_types(pa.Table)
            | "Finalize" >> beam.ParDo(_FinalizeFn(s)).with_output_types(pa.Table)
        )
