"""RunningAggregate: the live stream's early firings as a running value per window, in keyed
state, emitted by a processing-time timer.

With accumulating panes a runner hands the combine every element the window has received at
each firing, so on Prism a one-second early firing re-decoded and re-merged every partial of
the hour so far: its cost grew with the window's age and a live job fell behind. Here no
triggered GroupByKey is involved. The per-window partial tables (in plain event-time windows,
default trigger) go, under one constant key, to a stateful DoFn that per window

- merges each new partial into the window's running partial, kept in memory and in a bag of
  partial tables in state (one appended per element, so a bundle writes only its new
  partials); the in-memory copy is used while the state's random ``token`` is the one this
  instance wrote last (Prism gives the SDK no state cache tokens: reading the bag back at
  every element would again cost time in proportion to the window's history); another
  instance, or a failed bundle whose writes were discarded, leaves a different token and the
  bag is read again. The bag is compacted to the one merged partial when what was appended
  since the last compaction holds as many rows as it does, so a reload reads at most about
  twice the window's partial rows;
- sets a processing-time timer ``early_firing_seconds`` ahead when new data arrives and none is
  pending; the timer emits the window's complete result so far: the rows the accumulating
  combine would emit for a pane holding every element so far.

Every element is therefore in an emission at most ``early_firing_seconds`` (plus the time to
run) after it arrived, the last one included: no event-time timer is needed for the final
value. The pending timer holds the stage's output watermark at the window's start, so the
runner does not expire the window (and drop its state) before it has fired. Late data within
the allowed lateness updates the window like any other; data later than that is the source's
to drop and count (ReadKafka's late output), as for the combine, whose GroupByKey would drop it.
(Event-time timers are avoided on purpose: Prism keeps a key's elements in one heap ordered by
timestamp with its event-time timers and does not look past a timer the watermark has not
reached, so a timer at a window's end would hold back every element of the next windows.)

Each emission carries its index among the window's emissions as the pane index (``PaneInfo``,
timing unknown), counted in state with the running value: the sinks keep, per key, the row of
the highest pane (``UpsertPostgres``' ``_pane``), so an older emission delivered late never
replaces a newer one.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import TupleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from transforms import faults
from transforms.partials import AggregateSpec, group_states, merge_partials, window_result
from transforms.records import ArrowTableCoder

__all__ = ["RunningAggregate"]

# A reload never reads more than this many appended tables (besides the compacted one).
_MAX_ENTRIES = 1024


def wall_clock() -> Timestamp:
    """Processing time now (the default clock of the early firings' timers)."""
    return Timestamp.now()


class _Running:
    """One window's running value as this DoFn instance last wrote it to state."""

    __slots__ = ("token", "merged", "fresh", "emitted", "pending", "closed", "entries", "base_rows", "appended_rows")

    def __init__(self, meta: tuple | None, tables: list[pa.Table]):
        self.token, self.emitted, pending, closed = meta if meta is not None else (None, 0, 0, 0)
        self.pending, self.closed = bool(pending), bool(closed)
        self.merged: pa.Table | None = None  # the partials emitted so far, merged
        self.fresh: list[pa.Table] = list(tables)  # partials not merged yet
        self.entries = len(tables)  # tables in the bag
        self.base_rows = 0  # rows of the bag's compacted table
        self.appended_rows = sum(t.num_rows for t in tables)  # rows appended since


# (token, emissions so far, 1 while an emission is pending, 1 once the window is closed)
_META = TupleCoder([VarIntCoder()] * 4)


class _KeyByWindowFn(beam.DoFn):
    """Keys each partial by its window's start: state is per key and window anyway, and one key
    per window keeps a window's close timer from holding back another window's elements."""

    def process(self, table: pa.Table, window=beam.DoFn.WindowParam):
        yield window.start.micros, table


class _RunningFn(beam.DoFn):
    PARTIALS = BagStateSpec("partials", ArrowTableCoder())
    META = ReadModifyWriteStateSpec("meta", _META)
    EMIT = TimerSpec("emit", TimeDomain.REAL_TIME)
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)

    def __init__(self, spec: AggregateSpec, early_seconds: int, lateness_seconds: int, clock: Callable):
        self._s, self._early, self._clock = spec, Duration(seconds=early_seconds), clock
        self._lateness = Duration(seconds=lateness_seconds)

    def setup(self):
        self._emissions = beam.metrics.Metrics.counter("aggregate", "running_emissions")
        self._reloads = beam.metrics.Metrics.counter("aggregate", "running_state_reads")
        self._late = beam.metrics.Metrics.counter("aggregate", "late_tables_dropped")
        self._windows: dict[tuple, _Running] = {}  # (key, window) -> running value as last written here
        self._tokens = random.Random()
        # A close timer has fired at this time, so the watermark has passed it: every window that
        # closes by then is expired (epoch microseconds).
        self._expired_by = MIN_TIMESTAMP

    def start_bundle(self):
        self._checked: set[tuple] = set()  # (key, window)s whose token this bundle has compared

    def _current(self, key, window, partials, meta) -> _Running:
        at = (key, window)
        running = self._windows.get(at)
        if running is not None and at in self._checked:
            return running
        stored = meta.read()
        if running is None or stored is None or running.token != stored[0]:
            self._reloads.inc()
            running = self._windows[at] = _Running(stored, list(partials.read()) if stored is not None else [])
        self._checked.add(at)
        return running

    def _save(self, running: _Running, meta) -> None:
        running.token = self._tokens.getrandbits(62)
        meta.write((running.token, running.emitted, int(running.pending), int(running.closed)))

    def process(
        self,
        element,
        window=beam.DoFn.WindowParam,
        partials=beam.DoFn.StateParam(PARTIALS),
        meta=beam.DoFn.StateParam(META),
        emit=beam.DoFn.TimerParam(EMIT),
        close=beam.DoFn.TimerParam(CLOSE),
    ):
        key, table = element
        if table.num_rows == 0:
            return
        if window.end + self._lateness <= self._expired_by:
            self._late.inc()  # past the allowed lateness: as a GroupByKey would, dropped
            return
        running = self._current(key, window, partials, meta)
        if running.closed:
            self._late.inc()
            return
        if running.token is None:  # the window's first partial
            close.set(window.end + self._lateness)
        running.fresh.append(table)
        running.entries += 1
        running.appended_rows += table.num_rows
        partials.add(table)
        if not running.pending:
            emit.set(self._clock() + self._early)
            running.pending = True
        self._save(running, meta)

    def _emit(self, running: _Running, window, partials):
        faults.at("aggregate")
        s = self._s
        running.pending = False
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
        if running.closed or not running.pending:
            return
        yield from self._emit(running, window, partials)
        self._save(running, meta)

    @on_timer(CLOSE)
    def close_window(
        self,
        key=beam.DoFn.KeyParam,
        window=beam.DoFn.WindowParam,
        partials=beam.DoFn.StateParam(PARTIALS),
        meta=beam.DoFn.StateParam(META),
    ):
        """The watermark has passed the window's end plus the allowed lateness: emits what is
        still pending and forgets the window (its state keeps only the closed mark)."""
        running = self._current(key, window, partials, meta)
        if running.pending and not running.closed:
            yield from self._emit(running, window, partials)
        running.closed, running.pending = True, False
        partials.clear()
        self._save(running, meta)
        del self._windows[(key, window)]
        self._expired_by = max(self._expired_by, window.end + self._lateness)


class RunningAggregate(beam.PTransform):
    """Per-window partial tables (fixed or sliding event-time windows, default trigger) -> the
    window's result table so far, at most ``early_firing_seconds`` after new partials arrive.

    Args:
        spec: The aggregate (WindowedAggregate's).
        early_firing_seconds: How long after new data its window's result is emitted.
        allowed_lateness_seconds: The windows' allowed lateness (a window this far behind the
            newest is dropped from memory; its state stays the runner's).
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
