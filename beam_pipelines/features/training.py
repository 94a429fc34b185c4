"""Point-in-time training sets: each label joined to its entity's features as of the label's time.

A label (an entity and a time, plus whatever the model learns from) gets the feature row of its
entity with the greatest time at or before the label's time, never a later one: a feature row
written even a microsecond after the label describes a future the model will not have when it
serves. Rows of one (entity, time) hold the same feature values (``transforms.feature_defs``), so
which of them is taken does not matter. A label with no such row (or no entity, or no time) keeps
null features.

The join is vectorised: labels and feature rows sorted together by (entity, time), feature rows
before labels at the same time, and each label takes the last feature row before it in that
order when it is of the same entity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from transforms.feature_kernels import METADATA_KEY, as_array

__all__ = ["FEATURE_TIME", "TrainingSetError", "as_of_join", "feature_layout", "read_features"]

FEATURE_TIME = "feature_time"  # the output column: the time of the feature row each label took
_US = pa.timestamp("us", tz="UTC")


class TrainingSetError(ValueError):
    """The inputs cannot make a training set (a missing column, mismatched types); the message says why."""


@dataclass(frozen=True)
class Layout:
    """Where a feature table keeps its entity, its time and its features."""

    entity: str
    time: str
    features: tuple[str, ...]


def feature_layout(schema: pa.Schema, entity: str | None = None, time: str | None = None) -> Layout:
    """The feature table's entity, time and feature columns: from the FeatureSet the pipeline
    wrote into its schema, or from ``entity`` and ``time`` (then every other column is a feature)."""
    meta = json.loads(schema.metadata[METADATA_KEY]) if schema.metadata and METADATA_KEY in schema.metadata else None
    entity = entity or (meta and meta["entity"])
    time = time or (meta and meta["time"])
    if not entity or not time:
        raise TrainingSetError(
            "the feature table does not say its entity and time columns (it was not written by EntityFeatures): "
            "give --entity and --time"
        )
    for flag, c in (("--entity", entity), ("--time", time)):
        if c not in schema.names:
            raise TrainingSetError(
                f"the feature table has no column {c!r} ({flag}); columns: {', '.join(schema.names)}"
            )
    if not pa.types.is_timestamp(schema.field(time).type):
        raise TrainingSetError(f"the feature table's time column {time!r} is not a timestamp")
    if meta and meta["entity"] == entity and meta["time"] == time:
        names = tuple(n for n in schema.names if n in meta["features"])
    else:
        names = tuple(n for n in schema.names if n not in (entity, time))
    return Layout(entity, time, names)


def read_features(path: str, entity: str | None, time: str | None, entities: pa.Array | None = None):
    """The feature table under ``path`` (parquet files, ``dt=`` folders or not) as ``(Layout,
    table)``, only the rows of ``entities`` when given (parquet statistics skip the rest)."""
    dataset = ds.dataset(path, format="parquet", exclude_invalid_files=False)
    layout = feature_layout(dataset.schema, entity, time)
    wanted = None
    if entities is not None:
        values = pc.unique(as_array(entities).drop_null()).cast(dataset.schema.field(layout.entity).type)
        wanted = ds.field(layout.entity).isin(values)
    table = dataset.to_table(columns=[layout.entity, layout.time, *layout.features], filter=wanted)
    return layout, table


def _micros(column) -> np.ndarray:
    """Epoch microseconds of a timestamp column (nulls: 0; callers mask them)."""
    values = as_array(column).cast(_US) if column.type.unit != "us" or column.type.tz != "UTC" else as_array(column)
    return pc.fill_null(values.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)


def as_of_join(labels: pa.Table, features: pa.Table, layout: Layout, label_time: str) -> pa.Table:
    """``labels`` (row order kept) with ``layout.features`` of their entity as of ``label_time``
    (the latest feature row at or before it) and ``feature_time``, that row's time."""
    entity = layout.entity
    for c, what in ((entity, "the entity column"), (label_time, "the label time column")):
        if c not in labels.column_names:
            raise TrainingSetError(
                f"the labels have no column {c!r} ({what}); columns: {', '.join(labels.column_names)}"
            )
    if not pa.types.is_timestamp(labels.schema.field(label_time).type):
        raise TrainingSetError(f"the labels' time column {label_time!r} is not a timestamp")
    if labels.schema.field(label_time).type.tz is None:
        raise TrainingSetError(f"the labels' time column {label_time!r} has no time zone: times must be UTC instants")
    clash = [c for c in (*layout.features, FEATURE_TIME) if c in labels.column_names]
    if clash:
        raise TrainingSetError(f"the labels already have column {clash[0]!r}, which the training set adds: rename it")
    target = features.schema.field(entity).type
    try:
        label_entities = as_array(labels.column(entity)).cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise TrainingSetError(f"the labels' {entity!r} cannot be read as the feature table's {target}: {e}") from None
    n, m = features.num_rows, labels.num_rows
    codes = pc.dictionary_encode(
        pa.concat_arrays([as_array(features.column(entity)), label_entities]), null_encoding="encode"
    )
    code = codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    times = np.concatenate([_micros(features.column(layout.time)), _micros(labels.column(label_time))])
    usable = np.concatenate(
        [np.ones(n, dtype=bool), (pc.is_valid(label_entities).to_numpy(zero_copy_only=False)
                                  & pc.is_valid(labels.column(label_time)).to_numpy(zero_copy_only=False))]
    )  # fmt: skip
    is_label = np.arange(n + m) >= n
    # By entity, then time, feature rows before labels at the same time (a row at the label's time counts).
    order = np.lexsort((is_label, times, code))
    is_label_sorted = is_label[order]
    last = np.maximum.accumulate(np.where(is_label_sorted, -1, np.arange(n + m)))
    found = (last >= 0) & (code[order][np.maximum(last, 0)] == code[order])
    took = np.where(found, order[np.maximum(last, 0)], -1)
    match = np.full(m, -1, dtype=np.int64)
    match[order[is_label_sorted] - n] = took[is_label_sorted]
    match[~usable[n:]] = -1
    rows = pa.array(match, mask=match < 0)
    out = labels
    for c in layout.features:
        out = out.append_column(c, features.column(c).take(rows))
    return out.append_column(FEATURE_TIME, features.column(layout.time).take(rows))
