"""RunningAggregate: the live stream's early firings as a running value per window, in keyed
state, emitted by a processing-time timer.

With accumulating panes a runner hands the combine every element the window has received at
each firing, so on Prism a one-second early firing re-decoded and re-merged every partial of
the hour so far: its cost grew with the window's age and a live job fell behind. Here no
triggered GroupByKey is involved. The per-window partial tables (in plain event-time windows,
default trigger) are keyed by their window's start and go to a stateful DoFn that per window

- merges each new partial into the window's running partial, kept in memory and in a bag of
  partial tables in state (one appended per element, so a bundle writes only its new
  partials); the in-memory copy is trusted as ``state_copies`` says (reading the bag back at
  every element would again cost time in proportion to the window's history). The bag is
  compacted to the one merged partial when what was appended
  since the last compaction holds as many rows as it does, so a reload reads at most about
  twice the window's partial rows;
- sets a processing-time timer when new data arrives and none is pending, for
  ``early_firing_seconds`` after the window's last emission (at once if that time has passed:
  a window's first data, or data after a quiet spell; an emission whose timer ran at most a
  quarter of the interval, or 0.25 s, late counts as made when it was due, so the runner's
  scheduling delays do not add up from one firing to the next); the timer emits the window's complete
  result so far: the rows the accumulating combine would emit for a pane holding every element
  so far. Every element is therefore in an emission at most ``early_firing_seconds`` (plus the
  time to run) after it arrived, the last one included: the final value needs no event-time
  timer;
- pushes a second processing-time timer ``early_firing_seconds + allowed_lateness_seconds``
  ahead at each new table; when it fires (the window has had no data for that long) the
  in-memory copy is dropped.

A pending processing-time timer holds the stage's output watermark at the window's start (the
timestamp of the elements that set it), so the runner keeps the window's state at least until
that long after its last data. That matters on Prism: a stage's upstream watermark there can
pass a window's end plus the allowed lateness while rows of it the source judged on time are
still on their way (seen in catch-up runs of the events pipeline). An event-time timer at the window's close, which would
have dropped what came after it, dropped exactly those rows (half of every window in 2 catch-up
runs of 5); the runner, collecting the state at that watermark, would have made the next
emission start over from those rows alone. No event-time timer is set at all: Prism keeps a
key's elements and event-time timers in one heap ordered by timestamp and does not look past a
timer the watermark has not reached. Data past the allowed lateness is not dropped here (a
DoFn does not see the watermark): the source drops and counts it (ReadKafka's late output).

Each emission carries its index among the window's emissions as the pane index (``PaneInfo``,
timing unknown), counted in state with the running value: the sinks keep, per key, the row of
the highest pane (``UpsertPostgres``' ``_pane``), so an older emission delivered late never
replaces a newer one.
"""

from __future__ import annotations

from collections.abc import Callable

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import TupleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from transforms import faults
from transforms.partials import AggregateSpec, group_states, merge_partials, window_result
from transforms.records import ArrowTableCoder
from transforms.state_copies import StateCopies

__all__ = ["RunningAggregate"]

# A reload never reads more than this many appended tables (besides the compacted one).
_MAX_ENTRIES = 1024
_SNAP_US = 250_000  # a timer up to this late (or a quarter of the firing interval) keeps the firings on their grid


def wall_clock() -> Timestamp:
    """Processing time now (the default clock of the early firings' timers)."""
    return Timestamp.now()


class _Running:
    """One window's running value as this DoFn instance last wrote it to state."""

    __slots__ = ("token", "merged", "fresh", "emitted", "pending", "last_us", "entries", "base_rows", "appended_rows")

    def __init__(self, meta: tuple | None, tables: list[pa.Table]):
        self.token, self.emitted, pending, self.last_us = meta if meta is not None else (None, 0, 0, 0)
        self.pending = bool(pending)
        self.merged: pa.Table | None = None  # the partials emitted so far, merged
        self.fresh: list[pa.Table] = list(tables)  # partials not merged yet
        self.entries = len(tables)  # tables in the bag
        self.base_rows = 0  # rows of the bag's compacted table
        self.appended_rows = sum(t.num_rows for t in tables)  # rows appended since


# (token, emissions so far, 1 while an emission is pending, processing time of the last one in µs)
_META = TupleCoder([VarIntCoder()] * 4)


class _KeyByWindowFn(beam.DoFn):
    """Keys each partial by its window's start (state is per key and window anyway): windows
    are then independent keys, which a runner may process in parallel."""

    def process(self, table: pa.Table, window=beam.DoFn.WindowParam):
        yield window.start.micros, table


class _RunningFn(beam.DoFn):
    PARTIALS = BagStateSpec("partials", ArrowTableCoder())
    META = ReadModifyWriteStateSpec("meta", _META)
    EMIT = TimerSpec("emit", TimeDomain.REAL_TIME)
    KEEP = TimerSpec("keep", TimeDomain.REAL_TIME)

    def __init__(self, spec: AggregateSpec, early_seconds: int, lateness_seconds: int, clock: Callable):
        self._s, self._early, self._clock = spec, Duration(seconds=early_seconds), clock
        self._keep = Duration(seconds=early_seconds + lateness_seconds)

    def setup(self):
        self._emissions = beam.metrics.Metrics.counter("aggregate", "running_emissions")
        self._reloads = beam.metrics.Metrics.counter("aggregate", "running_state_reads")
        self._windows = StateCopies()  # (key, window) -> running value as last written here

    def start_bundle(self):
        self._checked: set[tuple] = set()  # (key, window)s whose token this bundle has compared

    def _current(self, key, window, partials, meta) -> _Running:
        at = (key, window)
        if at in self._checked:
            return self._windows.peek(at)
        stored = meta.read()

        def load() -> _Running:
            self._reloads.inc()
            return _Running(stored, list(partials.read()) if stored is not None else [])

        running = self._windows.get(at, stored[0] if stored is not None else None, load)
        self._checked.add(at)
        return running

    def _save(self, running: _Running, meta) -> None:
        meta.write((self._windows.written(running), running.emitted, int(running.pending), running.last_us))

    def process(
        self,
        element,
        window=beam.DoFn.WindowParam,
        partials=beam.DoFn.StateParam(PARTIALS),
        meta=beam.DoFn.StateParam(META),
        emit=beam.DoFn.TimerParam(EMIT),
        keep=beam.DoFn.TimerParam(KEEP),
    ):
        key, table = element
        if table.num_rows == 0:
            return
        running = self._current(key, window, partials, meta)
        now = self._clock()
        keep.set(now + self._keep)
        running.fresh.append(table)
        running.entries += 1
        running.appended_rows += table.num_rows
        partials.add(table)
        if not running.pending:
            # At most one emission per early_firing_seconds, and none later than needed: new data
            # after a quiet spell (a window's first, a job's first) goes out at once.
            emit.set(now if not running.emitted else max(now, Timestamp(micros=running.last_us) + self._early))
            running.pending = True
        self._save(running, meta)

    def _fired_at(self, running: _Running, now_us: int) -> int:
        """The time this emission counts as made: the one it was due at when the timer ran only a
        little late (the runner's scheduling), so that lateness does not push every later firing
        back by as much and firings keep one per ``early_firing_seconds``; else now."""
        if not running.emitted:
            return now_us
        early_us = self._early.micros
        due = running.last_us + early_us
        return due if 0 <= now_us - due <= min(early_us // 4, _SNAP_US) else now_us

    def _emit(self, running: _Running, window, partials):
        faults.at("aggregate")
        s = self._s
        running.pending = False
        running.last_us = self._fired_at(running, self._clock().micros)
        if running.fresh:
            tables = running.fresh if running.merged is None else [running.merged, *running.fresh]
            running.merged = merge_partials(tables, s)
            running.fresh = []
        if running.merged is None or running.merged.num_rows == 0:
            return
        if running.entries > 1 and (running.appended_rows >= running.base_rows or running.entries >= _MAX_ENTRIES):
            partials.clear()
            partials.add(running.merged)
            running.entries, running.base_rows, running.appended_rows = 1, running.merged.num_rows, 0
        index = running.emitted
        running.emitted += 1
        self._emissions.inc()
        finals = group_states(running.merged, s, list(s.keys), "partials", "finals")
        result = window_result(finals, s, window.start.micros, window.end.micros)
        pane = PaneInfo(index == 0, False, PaneInfoTiming.UNKNOWN, index, -1)
        yield WindowedValue(result, window.max_timestamp(), (window,), pane)

    @on_timer(EMIT)
    def emit_result(
        self,
        key=beam.DoFn.KeyParam,
        window=beam.DoFn.WindowParam,
        partials=beam.DoFn.StateParam(PARTIALS),
        meta=beam.DoFn.StateParam(META),
    ):
        running = self._current(key, window, partials, meta)
        if not running.pending:
            return
        yield from self._emit(running, window, partials)
        self._save(running, meta)

    @on_timer(KEEP)
    def forget(self, key=beam.DoFn.KeyParam, window=beam.DoFn.WindowParam):
        """No data for the window in a while: its in-memory copy goes (its state stays the
        runner's, read again if data still comes); the timer's hold is released."""
        self._windows.forget((key, window))


class RunningAggregate(beam.PTransform):
    """Per-window partial tables (fixed or sliding event-time windows, default trigger) -> the
    window's result table so far, at most ``early_firing_seconds`` after new partials arrive.

    Args:
        spec: The aggregate (WindowedAggregate's).
        early_firing_seconds: How long after new data its window's result is emitted.
        allowed_lateness_seconds: The windows' allowed lateness: a window's state is kept at
            least ``early_firing_seconds`` plus this (processing time) after its last data.
        clock: Returns processing time now (a ``Timestamp``); tests give their own.

    Each emission holds every partial the window has received so far, with its index among the
    window's emissions as the pane index (see the module doc).
    """

    def __init__(self, spec: AggregateSpec, early_firing_seconds: int, allowed_lateness_seconds: int = 0,
                 clock: Callable[[], Timestamp] = wall_clock, label: str | None = None):  # fmt: skip
        super().__init__(label)
        if not isinstance(early_firing_seconds, int) or early_firing_seconds <= 0:
            raise ValueError("early_firing_seconds must be a positive integer")
        if allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must be >= 0")
        if not callable(clock):
            raise ValueError("clock must be callable")
        self._fn = _RunningFn(spec, early_firing_seconds, allowed_lateness_seconds, clock)

    def expand(self, partials):
        return (
            partials
            | "Key"
            >> beam.ParDo(_KeyByWindowFn())
            .with_input_types(pa.Table)
            .with_output_types(beam.typehints.KV[int, pa.Table])
            | "Running" >> beam.ParDo(self._fn).with_output_types(pa.Table)
        )
