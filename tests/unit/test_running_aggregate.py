"""The live stream's running aggregate (WindowedAggregate over unbounded input with early
firings): its newest emission per window equals the combine's final value, late data within the
allowed lateness updates it, and each window's emissions are numbered by an increasing pane
index (what the sinks keep the newest by). (Data past the allowed lateness is the source's to
drop and count: see running_aggregate.)

TestStream runs on Beam's bundle-based DirectRunner in streaming mode (see test_stream_windows);
processing time starts at 0 there, so the timers take a clock that says 0 (a timer set at 0 +
EARLY fires once the stream has advanced processing time past it, and at once after that). The DoFn's
state handling across instances is checked directly, with the state as plain objects.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Duration, Timestamp

from tests.unit.state_doubles import Bag, Value
from tests.unit.test_stream_windows import T0 as T0_S
from tests.unit.test_stream_windows import events, streaming_pipeline
from tests.unit.test_stream_windows import stream_clock as zero_clock
from tests.unit.test_window_measures import ALL, KEYS, WINDOWS, random_rows, reference, same
from transforms.partials import AggregateSpec, Fixed, partial_aggregate
from transforms.records import ArrowTableCoder
from transforms.running_aggregate import RunningAggregate, _RunningFn
from transforms.windows import WindowedAggregate, _legacy_measures

EARLY = 5


class _Emissions(beam.DoFn):
    """(window start µs, pane index, rows) per emission."""

    def process(self, table, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        yield window.start.micros, pane.index, table.to_pylist()


def newest(emissions) -> list[dict]:
    """The rows of each window's highest-indexed emission (what an upserting sink keeps)."""
    best: dict = {}
    for start, index, rows in emissions:
        if start not in best or best[start][0] < index:
            best[start] = (index, rows)
    return [r for _, rows in best.values() for r in rows]


def check_indices(emissions) -> None:
    """Each window's emissions are numbered 0, 1, 2, ...; a higher index never counts less."""
    by_window: dict = {}
    for start, index, rows in emissions:
        by_window.setdefault(start, []).append((index, {tuple(r[k] for k in KEYS): r["n"] for r in rows}))
    for start, panes in by_window.items():
        panes.sort(key=lambda p: p[0])
        assert [i for i, _ in panes] == list(range(len(panes))), (start, [i for i, _ in panes])
        for (_, before), (_, after) in zip(panes, panes[1:]):
            assert all(after.get(k, 0) >= n for k, n in before.items()), (start, before, after)


def stream_of(tables: list[pa.Table], watermark_s: float, end_s: float) -> test_stream.TestStream:
    """Each table, with processing time advanced past an early firing after every other one; the
    watermark held at ``watermark_s`` (nothing is late) until the end."""
    s = test_stream.TestStream(coder=ArrowTableCoder()).advance_watermark_to(watermark_s)
    for i, t in enumerate(tables):
        s = s.add_elements([t])
        if i % 2:
            s = s.advance_processing_time(EARLY + 1)
    return s.advance_processing_time(EARLY + 1).advance_watermark_to(end_s).advance_watermark_to_infinity()


@pytest.mark.parametrize("window_name", ["fixed", "sliding"])
def test_the_newest_emission_of_each_window_is_the_row_by_row_reference(window_name):
    window = WINDOWS[window_name]
    table = random_rows(7, 600)
    # Shuffled in time, so every window gets partials in several tables and several emissions.
    parts = [table.slice(i, 50) for i in range(0, table.num_rows, 50)]
    start = table.column("ts").cast(pa.int64())[0].as_py() // 1_000_000 - 4 * 3600
    p = streaming_pipeline()
    out = (
        p
        | stream_of(parts, start, start + 12 * 3600)
        | WindowedAggregate(
            group_by=KEYS,
            measures=ALL,
            window=window,
            early_firing_seconds=EARLY,
            allowed_lateness_seconds=600,
            clock=zero_clock,
        )  # fmt: skip
    )
    emissions = out | beam.ParDo(_Emissions())
    want = reference(table, ALL, window)
    assert_that(emissions, lambda es: same(want, ALL)(newest(es)))
    assert_that(emissions, check_indices, label="Indices")
    p.run().wait_until_finish()


def test_the_same_final_values_as_the_accumulating_combine():
    """The combine's last firing per window (on-time and late firings, accumulating panes) and
    the running aggregate's newest emission, over one stream."""
    table = random_rows(11, 400).rename_columns(
        ["ts", "event_type", "g", "user_id", "i", "amount", "d", "country", "b"]
    )
    parts = [table.slice(i, 40) for i in range(0, table.num_rows, 40)]
    start = T0_S - 3600
    p = streaming_pipeline()
    stream = p | stream_of(parts, start, start + 8 * 3600)
    tagged = []
    for path, early in (("Combine", None), ("Running", EARLY)):
        out = stream | path >> WindowedAggregate(
            allowed_lateness_seconds=600, early_firing_seconds=early, late_firings=True, clock=zero_clock
        )
        tagged.append(
            out | f"{path}Emissions" >> beam.ParDo(_Emissions()) | f"{path}Tag" >> beam.Map(lambda e, t=path: (t, e))
        )

    def match(all_emissions):
        combine = newest([e for t, e in all_emissions if t == "Combine"])
        running = newest([e for t, e in all_emissions if t == "Running"])
        assert running and sorted(running, key=str) == sorted(combine, key=str)

    assert_that(tagged | beam.Flatten(), match)
    p.run().wait_until_finish()


def firings(emissions):
    """(pane index, events, users, amount_sum) per emission of the single window and group."""
    return emissions | beam.Map(lambda e: (e[1], e[2][0]["events"], e[2][0]["users"], e[2][0]["amount_sum"]))


def test_early_emissions_carry_everything_so_far_and_late_data_within_the_lateness_updates():
    stream = (
        test_stream.TestStream(coder=ArrowTableCoder())
        .advance_watermark_to(T0_S)
        .add_elements([events([(1, "a", 1.0)])])  # the window's first data: emitted at once
        .add_elements([events([(2, "b", 2.0)])])  # waits for EARLY after that emission
        .advance_processing_time(EARLY + 1)  # one emission with both
        .add_elements([events([(3, "a", 0.5)])])
        .advance_processing_time(EARLY + 1)
        .advance_watermark_to(T0_S + 3600)  # the window ends: nothing new to emit
        .add_elements([events([(30, "c", 1.25)])])  # late, within the 10 minutes allowed
        .advance_processing_time(EARLY + 1)
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    out = (
        p
        | stream
        | WindowedAggregate(
            allowed_lateness_seconds=600, early_firing_seconds=EARLY, late_firings=True, clock=zero_clock
        )
    )
    emissions = out | beam.ParDo(_Emissions())
    # The window's first data at once, then at most every EARLY seconds.
    assert_that(firings(emissions), equal_to([(0, 1, 1, 1.0), (1, 2, 2, 3.0), (2, 3, 2, 3.5), (3, 4, 3, 4.75)]))
    p.run().wait_until_finish()


def test_only_unbounded_input_with_early_firings_takes_the_running_path():
    def labels(pcoll_maker, **kw) -> set[str]:
        p = streaming_pipeline()
        pcoll_maker(p) | WindowedAggregate(**kw)
        return {t.unique_name.rsplit("/", 1)[-1] for t in p.to_runner_api().components.transforms.values()}

    def unbounded(p):
        return p | test_stream.TestStream(coder=ArrowTableCoder()).add_elements([events([(1, "a", 1.0)])])

    def bounded(p):
        return p | beam.Create([events([(1, "a", 1.0)])])

    assert "Running" in labels(unbounded, early_firing_seconds=1)
    assert "Running" not in labels(unbounded, late_firings=True)
    assert "Running" not in labels(bounded, early_firing_seconds=1)


# The DoFn itself, with its state as plain objects (as the runner keeps it between bundles).


class _Timer:
    def __init__(self):
        self.times = []

    def set(self, ts):
        self.times.append(ts)


SPEC = AggregateSpec("ts", ("event_type", "country"), _legacy_measures(None, None, None), Fixed(3600))
WINDOW = beam_window.IntervalWindow(T0_S, T0_S + 3600)


def _fn():
    fn = _RunningFn(SPEC, EARLY, 600, zero_clock)
    fn.setup()
    return fn


def _add(fn, state, rows) -> None:
    fn.start_bundle()
    bag, meta, emit, keep = state
    fn.process((0, partial_aggregate(events(rows), SPEC)), WINDOW, bag, meta, emit, keep)


def _emit(fn, state) -> list:
    fn.start_bundle()
    out = list(fn.emit_result(0, WINDOW, state[0], state[1]))
    return [(v.pane_info.index, v.value.column("events")[0].as_py(), v.value.column("users")[0].as_py()) for v in out]


def test_the_running_value_in_memory_follows_the_state_across_instances_and_discarded_bundles():
    state = (Bag(), Value(), _Timer(), _Timer())  # partials, meta, and the timers set
    a, b = _fn(), _fn()
    _add(a, state, [(1, "u1", 1.0)])
    assert state[2].times == [Timestamp(0)]  # a window's first data goes out at once
    assert _emit(a, state) == [(0, 1, 1)]
    _add(b, state, [(2, "u2", 1.0)])  # b reads the state
    assert len(state[2].times) == 2  # the emission cleared the pending mark: a new timer
    _add(a, state, [(3, "u2", 1.0)])  # a's copy is stale (b wrote since): read again
    assert len(state[2].times) == 2  # still pending: no second timer
    committed = (list(state[0].items), state[1].value)
    assert _emit(a, state) == [(1, 3, 2)]
    state[0].items, state[1].value = committed  # that bundle failed: its writes are gone
    _add(a, state, [(4, "u3", 1.0)])
    assert _emit(a, state) == [(1, 4, 3)]  # retried: the same index again, with the new table
    assert _emit(b, state) == []  # nothing pending


def test_the_bag_is_compacted_as_it_doubles():
    state = (Bag(), Value(), _Timer(), _Timer())
    fn = _fn()
    for i in range(6):
        _add(fn, state, [(i, f"u{i}", 1.0)])
        _emit(fn, state)
    # 1 row, then compacted at 2, 4 rows...: never more appended rows than compacted ones.
    assert len(state[0].items) <= 3
    fresh = _fn()
    assert _emit(fresh, state) == []  # nothing pending, and its reload holds everything:
    _add(fresh, state, [(10, "u0", 1.0)])
    assert _emit(fresh, state) == [(6, 7, 6)]


def test_a_quiet_window_is_forgotten_in_memory_and_read_again_from_state():
    state = (Bag(), Value(), _Timer(), _Timer())
    fn = _fn()
    _add(fn, state, [(1, "u1", 1.0)])
    assert state[3].times == [Timestamp(0) + Duration(seconds=EARLY + 600)]  # keep: early + lateness
    assert _emit(fn, state) == [(0, 1, 1)]
    fn.forget(0, WINDOW)
    assert not fn._windows
    _add(fn, state, [(2, "u2", 1.0)])  # read again from the state: nothing lost
    assert _emit(fn, state) == [(1, 2, 2)]
    assert len(state[3].times) == 2  # each table pushes the keep timer back


def test_bad_config_fails_at_build():
    with pytest.raises(ValueError, match="early_firing_seconds"):
        RunningAggregate(SPEC, 0)
    with pytest.raises(ValueError, match="clock"):
        WindowedAggregate(early_firing_seconds=1, clock="now")


def test_a_timer_that_ran_a_little_late_keeps_the_firings_on_their_grid():
    from transforms.running_aggregate import _Running, _RunningFn

    fn = _RunningFn(None, 1, 600, clock=None)
    second = 1_000_000
    first = _Running(None, [])
    assert fn._fired_at(first, 5 * second + 70_000) == 5 * second + 70_000  # the first emission: now
    running = _Running((None, 3, 1, 5 * second), [])
    assert fn._fired_at(running, 6 * second + 80_000) == 6 * second  # 80 ms late: as due
    assert fn._fired_at(running, 6 * second + 250_000) == 6 * second
    assert fn._fired_at(running, 6 * second + 600_000) == 6 * second + 600_000  # after a quiet spell: now
    assert fn._fired_at(running, 5 * second + 900_000) == 5 * second + 900_000  # never before it was due
    half = _RunningFn(None, 0.4, 600, clock=None)  # a quarter of a short interval bounds the snap
    assert half._fired_at(running, 5 * second + 450_000) == 5 * second + 400_000
    assert half._fired_at(running, 5 * second + 520_000) == 5 * second + 520_000
