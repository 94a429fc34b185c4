"""EntityFeatures (bounded input): a FeatureSet as of every event, by an entity-partitioned shuffle.

Each batch's events without features (no entity, no time, an unusable value to sum) become
dead letters; the rest are reduced to the columns the features read (``prepare``) and split by
a stable hash of the entity into ``partitions`` sub-tables. One GroupByKey brings every event
of an entity into one partition, where the features are computed with numpy over the events
sorted by (entity, time) (``feature_kernels.compute``). Every event read leaves as one feature
row or one dead letter.

Memory: a partition holds its events' prepared columns (about 1/partitions of the input);
with ``spill_dir`` the shuffle carries file references instead of rows, as Deduplicate's does.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows, TimestampCombiner

from transforms import faults
from transforms.feature_defs import FeatureSet
from transforms.feature_kernels import compute, prepare, rejects
from transforms.partials import key_partitions
from transforms.records import as_array, dead_letters, json_text, slices_by, typed
from transforms.sinks.files import spill_parts, unspill

__all__ = ["EntityFeatures"]


def _dead(table: pa.Table, bad: np.ndarray, why: list, stage: str) -> pa.Table:
    rows = table.filter(pa.array(bad))
    names = rows.column_names
    raw = as_array(rows.column("_raw")) if "_raw" in names else json_text(rows.drop_columns(
        [c for c in names if c.startswith("_")]))  # fmt: skip
    source = rows.column("_source") if "_source" in names else pa.nulls(rows.num_rows, pa.string())
    reasons, fields, errors = (pa.array(list(x), pa.string()) for x in zip(*why))
    return dead_letters(stage, reasons, fields, errors, raw, source)


class _PartitionFn(beam.DoFn):
    def __init__(self, fs: FeatureSet, partitions: int, spill_dir: str | None, stage: str):
        self._fs, self._partitions, self._spill_dir, self._stage = fs, partitions, spill_dir, stage

    def setup(self):
        self._rejected = beam.metrics.Metrics.counter(self._stage, "rejected")

    def process(self, table: pa.Table):
        bad, why = rejects(table, self._fs)
        if why:
            self._rejected.inc(len(why))
            yield beam.pvalue.TaggedOutput("dead_letters", _dead(table, bad, why, self._stage))
            table = table.filter(pa.array(~bad))
        if table.num_rows == 0:
            return
        prepared = prepare(table, self._fs)
        parts = list(slices_by(prepared, key_partitions(prepared, [self._fs.entity], self._partitions)))
        yield from parts if self._spill_dir is None else spill_parts(parts, self._spill_dir)


class _ComputeFn(beam.DoFn):
    def __init__(self, fs: FeatureSet, stage: str):
        self._fs, self._stage = fs, stage

    def setup(self):
        self._rows = beam.metrics.Metrics.counter(self._stage, "feature_rows")

    def process(self, element):
        faults.at("features")
        _, parts = element
        parts = list(parts)
        tables = [p for p in parts if not isinstance(p, str)] + unspill(sorted(p for p in parts if isinstance(p, str)))
        out = compute(pa.concat_tables(tables).combine_chunks(), self._fs)
        self._rows.inc(out.num_rows)
        yield out


class EntityFeatures(beam.PTransform):
    """Features of each event's entity as of the event's time (``transforms.feature_defs``).

    Args:
        features: The FeatureSet (entity, time, features, kept columns).
        partitions: Hash partitions of the entity shuffle (parallelism of the computation; one
            partition holds about 1/partitions of the events).
        spill_dir: If set, partitions go through Arrow files there and only their references
            through the runner's shuffle (memory stays flat as input grows). Must be visible to
            every worker.
        stage: The dead letters' stage.

    Returns a dict: ``features`` (tables of entity, time, kept columns and features, each sorted
    by entity and time; the FeatureSet as JSON in the schema metadata) and ``dead_letters``.
    """

    def __init__(
        self,
        features: FeatureSet,
        partitions: int = 8,
        spill_dir: str | None = None,
        stage: str = "features",
        label: str | None = None,
    ):
        super().__init__(label)
        if not isinstance(features, FeatureSet):
            raise ValueError(f"features must be a FeatureSet, got {type(features).__name__}")
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError("partitions must be an integer >= 1")
        if not stage:
            raise ValueError("stage is required")
        self._fs, self._partitions, self._spill_dir, self._stage = features, partitions, spill_dir, stage

    def expand(self, tables):
        part_type = beam.typehints.KV[int, pa.Table if self._spill_dir is None else str]
        parts = tables | "PartitionByEntity" >> beam.ParDo(
            _PartitionFn(self._fs, self._partitions, self._spill_dir, self._stage)
        ).with_input_types(pa.Table).with_output_types(part_type).with_outputs("dead_letters", main="parts")
        features = (
            typed(parts.parts, part_type)
            # Grouped rows keep their earliest timestamp (see Deduplicate): windows downstream stay open.
            | "KeepTimestamps"
            >> beam.WindowInto(GlobalWindows(), timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST)
            | "GroupEntities" >> beam.GroupByKey().with_input_types(part_type)
            | "Rewindow" >> beam.WindowInto(GlobalWindows())
            | "Compute" >> beam.ParDo(_ComputeFn(self._fs, self._stage)).with_output_types(pa.Table)
        )
        return {"features": typed(features), "dead_letters": typed(parts.dead_letters)}
