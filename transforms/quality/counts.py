"""Counting composites: the numbers the run report and its conservation check rest on."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.trigger import AccumulationMode, AfterProcessingTime, AfterWatermark

__all__ = ["CountRows", "MergeCounts"]


class _CountFn(beam.DoFn):
    def __init__(self, name: str, by: str | None):
        self._name, self._by = name, by

    def process(self, table: pa.Table):
        counts = {self._name: table.num_rows}
        if self._by is not None and table.num_rows:
            for row in table.column(self._by).value_counts().to_pylist():
                key = f"{self._name}.{row['values']}"
                counts[key] = counts.get(key, 0) + row["counts"]
        beam.metrics.Metrics.counter("rows", self._name).inc(table.num_rows)
        yield counts


class CountRows(beam.PTransform):
    """Counts the rows of table elements as ``{name: n}`` dicts (and ``name.<value>`` per
    value of column ``by``), in the global window, passing nothing else on.

    Args:
        name: The count's name in the run report.
        by: Optional column whose values are counted separately.
    """

    def __init__(self, name: str, by: str | None = None, label: str | None = None):
        super().__init__(label)
        if not name:
            raise ValueError("name is required")
        self._name, self._by = name, by

    def expand(self, tables):
        # Counts belong to the run, not to a window: re-window so they flatten with others.
        return (
            tables
            | "Count" >> beam.ParDo(_CountFn(self._name, self._by)).with_input_types(pa.Table)
            | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
        )


SAMPLES = 5  # most samples a list-valued entry keeps (the smallest, so any merge order gives the same)


def _sum_dicts(dicts) -> dict:
    total: dict = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, list):  # samples, not counts
                total[k] = sorted(set(total.get(k, ())) | set(v))[:SAMPLES]
            else:
                total[k] = total.get(k, 0) + v
    return total


class MergeCounts(beam.PTransform):
    """Sums count dicts from every stage into one dict for the run.

    Args:
        early_firing_seconds: For unbounded input: also emit the sums so far every that many
            seconds of processing time (each emission holds all counts since the start); the
            last emission comes when the input ends. None: one dict when the input ends.
    """

    def __init__(self, early_firing_seconds: int | None = None, label: str | None = None):
        super().__init__(label)
        if early_firing_seconds is not None and early_firing_seconds <= 0:
            raise ValueError("early_firing_seconds must be positive")
        self._early = early_firing_seconds

    def expand(self, counts):
        if self._early is None:
            return (
                counts
                | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                | "Sum" >> beam.CombineGlobally(_sum_dicts)
            )
        return (
            counts
            | "GlobalWindow"
            >> beam.WindowInto(
                beam.window.GlobalWindows(),
                trigger=AfterWatermark(early=AfterProcessingTime(self._early)),
                accumulation_mode=AccumulationMode.ACCUMULATING,
            )
            | "Sum" >> beam.CombineGlobally(_sum_dicts).without_defaults()
        )
