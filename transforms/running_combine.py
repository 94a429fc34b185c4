"""RunningCombine: per window, the combination of every element so far, at each firing, for the
cost of the firing's new elements.

Accumulating panes (early firings, late firings) make a runner hand the combine every element
the window has received at each firing: a window open for an hour re-merged thousands of
partial tables every second, and a live job fell further behind the longer it ran. Here an
input windowed with accumulating panes and a trigger is re-windowed with discarding panes, so a
firing's combine merges only what arrived since the last one, and a stateful step per window
merges that into the running value it keeps in state and emits the result. The emissions are
the same as the accumulating combine's, pane for pane. Without a trigger (one pane per window)
it is a plain combine.
"""

from __future__ import annotations

from collections.abc import Callable

import apache_beam as beam
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.trigger import AccumulationMode, DefaultTrigger
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

__all__ = ["RunningCombine"]

# Accumulated values merged as they come: a pane's combine never holds more than this many.
_COMPACT_AT = 32


class _ListCoder(beam.coders.Coder):
    """Accumulators (lists of values) as their merge, in the value's own coding."""

    def __init__(self, merge: Callable[[list], object], coder: beam.coders.Coder):
        self._merge, self._coder = merge, coder

    def encode(self, acc: list) -> bytes:
        return self._coder.encode(self._merge(acc) if len(acc) > 1 else acc[0]) if acc else b""

    def decode(self, encoded: bytes) -> list:
        return [self._coder.decode(encoded)] if encoded else []

    def is_deterministic(self) -> bool:
        return False


class _MergeFn(beam.CombineFn):
    def __init__(self, merge: Callable[[list], object], coder: beam.coders.Coder):
        self._merge, self._coder = merge, coder

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, value) -> list:
        acc.append(value)
        if len(acc) >= _COMPACT_AT:
            acc[:] = [self._merge(acc)]
        return acc

    def merge_accumulators(self, accs) -> list:
        values = [v for acc in accs for v in acc]
        return [self._merge(values)] if len(values) > 1 else values

    def compact(self, acc: list) -> list:
        return [self._merge(acc)] if len(acc) > 1 else acc

    def extract_output(self, acc: list):
        if not acc:
            return None
        return self._merge(acc) if len(acc) > 1 else acc[0]

    def get_accumulator_coder(self) -> _ListCoder:
        return _ListCoder(self._merge, self._coder)


def _running_fn(merge: Callable[[list], object], coder: beam.coders.Coder) -> beam.DoFn:
    """A DoFn that merges each pane's value into the window's running value (kept in state)
    and emits the result. Built per coder: Beam reads state specs from process()'s signature."""
    spec = ReadModifyWriteStateSpec("so_far", coder)

    class _RunningFn(beam.DoFn):
        def process(self, keyed, so_far=beam.DoFn.StateParam(spec)):
            _, value = keyed
            before = so_far.read()
            if value is None:  # a firing with nothing new (e.g. on time after early firings)
                if before is not None:
                    yield before
                return
            now = value if before is None else merge([before, value])
            so_far.write(now)
            yield now

    return _RunningFn()


class _SameWindows(beam_window.NonMergingWindowFn):
    """Keeps each element in the window it is in (re-applying a sliding WindowFn would put it
    into every window holding its timestamp again)."""

    def __init__(self, original: beam_window.WindowFn):
        self._original = original

    def assign(self, context):
        return [context.window]

    def get_window_coder(self):
        return self._original.get_window_coder()


def _accumulates(windowing) -> bool:
    return windowing.accumulation_mode == AccumulationMode.ACCUMULATING and not isinstance(
        windowing.triggerfn, DefaultTrigger
    )


class RunningCombine(beam.PTransform):
    """Combines a PCollection's values per window, with ``merge``; emits one value per firing.

    With accumulating panes and a trigger on the input, each firing costs its new elements only
    (see the module doc). The values are the same type as the result (partial tables, profiles,
    count dicts), so ``merge`` also merges a firing's value into the running one.

    Args:
        merge: Merges a non-empty list of values into one (it may change its arguments).
        coder: Coder of one value (for the shuffle and the state).
        value_type: The values' type hint.
    """

    def __init__(self, merge: Callable[[list], object], coder: beam.coders.Coder, value_type,
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        if not callable(merge) or not isinstance(coder, beam.coders.Coder):
            raise ValueError("merge must be callable and coder a beam Coder")
        self._merge, self._coder, self._type = merge, coder, value_type

    def expand(self, values):
        # Typed, so the combine's own output is coded with ``coder``'s registered type, not pickled.
        combine = _MergeFn(self._merge, self._coder).with_input_types(self._type).with_output_types(self._type)
        windowing = values.windowing
        if not _accumulates(windowing):
            return values | "Combine" >> beam.CombineGlobally(combine).without_defaults().with_output_types(self._type)
        keyed = beam.typehints.KV[int, self._type]
        return (
            values
            | "NewOnly"
            >> beam.WindowInto(
                _SameWindows(windowing.windowfn),
                trigger=windowing.triggerfn,
                accumulation_mode=AccumulationMode.DISCARDING,
                allowed_lateness=windowing.allowed_lateness,
                timestamp_combiner=windowing.timestamp_combiner,
            )
            | "Combine" >> beam.CombineGlobally(combine).without_defaults().with_output_types(self._type)
            | "Key" >> beam.Map(lambda v: (0, v)).with_output_types(keyed)
            | "Running" >> beam.ParDo(_running_fn(self._merge, self._coder)).with_output_types(self._type)
        )
