"""RunningCombine: with accumulating panes it emits what an accumulating combine emits, pane for
pane, while each firing merges only the values that arrived since the previous one (plus the
running value), so a window's firings do not grow dearer the longer it stays open.

Runs on Beam's bundle-based DirectRunner in streaming mode with TestStream, in this process: the
merges are counted in a module-level list."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.trigger import AccumulationMode, AfterCount, AfterProcessingTime, AfterWatermark

from tests.unit.test_stream_windows import streaming_pipeline
from transforms.running_combine import RunningCombine

MERGED: list[int] = []  # how many values each merge call was given


def merge_counts(values) -> dict:
    values = list(values)
    MERGED.append(len(values))
    total: dict = {}
    for v in values:
        for k, n in v.items():
            total[k] = total.get(k, 0) + n
    return total


def stream_of(panes: int) -> test_stream.TestStream:
    """``panes`` early firings of one element each, then the window's end."""
    s = test_stream.TestStream().advance_watermark_to(0)
    for i in range(panes):
        s = s.add_elements([beam_window.TimestampedValue({"n": 1, f"e{i % 3}": 1}, 10)]).advance_processing_time(2)
    return s.advance_watermark_to(200).advance_watermark_to_infinity()


def accumulating(pcoll, **kw):
    return pcoll | "Window" >> beam.WindowInto(
        beam_window.FixedWindows(100),
        trigger=AfterWatermark(early=AfterProcessingTime(1), late=AfterCount(1)),
        accumulation_mode=AccumulationMode.ACCUMULATING,
        allowed_lateness=60,
        **kw,
    )


def expected_panes(panes: int) -> list[dict]:
    out, total = [], {}
    for i in range(panes):
        total = {**total, "n": total.get("n", 0) + 1, f"e{i % 3}": total.get(f"e{i % 3}", 0) + 1}
        out.append(dict(total))
    return out


def test_each_firing_holds_everything_so_far_as_an_accumulating_combine_would():
    MERGED.clear()
    p = streaming_pipeline()
    out = accumulating(p | stream_of(12)) | RunningCombine(merge_counts, beam.coders.PickleCoder(), dict)
    # One early firing per element, then the on-time firing repeating the last value.
    assert_that(out, equal_to([*expected_panes(12), expected_panes(12)[-1]]))
    p.run().wait_until_finish()
    # Only the running value and the new value are ever merged: never the window's history.
    assert MERGED and max(MERGED) == 2


def test_the_plain_accumulating_combine_merges_the_whole_history_at_each_firing():
    """The control: the cost RunningCombine removes (the same stream, the combine Beam has)."""
    MERGED.clear()
    p = streaming_pipeline()
    out = accumulating(p | stream_of(12)) | beam.CombineGlobally(merge_counts).without_defaults()
    assert_that(out, equal_to([*expected_panes(12), expected_panes(12)[-1]]))
    p.run().wait_until_finish()
    assert max(MERGED) >= 12


def test_late_firings_add_to_the_running_value_and_sliding_windows_keep_their_windows():
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(0)
        .add_elements([beam_window.TimestampedValue({"n": 1}, 55)])
        .advance_watermark_to(130)  # [0, 100) and [50, 150)... the first fires on time
        .add_elements([beam_window.TimestampedValue({"n": 2}, 60)])  # late for [0, 100)
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    windowed = (p | stream) | beam.WindowInto(
        beam_window.SlidingWindows(100, 50),
        trigger=AfterWatermark(late=AfterCount(1)),
        accumulation_mode=AccumulationMode.ACCUMULATING,
        allowed_lateness=60,
    )
    out = windowed | RunningCombine(merge_counts, beam.coders.PickleCoder(), dict)
    starts = out | beam.ParDo(_WithStart())
    # [0, 100): on time with 1, late with 1 + 2; [50, 150): on time with both.
    assert_that(starts, equal_to([(0, 1), (0, 3), (50, 3)]))
    p.run().wait_until_finish()


class _WithStart(beam.DoFn):
    def process(self, value, window=beam.DoFn.WindowParam):
        yield int(window.start), value["n"]


def test_without_a_trigger_it_is_one_plain_combine_per_window():
    MERGED.clear()
    p = streaming_pipeline()
    stream = test_stream.TestStream().add_elements([beam_window.TimestampedValue({"n": 1}, 5)] * 3)
    out = (
        (p | stream.advance_watermark_to_infinity())
        | beam.WindowInto(beam_window.FixedWindows(100))
        | RunningCombine(merge_counts, beam.coders.PickleCoder(), dict)
    )
    assert_that(out, equal_to([{"n": 3}]))
    p.run().wait_until_finish()


def test_bad_arguments_fail_at_build():
    with pytest.raises(ValueError, match="merge must be callable"):
        RunningCombine("sum", beam.coders.PickleCoder(), dict)
    with pytest.raises(ValueError, match="coder"):
        RunningCombine(merge_counts, object(), dict)
